#!/usr/bin/env bash
# Builds the seed corpus for a fuzz target (`firmware`, the default, `tdx` or
# `evidence`) and runs one libFuzzer job. firmware/tdx: the distribution's OVMF images
# (whole, and their last 64 KiB, which keeps the footer table; `tdx` also gets the head
# of Debian's kernel). evidence: the genuine reports, certificates, quotes and
# collateral under measure/tests/data/evidence.
# Usage: run.sh [firmware|tdx|evidence]. FUZZ_SECONDS (default 600) bounds the run.
set -euo pipefail

fuzz_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
target="${1:-firmware}"
case "${target}" in
firmware | tdx | evidence) ;;
*)
    echo "run.sh: unknown target ${target} (firmware, tdx or evidence)" >&2
    exit 2
    ;;
esac
corpus="${fuzz_dir}/corpus/${target}"
mkdir -p "${corpus}"

seeded=0
if [[ "${target}" == evidence ]]; then
    while IFS= read -r -d '' f; do
        cp -- "${f}" "${corpus}/$(basename -- "$(dirname -- "${f}")")_$(basename -- "${f}")"
        seeded=$((seeded + 1))
    done < <(find "${fuzz_dir}/../tests/data/evidence" -type f \( -name '*.bin' -o -name '*.der' -o -name '*.pem' -o -name 'collateral.json' \) -print0)
fi
for src in /usr/share/OVMF/OVMF_CODE.fd /usr/share/ovmf/OVMF.fd; do
    [[ "${target}" == evidence ]] && break
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
