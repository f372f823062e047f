//! The SEV kernel-hashes table QEMU writes for `-kernel`/`-initrd`/`-append` when it
//! measures a direct kernel boot (`kernel-hashes=on`): SHA-256 of the kernel file, of
//! the initrd (of nothing if absent) and of the command line plus its NUL terminator,
//! in a GUIDed table padded to 16 bytes.

use sha2::{Digest, Sha256};
use uuid::{uuid, Uuid};

const TABLE_HEADER_GUID: Uuid = uuid!("9438d606-4f22-4cc9-b479-a793d411fd21");
const KERNEL_GUID: Uuid = uuid!("4de79437-abd2-427f-b835-d5b172d2045b");
const INITRD_GUID: Uuid = uuid!("44baf731-3a2f-4bd7-9af1-41e29169781d");
const CMDLINE_GUID: Uuid = uuid!("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

/// Unpadded table: header (16 + 2) and three entries (16 + 2 + 32).
pub const TABLE_LEN: usize = 18 + 3 * 50;
/// Table padded to 16 bytes, as QEMU measures it.
pub const PADDED_TABLE_LEN: usize = (TABLE_LEN + 15) & !15;

/// SHA-256 digests of the three direct-boot inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd file (of the empty string if none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by a NUL byte.
    pub cmdline: [u8; 32],
}

/// SHA-256 of the kernel command line as QEMU hashes it (bytes + NUL).
pub fn cmdline_sha256(cmdline: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cmdline);
    h.update([0u8]);
    h.finalize().into()
}

/// SHA-256 of nothing: the initrd hash when there is no initrd.
pub fn empty_sha256() -> [u8; 32] {
    Sha256::digest([]).into()
}

impl KernelHashes {
    /// Builds the hashes from precomputed file digests and a command line.
    pub fn new(kernel: [u8; 32], initrd: Option<[u8; 32]>, cmdline: &[u8]) -> Self {
        KernelHashes {
            kernel,
            initrd: initrd.unwrap_or_else(empty_sha256),
            cmdline: cmdline_sha256(cmdline),
        }
    }

    /// Builds the hashes from the file contents themselves (for callers holding bytes).
    pub fn from_bytes(kernel: &[u8], initrd: Option<&[u8]>, cmdline: &[u8]) -> Self {
        KernelHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: cmdline_sha256(cmdline),
        }
    }

    /// The padded table bytes QEMU places at the hash-table GPA.
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        let mut w = Writer {
            buf: &mut t,
            pos: 0,
        };
        w.put(&TABLE_HEADER_GUID.to_bytes_le());
        w.put(&(TABLE_LEN as u16).to_le_bytes());
        for (guid, hash) in [
            (CMDLINE_GUID, &self.cmdline),
            (INITRD_GUID, &self.initrd),
            (KERNEL_GUID, &self.kernel),
        ] {
            w.put(&guid.to_bytes_le());
            w.put(&50u16.to_le_bytes());
            w.put(hash);
        }
        t
    }

    /// A 4 KiB page with the table at `offset`, or `None` if it does not fit.
    pub fn page(&self, offset: usize) -> Option<Box<[u8; 4096]>> {
        let mut page = Box::new([0u8; 4096]);
        page.get_mut(offset..offset.checked_add(PADDED_TABLE_LEN)?)?
            .copy_from_slice(&self.table());
        Some(page)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + b.len()) {
            dst.copy_from_slice(b);
        }
        self.pos += b.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let h = KernelHashes::new([0xaa; 32], None, b"console=ttyS0");
        let t = h.table();
        assert_eq!(PADDED_TABLE_LEN, 176);
        assert_eq!(&t[..16], &TABLE_HEADER_GUID.to_bytes_le());
        assert_eq!(u16::from_le_bytes([t[16], t[17]]), 168);
        assert_eq!(&t[18..34], &CMDLINE_GUID.to_bytes_le());
        assert_eq!(&t[36..68], &cmdline_sha256(b"console=ttyS0"));
        assert_eq!(&t[86..118], &empty_sha256());
        assert_eq!(&t[136..168], &[0xaa; 32]);
        assert_eq!(&t[168..], &[0u8; 8]);
        assert!(h.page(4096 - 176).is_some());
        assert!(h.page(4096 - 175).is_none());
        assert_eq!(
            KernelHashes::from_bytes(b"k", None, b"c"),
            KernelHashes::new(Sha256::digest(b"k").into(), None, b"c")
        );
    }
}
