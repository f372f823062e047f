//! Which QEMU and edk2 behaviours a TDX launch gets, chosen from what the user states
//! (`--qemu-version`, explicit overrides) and what the firmware itself shows
//! ([`crate::edk2`]); every choice is returned with the rule that made it.
//!
//! The facts behind the rules, each from the source that decides it:
//! * Which kernel bytes OVMF hashes into RTMR1. QEMU ≤ 10.1 patches the bzImage setup
//!   header of the legacy fw_cfg kernel blob (`hw/i386/x86-common.c`,
//!   `x86_load_linux`); QEMU ≥ 10.0 also exports the unpatched file as fw_cfg
//!   `etc/boot/kernel` (commit f2594d928444, "x86/loader: expose unpatched kernel"),
//!   which edk2 ≥ stable202502 loads first (`QemuKernelLoaderFsDxe.c`,
//!   `QemuKernelFetchNamedBlobs`, commit 20df7c42bd); QEMU ≥ 10.2 stops patching the
//!   header of confidential guests altogether (commit a7542a38f399, "x86/loader: Don't
//!   update kernel header for CoCo VMs"). Upstream QEMU supports TDX from 10.1.
//! * Where "initrd=initrd" goes: appended before edk2 stable202508, prepended from it
//!   (`X86QemuLoadImageLib.c`, `QemuLoadKernelImage`, commit a2ac0fea49).
//! * Whether RTMRs are extended at all: only with `TdTcg2Dxe` in the firmware.

use crate::bzimage::KernelSetup;
use crate::edk2::{Edk2Behaviour, Edk2Release};
use crate::rtmr::InitrdOption;

/// A QEMU version (`major.minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

impl QemuVersion {
    /// `10.1`.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// Parses `10.1`, `10.0.2`, or the first line of `qemu-system-x86_64 --version`
    /// (`QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s
            .lines()
            .next()?
            .trim()
            .strip_prefix("QEMU emulator version ")
            .unwrap_or(s);
        let v = s.split_whitespace().next()?;
        let mut it = v.split('.');
        let major: u16 = it.next()?.parse().ok()?;
        let minor: u16 = it.next()?.parse().ok()?;
        if let Some(patch) = it.next() {
            // A third component, if present, must be a number too.
            patch.parse::<u32>().ok()?;
        }
        if it.next().is_some() || !(1..=99).contains(&major) {
            return None;
        }
        Some(Self { major, minor })
    }
}

impl std::str::FromStr for QemuVersion {
    type Err = String;

    /// As [`QemuVersion::parse`], with the message every caller shows.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!("{s:?} is not a QEMU version: write MAJOR.MINOR as `qemu-system-x86_64 --version` prints it, e.g. 10.1")
        })
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl serde::Serialize for QemuVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for QemuVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The first upstream QEMU with TDX.
pub const QEMU_FIRST_TDX: QemuVersion = QemuVersion::new(10, 1);
/// The first QEMU that exports the unpatched kernel as fw_cfg `etc/boot/kernel`.
pub const QEMU_ETC_BOOT_KERNEL: QemuVersion = QemuVersion::new(10, 0);
/// The first QEMU that leaves confidential guests' setup header unpatched.
pub const QEMU_NO_COCO_PATCH: QemuVersion = QemuVersion::new(10, 2);
/// The first edk2 whose kernel loader reads fw_cfg `etc/boot/*`.
pub const EDK2_ETC_BOOT: Edk2Release = Edk2Release::new(2025, 2);
/// The first edk2 that prepends "initrd=initrd ".
pub const EDK2_INITRD_PREPEND: Edk2Release = Edk2Release::new(2025, 8);
/// The first edk2 that measures "QEMU FW CFG" items into RTMR0 (commit be529ef3c9).
pub const EDK2_FW_CFG_MEASURED: Edk2Release = Edk2Release::new(2025, 5);

/// What the user states about a launch; `None` means "derive it".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stated {
    /// The QEMU that will run the guest.
    pub qemu: Option<QemuVersion>,
    /// The firmware's edk2 release, when the image does not say.
    pub edk2: Option<Edk2Release>,
    /// Forces which kernel bytes are measured.
    pub kernel_setup: Option<KernelSetup>,
    /// Forces where "initrd=initrd" goes.
    pub initrd_option: Option<InitrdOption>,
    /// Forces whether the firmware extends RTMRs.
    pub extends_rtmrs: Option<bool>,
}

