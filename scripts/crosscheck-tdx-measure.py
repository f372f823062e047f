#!/usr/bin/env python3
"""Cross-check `cocos-measure tdx` against independent TDX calculators on random launches.

Peers (each optional, at least one needed):

  tdx-measure  tinfoilsh/tdx-measure, a Rust fork of dstack-mr. Not vendored: build
               it yourself from a snapshot you trust and set TDX_MEASURE=/path/to/it.
  dstack-mr    Dstack's dstack-mr through scripts/crosscheck-dstack-mr (see its
               README.md). Taken from DSTACK_MR, else from
               target/crosscheck-dstack-mr/release/crosscheck-dstack-mr if built.
               DSTACK_MR= (empty) or TDX_MEASURE= (empty) switches a peer off.

Usage:

    cargo build --release -p cocos-measure --locked
    TDX_MEASURE=/tmp/tdx-measure/cli/target/release/tdx-measure \\
        scripts/crosscheck-tdx-measure.py [--cases N] [--seed S] \\
        [--firmware FD]... [--kernel VMLINUZ]... [--qemu-version X.Y] [-v]

Without --firmware/--kernel it runs every combination of Debian's
/usr/share/ovmf/OVMF.fd and target/ovmf/out/OVMF.inteltdx.fd with the newest
/boot/vmlinuz-* and the kernels under target/hal-cache/linux-image-*/boot/ (those
that exist). Combination i uses seed S+i; pass that seed with the single firmware and
kernel to replay it. COCOS_MEASURE overrides target/release/cocos-measure.

Each random case has: an initrd of 0 B (rarely), 1 B, up to 4 KiB, up to 1 MiB or
1-60 MiB; a command line of ASCII words, sometimes non-ASCII words (incl. outside
the BMP) and sometimes a vga= option; guest memory around the q35 2 GiB and 2.75 GiB
boundaries (512 MiB-16 GiB), rarely an initrd too large for the memory; sometimes two-pass MRTD; random ACPI blobs whose
table-loader allocates etc/acpi/rsdp and etc/acpi/tables in a random order; a random
BootOrder with random Boot#### variables. Every tool runs on the same files.

Two comparisons per case and peer:

(a) cocos-measure with the peers' assumptions made explicit: --kernel-setup patched
    (QEMU <= 10.1 patching the setup header), --initrd-option append,
    --stub-measures yes (a Linux >= 6.9 stub), --firmware-measures yes. RTMR0 is
    replayed from cocos-measure's event log with the peer's fixed digests: the CFV
    digest 344bc51c... (their OVMF_VARS) and, for dstack-mr, BootOrder=0000 plus a
    fixed Boot0000 (UiApp) digest 23ada07f... (tdx-measure reads the given
    BootOrder/Boot#### files). The registers must then be equal, except for these
    known differences, each checked by undoing exactly that difference on our side
    (the register then has to equal the peer's, or the difference is UNEXPLAINED):
      non-ascii-cmdline  RTMR2: the peers transcode the UTF-8 command line to UTF-16
                         (str::encode_utf16); edk2 builds LoadOptions with
                         UnicodeSPrintAsciiFormat ("%a..."), which widens each byte to
                         one CHAR16 (OvmfPkg/Library/X86QemuLoadImageLib/
                         X86QemuLoadImageLib.c QemuLoadKernelImage; MdePkg/Library/
                         BasePrintLib/PrintLibInternal.c BasePrintLibSPrintMarker).
      empty-initrd       RTMR1/RTMR2: for a 0-byte initrd QEMU still writes
                         ramdisk_image/ramdisk_size into the header (hw/i386/
                         x86-common.c x86_load_linux), edk2 adds " initrd=initrd"
                         only if InitrdSize > 0 and the stub measures no initrd; the
                         peers skip the header fields but append the suffix and
                         measure an empty initrd.
      vga-option         RTMR1: QEMU stores a vga= mode in the header's vid_mode
                         (0x1fa, x86_load_linux); the peers do not.
      acpi-order         RTMR0: edk2 measures each ACPI blob at its ALLOCATE command
                         (OvmfPkg/Library/AcpiPlatformLib/QemuFwCfgAcpi.c
                         ProcessCmdAllocate), in the loader's order; the peers
                         always measure loader, rsdp, tables.
(b) cocos-measure with its own defaults (rules derived from the firmware and kernel,
    --qemu-version stated, 10.1 by default): what a real TD shows. Where it differs
    from the peer, the reason is taken from cocos-measure's `rules`, `notes`,
    `rtmrs_extended` and event log and checked the same way (replacing our events for
    that register by those of run (a), or our CFV/Boot digests by the peer's fixed
    ones, must give the peer's value): no-tdtcg2dxe (firmware without TdTcg2Dxe: real
    RTMRs are zero), kernel-unmodified (the firmware loads QEMU's unpatched
    etc/boot/kernel), stub-no-rtmr2 (kernel < 6.9: the stub measures nothing),
    initrd-prepend, fixed-cfv, fixed-boot, plus the differences of (a).

Output: per combination and peer, a table of agreed / differs-explained /
differs-UNEXPLAINED per register for (a) and (b), the reasons with counts, then a
summary. Exit status 1 if any difference is unexplained or tools disagree on refusing
a launch (all refusing, e.g. an initrd too large for the memory, is fine); 2 on a
usage error.
"""

