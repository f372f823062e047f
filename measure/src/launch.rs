//! The measurement facade: one QEMU direct boot (firmware, kernel, initrd) loaded once
//! with [`QemuBoot`], then measured per launch for SEV-SNP ([`QemuBoot::snp`] →
//! [`SnpBoot::measure`] / [`SnpBoot::matrix`]), SEV/SEV-ES ([`QemuBoot::sev`]) or TDX
//! ([`QemuBoot::tdx`] → [`TdxBoot::measure`]). The results ([`SnpMeasurement`],
//! [`TdxMeasurement`]) are typed and serialisable; `cocos-measure`, `cocos-hal` and
//! `cocos-manager` all go through here.
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

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::bytes::{hex_array, hex_array_opt, hex_u64, Digest384};
use crate::bzimage::LinuxLoad;
use crate::hashes::KernelHashes;
use crate::inputs::{check_file, read_firmware};
use crate::ovmf::Firmware;
use crate::rtmr::Platform;
use crate::sev::SevPrepared;
use crate::snp::{SnpParams, SnpPrepared};
use crate::tdx_launch::{
    measure_launch, TdxFirmware, TdxInitrd, TdxKernel, TdxLaunch, TdxMeasurement,
};
use crate::vmsa::VmmType;
use crate::{cpu, MeasureError};

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
        if files.kernel.is_none() && files.initrd.is_some() {
            return Err(MeasureError::Kernel(
                "an initrd needs a kernel (QEMU accepts -initrd only with -kernel)".into(),
            ));
        }
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

    /// TDX, loaded for one known launch (what `cocos-measure tdx` does): as
    /// [`QemuBoot::load`], but the firmware's drivers are read only if the launch's
    /// stated settings leave a behaviour open, and the work is split so that neither
    /// core waits: this thread reads the firmware, settles the launch's options (the
    /// drivers, if needed) and computes its kernel digest; the other reads the kernel and
    /// hashes the initrd; MRTD goes to whichever is free first. [`TdxBoot::measure`]
    /// then finds both digests cached.
    pub fn load_tdx(
        files: &BootFiles<'_>,
        cmdline: &str,
        launch: &TdxLaunch,
    ) -> Result<TdxBoot, MeasureError> {
        if files.kernel.is_none() && files.initrd.is_some() {
            return Err(MeasureError::Kernel(
                "an initrd needs a kernel (QEMU accepts -initrd only with -kernel)".into(),
            ));
        }
        // The initrd's size places it in guest memory (the patched header records
        // where); a file that changes size meanwhile only costs a second digest.
        let initrd_size = match files.initrd {
            Some(p) => Some(std::fs::metadata(p).map_err(io_err(p))?.len()),
            None => None,
        };
        std::thread::scope(|s| {
            let (kernel_tx, kernel_rx) = std::sync::mpsc::channel::<TdxKernel>();
            let (fw_tx, fw_rx) = std::sync::mpsc::channel::<TdxFirmware>();
            let other = s.spawn(move || -> Result<_, MeasureError> {
                let kernel = files.kernel.map(|p| read_kernel(p, Tee::Tdx)).transpose()?;
                if let Some(k) = kernel.as_ref().and_then(|k| k.tdx.clone()) {
                    let _ = kernel_tx.send(k);
                }
                drop(kernel_tx);
                let initrd = files.initrd.map(|p| hash_file(p, Tee::Tdx)).transpose()?;
                if let Ok(fw) = fw_rx.recv() {
                    fw.mrtd(launch.two_pass)?;
                }
                Ok((kernel, initrd))
            });
            let firmware_side = read_firmware(files.firmware).map(Arc::new).and_then(|fw| {
                let t = TdxFirmware::new(Arc::clone(&fw)).map_err(|e| with_path(e, files))?;
                let _ = fw_tx.send(t.clone());
                let (opts, _) = launch.options(&t);
                if let Ok(k) = kernel_rx.recv() {
                    let load = LinuxLoad {
                        memory: opts.memory,
                        initrd_size,
                        cmdline,
                    };
                    // An error here is the measurement's to report: it runs the
                    // same checks again.
                    let _ = k.authenticode(&load, opts.kernel_setup);
                }
                // MRTD here too: whichever thread is free first computes it (the
                // other finds it cached).
                t.mrtd(launch.two_pass)?;
                Ok((fw, t))
            });
            drop(fw_tx);
            let inputs = joined(Some(other));
            let (firmware, t) = firmware_side?;
            let (kernel, initrd) = inputs?.unwrap_or((None, None));
            Self {
                firmware,
                kernel,
                initrd,
                prepared: Prepared::Tdx(Box::new(t)),
            }
            .tdx()
        })
    }

    /// The same from bytes in memory (a release being built, files already verified).
    pub fn from_bytes(
        firmware: Vec<u8>,
        kernel: Option<Vec<u8>>,
        initrd: Option<&[u8]>,
        tee: Tee,
    ) -> Result<Self, MeasureError> {
        if kernel.is_none() && initrd.is_some() {
            return Err(MeasureError::Kernel(
                "an initrd needs a kernel (QEMU accepts -initrd only with -kernel)".into(),
            ));
        }
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
    prepared: SnpPrepared,
    hashes: Option<([u8; 32], Option<[u8; 32]>)>,
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

/// TDX state for one boot: the firmware (MRTD cached, drivers read), kernel, initrd.
#[derive(Debug, Clone)]
pub struct TdxBoot {
    fw: TdxFirmware,
    kernel: Option<TdxKernel>,
    initrd: Option<TdxInitrd>,
}

impl TdxBoot {
    /// The firmware.
    pub fn firmware(&self) -> &TdxFirmware {
        &self.fw
    }

    /// The kernel.
    pub fn kernel(&self) -> Option<&TdxKernel> {
        self.kernel.as_ref()
    }

    /// The initrd's size and SHA-384.
    pub fn initrd(&self) -> Option<&TdxInitrd> {
        self.initrd.as_ref()
    }

    /// MRTD and RTMR0–2 of one launch, with the expected event log, the notes and the
    /// rule behind each QEMU/edk2 behaviour.
    pub fn measure(
        &self,
        cmdline: &str,
        platform: &Platform,
        launch: &TdxLaunch,
    ) -> Result<TdxMeasurement, MeasureError> {
        measure_launch(
            &self.fw,
            self.kernel.as_ref(),
            self.initrd.as_ref(),
            cmdline,
            platform,
            launch,
        )
    }
}
