#!/usr/bin/env bash
# Benchmarks `cocos-measure tdx` (MRTD + RTMR1 + RTMR2 of a QEMU direct boot with a
# 50 MB initrd) side by side, whole processes, in one hyperfine run:
#   - cocos-measure with the behaviours stated (`--kernel-setup patched --initrd-option
#     append --firmware-measures yes`: tdx-measure's assumptions, no firmware reading);
#   - cocos-measure with the derived defaults (the firmware's drivers are read: one LZMA
#     decode of its DXE volume);
#   - tinfoilsh/tdx-measure, an independent calculator you build yourself from a
#     snapshot (TDX_MEASURE=/path/to/tdx-measure; left out if unset). It also computes
#     RTMR0 from tiny ACPI/BootOrder files, which costs it nothing measurable;
#   - `openssl dgst -sha384` over the same firmware + kernel + initrd bytes.
# Firmware: the IntelTdx build from scripts/build-ovmf.sh when present, else Debian's
# OVMF.fd (FW= overrides); kernel: the HAL's pinned Debian kernel in target/hal-cache,
# else the newest /boot/vmlinuz-* (KERNEL= overrides).
# Target (issue #12): cocos-measure <= 1.0x the openssl time.
# Registers are compared first (MRTD, RTMR1, RTMR2 of the stated run against
# tdx-measure); a mismatch aborts. The script never fails on a missed target.
# Environment: RUNS (default 20), WARMUP (default 3), TDX_MEASURE, FW, KERNEL.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
BENCH=target/bench/tdx
OURS=target/release/cocos-measure
if [ -z "${FW:-}" ]; then
    FW=/usr/share/ovmf/OVMF.fd
    if [ -s target/ovmf/out/OVMF.inteltdx.fd ]; then FW=target/ovmf/out/OVMF.inteltdx.fd; fi
fi
if [ -z "${KERNEL:-}" ]; then
    KERNEL=$(find target/hal-cache -path '*/boot/vmlinuz-*' 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$KERNEL" ]; then KERNEL=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1); fi
fi
INITRD=$BENCH/initrd-50M.bin
CMDLINE="console=ttyS0 root=/dev/vda1 ro quiet"

for tool in hyperfine openssl python3; do
    command -v "$tool" >/dev/null || { echo "bench-tdx: $tool not found (scripts/setup.sh)" >&2; exit 1; }
done
[ -r "$FW" ] || { echo "bench-tdx: $FW not found (scripts/build-ovmf.sh, or apt-get install ovmf)" >&2; exit 1; }
[ -n "$KERNEL" ] || { echo "bench-tdx: no kernel (scripts/test.sh fetches one into target/hal-cache)" >&2; exit 1; }
FW=$(realpath "$FW")  # tdx-measure reads paths relative to its meta.json
KERNEL=$(realpath "$KERNEL")
echo "bench-tdx: firmware $FW, kernel $KERNEL" >&2

echo "== building cocos-measure" >&2
cargo build --release --locked -p cocos-measure

mkdir -p "$BENCH"
if [ ! -s "$INITRD" ]; then head -c 50000000 /dev/urandom >"$INITRD"; fi
BASE=(tdx --firmware "$FW" --kernel "$KERNEL" --initrd "$INITRD" --append "$CMDLINE" --memory 2G --stub-measures yes)
STATED=("${BASE[@]}" --kernel-setup patched --initrd-option append --firmware-measures yes)
"$OURS" "${STATED[@]}" >"$BENCH/ours.txt"
"$OURS" "${BASE[@]}" >"$BENCH/ours-derived.txt" 2>"$BENCH/ours-derived.err"
echo "stated:" >&2; cat "$BENCH/ours.txt" >&2
echo "derived:" >&2; cat "$BENCH/ours-derived.txt" "$BENCH/ours-derived.err" >&2

printf -v STATED_CMD '%q ' "$OURS" "${STATED[@]}"
printf -v DERIVED_CMD '%q ' "$OURS" "${BASE[@]}"
CMDS=(-n "cocos-measure (stated)" "$STATED_CMD" -n "cocos-measure (derived)" "$DERIVED_CMD")
if [ -n "${TDX_MEASURE:-}" ]; then
    printf 'X' >"$BENCH/tables.bin"
    printf 'R' >"$BENCH/rsdp.bin"
    python3 -c 'import sys; c=bytearray(128); c[0]=1; c[4:17]=b"etc/acpi/rsdp"; d=bytearray(128); d[0]=1; d[4:19]=b"etc/acpi/tables"; sys.stdout.buffer.write(bytes(c+d))' >"$BENCH/loader.bin"
    printf '\0\0' >"$BENCH/BootOrder.bin"
    cat >"$BENCH/meta.json" <<EOF
{"boot_config": {"cpus": 1, "memory": "2G", "bios": "$FW", "acpi_tables": "tables.bin", "rsdp": "rsdp.bin",
  "table_loader": "loader.bin", "boot_order": "BootOrder.bin", "path_boot_xxxx": "./"},
 "direct": {"kernel": "$KERNEL", "initrd": "initrd-50M.bin", "cmdline": "$CMDLINE"}}
EOF
    "$TDX_MEASURE" "$BENCH/meta.json" | tee "$BENCH/theirs.txt"
    regs=(MRTD RTMR1 RTMR2)
    for reg in "${regs[@]}"; do
        a=$(grep "^$reg:" "$BENCH/ours.txt" | awk '{print $2}')
        b=$(grep "^$reg:" "$BENCH/theirs.txt" | awk '{print $2}')
        if [ "$a" != "$b" ]; then
            echo "bench-tdx: $reg differs: ours $a, tdx-measure $b" >&2
            exit 1
        fi
    done
    CMDS+=(-n tdx-measure "$TDX_MEASURE $BENCH/meta.json")
else
    echo "bench-tdx: TDX_MEASURE unset: timing against openssl only" >&2
fi
CMDS+=(-n "openssl dgst -sha384" "openssl dgst -sha384 $FW $KERNEL $INITRD")

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$BENCH/hyperfine.json" "${CMDS[@]}"
echo "== load after timing: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)" >&2
python3 - "$BENCH/hyperfine.json" <<'PY'
import json, sys
r = {x["command"]: (x["mean"] * 1000, x["stddev"] * 1000) for x in json.load(open(sys.argv[1]))["results"]}
base = r["openssl dgst -sha384"][0]
print()
for name, (t, sd) in r.items():
    print(f"{name:<26} {t:7.1f} ms ± {sd:4.1f}   {t / base:4.2f}x openssl")
for name in ("cocos-measure (stated)", "cocos-measure (derived)"):
    ratio = r[name][0] / base
    print(f"{name}: {ratio:.2f}x openssl (target <= 1.0x) {'ok' if ratio <= 1.0 else 'target missed'}")
if "tdx-measure" in r:
    print(f"tdx-measure / cocos-measure (stated): {r['tdx-measure'][0] / r['cocos-measure (stated)'][0]:.2f}x")
PY
