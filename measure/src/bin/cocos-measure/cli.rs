//! Argument parsing and dispatch for `cocos-measure`: the sev-snp-measure compatible
//! flag set (kept to its precedence and truthiness rules), the friendlier
//! subcommands, and text / JSON rendering.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use cocos_measure::cpu::{self, cpu_sig, VCPU_TYPES};
use cocos_measure::inputs::{self, Loaded};
use cocos_measure::inspect::capabilities;
use cocos_measure::ovmf::{guid_name, Parsed};
use cocos_measure::snp::{check_vcpus, parse_ovmf_hash};
use cocos_measure::{Firmware, KernelHashes, SevPrepared, SnpParams, SnpPrepared, VmmType};

const ABOUT: &str =
    "Compute AMD SEV / SEV-ES / SEV-SNP launch digests and Intel TDX MRTD / RTMR0-2 of \
QEMU + OVMF guests, bit-exact with what the hardware reports.";

const AFTER_HELP: &str = "\
Without a subcommand, cocos-measure accepts sev-snp-measure's flags and prints the digest alone:
  cocos-measure --mode snp --vcpus 4 --vcpu-type EPYC-Milan --ovmf OVMF.fd \\
      --kernel vmlinuz --initrd initrd.img --append 'console=ttyS0'
Subcommands give labelled or JSON output, matrices and firmware inspection:
  cocos-measure inspect --ovmf /usr/share/ovmf/OVMF.fd
  cocos-measure snp --ovmf OVMF.fd --vcpus 4 --vcpu-type EPYC-Genoa --json
  cocos-measure matrix --ovmf OVMF.fd --vcpus 1,2,4 --vcpu-types EPYC-Milan,EPYC-Genoa \\
      --guest-features 0x1,0x21 --json
  cocos-measure tdx --firmware OVMF.inteltdx.fd --kernel vmlinuz --initrd initrd.img \
      --append='console=ttyS0' --qemu-version 10.1 --events
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
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    compat: Compat,
}

/// sev-snp-measure's flags, parsed as strings so that its integer syntax and
/// truthiness rules can be reproduced exactly.
#[derive(Args)]
#[command(next_help_heading = "sev-snp-measure compatible options (used without a subcommand)")]
struct Compat {
    /// Guest mode
    #[arg(long, value_parser = ["sev", "seves", "snp", "snp:ovmf-hash", "snp:svsm"])]
    mode: Option<String>,
    /// Print "Calculated <MODE> guest measurement: <digest>"
    #[arg(short, long)]
    verbose: bool,
    /// Number of guest vCPUs
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    vcpus: Option<String>,
    /// Type of guest vCPU (QEMU model name, exact spelling)
    #[arg(long, value_name = "CPUTYPE", value_parser = vcpu_type_names())]
    vcpu_type: Option<String>,
    /// Guest vCPU signature value (CPUID Fn0000_0001_EAX; 0x prefix for hex)
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    vcpu_sig: Option<String>,
    /// Guest vCPU family
    #[arg(long, value_name = "FAMILY", allow_hyphen_values = true)]
    vcpu_family: Option<String>,
    /// Guest vCPU model
    #[arg(long, value_name = "MODEL", allow_hyphen_values = true)]
    vcpu_model: Option<String>,
    /// Guest vCPU stepping
    #[arg(long, value_name = "STEPPING", allow_hyphen_values = true)]
    vcpu_stepping: Option<String>,
    /// Type of guest VMM (QEMU, ec2, gce)
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    vmm_type: String,
    /// OVMF file to calculate the hash from
    #[arg(long, value_name = "PATH")]
    ovmf: Option<PathBuf>,
    /// Kernel file to calculate the hash from
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initrd file to calculate the hash from (use with --kernel)
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line to calculate the hash from (use with --kernel; one that starts with `-`: --append=VALUE)
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    append: Option<String>,
    /// Guest features (SEV_FEATURES of the VMSAs; SNP only)
    #[arg(
        long,
        value_name = "VALUE",
        default_value = "0x1",
        allow_hyphen_values = true
    )]
    guest_features: String,
    /// Measurement output format
    #[arg(long, value_parser = ["hex", "base64"], default_value = "hex")]
    output_format: String,
    /// Precalculated hash of the OVMF binary (hex), as printed by --mode snp:ovmf-hash
    #[arg(long, value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// Write the measured VMSAs to vmsa<N>.bin in the current directory
    #[arg(long)]
    dump_vmsa: bool,
    /// (snp:svsm mode is not supported yet)
    #[arg(long, value_name = "PATH", hide = true)]
    svsm: Option<PathBuf>,
    /// (snp:svsm mode is not supported yet)
    #[arg(long, value_name = "SIZE", hide = true)]
    vars_size: Option<String>,
    /// (snp:svsm mode is not supported yet)
    #[arg(long, value_name = "PATH", hide = true)]
    vars_file: Option<PathBuf>,
    /// Print a JSON object (digest, input hashes, settings) instead of the digest alone
    #[arg(long)]
    json: bool,
}

