//! The launch measurement each VM's attestation must show, computed with
//! `cocos-measure`'s library. The firmware-dependent work (SNP page hashes, TDX MRTD,
//! the kernel's Authenticode digest, the initrd's SHA-384) is done once per release
//! ([`Expected::new`]); a launch only adds its vCPU count and final command line
//! ([`Expected::compute`]), which takes well under a millisecond.

use cocos_measure::rtmr::Platform;
use cocos_measure::tdx_launch::{self, TdxFirmware, TdxInitrd, TdxKernel, TdxLaunch};
use cocos_measure::tdx_rules::{QemuVersion, Stated};
use cocos_measure::{cpu, Firmware, KernelHashes, SnpParams, SnpPrepared, VmmType};
use serde_json::{json, Value};

/// What to compute for each launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nothing (a plain VM with no TEE to compare against).
    None,
    /// The SEV-SNP launch digest (QEMU, kernel-hashes=on).
    Snp {
        /// vCPU type name (as `cocos-measure vcpu-types` lists).
        vcpu_type: String,
        /// SEV_FEATURES.
        guest_features: u64,
    },
    /// TDX MRTD and RTMR1/2 (RTMR0 needs the host's ACPI tables).
    Tdx {
        /// Guest RAM in bytes.
        memory: u64,
        /// The QEMU that runs the guests (decides which kernel bytes OVMF measures);
        /// `None`: unknown, the measurement says what it assumed.
        qemu: Option<QemuVersion>,
    },
}

impl Target {
    /// "none", "snp" or "tdx".
    pub fn name(&self) -> &'static str {
        match self {
            Target::None => "none",
            Target::Snp { .. } => "snp",
            Target::Tdx { .. } => "tdx",
        }
    }
}

/// Why a measurement cannot be computed.
#[derive(Debug, thiserror::Error)]
#[error("expected measurement: {0}")]
pub struct ExpectedError(String);

fn err(e: impl std::fmt::Display) -> ExpectedError {
    ExpectedError(e.to_string())
}

enum State {
    None,
    Snp {
        prepared: Box<SnpPrepared>,
        vcpu_type: &'static str,
        vcpu_sig: u64,
        guest_features: u64,
    },
    Tdx {
        fw: Box<TdxFirmware>,
        kernel: Box<TdxKernel>,
        initrd: TdxInitrd,
        launch: TdxLaunch,
    },
}

/// Prepared state for one release and firmware.
pub struct Expected {
    state: State,
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match self.state {
            State::None => "none",
            State::Snp { .. } => "snp",
            State::Tdx { .. } => "tdx",
        };
        f.debug_struct("Expected").field("target", &t).finish()
    }
}

impl Expected {
    /// Prepares `target` for this firmware, kernel and initrd (the verified bytes).
    pub fn new(
        target: &Target,
        firmware: Vec<u8>,
        kernel: Vec<u8>,
        initrd: &[u8],
    ) -> Result<Self, ExpectedError> {
        let state = match target {
            Target::None => State::None,
            Target::Snp {
                vcpu_type,
                guest_features,
            } => {
                let (name, sig) = cpu::lookup(vcpu_type).map_err(err)?;
                let fw = Firmware::parse(firmware).map_err(err)?;
                let prepared = SnpPrepared::new(&fw).map_err(err)?;
                if !prepared.supports_kernel_hashes() {
                    return Err(err("this firmware has no SNP_KERNEL_HASHES section, so an SNP launch cannot measure kernel, initrd and command line (use an OvmfPkg/AmdSev build)"));
                }
                State::Snp {
                    prepared: Box::new(prepared),
                    vcpu_type: name,
                    vcpu_sig: sig,
                    guest_features: *guest_features,
                }
            }
            Target::Tdx { memory, qemu } => {
                let fw = TdxFirmware::new(Firmware::parse(firmware).map_err(err)?).map_err(err)?;
                // Compute (and cache) MRTD and read the firmware's drivers now rather
                // than on the first launch.
                fw.mrtd(false).map_err(err)?;
                fw.behaviour();
                State::Tdx {
                    fw: Box::new(fw),
                    kernel: Box::new(TdxKernel::new(kernel).map_err(err)?),
                    initrd: TdxInitrd::from_bytes(initrd),
                    launch: TdxLaunch {
                        memory: *memory,
                        stated: Stated {
                            qemu: *qemu,
                            ..Stated::default()
                        },
                        ..TdxLaunch::default()
                    },
                }
            }
        };
        Ok(Self { state })
    }

    /// The measurement of one launch, as JSON (`tee` plus the registers; field names as
    /// `cocos-measure snp --json` / `cocos-measure tdx --json` print them).
    pub fn compute(
        &self,
        kernel_sha256: [u8; 32],
        initrd_sha256: [u8; 32],
        cmdline: &str,
        vcpus: u32,
    ) -> Result<Value, ExpectedError> {
        match &self.state {
            State::None => {
                Ok(json!({"tee": "none", "note": "plain launch: no TEE, nothing to attest"}))
            }
            State::Snp {
                prepared,
                vcpu_type,
                vcpu_sig,
                guest_features,
            } => {
                let hashes =
                    KernelHashes::new(kernel_sha256, Some(initrd_sha256), cmdline.as_bytes());
                let p = SnpParams {
                    vcpus,
                    vcpu_sig: *vcpu_sig,
                    guest_features: *guest_features,
                    vmm: VmmType::Qemu,
                };
                let d = prepared.digest(Some(&hashes), &p).map_err(err)?;
                Ok(json!({
                    "tee": "snp",
                    "measurement": hex::encode(d),
                    "vcpus": vcpus,
                    "vcpu_type": vcpu_type,
                    "vcpu_sig": format!("{vcpu_sig:#x}"),
                    "guest_features": format!("{guest_features:#x}"),
                    "vmm_type": "QEMU",
                    "ovmf_hash": hex::encode(prepared.ovmf_hash()),
                    "cmdline": cmdline,
                }))
            }
            State::Tdx {
                fw,
                kernel,
                initrd,
                launch,
            } => {
                let m = tdx_launch::measure_launch(
                    fw,
                    Some(kernel),
                    Some(initrd),
                    cmdline,
                    &Platform::default(),
                    launch,
                )
                .map_err(err)?;
                let mut v = m.registers_json();
                if let Some(o) = v.as_object_mut() {
                    o.insert("tee".into(), json!("tdx"));
                    o.insert("memory".into(), json!(launch.memory));
                    o.insert("qemu_version".into(), json!(launch.stated.qemu));
                    o.insert("vcpus".into(), json!(vcpus));
                    o.insert("cmdline".into(), json!(cmdline));
                }
                Ok(v)
            }
        }
    }
}