import argparse
import glob
import hashlib
import json
import os
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCOS = os.environ.get("COCOS_MEASURE") or os.path.join(ROOT, "target", "release", "cocos-measure")
DSTACK_DEFAULT = os.path.join(ROOT, "target", "crosscheck-dstack-mr", "release", "crosscheck-dstack-mr")
DEFAULT_FIRMWARE = ["/usr/share/ovmf/OVMF.fd", os.path.join(ROOT, "target", "ovmf", "out", "OVMF.inteltdx.fd")]

# Fixed digests baked into the peers (dstack-mr src/tdvf.rs, tdx-measure src/tdvf.rs).
PEER_CFV = bytes.fromhex(
    "344bc51c980ba621aaa00da3ed7436f7d6e549197dfe699515dfa2c6583d95e6"
    "412af21c097d473155875ffd561d6790"
)
DSTACK_BOOT0000 = bytes.fromhex(
    "23ada07f5261f12f34a0bd8e46760962d6b4d576a416f1fea1c64bc656b1d28e"
    "acf7047ae6e967c58fd2a98bfa74c298"
)
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
REGS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")
ZERO = "00" * 48
INITRD_SUFFIX = " initrd=initrd"

# Mode (a): the assumptions both peers make, stated to cocos-measure.
PEER_FLAGS = ["--kernel-setup", "patched", "--initrd-option", "append",
              "--stub-measures", "yes", "--firmware-measures", "yes"]

REASONS = {
    "non-ascii-cmdline": "non-ASCII command line: the peer transcodes UTF-8 to UTF-16, edk2 widens each "
                         "byte to a CHAR16 (X86QemuLoadImageLib.c QemuLoadKernelImage -> "
                         "UnicodeSPrintAsciiFormat \"%a\"; PrintLibInternal.c BasePrintLibSPrintMarker)",
    "empty-initrd": "0-byte initrd: QEMU still writes ramdisk_image/ramdisk_size (x86_load_linux) and edk2 "
                    "adds no \" initrd=initrd\" and the stub measures no initrd (InitrdSize == 0); the peer "
                    "skips the header fields, appends the suffix and measures an empty initrd",
    "vga-option": "vga= in the command line: QEMU sets vid_mode (0x1fa) in the patched header "
                  "(x86_load_linux), the peer does not",
    "acpi-order": "the table-loader allocates etc/acpi/tables before etc/acpi/rsdp: edk2 measures blobs in "
                  "ALLOCATE order (QemuFwCfgAcpi.c ProcessCmdAllocate), the peer fixes loader, rsdp, tables",
    "fixed-cfv": "the peer uses a fixed CFV digest 344bc51c... (its own OVMF_VARS); cocos-measure hashes "
                 "this firmware's CFV",
    "fixed-boot": "dstack-mr assumes BootOrder=0000 and a fixed Boot0000 (UiApp) digest 23ada07f...; this "
                  "launch has other Boot#### variables",
}

ASCII_WORDS = ["console=ttyS0", "quiet", "root=/dev/vda1", "ro", "cocos.events=serial:x", "panic=-1",
               "init=/init", "loglevel=7", "earlyprintk=serial", "mitigations=off", "a=\"b c\"", "x=1,2;3"]
