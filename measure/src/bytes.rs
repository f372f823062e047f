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

/// Serde for byte arrays as lowercase hex strings (`#[serde(with = "hex_array")]`).
pub mod hex_array {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    /// Writes the bytes as lowercase hex.
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Reads exactly `N` bytes of hex.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|e| D::Error::custom(format!("expected {} hex digits: {e}", 2 * N)))?;
        Ok(out)
    }
}

/// Serde for optional byte arrays as hex strings or null.
pub mod hex_array_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the bytes as lowercase hex, or null.
    pub fn serialize<S: Serializer, const N: usize>(
        v: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => super::hex_array::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    /// Reads hex of exactly `N` bytes, or null.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        #[derive(Deserialize)]
        struct W<const M: usize>(#[serde(with = "super::hex_array")] [u8; M]);
        Ok(Option::<W<N>>::deserialize(d)?.map(|w| w.0))
    }
}

/// Parses `0x…` hex (or `0X…`) or plain decimal.
pub fn parse_u64_hex_or_dec(s: &str) -> Result<u64, std::num::ParseIntError> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
}

/// Serde for integers written as `0x…` hex strings (vCPU signatures, SEV features).
pub mod hex_u64 {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    /// Writes `0x…`.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    /// Reads `0x…` (or plain decimal).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_u64_hex_or_dec(&s).map_err(|e| D::Error::custom(format!("{s:?}: {e}")))
    }
}