fn vcpu_type_names() -> Vec<&'static str> {
    VCPU_TYPES.iter().map(|t| t.0).collect()
}

#[derive(Subcommand)]
enum Cmd {
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
    Tdx(Box<crate::tdx_cmd::TdxCmd>),
}

#[derive(Args)]
struct JsonFlag {
    /// JSON output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BootArgs {
    /// OVMF firmware image
    #[arg(long, value_name = "FILE")]
    ovmf: PathBuf,
    /// Kernel passed to QEMU with -kernel (measured through kernel-hashes=on)
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initrd passed with -initrd
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line passed with -append (one that starts with `-`: --append=VALUE)
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    append: Option<String>,
}

#[derive(Args)]
struct VcpuArgs {
    /// vCPU model (see `cocos-measure vcpu-types`; case-insensitive)
    #[arg(long, value_name = "TYPE", group = "cpu")]
    vcpu_type: Option<String>,
    /// vCPU signature (CPUID Fn0000_0001_EAX)
    #[arg(long, value_name = "SIG", group = "cpu", value_parser = parse_u64_auto)]
    vcpu_sig: Option<u64>,
    /// vCPU family (with --vcpu-model and --vcpu-stepping)
    #[arg(long, group = "cpu", requires_all = ["vcpu_model", "vcpu_stepping"], value_parser = parse_u64_auto)]
    vcpu_family: Option<u64>,
    /// vCPU model number
    #[arg(long, requires = "vcpu_family", value_parser = parse_u64_auto)]
    vcpu_model: Option<u64>,
    /// vCPU stepping
    #[arg(long, requires = "vcpu_family", value_parser = parse_u64_auto)]
    vcpu_stepping: Option<u64>,
    /// VMM that builds the VMSAs: QEMU, ec2 or gce
    #[arg(long, value_name = "VMM", default_value = "QEMU", value_parser = parse_vmm)]
    vmm_type: VmmType,
}

#[derive(Args)]
struct SnpCmd {
    #[command(flatten)]
    boot: BootArgs,
    /// Number of vCPUs
    #[arg(long, value_name = "N")]
    vcpus: u64,
    #[command(flatten)]
    cpu: VcpuArgs,
    /// SEV_FEATURES of the VMSAs
    #[arg(long, value_name = "BITS", default_value = "0x1", value_parser = parse_u64_auto)]
    guest_features: u64,
    /// Precomputed firmware hash (from `--mode snp:ovmf-hash`): skips hashing the firmware pages
    #[arg(long, value_name = "HEX")]
    ovmf_hash: Option<String>,
    /// JSON output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SevesCmd {
    #[command(flatten)]
    boot: BootArgs,
    /// Number of vCPUs
    #[arg(long, value_name = "N")]
    vcpus: u64,
    #[command(flatten)]
    cpu: VcpuArgs,
    /// JSON output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SevCmd {
    #[command(flatten)]
    boot: BootArgs,
    /// JSON output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MatrixCmd {
    #[command(flatten)]
    boot: BootArgs,
    /// vCPU counts, comma-separated
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', required = true)]
    vcpus: Vec<u64>,
    /// vCPU types, comma-separated
    #[arg(
        long,
        value_name = "TYPE,TYPE,…",
        value_delimiter = ',',
        required = true
    )]
    vcpu_types: Vec<String>,
    /// Guest-feature values, comma-separated
    #[arg(long, value_name = "BITS,…", value_delimiter = ',', default_value = "0x1", value_parser = parse_u64_auto)]
    guest_features: Vec<u64>,
    /// VMM that builds the VMSAs: QEMU, ec2 or gce
    #[arg(long, value_name = "VMM", default_value = "QEMU", value_parser = parse_vmm)]
    vmm_type: VmmType,
    /// JSON output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectCmd {
    /// Firmware image
    #[arg(long, value_name = "FILE")]
    ovmf: PathBuf,
    /// JSON output
    #[arg(long)]
    json: bool,
}

