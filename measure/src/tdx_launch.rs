//! A TDX launch measured end to end: MRTD and RTMR0–2 of QEMU direct kernel boot with
//! a TDVF (OVMF) firmware, in two steps like SNP: prepare the firmware, kernel and
//! initrd once ([`TdxFirmware`], [`TdxKernel`], [`TdxInitrd`]), then [`measure`] per
//! command line and memory size (cheap: the kernel's Authenticode digest is cached per
//! distinct patched header).
//!
//! Choices where QEMU and edk2 versions differ, all in [`TdxOptions`], which
//! [`TdxLaunch::options`] derives from the stated QEMU version and what the firmware
//! shows ([`crate::tdx_rules`]):
//! * which kernel bytes OVMF hashes (QEMU's patched setup header or the file as is);
//! * where edk2 puts "initrd=initrd" in the kernel's LoadOptions;
//! * whether the firmware extends RTMRs at all (only with TdTcg2Dxe: else all zero);
//! * whether the Linux EFI stub measures LoadOptions and initrd into RTMR2 (from Linux
//!   6.9, CC measurement protocol); `auto` decides from the kernel's version string.
//!
//! Authenticode is computed as edk2 does (no padding of the hashed data to 8 bytes).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::bzimage::{apply_qemu_load, header_window, KernelSetup, LinuxLoad, SetupHeader};
use crate::edk2::{self, Edk2Behaviour};
use crate::ovmf::{Firmware, Parsed};
use crate::rtmr::{self, Digest384, Event, EventType, InitrdOption, Platform};
use crate::tdhob::TdHob;
use crate::tdvf::{TdvfSection, TdvfSectionKind};
use crate::tdx_rules::{self, Rule, Stated};
use crate::{tdx, FirmwareError, MeasureError};

/// Whether the kernel's EFI stub measures into RTMR2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StubMeasures {
    /// Decide from the kernel version (6.9 and later: yes).
    #[default]
    Auto,
    /// The stub logs LoadOptions and initrd into RTMR2.
    Yes,
    /// It does not (RTMR2 stays zero).
    No,
}

/// Launch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TdxOptions {
    /// Guest RAM in bytes (QEMU `-m`, after its rounding).
    pub memory: u64,
    /// Two-pass MRTD (older QEMU/KVM) instead of single-pass.
    pub two_pass: bool,
    /// How QEMU hands over the setup header.
    pub kernel_setup: KernelSetup,
    /// Where OVMF puts "initrd=initrd".
    pub initrd_option: InitrdOption,
    /// Whether the EFI stub measures into RTMR2.
    pub stub_measures: StubMeasures,
    /// Whether the firmware extends RTMRs at all (false: RTMR0–2 stay zero).
    pub extends_rtmrs: bool,
    /// Whether the firmware measures "QEMU FW CFG" items (edk2 ≥ stable202505); if
    /// not, fw_cfg items in the platform inputs are refused.
    pub measures_fw_cfg: bool,
}

impl Default for TdxOptions {
    fn default() -> Self {
        Self {
            memory: 2 << 30,
            two_pass: false,
            kernel_setup: KernelSetup::Patched,
            initrd_option: InitrdOption::Append,
            stub_measures: StubMeasures::Auto,
            extends_rtmrs: true,
            measures_fw_cfg: true,
        }
    }
}

/// A launch as the user describes it: the settings that are always explicit, and what
/// they state about QEMU and the firmware (the rest is derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxLaunch {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Two-pass MRTD.
    pub two_pass: bool,
    /// Whether the EFI stub measures into RTMR2.
    pub stub_measures: StubMeasures,
    /// QEMU version and overrides.
    pub stated: Stated,
}

impl Default for TdxLaunch {
    fn default() -> Self {
        Self {
            memory: 2 << 30,
            two_pass: false,
            stub_measures: StubMeasures::Auto,
            stated: Stated::default(),
        }
    }
}

impl TdxLaunch {
    /// The options for this launch on this firmware, and the rule behind each choice.
    pub fn options(&self, fw: &TdxFirmware) -> (TdxOptions, Vec<Rule>) {
        let c = tdx_rules::choose_lazily(&self.stated, || fw.behaviour());
        (
            TdxOptions {
                memory: self.memory,
                two_pass: self.two_pass,
                kernel_setup: c.kernel_setup,
                initrd_option: c.initrd_option,
                stub_measures: self.stub_measures,
                extends_rtmrs: c.extends_rtmrs,
                measures_fw_cfg: c.measures_fw_cfg,
            },
            c.rules,
        )
    }
}

