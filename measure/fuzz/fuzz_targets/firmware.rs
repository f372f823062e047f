//! Fuzz target owning the firmware-parsing surface of `cocos-measure`: arbitrary bytes go
//! through `Firmware::parse`; a parsed image is then driven through `inspect`, every
//! accessor, and (for images up to 256 KiB) the SEV-SNP and SEV / SEV-ES digests with and
//! without kernel hashes, for 1 and 3 vCPUs and every VMM. Nothing may panic, and a
//! successful SNP kernel-hashes digest must agree with `inspect`'s verdict.
//!
//! SNP digests are skipped when the SEV metadata declares more than
//! `MAX_METADATA_PAGES` pages in total: every declared page costs one SHA-384 per digest,
//! so a 64 KiB image can legitimately ask for ~2^20 hashes per section and would only
//! turn the run into a timeout hunt.

#![no_main]

use cocos_measure::inspect::{self, LaunchType};
use cocos_measure::ovmf::{Parsed, PAGE_SIZE};
use cocos_measure::{Firmware, KernelHashes, SevPrepared, SnpParams, SnpPrepared, VmmType};
use libfuzzer_sys::fuzz_target;

/// Images larger than this are only parsed and inspected, not measured.
const DIGEST_MAX_SIZE: usize = 256 * 1024;
/// Upper bound on SEV-metadata pages (summed over sections) for which SNP digests run.
const MAX_METADATA_PAGES: u64 = 1 << 12;
/// A Milan-like CPUID signature for the VMSA's RDX.
const VCPU_SIG: u64 = 0x00a0_0f11;
/// SEV_FEATURES with SNP active.
const SNP_FEATURES: u64 = 0x1;

fuzz_target!(|data: &[u8]| {
    let Ok(fw) = Firmware::parse(data.to_vec()) else {
        return;
    };

    let edk2 = cocos_measure::edk2::analyse(fw.data());
    let caps = inspect::capabilities(&fw, &edk2);
    assert_eq!(caps.len(), 6, "one verdict per launch type");
    let supported = |l: LaunchType| caps.iter().any(|c| c.launch == l && c.supported);
    assert!(supported(LaunchType::Sev), "plain SEV is always possible");
    let _ = inspect::snp_kernel_hashes_problem(&fw);

    let _ = fw.sev_es_reset_eip();
    let hashes_gpa = fw.sev_hashes_table_gpa();
    assert_eq!(fw.sev_hashes_supported(), matches!(hashes_gpa, Ok(Some(g)) if g != 0));
    let _ = fw.svsm_reset_offset();
    let _ = fw.gpa();
    let _ = fw.table().iter().map(|e| e.name()).count();
    if let Parsed::Valid(md) = fw.tdx_metadata() {
        for s in &md.sections {
            let end = u64::from(s.data_offset) + u64::from(s.raw_size);
            assert!(end <= fw.size() as u64, "TDX section data outside the image");
            let _ = s.mr_extend();
        }
        // MRTD costs a hash per declared page: only for images that declare few.
        let pages: u64 = md.sections.iter().map(|s| s.memory_size / 4096).fold(0, u64::saturating_add);
        if pages <= MAX_METADATA_PAGES {
            for two_pass in [false, true] {
                assert!(cocos_measure::tdx::mrtd(&fw, two_pass).is_ok(), "valid TDVF metadata measures");
            }
        }
    }
    let sections = fw.sev_sections();
    assert!(sections.is_empty() || fw.has_sev_metadata());
    for s in sections {
        let _ = s.kind().map(|k| k.name());
    }

    if fw.size() > DIGEST_MAX_SIZE {
        return;
    }
    let kernel = KernelHashes::new([0x5a; 32], None, b"console=ttyS0");
    let kernels = [None, Some(&kernel)];

    if let Ok(snp) = SnpPrepared::new(&fw) {
        let _ = snp.ovmf_hash();
        let _ = snp.supports_kernel_hashes();
        let pages: u64 = sections
            .iter()
            .map(|s| u64::from(s.size).div_ceil(PAGE_SIZE as u64).max(1))
            .sum();
        if pages <= MAX_METADATA_PAGES {
            for k in kernels {
                for vcpus in [1, 3] {
                    for vmm in VmmType::ALL {
                        let p = SnpParams { vcpus, vcpu_sig: VCPU_SIG, guest_features: SNP_FEATURES, vmm };
                        let ok = snp.digest(k, &p).is_ok();
                        if ok && k.is_some() {
                            assert!(
                                supported(LaunchType::SnpKernelHashes),
                                "SNP kernel-hashes digest succeeded but inspect says unsupported"
                            );
                        }
                    }
                }
            }
        }
    }

    let sev = SevPrepared::new(&fw);
    for k in kernels {
        let _ = sev.sev_digest(k);
        for vcpus in [1, 3] {
            for vmm in VmmType::ALL {
                let _ = sev.seves_digest(k, vcpus, VCPU_SIG, vmm);
            }
        }
    }
});
