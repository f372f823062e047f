//! Getting the kernel: a bzImage path with its modules directory, or a Debian
//! linux-image package fetched with `apt-get download` into a cache and unpacked there
//! (never installed). The resolution (package, version, .deb SHA-256) is pinned in a
//! lock file beside the spec, as Cargo.lock does: a build with `locked` refuses when
//! the resolution would change, and [`update_lock`] refreshes it (Debian's mirror drops
//! old kernel versions).
//!
//! With `[kernel] debian_suite` (e.g. `"trixie"` on a bookworm host) every apt call
//! for the kernel runs under a private apt configuration in `<cache>/apt-<suite>/`
//! ([`Apt::Private`]): its own sources.list for that suite (verified with
//! debian-archive-keyring), package lists, state and cache, and none of the host's
//! apt.conf.d (only its proxy settings are carried over). The host's apt sources are
//! never touched. `apt-get update` runs there only when the lists are missing or when
//! [`update_lock`] (`cocos-hal lock`) refreshes them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::digest::sha256_hex;
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
    /// Kernel release (`6.12.57+deb13-amd64`).
    pub release: String,
    /// Where it came from, for release.json.
    pub source: serde_json::Value,
    /// The kernel's build configuration (`config-<release>` beside the image or in the
    /// package's /boot), if there is one: release.json records its TEE options.
    pub config: Option<PathBuf>,
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |e| KernelError::Layout(format!("{}: {e}", p.display()))
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, KernelError> {
    let tool = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| KernelError::Tool {
        tool: tool.clone(),
        msg: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // apt prints its errors as "E: …" lines, often followed by a summary line.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("E: ")).collect();
        let msg = if errors.is_empty() {
            stderr.lines().last().unwrap_or("no output").to_owned()
        } else {
            errors.join("; ")
        };
        return Err(KernelError::Tool { tool, msg });
    }
    Ok(out.stdout)
}

/// The Debian mirror a private apt configuration uses.
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// The keyring that verifies the suite's Release file (debian-archive-keyring; the
/// bookworm package already holds trixie's keys).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Host apt settings a private configuration keeps: how to reach the network.
const PROXY_KEYS: [&str; 4] = [
    "Acquire::http::Proxy",
    "Acquire::https::Proxy",
    "Acquire::http::Proxy-Auto-Detect",
    "Acquire::https::Proxy-Auto-Detect",
];

/// How apt is run for the kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apt {
    /// The system's apt configuration (its sources and package lists).
    System,
    /// A private apt configuration for one Debian suite, kept in `dir`
    /// (`<cache>/apt-<suite>`, absolute).
    Private {
        /// Debian suite (`trixie`).
        suite: String,
        /// Its directory.
        dir: PathBuf,
    },
}

impl Apt {
    /// The apt a spec's kernel package is fetched with, its private files under `cache`.
    pub fn for_spec(spec: &Spec, cache: &Path) -> Result<Self, KernelError> {
        let Some(suite) = &spec.kernel.debian_suite else {
            return Ok(Apt::System);
        };
        let dir = std::path::absolute(cache.join(format!("apt-{suite}"))).map_err(io_err(cache))?;
        Ok(Apt::Private {
            suite: suite.clone(),
            dir,
        })
    }

