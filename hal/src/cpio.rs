//! A cpio "newc" (SVR4, magic 070701) writer that is reproducible by construction, and
//! a reader for inspecting and diffing initramfs images.
//!
//! The writer owns every field that could leak the build machine or the build time:
//! entries are sorted by path component (so parents precede children) whatever order
//! they were added in; missing parent directories are added; uid/gid are 0; one mtime
//! for all entries; inode numbers are sequential from 1 in archive order; `nlink` is 2
//! for directories and 1 otherwise; the archive's own device numbers are 0; modes are
//! masked to permission bits with a per-kind default; names and data are NUL-padded to
//! 4 bytes; the archive ends with the `TRAILER!!!` entry and is padded to 512 bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// Longest path accepted (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;
const MAGIC: &[u8; 6] = b"070701";
const HEADER: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Errors building or reading an archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    /// A path that cannot be placed in the image.
    #[error("path {path:?}: {why}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// Two entries for one path.
    #[error("path {0:?} is given twice")]
    Duplicate(String),
    /// A path is used as a directory but is not one.
    #[error("{0:?} is not a directory but has entries below it")]
    NotADirectory(String),
    /// A malformed archive (reader).
    #[error("not a valid cpio newc archive at byte {offset}: {why}")]
    Malformed {
        /// Offset of the problem.
        offset: usize,
        /// What is wrong.
        why: String,
    },
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to a target.
    Symlink(String),
    /// A character device node.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

impl Kind {
    fn type_bits(&self) -> u32 {
        match self {
            Kind::File(_) => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev { .. } => S_IFCHR,
        }
    }

    fn default_mode(&self) -> u32 {
        match self {
            Kind::File(_) => 0o644,
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            Kind::CharDev { .. } => 0o600,
        }
    }

    /// A short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Dir => "dir",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev { .. } => "chardev",
        }
    }
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, without a leading slash ("bin/busybox").
    pub path: String,
    /// Permission bits (0o7777 at most).
    pub mode: u32,
    /// What it is.
    pub kind: Kind,
}

/// Splits and checks a path: relative to the image root, no empty, "." or ".."
/// components, no NUL, at most [`MAX_PATH`] bytes. A leading "/" is accepted and
/// dropped ("/init" and "init" are the same entry).
pub fn components(path: &str) -> Result<Vec<String>, CpioError> {
    let bad = |why: &str| CpioError::BadPath {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let rel = path.strip_prefix('/').unwrap_or(path);
    if rel.is_empty() {
        return Err(bad("empty (the image root itself cannot be an entry)"));
    }
    if rel.len() > MAX_PATH {
        return Err(bad("longer than 4096 bytes"));
    }
    if rel.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut out = Vec::new();
    for c in rel.split('/') {
        match c {
            "" => return Err(bad("has an empty component (\"//\" or a trailing \"/\")")),
            "." => return Err(bad("has a \".\" component")),
            ".." => {
                return Err(bad(
                    "has a \"..\" component, which would escape the image root",
                ))
            }
            _ => out.push(c.to_owned()),
        }
    }
    Ok(out)
}

/// A set of entries to write.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<Vec<String>, (u32, Kind)>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; `mode` None takes the kind's default (0644 files, 0755 dirs,
    /// 0777 symlinks, 0600 devices). Refuses bad paths and duplicates.
    pub fn add(&mut self, path: &str, mode: Option<u32>, kind: Kind) -> Result<(), CpioError> {
        let key = components(path)?;
        if self.entries.contains_key(&key) {
            return Err(CpioError::Duplicate(key.join("/")));
        }
        let mode = mode.unwrap_or_else(|| kind.default_mode()) & 0o7777;
        self.entries.insert(key, (mode, kind));
        Ok(())
    }

    /// Number of explicit entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in archive order, missing parent directories included.
    pub fn entries(&self) -> Result<Vec<Entry>, CpioError> {
        let mut all: BTreeMap<Vec<String>, (u32, Kind)> = self.entries.clone();
        for key in self.entries.keys() {
            for n in 1..key.len() {
                let parent = key.get(..n).unwrap_or(&[]).to_vec();
                match all.get(&parent) {
                    Some((_, Kind::Dir)) => {}
                    Some(_) => return Err(CpioError::NotADirectory(parent.join("/"))),
                    None => {
                        all.insert(parent, (0o755, Kind::Dir));
                    }
                }
            }
        }
        Ok(all
            .into_iter()
            .map(|(k, (mode, kind))| Entry {
                path: k.join("/"),
                mode,
                kind,
            })
            .collect())
    }

    /// Writes the archive with every mtime set to `mtime`; returns the bytes written.
    pub fn write<W: Write>(&self, out: &mut W, mtime: u32) -> io::Result<u64> {
        let entries = self.entries().map_err(io::Error::other)?;
        let mut w = Counting { inner: out, n: 0 };
        for (i, e) in entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).map_err(io::Error::other)?;
            let (data, nlink, rdev): (&[u8], u32, (u32, u32)) = match &e.kind {
                Kind::File(d) => (d, 1, (0, 0)),
                Kind::Dir => (&[], 2, (0, 0)),
                Kind::Symlink(t) => (t.as_bytes(), 1, (0, 0)),
                Kind::CharDev { major, minor } => (&[], 1, (*major, *minor)),
            };
            let h = Header {
                ino,
                mode: e.kind.type_bits() | e.mode,
                nlink,
                mtime,
                filesize: u32::try_from(data.len())
                    .map_err(|_| io::Error::other(format!("{}: larger than 4 GiB", e.path)))?,
                rdevmajor: rdev.0,
                rdevminor: rdev.1,
            };
            h.write(&mut w, &e.path)?;
            w.write_all(data)?;
            w.pad(4)?;
        }
        let t = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        t.write(&mut w, TRAILER)?;
        w.pad(512)?;
        Ok(w.n)
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Counting<'_, W> {
    fn pad(&mut self, to: u64) -> io::Result<()> {
        let rem = self.n % to;
        if rem != 0 {
            let zeros = vec![0u8; (to - rem) as usize];
            self.write_all(&zeros)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

impl Header {
    fn write<W: Write>(&self, w: &mut Counting<'_, W>, name: &str) -> io::Result<()> {
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor
            0, // devminor
            self.rdevmajor,
            self.rdevminor,
            u32::try_from(namesize).map_err(io::Error::other)?,
            0, // check
        ];
        let mut h = Vec::with_capacity(HEADER + namesize + 3);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        w.write_all(&h)?;
        w.pad(4)
    }
}

/// An entry as read back, with the header fields a diff cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The entry.
    pub entry: Entry,
    /// Inode number.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
}

