// The LAppS client of lapps.mjs over a scripted stand-in for the browser's WebSocket API (the
// runtime's, not ours): responses matched in order, OON dispatch, notifications, rejection of
// pending calls on disconnect, reconnection with back-off. The real server is exercised by
// tests/browser/ and tests/interop/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, encode, decode, LappsError, CLOSE_PROTOCOL_ERROR } from "../lapps.mjs";

/** Records every socket created; the test plays the server side by hand. */
function socketFactory() {
  const sockets = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(frame) {
      assert.equal(this.readyState, 1, "send on a socket that is not open");
      this.sent.push(decode(frame));
    }
    close(code = 1000) {
      this.serverClose(code);
    }
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(value) {
      this.onmessage?.({ data: encode(value).buffer });
    }
    serverClose(code = 1006) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason: "" });
    }
  }
  return { sockets, WebSocket: ScriptedSocket };
}

const until = async (cond, what, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

test("calls are queued until open and answered in request order", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/echo_lapps", { WebSocket, reconnect: false });
  assert.equal(sockets[0].binaryType, "arraybuffer");
  const a = client.call("echo", "hello", 42, [1, 2]);
  const b = client.call("nothing");
  const c = client.call("boom", 1);
  assert.equal(sockets[0].sent.length, 0);
  sockets[0].serverOpen();
  assert.deepEqual(sockets[0].sent, [
    { lapps: 1, method: "echo", params: ["hello", 42, [1, 2]] },
    { lapps: 1, method: "nothing" },
    { lapps: 1, method: "boom", params: [1] },
  ]);
  sockets[0].serverSend({ status: 1, cid: 0, result: ["hello", 42, [1, 2]] });
  sockets[0].serverSend({ cid: 7, message: ["interleaved"] }); // an OON does not consume a call
  sockets[0].serverSend({ status: 1, cid: 0, result: [] });
  sockets[0].serverSend({ status: 0, cid: 0, error: { code: -32602, message: "invalid params", data: { why: 1 } } });
  assert.deepEqual(await a, ["hello", 42, [1, 2]]);
  assert.deepEqual(await b, []);
  await assert.rejects(c, (e) => e instanceof LappsError && e.code === -32602 && e.message === "invalid params" && e.data.why === 1);
  client.close();
});

test("OONs reach the handlers of their channel only; notifications expect no response", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const got = [];
  const off = client.on(1000, (message, channel) => got.push([channel, message]));
  client.on(5, () => got.push("wrong channel"));
  sockets[0].serverOpen();
  client.notify(3, "note", "x");
  const call = client.call("echo", 1);
  assert.deepEqual(sockets[0].sent[0], { lapps: 1, method: "note", cid: 3, params: ["x"] });
  sockets[0].serverSend({ cid: 1000, message: [{ time: 1 }] });
  sockets[0].serverSend({ status: 1, cid: 0, result: [1] });
  assert.deepEqual(await call, [1]); // the notification did not take the call's response
  off();
  off(); // a second call changes nothing
  assert.equal(client.handlers.has(1000), false, "the last handler gone, the channel is forgotten");
  sockets[0].serverSend({ cid: 1000, message: [{ time: 2 }] });
  assert.deepEqual(got, [[1000, [{ time: 1 }]]]);
  assert.throws(() => client.notify(0, "x"), RangeError);
  // The server would answer these on the command channel, out of turn.
  assert.throws(() => client.notify(-1, "x"), RangeError);
  assert.throws(() => client.notify(2 ** 64, "x"), RangeError);
  assert.throws(() => client.notify(1.5, "x"), RangeError);
  client.notify(2n ** 64n - 1n, "big");
  assert.deepEqual(sockets[0].sent.at(-1), { lapps: 1, method: "big", cid: 2n ** 64n - 1n });
  client.close();
});

