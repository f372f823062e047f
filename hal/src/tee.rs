//! The kernel's confidential-guest support, read from its build configuration
//! (`config-<release>`): SEV-SNP guest (`AMD_MEM_ENCRYPT`, `SEV_GUEST`), TDX guest
//! (`INTEL_TDX_GUEST`, `TDX_GUEST_DRIVER`), configfs-tsm reports (`TSM_REPORTS`, Linux
//! 6.7+, what the agent attests with), virtio-vsock (`VIRTIO_VSOCKETS`), and whether the
//! EFI stub measures the command line and initrd into TDX RTMR2 (Linux 6.9+). An option
//! counts when it is `=y`, or `=m` with its module in the image's module closure.
//! release.json records the result under `kernel.tee`; a kernel lacking something still
//! builds, with the gaps listed as warnings there and on stderr.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use cocos_measure::tdx_launch::{linux_version, LINUX_STUB_MEASURES_TDX};

use crate::error::BuildError;
use crate::kernel::ResolvedKernel;
use crate::modules::{canonical, Module};

/// The options checked, each with the module that provides it when built as `=m`
/// (`None`: a bool option that must be built in).
pub const OPTIONS: [(&str, Option<&str>); 6] = [
    ("AMD_MEM_ENCRYPT", None),
    ("SEV_GUEST", Some("sev_guest")),
    ("INTEL_TDX_GUEST", None),
    ("TDX_GUEST_DRIVER", Some("tdx_guest")),
    ("TSM_REPORTS", Some("tsm")),
    ("VIRTIO_VSOCKETS", Some("vmw_vsock_virtio_transport")),
];

/// A kernel build configuration: option (without `CONFIG_`) → value (`y`, `m`, a
/// string or number as written); `# CONFIG_X is not set` and absent options read `n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig(BTreeMap<String, String>);

impl KernelConfig {
    /// Parses `.config` text.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.strip_prefix("CONFIG_").and_then(|l| l.split_once('=')) {
                m.insert(k.to_owned(), v.trim().to_owned());
            }
        }
        Self(m)
    }

    /// An option's value, `n` when unset.
    pub fn get(&self, option: &str) -> &str {
        self.0.get(option).map_or("n", String::as_str)
    }
}

/// The TEE support of a kernel with this configuration, release and module closure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TeeSupport {
    /// Each option of [`OPTIONS`] (and `EFI_STUB`) as configured.
    pub config: BTreeMap<String, String>,
    /// `AMD_MEM_ENCRYPT` and `SEV_GUEST` usable.
    pub snp_guest: bool,
    /// `INTEL_TDX_GUEST` and `TDX_GUEST_DRIVER` usable.
    pub tdx_guest: bool,
    /// `TSM_REPORTS` usable (configfs-tsm, what the agent attests with).
    pub tsm_reports: bool,
    /// `VIRTIO_VSOCKETS` usable (the agent's production transport).
    pub vsock: bool,
    /// Linux ≥ 6.9 with the EFI stub: RTMR2 covers the command line and initrd.
    pub efi_stub_measures_tdx: bool,
    /// What is missing, and what to do about it.
    pub warnings: Vec<String>,
}

/// Checks `config` for a kernel `release` whose image loads `modules`.
pub fn check(config: &KernelConfig, release: &str, modules: &[Module]) -> TeeSupport {
    let mut warnings = Vec::new();
    let mut shown = BTreeMap::new();
    let mut usable = BTreeMap::new();
    for (option, module) in OPTIONS {
        let v = config.get(option);
        let ok = match (v, module) {
            ("y", _) => true,
            ("m", Some(m)) if modules.iter().any(|x| x.name == canonical(m)) => true,
            ("m", Some(m)) => {
                warnings.push(format!(
                    "CONFIG_{option}=m but module {m} is not in the image: add \"{m}\" to the spec's modules"
                ));
                false
            }
            _ => {
                warnings.push(format!(
                    "CONFIG_{option}={v}: this kernel lacks it{}",
                    if option == "TSM_REPORTS" {
                        " (configfs-tsm needs Linux 6.7+): the agent cannot produce attestation reports"
                    } else {
                        ""
                    }
                ));
                false
            }
        };
        shown.insert(option.to_owned(), v.to_owned());
        usable.insert(option, ok);
    }
    let on = |o: &str| usable.get(o).copied().unwrap_or(false);
    let efi_stub = config.get("EFI_STUB");
    shown.insert("EFI_STUB".to_owned(), efi_stub.to_owned());
    let new_enough = linux_version(release).is_some_and(|v| v >= LINUX_STUB_MEASURES_TDX);
    let efi_stub_measures_tdx = efi_stub == "y" && new_enough;
    if !efi_stub_measures_tdx {
        warnings.push(format!(
            "kernel {release}{}: its EFI stub does not measure the command line and initrd, so TDX RTMR2 stays zero and does not bind them (needs Linux {}.{}+ with CONFIG_EFI_STUB=y)",
            if efi_stub == "y" { "" } else { " has no EFI stub" },
            LINUX_STUB_MEASURES_TDX.0,
            LINUX_STUB_MEASURES_TDX.1
        ));
    }
    TeeSupport {
        config: shown,
        snp_guest: on("AMD_MEM_ENCRYPT") && on("SEV_GUEST"),
        tdx_guest: on("INTEL_TDX_GUEST") && on("TDX_GUEST_DRIVER"),
        tsm_reports: on("TSM_REPORTS"),
        vsock: on("VIRTIO_VSOCKETS"),
        efi_stub_measures_tdx,
        warnings,
    }
}

