//! Leaf helpers every parser shares: bounds-checked little-endian reads, the 4 KiB
//! page size SNP and TDX work in, and the SHA-384 digest type. Nothing here imports
//! another module of the crate.

/// SNP and TDX work in 4 KiB pages.
pub const PAGE_SIZE: usize = 4096;

/// A SHA-384 digest (SNP launch digests, TDX MRTD and RTMRs, event digests).
pub type Digest384 = [u8; 48];

/// Reads a little-endian u16 at `off`, if in bounds.
pub(crate) fn le_u16(data: &[u8], off: usize) -> Option<u16> {
    let b = data.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([
        b.first().copied()?,
        b.get(1).copied()?,
    ]))
}

/// Reads a little-endian u32 at `off`, if in bounds.
pub(crate) fn le_u32(data: &[u8], off: usize) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Reads a little-endian u64 at `off`, if in bounds.
pub(crate) fn le_u64(data: &[u8], off: usize) -> Option<u64> {
    let b: [u8; 8] = data.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}