    /// A command for an apt tool (`apt-get`, `apt-cache`): for a private configuration
    /// with `APT_CONFIG` naming its apt.conf, which replaces the host's configuration.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        if let Apt::Private { dir, .. } = self {
            c.env("APT_CONFIG", dir.join("apt.conf"));
        }
        c
    }

    /// Whether the private package lists have been fetched (always true for the
    /// system's configuration, whose lists this tool never updates).
    pub fn has_lists(&self) -> bool {
        let Apt::Private { dir, .. } = self else {
            return true;
        };
        std::fs::read_dir(dir.join("lists"))
            .map(|d| {
                d.filter_map(Result::ok).any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.contains("_binary-amd64_Packages"))
                })
            })
            .unwrap_or(false)
    }

    /// Writes the private configuration and runs `apt-get update` in it when its lists
    /// are missing or `refresh` is set. Nothing to do for the system's configuration.
    pub fn prepare(&self, refresh: bool) -> Result<(), KernelError> {
        let Apt::Private { suite, dir } = self else {
            return Ok(());
        };
        if !Path::new(DEBIAN_KEYRING).is_file() {
            return Err(KernelError::Layout(format!(
                "{DEBIAN_KEYRING} is missing, so Debian {suite}'s Release file cannot be verified: apt-get install debian-archive-keyring"
            )));
        }
        for sub in [
            "apt.conf.d",
            "sources.list.d",
            "preferences.d",
            "lists/partial",
            "state",
            "cache/archives/partial",
        ] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let write = |name: &str, text: &str| -> Result<(), KernelError> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(io_err(&p))
        };
        write("sources.list", &sources_list(suite))?;
        let proxies = run(Command::new("apt-config").arg("dump").args(PROXY_KEYS))?;
        write(
            "apt.conf",
            &private_config(suite, dir, &String::from_utf8_lossy(&proxies))?,
        )?;
        if !dir.join("state/status").is_file() {
            write("state/status", "")?;
        }
        if refresh || !self.has_lists() {
            run(self.command("apt-get").args(["update", "-q"])).map_err(|e| {
                KernelError::Layout(format!(
                    "{e} (fetching Debian {suite}'s package lists from {DEBIAN_MIRROR} into {}: check network access, or http_proxy)",
                    dir.display()
                ))
            })?;
            if !self.has_lists() {
                return Err(KernelError::Layout(format!(
                    "apt-get update left no amd64 package list in {}: is {suite:?} a Debian suite on {DEBIAN_MIRROR}?",
                    dir.join("lists").display()
                )));
            }
        }
        Ok(())
    }
}

/// The private sources.list for a Debian suite (binary packages of main only).
pub fn sources_list(suite: &str) -> String {
    format!("deb [signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {suite} main\n")
}

/// The private apt.conf in `dir`: sources, lists, state and cache under `dir`, amd64
/// only, no translations, none of the host's apt.conf.d (read before this file would
/// be, so `Dir::Etc::Parts` points at an empty directory) except `proxies` (lines of
/// `apt-config dump` output). `APT::Sandbox::User "root"` keeps a root apt from
/// switching to `_apt`, which could not write into the cache; apt drops privileges only
/// when run as root, so it changes nothing otherwise. This tool serialises its own apt
/// calls with a lock file in the cache, hence `Debug::NoLocking`.
pub fn private_config(suite: &str, dir: &Path, proxies: &str) -> Result<String, KernelError> {
    let d = dir.display().to_string();
    if d.contains(['"', '\n']) {
        return Err(KernelError::Layout(format!(
            "{d:?}: apt cannot be configured with a path containing a quote or newline; use another --cache"
        )));
    }
    let mut t = format!(
        "// Written by cocos-hal: a private apt configuration for Debian {suite}'s kernel package.\n\
         // By hand: APT_CONFIG={d}/apt.conf apt-cache policy linux-image-amd64\n\
         Dir::Etc::Parts \"{d}/apt.conf.d\";\n\
         Dir::Etc::main \"/dev/null\";\n\
         Dir::Etc::SourceList \"{d}/sources.list\";\n\
         Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
         Dir::Etc::Preferences \"/dev/null\";\n\
         Dir::Etc::PreferencesParts \"{d}/preferences.d\";\n\
         Dir::State \"{d}/state\";\n\
         Dir::State::Lists \"{d}/lists\";\n\
         Dir::State::status \"{d}/state/status\";\n\
         Dir::Cache \"{d}/cache\";\n\
         APT::Architecture \"amd64\";\n\
         APT::Architectures {{ \"amd64\"; }};\n\
         Acquire::Languages \"none\";\n\
         APT::Sandbox::User \"root\";\n\
         Debug::NoLocking \"true\";\n"
    );
    for l in proxies.lines().filter(|l| l.starts_with("Acquire::")) {
        t.push_str(l);
        t.push('\n');
    }
    Ok(t)
}