impl Stated {
    /// Whether any choice is left to what the firmware shows (every behaviour that
    /// changes the values not forced).
    pub fn needs_firmware(&self) -> bool {
        self.kernel_setup.is_none() || self.initrd_option.is_none() || self.extends_rtmrs.is_none()
    }
}

/// Where a choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Given explicitly.
    Flag,
    /// Derived from the stated QEMU version and what the firmware shows.
    Derived,
    /// Nothing decided it: a default was assumed (read `why`).
    Assumed,
}

/// One choice and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    /// The setting (`kernel_setup`, `initrd_option`, `extends_rtmrs`, `qemu_version`).
    pub setting: std::borrow::Cow<'static, str>,
    /// The value chosen.
    pub value: String,
    /// Where it came from.
    pub source: Source,
    /// The rule, in words.
    pub why: String,
}

/// The choices for one launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    /// Which kernel bytes OVMF hashes.
    pub kernel_setup: KernelSetup,
    /// Where "initrd=initrd" goes.
    pub initrd_option: InitrdOption,
    /// Whether RTMRs are extended at all.
    pub extends_rtmrs: bool,
    /// Whether the firmware measures "QEMU FW CFG" items into RTMR0.
    pub measures_fw_cfg: bool,
    /// The rules, one per setting.
    pub rules: Vec<Rule>,
}

/// Decides the launch's behaviours. `read_fw` reads the firmware's behaviours; it is
/// called only if a choice needs them (reading decompresses the firmware's volumes).
pub fn choose_lazily<'a>(stated: &Stated, read_fw: impl FnOnce() -> &'a Edk2Behaviour) -> Choices {
    if !stated.needs_firmware() {
        return choose(stated, &Edk2Behaviour::default());
    }
    choose(stated, read_fw())
}

