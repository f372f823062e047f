//! The Linux x86 boot protocol header of a bzImage, and the changes QEMU's
//! `x86_load_linux` makes to it before handing the kernel to the firmware over fw_cfg.
//!
//! The firmware (OVMF) reassembles setup + kernel from fw_cfg and measures that image
//! with Authenticode, so the TDX RTMR1 digest of the kernel depends on these patches:
//! `type_of_loader` (0x210), `loadflags` CAN_USE_HEAP (0x211), `heap_end_ptr` (0x224),
//! `cmd_line_ptr` (0x228, or 0x20/0x22 for protocol < 2.02), `vid_mode` (0x1fa, only
//! when the command line has `vga=`) and, with an initrd, `ramdisk_image` (0x218) and
//! `ramdisk_size` (0x21c). The initrd address depends on the guest's RAM below 4 GiB
//! (q35 split, see [`crate::machine::ram_split`]) and on the initrd size.
//!
//! QEMU 10.2 stopped patching the header for confidential guests ("x86/loader: Don't
//! update kernel header for CoCo VMs"); [`KernelSetup::Unmodified`] models that. QEMU
//! still checks the initrd fits in both cases, so the checks run either way.

use std::fmt;

use crate::bytes::{le_u16, le_u32};
use crate::machine::ram_split;
use crate::MeasureError;

/// "HdrS": the boot protocol header magic at 0x202.
const HDRS: u32 = u32::from_le_bytes(*b"HdrS");
/// Bytes QEMU reads as the header before patching.
const HEADER_WINDOW: usize = 8192;
/// ACPI data QEMU reserves below the top of low RAM on pc/q35 (`PC_FW_DATA`).
pub const PC_FW_DATA: u64 = 0x20000 + 0x8000;
/// `xloadflags` bit: the kernel may be loaded (and take an initrd) above 4 GiB.
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;

/// How QEMU hands the kernel's setup header to a TDX guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelSetup {
    /// QEMU up to 10.1 (and the TDX trees built on older QEMU): header patched as for
    /// any guest.
    #[default]
    Patched,
    /// QEMU 10.2 and later: confidential guests get the file's header unchanged.
    Unmodified,
}

impl KernelSetup {
    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unmodified => "unmodified",
        }
    }
}

impl fmt::Display for KernelSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fields of the x86 boot protocol header that matter here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupHeader {
    /// Boot protocol version (0x206), e.g. 0x020f for 2.15.
    pub protocol: u16,
    /// `setup_sects` (0x1f1); 0 means 4.
    pub setup_sects: u8,
    /// `loadflags` (0x211).
    pub loadflags: u8,
    /// `initrd_addr_max` (0x22c), protocol 2.03+.
    pub initrd_addr_max: u32,
    /// `xloadflags` (0x236), protocol 2.12+.
    pub xloadflags: u16,
    /// The kernel version string the header points to, when present.
    pub version: Option<String>,
}

/// Header fields lie inside the 0x300 bytes `parse` requires; 0 past the end.
fn le16(d: &[u8], off: usize) -> u16 {
    le_u16(d, off).unwrap_or(0)
}

fn le32(d: &[u8], off: usize) -> u32 {
    le_u32(d, off).unwrap_or(0)
}

