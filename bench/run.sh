#!/usr/bin/env bash
# LAppS vs tokio-tungstenite vs fastwebsockets: echo throughput, RTT and idle memory; LAppS
# protocol vs RAW Lua echo; bcast fan-out vs a Lua ws:send loop; one run.
# Every server is pinned to SERVER_CPU, the load generator to CLIENT_CPU. See bench/README.md.
# Usage: bench/run.sh            (all; env vars below override, e.g. DURATION=3 REPEAT=1 SKIP_LAPPS=1)
#        ONLY=lapps,fanout bench/run.sh     (a subset of: pingpong pipelined lapps fanout idle)
set -euo pipefail
cd "$(dirname "$0")/.."

# --- What changes as lapps evolves: how to start it and which endpoints to measure. ---
LAPPS_BUILD=${LAPPS_BUILD:-"cargo build -q --release"}
LAPPS_CMD=${LAPPS_CMD:-"target/release/lapps -c bench/etc"}
LAPPS_PORT=${LAPPS_PORT:-5090}                  # must match bench/etc/ws.json
LAPPS_URLS=${LAPPS_URLS:-"lapps-rust=/echo_builtin lapps-lua=/echo"}     # space-separated NAME=PATH
SKIP_LAPPS=${SKIP_LAPPS:-0}                     # 1: measure the peers only

TT_PORT=${TT_PORT:-5091}
FW_PORT=${FW_PORT:-5092}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-3}
FANOUT_SUBS=${FANOUT_SUBS:-10000}
FANOUT_SIZE=${FANOUT_SIZE:-1024}
FANOUT_ROUNDS=${FANOUT_ROUNDS:-10}
ONLY=${ONLY:-pingpong,pipelined,lapps,fanout,idle}
# Throughput scenarios: NAME|loadgen options|targets ("all": the peers and LAPPS_URLS).
SCENARIOS=("pingpong|--connections 100 --size 16 --depth 1|all"
           "pipelined|--connections 100 --size 16 --depth 32|all"
           "lapps|--connections 100 --size 16 --depth 32|lapps-lapps lapps-lua")
OUT=${OUT:-bench/results/$(date +%Y%m%d-%H%M%S)-$$}

