#!/usr/bin/env bash
# cocos-manager benchmark (release build): launch latency p50/p99 (request → QEMU
# spawned, with verification and measurement), events/s from 100 agents over Unix
# sockets with the QEMU stand-in and zero-loss check, RSS idle and at 100 VMs; 1,000
# VMs (RSS, events/s with every agent released at once, zero loss); launch latency
# with 1,000 followers of /events attached; one flooding VM beside 99 quiet ones (the
# quiet VMs' event latency). See tests/examples/bench_manager.rs.
# Needs the default HAL image: builds it into target/demo/hal if missing.
# Usage: scripts/bench-manager.sh [--launches N] [--agents N] [--events N]
#   [--scale-vms N] [--events-1000 N] [--followers N] [--only 1,2,4,5,6]
#   [--measure-as snp|tdx|none]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Its own target directory: the binaries in target/release that the other scripts use
# are never rebuilt with this benchmark's feature set.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/bench-manager}"
cargo build --release --locked -q -p cocos-hal -p cocos-manager -p cocos-tests --bins --examples
if [ ! -f target/demo/hal/release.json ]; then
    "$CARGO_TARGET_DIR/release/cocos-hal" build --spec hal/cocos.toml --out target/demo/hal
fi
exec "$CARGO_TARGET_DIR/release/examples/bench_manager" "$@"
