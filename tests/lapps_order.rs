//! Responses leave in request order even when the app answers later than it is called: the
//! host's own answers (-32700, -32600 for malformed requests, -32603 for a handler that
//! raised) wait behind the responses the app still owes to earlier requests of that
//! connection, and never hold up another connection. OONs follow a connection's first
//! response (SPEC section 4). Real server, real Lua apps (`tests/apps/lapps_deferred`,
//! `tests/apps/oon_early`), real WebSocket client; responses decoded with ciborium.
mod common;
use ciborium::Value as Cbor;
use common::*;
use lapps::lapps_proto::{cbor, Value};
use tungstenite::Message;

/// `lapps_deferred` with a close timeout no loaded machine reaches: a wait for answers that
/// should end at once must not be ended by the timeout instead.
fn start_patient() -> TestApp {
    start_app(
        &ws_json_close_timeout(1, 60_000),
        &lapps_json(
            "./tests/apps",
            r#"{ "lapps_deferred": { "protocol": "LAppS", "instances": 1 } }"#,
        ),
    )
}

fn start() -> TestApp {
    start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            r#"{ "lapps_deferred": { "protocol": "LAppS", "instances": 1 } }"#,
        ),
    )
}

fn request(method: &str, params: Vec<Value>) -> Message {
    let t = |s: &str| Value::Text(s.into());
    Message::binary(cbor::encode(&Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (t("method"), t(method)),
        (t("params"), Value::Array(params)),
    ])))
}

