#!/usr/bin/env bash
# A million connections: one lapps with two IO workers holds CONNS WebSocket connections to the
# Lua echo (bench/apps/echo, RAW), opened by one loadgen from 40 loopback addresses. Then:
# - the server's RSS per connection and the kernel's slab memory per connection (both ends of
#   each loopback connection, client and server, are in it);
# - the status report (SIGUSR1) while all of them are open;
# - one message on every connection, whose echo must come back (every one still works);
# - the client goes (its exit closes all of them at once): how long the server takes to end
#   them all and give back every descriptor, and its RSS after;
# - SIGINT: the server must stop cleanly ("stopped").
#
# Needs: the hard descriptor limit raised to CONNS + ~11,000 for the server and the client each
# (run as root: the script raises it, up to fs.nr_open, 1048576 by default), and about 9 GB of
# free memory (the kernel's part: two sockets per connection on loopback). Not part of CI.
#
# Usage: sudo bench/million.sh   (env: CONNS (1000000), HOLD (5 s held after the report), THREADS (4: client threads
#        opening connections), PORT (5099), KEEP=1 keeps the work directory)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-1000000}
HOLD=${HOLD:-5}
THREADS=${THREADS:-4}
PORT=${PORT:-5099}
WORKERS=2
LOADGEN=bench/loadgen/target/release/loadgen
die() {
    echo "million: $*" >&2
    if [ -s "${WORK:-}/client.out" ]; then
        echo "million: the client's output ends:" >&2
        tail -n 5 "$WORK/client.out" | sed 's/^/   /' >&2
    fi
    exit 1
}

# Each worker may hold its half and some room: the balancer gives each new connection to the
# least loaded worker, so they differ by a few at most.
per_worker=$(((CONNS + WORKERS - 1) / WORKERS + 1000))
# What lapps counts on besides (src/net/nofile.rs): 5,120 per worker for refused and waiting
# connections and 256 of its own.
need=$((WORKERS * per_worker + WORKERS * 5120 + 256))
nr_open=$(cat /proc/sys/fs/nr_open)
[ "$need" -le "$nr_open" ] || die "CONNS=$CONNS needs $need descriptors, above fs.nr_open ($nr_open)"
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
    ulimit -Hn "$need" 2>/dev/null ||
        die "the hard descriptor limit is $(ulimit -Hn), below the $need needed for" \
            "CONNS=$CONNS: raising it takes CAP_SYS_RESOURCE (root, outside a container that drops it)"
fi
ulimit -n "$need"
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
want_kib=$((CONNS * 9))   # ~9 KiB per connection, both ends and both processes
[ "$avail_kib" -ge "$want_kib" ] ||
    die "$((avail_kib / 1024)) MiB of memory available, about $((want_kib / 1024)) MiB needed"
