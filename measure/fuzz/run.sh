#!/usr/bin/env bash
# Builds the seed corpus for a fuzz target (`firmware`, the default, `tdx`, or an
# evidence parser: `snp_report`, `cert_table`, `tdx_quote`, `ccel`) and runs one
# libFuzzer job. firmware/tdx: the distribution's OVMF images
# (whole, and their last 64 KiB, which keeps the footer table; `tdx` also gets the head
# of Debian's kernel). Evidence parsers: the genuine reports, certificates, quotes and
# collateral under measure/tests/data/evidence.
# Usage: run.sh [firmware|tdx|snp_report|cert_table|tdx_quote|ccel]. FUZZ_SECONDS (default 600) bounds the run.
set -euo pipefail

fuzz_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
target="${1:-firmware}"
case "${target}" in
firmware | tdx) evidence=0 ;;
snp_report | cert_table | tdx_quote | ccel) evidence=1 ;;
*)
    echo "run.sh: unknown target ${target} (firmware, tdx, snp_report, cert_table, tdx_quote or ccel)" >&2
    exit 2
    ;;
esac
corpus="${fuzz_dir}/corpus/${target}"
mkdir -p "${corpus}"

seeded=0
if [[ "${evidence}" == 1 ]]; then
    while IFS= read -r -d '' f; do
        cp -- "${f}" "${corpus}/$(basename -- "$(dirname -- "${f}")")_$(basename -- "${f}")"
        seeded=$((seeded + 1))
    done < <(find "${fuzz_dir}/../tests/data/evidence" -type f \( -name '*.bin' -o -name '*.der' -o -name '*.pem' -o -name 'collateral.json' \) -print0)
fi
if [[ "${target}" == ccel ]]; then
    # A minimal TCG crypto-agile log: the Spec ID event (SHA-384) and one RTMR1 event.
    python3 - "${corpus}/seed.ccel" <<'PY'
import struct, sys
spec = b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1) + struct.pack("<HH", 0xC, 48) + b"\0"
log = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(spec)) + spec
log += struct.pack("<IIIH", 2, 0x80000003, 1, 0xC) + bytes(range(48)) + struct.pack("<I", 4) + b"data"
open(sys.argv[1], "wb").write(log + b"\xff" * 16)
PY
    seeded=$((seeded + 1))
fi
for src in /usr/share/OVMF/OVMF_CODE.fd /usr/share/ovmf/OVMF.fd; do
    [[ "${evidence}" == 1 ]] && break
    if [[ ! -r "${src}" ]]; then
        echo "run.sh: ${src} not found, skipping" >&2
        continue
    fi
    name="$(basename -- "$(dirname -- "${src}")")_$(basename -- "${src}" .fd)"
    cp -- "${src}" "${corpus}/${name}.fd"
    tail -c 65536 -- "${src}" >"${corpus}/${name}_tail64k.fd"
    seeded=$((seeded + 1))
done
if [[ "${target}" == tdx ]]; then
    for k in /boot/vmlinuz-*; do
        [[ -r "${k}" ]] || continue
        head -c 65536 -- "${k}" >"${corpus}/kernel_head64k"
        seeded=$((seeded + 1))
        break
    done
fi
if [[ "${seeded}" -eq 0 ]]; then
    echo "run.sh: no OVMF image found; fuzzing from an empty corpus" >&2
fi

cd -- "${fuzz_dir}"
exec cargo +nightly fuzz run "${target}" -- \
    -max_total_time="${FUZZ_SECONDS:-600}" -max_len=2200000
