//! Input files: the checks every input gets (exists, not a directory, errors name the
//! path) and reading a firmware image. Hashing while reading is [`crate::launch`]'s.

use std::path::Path;

use crate::ovmf::Firmware;
use crate::MeasureError;

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
