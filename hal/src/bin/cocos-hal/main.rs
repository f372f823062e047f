//! `cocos-hal`: the command line over the `cocos_hal` library: `build` (kernel +
//! initramfs + release.json from a spec), `release` (release.json for a kernel and
//! initramfs built elsewhere), `lock` (pin the spec's kernel package), `kernel`
//! (fetch the pinned kernel and say where it is), and `inspect` (list an initramfs or
//! diff two). Errors are one line on stderr with exit code 2; `inspect A B` exits 1
//! when the images differ, like diff(1).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cocos_hal::build::{self, BuildOptions};
use cocos_hal::inspect::{self, Image};
use cocos_hal::kernel;
use cocos_hal::modules::ModuleIndex;
use cocos_hal::published::PublishOptions;
use cocos_hal::spec::Spec;
use cocos_measure::reference::cocos::SnpProduct;

#[derive(Parser)]
#[command(
    name = "cocos-hal",
    version,
    about = "Reproducible HAL images for confidential VMs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build kernel, initramfs and release.json from a spec into an output directory
    Build {
        /// The image spec
        #[arg(long, default_value = "hal/cocos.toml")]
        spec: PathBuf,
        /// Output directory (written only when the whole build succeeds)
        #[arg(long)]
        out: PathBuf,
        /// Download cache for kernel packages
        #[arg(long, default_value = "target/hal-cache")]
        cache: PathBuf,
        /// Refuse to build if the kernel package would resolve differently from the lock file
        #[arg(long)]
        locked: bool,
        /// Print release.json on stdout
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Resolve the spec's Debian kernel package again and rewrite its lock file
    Lock {
        /// The image spec
        #[arg(long, default_value = "hal/cocos.toml")]
        spec: PathBuf,
        /// Download cache for kernel packages
        #[arg(long, default_value = "target/hal-cache")]
        cache: PathBuf,
    },
    /// Resolve and fetch the spec's kernel (as `build` does) and print its bzImage,
    /// release, modules directory and TEE support; also links CACHE/kernel/{vmlinuz,
    /// modules,config} to them, so tests find the pinned kernel at a fixed path
    Kernel {
        /// The image spec
        #[arg(long, default_value = "hal/cocos.toml")]
        spec: PathBuf,
        /// Download cache for kernel packages
        #[arg(long, default_value = "target/hal-cache")]
        cache: PathBuf,
        /// Refuse if the kernel package would resolve differently from the lock file
        #[arg(long)]
        locked: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Write release.json for a kernel and initramfs built elsewhere (e.g. by buildroot:
    /// board/cocos/post-image.sh), with the spec's command line and measurement matrix;
    /// both files must be in the directory of --out
    Release {
        /// The image spec (command line, measurements)
        #[arg(long, default_value = "hal/cocos.toml")]
        spec: PathBuf,
        /// The bzImage
        #[arg(long)]
        kernel: PathBuf,
        /// The initramfs (gzip, zstd, xz or uncompressed newc cpio)
        #[arg(long)]
        initrd: PathBuf,
        /// Where to write release.json
        #[arg(long)]
        out: PathBuf,
        /// What built the files (recorded as the kernel's source)
        #[arg(long, default_value = "external")]
        built_by: String,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// List an initramfs (path, type, mode, size, SHA-256), or diff two field by field
    Inspect {
        /// Initramfs (gzip, zstd, xz or uncompressed newc cpio)
        image: PathBuf,
        /// A second image to compare with the first
        other: Option<PathBuf>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Docs(cocos_measure::cli_error::DocsCmd),
}

/// Keys and host facts for what is published beside release.json.
#[derive(clap::Args)]
struct PublishArgs {
    /// Sign release.<tee>.corim as COSE_Sign1 with this EC key (P-384: ES384, P-256: ES256; mode 0600)
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,
    /// Signer name in the signed CoRIM's metadata
    #[arg(long, default_value = "cocos-rs release")]
    signer: String,
    /// Write a signed SEV-SNP ID block per SNP matrix entry (EC P-384 key, mode 0600)
    #[arg(long, value_name = "KEY.pem")]
    id_key: Option<PathBuf>,
    /// Author key that signs the ID key (EC P-384, mode 0600)
    #[arg(long, value_name = "KEY.pem", requires = "id_key")]
    author_key: Option<PathBuf>,
    /// AMD product line of the hosts, for the cocos SNP policy (milan, genoa, turin)
    #[arg(long, default_value = "milan", value_parser = parse_product)]
    product: SnpProduct,
}

fn parse_product(s: &str) -> Result<SnpProduct, String> {
    SnpProduct::parse(s).ok_or_else(|| format!("{s}: expected milan, genoa or turin"))
}

impl PublishArgs {
    fn load(self) -> Result<PublishOptions> {
        Ok(PublishOptions::load(
            self.sign_key,
            self.signer,
            self.id_key,
            self.author_key,
            Some(self.product),
        )?)
    }
}

/// Largest image file accepted (compressed).
const MAX_IMAGE: u64 = 2 << 30;

fn load(path: &Path) -> Result<Image> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a file", path.display());
    }
    if meta.len() > MAX_IMAGE {
        anyhow::bail!(
            "{}: {} bytes is larger than any initramfs this tool handles (2 GiB)",
            path.display(),
            meta.len()
        );
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    inspect::open(&data).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Points `dir/<name>` at each target (atomically: a new link renamed over the old);
/// a name without a target loses its link.
fn link_kernel(dir: &Path, links: &[(&str, Option<&PathBuf>)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, target) in links {
        let link = dir.join(name);
        match target {
            Some(t) => {
                let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(t, &tmp)
                    .and_then(|()| std::fs::rename(&tmp, &link))
                    .with_context(|| {
                        format!("cannot link {} to {}", link.display(), t.display())
                    })?;
            }
            None => match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", link.display()))
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// Writes the output in one go; a closed pipe (`| head`) is not an error.
fn emit(out: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut out = String::new();
    let code = run_into(cli, &mut out)?;
    emit(&out)?;
    Ok(code)
}

fn run_into(cli: Cli, out: &mut String) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Build {
            spec,
            out: dir,
            cache,
            locked,
            json,
            publish,
        } => {
            let spec = Spec::load(&spec)?;
            let opts = BuildOptions {
                out: dir,
                cache,
                locked,
                source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
                publish: std::sync::Arc::new(publish.load()?),
            };
            let r = build::build(&spec, &opts)?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::to_value(&r.release)?)?
                )?;
            } else {
                for a in &r.release.artifacts {
                    writeln!(
                        out,
                        "{}/{}  {} bytes  sha256 {}",
                        r.out.display(),
                        a.path,
                        a.size,
                        a.sha256
                    )?;
                }
                writeln!(out, "{}/release.json", r.out.display())?;
                for name in &r.published {
                    writeln!(out, "{}/{name}", r.out.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Release {
            spec,
            kernel,
            initrd,
            out: dest,
            built_by,
            publish,
        } => {
            let spec = Spec::load(&spec)?;
            let publish = publish.load()?;
            let dir = dest
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let dir = dir
                .canonicalize()
                .with_context(|| format!("{}", dir.display()))?;
            let name_in_dir = |p: &Path| -> Result<String> {
                let c = p
                    .canonicalize()
                    .with_context(|| format!("cannot read {}", p.display()))?;
                if c.parent() != Some(dir.as_path()) {
                    anyhow::bail!(
                        "{} must be in {} (release.json names files beside it)",
                        p.display(),
                        dir.display()
                    );
                }
                Ok(c.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned())
            };
            let (kname, iname) = (name_in_dir(&kernel)?, name_in_dir(&initrd)?);
            let kbytes = std::fs::read(&kernel)
                .with_context(|| format!("cannot read {}", kernel.display()))?;
            let ibytes = std::fs::read(&initrd)
                .with_context(|| format!("cannot read {}", initrd.display()))?;
            let release = kernel::kernel_release(&kbytes).with_context(|| {
                format!("{}: not a bzImage with a version string", kernel.display())
            })?;
            let compression = cocos_hal::compress::detect(&ibytes);
            // As `build` does: a bad SOURCE_DATE_EPOCH is an error, not 0.
            let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) => spec.mtime(Some(&v))?,
                Err(_) => 0,
            };
            let k = kernel::ResolvedKernel {
                image: kernel.clone(),
                modules_dir: None,
                release,
                source: serde_json::json!({"built_by": built_by}),
                config: None,
            };
            let v = cocos_hal::release::manifest(
                &spec,
                &k,
                &[],
                compression,
                mtime,
                (&kname, &kbytes),
                (&iname, &ibytes),
            )?;
            let text = cocos_hal::release::to_bytes(&v)?;
            let published = cocos_hal::published::files(&v, &publish)?;
            let write = |to: &Path, bytes: &[u8]| -> Result<()> {
                let tmp = to.with_extension("tmp");
                std::fs::write(&tmp, bytes)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                std::fs::rename(&tmp, to).with_context(|| format!("cannot write {}", to.display()))
            };
            for (name, bytes) in &published {
                write(&dir.join(name), bytes)?;
            }
            write(&dest, &text)?;
            writeln!(out, "{}", dest.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lock { spec, cache } => {
            let spec = Spec::load(&spec)?;
            let lock = kernel::update_lock(&spec, &cache)?;
            writeln!(
                out,
                "{}: {} {} sha256 {}",
                kernel::lock_path(&spec).display(),
                lock.package,
                lock.version,
                lock.sha256
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kernel {
            spec,
            cache,
            locked,
            json,
        } => {
            let spec = Spec::load(&spec)?;
            let k = kernel::resolve(&spec, &cache, locked)?;
            let modules = match &k.modules_dir {
                Some(dir) if !spec.modules.is_empty() => {
                    ModuleIndex::load(dir)?.closure(&spec.modules)?
                }
                _ => Vec::new(),
            };
            let tee = cocos_hal::tee::record(&k, &modules)?;
            for w in tee
                .get("warnings")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
            {
                build::warn(w);
            }
            let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let image = abs(&k.image);
            let modules_dir = k.modules_dir.as_deref().map(abs);
            let config = k.config.as_deref().map(abs);
            let links = abs(&cache.join("kernel"));
            link_kernel(
                &links,
                &[
                    ("vmlinuz", Some(&image)),
                    ("modules", modules_dir.as_ref()),
                    ("config", config.as_ref()),
                ],
            )?;
            if json {
                let v = serde_json::json!({
                    "image": image,
                    "release": k.release,
                    "modules_dir": modules_dir,
                    "config": config,
                    "source": k.source,
                    "modules": modules.iter().map(|m| &m.name).collect::<Vec<_>>(),
                    "tee": tee,
                    "links": links,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let show =
                    |p: Option<&PathBuf>| p.map_or("-".to_owned(), |p| p.display().to_string());
                let have: Vec<&str> = [
                    "snp_guest",
                    "tdx_guest",
                    "tsm_reports",
                    "vsock",
                    "efi_stub_measures_tdx",
                ]
                .into_iter()
                .filter(|f| tee.get(*f) == Some(&serde_json::Value::Bool(true)))
                .collect();
                writeln!(out, "image    {}", image.display())?;
                writeln!(out, "release  {}", k.release)?;
                writeln!(out, "modules  {}", show(modules_dir.as_ref()))?;
                writeln!(out, "config   {}", show(config.as_ref()))?;
                writeln!(
                    out,
                    "tee      {}",
                    if tee.get("config").is_some_and(serde_json::Value::is_null) {
                        "unknown (no kernel config)".to_owned()
                    } else if have.is_empty() {
                        "none".to_owned()
                    } else {
                        have.join(" ")
                    }
                )?;
                writeln!(
                    out,
                    "links    {}/{{vmlinuz,modules,config}}",
                    links.display()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Docs(d) => {
            d.run(<Cli as clap::CommandFactory>::command())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inspect { image, other, json } => {
            let a = load(&image)?;
            let Some(other) = other else {
                if json {
                    let v = serde_json::json!({"image": image, "compression": a.compression, "entries": a.entries});
                    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                } else {
                    writeln!(
                        out,
                        "{}: {:?}, {} entries",
                        image.display(),
                        a.compression,
                        a.entries.len()
                    )?;
                    for e in &a.entries {
                        writeln!(
                            out,
                            "{:<7} {} {:>10} {:<64} {}{}",
                            e.kind,
                            e.mode,
                            e.size,
                            e.sha256.as_deref().unwrap_or("-"),
                            e.path,
                            e.target
                                .as_ref()
                                .map(|t| format!(" -> {t}"))
                                .unwrap_or_default()
                        )?;
                    }
                }
                return Ok(ExitCode::SUCCESS);
            };
            let b = load(&other)?;
            let diffs = inspect::diff(&a, &b);
            if json {
                let v = serde_json::json!({"first": image, "second": other, "identical": diffs.is_empty(), "differences": diffs});
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else if diffs.is_empty() {
                writeln!(out, "identical: {} entries", a.entries.len())?;
            } else {
                for d in &diffs {
                    writeln!(out, "{:<16} {}: {} | {}", d.what, d.path, d.first, d.second)?;
                }
                writeln!(out, "{} differences", diffs.len())?;
            }
            Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if cocos_measure::cli_error::is_help(&e) => e.exit(),
        Err(e) => {
            eprintln!(
                "cocos-hal: error: {} (see --help)",
                cocos_measure::cli_error::one_line(&e)
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            cocos_measure::cli_error::report("cocos-hal", e.as_ref());
            ExitCode::from(2)
        }
    }
}
