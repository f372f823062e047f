//! QEMU command lines for the launch modes the manager supports, and what the host can
//! run. Pure functions: the argv of each mode is pinned by unit tests, so a change in
//! what we launch is always a visible diff.
//!
//! Modes: plain (TCG or KVM), AMD SEV-SNP (`sev-snp-guest` with `kernel-hashes=on`, so
//! the launch digest covers kernel, initrd and command line; guest memory from a
//! memfd backend), Intel TDX (`tdx-guest`, split irqchip, no HPET, optional quote
//! generation socket). Every VM gets its agent transport (vhost-vsock with a unique
//! CID, or a virtio-serial port on a Unix socket), its serial console in a per-VM log
//! file, and a QMP socket; nothing else (`-nodefaults`, no monitor, no display).

use std::path::{Path, PathBuf};

/// How the guest runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tee {
    /// No TEE.
    None,
    /// AMD SEV-SNP.
    SevSnp {
        /// C-bit position (51 on EPYC).
        cbitpos: u32,
        /// Physical address bits lost to encryption.
        reduced_phys_bits: u32,
        /// 32 bytes of host data bound into the report, base64 in QEMU's syntax.
        host_data: Option<String>,
        /// A signed ID block (with its policy): the secure processor then refuses any
        /// launch whose digest differs from the one it states.
        id_block: Option<SnpIdBlock>,
    },
    /// Intel TDX.
    Tdx {
        /// The quote generation service socket (`qgsd`), if quotes are needed.
        quote_socket: Option<PathBuf>,
    },
}

/// QEMU's `sev-snp-guest` ID-block properties (QEMU 9.1+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpIdBlock {
    /// Base64 of the 96-byte ID block.
    pub id_block: String,
    /// Base64 of the 4096-byte ID authentication information.
    pub id_auth: String,
    /// The author key signed the ID key.
    pub author_key_enabled: bool,
    /// The guest policy the block states (QEMU must launch with exactly it).
    pub policy: u64,
}

/// CPU virtualization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's emulator (no /dev/kvm; never for TEEs).
    Tcg,
    /// KVM.
    Kvm,
}

/// The agent's event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTransport {
    /// vhost-vsock with this guest CID (host needs vhost_vsock).
    Vsock {
        /// Guest CID (≥ 3, unique per host).
        cid: u32,
    },
    /// virtio-serial port `name` backed by a Unix socket QEMU listens on.
    Serial {
        /// Socket path.
        socket: PathBuf,
        /// Port name the agent looks for.
        name: String,
    },
}

/// Everything one launch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// VM name (QEMU `-name`).
    pub name: String,
    /// Acceleration.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// QEMU CPU model (`EPYC-v4`, `host`, `max`).
    pub cpu_model: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// OVMF / TDVF image.
    pub firmware: PathBuf,
    /// Kernel (may be `/proc/self/fd/N` of an inherited, verified descriptor).
    pub kernel: PathBuf,
    /// Initrd.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// TEE.
    pub tee: Tee,
    /// Agent channel.
    pub transport: AgentTransport,
    /// Forward 127.0.0.1:host → guest port (user-mode network), for an agent that
    /// serves on the network (cocos' Go agent listens on 7002).
    pub forward: Option<(u16, u16)>,
    /// Serial console log file.
    pub console_log: PathBuf,
    /// QMP socket.
    pub qmp_socket: PathBuf,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// QEMU's argv (without the program name).
