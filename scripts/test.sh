#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, then the gates in order
# (shellcheck, rustfmt, clippy with -D warnings, every workspace test).
# The firmware build takes about 5 minutes on 2 cores the first time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A one-shot build gains nothing from incremental state, which is a quarter of the
# disk a test build takes; a developer's own CARGO_INCREMENTAL wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/setup.sh
scripts/build-ovmf.sh   # real AmdSev/IntelTdx firmware for the tests (once per checkout)
shellcheck scripts/*.sh .ci/run measure/fuzz/*.sh fuzz/*.sh buildroot/*.sh buildroot/board/cocos/*.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The pinned HAL kernel (Debian 13's 6.12, via a private apt configuration under
# target/hal-cache), so tests find a kernel >= 6.9 at target/hal-cache/kernel/vmlinuz.
cargo run -q -p cocos-hal --locked -- kernel --spec hal/cocos.toml --locked >/dev/null
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
# One closing line with the totals over every test binary (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
# What the run left on disk (CI's disk is shared: keep this in view).
echo "target: $(du -sh target 2>/dev/null | cut -f1) on disk, $(df -h --output=avail . | tail -1 | tr -d ' ') free"
