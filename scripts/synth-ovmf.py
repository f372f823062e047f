#!/usr/bin/env python3
"""Write a synthetic OVMF image that supports SEV-SNP with kernel hashes.

The image is seeded random bytes plus just enough structure for both
cocos-measure and sev-snp-measure to accept it for `--mode snp` with
`--kernel/--initrd/--append`:

* the OVMF footer table ending 32 bytes before the end of the file, holding
  SEV_ES_RESET_BLOCK (AP reset EIP), SEV_HASH_TABLE_RV (hash table GPA/size)
  and OVMF_SEV_METADATA (offset of the metadata from the end of the file);
* an "ASEV" SEV metadata block in the first half of the file declaring
  SNP_SEC_MEM, SECRETS, CPUID and SNP_KERNEL_HASHES sections.

All integers are little-endian; GUIDs use their little-endian byte form.
Only the Python 3 standard library is used.

Usage: synth-ovmf.py [--size BYTES] [--seed N] OUTPUT
"""

import argparse
import random
import struct
import sys
import uuid

FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_ES_RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
SEV_HASH_TABLE_RV_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
OVMF_SEV_METADATA_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"

ENTRY_HEADER_SIZE = 18  # u16 size + 16-byte GUID

RESET_EIP = 0x80B004
HASH_TABLE_GPA = 0x80C000 + 0x200
HASH_TABLE_SIZE = 0x400

SNP_SEC_MEM, SNP_SECRETS, CPUID, SNP_KERNEL_HASHES = 1, 2, 3, 0x10
SECTIONS = [
    (0x800000, 0x9000, SNP_SEC_MEM),
    (0x809000, 0x1000, SNP_SECRETS),
    (0x80A000, 0x1000, CPUID),
    (0x80C000, 0x1000, SNP_KERNEL_HASHES),
    (0x80D000, 0x10000, SNP_SEC_MEM),
]


def entry(guid: str, data: bytes) -> bytes:
    """One footer-table entry: data, u16 size (incl. header), GUID."""
    size = len(data) + ENTRY_HEADER_SIZE
    return data + struct.pack("<H", size) + uuid.UUID(guid).bytes_le


def metadata() -> bytes:
    """The "ASEV" SEV metadata block with its section descriptors."""
    body = b"".join(struct.pack("<III", *s) for s in SECTIONS)
    return b"ASEV" + struct.pack("<III", 16 + len(body), 1, len(SECTIONS)) + body


def build(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    image = bytearray(rng.getrandbits(8 * size).to_bytes(size, "little"))

    meta = metadata()
    meta_off = size // 4  # somewhere in the first half
    image[meta_off:meta_off + len(meta)] = meta

    entries = b"".join([
        entry(SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", RESET_EIP)),
        entry(SEV_HASH_TABLE_RV_GUID,
              struct.pack("<II", HASH_TABLE_GPA, HASH_TABLE_SIZE)),
        entry(OVMF_SEV_METADATA_GUID, struct.pack("<I", size - meta_off)),
    ])
    footer = struct.pack("<H", ENTRY_HEADER_SIZE + len(entries)) \
        + uuid.UUID(FOOTER_GUID).bytes_le
    table = entries + footer
    end = size - 32
    image[end - len(table):end] = table
    return bytes(image)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4 << 20,
                    help="image size in bytes, a multiple of 4096 (default 4 MiB)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("output", help="path of the image to write")
    args = ap.parse_args()
    if args.size <= 0 or args.size % 4096:
        ap.error("--size must be a positive multiple of 4096")
    if args.size < 64 * 1024:
        ap.error("--size must be at least 64 KiB")
    with open(args.output, "wb") as f:
        f.write(build(args.size, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
