"""The LAppS protocol (SPEC section 4) from an independent client: Python cbor2 + websockets.

Checks against a running server's echo_lapps service: echo requests with and without params,
pipelined requests answered in order, a client notification that gets no response, every error
code the protocol defines (-32602 and -32603 through echo_lapps' `add` and `fail`), and
time_broadcast OONs interleaved with responses.
Prints one line per check and `N passed, M failed`; exits 1 on any failure.

    python lapps_protocol.py ws://127.0.0.1:5083/echo_lapps [--channel 1001]
"""

import argparse
import asyncio
import sys
import time

import cbor2
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

TIMEOUT = 5.0  # seconds any single answer may take
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603)

results = {"passed": 0, "failed": 0}


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


class Conn:
    """One connection; keeps the OONs it sees while waiting for responses."""

    def __init__(self, ws):
        self.ws = ws
        self.oons = []

    async def send(self, value):
        await self.ws.send(value if isinstance(value, (bytes, str)) else cbor2.dumps(value))

    async def next_message(self, timeout=TIMEOUT):
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        expect(isinstance(data, bytes), f"server sent a text frame: {data!r}")
        msg = cbor2.loads(data)
        expect(isinstance(msg, dict), f"server message is not a map: {msg!r}")
        return msg

    async def response(self, timeout=TIMEOUT):
        """The next message on the command channel; OONs on the way are recorded."""
        while True:
            msg = await self.next_message(timeout)
            if msg.get("cid") == 0:
                return msg
            expect(isinstance(msg.get("cid"), int) and isinstance(msg.get("message"), list),
                   f"neither a response nor an OON: {msg!r}")
            self.oons.append((time.monotonic(), msg))

    async def call(self, method, *params, with_params=True):
        request = {"lapps": 1, "method": method}
        if with_params:
            request["params"] = list(params)
        await self.send(request)
        return await self.response()


def expect_result(resp, result):
    expect(resp.get("status") == 1 and "error" not in resp, f"not a success: {resp!r}")
    expect(resp.get("result") == result, f"result {resp.get('result')!r}, expected {result!r}")


def expect_error(resp, codes):
    codes = codes if isinstance(codes, tuple) else (codes,)
    expect(resp.get("status") == 0, f"not an error response: {resp!r}")
    err = resp.get("error")
    expect(isinstance(err, dict), f"error member is not a map: {resp!r}")
    expect(err.get("code") in codes, f"code {err.get('code')!r}, expected {codes}: {resp!r}")
    expect(isinstance(err.get("message"), str), f"error without a text message: {resp!r}")
    expect("result" not in resp, f"error response with a result: {resp!r}")


async def check(name, url, body):
    """Runs body(conn) on a fresh connection and records the outcome."""
    try:
        async with connect(url, max_size=None, open_timeout=TIMEOUT) as ws:
            note = await body(Conn(ws))
        results["passed"] += 1
        print(f"PASS {name}" + (f" ({note})" if note else ""))
    except (CheckFailed, TimeoutError, asyncio.TimeoutError, WebSocketException, OSError,
            cbor2.CBORDecodeError) as e:
        results["failed"] += 1
        print(f"FAIL {name}: {type(e).__name__}: {e or 'no answer in time'}")


async def still_serving(conn):
    """After one error the connection must go on answering (SPEC 8: one bad message does not end
    it; only a client that keeps sending garbage is closed, after a configured count)."""
    try:
        await conn.send({"lapps": 1, "method": "echo", "params": ["still there"]})
        expect_result(await conn.response(), ["still there"])
    except ConnectionClosed as e:
        raise CheckFailed(f"the server closed the connection after one error "
                          f"({e.rcvd.code if e.rcvd else 'no close frame'})") from e
    return "connection kept"


