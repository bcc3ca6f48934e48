//! The cws client as the receiver: a scripted server plays each script to it.

use super::*;

/// The scripted server of the cws client tests: one listener for all of them (each script
/// of its own would leave a port in TIME_WAIT, and a long hunt runs out of ports). A
/// connection's upgrade names its script's seed in the path; its server side plays that
/// script, reads the client's Pongs and Close, ends TCP, and reports what the client sent.
pub fn script_server() -> SocketAddr {
    static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || play_to_client(s));
            }
        });
        addr
    })
}

/// Where a script's server side reports, by seed.
pub type Reports = std::sync::Mutex<
    std::collections::HashMap<u64, std::sync::mpsc::Sender<Result<Outcome, String>>>,
>;

pub fn reports() -> &'static Reports {
    static REPORTS: std::sync::OnceLock<Reports> = std::sync::OnceLock::new();
    REPORTS.get_or_init(Default::default)
}

pub fn play_to_client(mut s: TcpStream) {
    let head = read_http_head(&mut s);
    let Some(seed) = head
        .strip_prefix("GET /")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
    else {
        return;
    };
    let result = play(s, &head, seed);
    if let Some(to) = reports().lock().unwrap().remove(&seed) {
        let _ = to.send(result);
    }
}

pub fn play(mut s: TcpStream, head: &str, seed: u64) -> Result<Outcome, String> {
    let (wire, e, mut rng) = prepare(seed, Answers::Echo, false);
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .ok_or("no key in the upgrade request")?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        lapps::ws::handshake::accept_key(key.trim())
    );
    s.write_all(answer.as_bytes()).map_err(|e| e.to_string())?;
    for cut in cuts(wire.len(), &mut rng) {
        s.write_all(&wire[cut]).map_err(|e| e.to_string())?;
    }
    let mut sent = Outcome::default();
    if e.vanish {
        // We end TCP without a Close: the client's Pongs, then its end, and no Close of its
        // own unless its app closed before our FIN reached it (the connection is closed,
        // abnormally: 1006, 7.1.5).
        shut().lock().unwrap().insert(seed);
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        while let Some((_, opcode, payload)) = next_frame(&mut s, true)
            .map_err(|e| format!("{e} after our FIN, after {}", summary(&sent)))?
        {
            match opcode {
                10 if sent.close.is_none() => sent.pongs.push(payload),
                8 if sent.close.is_none() => sent.close = Some(close_body(&payload)?),
                op => return Err(format!("opcode {op} from the client after our FIN")),
            }
        }
        return Ok(sent);
    }
    // The client's Pongs, then its Close.
    loop {
        let (_, opcode, payload) = next_frame(&mut s, true)
            .map_err(|e| format!("{e} before the client's Close, after {}", summary(&sent)))?
            .ok_or_else(|| format!("EOF before the client's Close, after {}", summary(&sent)))?;
        match opcode {
            10 => sent.pongs.push(payload),
            8 => {
                sent.close = Some(close_body(&payload)?);
                break;
            }
            op => return Err(format!("opcode {op} from the client")),
        }
    }
    // The server ends TCP first (7.1.1); the client sends nothing after its Close, and ends
    // its side once it has our FIN.
    shut().lock().unwrap().insert(seed);
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = [0u8; 64];
    match s.read(&mut rest) {
        Ok(0) => Ok(sent),
        Ok(n) => Err(format!("{n} bytes from the client after its Close")),
        Err(e) => Err(format!("no EOF from the client after its Close: {e}")),
    }
}

/// The scripts whose server side has ended TCP: a client must not be done before.
pub fn shut() -> &'static std::sync::Mutex<std::collections::HashSet<u64>> {
    static SHUT: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u64>>> =
        std::sync::OnceLock::new();
    SHUT.get_or_init(Default::default)
}

