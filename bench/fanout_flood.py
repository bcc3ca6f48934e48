#!/usr/bin/env python3
"""One /chat client floods a room of MEMBERS with 4000-byte lines (each a broadcast of
MEMBERS x 4 KB) for SECONDS, while a separate process measures ping-pong on /echo_builtin
every 20 ms: how long the rest of the server waits behind a fan-out flood. Prints one line:
probe round trips, worst, p99 and median RTT in ms, and the flood's lines sent.
KIND "pong": instead, MEMBERS connections to /echo each send empty Pongs as fast as they can
(input that asks for nothing back, so no back-pressure slows it); the flood's count is frames.
Usage: fanout_flood.py PORT [MEMBERS] [SECONDS] [KIND]   (bench/fanout_flood.sh runs it)"""
import base64, os, selectors, socket, struct, subprocess, sys, threading, time

HOST = "127.0.0.1"


def upgraded(port, path):
    s = socket.create_connection((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"{path}: closed during the upgrade")
        head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise SystemExit(f"{path}: {head.splitlines()[0]!r}")
    return s


def text(payload):
    """A masked text frame (zero mask key)."""
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + struct.pack(">H", n))
    return head + b"\0\0\0\0" + payload


def probe(port, seconds):
    s = upgraded(port, "/echo_builtin")
    rtts, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        s.sendall(text(b"probe"))
        got = b""
        while len(got) < 7:
            chunk = s.recv(64)
            if not chunk:
                raise SystemExit("probe: closed")
            got += chunk
        rtts.append(time.monotonic() - t)
        time.sleep(0.02)  # the probe's pace, not a synchronisation
    if not rtts:
        raise SystemExit("probe: no round trip")
    rtts.sort()
    ms = lambda x: f"{x * 1000:.1f}"
    print(f"{len(rtts)} {ms(rtts[-1])} {ms(rtts[int(len(rtts) * 0.99)])} {ms(rtts[len(rtts) // 2])}")


def start_probe(port, seconds):
    prober = subprocess.Popen([sys.executable, __file__, str(port), "probe", str(seconds + 2)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # the probe's first second without the flood
    return prober


def probe_result(prober):
    out = prober.communicate()[0].split()
    if prober.returncode != 0 or len(out) != 4:
        raise SystemExit(f"the probe failed (status {prober.returncode}): {out}")
    return f"probe {out[0]} round trips, worst {out[1]} ms, p99 {out[2]} ms, median {out[3]} ms"


def pong_flood(port, flooders, seconds):
    """flooders connections send 64 KiB batches of empty masked Pongs (6 bytes each)."""
    frame = b"\x8a\x80\0\0\0\0"
    batch = frame * (65536 // len(frame))
    socks = [upgraded(port, "/echo") for _ in range(flooders)]
    sent = [0] * flooders
    prober = start_probe(port, seconds)
    end = time.monotonic() + seconds

    def flood(i):
        while time.monotonic() < end:
            socks[i].sendall(batch)
            sent[i] += 1

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(flooders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    frames = sum(sent) * (len(batch) // len(frame))
    print(f"{probe_result(prober)}; flood {frames} frames")


def main():
    port = int(sys.argv[1])
    if sys.argv[2:3] == ["probe"]:
        return probe(port, float(sys.argv[3]))
    members = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5
    kind = sys.argv[4] if len(sys.argv) > 4 else "chat"
    if kind not in ("chat", "pong"):
        raise SystemExit(f"KIND is chat or pong, not {kind!r}")
    if kind == "pong":
        return pong_flood(port, members, seconds)
    socks = [upgraded(port, "/chat") for _ in range(members)]
    for s in socks:
        s.sendall(text(b"/join flood"))
    attacker = upgraded(port, "/chat")
    attacker.sendall(text(b"/join flood"))

    def drain(conns):
        sel = selectors.DefaultSelector()
        for c in conns:
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select(1):
                try:
                    if not key.fileobj.recv(1 << 20):
                        sel.unregister(key.fileobj)
                except OSError:
                    sel.unregister(key.fileobj)

    # The flooder's replies are drained too, on a socket of its own (the drain thread makes
    # its sockets non-blocking; the flooder's sends block).
    def drain_flooder():
        while attacker.recv(1 << 20):
            pass

    threading.Thread(target=drain, args=(socks,), daemon=True).start()
    threading.Thread(target=drain_flooder, daemon=True).start()
    prober = start_probe(port, seconds)
    line, sent, end = text(b"z" * 4000), 0, time.monotonic() + seconds
    while time.monotonic() < end:
        attacker.sendall(line)
        sent += 1
    print(f"{probe_result(prober)}; flood {sent} lines")


if __name__ == "__main__":
    main()
