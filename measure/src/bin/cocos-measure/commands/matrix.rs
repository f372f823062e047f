//! `cocos-measure matrix`: SNP digests for every vCPU count, type and guest-feature value.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use cocos_measure::snp::check_vcpus;
use cocos_measure::{QemuBoot, Tee, Vcpu, VmmType};

use crate::cli::*;
use crate::pyint::*;
use crate::render::*;

#[derive(Args)]
pub(crate) struct MatrixCmd {
    #[command(flatten)]
    pub(crate) boot: BootArgs,
    /// vCPU counts, comma-separated
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', required = true)]
    pub(crate) vcpus: Vec<u64>,
    /// vCPU types, comma-separated
    #[arg(
        long,
        value_name = "TYPE,TYPE,…",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) vcpu_types: Vec<String>,
    /// Guest-feature values, comma-separated
    #[arg(long, value_name = "BITS,…", value_delimiter = ',', default_value = "0x1", value_parser = parse_u64_auto)]
    pub(crate) guest_features: Vec<u64>,
    /// VMM that builds the VMSAs: QEMU, ec2 or gce
    #[arg(long, value_name = "VMM", default_value = "QEMU", value_parser = parse_vmm)]
    pub(crate) vmm_type: VmmType,
    /// JSON output
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run_matrix(c: MatrixCmd) -> Result<()> {
    let vcpus: Vec<u32> = c
        .vcpus
        .iter()
        .map(|&v| check_vcpus(v))
        .collect::<Result<_, _>>()?;
    let types: Vec<Vcpu> = c
        .vcpu_types
        .iter()
        .map(|t| Vcpu::named(t))
        .collect::<Result<_, _>>()?;
    let b = &c.boot;
    let l = QemuBoot::load(&super::sev::files(b), Tee::Snp { ovmf_hash: None })?;
    let append = b.append.as_deref();
    let snp = l.snp()?;
    let rows = snp.matrix(
        append.unwrap_or_default(),
        &types,
        &c.guest_features,
        &vcpus,
        c.vmm_type,
    )?;
    if c.json {
        let v = json!({
            "mode": "snp",
            "vmm_type": c.vmm_type.name(),
            "ovmf_hash": hex::encode(snp.ovmf_hash()),
            "inputs": inputs_json(&l, &b.ovmf, append),
            "measurements": rows.iter().map(|m| json!({
                "vcpus": m.vcpus, "vcpu_type": m.vcpu_type, "vcpu_sig": format!("{:#x}", m.vcpu_sig),
                "guest_features": format!("{:#x}", m.guest_features), "measurement": hex::encode(m.measurement),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<6} {:<15} {:<9} measurement",
            "vcpus", "vcpu-type", "features"
        );
        for m in rows {
            println!(
                "{:<6} {:<15} {:<9} {}",
                m.vcpus,
                m.vcpu_type.as_deref().unwrap_or("custom"),
                format!("{:#x}", m.guest_features),
                hex::encode(m.measurement)
            );
        }
    }
    Ok(())
}
