#!/usr/bin/env bash
# Benchmarks cocos-measure against the Python oracle sev-snp-measure (0.0.13):
#   1. snp on /usr/share/OVMF/OVMF_CODE.fd, 4 vCPUs EPYC-Milan
#      (target: cocos-measure >= 10x faster than sev-snp-measure);
#   2. snp with a 4 MiB kernel-hashes firmware (the real AmdSevX64 build from
#      scripts/build-ovmf.sh when present, else a synthetic one), an 8 MB kernel, a 50 MB
#      initrd and a cmdline, with `openssl dgst -sha256 FW KERNEL INITRD` as the
#      hashing baseline (targets: >= 4x faster than sev-snp-measure, <= 1.3x openssl).
# Both tools must print identical digests before anything is timed; the script
# exits non-zero only on a digest mismatch (or a setup failure), never on a
# missed target. Inputs and hyperfine JSON go to target/bench/.
# Environment: RUNS (default 20), WARMUP (default 3), OVMF_CODE (scenario 1 firmware).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}
BENCH=target/bench
OURS=target/release/cocos-measure
ORACLE=target/oracle-venv/bin/sev-snp-measure
KERNEL=$BENCH/kernel-8M.bin
INITRD=$BENCH/initrd-50M.bin
SYNTH_FW=$BENCH/synth-ovmf-4M.fd
CMDLINE="console=ttyS0 root=/dev/vda1 ro quiet"
COMMON=(--mode snp --vcpus 4 --vcpu-type EPYC-Milan)

for tool in hyperfine python3 openssl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
if [ ! -x "$ORACLE" ]; then
    scripts/setup.sh
fi
[ -r "$OVMF_CODE" ] || { echo "bench: $OVMF_CODE not found (apt-get install ovmf)" >&2; exit 1; }

echo "== building cocos-measure" >&2
cargo build --release --locked -p cocos-measure

echo "== preparing inputs in $BENCH" >&2
mkdir -p "$BENCH"
if [ ! -s "$KERNEL" ]; then head -c 8000000 /dev/urandom >"$KERNEL"; fi
if [ ! -s "$INITRD" ]; then head -c 50000000 /dev/urandom >"$INITRD"; fi
if [ -s target/ovmf/out/OVMF.amdsev.fd ]; then
    SYNTH_FW=target/ovmf/out/OVMF.amdsev.fd
    echo "bench: scenario 2 on the real AmdSevX64 build $SYNTH_FW" >&2
elif [ ! -s "$SYNTH_FW" ]; then
    python3 scripts/synth-ovmf.py --size $((4 << 20)) --seed 1 "$SYNTH_FW"
fi
if ! "$OURS" inspect --ovmf "$SYNTH_FW" | grep -Eq '^ *yes +snp-kernel-hashes'; then
    echo "bench: $SYNTH_FW does not support snp-kernel-hashes" >&2
    exit 1
fi

# check_same NAME ARGS...: both tools must print the same digest for ARGS.
check_same() {
    local name=$1 ours oracle
    shift
    ours=$("$OURS" "$@")
    oracle=$("$ORACLE" "$@")
    if [ "$ours" != "$oracle" ]; then
        echo "bench: DIGEST MISMATCH in $name" >&2
        echo "  cocos-measure:   $ours" >&2
        echo "  sev-snp-measure: $oracle" >&2
        exit 1
    fi
    echo "digest ok ($name): $ours" >&2
}

S1_ARGS=("${COMMON[@]}" --ovmf "$OVMF_CODE")
S2_ARGS=("${COMMON[@]}" --ovmf "$SYNTH_FW" --kernel "$KERNEL" --initrd "$INITRD"
         --append "$CMDLINE")
check_same "snp-ovmf-code" "${S1_ARGS[@]}"
check_same "snp-kernel-hashes" "${S2_ARGS[@]}"

# cmd PROGRAM ARGS...: one hyperfine command line (run without a shell, -N).
cmd() {
    local out="" a
    for a in "$@"; do out+="${out:+ }$(printf '%q' "$a")"; done
    printf '%s' "$out"
}

echo "== load before timing: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)" >&2

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    --export-json "$BENCH/snp-ovmf-code.json" \
    -n cocos-measure "$(cmd "$OURS" "${S1_ARGS[@]}")" \
    -n sev-snp-measure "$(cmd "$ORACLE" "${S1_ARGS[@]}")"

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    --export-json "$BENCH/snp-kernel-hashes.json" \
    -n cocos-measure "$(cmd "$OURS" "${S2_ARGS[@]}")" \
    -n sev-snp-measure "$(cmd "$ORACLE" "${S2_ARGS[@]}")" \
    -n openssl "$(cmd openssl dgst -sha256 "$SYNTH_FW" "$KERNEL" "$INITRD")"

echo "== load after timing: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$BENCH/snp-ovmf-code.json" "$BENCH/snp-kernel-hashes.json" <<'PY'
import json, sys

def load(path):
    with open(path) as f:
        return {r["command"]: r for r in json.load(f)["results"]}

s1, s2 = load(sys.argv[1]), load(sys.argv[2])
print()
print(f"{'scenario':<20} {'command':<16} {'mean':>10} {'stddev':>10}")
for name, res in (("snp-ovmf-code", s1), ("snp-kernel-hashes", s2)):
    for cmd, r in res.items():
        print(f"{name:<20} {cmd:<16} {r['mean']*1e3:>8.2f}ms {r['stddev']*1e3:>8.2f}ms")

def mean(res, cmd):
    return res[cmd]["mean"]

checks = [
    ("snp-ovmf-code: sev-snp-measure / cocos-measure",
     mean(s1, "sev-snp-measure") / mean(s1, "cocos-measure"), ">=", 10.0),
    ("snp-kernel-hashes: sev-snp-measure / cocos-measure",
     mean(s2, "sev-snp-measure") / mean(s2, "cocos-measure"), ">=", 4.0),
    ("snp-kernel-hashes: cocos-measure / openssl",
     mean(s2, "cocos-measure") / mean(s2, "openssl"), "<=", 1.3),
]
print()
for label, ratio, op, target in checks:
    ok = ratio >= target if op == ">=" else ratio <= target
    print(f"{label:<52} {ratio:6.2f}x  (target {op} {target}x) {'ok' if ok else 'target missed'}")
PY