/// The next response as `ok [params]` or `error CODE`.
fn next(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("a response") {
            Message::Binary(b) => return shown(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A response as `ok [params]` or `error CODE`.
fn shown(b: &[u8]) -> String {
    let v: Cbor = ciborium::from_reader(b).expect("server sends CBOR");
    let get = |v: &Cbor, k: &str| {
        v.as_map()
            .and_then(|m| m.iter().find(|(key, _)| key.as_text() == Some(k)))
            .map(|(_, v)| v.clone())
    };
    if let Some(r) = get(&v, "result") {
        return format!("ok {r:?}");
    }
    if let Some(m) = get(&v, "message") {
        return format!("oon {m:?}");
    }
    let code = get(&v, "error")
        .and_then(|e| get(&e, "code"))
        .and_then(|c| c.as_integer())
        .map(i128::from);
    format!("error {}", code.expect("a result or an error code"))
}

fn ok(n: i64) -> String {
    format!("ok {:?}", Cbor::Array(vec![Cbor::Integer(n.into())]))
}

fn released() -> String {
    format!("ok {:?}", Cbor::Array(vec![Cbor::Text("released".into())]))
}

fn passed() -> String {
    format!("ok {:?}", Cbor::Array(vec![Cbor::Text("passed".into())]))
}

#[test]
fn host_answers_wait_behind_responses_the_app_still_owes() {
    let app = start();
    let mut a = connect(app.addr, "/lapps_deferred");
    let mut b = connect(app.addr, "/lapps_deferred");
    // Pipelined: the app keeps the first and the fifth unanswered until `release`.
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(Message::binary(vec![0xff, 0x00])).unwrap(); // not CBOR: -32700
    a.send(Message::binary(cbor::encode(&Value::Map(vec![(
        Value::Text("lapps".into()),
        Value::Int(1),
    )]))))
    .unwrap(); // no method: -32600
    a.send(request("fail", vec![])).unwrap(); // raises: -32603
    a.send(request("later", vec![Value::Int(2)])).unwrap();

    // Meanwhile another connection of the same instance is answered at once, errors too.
    b.send(Message::binary(vec![0xff])).unwrap();
    assert_eq!(next(&mut b), "error -32700");
    b.send(request("echo", vec![Value::Int(7)])).unwrap();
    assert_eq!(next(&mut b), ok(7));
    b.send(request("fail", vec![])).unwrap();
    assert_eq!(next(&mut b), "error -32603");

    a.send(request("release", vec![])).unwrap();
    let got: Vec<String> = (0..6).map(|_| next(&mut a)).collect();
    assert_eq!(
        got,
        [
            ok(1),
            "error -32700".into(),
            "error -32600".into(),
            "error -32603".into(),
            ok(2),
            released(),
        ]
    );
    // Nothing waits any more: an error is answered at once again.
    a.send(Message::binary(vec![0xff])).unwrap();
    assert_eq!(next(&mut a), "error -32700");
    a.send(request("echo", vec![Value::Int(3)])).unwrap();
    assert_eq!(next(&mut a), ok(3));
}

#[test]
fn a_client_that_leaves_with_answers_waiting_takes_them_along() {
    let app = start();
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(Message::binary(vec![0xff])).unwrap();
    a.send(request("fail", vec![])).unwrap();
    a.close(None).unwrap();
    while a.read().is_ok() {}
    // The instance keeps serving, in order, and nothing of the first client reaches this one.
    let mut b = connect(app.addr, "/lapps_deferred");
    b.send(request("later", vec![Value::Int(4)])).unwrap();
    b.send(Message::binary(vec![0xff])).unwrap();
    b.send(request("release", vec![])).unwrap();
    let got: Vec<String> = (0..3).map(|_| next(&mut b)).collect();
    assert_eq!(got, [ok(4), "error -32700".into(), released()]);
}

#[test]
fn a_handler_that_answers_earlier_requests_and_then_raises_still_gets_its_own_answer() {
    let app = start();
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(request("later", vec![Value::Int(2)])).unwrap();
    a.send(request("settle", vec![])).unwrap();
    let got: Vec<String> = (0..3).map(|_| next(&mut a)).collect();
    assert_eq!(got, [ok(1), ok(2), "error -32603".into()]);
    a.send(request("echo", vec![Value::Int(3)])).unwrap();
    assert_eq!(next(&mut a), ok(3));
}

#[test]
fn a_client_that_piles_up_host_answers_behind_an_owed_one_is_closed_with_1008() {
    let app = start();
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    // Each raises: the host's -32603 waits behind the first request's answer. 128 may wait.
    for _ in 0..1100 {
        a.send(request("fail", vec![])).unwrap();
    }
    let code = loop {
        match a.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("nothing may overtake the owed answer: {other:?}"),
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1008));
    // Nobody else is affected.
    let mut b = connect(app.addr, "/lapps_deferred");
    b.send(request("echo", vec![Value::Int(2)])).unwrap();
    assert_eq!(next(&mut b), ok(2));
}

/// A peer's Close waits for the responses its app still owes: a client that sends its calls
/// and then closes (a page unloading) still gets every answer, then the Close reply.
#[test]
fn a_close_from_the_peer_waits_for_the_responses_its_app_still_owes() {
    let app = start_patient();
    let mut a = connect(app.addr, "/lapps_deferred");
    let mut b = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(request("later", vec![Value::Int(2)])).unwrap();
    // Once the server has read all of a (its Close included), the instance has a's calls and
    // its Close before anything b sends now.
    close_and_wait_until_read(app.addr, &mut a);
    b.send(request("release_all", vec![])).unwrap();
    assert_eq!(next(&mut b), released());
    assert_eq!(next_or_close(&mut a), ok(1));
    assert_eq!(next_or_close(&mut a), ok(2));
    assert_eq!(
        next_or_close(&mut a),
        "close 1005",
        "the echo of an empty Close"
    );
}

/// An `onMessage` that does not return `true` closes its connection with 1000 after the
/// answers it is owed (docs/lua-api.md), here sent later from another connection's handler:
/// they still go out, then the Close, at once (the close timeout is 60 s). A request sent
/// after it no longer reaches the app.
#[test]
fn an_app_that_lets_a_connection_go_waits_for_the_answers_it_owes() {
    let app = start_patient();
    let mut a = connect(app.addr, "/lapps_deferred");
    let mut b = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(request("later", vec![Value::Int(2)])).unwrap();
    a.send(notification("bye", vec![])).unwrap();
    a.send(request("echo", vec![Value::Int(9)])).unwrap();
    a.flush().unwrap();
    // From now on, a's messages are queued for the instance ahead of b's.
    wait_until_read(app.addr, &a);
    b.send(request("release_all", vec![])).unwrap();
    assert_eq!(next(&mut b), released());
    assert_eq!(next_or_close(&mut a), ok(1));
    assert_eq!(next_or_close(&mut a), ok(2));
    assert_eq!(
        next_or_close(&mut a),
        "close 1000",
        "no answer to the later echo"
    );
}

/// Let go with nothing owed, a connection gets its Close at once (the close timeout is 60 s).
#[test]
fn an_app_that_lets_a_connection_go_owing_nothing_closes_it_at_once() {
    let app = start_patient();
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("echo", vec![Value::Int(3)])).unwrap();
    a.send(notification("bye", vec![])).unwrap();
    assert_eq!(next_or_close(&mut a), ok(3));
    assert_eq!(next_or_close(&mut a), "close 1000");
}

/// Let go while owing an answer the app never sends, a connection still gets its Close: once
/// the close timeout has passed (the answer is not sent after it).
#[test]
fn an_app_that_lets_a_connection_go_owing_an_answer_it_never_sends_closes_it_in_time() {
    let app = start();
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(notification("bye", vec![])).unwrap();
    assert_eq!(next_or_close(&mut a), "close 1000");
}

/// A Close that comes while the host's answer to a malformed request waits behind a response
/// the app still owes: the response, the held answer, then the Close, in that order and at
/// once (the close timeout is 60 s).
#[test]
fn a_close_from_the_peer_waits_for_the_host_answers_held_behind_an_owed_response() {
    let app = start_patient();
    let mut a = connect(app.addr, "/lapps_deferred");
    let mut b = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    a.send(Message::binary(vec![0xff])).unwrap();
    close_and_wait_until_read(app.addr, &mut a);
    b.send(request("release_all", vec![])).unwrap();
    assert_eq!(next(&mut b), released());
    assert_eq!(next_or_close(&mut a), ok(1));
    assert_eq!(next_or_close(&mut a), "error -32700", "held behind it");
    assert_eq!(next_or_close(&mut a), "close 1005");
}

/// As many host answers as may wait (128) held behind one owed response, each counted as
/// unposted by the hub: all leave in order, and a later Close that comes while a response is
/// owed waits for it, then follows at once (the close timeout is 60 s).
#[test]
fn a_close_waits_for_an_owed_response_after_the_most_held_answers() {
    const HELD: usize = 128;
    let app = start_patient();
    let mut a = connect(app.addr, "/lapps_deferred");
    let mut b = connect(app.addr, "/lapps_deferred");
    a.send(request("later", vec![Value::Int(1)])).unwrap();
    for _ in 0..HELD {
        a.write(request("fail", vec![])).unwrap();
    }
    a.flush().unwrap();
    // Then a's calls reach the instance before b's.
    wait_until_read(app.addr, &a);
    b.send(request("release_all", vec![])).unwrap();
    assert_eq!(next(&mut b), released());
    assert_eq!(next(&mut a), ok(1));
    for _ in 0..HELD {
        assert_eq!(next(&mut a), "error -32603");
    }
    a.send(request("later", vec![Value::Int(2)])).unwrap();
    close_and_wait_until_read(app.addr, &mut a);
    b.send(request("release_all", vec![])).unwrap();
    assert_eq!(
        next(&mut b),
        released(),
        "a still open: its response could be sent (else the send fails and b's call raises)"
    );
    assert_eq!(next_or_close(&mut a), ok(2), "the owed response");
    assert_eq!(next_or_close(&mut a), "close 1005");
}

/// The tests whose instance waits in `hold`: one at a time, as they share its mqr queues.
static HOLD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Releases a `hold` when dropped during a panic, so that a failed assertion does not leave
/// the instance spinning for the rest of the test binary.
struct Release(std::sync::Arc<lapps::service::mqr::Queue>);

impl Release {
    fn now(&self) {
        self.0.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.try_post(b"go".to_vec().into_boxed_slice());
        }
    }
}

