//! release.json: name, version, every artifact (path relative to the output directory,
//! size, SHA-256), the kernel (release, source, TEE support from [`crate::tee`]), the
//! default command line, the modules, and the launch measurements the image must
//! produce, computed with `cocos-measure`'s library for the spec's matrix. Where a
//! firmware cannot measure the kernel (no SNP_KERNEL_HASHES, as in Debian's OVMF) the
//! manifest says so instead of giving a digest. Keys are sorted and no absolute path
//! appears, so the file is reproducible across checkouts.

use cocos_measure::machine::parse_memory;
use cocos_measure::rtmr::Platform;
use cocos_measure::tdx_launch::{self, TdxFirmware, TdxInitrd, TdxKernel, TdxLaunch};
use cocos_measure::tdx_rules::Stated;
use cocos_measure::{cpu, Firmware, KernelHashes, SnpParams, SnpPrepared, VmmType};
use serde_json::{json, Value};

use crate::compress::Compression;
use crate::digest::sha256_hex;
use crate::error::BuildError;
use crate::kernel::ResolvedKernel;
use crate::modules::Module;
use crate::spec::Spec;

fn measure_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Measure(e.to_string())
}

/// Reads and parses a firmware; also returns its release.json entry (file name, SHA-256).
fn firmware(spec: &Spec, p: &std::path::Path) -> Result<(Firmware, Value), BuildError> {
    let path = spec.resolve(p);
    let data = std::fs::read(&path).map_err(|e| BuildError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let entry = json!({"file": p.file_name().and_then(|n| n.to_str()).unwrap_or(""), "sha256": sha256_hex(&data)});
    let fw = Firmware::parse(data).map_err(|e| measure_err(format!("{}: {e}", path.display())))?;
    Ok((fw, entry))
}

fn snp(spec: &Spec, kernel: &[u8], initrd: &[u8]) -> Result<Value, BuildError> {
    let Some(m) = &spec.measurements.snp else {
        return Ok(Value::Null);
    };
    let (fw, fw_entry) = firmware(spec, &m.firmware)?;
    let prepared = SnpPrepared::new(&fw).map_err(measure_err)?;
    if !prepared.supports_kernel_hashes() {
        return Ok(json!({
            "firmware": fw_entry,
            "unsupported": "this firmware has no SNP_KERNEL_HASHES section, so an SNP launch cannot measure the kernel, initrd or command line; build OVMF from OvmfPkg/AmdSev/AmdSevX64.dsc (scripts/build-ovmf.sh) to get digests",
        }));
    }
    let hashes = KernelHashes::from_bytes(kernel, Some(initrd), spec.cmdline.as_bytes());
    let mut digests = Vec::new();
    for t in &m.vcpu_types {
        let (canon, sig) = cpu::lookup(t).map_err(measure_err)?;
        for &vcpus in &m.vcpus {
            for &gf in &m.guest_features {
                let p = SnpParams {
                    vcpus,
                    vcpu_sig: sig,
                    guest_features: gf,
                    vmm: VmmType::Qemu,
                };
                let d = prepared.digest(Some(&hashes), &p).map_err(measure_err)?;
                digests.push(json!({"vcpu_type": canon, "vcpus": vcpus, "guest_features": format!("{gf:#x}"), "digest": hex::encode(d)}));
            }
        }
    }
    Ok(json!({"firmware": fw_entry, "vmm": "QEMU", "digests": digests}))
}

fn tdx(spec: &Spec, kernel: &[u8], initrd: &[u8]) -> Result<Value, BuildError> {
    let Some(t) = &spec.measurements.tdx else {
        return Ok(Value::Null);
    };
    let (fw, fw_entry) = firmware(spec, &t.firmware)?;
    let fw = TdxFirmware::new(fw).map_err(measure_err)?;
    let k = TdxKernel::new(kernel.to_vec()).map_err(measure_err)?;
    let i = TdxInitrd::from_bytes(initrd);
    let qemus = spec.tdx_qemu_versions()?;
    let mut launches = Vec::new();
    for qemu in &qemus {
        for mem in &t.memory {
            let memory = parse_memory(mem).map_err(measure_err)?;
            let launch = TdxLaunch {
                memory,
                stated: Stated {
                    qemu: *qemu,
                    ..Stated::default()
                },
                ..TdxLaunch::default()
            };
            let m = tdx_launch::measure_launch(
                &fw,
                Some(&k),
                Some(&i),
                &spec.cmdline,
                &Platform::default(),
                &launch,
            )
            .map_err(measure_err)?;
            let rtmr0 = if m.extends_rtmrs {
                json!("depends on the host's QEMU ACPI tables and boot variables: compute with `cocos-measure tdx --acpi-* --efivars` on the host")
            } else {
                json!(hex::encode([0u8; 48]))
            };
            launches.push(json!({
                "memory": mem,
                "qemu_version": qemu,
                "mrtd": hex::encode(m.mrtd),
                "rtmr0": rtmr0,
                "rtmr1": m.rtmr[1].map(hex::encode),
                "rtmr2": m.rtmr[2].map(hex::encode),
                "rtmrs_extended": m.extends_rtmrs,
                "rules": m.rules,
                "notes": m.notes,
            }));
        }
    }
    // Say plainly when these values cannot tell a verifier what the TD runs.
    let mut said = std::collections::BTreeSet::new();
    for l in &launches {
        for n in l
            .get("notes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = n.as_str() {
                if said.insert(n.to_owned()) {
                    crate::report::warn(&format!("TDX ({}): {n}", t.firmware.display()));
                }
            }
        }
    }
    Ok(json!({"firmware": fw_entry, "edk2": fw.behaviour(), "launches": launches}))
}

/// Builds the release manifest.
pub fn manifest(
    spec: &Spec,
    k: &ResolvedKernel,
    modules: &[Module],
    compression: Compression,
    mtime: u32,
    kernel: (&str, &[u8]),
    initrd: (&str, &[u8]),
) -> Result<Value, BuildError> {
    let (kernel_name, kernel) = kernel;
    let (initrd_name, initrd_bytes) = initrd;
    Ok(json!({
        "name": spec.name,
        "version": spec.version,
        "kernel": {"release": k.release, "source": k.source, "tee": crate::tee::record(k, modules)?},
        "cmdline": spec.cmdline,
        "initramfs": {"compression": compression, "mtime": mtime},
        "modules": modules.iter().map(|m| &m.name).collect::<Vec<_>>(),
        "artifacts": [
            {"kind": "kernel", "path": kernel_name, "size": kernel.len(), "sha256": sha256_hex(kernel)},
            {"kind": "initrd", "path": initrd_name, "size": initrd_bytes.len(), "sha256": sha256_hex(initrd_bytes)},
        ],
        "measurements": {"snp": snp(spec, kernel, initrd_bytes)?, "tdx": tdx(spec, kernel, initrd_bytes)?},
    }))
}