/// An exclusive lock on a download cache, held while this process fetches, unpacks
/// or runs apt there (released on drop).
struct CacheLock {
    _file: File,
}

impl CacheLock {
    fn take(cache: &Path) -> Result<Self, KernelError> {
        std::fs::create_dir_all(cache).map_err(io_err(cache))?;
        let p = cache.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        f.lock().map_err(io_err(&p))?;
        Ok(Self { _file: f })
    }
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
pub fn candidate(apt: &Apt, package: &str) -> Result<(String, String), KernelError> {
    let show = run(apt
        .command("apt-cache")
        .args(["show", "--no-all-versions", package]))?;
    let show = String::from_utf8_lossy(&show);
    let field = |name: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let version = field("Version:")
        .ok_or_else(|| KernelError::Layout(format!("apt-cache has no version for {package}")))?;
    let depends = field("Depends:").unwrap_or_default();
    // linux-image-amd64 → "linux-image-6.12.57+deb13-amd64 (= 6.12.57-1)"
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
            return candidate(apt, name);
        }
    }
    Ok((package.to_owned(), version))
}

/// Re-resolves the spec's package (for a private suite after refreshing its package
/// lists) and rewrites the lock file; returns the new lock.
pub fn update_lock(spec: &Spec, cache: &Path) -> Result<Lock, KernelError> {
    let apt = Apt::for_spec(spec, cache)?;
    let _held = CacheLock::take(cache)?;
    apt.prepare(true)?;
    pin(spec, cache, &apt)
}

/// Resolves the spec's package with the lists at hand, downloads it and writes the
/// lock file. The caller holds the cache lock.
fn pin(spec: &Spec, cache: &Path, apt: &Apt) -> Result<Lock, KernelError> {
    let Some(pkg) = &spec.kernel.debian_package else {
        return Err(KernelError::Lock(
            "the spec's kernel is a path: there is nothing to lock".into(),
        ));
    };
    let (package, version) = candidate(apt, pkg)?;
    let deb = download(apt, &package, &version, cache)?;
    let lock = Lock {
        package,
        version,
        sha256: sha256_file(&deb)?,
    };
    write_lock(&lock_path(spec), &lock)?;
    Ok(lock)
}

fn sha256_file(p: &Path) -> Result<String, KernelError> {
    let d = std::fs::read(p).map_err(io_err(p))?;
    Ok(sha256_hex(&d))
}