fn field(data: &[u8], at: usize, idx: usize) -> Result<u32, CpioError> {
    let start = at + 6 + idx * 8;
    let raw = data
        .get(start..start + 8)
        .ok_or_else(|| CpioError::Malformed {
            offset: start,
            why: "truncated header".into(),
        })?;
    let s = std::str::from_utf8(raw)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
    s.and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| CpioError::Malformed {
            offset: start,
            why: "header field is not 8 hex digits".into(),
        })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads a newc archive (uncompressed) up to its trailer.
pub fn read(data: &[u8]) -> Result<Vec<ReadEntry>, CpioError> {
    for (magic, what) in [
        (&b"\x1f\x8b"[..], "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\xfd7zXZ", "xz"),
    ] {
        if data.starts_with(magic) {
            return Err(CpioError::Malformed {
                offset: 0,
                why: format!("this is {what}-compressed; decompress it first"),
            });
        }
    }
    let mut at = 0usize;
    let mut out = Vec::new();
    loop {
        let magic = data.get(at..at + 6).ok_or_else(|| CpioError::Malformed {
            offset: at,
            why: "ends without a TRAILER!!! entry".into(),
        })?;
        if magic != MAGIC {
            return Err(CpioError::Malformed {
                offset: at,
                why: "missing the 070701 magic (compressed? use the decompressed image)".into(),
            });
        }
        let f = |i| field(data, at, i);
        let (ino, mode, uid, gid, nlink, mtime, filesize) =
            (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, f(5)?, f(6)?);
        let (rdevmajor, rdevminor, namesize) = (f(9)?, f(10)?, f(11)? as usize);
        let name_start = at + HEADER;
        let name_raw = data
            .get(name_start..name_start + namesize)
            .filter(|n| n.last() == Some(&0))
            .ok_or_else(|| CpioError::Malformed {
                offset: name_start,
                why: "truncated or unterminated name".into(),
            })?;
        let name =
            String::from_utf8_lossy(name_raw.get(..namesize - 1).unwrap_or(&[])).into_owned();
        let data_start = align4(name_start + namesize);
        if name == TRAILER {
            return Ok(out);
        }
        let body = data
            .get(data_start..data_start + filesize as usize)
            .ok_or_else(|| CpioError::Malformed {
                offset: data_start,
                why: format!("{name:?}: truncated data"),
            })?;
        let kind = match mode & S_IFMT {
            S_IFREG => Kind::File(body.to_vec()),
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink(String::from_utf8_lossy(body).into_owned()),
            S_IFCHR => Kind::CharDev {
                major: rdevmajor,
                minor: rdevminor,
            },
            other => {
                return Err(CpioError::Malformed {
                    offset: at,
                    why: format!("{name:?}: unsupported file type {other:o}"),
                })
            }
        };
        out.push(ReadEntry {
            entry: Entry {
                path: name.trim_start_matches("./").to_owned(),
                mode: mode & 0o7777,
                kind,
            },
            ino,
            uid,
            gid,
            nlink,
            mtime,
        });
        at = align4(data_start + filesize as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add("/init", Some(0o755), Kind::File(b"#!/bin/sh\n".to_vec()))
            .unwrap();
        a.add("bin/busybox", Some(0o755), Kind::File(vec![1, 2, 3]))
            .unwrap();
        a.add("bin/sh", None, Kind::Symlink("busybox".into()))
            .unwrap();
        a.add("dev/console", None, Kind::CharDev { major: 5, minor: 1 })
            .unwrap();
        a.add("etc", None, Kind::Dir).unwrap();
        a
    }

    #[test]
    fn parents_first_sorted_and_implicit_dirs_added() {
        let paths: Vec<String> = sample()
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "init"
            ]
        );
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut b = Archive::new();
        b.add("etc", None, Kind::Dir).unwrap();
        b.add("dev/console", None, Kind::CharDev { major: 5, minor: 1 })
            .unwrap();
        b.add("bin/sh", None, Kind::Symlink("busybox".into()))
            .unwrap();
        b.add("bin/busybox", Some(0o755), Kind::File(vec![1, 2, 3]))
            .unwrap();
        b.add("init", Some(0o755), Kind::File(b"#!/bin/sh\n".to_vec()))
            .unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        sample().write(&mut x, 7).unwrap();
        b.write(&mut y, 7).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.len() % 512, 0);
    }

    #[test]
    fn round_trip_with_fixed_fields() {
        let mut buf = Vec::new();
        let n = sample().write(&mut buf, 1_700_000_000).unwrap();
        assert_eq!(n as usize, buf.len());
        let r = read(&buf).unwrap();
        assert_eq!(r.len(), 7);
        for (i, e) in r.iter().enumerate() {
            assert_eq!(e.ino as usize, i + 1);
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000));
            assert_eq!(e.nlink, if e.entry.kind == Kind::Dir { 2 } else { 1 });
        }
        assert_eq!(
            r[1].entry,
            Entry {
                path: "bin/busybox".into(),
                mode: 0o755,
                kind: Kind::File(vec![1, 2, 3])
            }
        );
        assert_eq!(r[4].entry.kind, Kind::CharDev { major: 5, minor: 1 });
        assert_eq!(r[2].entry.mode, 0o777);
        assert_eq!(r[0].entry.mode, 0o755);
    }

    #[test]
    fn header_layout() {
        let mut a = Archive::new();
        a.add("x", Some(0o640), Kind::File(b"hello".to_vec()))
            .unwrap();
        let mut buf = Vec::new();
        a.write(&mut buf, 0x5f5e_1000).unwrap();
        let h = std::str::from_utf8(&buf[..110]).unwrap();
        assert_eq!(
            h,
            "070701\
             00000001000081A0000000000000000000000001\
             5F5E100000000005000000000000000000000000\
             000000000000000200000000"
        );
        assert_eq!(&buf[110..112], b"x\0");
        assert_eq!(&buf[112..117], b"hello");
        assert_eq!(&buf[117..120], &[0, 0, 0]);
        assert_eq!(&buf[120..126], b"070701");
    }

    #[test]
    fn bad_paths_and_duplicates_are_refused() {
        let mut a = Archive::new();
        for p in ["", "/", "a/../b", "../etc", "a//b", "a/", "./a", "a\0b"] {
            assert!(
                matches!(a.add(p, None, Kind::Dir), Err(CpioError::BadPath { .. })),
                "{p:?}"
            );
        }
        assert!(a.add(&"x".repeat(5000), None, Kind::Dir).is_err());
        a.add("/etc/passwd", None, Kind::File(vec![])).unwrap();
        assert_eq!(
            a.add("etc/passwd", None, Kind::File(vec![])),
            Err(CpioError::Duplicate("etc/passwd".into()))
        );
        a.add("init", None, Kind::File(vec![])).unwrap();
        a.add("init/x", None, Kind::File(vec![])).unwrap();
        assert_eq!(a.entries(), Err(CpioError::NotADirectory("init".into())));
    }

    #[test]
    fn reader_refuses_garbage() {
        assert!(read(b"").is_err());
        assert!(read(b"\x1f\x8b\x08\x00")
            .unwrap_err()
            .to_string()
            .contains("compressed"));
        let mut buf = Vec::new();
        sample().write(&mut buf, 0).unwrap();
        for cut in [5, 100, 115, 200, buf.len() - 600] {
            assert!(read(&buf[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = buf.clone();
        bad[10] = b'Z';
        assert!(read(&bad).is_err());
    }
}
