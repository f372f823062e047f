//! SEV-SNP through the facade: a prepared boot ([`SnpBoot`]) measures launches
//! ([`SnpLaunch`]: vCPU count and model, SEV features, VMM) into [`SnpMeasurement`]s,
//! one at a time or as a matrix.

use serde::{Deserialize, Serialize};

use crate::bytes::{hex_array, hex_u64, Digest384};
use crate::hashes::KernelHashes;
use crate::snp::{SnpParams, SnpPrepared};
use crate::vmsa::VmmType;
use crate::{cpu, MeasureError};

/// A vCPU model as the VMSAs carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vcpu {
    /// The type name, when given by name (`cocos-measure vcpu-types`).
    pub name: Option<&'static str>,
    /// CPUID signature (family/model/stepping).
    pub sig: u64,
}

impl Vcpu {
    /// A known vCPU type by name (case-insensitive).
    pub fn named(name: &str) -> Result<Self, MeasureError> {
        let (name, sig) = cpu::lookup(name)?;
        Ok(Self {
            name: Some(name),
            sig,
        })
    }
}

/// The per-launch settings of an SNP guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpLaunch {
    /// vCPU count.
    pub vcpus: u32,
    /// vCPU model.
    pub vcpu: Vcpu,
    /// SEV_FEATURES of the VMSAs.
    pub guest_features: u64,
    /// The VMM that builds the VMSAs.
    pub vmm: VmmType,
}

/// One SEV-SNP launch digest with the settings that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpMeasurement {
    /// The launch digest (MEASUREMENT in the attestation report).
    #[serde(with = "hex_array")]
    pub measurement: Digest384,
    /// vCPU count.
    pub vcpus: u32,
    /// vCPU type name (null for a signature given as a number).
    pub vcpu_type: Option<String>,
    /// CPUID signature in the VMSAs.
    #[serde(with = "hex_u64")]
    pub vcpu_sig: u64,
    /// SEV_FEATURES.
    #[serde(with = "hex_u64")]
    pub guest_features: u64,
    /// The VMM.
    pub vmm_type: VmmType,
    /// The digest after the firmware pages (`snp:ovmf-hash`).
    #[serde(with = "hex_array")]
    pub ovmf_hash: Digest384,
    /// The kernel command line measured (null without a kernel).
    pub cmdline: Option<String>,
}

/// SEV-SNP state for one boot: firmware pages hashed, kernel and initrd digests.
#[derive(Debug, Clone)]
pub struct SnpBoot {
    pub(super) prepared: SnpPrepared,
    pub(super) hashes: Option<([u8; 32], Option<[u8; 32]>)>,
}

impl SnpBoot {
    /// The prepared firmware state (VMSA dumps, metadata).
    pub fn prepared(&self) -> &SnpPrepared {
        &self.prepared
    }

    /// Whether the firmware can measure kernel, initrd and command line.
    pub fn supports_kernel_hashes(&self) -> bool {
        self.prepared.supports_kernel_hashes()
    }

    /// The digest after the firmware pages.
    pub fn ovmf_hash(&self) -> Digest384 {
        self.prepared.ovmf_hash()
    }

    /// QEMU's kernel-hashes table for `cmdline`, if a kernel is booted.
    pub fn kernel_hashes(&self, cmdline: &str) -> Option<KernelHashes> {
        self.hashes
            .map(|(k, i)| KernelHashes::new(k, i, cmdline.as_bytes()))
    }

    /// The launch digest of one launch.
    pub fn measure(&self, cmdline: &str, l: &SnpLaunch) -> Result<SnpMeasurement, MeasureError> {
        let hashes = self.kernel_hashes(cmdline);
        self.measure_with(hashes.as_ref(), cmdline, l)
    }

    fn measure_with(
        &self,
        hashes: Option<&KernelHashes>,
        cmdline: &str,
        l: &SnpLaunch,
    ) -> Result<SnpMeasurement, MeasureError> {
        let p = SnpParams {
            vcpus: l.vcpus,
            vcpu_sig: l.vcpu.sig,
            guest_features: l.guest_features,
            vmm: l.vmm,
        };
        Ok(SnpMeasurement {
            measurement: self.prepared.digest(hashes, &p)?,
            vcpus: l.vcpus,
            vcpu_type: l.vcpu.name.map(str::to_owned),
            vcpu_sig: l.vcpu.sig,
            guest_features: l.guest_features,
            vmm_type: l.vmm,
            ovmf_hash: self.prepared.ovmf_hash(),
            cmdline: hashes.map(|_| cmdline.to_owned()),
        })
    }

    /// Every combination, in the order vCPU type, guest features, vCPU count.
    pub fn matrix(
        &self,
        cmdline: &str,
        vcpu_types: &[Vcpu],
        guest_features: &[u64],
        vcpus: &[u32],
        vmm: VmmType,
    ) -> Result<Vec<SnpMeasurement>, MeasureError> {
        let hashes = self.kernel_hashes(cmdline);
        let mut out = Vec::new();
        for &vcpu in vcpu_types {
            for &features in guest_features {
                for &n in vcpus {
                    let l = SnpLaunch {
                        vcpus: n,
                        vcpu,
                        guest_features: features,
                        vmm,
                    };
                    out.push(self.measure_with(hashes.as_ref(), cmdline, &l)?);
                }
            }
        }
        Ok(out)
    }
}