/// `lapps_deferred` able to `hold`, with a close timeout no loaded machine reaches; the lock,
/// and the queues `hold` signals "busy" on and waits for its release on (both empty).
fn start_holding() -> (
    TestApp,
    std::sync::MutexGuard<'static, ()>,
    std::sync::Arc<lapps::service::mqr::Queue>,
    Release,
) {
    start_holding_in(1)
}

/// [`start_holding`] with `instances` instances (connections go to them in turn).
fn start_holding_in(
    instances: usize,
) -> (
    TestApp,
    std::sync::MutexGuard<'static, ()>,
    std::sync::Arc<lapps::service::mqr::Queue>,
    Release,
) {
    let one = HOLD.lock().unwrap_or_else(|e| e.into_inner());
    let busy = lapps::service::mqr::registry().open("lapps_deferred.busy", 4);
    let release = lapps::service::mqr::registry().open("lapps_deferred.release", 4);
    let handed = lapps::service::mqr::registry().open("lapps_deferred.handed", 4);
    while busy.poll().is_some() || release.poll().is_some() || handed.poll().is_some() {}
    let app = start_app(
        &ws_json_close_timeout(1, 60_000),
        &lapps_json(
            "./tests/apps",
            &format!(
                r#"{{ "lapps_deferred": {{ "protocol": "LAppS", "instances": {instances},
                                         "preload": ["mqr"], "instruction_budget": 0 }} }}"#
            ),
        ),
    );
    (app, one, busy, Release(release))
}