NON_ASCII_WORDS = ["ро", "λ=1", "café=1", "名前=値", "emoji=🙂", "ü", "naïve"]
VGA_WORDS = ["vga=normal", "vga=ext", "vga=0x317", "vga=791"]
TOKEN_CHARS = string.ascii_letters + string.digits + "=._-,:/\"'"


def sha384(data):
    return hashlib.sha384(data).digest()


def extend(digests):
    r = bytes(48)
    for d in digests:
        r = sha384(r + d)
    return r.hex()


def widen(text):
    """edk2's %a into a CHAR16 buffer: one CHAR16 per byte, NUL-terminated."""
    return b"".join(bytes([b, 0]) for b in text.encode()) + b"\0\0"


def utf16(text):
    """The peers: UTF-8 transcoded to UTF-16LE, NUL-terminated."""
    return text.encode("utf-16-le") + b"\0\0"


# ---------------------------------------------------------------- random inputs


def loader_blob(files):
    """A table-loader with one ALLOCATE command per blob, as QEMU writes them
    (rsdp: 16-byte alignment in the F-segment zone; tables: 64, high zone)."""
    out = b""
    for f in files:
        c = bytearray(128)
        c[0] = 1  # QEMU_LOADER_CMD_ALLOCATE
        c[4:4 + len(f)] = f.encode()  # file[56]
        rsdp = f.endswith("rsdp")
        c[60] = 16 if rsdp else 64  # alignment
        c[64] = 2 if rsdp else 1  # zone: FSEG or HIGH
        out += bytes(c)
    return out


def random_cmdline(rng):
    kind = rng.random()
    words = [rng.choice(ASCII_WORDS) for _ in range(rng.randint(1, 8))]
    for _ in range(rng.randint(0, 3)):
        tok = "".join(rng.choice(TOKEN_CHARS) for _ in range(rng.randint(1, 24)))
        if "vga=" not in tok:
            words.append(tok)
    if kind < 0.35:
        words += [rng.choice(NON_ASCII_WORDS) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.12:
        words.append(rng.choice(VGA_WORDS))
    rng.shuffle(words)
    sep = "  " if rng.random() < 0.1 else " "
    return sep.join(words)


def random_initrd_size(rng):
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.15:
        return 1
    if r < 0.35:
        return rng.choice([4096, 4097, rng.randint(2, 4096)])
    if r < 0.6:
        return rng.randint(1, 1 << 20)
    if r < 0.8:
        return rng.randint(1 << 20, 10 << 20)
    return rng.randint(10 << 20, 60 << 20)


def make_case(rng, d):
    """Write one random launch's files into d; returns its description."""
    for fn in os.listdir(d):
        p = os.path.join(d, fn)
        shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    c = {
        "initrd_size": random_initrd_size(rng),
        "mem_mb": rng.choice([512, 1024, 2047, 2048, 2049, 2560, 2815, 2816, 2817, 3072, 4096, 8192,
                              rng.randint(512, 16384), rng.randint(2700, 2900)]),
        "cpus": rng.randint(1, 8),
        "cmdline": random_cmdline(rng),
        "two_pass": rng.random() < 0.15,
        "acpi_order": rng.choice([["etc/acpi/rsdp", "etc/acpi/tables"], ["etc/acpi/tables", "etc/acpi/rsdp"]]),
        "dir": d,
    }
    if rng.random() < 0.03:
        # Refusal probe: an initrd too large for the RAM below 4 GiB.
        c["initrd_size"], c["mem_mb"] = rng.randint(20 << 20, 40 << 20), rng.randint(16, 40)
    c["initrd"] = os.path.join(d, "initrd")
    with open(c["initrd"], "wb") as f:
        f.write(rng.randbytes(c["initrd_size"]))
    for name, data in [("tables.bin", rng.randbytes(rng.randint(1, 9000))),
                       ("rsdp.bin", rng.randbytes(rng.choice([20, 36]))),
                       ("loader.bin", loader_blob(c["acpi_order"]))]:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    order = rng.sample(range(16), k=rng.randint(1, 4))
    c["boot_order"] = order
    ev = os.path.join(d, "efivars")
    os.makedirs(ev)
    bo = b"".join(n.to_bytes(2, "little") for n in order)
    with open(os.path.join(ev, f"BootOrder-{GLOBAL}"), "wb") as f:
        f.write(b"\x07\0\0\0" + bo)
    with open(os.path.join(d, "BootOrder.bin"), "wb") as f:
        f.write(bo)
    for n in order:
        val = rng.randbytes(rng.randint(20, 200))
        with open(os.path.join(ev, f"Boot{n:04X}-{GLOBAL}"), "wb") as f:
            f.write(b"\x07\0\0\0" + val)
        with open(os.path.join(d, f"Boot{n:04}.bin"), "wb") as f:  # tdx-measure's naming
            f.write(val)
    return c


def describe(c):
    flags = []
    if c["two_pass"]:
        flags.append("two-pass")
    if c["acpi_order"][0].endswith("tables"):
        flags.append("loader: tables before rsdp")
    return (f"initrd {c['initrd_size']} B, -m {c['mem_mb']}M, BootOrder {c['boot_order']}"
            f"{', ' + ', '.join(flags) if flags else ''}, cmdline {c['cmdline']!r}")


# ---------------------------------------------------------------- running tools


def run(argv):
    p = subprocess.run(argv, capture_output=True)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace").strip()


def run_cocos(c, fw, kernel, mode_flags, qemu_version, initrd=True, cmdline=None):
    d = c["dir"]
    argv = [COCOS, "tdx", "--firmware", fw, "--kernel", kernel, f"--append={c['cmdline'] if cmdline is None else cmdline}",
            "--memory", f"{c['mem_mb']}M", "--cpus", str(c["cpus"]), "--qemu-version", qemu_version,
            "--acpi-tables", os.path.join(d, "tables.bin"), "--acpi-rsdp", os.path.join(d, "rsdp.bin"),
            "--acpi-loader", os.path.join(d, "loader.bin"), "--efivars", os.path.join(d, "efivars"), "--json"]
    if initrd:
        argv += ["--initrd", c["initrd"]]
    if c["two_pass"]:
        argv.append("--two-pass")
    rc, out, err = run(argv + mode_flags)
    return (json.loads(out), None) if rc == 0 else (None, err or f"exit status {rc}")


class TdxMeasure:
    name = "tdx-measure"
    boot_fixed = False

    def __init__(self, path):
        self.path = path
        self.version = run([path, "--version"])[1].strip() or "?"

    def measure(self, c, fw, kernel):
        d = c["dir"]
        meta = {
            "boot_config": {"cpus": c["cpus"], "memory": f"{c['mem_mb']}M", "bios": os.path.abspath(fw),
                            "acpi_tables": "tables.bin", "rsdp": "rsdp.bin", "table_loader": "loader.bin",
                            "boot_order": "BootOrder.bin", "path_boot_xxxx": d + "/"},
            "direct": {"kernel": os.path.abspath(kernel), "initrd": "initrd", "cmdline": c["cmdline"]},
        }
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f)
        argv = [self.path, "--json", os.path.join(d, "meta.json")]
        if c["two_pass"]:
            argv.append("--two-pass-add-pages")
        rc, out, err = run(argv)
        if rc != 0:
            return None, err or f"exit status {rc}"
        t = json.loads(out)
        return {k: t[k].lower() for k in REGS}, None


