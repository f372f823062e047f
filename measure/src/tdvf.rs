//! TDX firmware ("TDVF") metadata: the descriptor the footer-table entry
//! `e47a6535-…` points to, and its sections (BFV, CFV, TD_HOB, TEMP_MEM).
//!
//! Validation follows QEMU's `hw/i386/tdvf.c`: signature "TDVF", version 1, at least
//! two sections, a length equal to header + sections, page-aligned addresses and
//! sizes, raw data only for BFV/CFV, no unknown types. We additionally require every
//! section's raw data, and for BFV/CFV its whole memory size (which QEMU copies from
//! the image), to lie inside the image (QEMU would copy bytes past the end).

use crate::bytes::{le_u32, le_u64, PAGE_SIZE};
use crate::FirmwareError;

/// "TDVF" as a little-endian u32.
pub const TDVF_SIGNATURE: u32 = u32::from_le_bytes(*b"TDVF");
/// Header: signature, length, version, number of sections.
pub const HEADER_SIZE: usize = 16;
/// One section descriptor.
pub const SECTION_SIZE: usize = 32;
/// Section attribute: extend the section's pages into MRTD.
pub const ATTR_MR_EXTEND: u32 = 1;

/// Kinds of TDVF sections QEMU accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TdvfSectionKind {
    /// Boot firmware volume (code), copied from the image.
    Bfv,
    /// Configuration firmware volume (variables), copied from the image.
    Cfv,
    /// Memory for the TD HOB, built by the VMM.
    TdHob,
    /// Temporary memory, zero-filled.
    TempMem,
}

impl TdvfSectionKind {
    fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Bfv),
            1 => Some(Self::Cfv),
            2 => Some(Self::TdHob),
            3 => Some(Self::TempMem),
            _ => None,
        }
    }

    /// The TDVF specification's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bfv => "BFV",
            Self::Cfv => "CFV",
            Self::TdHob => "TD_HOB",
            Self::TempMem => "TEMP_MEM",
        }
    }
}

/// One validated TDVF section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TdvfSection {
    /// Offset of the raw data in the image.
    pub data_offset: u32,
    /// Bytes of raw data in the image.
    pub raw_size: u32,
    /// Guest physical address.
    pub memory_address: u64,
    /// Bytes of guest memory.
    pub memory_size: u64,
    /// Section kind.
    pub kind: TdvfSectionKind,
    /// Attribute bits (bit 0: MR_EXTEND, bit 1: PAGE_AUG).
    pub attributes: u32,
}

impl TdvfSection {
    /// Whether the section's pages are extended into MRTD.
    pub fn mr_extend(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }
}

/// The validated TDVF descriptor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TdvfMetadata {
    /// Offset of the descriptor in the image.
    pub offset: usize,
    /// Sections in declaration order.
    pub sections: Vec<TdvfSection>,
}

/// Parses the descriptor that the footer-table entry (`entry`, an offset from the end of
/// the image) points at.
pub fn parse(data: &[u8], entry: &[u8]) -> Result<TdvfMetadata, FirmwareError> {
    let bad = |why: String| FirmwareError::TdxMetadata(why);
    let len = data.len();
    let from_end = le_u32(entry, 0).ok_or(FirmwareError::ShortEntry {
        name: "TDX_METADATA_OFFSET",
        len: entry.len(),
    })? as usize;
    let offset = len
        .checked_sub(from_end)
        .filter(|o| o + HEADER_SIZE <= len)
        .ok_or_else(|| {
            bad(format!(
                "descriptor offset {from_end:#x} from the end lies outside the {len}-byte image"
            ))
        })?;
    let sig = le_u32(data, offset).unwrap_or(0);
    if sig != TDVF_SIGNATURE {
        return Err(bad(format!(
            "wrong signature at {offset:#x} (expected \"TDVF\")"
        )));
    }
    let length = le_u32(data, offset + 4).unwrap_or(0) as usize;
    let version = le_u32(data, offset + 8).unwrap_or(0);
    let count = le_u32(data, offset + 12).unwrap_or(0) as usize;
    if offset.saturating_add(length) > len {
        return Err(bad(format!(
            "descriptor length {length:#x} runs past the end of the image"
        )));
    }
    if version != 1 {
        return Err(bad(format!("unsupported version {version} (expected 1)")));
    }
    if count < 2 {
        return Err(bad(format!(
            "{count} sections declared, QEMU requires at least 2"
        )));
    }
    let expect = count
        .saturating_mul(SECTION_SIZE)
        .saturating_add(HEADER_SIZE);
    if length != expect {
        return Err(bad(format!(
            "descriptor length {length:#x} does not match {count} sections ({expect:#x})"
        )));
    }
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let o = offset + HEADER_SIZE + i * SECTION_SIZE;
        let data_offset = le_u32(data, o).unwrap_or(0);
        let raw_size = le_u32(data, o + 4).unwrap_or(0);
        let memory_address = le_u64(data, o + 8).unwrap_or(0);
        let memory_size = le_u64(data, o + 16).unwrap_or(0);
        let raw_type = le_u32(data, o + 24).unwrap_or(0);
        let attributes = le_u32(data, o + 28).unwrap_or(0);
        let kind = TdvfSectionKind::from_raw(raw_type)
            .ok_or_else(|| bad(format!("section {i} has unsupported type {raw_type:#x}")))?;
        if memory_size < u64::from(raw_size) {
            return Err(bad(format!(
                "section {i} ({}) has {raw_size:#x} bytes of data but only {memory_size:#x} of memory",
                kind.name()
            )));
        }
        if !memory_address.is_multiple_of(PAGE_SIZE as u64)
            || !memory_size.is_multiple_of(PAGE_SIZE as u64)
        {
            return Err(bad(format!(
                "section {i} ({}) address {memory_address:#x} or size {memory_size:#x} is not \
                 4 KiB aligned",
                kind.name()
            )));
        }
        match kind {
            TdvfSectionKind::Bfv | TdvfSectionKind::Cfv if raw_size == 0 => {
                return Err(bad(format!("section {i} ({}) has no data", kind.name())));
            }
            TdvfSectionKind::TdHob | TdvfSectionKind::TempMem if raw_size != 0 => {
                return Err(bad(format!(
                    "section {i} ({}) must not carry data",
                    kind.name()
                )));
            }
            _ => {}
        }
        let data_end = u64::from(data_offset) + u64::from(raw_size);
        if data_end > len as u64 {
            return Err(bad(format!(
                "section {i} ({}) data {data_offset:#x}..{data_end:#x} points past the end of the \
                 {len:#x}-byte image (is this a split OVMF_CODE.fd? TDX needs the unified \
                 OVMF.fd / OVMF.inteltdx.fd)",
                kind.name()
            )));
        }
        // QEMU copies the whole memory size of a BFV/CFV from the image.
        let copy_end = u64::from(data_offset) + memory_size;
        if matches!(kind, TdvfSectionKind::Bfv | TdvfSectionKind::Cfv) && copy_end > len as u64 {
            return Err(bad(format!(
                "section {i} ({}) has {memory_size:#x} bytes of memory from image offset \
                 {data_offset:#x}, past the end of the {len:#x}-byte image: QEMU copies the \
                 whole memory size from the image",
                kind.name()
            )));
        }
        sections.push(TdvfSection {
            data_offset,
            raw_size,
            memory_address,
            memory_size,
            kind,
            attributes,
        });
    }
    Ok(TdvfMetadata { offset, sections })
}
