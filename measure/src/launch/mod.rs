//! The measurement facade: one QEMU direct boot (firmware, kernel, initrd) loaded once
//! with [`QemuBoot`], then measured per launch for SEV-SNP ([`QemuBoot::snp`] →
//! [`SnpBoot::measure`] / [`SnpBoot::matrix`]), SEV/SEV-ES ([`QemuBoot::sev`]) or TDX
//! ([`QemuBoot::tdx`] or [`QemuBoot::load_tdx`] → [`TdxBoot::measure`]). The results
//! ([`SnpMeasurement`], [`TdxMeasurement`](crate::tdx_launch::TdxMeasurement)) are typed
//! and serialisable; `cocos-measure`, `cocos-hal` and `cocos-manager` all go through
//! here. SNP lives in [`snp`], TDX in [`tdx`]; this file loads the inputs.
//!
//! Files are hashed as they are read, through one reused buffer per input, with the
//! digest the TEE needs (SHA-256 for the SEV family's kernel-hashes table, SHA-384 for
//! TDX's initrd event); only the firmware (parsed whole) and a TDX kernel (its
//! Authenticode digest needs the PE image) are held in memory. The firmware-side work
//! (SNP page hashes, TDX MRTD and the drivers edk2 carries) runs on the calling thread
//! while the other inputs are hashed on a second one.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cocos_measure::{launch::*, rtmr::Platform, tdx_launch::TdxLaunch, VmmType};
//! let files = BootFiles { firmware: "OVMF.amdsev.fd".as_ref(), kernel: Some("vmlinuz".as_ref()), initrd: Some("initrd.img".as_ref()) };
//! let snp = QemuBoot::load(&files, Tee::Snp { ovmf_hash: None })?.snp()?;
//! let launch = SnpLaunch { vcpus: 4, vcpu: Vcpu::named("EPYC-Genoa")?, guest_features: 0x1, vmm: VmmType::Qemu };
//! let m = snp.measure("console=ttyS0", &launch)?;
//! println!("{}", serde_json::to_string(&m)?);
//! let files = BootFiles { firmware: "OVMF.inteltdx.fd".as_ref(), ..files };
//! let tdx = QemuBoot::load(&files, Tee::Tdx)?.tdx()?;
//! let t = tdx.measure("console=ttyS0", &Platform::default(), &TdxLaunch::default())?;
//! println!("{}", serde_json::to_string(&t.registers())?);
//! # Ok(()) }
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::bytes::{hex_array_opt, Digest384};
use crate::hashes::KernelHashes;
use crate::inputs::{check_file, read_firmware};
use crate::ovmf::Firmware;
use crate::sev::SevPrepared;
use crate::snp::SnpPrepared;
use crate::tdx_launch::{TdxFirmware, TdxInitrd, TdxKernel};
use crate::MeasureError;

pub mod snp;
pub mod tdx;

pub use snp::{SnpBoot, SnpLaunch, SnpMeasurement, Vcpu};
pub use tdx::TdxBoot;

/// The files QEMU is given: `-bios`, `-kernel`, `-initrd`.
#[derive(Debug, Clone, Copy)]
pub struct BootFiles<'a> {
    /// The firmware image.
    pub firmware: &'a Path,
    /// The kernel, if booted directly.
    pub kernel: Option<&'a Path>,
    /// The initrd (needs a kernel).
    pub initrd: Option<&'a Path>,
}

/// Which TEE the boot is loaded for: decides the digests taken while reading and the
/// firmware state prepared alongside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    /// SEV or SEV-ES (SHA-256 of the firmware image).
    Sev,
    /// SEV-SNP; `ovmf_hash` replaces hashing the firmware pages (`snp:ovmf-hash`).
    Snp {
        /// A precomputed firmware hash.
        ovmf_hash: Option<Digest384>,
    },
    /// TDX (MRTD, the firmware's drivers, SHA-384 of the initrd).
    Tdx,
}

/// The kernel as loaded.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInput {
    /// Where it was read from (`None` for bytes given directly).
    pub path: Option<PathBuf>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (SEV family: QEMU's kernel-hashes table).
    #[serde(with = "hex_array_opt", skip_serializing_if = "Option::is_none")]
    pub sha256: Option<[u8; 32]>,
    /// The parsed image (TDX: OVMF measures its Authenticode digest).
    #[serde(skip)]
    pub tdx: Option<TdxKernel>,
}

/// The initrd as loaded.
#[derive(Debug, Clone, Serialize)]
pub struct InitrdInput {
    /// Where it was read from.
    pub path: Option<PathBuf>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (SEV family).
    #[serde(with = "hex_array_opt", skip_serializing_if = "Option::is_none")]
    pub sha256: Option<[u8; 32]>,
    /// SHA-384 (TDX: the stub's initrd event).
    #[serde(with = "hex_array_opt", skip_serializing_if = "Option::is_none")]
    pub sha384: Option<Digest384>,
}