class DstackMr:
    name = "dstack-mr"
    boot_fixed = True

    def __init__(self, path):
        self.path = path
        self.version = run([path, "--version"])[1].strip() or "?"

    def measure(self, c, fw, kernel):
        d = c["dir"]
        argv = [self.path, "--firmware", fw, "--kernel", kernel, "--initrd", c["initrd"],
                f"--cmdline={c['cmdline']}", "--memory", f"{c['mem_mb']}M", "--cpus", str(c["cpus"]),
                "--acpi-tables", os.path.join(d, "tables.bin"), "--acpi-rsdp", os.path.join(d, "rsdp.bin"),
                "--acpi-loader", os.path.join(d, "loader.bin"),
                "--two-pass" if c["two_pass"] else "--single-pass"]
        rc, out, err = run(argv)
        if rc != 0:
            return None, err or f"exit status {rc}"
        t = json.loads(out)
        if "dstack_mr" in t:
            self.version = f"dstack-mr {t['dstack_mr']['version']} @ {t['dstack_mr']['commit']}"
        return {k: (t[k] or "").lower() for k in REGS}, None


# ---------------------------------------------------------------- explaining differences


def events(o, n):
    return [e for e in o["events"] if e["rtmr"] == n]


def digests(evs):
    return [bytes.fromhex(e["digest"]) for e in evs]


def is_boot_var(what):
    return re.match(r"Boot[0-9A-Fa-f]{4}\b", what) is not None