fn put16(d: &mut [u8], off: usize, v: u16) {
    if let Some(s) = d.get_mut(off..off + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put32(d: &mut [u8], off: usize, v: u32) {
    if let Some(s) = d.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn bad(msg: impl Into<String>) -> MeasureError {
    MeasureError::Kernel(msg.into())
}

impl SetupHeader {
    /// Reads the header of a bzImage. Refuses files without the "HdrS" magic, which
    /// QEMU would try as multiboot and OVMF could not start as an EFI image.
    pub fn parse(kernel: &[u8]) -> Result<Self, MeasureError> {
        if kernel.len() < 0x300 {
            return Err(bad(format!(
                "{} bytes is too short for a Linux bzImage (no boot protocol header)",
                kernel.len()
            )));
        }
        if le32(kernel, 0x202) != HDRS {
            return Err(bad(
                "no \"HdrS\" boot protocol header at 0x202: not a Linux bzImage (pass the vmlinuz, not vmlinux or a compressed file)",
            ));
        }
        let protocol = le16(kernel, 0x206);
        let setup_sects = kernel.get(0x1f1).copied().unwrap_or(0);
        let loadflags = kernel.get(0x211).copied().unwrap_or(0);
        let initrd_addr_max = if protocol >= 0x203 {
            le32(kernel, 0x22c)
        } else {
            0
        };
        let xloadflags = if protocol >= 0x20c {
            le16(kernel, 0x236)
        } else {
            0
        };
        let version = {
            let ptr = usize::from(le16(kernel, 0x20e));
            if ptr == 0 {
                None
            } else {
                kernel.get(ptr + 0x200..).map(|s| {
                    let end = s.iter().take(256).position(|&b| b == 0).unwrap_or(0);
                    String::from_utf8_lossy(s.get(..end).unwrap_or(&[])).into_owned()
                })
            }
        };
        Ok(Self {
            protocol,
            setup_sects,
            loadflags,
            initrd_addr_max,
            xloadflags,
            version: version.filter(|v| !v.is_empty()),
        })
    }

    /// Bytes of the real-mode setup (QEMU's `setup_size`).
    pub fn setup_size(&self) -> usize {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        (usize::from(sects) + 1) * 512
    }

    fn recent_high(&self) -> bool {
        self.protocol >= 0x202 && self.loadflags & 1 != 0
    }

    /// The highest initrd address QEMU allows (before the RAM cap).
    pub fn initrd_max(&self) -> u32 {
        if self.protocol >= 0x20c && self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
            u32::MAX
        } else if self.protocol >= 0x203 {
            self.initrd_addr_max
        } else {
            0x37ff_ffff
        }
    }
}

/// What QEMU's direct kernel boot puts into the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxLoad<'a> {
    /// Guest RAM in bytes (after QEMU's rounding).
    pub memory: u64,
    /// Size of the initrd, if one is given.
    pub initrd_size: Option<u64>,
    /// The `-append` command line.
    pub cmdline: &'a str,
}

/// QEMU's parse of `vga=` (first occurrence anywhere in the command line).
fn vga_mode(cmdline: &str) -> Result<Option<u16>, MeasureError> {
    let Some(pos) = cmdline.find("vga=") else {
        return Ok(None);
    };
    let v = cmdline.get(pos + 4..).unwrap_or("");
    if v.starts_with("normal") {
        return Ok(Some(0xffff));
    }
    if v.starts_with("ext") {
        return Ok(Some(0xfffe));
    }
    if v.starts_with("ask") {
        return Ok(Some(0xfffd));
    }
    let word = v.split(' ').next().unwrap_or("");
    let parsed = if let Some(h) = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if word.len() > 1 && word.starts_with('0') {
        u32::from_str_radix(word.get(1..).unwrap_or(""), 8).ok()
    } else {
        word.parse::<u32>().ok()
    };
    match parsed {
        // QEMU stores the low 16 bits of an unsigned int.
        Some(m) if !word.is_empty() => Ok(Some((m & 0xffff) as u16)),
        _ => Err(bad(format!(
            "invalid 'vga=' kernel parameter {word:?}: QEMU refuses to start (use normal, ext, ask or a number)"
        ))),
    }
}

/// The leading bytes of a kernel that QEMU may patch (its 8 KiB header window, cut
/// to the setup size).
pub fn header_window(h: &SetupHeader, file_len: usize) -> usize {
    file_len.min(HEADER_WINDOW).min(h.setup_size())
}

/// Applies QEMU's direct-boot checks and (for [`KernelSetup::Patched`]) its header
/// patches in place. `head` is the start of the kernel file (at least its
/// [`header_window`]), `file_len` the whole file's size. Returns the initrd guest
/// address when there is one.
pub fn apply_qemu_load(
    head: &mut [u8],
    file_len: usize,
    load: &LinuxLoad<'_>,
    mode: KernelSetup,
) -> Result<Option<u32>, MeasureError> {
    let h = SetupHeader::parse(head)?;
    if h.setup_size() > file_len {
        return Err(bad(format!(
            "setup_sects says {} bytes of setup but the file has {file_len}: QEMU refuses it (\"invalid kernel header\")",
            h.setup_size(),
        )));
    }
    let (real_addr, cmdline_addr): (u32, u32) = if h.recent_high() {
        (0x10000, 0x20000)
    } else {
        let cmdline_size = ((load.cmdline.len() + 16) & !15) as u32;
        (0x90000, 0x9a000u32.saturating_sub(cmdline_size))
    };
    let vga = vga_mode(load.cmdline)?;

    let initrd_addr = match load.initrd_size {
        None => None,
        Some(size) => {
            if h.protocol < 0x200 {
                return Err(bad(
                    "the kernel's boot protocol is older than 2.00 and cannot take an initrd (QEMU refuses it)",
                ));
            }
            let (below_4g, _) = ram_split(load.memory);
            let cap = below_4g.checked_sub(PC_FW_DATA + 1).ok_or_else(|| {
                bad(format!(
                    "{} bytes of RAM is too little to load an initrd",
                    load.memory
                ))
            })?;
            let mut max = u64::from(h.initrd_max());
            if max >= below_4g.saturating_sub(PC_FW_DATA) {
                max = cap;
            }
            if size >= max {
                return Err(MeasureError::MemoryTooSmall(format!(
                    "kernel: the initrd ({size} bytes) does not fit below 0x{max:x} with {} bytes of RAM: QEMU refuses it (\"initrd is too large\"); give the guest more memory",
                    load.memory
                )));
            }
            // Both fit in 32 bits: max < 2^32 and size < max.
            Some((((max - size) & !4095) as u32, size as u32))
        }
    };

    if mode == KernelSetup::Patched {
        let window = header_window(&h, file_len);
        let hdr = head.get_mut(..window).unwrap_or_default();
        if h.protocol >= 0x202 {
            put32(hdr, 0x228, cmdline_addr);
        } else {
            put16(hdr, 0x20, 0xa33f);
            put16(hdr, 0x22, (cmdline_addr - real_addr) as u16);
        }
        if let Some(mode) = vga {
            put16(hdr, 0x1fa, mode);
        }
        if h.protocol >= 0x200 {
            if let Some(b) = hdr.get_mut(0x210) {
                *b = 0xb0;
            }
        }
        if h.protocol >= 0x201 {
            if let Some(b) = hdr.get_mut(0x211) {
                *b |= 0x80;
            }
            put16(hdr, 0x224, (cmdline_addr - real_addr - 0x200) as u16);
        }
        if let Some((addr, size)) = initrd_addr {
            put32(hdr, 0x218, addr);
            put32(hdr, 0x21c, size);
        }
    }
    Ok(initrd_addr.map(|(a, _)| a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(
        k: &mut [u8],
        load: &LinuxLoad<'_>,
        mode: KernelSetup,
    ) -> Result<Option<u32>, MeasureError> {
        let n = k.len();
        apply_qemu_load(k, n, load, mode)
    }

    fn kernel(protocol: u16, loadflags: u8, initrd_max: u32, xlf: u16) -> Vec<u8> {
        let mut k = vec![0u8; 0x4000];
        k[0x1f1] = 3;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        k[0x211] = loadflags;
        k[0x22c..0x230].copy_from_slice(&initrd_max.to_le_bytes());
        k[0x236..0x238].copy_from_slice(&xlf.to_le_bytes());
        k
    }

    #[test]
    fn modern_kernel_is_patched_like_qemu() {
        let mut k = kernel(0x20f, 0x01, 0x7fff_ffff, 0);
        let load = LinuxLoad {
            memory: 2 << 30,
            initrd_size: Some(10_000_000),
            cmdline: "console=ttyS0",
        };
        let addr = apply(&mut k, &load, KernelSetup::Patched).unwrap();
        // 2 GiB below 4G, minus 0x28000 of ACPI data, minus one.
        let max: u64 = 0x8000_0000 - 0x28000 - 1;
        let want = ((max - 10_000_000) & !4095) as u32;
        assert_eq!(addr, Some(want));
        assert_eq!(&k[0x218..0x21c], &want.to_le_bytes());
        assert_eq!(&k[0x21c..0x220], &10_000_000u32.to_le_bytes());
        assert_eq!(&k[0x228..0x22c], &0x20000u32.to_le_bytes());
        assert_eq!(k[0x210], 0xb0);
        assert_eq!(k[0x211], 0x81);
        assert_eq!(&k[0x224..0x228], &[0x00, 0xfe, 0, 0]);
        assert_eq!(&k[0x1fa..0x1fc], &[0, 0]);
    }

    #[test]
    fn unmodified_mode_leaves_the_file_alone_but_still_checks() {
        let orig = kernel(0x20f, 0x01, 0x7fff_ffff, 0);
        let mut k = orig.clone();
        let load = LinuxLoad {
            memory: 2 << 30,
            initrd_size: Some(1 << 20),
            cmdline: "vga=ext",
        };
        apply(&mut k, &load, KernelSetup::Unmodified).unwrap();
        assert_eq!(k, orig);
        let huge = LinuxLoad {
            memory: 64 << 20,
            initrd_size: Some(100 << 20),
            cmdline: "",
        };
        assert!(apply(&mut k, &huge, KernelSetup::Unmodified).is_err());
    }

    #[test]
    fn above_4g_flag_lifts_the_header_limit() {
        // 2.5 GiB guest: all of it is below 4 GiB.
        let memory = 0xa000_0000;
        let load = LinuxLoad {
            memory,
            initrd_size: Some(4096),
            cmdline: "",
        };
        let mut old = kernel(0x20f, 0x01, 0x7fff_ffff, 0);
        let mut new = kernel(0x20f, 0x01, 0x7fff_ffff, XLF_CAN_BE_LOADED_ABOVE_4G);
        let a = apply(&mut old, &load, KernelSetup::Patched)
            .unwrap()
            .unwrap();
        let b = apply(&mut new, &load, KernelSetup::Patched)
            .unwrap()
            .unwrap();
        assert_eq!(a, (0x7fff_ffff - 4096) & !4095);
        assert_eq!(u64::from(b), (memory - 0x28000 - 1 - 4096) & !4095);
    }

    #[test]
    fn vga_parameter_goes_into_vid_mode() {
        for (c, want) in [
            ("vga=normal", 0xffff),
            ("quiet vga=ext", 0xfffe),
            ("vga=ask", 0xfffd),
            ("vga=0x317 x", 0x317),
            ("vga=791", 791),
            ("vga=017", 0o17),
        ] {
            let mut k = kernel(0x20f, 0x01, 0x7fff_ffff, 0);
            let load = LinuxLoad {
                memory: 1 << 30,
                initrd_size: None,
                cmdline: c,
            };
            apply(&mut k, &load, KernelSetup::Patched).unwrap();
            assert_eq!(u16::from_le_bytes([k[0x1fa], k[0x1fb]]), want, "{c}");
        }
        let mut k = kernel(0x20f, 0x01, 0x7fff_ffff, 0);
        for c in ["vga=", "vga=foo", "vga=12x", "vga=0x"] {
            let load = LinuxLoad {
                memory: 1 << 30,
                initrd_size: None,
                cmdline: c,
            };
            assert!(apply(&mut k, &load, KernelSetup::Patched).is_err(), "{c}");
        }
    }

    #[test]
    fn old_kernels_use_low_addresses() {
        let mut k = kernel(0x201, 0x00, 0, 0);
        let load = LinuxLoad {
            memory: 1 << 30,
            initrd_size: None,
            cmdline: "abc",
        };
        apply(&mut k, &load, KernelSetup::Patched).unwrap();
        // cmdline_addr = 0x9a000 - 16; protocol < 2.02 uses the 0x20 magic.
        assert_eq!(&k[0x20..0x22], &0xa33fu16.to_le_bytes());
        assert_eq!(
            &k[0x22..0x24],
            &((0x9a000u32 - 16 - 0x90000) as u16).to_le_bytes()
        );
        assert_eq!(
            &k[0x224..0x226],
            &((0x9a000u32 - 16 - 0x90000 - 0x200) as u16).to_le_bytes()
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(SetupHeader::parse(&[0u8; 100]).is_err());
        assert!(SetupHeader::parse(&[0u8; 0x1000]).is_err());
        let mut k = kernel(0x20f, 1, 0, 0);
        k[0x1f1] = 200; // setup bigger than the file
        let load = LinuxLoad {
            memory: 1 << 30,
            initrd_size: None,
            cmdline: "",
        };
        assert!(apply(&mut k, &load, KernelSetup::Patched).is_err());
    }
}
