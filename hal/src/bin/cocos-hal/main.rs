//! `cocos-hal`: the command line over the `cocos_hal` library. Today: `inspect`, which
//! lists an initramfs or diffs two (`build` follows). Errors are one line on stderr
//! with exit code 2; `inspect A B` exits 1 when the images differ, like diff(1).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cocos_hal::inspect::{self, Image};

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
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            let rendered = e.render().to_string();
            let msg: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let msg = msg.join(" ");
            eprintln!(
                "cocos-hal: error: {} (see --help)",
                msg.strip_prefix("error: ").unwrap_or(&msg)
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cocos-hal: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
