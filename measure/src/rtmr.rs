//! The TDX runtime measurement registers RTMR0–2 of a QEMU direct kernel boot, as an
//! expected event log and its replay (`RTMR = SHA384(RTMR || digest)` per event, from
//! 48 zero bytes).
//!
//! Event placement follows edk2's TDVF (OvmfPkg TdxHelperLib, TdTcg2Dxe,
//! AcpiPlatformLib, X86QemuLoadImageLib) with the PCR→RTMR map PCR1,7→RTMR0,
//! PCR2–6→RTMR1, PCR8–15→RTMR2:
//!
//! * RTMR0: TD HOB (SEC), CFV (SEC), optional "QEMU FW CFG" items (edk2 ≥ stable202505),
//!   SecureBoot/PK/KEK/db/dbx (+dbt if present) as `UEFI_VARIABLE_DATA`, the PCR7
//!   separator, the ACPI table-loader script and then each blob in the order the
//!   script ALLOCATEs it, and at ReadyToBoot BootOrder and each Boot#### it lists
//!   (digest over the variable data only).
//! * RTMR1: the kernel's Authenticode digest (LoadImage, before ReadyToBoot), "Calling
//!   EFI Application from Boot Option", the separator, and the two ExitBootServices
//!   actions.
//! * RTMR2: nothing from the firmware. The Linux EFI stub measures its LoadOptions
//!   (UTF-16, NUL-terminated) and the initrd, but into a TDX register only since
//!   Linux 6.9 (CC measurement protocol); older stubs only use TCG2, which TDVF
//!   lacks, and RTMR2 stays zero.

use sha2::{Digest, Sha384};

use crate::bytes::le_u32;
use crate::efivar::{self, EfiVars, GLOBAL_VARIABLE, IMAGE_SECURITY_DATABASE};
use crate::MeasureError;

/// A SHA-384 digest.
pub use crate::bytes::Digest384;

/// TCG event types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// EV_SEPARATOR.
    EvSeparator,
    /// EV_EVENT_TAG.
    EvEventTag,
    /// EV_PLATFORM_CONFIG_FLAGS.
    EvPlatformConfigFlags,
    /// EV_EFI_VARIABLE_DRIVER_CONFIG.
    EvEfiVariableDriverConfig,
    /// EV_EFI_VARIABLE_BOOT.
    EvEfiVariableBoot,
    /// EV_EFI_BOOT_SERVICES_APPLICATION.
    EvEfiBootServicesApplication,
    /// EV_EFI_ACTION.
    EvEfiAction,
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB2.
    EvEfiPlatformFirmwareBlob2,
    /// EV_EFI_HANDOFF_TABLES2.
    EvEfiHandoffTables2,
}

impl EventType {
    /// The TCG numeric value.
    pub fn value(self) -> u32 {
        match self {
            Self::EvSeparator => 0x4,
            Self::EvEventTag => 0x6,
            Self::EvPlatformConfigFlags => 0xa,
            Self::EvEfiVariableDriverConfig => 0x8000_0001,
            Self::EvEfiVariableBoot => 0x8000_0002,
            Self::EvEfiBootServicesApplication => 0x8000_0003,
            Self::EvEfiAction => 0x8000_0007,
            Self::EvEfiPlatformFirmwareBlob2 => 0x8000_000a,
            Self::EvEfiHandoffTables2 => 0x8000_000b,
        }
    }

    /// The TCG name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EvSeparator => "EV_SEPARATOR",
            Self::EvEventTag => "EV_EVENT_TAG",
            Self::EvPlatformConfigFlags => "EV_PLATFORM_CONFIG_FLAGS",
            Self::EvEfiVariableDriverConfig => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            Self::EvEfiVariableBoot => "EV_EFI_VARIABLE_BOOT",
            Self::EvEfiBootServicesApplication => "EV_EFI_BOOT_SERVICES_APPLICATION",
            Self::EvEfiAction => "EV_EFI_ACTION",
            Self::EvEfiPlatformFirmwareBlob2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
            Self::EvEfiHandoffTables2 => "EV_EFI_HANDOFF_TABLES2",
        }
    }
}

