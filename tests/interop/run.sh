#!/usr/bin/env bash
# Interop: Python `websockets` (standard ssl) against the real `lapps` binary over wss://.
# Creates a venv under target/ (PyPI) on first use, a CA and server certificate with the
# openssl CLI in a temp dir (never committed), starts target/release/lapps with a TLS endpoint
# and the Lua echo app, runs wss_client.py. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
# shellcheck source=tests/interop/common.sh
source tests/interop/common.sh
VENV=$ROOT/target/interop-venv
if [ ! -x "$VENV/bin/python" ]; then
    ensure_venv_module
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'websockets>=13'
fi
cargo build --release --bin lapps
# Port 0: the server binds a port of its own, read from its log (INTEROP_PORT to choose one).
PORT=${INTEROP_PORT:-0}

WORK=$(mktemp -d /tmp/lapps-interop.XXXXXX)
LOG=$WORK/lapps.log
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/ext" -out "$WORK/server.crt" 2>/dev/null
cat > "$WORK/ws.json" <<JSON
{ "ip": "127.0.0.1", "port": $PORT, "tls": true, "workers": { "workers": 2 },
  "tls_certificates": { "cert": "$WORK/server.crt", "key": "$WORK/server.key" } }
JSON
cat > "$WORK/lapps.json" <<JSON
{ "directories": { "applications": "$ROOT/lua/apps", "lib": "$ROOT/lua/lib" },
  "services": { "echo": { "protocol": "raw", "request_target": "/echo" } } }
JSON
LAPPS_LOG=info target/release/lapps -c "$WORK" >"$LOG" 2>&1 &   # its port is read from the log
PID=$!
if ! PORT=$(listening_port "$LOG" "$PID" wss); then
    echo "interop: server did not start" >&2
    cat "$LOG" >&2
    exit 2
fi
"$VENV/bin/python" tests/interop/wss_client.py "$PORT" "$WORK/ca.crt"
if ! kill -0 $PID 2>/dev/null || grep -q "panicked" "$LOG"; then
    echo "interop: the server died or panicked during the test:" >&2
    tail -30 "$LOG" >&2
    exit 1
fi