/// release.json's `kernel.tee` for a resolved kernel and its module closure. Without a
/// configuration file the support is unknown, and that is the warning.
pub fn record(k: &ResolvedKernel, modules: &[Module]) -> Result<Value, BuildError> {
    let Some(path) = &k.config else {
        return Ok(json!({
            "config": null,
            "warnings": [format!("no config-{} beside the kernel: its TEE support (SEV-SNP, TDX, configfs-tsm) is unknown", k.release)],
        }));
    };
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let support = check(&KernelConfig::parse(&text), &k.release, modules);
    Ok(serde_json::to_value(support).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIXIE: &str = "# comment\nCONFIG_INTEL_TDX_GUEST=y\nCONFIG_AMD_MEM_ENCRYPT=y\nCONFIG_EFI_STUB=y\nCONFIG_VIRTIO_VSOCKETS=m\nCONFIG_TSM_REPORTS=m\nCONFIG_SEV_GUEST=m\nCONFIG_TDX_GUEST_DRIVER=m\nCONFIG_LOCALVERSION=\"\"\n";
    const BOOKWORM: &str = "# CONFIG_INTEL_TDX_GUEST is not set\nCONFIG_AMD_MEM_ENCRYPT=y\nCONFIG_EFI_STUB=y\nCONFIG_VIRTIO_VSOCKETS=m\nCONFIG_SEV_GUEST=m\n";

    fn modules(names: &[&str]) -> Vec<Module> {
        names
            .iter()
            .map(|n| Module {
                name: (*n).into(),
                path: format!("kernel/{n}.ko.xz"),
            })
            .collect()
    }

    #[test]
    fn parses_values() {
        let c = KernelConfig::parse(TRIXIE);
        assert_eq!(c.get("INTEL_TDX_GUEST"), "y");
        assert_eq!(c.get("TSM_REPORTS"), "m");
        assert_eq!(c.get("LOCALVERSION"), "\"\"");
        assert_eq!(c.get("NOT_THERE"), "n");
        assert_eq!(KernelConfig::parse(BOOKWORM).get("INTEL_TDX_GUEST"), "n");
        assert_eq!(linux_version("6.12.57+deb13-amd64"), Some((6, 12)));
        assert_eq!(linux_version("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(linux_version("6.9"), Some((6, 9)));
        assert_eq!(linux_version("garbage"), None);
    }

    #[test]
    fn everything_with_the_modules() {
        let s = check(
            &KernelConfig::parse(TRIXIE),
            "6.12.57+deb13-amd64",
            &modules(&[
                "configfs",
                "tsm",
                "sev_guest",
                "tdx_guest",
                "vsock",
                "vmw_vsock_virtio_transport",
            ]),
        );
        assert!(
            s.snp_guest && s.tdx_guest && s.tsm_reports && s.vsock && s.efi_stub_measures_tdx,
            "{s:?}"
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.config["SEV_GUEST"], "m");
        assert_eq!(s.config["AMD_MEM_ENCRYPT"], "y");
        assert_eq!(s.config["EFI_STUB"], "y");
        assert_eq!(s.config.len(), 7);
    }

    #[test]
    fn modules_left_out_are_named() {
        let s = check(
            &KernelConfig::parse(TRIXIE),
            "6.12.57+deb13-amd64",
            &modules(&["tsm", "vmw_vsock_virtio_transport"]),
        );
        assert!(!s.snp_guest && !s.tdx_guest && s.tsm_reports && s.vsock);
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("add \"sev_guest\""),
            "{:?}",
            s.warnings
        );
        assert!(
            s.warnings[1].contains("add \"tdx_guest\""),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn an_old_kernel_builds_with_warnings() {
        let s = check(
            &KernelConfig::parse(BOOKWORM),
            "6.1.0-28-amd64",
            &modules(&["sev_guest", "vmw_vsock_virtio_transport"]),
        );
        assert!(s.snp_guest && !s.tdx_guest && !s.tsm_reports && !s.efi_stub_measures_tdx);
        let all = s.warnings.join("\n");
        for needle in [
            "CONFIG_INTEL_TDX_GUEST=n",
            "CONFIG_TDX_GUEST_DRIVER=n",
            "CONFIG_TSM_REPORTS=n",
            "Linux 6.7+",
            "RTMR2",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
    }

    #[test]
    fn record_without_a_config() {
        let k = ResolvedKernel {
            image: "vmlinuz".into(),
            modules_dir: None,
            release: "6.12.0".into(),
            source: Value::Null,
            config: None,
        };
        let v = record(&k, &[]).unwrap();
        assert_eq!(v["config"], Value::Null);
        assert!(v["warnings"][0].as_str().unwrap().contains("unknown"));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config-6.12.0");
        std::fs::write(&p, TRIXIE).unwrap();
        let k = ResolvedKernel {
            config: Some(p),
            ..k
        };
        let v = record(&k, &modules(&["tsm"])).unwrap();
        assert_eq!(v["tsm_reports"], true);
        assert_eq!(v["config"]["TSM_REPORTS"], "m");
    }
}
