#!/usr/bin/env bash
# Soak: connections come and go for DURATION seconds against one lapps serving the example apps
# (lua/apps, as etc/lapps does) on ws:// and wss://, and the server's memory and descriptors are
# sampled every SAMPLE seconds. A server meant to run for months must come back to where it was:
# its RSS flat once warm, its descriptors back to the count before the churn.
#
# Four loadgen --churn clients at once, each cycle one connection with one echo, ended in turn
# by a clean close, a reset or a FIN: the Lua echo (/echo, RAW), LAppS calls (/echo_lapps: each
# client is subscribed to a bcast channel and gets time OONs), the built-in echo over wss:// and
# LAppS calls over wss://. Any refused upgrade, wrong echo or missing close answer fails the run.
#
# The churn runs in two halves of DURATION / 2 seconds. The first warms every cache, pool and
# table up to its working size; what the second adds, per million of its connections, is what
# would grow for ever: the heap's bytes in use (glibc's malloc_stats, read through gdb when it
# is there) after each half, and the slope of RSS over the second half's samples.
#
# Usage: bench/soak.sh   (env: DURATION (600), SAMPLE (10), WS_PORT, WSS_PORT, ONLY: some of
#        echo,lapps,wss-builtin,wss-lapps (all four))
# Prints one row per sample, each half's clients, then the figures; fails when a client saw an
# error, or the descriptors or threads did not come back to the idle count after a half.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
WS_PORT=${WS_PORT:-5095}
WSS_PORT=${WSS_PORT:-5096}
LOADGEN=bench/loadgen/target/release/loadgen
WORK=$(mktemp -d /tmp/lapps-soak.XXXXXX)
PID=
pids=()
cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -s "$WORK/lapps.log" ]; then
        echo "soak: failed (status $status); the server's log ends:" >&2
        grep -v -e '^Arena' -e '^system bytes' -e '^in use bytes' -e '^Total' -e '^max mmap' \
            "$WORK/lapps.log" | tail -n 30 | sed 's/^/   /' >&2
    fi
    kill ${PID:+"$PID"} "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/wss_config.sh
. bench/wss_config.sh
wss_config "$WORK" "$WS_PORT" "$WSS_PORT" 2
# The repository's services (etc/lapps/lapps.json), with its directories made absolute.
python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
c = json.load(open("etc/lapps/lapps.json"))
d = c["directories"]
for k in ("applications", "lib", "app_conf_dir"):
    d[k] = os.path.abspath(d[k])
d["workdir"] = work + "/var"
d["tmp"] = work + "/var/tmp"
json.dump(c, open(work + "/etc/lapps.json", "w"), indent=2)
PY
ulimit -n "$(ulimit -Hn)"

target/release/lapps -c "$WORK/etc" >>"$WORK/lapps.log" 2>&1 &
PID=$!
# Started once it logs where it listens: that line comes after its IO workers made their
# descriptors. (A connect succeeds as soon as the port is bound, before the workers exist:
# an idle count taken then was 3 short, and the churn seemed to keep 3 descriptors.)
ready=
for _ in $(seq 200); do
    grep -q "listening on 127.0.0.1:$WSS_PORT " "$WORK/lapps.log" && { ready=1; break; }
    kill -0 "$PID" 2>/dev/null || { echo "soak: lapps exited at start-up" >&2; exit 1; }
    sleep 0.1
