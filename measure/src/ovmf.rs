//! OVMF firmware images: the GUIDed footer table at the end of the image and the
//! structures it points to (SEV metadata, SEV-ES reset block, SEV hash-table
//! location, SVSM info, TDX metadata).
//!
//! Parsing mirrors what QEMU does with the same bytes, and is lenient or strict
//! exactly where the reference calculator (sev-snp-measure 0.0.13) is, except that
//! we refuse a few malformed layouts it silently mis-reads (entries overrunning the
//! table, duplicate GUIDs). Nothing here panics on hostile input: every offset is
//! checked, and a malformed optional structure (e.g. TDX metadata) is recorded as an
//! error for `inspect` instead of failing the whole parse.

use uuid::{uuid, Uuid};

use crate::bytes::{le_u16, le_u32};
use crate::tdvf::{self, TdvfMetadata};
use crate::FirmwareError;

/// GUID of the footer entry that closes the OVMF GUIDed table.
pub const FOOTER_GUID: Uuid = uuid!("96b582de-1fb2-45f7-baea-a366c55a082d");
/// Location (GPA, size) of the page QEMU fills with kernel/initrd/cmdline hashes.
pub const SEV_HASH_TABLE_RV_GUID: Uuid = uuid!("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// SEV-ES AP reset block: the reset EIP for application processors.
pub const SEV_ES_RESET_BLOCK_GUID: Uuid = uuid!("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// Offset (from end of file) of the "ASEV" SEV metadata.
pub const SEV_METADATA_GUID: Uuid = uuid!("dc886566-984a-4798-a75e-5585a7bf67cc");
/// Offset (from end of file) of the "TDVF" TDX metadata.
pub const TDX_METADATA_GUID: Uuid = uuid!("e47a6535-984a-4798-865e-4685a7bf8ec2");
/// Coconut-SVSM info block (reset offset of an SVSM image).
pub const SVSM_INFO_GUID: Uuid = uuid!("a789a612-0597-4c4b-a49f-cbb1fe9d1ddd");
/// The SEV "secret" area used by SEV launch secret injection.
pub const SEV_SECRET_GUID: Uuid = uuid!("4c2eb361-7d9b-4cc3-8081-127c90d3d294");
/// OVMF's SEV-SNP boot block (GHCB/secrets locations for the reset vector).
pub const SEV_SNP_BOOT_BLOCK_GUID: Uuid = uuid!("48a8c4f4-bcd8-4ef5-8f15-2d76ad4e0d38");

/// Offset of the IGVM parameter/HOB table (edk2 ≥ stable202511, `ResetVectorVtf0.asm`).
pub const IGVM_METADATA_GUID: Uuid = uuid!("784fa70e-3176-4677-8a20-04b68699e374");

/// Size of a footer-table entry header: u16 length + 16-byte GUID.
pub const ENTRY_HEADER_SIZE: usize = 18;
/// The footer table ends this many bytes before the end of the image (reset vector).
pub const FOOTER_END_OFFSET: usize = 32;
pub use crate::bytes::PAGE_SIZE;
/// The firmware is mapped so that it ends at 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;

/// One entry of the OVMF GUIDed footer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The entry's GUID.
    pub guid: Uuid,
    /// Offset of the entry's data in the image.
    pub data_offset: usize,
    /// The entry's data (without the 18-byte header).
    pub data: Vec<u8>,
}

impl TableEntry {
    /// A human name for well-known GUIDs.
    pub fn name(&self) -> &'static str {
        guid_name(&self.guid)
    }
}

/// A human name for the GUIDs OVMF puts in its footer table.
pub fn guid_name(guid: &Uuid) -> &'static str {
    match *guid {
        SEV_HASH_TABLE_RV_GUID => "SEV_HASH_TABLE_RV",
        SEV_ES_RESET_BLOCK_GUID => "SEV_ES_RESET_BLOCK",
        SEV_METADATA_GUID => "OVMF_SEV_METADATA",
        TDX_METADATA_GUID => "TDX_METADATA_OFFSET",
        SVSM_INFO_GUID => "SVSM_INFO",
        SEV_SECRET_GUID => "SEV_SECRET",
        SEV_SNP_BOOT_BLOCK_GUID => "SEV_SNP_BOOT_BLOCK",
        IGVM_METADATA_GUID => "IGVM_METADATA",
        _ => "unknown",
    }
}