pub fn argv(s: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| (*x).to_owned()));
    push(&[
        "-name",
        &s.name,
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
    ]);
    push(&["-accel", if s.accel == Accel::Kvm { "kvm" } else { "tcg" }]);
    let mem = format!("{}M", s.memory_mib);
    match &s.tee {
        Tee::None => {
            push(&["-machine", "q35", "-m", &mem]);
        }
        Tee::SevSnp {
            cbitpos,
            reduced_phys_bits,
            host_data,
            id_block,
        } => {
            push(&[
                "-machine",
                "q35,confidential-guest-support=sev0,memory-backend=ram1",
                "-m",
                &mem,
            ]);
            push(&[
                "-object",
                &format!("memory-backend-memfd,id=ram1,size={mem},share=true,prealloc=false"),
            ]);
            let mut obj = format!("sev-snp-guest,id=sev0,cbitpos={cbitpos},reduced-phys-bits={reduced_phys_bits},kernel-hashes=on");
            if let Some(h) = host_data {
                obj.push_str(&format!(",host-data={h}"));
            }
            if let Some(b) = id_block {
                obj.push_str(&format!(
                    ",policy={:#x},id-block={},id-auth={}",
                    b.policy, b.id_block, b.id_auth
                ));
                if b.author_key_enabled {
                    obj.push_str(",author-key-enabled=on");
                }
            }
            push(&["-object", &obj]);
        }
        Tee::Tdx { quote_socket } => {
            push(&[
                "-machine",
                "q35,kernel-irqchip=split,confidential-guest-support=tdx0,hpet=off",
                "-m",
                &mem,
            ]);
            let obj = match quote_socket {
                Some(q) => serde_json::json!({"qom-type": "tdx-guest", "id": "tdx0",
                    "quote-generation-socket": {"type": "unix", "path": p(q)}})
                .to_string(),
                None => "tdx-guest,id=tdx0".to_owned(),
            };
            push(&["-object", &obj]);
        }
    }
    push(&["-cpu", &s.cpu_model, "-smp", &s.cpus.to_string()]);
    push(&["-bios", &p(&s.firmware), "-kernel", &p(&s.kernel)]);
    if let Some(i) = &s.initrd {
        push(&["-initrd", &p(i)]);
    }
    push(&["-append", &s.cmdline]);
    match &s.transport {
        AgentTransport::Vsock { cid } => {
            push(&[
                "-device",
                &format!("vhost-vsock-pci,id=vsock0,guest-cid={cid}"),
            ]);
        }
        AgentTransport::Serial { socket, name } => {
            push(&["-device", "virtio-serial-pci,id=vser0"]);
            push(&[
                "-chardev",
                &format!("socket,id=agent0,path={},server=on,wait=off", p(socket)),
            ]);
            push(&[
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=agent0,name={name}"),
            ]);
        }
    }
    if let Some((host, guest)) = s.forward {
        push(&[
            "-netdev",
            &format!("user,id=vmnic,hostfwd=tcp:127.0.0.1:{host}-:{guest}"),
            "-device",
            "virtio-net-pci,netdev=vmnic,romfile=",
        ]);
    }
    push(&[
        "-chardev",
        &format!("file,id=console0,path={}", p(&s.console_log)),
        "-serial",
        "chardev:console0",
    ]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", p(&s.qmp_socket)),
    ]);
    a
}

/// What the host offers, from KVM module parameters under `sys` (normally /sys) and
/// /dev/kvm under `dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCaps {
    /// /dev/kvm exists.
    pub kvm: bool,
    /// kvm_amd's sev_snp parameter is on.
    pub sev_snp: bool,
    /// kvm_intel's tdx parameter is on.
    pub tdx: bool,
}

fn param_on(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|v| matches!(v.trim(), "Y" | "y" | "1"))
}

/// Detects the host's capabilities.
pub fn detect_host(sys: &Path, dev: &Path) -> HostCaps {
    HostCaps {
        kvm: dev.join("kvm").exists(),
        sev_snp: param_on(&sys.join("module/kvm_amd/parameters/sev_snp")),
        tdx: param_on(&sys.join("module/kvm_intel/parameters/tdx")),
    }
}