/// SPEC 8 for LAppS: a connection whose requests have all had their responses gets its Close
/// reply from the worker while its instance is busy with another connection's request (the
/// close timeout is 60 s: a reply that waited for the instance would come after the release,
/// past the read guard).
#[test]
fn a_lapps_close_owed_nothing_does_not_wait_for_a_busy_instance() {
    let (app, _one, busy, release) = start_holding();
    let mut c = connect(app.addr, "/lapps_deferred");
    c.send(request("echo", vec![Value::Int(7)])).unwrap();
    assert_eq!(next(&mut c), ok(7));
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("hold", vec![])).unwrap();
    wait_for("the instance to be busy", IO_TIMEOUT, || !busy.is_empty());
    c.close(None).unwrap();
    c.flush().unwrap();
    assert_eq!(
        next_or_close(&mut c),
        "close 1005",
        "the Close reply, while the instance is busy"
    );
    release.now();
    assert_eq!(next(&mut a), released());
}

/// A client that pipelines more calls into one batch than the hub's unposted count holds (511)
/// still gets its Close at once afterwards: a run of responses to one connection is counted
/// once, so the count never saturates into the careful mode.
#[test]
fn a_lapps_close_after_a_long_pipelined_run_does_not_wait_for_a_busy_instance() {
    const RUN: i64 = 600;
    let (app, _one, busy, release) = start_holding();
    let mut c = connect(app.addr, "/lapps_deferred");
    // One write, one read by the server, one batch for the instance.
    for i in 0..RUN {
        c.write(request("echo", vec![Value::Int(i)])).unwrap();
    }
    c.flush().unwrap();
    for i in 0..RUN {
        assert_eq!(next(&mut c), ok(i));
    }
    let mut a = connect(app.addr, "/lapps_deferred");
    a.send(request("hold", vec![])).unwrap();
    wait_for("the instance to be busy", IO_TIMEOUT, || !busy.is_empty());
    c.close(None).unwrap();
    c.flush().unwrap();
    assert_eq!(
        next_or_close(&mut c),
        "close 1005",
        "the Close reply, while the instance is busy"
    );
    release.now();
    assert_eq!(next(&mut a), released());
}