/// Section types declared in OVMF's SEV metadata (OvmfSevMetadata.asm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SevSectionKind {
    /// Pre-validated, zero-filled memory for SEC (type 1).
    SnpSecMem,
    /// The SNP secrets page (type 2).
    SnpSecrets,
    /// The CPUID page (type 3).
    Cpuid,
    /// SVSM calling-area page (type 4).
    SvsmCaa,
    /// The page QEMU fills with kernel/initrd/cmdline hashes (type 0x10).
    SnpKernelHashes,
}

impl SevSectionKind {
    /// Maps the raw metadata type to a known kind.
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::SnpSecMem),
            2 => Some(Self::SnpSecrets),
            3 => Some(Self::Cpuid),
            4 => Some(Self::SvsmCaa),
            0x10 => Some(Self::SnpKernelHashes),
            _ => None,
        }
    }

    /// The name used by OVMF and sev-snp-measure.
    pub fn name(self) -> &'static str {
        match self {
            Self::SnpSecMem => "SNP_SEC_MEM",
            Self::SnpSecrets => "SNP_SECRETS",
            Self::Cpuid => "CPUID",
            Self::SvsmCaa => "SVSM_CAA",
            Self::SnpKernelHashes => "SNP_KERNEL_HASHES",
        }
    }
}

/// One `{gpa, size, type}` descriptor of the SEV metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest physical address of the section.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Raw section type (see [`SevSectionKind`]).
    pub raw_type: u32,
}

impl SevSection {
    /// The known kind, or `None` for a type QEMU and sev-snp-measure reject.
    pub fn kind(&self) -> Option<SevSectionKind> {
        SevSectionKind::from_raw(self.raw_type)
    }
}

/// Parse state of an optional structure: absent, valid, or present but malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The firmware does not declare it.
    Absent,
    /// Declared and well-formed.
    Valid(T),
    /// Declared but malformed; the error says how.
    Invalid(FirmwareError),
}

impl<T> Parsed<T> {
    /// The value if valid.
    pub fn valid(&self) -> Option<&T> {
        match self {
            Parsed::Valid(v) => Some(v),
            _ => None,
        }
    }
}

/// A parsed OVMF image. Owns the bytes so that measurement uses exactly what was parsed.
#[derive(Debug, Clone)]
pub struct Firmware {
    data: Vec<u8>,
    has_footer: bool,
    table: Vec<TableEntry>,
    /// `None` if the image declares no SEV metadata (malformed metadata fails `parse`).
    sev_metadata: Option<Vec<SevSection>>,
    tdx_metadata: Parsed<TdvfMetadata>,
}

impl Firmware {
    /// Parses an image. Fails only if the image is too small to be OVMF, if its footer
    /// table is malformed, or if its SEV metadata is malformed (as QEMU and
    /// sev-snp-measure fail); a missing footer table is not an error here (plain SEV
    /// firmware has none), it is reported by the modes that need it.
    pub fn parse(data: Vec<u8>) -> Result<Self, FirmwareError> {
        let len = data.len();
        if len < FOOTER_END_OFFSET + ENTRY_HEADER_SIZE {
            return Err(FirmwareError::TooSmall { size: len });
        }
        let (has_footer, table) = parse_footer_table(&data)?;
        let mut fw = Firmware {
            data,
            has_footer,
            table,
            sev_metadata: None,
            tdx_metadata: Parsed::Absent,
        };
        // QEMU and sev-snp-measure refuse an image with malformed metadata for every SEV mode.
        fw.sev_metadata = match fw.entry(&SEV_METADATA_GUID) {
            None => None,
            Some(e) => Some(parse_sev_metadata(&fw.data, &e.data)?),
        };
        fw.tdx_metadata = match fw.entry(&TDX_METADATA_GUID) {
            None => Parsed::Absent,
            Some(e) => match tdvf::parse(&fw.data, &e.data) {
                Ok(v) => Parsed::Valid(v),
                Err(err) => Parsed::Invalid(err),
            },
        };
        Ok(fw)
    }

