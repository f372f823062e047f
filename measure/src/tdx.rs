//! TDX MRTD: the SHA-384 stream of TDH.MEM.PAGE.ADD and TDH.MR.EXTEND records the TDX
//! module hashes while the VMM loads the TDVF sections (Intel TDX module ABI, "MRTD").
//!
//! Each PAGE.ADD contributes a 128-byte record ("MEM.PAGE.ADD", GPA); each MR.EXTEND a
//! 128-byte record ("MR.EXTEND", GPA of a 256-byte chunk) followed by the chunk. Every
//! section is added page by page (TD_HOB and TEMP_MEM too); sections with the
//! MR_EXTEND attribute are also extended. Single-pass order (upstream KVM's
//! KVM_TDX_INIT_MEM_REGION): per page, the add then its extends. Two-pass order (older
//! QEMU/KVM): per section, all its adds, then all its extends.
//!
//! As QEMU (`target/i386/kvm/tdx.c`) does: BFV/CFV pages are the image's bytes from the
//! section's data offset for its whole memory size (not only its raw size), TD_HOB and
//! TEMP_MEM pages are zero, and the PAGE_AUG attribute is ignored (QEMU adds those
//! pages too; some calculators skip them). RTMRs are in [`crate::rtmr`].

use crate::sha384::Sha384;

use crate::ovmf::{Firmware, Parsed, PAGE_SIZE};
use crate::tdvf::{TdvfSection, TdvfSectionKind};
use crate::{FirmwareError, MeasureError};

const CHUNK: usize = 256;
/// Most pages the TDVF sections may declare in total (4 GiB).
pub const MAX_PAGES: u64 = 1 << 20;

fn record(op: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    if let Some(dst) = r.get_mut(..op.len()) {
        dst.copy_from_slice(op);
    }
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

fn page_add(h: &mut Sha384, gpa: u64) {
    h.update(&record(b"MEM.PAGE.ADD", gpa));
}

fn extend_page(h: &mut Sha384, gpa: u64, page: &[u8]) {
    let zero = [0u8; CHUNK];
    for i in 0..PAGE_SIZE / CHUNK {
        h.update(&record(b"MR.EXTEND", gpa + (i * CHUNK) as u64));
        let chunk = page
            .get(i * CHUNK..(i + 1) * CHUNK)
            .filter(|c| c.len() == CHUNK);
        h.update(chunk.unwrap_or(&zero));
    }
}

/// The bytes of one page of a section: for BFV/CFV the image's bytes (QEMU copies the
/// whole memory size from the data offset; the parser checked they exist), zero for
/// TD_HOB/TEMP_MEM.
fn page_bytes(fw: &Firmware, s: &TdvfSection, page: u64) -> [u8; PAGE_SIZE] {
    let mut out = [0u8; PAGE_SIZE];
    let start = page * PAGE_SIZE as u64;
    let copied = match s.kind {
        TdvfSectionKind::Bfv | TdvfSectionKind::Cfv => s.memory_size,
        TdvfSectionKind::TdHob | TdvfSectionKind::TempMem => 0,
    };
    if start < copied {
        let n = (copied - start).min(PAGE_SIZE as u64) as usize;
        let off = u64::from(s.data_offset) + start;
        if let (Some(src), Some(dst)) = (
            fw.data().get(off as usize..off as usize + n),
            out.get_mut(..n),
        ) {
            dst.copy_from_slice(src);
        }
    }
    out
}

/// The MRTD of a TDX firmware image.
pub fn mrtd(fw: &Firmware, two_pass: bool) -> Result<[u8; 48], MeasureError> {
    let meta = match fw.tdx_metadata() {
        Parsed::Valid(m) => m,
        Parsed::Invalid(e) => return Err(e.clone().into()),
        Parsed::Absent => {
            return Err(FirmwareError::TdxMetadata(
                "no TDX_METADATA_OFFSET entry: not a TDX (IntelTdx/TDVF) firmware".into(),
            )
            .into())
        }
    };
    let sections: Vec<&TdvfSection> = meta.sections.iter().collect();
    let mut h = Sha384::new();
    for s in &sections {
        let pages = s.memory_size / PAGE_SIZE as u64;
        for p in 0..pages {
            let gpa = s.memory_address + p * PAGE_SIZE as u64;
            page_add(&mut h, gpa);
            if !two_pass && s.mr_extend() {
                extend_page(&mut h, gpa, &page_bytes(fw, s, p));
            }
        }
        if two_pass && s.mr_extend() {
            for p in 0..pages {
                let gpa = s.memory_address + p * PAGE_SIZE as u64;
                extend_page(&mut h, gpa, &page_bytes(fw, s, p));
            }
        }
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values from the issue for Debian 12's ovmf 2022.11-6+deb12u2 OVMF.fd.
    #[test]
    fn debian_ovmf_fd_known_values() {
        let Ok(data) = std::fs::read("/usr/share/ovmf/OVMF.fd") else {
            panic!("/usr/share/ovmf/OVMF.fd missing: run scripts/setup.sh");
        };
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
        assert_eq!(
            sha, "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773",
            "Debian's OVMF.fd is not the 2022.11-6+deb12u2 build these known values are for"
        );
        let fw = Firmware::parse(data).unwrap();
        assert_eq!(
            hex::encode(mrtd(&fw, false).unwrap()),
            "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47"
        );
        assert_eq!(
            hex::encode(mrtd(&fw, true).unwrap()),
            "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1"
        );
    }
}
