//! What a firmware image can be used for: one verdict per launch type, with the
//! reason when it cannot. `cocos-measure inspect` prints this; the image builder uses
//! it to write "cannot measure kernels with this firmware" instead of a digest.

use crate::hashes::PADDED_TABLE_LEN;
use crate::ovmf::{Firmware, Parsed, SevSectionKind, PAGE_SIZE};

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

/// One verdict per launch type.
pub fn capabilities(fw: &Firmware) -> Vec<Capability> {
    let cap = |launch, problem: Option<String>| Capability {
        launch,
        supported: problem.is_none(),
        note: problem,
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
    for c in out.iter_mut() {
        if c.supported
            && matches!(
                c.launch,
                LaunchType::SevEs | LaunchType::Snp | LaunchType::SnpKernelHashes
            )
        {
            c.note.clone_from(&one_cpu);
        }
    }
    out
}
