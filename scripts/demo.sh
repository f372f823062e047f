#!/usr/bin/env bash
# The main job: build the default HAL image (hal/cocos.toml) with its release.json,
# start cocos-manager in embedded mode (no control plane; HTTP + gRPC on loopback),
# run one computation under QEMU/TCG, print the launch measurement its attestation
# must show (as TDX values for this exact firmware, kernel, initrd and command line),
# stream its events while it boots and heartbeats, stop it, and leave no process or
# file behind (also on Ctrl-C or failure).
# Environment: DEMO_SECONDS (how long to stream events, default 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build --release --locked -p cocos-measure -p cocos-hal -p cocos-manager
OVMF=/usr/share/ovmf/OVMF.fd
OUT=target/demo/hal
STATE=$(mktemp -d "${TMPDIR:-/tmp}/cocos-demo-XXXXXX")
MANAGER_PID=
HTTP=

cleanup() {
    set +e
    if [ -n "$HTTP" ]; then
        for id in $(curl -s "http://$HTTP/computations" | python3 -c 'import json,sys; print(" ".join(v["computation_id"] for v in json.load(sys.stdin)))' 2>/dev/null); do
            curl -s -X DELETE "http://$HTTP/computations/$id" >/dev/null
        done
    fi
    if [ -n "$MANAGER_PID" ]; then
        kill "$MANAGER_PID" 2>/dev/null
        wait "$MANAGER_PID" 2>/dev/null
    fi
    # Anything still running from this demo's state directory (there should be none).
    pkill -KILL -f -- "$STATE" 2>/dev/null
    rm -rf "$STATE"
}
trap cleanup EXIT INT TERM

echo "== what $OVMF supports"
target/release/cocos-measure inspect --ovmf "$OVMF"
echo
echo "== HAL image: cocos-hal build (hal/cocos.toml) -> $OUT"
target/release/cocos-hal build --spec hal/cocos.toml --out "$OUT"
echo
echo "== release.json"
cat "$OUT/release.json"
echo
# The VM below runs under TCG with Debian's OVMF.fd, which has no TdTcg2Dxe driver: a TD
# on it would report RTMR0-2 as zero, and the manager says so. A TDX measurement that
# covers the kernel, initrd and command line needs a firmware that extends RTMRs (the
# IntelTdx build) and a kernel whose EFI stub measures (Linux >= 6.9, as the HAL's).
TDX_FW=target/ovmf/out/OVMF.inteltdx.fd
INITRD=$(python3 -c 'import json,sys; print([a["path"] for a in json.load(sys.stdin)["artifacts"] if a.get("kind") == "initrd"][0])' <"$OUT/release.json")
CMDLINE=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["cmdline"])' <"$OUT/release.json")
if [ -s "$TDX_FW" ]; then
    echo "== the same image as a TD on the IntelTdx firmware ($TDX_FW), upstream QEMU 10.1:"
    target/release/cocos-measure tdx --firmware "$TDX_FW" --kernel "$OUT/vmlinuz" \
        --initrd "$OUT/$INITRD" --append="$CMDLINE" --memory 1G --qemu-version 10.1 --events
else
    echo "== no $TDX_FW: scripts/build-ovmf.sh builds the IntelTdx firmware whose RTMRs"
    echo "   measure the kernel, initrd and command line (the tests build it)"
fi
echo
echo "== cocos-manager (embedded: no control plane), state in $STATE"
target/release/cocos-manager --release "$OUT/release.json" --state-dir "$STATE" \
    --ovmf "$OVMF" --accel tcg --memory 1G --measure-as tdx --stop-timeout 3s \
    --http 127.0.0.1:0 --grpc-listen 127.0.0.1:0 >"$STATE/ready" 2>"$STATE/manager.log" &
MANAGER_PID=$!
for _ in $(seq 100); do
    [ -s "$STATE/ready" ] && break
    kill -0 "$MANAGER_PID" 2>/dev/null || { cat "$STATE/manager.log"; exit 1; }
    sleep 0.1
done
cat "$STATE/ready"
HTTP=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["http"])' <"$STATE/ready")

echo
echo "== POST /run: one computation under TCG; its expected launch measurement on $OVMF"
echo "   (rtmrs_extended false: this firmware measures nothing into RTMRs; see notes):"
curl -sf -X POST "http://$HTTP/run" -d '{"computation_id": "demo-1", "vcpus": 1}' | python3 -m json.tool
echo
echo "== events (GET /events?follow=true) for ${DEMO_SECONDS:-60} s"
timeout "${DEMO_SECONDS:-60}" curl -sN "http://$HTTP/events?from=0&follow=true" |
    python3 -u -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    what = e.get("event_type") or ("log " + e.get("level", ""))
    body = e.get("details", e.get("message", ""))
    text = json.dumps(body) if not isinstance(body, str) else body
    seq, cid, status = e["seq"], e["computation_id"], e.get("status", "")
    print(f"  #{seq:<4} {cid:<8} {what:<14} {status:<8} {text[:110]}")
' || true
echo
echo "== DELETE /computations/demo-1"
curl -sf -X DELETE "http://$HTTP/computations/demo-1"
echo
curl -s "http://$HTTP/events?from=0" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e.get("event_type") == "vm-exited":
        print("  vm-exited:", e["status"], json.dumps(e["details"])[:120])'
echo "== metrics"
curl -s "http://$HTTP/metrics" | grep -E "^cocos_manager_(launches_total|events_total|vms) " || true
