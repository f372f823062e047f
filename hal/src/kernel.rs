//! Getting the kernel: a bzImage path with its modules directory, or a Debian
//! linux-image package fetched with `apt-get download` into a cache and unpacked there
//! (never installed). The resolution (package, version, .deb SHA-256) is pinned in a
//! lock file beside the spec, as Cargo.lock does: a build with `locked` refuses when
//! the resolution would change, and [`update_lock`] refreshes it (Debian's mirror drops
//! old kernel versions).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::sha256_hex;
use crate::spec::Spec;

/// Errors getting the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A tool failed.
    #[error("{tool} failed: {msg}")]
    Tool {
        /// Command.
        tool: String,
        /// Its stderr or the OS error.
        msg: String,
    },
    /// The lock file disagrees or is missing.
    #[error("{0}")]
    Lock(String),
    /// Something in the package or on disk is not as expected.
    #[error("{0}")]
    Layout(String),
}

/// The lock file: what `debian_package` resolved to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Concrete package name (metapackages resolved).
    pub package: String,
    /// Debian version.
    pub version: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
}

/// Where the kernel and its modules are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedKernel {
    /// The bzImage.
    pub image: PathBuf,
    /// `/lib/modules/<version>`-style directory (None if no modules are needed).
    pub modules_dir: Option<PathBuf>,
    /// Kernel release (`6.1.0-28-amd64`).
    pub release: String,
    /// Where it came from, for release.json.
    pub source: serde_json::Value,
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, KernelError> {
    let tool = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| KernelError::Tool {
        tool: tool.clone(),
        msg: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(KernelError::Tool {
            tool,
            msg: String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
                .to_owned(),
        });
    }
    Ok(out.stdout)
}

/// The lock file's path for a spec (`cocos.toml` → `cocos.lock`).
pub fn lock_path(spec: &Spec) -> PathBuf {
    spec.path.with_extension("lock")
}

fn read_lock(path: &Path) -> Result<Option<Lock>, KernelError> {
    match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t)
            .map(Some)
            .map_err(|e| KernelError::Lock(format!("{}: {}", path.display(), e.message()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KernelError::Lock(format!("{}: {e}", path.display()))),
    }
}

fn write_lock(path: &Path, lock: &Lock) -> Result<(), KernelError> {
    let body = toml::to_string(lock).map_err(|e| KernelError::Lock(e.to_string()))?;
    let text = format!(
        "# Written by `cocos-hal lock`; pins the kernel package the spec resolves to.\n{body}"
    );
    std::fs::write(path, text).map_err(|e| KernelError::Lock(format!("{}: {e}", path.display())))
}

/// Resolves a package name to (concrete package, candidate version) with apt-cache,
/// following a linux-image metapackage to the image it depends on.
pub fn candidate(package: &str) -> Result<(String, String), KernelError> {
    let show = run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))?;
    let show = String::from_utf8_lossy(&show);
    let field = |name: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let version = field("Version:")
        .ok_or_else(|| KernelError::Layout(format!("apt-cache has no version for {package}")))?;
    let depends = field("Depends:").unwrap_or_default();
    // linux-image-amd64 → "linux-image-6.1.0-28-amd64 (= 6.1.119-1)"
    if let Some(dep) = depends
        .split(',')
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-") && d.contains("(= "))
    {
        let name = dep.split_whitespace().next().unwrap_or(dep);
        let concrete = package
            .strip_prefix("linux-image-")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        if name != package && !concrete {
            return candidate(name);
        }
    }
    Ok((package.to_owned(), version))
}

/// Re-resolves the spec's package and rewrites the lock file; returns the new lock.
pub fn update_lock(spec: &Spec, cache: &Path) -> Result<Lock, KernelError> {
    let Some(pkg) = &spec.kernel.debian_package else {
        return Err(KernelError::Lock(
            "the spec's kernel is a path: there is nothing to lock".into(),
        ));
    };
    let (package, version) = candidate(pkg)?;
    let deb = download(&package, &version, cache)?;
    let lock = Lock {
        package,
        version,
        sha256: sha256_file(&deb)?,
    };
    write_lock(&lock_path(spec), &lock)?;
    Ok(lock)
}

fn sha256_file(p: &Path) -> Result<String, KernelError> {
    let d = std::fs::read(p).map_err(|e| KernelError::Layout(format!("{}: {e}", p.display())))?;
    Ok(sha256_hex(&d))
}

fn download(package: &str, version: &str, cache: &Path) -> Result<PathBuf, KernelError> {
    std::fs::create_dir_all(cache)
        .map_err(|e| KernelError::Layout(format!("{}: {e}", cache.display())))?;
    let want = format!("{package}_{}_amd64.deb", version.replace(':', "%3a"));
    let path = cache.join(&want);
    if !path.is_file() {
        run(Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(cache))?;
    }
    if !path.is_file() {
        return Err(KernelError::Layout(format!(
            "apt-get download did not produce {want} in {}",
            cache.display()
        )));
    }
    Ok(path)
}

