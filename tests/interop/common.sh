# shellcheck shell=bash
# Shared by tests/interop/lapps.sh, tests/interop/run.sh, tests/browser/run.sh,
# tests/autobahn/run.sh and tests/autobahn/client.sh (sourced, from the repository root):
# a Python venv with cbor2 + websockets, the port a server bound (from its log), and the real
# `lapps` server on a temporary copy of etc/lapps with port 0. Callers set a trap that runs `cleanup`.

CLEANUP_PIDS=()
CLEANUP_DIRS=()

cleanup() {
    local pid
    for pid in "${CLEANUP_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ ${#CLEANUP_DIRS[@]} -gt 0 ]; then rm -rf "${CLEANUP_DIRS[@]}"; fi
}

# Autobahn's wstest under $PREFIX (installed on first use by ../shared/tools/autobahn/install.sh)
# and the release `lapps`; sets TOOLS (the shared scripts) and WSTEST. $1 names the run in the
# error when ../shared is missing.
autobahn_setup() {
    TOOLS=${LAPPS_SHARED:-$(pwd)/../shared}/tools/autobahn
    PREFIX=${AUTOBAHN_PREFIX:-/opt/autobahn}
    WSTEST=$PREFIX/bin/wstest
    if [ ! -d "$TOOLS" ]; then
        echo "$1: $TOOLS not found (set LAPPS_SHARED)" >&2
        exit 2
    fi
    bash "$TOOLS/install.sh" "$PREFIX" >/dev/null
    cargo build --release --bin lapps
}

# Debian splits venv's ensurepip into python3-venv: installed here (as root) when missing.
ensure_venv_module() {
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
}

# Creates (once) target/interop-venv with the two PyPI packages; sets PY to its python.
interop_venv() {
    local venv=target/interop-venv
    if ! "$venv/bin/python" -c 'import cbor2, websockets.asyncio.client' 2>/dev/null; then
        ensure_venv_module
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check 'cbor2>=5.6' 'websockets>=13'
    fi
    # shellcheck disable=SC2034 # read by the scripts that source this file
    PY=$PWD/$venv/bin/python
}

# Waits (bounded) for the "listening on 127.0.0.1:PORT (SCHEME, ..." line of the server whose
# log is $1 and pid $2, SCHEME $3 (ws by default), and prints PORT: the port the server itself
# bound (port 0 in its config), so no other process can hold it, and nothing else can pass for
# the server.
listening_port() {
    local log=$1 pid=$2 scheme=${3:-ws} _ port
    for _ in $(seq 1 300); do
        port=$(sed -n "s/.*listening on [0-9.]*:\([0-9]*\) ($scheme, .*/\1/p" "$log" | head -1)
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# Builds and starts target/release/lapps on a port of its own; sets LAPPS_PORT and LAPPS_LOG.
start_lapps_server() {
    cargo build --release --bin lapps
    local work
    work=$(mktemp -d /tmp/lapps-interop.XXXXXX)
    CLEANUP_DIRS+=("$work")
    mkdir -p "$work/etc"
    LAPPS_LOG=$work/lapps.log
    sed "s/\"port\": *[0-9]*/\"port\": 0/" etc/lapps/ws.json > "$work/etc/ws.json"
    # Paths in lapps.json are relative to the repository: make them absolute.
    sed "s#\"\\./#\"$PWD/#g" etc/lapps/lapps.json > "$work/etc/lapps.json"
    # At info at least: the port is read from the "listening on" line.
    LAPPS_LOG=info target/release/lapps -c "$work/etc" > "$LAPPS_LOG" 2>&1 &
    LAPPS_PID=$!
    CLEANUP_PIDS+=("$LAPPS_PID")
    if ! LAPPS_PORT=$(listening_port "$LAPPS_LOG" "$LAPPS_PID"); then
        echo "lapps did not start listening:" >&2
        cat "$LAPPS_LOG" >&2
        return 1
    fi
}

# Fails (with the log's end) when the server started here has died or panicked meanwhile: a
# client that passed says nothing about a crash on its last close handshake. $1 names the check.
server_survived() {
    [ -n "${LAPPS_PID:-}" ] || return 0
    if ! kill -0 "$LAPPS_PID" 2>/dev/null || grep -q "panicked" "$LAPPS_LOG"; then
        echo "$1: the server died or panicked during the test:" >&2
        tail -30 "$LAPPS_LOG" >&2
        return 1
    fi
}

# Sets WS_URL to the LAppS echo service: $LAPPS_URL when given, else a server started here.
lapps_echo_url() {
    if [ -n "${LAPPS_URL:-}" ]; then
        WS_URL=$LAPPS_URL
    else
        start_lapps_server
        WS_URL=ws://127.0.0.1:$LAPPS_PORT/echo_lapps
    fi
}