/// The other side of the same rule: a response the app has taken for a connection but not yet
/// handed to its worker (it answered from another connection's handler, which is still
/// running) holds that connection's Close back, and arrives before it.
#[test]
fn a_lapps_close_waits_for_a_response_taken_but_not_yet_posted() {
    let (app, _one, busy, release) = start_holding();
    let mut b = connect(app.addr, "/lapps_deferred");
    let mut a = connect(app.addr, "/lapps_deferred");
    b.send(request("later", vec![Value::Int(1)])).unwrap();
    wait_until_read(app.addr, &b);
    // One worker, one instance: a's echo is handled after b's call.
    a.send(request("echo", vec![Value::Int(2)])).unwrap();
    assert_eq!(next(&mut a), ok(2));
    // a's handler answers b's call, then keeps the instance busy before its batch is posted.
    a.send(request("hold", vec![Value::Bool(true)])).unwrap();
    wait_for("the instance to be busy", IO_TIMEOUT, || !busy.is_empty());
    close_and_wait_until_read(app.addr, &mut b);
    release_then_response_then_close(&release, &mut a, &mut b, 1);
}

/// The same rule across instances: the response is taken by another instance than the one the
/// connection is bound to (its request was handed over through `mqr`), and that instance is
/// busy before posting it. The bound instance, idle, owes nothing and holds nothing when the
/// Close comes; the Close must still wait for the response, and follow it at once when it is
/// posted (the close timeout is 60 s).
#[test]
fn a_lapps_close_waits_for_a_response_another_instance_took_but_not_yet_posted() {
    let (app, _one, busy, release) = start_holding_in(2);
    let (mut b, mut a, handed) = hand_off(&app, 1);
    // a's instance answers b's call, then stays busy before its outbox is posted.
    a.send(request("hold", vec![Value::Bool(true)])).unwrap();
    wait_for("the other instance to be busy", IO_TIMEOUT, || {
        !busy.is_empty()
    });
    assert!(handed.is_empty(), "the busy instance took b's call");
    close_and_wait_until_read(app.addr, &mut b);
    // b's own instance is idle: give it the time to do whatever it does with the Close.
    first_instance_caught_up(&app);
    release_then_response_then_close(&release, &mut a, &mut b, 1);
}

/// A Close that comes while a response is still owed, and owed by a request handed to another
/// instance: when that instance sends the response, the Close follows it at once. The bound
/// instance stays idle meanwhile, so nothing there looks again; the close timeout (60 s) is
/// past the read guard.
#[test]
fn a_lapps_close_follows_at_once_the_response_another_instance_sends_later() {
    let (app, _one, busy, release) = start_holding_in(2);
    let (mut b, mut a, _handed) = hand_off(&app, 5);
    close_and_wait_until_read(app.addr, &mut b);
    // b's instance has seen the Close, and owes 5.
    first_instance_caught_up(&app);
    a.send(request("hold", vec![Value::Bool(true)])).unwrap();
    wait_for("the other instance to be busy", IO_TIMEOUT, || {
        !busy.is_empty()
    });
    release_then_response_then_close(&release, &mut a, &mut b, 5);
}

/// A host answer held behind a response another instance sends (the call was handed over
/// through `mqr`) follows that response: the bound instance is idle, and no batch of its own
/// would ever come to look at it again, since the client is waiting for this very answer.
#[test]
fn a_host_answer_held_behind_a_response_another_instance_sends_follows_it() {
    let (app, _one, _busy, _release) = start_holding_in(2);
    let (mut b, mut a, _handed) = hand_off(&app, 4);
    // Not CBOR: the host's -32700 is held behind the response b's call is owed.
    b.send(Message::binary(vec![0xff])).unwrap();
    wait_until_read(app.addr, &b);
    first_instance_caught_up(&app);
    a.send(request("pass_on", vec![])).unwrap();
    assert_eq!(next(&mut a), passed());
    assert_eq!(next(&mut b), ok(4), "the response first");
    assert_eq!(next(&mut b), "error -32700", "then the host's answer");
}

