//! The TD HOB list QEMU writes into the TDVF's TD_HOB section (`hw/i386/tdvf-hob.c`),
//! which the firmware measures first into RTMR0.
//!
//! Layout: a PHIT handoff HOB (version 9, boot mode 0, memory fields 0,
//! `EfiEndOfHobList` = guest address just past the end-of-list HOB), one resource
//! descriptor per RAM range (system memory for ranges QEMU accepted, unaccepted memory
//! for the rest, attributes PRESENT|INITIALIZED|TESTED), then the end-of-list HOB.
//!
//! RAM ranges follow `target/i386/kvm/tdx.c`: the q35 e820 RAM entries (below 4 GiB,
//! and from 4 GiB up), each TD_HOB/TEMP_MEM section "accepted" in metadata order by
//! splitting the range that contains it (the section replaces the range in place; the
//! head and tail pieces are appended), then sorted by address.

use crate::machine::ram_split;
use crate::tdvf::{TdvfSection, TdvfSectionKind};
use crate::MeasureError;

const HOB_TYPE_HANDOFF: u16 = 0x0001;
const HOB_TYPE_RESOURCE: u16 = 0x0003;
const HOB_TYPE_END: u16 = 0xffff;
const HANDOFF_LEN: u16 = 56;
const RESOURCE_LEN: u16 = 48;
const END_LEN: u16 = 8;
const HANDOFF_VERSION: u32 = 9;
const RESOURCE_SYSTEM_MEMORY: u32 = 0;
const RESOURCE_MEMORY_UNACCEPTED: u32 = 7;
/// PRESENT | INITIALIZED | TESTED.
const ATTRIBUTES: u32 = 0x7;

/// One guest RAM range as QEMU tracks it for TDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RamRange {
    /// Guest physical start.
    pub start: u64,
    /// Bytes.
    pub length: u64,
    /// Whether QEMU added (accepted) it before launch.
    pub accepted: bool,
}

/// QEMU's `tdx_accept_ram_range`.
fn accept(ranges: &mut Vec<RamRange>, address: u64, length: u64) -> Result<(), MeasureError> {
    let end = address.saturating_add(length);
    let idx = ranges
        .iter()
        .position(|e| !(end <= e.start || address >= e.start.saturating_add(e.length)))
        .ok_or_else(|| {
            MeasureError::MemoryTooSmall(format!(
                "TD HOB: TDVF section at {address:#x}..{end:#x} is outside guest RAM: QEMU refuses to start; give the guest more memory"
            ))
        })?;
    let Some(&e) = ranges.get(idx) else {
        return Ok(());
    };
    let e_end = e.start.saturating_add(e.length);
    if e.start > address || e_end < end {
        return Err(MeasureError::MemoryTooSmall(format!(
            "TD HOB: TDVF section at {address:#x}..{end:#x} is not inside one RAM range ({:#x}..{e_end:#x}): QEMU refuses to start; give the guest more memory",
            e.start
        )));
    }
    if e.accepted {
        return Ok(());
    }
    if let Some(slot) = ranges.get_mut(idx) {
        *slot = RamRange {
            start: address,
            length,
            accepted: true,
        };
    }
    if address > e.start {
        ranges.push(RamRange {
            start: e.start,
            length: address - e.start,
            accepted: false,
        });
    }
    if end < e_end {
        ranges.push(RamRange {
            start: end,
            length: e_end - end,
            accepted: false,
        });
    }
    Ok(())
}

/// The RAM ranges QEMU describes in the TD HOB for `memory` bytes of guest RAM.
pub fn ram_ranges(sections: &[TdvfSection], memory: u64) -> Result<Vec<RamRange>, MeasureError> {
    let (below, above) = ram_split(memory);
    let mut ranges = vec![RamRange {
        start: 0,
        length: below,
        accepted: false,
    }];
    if above > 0 {
        ranges.push(RamRange {
            start: 1 << 32,
            length: above,
            accepted: false,
        });
    }
    for s in sections {
        if matches!(s.kind, TdvfSectionKind::TdHob | TdvfSectionKind::TempMem) {
            accept(&mut ranges, s.memory_address, s.memory_size)?;
        }
    }
    ranges.sort_by_key(|r| r.start);
    Ok(ranges)
}

/// A TD HOB list as QEMU writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdHob {
    /// Guest address of the list (the first TD_HOB section).
    pub address: u64,
    /// The RAM ranges it describes.
    pub ranges: Vec<RamRange>,
    /// The whole list, end-of-list HOB included.
    pub bytes: Vec<u8>,
}

impl TdHob {
    /// Builds the list for a firmware's TDVF sections and a guest RAM size.
    pub fn build(sections: &[TdvfSection], memory: u64) -> Result<Self, MeasureError> {
        let hob = sections
            .iter()
            .find(|s| s.kind == TdvfSectionKind::TdHob)
            .ok_or_else(|| {
                MeasureError::TdHob(
                    "the firmware's TDVF metadata has no TD_HOB section: QEMU cannot start it"
                        .into(),
                )
            })?;
        let ranges = ram_ranges(sections, memory)?;
        let len = usize::from(HANDOFF_LEN)
            + ranges.len() * usize::from(RESOURCE_LEN)
            + usize::from(END_LEN);
        if len as u64 > hob.memory_size {
            return Err(MeasureError::TdHob(format!(
                "{len} bytes of HOBs do not fit the {}-byte TD_HOB section: QEMU stops with \"TD_HOB overrun\"",
                hob.memory_size
            )));
        }
        let mut b = Vec::with_capacity(len);
        let header = |b: &mut Vec<u8>, ty: u16, l: u16| {
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        };
        header(&mut b, HOB_TYPE_HANDOFF, HANDOFF_LEN);
        b.extend_from_slice(&HANDOFF_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // BootMode
        b.extend_from_slice(&[0u8; 32]); // EfiMemoryTop/Bottom, EfiFreeMemoryTop/Bottom
        b.extend_from_slice(&(hob.memory_address + len as u64).to_le_bytes());
        for r in &ranges {
            header(&mut b, HOB_TYPE_RESOURCE, RESOURCE_LEN);
            b.extend_from_slice(&[0u8; 16]); // Owner
            let ty = if r.accepted {
                RESOURCE_SYSTEM_MEMORY
            } else {
                RESOURCE_MEMORY_UNACCEPTED
            };
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&ATTRIBUTES.to_le_bytes());
            b.extend_from_slice(&r.start.to_le_bytes());
            b.extend_from_slice(&r.length.to_le_bytes());
        }
        header(&mut b, HOB_TYPE_END, END_LEN);
        Ok(Self {
            address: hob.memory_address,
            ranges,
            bytes: b,
        })
    }