LOADGEN=bench/loadgen/target/release/loadgen
PEERS=bench/peers/target/release
die() { echo "run.sh: $*" >&2; exit 1; }
want() {  # is scenario $1 selected (and runnable: lapps and fanout need lapps)
    [[ ",$ONLY," == *",$1,"* ]] || return 1
    [[ $SKIP_LAPPS == 1 && ($1 == lapps || $1 == fanout) ]] && return 1
    return 0
}
for w in ${ONLY//,/ }; do
    [[ $w =~ ^(pingpong|pipelined|lapps|fanout|idle)$ ]] || die "ONLY: unknown scenario $w"
done
SELECTED=()
for sc in "${SCENARIOS[@]}"; do want "${sc%%|*}" && SELECTED+=("$sc"); done

# --- Servers: NAME -> start command, port, paths. Started pinned, killed on any exit. ---
declare -A CMD PORT PID IDLED NEEDED
CMD[tokio-tungstenite]="$PEERS/tokio-tungstenite-echo $TT_PORT"; PORT[tokio-tungstenite]=$TT_PORT
CMD[fastwebsockets]="$PEERS/fastwebsockets-echo $FW_PORT";       PORT[fastwebsockets]=$FW_PORT
# label=server=path[=extra loadgen options]; "all" scenarios run against TARGETS.
TARGETS=("tokio-tungstenite=tokio-tungstenite=/" "fastwebsockets=fastwebsockets=/")
EXTRA_TARGETS=("lapps-lapps=lapps=/echo_lapps=--lapps")   # only where a scenario names them
SERVERS=(tokio-tungstenite fastwebsockets)
if [[ $SKIP_LAPPS != 1 ]]; then
    CMD[lapps]=$LAPPS_CMD; PORT[lapps]=$LAPPS_PORT; SERVERS+=(lapps)
    for u in $LAPPS_URLS; do TARGETS+=("${u%%=*}=lapps=${u#*=}"); done
fi

spec() {  # the target spec of label $1
    local t
    for t in "${TARGETS[@]}" "${EXTRA_TARGETS[@]}"; do
        [[ ${t%%=*} == "$1" ]] && { echo "$t"; return 0; }
    done
    die "no target $1 (SKIP_LAPPS=1 and a lapps scenario?)"
}
labels() {  # the target labels of scenario spec $1
    local t list=${1##*|}
    if [[ $list == all ]]; then
        for t in "${TARGETS[@]}"; do echo "${t%%=*}"; done
    else
        # shellcheck disable=SC2086  # a space-separated list on purpose
        printf '%s\n' $list
    fi
}
for sc in "${SELECTED[@]}"; do
    for l in $(labels "$sc"); do IFS='=' read -r _ server _ _ <<<"$(spec "$l")"; NEEDED[$server]=1; done
done
want fanout && NEEDED[lapps]=1
if want idle; then for t in "${TARGETS[@]}"; do IFS='=' read -r _ server _ _ <<<"$t"; NEEDED[$server]=1; done; fi
RUNNING=()
for s in "${SERVERS[@]}"; do [[ -n ${NEEDED[$s]:-} ]] && RUNNING+=("$s"); done
[[ ${#RUNNING[@]} -gt 0 ]] || die "nothing to run (ONLY=$ONLY SKIP_LAPPS=$SKIP_LAPPS)"

cleanup() {
    for s in "${!PID[@]}"; do kill "${PID[$s]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

field() { sed -n "s/.*\"$1\":\([0-9.a-z]*\).*/\1/p"; }   # one JSON number (or null)
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {  # start SERVER, wait (bounded) until its port accepts
    local s=$1 port=${PORT[$1]}
    accepts "$port" && die "port $port (for $s) is already in use"
    # shellcheck disable=SC2086  # the command is a word list on purpose
    WORKERS=1 taskset -c "$SERVER_CPU" ${CMD[$s]} >>"$OUT/$s.log" 2>&1 &
    PID[$s]=$!
    for _ in $(seq 200); do
        accepts "$port" && return 0
        kill -0 "${PID[$s]}" 2>/dev/null || die "$s exited at start; see $OUT/$s.log:
$(tail -5 "$OUT/$s.log")"
        sleep 0.1
    done
    die "$s did not accept on port $port within 20 s; see $OUT/$s.log (SKIP_LAPPS=1 runs the peers alone)"
}

stop() {
    kill "${PID[$1]}" 2>/dev/null || true
    wait "${PID[$1]}" 2>/dev/null || true
    unset "PID[$1]"
}

mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"   # 10,000 idle connections need descriptors on both sides
echo "== building (release)"
cargo build -q --release --manifest-path bench/loadgen/Cargo.toml
[[ -z ${NEEDED[tokio-tungstenite]:-}${NEEDED[fastwebsockets]:-} ]] \
    || cargo build -q --release --manifest-path bench/peers/Cargo.toml
[[ -z ${NEEDED[lapps]:-} ]] || $LAPPS_BUILD
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   scenarios: $ONLY; servers: ${RUNNING[*]}"
echo "   servers on CPU $SERVER_CPU, loadgen on CPU $CLIENT_CPU; ${DURATION} s runs (+${WARMUP} s warmup) x $REPEAT; raw: $OUT"

# --- Throughput and fan-out: all servers up at once (idle ones cost nothing), runs interleaved
# so that a change in background load hits every server alike.
if [[ ${#SELECTED[@]} -gt 0 ]] || want fanout; then
    for s in "${RUNNING[@]}"; do start "$s"; done
    for r in $(seq "$REPEAT"); do
        for sc in "${SELECTED[@]}"; do
            IFS='|' read -r name opts _ <<<"$sc"
            # Every other run in the opposite order, so that a drift in background load does
            # not land on the same server each time (lapps-lapps vs lapps-lua above all).
            order=$(labels "$sc")
            (( r % 2 == 0 )) && order=$(tr ' ' '\n' <<<"$order" | tac | tr '\n' ' ')
            for l in $order; do
                IFS='=' read -r label server path extra <<<"$(spec "$l")"
                # shellcheck disable=SC2086
                line=$("$LOADGEN" --url "ws://127.0.0.1:${PORT[$server]}$path" $opts $extra --duration "$DURATION" \
                    --warmup "$WARMUP" --server-pid "${PID[$server]}" --pin "$CLIENT_CPU" --json) \
                    || die "loadgen failed against $label ($name, run $r)"
                echo "$name $label $line" >>"$OUT/raw.txt"
                echo "   run $r $name $label: $(field msgs_per_s <<<"$line") msgs/s"
            done
        done
        if want fanout; then
            line=$("$LOADGEN" --url "ws://127.0.0.1:$LAPPS_PORT/fanout" --fanout "$FANOUT_SUBS" \
                --size "$FANOUT_SIZE" --rounds "$FANOUT_ROUNDS" --server-pid "${PID[lapps]}" \
                --pin "$CLIENT_CPU" --json) || die "loadgen --fanout failed (run $r)"
            echo "fanout lapps $line" >>"$OUT/raw.txt"
            echo "   run $r fanout: bcast $(field bcast_ms_median <<<"$line") ms, loop $(field loop_ms_median <<<"$line") ms"
        fi
    done
    for s in "${RUNNING[@]}"; do stop "$s"; done
fi

# --- Idle memory: a fresh server each, so earlier runs' freed memory cannot be reused.
if want idle; then
    for t in "${TARGETS[@]}"; do
        IFS='=' read -r label server path _ <<<"$t"
        [[ -n ${IDLED[$server]:-} ]] && continue   # one idle run per server process is enough
        IDLED[$server]=1
        start "$server"
        line=$("$LOADGEN" --url "ws://127.0.0.1:${PORT[$server]}$path" --idle "$IDLE_CONNS" --hold "$IDLE_HOLD" \
            --server-pid "${PID[$server]}" --pin "$CLIENT_CPU" --json) || die "idle run failed against $label"
        echo "idle $label $line" >>"$OUT/raw.txt"
        stop "$server"
    done
fi

# --- Tables of medians (the lower middle value for an even REPEAT). ---
median() { sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "n/a"}'; }
med() { grep "^$1 $2 " "$OUT/raw.txt" | field "$3" | median; }
row() { printf '%-10s %-18s %9s %9s %9s %9s %8s %9s %8s\n' "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a > 0) printf "%.2f", a / b; else printf "n/a" }'; }
echo
echo "== medians of $REPEAT runs ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$OUT/table.txt"
{
    if [[ ${#SELECTED[@]} -gt 0 ]]; then
        row scenario server msgs/s mean_us p50_us p99_us srvCPU% srv_us/msg cliCPU%
        for sc in "${SELECTED[@]}"; do
            n=${sc%%|*}
            for l in $(labels "$sc"); do
                row "$n" "$l" "$(med "$n" "$l" msgs_per_s)" "$(med "$n" "$l" rtt_mean_us)" \
                    "$(med "$n" "$l" rtt_p50_us)" "$(med "$n" "$l" rtt_p99_us)" "$(med "$n" "$l" server_cpu_pct)" \
                    "$(med "$n" "$l" server_us_per_msg)" "$(med "$n" "$l" client_cpu_pct)"
            done
        done
        echo "ratios (msgs/s: higher is better for the first; server CPU per message: lower is better)"
    fi
    for sc in "${SELECTED[@]}"; do
        n=${sc%%|*}
        if [[ $n == lapps ]]; then
            printf '%-10s lapps-lapps/lapps-lua: msgs/s %s (target >= 0.5), us/msg %s\n' "$n" \
                "$(ratio "$(med "$n" lapps-lapps msgs_per_s)" "$(med "$n" lapps-lua msgs_per_s)")" \
                "$(ratio "$(med "$n" lapps-lapps server_us_per_msg)" "$(med "$n" lapps-lua server_us_per_msg)")"
            printf '%-10s server CPU per message, Lua instance + IO worker: lapps-lapps %s + %s us, lapps-lua %s + %s us\n' \
                "$n" "$(med "$n" lapps-lapps server_lua_us_per_msg)" "$(med "$n" lapps-lapps server_io_us_per_msg)" \
                "$(med "$n" lapps-lua server_lua_us_per_msg)" "$(med "$n" lapps-lua server_io_us_per_msg)"
            continue
        fi
        for l in $(labels "$sc"); do
            [[ $(spec "$l") == *=lapps=* ]] || continue
            for peer in fastwebsockets tokio-tungstenite; do
                printf '%-10s %s/%s: msgs/s %s, us/msg %s\n' "$n" "$l" "$peer" \
                    "$(ratio "$(med "$n" "$l" msgs_per_s)" "$(med "$n" "$peer" msgs_per_s)")" \
                    "$(ratio "$(med "$n" "$l" server_us_per_msg)" "$(med "$n" "$peer" server_us_per_msg)")"
            done
        done
    done
    if want fanout; then
        printf '%-10s %-18s %9s %9s %9s %9s %10s %9s %9s %9s %9s %9s %9s\n' fanout subscribers bcast_ms bc_min \
            loop_ms lp_min loop/bcast bc_srv_ms bc_sys_ms lp_srv_ms lp_sys_ms bc_cli_ms lp_cli_ms
        printf '%-10s %-18s %9s %9s %9s %9s %10s %9s %9s %9s %9s %9s %9s\n' lapps "$FANOUT_SUBS x $FANOUT_SIZE" \
            "$(med fanout lapps bcast_ms_median)" "$(med fanout lapps bcast_ms_min)" \
            "$(med fanout lapps loop_ms_median)" "$(med fanout lapps loop_ms_min)" \
            "$(med fanout lapps loop_over_bcast)" "$(med fanout lapps bcast_server_cpu_ms)" \
            "$(med fanout lapps bcast_server_sys_ms)" "$(med fanout lapps loop_server_cpu_ms)" \
            "$(med fanout lapps loop_server_sys_ms)" "$(med fanout lapps bcast_client_cpu_ms)" \
            "$(med fanout lapps loop_client_cpu_ms)"
        printf '%-10s loop/bcast per run: %s (target >= 3); %s rounds each, times to the last subscriber\n' fanout \
            "$(grep '^fanout lapps ' "$OUT/raw.txt" | field loop_over_bcast | tr '\n' ' ')" "$FANOUT_ROUNDS"
        printf '%-10s ceiling: loop_ms / bc_sys_ms = %s (loop/bcast if bcast did no work outside the kernel)\n' \
            fanout "$(ratio "$(med fanout lapps loop_ms_median)" "$(med fanout lapps bcast_server_sys_ms)")"
        printf '%-10s client: bc_cli_ms / bcast_ms = %s (near 1: the one-thread client, not the server, sets bcast_ms)\n' \
            fanout "$(ratio "$(med fanout lapps bcast_client_cpu_ms)" "$(med fanout lapps bcast_ms_median)")"
    fi
    if want idle; then
        printf '%-10s %-18s %14s\n' idle server bytes/conn
        for t in "${TARGETS[@]}"; do
            l=${t%%=*}
            grep -q "^idle $l " "$OUT/raw.txt" || continue
            printf '%-10s %-18s %14s\n' "$IDLE_CONNS" "$l" "$(grep "^idle $l " "$OUT/raw.txt" | field bytes_per_conn)"
        done
    fi
} | tee -a "$OUT/table.txt"
