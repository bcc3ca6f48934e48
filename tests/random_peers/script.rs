//! The scripts: client or server frames as a peer writes them, faults included, and their
//! bytes on the wire in random cuts.

use super::*;

/// How the payload length goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    /// The minimal encoding (RFC 6455 5.2), the only one allowed.
    Minimal,
    /// A 16-bit length for a payload under 126 bytes.
    Wide16,
    /// A 64-bit length for a payload under 65,536 bytes.
    Wide64,
    /// A 64-bit length with its most significant bit set (and no payload after it).
    HighBit,
    /// A declared length of `n` with no payload after it (a message too big to be sent).
    Declared(u64),
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    /// Masked as its sender must (clients mask, servers do not), or, a fault, the other way.
    pub masked_right: bool,
    pub length: Length,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(fin: bool, opcode: u8, payload: Vec<u8>) -> Frame {
        Frame {
            fin,
            rsv: 0,
            opcode,
            masked_right: true,
            length: Length::Minimal,
            payload,
        }
    }

    /// The length the header declares.
    pub fn declared(&self) -> u64 {
        match self.length {
            Length::Declared(n) => n,
            Length::HighBit => 1 << 63,
            _ => self.payload.len() as u64,
        }
    }

    /// The frame's bytes, as a client sends it (`from_client`) or as a server does.
    pub fn wire(&self, rng: &mut Rng, from_client: bool) -> Vec<u8> {
        let mut f = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode];
        let masked = self.masked_right == from_client;
        let m = if masked { 0x80 } else { 0 };
        let n = self.declared();
        match self.length {
            Length::Minimal | Length::Declared(_) if n < 126 => f.push(m | n as u8),
            Length::Minimal | Length::Declared(_) | Length::Wide16 if n <= 0xFFFF => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&n.to_be_bytes());
            }
        }
        if masked {
            let key = rng.next().to_le_bytes();
            let key = [key[0], key[1], key[2], key[3]];
            f.extend_from_slice(&key);
            f.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(&self.payload);
        }
        f
    }
}

/// A script: frames, each maybe with a fault; after the first one that ends the connection
/// (a fault, a Close, a too-big header) only a few more, which the server must ignore.
pub fn script(rng: &mut Rng) -> Vec<Frame> {
    let mut frames = Vec::new();
    let steps = 1 + rng.below(40);
    for _ in 0..steps {
        match rng.below(1000) {
            // A whole message.
            0..=399 => {
                let text = rng.chance(50);
                let n = rng.size();
                let payload = if text { rng.text(n) } else { rng.bytes(n) };
                frames.push(Frame::new(true, if text { 1 } else { 2 }, payload));
            }
            // A fragmented message, control frames between its fragments.
            400..=639 => {
                let text = rng.chance(50);
                let n = rng.size();
                let whole = if text { rng.text(n) } else { rng.bytes(n) };
                let n = whole.len(); // text ends on a whole character
                let parts = 2 + rng.below(4);
                let mut cuts: Vec<usize> = (0..parts - 1).map(|_| rng.below(n + 1)).collect();
                cuts.sort_unstable();
                cuts.push(n);
                let mut from = 0;
                for (i, &to) in cuts.iter().enumerate() {
                    let opcode = match (i, text) {
                        (0, true) => 1,
                        (0, false) => 2,
                        _ => 0,
                    };
                    frames.push(Frame::new(i == parts - 1, opcode, whole[from..to].to_vec()));
                    from = to;
                    if rng.chance(25) {
                        let n = rng.below(126);
                        frames.push(Frame::new(true, 9 + rng.below(2) as u8, rng.bytes(n)));
                    }
                }
            }
            // A message of the limit's size, one byte under or one over, whole or in two.
            640..=649 => {
                let n = MAX_MESSAGE - 1 + rng.below(3);
                let whole = rng.bytes(n);
                if rng.chance(50) {
                    frames.push(Frame::new(true, 2, whole));
                } else {
                    let cut = rng.below(n + 1);
                    frames.push(Frame::new(false, 2, whole[..cut].to_vec()));
                    frames.push(Frame::new(true, 0, whole[cut..].to_vec()));
                }
            }
            650..=799 => {
                let n = rng.below(126);
                frames.push(Frame::new(true, 9, rng.bytes(n)));
            }
            800..=869 => {
                let n = rng.below(126);
                frames.push(Frame::new(true, 10, rng.bytes(n)));
            }
            // The peer closes, validly or not.
            870..=894 => frames.push(close_frame(rng)),
            // Text that is not UTF-8, whole or in fragments.
            895..=924 => {
                let n = rng.size();
                let bad = rng.bad_text(n);
                if rng.chance(50) {
                    frames.push(Frame::new(true, 1, bad));
                } else {
                    let cut = rng.below(bad.len() + 1);
                    frames.push(Frame::new(false, 1, bad[..cut].to_vec()));
                    frames.push(Frame::new(true, 0, bad[cut..].to_vec()));
                }
            }
            // A message that outgrows the limit: one header, or fragments adding up.
            925..=944 => {
                if rng.chance(50) {
                    let mut f = Frame::new(true, 1 + rng.below(2) as u8, Vec::new());
                    let over = MAX_MESSAGE as u64 + 1 + rng.below(1 << 20) as u64;
                    f.length = Length::Declared(over);
                    frames.push(f);
                } else {
                    let piece = MAX_MESSAGE / 3 + 1;
                    frames.push(Frame::new(false, 2, rng.bytes(piece)));
                    for _ in 0..3 {
                        frames.push(Frame::new(false, 0, rng.bytes(piece)));
                    }
                }
            }
            // The first fragment of a message the script may never finish: what follows is
            // inside it (a continuation finishes it; a new message is a violation).
            945..=964 => {
                let text = rng.chance(50);
                let n = rng.size();
                let payload = if text { rng.text(n) } else { rng.bytes(n) };
                frames.push(Frame::new(false, if text { 1 } else { 2 }, payload));
            }
            // One fault in an otherwise good frame.
            _ => frames.push(faulty_frame(rng)),
        }
    }
    frames
}