    /// The image bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// SHA-256 of the image (computed on each call).
    pub fn sha256(&self) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(&self.data).into()
    }

    /// Guest physical address of the first byte (the image ends at 4 GiB).
    pub fn gpa(&self) -> Result<u64, FirmwareError> {
        FOUR_GIB
            .checked_sub(self.data.len() as u64)
            .ok_or(FirmwareError::TooLarge {
                size: self.data.len(),
            })
    }

    /// Whether the image ends with an OVMF footer table.
    pub fn has_footer_table(&self) -> bool {
        self.has_footer
    }

    /// All footer-table entries, in file order.
    pub fn table(&self) -> &[TableEntry] {
        &self.table
    }

    /// The entry with this GUID.
    pub fn entry(&self, guid: &Uuid) -> Option<&TableEntry> {
        self.table.iter().find(|e| e.guid == *guid)
    }

    /// SEV metadata sections (empty if the image declares none).
    pub fn sev_sections(&self) -> &[SevSection] {
        self.sev_metadata.as_deref().unwrap_or(&[])
    }

    /// Whether the image declares SEV metadata at all.
    pub fn has_sev_metadata(&self) -> bool {
        self.sev_metadata.is_some()
    }

    /// TDX metadata parse state.
    pub fn tdx_metadata(&self) -> &Parsed<TdvfMetadata> {
        &self.tdx_metadata
    }

    fn entry_u32(&self, guid: &Uuid, what: &'static str) -> Result<Option<u32>, FirmwareError> {
        match self.entry(guid) {
            None => Ok(None),
            Some(e) => le_u32(&e.data, 0)
                .map(Some)
                .ok_or(FirmwareError::ShortEntry {
                    name: what,
                    len: e.data.len(),
                }),
        }
    }

    /// The SEV-ES AP reset EIP from the reset block.
    pub fn sev_es_reset_eip(&self) -> Result<u32, FirmwareError> {
        if !self.has_footer {
            return Err(FirmwareError::NoFooterTable);
        }
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID, "SEV_ES_RESET_BLOCK")?
            .ok_or(FirmwareError::NoResetBlock)
    }

    /// The GPA of the SEV kernel-hashes table, if the image reserves one.
    pub fn sev_hashes_table_gpa(&self) -> Result<Option<u32>, FirmwareError> {
        self.entry_u32(&SEV_HASH_TABLE_RV_GUID, "SEV_HASH_TABLE_RV")
    }

    /// Whether SEV / SEV-ES launches can measure `-kernel`/`-initrd`/`-append`
    /// (a hash-table entry with a non-zero GPA).
    pub fn sev_hashes_supported(&self) -> bool {
        matches!(self.sev_hashes_table_gpa(), Ok(Some(gpa)) if gpa != 0)
    }

    /// The SVSM reset offset, if the image carries an SVSM info block.
    pub fn svsm_reset_offset(&self) -> Result<Option<u32>, FirmwareError> {
        self.entry_u32(&SVSM_INFO_GUID, "SVSM_INFO")
    }
}