/// Nor does that host answer overtake the response when the other instance has taken it but not
/// yet posted it, while the bound instance looks at its held answers (here after a batch of
/// another connection): taken is not yet sent.
#[test]
fn a_host_answer_held_behind_a_response_another_instance_took_does_not_overtake_it() {
    let (app, _one, busy, release) = start_holding_in(2);
    let (mut b, mut a, handed) = hand_off(&app, 6);
    b.send(Message::binary(vec![0xff])).unwrap();
    wait_until_read(app.addr, &b);
    // a's instance takes b's response, then stays busy before its outbox is posted.
    a.send(request("hold", vec![Value::Bool(true)])).unwrap();
    wait_for("the other instance to be busy", IO_TIMEOUT, || {
        !busy.is_empty()
    });
    assert!(handed.is_empty(), "the busy instance took b's call");
    // A batch for b's instance (the third connection is bound to it), after b's -32700.
    first_instance_caught_up(&app);
    release.now();
    assert_eq!(next(&mut a), released());
    assert_eq!(next(&mut b), ok(6), "the response first");
    assert_eq!(next(&mut b), "error -32700", "then the host's answer");
}

/// The same, the other way round: the other instance has taken the response (nothing is owed
/// any more) but not posted it when the host answers the malformed message. Taken is not yet
/// sent: the host's answer waits for that post.
#[test]
fn a_host_answer_after_a_response_another_instance_took_but_has_not_posted_follows_it() {
    let (app, _one, busy, release) = start_holding_in(2);
    let (mut b, mut a, handed) = hand_off(&app, 7);
    // a's instance takes b's response, then stays busy before its outbox is posted.
    a.send(request("hold", vec![Value::Bool(true)])).unwrap();
    wait_for("the other instance to be busy", IO_TIMEOUT, || {
        !busy.is_empty()
    });
    assert!(handed.is_empty(), "the busy instance took b's call");
    b.send(Message::binary(vec![0xff])).unwrap();
    wait_until_read(app.addr, &b);
    // A batch for b's instance after b's garbage: it has answered it (or held the answer).
    first_instance_caught_up(&app);
    release.now();
    assert_eq!(next(&mut a), released());
    assert_eq!(next(&mut b), ok(7), "the response first");
    assert_eq!(next(&mut b), "error -32700", "then the host's answer");
}

/// In an app of [`start_holding_in`]`(2)`: b (bound to the first instance) calls
/// `hand_off(n)`, so that a (bound to the second) can answer it with `hold(true)`. Returns b,
/// a and the queue the call waits on, once it is there.
fn hand_off(app: &TestApp, n: i64) -> (Client, Client, std::sync::Arc<lapps::service::mqr::Queue>) {
    let handed = lapps::service::mqr::registry().open("lapps_deferred.handed", 4);
    // One worker, two instances taken in turn.
    let mut b = connect(app.addr, "/lapps_deferred");
    let a = connect(app.addr, "/lapps_deferred");
    b.send(request("hand_off", vec![Value::Int(n)])).unwrap();
    wait_for("b's call to be handed off", IO_TIMEOUT, || {
        !handed.is_empty()
    });
    (b, a, handed)
}

/// In an app of [`start_holding_in`]`(2)` with two connections made: a third connection's
/// echo, answered by the first instance after everything queued for it before.
fn first_instance_caught_up(app: &TestApp) {
    let mut probe = connect(app.addr, "/lapps_deferred");
    probe.send(request("echo", vec![Value::Int(3)])).unwrap();
    assert_eq!(next(&mut probe), ok(3));
}

/// Ends `a`'s `hold`; then `b` gets the response `ok [n]` first and the Close right after it.
fn release_then_response_then_close(release: &Release, a: &mut Client, b: &mut Client, n: i64) {
    release.now();
    assert_eq!(next(a), released());
    assert_eq!(next_or_close(b), ok(n), "the response, before the Close");
    assert_eq!(next_or_close(b), "close 1005", "the Close, right after it");
}

