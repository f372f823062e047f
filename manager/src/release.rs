//! The released image a manager launches: release.json (written by `cocos-hal build`)
//! and the files it names. Paths in it are relative to its directory and may not leave
//! it (no absolute paths, no `..`, no symlink out). Before every launch each file is
//! opened once, hashed from that open descriptor and compared with release.json; QEMU
//! then gets the same descriptor (`/dev/fd/N`), so what runs is what was checked.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use cocos_proto::release::{ArtifactKind, Manifest};
use sha2::{Digest, Sha256};

/// Why a release or one of its files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// release.json could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// release.json is not what `cocos-hal build` writes.
    #[error("{path}: {why}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A file's SHA-256 differs from release.json.
    #[error("{path}: SHA-256 {actual} does not match release.json ({expected}); refusing to launch a file that is not the released one")]
    Mismatch {
        /// File.
        path: String,
        /// From release.json.
        expected: String,
        /// Of the file on disk.
        actual: String,
    },
}

/// One file the release names, with its expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Absolute path (inside the release directory for kernel and initrd).
    pub path: PathBuf,
    /// Expected SHA-256.
    pub sha256: [u8; 32],
}

/// A firmware the release was measured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareEntry {
    /// "snp" or "tdx".
    pub tee: String,
    /// File name as recorded.
    pub file: String,
    /// Expected SHA-256.
    pub sha256: [u8; 32],
}

/// A parsed release.json.
#[derive(Debug, Clone)]
pub struct Release {
    /// release.json's path.
    pub manifest: PathBuf,
    /// Name and version.
    pub name: String,
    /// Version.
    pub version: String,
    /// The image's default command line.
    pub cmdline: String,
    /// Kernel release (e.g. 6.1.0-40-amd64).
    pub kernel_release: String,
    /// vmlinuz.
    pub kernel: Artifact,
    /// The initramfs.
    pub initrd: Artifact,
    /// Firmware images the release lists under measurements.
    pub firmware: Vec<FirmwareEntry>,
    /// The whole document.
    pub document: Manifest,
}

fn parse_sha(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// Joins `rel` to `dir`, refusing anything that would leave `dir`.
pub fn contained(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "artifact path {rel:?} must be relative and stay in the release directory (no '/', '..' or '.')"
        ));
    }
    let joined = dir.join(p);
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    match joined.canonicalize() {
        Ok(c) if c.starts_with(&canon_dir) => Ok(c),
        Ok(c) => Err(format!(
            "artifact path {rel:?} resolves to {} outside the release directory {}",
            c.display(),
            canon_dir.display()
        )),
        Err(e) => Err(format!(
            "{}: {e} (the release names it; is the release directory complete?)",
            joined.display()
        )),
    }
}

impl Release {
    /// Reads and checks release.json (not the files' contents: see [`seal`]).
    pub fn load(path: &Path) -> Result<Self, ReleaseError> {
        let pstr = path.display().to_string();
        let invalid = |why: String| ReleaseError::Invalid {
            path: pstr.clone(),
            why,
        };
        let text = std::fs::read(path).map_err(|source| io_err(path, source))?;
        let m = Manifest::from_json(&text).map_err(|e| invalid(e.to_string()))?;
        let dir = path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .unwrap_or(Path::new("."));
        let mut kernel = None;
        let mut initrd = None;
        for a in &m.artifacts {
            let sha = parse_sha(&a.sha256).ok_or_else(|| {
                invalid(format!(
                    "artifact {:?}: \"sha256\" is not 64 hex digits",
                    a.path
                ))
            })?;
            let art = Artifact {
                path: contained(dir, &a.path).map_err(invalid)?,
                sha256: sha,
            };
            let slot = match a.kind {
                ArtifactKind::Kernel => &mut kernel,
                ArtifactKind::Initrd => &mut initrd,
            };
            if slot.replace(art).is_some() {
                return Err(invalid(
                    "expected exactly two artifacts, a kernel and an initramfs".into(),
                ));
            }
        }
        let kernel = kernel.ok_or_else(|| invalid("no artifact of kind \"kernel\"".into()))?;
        let initrd = initrd.ok_or_else(|| invalid("no artifact of kind \"initrd\"".into()))?;
        let mut firmware = Vec::new();
        let refs = [
            ("snp", m.measurements.snp.as_ref().map(|r| &r.firmware)),
            ("tdx", m.measurements.tdx.as_ref().map(|r| &r.firmware)),
        ];
        for (tee, fw) in refs {
            if let Some(fw) = fw {
                let sha = parse_sha(&fw.sha256).ok_or_else(|| {
                    invalid(format!(
                        "measurements.{tee}.firmware.sha256 is not 64 hex digits"
                    ))
                })?;
                firmware.push(FirmwareEntry {
                    tee: tee.into(),
                    file: fw.file.clone(),
                    sha256: sha,
                });
            }
        }
        Ok(Self {
            manifest: path.to_path_buf(),
            name: m.name.clone(),
            version: m.version.clone(),
            cmdline: m.cmdline.clone(),
            kernel_release: m.kernel.release.clone(),
            kernel,
            initrd,
            firmware,
            document: m,
        })
    }
}