/// Walks the footer table backwards from 32 bytes before the end of the image.
fn parse_footer_table(data: &[u8]) -> Result<(bool, Vec<TableEntry>), FirmwareError> {
    let len = data.len();
    // `parse` guarantees len >= 50, so these subtractions cannot underflow.
    let footer_start = len - FOOTER_END_OFFSET - ENTRY_HEADER_SIZE;
    let footer_size = le_u16(data, footer_start).ok_or(FirmwareError::TooSmall { size: len })?;
    let guid = guid_at(data, footer_start + 2).ok_or(FirmwareError::TooSmall { size: len })?;
    if guid != FOOTER_GUID {
        return Ok((false, Vec::new()));
    }
    let footer_size = usize::from(footer_size);
    let Some(table_size) = footer_size.checked_sub(ENTRY_HEADER_SIZE) else {
        return Err(FirmwareError::FooterTable(format!(
            "footer entry declares {footer_size} bytes, less than its own 18-byte header"
        )));
    };
    let Some(table_start) = footer_start.checked_sub(table_size) else {
        return Err(FirmwareError::FooterTable(format!(
            "footer table of {table_size} bytes starts before the beginning of the image"
        )));
    };
    let mut end = footer_start;
    let mut entries = Vec::new();
    while end - table_start >= ENTRY_HEADER_SIZE {
        let hdr = end - ENTRY_HEADER_SIZE;
        let size = usize::from(le_u16(data, hdr).unwrap_or(0));
        let guid = guid_at(data, hdr + 2).unwrap_or_default();
        if size < ENTRY_HEADER_SIZE {
            return Err(FirmwareError::FooterTable(format!(
                "entry {guid} at offset {hdr:#x} declares size {size}, less than its header"
            )));
        }
        if size > end - table_start {
            return Err(FirmwareError::FooterTable(format!(
                "entry {guid} at offset {hdr:#x} declares size {size}, more than the {} bytes \
                 left in the table",
                end - table_start
            )));
        }
        let data_offset = end - size;
        let body = data.get(data_offset..hdr).unwrap_or_default().to_vec();
        if entries.iter().any(|e: &TableEntry| e.guid == guid) {
            return Err(FirmwareError::FooterTable(format!(
                "GUID {guid} appears twice in the footer table"
            )));
        }
        entries.push(TableEntry {
            guid,
            data_offset,
            data: body,
        });
        end = data_offset;
    }
    entries.reverse();
    Ok((true, entries))
}

fn guid_at(data: &[u8], off: usize) -> Option<Uuid> {
    let b: [u8; 16] = data.get(off..off.checked_add(16)?)?.try_into().ok()?;
    Some(Uuid::from_bytes_le(b))
}

/// Parses the "ASEV" metadata the table entry points at (offset from end of file).
fn parse_sev_metadata(data: &[u8], entry: &[u8]) -> Result<Vec<SevSection>, FirmwareError> {
    let len = data.len();
    let off_from_end = le_u32(entry, 0).ok_or(FirmwareError::ShortEntry {
        name: "OVMF_SEV_METADATA",
        len: entry.len(),
    })? as usize;
    let bad = |why: String| FirmwareError::SevMetadata(why);
    let start = len.checked_sub(off_from_end).ok_or_else(|| {
        bad(format!(
            "offset {off_from_end:#x} from the end points before the image start"
        ))
    })?;
    let header = data
        .get(start..start.saturating_add(16))
        .filter(|h| h.len() == 16)
        .ok_or_else(|| {
            bad(format!(
                "header at {start:#x} runs past the end of the image"
            ))
        })?;
    if header.get(0..4) != Some(b"ASEV".as_slice()) {
        return Err(bad(format!(
            "wrong signature at {start:#x} (expected \"ASEV\")"
        )));
    }
    let size = le_u32(header, 4).unwrap_or(0) as usize;
    let version = le_u32(header, 8).unwrap_or(0);
    let count = le_u32(header, 12).unwrap_or(0) as usize;
    if version != 1 {
        return Err(bad(format!("unsupported version {version} (expected 1)")));
    }
    // Descriptors live in [start+16, start+size), clipped to the image (as QEMU reads it).
    let items_end = start.saturating_add(size).min(len);
    let available = items_end.saturating_sub(start + 16);
    if count.saturating_mul(12) > available {
        return Err(bad(format!(
            "{count} sections declared but only {available} bytes of descriptors"
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let o = start + 16 + i * 12;
        let gpa = le_u32(data, o).unwrap_or(0);
        let size = le_u32(data, o + 4).unwrap_or(0);
        let raw_type = le_u32(data, o + 8).unwrap_or(0);
        out.push(SevSection {
            gpa,
            size,
            raw_type,
        });
    }
    Ok(out)
}
