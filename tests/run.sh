#!/usr/bin/env bash
# The whole test suite: unit and integration tests, the loom model of the MPMC queue, wss://
# interop, the Autobahn TestSuite against the real server and against its cws client, the JS
# client's unit tests (node), the LAppS protocol from Python and from headless Chromium. Installs
# what it needs (Autobahn, a Python venv, chromium) itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== cargo test"
cargo test

echo "== loom model of the MPMC queue"
# The filter must match: a rename that left it matching nothing would pass with 0 tests.
loom_out=$(RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --lib sync::mpmc 2>&1) ||
    { echo "$loom_out"; exit 1; }
echo "$loom_out" | grep -E '^test |^test result'
if ! grep -qE '^test result: ok\. [1-9][0-9]* passed' <<<"$loom_out"; then
    echo "the loom model ran no test (does the filter sync::mpmc still match?)" >&2
    exit 1
fi

echo "== wss:// interop with Python websockets"
bash tests/interop/run.sh

echo "== Autobahn TestSuite (ws:// and wss://)"
bash tests/autobahn/run.sh

echo "== Autobahn TestSuite's fuzzing server against the cws client (ws:// and wss://)"
bash tests/autobahn/client.sh

echo "== JS client unit tests (node --test)"
if ! command -v node >/dev/null && [ "$(id -u)" -eq 0 ]; then
    # As the browser test installs chromium: Debian's nodejs (node >= 18 has node --test).
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
fi
if command -v node >/dev/null; then
    node --test clients/js/test/
elif [ "${CI:-}" = true ]; then
    # Under CI the JS client must not go untested without anyone noticing.
    echo "node is not installed and could not be installed: the JS client tests cannot run" >&2
    exit 1
else
    echo "node not installed: JS client unit tests SKIPPED (apt-get install nodejs, as root)"
fi

echo "== LAppS protocol interop (Python cbor2 + websockets)"
bash tests/interop/lapps.sh

echo "== browser client in headless Chromium"
bash tests/browser/run.sh
