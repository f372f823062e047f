#!/usr/bin/env bash
# Reproducibility check for HAL images: clones this repository twice into different
# directories, builds `cocos-hal build` in each with a different umask and at a
# different time, and compares every output file (vmlinuz, the initramfs, release.json, the CoRIMs and cocos policies) byte for byte.
# On a difference it prints `cocos-hal inspect A B` (the field-by-field diff) and
# exits 1. Usage: scripts/repro-hal.sh [SPEC] (default hal/cocos.toml).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPEC=${1:-hal/cocos.toml}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

build() { # dir umask
    git clone -q "$ROOT" "$WORK/$1"
    # Uncommitted work counts: copy the tracked files as they are now.
    (cd "$ROOT" && git ls-files -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$WORK/$1"
    (
        cd "$WORK/$1"
        umask "$2"
        cargo build --release --locked -q -p cocos-hal
        target/release/cocos-hal build --spec "$SPEC" --out "$WORK/$1/out" --locked
    )
}

echo "== build 1 ($WORK/a, umask 022)" >&2
build a 022
sleep 2
echo "== build 2 ($WORK/clone-two, umask 077)" >&2
build clone-two 077

status=0
for f in "$WORK"/a/out/*; do
    name=$(basename "$f")
    if cmp -s "$f" "$WORK/clone-two/out/$name"; then
        echo "identical: $name ($(sha256sum "$f" | cut -c1-16)…)"
    else
        echo "DIFFERENT: $name"
        status=1
        case "$name" in
        initramfs*) "$WORK/a/target/release/cocos-hal" inspect "$f" "$WORK/clone-two/out/$name" || true ;;
        *.json) diff "$f" "$WORK/clone-two/out/$name" || true ;;
        esac
    fi
done
exit "$status"
