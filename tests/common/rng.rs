//! A small deterministic generator (splitmix64) for the random tests: a script is
//! reproducible from its seed.

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A payload size: mostly short, sometimes around the 7/16-bit length boundaries.
    pub fn size(&mut self) -> usize {
        match self.below(10) {
            0..=5 => self.below(40),
            6 | 7 => 100 + self.below(60),
            8 => 126 + self.below(8),
            _ => self.below(1500),
        }
    }

    /// Valid UTF-8 of about `n` bytes, mixing 1- to 4-byte characters.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const CHARS: [char; 10] = [
            'a',
            'Z',
            ' ',
            '~',
            '\u{e9}',
            '\u{7ff}',
            '\u{20ac}',
            '\u{ffff}',
            '\u{1f600}',
            '\u{10ffff}',
        ];
        let mut s = String::new();
        while s.len() < n {
            s.push(CHARS[self.below(CHARS.len())]);
        }
        s.into_bytes()
    }

    /// Text that is not UTF-8: valid text with one bad sequence somewhere in it.
    pub fn bad_text(&mut self, n: usize) -> Vec<u8> {
        const BAD: [&[u8]; 8] = [
            b"\x80",             // a lone continuation byte
            b"\xc0\x80",         // an overlong encoding
            b"\xed\xa0\x80",     // a surrogate
            b"\xf4\x90\x80\x80", // past U+10FFFF
            b"\xff",             // never in UTF-8
            b"\xe2\x82",         // cut short (at the end: the message ends inside a character)
            b"\xf0\x9f\x98",     // cut short
            b"\xc3",             // cut short
        ];
        let mut t = self.text(n);
        // After a whole character: `text` is all characters, so any char boundary will do.
        let cut = {
            let s = std::str::from_utf8(&t).expect("valid");
            let at = self.below(s.len() + 1);
            (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
        };
        let bad = BAD[self.below(BAD.len())];
        t.splice(cut..cut, bad.iter().copied());
        t
    }
}
