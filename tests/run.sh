#!/usr/bin/env bash
# The whole test suite: unit and integration tests, the loom model of the MPMC queue, and
# the Autobahn TestSuite against the real server. Installs what it needs (Autobahn) itself.
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
