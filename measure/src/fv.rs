//! UEFI PI firmware volumes inside an OVMF image: volume headers, FFS files and their
//! sections, with LZMA-compressed GUID-defined sections decoded (liblzma via `xz2`), so
//! that we can tell which drivers a firmware carries and read the modules' bytes.
//!
//! Layouts follow the UEFI Platform Initialization specification, volume 3
//! (`EFI_FIRMWARE_VOLUME_HEADER`, `EFI_FFS_FILE_HEADER`/`HEADER2`,
//! `EFI_COMMON_SECTION_HEADER`/`HEADER2`, `EFI_GUID_DEFINED_SECTION`) and edk2's
//! `MdePkg/Include/Pi/PiFirmwareVolume.h`, `PiFirmwareFile.h`; the LZMA section format
//! is edk2's `MdeModulePkg/Library/LzmaCustomDecompressLib` (the `.lzma` "alone"
//! format: 5 property bytes, a 64-bit unpacked size, the stream).
//!
//! The image is hostile input: every offset is checked, nesting and the total of
//! decompressed bytes are bounded, and anything not understood is recorded as a
//! problem instead of failing the whole walk.

use uuid::{uuid, Uuid};

use crate::bytes::{le_u16, le_u32, le_u64};

/// `EFI_FIRMWARE_FILE_SYSTEM2_GUID`.
pub const FFS2_GUID: Uuid = uuid!("8c8ce578-8a3d-4f1c-9935-896185c32dd3");
/// `EFI_FIRMWARE_FILE_SYSTEM3_GUID` (files may be larger than 16 MiB).
pub const FFS3_GUID: Uuid = uuid!("5473c07a-3dcb-4dca-bd6f-1e9689e7349a");
/// `LZMA_CUSTOM_DECOMPRESS_GUID` (edk2 `MdePkg/Include/Guid/LzmaDecompress.h`).
pub const LZMA_GUID: Uuid = uuid!("ee4e5898-3914-4259-9d6e-dc7bd79403cf");
/// `LZMAF86_CUSTOM_DECOMPRESS_GUID`: LZMA plus the x86 branch filter (not decoded here).
pub const LZMA_F86_GUID: Uuid = uuid!("d42ae6bd-1352-4bfb-909a-ca72a6eae889");

/// `_FVH`.
const FV_SIGNATURE: u32 = u32::from_le_bytes(*b"_FVH");
/// Offset of the signature in the volume header.
const FV_SIGNATURE_OFFSET: usize = 40;
/// Smallest valid volume header (fields up to the first block-map entry and its terminator).
const FV_MIN_HEADER: usize = 72;
/// `FFS_ATTRIB_LARGE_FILE`: the file uses `EFI_FFS_FILE_HEADER2` (FFS3 only).
const FFS_ATTRIB_LARGE_FILE: u8 = 0x01;
/// `EFI_GUIDED_SECTION_PROCESSING_REQUIRED`.
const GUIDED_PROCESSING_REQUIRED: u16 = 0x01;

/// Section types we act on (`EFI_SECTION_*`).
mod section {
    pub const COMPRESSION: u8 = 0x01;
    pub const GUID_DEFINED: u8 = 0x02;
    pub const PE32: u8 = 0x10;
    pub const TE: u8 = 0x12;
    pub const VERSION: u8 = 0x14;
    pub const USER_INTERFACE: u8 = 0x15;
    pub const FIRMWARE_VOLUME_IMAGE: u8 = 0x17;
}

/// File types without sections (`EFI_FV_FILETYPE_RAW`, `_FFS_PAD`).
const FILETYPE_RAW: u8 = 0x01;
const FILETYPE_PAD: u8 = 0xf0;