/// Unpacks a .deb into `dest` (once).
fn unpack(deb: &Path, dest: &Path) -> Result<(), KernelError> {
    let stamp = dest.join(".unpacked");
    if stamp.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| KernelError::Layout(format!("{}: {e}", dest.display())))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))?;
    std::fs::write(&stamp, b"")
        .map_err(|e| KernelError::Layout(format!("{}: {e}", stamp.display())))
}

/// Finds the kernel for a spec, downloading and unpacking a Debian package if needed.
pub fn resolve(spec: &Spec, cache: &Path, locked: bool) -> Result<ResolvedKernel, KernelError> {
    if let Some(p) = &spec.kernel.path {
        let image = spec.resolve(p);
        let data = std::fs::read(&image)
            .map_err(|e| KernelError::Layout(format!("kernel {}: {e}", image.display())))?;
        let modules_dir = spec.kernel.modules_dir.as_ref().map(|m| spec.resolve(m));
        let release = match &modules_dir {
            Some(m) => m
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_owned(),
            None => kernel_release(&data).unwrap_or_default(),
        };
        return Ok(ResolvedKernel {
            image,
            modules_dir,
            release,
            source: serde_json::json!({"file": p.file_name().and_then(|n| n.to_str()), "sha256": sha256_hex(&data)}),
        });
    }
    let Some(pkg) = &spec.kernel.debian_package else {
        return Err(KernelError::Layout("the spec names no kernel".into()));
    };
    let lock_file = lock_path(spec);
    let lock = match read_lock(&lock_file)? {
        Some(l) => {
            if locked {
                let (package, version) = candidate(pkg)?;
                if (package.as_str(), version.as_str()) != (l.package.as_str(), l.version.as_str())
                {
                    return Err(KernelError::Lock(format!(
                        "--locked: {} pins {} {} but {pkg} now resolves to {package} {version}; run `cocos-hal lock` to update it",
                        lock_file.display(),
                        l.package,
                        l.version
                    )));
                }
            }
            l
        }
        None if locked => {
            return Err(KernelError::Lock(format!(
                "--locked: {} does not exist; run `cocos-hal lock` first",
                lock_file.display()
            )))
        }
        None => update_lock(spec, cache)?,
    };
    let deb = download(&lock.package, &lock.version, cache)?;
    let sha = sha256_file(&deb)?;
    if sha != lock.sha256 {
        return Err(KernelError::Lock(format!(
            "{} has SHA-256 {sha} but {} pins {}: the mirror served different bytes",
            deb.display(),
            lock_file.display(),
            lock.sha256
        )));
    }
    let dest = cache.join(format!("{}_{}", lock.package, lock.version));
    unpack(&deb, &dest)?;
    let boot = dest.join("boot");
    let mut images: Vec<String> = std::fs::read_dir(&boot)
        .map_err(|e| KernelError::Layout(format!("{}: {e}", boot.display())))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    images.sort();
    let vmlinuz = match images.as_slice() {
        [one] => format!("boot/{one}"),
        _ => {
            return Err(KernelError::Layout(format!(
                "{} holds {} kernels (boot/vmlinuz-*), expected one",
                deb.display(),
                images.len()
            )))
        }
    };
    let release = vmlinuz.trim_start_matches("boot/vmlinuz-").to_owned();
    // The package ships no modules.dep (depmod makes it at install time): make it here.
    if !dest
        .join("lib/modules")
        .join(&release)
        .join("modules.dep")
        .is_file()
    {
        run(Command::new("depmod").arg("-b").arg(&dest).arg(&release))?;
    }
    Ok(ResolvedKernel {
        image: dest.join(vmlinuz),
        modules_dir: Some(dest.join("lib/modules").join(&release)),
        release,
        source: serde_json::json!({"debian_package": lock.package, "version": lock.version, "deb_sha256": lock.sha256}),
    })
}

/// The kernel release from a bzImage's version string ("6.1.0-28-amd64 (…) #1 …").
pub fn kernel_release(bzimage: &[u8]) -> Option<String> {
    let version = cocos_measure::bzimage::SetupHeader::parse(bzimage)
        .ok()?
        .version?;
    version.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_from_debian_kernel() {
        let k = std::fs::read_dir("/boot")
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("vmlinuz-")
            })
            .expect("no /boot/vmlinuz-*: run scripts/setup.sh");
        let name = k
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("vmlinuz-")
            .to_owned();
        assert_eq!(kernel_release(&std::fs::read(&k).unwrap()), Some(name));
        assert_eq!(kernel_release(&[0u8; 100]), None);
    }
}
