//! What the SEV commands print: digests as hex or base64, the inputs and settings as
//! JSON or labelled text, VMSA dumps.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use cocos_measure::{KernelHashes, QemuBoot, VmmType};

pub(crate) fn encode(ld: &[u8], format: &str) -> String {
    if format == "base64" {
        base64::engine::general_purpose::STANDARD.encode(ld)
    } else {
        hex::encode(ld)
    }
}

pub(crate) fn kernel_hashes(b: &QemuBoot, append: Option<&str>) -> Result<Option<KernelHashes>> {
    Ok(b.kernel_hashes(append.unwrap_or_default())?)
}

pub(crate) fn inputs_json(b: &QemuBoot, ovmf: &Path, append: Option<&str>) -> Value {
    json!({
        "ovmf": {"path": ovmf, "size": b.firmware().size(), "sha256": hex::encode(b.firmware_sha256())},
        "kernel": b.kernel(),
        "initrd": b.initrd(),
        "cmdline": b.kernel().map(|_| append.unwrap_or_default()),
        "cmdline_sha256": b.kernel().map(|_| hex::encode(
            cocos_measure::hashes::cmdline_sha256(append.unwrap_or_default().as_bytes()))),
    })
}

pub(crate) fn write_vmsas(pages: &[Box<[u8; 4096]>]) -> Result<()> {
    for (i, p) in pages.iter().enumerate() {
        let name = format!("vmsa{i}.bin");
        std::fs::write(&name, &p[..]).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}

pub(crate) fn settings_json(vcpus: u32, sig: u64, name: Option<&str>, vmm: VmmType) -> Value {
    json!({"vcpus": vcpus, "vcpu_type": name, "vcpu_sig": format!("{sig:#x}"), "vmm_type": vmm.name()})
}

pub(crate) fn print_text(lines: &[(&str, String)]) {
    for (k, v) in lines {
        println!("{k:<16}{v}");
    }
}

pub(crate) fn input_lines(
    b: &QemuBoot,
    ovmf: &Path,
    append: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "ovmf",
        format!("{} ({} bytes)", ovmf.display(), b.firmware().size()),
    )];
    let line = |path: &Option<std::path::PathBuf>, sha: Option<[u8; 32]>| {
        format!(
            "{} sha256 {}",
            path.as_deref().unwrap_or(Path::new("")).display(),
            sha.map(hex::encode).unwrap_or_default()
        )
    };
    if let Some(k) = b.kernel() {
        out.push(("kernel", line(&k.path, k.sha256)));
        match b.initrd() {
            Some(i) => out.push(("initrd", line(&i.path, i.sha256))),
            None => out.push(("initrd", "(none)".into())),
        }
        out.push(("cmdline", format!("{:?}", append.unwrap_or_default())));
    }
    out
}