# 40 source addresses: one has ~28,000 ephemeral ports towards the server's one port.
range=$(cat /proc/sys/net/ipv4/ip_local_port_range)
ports=$((${range#*[[:space:]]} - ${range%%[[:space:]]*} + 1))
sources=$(((CONNS + ports - 1) / ports + 4))
[ "$sources" -le 255 ] || die "CONNS=$CONNS needs $sources source addresses (at most 255)"

[ -x target/release/lapps ] || cargo build --release
[ -x "$LOADGEN" ] || cargo build --release --manifest-path bench/loadgen/Cargo.toml

WORK=$(mktemp -d /tmp/lapps-million.XXXXXX)
PID=
CLIENT=
cleanup() {
    kill ${CLIENT:+"$CLIENT"} ${PID:+"$PID"} 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/etc" "$WORK/var/tmp"
cat >"$WORK/etc/ws.json" <<EOF
{
  "ip": "127.0.0.1",
  "port": $PORT,
  "listeners": 1,
  "backlog": 4096,
  "workers": { "workers": $WORKERS, "max_connections": $per_worker }
}
EOF
cat >"$WORK/etc/lapps.json" <<EOF
{
  "directories": {
    "applications": "$PWD/bench/apps",
    "lib": "$PWD/lua/lib",
    "workdir": "$WORK/var",
    "tmp": "$WORK/var/tmp"
  },
  "services": {
    "echo": { "protocol": "raw", "instances": 1, "request_target": "/echo" }
  }
}
EOF

slab() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
fds() { find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
threads() { find "/proc/$PID/task" -mindepth 1 -maxdepth 1 | wc -l; }
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s until it succeeds; dies when the
# server, or the client while it runs, has exited meanwhile.
wait_for() {
    local secs=$1 what=$2 began=$SECONDS
    shift 2
    until "$@"; do
        [ $((SECONDS - began)) -lt "$secs" ] || die "$what: not within $secs s"
        kill -0 "$PID" 2>/dev/null || die "lapps exited (log: $WORK/lapps.log)"
        if [ -n "$CLIENT" ] && ! kill -0 "$CLIENT" 2>/dev/null; then
            die "the client exited before $what"
        fi
        sleep 0.2
    done
}

target/release/lapps -c "$WORK/etc" >"$WORK/lapps.log" 2>&1 &
PID=$!
wait_for 20 "lapps listening on $PORT" grep -q "listening on 127.0.0.1:$PORT" "$WORK/lapps.log"
fds_idle=$(fds) threads_idle=$(threads) rss_idle=$(rss) slab_idle=$(slab)
echo "== million: $CONNS connections to ws://127.0.0.1:$PORT/echo from $sources addresses," \
    "lapps pid $PID ($WORKERS workers x max_connections $per_worker; RSS $rss_idle KiB," \
    "$fds_idle descriptors, $threads_idle threads idle)"

# The client says "opened N" once every connection is open and holds them until it reads a
# line on stdin (a FIFO here): the figures and the status report below are taken meanwhile.
mkfifo "$WORK/go"
"$LOADGEN" --url "ws://127.0.0.1:$PORT/echo" --idle "$CONNS" --hold-stdin --threads "$THREADS" \
    --sources "$sources" --echo-all --server-pid "$PID" <"$WORK/go" >"$WORK/client.out" 2>&1 &
CLIENT=$!
exec 3>"$WORK/go"
began=$SECONDS
opened() { grep -q '^opened ' "$WORK/client.out"; }
wait_for 900 "$CONNS connections open" opened
opened_s=$((SECONDS - began))
all_open() { [ "$(fds)" -ge $((fds_idle + CONNS)) ]; }
wait_for 10 "the server holding all $CONNS connections" all_open
rss_full=$(rss) slab_full=$(slab)
echo "   all open after ~$opened_s s: RSS $rss_full KiB, kernel slab +$(((slab_full - slab_idle) / 1024)) MiB"
reports=$(grep -c 'status: bcast' "$WORK/lapps.log" || true)
kill -USR1 "$PID"
reported() { [ "$(grep -c 'status: bcast' "$WORK/lapps.log" || true)" -gt "$reports" ]; }
wait_for 30 "the status report" reported
grep 'status: ' "$WORK/lapps.log" | sed 's/^/   /'
# HOLD seconds more with all of them open, then the client checks them and echoes on each.
sleep "$HOLD"
# In a subshell: a client that died meanwhile reads nothing, and the SIGPIPE would end this
# script without a word; `wait` below reports it with the client's output.
(echo go >&3) 2>/dev/null || true
exec 3>&-

wait "$CLIENT" || { sed 's/^/   /' "$WORK/client.out"; die "the client failed"; }
CLIENT=
ended=$SECONDS
sed 's/^/   /' "$WORK/client.out"
given_back() { [ "$(fds)" -le "$fds_idle" ]; }
wait_for 300 "every descriptor given back after the client went" given_back
closed_s=$((SECONDS - ended))
rss_after=$(rss) threads_after=$(threads)
kill -INT "$PID"
wait "$PID" || die "lapps exited with status $? at SIGINT"
PID=
tail -n 1 "$WORK/lapps.log" | grep -q 'stopped$' || die "the log does not end with 'stopped'"
errors=$(grep -c -E ' (ERROR|WARN) ' "$WORK/lapps.log" || true)
grep -E ' (ERROR|WARN) ' "$WORK/lapps.log" | head -5 | sed 's/^/   /' || true

awk -v n="$CONNS" -v ri="$rss_idle" -v rf="$rss_full" -v si="$slab_idle" -v sf="$slab_full" \
    -v ra="$rss_after" -v cs="$closed_s" -v os="$opened_s" -v w="$errors" \
    -v fi="$fds_idle" -v ti="$threads_idle" -v ta="$threads_after" 'BEGIN {
    printf "million: %d connections held; server RSS %d KiB idle, %d KiB with all open (%.0f bytes per connection), %d KiB after they went; kernel slab %.0f bytes per connection (both ends); all open in ~%d s, all ended and descriptors back to %d within ~%d s of the client leaving; threads %d and %d; %d warnings or errors logged; stopped cleanly\n",
        n, ri, rf, (rf - ri) * 1024 / n, ra, (sf - si) * 1024 / n, os, fi, cs, ti, ta, w
}'
[ "$threads_after" -eq "$threads_idle" ] || die "threads $threads_idle idle, $threads_after after"
[ "$errors" -eq 0 ] || die "the server logged warnings or errors (above)"