def rtmr0_digests(evs, peer, fix_cfv=True, fix_boot=True, peer_acpi_order=False):
    """cocos-measure's RTMR0 log with the peer's fixed digests (and ACPI order)."""
    out, acpi_at, acpi = [], None, {}
    for e in evs:
        what, dg = e["what"], bytes.fromhex(e["digest"])
        if fix_cfv and what.startswith("CFV"):
            dg = PEER_CFV
        if fix_boot and peer.boot_fixed:
            if what.startswith("BootOrder"):
                out += [sha384(b"\0\0"), DSTACK_BOOT0000]
                continue
            if is_boot_var(what):
                continue
        if peer_acpi_order and what.startswith("ACPI DATA"):
            if acpi_at is None:
                acpi_at = len(out)
            acpi[what.split()[-1]] = dg
            continue
        out.append(dg)
    if acpi_at is not None:
        names = ["etc/table-loader", "etc/acpi/rsdp", "etc/acpi/tables"]
        out[acpi_at:acpi_at] = [acpi[n] for n in names if n in acpi] + [acpi[n] for n in acpi if n not in names]
    return out


def rtmr0_fixed_changes(evs, peer):
    """Which of the peer's fixed RTMR0 digests differ from ours."""
    keys = []
    if any(e["what"].startswith("CFV") and bytes.fromhex(e["digest"]) != PEER_CFV for e in evs):
        keys.append("fixed-cfv")
    if peer.boot_fixed and rtmr0_digests(evs, peer, fix_cfv=False) != rtmr0_digests(evs, peer, False, False):
        keys.append("fixed-boot")
    return keys


