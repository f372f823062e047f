#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, then the gates in order
# (shellcheck, rustfmt, clippy with -D warnings, every workspace test).
# The firmware build takes about 5 minutes on 2 cores the first time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
scripts/build-ovmf.sh   # real AmdSev/IntelTdx firmware for the tests (once per checkout)
shellcheck scripts/*.sh .ci/run measure/fuzz/*.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