/// Sends a Close on `ws` and waits until the server has read everything `ws` sent: from then
/// on, the Close is queued for the connection's instance ahead of anything sent afterwards.
fn close_and_wait_until_read(server: std::net::SocketAddr, ws: &mut Client) {
    ws.close(None).unwrap();
    ws.flush().unwrap();
    wait_until_read(server, ws);
}

/// Waits until the server has read everything `ws` sent: its messages are queued for the
/// connection's instance ahead of anything any client sends afterwards (one worker).
fn wait_until_read(server: std::net::SocketAddr, ws: &Client) {
    let end = ws.get_ref().local_addr().unwrap();
    wait_for("the server to read what was sent", IO_TIMEOUT, || {
        server_unread(server, end) == Some(0)
    });
}

/// [`next`], or `close CODE` for the server's Close.
fn next_or_close(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("a response or the Close") {
            Message::Close(f) => return format!("close {}", f.map_or(1005, |f| u16::from(f.code))),
            Message::Binary(b) => return shown(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `oon_early` with a slow-consumer bound of 4 x 256 KiB + 64 KiB.
fn start_oon_early() -> TestApp {
    start_app(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "outbound_high_water": 262144 }"#,
        &lapps_json(
            "./tests/apps",
            r#"{ "oon_early": { "protocol": "LAppS", "instances": 1, "preload": ["bcast"],
                                "max_inbound_message_size": 65536 } }"#,
        ),
    )
}

/// A client notification: `{lapps: 1, method, cid: 5, params}`.
fn notification(method: &str, params: Vec<Value>) -> Message {
    let t = |s: &str| Value::Text(s.into());
    Message::binary(cbor::encode(&Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (t("method"), t(method)),
        (t("cid"), Value::Int(5)),
        (t("params"), Value::Array(params)),
    ])))
}

fn oon(items: &[Cbor]) -> String {
    format!("oon {:?}", Cbor::Array(items.to_vec()))
}

#[test]
fn oons_sent_before_the_first_response_follow_it_in_order() {
    let app = start_oon_early();
    let mut ws = connect(app.addr, "/oon_early");
    let t = |s: &str| Cbor::Text(s.into());
    let early = |n: i64| oon(&[t("early"), Cbor::Integer(n.into())]);
    // Pushed by ws:send_oon, by a broadcast, and inside the first request's handler: none
    // may reach the client before the answer to its first call.
    ws.send(notification("push", vec![Value::Int(1)])).unwrap();
    ws.send(notification("push", vec![Value::Int(2)])).unwrap();
    ws.send(notification("join", vec![])).unwrap();
    ws.send(request("first", vec![])).unwrap();
    let got: Vec<String> = (0..5).map(|_| next(&mut ws)).collect();
    assert_eq!(
        got,
        [
            format!("ok {:?}", Cbor::Array(vec![t("answer")])),
            early(1),
            early(2),
            oon(&[t("cast")]),
            oon(&[t("before")]),
        ]
    );
    // After the exchange an OON goes out at once, ahead of a later answer.
    ws.send(notification("push", vec![Value::Int(3)])).unwrap();
    ws.send(request("echo", vec![Value::Int(4)])).unwrap();
    assert_eq!([next(&mut ws), next(&mut ws)], [early(3), ok(4)]);
}

#[test]
fn a_peer_that_never_asks_while_oons_pile_up_for_it_is_closed_with_1008() {
    let app = start_oon_early();
    let mut quiet = connect(app.addr, "/oon_early");
    let mut other = connect(app.addr, "/oon_early");
    other.send(request("echo", vec![Value::Int(1)])).unwrap();
    assert_eq!(next(&mut other), ok(1));
    // 100 OONs of 60 KB: more than held OONs may take (4 x 256 KiB here), all held, since
    // no request of this peer was answered.
    quiet
        .send(notification(
            "flood",
            vec![Value::Int(60_000), Value::Int(100)],
        ))
        .unwrap();
    assert_eq!(
        next_or_close(&mut quiet),
        "close 1008",
        "held OONs past the bound end the connection, none of them sent"
    );
    // The other connection is untouched.
    other.send(request("echo", vec![Value::Int(2)])).unwrap();
    assert_eq!(next(&mut other), ok(2));
}

