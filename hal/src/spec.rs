//! The image specification (`hal/cocos.toml`): what goes into a HAL image and which
//! measurements its release.json lists. Parsing refuses unknown keys, and
//! [`Spec::validate`] checks everything that can be checked before building (paths
//! inside the image root, duplicates, mtime range, compression, measurement matrix).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::compress::Compression;
use crate::cpio;

/// Errors in a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("cannot read spec {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key.
    #[error("spec {path}: {msg}")]
    Parse {
        /// Path.
        path: String,
        /// Parser message.
        msg: String,
    },
    /// A semantic problem.
    #[error("spec {path}: {msg}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong.
        msg: String,
    },
}

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// A bzImage on disk (with `modules_dir` for its modules).
    pub path: Option<PathBuf>,
    /// The kernel's modules directory (`/lib/modules/<version>`), with `path`.
    pub modules_dir: Option<PathBuf>,
    /// A Debian package (`linux-image-6.1.0-28-amd64`), fetched with apt-get download.
    pub debian_package: Option<String>,
    /// The Debian suite to take `debian_package` from (`trixie`) through a private apt
    /// configuration under the download cache; without it, the system's apt sources.
    pub debian_suite: Option<String>,
}

/// One extra file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Source on the build machine (relative to the spec's directory).
    pub src: PathBuf,
    /// Destination in the image.
    pub dest: String,
    /// Octal permission bits ("0644").
    pub mode: Option<String>,
}

impl FileSpec {
    /// The mode as permission bits (`None` when not given); an error names a mode that
    /// is not octal permission bits (at most 0o7777).
    pub fn mode_bits(&self) -> Result<Option<u32>, String> {
        match &self.mode {
            None => Ok(None),
            Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
                Ok(v) if v <= 0o7777 => Ok(Some(v)),
                _ => Err(format!(
                    "mode {m:?} is not octal permission bits like \"0644\""
                )),
            },
        }
    }
}

/// SEV-SNP measurement matrix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpMatrix {
    /// OVMF to measure with (must have SNP_KERNEL_HASHES to cover the kernel).
    pub firmware: PathBuf,
    /// vCPU counts.
    pub vcpus: Vec<u32>,
    /// vCPU type names (`cocos-measure vcpu-types`).
    pub vcpu_types: Vec<String>,
    /// Guest feature values (default `[0x1]`).
    #[serde(default = "default_features")]
    pub guest_features: Vec<u64>,
}

fn default_features() -> Vec<u64> {
    vec![1]
}

/// TDX measurements.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxSpec {
    /// TDVF firmware.
    pub firmware: PathBuf,
    /// Guest memory sizes (QEMU -m syntax) for RTMR1.
    #[serde(default = "default_memory")]
    pub memory: Vec<String>,
    /// The QEMU versions (`X.Y`) the release is measured for: which kernel bytes OVMF
    /// hashes depends on it. Default: 10.1, the first upstream QEMU with TDX.
    #[serde(default)]
    pub qemu_versions: Vec<String>,
}

fn default_memory() -> Vec<String> {
    vec!["2G".into()]
}

/// Measurements to list in release.json.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurements {
    /// SEV-SNP.
    pub snp: Option<SnpMatrix>,
    /// TDX.
    pub tdx: Option<TdxSpec>,
}

