//! Listing an initramfs (path, type, mode, size, SHA-256) and diffing two of them,
//! field by field, which is how a release engineer finds why two builds differ.

use std::collections::BTreeMap;

use crate::compress::{self, Compression};
use crate::cpio::{self, Kind, ReadEntry};
use crate::digest::sha256_hex;

/// Most bytes an image may decompress to (4 GiB).
pub const MAX_DECOMPRESSED: u64 = 4 << 30;

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    /// Path in the image.
    pub path: String,
    /// file, dir, symlink or chardev.
    pub kind: &'static str,
    /// Permission bits, octal.
    pub mode: String,
    /// Size of the content (file data or link target).
    pub size: usize,
    /// SHA-256 of the content (files), or None.
    pub sha256: Option<String>,
    /// Symlink target or device numbers.
    pub target: Option<String>,
    /// uid, gid, mtime, ino, nlink as stored.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// Inode number.
    pub ino: u32,
    /// Link count.
    pub nlink: u32,
}

/// A decoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Compression detected.
    pub compression: Compression,
    /// Entries in archive order.
    pub entries: Vec<Listing>,
}

fn listing(e: ReadEntry) -> Listing {
    let (size, sha256, target) = match &e.entry.kind {
        Kind::File(d) => (d.len(), Some(sha256_hex(d)), None),
        Kind::Dir => (0, None, None),
        Kind::Symlink(t) => (t.len(), None, Some(t.clone())),
        Kind::CharDev { major, minor } => (0, None, Some(format!("{major}:{minor}"))),
    };
    Listing {
        path: e.entry.path,
        kind: e.entry.kind.name(),
        mode: format!("{:04o}", e.entry.mode),
        size,
        sha256,
        target,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        ino: e.ino,
        nlink: e.nlink,
    }
}

/// Decompresses (gzip, zstd, xz or none) and reads an initramfs.
pub fn open(data: &[u8]) -> Result<Image, String> {
    let compression = compress::detect(data);
    let raw = compress::decompress(data, MAX_DECOMPRESSED)
        .map_err(|e| format!("cannot decompress ({compression:?}): {e}"))?;
    let entries = cpio::read(&raw).map_err(|e| e.to_string())?;
    Ok(Image {
        compression,
        entries: entries.into_iter().map(listing).collect(),
    })
}

/// One difference between two images.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// Path concerned ("" for whole-archive differences).
    pub path: String,
    /// What differs: "only in first", "only in second", "kind", "mode", "content",
    /// "target", "uid", "gid", "mtime", "ino", "nlink", "order", "compression".
    pub what: String,
    /// Value in the first image.
    pub first: String,
    /// Value in the second image.
    pub second: String,
}

/// Field-by-field differences between two images.
pub fn diff(a: &Image, b: &Image) -> Vec<Difference> {
    let mut out = Vec::new();
    let d = |path: &str, what: &str, x: String, y: String| Difference {
        path: path.to_owned(),
        what: what.to_owned(),
        first: x,
        second: y,
    };
    if a.compression != b.compression {
        out.push(d(
            "",
            "compression",
            format!("{:?}", a.compression),
            format!("{:?}", b.compression),
        ));
    }
    let ma: BTreeMap<&str, &Listing> = a.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mb: BTreeMap<&str, &Listing> = b.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for (p, x) in &ma {
        let Some(y) = mb.get(p) else {
            out.push(d(p, "only in first", x.kind.into(), String::new()));
            continue;
        };
        let fields: [(&str, String, String); 9] = [
            ("kind", x.kind.into(), y.kind.into()),
            ("mode", x.mode.clone(), y.mode.clone()),
            (
                "content",
                format!("{} bytes {}", x.size, x.sha256.clone().unwrap_or_default()),
                format!("{} bytes {}", y.size, y.sha256.clone().unwrap_or_default()),
            ),
            (
                "target",
                x.target.clone().unwrap_or_default(),
                y.target.clone().unwrap_or_default(),
            ),
            ("uid", x.uid.to_string(), y.uid.to_string()),
            ("gid", x.gid.to_string(), y.gid.to_string()),
            ("mtime", x.mtime.to_string(), y.mtime.to_string()),
            ("ino", x.ino.to_string(), y.ino.to_string()),
            ("nlink", x.nlink.to_string(), y.nlink.to_string()),
        ];
        for (what, x, y) in fields {
            if x != y {
                out.push(d(p, what, x, y));
            }
        }
    }
    for (p, y) in &mb {
        if !ma.contains_key(p) {
            out.push(d(p, "only in second", String::new(), y.kind.into()));
        }
    }
    let oa: Vec<&str> = a
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| mb.contains_key(p))
        .collect();
    let ob: Vec<&str> = b
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| ma.contains_key(p))
        .collect();
    if let Some((x, y)) = oa.iter().zip(&ob).find(|(x, y)| x != y) {
        out.push(d("", "order", format!("{x} first"), format!("{y} first")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::Archive;

    fn image(extra: Option<(&str, &[u8])>, mtime: u32) -> Vec<u8> {
        let mut a = Archive::new();
        a.add("init", Some(0o755), Kind::File(b"#!/bin/sh".to_vec()))
            .unwrap();
        a.add("bin/sh", None, Kind::Symlink("busybox".into()))
            .unwrap();
        if let Some((p, d)) = extra {
            a.add(p, None, Kind::File(d.to_vec())).unwrap();
        }
        let mut raw = Vec::new();
        a.write(&mut raw, mtime).unwrap();
        compress::compress(&raw, Compression::Gzip).unwrap()
    }

    #[test]
    fn lists_entries() {
        let img = open(&image(None, 5)).unwrap();
        assert_eq!(img.compression, Compression::Gzip);
        let paths: Vec<&str> = img.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin", "bin/sh", "init"]);
        assert_eq!(img.entries[2].mode, "0755");
        assert_eq!(
            img.entries[2].sha256.as_deref(),
            Some(sha256_hex(b"#!/bin/sh").as_str())
        );
        assert_eq!(img.entries[1].target.as_deref(), Some("busybox"));
    }

    #[test]
    fn identical_images_have_no_differences() {
        let a = open(&image(None, 5)).unwrap();
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn differences_are_named() {
        let a = open(&image(Some(("etc/x", b"1")), 5)).unwrap();
        let b = open(&image(Some(("etc/x", b"2")), 6)).unwrap();
        let whats: Vec<(String, String)> =
            diff(&a, &b).into_iter().map(|d| (d.path, d.what)).collect();
        assert!(whats.contains(&("etc/x".into(), "content".into())));
        assert!(whats.contains(&("init".into(), "mtime".into())));
        let c = open(&image(Some(("etc/y", b"1")), 5)).unwrap();
        let whats: Vec<String> = diff(&a, &c).into_iter().map(|d| d.what).collect();
        assert!(whats.contains(&"only in first".to_string()));
        assert!(whats.contains(&"only in second".to_string()));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(open(b"hello").is_err());
        assert!(open(&[0x1f, 0x8b, 8, 0, 0, 0]).is_err());
    }
}
