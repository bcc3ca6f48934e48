"""wss:// interop with Python `websockets` over the standard ssl module.

usage: wss_client.py PORT CA_FILE
Echoes text and binary messages of several sizes through /echo (the Lua app), checks a
client with verification against the test CA; exits non-zero on any mismatch or error.
"""
import asyncio
import warnings
import ssl
import sys

import websockets


async def main(port: int, ca: str) -> None:
    warnings.simplefilter("ignore", DeprecationWarning)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    uri = f"wss://localhost:{port}/echo"
    async with websockets.connect(uri, ssl=ctx, max_size=None) as ws:
        for n in (0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20):
            payload = bytes((i * 31) % 251 for i in range(n)) if n < 70000 else b"\x5a" * n
            await ws.send(payload)
            got = await ws.recv()
            assert got == payload, f"binary echo of {n} bytes differs"
        await ws.send("héllo wss")
        assert await ws.recv() == "héllo wss"
        # Pipelined.
        for i in range(100):
            await ws.send(f"m{i}")
        for i in range(100):
            assert await ws.recv() == f"m{i}"
    # TLS 1.1 only: the server must refuse the handshake.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(ca)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let OpenSSL 3 actually offer TLS 1.1 (its default security level refuses to), so the
    # refusal seen is the server's.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        async with websockets.connect(uri, ssl=old):
            raise SystemExit("a TLS 1.1 client was served")
    except ssl.SSLError as e:
        # An alert the server sent (rustls answers handshake_failure), not a refusal of our
        # own OpenSSL to offer 1.1 (NO_PROTOCOLS_AVAILABLE: nothing learnt about the server).
        assert "_ALERT_" in (e.reason or ""), f"TLS 1.1 not refused by the server: {e!r}"
        print(f"TLS 1.1 refused by the server as expected: {e}")
    print("python websockets over wss: ok")


if __name__ == "__main__":
    # A server that stops answering fails the run in minutes, not at CI's own time limit.
    asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2]), timeout=120))