    /// The bytes the firmware measures: the list up to, not including, the
    /// end-of-list HOB.
    pub fn measured(&self) -> &[u8] {
        self.bytes
            .get(..self.bytes.len().saturating_sub(usize::from(END_LEN)))
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(kind: TdvfSectionKind, addr: u64, size: u64) -> TdvfSection {
        TdvfSection {
            data_offset: 0,
            raw_size: 0,
            memory_address: addr,
            memory_size: size,
            kind,
            attributes: 0,
        }
    }

    /// The layout of Debian's OVMF.fd (2022.11), in its metadata order.
    fn debian_like() -> Vec<TdvfSection> {
        vec![
            sec(TdvfSectionKind::Bfv, 0xffe2_0000, 0x1e_0000),
            sec(TdvfSectionKind::Cfv, 0xffe0_0000, 0x2_0000),
            sec(TdvfSectionKind::TempMem, 0x81_0000, 0x1_0000),
            sec(TdvfSectionKind::TempMem, 0x80_b000, 0x2000),
            sec(TdvfSectionKind::TdHob, 0x80_9000, 0x2000),
            sec(TdvfSectionKind::TempMem, 0x80_0000, 0x6000),
        ]
    }

    #[test]
    fn ranges_split_around_accepted_sections() {
        let r = ram_ranges(&debian_like(), 2 << 30).unwrap();
        let got: Vec<(u64, u64, bool)> =
            r.iter().map(|r| (r.start, r.length, r.accepted)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0x80_0000, false),
                (0x80_0000, 0x6000, true),
                (0x80_6000, 0x3000, false),
                (0x80_9000, 0x2000, true),
                (0x80_b000, 0x2000, true),
                (0x80_d000, 0x3000, false),
                (0x81_0000, 0x1_0000, true),
                (0x82_0000, (2 << 30) - 0x82_0000, false),
            ]
        );
    }

    #[test]
    fn high_memory_gets_its_own_range() {
        let r = ram_ranges(&debian_like(), 4 << 30).unwrap();
        let last = r.last().unwrap();
        assert_eq!(
            (last.start, last.length, last.accepted),
            (1 << 32, 2 << 30, false)
        );
        assert_eq!(r[r.len() - 2].start + r[r.len() - 2].length, 0x8000_0000);
    }

    #[test]
    fn hob_layout() {
        let h = TdHob::build(&debian_like(), 2 << 30).unwrap();
        assert_eq!(h.bytes.len(), 56 + 8 * 48 + 8);
        assert_eq!(&h.bytes[0..8], &[1, 0, 56, 0, 0, 0, 0, 0]);
        assert_eq!(&h.bytes[8..12], &9u32.to_le_bytes());
        let end = u64::from_le_bytes(h.bytes[48..56].try_into().unwrap());
        assert_eq!(end, 0x80_9000 + h.bytes.len() as u64);
        // Second resource HOB: the accepted TEMP_MEM.
        let r1 = &h.bytes[56 + 48..56 + 96];
        assert_eq!(&r1[0..4], &[3, 0, 48, 0]);
        assert_eq!(&r1[24..28], &0u32.to_le_bytes());
        assert_eq!(&r1[28..32], &7u32.to_le_bytes());
        assert_eq!(&r1[32..40], &0x80_0000u64.to_le_bytes());
        assert_eq!(&r1[40..48], &0x6000u64.to_le_bytes());
        let r0 = &h.bytes[56..104];
        assert_eq!(&r0[24..28], &7u32.to_le_bytes());
        assert_eq!(
            &h.bytes[h.bytes.len() - 8..],
            &[0xff, 0xff, 8, 0, 0, 0, 0, 0]
        );
        assert_eq!(h.measured().len(), h.bytes.len() - 8);
    }

    #[test]
    fn too_little_memory_is_refused() {
        assert!(TdHob::build(&debian_like(), 4 << 20).is_err());
        // A section straddling the end of RAM.
        assert!(TdHob::build(&debian_like(), 0x81_8000).is_err());
    }

    #[test]
    fn no_td_hob_section_is_refused() {
        let s = vec![sec(TdvfSectionKind::Bfv, 0xffe0_0000, 0x20_0000)];
        assert!(TdHob::build(&s, 2 << 30).is_err());
    }

    #[test]
    fn overrun_is_refused() {
        // Many TEMP_MEM sections, each splitting RAM: more HOBs than one page holds.
        let mut s = vec![sec(TdvfSectionKind::TdHob, 0x10_0000, 0x1000)];
        for i in 0..100u64 {
            s.push(sec(
                TdvfSectionKind::TempMem,
                0x20_0000 + i * 0x2000,
                0x1000,
            ));
        }
        assert!(TdHob::build(&s, 1 << 30).is_err());
    }
}
