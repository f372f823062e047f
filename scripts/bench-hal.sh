#!/usr/bin/env bash
# Benchmarks building the default HAL initramfs (`cocos-hal build`, the whole build:
# kernel from the cache, module closure, archive, gzip, release.json with its
# measurements) against the classic pipeline over the same tree:
#   find . | sort | cpio --reproducible -H newc -R 0:0 -o | gzip -9n
# The tree is the built image unpacked. Targets (issue #4): time and size ratios
# cocos-hal / pipeline <= 1.0. Environment: RUNS (default 10), SPEC (hal/cocos.toml).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-10}
SPEC=${SPEC:-hal/cocos.toml}
BENCH=target/bench/hal
rm -rf "$BENCH" && mkdir -p "$BENCH/tree"

for tool in hyperfine cpio gzip python3; do
    command -v "$tool" >/dev/null || { echo "bench-hal: $tool not found (scripts/setup.sh)" >&2; exit 1; }
done
cargo build --release --locked -q -p cocos-hal
HAL=target/release/cocos-hal
"$HAL" build --spec "$SPEC" --out "$BENCH/out" >/dev/null
IMG=$(find "$BENCH/out" -name 'initramfs.cpio*')
(cd "$BENCH/tree" && "$ROOT/$HAL" inspect "$ROOT/$IMG" >/dev/null && gzip -dc "$ROOT/$IMG" | cpio -idm --quiet)

PIPE="cd $BENCH/tree && find . -mindepth 1 | LC_ALL=C sort | cpio --reproducible -H newc -R 0:0 -o --quiet | gzip -9n > $ROOT/$BENCH/pipeline.cpio.gz"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$BENCH/hyperfine.json" \
    -n cocos-hal "$HAL build --spec $SPEC --out $BENCH/out" \
    -n pipeline "sh -c '$PIPE'"
python3 - "$BENCH/hyperfine.json" "$IMG" "$BENCH/pipeline.cpio.gz" <<'PY'
import json, os, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
a, b = os.path.getsize(sys.argv[2]), os.path.getsize(sys.argv[3])
print(f"time: cocos-hal {r['cocos-hal']*1000:.1f} ms, pipeline {r['pipeline']*1000:.1f} ms, ratio {r['cocos-hal']/r['pipeline']:.2f}")
print(f"size: cocos-hal {a} bytes, pipeline {b} bytes, ratio {a/b:.4f}")
PY
