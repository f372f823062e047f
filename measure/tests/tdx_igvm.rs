//! MRTD cross-check against the `igvm` crate (0.5, feature `corim`), whose
//! `generate_tdx_measurement` hashes TDH.MEM.PAGE.ADD / TDH.MR.EXTEND records for a list
//! of page directives (single-pass, as upstream KVM). The TDVF sections of random
//! synthetic images and of Debian's OVMF.fd are turned into one page directive per page
//! (unmeasured for sections without MR_EXTEND), and the crate's MRTD must equal ours.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test crate

mod common;

use cocos_measure::ovmf::Parsed;
use cocos_measure::tdx::mrtd;
use cocos_measure::Firmware;
use igvm::IgvmDirectiveHeader;
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The crate's MRTD for the image's TDVF sections.
fn igvm_mrtd(fw: &Firmware) -> [u8; 48] {
    let Parsed::Valid(meta) = fw.tdx_metadata() else {
        panic!("image has no valid TDX metadata: {:?}", fw.tdx_metadata());
    };
    let mut headers = Vec::new();
    for s in &meta.sections {
        for p in 0..s.memory_size / 4096 {
            let start = p * 4096;
            let mut page = Vec::new();
            // QEMU loads BFV/CFV pages from the image for the whole memory size.
            if s.mr_extend() && s.raw_size > 0 {
                let off = (u64::from(s.data_offset) + start) as usize;
                page.extend_from_slice(&fw.data()[off..off + 4096]);
            }
            headers.push(IgvmDirectiveHeader::PageData {
                gpa: s.memory_address + start,
                compatibility_mask: 1,
                flags: IgvmPageDataFlags::new().with_unmeasured(!s.mr_extend()),
                data_type: IgvmPageDataType::NORMAL,
                data: page,
            });
        }
    }
    igvm::measurement::generate_tdx_measurement(&headers, 1).unwrap()
}

fn put(buf: &mut [u8], at: usize, b: &[u8]) {
    buf[at..at + b.len()].copy_from_slice(b);
}

/// A random image with valid TDVF metadata (2–6 sections of every kind).
fn synth_tdvf(rng: &mut StdRng) -> Vec<u8> {
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
    table.extend(common::TDX_METADATA.to_bytes_le());
    let footer_at = len - 32 - 18;
    put(&mut data, footer_at - table.len(), &table);
    put(
        &mut data,
        footer_at,
        &((table.len() + 18) as u16).to_le_bytes(),
    );
    put(&mut data, footer_at + 2, &common::FOOTER.to_bytes_le());
    data
}

#[test]
fn mrtd_matches_igvm_on_random_tdvf_images() {
    let mut rng = StdRng::seed_from_u64(common::seed("mrtd igvm"));
    for i in 0..250 {
        let img = synth_tdvf(&mut rng);
        let fw = Firmware::parse(img).unwrap();
        let ours = mrtd(&fw, false).unwrap_or_else(|e| panic!("image {i}: {e}"));
        assert_eq!(
            hex::encode(ours),
            hex::encode(igvm_mrtd(&fw)),
            "image {i}: {:?}",
            fw.tdx_metadata()
        );
        // Two-pass differs from single-pass whenever a section has more than one extended
        // page; it has no second oracle here (see the Debian known value in tdx.rs).
        let _ = mrtd(&fw, true).unwrap();
    }
}

#[test]
fn mrtd_matches_igvm_on_debian_and_edk2_firmware() {
    let mut files = vec![std::path::PathBuf::from("/usr/share/ovmf/OVMF.fd")];
    files.push(common::workspace().join("target/ovmf/out/OVMF.inteltdx.fd"));
    for f in files {
        let data = std::fs::read(&f).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/setup.sh and scripts/build-ovmf.sh)",
                f.display()
            )
        });
        let fw = Firmware::parse(data).unwrap();
        assert_eq!(
            hex::encode(mrtd(&fw, false).unwrap()),
            hex::encode(igvm_mrtd(&fw)),
            "{}",
            f.display()
        );
    }
}
