#!/usr/bin/env bash
# The main job, as far as it exists today: build cocos-measure, inspect Debian's OVMF,
# print the SEV-SNP launch measurements of Debian's firmware for a small matrix, and
# the TDX MRTD/RTMRs with its expected event log for Debian's kernel.
# (Image building and launching under the manager arrive with issues #4 and #5.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build --release --locked -p cocos-measure
M=target/release/cocos-measure
OVMF=/usr/share/ovmf/OVMF.fd

echo "== what $OVMF supports"
"$M" inspect --ovmf "$OVMF"
echo
echo "== SEV-SNP launch digests (QEMU, no direct kernel boot: Debian's OVMF cannot measure kernels)"
"$M" matrix --ovmf "$OVMF" --vcpus 1,2,4 --vcpu-types EPYC-Milan,EPYC-Genoa --guest-features 0x1
echo
KERNEL=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
INITRD=$(find /boot -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
echo "== TDX: MRTD and RTMR1/RTMR2 for $KERNEL (RTMR0 needs ACPI blobs dumped from a guest; see the note)"
"$M" tdx --firmware "$OVMF" --kernel "$KERNEL" ${INITRD:+--initrd "$INITRD"} \
    --append "console=ttyS0 quiet" --memory 2G --events
