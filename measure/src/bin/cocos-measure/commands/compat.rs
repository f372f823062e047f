//! `cocos-measure` without a subcommand: sev-snp-measure's flags, precedence and output.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use cocos_measure::cpu::{self, cpu_sig};
use cocos_measure::snp::{check_vcpus, parse_ovmf_hash};
use cocos_measure::{BootFiles, QemuBoot, SnpLaunch, SnpParams, Tee, Vcpu, VmmType};

use crate::cli::*;
use crate::pyint::*;
use crate::render::*;

/// sev-snp-measure's flags, parsed as strings so that its integer syntax and
/// truthiness rules can be reproduced exactly.
#[derive(Args)]
#[command(next_help_heading = "sev-snp-measure compatible options (used without a subcommand)")]
pub(crate) struct Compat {
    /// Guest mode
    #[arg(long, value_parser = ["sev", "seves", "snp", "snp:ovmf-hash", "snp:svsm"])]
    pub(crate) mode: Option<String>,
    /// Print "Calculated <MODE> guest measurement: <digest>"
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Number of guest vCPUs
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) vcpus: Option<String>,
    /// Type of guest vCPU (QEMU model name, exact spelling)
    #[arg(long, value_name = "CPUTYPE", value_parser = vcpu_type_names())]
    pub(crate) vcpu_type: Option<String>,
    /// Guest vCPU signature value (CPUID Fn0000_0001_EAX; 0x prefix for hex)
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    pub(crate) vcpu_sig: Option<String>,
    /// Guest vCPU family
    #[arg(long, value_name = "FAMILY", allow_hyphen_values = true)]
    pub(crate) vcpu_family: Option<String>,
    /// Guest vCPU model
    #[arg(long, value_name = "MODEL", allow_hyphen_values = true)]
    pub(crate) vcpu_model: Option<String>,
    /// Guest vCPU stepping
    #[arg(long, value_name = "STEPPING", allow_hyphen_values = true)]
    pub(crate) vcpu_stepping: Option<String>,
    /// Type of guest VMM (QEMU, ec2, gce)
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    pub(crate) vmm_type: String,
    /// OVMF file to calculate the hash from
    #[arg(long, value_name = "PATH")]
    pub(crate) ovmf: Option<PathBuf>,
    /// Kernel file to calculate the hash from
    #[arg(long, value_name = "PATH")]
    pub(crate) kernel: Option<PathBuf>,
    /// Initrd file to calculate the hash from (use with --kernel)
    #[arg(long, value_name = "PATH")]
    pub(crate) initrd: Option<PathBuf>,
    /// Kernel command line to calculate the hash from (use with --kernel; one that starts with `-`: --append=VALUE)
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    pub(crate) append: Option<String>,
    /// Guest features (SEV_FEATURES of the VMSAs; SNP only)
    #[arg(
        long,
        value_name = "VALUE",
        default_value = "0x1",
        allow_hyphen_values = true
    )]
    pub(crate) guest_features: String,
    /// Measurement output format
    #[arg(long, value_parser = ["hex", "base64"], default_value = "hex")]
    pub(crate) output_format: String,
    /// Precalculated hash of the OVMF binary (hex), as printed by --mode snp:ovmf-hash
    #[arg(long, value_name = "HASH")]
    pub(crate) snp_ovmf_hash: Option<String>,
    /// Write the measured VMSAs to vmsa<N>.bin in the current directory
    #[arg(long)]
    pub(crate) dump_vmsa: bool,
    /// (snp:svsm mode is not supported yet)
    #[arg(long, value_name = "PATH", hide = true)]
    pub(crate) svsm: Option<PathBuf>,
    /// (snp:svsm mode is not supported yet)
    #[arg(long, value_name = "SIZE", hide = true)]
    pub(crate) vars_size: Option<String>,
    /// (snp:svsm mode is not supported yet)
    #[arg(long, value_name = "PATH", hide = true)]
    pub(crate) vars_file: Option<PathBuf>,
    /// Print a JSON object (digest, input hashes, settings) instead of the digest alone
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run_compat(c: Compat) -> Result<()> {
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
        let firmware_only = BootFiles {
            firmware: ovmf,
            kernel: None,
            initrd: None,
        };
        let snp = QemuBoot::load(&firmware_only, Tee::Snp { ovmf_hash: None })?.snp()?;
        println!("{}", hex::encode(snp.ovmf_hash()));
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

    let files = BootFiles {
        firmware: ovmf,
        kernel,
        initrd,
    };
    let (name, ld, ovmf_hash, l) = match mode {
        "sev" => {
            let l = QemuBoot::load(&files, Tee::Sev)?;
            let kh = kernel_hashes(&l, append)?;
            let ld = l.sev().sev_digest(kh.as_ref())?.to_vec();
            ("SEV", ld, None, l)
        }
        "seves" => {
            let vcpus = need_vcpus()?;
            let l = QemuBoot::load(&files, Tee::Sev)?;
            let kh = kernel_hashes(&l, append)?;
            let sev = l.sev();
            let ld = sev
                .seves_digest(kh.as_ref(), vcpus, vcpu_sig, vmm)?
                .to_vec();
            if c.dump_vmsa {
                write_vmsas(&sev.vmsa(vcpu_sig, vmm)?.pages(vcpus)?)?;
            }
            ("SEV_ES", ld, None, l)
        }
        _ => {
            let vcpus = need_vcpus()?;
            let seed = c
                .snp_ovmf_hash
                .as_deref()
                .map(parse_ovmf_hash)
                .transpose()
                .context("--snp-ovmf-hash")?;
            let l = QemuBoot::load(&files, Tee::Snp { ovmf_hash: seed })?;
            let snp = l.snp()?;
            let launch = SnpLaunch {
                vcpus,
                vcpu: Vcpu {
                    name: None,
                    sig: vcpu_sig,
                },
                guest_features: features,
                vmm,
            };
            let m = snp.measure(append.unwrap_or_default(), &launch)?;
            if c.dump_vmsa {
                let params = SnpParams {
                    vcpus,
                    vcpu_sig,
                    guest_features: features,
                    vmm,
                };
                write_vmsas(&snp.prepared().vmsa_pages(&params)?)?;
            }
            ("SEV_SNP", m.measurement.to_vec(), Some(m.ovmf_hash), l)
        }
    };
    let out = encode(&ld, &c.output_format);
    if c.json {
        let mut v = json!({
            "mode": mode,
            "measurement": out,
            "inputs": inputs_json(&l, ovmf, append),
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
