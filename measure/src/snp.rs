//! SEV-SNP launch digests: the SHA-384 chain of PAGE_INFO records (SNP firmware ABI,
//! "Layout of the PAGE_INFO structure") over the firmware pages, the SEV metadata
//! sections and the vCPUs' VMSAs, in the order QEMU issues SNP_LAUNCH_UPDATE.
//!
//! Two steps: [`SnpPrepared::new`] hashes the firmware pages once (the expensive part,
//! spread over the available cores), [`SnpPrepared::digest`] finishes for one kernel
//! command line, vCPU count, vCPU signature, guest-feature value and VMM in
//! microseconds.

use sha2::{Digest, Sha384};

use crate::hashes::KernelHashes;
use crate::ovmf::{Firmware, SevSection, SevSectionKind, PAGE_SIZE};
use crate::vmsa::{VmmType, VmsaPages};
use crate::{FirmwareError, MeasureError};

/// A SHA-384 digest.
pub use crate::bytes::Digest384;

/// Largest vCPU count accepted (KVM_MAX_VCPUS on x86_64).
pub const MAX_VCPUS: u32 = 4096;

/// Most pages the SEV metadata sections may declare in total (4 GiB).
pub const MAX_METADATA_PAGES: u64 = 1 << 20;

/// PAGE_INFO page types.
mod page_type {
    pub const NORMAL: u8 = 0x01;
    pub const VMSA: u8 = 0x02;
    pub const ZERO: u8 = 0x03;
    pub const UNMEASURED: u8 = 0x04;
    pub const SECRETS: u8 = 0x05;
    pub const CPUID: u8 = 0x06;
}

/// VMSA pages are recorded at GPA (u64)-1, page-aligned and cut to 52 bits.
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// The SNP guest context's launch digest as it is extended page by page.
#[derive(Debug, Clone)]
pub struct Gctx {
    ld: Digest384,
}

impl Default for Gctx {
    fn default() -> Self {
        Gctx { ld: [0; 48] }
    }
}

impl Gctx {
    /// Starts from a given digest (e.g. a precomputed firmware hash).
    pub fn from_seed(ld: Digest384) -> Self {
        Gctx { ld }
    }

    /// The current launch digest.
    pub fn ld(&self) -> Digest384 {
        self.ld
    }

    /// Extends with one PAGE_INFO record.
    pub fn update(&mut self, page_type: u8, gpa: u64, contents: &Digest384) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        // is_imi, vmpl3/2/1 permissions and the reserved byte stay 0.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = Sha384::digest(info).into();
    }

    /// Extends with already-hashed normal pages starting at `gpa`.
    pub fn update_hashed_pages(&mut self, gpa: u64, page_digests: &[Digest384]) {
        for (i, d) in page_digests.iter().enumerate() {
            self.update(page_type::NORMAL, gpa + (i * PAGE_SIZE) as u64, d);
        }
    }

    /// Extends with normal pages (length must be a multiple of 4 KiB).
    pub fn update_normal_pages(&mut self, gpa: u64, data: &[u8]) {
        let digests = page_digests(data);
        self.update_hashed_pages(gpa, &digests);
    }

    fn update_repeated(&mut self, page_type: u8, gpa: u64, len: u64) {
        let zeros = [0u8; 48];
        let mut off = 0;
        while off < len {
            self.update(page_type, gpa + off, &zeros);
            off += PAGE_SIZE as u64;
        }
    }

    /// Extends with a VMSA page whose SHA-384 is `digest`.
    pub fn update_vmsa(&mut self, digest: &Digest384) {
        self.update(page_type::VMSA, VMSA_GPA, digest);
    }
}

/// SHA-384 of each 4 KiB page, computed on all available cores for large inputs.
pub fn page_digests(data: &[u8]) -> Vec<Digest384> {
    let pages: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || pages.len() < 64 {
        return pages.iter().map(|p| Sha384::digest(p).into()).collect();
    }
    let per = pages.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = pages
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| Sha384::digest(p).into())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Per-launch SNP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpParams {
    /// Number of vCPUs (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// CPUID signature placed in each VMSA's RDX (QEMU only).
    pub vcpu_sig: u64,
    /// SEV_FEATURES of the VMSAs (0x1 = SNP active).
    pub guest_features: u64,
    /// The VMM that builds the VMSAs and issues the launch updates.
    pub vmm: VmmType,
}