/// The cws client's side of script `seed`, played by [`script_server`]: what the client
/// reports (its messages and `onclose` code) and sends (Pongs, its Close) must be what the
/// model says, and the client waits for the server to end TCP (RFC 6455 7.1.1).
pub fn run_one_client(seed: u64) -> Result<(), String> {
    use lapps::service::cws::{url, Client, Event, KeyPool};
    let e = prepare(seed, Answers::Echo, false).1;
    let (to, report) = std::sync::mpsc::channel();
    reports().lock().unwrap().insert(seed, to);
    let u = url::parse(&format!("ws://{}/{seed}", script_server())).map_err(|e| e.to_string())?;
    let mut keys = KeyPool::default();
    let mut c = Client::connect(&u, None, &mut keys, MAX_MESSAGE, &Default::default())?;
    // Half the time the app closes the connection itself, once it has had `close_after`
    // messages (or more: a round may deliver several), if the server has not closed first.
    let mut choice = Rng(seed ^ 0x5eed);
    let app_close = choice.chance(50).then(|| {
        let after = choice.below(e.want.messages.len() + 1);
        (after, APP_CLOSE_CODES[choice.below(APP_CLOSE_CODES.len())])
    });
    // The messages delivered when the app closed (none may follow).
    let mut app_closed = None;
    let delivered = std::cell::Cell::new(0);
    let mut events = Vec::new();
    let mut on = |ev: Event<'_>| {
        events.push(match ev {
            Event::Open(_) => "open".to_string(),
            Event::Message(m, op) => {
                delivered.set(delivered.get() + 1);
                format!("{op:?} {m:02x?}")
            }
            Event::Error(_) => "error".to_string(),
            Event::Closed(code, _) => format!("closed {code}"),
        })
    };
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !c.is_done() {
        if std::time::Instant::now() > deadline {
            return Err("the client is not done within the guard".into());
        }
        let mut pfd = libc::pollfd {
            fd: c.fd(),
            events: c.interest(),
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        c.ready(pfd.revents, &mut keys, &mut on);
        // No callbacks to wait for here: a violation behind messages fails at once.
        c.settle(&mut keys, &mut on);
        c.tick(std::time::Instant::now(), &mut keys, &mut on);
        if let Some((after, code)) = app_close {
            if app_closed.is_none() && c.is_open() && delivered.get() >= after {
                let before = delivered.get();
                app_closed = c.close(code, &mut keys, &mut on).is_ok().then_some(before);
            }
        }
    }
    if !shut().lock().unwrap().contains(&seed) {
        return Err("the client was done before the server ended TCP".into());
    }
    drop(c); // its socket: the server side reads its end
    let mut sent = report
        .recv_timeout(IO_TIMEOUT)
        .map_err(|_| "no report from the script's server side")??;
    // What the client reported: the model's messages (those before its app closed), then
    // its close code.
    let mut want_events = vec!["open".to_string()];
    let shown = app_closed.unwrap_or(e.want.messages.len());
    for (op, m) in e.want.messages.iter().take(shown) {
        let op = if *op == 1 {
            Opcode::Text
        } else {
            Opcode::Binary
        };
        want_events.push(format!("{op:?} {m:02x?}"));
    }
    // (An end of TCP where a Close was due is a failure only while the connection is open.)
    if e.failed || (e.vanish && app_closed.is_none()) {
        want_events.push("error".into());
    }
    let code = match e.want.close {
        Some(code) => code.unwrap_or(1005),
        None => 1006, // e.vanish
    };
    want_events.push(format!("closed {code}"));
    if events != want_events {
        return Err(format!("events {events:?}, want {want_events:?}"));
    }
    if app_closed.is_some() {
        // Its own Close, Pongs only before it.
        let (_, code) = app_close.expect("closed by the app");
        if sent.close != Some(Some(code)) || !e.want.pongs.starts_with(&sent.pongs) {
            return Err(format!(
                "the app closed with {code}: the client sent {}, want its Close and a \
                 prefix of the {} Pongs",
                summary(&sent),
                e.want.pongs.len()
            ));
        }
        return Ok(());
    }
    // A server's FIN without its Close: the client sends no Close of its own (no empty one
    // either, which `check` allows a server behind answers it owed).
    if e.vanish && sent.close.is_some() {
        return Err(format!(
            "the client sent a Close after our FIN: {}",
            summary(&sent)
        ));
    }
    // (The messages were checked in the events: what the client sent holds none.)
    sent.messages = e.want.messages.clone();
    check(sent, &e)
}
