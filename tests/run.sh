#!/usr/bin/env bash
# The whole test suite: unit and integration tests, the loom model of the MPMC queue, wss://
# interop, the Autobahn TestSuite against the real server, the JS client's unit tests (node), the
# LAppS protocol from Python and from headless Chromium. Installs what it needs (Autobahn, a Python
# venv, chromium) itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== cargo test"
cargo test

echo "== loom model of the MPMC queue"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --lib sync::mpmc

echo "== wss:// interop with Python websockets"
bash tests/interop/run.sh

echo "== Autobahn TestSuite (ws:// and wss://)"
bash tests/autobahn/run.sh

echo "== JS client unit tests (node --test)"
if command -v node >/dev/null; then
    node --test clients/js/test/
elif [ "${CI:-}" = true ]; then
    # Nothing installs node for CI (.ci/run does not): the image must have it, or the JS client
    # would go untested without anyone noticing.
    echo "node not installed: the JS client unit tests cannot run under CI" >&2
    exit 1
else
    echo "node not installed: JS client unit tests SKIPPED"
fi

echo "== LAppS protocol interop (Python cbor2 + websockets)"
bash tests/interop/lapps.sh

echo "== browser client in headless Chromium"
bash tests/browser/run.sh
