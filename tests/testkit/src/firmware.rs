//! Synthetic firmware images for tests: random OVMF-like images with a valid footer
//! table, SEV metadata, reset block and hash-table location ([`synth_firmware`], with
//! optional injected faults), images with exactly the footer-table entries a test asks
//! for ([`synth`] and its entry helpers), and random images with valid TDVF metadata
//! ([`synth_tdvf`]).
//!
//! (`scripts/synth-ovmf.py` makes the large, seeded image `scripts/bench-measure.sh`
//! times; it is not used by tests.)

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use uuid::{uuid, Uuid};

/// The OVMF footer table's own GUID (the table ends 32 bytes before the image's end).
pub const FOOTER: Uuid = uuid!("96b582de-1fb2-45f7-baea-a366c55a082d");
/// SEV_HASH_TABLE_RV_GUID: where the kernel hashes table goes (gpa, size).
pub const HASH_TABLE_RV: Uuid = uuid!("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// SEV_ES_RESET_BLOCK_GUID: the AP reset EIP.
pub const RESET_BLOCK: Uuid = uuid!("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// OVMF_SEV_METADATA_GUID: offset from the end of the "ASEV" metadata.
pub const SEV_METADATA: Uuid = uuid!("dc886566-984a-4798-a75e-5585a7bf67cc");
/// TDX_METADATA_OFFSET_GUID: offset from the end of the "TDVF" metadata.
pub const TDX_METADATA: Uuid = uuid!("e47a6535-984a-4798-865e-4685a7bf8ec2");
/// SEV_SECRET_GUID: the launch secret area.
pub const SEV_SECRET: Uuid = uuid!("4c2eb361-7d9b-4cc3-8081-127c90d3d294");

/// What the generator decided, for reporting and for the checks.
#[derive(Debug, Clone, Default)]
pub struct SynthInfo {
    /// Human summary of the layout and any injected fault.
    pub desc: String,
    /// A fault that sev-snp-measure tolerates but we refuse on purpose.
    pub stricter_ok: bool,
    /// The image has an SNP_KERNEL_HASHES section.
    pub kernel_hashes: bool,
    /// Sections (gpa, size, type).
    pub sections: Vec<(u32, u32, u32)>,
}

fn put(buf: &mut [u8], at: usize, b: &[u8]) {
    buf[at..at + b.len()].copy_from_slice(b);
}

/// Generates a random synthetic OVMF image. With `faults`, about one image in ten
/// carries one injected defect.
pub fn synth_firmware(rng: &mut impl Rng, faults: bool) -> (Vec<u8>, SynthInfo) {
    let mut info = SynthInfo::default();
    let pages = rng.gen_range(8..=48usize);
    let mut len = pages * 4096;
    if rng.gen_bool(0.04) {
        len += rng.gen_range(1..4096);
        info.desc.push_str("unaligned-size ");
    }
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);

    let fault = if faults && rng.gen_bool(0.10) {
        rng.gen_range(0..9)
    } else {
        99
    };
    let mut entries: Vec<(Uuid, Vec<u8>)> = Vec::new();

    if rng.gen_bool(0.92) {
        let eip: u32 = if rng.gen_bool(0.08) { 0 } else { rng.gen() };
        info.desc.push_str(&format!("eip={eip:#x} "));
        entries.push((RESET_BLOCK, eip.to_le_bytes().to_vec()));
    }
    if rng.gen_bool(0.85) {
        let gpa: u32 = if rng.gen_bool(0.08) {
            0
        } else {
            let base = rng.gen_range(0x800u32..0x1000) << 12;
            let off = if rng.gen_bool(0.85) {
                rng.gen_range(0..=3920)
            } else {
                rng.gen_range(3921..4096)
            };
            base | off
        };
        info.desc.push_str(&format!("hash-table={gpa:#x} "));
        let mut d = gpa.to_le_bytes().to_vec();
        d.extend(0x400u32.to_le_bytes());
        entries.push((HASH_TABLE_RV, d));
    }
    if rng.gen_bool(0.85) {
        let n = rng.gen_range(0..=6usize);
        let mut sections = Vec::new();
        for _ in 0..n {
            let t = *[1u32, 1, 2, 3, 4, 0x10].choose(rng).unwrap_or(&1);
            let gpa = (rng.gen::<u32>() & !0xfff) | if rng.gen_bool(0.05) { 0x10 } else { 0 };
            let size = match t {
                1 => rng.gen_range(1..=4u32) * 4096,
                2 | 3 => *[0x1000u32, 0x1000, 0x2000, 0]
                    .choose(rng)
                    .unwrap_or(&0x1000),
                4 => 4096,
                _ => {
                    if rng.gen_bool(0.9) {
                        4096
                    } else {
                        8192
                    }
                }
            };
            sections.push((gpa, size, t));
        }
        if rng.gen_bool(0.7) && !sections.iter().any(|s| s.2 == 0x10) {
            let at = rng.gen_range(0..=sections.len());
            sections.insert(at, (rng.gen_range(0x800u32..0x1000) << 12, 4096, 0x10));
        }
        let mut count = sections.len() as u32;
        let mut sig = *b"ASEV";
        let mut version = 1u32;
        match fault {
            0 => {
                sig = *b"ASEX";
                info.desc.push_str("FAULT:bad-signature ");
            }
            1 => {
                version = 2;
                info.desc.push_str("FAULT:version ");
            }
            2 if !sections.is_empty() => {
                sections[0].2 = 5;
                info.desc.push_str("FAULT:unknown-type ");
            }
            3 if !sections.is_empty() => {
                sections[0] = (sections[0].0, 0x1800, 1);
                info.desc.push_str("FAULT:unaligned-section ");
            }
            4 => {
                count += 3;
                info.desc.push_str("FAULT:count ");
            }
            _ => {}
        }
        info.kernel_hashes = sections.iter().any(|s| s.2 == 0x10);
        let meta_len = 16 + 12 * sections.len();
        let off = rng.gen_range(0..(len - 1024 - meta_len)) & !3;
        put(&mut data, off, &sig);
        put(&mut data, off + 4, &(meta_len as u32).to_le_bytes());
        put(&mut data, off + 8, &version.to_le_bytes());
        put(&mut data, off + 12, &count.to_le_bytes());
        for (i, (g, s, t)) in sections.iter().enumerate() {
            let o = off + 16 + 12 * i;
            put(&mut data, o, &g.to_le_bytes());
            put(&mut data, o + 4, &s.to_le_bytes());
            put(&mut data, o + 8, &t.to_le_bytes());
        }
        let from_end = if fault == 5 {
            info.desc.push_str("FAULT:metadata-outside ");
            (len + rng.gen_range(1..4096)) as u32
        } else {
            (len - off) as u32
        };
        info.desc.push_str(&format!("sections={sections:x?} "));
        info.sections = sections;
        entries.push((SEV_METADATA, from_end.to_le_bytes().to_vec()));
    }
    if rng.gen_bool(0.3) {
        entries.push((SEV_SECRET, rng.gen::<[u8; 8]>().to_vec()));
    }
    if rng.gen_bool(0.3) {
        let g = Uuid::from_bytes(rng.gen());
        let dl = rng.gen_range(0..16);
        entries.push((g, (0..dl).map(|_| rng.gen()).collect()));
    }
    if rng.gen_bool(0.1) {
        entries.push((TDX_METADATA, rng.gen::<u32>().to_le_bytes().to_vec()));
    }
    entries.shuffle(rng);

    let mut table = Vec::new();
    for (i, (g, d)) in entries.iter().enumerate() {
        let mut size = (d.len() + 18) as u16;
        if fault == 6 && i == 0 {
            size = 7;
            info.desc.push_str("FAULT:entry-size ");
        }
        if fault == 7 && i == 0 {
            // Overruns the table: sev-snp-measure silently reads garbage, we refuse.
            size += 200;
            info.desc.push_str("FAULT:entry-overrun ");
            info.stricter_ok = true;
        }
        table.extend_from_slice(d);
        table.extend(size.to_le_bytes());
        table.extend(g.to_bytes_le());
    }
    let mut footer_size = (table.len() + 18) as u16;
    if fault == 8 {
        footer_size = footer_size.wrapping_add(rng.gen_range(1..4000));
        info.desc.push_str("FAULT:footer-size ");
        info.stricter_ok = true;
    }
    let footer_at = len - 32 - 18;
    put(&mut data, footer_at - table.len(), &table);
    put(&mut data, footer_at, &footer_size.to_le_bytes());
    put(&mut data, footer_at + 2, &FOOTER.to_bytes_le());
    (data, info)
}

/// An OVMF-like image of `len` random bytes whose footer table (ending 32 bytes before
/// the end) holds `entries` as `(GUID, data)`, the first one nearest the footer.
pub fn synth(len: usize, entries: &[(Uuid, Vec<u8>)]) -> Vec<u8> {
    let mut img = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut img);
    let footer = len - 32 - 18;
    let mut end = footer;
    for (guid, data) in entries {
        let size = data.len() + 18;
        let start = end - size;
        img[start..start + data.len()].copy_from_slice(data);
        let hdr = end - 18;
        img[hdr..hdr + 2].copy_from_slice(&u16::try_from(size).unwrap().to_le_bytes());
        img[hdr + 2..end].copy_from_slice(&guid.to_bytes_le());
        end = start;
    }
    let table = 18 + (footer - end);
    img[footer..footer + 2].copy_from_slice(&u16::try_from(table).unwrap().to_le_bytes());
    img[footer + 2..footer + 18].copy_from_slice(&FOOTER.to_bytes_le());
    img
}