fn parse_vmm(s: &str) -> Result<VmmType, String> {
    VmmType::parse_loose(s).map_err(|e| e.to_string())
}

fn parse_u64_auto(s: &str) -> Result<u64, String> {
    let v = py_int(s, true)?;
    u64::try_from(v).map_err(|_| format!("'{s}' is out of range for an unsigned 64-bit value"))
}

/// Parses an integer as Python's `int(s)` (base 10) or `int(s, 0)` does: surrounding
/// whitespace, a sign, `_` between digits, and with `auto` a 0x/0o/0b prefix (a
/// decimal with a leading zero is refused, as Python refuses it).
fn py_int(s: &str, auto: bool) -> Result<i128, String> {
    let err = || format!("invalid integer '{s}'");
    let t = s.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or_default()),
        Some(b'+') => (false, t.get(1..).unwrap_or_default()),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if auto && lower.starts_with("0x") {
        (
            16,
            lower.get(2..).unwrap_or_default().trim_start_matches('_'),
        )
    } else if auto && lower.starts_with("0o") {
        (
            8,
            lower.get(2..).unwrap_or_default().trim_start_matches('_'),
        )
    } else if auto && lower.starts_with("0b") {
        (
            2,
            lower.get(2..).unwrap_or_default().trim_start_matches('_'),
        )
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(err());
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if auto
        && radix == 10
        && clean.len() > 1
        && clean.starts_with('0')
        && clean.bytes().any(|b| b != b'0')
    {
        return Err(err());
    }
    let v = i128::from_str_radix(&clean, radix).map_err(|_| err())?;
    Ok(if neg { -v } else { v })
}

fn py_int_arg(name: &str, v: Option<&str>, auto: bool) -> Result<Option<i128>> {
    v.map(|s| py_int(s, auto).map_err(|e| anyhow::anyhow!("argument --{name}: {e}")))
        .transpose()
}

fn nonneg(name: &str, v: i128) -> Result<u64> {
    u64::try_from(v).map_err(|_| anyhow::anyhow!("--{name} must be between 0 and 2^64-1, got {v}"))
}

/// Treats an empty path as absent, as sev-snp-measure's truthiness checks do.
fn present(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// Whether Python's argparse (sev-snp-measure's parser) would take `arg`, following an
/// option that expects a value, as that value rather than as another option
/// (`argparse.ArgumentParser._parse_optional`): anything not starting with '-', a lone
/// "-", a negative number, or a string containing a space.
fn argparse_takes_as_value(arg: &str) -> bool {
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
fn check_append_values(args: &[std::ffi::OsString]) -> Result<()> {
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

/// Entry point: parses arguments and runs.
pub fn run() -> Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    check_append_values(&args)?;
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if cocos_measure::cli_error::is_help(&e) => e.exit(),
        Err(e) => bail!("{} (see --help)", cocos_measure::cli_error::one_line(&e)),
    };
    match cli.cmd {
        None => run_compat(cli.compat),
        Some(Cmd::Snp(c)) => run_snp(c),
        Some(Cmd::Seves(c)) => run_seves(c),
        Some(Cmd::Sev(c)) => run_sev(c),
        Some(Cmd::Matrix(c)) => run_matrix(c),
        Some(Cmd::Inspect(c)) => run_inspect(c),
        Some(Cmd::VcpuTypes(j)) => run_vcpu_types(j.json),
        Some(Cmd::Tdx(c)) => crate::tdx_cmd::run(*c),
    }
}

fn encode(ld: &[u8], format: &str) -> String {
    if format == "base64" {
        base64::engine::general_purpose::STANDARD.encode(ld)
    } else {
        hex::encode(ld)
    }
}

fn kernel_hashes<T>(l: &Loaded<T>, append: Option<&str>) -> Option<KernelHashes> {
    l.kernel.as_ref().map(|k| {
        KernelHashes::new(
            k.sha256,
            l.initrd.as_ref().map(|i| i.sha256),
            append.unwrap_or_default().as_bytes(),
        )
    })
}

fn inputs_json<T>(l: &Loaded<T>, ovmf: &Path, append: Option<&str>, fw_sha: &[u8]) -> Value {
    json!({
        "ovmf": {"path": ovmf, "size": l.firmware.size(), "sha256": hex::encode(fw_sha)},
        "kernel": l.kernel,
        "initrd": l.initrd,
        "cmdline": l.kernel.as_ref().map(|_| append.unwrap_or_default()),
        "cmdline_sha256": l.kernel.as_ref().map(|_| hex::encode(
            cocos_measure::hashes::cmdline_sha256(append.unwrap_or_default().as_bytes()))),
    })
}

fn firmware_sha256(fw: &Firmware) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(fw.data()).into()
}