#[derive(Debug, Clone)]
enum Prepared {
    Sev(Box<SevPrepared>),
    Snp(Box<SnpPrepared>),
    Tdx(Box<TdxFirmware>),
}

/// One QEMU direct boot, loaded and hashed once.
#[derive(Debug, Clone)]
pub struct QemuBoot {
    firmware: Arc<Firmware>,
    kernel: Option<KernelInput>,
    initrd: Option<InitrdInput>,
    prepared: Prepared,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MeasureError + '_ {
    move |source| MeasureError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Streams a file through SHA-256 or SHA-384 with one reused buffer.
fn hash_file(path: &Path, tee: Tee) -> Result<InitrdInput, MeasureError> {
    check_file(path)?;
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    // Small enough to stay in cache between the read and the hash.
    let mut buf = vec![0u8; 128 << 10];
    let mut size = 0u64;
    let (mut s256, mut s384) = match tee {
        Tee::Tdx => (None, Some(crate::sha384::Sha384::new())),
        _ => (Some(Sha256::new()), None),
    };
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        if let Some(h) = s256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = s384.as_mut() {
            h.update(chunk);
        }
        size += n as u64;
    }
    Ok(InitrdInput {
        path: Some(path.to_owned()),
        size,
        sha256: s256.map(|h| h.finalize().into()),
        sha384: s384.map(|h| h.finish()),
    })
}

fn read_kernel(path: &Path, tee: Tee) -> Result<KernelInput, MeasureError> {
    if tee != Tee::Tdx {
        let h = hash_file(path, tee)?;
        return Ok(KernelInput {
            path: h.path,
            size: h.size,
            sha256: h.sha256,
            tdx: None,
        });
    }
    check_file(path)?;
    let k = TdxKernel::from_file(path)?;
    Ok(KernelInput {
        path: Some(path.to_owned()),
        size: k.len() as u64,
        sha256: None,
        tdx: Some(k),
    })
}

fn prepare(fw: &Arc<Firmware>, tee: Tee) -> Result<Prepared, MeasureError> {
    Ok(match tee {
        Tee::Sev => Prepared::Sev(Box::new(SevPrepared::new(fw))),
        Tee::Snp { ovmf_hash: Some(h) } => {
            Prepared::Snp(Box::new(SnpPrepared::with_ovmf_hash(fw, h)))
        }
        Tee::Snp { ovmf_hash: None } => Prepared::Snp(Box::new(SnpPrepared::new(fw)?)),
        Tee::Tdx => {
            let t = TdxFirmware::new(Arc::clone(fw))?;
            // Read the drivers (decompresses the DXE volume) and the single-pass MRTD
            // now, while the other thread hashes the initrd.
            t.behaviour();
            t.mrtd(false)?;
            Prepared::Tdx(Box::new(t))
        }
    })
}

fn joined<T>(
    h: Option<std::thread::ScopedJoinHandle<'_, Result<T, MeasureError>>>,
) -> Result<Option<T>, MeasureError> {
    h.map(|h| {
        h.join().unwrap_or_else(|_| {
            Err(MeasureError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other("hashing thread panicked"),
            })
        })
    })
    .transpose()
}

/// QEMU accepts -initrd only with -kernel.
fn needs_kernel(kernel: bool, initrd: bool) -> Result<(), MeasureError> {
    if initrd && !kernel {
        return Err(MeasureError::Kernel(
            "an initrd needs a kernel (QEMU accepts -initrd only with -kernel)".into(),
        ));
    }
    Ok(())
}

/// A firmware error, with the firmware's path.
fn with_path(e: MeasureError, files: &BootFiles<'_>) -> MeasureError {
    match e {
        MeasureError::Firmware(source) => MeasureError::FirmwareFile {
            path: files.firmware.to_owned(),
            source,
        },
        other => other,
    }
}

impl QemuBoot {
    /// Reads and hashes the files for `tee`: the firmware is read and prepared here
    /// while kernel and initrd are hashed on another thread. Errors name the file.
    pub fn load(files: &BootFiles<'_>, tee: Tee) -> Result<Self, MeasureError> {
        needs_kernel(files.kernel.is_some(), files.initrd.is_some())?;
        std::thread::scope(|s| {
            // A second thread only when there is something to hash on it.
            let other = files.kernel.is_some().then(|| {
                s.spawn(|| -> Result<_, MeasureError> {
                    let kernel = files.kernel.map(|p| read_kernel(p, tee)).transpose()?;
                    let initrd = files.initrd.map(|p| hash_file(p, tee)).transpose()?;
                    Ok((kernel, initrd))
                })
            });
            let firmware_side = read_firmware(files.firmware).map(Arc::new).and_then(|fw| {
                let prepared = prepare(&fw, tee).map_err(|e| with_path(e, files))?;
                Ok((fw, prepared))
            });
            let inputs = joined(other);
            let (firmware, prepared) = firmware_side?;
            let (kernel, initrd) = inputs?.unwrap_or((None, None));
            Ok(Self {
                firmware,
                kernel,
                initrd,
                prepared,
            })
        })
    }