pub fn close_frame(rng: &mut Rng) -> Frame {
    const GOOD: [u16; 15] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4999,
    ];
    const BAD: [u16; 10] = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000];
    let payload = match rng.below(10) {
        0 => Vec::new(),
        1 => vec![0x03],
        2 => BAD[rng.below(BAD.len())].to_be_bytes().to_vec(),
        3 => {
            let mut p = GOOD[rng.below(GOOD.len())].to_be_bytes().to_vec();
            p.extend_from_slice(b"bye \xff");
            p
        }
        _ => {
            let mut p = GOOD[rng.below(GOOD.len())].to_be_bytes().to_vec();
            let n = rng.below(60);
            p.extend(rng.text(n));
            p.truncate(125);
            if std::str::from_utf8(&p[2..]).is_err() {
                p.truncate(2); // the cut split a character
            }
            p
        }
    };
    Frame::new(true, 8, payload)
}

pub fn faulty_frame(rng: &mut Rng) -> Frame {
    // The fault goes on a frame of any kind, continuations and Closes included.
    let opcode = [1u8, 2, 9, 10, 0, 8][rng.below(6)];
    let n = if opcode >= 8 {
        rng.below(126)
    } else {
        rng.size()
    };
    let payload = if opcode == 1 {
        rng.text(n)
    } else {
        rng.bytes(n)
    };
    let mut f = Frame::new(true, opcode, payload);
    match rng.below(9) {
        0 => f.rsv = 1 + rng.below(7) as u8,
        1 => f.opcode = [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15][rng.below(10)],
        2 => f.masked_right = false,
        3 => {
            // A control frame over 125 bytes.
            f.opcode = 9 + rng.below(2) as u8;
            let n = 126 + rng.below(100);
            f.payload = rng.bytes(n);
        }
        4 => {
            f.opcode = 8 + rng.below(3) as u8;
            f.payload.truncate(125);
            f.fin = false; // a fragmented control frame
        }
        5 => f.opcode = 0, // a continuation with no message (unless one is open)
        6 => {
            f.length = Length::Wide16;
            f.payload.truncate(125);
        }
        7 => {
            f.length = Length::Wide64;
            f.payload.truncate(0xFFFF);
        }
        _ => {
            f.length = Length::HighBit;
            f.payload.clear();
        }
    }
    f
}

/// Script `seed` on the wire, what the server must answer, and the generator for the cuts.
pub fn prepare(seed: u64, answers: Answers, from_client: bool) -> (Vec<u8>, Expected, Rng) {
    let mut rng = Rng(seed);
    let mut frames = script(&mut rng);
    if answers == Answers::EchoCloser && rng.chance(60) {
        // The app is asked to close somewhere in the script (inside a fragmented message,
        // the request itself is the violation).
        let code = APP_CLOSE_CODES[rng.below(APP_CLOSE_CODES.len())];
        let mut ask = b"close:".to_vec();
        ask.extend_from_slice(&code.to_be_bytes());
        let at = rng.below(frames.len() + 1);
        frames.insert(at, Frame::new(true, 2, ask));
    }
    let mut e = expect(&frames, answers);
    // Sometimes a peer that leaves the connection open just ends TCP instead of closing.
    e.vanish = e.or_heard_on.is_none() && e.want.close.is_none() && rng.chance(20);
    // Half the time its FIN comes inside its last frame, which the server then never has.
    let cut_last = e.vanish && !frames.is_empty() && rng.chance(50);
    if cut_last {
        e = Expected {
            vanish: true,
            ..expect(&frames[..frames.len() - 1], answers)
        };
    }
    let last = e.or_heard_on.as_mut().unwrap_or(&mut e.want);
    if e.vanish {
        // Its FIN follows (the caller shuts its side).
    } else if last.close.is_none() {
        let mut bye = Frame::new(true, 8, 1000u16.to_be_bytes().to_vec());
        if rng.chance(30) {
            bye.payload.extend_from_slice(b"done");
        }
        frames.push(bye);
        last.close = Some(Some(1000));
    } else {
        // What follows the end is not read: at most a few frames of it are sent.
        frames.truncate(e.read + rng.below(3));
    }
    let mut wire = Vec::new();
    let mut last_start = 0;
    for f in &frames {
        last_start = wire.len();
        wire.extend(f.wire(&mut rng, from_client));
    }
    if cut_last {
        let keep = last_start + rng.below(wire.len() - last_start);
        wire.truncate(keep);
    }
    (wire, e, rng)
}

/// Random cuts: the server sees the frames split anywhere, headers included.
pub fn cuts(len: usize, rng: &mut Rng) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < len {
        let n = (1 + rng.below(300)).min(len - at);
        out.push(at..at + n);
        at += n;
    }
    out
}
