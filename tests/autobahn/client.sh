#!/usr/bin/env bash
# The client role's conformance run: the Autobahn TestSuite's fuzzing *server* (wstest -m
# fuzzingserver) against `cws`, the WebSocket client Lua services use. A standalone service of
# the real `lapps` binary (tests/autobahn/apps/autobahn_client) runs every case in turn, sending
# back each message as it came, then has wstest write its report, which is judged here as
# tests/autobahn/run.sh judges the server's: any FAILED, UNIMPLEMENTED or NON-STRICT case, or a
# close behaviour other than OK/INFORMATIONAL, fails the run. Cases 12.*/13.* (permessage-deflate,
# which cws does not offer) are left out. AUTOBAHN_CLIENT_SCHEMES="ws wss" picks the runs (wss:
# a certificate made here by the openssl CLI, given to cws as its ca_file).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TIMEOUT=${AUTOBAHN_TIMEOUT:-600}
# shellcheck source=tests/interop/common.sh
source tests/interop/common.sh
autobahn_setup "autobahn client"

WORK=$(mktemp -d /tmp/lapps-autobahn-client.XXXXXX)
CLEANUP_DIRS+=("$WORK")
trap cleanup EXIT
# Not a CA (cws, like browsers, refuses a server certificate that is one).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$WORK/server.key" -out "$WORK/server.crt" 2>/dev/null

# A port for wstest, which only takes a fixed one: the kernel picks a free one, and should
# another process take it before wstest binds it, wstest fails to start and the run says so.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (bounded) until something accepts on 127.0.0.1:$1 while pid $2 lives.
wait_accepting() {
    local port=$1 pid=$2 _
    for _ in $(seq 1 300); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

rc=0
for scheme in ${AUTOBAHN_CLIENT_SCHEMES:-ws wss}; do
    run=$WORK/$scheme
    mkdir -p "$run/etc" "$run/reports"
    port=$(free_port)
    agent=lapps-cws-$scheme
    python3 - "$run/spec.json" "$scheme://127.0.0.1:$port" "$run/reports" "$WORK" <<'PY'
import json, sys
path, url, outdir, work = sys.argv[1:5]
spec = {"url": url, "outdir": outdir, "cases": ["*"], "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {}, "options": {"failByDrop": False}}
if url.startswith("wss:"):
    spec.update(key=work + "/server.key", cert=work + "/server.crt")
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
PY
    # --webport 0: no report web server (its default port, 8080, may be another job's).
    (cd "$run" && exec timeout --kill-after=10 "$TIMEOUT" "$WSTEST" -m fuzzingserver -s spec.json --webport 0) \
        >"$run/wstest.log" 2>&1 &
    wstest_pid=$!
    CLEANUP_PIDS+=("$wstest_pid")
    if ! wait_accepting "$port" "$wstest_pid"; then
        echo "autobahn client: wstest's fuzzing server did not start on port $port" >&2
        tail -15 "$run/wstest.log" >&2
        exit 2
    fi

    sed -e 's/"port": *[0-9]*/"port": 0/' tests/autobahn/etc/ws.json >"$run/etc/ws.json"
    python3 - "$run/etc/lapps.json" "$ROOT" "$scheme" "$WORK/server.crt" <<'PY'
import json, sys
path, root, scheme, crt = sys.argv[1:5]
client = {"standalone": True, "preload": ["cws", "nap", "time"],
          # Cases 9.* send messages of up to 16 MiB: the defaults (memory_limit 64 MiB,
          # max_message_size 16 MiB) take them.
          }
conf = {"directories": {"applications": root + "/tests/autobahn/apps", "lib": root + "/lua/lib"},
        "services": {"autobahn_client": client}}
with open(path, "w") as f:
    json.dump(conf, f, indent=2)
PY
    log=$run/lapps.log
    AUTOBAHN_SERVER="$scheme://127.0.0.1:$port" AUTOBAHN_AGENT=$agent AUTOBAHN_CA_FILE=$WORK/server.crt \
        LAPPS_LOG=info target/release/lapps -c "$run/etc" >"$log" 2>&1 &
    lapps_pid=$!
    CLEANUP_PIDS+=("$lapps_pid")
    echo "autobahn client: cws against $scheme://127.0.0.1:$port"
    start=$(date +%s)
    # Bounded wait for the app's own word that it is done (or for either process to end).
    deadline=$((start + TIMEOUT))
    until grep -q "autobahn client: done" "$log"; do
        if grep -q "autobahn client: gave up" "$log" || ! kill -0 "$lapps_pid" 2>/dev/null || ! kill -0 "$wstest_pid" 2>/dev/null \
            || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "autobahn client: the run did not finish ($scheme); last lines of the server's log:" >&2
            tail -20 "$log" >&2
            exit 2
        fi
        sleep 0.2
    done
    elapsed=$(( $(date +%s) - start ))
    kill "$lapps_pid" "$wstest_pid" 2>/dev/null || true
    wait "$lapps_pid" 2>/dev/null || true
    wait "$wstest_pid" 2>/dev/null || true
    python3 - "$run/reports/index.json" "$agent" "$elapsed" <<'PY' || rc=1
import json, sys
from collections import Counter
path, agent, elapsed = sys.argv[1:4]
with open(path) as f:
    cases = json.load(f).get(agent) or {}
key = lambda c: tuple(int(p) for p in c.split("."))
ids = sorted(cases, key=key)
counts = Counter(cases[c]["behavior"] for c in ids)
for label in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"):
    sel = [c for c in ids if cases[c]["behavior"] == label]
    if sel:
        print("  %s cases: %s" % (label, " ".join(sel)))
wrong_close = [c for c in ids if cases[c]["behaviorClose"] not in ("OK", "INFORMATIONAL")]
if wrong_close:
    print("  close not OK: " + " ".join("%s(%s)" % (c, cases[c]["behaviorClose"]) for c in wrong_close))
print("autobahn client: %s: %d cases in %ss, OK=%d NON-STRICT=%d INFORMATIONAL=%d UNIMPLEMENTED=%d FAILED=%d"
      % (agent, len(ids), elapsed, counts["OK"], counts["NON-STRICT"], counts["INFORMATIONAL"],
         counts["UNIMPLEMENTED"], counts["FAILED"]))
bad = counts["FAILED"] + counts["UNIMPLEMENTED"] + counts["NON-STRICT"] + len(wrong_close)
sys.exit(1 if bad or len(ids) < 290 else 0)
PY
done
exit $rc