/// A HAL image spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// mtime of every archive entry (overridden by SOURCE_DATE_EPOCH).
    pub mtime: Option<u64>,
    /// gzip (default), zstd, xz or none.
    #[serde(default)]
    pub compression: Option<String>,
    /// Default kernel command line.
    pub cmdline: String,
    /// The kernel.
    pub kernel: KernelSpec,
    /// Modules to load at boot (closure added automatically).
    #[serde(default)]
    pub modules: Vec<String>,
    /// busybox-static binary (default /bin/busybox).
    pub busybox: Option<PathBuf>,
    /// The agent: "build" (compile cocos-agent from the workspace holding the spec,
    /// static and path-independent) or the path of a prebuilt static binary.
    pub agent: Option<String>,
    /// Extra files.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Measurements for release.json.
    #[serde(default)]
    pub measurements: Measurements,
    /// Directory the spec was read from (relative paths are resolved against it).
    #[serde(skip)]
    pub dir: PathBuf,
    /// The spec's path.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates spec text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let mut s: Spec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.display().to_string(),
            msg: e.message().to_owned(),
        })?;
        s.path = path.to_path_buf();
        s.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        s.validate()?;
        Ok(s)
    }

    fn invalid(&self, msg: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: self.path.display().to_string(),
            msg: msg.into(),
        }
    }

    /// A path from the spec, resolved against the spec's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The compression to use.
    pub fn compression(&self) -> Result<Compression, SpecError> {
        match &self.compression {
            None => Ok(Compression::Gzip),
            Some(c) => Compression::parse(c).ok_or_else(|| {
                self.invalid(format!(
                    "unknown compression {c:?} (gzip, zstd, xz or none)"
                ))
            }),
        }
    }

    /// The entry mtime: SOURCE_DATE_EPOCH if set, else the spec's, else 0.
    pub fn mtime(&self, source_date_epoch: Option<&str>) -> Result<u32, SpecError> {
        let (v, from) = match source_date_epoch {
            Some(s) => (
                s.trim().parse::<u64>().map_err(|_| {
                    self.invalid(format!(
                        "SOURCE_DATE_EPOCH {s:?} is not a number of seconds"
                    ))
                })?,
                "SOURCE_DATE_EPOCH",
            ),
            None => (self.mtime.unwrap_or(0), "mtime"),
        };
        u32::try_from(v).map_err(|_| {
            self.invalid(format!(
                "{from} {v} is out of range: cpio newc stores 32-bit times (0..=4294967295)"
            ))
        })
    }

    /// `measurements.tdx.qemu_versions`, parsed; empty: one launch whose QEMU version
    /// is not stated (the measurement then says what it assumed).
    pub fn tdx_qemu_versions(
        &self,
    ) -> Result<Vec<Option<cocos_measure::tdx_rules::QemuVersion>>, SpecError> {
        let Some(t) = &self.measurements.tdx else {
            return Ok(Vec::new());
        };
        if t.qemu_versions.is_empty() {
            return Ok(vec![None]);
        }
        t.qemu_versions
            .iter()
            .map(|q| {
                q.parse::<cocos_measure::tdx_rules::QemuVersion>()
                    .map(Some)
                    .map_err(|e| self.invalid(format!("measurements.tdx.qemu_versions: {e}")))
            })
            .collect()
    }

    /// Checks what can be checked without building.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            return Err(self.invalid("name and version must not be empty"));
        }
        self.compression()?;
        self.mtime(None)?;
        self.tdx_qemu_versions()?;
        let k = &self.kernel;
        match (&k.path, &k.debian_package) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "[kernel] takes either path (+ modules_dir) or debian_package, not both",
                ))
            }
            (None, None) => {
                return Err(self.invalid("[kernel] needs path (+ modules_dir) or debian_package"))
            }
            (Some(_), None) if k.modules_dir.is_none() && !self.modules.is_empty() => {
                return Err(self.invalid("[kernel] path needs modules_dir when modules are listed"))
            }
            _ => {}
        }
        if let Some(suite) = &k.debian_suite {
            if k.debian_package.is_none() {
                return Err(self.invalid("[kernel] debian_suite needs debian_package"));
            }
            let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
            if suite.is_empty() || !suite.chars().all(word) || suite.starts_with('-') {
                return Err(self.invalid(format!(
                    "[kernel] debian_suite {suite:?} is not a Debian suite name like \"trixie\" or \"trixie-backports\""
                )));
            }
        }
        let mut seen = BTreeSet::new();
        for reserved in [
            "init",
            "bin/busybox",
            "bin/cocos-agent",
            "dev/console",
            "etc/cocos/modules",
        ] {
            seen.insert(reserved.to_owned());
        }
        for f in &self.files {
            let c = cpio::components(&f.dest)
                .map_err(|e| self.invalid(format!("[[files]] dest: {e}")))?;
            let key = c.join("/");
            if key.starts_with("lib/modules/") || !seen.insert(key.clone()) {
                return Err(self.invalid(format!(
                    "[[files]] dest {:?} is given twice or is reserved by the builder",
                    f.dest
                )));
            }
            if let Err(e) = f.mode_bits() {
                return Err(self.invalid(format!("[[files]] {}: {e}", f.dest)));
            }
        }
        if let Some(snp) = &self.measurements.snp {
            if snp.vcpus.is_empty() || snp.vcpu_types.is_empty() || snp.guest_features.is_empty() {
                return Err(self.invalid(
                    "[measurements.snp] needs non-empty vcpus, vcpu_types and guest_features",
                ));
            }
            if snp.vcpus.iter().any(|&v| v == 0 || v > 512) {
                return Err(self.invalid("[measurements.snp] vcpus must be between 1 and 512"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "cocos-hal"
version = "0.1.0"
mtime = 1700000000
cmdline = "console=ttyS0"
modules = ["virtio_pci"]
[kernel]
debian_package = "linux-image-amd64"
[[files]]
src = "motd"
dest = "/etc/motd"
mode = "0644"
[measurements.snp]
firmware = "OVMF.fd"
vcpus = [1, 2]
vcpu_types = ["EPYC-Milan"]
"#;

    fn parse(t: &str) -> Result<Spec, SpecError> {
        Spec::parse(t, Path::new("/x/cocos.toml"))
    }

    #[test]
    fn good_spec() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.compression().unwrap(), Compression::Gzip);
        assert_eq!(s.mtime(None).unwrap(), 1_700_000_000);
        assert_eq!(s.mtime(Some("5")).unwrap(), 5);
        assert_eq!(s.measurements.snp.as_ref().unwrap().guest_features, vec![1]);
        assert_eq!(s.resolve(Path::new("motd")), PathBuf::from("/x/motd"));
        assert_eq!(s.kernel.debian_suite, None);
        let t = parse(&GOOD.replace(
            "debian_package = \"linux-image-amd64\"",
            "debian_package = \"linux-image-amd64\"\ndebian_suite = \"trixie\"",
        ))
        .unwrap();
        assert_eq!(t.kernel.debian_suite.as_deref(), Some("trixie"));
    }

    #[test]
    fn bad_specs() {
        for (edit, needle) in [
            (
                GOOD.replace("mtime = 1700000000", "mtime = 99999999999"),
                "out of range",
            ),
            (
                GOOD.replace("cmdline", "compression = \"lz4\"\ncmdline"),
                "unknown compression",
            ),
            (
                GOOD.replace("dest = \"/etc/motd\"", "dest = \"../etc/motd\""),
                "escape",
            ),
            (
                GOOD.replace("dest = \"/etc/motd\"", "dest = \"/init\""),
                "twice or is reserved",
            ),
            (GOOD.replace("mode = \"0644\"", "mode = \"rw\""), "octal"),
            (
                GOOD.replace("vcpus = [1, 2]", "vcpus = [0]"),
                "between 1 and 512",
            ),
            (GOOD.replace("name =", "nmae ="), "unknown field"),
            (
                GOOD.replace("debian_package = \"linux-image-amd64\"", ""),
                "needs path",
            ),
            (
                format!("{GOOD}\n[[files]]\nsrc = \"a\"\ndest = \"etc/motd\"\n"),
                "twice",
            ),
            (
                GOOD.replace(
                    "debian_package = \"linux-image-amd64\"",
                    "debian_package = \"linux-image-amd64\"\ndebian_suite = \"trixie main\"",
                ),
                "not a Debian suite",
            ),
            (
                GOOD.replace(
                    "debian_package = \"linux-image-amd64\"",
                    "path = \"vmlinuz\"\nmodules_dir = \"m\"\ndebian_suite = \"trixie\"",
                ),
                "debian_suite needs debian_package",
            ),
        ] {
            let e = parse(&edit).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(parse(GOOD).unwrap().mtime(Some("x")).is_err());
    }
}