test("OON channels beyond 2^53 reach their own handlers", () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const got = [];
  client.on(2n ** 53n + 1n, (m, ch) => got.push(["big", ch]));
  for (const bad of [2 ** 53, 0, -1, 1.5, 0n, 2n ** 64n, "7"]) {
    assert.throws(() => client.on(bad, () => got.push("never")), RangeError, String(bad));
  }
  client.on(7n, (m, ch) => got.push(["seven", ch]));
  sockets[0].serverOpen();
  sockets[0].serverSend({ cid: 2n ** 53n + 1n, message: [] });
  sockets[0].serverSend({ cid: 7, message: [] });
  assert.deepEqual(got, [["big", 2n ** 53n + 1n], ["seven", 7]]);
  client.close();
});

test("each registration is its own; handlers changed during a dispatch count from the next OON", () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const got = [];
  const h = (m) => got.push(["h", m[0]]);
  const first = client.on(7, h);
  client.on(7, h);
  // Re-subscribes itself on every OON (with another handler on the channel, a dispatch over
  // the live set met it again at its end, for ever).
  let off;
  const again = (m) => {
    got.push(["again", m[0]]);
    off();
    off = client.on(7, again);
  };
  off = client.on(7, again);
  client.on(7, (m) => got.push(["late", m[0]]) && client.on(7, (n) => got.push(["added", n[0]])));
  sockets[0].serverOpen();
  sockets[0].serverSend({ cid: 7, message: [1] });
  assert.deepEqual(got, [["h", 1], ["h", 1], ["again", 1], ["late", 1]]);
  first();
  got.length = 0;
  sockets[0].serverSend({ cid: 7, message: [2] });
  // One h left; "added" (registered during the first OON) now gets it; the one "late" added
  // during this dispatch does not yet.
  assert.deepEqual(got, [["h", 2], ["late", 2], ["again", 2], ["added", 2]]);
  client.close();
});

test("a result with a byte-string map key settles its call", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  sockets[0].serverOpen();
  const a = client.call("echo");
  const b = client.call("echo");
  const key = new Uint8Array([1]);
  sockets[0].serverSend({ status: 1, cid: 0, result: [new Map([[key, 1]])] });
  sockets[0].serverSend({ status: 1, cid: 0, result: ["second"] });
  const [m] = await a;
  assert.ok(m instanceof Map);
  assert.deepEqual([...m.entries()], [[key, 1]]);
  assert.deepEqual(await b, ["second"]);
  client.close();
});

test("a connect that fails with an error and no close event is tried again", async () => {
  // Node's built-in WebSocket: a refused connect fires "error" and never "close".
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  const client = connect("ws://x/", { WebSocket, minDelay: 10, maxDelay: 40 });
  client.onclose = (info) => closes.push(info);
  const lost = client.call("echo", 0);
  sockets[0].onerror?.({});
  await assert.rejects(lost, (e) => e instanceof LappsError && e.code === 0);
  await until(() => sockets.length === 2, "a second attempt");
  assert.equal(closes.length, 1);
  assert.equal(closes[0].code, 1006);
  const queued = client.call("echo", 1); // made while connecting: sent once open
  // A browser's close after the error changes nothing: the socket was given up on.
  sockets[0].serverClose(1006);
  assert.equal(closes.length, 1);
  sockets[1].serverOpen();
  assert.deepEqual(sockets[1].sent, [{ lapps: 1, method: "echo", params: [1] }]);
  sockets[1].serverSend({ status: 1, cid: 0, result: [1] });
  assert.deepEqual(await queued, [1]);
  client.close();
});

test("an error after open leaves the connection to its close event", async () => {
  // Browsers fire "error" before "close" on a connection that fails once open: the close,
  // not the error, ends it (pending calls stay pending until then).
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  const client = connect("ws://x/", { WebSocket, minDelay: 10, maxDelay: 40 });
  client.onclose = (info) => closes.push(info);
  sockets[0].serverOpen();
  let settled = false;
  const pending = client.call("echo", 0);
  pending.then(
    () => (settled = true),
    () => (settled = true),
  );
  sockets[0].onerror?.({});
  await new Promise((r) => setImmediate(r)); // let a wrongly settled call run its handlers
  assert.equal(settled, false, "an error alone settled a pending call");
  assert.equal(closes.length, 0);
  assert.equal(sockets.length, 1);
  assert.equal(client.connected, true);
  sockets[0].serverClose(1011);
  await assert.rejects(pending, (e) => e instanceof LappsError && e.code === 0);
  assert.deepEqual(closes.map((c) => c.code), [1011]);
  await until(() => sockets.length === 2, "a reconnection after the close");
  client.close();
});

