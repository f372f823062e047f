#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, then the gates in order
# (shellcheck, rustfmt, clippy with -D warnings, every workspace test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
shellcheck scripts/*.sh .ci/run
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