/// Deepest nesting of volumes and encapsulation sections we follow.
const MAX_DEPTH: usize = 8;
/// Most bytes we decompress in total from one image.
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// One FFS file found in a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfsFile {
    /// The file's name GUID (for drivers, the `FILE_GUID` of their `.inf`).
    pub guid: Uuid,
    /// `EFI_FV_FILETYPE_*`.
    pub file_type: u8,
    /// The user-interface name, if the file has one (usually the module's base name).
    pub ui_name: Option<String>,
    /// The version section's string, if any.
    pub version: Option<String>,
    /// How deep it sits: 0 for files of a volume in the image itself, +1 per
    /// encapsulation (decoded section or nested volume) around it.
    pub depth: usize,
    /// The module's executable bytes (PE32 and TE sections concatenated).
    pub image: Vec<u8>,
}

impl FfsFile {
    /// Whether the module's image contains `needle`.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && memchr::memmem::find(&self.image, needle).is_some()
    }
}

/// Everything found in an image's firmware volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volumes {
    /// Number of volumes walked (nested ones included).
    pub volumes: usize,
    /// Every file, in the order found.
    pub files: Vec<FfsFile>,
    /// Bytes decompressed.
    pub decompressed: u64,
    /// What could not be walked or decoded, and where.
    pub problems: Vec<String>,
}

impl Volumes {
    /// The file with this name GUID, if present.
    pub fn file(&self, guid: &Uuid) -> Option<&FfsFile> {
        self.files.iter().find(|f| f.guid == *guid)
    }
}

/// Finds and walks every firmware volume in a flash image (the volumes are found by
/// their `_FVH` signature at 8-byte aligned offsets, as edk2's tools find them).
pub fn scan(image: &[u8]) -> Volumes {
    let mut out = Volumes::default();
    let mut off = 0usize;
    while off + FV_MIN_HEADER <= image.len() {
        if le_u32(image, off + FV_SIGNATURE_OFFSET) == Some(FV_SIGNATURE) {
            if let Some(len) = volume_length(image, off) {
                walk_volume(image.get(off..off + len).unwrap_or(&[]), 0, &mut out);
                off += len.next_multiple_of(8);
                continue;
            }
        }
        off += 8;
    }
    out
}

/// The length of a plausible volume at `off`: header checksum valid, length inside
/// the image.
fn volume_length(data: &[u8], off: usize) -> Option<usize> {
    let len = usize::try_from(le_u64(data, off + 32)?).ok()?;
    let hlen = usize::from(le_u16(data, off + 48)?);
    if hlen < FV_MIN_HEADER
        || !hlen.is_multiple_of(2)
        || len < hlen
        || off.checked_add(len)? > data.len()
    {
        return None;
    }
    let header = data.get(off..off + hlen)?;
    (checksum16(header) == 0).then_some(len)
}

/// The sum of 16-bit little-endian words (a volume header sums to zero).
fn checksum16(data: &[u8]) -> u16 {
    (0..data.len() / 2)
        .filter_map(|i| le_u16(data, 2 * i))
        .fold(0u16, u16::wrapping_add)
}

fn guid_at(data: &[u8], off: usize) -> Option<Uuid> {
    let b: [u8; 16] = data.get(off..off.checked_add(16)?)?.try_into().ok()?;
    Some(Uuid::from_bytes_le(b))
}

fn le_u24(data: &[u8], off: usize) -> Option<usize> {
    let [a, b, c]: [u8; 3] = data.get(off..off.checked_add(3)?)?.try_into().ok()?;
    Some(usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16)
}