test("close() between a failed connect's error and its reconnection opens nothing more", async () => {
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  const client = connect("ws://x/", { WebSocket, minDelay: 5, maxDelay: 10 });
  client.onclose = (info) => closes.push(info);
  sockets[0].close = function () {
    this.readyState = 2; // closing: its close event comes later
  };
  sockets[0].onerror?.({}); // the connect failed: the client gives the socket up
  assert.equal(closes.length, 1);
  client.close();
  sockets[0].serverClose(1006); // the close event that follows the error
  assert.equal(closes.length, 1, "the socket given up on was reported closed twice");
  await new Promise((r) => setTimeout(r, 40)); // past maxDelay: nothing may happen here
  assert.equal(sockets.length, 1, "a reconnection after close()");
  await assert.rejects(client.call("echo"), LappsError);
});

test("close() on an open socket, then an error and the close event: one onclose, no reconnection", async () => {
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  const client = connect("ws://x/", { WebSocket, minDelay: 5, maxDelay: 10 });
  client.onclose = (info) => closes.push(info);
  sockets[0].serverOpen();
  sockets[0].close = function () {
    this.readyState = 2;
  };
  const pending = client.call("echo");
  client.close();
  await assert.rejects(pending, LappsError);
  sockets[0].onerror?.({});
  sockets[0].serverClose(1006);
  assert.deepEqual(closes.map((c) => c.code), [1006]);
  await new Promise((r) => setTimeout(r, 40)); // past maxDelay: nothing may happen here
  assert.equal(sockets.length, 1, "a reconnection after close()");
});

test("a disconnect rejects pending calls, then the client reconnects with growing delays", async () => {
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  let opens = 0;
  const client = connect("ws://x/", { WebSocket, minDelay: 10, maxDelay: 40 });
  client.onclose = (info) => closes.push(info);
  client.onopen = () => opens++;
  sockets[0].serverOpen();
  const lost = client.call("echo", 1);
  sockets[0].serverClose(1006);
  await assert.rejects(lost, (e) => e instanceof LappsError && e.code === 0);
  assert.equal(closes[0].code, 1006);
  assert.ok(closes[0].reconnectIn >= 5 && closes[0].reconnectIn <= 10, `first delay ${closes[0].reconnectIn}`);

  // Failed attempts: the delay doubles up to maxDelay (with jitter between half and all of it).
  for (let i = 1; i <= 4; i++) {
    await until(() => sockets.length === i + 1, `reconnection attempt ${i}`);
    sockets[i].serverClose(1006);
  }
  const delays = closes.map((c) => c.reconnectIn);
  assert.ok(delays[1] >= 10 && delays[1] <= 20, `delays ${delays}`);
  assert.ok(delays[2] >= 20 && delays[2] <= 40, `delays ${delays}`);
  assert.ok(delays[4] >= 20 && delays[4] <= 40, `capped delays ${delays}`);

  await until(() => sockets.length === 6, "the last attempt");
  const next = client.call("echo", 2); // made while connecting: sent once open
  sockets[5].serverOpen();
  assert.equal(opens, 2);
  sockets[5].serverSend({ status: 1, cid: 0, result: [2] });
  assert.deepEqual(await next, [2]);
  sockets[5].serverClose(1006);
  // An answered call is no proof the server will keep the connection (see the next test).
  assert.ok(closes.at(-1).reconnectIn >= 20, `delays ${closes.map((c) => c.reconnectIn)}`);
  client.close();
  await assert.rejects(client.call("late"), LappsError);
});

/**
 * Five attempts, each opened and then closed by the server with 1008 (slow consumer, a proxy,
 * a redeploy loop) after `during(socket, i)`: the delays must double each time.
 */
