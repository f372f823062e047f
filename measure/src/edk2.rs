//! What an OVMF build does at boot that changes a TDX guest's RTMRs, decided from the
//! modules the firmware carries (found with [`crate::fv`]) rather than from its name:
//!
//! * whether anything extends RTMRs at all: only a firmware with the `TdTcg2Dxe` driver
//!   (edk2 `OvmfPkg/Tcg/TdTcg2Dxe/TdTcg2Dxe.inf`, `FILE_GUID`
//!   F062221E-C607-44C2-B0B4-C3886331D351) installs `EFI_CC_MEASUREMENT_PROTOCOL` and
//!   extends RTMR0–2; in edk2 2022.11 only `OvmfPkg/IntelTdx/IntelTdxX64.dsc` includes
//!   it, so Debian 12's `OVMF.fd` (OvmfPkgX64) boots TDs but measures nothing;
//! * whether `QemuKernelLoaderFsDxe` reads fw_cfg `etc/boot/*` first
//!   (`QemuKernelFetchNamedBlobs`, edk2 ≥ stable202502): then it loads the kernel QEMU
//!   ≥ 10.0 exports unpatched as `etc/boot/kernel` and skips the patched legacy blob;
//! * where the BDS puts "initrd=initrd" in the kernel's LoadOptions
//!   (`OvmfPkg/Library/X86QemuLoadImageLib/X86QemuLoadImageLib.c`, linked into BdsDxe);
//! * the version string a build may carry (`PcdFirmwareVersionString`, which Debian's
//!   packaging sets to the package version).
//!
//! Every conclusion comes with the evidence it rests on, for `inspect` and `--json`.

use uuid::{uuid, Uuid};

use crate::fv::{self, FfsFile, Volumes};
use crate::rtmr::InitrdOption;

/// `TdTcg2Dxe.inf` `FILE_GUID`.
pub const TD_TCG2_DXE: Uuid = uuid!("f062221e-c607-44c2-b0b4-c3886331d351");
/// `QemuKernelLoaderFsDxe.inf` `FILE_GUID`.
pub const QEMU_KERNEL_LOADER_FS_DXE: Uuid = uuid!("806040ca-dad9-4978-a3b4-2d2ab0c8a48f");
/// `BdsDxe.inf` `FILE_GUID` (links X86QemuLoadImageLib through PlatformBootManagerLib).
pub const BDS_DXE: Uuid = uuid!("6d33944a-ec75-4855-a54d-809c75241f6c");
/// `TdxDxe.inf` `FILE_GUID` (TDX support in DXE; present in every TDX-capable OVMF).
pub const TDX_DXE: Uuid = uuid!("e750224e-7bce-40af-b5bb-47e3611eb5c2");

/// The prefix `QemuKernelFetchNamedBlobs` compares fw_cfg file names with
/// (`AsciiStrnCmp (DirEntry[Idx].FileName, "etc/boot/", 9)`).
const NAMED_BLOBS: &[u8] = b"etc/boot/\0";
/// The event data prefix of edk2 ≥ stable202505's fw_cfg measurements
/// (`OvmfPkg/Library/QemuFwCfgLib/QemuFwCfgCacheInit.c`,
/// `EV_POSTCODE_INFO_QEMU_FW_CFG_DATA`, copied with its NUL).
const FW_CFG_EVENT: &[u8] = b"QEMU FW CFG\0";
/// The appended option of edk2 before stable202508 (`" initrd=initrd"`, an ASCII
/// argument of `UnicodeSPrintAsciiFormat`).
const INITRD_APPEND: &[u8] = b" initrd=initrd\0";
/// The prepended option of edk2 stable202508 and later.
const INITRD_PREPEND: &[u8] = b"initrd=initrd \0";

