#!/usr/bin/env python3
"""Cross-check `cocos-measure tdx` against tinfoilsh/tdx-measure on random launches.

tdx-measure is an independent calculator (a fork of dstack-mr). Build it yourself
from a snapshot you trust (it is not vendored here), then:

    TDX_MEASURE=/path/to/tdx-measure scripts/crosscheck-tdx-measure.py [--cases N]

Inputs: Debian's OVMF.fd and kernel, random initrds (sizes 1 B..60 MB), random
command lines (ASCII and non-ASCII), random memory sizes around the q35 2 GiB and
2.75 GiB boundaries, random BootOrder/Boot#### values and ACPI blobs.

Registers compared: MRTD, RTMR1 and RTMR2 directly. For RTMR0, tdx-measure uses a
fixed CFV digest (that of its own OVMF_VARS), so our RTMR0 is replayed with that
digest in place of ours, and must then be equal. tdx-measure always measures the
stub's RTMR2 events, so we run with --stub-measures yes, and it measures the ACPI
blobs as loader, rsdp, tables, so the generated loader allocates rsdp before tables.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target", "release", "cocos-measure")
TDXM_CFV = bytes.fromhex(
    "344BC51C980BA621AAA00DA3ED7436F7D6E549197DFE699515DFA2C6583D95E6"
    "412AF21C097D473155875FFD561D6790"
)
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def loader(files):
    out = b""
    for f in files:
        c = bytearray(128)
        c[0] = 1
        c[4 : 4 + len(f)] = f.encode()
        out += bytes(c)
    return out


def random_cmdline(rng):
    words = ["console=ttyS0", "quiet", "root=/dev/vda1", "cocos.events=serial:x", "ро", "λ=1", "panic=-1"]
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 32))
    ap.add_argument("--firmware", default="/usr/share/ovmf/OVMF.fd")
    ap.add_argument("--kernel", default=None)
    args = ap.parse_args()
    tdxm = os.environ.get("TDX_MEASURE")
    if not tdxm:
        sys.exit("set TDX_MEASURE to a tdx-measure binary built from a snapshot of tinfoilsh/tdx-measure")
    kernel = args.kernel
    if kernel is None:
        ks = sorted(f for f in os.listdir("/boot") if f.startswith("vmlinuz-"))
        if not ks:
            sys.exit("no /boot/vmlinuz-*: run scripts/setup.sh")
        kernel = os.path.join("/boot", ks[-1])
    rng = random.Random(args.seed)
    print(f"seed {args.seed}, kernel {kernel}, firmware {args.firmware}")
    agree = {"mrtd": 0, "rtmr0": 0, "rtmr1": 0, "rtmr2": 0}
    differ = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.cases):
            size = rng.choice([1, 4096, rng.randint(1, 1 << 20), rng.randint(1 << 20, 60 << 20)])
            initrd = os.path.join(d, "initrd")
            with open(initrd, "wb") as f:
                f.write(rng.randbytes(size))
            mem_mb = rng.choice([1024, 2048, 2560, 2815, 2816, 3072, 8192, rng.randint(512, 16384)])
            cmdline = random_cmdline(rng)
            for name, data in [("tables.bin", rng.randbytes(rng.randint(1, 9000))),
                               ("rsdp.bin", rng.randbytes(20)),
                               ("loader.bin", loader(["etc/acpi/rsdp", "etc/acpi/tables"]))]:
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)
            order = list(range(rng.randint(1, 4)))
            rng.shuffle(order)
            ev = os.path.join(d, "efivars")
            os.makedirs(ev, exist_ok=True)
            for fn in os.listdir(ev):
                os.unlink(os.path.join(ev, fn))
            bo = b"".join(n.to_bytes(2, "little") for n in order)
            with open(os.path.join(ev, f"BootOrder-{GLOBAL}"), "wb") as f:
                f.write(b"\x07\0\0\0" + bo)
            with open(os.path.join(d, "BootOrder.bin"), "wb") as f:
                f.write(bo)
            for n in order:
                val = rng.randbytes(rng.randint(20, 200))
                with open(os.path.join(ev, f"Boot{n:04X}-{GLOBAL}"), "wb") as f:
                    f.write(b"\x07\0\0\0" + val)
                with open(os.path.join(d, f"Boot{n:04}.bin"), "wb") as f:
                    f.write(val)
            meta = {
                "boot_config": {"cpus": 1, "memory": f"{mem_mb}M", "bios": os.path.abspath(args.firmware),
                                "acpi_tables": "tables.bin", "rsdp": "rsdp.bin", "table_loader": "loader.bin",
                                "boot_order": "BootOrder.bin", "path_boot_xxxx": d + "/"},
                "direct": {"kernel": os.path.abspath(kernel), "initrd": "initrd", "cmdline": cmdline},
            }
            with open(os.path.join(d, "meta.json"), "w") as f:
                json.dump(meta, f)
            theirs = subprocess.run([tdxm, "--json", os.path.join(d, "meta.json")], capture_output=True, text=True)
            ours = subprocess.run(
                [OURS, "tdx", "--firmware", args.firmware, "--kernel", kernel, "--initrd", initrd,
                 "--append", cmdline, "--memory", f"{mem_mb}M", "--acpi-tables", os.path.join(d, "tables.bin"),
                 "--acpi-rsdp", os.path.join(d, "rsdp.bin"), "--acpi-loader", os.path.join(d, "loader.bin"),
                 "--efivars", ev, "--stub-measures", "yes", "--json"],
                capture_output=True, text=True)
            case = f"case {i}: initrd {size} B, -m {mem_mb}M, cmdline {cmdline!r}"
            if theirs.returncode != 0 or ours.returncode != 0:
                both_refuse = theirs.returncode != 0 and ours.returncode != 0
                print(f"{case}: tdx-measure rc {theirs.returncode}, ours rc {ours.returncode}"
                      f"{' (both refuse)' if both_refuse else ''}: {ours.stderr.strip()[:200]} | {theirs.stderr.strip()[:200]}")
                if not both_refuse:
                    differ.append((case, "refusal"))
                continue
            t = json.loads(theirs.stdout)
            o = json.loads(ours.stdout)
            r0 = bytes(48)
            for e in o["events"]:
                if e["rtmr"] == 0:
                    dg = TDXM_CFV if e["what"].startswith("CFV") else bytes.fromhex(e["digest"])
                    r0 = hashlib.sha384(r0 + dg).digest()
            mine = {"mrtd": o["mrtd"], "rtmr0": r0.hex(), "rtmr1": o["rtmr1"], "rtmr2": o["rtmr2"]}
            for k in agree:
                if mine[k] == t[k].lower():
                    agree[k] += 1
                else:
                    differ.append((case, k))
                    print(f"{case}: {k} differs: ours {mine[k]} tdx-measure {t[k]}")
    print(f"agreement over {args.cases} cases: {agree}")
    if differ:
        sys.exit(f"{len(differ)} differences")


if __name__ == "__main__":
    main()