async function delaysGrowOver(during) {
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  const client = connect("ws://x/", { WebSocket, minDelay: 10, maxDelay: 1000 });
  client.onclose = (info) => closes.push(info);
  for (let i = 0; i < 5; i++) {
    await until(() => sockets.length === i + 1, `connection attempt ${i}`);
    sockets[i].serverOpen();
    await during(client, sockets[i], i);
    sockets[i].serverClose(1008);
  }
  const delays = closes.map((c) => c.reconnectIn);
  for (let i = 0; i < 5; i++) {
    const base = 10 * 2 ** i;
    assert.ok(delays[i] >= base / 2 && delays[i] <= base, `attempt ${i}: delays ${delays}`);
  }
  client.close();
}

test("a server that accepts and closes at once gets growing delays, not a reset on each open", async () => {
  await delaysGrowOver(async () => {});
});

test("a server that answers a call, then closes, gets growing delays too", async () => {
  await delaysGrowOver(async (client, socket, i) => {
    const answered = client.call("echo", i);
    socket.serverSend({ status: 1, cid: 0, result: [i] });
    assert.deepEqual(await answered, [i]);
  });
});

test("a connection that stays open for stableAfter ms resets the back-off; an error answer does not", async () => {
  const { sockets, WebSocket } = socketFactory();
  const closes = [];
  const client = connect("ws://x/", { WebSocket, minDelay: 10, maxDelay: 1000, stableAfter: 30 });
  client.onclose = (info) => closes.push(info);
  for (let i = 0; i < 3; i++) {
    await until(() => sockets.length === i + 1, `connection attempt ${i}`);
    sockets[i].serverClose(1006);
  }
  await until(() => sockets.length === 4, "the fourth attempt");
  sockets[3].serverOpen();
  const refused = client.call("echo");
  sockets[3].serverSend({ status: 0, cid: 0, error: { code: -32000, message: "overloaded" } });
  await assert.rejects(refused, LappsError);
  // Closed before stableAfter, after an error answer only: the back-off keeps growing.
  sockets[3].serverClose(1008);
  assert.ok(closes[3].reconnectIn >= 40, `delays ${closes.map((c) => c.reconnectIn)}`);
  await until(() => sockets.length === 5, "the fifth attempt");
  sockets[4].serverOpen();
  await until(() => client.attempt === 0, "the back-off reset after stableAfter ms");
  sockets[4].serverClose(1006);
  assert.ok(closes[4].reconnectIn <= 10, `delays ${closes.map((c) => c.reconnectIn)}`);
  client.close();
});

test("close() stops reconnecting and rejects queued calls", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, minDelay: 1 });
  const queued = client.call("echo");
  client.close();
  await assert.rejects(queued, LappsError);
  await new Promise((r) => setTimeout(r, 20)); // nothing may happen here: no new socket
  assert.equal(sockets.length, 1);
});

test("messages still delivered by a closing socket after close() are not handled", async () => {
  // Browsers drop them; Node's `ws` package (options.WebSocket) delivers them while closing.
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const errors = [];
  const closes = [];
  const oons = [];
  client.onerror = (e) => errors.push(e.message);
  client.onclose = (info) => closes.push(info);
  client.on(5, (message) => oons.push(message));
  sockets[0].serverOpen();
  sockets[0].close = function () {
    this.readyState = 2; // closing: the server's Close has not come yet
  };
  const slow = client.call("slow");
  client.close();
  await assert.rejects(slow, LappsError);
  sockets[0].serverSend({ status: 1, cid: 0, result: ["late"] });
  sockets[0].serverSend({ cid: 5, message: ["late"] });
  sockets[0].serverClose(1000);
  assert.deepEqual(errors, []);
  assert.deepEqual(oons, []);
  assert.deepEqual(closes.map((c) => c.code), [1000]);
});

test("without reconnection, a call after the connection closed is rejected", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  sockets[0].serverOpen();
  sockets[0].serverClose(1006);
  await assert.rejects(client.call("echo"), LappsError);
  assert.equal(sockets.length, 1);
});