/// One expected event. Serialised as `{rtmr, event_type, event_type_value, digest,
/// what}` (type by TCG name and number, digest in hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RTMR index (0–2).
    pub rtmr: u8,
    /// Event type.
    pub event_type: EventType,
    /// The SHA-384 extended into the register.
    pub digest: Digest384,
    /// What it is, for people.
    pub what: String,
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Event", 5)?;
        st.serialize_field("rtmr", &self.rtmr)?;
        st.serialize_field("event_type", self.event_type.name())?;
        st.serialize_field(
            "event_type_value",
            &format!("{:#x}", self.event_type.value()),
        )?;
        st.serialize_field("digest", &hex::encode(self.digest))?;
        st.serialize_field("what", &self.what)?;
        st.end()
    }
}

impl Event {
    fn new(rtmr: u8, event_type: EventType, digest: Digest384, what: impl Into<String>) -> Self {
        Self {
            rtmr,
            event_type,
            digest,
            what: what.into(),
        }
    }
}

/// SHA-384 of bytes.
pub fn sha384(data: &[u8]) -> Digest384 {
    Sha384::digest(data).into()
}

/// Replays the events of one register.
pub fn replay(events: &[Event], rtmr: u8) -> Digest384 {
    let mut r = [0u8; 48];
    for e in events.iter().filter(|e| e.rtmr == rtmr) {
        let mut h = Sha384::new();
        h.update(r);
        h.update(e.digest);
        r = h.finalize().into();
    }
    r
}

/// The separator event data (a 32-bit zero).
const SEPARATOR: [u8; 4] = [0; 4];

