#!/usr/bin/env bash
# Vendors the workspace's crates (exactly Cargo.lock's versions and checksums) into
# target/buildroot-vendor for buildroot's offline cocos-agent build. Run once per
# Cargo.lock change, on a machine that can reach crates.io.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=target/buildroot-vendor
rm -rf "$out.tmp"
cargo vendor --locked --versioned-dirs "$out.tmp" >/dev/null
touch "$out.tmp/.cocos-vendored"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "vendored $(find "$out" -mindepth 1 -maxdepth 1 -type d | wc -l) crates into $out"