/// A TDX firmware, validated; its MRTDs and drivers are read once, on first use.
/// Clones share the image and those results (one thread can compute MRTD while
/// another reads the drivers).
#[derive(Debug, Clone)]
pub struct TdxFirmware {
    fw: Arc<Firmware>,
    sections: Vec<TdvfSection>,
    mrtd: Arc<[OnceLock<Digest384>; 2]>,
    behaviour: Arc<OnceLock<Edk2Behaviour>>,
}

impl TdxFirmware {
    /// Checks the firmware has usable TDVF metadata.
    pub fn new(fw: impl Into<Arc<Firmware>>) -> Result<Self, MeasureError> {
        let fw: Arc<Firmware> = fw.into();
        let sections = match fw.tdx_metadata() {
            Parsed::Valid(m) => m.sections.clone(),
            Parsed::Invalid(e) => return Err(e.clone().into()),
            Parsed::Absent => {
                return Err(FirmwareError::TdxMetadata(
                    "no TDX_METADATA_OFFSET entry: not a TDX (TDVF) firmware; use one built from OvmfPkg/IntelTdx/IntelTdxX64.dsc (scripts/build-ovmf.sh), whose RTMRs measure the kernel, initrd and command line".into(),
                )
                .into())
            }
        };
        Ok(Self {
            fw,
            sections,
            mrtd: Arc::new([OnceLock::new(), OnceLock::new()]),
            behaviour: Arc::new(OnceLock::new()),
        })
    }

    /// What the firmware's modules show about its edk2 behaviours (read once).
    pub fn behaviour(&self) -> &Edk2Behaviour {
        self.behaviour.get_or_init(|| edk2::analyse(self.fw.data()))
    }

    /// The parsed firmware.
    pub fn firmware(&self) -> &Firmware {
        &self.fw
    }

    /// The TDVF sections.
    pub fn sections(&self) -> &[TdvfSection] {
        &self.sections
    }

    /// MRTD (single- or two-pass).
    pub fn mrtd(&self, two_pass: bool) -> Result<Digest384, MeasureError> {
        let Some(slot) = self.mrtd.get(usize::from(two_pass)) else {
            return tdx::mrtd(&self.fw, two_pass);
        };
        if let Some(d) = slot.get() {
            return Ok(*d);
        }
        let d = tdx::mrtd(&self.fw, two_pass)?;
        Ok(*slot.get_or_init(|| d))
    }

    /// The CFV bytes the firmware measures (its configuration volume's raw data).
    pub fn cfv(&self) -> Result<&[u8], MeasureError> {
        let s = self
            .sections
            .iter()
            .find(|s| s.kind == TdvfSectionKind::Cfv)
            .ok_or_else(|| {
                FirmwareError::TdxMetadata(
                    "no CFV section: TDVF measures its configuration volume into RTMR0".into(),
                )
            })?;
        let start = s.data_offset as usize;
        self.fw
            .data()
            .get(start..start + s.raw_size as usize)
            .ok_or_else(|| {
                FirmwareError::TdxMetadata("the CFV section's data lies outside the image".into())
                    .into()
            })
    }
}

/// Authenticode digests already computed, per patched header window.
type DigestCache = Arc<Mutex<Vec<(Vec<u8>, Digest384)>>>;

/// A kernel, read once; clones share the image and the digest cache. A launch's
/// digest patches the header window in place (under a lock) and restores it, so the
/// image is never copied.
#[derive(Debug, Clone)]
pub struct TdxKernel {
    image: Arc<Mutex<Vec<u8>>>,
    len: usize,
    window: Arc<[u8]>,
    header: SetupHeader,
    cache: DigestCache,
}