test("a server message the client cannot place ends the connection and rejects every pending call", async () => {
  const unplaceable = {
    "a text frame": (ws) => ws.onmessage({ data: "text" }),
    "bytes that are not CBOR": (ws) => ws.onmessage({ data: new Uint8Array([0xff]).buffer }),
    "invalid UTF-8 in a text string": (ws) => ws.onmessage({ data: new Uint8Array([0x62, 0xc3, 0xff]).buffer }),
    "an array": (ws) => ws.serverSend([1, 2]),
    "a map that is neither a response nor an OON": (ws) => ws.serverSend({ cid: 4 }),
  };
  for (const [what, send] of Object.entries(unplaceable)) {
    const { sockets, WebSocket } = socketFactory();
    const client = connect("ws://x/", { WebSocket, minDelay: 10 });
    const errors = [];
    const closes = [];
    client.onerror = (e) => errors.push(e.message);
    client.onclose = (info) => closes.push(info);
    sockets[0].serverOpen();
    const a = client.call("echo", "for a");
    const b = client.call("echo", "for b");
    send(sockets[0]);
    // Had the frame been a's answer, b's would settle a: both are rejected instead.
    sockets[0].serverSend({ status: 1, cid: 0, result: ["for b"] });
    await assert.rejects(a, (e) => e instanceof LappsError && e.code === 0, what);
    await assert.rejects(b, (e) => e instanceof LappsError && e.code === 0, what);
    assert.equal(errors.length, 1, `${what}: ${errors.join("; ")}`);
    assert.equal(sockets[0].readyState, 3, what);
    assert.equal(closes.length, 1, what);
    assert.equal(closes[0].code, CLOSE_PROTOCOL_ERROR, what);
    await until(() => sockets.length === 2, `${what}: the reconnection`);
    client.close();
  }
});

test("a response without a pending call ends the connection", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const errors = [];
  client.onerror = (e) => errors.push(e.message);
  sockets[0].serverOpen();
  sockets[0].serverSend({ status: 1, cid: 0, result: [] });
  assert.deepEqual(errors, ["response without a pending call"]);
  assert.equal(sockets[0].readyState, 3);
  await assert.rejects(client.call("echo"), LappsError);
});

test("OON handler failures are reported and do not stop the other handlers", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const errors = [];
  client.onerror = (e) => {
    errors.push(e.message);
    throw new Error("onerror itself throws");
  };
  const got = [];
  client.on(3, () => {
    throw new Error("sync");
  });
  client.on(3, async () => {
    throw new Error("async");
  });
  client.on(3, (message) => got.push(message));
  sockets[0].serverOpen();
  sockets[0].serverSend({ cid: 3, message: ["tick"] });
  assert.deepEqual(got, [["tick"]]);
  await until(() => errors.length === 2, "the async handler's rejection reported");
  assert.deepEqual(errors.sort(), ["async", "sync"]);
  assert.ok(client.connected, "handler errors do not end the connection");
  client.close();
});

test("a WebSocket constructor that throws on a reconnection counts as a failed attempt", async () => {
  const { sockets, WebSocket } = socketFactory();
  let constructions = 0;
  class Flaky extends WebSocket {
    constructor(url) {
      constructions += 1;
      if (constructions === 2) throw new Error("too many open sockets");
      super(url);
    }
  }
  const closes = [];
  const errors = [];
  const client = connect("ws://x/", { WebSocket: Flaky, minDelay: 5 });
  client.onclose = (info) => closes.push(info);
  client.onerror = (e) => errors.push(e.message);
  sockets[0].serverOpen();
  sockets[0].serverClose(1006);
  const queued = client.call("echo"); // queued for the attempt that throws
  await assert.rejects(queued, (e) => e instanceof LappsError && e.code === 0);
  assert.deepEqual(errors, ["too many open sockets"]);
  await until(() => sockets.length === 2, "the attempt after the one that threw");
  assert.equal(closes.length, 2);
  sockets[1].serverOpen();
  const next = client.call("echo", 1);
  sockets[1].serverSend({ status: 1, cid: 0, result: [1] });
  assert.deepEqual(await next, [1]);
  client.close();
});

test("a runtime without a WebSocket gets a TypeError that says what to pass", () => {
  assert.throws(
    () => connect("ws://x/", { WebSocket: undefined, reconnect: false }),
    (e) => e instanceof TypeError && /pass connect\(url, \{ WebSocket \}\)/.test(e.message),
  );
});