fn write_vmsas(pages: &[Box<[u8; 4096]>]) -> Result<()> {
    for (i, p) in pages.iter().enumerate() {
        let name = format!("vmsa{i}.bin");
        std::fs::write(&name, &p[..]).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}

fn run_compat(c: Compat) -> Result<()> {
    let Some(mode) = c.mode.as_deref() else {
        bail!("the following arguments are required: --mode (or use a subcommand; see --help)");
    };
    let Some(ovmf) = c.ovmf.as_deref() else {
        bail!("the following arguments are required: --ovmf");
    };
    // Integer conversions happen at argument-parsing time in sev-snp-measure, whatever the mode.
    let vcpus = py_int_arg("vcpus", c.vcpus.as_deref(), false)?;
    let family = py_int_arg("vcpu-family", c.vcpu_family.as_deref(), false)?;
    let model = py_int_arg("vcpu-model", c.vcpu_model.as_deref(), false)?;
    let stepping = py_int_arg("vcpu-stepping", c.vcpu_stepping.as_deref(), false)?;
    let sig = py_int_arg("vcpu-sig", c.vcpu_sig.as_deref(), true)?;
    let features = py_int_arg("guest-features", Some(&c.guest_features), true)?.unwrap_or(1);
    if c.vars_size.is_some() {
        py_int_arg("vars-size", c.vars_size.as_deref(), false)?;
    }

    if mode == "snp:ovmf-hash" {
        let fw = inputs::read_firmware(ovmf)?;
        let p = SnpPrepared::new(&fw)?;
        println!("{}", hex::encode(p.ovmf_hash()));
        return Ok(());
    }
    let kernel = present(&c.kernel);
    let initrd = present(&c.initrd);
    let append = c.append.as_deref().filter(|a| !a.is_empty());
    if initrd.is_some() && c.kernel.is_none() {
        bail!("--kernel required when using --initrd");
    }
    if append.is_some() && c.kernel.is_none() {
        bail!("--kernel required when using --append");
    }
    if mode != "sev" && vcpus.is_none() {
        bail!("missing --vcpus N in guest mode '{mode}'");
    }
    let vmm = VmmType::parse_exact(&c.vmm_type)?;
    let vcpu_sig = if mode == "sev" {
        0
    } else if let Some(f) = family.filter(|&f| f != 0) {
        let (Some(m), Some(s)) = (model, stepping) else {
            bail!("--vcpu-family needs --vcpu-model and --vcpu-stepping");
        };
        cpu_sig(
            nonneg("vcpu-family", f)?,
            nonneg("vcpu-model", m)?,
            nonneg("vcpu-stepping", s)?,
        )
    } else if let Some(s) = sig.filter(|&s| s != 0) {
        nonneg("vcpu-sig", s)?
    } else if let Some(t) = c.vcpu_type.as_deref() {
        cpu::sig_exact(t)?
    } else if vmm == VmmType::Qemu {
        bail!("missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '{mode}'");
    } else {
        0 // ec2 and gce put a fixed value in RDX
    };
    if mode == "snp:svsm" {
        bail!("--mode snp:svsm (Coconut-SVSM) is not supported yet; use sev-snp-measure for it");
    }
    if c.dump_vmsa && mode == "sev" {
        bail!("--dump-vmsa is not available in mode 'sev' (no VMSAs are measured)");
    }
    if c.snp_ovmf_hash.is_some() && mode != "snp" {
        bail!("--snp-ovmf-hash only works with --mode snp");
    }
    let need_vcpus = || -> Result<u32> {
        let v = vcpus.context("missing --vcpus")?;
        check_vcpus(u64::try_from(v).unwrap_or(0)).map_err(|_| {
            anyhow::anyhow!(
                "--vcpus must be between 1 and {}, got {v}",
                cocos_measure::snp::MAX_VCPUS
            )
        })
    };
    let features = nonneg("guest-features", features)?;

    let (name, ld, ovmf_hash, l) = match mode {
        "sev" => {
            let l = inputs::load(ovmf, kernel, initrd, |fw| Ok(SevPrepared::new(fw)))?;
            let kh = kernel_hashes(&l, append);
            let ld = l.prepared.sev_digest(kh.as_ref())?.to_vec();
            ("SEV", ld, None, l.map_unit())
        }
        "seves" => {
            let vcpus = need_vcpus()?;
            let l = inputs::load(ovmf, kernel, initrd, |fw| Ok(SevPrepared::new(fw)))?;
            let kh = kernel_hashes(&l, append);
            let ld = l
                .prepared
                .seves_digest(kh.as_ref(), vcpus, vcpu_sig, vmm)?
                .to_vec();
            if c.dump_vmsa {
                write_vmsas(&l.prepared.vmsa(vcpu_sig, vmm)?.pages(vcpus)?)?;
            }
            ("SEV_ES", ld, None, l.map_unit())
        }
        _ => {
            let vcpus = need_vcpus()?;
            let seed = c
                .snp_ovmf_hash
                .as_deref()
                .map(parse_ovmf_hash)
                .transpose()
                .context("--snp-ovmf-hash")?;
            let l = inputs::load(ovmf, kernel, initrd, |fw| match seed {
                Some(s) => Ok(SnpPrepared::with_ovmf_hash(fw, s)),
                None => SnpPrepared::new(fw),
            })?;
            let kh = kernel_hashes(&l, append);
            let params = SnpParams {
                vcpus,
                vcpu_sig,
                guest_features: features,
                vmm,
            };
            let ld = l.prepared.digest(kh.as_ref(), &params)?.to_vec();
            if c.dump_vmsa {
                write_vmsas(&l.prepared.vmsa_pages(&params)?)?;
            }
            ("SEV_SNP", ld, Some(l.prepared.ovmf_hash()), l.map_unit())
        }
    };
    let out = encode(&ld, &c.output_format);
    if c.json {
        let mut v = json!({
            "mode": mode,
            "measurement": out,
            "inputs": inputs_json(&l, ovmf, append, &firmware_sha256(&l.firmware)),
            "settings": {
                "vcpus": (mode != "sev").then(|| need_vcpus().ok()).flatten(),
                "vcpu_type": c.vcpu_type,
                "vcpu_sig": format!("{vcpu_sig:#x}"),
                "guest_features": (mode == "snp").then(|| format!("{features:#x}")),
                "vmm_type": vmm.name(),
            },
        });
        if let Some(oh) = ovmf_hash {
            if let Some(o) = v.as_object_mut() {
                o.insert("ovmf_hash".into(), json!(hex::encode(oh)));
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if c.verbose {
        println!("Calculated {name} guest measurement: {out}");
    } else {
        println!("{out}");
    }
    Ok(())
}

trait MapUnit {
    fn map_unit(self) -> Loaded<()>;
}

impl<T> MapUnit for Loaded<T> {
    fn map_unit(self) -> Loaded<()> {
        Loaded {
            firmware: self.firmware,
            prepared: (),
            kernel: self.kernel,
            initrd: self.initrd,
        }
    }
}

/// A resolved vCPU choice: signature and the type name if given by name.
fn resolve_cpu(c: &VcpuArgs) -> Result<(u64, Option<&'static str>)> {
    if let Some(t) = c.vcpu_type.as_deref() {
        let (name, sig) = cpu::lookup(t)?;
        return Ok((sig, Some(name)));
    }
    if let Some(s) = c.vcpu_sig {
        return Ok((s, None));
    }
    if let (Some(f), Some(m), Some(s)) = (c.vcpu_family, c.vcpu_model, c.vcpu_stepping) {
        return Ok((cpu_sig(f, m, s), None));
    }
    if c.vmm_type == VmmType::Qemu {
        bail!("QEMU puts the vCPU signature in each VMSA: give --vcpu-type, --vcpu-sig or --vcpu-family/--vcpu-model/--vcpu-stepping");
    }
    Ok((0, None))
}

fn settings_json(vcpus: u32, sig: u64, name: Option<&str>, vmm: VmmType) -> Value {
    json!({"vcpus": vcpus, "vcpu_type": name, "vcpu_sig": format!("{sig:#x}"), "vmm_type": vmm.name()})
}

fn print_text(lines: &[(&str, String)]) {
    for (k, v) in lines {
        println!("{k:<16}{v}");
    }
}

fn input_lines<T>(l: &Loaded<T>, ovmf: &Path, append: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "ovmf",
        format!("{} ({} bytes)", ovmf.display(), l.firmware.size()),
    )];
    if let Some(k) = &l.kernel {
        out.push((
            "kernel",
            format!("{} sha256 {}", k.path.display(), hex::encode(k.sha256)),
        ));
        match &l.initrd {
            Some(i) => out.push((
                "initrd",
                format!("{} sha256 {}", i.path.display(), hex::encode(i.sha256)),
            )),
            None => out.push(("initrd", "(none)".into())),
        }
        out.push(("cmdline", format!("{:?}", append.unwrap_or_default())));
    }
    out
}

fn run_snp(c: SnpCmd) -> Result<()> {
    let vcpus = check_vcpus(c.vcpus)?;
    let (sig, name) = resolve_cpu(&c.cpu)?;
    let seed = c
        .ovmf_hash
        .as_deref()
        .map(parse_ovmf_hash)
        .transpose()
        .context("--ovmf-hash")?;
    let b = &c.boot;
    let l = inputs::load(
        &b.ovmf,
        b.kernel.as_deref(),
        b.initrd.as_deref(),
        |fw| match seed {
            Some(s) => Ok(SnpPrepared::with_ovmf_hash(fw, s)),
            None => SnpPrepared::new(fw),
        },
    )?;
    let append = b.append.as_deref();
    let kh = kernel_hashes(&l, append);
    let params = SnpParams {
        vcpus,
        vcpu_sig: sig,
        guest_features: c.guest_features,
        vmm: c.cpu.vmm_type,
    };
    let ld = l.prepared.digest(kh.as_ref(), &params)?;
    if c.json {
        let mut settings = settings_json(vcpus, sig, name, c.cpu.vmm_type);
        if let Some(o) = settings.as_object_mut() {
            o.insert(
                "guest_features".into(),
                json!(format!("{:#x}", c.guest_features)),
            );
        }
        let v = json!({
            "mode": "snp",
            "measurement": hex::encode(ld),
            "ovmf_hash": hex::encode(l.prepared.ovmf_hash()),
            "inputs": inputs_json(&l, &b.ovmf, append, &firmware_sha256(&l.firmware)),
            "settings": settings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut lines = vec![("SEV-SNP digest", hex::encode(ld))];
        lines.extend(input_lines(&l, &b.ovmf, append));
        lines.push((
            "vcpus",
            format!("{vcpus} × {} (sig {sig:#x})", name.unwrap_or("custom")),
        ));
        lines.push(("guest features", format!("{:#x}", c.guest_features)));
        lines.push(("vmm", c.cpu.vmm_type.name().into()));
        print_text(&lines);
    }
    Ok(())
}

fn run_seves(c: SevesCmd) -> Result<()> {
    let vcpus = check_vcpus(c.vcpus)?;
    let (sig, name) = resolve_cpu(&c.cpu)?;
    let b = &c.boot;
    let l = inputs::load(&b.ovmf, b.kernel.as_deref(), b.initrd.as_deref(), |fw| {
        Ok(SevPrepared::new(fw))
    })?;
    let append = b.append.as_deref();
    let kh = kernel_hashes(&l, append);
    let ld = l
        .prepared
        .seves_digest(kh.as_ref(), vcpus, sig, c.cpu.vmm_type)?;
    if c.json {
        let v = json!({
            "mode": "seves",
            "measurement": hex::encode(ld),
            "inputs": inputs_json(&l, &b.ovmf, append, &firmware_sha256(&l.firmware)),
            "settings": settings_json(vcpus, sig, name, c.cpu.vmm_type),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut lines = vec![("SEV-ES digest", hex::encode(ld))];
        lines.extend(input_lines(&l, &b.ovmf, append));
        lines.push((
            "vcpus",
            format!("{vcpus} × {} (sig {sig:#x})", name.unwrap_or("custom")),
        ));
        lines.push(("vmm", c.cpu.vmm_type.name().into()));
        print_text(&lines);
    }
    Ok(())
}

fn run_sev(c: SevCmd) -> Result<()> {
    let b = &c.boot;
    let l = inputs::load(&b.ovmf, b.kernel.as_deref(), b.initrd.as_deref(), |fw| {
        Ok(SevPrepared::new(fw))
    })?;
    let append = b.append.as_deref();
    let kh = kernel_hashes(&l, append);
    let ld = l.prepared.sev_digest(kh.as_ref())?;
    if c.json {
        let v = json!({
            "mode": "sev",
            "measurement": hex::encode(ld),
            "inputs": inputs_json(&l, &b.ovmf, append, &firmware_sha256(&l.firmware)),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut lines = vec![("SEV digest", hex::encode(ld))];
        lines.extend(input_lines(&l, &b.ovmf, append));
        print_text(&lines);
    }
    Ok(())
}

fn run_matrix(c: MatrixCmd) -> Result<()> {
    let vcpus: Vec<u32> = c
        .vcpus
        .iter()
        .map(|&v| check_vcpus(v))
        .collect::<Result<_, _>>()?;
    let types: Vec<(&str, u64)> = c
        .vcpu_types
        .iter()
        .map(|t| cpu::lookup(t))
        .collect::<Result<_, _>>()?;
    let b = &c.boot;
    let l = inputs::load(
        &b.ovmf,
        b.kernel.as_deref(),
        b.initrd.as_deref(),
        SnpPrepared::new,
    )?;
    let append = b.append.as_deref();
    let kh = kernel_hashes(&l, append);
    let mut rows = Vec::new();
    for &(name, sig) in &types {
        for &features in &c.guest_features {
            for &n in &vcpus {
                let p = SnpParams {
                    vcpus: n,
                    vcpu_sig: sig,
                    guest_features: features,
                    vmm: c.vmm_type,
                };
                rows.push((name, sig, features, n, l.prepared.digest(kh.as_ref(), &p)?));
            }
        }
    }
    if c.json {
        let v = json!({
            "mode": "snp",
            "vmm_type": c.vmm_type.name(),
            "ovmf_hash": hex::encode(l.prepared.ovmf_hash()),
            "inputs": inputs_json(&l, &b.ovmf, append, &firmware_sha256(&l.firmware)),
            "measurements": rows.iter().map(|(name, sig, f, n, ld)| json!({
                "vcpus": n, "vcpu_type": name, "vcpu_sig": format!("{sig:#x}"),
                "guest_features": format!("{f:#x}"), "measurement": hex::encode(ld),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<6} {:<15} {:<9} measurement",
            "vcpus", "vcpu-type", "features"
        );
        for (name, _, f, n, ld) in rows {
            println!(
                "{n:<6} {name:<15} {:<9} {}",
                format!("{f:#x}"),
                hex::encode(ld)
            );
        }
    }
    Ok(())
}

fn run_inspect(c: InspectCmd) -> Result<()> {
    let fw = inputs::read_firmware(&c.ovmf)?;
    let edk2 = cocos_measure::edk2::analyse(fw.data());
    let caps = capabilities(&fw, &edk2);
    let entries: Vec<Value> = fw
        .table()
        .iter()
        .map(|e| {
            json!({"guid": e.guid.to_string(), "name": e.name(), "offset": e.data_offset,
                   "data": hex::encode(&e.data)})
        })
        .collect();
    let sev_sections: Vec<Value> = fw
        .sev_sections()
        .iter()
        .map(|s| {
            json!({"gpa": format!("{:#x}", s.gpa), "size": s.size,
                   "type": s.kind().map_or_else(|| format!("unknown({:#x})", s.raw_type), |k| k.name().to_owned())})
        })
        .collect();
    let tdx = match fw.tdx_metadata() {
        Parsed::Absent => Value::Null,
        Parsed::Valid(m) => {
            json!({"offset": m.offset, "sections": m.sections.iter().map(|s| json!({
            "type": s.kind.name(), "data_offset": format!("{:#x}", s.data_offset),
            "raw_size": s.raw_size, "memory_address": format!("{:#x}", s.memory_address),
            "memory_size": s.memory_size, "mr_extend": s.mr_extend(),
            "attributes": s.attributes})).collect::<Vec<_>>()})
        }
        Parsed::Invalid(e) => json!({"error": e.to_string()}),
    };
    let reset = fw.sev_es_reset_eip().ok();
    let table = fw.sev_hashes_table_gpa().ok().flatten();
    if c.json {
        let v = json!({
            "path": c.ovmf,
            "size": fw.size(),
            "sha256": hex::encode(firmware_sha256(&fw)),
            "footer_table": fw.has_footer_table(),
            "entries": entries,
            "sev_es_reset_eip": reset.map(|e| format!("{e:#x}")),
            "sev_hash_table_gpa": table.map(|g| format!("{g:#x}")),
            "sev_metadata": fw.has_sev_metadata().then_some(sev_sections),
            "tdx_metadata": tdx,
            "edk2": edk2,
            "supports": caps,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: {} bytes, sha256 {}",
        c.ovmf.display(),
        fw.size(),
        hex::encode(firmware_sha256(&fw))
    );
    println!("\nlaunch types:");
    for cap in &caps {
        let launch = serde_json::to_value(cap.launch)?;
        let mark = if cap.supported { "yes" } else { "no " };
        let note = cap
            .note
            .as_deref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default();
        println!("  {mark} {:<18}{note}", launch.as_str().unwrap_or_default());
        for w in &cap.warnings {
            println!("      warning: {w}");
        }
    }
    println!("\nedk2 behaviours (from the firmware's drivers):");
    let tell = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    println!(
        "  version:            {}",
        edk2.version
            .as_deref()
            .unwrap_or("not carried by the image")
    );
    println!("  extends RTMRs:      {}", tell(edk2.extends_rtmrs));
    println!("  reads etc/boot/*:   {}", tell(edk2.reads_etc_boot));
    println!(
        "  initrd=initrd:      {}",
        edk2.initrd_option.map_or("unknown", |o| match o {
            cocos_measure::rtmr::InitrdOption::Append => "appended",
            cocos_measure::rtmr::InitrdOption::Prepend => "prepended",
        })
    );
    for e in &edk2.evidence {
        println!("  evidence: {e}");
    }
    for p in &edk2.problems {
        println!("  problem:  {p}");
    }
    if !fw.has_footer_table() {
        println!("\nno OVMF footer table");
        return Ok(());
    }
    println!("\nfooter table:");
    for e in fw.table() {
        println!(
            "  {} {:<20} {} data bytes at {:#x}",
            e.guid,
            guid_name(&e.guid),
            e.data.len(),
            e.data_offset
        );
    }
    if let Some(r) = reset {
        println!("\nSEV-ES AP reset EIP: {r:#x}");
    }
    if let Some(t) = table {
        println!("SEV hash table GPA:  {t:#x}");
    }
    if fw.has_sev_metadata() {
        println!("\nSEV metadata sections:");
        for s in fw.sev_sections() {
            let kind = s.kind().map_or_else(
                || format!("unknown({:#x})", s.raw_type),
                |k| k.name().to_owned(),
            );
            println!("  {kind:<18} gpa {:#010x} size {:#x}", s.gpa, s.size);
        }
    }
    match fw.tdx_metadata() {
        Parsed::Absent => {}
        Parsed::Invalid(e) => println!("\n{e}"),
        Parsed::Valid(m) => {
            println!("\nTDX metadata sections (descriptor at {:#x}):", m.offset);
            for s in &m.sections {
                println!(
                    "  {:<9} file {:#010x}+{:#x} -> gpa {:#010x} size {:#x}{}",
                    s.kind.name(),
                    s.data_offset,
                    s.raw_size,
                    s.memory_address,
                    s.memory_size,
                    if s.mr_extend() { " MR_EXTEND" } else { "" }
                );
            }
        }
    }
    Ok(())
}

fn run_vcpu_types(as_json: bool) -> Result<()> {
    let rows: Vec<(&str, u64, u64, u64, u64)> = VCPU_TYPES
        .iter()
        .map(|&(n, f, m, s)| (n, f, m, s, cpu_sig(f, m, s)))
        .collect();
    if as_json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(n, f, m, s, sig)| json!({"name": n, "family": f, "model": m, "stepping": s, "sig": format!("{sig:#x}")}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<15} {:>6} {:>5} {:>8}  signature",
            "type", "family", "model", "stepping"
        );
        for (n, f, m, s, sig) in rows {
            println!("{n:<15} {f:>6} {m:>5} {s:>8}  {sig:#x}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::py_int;

    #[test]
    fn python_int_syntax() {
        assert_eq!(py_int("0x1f", true), Ok(31));
        assert_eq!(py_int(" 0X_1F ", true), Ok(31));
        assert_eq!(py_int("0b101", true), Ok(5));
        assert_eq!(py_int("0o17", true), Ok(15));
        assert_eq!(py_int("1_000", true), Ok(1000));
        assert_eq!(py_int("-3", false), Ok(-3));
        assert_eq!(py_int("000", true), Ok(0));
        assert!(py_int("010", true).is_err());
        assert_eq!(py_int("010", false), Ok(10));
        assert!(py_int("0x", true).is_err());
        assert!(py_int("1__0", true).is_err());
        assert!(py_int("0x10", false).is_err());
        assert!(py_int("", false).is_err());
    }
}
