//! Loading measurement inputs from files: the firmware is read and prepared on the
//! calling thread while kernel and initrd are hashed on their own threads, so a
//! launch with a large initrd costs about one SHA-256 pass over the initrd.

use std::path::{Path, PathBuf};

use crate::hashes::sha256_file;
use crate::ovmf::Firmware;
use crate::MeasureError;

/// A hashed input file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileInfo {
    /// Path as given.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    #[serde(serialize_with = "hex_ser")]
    pub sha256: [u8; 32],
}

fn hex_ser<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

impl FileInfo {
    /// Hashes a file.
    pub fn hash(path: &Path) -> Result<Self, MeasureError> {
        let meta = file_metadata(path)?;
        Ok(FileInfo {
            path: path.to_owned(),
            size: meta.len(),
            sha256: sha256_file(path)?,
        })
    }
}

/// Metadata of an input file; a directory is refused with the same error kind as a
/// missing file, naming the path.
fn file_metadata(path: &Path) -> Result<std::fs::Metadata, MeasureError> {
    let io = |source| MeasureError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::other("is a directory")));
    }
    Ok(meta)
}

/// Checks an input path is a readable-looking file (exists, not a directory).
pub fn check_file(path: &Path) -> Result<(), MeasureError> {
    file_metadata(path).map(|_| ())
}

/// Reads and parses a firmware file; errors name the path.
pub fn read_firmware(path: &Path) -> Result<Firmware, MeasureError> {
    file_metadata(path)?;
    let data = std::fs::read(path).map_err(|source| MeasureError::Io {
        path: path.to_owned(),
        source,
    })?;
    Firmware::parse(data).map_err(|source| MeasureError::FirmwareFile {
        path: path.to_owned(),
        source,
    })
}

/// Everything a measurement needs, loaded.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The parsed firmware.
    pub firmware: Firmware,
    /// What `prepare` made of it.
    pub prepared: T,
    /// The kernel, hashed.
    pub kernel: Option<FileInfo>,
    /// The initrd, hashed.
    pub initrd: Option<FileInfo>,
}

/// Loads firmware (and runs `prepare` on it) while hashing kernel and initrd in parallel.
pub fn load<T: Send>(
    ovmf: &Path,
    kernel: Option<&Path>,
    initrd: Option<&Path>,
    prepare: impl FnOnce(&Firmware) -> Result<T, MeasureError> + Send,
) -> Result<Loaded<T>, MeasureError> {
    std::thread::scope(|s| {
        let ih = initrd.map(|p| s.spawn(move || FileInfo::hash(p)));
        let kh = kernel.map(|p| s.spawn(move || FileInfo::hash(p)));
        let fw = read_firmware(ovmf).and_then(|fw| {
            let prepared = prepare(&fw)?;
            Ok((fw, prepared))
        });
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<FileInfo, MeasureError>>| {
            h.join().unwrap_or_else(|_| {
                Err(MeasureError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other("hashing thread panicked"),
                })
            })
        };
        let kernel = kh.map(join).transpose();
        let initrd = ih.map(join).transpose();
        let (firmware, prepared) = fw?;
        Ok(Loaded {
            firmware,
            prepared,
            kernel: kernel?,
            initrd: initrd?,
        })
    })
}