/// Walks the files of one volume (`fv` starts at its header and has its length).
fn walk_volume(fv: &[u8], depth: usize, out: &mut Volumes) {
    if depth > MAX_DEPTH {
        out.problems.push("volumes nested too deeply".into());
        return;
    }
    let Some(fs) = guid_at(fv, 16) else { return };
    let is_ffs3 = fs == FFS3_GUID;
    if fs != FFS2_GUID && !is_ffs3 {
        // Variable stores and other non-FFS volumes carry no modules.
        return;
    }
    out.volumes += 1;
    let hlen = usize::from(le_u16(fv, 48).unwrap_or(0));
    let ext = usize::from(le_u16(fv, 52).unwrap_or(0));
    let mut off = hlen;
    if ext != 0 {
        // EFI_FIRMWARE_VOLUME_EXT_HEADER: FvName GUID, u32 ExtHeaderSize.
        match le_u32(fv, ext + 16) {
            Some(size) if ext + (size as usize) <= fv.len() => off = ext + size as usize,
            _ => {
                out.problems
                    .push(format!("volume extension header at {ext:#x} is malformed"));
                return;
            }
        }
    }
    loop {
        off = off.next_multiple_of(8);
        let Some(hdr) = fv.get(off..off + 24) else {
            break;
        };
        if hdr.iter().all(|&b| b == 0xff) || hdr.iter().all(|&b| b == 0) {
            break; // free space
        }
        let guid = guid_at(fv, off).unwrap_or_default();
        let file_type = hdr.get(18).copied().unwrap_or(0);
        let attributes = hdr.get(19).copied().unwrap_or(0);
        let (size, header) = if is_ffs3 && attributes & FFS_ATTRIB_LARGE_FILE != 0 {
            match le_u64(fv, off + 24).and_then(|s| usize::try_from(s).ok()) {
                Some(s) => (s, 32),
                None => (0, 32),
            }
        } else {
            (le_u24(fv, off + 20).unwrap_or(0), 24)
        };
        let Some(body) = (size >= header)
            .then(|| fv.get(off + header..off + size))
            .flatten()
        else {
            out.problems.push(format!(
                "file {guid} at volume offset {off:#x} has size {size:#x}, outside its volume"
            ));
            break;
        };
        if file_type != FILETYPE_PAD {
            let mut file = FfsFile {
                guid,
                file_type,
                ui_name: None,
                version: None,
                depth,
                image: Vec::new(),
            };
            if file_type != FILETYPE_RAW {
                walk_sections(body, depth, &mut file, out);
            }
            out.files.push(file);
        }
        off += size;
    }
}

