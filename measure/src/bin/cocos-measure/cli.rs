//! The command line: `cocos-measure`'s top-level parser, its subcommands and the
//! arguments they share, the argparse-compatible `--append` check, and dispatch.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};

use cocos_measure::cpu::VCPU_TYPES;
use cocos_measure::VmmType;

use crate::commands::*;
use crate::pyint::*;

pub(crate) const ABOUT: &str =
    "Compute AMD SEV / SEV-ES / SEV-SNP launch digests and Intel TDX MRTD / RTMR0-2 of \
QEMU + OVMF guests, bit-exact with what the hardware reports.";

pub(crate) const AFTER_HELP: &str = "\
Without a subcommand, cocos-measure accepts sev-snp-measure's flags and prints the digest alone:
  cocos-measure --mode snp --vcpus 4 --vcpu-type EPYC-Milan --ovmf OVMF.fd \\
      --kernel vmlinuz --initrd initrd.img --append 'console=ttyS0'
Subcommands give labelled or JSON output, matrices and firmware inspection:
  cocos-measure inspect --ovmf /usr/share/ovmf/OVMF.fd
  cocos-measure snp --ovmf OVMF.fd --vcpus 4 --vcpu-type EPYC-Genoa --json
  cocos-measure matrix --ovmf OVMF.fd --vcpus 1,2,4 --vcpu-types EPYC-Milan,EPYC-Genoa \\
      --guest-features 0x1,0x21 --json
  cocos-measure tdx --firmware OVMF.inteltdx.fd --kernel vmlinuz --initrd initrd.img \\
      --append='console=ttyS0' --qemu-version 10.1 --events
Reference values for verifiers (CoRIM, cocos policy) and SNP ID blocks:
  cocos-measure reference-values release.json --tee snp --sign-key release.pem -o release.snp.corim
  cocos-measure id-block --measurement HEX --id-key id.pem --author-key author.pem
Errors are one line on stderr with exit code 2.";

#[derive(Parser)]
#[command(
    name = "cocos-measure",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Option<Cmd>,
    #[command(flatten)]
    pub(crate) compat: Compat,
}

pub(crate) fn vcpu_type_names() -> Vec<&'static str> {
    VCPU_TYPES.iter().map(|t| t.0).collect()
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// SEV-SNP launch digest
    Snp(SnpCmd),
    /// SEV-ES launch digest
    Seves(SevesCmd),
    /// SEV launch digest
    Sev(SevCmd),
    /// SEV-SNP digests for every combination of vCPU counts, vCPU types and guest features
    Matrix(MatrixCmd),
    /// Show which launch types a firmware supports, the sections it declares, and why not
    Inspect(InspectCmd),
    /// List the known vCPU types and their CPUID signatures
    VcpuTypes(JsonFlag),
    /// TDX MRTD and RTMR0-2 for QEMU direct kernel boot (--events: expected event log)
    Tdx(Box<crate::commands::tdx::TdxCmd>),
    /// Verify attestation evidence against AMD's chain and the expected launch (exit 0 verified, 1 not, 2 unusable input)
    #[command(subcommand)]
    Verify(crate::commands::verify::VerifyCmd),
    /// Reference values for verifiers: CoRIM (signed with --sign-key), cocos policy JSON, or JSON
    ReferenceValues(Box<crate::commands::reference::ReferenceCmd>),
    /// A signed SEV-SNP ID block for one launch digest (QEMU's id-block/id-auth)
    IdBlock(crate::commands::reference::IdBlockCmd),
    #[command(flatten)]
    Docs(cocos_measure::cli_error::DocsCmd),
}