/// `forward_calls`, which hands every request to the standalone `answer_calls` (the docs' way
/// to answer in call order from one place), with a close timeout no loaded machine reaches.
fn start_forwarding() -> (TestApp, std::sync::MutexGuard<'static, ()>) {
    let one = HOLD.lock().unwrap_or_else(|e| e.into_inner());
    let calls = lapps::service::mqr::registry().open("forward_calls.calls", 64);
    let sent = lapps::service::mqr::registry().open("forward_calls.sent", 4);
    while calls.poll().is_some() || sent.poll().is_some() {}
    let app = start_app(
        &ws_json_close_timeout(1, 60_000),
        &lapps_json(
            "./tests/apps",
            r#"{ "forward_calls": { "protocol": "LAppS", "preload": ["mqr"],
                                   "instruction_budget": 0, "depends": ["answer_calls"] },
                 "answer_calls": { "standalone": true, "preload": ["mqr"] } }"#,
        ),
    );
    (app, one)
}

fn answered(method: &str) -> String {
    format!("ok {:?}", Cbor::Array(vec![Cbor::Text(method.into())]))
}

/// A host answer held behind a response another thread owes, when that thread sends it and
/// the response to the next request in one post: the answer goes between them (a trial got
/// `[ok, ok, -32700]` for `[call, garbage, call]`: the client takes the second call's answer
/// for the error's and the error for the second call's).
#[test]
fn a_host_answer_goes_between_two_responses_another_thread_posts_at_once() {
    let (app, _one) = start_forwarding();
    let mut ws = connect(app.addr, "/forward_calls");
    for round in 0..3 {
        ws.send(request("pair", vec![])).unwrap();
        match round {
            0 => ws.send(Message::binary(vec![0xff])).unwrap(), // not CBOR: -32700
            _ => ws
                .send(Message::binary(cbor::encode(&Value::Map(vec![(
                    Value::Text("lapps".into()),
                    Value::Int(1),
                )]))))
                .unwrap(), // no method: -32600
        }
        ws.send(request("pair", vec![])).unwrap();
        let code = if round == 0 { "-32700" } else { "-32600" };
        let got: Vec<String> = (0..3).map(|_| next(&mut ws)).collect();
        assert_eq!(
            got,
            [answered("pair"), format!("error {code}"), answered("pair")],
            "round {round}"
        );
    }
}

/// A handler that raises (the docs' way to answer a request that cannot be handed off) gets
/// its -32603 in its turn between the responses another thread sends at once.
#[test]
fn a_raising_handlers_answer_goes_between_two_responses_another_thread_posts_at_once() {
    let (app, _one) = start_forwarding();
    let mut ws = connect(app.addr, "/forward_calls");
    ws.send(request("pair", vec![])).unwrap();
    ws.send(request("refuse", vec![])).unwrap();
    ws.send(request("pair", vec![])).unwrap();
    let got: Vec<String> = (0..3).map(|_| next(&mut ws)).collect();
    assert_eq!(
        got,
        [answered("pair"), "error -32603".into(), answered("pair")]
    );
}

/// A host answer owed nothing is sent at once, and reaches the client before the response
/// another thread sends to the next request, however long the instance then takes to finish
/// its batch (here: until that response is posted).
#[test]
fn a_host_answer_sent_at_once_is_not_overtaken_by_the_next_response_from_another_thread() {
    let (app, _one) = start_forwarding();
    let mut ws = connect(app.addr, "/forward_calls");
    // In one write, so that the instance gets both in one batch.
    ws.write(Message::binary(vec![0xff])).unwrap();
    ws.write(request("wait", vec![])).unwrap();
    ws.flush().unwrap();
    assert_eq!(next(&mut ws), "error -32700");
    assert_eq!(next(&mut ws), answered("wait"));
}
