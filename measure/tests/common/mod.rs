//! Test support shared by the differential tests: a generator of random synthetic OVMF
//! images (random bytes with a valid footer table, SEV metadata with random sections,
//! random reset EIP and hash-table location, and optional injected faults), and the
//! locations of the oracles and Debian inputs installed by `scripts/setup.sh`.
#![allow(dead_code)]

use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::Rng;
use uuid::{uuid, Uuid};

pub const FOOTER: Uuid = uuid!("96b582de-1fb2-45f7-baea-a366c55a082d");
pub const HASH_TABLE_RV: Uuid = uuid!("7255371f-3a3b-4b04-927b-1da6efa8d454");
pub const RESET_BLOCK: Uuid = uuid!("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
pub const SEV_METADATA: Uuid = uuid!("dc886566-984a-4798-a75e-5585a7bf67cc");
pub const TDX_METADATA: Uuid = uuid!("e47a6535-984a-4798-865e-4685a7bf8ec2");
pub const SEV_SECRET: Uuid = uuid!("4c2eb361-7d9b-4cc3-8081-127c90d3d294");

/// Debian's kernel (the newest /boot/vmlinuz-*, from linux-image-amd64, installed by
/// scripts/setup.sh); fails the test if there is none.
pub fn debian_kernel() -> PathBuf {
    let mut ks: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    ks.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-"))
    });
    ks.sort();
    ks.pop()
        .expect("no /boot/vmlinuz-*: run scripts/setup.sh (Debian package linux-image-amd64)")
}

/// A kernel whose EFI stub measures into TDX RTMRs (Linux ≥ 6.9): the HAL's pinned
/// Debian 13 kernel, which `scripts/test.sh` fetches into target/hal-cache
/// (`cocos-hal kernel --spec hal/cocos.toml --locked`) before the tests run.
pub fn stub_measuring_kernel() -> PathBuf {
    let cache = workspace().join("target/hal-cache");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("boot")))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.is_dir());
    let mut kernels: Vec<PathBuf> = found
        .iter()
        .flat_map(|b| std::fs::read_dir(b).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .and_then(|v| {
                    let mut it = v.split(|c: char| !c.is_ascii_digit());
                    Some((
                        it.next()?.parse::<u32>().ok()?,
                        it.next()?.parse::<u32>().ok()?,
                    ))
                })
                .is_some_and(|mm| mm >= (6, 9))
        })
        .collect();
    kernels.sort();
    let missing = format!(
        "no Linux >= 6.9 kernel under {}: run scripts/test.sh, or `cargo run -p cocos-hal -- kernel --spec hal/cocos.toml --locked`",
        cache.display()
    );
    kernels.pop().expect(&missing)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The oracle venv's Python; fails the test with set-up instructions if missing.
pub fn oracle_python() -> PathBuf {
    let p = std::env::var_os("COCOS_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/oracle-venv/bin/python"));
    assert!(
        p.exists(),
        "oracle Python {} missing: run scripts/setup.sh (it installs sev-snp-measure==0.0.13)",
        p.display()
    );
    p
}

/// A seed from COCOS_TEST_SEED or the clock, printed so that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("COCOS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (replay with COCOS_TEST_SEED={s})");
    s
}

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

/// A random kernel command line: empty, ASCII, or with non-ASCII UTF-8.
pub fn random_cmdline(rng: &mut impl Rng) -> String {
    const WORDS: &[&str] = &[
        "console=ttyS0",
        "quiet",
        "root=/dev/vda1",
        "cocos.id=abc-123",
        "cocos.events=vsock:2:9997",
        "init=/init",
        "x=\"a b\"",
        "é",
        "日本語",
        "🦀",
        "Ωmega=∞",
        "-dash",
        "=eq",
        "tab\there",
    ];
    match rng.gen_range(0..10) {
        0 => String::new(),
        1 => (0..rng.gen_range(1..200))
            .map(|_| rng.gen_range(' '..='~'))
            .collect(),
        _ => (0..rng.gen_range(1..8))
            .map(|_| *WORDS.choose(rng).unwrap_or(&"quiet"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}
