#!/usr/bin/env python3
"""Runs the installed /usr/bin/lapps as systemd would and checks it end to end.

Called by tests/packaging.sh as root, after `dpkg -i`. Binds a NOTIFY_SOCKET datagram socket,
starts `/usr/bin/lapps -c /etc/lapps` as the lapps user (setpriv, no fork, so the child pid is
lapps itself), waits for READY=1, checks WebSocket echoes, sends SIGTERM and waits for
STOPPING=1 and exit status 0. Every wait has a timeout; stdlib only.

Usage: packaging_smoke.py PORT
Exit status 0 when every hard check passes; prints one line per check.
"""

import base64
import hashlib
import os
import pwd
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 5.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Failure(Exception):
    pass


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Failure(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def ws_echo(port, path, text):
    """Opens ws://127.0.0.1:PORT/PATH, sends one masked text frame, returns the echoed text."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        key = base64.b64encode(os.urandom(16))
        s.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            if not chunk:
                raise Failure(f"{path}: closed during the handshake: {head!r}")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise Failure(f"{path}: upgrade refused: {status.decode(errors='replace')}")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if b"sec-websocket-accept: " + accept.lower() not in head.lower():
            raise Failure(f"{path}: wrong Sec-WebSocket-Accept in {head!r}")

        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

        b0, b1 = recv_exact(s, 2)
        if b1 & 0x80:
            raise Failure(f"{path}: server frame is masked")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", recv_exact(s, 2))[0]
        elif n == 127:
            n = struct.unpack(">Q", recv_exact(s, 8))[0]
        data = recv_exact(s, n)
        if b0 != 0x81:
            raise Failure(f"{path}: expected a final text frame, got 0x{b0:02x} {data!r}")
        # Close 1000, masked with a zero mask (allowed: any mask value).
        s.sendall(bytes([0x88, 0x82, 0, 0, 0, 0]) + struct.pack(">H", 1000))
        return data.decode()


def wait_for_state(sock, want, deadline, seen):
    """Collects NOTIFY_SOCKET datagrams until one holds the line `want` or the deadline."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode(errors="replace")
        except socket.timeout:
            break
        seen.append(msg)
        if want in msg.split("\n"):
            return True
    return False


def main():
    port = int(sys.argv[1])
    failures = []
    tmp = tempfile.mkdtemp(prefix="lapps-notify-")
    os.chmod(tmp, 0o755)
    notify_path = os.path.join(tmp, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    os.chmod(notify_path, 0o777)  # the lapps user sends to it

    env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": notify_path}
    cmd = ["setpriv", "--reuid=lapps", "--regid=lapps", "--init-groups",
           "/usr/bin/lapps", "-c", "/etc/lapps"]
    log = open(os.path.join(tmp, "lapps.log"), "w+")
    child = subprocess.Popen(cmd, env=env, cwd="/var/lib/lapps", stdout=log,
                             stderr=subprocess.STDOUT)
    seen = []
    try:
        if wait_for_state(notify, "READY=1", time.monotonic() + READY_TIMEOUT, seen):
            print(f"ok: READY=1 on NOTIFY_SOCKET (datagrams: {seen!r})")
        else:
            raise Failure(f"no READY=1 within {READY_TIMEOUT}s (got {seen!r}, "
                          f"exit status {child.poll()})")

        uid = os.stat(f"/proc/{child.pid}").st_uid
        owner = pwd.getpwuid(uid).pw_name
        if owner != "lapps":
            failures.append(f"lapps runs as {owner}, not as lapps")
        else:
            print("ok: lapps runs as the lapps user")

        got = ws_echo(port, "/echo_builtin", "hello from the package test")
        if got == "hello from the package test":
            print("ok: /echo_builtin echoed the message")
        else:
            failures.append(f"/echo_builtin echoed {got!r}")

        try:
            got = ws_echo(port, "/echo", "hello lua")
            if got == "hello lua":
                print("ok: /echo (Lua) echoed the message")
            else:
                failures.append(f"/echo (Lua) echoed {got!r}")
        except (Failure, OSError) as e:
            failures.append(f"/echo (Lua echo app) did not answer: {e}")

        # The unit's ExecReload, run as root here: it takes the server's user to be answered.
        r = subprocess.run(["/usr/bin/lapps", "--reload", str(child.pid)], capture_output=True,
                           text=True, timeout=90)
        if r.returncode == 0 and "reloaded" in r.stdout:
            print(f"ok: lapps --reload {child.pid} answered: {r.stdout.strip()}")
        else:
            failures.append(f"lapps --reload: status {r.returncode}: {r.stdout}{r.stderr}")

        child.send_signal(signal.SIGTERM)
        stopping = wait_for_state(notify, "STOPPING=1", time.monotonic() + STOP_TIMEOUT, seen)
        try:
            status = child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failure(f"lapps still running {STOP_TIMEOUT}s after SIGTERM")
        if not stopping:
            failures.append(f"no STOPPING=1 after SIGTERM (got {seen!r})")
        elif status != 0:
            failures.append(f"lapps exited with status {status} after SIGTERM")
        else:
            print("ok: SIGTERM -> STOPPING=1, exit status 0")
    except (Failure, OSError) as e:
        failures.append(str(e))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.seek(0)
        print("--- lapps output ---")
        sys.stdout.write(log.read())
        print("--- end of lapps output ---")
        log.close()
        notify.close()
        for name in ("notify.sock", "lapps.log"):
            try:
                os.unlink(os.path.join(tmp, name))
            except FileNotFoundError:
                pass
        os.rmdir(tmp)

    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