/// The three QEMU fw_cfg ACPI blobs (`etc/acpi/tables`, `etc/acpi/rsdp`,
/// `etc/table-loader`) as dumped from a guest of the same QEMU configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiBlobs {
    /// `etc/acpi/tables`.
    pub tables: Vec<u8>,
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/table-loader`.
    pub loader: Vec<u8>,
}

/// One command of QEMU's BIOS linker/loader script.
const LOADER_CMD: usize = 128;
const LOADER_ALLOCATE: u32 = 1;
const LOADER_FILE: usize = 56;

impl AcpiBlobs {
    /// The files the loader script ALLOCATEs, in script order (the order OVMF
    /// downloads and measures them).
    pub fn allocations(&self) -> Result<Vec<String>, MeasureError> {
        if self.loader.is_empty() || !self.loader.len().is_multiple_of(LOADER_CMD) {
            return Err(MeasureError::Platform(format!(
                "the table-loader blob has {} bytes; QEMU's etc/table-loader is a list of 128-byte commands (dump /sys/firmware/qemu_fw_cfg/by_name/etc/table-loader/raw)",
                self.loader.len()
            )));
        }
        let mut out = Vec::new();
        for cmd in self.loader.chunks_exact(LOADER_CMD) {
            if le_u32(cmd, 0) == Some(LOADER_ALLOCATE) {
                let name = cmd.get(4..4 + LOADER_FILE).unwrap_or(&[]);
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                out.push(String::from_utf8_lossy(name.get(..end).unwrap_or(&[])).into_owned());
            }
        }
        Ok(out)
    }

    fn blob(&self, name: &str) -> Option<&[u8]> {
        match name {
            "etc/acpi/tables" => Some(&self.tables),
            "etc/acpi/rsdp" => Some(&self.rsdp),
            _ => None,
        }
    }
}

/// Everything RTMR0 needs besides the firmware and memory size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// The fw_cfg ACPI blobs.
    pub acpi: Option<AcpiBlobs>,
    /// EFI variables dumped from a guest (BootOrder, Boot####, secure-boot keys).
    pub efivars: Option<EfiVars>,
    /// fw_cfg items OVMF ≥ edk2-stable202505 measures at start ("QEMU FW CFG"), as
    /// (name, raw bytes), in the order given.
    pub fw_cfg: Vec<(String, Vec<u8>)>,
}

/// The fw_cfg items edk2's QemuFwCfgCacheInit measures, in its order.
pub const FW_CFG_MEASURED: [&str; 6] = [
    "etc/extra-pci-roots",
    "BootMenu",
    "etc/boot-menu-wait",
    "etc/reserved-memory-end",
    "opt/ovmf/X-PciMmio64Mb",
    "bootorder",
];

/// Why RTMR0 cannot be computed from `platform` (ACPI blobs or EFI variables not
/// given), with how to obtain them; `None` when both are there.
pub fn missing_rtmr0_inputs(platform: &Platform) -> Option<MeasureError> {
    if platform.acpi.is_none() {
        return Some(MeasureError::Platform(
            "RTMR0 needs QEMU's ACPI blobs: in a guest started with the same QEMU options, copy \
             /sys/firmware/qemu_fw_cfg/by_name/etc/acpi/tables/raw, .../etc/acpi/rsdp/raw and \
             .../etc/table-loader/raw (modprobe qemu_fw_cfg)"
                .into(),
        ));
    }
    if platform.efivars.is_none() {
        return Some(MeasureError::Platform(
            "RTMR0 needs the guest's boot variables: copy /sys/firmware/efi/efivars (at least \
             BootOrder-* and Boot####-*) from a guest of the same configuration"
                .into(),
        ));
    }
    None
}

/// RTMR0 events. `td_hob` is the measured TD HOB, `cfv` the CFV bytes.
pub fn rtmr0_events(
    td_hob: &[u8],
    cfv: &[u8],
    platform: &Platform,
) -> Result<Vec<Event>, MeasureError> {
    let (Some(acpi), Some(vars)) = (&platform.acpi, &platform.efivars) else {
        return Err(missing_rtmr0_inputs(platform)
            .unwrap_or_else(|| MeasureError::Platform("RTMR0 inputs missing".into())));
    };
    let boot_order = vars.boot_order()?.ok_or_else(|| {
        MeasureError::Platform(format!(
            "the efivars directory has no BootOrder-{GLOBAL_VARIABLE}: copy it from the guest's /sys/firmware/efi/efivars"
        ))
    })?;

    let mut ev = vec![
        Event::new(
            0,
            EventType::EvEfiHandoffTables2,
            sha384(td_hob),
            "TD HOB (QEMU's HOB list, end-of-list HOB excluded)",
        ),
        Event::new(
            0,
            EventType::EvEfiPlatformFirmwareBlob2,
            sha384(cfv),
            "CFV (the firmware's configuration volume / variable store)",
        ),
    ];
    for name in FW_CFG_MEASURED {
        for (n, data) in &platform.fw_cfg {
            if n == name {
                ev.push(Event::new(
                    0,
                    EventType::EvPlatformConfigFlags,
                    sha384(data),
                    format!("QEMU FW CFG {name}"),
                ));
            }
        }
    }
    let secure: [(&uuid::Uuid, &str); 5] = [
        (&GLOBAL_VARIABLE, "SecureBoot"),
        (&GLOBAL_VARIABLE, "PK"),
        (&GLOBAL_VARIABLE, "KEK"),
        (&IMAGE_SECURITY_DATABASE, "db"),
        (&IMAGE_SECURITY_DATABASE, "dbx"),
    ];
    for (vendor, name) in secure {
        let data = vars.get(vendor, name).unwrap_or(&[]);
        let what = if data.is_empty() {
            format!("{name} (absent: measured empty)")
        } else {
            format!("{name} ({} bytes)", data.len())
        };
        ev.push(Event::new(
            0,
            EventType::EvEfiVariableDriverConfig,
            sha384(&efivar::variable_data(vendor, name, data)),
            what,
        ));
    }
    if let Some(dbt) = vars.get(&IMAGE_SECURITY_DATABASE, "dbt") {
        ev.push(Event::new(
            0,
            EventType::EvEfiVariableDriverConfig,
            sha384(&efivar::variable_data(&IMAGE_SECURITY_DATABASE, "dbt", dbt)),
            format!("dbt ({} bytes)", dbt.len()),
        ));
    }
    ev.push(Event::new(
        0,
        EventType::EvSeparator,
        sha384(&SEPARATOR),
        "separator (PCR7, after the secure-boot policy)",
    ));
    ev.push(Event::new(
        0,
        EventType::EvPlatformConfigFlags,
        sha384(&acpi.loader),
        "ACPI DATA etc/table-loader",
    ));
    for name in acpi.allocations()? {
        let blob = acpi.blob(&name).ok_or_else(|| {
            MeasureError::Platform(format!(
                "the table-loader script allocates {name:?}, which OVMF also measures; only etc/acpi/tables and etc/acpi/rsdp can be given (is a TPM or NVDIMM configured? TDX guests have neither)"
            ))
        })?;
        ev.push(Event::new(
            0,
            EventType::EvPlatformConfigFlags,
            sha384(blob),
            format!("ACPI DATA {name}"),
        ));
    }
    ev.push(Event::new(
        0,
        EventType::EvEfiVariableBoot,
        sha384(vars.get(&GLOBAL_VARIABLE, "BootOrder").unwrap_or(&[])),
        format!(
            "BootOrder ({})",
            boot_order
                .iter()
                .map(|n| format!("{n:04X}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ));
    for n in boot_order {
        let name = format!("Boot{n:04X}");
        if let Some(data) = vars.get(&GLOBAL_VARIABLE, &name) {
            ev.push(Event::new(
                0,
                EventType::EvEfiVariableBoot,
                sha384(data),
                name,
            ));
        }
    }
    Ok(ev)
}

/// RTMR1 events for a kernel with the given Authenticode digest.
pub fn rtmr1_events(kernel_authenticode: Digest384) -> Vec<Event> {
    vec![
        Event::new(
            1,
            EventType::EvEfiBootServicesApplication,
            kernel_authenticode,
            "kernel (Authenticode SHA-384 of the image OVMF loads)",
        ),
        Event::new(
            1,
            EventType::EvEfiAction,
            sha384(b"Calling EFI Application from Boot Option"),
            "Calling EFI Application from Boot Option",
        ),
        Event::new(
            1,
            EventType::EvSeparator,
            sha384(&SEPARATOR),
            "separator (ReadyToBoot)",
        ),
        Event::new(
            1,
            EventType::EvEfiAction,
            sha384(b"Exit Boot Services Invocation"),
            "Exit Boot Services Invocation",
        ),
        Event::new(
            1,
            EventType::EvEfiAction,
            sha384(b"Exit Boot Services Returned with Success"),
            "Exit Boot Services Returned with Success",
        ),
    ]
}

/// Where OVMF puts "initrd=initrd" in the kernel's LoadOptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitrdOption {
    /// `<cmdline> initrd=initrd` (edk2 before stable202508: Debian 12/13, Ubuntu 24.04).
    #[default]
    Append,
    /// `initrd=initrd <cmdline>` (edk2 stable202508 and later).
    Prepend,
}

impl InitrdOption {
    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Prepend => "prepend",
        }
    }
}

/// The kernel's LoadOptions as OVMF builds them from fw_cfg, or `None` (LoadOptions
/// NULL) when there is neither a command line nor an initrd.
///
/// Follows edk2 `OvmfPkg/Library/X86QemuLoadImageLib/X86QemuLoadImageLib.c`,
/// `QemuLoadKernelImage`: the fw_cfg command line (NUL dropped), then " initrd=initrd"
/// only if `InitrdSize > 0`, formatted with `UnicodeSPrintAsciiFormat ("%a%a%a", …)`
/// plus a CHAR16 NUL. `%a` copies each *byte* of its ASCII argument into one CHAR16
/// (`MdePkg/Library/BasePrintLib/PrintLibInternal.c`, `BasePrintLibSPrintMarker`:
/// `ArgumentMask = 0xff`, one byte per argument character), so a UTF-8 command line
/// is widened byte by byte — "é" (C3 A9) becomes `C3 00 A9 00` — not converted to UTF-16.
pub fn load_options(cmdline: &[u8], initrd_size: u64, placement: InitrdOption) -> Option<Vec<u8>> {
    let with_initrd = initrd_size > 0;
    let text: Vec<u8> = match (with_initrd, placement) {
        (false, _) => cmdline.to_vec(),
        (true, InitrdOption::Append) => [cmdline, b" initrd=initrd"].concat(),
        (true, InitrdOption::Prepend) => [b"initrd=initrd ", cmdline].concat(),
    };
    if text.is_empty() {
        return None;
    }
    let mut v: Vec<u8> = text.iter().flat_map(|&b| [b, 0]).collect();
    v.extend_from_slice(&[0, 0]);
    Some(v)
}

/// RTMR2 events the Linux EFI stub logs (when it measures into TDX registers): the
/// LoadOptions if there are any, then the initrd if one was loaded (edk2 installs the
/// initrd's LoadFile2 only for a non-empty initrd, see [`load_options`]).
pub fn rtmr2_events(load_options: Option<&[u8]>, initrd: Option<Digest384>) -> Vec<Event> {
    let mut ev = Vec::new();
    if let Some(o) = load_options {
        ev.push(Event::new(
            2,
            EventType::EvEventTag,
            sha384(o),
            "LOADED_IMAGE::LoadOptions (kernel command line, each byte widened to a CHAR16)",
        ));
    }
    if let Some(d) = initrd {
        ev.push(Event::new(2, EventType::EvEventTag, d, "Linux initrd"));
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> String {
        hex::encode(sha384(s.as_bytes()))
    }

    #[test]
    fn replay_is_the_extend_chain() {
        let a = [1u8; 48];
        let b = [2u8; 48];
        let ev = vec![
            Event::new(1, EventType::EvEfiAction, a, "a"),
            Event::new(2, EventType::EvEfiAction, [9; 48], "other register"),
            Event::new(1, EventType::EvEfiAction, b, "b"),
        ];
        let mut r = [0u8; 48];
        for d in [a, b] {
            let mut x = r.to_vec();
            x.extend_from_slice(&d);
            r = sha384(&x);
        }
        assert_eq!(replay(&ev, 1), r);
        assert_eq!(replay(&ev, 0), [0u8; 48]);
    }

    #[test]
    fn action_strings_are_hashed_without_nul() {
        let ev = rtmr1_events([0; 48]);
        assert_eq!(
            hex::encode(ev[1].digest),
            h("Calling EFI Application from Boot Option")
        );
        assert_eq!(
            hex::encode(ev[3].digest),
            h("Exit Boot Services Invocation")
        );
        assert_eq!(
            hex::encode(ev[4].digest),
            h("Exit Boot Services Returned with Success")
        );
        assert_eq!(ev[2].digest, sha384(&[0, 0, 0, 0]));
        assert!(ev.iter().all(|e| e.rtmr == 1));
    }

    #[test]
    fn load_options_placement() {
        let wide = |s: &str| efivar::utf16le(s);
        let a = load_options(b"console=ttyS0", 7, InitrdOption::Append).unwrap();
        assert_eq!(a, wide("console=ttyS0 initrd=initrd\0"));
        let p = load_options(b"console=ttyS0", 7, InitrdOption::Prepend).unwrap();
        assert_eq!(p, wide("initrd=initrd console=ttyS0\0"));
        assert_eq!(load_options(b"", 0, InitrdOption::Append), None);
        assert_eq!(
            load_options(b"", 1, InitrdOption::Append).unwrap(),
            wide(" initrd=initrd\0")
        );
        // A zero-byte initrd: no " initrd=initrd" (InitrdSize == 0).
        assert_eq!(
            load_options(b"quiet", 0, InitrdOption::Append).unwrap(),
            wide("quiet\0")
        );
        assert_eq!(load_options(b"", 0, InitrdOption::Prepend), None);
        // Each byte becomes one CHAR16: "é" is C3 A9 in UTF-8.
        assert_eq!(
            load_options("é".as_bytes(), 0, InitrdOption::Append).unwrap(),
            vec![0xc3, 0, 0xa9, 0, 0, 0]
        );
    }

    fn loader(files: &[&str]) -> Vec<u8> {
        let mut l = Vec::new();
        for f in files {
            let mut c = [0u8; 128];
            c[0] = 1;
            c[4..4 + f.len()].copy_from_slice(f.as_bytes());
            l.extend_from_slice(&c);
            let mut p = [0u8; 128];
            p[0] = 2; // ADD_POINTER: not measured separately
            l.extend_from_slice(&p);
        }
        l
    }

    fn platform(files: &[&str]) -> Platform {
        let mut vars = EfiVars::new();
        vars.insert(GLOBAL_VARIABLE, "BootOrder", vec![1, 0, 0, 0]);
        vars.insert(GLOBAL_VARIABLE, "Boot0000", b"ui".to_vec());
        vars.insert(GLOBAL_VARIABLE, "Boot0001", b"shell".to_vec());
        Platform {
            acpi: Some(AcpiBlobs {
                tables: b"TABLES".to_vec(),
                rsdp: b"RSDP".to_vec(),
                loader: loader(files),
            }),
            efivars: Some(vars),
            fw_cfg: vec![],
        }
    }

    #[test]
    fn rtmr0_event_order_and_digests() {
        let p = platform(&["etc/acpi/tables", "etc/acpi/rsdp"]);
        let ev = rtmr0_events(b"HOB", b"CFV", &p).unwrap();
        let whats: Vec<&str> = ev.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            whats[0],
            "TD HOB (QEMU's HOB list, end-of-list HOB excluded)"
        );
        assert_eq!(ev[0].digest, sha384(b"HOB"));
        assert_eq!(ev[1].digest, sha384(b"CFV"));
        assert!(whats[2].starts_with("SecureBoot"));
        assert_eq!(
            ev[2].digest,
            sha384(&efivar::variable_data(&GLOBAL_VARIABLE, "SecureBoot", &[]))
        );
        assert_eq!(
            ev[5].digest,
            sha384(&efivar::variable_data(&IMAGE_SECURITY_DATABASE, "db", &[]))
        );
        assert_eq!(ev[7].event_type, EventType::EvSeparator);
        assert_eq!(ev[8].digest, sha384(&p.acpi.as_ref().unwrap().loader));
        assert_eq!(ev[9].digest, sha384(b"TABLES"));
        assert_eq!(ev[10].digest, sha384(b"RSDP"));
        assert_eq!(ev[11].digest, sha384(&[1, 0, 0, 0]));
        // Boot order 0001 then 0000.
        assert_eq!(ev[12].digest, sha384(b"shell"));
        assert_eq!(ev[13].digest, sha384(b"ui"));
        assert_eq!(ev.len(), 14);

        // The loader's ALLOCATE order decides the blob order.
        let q = platform(&["etc/acpi/rsdp", "etc/acpi/tables"]);
        let ev2 = rtmr0_events(b"HOB", b"CFV", &q).unwrap();
        assert_eq!(ev2[9].digest, sha384(b"RSDP"));
        assert_eq!(ev2[10].digest, sha384(b"TABLES"));
    }

    #[test]
    fn rtmr0_refuses_missing_or_unknown_inputs() {
        let mut p = platform(&["etc/acpi/tables", "etc/tpm/log"]);
        assert!(rtmr0_events(b"", b"", &p)
            .unwrap_err()
            .to_string()
            .contains("etc/tpm/log"));
        p.acpi = None;
        assert!(rtmr0_events(b"", b"", &p)
            .unwrap_err()
            .to_string()
            .contains("qemu_fw_cfg"));
        let mut p = platform(&["etc/acpi/tables"]);
        p.efivars = Some(EfiVars::new());
        assert!(rtmr0_events(b"", b"", &p)
            .unwrap_err()
            .to_string()
            .contains("BootOrder"));
        let mut p = platform(&["etc/acpi/tables"]);
        p.acpi.as_mut().unwrap().loader.pop();
        assert!(rtmr0_events(b"", b"", &p).is_err());
    }

    #[test]
    fn fw_cfg_items_follow_edk2_order() {
        let mut p = platform(&["etc/acpi/tables"]);
        p.fw_cfg = vec![
            ("bootorder".into(), b"B".to_vec()),
            ("BootMenu".into(), vec![0, 0]),
        ];
        let ev = rtmr0_events(b"", b"", &p).unwrap();
        assert_eq!(ev[2].what, "QEMU FW CFG BootMenu");
        assert_eq!(ev[3].what, "QEMU FW CFG bootorder");
        assert_eq!(ev[3].digest, sha384(b"B"));
    }

    #[test]
    fn rtmr2_events_in_stub_order() {
        let o = load_options(b"x", 1, InitrdOption::Append).unwrap();
        let ev = rtmr2_events(Some(&o), Some(sha384(b"initrd")));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].digest, sha384(&o));
        assert_eq!(ev[1].digest, sha384(b"initrd"));
        assert!(rtmr2_events(None, None).is_empty());
    }
}