class Comparer:
    """Compares one case's cocos-measure runs with one peer's registers."""

    def __init__(self, c, fw, kernel, qemu_version, a, b, peer, theirs):
        self.c, self.fw, self.kernel, self.qv = c, fw, kernel, qemu_version
        self.a, self.b, self.peer, self.t = a, b, peer, theirs
        self._rtmr1_alt = None

    # (a) ------------------------------------------------------------

    def mode_a(self, reg):
        """(status, reason keys, detail): status is agree, explained or UNEXPLAINED."""
        c, a, t = self.c, self.a, self.t
        if reg == "mrtd":
            ours = a["mrtd"]
            return ("agree", [], "") if ours == t[reg] else ("UNEXPLAINED", [], f"ours {ours} peer {t[reg]}")
        if reg == "rtmr0":
            evs = events(a, 0)
            ours = extend(rtmr0_digests(evs, self.peer))
            if ours == t[reg]:
                return "agree", [], ""
            if c["acpi_order"][0].endswith("tables") and \
                    extend(rtmr0_digests(evs, self.peer, peer_acpi_order=True)) == t[reg]:
                return "explained", ["acpi-order"], ""
            return "UNEXPLAINED", [], f"ours (replayed) {ours} peer {t[reg]}"
        if reg == "rtmr1":
            if a["rtmr1"] == t[reg]:
                return "agree", [], ""
            keys = self.rtmr1_keys()
            if keys and self.rtmr1_without(a) == t[reg]:
                return "explained", keys, ""
            return "UNEXPLAINED", [], f"ours {a['rtmr1']} peer {t[reg]}"
        # rtmr2
        if a["rtmr2"] == t[reg]:
            return "agree", [], ""
        keys, adjusted, why = self.rtmr2_peer_model(events(a, 2))
        if keys and adjusted == t[reg]:
            return "explained", keys, ""
        return "UNEXPLAINED", [], f"ours {a['rtmr2']} peer {t[reg]}{'; ' + why if why else ''}"

    def rtmr1_keys(self):
        keys = []
        if self.c["initrd_size"] == 0:
            keys.append("empty-initrd")
        if "vga=" in self.c["cmdline"]:
            keys.append("vga-option")
        return keys

    def rtmr1_without(self, o):
        """Our RTMR1 with the peer's header patch: no ramdisk fields for a 0-byte
        initrd, no vid_mode; the kernel digest comes from an extra run without the
        initrd / with vga= defused, all else from o's log."""
        if self._rtmr1_alt is None:
            alt, err = run_cocos(self.c, self.fw, self.kernel, PEER_FLAGS, self.qv,
                                 initrd=self.c["initrd_size"] > 0,
                                 cmdline=self.c["cmdline"].replace("vga=", "vgq="))
            self._rtmr1_alt = next((e["digest"] for e in events(alt, 1) if e["what"].startswith("kernel")),
                                   None) if alt else None
        evs = events(o, 1)
        if self._rtmr1_alt is None:
            return None
        return extend([bytes.fromhex(self._rtmr1_alt) if e["what"].startswith("kernel") else
                       bytes.fromhex(e["digest"]) for e in evs])

    def rtmr2_peer_model(self, evs):
        """Check our RTMR2 log is what edk2 + the stub give (byte-widened LoadOptions,
        suffix and initrd event only for a non-empty initrd), then rewrite it the way
        the peer models it. Returns (reason keys, rewritten RTMR2 or None, why not)."""
        c = self.c
        keys = []
        if any(ord(ch) > 127 for ch in c["cmdline"]):
            keys.append("non-ascii-cmdline")
        if c["initrd_size"] == 0:
            keys.append("empty-initrd")
        if not keys:
            return [], None, ""
        want = [sha384(widen(c["cmdline"] + (INITRD_SUFFIX if c["initrd_size"] else "")))]
        if c["initrd_size"]:
            with open(c["initrd"], "rb") as f:
                want.append(sha384(f.read()))
        if digests(evs) != want:
            return keys, None, "our RTMR2 log is not [widened LoadOptions, initrd] as expected"
        return keys, extend([sha384(utf16(c["cmdline"] + INITRD_SUFFIX)), want[1] if c["initrd_size"]
                             else sha384(b"")]), ""

    # (b) ------------------------------------------------------------

    def mode_b(self, reg, a_result):
        a, b, t = self.a, self.b, self.t
        if b[reg] == t[reg]:
            return "agree", [], ""
        if reg == "mrtd":
            return "UNEXPLAINED", [], f"ours {b['mrtd']} peer {t[reg]}"
        if not b["rtmrs_extended"]:
            if b[reg] == ZERO:
                return "explained", ["no-tdtcg2dxe"], ""
            return "UNEXPLAINED", [], f"rtmrs_extended false but {reg} = {b[reg]}"
        n = int(reg[-1])
        a_status, a_keys, _ = a_result
        a_ok = a_status in ("agree", "explained")
        if digests(events(b, n)) == digests(events(a, n)):
            # Same log as run (a): the difference is (a)'s plus, for RTMR0, the
            # peer's fixed digests, which we checked by replay in (a).
            keys = (rtmr0_fixed_changes(events(b, 0), self.peer) if n == 0 else []) + a_keys
            if a_ok and keys:
                return "explained", keys, ""
            return "UNEXPLAINED", [], f"ours {b[reg]} peer {t[reg]} (same log as (a), which is {a_status})"
        settings = b["settings"]
        if n == 1 and settings["kernel_setup"] != "patched":
            other = [x for x, y in zip(events(b, 1), events(a, 1)) if x["digest"] != y["digest"]]
            if len(events(b, 1)) == len(events(a, 1)) and all(e["what"].startswith("kernel") for e in other) \
                    and a_ok:
                # The peer's value is our patched model (run (a), up to its known
                # differences); a real TD hashes the file as is.
                return "explained", ["kernel-" + settings["kernel_setup"]], ""
        if n == 2 and a_ok:
            if not events(b, 2) and events(a, 2) and b[reg] == ZERO:
                return "explained", ["stub-no-rtmr2"], ""
            prefixed = sha384(widen("initrd=initrd " + self.c["cmdline"]))
            if settings["initrd_option"] == "prepend" and self.c["initrd_size"] and \
                    digests(events(b, 2))[:1] == [prefixed] and digests(events(b, 2))[1:] == digests(events(a, 2))[1:]:
                return "explained", ["initrd-prepend"] + a_keys, ""
        if not a_ok:
            return "UNEXPLAINED", [], f"ours {b[reg]} peer {t[reg]} (and (a) is UNEXPLAINED)"
        return "UNEXPLAINED", [], (f"ours {b[reg]} peer {t[reg]}: our log differs from (a) with no "
                                   f"differing setting to account for it")


