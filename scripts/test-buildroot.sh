#!/usr/bin/env bash
# Runs the buildroot tree test that needs a buildroot checkout (`defconfig_with_buildroot`
# in tests/tests/buildroot_tree.rs, #[ignore]d in the main suite): `make BR2_EXTERNAL=…
# cocos_defconfig` and printvars against the pinned buildroot release.
# Uses BUILDROOT_DIR if set; otherwise clones the release tag into target/buildroot-src
# (needs network access to gitlab.com, which the CI machine does not have).
# Usage: scripts/test-buildroot.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RELEASE=2025.02.9   # as pinned in buildroot/ and tests/tests/buildroot_tree.rs
if [ -z "${BUILDROOT_DIR:-}" ]; then
    BUILDROOT_DIR=$PWD/target/buildroot-src
    if [ ! -f "$BUILDROOT_DIR/Makefile" ]; then
        echo "test-buildroot: cloning buildroot $RELEASE into $BUILDROOT_DIR" >&2
        rm -rf "$BUILDROOT_DIR"
        if ! git clone -q --depth 1 --branch "$RELEASE" \
            https://gitlab.com/buildroot.org/buildroot.git "$BUILDROOT_DIR"; then
            echo "test-buildroot: cannot fetch buildroot $RELEASE; set BUILDROOT_DIR to a checkout" >&2
            exit 2
        fi
    fi
fi
export BUILDROOT_DIR
cargo test -p cocos-tests --locked --test buildroot_tree -- --ignored defconfig_with_buildroot
