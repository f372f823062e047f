//! Launch measurements of confidential VMs booted by QEMU with OVMF, bit-exact with
//! what the hardware reports: the AMD secure processor (SEV, SEV-ES, SEV-SNP) and
//! Intel TDX (MRTD, RTMR0–2 with the expected event log).
//!
//! Entry point: [`launch::QemuBoot`] loads a boot's files once and measures it for
//! SEV-SNP, SEV/SEV-ES or TDX with typed results; the modules below are its parts.
//!
//! Layout: [`ovmf`] and [`tdvf`] parse firmware, [`hashes`] builds QEMU's kernel-hashes
//! table, [`vmsa`] the initial vCPU state, [`snp`] and [`sev`] compute digests in two
//! steps (prepare per firmware, finish per launch), [`tdx`] computes MRTD,
//! [`tdx_launch`] the RTMRs of a QEMU direct boot with the behaviours [`tdx_rules`]
//! chooses from what [`edk2`] reads in the firmware's volumes ([`fv`]), and [`inputs`]
//! loads files in parallel.

mod error;

pub mod bytes;
pub mod bzimage;
pub mod cli_error;
pub mod cpu;
pub mod edk2;
pub mod efivar;
pub mod fv;
pub mod hashes;
pub mod idblock;
pub mod inputs;
pub mod inspect;
pub mod keys;
pub mod launch;
pub mod machine;
pub mod ovmf;
#[cfg(feature = "reference")]
pub mod reference;
pub mod rtmr;
pub mod sev;
pub mod sha384;
pub mod snp;
pub mod tdhob;
pub mod tdvf;
pub mod tdx;
pub mod tdx_launch;
pub mod tdx_rules;
#[cfg(feature = "verify")]
pub mod verify;
pub mod vmsa;

pub use error::{FirmwareError, MeasureError};
pub use hashes::KernelHashes;
pub use launch::{BootFiles, QemuBoot, SnpBoot, SnpLaunch, SnpMeasurement, TdxBoot, Tee, Vcpu};
pub use ovmf::Firmware;
pub use sev::SevPrepared;
pub use snp::{SnpParams, SnpPrepared};
pub use vmsa::VmmType;
