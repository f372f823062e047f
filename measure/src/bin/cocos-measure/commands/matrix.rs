//! `cocos-measure matrix`: SNP digests for every vCPU count, type and guest-feature value.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use cocos_measure::cpu;
use cocos_measure::inputs;
use cocos_measure::snp::check_vcpus;
use cocos_measure::{SnpParams, SnpPrepared, VmmType};

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
