//! What a firmware image can be used for: one verdict per launch type, with the
//! reason when it cannot. `cocos-measure inspect` prints this; the image builder uses
//! it to write "cannot measure kernels with this firmware" instead of a digest.

use crate::edk2::Edk2Behaviour;
use crate::hashes::PADDED_TABLE_LEN;
use crate::ovmf::{Firmware, Parsed, SevSectionKind, FOUR_GIB, PAGE_SIZE};

/// Launch types a firmware may support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchType {
    /// SEV: digest of the image.
    Sev,
    /// SEV with measured kernel/initrd/cmdline.
    SevKernelHashes,
    /// SEV-ES.
    SevEs,
    /// SEV-SNP.
    Snp,
    /// SEV-SNP with measured kernel/initrd/cmdline (QEMU kernel-hashes=on).
    SnpKernelHashes,
    /// Intel TDX.
    Tdx,
}

/// A verdict for one launch type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Capability {
    /// The launch type.
    pub launch: LaunchType,
    /// Whether it works.
    pub supported: bool,
    /// Why not, or a caveat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Oddities that do not stop a launch but that a verifier should know of.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

const AMDSEV_HINT: &str =
    "build an OVMF from OvmfPkg/AmdSev/AmdSevX64.dsc (scripts/build-ovmf.sh); \
Debian's packaged OVMF has no kernel-hashes section";

/// Why SNP kernel hashes cannot be measured with this firmware, if they cannot.
pub fn snp_kernel_hashes_problem(fw: &Firmware) -> Option<String> {
    let Some(sec) = fw
        .sev_sections()
        .iter()
        .find(|s| s.kind() == Some(SevSectionKind::SnpKernelHashes))
    else {
        if fw.sev_hashes_supported() && fw.has_sev_metadata() {
            // A non-zero SEV_HASH_TABLE_RV is what AmdSevX64 builds carry; edk2 added
            // the SNP_KERNEL_HASHES metadata section only in stable202402 (9eec96bd4f).
            return Some(
                "no SNP_KERNEL_HASHES section in the SEV metadata: this is an AmdSevX64 build \
                 (it has a SEV hash table) from before edk2 stable202402, which added that \
                 section; build one from edk2 stable202402 or later (scripts/build-ovmf.sh)"
                    .into(),
            );
        }
        return Some(format!(
            "no SNP_KERNEL_HASHES section in the SEV metadata: {AMDSEV_HINT}"
        ));
    };
    match fw.sev_hashes_table_gpa() {
        Ok(Some(gpa)) => {
            let off = (gpa & 0xfff) as usize;
            if sec.size as usize != PAGE_SIZE || off + PADDED_TABLE_LEN > PAGE_SIZE {
                Some(format!(
                    "hash table at GPA {gpa:#x} does not fit the {}-byte SNP_KERNEL_HASHES section",
                    sec.size
                ))
            } else {
                None
            }
        }
        Ok(None) => Some(format!(
            "no SEV_HASH_TABLE_RV entry in the footer table: {AMDSEV_HINT}"
        )),
        Err(e) => Some(e.to_string()),
    }
}

fn snp_problem(fw: &Firmware) -> Option<String> {
    if let Err(e) = fw.sev_es_reset_eip() {
        return Some(e.to_string());
    }
    if !fw.has_sev_metadata() {
        return Some(
            "no OVMF_SEV_METADATA entry: the firmware declares no SNP memory layout (not built \
             with SEV-SNP support)"
                .into(),
        );
    }
    if let Some((i, s)) = fw
        .sev_sections()
        .iter()
        .enumerate()
        .find(|(_, s)| s.kind().is_none())
    {
        return Some(format!(
            "SEV metadata section {i} has unknown type {:#x}",
            s.raw_type
        ));
    }
    if !fw.size().is_multiple_of(PAGE_SIZE) {
        return Some(format!("size {} is not a multiple of 4096", fw.size()));
    }
    None
}

/// SNP metadata sections that a launch accepts but that look wrong: empty sections,
/// and sections overlapping the flash image mapped below 4 GiB (the firmware pages are
/// measured as data already; a section there would be measured twice or clobber it).
pub fn snp_section_warnings(fw: &Firmware) -> Vec<String> {
    let flash_start = FOUR_GIB.saturating_sub(fw.size() as u64);
    fw.sev_sections()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let name = s.kind().map_or("unknown", |k| k.name());
            let end = u64::from(s.gpa) + u64::from(s.size);
            if s.size == 0 {
                Some(format!("SEV metadata section {i} ({name}) at {:#x} has size 0", s.gpa))
            } else if end > flash_start && u64::from(s.gpa) < FOUR_GIB {
                Some(format!(
                    "SEV metadata section {i} ({name}) {:#x}..{end:#x} overlaps the firmware image mapped at {flash_start:#x}..4 GiB",
                    s.gpa
                ))
            } else {
                None
            }
        })
        .collect()
}

/// One verdict per launch type; `edk2` (what [`crate::edk2::analyse`] found) adds
/// whether a TD's RTMRs are extended.
pub fn capabilities(fw: &Firmware, edk2: &Edk2Behaviour) -> Vec<Capability> {
    let cap = |launch, problem: Option<String>| Capability {
        launch,
        supported: problem.is_none(),
        note: problem,
        warnings: Vec::new(),
    };
    let reset = fw.sev_es_reset_eip();
    let one_cpu = matches!(reset, Ok(0)).then(|| "AP reset EIP is 0: 1 vCPU only".to_owned());
    let sev_hashes = if fw.sev_hashes_supported() {
        None
    } else {
        Some(format!(
            "no SEV_HASH_TABLE_RV entry with a non-zero GPA: {AMDSEV_HINT}"
        ))
    };
    let snp = snp_problem(fw);
    let snp_k = snp.clone().or_else(|| snp_kernel_hashes_problem(fw));
    let tdx = match fw.tdx_metadata() {
        Parsed::Valid(_) => None,
        Parsed::Absent => {
            Some("no TDX_METADATA_OFFSET entry: not a TDX (IntelTdx/TDVF) build".into())
        }
        Parsed::Invalid(e) => Some(e.to_string()),
    };
    let mut out = vec![
        cap(LaunchType::Sev, None),
        cap(LaunchType::SevKernelHashes, sev_hashes),
        cap(LaunchType::SevEs, reset.err().map(|e| e.to_string())),
        cap(LaunchType::Snp, snp),
        cap(LaunchType::SnpKernelHashes, snp_k),
        cap(LaunchType::Tdx, tdx),
    ];
    let snp_warnings = snp_section_warnings(fw);
    for c in out.iter_mut() {
        if c.supported
            && matches!(
                c.launch,
                LaunchType::SevEs | LaunchType::Snp | LaunchType::SnpKernelHashes
            )
        {
            c.note.clone_from(&one_cpu);
        }
        if matches!(c.launch, LaunchType::Snp | LaunchType::SnpKernelHashes) {
            c.warnings.clone_from(&snp_warnings);
        }
        if c.launch == LaunchType::Tdx && c.supported {
            c.note = match edk2.extends_rtmrs {
                Some(true) => Some("RTMRs extended (TdTcg2Dxe present)".into()),
                Some(false) => Some(
                    "RTMRs not extended by this firmware (no TdTcg2Dxe): a TD on it reports RTMR0-2 as zero, so nothing measures its kernel, initrd or command line".into(),
                ),
                None => Some("cannot tell whether RTMRs are extended (firmware volumes unreadable)".into()),
            };
            c.warnings.clone_from(&edk2.problems);
        }
    }
    out
}