/// The [`SEV_METADATA`] entry pointing at offset `at` of a `len`-byte image.
pub fn sev_metadata_entry(len: usize, at: usize) -> (Uuid, Vec<u8>) {
    (
        SEV_METADATA,
        u32::try_from(len - at).unwrap().to_le_bytes().to_vec(),
    )
}

/// Writes "ASEV" metadata with `sections` (gpa, size, type) at offset `at`.
pub fn put_sev_metadata(img: &mut [u8], at: usize, sections: &[(u32, u32, u32)]) {
    let n = u32::try_from(sections.len()).unwrap();
    let mut md = b"ASEV".to_vec();
    for v in [16 + 12 * n, 1, n] {
        md.extend(v.to_le_bytes());
    }
    for &(gpa, size, kind) in sections {
        for v in [gpa, size, kind] {
            md.extend(v.to_le_bytes());
        }
    }
    img[at..at + md.len()].copy_from_slice(&md);
}

/// The [`RESET_BLOCK`] entry with AP reset EIP `eip`.
pub fn reset_block(eip: u32) -> (Uuid, Vec<u8>) {
    (RESET_BLOCK, eip.to_le_bytes().to_vec())
}

/// A random image with valid TDVF metadata (2–6 sections of every kind).
pub fn synth_tdvf(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.gen_range(8..=64usize) * 4096;
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    let n = rng.gen_range(2..=6usize);
    let mut desc = Vec::new();
    for i in 0..n {
        let kind: u32 = if i == 0 {
            0
        } else {
            *[0u32, 1, 1, 2, 3].choose(rng).unwrap()
        };
        let mem = rng.gen_range(1..=8u64) * 4096;
        let gpa = rng.gen_range(0..0x10_0000u64) << 12;
        let (raw, off) = if kind <= 1 {
            let raw = if rng.gen_bool(0.5) {
                mem as u32
            } else {
                rng.gen_range(1..=mem as u32)
            };
            (raw, rng.gen_range(0..=(len as u32 - mem as u32)))
        } else {
            (0, 0)
        };
        let extend = match kind {
            0 => rng.gen_bool(0.9),
            1 => rng.gen_bool(0.5),
            _ => rng.gen_bool(0.1),
        };
        desc.extend(off.to_le_bytes());
        desc.extend(raw.to_le_bytes());
        desc.extend(gpa.to_le_bytes());
        desc.extend(mem.to_le_bytes());
        desc.extend(kind.to_le_bytes());
        desc.extend(u32::from(extend).to_le_bytes());
    }
    let dlen = 16 + desc.len();
    let at = rng.gen_range(0..(len - 512 - dlen)) & !3;
    put(&mut data, at, b"TDVF");
    put(&mut data, at + 4, &(dlen as u32).to_le_bytes());
    put(&mut data, at + 8, &1u32.to_le_bytes());
    put(&mut data, at + 12, &(n as u32).to_le_bytes());
    put(&mut data, at + 16, &desc);
    // Footer table: one TDX_METADATA_OFFSET entry, then the footer entry.
    let mut table = ((len - at) as u32).to_le_bytes().to_vec();
    table.extend(22u16.to_le_bytes());
    table.extend(TDX_METADATA.to_bytes_le());
    let footer_at = len - 32 - 18;
    put(&mut data, footer_at - table.len(), &table);
    put(
        &mut data,
        footer_at,
        &((table.len() + 18) as u16).to_le_bytes(),
    );
    put(&mut data, footer_at + 2, &FOOTER.to_bytes_le());
    data
}
