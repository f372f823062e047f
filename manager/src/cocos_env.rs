//! The `MANAGER_*` environment, checked before the settings are read: our own names
//! pass; cocos' Go manager's names are taken where we have the setting (rewritten to
//! ours: `MANAGER_GRPC_HOST`/`_PORT`, `MANAGER_HTTP_HOST`/`_PORT`,
//! `MANAGER_QEMU_ENABLE_SEV_SNP`/`_ENABLE_TDX`, `MANAGER_QEMU_ENABLE_KVM`, …) and
//! refused, each with what it is in cocos and what to do, where we do not; any other
//! `MANAGER_*` variable is refused as unknown. An env file written for cocos is never
//! silently half-applied. (Names from ultravioletrs/cocos `cmd/manager/main.go` and
//! `manager/qemu/config.go`, plus the names its `cocos-manager.env` documents.)

use std::collections::BTreeMap;

/// Cocos' names we have no setting for, with what they mean there and what to do.
const NO_EQUIVALENT: &[(&str, &str)] = &[
    ("MANAGER_INSTANCE_ID", "cocos' instance id for tracing; cocos-manager has none"),
    ("MANAGER_ATTESTATION_POLICY_BINARY_PATH", "where cocos finds igvmmeasure; cocos-manager computes measurements itself"),
    ("MANAGER_ATTESTATION_POLICY_BINARY", "where cocos finds its policy helper; cocos-manager computes measurements itself"),
    ("MANAGER_IGVMMEASURE_BINARY", "cocos' igvmmeasure path; cocos-manager computes measurements itself"),
    ("MANAGER_PCR_VALUES", "cocos' vTPM PCR values file; cocos-manager has no vTPM policy"),
    ("MANAGER_EOS_VERSION", "the guest image version cocos reports; cocos-manager reports release.json's name and version"),
    ("MANAGER_GRPC_SERVER_READ_TIMEOUT", "unused by cocos' gRPC server; cocos-manager has fixed timeouts"),
    ("MANAGER_GRPC_SERVER_WRITE_TIMEOUT", "unused by cocos' gRPC server; cocos-manager has fixed timeouts"),
    ("MANAGER_GRPC_SERVER_READ_HEADER_TIMEOUT", "unused by cocos' gRPC server; cocos-manager has fixed timeouts"),
    ("MANAGER_GRPC_SERVER_IDLE_TIMEOUT", "unused by cocos' gRPC server; cocos-manager has fixed timeouts"),
    ("MANAGER_GRPC_SERVER_MAX_HEADER_BYTES", "unused by cocos' gRPC server"),
    ("MANAGER_GRPC_TIMEOUT", "cocos-cli's client timeout, not a manager setting"),
    ("MANAGER_HTTP_SERVER_CA_CERTS", "unused by cocos' HTTP server"),
    ("MANAGER_HTTP_SERVER_READ_TIMEOUT", "cocos' HTTP read timeout; cocos-manager gives a request's headers and body 10 s each"),
    ("MANAGER_HTTP_SERVER_WRITE_TIMEOUT", "cocos' HTTP write timeout; cocos-manager has fixed timeouts"),
    ("MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT", "cocos' HTTP header timeout; cocos-manager gives headers 10 s"),
    ("MANAGER_HTTP_SERVER_IDLE_TIMEOUT", "cocos' HTTP idle timeout; cocos-manager has fixed timeouts"),
    ("MANAGER_HTTP_SERVER_MAX_HEADER_BYTES", "cocos' HTTP header limit; cocos-manager has a fixed one"),
    ("MANAGER_QEMU_ENABLE_DISK", "cocos' per-VM disk boot; cocos-manager boots the release's kernel and initramfs"),
    ("MANAGER_QEMU_USE_SUDO", "running QEMU through sudo; run cocos-manager as a user that may use KVM and the TEE devices"),
    ("MANAGER_QEMU_MACHINE", "the QEMU machine type; cocos-manager always uses q35 (the measurements assume it)"),
    ("MANAGER_QEMU_MEM_ID", "the id of QEMU's memory backend; cocos-manager names its own objects"),
    ("MANAGER_QEMU_MEMORY_SLOTS", "memory hotplug slots; cocos-manager's VMs have fixed memory"),
    ("MANAGER_QEMU_MAX_MEMORY", "memory hotplug maximum; cocos-manager's VMs have fixed memory"),
    ("MANAGER_QEMU_OVMF_CODE_IF", "cocos' pflash firmware drive; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_CODE_FORMAT", "cocos' pflash firmware drive; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_CODE_UNIT", "cocos' pflash firmware drive; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_CODE_FILE", "cocos' pflash firmware code (with MANAGER_QEMU_OVMF_VARS_FILE); cocos-manager boots one unified OVMF with -bios, as SEV-SNP and TDX need: set MANAGER_QEMU_OVMF_FILE"),
    ("MANAGER_QEMU_OVMF_CODE_READONLY", "cocos' pflash firmware drive; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_VARS_IF", "cocos' pflash variable store; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_VARS_FORMAT", "cocos' pflash variable store; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_VARS_UNIT", "cocos' pflash variable store; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_VARS_FILE", "cocos' pflash variable store; cocos-manager boots one unified OVMF with -bios (MANAGER_QEMU_OVMF_FILE)"),
    ("MANAGER_QEMU_OVMF_VERSION", "the edk2 version cocos reports; cocos-manager identifies the firmware by its SHA-256 in release.json"),
    ("MANAGER_QEMU_NETDEV_ID", "the id of cocos' NIC; cocos-manager names its own devices"),
    ("MANAGER_QEMU_HOST_FWD_AGENT", "a fixed host port; cocos-manager takes one per VM from --host-fwd-range"),
    ("MANAGER_QEMU_VIRTIO_NET_PCI_DISABLE_LEGACY", "cocos' NIC options; cocos-manager sets its own"),
    ("MANAGER_QEMU_VIRTIO_NET_PCI_IOMMU_PLATFORM", "cocos' NIC options; cocos-manager sets its own"),
    ("MANAGER_QEMU_VIRTIO_NET_PCI_ADDR", "cocos' NIC options; cocos-manager sets its own"),
    ("MANAGER_QEMU_VIRTIO_NET_PCI_ROMFILE", "cocos' NIC options; cocos-manager sets its own"),
    ("MANAGER_QEMU_SRC_DISK_FILE", "cocos' disk boot; cocos-manager boots the release's kernel and initramfs"),
    ("MANAGER_QEMU_DST_DISK_FILE", "cocos' disk boot; cocos-manager boots the release's kernel and initramfs"),
    ("MANAGER_QEMU_DISK_ID", "cocos' disk boot; cocos-manager boots the release's kernel and initramfs"),
    ("MANAGER_QEMU_DISK_FORMAT", "cocos' disk boot; cocos-manager boots the release's kernel and initramfs"),
    ("MANAGER_QEMU_DISK_SCSI_ID", "cocos' disk boot; cocos-manager boots the release's kernel and initramfs"),
    ("MANAGER_QEMU_DISK_IMG_KERNEL_FILE", "the kernel cocos boots; cocos-manager boots the kernel release.json names (--release), checked by hash"),
    ("MANAGER_QEMU_DISK_IMG_ROOTFS_FILE", "the initramfs cocos boots; cocos-manager boots the initrd release.json names (--release), checked by hash"),
    ("MANAGER_QEMU_KERNEL_CMDLINE", "the guest command line; cocos-manager uses the release's (it is measured): change it in the HAL spec"),
    ("MANAGER_QEMU_SEV_SNP_ID", "the id of QEMU's sev-snp-guest object; cocos-manager names its own objects"),
    ("MANAGER_QEMU_ENABLE_HOST_DATA", "cocos' switch for SNP host data; cocos-manager binds host data to every SNP launch (or takes MANAGER_QEMU_HOST_DATA)"),
    ("MANAGER_QEMU_TDX_ID", "the id of QEMU's tdx-guest object; cocos-manager names its own objects"),
    ("MANAGER_QEMU_QUOTE_GENERATION_PORT", "the QGS vsock port; give cocos-manager the QGS socket with MANAGER_QEMU_TDX_QUOTE_SOCKET"),
    ("MANAGER_QEMU_IGVM_ID", "cocos' IGVM (COCONUT-SVSM) boot; cocos-manager boots OVMF directly"),
    ("MANAGER_QEMU_IGVM_FILE", "cocos' IGVM (COCONUT-SVSM) boot; cocos-manager boots OVMF directly"),
    ("MANAGER_QEMU_GPU_BDF", "GPU passthrough; cocos-manager has none"),
    ("MANAGER_QEMU_GPU_PCIE_ROOT_PORT", "GPU passthrough; cocos-manager has none"),
    ("MANAGER_QEMU_GPU_PCIE_BUS", "GPU passthrough; cocos-manager has none"),
    ("MANAGER_QEMU_GPU_FW_CFG_MMIO_MB", "GPU passthrough; cocos-manager has none"),
    ("MANAGER_QEMU_NO_GRAPHIC", "cocos-manager always runs QEMU with -nographic"),
    ("MANAGER_QEMU_MONITOR", "QEMU's monitor; cocos-manager uses QMP on a per-VM socket"),
    ("MANAGER_QEMU_CERTS_MOUNT", "cocos' 9p certificate share; cocos-manager shares no host directories with guests"),
    ("MANAGER_QEMU_ENV_MOUNT", "cocos' 9p environment share; cocos-manager shares no host directories with guests"),
];