/// Fetches `package=version` into `cache` (once): apt-get download runs in a scratch
/// directory and the .deb is renamed in when complete, so an interrupted download
/// never leaves a partial file under the final name.
fn download(apt: &Apt, package: &str, version: &str, cache: &Path) -> Result<PathBuf, KernelError> {
    std::fs::create_dir_all(cache).map_err(io_err(cache))?;
    let want = format!("{package}_{}_amd64.deb", version.replace(':', "%3a"));
    let path = cache.join(&want);
    if path.is_file() {
        return Ok(path);
    }
    let scratch = cache.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
    let fetched = run(apt
        .command("apt-get")
        .args(["download", "-q", &format!("{package}={version}")])
        .current_dir(&scratch))
    .map_err(|e| {
        KernelError::Layout(format!(
            "{e} (if the mirror no longer offers {package} {version}, run `cocos-hal lock` to pin what it offers now)"
        ))
    })
    .and_then(|_| {
        let got = scratch.join(&want);
        if !got.is_file() {
            return Err(KernelError::Layout(format!(
                "apt-get download did not produce {want} in {}",
                scratch.display()
            )));
        }
        std::fs::rename(&got, &path).map_err(io_err(&path))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    fetched.map(|()| path)
}

/// Whether `dest` holds the complete unpacking of the .deb with SHA-256 `sha256` (its
/// stamp records the digest checked before unpacking).
fn unpacked_from(dest: &Path, sha256: &str) -> bool {
    std::fs::read_to_string(dest.join(".unpacked")).is_ok_and(|s| s.trim() == sha256)
}

/// Unpacks a .deb, whose SHA-256 was checked to be `sha256`, into `dest`, replacing
/// whatever an interrupted or different unpacking left there. A merged-/usr package
/// (Debian 13: modules in usr/lib/modules) gets `lib -> usr/lib`, so `depmod -b dest`
/// finds its modules.
fn unpack(deb: &Path, dest: &Path, sha256: &str) -> Result<(), KernelError> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(io_err(dest))?;
    }
    std::fs::create_dir_all(dest).map_err(io_err(dest))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))?;
    let lib = dest.join("lib");
    if dest.join("usr/lib/modules").is_dir() && std::fs::symlink_metadata(&lib).is_err() {
        std::os::unix::fs::symlink("usr/lib", &lib).map_err(io_err(&lib))?;
    }
    let stamp = dest.join(".unpacked");
    std::fs::write(&stamp, format!("{sha256}\n")).map_err(io_err(&stamp))
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
        let config = image.with_file_name(format!("config-{release}"));
        return Ok(ResolvedKernel {
            image,
            modules_dir,
            config: (!release.is_empty() && config.is_file()).then_some(config),
            release,
            source: serde_json::json!({"file": p.file_name().and_then(|n| n.to_str()), "sha256": sha256_hex(&data)}),
        });
    }
    let Some(pkg) = &spec.kernel.debian_package else {
        return Err(KernelError::Layout("the spec names no kernel".into()));
    };
    let apt = Apt::for_spec(spec, cache)?;
    // A private apt lives in the cache: lock it from the start. The system's apt does
    // not, and nothing may be written to the cache before the --locked check.
    let mut held = match apt {
        Apt::Private { .. } => Some(CacheLock::take(cache)?),
        Apt::System => None,
    };
    apt.prepare(false)?;
    let lock_file = lock_path(spec);
    let lock = match read_lock(&lock_file)? {
        Some(l) => {
            if locked {
                let (package, version) = candidate(&apt, pkg)?;
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
        None => {
            if held.is_none() {
                held = Some(CacheLock::take(cache)?);
            }
            pin(spec, cache, &apt)?
        }
    };
    let _held = match held {
        Some(h) => h,
        None => CacheLock::take(cache)?,
    };
    let dest = cache.join(format!("{}_{}", lock.package, lock.version));
    // The .deb is hashed before it is unpacked; an unpacked tree is reused while its
    // stamp records the pinned digest (so a build does not re-hash 100 MB each time).
    if !unpacked_from(&dest, &lock.sha256) {
        let deb = download(&apt, &lock.package, &lock.version, cache)?;
        let sha = sha256_file(&deb)?;
        if sha != lock.sha256 {
            return Err(KernelError::Lock(format!(
                "{} has SHA-256 {sha} but {} pins {}: the mirror served different bytes; refusing it (delete the file to fetch it again, or run `cocos-hal lock` to pin the new bytes if they are legitimate)",
                deb.display(),
                lock_file.display(),
                lock.sha256
            )));
        }
        unpack(&deb, &dest, &lock.sha256)?;
    }
    let boot = dest.join("boot");
    let mut images: Vec<String> = std::fs::read_dir(&boot)
        .map_err(io_err(&boot))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    images.sort();
    let vmlinuz = match images.as_slice() {
        [one] => one.clone(),
        _ => {
            return Err(KernelError::Layout(format!(
                "{} holds {} kernels (boot/vmlinuz-*), expected one",
                dest.display(),
                images.len()
            )))
        }
    };
    let release = vmlinuz.trim_start_matches("vmlinuz-").to_owned();
    // Debian 13 ships modules in usr/lib/modules, Debian 12 in lib/modules.
    let modules_dir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|m| dest.join(m).join(&release))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| dest.join("lib/modules").join(&release));
    // The package ships no modules.dep (depmod makes it at install time): make it here.
    if !modules_dir.join("modules.dep").is_file() {
        run(Command::new("depmod").arg("-b").arg(&dest).arg(&release))?;
    }
    let config = boot.join(format!("config-{release}"));
    Ok(ResolvedKernel {
        image: boot.join(&vmlinuz),
        modules_dir: Some(modules_dir),
        config: config.is_file().then_some(config),
        release,
        source: match &spec.kernel.debian_suite {
            Some(suite) => {
                serde_json::json!({"debian_package": lock.package, "version": lock.version, "deb_sha256": lock.sha256, "debian_suite": suite})
            }
            None => {
                serde_json::json!({"debian_package": lock.package, "version": lock.version, "deb_sha256": lock.sha256})
            }
        },
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
        let k = cocos_testkit::debian_kernel();
        let name = cocos_testkit::kernel_release(&k);
        assert_eq!(kernel_release(&std::fs::read(&k).unwrap()), Some(name));
        assert_eq!(kernel_release(&[0u8; 100]), None);
    }

    fn spec_with(kernel: &str, dir: &Path) -> Spec {
        let text =
            format!("name = \"t\"\nversion = \"1\"\ncmdline = \"quiet\"\n[kernel]\n{kernel}\n");
        Spec::parse(&text, &dir.join("spec.toml")).unwrap()
    }

    #[test]
    fn private_apt_for_a_suite() {
        let d = tempfile::tempdir().unwrap();
        let s = spec_with(
            "debian_package = \"linux-image-amd64\"\ndebian_suite = \"trixie\"",
            d.path(),
        );
        let apt = Apt::for_spec(&s, &d.path().join("cache")).unwrap();
        let dir = d.path().join("cache/apt-trixie");
        assert_eq!(
            apt,
            Apt::Private {
                suite: "trixie".into(),
                dir: dir.clone()
            }
        );
        // A relative cache becomes absolute: apt-get download runs in another directory.
        let rel = Apt::for_spec(&s, Path::new("target/hal-cache")).unwrap();
        assert!(
            matches!(rel, Apt::Private { dir, .. } if dir.is_absolute() && dir.ends_with("target/hal-cache/apt-trixie"))
        );

        let cmd = apt.command("apt-get");
        assert_eq!(cmd.get_program(), "apt-get");
        let envs: Vec<_> = cmd.get_envs().collect();
        let conf = dir.join("apt.conf");
        assert_eq!(
            envs,
            [(std::ffi::OsStr::new("APT_CONFIG"), Some(conf.as_os_str()))]
        );
        assert_eq!(cmd.get_args().count(), 0);
        assert!(!apt.has_lists());
        std::fs::create_dir_all(dir.join("lists")).unwrap();
        std::fs::write(
            dir.join("lists/deb.debian.org_debian_dists_trixie_main_binary-amd64_Packages"),
            "",
        )
        .unwrap();
        assert!(apt.has_lists());

        assert_eq!(
            sources_list("trixie"),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n"
        );
        let proxies = "Acquire::http::Proxy \"http://proxy:3128\";\nnot a setting\n";
        let text = private_config("trixie", Path::new("/c/apt-trixie"), proxies).unwrap();
        for line in [
            "Dir::Etc::Parts \"/c/apt-trixie/apt.conf.d\";",
            "Dir::Etc::main \"/dev/null\";",
            "Dir::Etc::SourceList \"/c/apt-trixie/sources.list\";",
            "Dir::Etc::SourceParts \"/c/apt-trixie/sources.list.d\";",
            "Dir::Etc::PreferencesParts \"/c/apt-trixie/preferences.d\";",
            "Dir::State::Lists \"/c/apt-trixie/lists\";",
            "Dir::State::status \"/c/apt-trixie/state/status\";",
            "Dir::Cache \"/c/apt-trixie/cache\";",
            "APT::Architecture \"amd64\";",
            "APT::Sandbox::User \"root\";",
            "Debug::NoLocking \"true\";",
            "Acquire::http::Proxy \"http://proxy:3128\";",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("not a setting"));
        assert!(private_config("trixie", Path::new("/a\"b"), "").is_err());
    }

    #[test]
    fn system_apt_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let s = spec_with("debian_package = \"linux-image-amd64\"", d.path());
        let apt = Apt::for_spec(&s, &d.path().join("cache")).unwrap();
        assert_eq!(apt, Apt::System);
        let cmd = apt.command("apt-cache");
        assert_eq!(cmd.get_envs().count(), 0);
        assert!(apt.has_lists());
        apt.prepare(true).unwrap();
        assert!(!d.path().join("cache").exists());
    }

    /// apt itself reads the private apt.conf as intended: the private paths, and none
    /// of the host's apt.conf.d (no network needed).
    #[test]
    fn apt_reads_the_private_config() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("apt-trixie");
        std::fs::create_dir_all(dir.join("apt.conf.d")).unwrap();
        std::fs::write(
            dir.join("apt.conf"),
            private_config("trixie", &dir, "").unwrap(),
        )
        .unwrap();
        let apt = Apt::Private {
            suite: "trixie".into(),
            dir: dir.clone(),
        };
        let out = run(apt.command("apt-config").arg("dump")).unwrap();
        let dump = String::from_utf8(out).unwrap();
        let want = format!("Dir::Etc::SourceList \"{}/sources.list\";", dir.display());
        // apt-config prints keys as it stores them (Dir::Etc::sourcelist).
        assert!(
            dump.lines().any(|l| l.eq_ignore_ascii_case(&want)),
            "{dump}"
        );
        assert!(
            dump.lines().any(|l| l == "APT::Architectures:: \"amd64\";"),
            "{dump}"
        );
        // The host's apt.conf.d (Debian's 01autoremove sets APT::NeverAutoRemove) is not read.
        let host = run(Command::new("apt-config").arg("dump")).unwrap();
        if String::from_utf8_lossy(&host).contains("APT::NeverAutoRemove") {
            assert!(!dump.contains("APT::NeverAutoRemove"), "{dump}");
        }
    }

    #[test]
    fn path_kernel_finds_its_config() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("modules/6.12.0-test");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(d.path().join("vmlinuz-6.12.0-test"), b"kernel").unwrap();
        let s = spec_with(
            "path = \"vmlinuz-6.12.0-test\"\nmodules_dir = \"modules/6.12.0-test\"",
            d.path(),
        );
        let k = resolve(&s, &d.path().join("cache"), true).unwrap();
        assert_eq!(k.release, "6.12.0-test");
        assert_eq!(k.config, None);
        std::fs::write(d.path().join("config-6.12.0-test"), b"CONFIG_X=y\n").unwrap();
        let k = resolve(&s, &d.path().join("cache"), true).unwrap();
        assert_eq!(k.config, Some(d.path().join("config-6.12.0-test")));
    }

    #[test]
    fn unpacked_trees_name_their_deb() {
        let d = tempfile::tempdir().unwrap();
        assert!(!unpacked_from(d.path(), "ab"));
        std::fs::write(d.path().join(".unpacked"), "").unwrap();
        assert!(!unpacked_from(d.path(), "ab"));
        std::fs::write(d.path().join(".unpacked"), "ab\n").unwrap();
        assert!(unpacked_from(d.path(), "ab"));
        assert!(!unpacked_from(d.path(), "cd"));
    }

    #[test]
    fn cache_lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let held = CacheLock::take(d.path()).unwrap();
        let f = File::options()
            .write(true)
            .open(d.path().join(".lock"))
            .unwrap();
        assert!(matches!(
            f.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        f.try_lock().unwrap();
    }
}
