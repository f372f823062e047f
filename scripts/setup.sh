#!/usr/bin/env bash
# Installs everything cocos-rs needs on Debian 12, idempotently:
#   - Debian packages: OVMF, QEMU, busybox-static, a Debian kernel, hyperfine, shellcheck,
#     libssl-dev + pkg-config (cocos-measure hashes SHA-384 with the system OpenSSL),
#     kmod (depmod for HAL images), debian-archive-keyring (verifies Debian 13's
#     Release file: cocos-hal fetches the HAL kernel from trixie), git;
#   - a Python venv under target/oracle-venv with sev-snp-measure==0.0.13 (test oracle).
# Safe to run repeatedly; it only installs what is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

PKGS=(ovmf qemu-system-x86 busybox-static linux-image-amd64 python3 python3-venv
      hyperfine shellcheck openssl cpio libssl-dev pkg-config kmod git curl
      make gcc flex bison xz-utils debian-archive-keyring)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

VENV="$ROOT/target/oracle-venv"
if ! "$VENV/bin/sev-snp-measure" --version 2>/dev/null | grep -q '0\.0\.13'; then
    echo "setup: creating $VENV with sev-snp-measure==0.0.13" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check sev-snp-measure==0.0.13
fi
echo "setup: ok" >&2
