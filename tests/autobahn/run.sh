#!/usr/bin/env bash
# Runs the Autobahn TestSuite (cases 1-10, as the original LAppS published) against the real
# `lapps` binary: once against the Lua echo app (/echo) and once against the built-in Rust echo
# (/echo_builtin), over ws:// and over wss:// (a second endpoint on another port with a certificate
# generated here by the openssl CLI; no key is ever committed). Installs wstest from PyPI on
# first use (../shared/tools/autobahn/install.sh). AUTOBAHN_SCHEMES="ws wss" picks the runs.
# AUTOBAHN_TIMEOUT caps each wstest run (default here 600 s, the tool's own is 1800 s): a hung
# run fails in minutes instead of half an hour per endpoint.
# Exits non-zero on any FAILED, UNIMPLEMENTED or NON-STRICT case.
set -euo pipefail
export AUTOBAHN_TIMEOUT=${AUTOBAHN_TIMEOUT:-600}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
# shellcheck source=tests/interop/common.sh
source tests/interop/common.sh
autobahn_setup autobahn
# Port 0 for both endpoints: the server binds ports of its own, read from its log (not fixed
# ones another job on a shared machine may hold). AUTOBAHN_PORT chooses the plain one.
PORT=${AUTOBAHN_PORT:-0}
TLS_PORT=0

WORK=$(mktemp -d /tmp/lapps-autobahn.XXXXXX)
mkdir -p "$WORK/etc"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/etc/server.key" -out "$WORK/etc/server.crt" 2>/dev/null
# The plain endpoint stays as configured; the wss:// one is added next to it.
sed -e "s/\"port\": *[0-9]*/\"port\": $PORT/" \
    -e "s#\"tls\": *false#\"tls\": false, \"endpoints\": [{ \"ip\": \"127.0.0.1\", \"port\": $TLS_PORT, \"tls\": true }], \"tls_certificates\": { \"cert\": \"$WORK/etc/server.crt\", \"key\": \"$WORK/etc/server.key\" }#" \
    tests/autobahn/etc/ws.json > "$WORK/etc/ws.json"
sed "s#\"applications\": *\"[^\"]*\"#\"applications\": \"$ROOT/lua/apps\"#" tests/autobahn/etc/lapps.json > "$WORK/etc/lapps.json"

LOG=$WORK/lapps.log
LAPPS_LOG=info target/release/lapps -c "$WORK/etc" >"$LOG" 2>&1 &   # its ports are read from the log
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT

# Wait for both listening sockets (bounded), not a fixed sleep.
if ! PORT=$(listening_port "$LOG" "$PID" ws) || ! TLS_PORT=$(listening_port "$LOG" "$PID" wss); then
    echo "autobahn: server did not start" >&2
    cat "$LOG" >&2
    exit 2
fi

rc=0
for scheme in ${AUTOBAHN_SCHEMES:-ws wss}; do
    port=$PORT
    [ "$scheme" = wss ] && port=$TLS_PORT
    for path in ${AUTOBAHN_PATHS:-/echo /echo_builtin}; do
        url="$scheme://127.0.0.1:$port$path"
        echo "autobahn: $url"
        AUTOBAHN_AGENT="lapps-$scheme$path" bash "$TOOLS/run.sh" "$url" "$WORK/report-$scheme${path//\//_}" \
            | tee "$WORK/summary" || rc=$?
        # Strict too: a NON-STRICT case means an answer was lost to a close (e.g. 3.2, 5.15).
        if ! grep -q "NON-STRICT=0 " "$WORK/summary"; then
            echo "autobahn: $url has NON-STRICT cases" >&2
            rc=1
        fi
    done
done
if ! kill -0 $PID 2>/dev/null; then
    echo "autobahn: the server died during the run" >&2
    tail -20 "$LOG" >&2
    exit 2
fi
exit $rc