def derived_reasons(b):
    """Texts of the (b) reasons that apply to this firmware and kernel, from
    cocos-measure's own rules and notes."""
    rules = {r["setting"]: r for r in b["rules"]}
    out = {}
    r = rules.get("extends_rtmrs")
    if r and r["value"] == "false":
        out["no-tdtcg2dxe"] = (f"firmware has no TdTcg2Dxe: real RTMR0-2 are zero, the peer reports non-zero "
                               f"(cocos-measure: {r['why']})")
    r = rules.get("kernel_setup")
    if r and r["value"] != "patched":
        out[f"kernel-{r['value']}"] = (f"kernel_setup={r['value']}: {r['why']}; the peer hashes the header QEMU "
                                       f"<= 10.1 patches into the legacy kernel blob")
    r = rules.get("initrd_option")
    if r and r["value"] != "append":
        out[f"initrd-{r['value']}"] = f"initrd_option={r['value']}: {r['why']}; the peer appends"
    notes = [n for n in b.get("notes", []) if "6.9" in n]
    if notes:
        out["stub-no-rtmr2"] = ("kernel < 6.9: its EFI stub measures nothing into RTMR2 (RTMR2 zero), the peer "
                                f"assumes the 6.9+ stub (cocos-measure: {notes[0]})")
    return out


# ---------------------------------------------------------------- driver


def default_kernels():
    ks = sorted(glob.glob("/boot/vmlinuz-*"))
    out = ks[-1:]
    out += sorted(glob.glob(os.path.join(ROOT, "target", "hal-cache", "linux-image-*", "boot", "vmlinuz-*")))
    return out


def new_counts():
    return {m: {r: {"agree": 0, "explained": 0, "UNEXPLAINED": 0} for r in REGS} for m in "ab"}