/// What the firmware was found to do. `None` means the firmware's volumes could not
/// be read well enough to tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Edk2Behaviour {
    /// Whether the firmware extends RTMRs (has `TdTcg2Dxe`).
    pub extends_rtmrs: Option<bool>,
    /// Whether the kernel loader prefers fw_cfg `etc/boot/*` (edk2 ≥ stable202502).
    pub reads_etc_boot: Option<bool>,
    /// Where the BDS puts "initrd=initrd".
    pub initrd_option: Option<InitrdOption>,
    /// Whether it measures "QEMU FW CFG" items into RTMR0 (edk2 ≥ stable202505).
    pub measures_fw_cfg: Option<bool>,
    /// The firmware's version string, if it carries one.
    pub version: Option<String>,
    /// The edk2 release that version names (`2025.02` from `2025.02-8+deb13u1`).
    pub edk2_release: Option<Edk2Release>,
    /// What each conclusion rests on.
    pub evidence: Vec<String>,
    /// What could not be read.
    pub problems: Vec<String>,
}

/// An edk2 stable release, `YYYY.MM` (tags `edk2-stableYYYYMM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edk2Release {
    /// Year.
    pub year: u16,
    /// Month.
    pub month: u8,
}

impl Edk2Release {
    /// `edk2-stable202502` → 2025.02.
    pub const fn new(year: u16, month: u8) -> Self {
        Self { year, month }
    }

    /// Parses `2025.02`, `202502`, `edk2-stable202502` or a Debian/Ubuntu package
    /// version such as `2025.02-8+deb13u1`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix("edk2-stable").unwrap_or(s);
        let digits: String = s
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let (y, m) = match digits.split_once('.') {
            Some((y, m)) => (y, m.get(..2).unwrap_or(m)),
            None => (digits.get(..4)?, digits.get(4..6)?),
        };
        let year: u16 = y.parse().ok()?;
        let month: u8 = m.parse().ok()?;
        ((2015..=2100).contains(&year) && (1..=12).contains(&month)).then_some(Self { year, month })
    }
}

impl std::str::FromStr for Edk2Release {
    type Err = String;

    /// As [`Edk2Release::parse`], with the message every caller shows.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!(
                "{s:?} is not an edk2 release: write YYYY.MM or edk2-stableYYYYMM, e.g. 2025.02"
            )
        })
    }
}

impl serde::Serialize for Edk2Release {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for Edk2Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.year, self.month)
    }
}

fn name(f: &FfsFile) -> String {
    f.ui_name.clone().unwrap_or_else(|| f.guid.to_string())
}

/// Reads the behaviours from a firmware image.
pub fn analyse(image: &[u8]) -> Edk2Behaviour {
    let vols = fv::scan(image);
    from_volumes(&vols)
}

/// Reads the behaviours from walked volumes.
pub fn from_volumes(vols: &Volumes) -> Edk2Behaviour {
    let mut b = Edk2Behaviour {
        problems: vols.problems.clone(),
        ..Edk2Behaviour::default()
    };
    let dxe_core = vols.files.iter().any(|f| f.file_type == 0x05);
    if !dxe_core {
        b.problems.push(
            "no DXE core found in the firmware's volumes: cannot tell which drivers it carries"
                .into(),
        );
        return b;
    }
    b.evidence.push(format!(
        "{} firmware volumes, {} files walked ({} bytes decompressed)",
        vols.volumes,
        vols.files.len(),
        vols.decompressed
    ));

    match vols.file(&TD_TCG2_DXE) {
        Some(f) => {
            b.extends_rtmrs = Some(true);
            b.evidence.push(format!(
                "driver {} ({TD_TCG2_DXE}) present: extends RTMR0-2",
                name(f)
            ));
        }
        None => {
            b.extends_rtmrs = Some(false);
            b.evidence.push(format!(
                "no TdTcg2Dxe ({TD_TCG2_DXE}): nothing extends RTMRs, a TD on this firmware reports RTMR0-2 as zero"
            ));
        }
    }

    match vols.file(&QEMU_KERNEL_LOADER_FS_DXE) {
        Some(f) if f.image.is_empty() => b
            .problems
            .push(format!("{} has no executable section to read", name(f))),
        Some(f) => {
            let named = f.contains(NAMED_BLOBS);
            b.reads_etc_boot = Some(named);
            b.evidence.push(if named {
                format!("{} reads fw_cfg \"etc/boot/*\" first (edk2 >= stable202502): with QEMU >= 10.0 it loads the unpatched etc/boot/kernel", name(f))
            } else {
                format!("{} has no \"etc/boot/\" lookup (edk2 before stable202502): it loads QEMU's legacy kernel blob", name(f))
            });
        }
        None => b
            .problems
            .push("no QemuKernelLoaderFsDxe: this firmware cannot boot -kernel".into()),
    }

    let bds: Vec<&FfsFile> = vols.files.iter().filter(|f| f.guid == BDS_DXE).collect();
    let append = bds.iter().any(|f| f.contains(INITRD_APPEND));
    let prepend = bds.iter().any(|f| f.contains(INITRD_PREPEND));
    match (append, prepend) {
        (true, false) => {
            b.initrd_option = Some(InitrdOption::Append);
            b.evidence.push(
                "BdsDxe appends \" initrd=initrd\" to LoadOptions (edk2 before stable202508)"
                    .into(),
            );
        }
        (false, true) => {
            b.initrd_option = Some(InitrdOption::Prepend);
            b.evidence.push(
                "BdsDxe prepends \"initrd=initrd \" to LoadOptions (edk2 stable202508 and later)"
                    .into(),
            );
        }
        (true, true) => b
            .problems
            .push("BdsDxe carries both \" initrd=initrd\" and \"initrd=initrd \"".into()),
        (false, false) => b
            .problems
            .push("no \"initrd=initrd\" option string found in BdsDxe".into()),
    }

    let fw_cfg = vols.files.iter().find(|f| f.contains(FW_CFG_EVENT));
    b.measures_fw_cfg = Some(fw_cfg.is_some());
    if let Some(f) = fw_cfg {
        b.evidence.push(format!(
            "{} measures \"QEMU FW CFG\" items into RTMR0 (edk2 >= stable202505)",
            name(f)
        ));
    }

    if let Some(v) = version_string(vols) {
        b.edk2_release = Edk2Release::parse(&v);
        b.evidence.push(format!("firmware version string {v:?}"));
        b.version = Some(v);
    }
    b
}

