#!/bin/sh
# Buildroot post-image script: writes release.json beside bzImage and rootfs.cpio.gz
# with cocos-hal (same manifest and measurement matrix as `cocos-hal build`, from
# hal/cocos.toml). $1 is BINARIES_DIR. Uses $COCOS_HAL if set, else builds cocos-hal
# from this workspace with the host's cargo.
set -eu
BIN=$1
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
HAL=${COCOS_HAL:-}
if [ -z "$HAL" ]; then
    cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" -p cocos-hal
    HAL=$ROOT/target/release/cocos-hal
fi
"$HAL" release --spec "$ROOT/hal/cocos.toml" --kernel "$BIN/bzImage" \
    --initrd "$BIN/rootfs.cpio.gz" --out "$BIN/release.json" --built-by buildroot
