//! UEFI variables as the firmware measures them into RTMR0: the `UEFI_VARIABLE_DATA`
//! event structure (TCG PC Client PFP spec), and reading variable values dumped from a
//! guest's efivarfs (`/sys/firmware/efi/efivars/<Name>-<guid>`: a 4-byte attribute
//! word, then the data).

use std::collections::BTreeMap;
use std::path::Path;

use uuid::{uuid, Uuid};

use crate::bytes::le_u16;
use crate::MeasureError;

/// `EFI_GLOBAL_VARIABLE`: SecureBoot, PK, KEK, BootOrder, Boot####.
pub const GLOBAL_VARIABLE: Uuid = uuid!("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: db, dbx, dbt, dbr.
pub const IMAGE_SECURITY_DATABASE: Uuid = uuid!("d719b2cb-3d3a-4596-a3bc-dad00e67656f");

/// A GUID in the UEFI (mixed-endian) byte order.
pub fn guid_bytes(g: &Uuid) -> [u8; 16] {
    g.to_bytes_le()
}

/// A string as UTF-16LE code units, without a terminator.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The `UEFI_VARIABLE_DATA` event structure: GUID, name length in characters, data
/// length, UTF-16 name (no terminator), data.
pub fn variable_data(vendor: &Uuid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16 = utf16le(name);
    let mut v = Vec::with_capacity(32 + name16.len() + data.len());
    v.extend_from_slice(&guid_bytes(vendor));
    v.extend_from_slice(&((name16.len() / 2) as u64).to_le_bytes());
    v.extend_from_slice(&(data.len() as u64).to_le_bytes());
    v.extend_from_slice(&name16);
    v.extend_from_slice(data);
    v
}

/// EFI variable values by (vendor GUID, name), as read from an efivarfs dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EfiVars {
    vars: BTreeMap<(Uuid, String), Vec<u8>>,
}

/// Most bytes one variable file may hold (efivarfs values are small).
const MAX_VAR_FILE: u64 = 1 << 20;

impl EfiVars {
    /// No variables (what a fresh OVMF varstore holds).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a value.
    pub fn insert(&mut self, vendor: Uuid, name: &str, data: Vec<u8>) {
        self.vars.insert((vendor, name.to_owned()), data);
    }

    /// A value, if present.
    pub fn get(&self, vendor: &Uuid, name: &str) -> Option<&[u8]> {
        self.vars
            .get(&(*vendor, name.to_owned()))
            .map(Vec::as_slice)
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Reads every `<Name>-<guid>` file of a directory copied from a guest's
    /// `/sys/firmware/efi/efivars`. Other files are ignored; a file named like a
    /// variable but shorter than its 4-byte attribute word is an error.
    pub fn from_efivarfs(dir: &Path) -> Result<Self, MeasureError> {
        let io = |e: std::io::Error| MeasureError::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut out = Self::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let fname = entry.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            // "<Name>-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx": the GUID is the last 36 chars.
            let Some(split) = fname.len().checked_sub(37) else {
                continue;
            };
            let (Some(name), Some(dash), Some(guid)) = (
                fname.get(..split),
                fname.get(split..=split),
                fname.get(split + 1..),
            ) else {
                continue;
            };
            let Ok(vendor) = Uuid::parse_str(guid) else {
                continue;
            };
            if dash != "-" || name.is_empty() {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| MeasureError::Io {
                path: path.clone(),
                source: e,
            })?;
            if meta.len() > MAX_VAR_FILE {
                return Err(MeasureError::Platform(format!(
                    "{}: {} bytes is too large for an EFI variable",
                    path.display(),
                    meta.len()
                )));
            }
            let raw = std::fs::read(&path).map_err(|e| MeasureError::Io {
                path: path.clone(),
                source: e,
            })?;
            let Some(data) = raw.get(4..) else {
                return Err(MeasureError::Platform(format!(
                    "{}: {} bytes, but an efivarfs file starts with a 4-byte attribute word; copy the files from /sys/firmware/efi/efivars as they are",
                    path.display(),
                    raw.len()
                )));
            };
            out.insert(vendor, name, data.to_vec());
        }
        Ok(out)
    }

    /// The `BootOrder` entries, or an error if the value is not a list of u16.
    pub fn boot_order(&self) -> Result<Option<Vec<u16>>, MeasureError> {
        let Some(raw) = self.get(&GLOBAL_VARIABLE, "BootOrder") else {
            return Ok(None);
        };
        if !raw.len().is_multiple_of(2) {
            return Err(MeasureError::Platform(format!(
                "BootOrder holds {} bytes; it must be a list of 16-bit entries",
                raw.len()
            )));
        }
        Ok(Some(
            (0..raw.len() / 2)
                .filter_map(|i| le_u16(raw, 2 * i))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_data_layout() {
        let v = variable_data(&GLOBAL_VARIABLE, "PK", &[]);
        assert_eq!(
            hex::encode(&v),
            "61dfe48bca93d211aa0d00e098032b8c\
             0200000000000000\
             0000000000000000\
             50004b00"
        );
        let v = variable_data(&IMAGE_SECURITY_DATABASE, "db", &[1, 2]);
        assert_eq!(&v[0..4], &[0xcb, 0xb2, 0x19, 0xd7]);
        assert_eq!(&v[24..32], &2u64.to_le_bytes());
        assert_eq!(&v[v.len() - 2..], &[1, 2]);
    }

    #[test]
    fn reads_an_efivarfs_copy() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path()
                .join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
            [7, 0, 0, 0, 1, 0, 0, 0],
        )
        .unwrap();
        std::fs::write(
            d.path()
                .join("Boot0001-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
            [7, 0, 0, 0, 9],
        )
        .unwrap();
        std::fs::write(d.path().join("README"), b"not a variable").unwrap();
        let v = EfiVars::from_efivarfs(d.path()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v.boot_order().unwrap(), Some(vec![1, 0]));
        assert_eq!(v.get(&GLOBAL_VARIABLE, "Boot0001"), Some(&[9u8][..]));

        std::fs::write(
            d.path().join("db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"),
            [7, 0],
        )
        .unwrap();
        assert!(EfiVars::from_efivarfs(d.path()).is_err());
    }

    #[test]
    fn odd_boot_order_is_refused() {
        let mut v = EfiVars::new();
        v.insert(GLOBAL_VARIABLE, "BootOrder", vec![1, 0, 2]);
        assert!(v.boot_order().is_err());
    }
}