def error_case(request, codes):
    async def body(conn):
        await conn.send(request)
        resp = await conn.response()
        expect_error(resp, codes)
        kept = await still_serving(conn)
        return f"code {resp['error']['code']}, {kept}" if isinstance(codes, tuple) else kept
    return body


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--channel", type=int, default=1001, help="time_broadcast's OON channel")
    args = ap.parse_args()
    url = args.url
    try:  # one clear message instead of every check failing the same way
        async with connect(url, open_timeout=TIMEOUT):
            pass
    except (WebSocketException, OSError, TimeoutError) as e:
        print(f"FAIL cannot open {url}: {type(e).__name__}: {e}")
        print("0 passed, 1 failed")
        return 1

    async def echo_with_params(conn):
        params = ["hello", 42, [1, 2], {"k": "v", "n": None}, 1.5, True, False, -7,
                  2**40, "\u00fc\u6c34\U00010151", b"\x00\xff"]
        expect_result(await conn.call("echo", *params), params)
    await check("echo with params returns them", url, echo_with_params)

    async def echo_without_params(conn):
        expect_result(await conn.call("echo", with_params=False), [])
        expect_result(await conn.call("echo"), [])  # an empty params array
    await check("echo without params returns an empty result", url, echo_without_params)

    async def lapps_as_text(conn):
        await conn.send({"lapps": "1", "method": "echo", "params": [1]})
        expect_result(await conn.response(), [1])
    await check("\"lapps\": \"1\" (text) is accepted", url, lapps_as_text)

    async def pipelined(conn):
        for i in range(50):
            await conn.send({"lapps": 1, "method": "echo", "params": [i, "x" * i]})
        for i in range(50):
            expect_result(await conn.response(), [i, "x" * i])
    await check("50 pipelined requests are answered in order", url, pipelined)

    async def notification(conn):
        await conn.send({"lapps": 1, "method": "echo", "cid": 5, "params": ["notification"]})
        await conn.send({"lapps": 1, "method": "echo", "cid": 7})
        expect_result(await conn.call("echo", "after"), ["after"])
    await check("client notifications get no response", url, notification)

    await check("-32700 for a text frame", url, error_case('{"lapps": 1, "method": "echo"}', PARSE_ERROR))
    await check("-32700 for binary that is not CBOR", url, error_case(b"\xff\xfe\x00", PARSE_ERROR))
    await check("-32700 for truncated CBOR", url, error_case(b"\xa2\x65lapps\x01", PARSE_ERROR))
    await check("-32700 for a CBOR array (not a map)", url, error_case([1, "echo"], PARSE_ERROR))
    await check("-32600 without lapps", url, error_case({"method": "echo", "params": []}, INVALID_REQUEST))
    await check("-32600 for lapps 2", url, error_case({"lapps": 2, "method": "echo"}, INVALID_REQUEST))
    await check("-32600 for lapps \"2\"", url, error_case({"lapps": "2", "method": "echo"}, INVALID_REQUEST))
    await check("-32600 without method", url, error_case({"lapps": 1, "params": []}, INVALID_REQUEST))
    await check("-32600 for a non-text method", url, error_case({"lapps": 1, "method": 5}, INVALID_REQUEST))
    await check("-32600 for a method with a dot", url, error_case({"lapps": 1, "method": "a.b"}, INVALID_REQUEST))
    await check("-32600 for non-array params", url,
                error_case({"lapps": 1, "method": "echo", "params": {"a": 1}}, INVALID_REQUEST))
    await check("-32600 for a text cid", url,
                error_case({"lapps": 1, "method": "echo", "cid": "x"}, INVALID_REQUEST))
    # SPEC 4 reserves names starting with `_`; the server answers -32601 (no extension exists
    # under that name) where a reading of "invalid request" would give -32600: both are allowed.
    await check("reserved _method is refused", url,
                error_case({"lapps": 1, "method": "_x"}, (INVALID_REQUEST, METHOD_NOT_FOUND)))
    await check("-32601 for an unknown method", url,
                error_case({"lapps": 1, "method": "no_such_method", "params": [1]}, METHOD_NOT_FOUND))

    async def add(conn):
        expect_result(await conn.call("add", 2, 40), [42])
        expect_result(await conn.call("add", 1.5, -0.25), [1.25])
    await check("add(a, b) returns [a + b]", url, add)
    await check("-32602 for add with a text param", url,
                error_case({"lapps": 1, "method": "add", "params": [1, "x"]}, INVALID_PARAMS))
    await check("-32602 for add without params", url,
                error_case({"lapps": 1, "method": "add"}, INVALID_PARAMS))
    await check("-32603 when the Lua handler raises (fail)", url,
                error_case({"lapps": 1, "method": "fail", "params": []}, INTERNAL_ERROR))

    async def oons_interleaved(conn):
        expect_result(await conn.call("echo", "subscribe"), ["subscribe"])
        deadline = time.monotonic() + 10
        i = 0
        # Keep requests flowing while the ticks arrive: each response must still be the answer
        # to the request just sent, whatever OONs come in between.
        while len(conn.oons) < 3:
            expect(time.monotonic() < deadline, f"only {len(conn.oons)} OONs in 10 s")
            expect_result(await conn.call("echo", i), [i])
            i += 1
            try:
                msg = await conn.next_message(timeout=0.3)
            except (TimeoutError, asyncio.TimeoutError):
                continue
            expect(msg.get("cid") != 0, f"response without a request: {msg!r}")
            conn.oons.append((time.monotonic(), msg))
        channels = {m["cid"] for _, m in conn.oons}
        expect(channels == {args.channel}, f"OONs on channels {channels}, expected {args.channel}")
        for _, m in conn.oons:
            expect(isinstance(m["message"], list) and m["message"], f"empty OON message: {m!r}")
            expect(set(m) == {"cid", "message"}, f"unexpected OON members: {m!r}")
        gaps = [b[0] - a[0] for a, b in zip(conn.oons, conn.oons[1:])]
        return f"{len(conn.oons)} OONs, {i} requests in between, gaps {', '.join(f'{g:.2f}s' for g in gaps)}, first {conn.oons[0][1]['message']!r}"
    await check(f"time_broadcast OONs on channel {args.channel} interleave with responses", url, oons_interleaved)

    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
