#!/usr/bin/env bash
# wss:// against ws:// on the same lapps build, one run: pipelined echo (100 connections x 32 in
# flight x 16 B, built-in and Lua echo) over both schemes, and server RSS per idle connection
# for 10,000 wss:// connections. Server pinned to SERVER_CPU, load generator to CLIENT_CPU.
# Usage: bench/tls.sh   (env: DURATION, WARMUP, REPEAT, IDLE_CONNS, IDLE_HOLD)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-3}
WS_PORT=${WS_PORT:-5093}
WSS_PORT=${WSS_PORT:-5094}
LOADGEN=bench/loadgen/target/release/loadgen
WORK=$(mktemp -d /tmp/lapps-bench-tls.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck source=bench/wss_config.sh
. bench/wss_config.sh
wss_config "$WORK" "$WS_PORT" "$WSS_PORT" 1
cat >"$WORK/etc/lapps.json" <<JSON
{ "directories": { "applications": "$(pwd)/lua/apps", "lib": "$(pwd)/lua/lib" },
  "services": { "echo": { "request_target": "/echo" },
                "echo_builtin": { "builtin": "echo", "request_target": "/echo_builtin" } } }
JSON
ulimit -n "$(ulimit -Hn)"

start() {
    taskset -c "$SERVER_CPU" target/release/lapps -c "$WORK/etc" >>"$WORK/lapps.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$WSS_PORT") 2>/dev/null && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/lapps.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "lapps did not start" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
field() { sed -n "s/.*\"$1\":\([0-9.a-z]*\).*/\1/p"; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

start
: >"$WORK/raw.txt"
for r in $(seq "$REPEAT"); do
    for path in /echo_builtin /echo; do
        for scheme in ws wss; do
            port=$WS_PORT; tls=()
            [ "$scheme" = wss ] && { port=$WSS_PORT; tls=(--tls-insecure); }
            line=$("$LOADGEN" --url "$scheme://127.0.0.1:$port$path" "${tls[@]}" --connections 100 --depth 32 \
                --size 16 --duration "$DURATION" --warmup "$WARMUP" --server-pid "$PID" --pin "$CLIENT_CPU" --json)
            echo "$scheme $path $line" >>"$WORK/raw.txt"
            echo "   run $r $scheme$path: $(field msgs_per_s <<<"$line") msgs/s"
        done
    done
done
stop
start
idle=$("$LOADGEN" --url "wss://127.0.0.1:$WSS_PORT/echo_builtin" --tls-insecure --idle "$IDLE_CONNS" \
    --hold "$IDLE_HOLD" --server-pid "$PID" --pin "$CLIENT_CPU" --json)
stop

echo "== wss:// vs ws:// (median of $REPEAT, $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))"
for path in /echo_builtin /echo; do
    ws=$(grep "^ws $path " "$WORK/raw.txt" | field msgs_per_s | median)
    wss=$(grep "^wss $path " "$WORK/raw.txt" | field msgs_per_s | median)
    printf 'pipelined 100x32x16B %-14s ws %10s msgs/s  wss %10s msgs/s  wss/ws %s\n' "$path" "$ws" "$wss" \
        "$(awk -v a="$wss" -v b="$ws" 'BEGIN { printf "%.2f", a / b }')"
done
echo "idle: $IDLE_CONNS wss:// connections, server RSS $(field bytes_per_conn <<<"$idle") bytes per connection"