fn open_regular(path: &Path) -> Result<File, ReleaseError> {
    let file = File::open(path).map_err(|source| io_err(path, source))?;
    let meta = file.metadata().map_err(|source| io_err(path, source))?;
    if !meta.is_file() {
        return Err(ReleaseError::Invalid {
            path: path.display().to_string(),
            why: "not a regular file".into(),
        });
    }
    Ok(file)
}

fn io_err(path: &Path, source: std::io::Error) -> ReleaseError {
    ReleaseError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn check(path: &Path, actual: &[u8; 32], expected: &[u8; 32]) -> Result<(), ReleaseError> {
    if actual != expected {
        return Err(ReleaseError::Mismatch {
            path: path.display().to_string(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// A release file copied, while it is hashed, into a sealed memfd: the bytes QEMU
/// reads cannot change after the check, whatever happens to the file on disk (an
/// in-place rewrite, a swap, a truncation).
#[derive(Debug)]
pub struct Sealed {
    /// The memfd (write, grow, shrink and further sealing refused by the kernel).
    pub file: File,
    /// Its SHA-256 (equal to release.json's).
    pub sha256: [u8; 32],
    /// Its size.
    pub size: u64,
}

impl Sealed {
    /// Another descriptor of the same sealed bytes (one per launch).
    pub fn dup(&self, path: &Path) -> Result<File, ReleaseError> {
        self.file.try_clone().map_err(|e| io_err(path, e))
    }
}

/// Copies `path` into a sealed memfd, hashing what was copied; refused unless its
/// SHA-256 is `expected`.
pub fn seal(path: &Path, expected: &[u8; 32]) -> Result<Sealed, ReleaseError> {
    let sealed = seal_any(path)?;
    check(path, &sealed.sha256, expected)?;
    Ok(sealed)
}

/// Copies `path` into a sealed memfd and hashes what was copied (the caller checks
/// the digest: e.g. a firmware is looked up among those release.json lists).
pub fn seal_any(path: &Path) -> Result<Sealed, ReleaseError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut src = open_regular(path)?;
    let sys = |what: &str, e: nix::errno::Errno| {
        io_err(path, std::io::Error::other(format!("{what}: {e}")))
    };
    let fd = memfd_create(
        c"cocos-release-file",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| sys("memfd_create", e))?;
    let mut dst = File::from(fd);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        h.update(chunk);
        dst.write_all(chunk).map_err(|e| io_err(path, e))?;
        size += n as u64;
    }
    let sha256: [u8; 32] = h.finalize().into();
    fcntl(
        dst.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(|e| sys("sealing", e))?;
    Ok(Sealed {
        file: dst,
        sha256,
        size,
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn release(dir: &Path, initrd_path: &str) -> PathBuf {
        use cocos_proto::release::{
            Artifact as A, FirmwareRef, Initramfs, KernelInfo, Measurements, SnpReference, SCHEMA,
        };
        std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.join("initrd.img"), b"initrd").unwrap();
        let m = Manifest {
            schema: SCHEMA,
            name: "t".into(),
            version: "1".into(),
            kernel: KernelInfo {
                release: "6.1.0".into(),
                source: serde_json::Value::Null,
                tee: serde_json::Value::Null,
            },
            cmdline: "console=ttyS0".into(),
            initramfs: Initramfs {
                compression: "gzip".into(),
                mtime: 0,
            },
            modules: vec![],
            artifacts: vec![
                A {
                    kind: ArtifactKind::Kernel,
                    path: "vmlinuz".into(),
                    size: 6,
                    sha256: sha(b"kernel"),
                },
                A {
                    kind: ArtifactKind::Initrd,
                    path: initrd_path.into(),
                    size: 6,
                    sha256: sha(b"initrd"),
                },
            ],
            measurements: Measurements {
                snp: Some(SnpReference {
                    firmware: FirmwareRef {
                        file: "OVMF.fd".into(),
                        sha256: sha(b"fw"),
                    },
                    vmm: None,
                    digests: vec![],
                    unsupported: Some("test".into()),
                }),
                tdx: None,
            },
        };
        let p = dir.join("release.json");
        std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
        p
    }

    #[test]
    fn loads_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let r = Release::load(&release(d.path(), "initrd.img")).unwrap();
        assert_eq!(r.cmdline, "console=ttyS0");
        assert_eq!(r.firmware.len(), 1);
        let v = seal(&r.kernel.path, &r.kernel.sha256).unwrap();
        assert_eq!(v.size, 6);
        std::fs::write(d.path().join("initrd.img"), b"initrX").unwrap();
        let e = seal(&r.initrd.path, &r.initrd.sha256).unwrap_err();
        assert!(e.to_string().contains("does not match release.json"), "{e}");
    }

    #[test]
    fn refuses_paths_leaving_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("rel");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(d.path().join("outside"), b"initrd").unwrap();
        for bad in ["../outside", "/etc/passwd", "./initrd.img", ""] {
            let e = Release::load(&release(&sub, bad)).unwrap_err();
            assert!(
                e.to_string().contains("release directory")
                    || e.to_string().contains("must be relative"),
                "{bad}: {e}"
            );
        }
        std::os::unix::fs::symlink(d.path().join("outside"), sub.join("link")).unwrap();
        let e = Release::load(&release(&sub, "link")).unwrap_err();
        assert!(
            e.to_string().contains("outside the release directory"),
            "{e}"
        );
    }

    #[test]
    fn rejects_malformed_manifests() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("release.json");
        for bad in [
            "",
            "{",
            "[]",
            r#"{"artifacts": []}"#,
            r#"{"artifacts": [{"path": "vmlinuz", "sha256": "zz"}]}"#,
            r#"{"schema": 1, "artifacts": [{"path": "vmlinuz", "sha256": "zz"}]}"#,
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(Release::load(&p).is_err(), "{bad}");
        }
        // A valid manifest with an unknown field, another schema, or no schema.
        let good = std::fs::read(release(d.path(), "initrd.img")).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["kernel"]["extra"] = serde_json::json!(true);
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(Release::load(&p).unwrap_err().to_string().contains("extra"));
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v.as_object_mut().unwrap().remove("schema");
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(Release::load(&p)
            .unwrap_err()
            .to_string()
            .contains("cocos-hal older"));
    }

    /// The sealed copy keeps the checked bytes: rewriting the file in place, or
    /// writing to the copy, changes nothing QEMU would read.
    #[test]
    fn sealed_copies_cannot_change() {
        use std::io::{Seek, Write};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmlinuz");
        std::fs::write(&p, b"the released kernel").unwrap();
        let sha: [u8; 32] = Sha256::digest(b"the released kernel").into();
        let s = seal(&p, &sha).unwrap();
        // In place, same inode.
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all(b"an attacker's kernel").unwrap();
        let read_back = |file: &File| {
            let mut b = Vec::new();
            let mut c = file.try_clone().unwrap();
            c.rewind().unwrap();
            c.read_to_end(&mut b).unwrap();
            b
        };
        assert_eq!(read_back(&s.file), b"the released kernel");
        // Through /proc, as QEMU opens /dev/fd/N.
        use std::os::fd::AsRawFd;
        let again = std::fs::read(format!("/proc/self/fd/{}", s.file.as_raw_fd())).unwrap();
        assert_eq!(again, b"the released kernel");
        let mut w = s.file.try_clone().unwrap();
        assert!(w.write_all(b"x").is_err(), "a sealed memfd took a write");
        assert!(w.set_len(1).is_err(), "a sealed memfd was truncated");
        assert!(std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", s.file.as_raw_fd()))
            .and_then(|mut f| f.write_all(b"y"))
            .is_err());
        // And a file that does not match release.json is refused.
        assert!(matches!(seal(&p, &sha), Err(ReleaseError::Mismatch { .. })));
    }
}