fn utf16_string(data: &[u8]) -> String {
    let units: Vec<u16> = (0..data.len() / 2)
        .filter_map(|i| le_u16(data, 2 * i))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Walks a sequence of sections (a file's body, or decoded encapsulated data).
fn walk_sections(data: &[u8], depth: usize, file: &mut FfsFile, out: &mut Volumes) {
    if depth > MAX_DEPTH {
        out.problems
            .push(format!("file {}: sections nested too deeply", file.guid));
        return;
    }
    let mut off = 0usize;
    while off + 4 <= data.len() {
        let size24 = le_u24(data, off).unwrap_or(0);
        let kind = data.get(off + 3).copied().unwrap_or(0);
        let (size, header) = if size24 == 0xff_ffff {
            (le_u32(data, off + 4).map_or(0, |s| s as usize), 8)
        } else {
            (size24, 4)
        };
        let Some(body) = (size >= header)
            .then(|| data.get(off + header..off + size))
            .flatten()
        else {
            out.problems.push(format!(
                "file {}: section at {off:#x} has size {size:#x}, outside its file",
                file.guid
            ));
            return;
        };
        match kind {
            section::PE32 | section::TE => file.image.extend_from_slice(body),
            section::USER_INTERFACE => file.ui_name = Some(utf16_string(body)),
            section::VERSION => file.version = Some(utf16_string(body.get(2..).unwrap_or(&[]))),
            section::FIRMWARE_VOLUME_IMAGE => {
                // The section's data is one volume; it may be preceded by alignment
                // padding only through a separate pad section, so it starts here.
                match volume_length(body, 0) {
                    Some(len) => walk_volume(body.get(..len).unwrap_or(&[]), depth + 1, out),
                    None => out.problems.push(format!(
                        "file {}: firmware-volume section without a valid volume header",
                        file.guid
                    )),
                }
            }
            section::COMPRESSION => {
                // u32 UncompressedLength, u8 CompressionType (0: none, 1: standard).
                match body.get(4) {
                    Some(0) => walk_sections(body.get(5..).unwrap_or(&[]), depth + 1, file, out),
                    t => out.problems.push(format!(
                        "file {}: compression section of type {t:?} (EFI/Tiano) is not decoded",
                        file.guid
                    )),
                }
            }
            section::GUID_DEFINED => guided(data, off, header, size, depth, file, out),
            _ => {}
        }
        off = (off + size).next_multiple_of(4);
    }
}

/// A GUID-defined section: LZMA is decoded, sections that need no processing (e.g.
/// CRC32-guarded ones) are walked as they are, anything else is recorded.
fn guided(
    data: &[u8],
    off: usize,
    header: usize,
    size: usize,
    depth: usize,
    file: &mut FfsFile,
    out: &mut Volumes,
) {
    let h = off + header;
    let (Some(guid), Some(data_offset), Some(attrs)) =
        (guid_at(data, h), le_u16(data, h + 16), le_u16(data, h + 18))
    else {
        out.problems.push(format!(
            "file {}: truncated GUID-defined section",
            file.guid
        ));
        return;
    };
    let Some(payload) = data.get(off + usize::from(data_offset)..off + size) else {
        out.problems.push(format!(
            "file {}: GUID-defined section data offset {data_offset:#x} outside the section",
            file.guid
        ));
        return;
    };
    if guid == LZMA_GUID {
        match lzma_decode(payload, MAX_DECOMPRESSED.saturating_sub(out.decompressed)) {
            Ok(plain) => {
                out.decompressed += plain.len() as u64;
                walk_sections(&plain, depth + 1, file, out);
            }
            Err(why) => out
                .problems
                .push(format!("file {}: LZMA section: {why}", file.guid)),
        }
    } else if attrs & GUIDED_PROCESSING_REQUIRED == 0 {
        walk_sections(payload, depth + 1, file, out);
    } else {
        out.problems.push(format!(
            "file {}: GUID-defined section {guid} is not decoded",
            file.guid
        ));
    }
}

/// Decodes edk2's LZMA section data (the `.lzma` "alone" format) with at most `limit`
/// output bytes.
pub fn lzma_decode(payload: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let declared = le_u64(payload, 5).ok_or("shorter than its 13-byte header")?;
    if declared > limit {
        return Err(format!(
            "declares {declared} unpacked bytes, more than the {limit} still allowed"
        ));
    }
    // 64 MiB of decoder memory covers every dictionary size edk2's tools choose.
    let mut stream = xz2::stream::Stream::new_lzma_decoder(64 << 20).map_err(|e| e.to_string())?;
    let declared_len = usize::try_from(declared).map_err(|e| e.to_string())?;
    // Decode straight into the reserved output (no zero-filling, no regrowth), up to
    // the declared size, as edk2's decoder does.
    let mut plain = Vec::with_capacity(declared_len);
    while plain.len() < declared_len {
        let consumed = usize::try_from(stream.total_in()).map_err(|e| e.to_string())?;
        let input = payload.get(consumed..).unwrap_or_default();
        let before = (consumed, plain.len());
        let status = stream
            .process_vec(input, &mut plain, xz2::stream::Action::Run)
            .map_err(|e| format!("corrupt stream ({e})"))?;
        let after = (
            usize::try_from(stream.total_in()).map_err(|e| e.to_string())?,
            plain.len(),
        );
        if status == xz2::stream::Status::StreamEnd || after == before {
            break;
        }
    }
    if plain.len() as u64 != declared {
        return Err(format!(
            "{} bytes decoded, {declared} declared",
            plain.len()
        ));
    }
    Ok(plain)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// A volume header with a valid checksum around `files` (FFS2).
    pub(crate) fn volume(files: &[u8]) -> Vec<u8> {
        let hlen = FV_MIN_HEADER;
        let len = (hlen + files.len()).next_multiple_of(8);
        let mut v = vec![0u8; len];
        v[16..32].copy_from_slice(&FFS2_GUID.to_bytes_le());
        v[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        v[40..44].copy_from_slice(b"_FVH");
        v[48..50].copy_from_slice(&(hlen as u16).to_le_bytes());
        v[55] = 2;
        let sum = checksum16(&v[..hlen]);
        v[50..52].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        v[hlen..hlen + files.len()].copy_from_slice(files);
        v
    }

    pub(crate) fn section(kind: u8, body: &[u8]) -> Vec<u8> {
        let size = 4 + body.len();
        let mut s = vec![size as u8, (size >> 8) as u8, (size >> 16) as u8, kind];
        s.extend_from_slice(body);
        while !s.len().is_multiple_of(4) {
            s.push(0);
        }
        s
    }

    pub(crate) fn file(guid: Uuid, kind: u8, sections: &[u8]) -> Vec<u8> {
        let size = 24 + sections.len();
        let mut f = guid.to_bytes_le().to_vec();
        f.extend_from_slice(&[
            0,
            0,
            kind,
            0,
            size as u8,
            (size >> 8) as u8,
            (size >> 16) as u8,
            0xf8,
        ]);
        f.extend_from_slice(sections);
        while !f.len().is_multiple_of(8) {
            f.push(0xff);
        }
        f
    }

    fn ui(name: &str) -> Vec<u8> {
        let mut b: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        b.extend_from_slice(&[0, 0]);
        section(section::USER_INTERFACE, &b)
    }

    pub(crate) fn lzma_section(plain: &[u8]) -> Vec<u8> {
        let opts = xz2::stream::LzmaOptions::new_preset(6).unwrap();
        let enc = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut packed = Vec::new();
        xz2::read::XzEncoder::new_stream(plain, enc)
            .read_to_end(&mut packed)
            .unwrap();
        // liblzma's alone encoder writes an unknown size (all ones); edk2 writes the size.
        packed[5..13].copy_from_slice(&(plain.len() as u64).to_le_bytes());
        let mut body = LZMA_GUID.to_bytes_le().to_vec();
        body.extend_from_slice(&24u16.to_le_bytes()); // data offset from section start
        body.extend_from_slice(&GUIDED_PROCESSING_REQUIRED.to_le_bytes());
        body.extend_from_slice(&packed);
        section(section::GUID_DEFINED, &body)
    }

    const DRIVER: Uuid = uuid!("f062221e-c2a4-4a5f-abbc-2b04ed8c6dd3");

    #[test]
    fn finds_a_driver_inside_an_lzma_volume_inside_a_volume() {
        let inner = volume(&file(
            DRIVER,
            0x07,
            &[
                section(section::PE32, b"MZ...etc/boot/kernel..."),
                ui("TdTcg2Dxe"),
            ]
            .concat(),
        ));
        let compressed = lzma_section(&section(section::FIRMWARE_VOLUME_IMAGE, &inner));
        let outer = volume(&file(Uuid::from_u128(7), 0x0b, &compressed));
        let mut image = vec![0xffu8; 4096];
        image.extend_from_slice(&outer);
        image.extend_from_slice(&[0xff; 100]);
        let v = scan(&image);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.volumes, 2);
        let f = v.file(&DRIVER).unwrap();
        assert_eq!(f.ui_name.as_deref(), Some("TdTcg2Dxe"));
        assert_eq!(f.depth, 2); // LZMA section, then the volume inside it
        assert!(f.contains(b"etc/boot/kernel"));
        assert!(v.decompressed > 0);
    }

    #[test]
    fn hostile_volumes_are_problems_not_panics() {
        let good = volume(&file(DRIVER, 0x07, &ui("X")));
        // Every truncation and every single-byte corruption of a small volume.
        for cut in 0..good.len() {
            let _ = scan(&good[..cut]);
        }
        for i in 0..good.len() {
            for b in [0u8, 0x7f, 0xff] {
                let mut g = good.clone();
                g[i] = b;
                let _ = scan(&g);
            }
        }
        // An LZMA section that lies about its size or is corrupt.
        let mut bad = lzma_section(b"hello sections");
        let n = bad.len();
        bad[n / 2] ^= 0x55;
        let v = scan(&volume(&file(DRIVER, 0x07, &bad)));
        assert!(v.file(&DRIVER).is_some());
        assert!(lzma_decode(
            &[0x5d, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            1 << 20
        )
        .is_err());
        assert!(lzma_decode(&[1, 2], 10).is_err());
    }
}
