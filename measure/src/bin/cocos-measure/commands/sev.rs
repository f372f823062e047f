//! `cocos-measure snp | seves | sev`: one digest with labelled or JSON output.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use cocos_measure::cpu::{self, cpu_sig};
use cocos_measure::snp::{check_vcpus, parse_ovmf_hash};
use cocos_measure::{BootFiles, QemuBoot, SnpLaunch, Tee, Vcpu, VmmType};

use crate::cli::*;
use crate::pyint::*;
use crate::render::*;

#[derive(Args)]
pub(crate) struct SnpCmd {
    #[command(flatten)]
    pub(crate) boot: BootArgs,
    /// Number of vCPUs
    #[arg(long, value_name = "N")]
    pub(crate) vcpus: u64,
    #[command(flatten)]
    pub(crate) cpu: VcpuArgs,
    /// SEV_FEATURES of the VMSAs
    #[arg(long, value_name = "BITS", default_value = "0x1", value_parser = parse_u64_auto)]
    pub(crate) guest_features: u64,
    /// Precomputed firmware hash (from `--mode snp:ovmf-hash`): skips hashing the firmware pages
    #[arg(long, value_name = "HEX")]
    pub(crate) ovmf_hash: Option<String>,
    /// JSON output
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct SevesCmd {
    #[command(flatten)]
    pub(crate) boot: BootArgs,
    /// Number of vCPUs
    #[arg(long, value_name = "N")]
    pub(crate) vcpus: u64,
    #[command(flatten)]
    pub(crate) cpu: VcpuArgs,
    /// JSON output
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct SevCmd {
    #[command(flatten)]
    pub(crate) boot: BootArgs,
    /// JSON output
    #[arg(long)]
    pub(crate) json: bool,
}

/// A resolved vCPU choice: signature and the type name if given by name.
pub(crate) fn resolve_cpu(c: &VcpuArgs) -> Result<(u64, Option<&'static str>)> {
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

pub(crate) fn files(b: &BootArgs) -> BootFiles<'_> {
    BootFiles {
        firmware: &b.ovmf,
        kernel: b.kernel.as_deref(),
        initrd: b.initrd.as_deref(),
    }
}

pub(crate) fn run_snp(c: SnpCmd) -> Result<()> {
    let vcpus = check_vcpus(c.vcpus)?;
    let (sig, name) = resolve_cpu(&c.cpu)?;
    let seed = c
        .ovmf_hash
        .as_deref()
        .map(parse_ovmf_hash)
        .transpose()
        .context("--ovmf-hash")?;
    let b = &c.boot;
    let l = QemuBoot::load(&files(b), Tee::Snp { ovmf_hash: seed })?;
    let append = b.append.as_deref();
    let launch = SnpLaunch {
        vcpus,
        vcpu: Vcpu { name, sig },
        guest_features: c.guest_features,
        vmm: c.cpu.vmm_type,
    };
    let m = l.snp()?.measure(append.unwrap_or_default(), &launch)?;
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
            "measurement": hex::encode(m.measurement),
            "ovmf_hash": hex::encode(m.ovmf_hash),
            "inputs": inputs_json(&l, &b.ovmf, append),
            "settings": settings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut lines = vec![("SEV-SNP digest", hex::encode(m.measurement))];
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

pub(crate) fn run_seves(c: SevesCmd) -> Result<()> {
    let vcpus = check_vcpus(c.vcpus)?;
    let (sig, name) = resolve_cpu(&c.cpu)?;
    let b = &c.boot;
    let l = QemuBoot::load(&files(b), Tee::Sev)?;
    let append = b.append.as_deref();
    let kh = kernel_hashes(&l, append)?;
    let ld = l
        .sev()
        .seves_digest(kh.as_ref(), vcpus, sig, c.cpu.vmm_type)?;
    if c.json {
        let v = json!({
            "mode": "seves",
            "measurement": hex::encode(ld),
            "inputs": inputs_json(&l, &b.ovmf, append),
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

pub(crate) fn run_sev(c: SevCmd) -> Result<()> {
    let b = &c.boot;
    let l = QemuBoot::load(&files(b), Tee::Sev)?;
    let append = b.append.as_deref();
    let kh = kernel_hashes(&l, append)?;
    let ld = l.sev().sev_digest(kh.as_ref())?;
    if c.json {
        let v = json!({
            "mode": "sev",
            "measurement": hex::encode(ld),
            "inputs": inputs_json(&l, &b.ovmf, append),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut lines = vec![("SEV digest", hex::encode(ld))];
        lines.extend(input_lines(&l, &b.ovmf, append));
        print_text(&lines);
    }
    Ok(())
}
