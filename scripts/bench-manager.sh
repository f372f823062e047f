#!/usr/bin/env bash
# cocos-manager benchmark (release build): launch latency p50/p99 (request → QEMU
# spawned, with verification and measurement), events/s from 100 agents over Unix
# sockets with the QEMU stand-in and zero-loss check, RSS idle and at 100 VMs.
# Needs the default HAL image: builds it into target/demo/hal if missing.
# Usage: scripts/bench-manager.sh [--launches N] [--agents N] [--events N] [--measure-as snp|tdx|none]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked -q -p cocos-hal -p cocos-manager -p cocos-tests --bins --examples
if [ ! -f target/demo/hal/release.json ]; then
    target/release/cocos-hal build --spec hal/cocos.toml --out target/demo/hal
fi
exec target/release/examples/bench_manager "$@"
