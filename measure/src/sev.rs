//! SEV and SEV-ES launch digests: SHA-256 over the firmware image, the padded
//! kernel-hashes table when a kernel is measured, and (SEV-ES) each vCPU's VMSA page.
//! Prepared once per firmware; finishing per command line re-hashes only a few
//! hundred bytes plus the VMSAs.

use sha2::{Digest, Sha256};

use crate::hashes::KernelHashes;
use crate::ovmf::Firmware;
use crate::snp::check_vcpus;
use crate::vmsa::{VmmType, VmsaPages};
use crate::{FirmwareError, MeasureError};

/// Firmware state prepared once for many SEV / SEV-ES digests.
#[derive(Debug, Clone)]
pub struct SevPrepared {
    after_firmware: Sha256,
    hashes_supported: bool,
    reset_eip: Result<u32, FirmwareError>,
}

impl SevPrepared {
    /// Hashes the firmware image.
    pub fn new(fw: &Firmware) -> Self {
        let mut h = Sha256::new();
        h.update(fw.data());
        SevPrepared {
            after_firmware: h,
            hashes_supported: fw.sev_hashes_supported(),
            reset_eip: fw.sev_es_reset_eip(),
        }
    }

    fn start(&self, kernel: Option<&KernelHashes>) -> Result<Sha256, MeasureError> {
        let mut h = self.after_firmware.clone();
        if let Some(k) = kernel {
            if !self.hashes_supported {
                return Err(MeasureError::NoSevHashTable);
            }
            h.update(k.table());
        }
        Ok(h)
    }

    /// The SEV (no VMSA) launch digest.
    pub fn sev_digest(&self, kernel: Option<&KernelHashes>) -> Result<[u8; 32], MeasureError> {
        Ok(self.start(kernel)?.finalize().into())
    }

    /// The SEV-ES launch digest (SEV_FEATURES 0 in the VMSAs).
    pub fn seves_digest(
        &self,
        kernel: Option<&KernelHashes>,
        vcpus: u32,
        vcpu_sig: u64,
        vmm: VmmType,
    ) -> Result<[u8; 32], MeasureError> {
        let mut h = self.start(kernel)?;
        let vcpus = check_vcpus(u64::from(vcpus))?;
        let pages = self.vmsa(vcpu_sig, vmm)?;
        let ap = pages.ap_for(vcpus)?;
        h.update(&pages.bsp[..]);
        if let Some(ap) = ap {
            for _ in 1..vcpus {
                h.update(&ap[..]);
            }
        }
        Ok(h.finalize().into())
    }

    /// The SEV-ES VMSA pages (for `--dump-vmsa`).
    pub fn vmsa(&self, vcpu_sig: u64, vmm: VmmType) -> Result<VmsaPages, MeasureError> {
        Ok(VmsaPages::new(self.reset_eip.clone()?, 0, vcpu_sig, vmm))
    }
}
