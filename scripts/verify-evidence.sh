#!/usr/bin/env bash
# Runs `cocos-measure verify` over every fixture of a genuine-evidence directory laid
# out as ../shared/evidence is (snp/<name>/{report.bin, vcek.der|vlek.der(+cert_chain.pem),
# expected.json}; tdx/<name>/{quote.bin, collateral.json, expected.json}), four times each:
#   genuine                                  -> must exit 0
#   wrong expected measurement               -> must exit 1
#   one byte flipped in the signed body      -> must exit 1 (expected.json mutations)
#   one byte flipped in the signature        -> must exit 1
#   truncated                                -> must exit 2
# Prints one row per fixture and case; exits 0 only if every row is as required.
# Usage: scripts/verify-evidence.sh [DIR]   (default ../shared/evidence)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$ROOT/../shared/evidence}
[ -d "$DIR" ] || { echo "verify-evidence: $DIR not found" >&2; exit 2; }
cd "$ROOT"
cargo build -q --release --locked -p cocos-measure
BIN=$ROOT/target/release/cocos-measure
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

bad=0
row() { # fixture case want got first-line
    local ok=ok
    [ "$3" = "$4" ] || { ok=WRONG; bad=$((bad + 1)); }
    printf '%-24s %-22s want %s got %s %-5s %s\n' "$1" "$2" "$3" "$4" "$ok" "$5"
}
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(eval('v'+sys.argv[2]))" "$@"; }
# mutants EVIDENCE META: $WORK/{body,sig,trunc}.bin, one byte flipped in the signed body
# or the signature, or truncated, at the offsets META's "mutations" give.
mutants() {
    python3 - "$1" "$2" "$WORK" <<'PY'
import json, sys
r = bytearray(open(sys.argv[1], 'rb').read()); m = json.load(open(sys.argv[2]))["mutations"]; w = sys.argv[3]
for name, at in (("body", m["signed_body_byte"]), ("sig", m["signature_byte"])):
    b = bytearray(r); b[at] ^= 1; open(f"{w}/{name}.bin", "wb").write(b)
open(f"{w}/trunc.bin", "wb").write(r[:m["truncate_to"]])
PY
}
# other_value HEX: the same hex with its last digit changed.
other_value() { python3 -c "import sys; m=sys.argv[1]; print(m[:-1] + ('0' if m[-1] != '0' else '1'))" "$1"; }

for fx in "$DIR"/snp/*/; do
    name=snp/$(basename "$fx")
    meta=$fx/expected.json
    now=$(field "$meta" "['now']")
    m=$(field "$meta" "['measurement']")
    rd=$(field "$meta" "['report_data']")
    vmpl=$(field "$meta" "['vmpl']")
    keyargs=(--vcek "$fx/vcek.der")
    if [ "$(field "$meta" "['signing_key']")" = vlek ]; then keyargs=(--vlek "$fx/vlek.der" --chain "$fx/cert_chain.pem"); fi
    mutants "$fx/report.bin" "$meta"
    wrong=$(other_value "$m")
    for case in genuine wrong-measurement flipped-body flipped-signature truncated; do
        report=$fx/report.bin exp=$m want=1
        case $case in
            genuine) want=0 ;;
            wrong-measurement) exp=$wrong ;;
            flipped-body) report=$WORK/body.bin ;;
            flipped-signature) report=$WORK/sig.bin ;;
            truncated) report=$WORK/trunc.bin want=2 ;;
        esac
        set +e
        out=$("$BIN" verify snp --report "$report" "${keyargs[@]}" --expected "$exp" \
            --report-data "$rd" --vmpl "$vmpl" --now "$now" 2>&1)
        got=$?
        set -e
        row "$name" "$case" "$want" "$got" "${out%%$'\n'*}"
    done
done

for fx in "$DIR"/tdx/*/; do
    [ -d "$fx" ] || continue
    name=tdx/$(basename "$fx")
    meta=$fx/expected.json
    now=$(field "$meta" "['now']")
    m=$(field "$meta" "['mrtd']")
    rd=$(field "$meta" "['report_data']")
    mutants "$fx/quote.bin" "$meta"
    wrong=$(other_value "$m")
    regs=()
    for r in rtmr0 rtmr1 rtmr2 rtmr3; do regs+=(--"$r" "$(field "$meta" "['$r']")"); done
    for case in genuine wrong-mrtd flipped-body flipped-signature truncated; do
        quote=$fx/quote.bin exp=$m want=1
        case $case in
            genuine) want=0 ;;
            wrong-mrtd) exp=$wrong ;;
            flipped-body) quote=$WORK/body.bin ;;
            flipped-signature) quote=$WORK/sig.bin ;;
            truncated) quote=$WORK/trunc.bin want=2 ;;
        esac
        set +e
        out=$("$BIN" verify tdx --quote "$quote" --collateral "$fx/collateral.json" --mrtd "$exp" \
            "${regs[@]}" --report-data "$rd" --now "$now" 2>&1)
        got=$?
        set -e
        row "$name" "$case" "$want" "$got" "${out%%$'\n'*}"
    done
done

echo
if [ "$bad" -eq 0 ]; then echo "verify-evidence: every row as required"; else echo "verify-evidence: $bad rows NOT as required"; exit 1; fi
