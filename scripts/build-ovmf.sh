#!/usr/bin/env bash
# Build real edk2 OVMF firmware images used as test inputs for confidential-VM
# launch-measurement code, from Debian trixie's edk2 source package:
#   OVMF.amdsev.fd    OvmfPkg/AmdSev/AmdSevX64.dsc   (SEV/SNP, has SNP_KERNEL_HASHES)
#   OVMF.inteltdx.fd  OvmfPkg/IntelTdx/IntelTdxX64.dsc (TDX "config-B")
#   OVMF.x64.fd       OvmfPkg/OvmfPkgX64.dsc           (only with BUILD_X64=1)
# Needs root (apt) on Debian 12/13 amd64. Usage:
#   scripts/build-ovmf.sh            (outputs in target/ovmf/out; skips work already done)
# Output bytes depend on the build path, so it always builds in the same directory
# under the checkout (WORK defaults to target/ovmf); compare digests against the
# oracles on the same file rather than hard-coding them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-$ROOT/target/ovmf}
OUT=${OUT:-$WORK/out}
SUITE=${EDK2_SUITE:-trixie}
VER=${EDK2_VERSION:-2025.02-8+deb13u1}   # pinned Debian source version
JOBS=${JOBS:-$(nproc)}
BUILD_X64=${BUILD_X64:-0}
TARGET=${TARGET:-RELEASE}
export DEBIAN_FRONTEND=noninteractive

if [ "${FORCE:-0}" != 1 ] && [ -s "$OUT/OVMF.amdsev.fd" ] && [ -s "$OUT/OVMF.inteltdx.fd" ] \
   && { [ "$BUILD_X64" != 1 ] || [ -s "$OUT/OVMF.x64.fd" ]; }; then
  echo "build-ovmf: already built in $OUT (FORCE=1 rebuilds)" >&2
  exit 0
fi

T0=$(date +%s)
step() { echo "[$(( $(date +%s) - T0 ))s] $*" >&2; }

mkdir -p "$WORK/src" "$OUT" "$WORK/logs"

# 1. deb-src entry for the suite that carries the pinned version
if ! apt-cache showsrc edk2 2>/dev/null | grep -qx "Version: $VER"; then
  step "adding deb-src for $SUITE"
  cat > "/etc/apt/sources.list.d/edk2-src-$SUITE.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq
fi

# 2. build dependencies (subset of edk2's Build-Depends needed for X64 OVMF)
step "installing build deps"
apt-get install -y -qq --no-install-recommends \
  build-essential nasm acpica-tools uuid-dev python3 dpkg-dev xz-utils patch >/dev/null

# 3. source
UPV=${VER%%-*}
SRC="$WORK/src/edk2-$UPV"
if [ ! -d "$SRC" ]; then
  step "fetching edk2 $VER source"
  cd "$WORK/src"
  if ! apt-get source -qq "edk2=$VER" >"$WORK/logs/apt-source.log" 2>&1 || [ ! -d "$SRC" ]; then
    # Some mirrors/proxies serve the tarballs but not the .dsc: apt has already
    # hash-checked what it downloaded; re-check against the Sources index and
    # unpack + apply the Debian quilt series by hand.
    step "apt-get source failed (see logs/apt-source.log); manual unpack"
    apt-cache showsrc edk2 | awk -v v="$VER" '
      /^Package:/ {inblk=0} $0=="Version: " v {inblk=1}
      inblk && /^Checksums-Sha256:/ {cs=1; next} cs && /^ / {if (inblk) print $1"  "$3; next} {cs=0}' \
      | grep -v '\.dsc$' > sums.txt
    sha256sum -c sums.txt
    rm -rf "$SRC"
    tar xf "edk2_$UPV.orig.tar.xz"
    tar xf "edk2_$VER.debian.tar.xz" -C "$SRC"
    (cd "$SRC" && grep -v -e '^#' -e '^$' debian/patches/series | while read -r p _; do
       patch -p1 -s --no-backup-if-mismatch < "debian/patches/$p"; done)
  fi
fi
cd "$SRC"

# 4. BaseTools + environment
unset WORKSPACE EDK_TOOLS_PATH CONF_PATH PACKAGES_PATH
export PYTHON3_ENABLE=TRUE PYTHON_COMMAND=/usr/bin/python3
step "building BaseTools"
make -C BaseTools -j"$JOBS" >"$WORK/logs/basetools.log" 2>&1 || { tail -40 "$WORK/logs/basetools.log"; exit 1; }
set +u
# shellcheck source=/dev/null
. ./edksetup.sh >/dev/null
set -u

edk2_build() {  # $1=dsc $2=log name, rest=extra flags
  local dsc=$1 name=$2; shift 2
  step "building $dsc"
  # The version string Debian's packaging sets (debian/rules PCD_FLAGS): firmware that
  # carries it tells `cocos-measure inspect` its edk2 release.
  build -a X64 -t GCC5 -b "$TARGET" -n "$JOBS" -p "$dsc" \
    --pcd "PcdFirmwareVersionString=L$VER\\0" "$@" >"$WORK/logs/$name.log" 2>&1 \
    || { tail -40 "$WORK/logs/$name.log"; exit 1; }
}

# 5. AmdSev: its PREBUILD (grub.sh) wants grub-mkimage + a "sevsecret" module;
#    like Ubuntu, embed an empty grub.efi (grub.sh keeps a grub.efi that is
#    newer than grub.cfg/grub.sh). Direct kernel boot does not need grub.
touch OvmfPkg/AmdSev/Grub/grub.efi
edk2_build OvmfPkg/AmdSev/AmdSevX64.dsc amdsev
cp "Build/AmdSev/${TARGET}_GCC5/FV/OVMF.fd" "$OUT/OVMF.amdsev.fd"

# 6. IntelTdx
edk2_build OvmfPkg/IntelTdx/IntelTdxX64.dsc inteltdx
cp "Build/IntelTdx/${TARGET}_GCC5/FV/OVMF.fd" "$OUT/OVMF.inteltdx.fd"

# 7. optional plain OvmfPkgX64 (2 MiB, like Debian's OVMF.fd)
if [ "$BUILD_X64" = 1 ]; then
  edk2_build OvmfPkg/OvmfPkgX64.dsc x64 -DFD_SIZE_2MB
  cp "Build/OvmfX64/${TARGET}_GCC5/FV/OVMF.fd" "$OUT/OVMF.x64.fd"
fi

cd "$OUT"
{ echo "# edk2 $VER (Debian $SUITE), $TARGET GCC5, $(gcc --version | head -1)"; sha256sum OVMF.*.fd; } > SHA256SUMS
cat SHA256SUMS
step "done"
