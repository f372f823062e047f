#!/usr/bin/env bash
# The main job, as far as it exists today: build cocos-measure, inspect Debian's OVMF,
# print the SEV-SNP launch measurements of Debian's firmware for a small matrix, the
# TDX MRTD/RTMRs with the expected event log for Debian's kernel, then build the HAL
# image (hal/cocos.toml), show its release.json, and boot it under QEMU to see the
# agent start. (Launching under the manager arrives with issue #5.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build --release --locked -p cocos-measure -p cocos-hal
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
echo
echo "== HAL image: cocos-hal build (hal/cocos.toml)"
OUT=target/demo/hal
target/release/cocos-hal build --spec hal/cocos.toml --out "$OUT"
echo
echo "== release.json"
cat "$OUT/release.json"
echo
echo "== booting it under QEMU (TCG, Debian OVMF, direct kernel boot) for 40 s"
SOCK=$(mktemp -u /tmp/cocos-demo-XXXXXX.sock)
timeout 40 qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -nographic -no-reboot \
    -bios /usr/share/ovmf/OVMF.fd -kernel "$OUT/vmlinuz" -initrd "$OUT/initramfs.cpio.gz" \
    -append "console=ttyS0 cocos.id=demo cocos.events=serial:cocos.events" \
    -device virtio-serial-pci -chardev "socket,id=ev,path=$SOCK,server=on,wait=off" \
    -device virtserialport,chardev=ev,name=cocos.events </dev/null 2>&1 |
    grep -a -E 'cocos-(init|agent)' || true
rm -f "$SOCK"