/// Validates a vCPU count.
pub fn check_vcpus(vcpus: u64) -> Result<u32, MeasureError> {
    match u32::try_from(vcpus) {
        Ok(n) if (1..=MAX_VCPUS).contains(&n) => Ok(n),
        _ => Err(MeasureError::BadVcpus {
            got: vcpus,
            max: MAX_VCPUS,
        }),
    }
}

/// Firmware state prepared once for many SNP digests.
#[derive(Debug, Clone)]
pub struct SnpPrepared {
    ovmf_hash: Digest384,
    sections: Vec<SevSection>,
    hash_table_gpa: Result<Option<u32>, FirmwareError>,
    reset_eip: Result<u32, FirmwareError>,
}

impl SnpPrepared {
    /// Hashes the firmware pages (at 4 GiB − size).
    pub fn new(fw: &Firmware) -> Result<Self, MeasureError> {
        if !fw.size().is_multiple_of(PAGE_SIZE) {
            return Err(MeasureError::FirmwareNotPageMultiple { size: fw.size() });
        }
        let mut g = Gctx::default();
        g.update_normal_pages(fw.gpa()?, fw.data());
        Ok(Self::with_ovmf_hash(fw, g.ld()))
    }

    /// Uses a precomputed firmware hash (`snp:ovmf-hash`) instead of the image's pages;
    /// the image still supplies the metadata and the reset EIP.
    pub fn with_ovmf_hash(fw: &Firmware, ovmf_hash: Digest384) -> Self {
        SnpPrepared {
            ovmf_hash,
            sections: fw.sev_sections().to_vec(),
            hash_table_gpa: fw.sev_hashes_table_gpa(),
            reset_eip: fw.sev_es_reset_eip(),
        }
    }

    /// The launch digest after the firmware pages (what `snp:ovmf-hash` prints).
    pub fn ovmf_hash(&self) -> Digest384 {
        self.ovmf_hash
    }

    fn has_kernel_hashes_section(&self) -> bool {
        self.sections
            .iter()
            .any(|s| s.kind() == Some(SevSectionKind::SnpKernelHashes))
    }

    /// Whether kernel/initrd/cmdline can be measured with this firmware.
    pub fn supports_kernel_hashes(&self) -> bool {
        self.has_kernel_hashes_section() && matches!(self.hash_table_gpa, Ok(Some(_)))
    }

    /// The full launch digest.
    pub fn digest(
        &self,
        kernel: Option<&KernelHashes>,
        p: &SnpParams,
    ) -> Result<Digest384, MeasureError> {
        let mut g = Gctx::from_seed(self.ovmf_hash);
        self.update_metadata(&mut g, kernel, p.vmm)?;
        let pages = VmsaPages::new(self.reset_eip.clone()?, p.guest_features, p.vcpu_sig, p.vmm);
        let vcpus = check_vcpus(u64::from(p.vcpus))?;
        let ap = pages.ap_for(vcpus)?;
        g.update_vmsa(&Sha384::digest(&pages.bsp[..]).into());
        if let Some(ap) = ap {
            let d: Digest384 = Sha384::digest(&ap[..]).into();
            for _ in 1..vcpus {
                g.update_vmsa(&d);
            }
        }
        Ok(g.ld())
    }

    /// The VMSA pages a launch with these settings measures (for `--dump-vmsa`).
    pub fn vmsa_pages(&self, p: &SnpParams) -> Result<Vec<Box<[u8; 4096]>>, MeasureError> {
        VmsaPages::new(self.reset_eip.clone()?, p.guest_features, p.vcpu_sig, p.vmm).pages(p.vcpus)
    }

