//! The launch measurement each VM's attestation must show, computed with
//! `cocos-measure`'s library. The firmware-dependent work (SNP page hashes, TDX MRTD,
//! the kernel's Authenticode digest, the initrd's SHA-384) is done once per release
//! ([`Expected::new`]); a launch only adds its vCPU count and final command line
//! ([`Expected::compute`]), which takes well under a millisecond.

use cocos_measure::rtmr::Platform;
use cocos_measure::tdx_launch::{TdxLaunch, TdxRegisters};
use cocos_measure::tdx_rules::{QemuVersion, Stated};
use cocos_measure::{QemuBoot, SnpBoot, SnpLaunch, SnpMeasurement, TdxBoot, Tee, Vcpu, VmmType};
use serde::{Deserialize, Serialize};

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

/// What one launch's attestation must show; serialised with a `tee` tag and the field
/// names `cocos-measure snp --json` / `cocos-measure tdx --json` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tee", rename_all = "lowercase")]
pub enum ExpectedMeasurement {
    /// A plain launch: nothing to attest.
    None {
        /// Says so.
        note: String,
    },
    /// The SEV-SNP launch digest and its settings.
    Snp(SnpMeasurement),
    /// TDX registers for this launch.
    Tdx(TdxExpected),
}

/// Compact JSON with sorted keys (what the gRPC API's `expected_measurement` carries).
impl std::fmt::Display for ExpectedMeasurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        write!(f, "{v}")
    }
}

/// TDX registers with the launch settings they are for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxExpected {
    /// MRTD, RTMR0–2, notes and rules.
    #[serde(flatten)]
    pub registers: TdxRegisters,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// The QEMU version measured for (null: assumed, see `rules`).
    pub qemu_version: Option<QemuVersion>,
    /// vCPUs (no register depends on it).
    pub vcpus: u32,
    /// The kernel command line measured.
    pub cmdline: String,
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
        boot: Box<SnpBoot>,
        vcpu: Vcpu,
        guest_features: u64,
    },
    Tdx {
        boot: Box<TdxBoot>,
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
    /// Prepares `target` for this firmware, kernel and initrd (the verified bytes)
    /// through `cocos-measure`'s facade ([`QemuBoot`]).
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
                let vcpu = Vcpu::named(vcpu_type).map_err(err)?;
                let tee = Tee::Snp { ovmf_hash: None };
                let boot = QemuBoot::from_bytes(firmware, Some(kernel), Some(initrd), tee)
                    .and_then(|b| b.snp())
                    .map_err(err)?;
                if !boot.supports_kernel_hashes() {
                    return Err(err("this firmware has no SNP_KERNEL_HASHES section, so an SNP launch cannot measure kernel, initrd and command line (use an OvmfPkg/AmdSev build)"));
                }
                State::Snp {
                    boot: Box::new(boot),
                    vcpu,
                    guest_features: *guest_features,
                }
            }
            Target::Tdx { memory, qemu } => {
                // Computes (and caches) MRTD and reads the firmware's drivers now
                // rather than on the first launch.
                let boot = QemuBoot::from_bytes(firmware, Some(kernel), Some(initrd), Tee::Tdx)
                    .and_then(|b| b.tdx())
                    .map_err(err)?;
                State::Tdx {
                    boot: Box::new(boot),
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

    /// The measurement of one launch with this command line and vCPU count.
    pub fn compute(&self, cmdline: &str, vcpus: u32) -> Result<ExpectedMeasurement, ExpectedError> {
        match &self.state {
            State::None => Ok(ExpectedMeasurement::None {
                note: "plain launch: no TEE, nothing to attest".into(),
            }),
            State::Snp {
                boot,
                vcpu,
                guest_features,
            } => {
                let launch = SnpLaunch {
                    vcpus,
                    vcpu: *vcpu,
                    guest_features: *guest_features,
                    vmm: VmmType::Qemu,
                };
                Ok(ExpectedMeasurement::Snp(
                    boot.measure(cmdline, &launch).map_err(err)?,
                ))
            }
            State::Tdx { boot, launch } => {
                let m = boot
                    .measure(cmdline, &Platform::default(), launch)
                    .map_err(err)?;
                Ok(ExpectedMeasurement::Tdx(TdxExpected {
                    registers: m.registers(),
                    memory: launch.memory,
                    qemu_version: launch.stated.qemu,
                    vcpus,
                    cmdline: cmdline.to_owned(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn snp() -> ExpectedMeasurement {
        ExpectedMeasurement::Snp(SnpMeasurement {
            measurement: [0xab; 48],
            vcpus: 4,
            vcpu_type: Some("EPYC-Genoa".into()),
            vcpu_sig: 0x00a1_0f10,
            guest_features: 0x1,
            vmm_type: VmmType::Qemu,
            ovmf_hash: [0x01; 48],
            cmdline: Some("console=ttyS0".into()),
        })
    }

    fn tdx() -> ExpectedMeasurement {
        ExpectedMeasurement::Tdx(TdxExpected {
            registers: TdxRegisters {
                mrtd: [0x11; 48],
                rtmr0: None,
                rtmr1: Some([0x22; 48]),
                rtmr2: Some([0x33; 48]),
                rtmrs_extended: true,
                unavailable: BTreeMap::from([("rtmr0".into(), "needs ACPI".into())]),
                notes: vec!["a note".into()],
                rules: Vec::new(),
            },
            memory: 2 << 30,
            qemu_version: QemuVersion::parse("10.1"),
            vcpus: 2,
            cmdline: "quiet".into(),
        })
    }

    #[test]
    fn the_stored_form_round_trips_with_the_cli_field_names() {
        for e in [
            ExpectedMeasurement::None {
                note: "plain".into(),
            },
            snp(),
            tdx(),
        ] {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(serde_json::from_value::<ExpectedMeasurement>(v).unwrap(), e);
        }
        let v = serde_json::to_value(snp()).unwrap();
        assert_eq!(v["tee"], "snp");
        assert_eq!(v["measurement"], "ab".repeat(48));
        assert_eq!(v["vcpu_sig"], "0xa10f10");
        assert_eq!(v["vmm_type"], "QEMU");
        let v = serde_json::to_value(tdx()).unwrap();
        assert_eq!(v["tee"], "tdx");
        assert_eq!(v["rtmr0"], serde_json::Value::Null);
        assert_eq!(v["unavailable"]["rtmr0"], "needs ACPI");
        assert_eq!(v["qemu_version"], "10.1");
        // The API's text form has sorted keys, as before the type existed.
        let text = snp().to_string();
        let keys: Vec<&str> = text
            .split("\":")
            .filter_map(|k| k.rsplit('"').next())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "{text}");
    }

    #[test]
    fn forged_stored_values_are_refused_not_trusted() {
        let good = serde_json::to_value(snp()).unwrap();
        let forge = |key: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[key] = value;
            serde_json::from_value::<ExpectedMeasurement>(v)
        };
        assert!(forge("measurement", "ab".repeat(47).into()).is_err());
        assert!(forge("measurement", "zz".repeat(48).into()).is_err());
        assert!(forge("vcpu_sig", "0xnothex".into()).is_err());
        assert!(forge("tee", "sev".into()).is_err());
        assert!(forge("vmm_type", "xen".into()).is_err());
        assert!(serde_json::from_str::<ExpectedMeasurement>("{\"tee\":\"tdx\"}").is_err());
        assert!(serde_json::from_str::<ExpectedMeasurement>("[]").is_err());
    }
}