/// Authenticode SHA-384 of a PE image, as edk2's measured boot computes it.
pub fn authenticode_sha384(image: &[u8]) -> Result<Digest384, MeasureError> {
    use object::read::pe::{PeFile32, PeFile64};
    let mut h = crate::sha384::Sha384::new();
    let bad = |e: &dyn std::fmt::Display| {
        MeasureError::Kernel(format!(
            "not a PE/COFF image OVMF can load ({e}); a TDX direct boot needs a kernel built with CONFIG_EFI_STUB"
        ))
    };
    let done = match PeFile64::parse(image) {
        Ok(pe) => authenticode::authenticode_digest(&pe, &mut h),
        Err(e64) => match PeFile32::parse(image) {
            Ok(pe) => authenticode::authenticode_digest(&pe, &mut h),
            Err(_) => return Err(bad(&e64)),
        },
    };
    done.map_err(|e| bad(&format!("{e:?}")))?;
    Ok(h.finish())
}

impl TdxKernel {
    /// Takes a kernel's bytes; checks the boot header and that it is a PE image.
    pub fn new(bytes: Vec<u8>) -> Result<Self, MeasureError> {
        let header = SetupHeader::parse(&bytes)?;
        let len = bytes.len();
        let window: Arc<[u8]> = bytes
            .get(..header_window(&header, len))
            .unwrap_or(&[])
            .into();
        Ok(Self {
            image: Arc::new(Mutex::new(bytes)),
            len,
            window,
            header,
            cache: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Reads a kernel file.
    pub fn from_file(path: &Path) -> Result<Self, MeasureError> {
        let bytes = std::fs::read(path).map_err(|e| MeasureError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::new(bytes).map_err(|e| match e {
            MeasureError::Kernel(m) => MeasureError::Kernel(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The boot protocol header.
    pub fn header(&self) -> &SetupHeader {
        &self.header
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file is empty (never true for a parsed kernel).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The Authenticode digest of the image OVMF loads for this launch.
    pub fn authenticode(
        &self,
        load: &LinuxLoad<'_>,
        mode: KernelSetup,
    ) -> Result<Digest384, MeasureError> {
        let mut head = self.window.to_vec();
        // The checks and patches only touch the header window: work on a copy of it.
        apply_qemu_load(&mut head, self.len, load, mode)?;
        self.digest_with_head(head)
    }

    fn digest_with_head(&self, head: Vec<u8>) -> Result<Digest384, MeasureError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((_, d)) = cache.iter().find(|(k, _)| *k == head) {
                return Ok(*d);
            }
        }
        let d = {
            let mut image = self.image.lock().map_err(|_| {
                MeasureError::Kernel("an earlier digest of this kernel failed midway".into())
            })?;
            let n = head.len();
            if let Some(dst) = image.get_mut(..n) {
                dst.copy_from_slice(&head);
            }
            let d = authenticode_sha384(&image);
            if let Some(dst) = image.get_mut(..n) {
                dst.copy_from_slice(&self.window);
            }
            d?
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.push((head, d));
        }
        Ok(d)
    }

    /// Whether this kernel's EFI stub measures into TDX registers, from its version
    /// string (Linux 6.9 added the CC measurement protocol). `None` if unknown.
    pub fn stub_measures_tdx(&self) -> Option<bool> {
        let v = linux_version(self.header.version.as_deref()?)?;
        Some(v >= LINUX_STUB_MEASURES_TDX)
    }
}

/// The first Linux whose EFI stub measures LoadOptions and the initrd into TDX RTMR2
/// ("efi/libstub: Measure into CC protocol if TCG2 protocol is absent").
pub const LINUX_STUB_MEASURES_TDX: (u32, u32) = (6, 9);

/// (major, minor) of a kernel release or version string (`6.12.57+deb13-amd64 …` →
/// (6, 12)).
pub fn linux_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// An initrd: its size and SHA-384.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxInitrd {
    /// Bytes.
    pub size: u64,
    /// SHA-384 of the content.
    pub sha384: Digest384,
}

impl TdxInitrd {
    /// From bytes in memory.
    pub fn from_bytes(data: &[u8]) -> Self {
        Self {
            size: data.len() as u64,
            sha384: rtmr::sha384(data),
        }
    }
}

/// The result: registers, the expected event log in boot order, and what could not
/// be computed and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxMeasurement {
    /// MRTD.
    pub mrtd: Digest384,
    /// RTMR0–2; `None` where inputs are missing (see `unavailable`).
    pub rtmr: [Option<Digest384>; 3],
    /// Expected events in the order the guest logs them.
    pub events: Vec<Event>,
    /// (register index, reason) for registers not computed.
    pub unavailable: Vec<(u8, String)>,
    /// Remarks a verifier should read.
    pub notes: Vec<String>,
    /// Whether the firmware extends RTMRs (false: RTMR0–2 are zero, see `notes`).
    pub extends_rtmrs: bool,
    /// The rule behind each choice of QEMU/edk2 behaviour (empty when the options were
    /// given directly to [`measure`]).
    pub rules: Vec<Rule>,
}

impl TdxMeasurement {
    /// The registers without the event log: what a verifier compares.
    pub fn registers(&self) -> TdxRegisters {
        let reg = |i: usize| self.rtmr.get(i).copied().flatten();
        TdxRegisters {
            mrtd: self.mrtd,
            rtmr0: reg(0),
            rtmr1: reg(1),
            rtmr2: reg(2),
            rtmrs_extended: self.extends_rtmrs,
            unavailable: self
                .unavailable
                .iter()
                .map(|(i, why)| (format!("rtmr{i}"), why.clone()))
                .collect(),
            notes: self.notes.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// Serialised as [`TdxRegisters`]' fields plus `events`.
impl Serialize for TdxMeasurement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(flatten)]
            registers: TdxRegisters,
            events: &'a [Event],
        }
        View {
            registers: self.registers(),
            events: &self.events,
        }
        .serialize(s)
    }
}

/// MRTD and RTMR0–2 as a verifier reads them: hex registers (null where not computed,
/// with the reason under `unavailable`), whether the firmware extends RTMRs, notes and
/// the rule behind each QEMU/edk2 choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxRegisters {
    /// MRTD.
    #[serde(with = "crate::bytes::hex_array")]
    pub mrtd: Digest384,
    /// RTMR0 (needs the host's ACPI tables and boot variables).
    #[serde(with = "crate::bytes::hex_array_opt")]
    pub rtmr0: Option<Digest384>,
    /// RTMR1 (the kernel as OVMF loads it).
    #[serde(with = "crate::bytes::hex_array_opt")]
    pub rtmr1: Option<Digest384>,
    /// RTMR2 (command line and initrd, as the EFI stub measures them).
    #[serde(with = "crate::bytes::hex_array_opt")]
    pub rtmr2: Option<Digest384>,
    /// False when the firmware extends no RTMR (all three are then zero).
    pub rtmrs_extended: bool,
    /// `rtmrN` → why it is not computed.
    pub unavailable: BTreeMap<String, String>,
    /// Remarks a verifier should read.
    pub notes: Vec<String>,
    /// How each QEMU/edk2 behaviour was chosen.
    pub rules: Vec<Rule>,
}

/// [`TdxLaunch::options`], then [`measure`]; the result carries the rules.
pub fn measure_launch(
    fw: &TdxFirmware,
    kernel: Option<&TdxKernel>,
    initrd: Option<&TdxInitrd>,
    cmdline: &str,
    platform: &Platform,
    launch: &TdxLaunch,
) -> Result<TdxMeasurement, MeasureError> {
    let (opts, rules) = launch.options(fw);
    let mut m = measure(fw, kernel, initrd, cmdline, platform, &opts)?;
    m.rules = rules;
    Ok(m)
}

/// Computes MRTD and whichever RTMRs the inputs allow.
pub fn measure(
    fw: &TdxFirmware,
    kernel: Option<&TdxKernel>,
    initrd: Option<&TdxInitrd>,
    cmdline: &str,
    platform: &Platform,
    opts: &TdxOptions,
) -> Result<TdxMeasurement, MeasureError> {
    if kernel.is_none() && (initrd.is_some() || !cmdline.is_empty()) {
        return Err(MeasureError::Kernel(
            "an initrd or command line needs a kernel (QEMU accepts -initrd/-append only with -kernel)".into(),
        ));
    }
    if !opts.measures_fw_cfg && !platform.fw_cfg.is_empty() {
        return Err(MeasureError::Platform(
            "fw_cfg items were given, but this firmware does not measure \"QEMU FW CFG\" items (edk2 before stable202505): leave them out".into(),
        ));
    }
    let mrtd = fw.mrtd(opts.two_pass)?;
    let hob = TdHob::build(fw.sections(), opts.memory)?;
    let mut notes = Vec::new();
    let mut unavailable = Vec::new();

    let rtmr0_events = match rtmr::missing_rtmr0_inputs(platform) {
        Some(why) => {
            unavailable.push((0, why.to_string()));
            None
        }
        None => Some(rtmr::rtmr0_events(hob.measured(), fw.cfv()?, platform)?),
    };
    let (pre, boot_vars): (Vec<Event>, Vec<Event>) = rtmr0_events
        .clone()
        .unwrap_or_default()
        .into_iter()
        .partition(|e| e.event_type != EventType::EvEfiVariableBoot);
    let r0 = |events: &[Event]| rtmr0_events.as_ref().map(|_| rtmr::replay(events, 0));

    let Some(kernel) = kernel else {
        let why = "no kernel: RTMR1 and RTMR2 are computed for QEMU direct kernel boot only";
        unavailable.push((1, why.into()));
        unavailable.push((2, why.into()));
        let events: Vec<Event> = pre.into_iter().chain(boot_vars).collect();
        return Ok(not_extended(
            TdxMeasurement {
                mrtd,
                rtmr: [r0(&events), None, None],
                events,
                unavailable,
                notes,
                extends_rtmrs: true,
                rules: Vec::new(),
            },
            opts,
        ));
    };

    let load = LinuxLoad {
        memory: opts.memory,
        initrd_size: initrd.map(|i| i.size),
        cmdline,
    };
    let kernel_digest = kernel.authenticode(&load, opts.kernel_setup)?;
    let rtmr1 = rtmr::rtmr1_events(kernel_digest);

    let stub = match opts.stub_measures {
        StubMeasures::Yes => true,
        StubMeasures::No => false,
        StubMeasures::Auto => match kernel.stub_measures_tdx() {
            Some(b) => b,
            None => {
                notes.push("kernel version unknown: assumed its EFI stub measures into RTMR2 (Linux 6.9+); state that the stub does not measure for older kernels".into());
                true
            }
        },
    };
    let rtmr2 = if stub {
        let initrd_size = initrd.map_or(0, |i| i.size);
        let opts_bytes = rtmr::load_options(cmdline.as_bytes(), initrd_size, opts.initrd_option);
        let loaded = initrd.filter(|i| i.size > 0).map(|i| i.sha384);
        rtmr::rtmr2_events(opts_bytes.as_deref(), loaded)
    } else {
        notes.push(format!(
            "the kernel ({}) predates Linux 6.9, whose EFI stub measures into TDX RTMRs: its stub logs the command line and initrd only through TCG2, which TDVF lacks, so RTMR2 stays zero and nothing in the launch measurement covers them",
            kernel.header().version.as_deref().unwrap_or("version unknown")
        ));
        Vec::new()
    };

    // Boot order: RTMR0 pre-boot, kernel load, ReadyToBoot (boot variables, "Calling",
    // separator), the stub's RTMR2 events, ExitBootServices.
    let mut events = pre;
    let mut r1 = rtmr1.into_iter();
    events.extend(r1.next());
    events.extend(boot_vars);
    events.extend(r1.by_ref().take(2));
    events.extend(rtmr2);
    events.extend(r1);

    let rtmr = [
        r0(&events),
        Some(rtmr::replay(&events, 1)),
        Some(rtmr::replay(&events, 2)),
    ];
    Ok(not_extended(
        TdxMeasurement {
            mrtd,
            rtmr,
            events,
            unavailable,
            notes,
            extends_rtmrs: true,
            rules: Vec::new(),
        },
        opts,
    ))
}

/// For a firmware that extends no RTMR: RTMR0–2 are zero and no event is logged,
/// whatever the inputs (which were still checked as QEMU would).
fn not_extended(mut m: TdxMeasurement, opts: &TdxOptions) -> TdxMeasurement {
    if opts.extends_rtmrs {
        return m;
    }
    m.extends_rtmrs = false;
    m.rtmr = [Some([0; 48]); 3];
    m.events.clear();
    m.unavailable.clear();
    m.notes = vec!["RTMRs not extended by this firmware (no TdTcg2Dxe driver): a TD on it reports RTMR0-2 as zero, and nothing in its launch measurement covers the kernel, initrd or command line; use a firmware built from OvmfPkg/IntelTdx/IntelTdxX64.dsc (scripts/build-ovmf.sh) or an OvmfPkgX64 build with CC_MEASUREMENT_ENABLE (edk2 >= stable202408 by default)".into()];
    m
}
