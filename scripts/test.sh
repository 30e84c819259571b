#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests in network namespaces (needs
# root; VSWITCHD_E2E=1 makes a missing privilege or tool a failure, not a skip).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
export VSWITCHD_E2E=1
cargo build --release --bins
cargo test --release --workspace -- --test-threads=2