#[derive(Args)]
pub(crate) struct JsonFlag {
    /// JSON output
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct BootArgs {
    /// OVMF firmware image
    #[arg(long, value_name = "FILE")]
    pub(crate) ovmf: PathBuf,
    /// Kernel passed to QEMU with -kernel (measured through kernel-hashes=on)
    #[arg(long, value_name = "FILE")]
    pub(crate) kernel: Option<PathBuf>,
    /// Initrd passed with -initrd
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub(crate) initrd: Option<PathBuf>,
    /// Kernel command line passed with -append (one that starts with `-`: --append=VALUE)
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    pub(crate) append: Option<String>,
}

#[derive(Args)]
pub(crate) struct VcpuArgs {
    /// vCPU model (see `cocos-measure vcpu-types`; case-insensitive)
    #[arg(long, value_name = "TYPE", group = "cpu")]
    pub(crate) vcpu_type: Option<String>,
    /// vCPU signature (CPUID Fn0000_0001_EAX)
    #[arg(long, value_name = "SIG", group = "cpu", value_parser = parse_u64_auto)]
    pub(crate) vcpu_sig: Option<u64>,
    /// vCPU family (with --vcpu-model and --vcpu-stepping)
    #[arg(long, group = "cpu", requires_all = ["vcpu_model", "vcpu_stepping"], value_parser = parse_u64_auto)]
    pub(crate) vcpu_family: Option<u64>,
    /// vCPU model number
    #[arg(long, requires = "vcpu_family", value_parser = parse_u64_auto)]
    pub(crate) vcpu_model: Option<u64>,
    /// vCPU stepping
    #[arg(long, requires = "vcpu_family", value_parser = parse_u64_auto)]
    pub(crate) vcpu_stepping: Option<u64>,
    /// VMM that builds the VMSAs: QEMU, ec2 or gce
    #[arg(long, value_name = "VMM", default_value = "QEMU", value_parser = parse_vmm)]
    pub(crate) vmm_type: VmmType,
}

/// Treats an empty path as absent, as sev-snp-measure's truthiness checks do.
pub(crate) fn present(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// Whether Python's argparse (sev-snp-measure's parser) would take `arg`, following an
/// option that expects a value, as that value rather than as another option
/// (`argparse.ArgumentParser._parse_optional`): anything not starting with '-', a lone
/// "-", a negative number, or a string containing a space.
pub(crate) fn argparse_takes_as_value(arg: &str) -> bool {
    // argparse's `_negative_number_matcher`: `^-\d+$|^-\d*\.\d+$`.
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    let negative_number = arg
        .strip_prefix('-')
        .is_some_and(|n| match n.split_once('.') {
            None => digits(n),
            Some((a, b)) => (a.is_empty() || digits(a)) && digits(b),
        });
    !arg.starts_with('-') || arg == "-" || negative_number || arg.contains(' ')
}

/// Refuses `--append VALUE` where VALUE looks like an option (`--append --json`): a
/// typo would otherwise be measured as the command line. sev-snp-measure's argparse
/// refuses the same; `--append=VALUE` says it is meant.
pub(crate) fn check_append_values(args: &[std::ffi::OsString]) -> Result<()> {
    for w in args.windows(2) {
        let [flag, value] = w else { continue };
        if flag.to_str() != Some("--append") {
            continue;
        }
        let value = value.to_string_lossy();
        if !argparse_takes_as_value(&value) {
            bail!(
                "--append {value:?}: the value starts with '-' and looks like an option (sev-snp-measure refuses it too); write --append={value} if this is the command line"
            );
        }
    }
    Ok(())
}

/// Entry point: parses arguments and runs; the exit code on success (0, or 1 when
/// `verify` finds evidence that does not match).
pub fn run() -> Result<u8> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    check_append_values(&args)?;
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if cocos_measure::cli_error::is_help(&e) => e.exit(),
        Err(e) => bail!("{} (see --help)", cocos_measure::cli_error::one_line(&e)),
    };
    let tdx = matches!(cli.cmd, Some(Cmd::Tdx(_)));
    if let Some(Cmd::Verify(v)) = cli.cmd {
        return crate::commands::verify::run_verify(v);
    }
    let result = match cli.cmd {
        None => run_compat(cli.compat),
        Some(Cmd::Snp(c)) => run_snp(c),
        Some(Cmd::Seves(c)) => run_seves(c),
        Some(Cmd::Sev(c)) => run_sev(c),
        Some(Cmd::Matrix(c)) => run_matrix(c),
        Some(Cmd::Inspect(c)) => run_inspect(c),
        Some(Cmd::VcpuTypes(j)) => run_vcpu_types(j.json),
        Some(Cmd::Tdx(c)) => crate::commands::tdx::run(*c),
        Some(Cmd::Verify(_)) => Ok(()),
        Some(Cmd::ReferenceValues(c)) => crate::commands::reference::run_reference(*c),
        Some(Cmd::IdBlock(c)) => crate::commands::reference::run_id_block(c),
        Some(Cmd::Docs(d)) => d
            .run(<Cli as clap::CommandFactory>::command())
            .map_err(Into::into),
    };
    result.map(|()| 0).map_err(|e| name_flags(e, tdx))
}

/// The library's errors say what is wrong without naming flags; here they get the
/// flag that fixes them.
fn name_flags(e: anyhow::Error, tdx: bool) -> anyhow::Error {
    use cocos_measure::MeasureError as M;
    let Some(m) = e.downcast_ref::<M>() else {
        return e;
    };
    let vcpus = if tdx { "--cpus" } else { "--vcpus" };
    match m {
        M::BadVcpus { got, max } => {
            anyhow::anyhow!("{vcpus} must be between 1 and {max}, got {got}")
        }
        M::NoApResetEip { .. } => anyhow::anyhow!("{m} ({vcpus} 1)"),
        M::NoSnpKernelHashes | M::NoSevHashTable => {
            anyhow::anyhow!("{m} (leave out --kernel, --initrd and --append)")
        }
        M::MemoryTooSmall(msg) => anyhow::anyhow!("{msg} (--memory)"),
        _ => e,
    }
}

/// Reads an input file named by flag `what`: refuses a directory, and a file over `max`
/// bytes (`why` says what such a file should be instead).
pub(crate) fn read_bounded(path: &Path, what: &str, max: u64, why: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if meta.is_dir() {
        bail!("{what} {} is a directory, expected a file", path.display());
    }
    if meta.len() > max {
        bail!("{what} {} is {} bytes{why}", path.display(), meta.len());
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}
