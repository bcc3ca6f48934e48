#!/usr/bin/env bash
# The LAppS protocol from a second, independent client (Python cbor2 + websockets from PyPI, in
# target/interop-venv) against the real server's echo_lapps: see lapps_protocol.py.
# LAPPS_URL=ws://host:port/echo_lapps uses a running server instead of starting one.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/interop/common.sh
trap cleanup EXIT

interop_venv
lapps_echo_url
echo "interop: $WS_URL ($("$PY" -c 'import importlib.metadata as m; print("cbor2", m.version("cbor2"), "websockets", m.version("websockets"))'))"
rc=0
"$PY" tests/interop/lapps_protocol.py "$WS_URL" --channel "${LAPPS_CHANNEL:-1001}" || rc=$?
if [ $rc -ne 0 ] && [ -n "${LAPPS_LOG:-}" ]; then
    echo "interop: server log (last lines):" >&2
    tail -30 "$LAPPS_LOG" >&2
fi
[ $rc -ne 0 ] || server_survived interop || rc=1
exit $rc