done
[ -n "$ready" ] || { echo "soak: lapps does not listen on $WSS_PORT after 20 s" >&2; exit 1; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
fds() { find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
threads() { find "/proc/$PID/task" -mindepth 1 -maxdepth 1 | wc -l; }
# The idle count: the same for a second (ten readings in a row), within 20 s.
fds_before=$(fds)
same=0
for _ in $(seq 200); do
    sleep 0.1
    n=$(fds)
    if [ "$n" -eq "$fds_before" ]; then same=$((same + 1)); else fds_before=$n; same=0; fi
    [ "$same" -ge 10 ] && break
done
threads_before=$(threads)
ls -l "/proc/$PID/fd" >"$WORK/fds.idle" 2>/dev/null || true
rss_before=$(rss)

all_clients=(
    "echo ws://127.0.0.1:$WS_PORT/echo"
    "lapps ws://127.0.0.1:$WS_PORT/echo_lapps --lapps"
    "wss-builtin wss://127.0.0.1:$WSS_PORT/echo_builtin --tls-insecure"
    "wss-lapps wss://127.0.0.1:$WSS_PORT/echo_lapps --lapps --tls-insecure"
)
clients=()
for c in "${all_clients[@]}"; do
    case ",${ONLY:-echo,lapps,wss-builtin,wss-lapps}," in *",${c%% *},"*) clients+=("${c#* }") ;; esac
done
[ ${#clients[@]} -gt 0 ] || { echo "ONLY names none of: echo, lapps, wss-builtin, wss-lapps" >&2; exit 2; }
half=$((DURATION / 2))
echo "== soak: 2 x ${half} s, ${#clients[@]} churning clients, lapps pid $PID (RSS ${rss_before} KiB, $fds_before descriptors idle)"

# The heap's bytes in use (glibc's malloc_stats, called in the server through gdb; it prints
# on the server's stderr, our log), or "n/a" without gdb or ptrace.
heap() { # heap MARK (a command substitution runs it in a subshell: no counter survives)
    local mark=$1
    echo "soak heap mark $mark" >>"$WORK/lapps.log"
    if command -v gdb >/dev/null &&
        timeout 60 gdb -p "$PID" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1; then
        local bytes
        bytes=$(awk -v m="soak heap mark $mark" '
            $0 == m { on = 1 } on && /^Total/ { t = 1 } t && /in use bytes/ { print $NF; exit }
        ' "$WORK/lapps.log")
        echo "${bytes:-n/a}"
    else
        echo n/a
    fi
}

# One half: the clients for `half` seconds, a sample row every SAMPLE seconds (time since the
# soak began), then the descriptors back to the idle count (a connection in its close
# handshake holds its socket up to close_timeout_ms). Sets `made` (connections).
t0=$SECONDS
failed=0
printf '%8s %10s %6s %8s\n' t_s rss_kib fds threads
run_half() {
    local i=0 p c url extra line n
    pids=()
    for c in "${clients[@]}"; do
        read -r url extra <<<"$c"
        # shellcheck disable=SC2086 # $extra holds the client's options
        "$LOADGEN" --url $url $extra --churn --duration "$half" --json \
            >"$WORK/client$i.json" 2>"$WORK/client$i.err" &
        pids+=($!)
        i=$((i + 1))
    done
    local began=$SECONDS
    while [ $((SECONDS - began)) -lt "$half" ]; do
        sleep "$SAMPLE"
        local t=$((SECONDS - t0)) r
        r=$(rss)
        printf '%8s %10s %6s %8s\n' "$t" "$r" "$(fds)" "$(threads)"
        echo "$t $r" >>"$WORK/samples"
    done
    for p in "${pids[@]}"; do
        wait "$p" || failed=1
    done
    pids=()
    made=0
    for i in $(seq 0 $((${#clients[@]} - 1))); do
        line=$(cat "$WORK/client$i.json")
        echo "   $line"
        n=$(sed -n 's/.*"connections":\([0-9]*\).*/\1/p' <<<"$line")
        made=$((made + ${n:-0}))
        sed 's/^/   /' "$WORK/client$i.err"
    done
    fds_now=$(fds)
    for _ in $(seq 100); do
        [ "$fds_now" -le "$fds_before" ] && break
        sleep 0.1
        fds_now=$(fds)
    done
    threads_now=$(threads)
    if [ "$fds_now" -gt "$fds_before" ]; then
        echo "   descriptors idle / now:"
        diff <(awk '{print $NF}' "$WORK/fds.idle" | sort) \
            <(ls -l "/proc/$PID/fd" 2>/dev/null | awk '{print $NF}' | sort) | sed 's/^/   /' || true
    fi
}

: >"$WORK/samples"
run_half
made1=$made fds1=$fds_now threads1=$threads_now rss1=$(rss) heap1=$(heap 1)
echo "   after the first half: RSS $rss1 KiB, heap in use $heap1 bytes, $fds1 descriptors"
second=$SECONDS
run_half
made2=$made fds2=$fds_now threads2=$threads_now rss2=$(rss) heap2=$(heap 2)
echo "   after the second half: RSS $rss2 KiB, heap in use $heap2 bytes, $fds2 descriptors"

# What the second half added, per million of its connections: the first half warmed every
# cache, pool and table up to its working size, so a server that gives back what each
# connection took adds nothing (RSS moves by the allocator's pages). The RSS slope is fitted
# to the second half's samples (least squares).
slope=$(awk -v from=$((second - t0)) -v secs="$half" -v made="$made2" '
    $1 > from { n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2 }
    END {
        if (n < 2 || made == 0) { print "n/a"; exit }
        b = (n * sxy - sx * sy) / (n * sxx - sx * sx)   # KiB per second
        printf "%.0f", b * secs / made * 1e6             # KiB per million connections
    }' "$WORK/samples")
if [ "$heap1" != n/a ] && [ "$heap2" != n/a ] && [ "$made2" -gt 0 ]; then
    heap_delta=$(awk -v a="$heap1" -v b="$heap2" -v m="$made2" 'BEGIN { printf "%+.0f", (b - a) / m * 1e6 }')
else
    heap_delta=n/a
fi
echo "soak: $((made1 + made2)) connections in 2 x ${half} s; RSS ${rss_before} KiB idle, $rss1 KiB after the first half, $rss2 KiB after the second; second half: RSS slope ${slope} KiB and heap in use ${heap_delta} bytes per million connections; descriptors $fds_before idle, $fds1 and $fds2 after each half; threads $threads_before, $threads1, $threads2"
if [ "$failed" -ne 0 ]; then
    echo "soak: a client failed (errors above)" >&2
    exit 1
fi
if [ "$fds2" -gt "$fds_before" ] || [ "$fds1" -gt "$fds_before" ]; then
    echo "soak: descriptors not given back after the churn" >&2
    exit 1
fi
if [ "$threads1" -ne "$threads_before" ] || [ "$threads2" -ne "$threads_before" ]; then
    echo "soak: threads $threads_before idle, $threads1 and $threads2 after each half" >&2
    exit 1
fi