/// Why the environment cannot be used: one line, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EnvError(String);

fn truthy(name: &str, v: &str) -> Result<bool, EnvError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(EnvError(format!("{name}={v:?}: expected true or false"))),
    }
}

/// A cocos host (its default is "localhost") as an address we can bind.
fn host(h: &str) -> String {
    match h.trim() {
        "" | "localhost" => "127.0.0.1".into(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.into(),
    }
}

/// Checks `vars` (the process environment) against `ours` (the environment names our
/// settings read) and returns the variables to set so that cocos' names take effect as
/// ours. Variables not starting with `MANAGER_` are ignored.
pub fn translate(
    vars: &[(String, String)],
    ours: &[String],
) -> Result<Vec<(String, String)>, EnvError> {
    let env: BTreeMap<&str, &str> = vars
        .iter()
        .filter(|(k, _)| k.starts_with("MANAGER_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let is_ours = |k: &str| ours.iter().any(|o| o == k);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |ours_name: &str, value: String, from: &str| -> Result<(), EnvError> {
        match env.get(ours_name) {
            Some(v) if *v != value => Err(EnvError(format!(
                "{from} says {value:?} but {ours_name} says {v:?}: set one of them"
            ))),
            Some(_) => Ok(()),
            None => {
                out.push((ours_name.to_owned(), value));
                Ok(())
            }
        }
    };
    for (api, ours_name) in [
        ("GRPC", "MANAGER_GRPC_LISTEN"),
        ("HTTP", "MANAGER_HTTP_ADDR"),
    ] {
        let (h, p) = (format!("MANAGER_{api}_HOST"), format!("MANAGER_{api}_PORT"));
        match (env.get(h.as_str()), env.get(p.as_str())) {
            (_, Some(port)) if !port.trim().is_empty() => {
                let port: u16 = port
                    .trim()
                    .parse()
                    .map_err(|_| EnvError(format!("{p}={port:?}: expected a port number")))?;
                let host = host(env.get(h.as_str()).copied().unwrap_or("localhost"));
                set(ours_name, format!("{host}:{port}"), &format!("{h}/{p}"))?;
            }
            (Some(hv), _) if !hv.trim().is_empty() => {
                return Err(EnvError(format!(
                    "{h}={hv:?} without {p}: cocos serves nothing then; set {p}, or {ours_name} (host:port or unix:/path)"
                )));
            }
            _ => {}
        }
    }
    // HTTP TLS settings: cocos-manager serves both APIs with one certificate.
    for (http, grpc) in [
        ("MANAGER_HTTP_SERVER_CERT", "MANAGER_GRPC_SERVER_CERT"),
        ("MANAGER_HTTP_SERVER_KEY", "MANAGER_GRPC_SERVER_KEY"),
        (
            "MANAGER_HTTP_CLIENT_CA_CERTS",
            "MANAGER_GRPC_CLIENT_CA_CERTS",
        ),
    ] {
        if let Some(v) = env.get(http).filter(|v| !v.is_empty()) {
            set(
                grpc,
                (*v).to_owned(),
                &format!("{http} (one certificate serves both APIs)"),
            )?;
        }
    }
    let snp = env
        .get("MANAGER_QEMU_ENABLE_SEV_SNP")
        .map(|v| truthy("MANAGER_QEMU_ENABLE_SEV_SNP", v))
        .transpose()?
        .unwrap_or(false);
    let tdx = env
        .get("MANAGER_QEMU_ENABLE_TDX")
        .map(|v| truthy("MANAGER_QEMU_ENABLE_TDX", v))
        .transpose()?
        .unwrap_or(false);
    match (snp, tdx) {
        (true, true) => {
            return Err(EnvError(
                "MANAGER_QEMU_ENABLE_SEV_SNP and MANAGER_QEMU_ENABLE_TDX are both true: a manager launches one TEE kind".into(),
            ))
        }
        (true, false) => set("MANAGER_TEE", "snp".into(), "MANAGER_QEMU_ENABLE_SEV_SNP")?,
        (false, true) => set("MANAGER_TEE", "tdx".into(), "MANAGER_QEMU_ENABLE_TDX")?,
        (false, false) => {}
    }
    if let Some(v) = env.get("MANAGER_QEMU_ENABLE_KVM") {
        let accel = if truthy("MANAGER_QEMU_ENABLE_KVM", v)? {
            "kvm"
        } else {
            "tcg"
        };
        set(
            "MANAGER_QEMU_ACCEL",
            accel.into(),
            "MANAGER_QEMU_ENABLE_KVM",
        )?;
    }
    // The spelling cocos' env file documents for the C-bit position.
    if let Some(v) = env.get("MANAGER_QEMU_SEV_SNP_CBITPOS") {
        set(
            "MANAGER_QEMU_SEV_SNP_CBIT_POS",
            (*v).to_owned(),
            "MANAGER_QEMU_SEV_SNP_CBITPOS",
        )?;
    }
    const TRANSLATED: &[&str] = &[
        "MANAGER_GRPC_HOST",
        "MANAGER_GRPC_PORT",
        "MANAGER_HTTP_HOST",
        "MANAGER_HTTP_PORT",
        "MANAGER_HTTP_SERVER_CERT",
        "MANAGER_HTTP_SERVER_KEY",
        "MANAGER_HTTP_CLIENT_CA_CERTS",
        "MANAGER_QEMU_ENABLE_SEV_SNP",
        "MANAGER_QEMU_ENABLE_TDX",
        "MANAGER_QEMU_ENABLE_KVM",
        "MANAGER_QEMU_SEV_SNP_CBITPOS",
    ];
    for k in env.keys() {
        if is_ours(k) || TRANSLATED.contains(k) {
            continue;
        }
        if let Some((_, what)) = NO_EQUIVALENT.iter().find(|(n, _)| n == k) {
            return Err(EnvError(format!(
                "{k} is {what}; remove it from the environment"
            )));
        }
        return Err(EnvError(format!(
            "unknown setting {k}: neither cocos-manager's (see --help) nor cocos' manager's"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ours() -> Vec<String> {
        [
            "MANAGER_GRPC_LISTEN",
            "MANAGER_HTTP_ADDR",
            "MANAGER_TEE",
            "MANAGER_QEMU_ACCEL",
            "MANAGER_QEMU_OVMF_FILE",
            "MANAGER_GRPC_SERVER_CERT",
            "MANAGER_QEMU_SEV_SNP_CBIT_POS",
            "MANAGER_LOG_LEVEL",
        ]
        .map(String::from)
        .to_vec()
    }

    fn run(vars: &[(&str, &str)]) -> Result<Vec<(String, String)>, EnvError> {
        let v: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        translate(&v, &ours())
    }

    #[test]
    fn cocos_names_with_an_equivalent_become_ours() {
        let got = run(&[
            ("MANAGER_GRPC_HOST", "localhost"),
            ("MANAGER_GRPC_PORT", "7001"),
            ("MANAGER_HTTP_PORT", "7003"),
            ("MANAGER_QEMU_ENABLE_SEV_SNP", "true"),
            ("MANAGER_QEMU_ENABLE_TDX", "false"),
            ("MANAGER_QEMU_ENABLE_KVM", "true"),
            ("MANAGER_QEMU_SEV_SNP_CBITPOS", "51"),
            ("MANAGER_LOG_LEVEL", "debug"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        let want: Vec<(String, String)> = [
            ("MANAGER_GRPC_LISTEN", "127.0.0.1:7001"),
            ("MANAGER_HTTP_ADDR", "127.0.0.1:7003"),
            ("MANAGER_TEE", "snp"),
            ("MANAGER_QEMU_ACCEL", "kvm"),
            ("MANAGER_QEMU_SEV_SNP_CBIT_POS", "51"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        assert_eq!(got, want);
        assert_eq!(
            run(&[("MANAGER_GRPC_HOST", "::1"), ("MANAGER_GRPC_PORT", "7001")]).unwrap(),
            vec![("MANAGER_GRPC_LISTEN".to_owned(), "[::1]:7001".to_owned())]
        );
    }

    #[test]
    fn unknown_and_unsupported_names_are_refused_with_what_to_do() {
        let e = run(&[(
            "MANAGER_QEMU_OVMF_CODE_FILE",
            "/usr/share/OVMF/OVMF_CODE.fd",
        )])
        .unwrap_err();
        assert!(
            e.0.contains("MANAGER_QEMU_OVMF_FILE") && e.0.contains("-bios"),
            "{e}"
        );
        let e = run(&[("MANAGER_QEMU_KERNEL_CMDLINE", "quiet")]).unwrap_err();
        assert!(e.0.contains("HAL spec"), "{e}");
        let e = run(&[("MANAGER_FOO", "1")]).unwrap_err();
        assert!(e.0.starts_with("unknown setting MANAGER_FOO"), "{e}");
        // A typo of one of ours is unknown, not silently ignored.
        assert!(run(&[("MANAGER_LOG_LEVLE", "debug")]).is_err());
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(run(&[
            ("MANAGER_QEMU_ENABLE_SEV_SNP", "true"),
            ("MANAGER_QEMU_ENABLE_TDX", "1")
        ])
        .is_err());
        let e = run(&[
            ("MANAGER_GRPC_PORT", "7001"),
            ("MANAGER_GRPC_LISTEN", "unix:/run/m.sock"),
        ])
        .unwrap_err();
        assert!(e.0.contains("set one of them"), "{e}");
        assert!(
            run(&[("MANAGER_GRPC_HOST", "0.0.0.0")]).is_err(),
            "a host without a port"
        );
        assert!(run(&[("MANAGER_GRPC_PORT", "http")]).is_err());
        assert!(run(&[("MANAGER_QEMU_ENABLE_KVM", "maybe")]).is_err());
        // The same value twice is fine.
        assert!(run(&[
            ("MANAGER_QEMU_ENABLE_SEV_SNP", "true"),
            ("MANAGER_TEE", "snp")
        ])
        .unwrap()
        .is_empty());
    }
}