/// A UTF-16 `PcdFirmwareVersionString` value that looks like an edk2 version
/// (`2025.02…`, `edk2-stable2025…`), searched in the modules that report it.
fn version_string(vols: &Volumes) -> Option<String> {
    vols.files.iter().find_map(|f| utf16_version(&f.image))
}

fn utf16_version(image: &[u8]) -> Option<String> {
    // Candidates start at an even offset with 4 digits and '.' as UTF-16LE, or with
    // "edk2-stable"; found with memchr's SIMD search, checked in offset order.
    let pat = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let stable = pat("edk2-stable");
    let mut starts: Vec<usize> = memchr::memmem::find_iter(image, b".\0")
        .filter_map(|dot| dot.checked_sub(8))
        .chain(memchr::memmem::find_iter(image, &stable))
        .filter(|i| i % 2 == 0)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    starts.into_iter().find_map(|i| {
        let w = image.get(i..)?;
        let digits4 = (0..4)
            .all(|k| w.get(2 * k).is_some_and(u8::is_ascii_digit) && w.get(2 * k + 1) == Some(&0))
            && w.get(8) == Some(&b'.')
            && w.get(9) == Some(&0);
        if !digits4 && !w.starts_with(&stable) {
            return None;
        }
        let units: Vec<u16> = (0..64)
            .map_while(|k| {
                let lo = *w.get(2 * k)?;
                let hi = *w.get(2 * k + 1)?;
                (hi == 0 && lo.is_ascii_graphic()).then_some(u16::from(lo))
            })
            .collect();
        let s = String::from_utf16_lossy(&units);
        (Edk2Release::parse(&s).is_some()
            && w.get(2 * units.len()..2 * units.len() + 2) == Some(&[0, 0]))
        .then_some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(
            Edk2Release::parse("2025.02-8+deb13u1"),
            Some(Edk2Release::new(2025, 2))
        );
        assert_eq!(
            Edk2Release::parse("edk2-stable202508"),
            Some(Edk2Release::new(2025, 8))
        );
        assert_eq!(
            Edk2Release::parse("2022.11"),
            Some(Edk2Release::new(2022, 11))
        );
        assert_eq!(
            Edk2Release::parse("202605"),
            Some(Edk2Release::new(2026, 5))
        );
        for bad in ["", "2025", "2025.13", "abc", "1999.01", "2025.x"] {
            assert_eq!(Edk2Release::parse(bad), None, "{bad}");
        }
        assert!(Edk2Release::new(2025, 2) < Edk2Release::new(2025, 8));
        assert_eq!(Edk2Release::new(2025, 2).to_string(), "2025.02");
    }

    /// A firmware whose DXE volume holds the modules named, LZMA-compressed inside an
    /// outer volume as OVMF's FDF lays out FVMAIN_COMPACT.
    fn firmware(modules: &[(Uuid, u8, &[u8])]) -> Vec<u8> {
        use crate::fv::tests::{file, lzma_section, section, volume};
        let mut files = file(
            uuid!("d6a2cb7f-6a18-4e2f-b43b-9920a733700a"),
            0x05,
            &section(0x10, b"core"),
        );
        for (g, t, body) in modules {
            files.extend(file(*g, *t, &section(0x10, body)));
        }
        let dxe = volume(&files);
        let outer = volume(&file(
            Uuid::from_u128(1),
            0x0b,
            &lzma_section(&section(0x17, &dxe)),
        ));
        [vec![0xff; 8192], outer].concat()
    }

    #[test]
    fn behaviours_from_synthetic_volumes() {
        // stable202508+: "initrd=initrd " (X86QemuLoadImageLib, commit a2ac0fea49).
        let img = firmware(&[
            (TD_TCG2_DXE, 0x07, b"tcg"),
            (QEMU_KERNEL_LOADER_FS_DXE, 0x07, b"..etc/boot/\0.."),
            (BDS_DXE, 0x07, b"%a%a%a\0kernel \0initrd=initrd \0"),
            (Uuid::from_u128(9), 0x06, b"x\0QEMU FW CFG\0y"),
        ]);
        let b = analyse(&img);
        assert!(b.problems.is_empty(), "{:?}", b.problems);
        assert_eq!(b.extends_rtmrs, Some(true));
        assert_eq!(b.reads_etc_boot, Some(true));
        assert_eq!(b.initrd_option, Some(InitrdOption::Prepend));
        assert_eq!(b.measures_fw_cfg, Some(true));
        // 2022.11-like: no TdTcg2Dxe, no etc/boot/, appended option.
        let img = firmware(&[
            (QEMU_KERNEL_LOADER_FS_DXE, 0x07, b"kernel\0initrd"),
            (BDS_DXE, 0x07, b"%a%a\0 initrd=initrd\0etc/boot-menu-wait\0"),
        ]);
        let b = analyse(&img);
        assert_eq!(b.extends_rtmrs, Some(false));
        assert_eq!(b.reads_etc_boot, Some(false));
        assert_eq!(b.initrd_option, Some(InitrdOption::Append));
        assert_eq!(b.measures_fw_cfg, Some(false));
        // No volumes at all: nothing is claimed.
        let b = analyse(&[0u8; 4096]);
        assert_eq!(
            (b.extends_rtmrs, b.reads_etc_boot, b.initrd_option),
            (None, None, None)
        );
        assert!(!b.problems.is_empty());
    }

    /// Random corruption of a realistic image (volumes, LZMA, nested volume): the walk
    /// never panics, never claims a driver it did not find intact, and stays bounded.
    #[test]
    fn corrupted_images_are_read_without_panics() {
        use rand::{Rng, SeedableRng};
        let img = firmware(&[
            (TD_TCG2_DXE, 0x07, b"tcg"),
            (QEMU_KERNEL_LOADER_FS_DXE, 0x07, b"..etc/boot/\0.."),
            (BDS_DXE, 0x07, b" initrd=initrd\0"),
        ]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..3000 {
            let mut m = img.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(8192..m.len());
                m[i] = rng.gen();
            }
            if rng.gen_bool(0.2) {
                m.truncate(rng.gen_range(8192..m.len()));
            }
            let b = analyse(&m);
            assert!(b.evidence.len() + b.problems.len() > 0);
        }
    }

    #[test]
    fn version_in_utf16() {
        let mut img = b"junk\x01".to_vec();
        img.extend(
            "2025.02-8+deb13u1\0"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        );
        // Odd offsets are not UTF-16 strings of the module.
        assert_eq!(utf16_version(&img), None);
        img.remove(0);
        assert_eq!(utf16_version(&img).as_deref(), Some("2025.02-8+deb13u1"));
    }
}
