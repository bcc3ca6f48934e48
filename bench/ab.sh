#!/usr/bin/env bash
# Interleaved A/B of two lapps binaries on one endpoint, pinned as bench/run.sh pins servers
# and loadgen. For a change's effect on the same machine in the same minutes; bench/run.sh
# gives the figures against peers.
#
# Usage: bench/ab.sh OLD NEW [PATH [loadgen options...]]
#   bench/ab.sh /tmp/lapps-before target/release/lapps /echo_lapps --lapps
#   ROUNDS=5 DEPTH=1 bench/ab.sh /tmp/lapps-before target/release/lapps /echo
# Each round starts OLD, measures it, stops it, then does the same for NEW. Prints every run's
# msgs/s and server CPU per message, then the medians and NEW/OLD.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 2 ]] || { sed -n '6,8p' "$0" >&2; exit 2; }
OLD=$1 NEW=$2
TARGET=${3:-/echo}
shift $(($# < 3 ? $# : 3))
EXTRA=("$@")

CONFIG=${CONFIG:-bench/etc}
PORT=${PORT:-5090}                 # must match $CONFIG/ws.json
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-100}
DEPTH=${DEPTH:-32}
SIZE=${SIZE:-16}
LOADGEN=bench/loadgen/target/release/loadgen

die() { echo "ab.sh: $*" >&2; exit 1; }
for b in "$OLD" "$NEW"; do [[ -x $b ]] || die "not an executable: $b"; done
[[ -x $LOADGEN ]] || (cd bench/loadgen && cargo build -q --release)
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT is busy"
fi

PID=
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null; true' EXIT
LOG=$(mktemp -t lapps-ab.XXXXXX)

# run BIN: one measurement, into RATE (msgs/s) and US (server CPU us per message)
run() {
    taskset -c "$SERVER_CPU" "$1" -c "$CONFIG" >>"$LOG" 2>&1 &
    PID=$!
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        kill -0 "$PID" 2>/dev/null || die "$1 exited; see $LOG"
        sleep 0.1
    done
    local line
    line=$("$LOADGEN" --url "ws://127.0.0.1:$PORT$TARGET" --connections "$CONNS" --depth "$DEPTH" \
        --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" --server-pid "$PID" \
        --pin "$CLIENT_CPU" --json "${EXTRA[@]}") || die "loadgen failed against $1"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    RATE=$(grep -o '"msgs_per_s":[0-9.]*' <<<"$line" | cut -d: -f2)
    US=$(grep -o '"server_us_per_msg":[0-9.]*' <<<"$line" | cut -d: -f2)
    [[ -n $RATE && -n $US ]] || die "no figures in loadgen's output: $line"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

old_rates=() old_us=() new_rates=() new_us=()
echo "ab: $TARGET, $CONNS connections x $DEPTH in flight, $SIZE B, ${DURATION}s x $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
    run "$OLD"
    old_rates+=("$RATE") old_us+=("$US")
    printf 'round %d  old  %10s msgs/s  %6s us/msg\n' "$r" "$RATE" "$US"
    run "$NEW"
    new_rates+=("$RATE") new_us+=("$US")
    printf 'round %d  new  %10s msgs/s  %6s us/msg\n' "$r" "$RATE" "$US"
done
mo=$(printf '%s\n' "${old_rates[@]}" | median)
mn=$(printf '%s\n' "${new_rates[@]}" | median)
uo=$(printf '%s\n' "${old_us[@]}" | median)
un=$(printf '%s\n' "${new_us[@]}" | median)
printf 'median   old  %10s msgs/s  %6s us/msg\n' "$mo" "$uo"
printf 'median   new  %10s msgs/s  %6s us/msg\n' "$mn" "$un"
awk -v a="$mo" -v b="$mn" -v c="$uo" -v d="$un" \
    'BEGIN {printf "new/old  msgs/s %.2f, us/msg %.2f\n", b / a, d / c}'
rm -f "$LOG"