test("notify after close() throws instead of dropping the notification", () => {
  const { WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket });
  client.close();
  assert.throws(() => client.notify(5, "x"), LappsError);
});

test("an onclose that throws does not keep an abandoned socket open", () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  const errors = [];
  client.onerror = (e) => errors.push(e.message);
  client.onclose = () => {
    throw new Error("onclose throws");
  };
  sockets[0].serverOpen();
  sockets[0].serverSend([1, 2]); // not a map: the connection is given up
  assert.equal(sockets[0].readyState, 3);
  assert.deepEqual(errors, ["server message is not a CBOR map with text keys", "onclose throws"]);
});

test("an onopen that throws or rejects is reported to onerror, not left to end the process", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, minDelay: 1 });
  const errors = [];
  client.onerror = (e) => errors.push(e.message);
  client.onopen = () => {
    throw new Error("sync onopen");
  };
  sockets[0].serverOpen();
  assert.deepEqual(errors, ["sync onopen"]);
  // The README's shape: an async onopen awaiting a call the disconnect rejects.
  client.onopen = async () => console.log(await client.call("echo"));
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2, "the reconnection");
  sockets[1].serverOpen();
  sockets[1].serverClose(1006);
  await until(() => errors.length === 2, "the async rejection reported");
  assert.equal(errors[1], "echo: connection closed (1006)");
  client.close();
});

test("a call past callTimeout is rejected; its late answer is dropped and a queued one never sent", async () => {
  const { sockets, WebSocket } = socketFactory();
  assert.throws(() => connect("ws://x/", { WebSocket, callTimeout: -1 }), RangeError);
  const client = connect("ws://x/", { WebSocket, reconnect: false, callTimeout: 30 });
  const queued = client.call("queued");
  await assert.rejects(queued, (e) => e instanceof LappsError && e.code === 0 && e.message === "queued: no answer within 30 ms");
  sockets[0].serverOpen();
  assert.deepEqual(sockets[0].sent, [], "a call its caller gave up on is not run");
  const slow = client.call("slow");
  await assert.rejects(slow, (e) => e.message === "slow: no answer within 30 ms");
  const next = client.call("next");
  sockets[0].serverSend({ status: 1, cid: 0, result: ["late, for slow"] });
  sockets[0].serverSend({ status: 1, cid: 0, result: ["for next"] });
  assert.deepEqual(await next, ["for next"]);
  assert.equal(client.connected, true, "a late answer is not a protocol error");
  client.close();
});

test("a call after the end says why: the app's close() or a server close without reconnection", async () => {
  const { sockets, WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  sockets[0].serverOpen();
  sockets[0].serverClose(1001);
  await assert.rejects(client.call("echo"), (e) => e.message === "echo: connection closed (1001); reconnect is off");
  assert.throws(() => client.notify(1, "log"), (e) => e.message === "log: connection closed (1001); reconnect is off");
  client.close();
  await assert.rejects(client.call("echo"), (e) => e.message === "echo: client closed");
});

test("on() with something other than a function throws at once", () => {
  const { WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket, reconnect: false });
  assert.throws(() => client.on(1001, "not a function"), TypeError);
  client.close();
});

test("options are checked: a misspelt key or a delay setTimeout would read as 0 throws", () => {
  const { WebSocket } = socketFactory();
  assert.throws(() => connect("ws://x/", { WebSocket, minDelai: 5 }), /unknown option minDelai/);
  for (const bad of [{ minDelay: 0 }, { minDelay: "fast" }, { minDelay: -5 }, { maxDelay: "x" }, { minDelay: 500, maxDelay: 100 }, { stableAfter: NaN }]) {
    assert.throws(() => connect("ws://x/", { WebSocket, ...bad }), RangeError, JSON.stringify(bad));
  }
  assert.throws(() => connect("ws://x/", { WebSocket, reconnect: "no" }), TypeError);
});

test("close() while connecting rejects the queued calls as closed by the client", async () => {
  const { WebSocket } = socketFactory();
  const client = connect("ws://x/", { WebSocket });
  const early = client.call("early");
  client.close(); // the scripted socket reports its close (1000) at once, as some runtimes do
  await assert.rejects(early, (e) => e.message === "early: client closed");
});
