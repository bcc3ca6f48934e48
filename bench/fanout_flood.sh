#!/usr/bin/env bash
# A fan-out flood against two lapps binaries, interleaved: one /chat client sends 4000-byte
# lines to a room of MEMBERS (each line a broadcast of MEMBERS x 4 KB) for FLOOD_SECONDS, while a
# probe pings /echo_builtin every 20 ms (bench/fanout_flood.py). The repository's etc/lapps
# services on PORT, server pinned to SERVER_CPU (its workers share it), clients to
# CLIENT_CPU. What it shows: how long the rest of the server waits behind a flood.
# KIND=pong: MEMBERS connections to /echo flood empty Pongs instead (fanout_flood.py).
#
# Usage: bench/fanout_flood.sh OLD NEW   (env: ROUNDS=5 MEMBERS=500 FLOOD_SECONDS=5 PORT=5097 KIND=chat)
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '/^# Usage:/p' "$0" >&2; exit 2; }
OLD=$(realpath -e "$1")
NEW=$(realpath -e "$2")
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
MEMBERS=${MEMBERS:-500}
FLOOD_SECONDS=${FLOOD_SECONDS:-5}
KIND=${KIND:-chat}
[[ $KIND == chat || $KIND == pong ]] || { echo "fanout_flood.sh: KIND is chat or pong" >&2; exit 2; }
PORT=${PORT:-5097}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

die() { echo "fanout_flood.sh: $*" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is busy"; fi
WORK=$(mktemp -d)
PID=
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/etc"
cp etc/lapps/lapps.json "$WORK/etc/"
python3 - "$WORK/etc/ws.json" "$PORT" <<'PY'
import json, sys
w = json.load(open("etc/lapps/ws.json"))
w["port"] = int(sys.argv[2])
json.dump(w, open(sys.argv[1], "w"))
PY

run() { # run BINARY LABEL ROUND
    taskset -c "$SERVER_CPU" "$1" -c "$WORK/etc" >"$WORK/lapps.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$WORK/lapps.log" && break
        kill -0 "$PID" 2>/dev/null || die "$2 did not start: $(tail -3 "$WORK/lapps.log")"
        sleep 0.05 # polling interval of the start wait
    done
    grep -q "listening on" "$WORK/lapps.log" || die "$2 did not listen"
    local out
    out=$(taskset -c "$CLIENT_CPU" python3 bench/fanout_flood.py "$PORT" "$MEMBERS" "$FLOOD_SECONDS" "$KIND")
    kill -INT "$PID"
    wait "$PID" || true
    PID=
    echo "round $3 $2 $out" | tee -a "$WORK/results"
}

for r in $(seq "$ROUNDS"); do
    run "$OLD" old "$r"
    run "$NEW" new "$r"
done
python3 - "$WORK/results" <<'PY'
import re, statistics, sys
rows = {"old": [], "new": []}
for line in open(sys.argv[1]):
    m = re.search(r"round \d+ (\w+) probe (\d+) round trips, worst ([\d.]+) ms, p99 ([\d.]+) ms, "
                  r"median ([\d.]+) ms; flood (\d+) (lines|frames)", line)
    rows[m[1]].append([float(x) for x in m.groups()[1:6]])
    unit = m[7]
for who, r in rows.items():
    med = [statistics.median(c) for c in zip(*r)]
    print(f"median {who}: {med[0]:.0f} round trips, worst {med[1]:.1f} ms, p99 {med[2]:.1f} ms, "
          f"median {med[3]:.1f} ms; flood {med[4]:.0f} {unit}")
PY