def run_combination(fw, kernel, seed, args, peers, texts, used):
    rng = random.Random(seed)
    counts = {p.name: new_counts() for p in peers}
    reasons = {p.name: {} for p in peers}  # (mode, reg, key) -> n
    refusals = {"all": set(), "mismatch": 0}
    first_b = None
    print(f"\n== firmware {fw}\n   kernel   {kernel}\n   seed {seed}, {args.cases} cases, "
          f"QEMU {args.qemu_version} stated for (b)")
    with tempfile.TemporaryDirectory(prefix="crosscheck-tdx-") as d:
        for i in range(args.cases):
            c = make_case(rng, d)
            case = f"case {i}: {describe(c)}"
            a, a_err = run_cocos(c, fw, kernel, PEER_FLAGS, args.qemu_version)
            b, b_err = run_cocos(c, fw, kernel, [], args.qemu_version)
            if b and first_b is None:
                first_b = b
                texts.update(derived_reasons(b))
            shown = args.verbose
            if shown:
                print(f"  {case}")
            for p in peers:
                t, t_err = p.measure(c, fw, kernel)
                errs = [e for e in (a_err, b_err, t_err) if e]
                if errs:
                    if len(errs) == 3:
                        refusals["all"].add(i)
                        if args.verbose:
                            print(f"    {p.name}: all refuse: {a_err[:150]} | {t_err[:150]}")
                    else:
                        refusals["mismatch"] += 1
                        if not shown:
                            print(f"  {case}")
                            shown = True
                        print(f"    {p.name}: REFUSAL MISMATCH: cocos (a) {a_err!r}, cocos (b) {b_err!r}, "
                              f"{p.name} {t_err!r}")
                    continue
                cmp = Comparer(c, fw, kernel, args.qemu_version, a, b, p, t)
                for reg in REGS:
                    ra = cmp.mode_a(reg)
                    rb = cmp.mode_b(reg, ra)
                    for mode, (status, keys, detail) in (("a", ra), ("b", rb)):
                        counts[p.name][mode][reg][status] += 1
                        for k in keys:
                            used.add(k)
                            reasons[p.name][(mode, reg, k)] = reasons[p.name].get((mode, reg, k), 0) + 1
                        if status == "UNEXPLAINED":
                            if not shown:
                                print(f"  {case}")
                                shown = True
                            print(f"    {p.name} ({mode}) {reg.upper()} differs, UNEXPLAINED: {detail}")
                        elif args.verbose and status == "explained":
                            print(f"    {p.name} ({mode}) {reg.upper()} differs: {', '.join(keys)}")
    if first_b:
        rules = ", ".join(f"{r['setting']}={r['value']} ({r['source']})" for r in first_b["rules"])
        print(f"   cocos-measure (b) rules: {rules}; rtmrs_extended={str(first_b['rtmrs_extended']).lower()}")
    print(f"   cases refused by every tool: {len(refusals['all'])}, refusal mismatches: {refusals['mismatch']}")
    print(f"   {'':12} {'':6} | {'(a) peer assumptions explicit':^33} | {'(b) cocos-measure defaults':^33}")
    print(f"   {'peer':12} {'reg':6} | {'agreed':>9} {'explained':>10} {'UNEXPLAINED':>12} "
          f"| {'agreed':>9} {'explained':>10} {'UNEXPLAINED':>12}")
    for p in peers:
        for reg in REGS:
            ca, cb = counts[p.name]["a"][reg], counts[p.name]["b"][reg]
            print(f"   {p.name:12} {reg.upper():6} | {ca['agree']:>9} {ca['explained']:>10} {ca['UNEXPLAINED']:>12} "
                  f"| {cb['agree']:>9} {cb['explained']:>10} {cb['UNEXPLAINED']:>12}")
    for p in peers:
        if reasons[p.name]:
            print(f"   reasons ({p.name}): " + "; ".join(
                f"({m}) {reg.upper()} {k} x{n}" for (m, reg, k), n in sorted(reasons[p.name].items())))
    return counts, refusals


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20, help="random cases per (firmware, kernel) combination")
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 32),
                    help="seed of the first combination (combination i uses seed+i)")
    ap.add_argument("--firmware", action="append", help="TDX OVMF image (repeatable; default: a list)")
    ap.add_argument("--kernel", action="append", help="bzImage (repeatable; default: a list)")
    ap.add_argument("--qemu-version", default="10.1", help="QEMU version stated to cocos-measure in (b)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case and explained difference")
    args = ap.parse_args()

    if not os.access(COCOS, os.X_OK):
        ap.error(f"{COCOS} missing: cargo build --release -p cocos-measure --locked")
    peers = []
    tdxm = os.environ.get("TDX_MEASURE")
    if tdxm:
        peers.append(TdxMeasure(tdxm))
    dstack = os.environ.get("DSTACK_MR")
    if dstack is None and os.access(DSTACK_DEFAULT, os.X_OK):
        dstack = DSTACK_DEFAULT
    if dstack:
        peers.append(DstackMr(dstack))
    if not peers:
        ap.error("no peer: set TDX_MEASURE and/or DSTACK_MR, or build scripts/crosscheck-dstack-mr")
    firmwares = args.firmware or [f for f in DEFAULT_FIRMWARE if os.path.exists(f)]
    kernels = args.kernel or default_kernels()
    if not firmwares or not kernels:
        ap.error("no firmware or kernel found: pass --firmware and --kernel")

    print(f"cocos-measure: {COCOS} ({run([COCOS, '--version'])[1].strip()})")
    for p in peers:
        print(f"peer {p.name}: {p.path} ({p.version})")
    print(f"seed {args.seed}, {args.cases} cases per combination")

    texts = dict(REASONS)
    used = set()
    total = {p.name: new_counts() for p in peers}
    mismatches = 0
    results = []
    combos = [(fw, k) for fw in firmwares for k in kernels]
    for i, (fw, k) in enumerate(combos):
        counts, refusals = run_combination(fw, k, args.seed + i, args, peers, texts, used)
        mismatches += refusals["mismatch"]
        results.append((fw, k, args.seed + i, counts))
        for p in peers:
            for m in "ab":
                for reg in REGS:
                    for s, n in counts[p.name][m][reg].items():
                        total[p.name][m][reg][s] += n

    print("\nreasons:")
    for k in sorted(used):
        print(f"  {k}: {texts.get(k, '?')}")
    print("\nsummary (agreed/explained/UNEXPLAINED per register; MRTD RTMR0 RTMR1 RTMR2):")
    unexplained = 0
    for fw, k, seed, counts in results:
        print(f"  {os.path.basename(fw)} + {os.path.basename(k)} (seed {seed})")
        for p in peers:
            for m in "ab":
                cells = "  ".join(f"{c['agree']}/{c['explained']}/{c['UNEXPLAINED']}"
                                  for c in (counts[p.name][m][r] for r in REGS))
                print(f"    {p.name:12} ({m}) {cells}")
    for p in peers:
        for m in "ab":
            unexplained += sum(total[p.name][m][r]["UNEXPLAINED"] for r in REGS)
    print(f"unexplained differences: {unexplained}; refusal mismatches: {mismatches}")
    if unexplained or mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