/// Decides the launch's behaviours.
pub fn choose(stated: &Stated, fw: &Edk2Behaviour) -> Choices {
    let mut rules = Vec::new();
    let edk2 = stated.edk2.or(fw.edk2_release);
    let edk2_src = match (stated.edk2, fw.edk2_release) {
        (Some(e), _) => format!("edk2 {e} (stated)"),
        (None, Some(e)) => format!("edk2 {e} (the firmware's version string)"),
        (None, None) => String::new(),
    };

    let qemu = match stated.qemu {
        Some(q) => {
            rules.push(Rule {
                setting: "qemu_version".into(),
                value: q.to_string(),
                source: Source::Flag,
                why: "stated by the caller (cocos-manager asks its QEMU binary)".into(),
            });
            q
        }
        None => {
            rules.push(Rule {
                setting: "qemu_version".into(),
                value: QEMU_FIRST_TDX.to_string(),
                source: Source::Assumed,
                why: format!(
                    "not stated: assumed {QEMU_FIRST_TDX}, the first upstream QEMU with TDX; state the host's QEMU version"
                ),
            });
            QEMU_FIRST_TDX
        }
    };

    // Which kernel bytes.
    let (kernel_setup, source, why) = if let Some(s) = stated.kernel_setup {
        (s, Source::Flag, "stated".to_owned())
    } else if qemu >= QEMU_NO_COCO_PATCH {
        (
            KernelSetup::Unmodified,
            Source::Derived,
            format!("QEMU {qemu} (>= 10.2) does not patch the setup header of confidential guests"),
        )
    } else if qemu < QEMU_ETC_BOOT_KERNEL {
        (
            KernelSetup::Patched,
            Source::Derived,
            format!("QEMU {qemu} (< 10.0) hands OVMF only its patched kernel blob"),
        )
    } else {
        // QEMU 10.0/10.1: it depends on whether the firmware reads etc/boot/kernel.
        match (fw.reads_etc_boot, edk2) {
            (Some(true), _) => (
                KernelSetup::Unmodified,
                Source::Derived,
                format!("QEMU {qemu} exports the unpatched kernel as fw_cfg etc/boot/kernel and this firmware's QemuKernelLoaderFsDxe loads etc/boot/* first"),
            ),
            (Some(false), _) => (
                KernelSetup::Patched,
                Source::Derived,
                format!("this firmware's QemuKernelLoaderFsDxe does not read etc/boot/* (edk2 before stable202502), so it loads the setup header QEMU {qemu} patches"),
            ),
            (None, Some(e)) if e >= EDK2_ETC_BOOT => (
                KernelSetup::Unmodified,
                Source::Derived,
                format!("{edk2_src} loads fw_cfg etc/boot/kernel, which QEMU {qemu} exports unpatched"),
            ),
            (None, Some(_)) => (
                KernelSetup::Patched,
                Source::Derived,
                format!("{edk2_src} predates stable202502 and loads the setup header QEMU {qemu} patches"),
            ),
            (None, None) => (
                KernelSetup::Patched,
                Source::Assumed,
                format!("cannot tell whether the firmware loads fw_cfg etc/boot/kernel: assumed the header QEMU {qemu} patches; state the edk2 release or which kernel bytes are measured"),
            ),
        }
    };
    rules.push(Rule {
        setting: "kernel_setup".into(),
        value: kernel_setup.name().into(),
        source,
        why,
    });

    // Where "initrd=initrd" goes.
    let (initrd_option, source, why) = if let Some(o) = stated.initrd_option {
        (o, Source::Flag, "stated".to_owned())
    } else if let Some(o) = fw.initrd_option {
        (
            o,
            Source::Derived,
            match o {
                InitrdOption::Append => "the firmware's BdsDxe appends \" initrd=initrd\" (edk2 before stable202508)".to_owned(),
                InitrdOption::Prepend => "the firmware's BdsDxe prepends \"initrd=initrd \" (edk2 stable202508 and later)".to_owned(),
            },
        )
    } else if let Some(e) = edk2 {
        let o = if e >= EDK2_INITRD_PREPEND {
            InitrdOption::Prepend
        } else {
            InitrdOption::Append
        };
        (
            o,
            Source::Derived,
            format!(
                "{edk2_src}: {} (stable202508 changed append to prepend)",
                o.name()
            ),
        )
    } else {
        (
            InitrdOption::Append,
            Source::Assumed,
            "cannot tell from the firmware: assumed edk2 before stable202508 (append); state the edk2 release or where \"initrd=initrd\" goes".to_owned(),
        )
    };
    rules.push(Rule {
        setting: "initrd_option".into(),
        value: initrd_option.name().into(),
        source,
        why,
    });

    // Whether anything extends RTMRs.
    let (extends_rtmrs, source, why) = if let Some(e) = stated.extends_rtmrs {
        (e, Source::Flag, "stated".to_owned())
    } else {
        match fw.extends_rtmrs {
            Some(true) => (true, Source::Derived, "the firmware carries TdTcg2Dxe".to_owned()),
            Some(false) => (
                false,
                Source::Derived,
                "RTMRs not extended by this firmware: it has no TdTcg2Dxe driver, so a TD on it reports RTMR0-2 as zero and nothing in its measurement covers the kernel, initrd or command line".to_owned(),
            ),
            None => (
                true,
                Source::Assumed,
                "cannot read the firmware's drivers: assumed it extends RTMRs (TdTcg2Dxe); state whether the firmware extends RTMRs".to_owned(),
            ),
        }
    };
    rules.push(Rule {
        setting: "extends_rtmrs".into(),
        value: extends_rtmrs.to_string(),
        source,
        why,
    });

    // "QEMU FW CFG" items in RTMR0.
    let (measures_fw_cfg, source, why) = match (fw.measures_fw_cfg, edk2) {
        (Some(m), _) => (
            m,
            Source::Derived,
            if m {
                "the firmware carries the \"QEMU FW CFG\" measurement (edk2 >= stable202505)".to_owned()
            } else {
                "the firmware has no \"QEMU FW CFG\" measurement (edk2 before stable202505)".to_owned()
            },
        ),
        (None, Some(e)) => (
            e >= EDK2_FW_CFG_MEASURED,
            Source::Derived,
            format!("{edk2_src}: fw_cfg items are measured from stable202505 (commit be529ef3c9)"),
        ),
        (None, None) => (
            true,
            Source::Assumed,
            "cannot tell from the firmware: fw_cfg items given are measured as edk2 >= stable202505 does".to_owned(),
        ),
    };
    rules.push(Rule {
        setting: "measures_fw_cfg".into(),
        value: measures_fw_cfg.to_string(),
        source,
        why,
    });

    Choices {
        kernel_setup,
        initrd_option,
        extends_rtmrs,
        measures_fw_cfg,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(
        etc_boot: Option<bool>,
        initrd: Option<InitrdOption>,
        rtmrs: Option<bool>,
    ) -> Edk2Behaviour {
        Edk2Behaviour {
            extends_rtmrs: rtmrs,
            reads_etc_boot: etc_boot,
            initrd_option: initrd,
            ..Edk2Behaviour::default()
        }
    }

    fn q(s: &str) -> Stated {
        Stated {
            qemu: QemuVersion::parse(s),
            ..Stated::default()
        }
    }

    #[test]
    fn versions_parse() {
        assert_eq!(QemuVersion::parse("10.1"), Some(QemuVersion::new(10, 1)));
        assert_eq!(QemuVersion::parse("10.0.2"), Some(QemuVersion::new(10, 0)));
        assert_eq!(
            QemuVersion::parse(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some(QemuVersion::new(7, 2))
        );
        for bad in ["", "10", "x.1", "10.1.2.3", "0.5", "10.-1", "10.1.x"] {
            assert_eq!(QemuVersion::parse(bad), None, "{bad}");
        }
        assert!(QemuVersion::new(9, 2) < QemuVersion::new(10, 0));
        assert!(QemuVersion::new(10, 10) > QemuVersion::new(10, 2));
    }

    #[test]
    fn kernel_bytes_follow_qemu_and_firmware() {
        let new_fw = fw(Some(true), Some(InitrdOption::Append), Some(true));
        let old_fw = fw(Some(false), Some(InitrdOption::Append), Some(true));
        // QEMU < 10.0: only the patched blob exists.
        assert_eq!(
            choose(&q("9.2"), &new_fw).kernel_setup,
            KernelSetup::Patched
        );
        // 10.0/10.1: the firmware decides.
        assert_eq!(
            choose(&q("10.1"), &new_fw).kernel_setup,
            KernelSetup::Unmodified
        );
        assert_eq!(
            choose(&q("10.0"), &old_fw).kernel_setup,
            KernelSetup::Patched
        );
        // 10.2+: never patched for CoCo guests.
        assert_eq!(
            choose(&q("10.2"), &old_fw).kernel_setup,
            KernelSetup::Unmodified
        );
        // Unknown firmware: the stated edk2 release decides.
        let unknown = fw(None, None, None);
        let mut s = q("10.1");
        s.edk2 = Edk2Release::parse("2025.02");
        assert_eq!(choose(&s, &unknown).kernel_setup, KernelSetup::Unmodified);
        s.edk2 = Edk2Release::parse("2024.11");
        assert_eq!(choose(&s, &unknown).kernel_setup, KernelSetup::Patched);
        s.edk2 = None;
        let c = choose(&s, &unknown);
        assert_eq!(c.kernel_setup, KernelSetup::Patched);
        assert!(c
            .rules
            .iter()
            .any(|r| r.setting == "kernel_setup" && r.source == Source::Assumed));
        // An explicit flag wins.
        s.kernel_setup = Some(KernelSetup::Unmodified);
        let c = choose(&s, &old_fw);
        assert_eq!(c.kernel_setup, KernelSetup::Unmodified);
        assert!(c
            .rules
            .iter()
            .any(|r| r.setting == "kernel_setup" && r.source == Source::Flag));
        // No QEMU stated: 10.1 assumed, and said.
        let c = choose(&Stated::default(), &new_fw);
        assert_eq!(c.kernel_setup, KernelSetup::Unmodified);
        assert!(c.rules.iter().any(|r| r.setting == "qemu_version"
            && r.source == Source::Assumed
            && r.value == "10.1"));
    }

    #[test]
    fn initrd_option_and_rtmrs() {
        let pre = fw(Some(true), Some(InitrdOption::Prepend), Some(true));
        assert_eq!(
            choose(&q("10.2"), &pre).initrd_option,
            InitrdOption::Prepend
        );
        let mut s = q("10.2");
        s.edk2 = Edk2Release::parse("edk2-stable202508");
        assert_eq!(
            choose(&s, &fw(None, None, None)).initrd_option,
            InitrdOption::Prepend
        );
        s.edk2 = Edk2Release::parse("2025.05");
        assert_eq!(
            choose(&s, &fw(None, None, None)).initrd_option,
            InitrdOption::Append
        );
        s.initrd_option = Some(InitrdOption::Prepend);
        assert_eq!(
            choose(&s, &fw(None, None, None)).initrd_option,
            InitrdOption::Prepend
        );

        let none = fw(Some(false), Some(InitrdOption::Append), Some(false));
        let c = choose(&q("10.1"), &none);
        assert!(!c.extends_rtmrs);
        assert!(c
            .rules
            .iter()
            .any(|r| r.why.starts_with("RTMRs not extended by this firmware")));
        let mut s = q("10.1");
        s.extends_rtmrs = Some(true);
        assert!(choose(&s, &none).extends_rtmrs);
    }
}
