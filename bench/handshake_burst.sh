#!/usr/bin/env bash
# What a burst of TLS handshakes (clients reconnecting after a restart) does to the connections
# already open, for two lapps binaries interleaved: ping-pong RTT on 10 ws:// connections (built-in
# echo, 1 message in flight each) while BURST new wss:// clients send their ClientHellos at once
# (bench/tls_burst.py). One worker, server pinned to SERVER_CPU, clients to CLIENT_CPU.
#
# Usage: bench/handshake_burst.sh OLD NEW   (env: ROUNDS=3 BURST=2000 DURATION=5 KEY=ec|rsa)
# Prints per run and as medians: the ping-pong's p99 and max RTT over the run, and how long the
# burst took until every one of its handshakes had completed.
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '7p' "$0" >&2; exit 2; }
OLD=$(realpath -e "$1") NEW=$(realpath -e "$2")
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
BURST=${BURST:-2000}
DURATION=${DURATION:-5}
KEY=${KEY:-ec}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WS_PORT=${WS_PORT:-5095}
WSS_PORT=${WSS_PORT:-5096}
LOADGEN=bench/loadgen/target/release/loadgen

die() { echo "handshake_burst.sh: $*" >&2; exit 1; }
for b in "$OLD" "$NEW"; do [[ -x $b ]] || die "not an executable: $b"; done
[[ -x $LOADGEN ]] || (cd bench/loadgen && cargo build -q --release)
for p in "$WS_PORT" "$WSS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is busy"; fi
done

WORK=$(mktemp -d /tmp/lapps-burst.XXXXXX)
PID= LG=
trap 'for p in $LG $PID; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"; true' EXIT
case $KEY in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) die "KEY is ec or rsa" ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/etc"
cat >"$WORK/etc/ws.json" <<JSON
{ "ip": "127.0.0.1", "port": $WS_PORT, "workers": { "workers": 1 }, "backlog": 4096,
  "handshake_timeout_ms": 60000,
  "endpoints": [ { "ip": "127.0.0.1", "port": $WSS_PORT, "tls": true } ],
  "tls_certificates": { "cert": "$WORK/cert.pem", "key": "$WORK/key.pem" } }
JSON
cat >"$WORK/etc/lapps.json" <<JSON
{ "directories": { "applications": "$(pwd)/lua/apps", "lib": "$(pwd)/lua/lib" },
  "services": { "echo_builtin": { "builtin": "echo", "request_target": "/echo_builtin" } } }
JSON
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard"
(( hard >= BURST + 100 )) || die "the descriptor limit ($hard) is too low for BURST=$BURST"
field() { grep -o "\"$1\": *[0-9.]*" | sed 's/.*: *//'; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# run NAME BIN: one measurement, appended to $WORK/NAME
run() {
    taskset -c "$SERVER_CPU" "$2" -c "$WORK/etc" >>"$WORK/lapps.log" 2>&1 &
    PID=$!
    local _ up=
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$WSS_PORT") 2>/dev/null; then up=1; break; fi
        kill -0 "$PID" 2>/dev/null || die "$2 exited; see $WORK/lapps.log"
        sleep 0.1
    done
    [[ -n $up ]] || die "$2 did not listen on $WSS_PORT within 20 s"
    "$LOADGEN" --url "ws://127.0.0.1:$WS_PORT/echo_builtin" --connections 10 --depth 1 --size 16 \
        --duration "$DURATION" --warmup 1 --pin "$CLIENT_CPU" --json >"$WORK/pp.json" &
    LG=$!
    sleep 2 # into the measured interval (after loadgen's connections and warm-up)
    local burst
    burst=$(taskset -c "$CLIENT_CPU" python3 bench/tls_burst.py 127.0.0.1 "$WSS_PORT" "$BURST") ||
        die "the burst's handshakes did not all complete against $2: $burst"
    wait "$LG" || die "loadgen failed against $2"
    LG=
    kill "$PID" 2>/dev/null || die "$2 ended during the run; see $WORK/lapps.log"
    wait "$PID" 2>/dev/null || true
    PID=
    local p99 max took
    p99=$(field rtt_p99_us <"$WORK/pp.json" || true)
    max=$(field rtt_max_us <"$WORK/pp.json" || true)
    took=$(field took_s <<<"$burst" || true)
    [[ -n $p99 && -n $max && -n $took ]] || die "unreadable results: $(cat "$WORK/pp.json") $burst"
    echo "$p99 $max $took" >>"$WORK/$1"
    printf '%-4s %-40s p99 %8s us  max %9s us  burst done in %s s\n' "$1" "$2" "$p99" "$max" "$took"
}

for r in $(seq "$ROUNDS"); do
    run old "$OLD"
    run new "$NEW"
done
echo "== medians of $ROUNDS ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)):" \
    "ping-pong RTT on 10 connections during $BURST ClientHellos ($KEY key)"
for w in old new; do
    printf '%-4s p99 %8s us  max %9s us  burst %s s\n' "$w" \
        "$(cut -d' ' -f1 "$WORK/$w" | median)" "$(cut -d' ' -f2 "$WORK/$w" | median)" \
        "$(cut -d' ' -f3 "$WORK/$w" | median)"
done
