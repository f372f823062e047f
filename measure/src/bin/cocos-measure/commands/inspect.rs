//! `cocos-measure inspect` and `vcpu-types`: what a firmware supports and why, its
//! sections and edk2 behaviours; the known vCPU types.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

use cocos_measure::cpu::{cpu_sig, VCPU_TYPES};
use cocos_measure::inputs;
use cocos_measure::inspect::capabilities;
use cocos_measure::ovmf::{guid_name, Parsed};

#[derive(Args)]
pub(crate) struct InspectCmd {
    /// Firmware image
    #[arg(long, value_name = "FILE")]
    pub(crate) ovmf: PathBuf,
    /// JSON output
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run_inspect(c: InspectCmd) -> Result<()> {
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
            "sha256": hex::encode(fw.sha256()),
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
        hex::encode(fw.sha256())
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

pub(crate) fn run_vcpu_types(as_json: bool) -> Result<()> {
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
