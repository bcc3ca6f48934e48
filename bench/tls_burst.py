#!/usr/bin/env python3
"""A burst of TLS handshakes, for bench/handshake_burst.sh.

Opens N TCP connections to HOST:PORT, then sends the N ClientHellos as fast as it can (Python's
ssl module, non-blocking, certificate not checked: loopback benchmarks only), and drives every
handshake to its end as the server's answers come, until all are done or TIMEOUT seconds pass.
Prints one JSON line: how many completed, how many failed (an alert, a reset, EOF), and how long
the burst took from the first ClientHello. Exits 1 unless all completed. Standard library only.

Usage: tls_burst.py HOST PORT N [TIMEOUT]
"""

import json
import selectors
import socket
import ssl
import sys
import time


def main() -> int:
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = [socket.create_connection((host, port)) for _ in range(n)]
    conns = []
    t0 = time.monotonic()
    for s in raw:
        s.setblocking(False)
        c = ctx.wrap_socket(s, do_handshake_on_connect=False)
        try:
            c.do_handshake()  # writes the ClientHello, then wants the server's answer
        except ssl.SSLWantReadError:
            pass
        conns.append(c)
    sent_s = time.monotonic() - t0
    sel = selectors.DefaultSelector()
    for i, c in enumerate(conns):
        sel.register(c, selectors.EVENT_READ, i)
    done = failed = 0
    deadline = t0 + timeout
    while done + failed < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            try:
                key.fileobj.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue  # part of the server's flight; the rest is on its way
            except (ssl.SSLError, OSError):
                failed += 1
            else:
                done += 1
            sel.unregister(key.fileobj)
    took_s = time.monotonic() - t0
    for c in conns:
        c.close()
    print(json.dumps({"burst": n, "completed": done, "failed": failed,
                      "sent_s": round(sent_s, 3), "took_s": round(took_s, 3)}))
    return 0 if done == n else 1


if __name__ == "__main__":
    sys.exit(main())
