use super::super::lookup::{Resolver, MAX_LOOKUPS, RESOLVE_TIMEOUT};
use super::super::upgrade::Offer;
use super::*;

/// A resolver that never answers (a nameserver gone silent).
fn silent(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
    loop {
        std::thread::park();
    }
}

fn refused(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
    Err(io::Error::other("no such host"))
}

/// Every name is 127.0.0.1 (at the URL's port).
fn local(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
}

fn client(url: &str, resolver: Resolver) -> Client {
    let url = super::super::url::parse(url).unwrap();
    Client::connect_with(
        &url,
        None,
        &mut KeyPool::default(),
        1 << 20,
        &Offer::default(),
        resolver,
    )
    .unwrap()
}

/// Waits (bounded) until `c`'s descriptor reports one of `events`.
fn wait_for(c: &Client, events: i16) -> i16 {
    let mut pfd = libc::pollfd {
        fd: c.fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, its count passed with it.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "no readiness within 10 s");
    pfd.revents
}

fn events_of(f: impl FnOnce(&mut dyn FnMut(Event<'_>))) -> Vec<String> {
    let mut got = Vec::new();
    f(&mut |e| got.push(format!("{e:?}")));
    got
}

/// A silent resolver holds up nothing: the connection is made at once, waits for the
/// addresses without a socket, and fails at the resolver's deadline as a connect does.
#[test]
fn a_silent_resolver_fails_the_connection_at_its_deadline_without_holding_anything_up() {
    let began = Instant::now();
    let mut c = client("ws://slow.example/x", silent);
    assert!(began.elapsed() < Duration::from_secs(5), "waited for it");
    assert_eq!(c.interest(), libc::POLLIN);
    assert!(c
        .send(Opcode::Text, b"early", &mut KeyPool::default())
        .is_ok());
    let now = Instant::now();
    let got = events_of(|sink| c.tick(now, &mut KeyPool::default(), sink));
    assert!(got.is_empty(), "{got:?}");
    let later = c.deadline().unwrap();
    assert!(later >= began + RESOLVE_TIMEOUT);
    let got = events_of(|sink| c.tick(later, &mut KeyPool::default(), sink));
    assert_eq!(
        got,
        [
            "Error(\"cannot resolve slow.example: no answer within 10000 ms\")",
            "Closed(1006)"
        ]
    );
    assert!(c.is_done());
}

#[test]
fn a_name_that_does_not_resolve_fails_the_connection_once_the_resolver_says_so() {
    let mut c = client("ws://nowhere.example/", refused);
    let revents = wait_for(&c, libc::POLLIN);
    let got = events_of(|sink| c.ready(revents, &mut KeyPool::default(), sink));
    assert_eq!(
        got,
        [
            "Error(\"cannot resolve nowhere.example: no such host\")",
            "Closed(1006)"
        ]
    );
    assert!(c.is_done());
}

/// Once the addresses come, the connect begins and the upgrade request goes out, the
/// message sent meanwhile kept for after the upgrade.
#[test]
fn the_connect_begins_when_the_addresses_come() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut keys = KeyPool::default();
    let mut c = client(&format!("ws://somewhere.example:{port}/path"), local);
    c.send(Opcode::Text, b"early", &mut keys).unwrap();
    let lookup_fd = c.fd();
    let revents = wait_for(&c, libc::POLLIN);
    let got = events_of(|sink| c.ready(revents, &mut keys, sink));
    assert!(got.is_empty(), "{got:?}");
    assert_ne!(c.fd(), lookup_fd, "the socket's descriptor now");
    let (mut server, _) = listener.accept().unwrap();
    while matches!(c.phase, Phase::Connecting { .. }) {
        let revents = wait_for(&c, libc::POLLOUT);
        let got = events_of(|sink| c.ready(revents, &mut keys, sink));
        assert!(got.is_empty(), "{got:?}");
    }
    c.flush().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 64];
    let n = server.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("GET /path HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        c.backlog(),
        2 + 4 + b"early".len(), // its frame: a 2-byte head, the masking key, the text
        "kept for after the upgrade"
    );
}

