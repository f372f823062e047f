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
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use cocos_measure::ovmf::Parsed;
use cocos_measure::tdx::mrtd;
use cocos_measure::Firmware;
use igvm::IgvmDirectiveHeader;
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};
use rand::rngs::StdRng;
use rand::SeedableRng;

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

#[test]
fn mrtd_matches_igvm_on_random_tdvf_images() {
    let mut rng = StdRng::seed_from_u64(cocos_testkit::seed("mrtd igvm"));
    for i in 0..250 {
        let img = cocos_testkit::firmware::synth_tdvf(&mut rng);
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
    files.push(cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.inteltdx.fd"));
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