    fn update_metadata(
        &self,
        g: &mut Gctx,
        kernel: Option<&KernelHashes>,
        vmm: VmmType,
    ) -> Result<(), MeasureError> {
        // Bound the work a hostile image can ask for: no launch validates more than the
        // 4 GiB below the firmware, so neither may the metadata (1 Mi pages in total).
        let mut total_pages = 0u64;
        for (index, s) in self.sections.iter().enumerate() {
            total_pages += u64::from(s.size).div_ceil(PAGE_SIZE as u64);
            if total_pages > MAX_METADATA_PAGES {
                return Err(MeasureError::BadSection {
                    index,
                    what: format!("type {:#x}", s.raw_type),
                    why: "the metadata sections declare more than 4 GiB of pages in total".into(),
                });
            }
        }
        for (index, s) in self.sections.iter().enumerate() {
            let bad = |why: &str| MeasureError::BadSection {
                index,
                what: s
                    .kind()
                    .map_or_else(|| format!("type {:#x}", s.raw_type), |k| k.name().into()),
                why: why.to_owned(),
            };
            let Some(kind) = s.kind() else {
                return Err(bad(
                    "unknown section type (QEMU refuses it too); the firmware is newer than this \
                     tool or corrupt",
                ));
            };
            let gpa = u64::from(s.gpa);
            let size = u64::from(s.size);
            let page_multiple = || {
                if size % PAGE_SIZE as u64 == 0 {
                    Ok(())
                } else {
                    Err(bad("size is not a multiple of 4096"))
                }
            };
            match kind {
                SevSectionKind::SnpSecMem => {
                    page_multiple()?;
                    let t = if vmm == VmmType::Gce {
                        page_type::UNMEASURED
                    } else {
                        page_type::ZERO
                    };
                    g.update_repeated(t, gpa, size);
                }
                SevSectionKind::SnpSecrets => g.update(page_type::SECRETS, gpa, &[0; 48]),
                SevSectionKind::Cpuid => {
                    if vmm != VmmType::Ec2 {
                        g.update(page_type::CPUID, gpa, &[0; 48]);
                    }
                }
                SevSectionKind::SnpKernelHashes => match kernel {
                    Some(k) => {
                        let table_gpa = self
                            .hash_table_gpa
                            .clone()?
                            .ok_or(MeasureError::NoSevHashTable)?;
                        let offset = table_gpa & 0xfff;
                        let page = k.page(offset as usize).filter(|_| s.size == 4096).ok_or(
                            MeasureError::HashTableDoesNotFit {
                                gpa: table_gpa,
                                offset,
                                size: s.size,
                            },
                        )?;
                        g.update(page_type::NORMAL, gpa, &Sha384::digest(&page[..]).into());
                    }
                    None => {
                        page_multiple()?;
                        g.update_repeated(page_type::ZERO, gpa, size);
                    }
                },
                SevSectionKind::SvsmCaa => {
                    page_multiple()?;
                    g.update_repeated(page_type::ZERO, gpa, size);
                }
            }
        }
        if vmm == VmmType::Ec2 {
            // EC2 measures the CPUID page after all other metadata pages.
            for s in &self.sections {
                if s.kind() == Some(SevSectionKind::Cpuid) {
                    g.update(page_type::CPUID, u64::from(s.gpa), &[0; 48]);
                }
            }
        }
        if kernel.is_some() && !self.has_kernel_hashes_section() {
            return Err(MeasureError::NoSnpKernelHashes);
        }
        Ok(())
    }
}

/// Parses a precomputed OVMF hash (96 hex digits).
pub fn parse_ovmf_hash(s: &str) -> Result<Digest384, MeasureError> {
    let mut out = [0u8; 48];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| MeasureError::BadOvmfHash(s.to_owned()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_record_layout() {
        // One update from the zero digest: SHA-384 over the 112-byte record.
        let mut g = Gctx::default();
        g.update(page_type::NORMAL, 0xffff_f000, &[0x11; 48]);
        let mut rec = vec![0u8; 48];
        rec.extend([0x11; 48]);
        rec.extend([0x70, 0, 1, 0, 0, 0, 0, 0]);
        rec.extend(0xffff_f000u64.to_le_bytes());
        let want: Digest384 = Sha384::digest(&rec).into();
        assert_eq!(g.ld(), want);
    }

    #[test]
    fn parallel_page_digests_match_sequential() {
        let data: Vec<u8> = (0..4096 * 200).map(|i| (i * 7 % 251) as u8).collect();
        let seq: Vec<Digest384> = data
            .chunks(4096)
            .map(|p| Sha384::digest(p).into())
            .collect();
        assert_eq!(page_digests(&data), seq);
    }

    #[test]
    fn metadata_work_is_bounded() {
        let p = SnpPrepared {
            ovmf_hash: [0; 48],
            sections: vec![
                SevSection {
                    gpa: 0,
                    size: 0xffff_f000,
                    raw_type: 1
                };
                2
            ],
            hash_table_gpa: Ok(None),
            reset_eip: Ok(0x80_b004),
        };
        let params = SnpParams {
            vcpus: 1,
            vcpu_sig: 0,
            guest_features: 1,
            vmm: VmmType::Qemu,
        };
        let t = std::time::Instant::now();
        assert!(matches!(
            p.digest(None, &params),
            Err(MeasureError::BadSection { index: 1, .. })
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn vcpu_bounds() {
        assert!(check_vcpus(0).is_err());
        assert!(check_vcpus(4097).is_err());
        assert_eq!(check_vcpus(512).unwrap(), 512);
    }
}
