//! release.json: name, version, every artifact (path relative to the output directory,
//! size, SHA-256), the kernel (release, source, TEE support from [`crate::tee`]), the
//! default command line, the modules, and the launch measurements the image must
//! produce, computed with `cocos-measure`'s library for the spec's matrix. Where a
//! firmware cannot measure the kernel (no SNP_KERNEL_HASHES, as in Debian's OVMF) the
//! manifest says so instead of giving a digest. The type is
//! [`cocos_proto::release::Manifest`], which the manager reads; [`to_bytes`] sorts the
//! keys, and no absolute path appears, so the file is reproducible across checkouts.

use cocos_measure::machine::parse_memory;
use cocos_measure::rtmr::Platform;
use cocos_measure::tdx_launch::TdxLaunch;
use cocos_measure::tdx_rules::Stated;
use cocos_measure::{QemuBoot, SnpLaunch, Tee, Vcpu, VmmType};
use cocos_proto::release::{
    self, Artifact, ArtifactKind, FirmwareRef, Initramfs, KernelInfo, Manifest, Measurements,
    RuleRef, SnpDigest, SnpReference, TdxLaunchRef, TdxReference,
};

use crate::compress::Compression;
use crate::digest::sha256_hex;
use crate::error::BuildError;
use crate::kernel::ResolvedKernel;
use crate::modules::Module;
use crate::spec::Spec;

fn measure_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Measure(e.to_string())
}

/// Loads one boot of this release through the measurement facade; also returns the
/// firmware's release.json entry (file name, SHA-256).
fn boot(
    spec: &Spec,
    p: &std::path::Path,
    kernel: &[u8],
    initrd: &[u8],
    tee: Tee,
) -> Result<(QemuBoot, FirmwareRef), BuildError> {
    let path = spec.resolve(p);
    let data = std::fs::read(&path).map_err(|e| BuildError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let entry = FirmwareRef {
        file: p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned(),
        sha256: sha256_hex(&data),
    };
    let boot = QemuBoot::from_bytes(data, Some(kernel.to_vec()), Some(initrd), tee)
        .map_err(|e| measure_err(format!("{}: {e}", path.display())))?;
    Ok((boot, entry))
}

fn snp(spec: &Spec, kernel: &[u8], initrd: &[u8]) -> Result<Option<SnpReference>, BuildError> {
    let Some(m) = &spec.measurements.snp else {
        return Ok(None);
    };
    let (boot, firmware) = boot(
        spec,
        &m.firmware,
        kernel,
        initrd,
        Tee::Snp { ovmf_hash: None },
    )?;
    let snp = boot.snp().map_err(measure_err)?;
    if !snp.supports_kernel_hashes() {
        return Ok(Some(SnpReference {
            firmware,
            vmm: None,
            digests: Vec::new(),
            unsupported: Some("this firmware has no SNP_KERNEL_HASHES section, so an SNP launch cannot measure the kernel, initrd or command line; build OVMF from OvmfPkg/AmdSev/AmdSevX64.dsc (scripts/build-ovmf.sh) to get digests".into()),
        }));
    }
    let mut digests = Vec::new();
    for t in &m.vcpu_types {
        let vcpu = Vcpu::named(t).map_err(measure_err)?;
        for &vcpus in &m.vcpus {
            for &guest_features in &m.guest_features {
                let launch = SnpLaunch {
                    vcpus,
                    vcpu,
                    guest_features,
                    vmm: VmmType::Qemu,
                };
                let d = snp.measure(&spec.cmdline, &launch).map_err(measure_err)?;
                digests.push(SnpDigest {
                    vcpu_type: d.vcpu_type.unwrap_or_default(),
                    vcpus,
                    guest_features: format!("{guest_features:#x}"),
                    digest: hex::encode(d.measurement),
                });
            }
        }
    }
    Ok(Some(SnpReference {
        firmware,
        vmm: Some("QEMU".into()),
        digests,
        unsupported: None,
    }))
}

fn tdx(spec: &Spec, kernel: &[u8], initrd: &[u8]) -> Result<Option<TdxReference>, BuildError> {
    let Some(t) = &spec.measurements.tdx else {
        return Ok(None);
    };
    let (boot, firmware) = boot(spec, &t.firmware, kernel, initrd, Tee::Tdx)?;
    let tdx = boot.tdx().map_err(measure_err)?;
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
            let m = tdx
                .measure(&spec.cmdline, &Platform::default(), &launch)
                .map_err(measure_err)?;
            let rtmr0 = if m.extends_rtmrs {
                "depends on the host's QEMU ACPI tables and boot variables: compute with `cocos-measure tdx --acpi-* --efivars` on the host".to_owned()
            } else {
                hex::encode([0u8; 48])
            };
            launches.push(TdxLaunchRef {
                memory: mem.clone(),
                qemu_version: qemu.map(|q| q.to_string()),
                mrtd: hex::encode(m.mrtd),
                rtmr0,
                rtmr1: m.rtmr[1].map(hex::encode),
                rtmr2: m.rtmr[2].map(hex::encode),
                rtmrs_extended: m.extends_rtmrs,
                rules: m
                    .rules
                    .iter()
                    .map(|r| RuleRef {
                        setting: r.setting.to_string(),
                        value: r.value.clone(),
                        source: serde_json::to_value(r.source)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        why: r.why.clone(),
                    })
                    .collect(),
                notes: m.notes,
            });
        }
    }
    // Say plainly when these values cannot tell a verifier what the TD runs.
    let mut said = std::collections::BTreeSet::new();
    for n in launches.iter().flat_map(|l| &l.notes) {
        if said.insert(n.clone()) {
            crate::report::warn(&format!("TDX ({}): {n}", t.firmware.display()));
        }
    }
    Ok(Some(TdxReference {
        firmware,
        edk2: serde_json::to_value(tdx.firmware().behaviour())?,
        launches,
    }))
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
) -> Result<Manifest, BuildError> {
    let (kernel_name, kernel) = kernel;
    let (initrd_name, initrd_bytes) = initrd;
    Ok(Manifest {
        schema: release::SCHEMA,
        name: spec.name.clone(),
        version: spec.version.clone(),
        kernel: KernelInfo {
            release: k.release.clone(),
            source: k.source.clone(),
            tee: crate::tee::record(k, modules)?,
        },
        cmdline: spec.cmdline.clone(),
        initramfs: Initramfs {
            compression: serde_json::to_value(compression)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            mtime,
        },
        modules: modules.iter().map(|m| m.name.clone()).collect(),
        artifacts: vec![
            Artifact {
                kind: ArtifactKind::Kernel,
                path: kernel_name.to_owned(),
                size: kernel.len() as u64,
                sha256: sha256_hex(kernel),
            },
            Artifact {
                kind: ArtifactKind::Initrd,
                path: initrd_name.to_owned(),
                size: initrd_bytes.len() as u64,
                sha256: sha256_hex(initrd_bytes),
            },
        ],
        measurements: Measurements {
            snp: snp(spec, kernel, initrd_bytes)?,
            tdx: tdx(spec, kernel, initrd_bytes)?,
        },
    })
}

/// release.json's bytes: the manifest with its keys sorted, pretty-printed, with a
/// final newline (the same bytes for the same inputs on any machine).
pub fn to_bytes(m: &Manifest) -> Result<Vec<u8>, BuildError> {
    let mut json = serde_json::to_vec_pretty(&serde_json::to_value(m)?)?;
    json.push(b'\n');
    Ok(json)
}
