#!/usr/bin/env bash
# The browser client (clients/js) against the real server, in headless Chromium: the example page
# calls echo and lists time_broadcast OONs; tests/browser/cdp.py reads the page's DOM through the
# DevTools protocol until the echo result is there and at least three OONs arrived.
# Installs Debian's chromium when missing (as root); skips with a message when it cannot.
# LAPPS_URL=ws://host:port/echo_lapps uses a running server instead of starting one.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/interop/common.sh
trap cleanup EXIT

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "browser: SKIPPED: chromium is not installed and installing it needs root (apt-get install chromium)"
        # Under CI the browser client must not go untested without anyone noticing.
        [ "${CI:-}" = true ] && exit 1
        exit 0
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    CHROMIUM=$(command -v chromium)
fi
echo "browser: $("$CHROMIUM" --version 2>/dev/null | head -1)"

interop_venv
lapps_echo_url

PROFILE=$(mktemp -d /tmp/lapps-chromium.XXXXXX)
CLEANUP_DIRS+=("$PROFILE")

# Port 0: the static server binds a port of its own and says which ("Serving HTTP on
# 127.0.0.1 port N"; unbuffered, -u, so that the line is in the file at once).
python3 -u -m http.server 0 --bind 127.0.0.1 --directory clients/js >"$PROFILE.http" 2>&1 &
HTTP_PID=$!
CLEANUP_PIDS+=("$HTTP_PID")
CLEANUP_DIRS+=("$PROFILE.http")
HTTP_PORT=
for _ in $(seq 1 300); do
    HTTP_PORT=$(sed -n 's/^Serving HTTP on [0-9.]* port \([0-9]*\) .*/\1/p' "$PROFILE.http")
    [ -n "$HTTP_PORT" ] && break
    kill -0 "$HTTP_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$HTTP_PORT" ] || { echo "browser: the static http server did not start" >&2; cat "$PROFILE.http" >&2; exit 2; }

PAGE="http://127.0.0.1:$HTTP_PORT/example.html?ws=$WS_URL&channel=${LAPPS_CHANNEL:-1001}"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
    --user-data-dir="$PROFILE" --remote-debugging-port=0 "$PAGE" >"$PROFILE.log" 2>&1 &
CLEANUP_PIDS+=($!)
CLEANUP_DIRS+=("$PROFILE.log")

rc=0
"$PY" tests/browser/cdp.py --user-data-dir "$PROFILE" --expect-echo '["hello",42,[1,2]]' \
    --min-oons 3 --timeout "${BROWSER_TIMEOUT:-30}" || rc=$?
if [ $rc -ne 0 ]; then
    echo "browser: chromium log (last lines):" >&2
    grep -v -i dbus "$PROFILE.log" | tail -20 >&2 || true
    if [ -n "${LAPPS_LOG:-}" ]; then echo "browser: server log:" >&2; tail -20 "$LAPPS_LOG" >&2; fi
fi
[ $rc -ne 0 ] || server_survived browser || rc=1
exit $rc