/// Released by the lookup-cap test (a drop guard, also when it fails): its resolvers hold
/// their places until then.
static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn held(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
    while !RELEASE.load(std::sync::atomic::Ordering::SeqCst) {
        // The resolver's own polling interval, in a test resolver thread.
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(io::Error::other("released"))
}

/// At most MAX_LOOKUPS run at once on a thread (an instance); one more is refused at once
/// with a message, and a place given back is taken again. (The count is the test thread's
/// own: other tests do not share it.)
#[test]
fn lookups_past_the_cap_are_refused_at_once() {
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let release = Release;
    let mut keys = KeyPool::default();
    let url = |i: usize| super::super::url::parse(&format!("ws://many{i}.example/")).unwrap();
    let running: Vec<Client> = (0..MAX_LOOKUPS)
        .map(|i| {
            Client::connect_with(&url(i), None, &mut keys, 1 << 20, &Offer::default(), held)
                .unwrap()
        })
        .collect();
    let over = Client::connect_with(
        &url(MAX_LOOKUPS),
        None,
        &mut keys,
        1 << 20,
        &Offer::default(),
        held,
    );
    assert_eq!(
        over.err().as_deref(),
        Some(
            format!(
                "cannot resolve many{MAX_LOOKUPS}.example: {MAX_LOOKUPS} lookups are \
                 running already"
            )
            .as_str()
        )
    );
    drop(release);
    // Each lookup gives its place back before it wakes its connection.
    for c in &running {
        wait_for(c, libc::POLLIN);
    }
    let another = url(MAX_LOOKUPS + 1);
    assert!(Client::connect_with(
        &another,
        None,
        &mut keys,
        1 << 20,
        &Offer::default(),
        refused
    )
    .is_ok());
}

static ASKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Set by the sharing test once its connections are made: its lookup answers then.
static ANSWER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn counted_local(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    ASKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    while !ANSWER.load(std::sync::atomic::Ordering::SeqCst) {
        // The resolver's own polling interval, in a test resolver thread.
        std::thread::sleep(Duration::from_millis(5));
    }
    local(host, port)
}

/// Connections of one instance to one name, started while its lookup runs, wait for that
/// one lookup (a hundred connections to a name are not a hundred threads).
#[test]
fn connections_to_one_name_share_its_lookup() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://shared.example:{}/",
        listener.local_addr().unwrap().port()
    );
    let mut keys = KeyPool::default();
    let mut a = client(&url, counted_local);
    let mut b = client(&url, counted_local);
    assert_eq!(a.fd(), b.fd(), "one lookup's descriptor");
    ANSWER.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in [&mut a, &mut b] {
        let revents = wait_for(c, libc::POLLIN);
        let got = events_of(|sink| c.ready(revents, &mut keys, sink));
        assert!(got.is_empty(), "{got:?}");
        assert!(!matches!(c.phase, Phase::Resolving { .. }));
    }
    assert_eq!(ASKED.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_ne!(a.fd(), b.fd(), "a socket each");
    // Once answered (its connection not yet told), a lookup is not shared with a
    // connection started then: that one has a lookup of its own.
    let c = client(&url, counted_local);
    wait_for(&c, libc::POLLIN);
    let d = client(&url, counted_local);
    assert_ne!(c.fd(), d.fd());
    wait_for(&d, libc::POLLIN);
    assert_eq!(ASKED.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// An address asks no resolver.
#[test]
fn an_address_is_connected_to_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = client(&format!("ws://127.0.0.1:{port}/"), silent);
    assert!(matches!(
        c.phase,
        Phase::Connecting { .. } | Phase::Upgrading { .. }
    ));
}

/// Two names for one address: the second connection waits (no socket polled, no deadline)
/// while the first is connecting, and connects once the first has failed, here at its upgrade
/// deadline, which names what is missing: the server's answer, not the network.
#[test]
fn names_for_one_address_connect_one_at_a_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let mut keys = KeyPool::default();
    let open = |name: &str, keys: &mut KeyPool| {
        let url = super::super::url::parse(&format!("ws://{name}:{port}/")).unwrap();
        Client::connect_with(&url, None, keys, 1 << 20, &Offer::default(), local).unwrap()
    };
    let mut first = open("a.example", &mut keys);
    let mut second = open("b.example", &mut keys);
    for c in [&mut first, &mut second] {
        let revents = wait_for(c, libc::POLLIN);
        let got = events_of(|sink| c.ready(revents, &mut keys, sink));
        assert!(got.is_empty(), "{got:?}");
    }
    assert!(matches!(
        first.phase,
        Phase::Connecting { .. } | Phase::Upgrading { .. }
    ));
    assert!(
        matches!(second.phase, Phase::Queued { .. }),
        "{:?}",
        second.phase
    );
    assert_eq!(
        (second.fd(), second.interest(), second.deadline()),
        (-1, 0, None)
    );
    let got = events_of(|sink| second.dequeue(sink));
    assert!(got.is_empty() && matches!(second.phase, Phase::Queued { .. }));
    while matches!(first.phase, Phase::Connecting { .. }) {
        let revents = wait_for(&first, libc::POLLOUT);
        let got = events_of(|sink| first.ready(revents, &mut keys, sink));
        assert!(got.is_empty(), "{got:?}");
    }
    let past = first.deadline().unwrap() + Duration::from_secs(1);
    let got = events_of(|sink| first.tick(past, &mut keys, sink));
    assert_eq!(
        got,
        [
            format!(
                "Error(\"timeout: {addr} took the connection but did not answer the upgrade \
                 request within 10 s\")"
            ),
            "Closed(1006)".to_string()
        ]
    );
    let got = events_of(|sink| second.dequeue(sink));
    assert!(got.is_empty(), "{got:?}");
    assert!(matches!(
        second.phase,
        Phase::Connecting { .. } | Phase::Upgrading { .. }
    ));
    assert_ne!(second.fd(), -1);
}