impl HostCaps {
    /// Why `tee` cannot run here, if it cannot.
    pub fn refuse(&self, tee: &Tee, accel: Accel) -> Option<String> {
        match (tee, accel) {
            (Tee::None, Accel::Tcg) => None,
            (_, Accel::Kvm) if !self.kvm => Some("KVM requested but /dev/kvm does not exist (use TCG, or load kvm)".into()),
            (Tee::None, Accel::Kvm) => None,
            (_, Accel::Tcg) => Some("SEV-SNP and TDX guests need KVM; TCG cannot run them".into()),
            (Tee::SevSnp { .. }, Accel::Kvm) if !self.sev_snp => {
                Some("SEV-SNP requested but kvm_amd's sev_snp parameter is off (/sys/module/kvm_amd/parameters/sev_snp)".into())
            }
            (Tee::Tdx { .. }, Accel::Kvm) if !self.tdx => {
                Some("TDX requested but kvm_intel's tdx parameter is off (/sys/module/kvm_intel/parameters/tdx)".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(tee: Tee, accel: Accel, transport: AgentTransport) -> VmSpec {
        VmSpec {
            name: "cvm-1".into(),
            accel,
            cpus: 2,
            cpu_model: "EPYC-v4".into(),
            memory_mib: 2048,
            firmware: "/fw/OVMF.fd".into(),
            kernel: "/proc/self/fd/3".into(),
            initrd: Some("/proc/self/fd/4".into()),
            cmdline: "console=ttyS0 cocos.id=c1 cocos.events=serial:cocos.events".into(),
            tee,
            transport,
            forward: None,
            console_log: "/run/m/c1/console.log".into(),
            qmp_socket: "/run/m/c1/qmp.sock".into(),
        }
    }

    fn serial() -> AgentTransport {
        AgentTransport::Serial {
            socket: "/run/m/c1/agent.sock".into(),
            name: "cocos.events".into(),
        }
    }

    const TAIL: &str = "-chardev file,id=console0,path=/run/m/c1/console.log -serial chardev:console0 -qmp unix:/run/m/c1/qmp.sock,server=on,wait=off";

    #[test]
    fn port_forward_binds_loopback_only() {
        let mut s = base(Tee::None, Accel::Tcg, serial());
        s.forward = Some((6100, 7002));
        let a = argv(&s).join(" ");
        assert!(
            a.contains("-netdev user,id=vmnic,hostfwd=tcp:127.0.0.1:6100-:7002 -device virtio-net-pci,netdev=vmnic,romfile= -chardev file,id=console0"),
            "{a}"
        );
        assert!(!argv(&base(Tee::None, Accel::Tcg, serial()))
            .join(" ")
            .contains("-netdev"));
    }

    #[test]
    fn plain_tcg_with_virtio_serial() {
        let a = argv(&base(Tee::None, Accel::Tcg, serial())).join(" ");
        assert_eq!(
            a,
            format!(
                "-name cvm-1 -nodefaults -no-user-config -nographic -no-reboot -monitor none -accel tcg \
                 -machine q35 -m 2048M -cpu EPYC-v4 -smp 2 -bios /fw/OVMF.fd -kernel /proc/self/fd/3 \
                 -initrd /proc/self/fd/4 -append console=ttyS0 cocos.id=c1 cocos.events=serial:cocos.events \
                 -device virtio-serial-pci,id=vser0 -chardev socket,id=agent0,path=/run/m/c1/agent.sock,server=on,wait=off \
                 -device virtserialport,bus=vser0.0,chardev=agent0,name=cocos.events {TAIL}"
            )
        );
        // The command line stays one argument.
        let v = argv(&base(Tee::None, Accel::Tcg, serial()));
        let i = v.iter().position(|x| x == "-append").unwrap();
        assert_eq!(
            v[i + 1],
            "console=ttyS0 cocos.id=c1 cocos.events=serial:cocos.events"
        );
    }

    #[test]
    fn sev_snp_with_vsock() {
        let tee = Tee::SevSnp {
            cbitpos: 51,
            reduced_phys_bits: 1,
            host_data: Some("AAAA".into()),
            id_block: None,
        };
        let a = argv(&base(tee, Accel::Kvm, AgentTransport::Vsock { cid: 7 })).join(" ");
        assert_eq!(
            a,
            format!(
                "-name cvm-1 -nodefaults -no-user-config -nographic -no-reboot -monitor none -accel kvm \
                 -machine q35,confidential-guest-support=sev0,memory-backend=ram1 -m 2048M \
                 -object memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false \
                 -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data=AAAA \
                 -cpu EPYC-v4 -smp 2 -bios /fw/OVMF.fd -kernel /proc/self/fd/3 -initrd /proc/self/fd/4 \
                 -append console=ttyS0 cocos.id=c1 cocos.events=serial:cocos.events \
                 -device vhost-vsock-pci,id=vsock0,guest-cid=7 {TAIL}"
            )
        );
    }

    /// An SNP launch with the release's signed ID block: QEMU 9.1's `sev-snp-guest`
    /// takes `id-block` (96 bytes) and `id-auth` (4096 bytes) in base64 and
    /// `author-key-enabled` (target/i386/sev.c, `sev_snp_guest_class_init`); the
    /// block's policy is passed explicitly, since the secure processor refuses a
    /// block whose POLICY differs from the launch's.
    #[test]
    fn sev_snp_with_id_block() {
        let tee = Tee::SevSnp {
            cbitpos: 51,
            reduced_phys_bits: 1,
            host_data: None,
            id_block: Some(SnpIdBlock {
                id_block: "QkxPQ0s=".into(),
                id_auth: "QVVUSA==".into(),
                author_key_enabled: true,
                policy: 0x30000,
            }),
        };
        let v = argv(&base(tee, Accel::Kvm, serial()));
        let obj = &v[v
            .iter()
            .position(|x| x.starts_with("sev-snp-guest"))
            .unwrap()];
        assert_eq!(
            obj,
            "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,\
             policy=0x30000,id-block=QkxPQ0s=,id-auth=QVVUSA==,author-key-enabled=on"
        );
        let tee = Tee::SevSnp {
            cbitpos: 51,
            reduced_phys_bits: 1,
            host_data: Some("SE9TVA==".into()),
            id_block: Some(SnpIdBlock {
                id_block: "QkxPQ0s=".into(),
                id_auth: "QVVUSA==".into(),
                author_key_enabled: false,
                policy: 0xb0000,
            }),
        };
        let v = argv(&base(tee, Accel::Kvm, serial()));
        let obj = &v[v
            .iter()
            .position(|x| x.starts_with("sev-snp-guest"))
            .unwrap()];
        assert!(
            obj.ends_with(",host-data=SE9TVA==,policy=0xb0000,id-block=QkxPQ0s=,id-auth=QVVUSA=="),
            "{obj}"
        );
    }

    #[test]
    fn tdx_with_quote_socket() {
        let tee = Tee::Tdx {
            quote_socket: Some("/var/run/tdx-qgs/qgs.socket".into()),
        };
        let mut s = base(tee, Accel::Kvm, serial());
        s.cpu_model = "host".into();
        s.initrd = None;
        let v = argv(&s);
        let a = v.join(" ");
        assert!(a.contains(
            "-machine q35,kernel-irqchip=split,confidential-guest-support=tdx0,hpet=off -m 2048M"
        ));
        let obj = &v[v.iter().position(|x| x.contains("tdx-guest")).unwrap()];
        let j: serde_json::Value = serde_json::from_str(obj).unwrap();
        assert_eq!(j["qom-type"], "tdx-guest");
        assert_eq!(
            j["quote-generation-socket"]["path"],
            "/var/run/tdx-qgs/qgs.socket"
        );
        assert!(!a.contains("-initrd"));
        assert!(
            !a.contains("kernel-hashes"),
            "TDX measures the kernel through the firmware, not QEMU hashes"
        );
        let plain = argv(&base(Tee::Tdx { quote_socket: None }, Accel::Kvm, serial()));
        assert!(plain.contains(&"tdx-guest,id=tdx0".to_owned()));
    }

    #[test]
    fn host_detection_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let (sys, dev) = (d.path().join("sys"), d.path().join("dev"));
        std::fs::create_dir_all(sys.join("module/kvm_amd/parameters")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let caps = detect_host(&sys, &dev);
        assert_eq!(
            caps,
            HostCaps {
                kvm: false,
                sev_snp: false,
                tdx: false
            }
        );
        let snp = Tee::SevSnp {
            cbitpos: 51,
            reduced_phys_bits: 1,
            host_data: None,
            id_block: None,
        };
        assert!(caps.refuse(&Tee::None, Accel::Tcg).is_none());
        assert!(caps
            .refuse(&Tee::None, Accel::Kvm)
            .unwrap()
            .contains("/dev/kvm"));
        assert!(caps.refuse(&snp, Accel::Tcg).unwrap().contains("need KVM"));
        std::fs::write(dev.join("kvm"), "").unwrap();
        std::fs::write(sys.join("module/kvm_amd/parameters/sev_snp"), "Y\n").unwrap();
        let caps = detect_host(&sys, &dev);
        assert_eq!(
            caps,
            HostCaps {
                kvm: true,
                sev_snp: true,
                tdx: false
            }
        );
        assert!(caps.refuse(&snp, Accel::Kvm).is_none());
        assert!(caps
            .refuse(&Tee::Tdx { quote_socket: None }, Accel::Kvm)
            .unwrap()
            .contains("kvm_intel"));
    }
}
