//! What the SEV commands print: digests as hex or base64, the inputs and settings as
//! JSON or labelled text, VMSA dumps.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use cocos_measure::inputs::Loaded;
use cocos_measure::{Firmware, KernelHashes, VmmType};

pub(crate) fn encode(ld: &[u8], format: &str) -> String {
    if format == "base64" {
        base64::engine::general_purpose::STANDARD.encode(ld)
    } else {
        hex::encode(ld)
    }
}

pub(crate) fn kernel_hashes<T>(l: &Loaded<T>, append: Option<&str>) -> Option<KernelHashes> {
    l.kernel.as_ref().map(|k| {
        KernelHashes::new(
            k.sha256,
            l.initrd.as_ref().map(|i| i.sha256),
            append.unwrap_or_default().as_bytes(),
        )
    })
}

pub(crate) fn inputs_json<T>(
    l: &Loaded<T>,
    ovmf: &Path,
    append: Option<&str>,
    fw_sha: &[u8],
) -> Value {
    json!({
        "ovmf": {"path": ovmf, "size": l.firmware.size(), "sha256": hex::encode(fw_sha)},
        "kernel": l.kernel,
        "initrd": l.initrd,
        "cmdline": l.kernel.as_ref().map(|_| append.unwrap_or_default()),
        "cmdline_sha256": l.kernel.as_ref().map(|_| hex::encode(
            cocos_measure::hashes::cmdline_sha256(append.unwrap_or_default().as_bytes()))),
    })
}

pub(crate) fn firmware_sha256(fw: &Firmware) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(fw.data()).into()
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

pub(crate) fn input_lines<T>(
    l: &Loaded<T>,
    ovmf: &Path,
    append: Option<&str>,
) -> Vec<(&'static str, String)> {
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