    /// The same from bytes in memory (a release being built, files already verified).
    pub fn from_bytes(
        firmware: Vec<u8>,
        kernel: Option<Vec<u8>>,
        initrd: Option<&[u8]>,
        tee: Tee,
    ) -> Result<Self, MeasureError> {
        needs_kernel(kernel.is_some(), initrd.is_some())?;
        let firmware = Arc::new(Firmware::parse(firmware)?);
        let prepared = prepare(&firmware, tee)?;
        let kernel = match kernel {
            None => None,
            Some(bytes) if tee == Tee::Tdx => {
                let k = TdxKernel::new(bytes)?;
                Some(KernelInput {
                    path: None,
                    size: k.len() as u64,
                    sha256: None,
                    tdx: Some(k),
                })
            }
            Some(bytes) => Some(KernelInput {
                path: None,
                size: bytes.len() as u64,
                sha256: Some(Sha256::digest(&bytes).into()),
                tdx: None,
            }),
        };
        let initrd = initrd.map(|d| InitrdInput {
            path: None,
            size: d.len() as u64,
            sha256: (tee != Tee::Tdx).then(|| Sha256::digest(d).into()),
            sha384: (tee == Tee::Tdx).then(|| crate::rtmr::sha384(d)),
        });
        Ok(Self {
            firmware,
            kernel,
            initrd,
            prepared,
        })
    }

    /// The parsed firmware.
    pub fn firmware(&self) -> &Firmware {
        &self.firmware
    }

    /// SHA-256 of the firmware image (computed on each call).
    pub fn firmware_sha256(&self) -> [u8; 32] {
        self.firmware.sha256()
    }

    /// The kernel, if any.
    pub fn kernel(&self) -> Option<&KernelInput> {
        self.kernel.as_ref()
    }

    /// The initrd, if any.
    pub fn initrd(&self) -> Option<&InitrdInput> {
        self.initrd.as_ref()
    }

    /// QEMU's kernel-hashes table for `cmdline` (SEV family), if a kernel is booted.
    pub fn kernel_hashes(&self, cmdline: &str) -> Result<Option<KernelHashes>, MeasureError> {
        let Some(k) = &self.kernel else {
            return Ok(None);
        };
        let need = || {
            MeasureError::Kernel(
                "this boot was loaded for TDX, which takes no SHA-256 of kernel and initrd".into(),
            )
        };
        let kernel = k.sha256.ok_or_else(need)?;
        let initrd = match &self.initrd {
            Some(i) => Some(i.sha256.ok_or_else(need)?),
            None => None,
        };
        Ok(Some(KernelHashes::new(kernel, initrd, cmdline.as_bytes())))
    }

    /// The SEV / SEV-ES firmware state.
    pub fn sev(&self) -> SevPrepared {
        match &self.prepared {
            Prepared::Sev(p) => (**p).clone(),
            _ => SevPrepared::new(&self.firmware),
        }
    }

    /// SEV-SNP: the firmware pages hashed (once per boot).
    pub fn snp(&self) -> Result<SnpBoot, MeasureError> {
        let prepared = match &self.prepared {
            Prepared::Snp(p) => (**p).clone(),
            _ => SnpPrepared::new(&self.firmware)?,
        };
        let hashes = match &self.kernel {
            Some(k) => Some((
                k.sha256.ok_or_else(|| {
                    MeasureError::Kernel("this boot was loaded for TDX, not SNP".into())
                })?,
                self.initrd.as_ref().and_then(|i| i.sha256),
            )),
            None => None,
        };
        Ok(SnpBoot { prepared, hashes })
    }

    /// TDX: the firmware's TDVF metadata, kernel and initrd ready for [`TdxBoot::measure`].
    pub fn tdx(&self) -> Result<TdxBoot, MeasureError> {
        let fw = match &self.prepared {
            Prepared::Tdx(t) => (**t).clone(),
            _ => TdxFirmware::new(Arc::clone(&self.firmware))?,
        };
        let wrong = || MeasureError::Kernel("this boot was not loaded for TDX".into());
        let kernel = match &self.kernel {
            Some(k) => Some(k.tdx.clone().ok_or_else(wrong)?),
            None => None,
        };
        let initrd = match &self.initrd {
            Some(i) => Some(TdxInitrd {
                size: i.size,
                sha384: i.sha384.ok_or_else(wrong)?,
            }),
            None => None,
        };
        Ok(TdxBoot { fw, kernel, initrd })
    }
}
