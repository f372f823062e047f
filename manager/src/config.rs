//! The manager's settings, from flags or environment variables (cocos' names where
//! cocos has the setting: `MANAGER_QEMU_*`, `MANAGER_GRPC_*`, `MANAGER_MAX_VMS`), and
//! their validation. Everything has a default that runs with no control plane.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which TEE a launch uses, or which one its expected measurement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// None.
    None,
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

/// Agent transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// virtio-serial port on a Unix socket (works everywhere).
    Serial,
    /// vhost-vsock (needs the host's vhost_vsock module).
    Vsock,
}

/// When an event sent to the control plane counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfirmMode {
    /// When the server confirms it with EventAck (at-least-once; the server dedupes by seq).
    Ack,
    /// When it was handed to the gRPC stream (for Computations servers that predate
    /// EventAck; events in flight when the connection breaks are lost).
    Sent,
}

/// Acceleration choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelKind {
    /// KVM if /dev/kvm exists, else TCG.
    Auto,
    /// KVM.
    Kvm,
    /// TCG (emulation; plain VMs only).
    Tcg,
}

/// `cocos-manager`: launches released cocos images under QEMU and reports what their
/// attestation must show.
#[derive(Debug, Clone, Parser)]
#[command(name = "cocos-manager", version, about, long_about = None)]
pub struct Config {
    /// release.json written by `cocos-hal build`; its directory holds the images.
    #[arg(long, env = "MANAGER_RELEASE")]
    pub release: PathBuf,
    /// Directory for the state store and per-VM files (created 0700).
    #[arg(
        long,
        env = "MANAGER_STATE_DIR",
        default_value = "/var/lib/cocos-manager"
    )]
    pub state_dir: PathBuf,
    /// HTTP API address: unix:/path (a socket only its owner, or --socket-group, may
    /// use), host:port (e.g. 127.0.0.1:7001: any local user can connect), or "off".
    /// Default: unix:STATE_DIR/http.sock (owner only)
    #[arg(long, env = "MANAGER_HTTP_ADDR")]
    pub http: Option<String>,
    /// gRPC API address (CreateVm, RemoveVm, CVMInfo, AttestationPolicy, WatchEvents):
    /// unix:/path, host:port, or "off". Default: unix:STATE_DIR/grpc.sock (owner only)
    #[arg(long, env = "MANAGER_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// Server certificate chain (PEM) for TLS on both APIs.
    #[arg(long, env = "MANAGER_GRPC_SERVER_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "MANAGER_GRPC_SERVER_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to (mTLS).
    #[arg(long, env = "MANAGER_GRPC_CLIENT_CA_CERTS", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow an API on a non-loopback address without TLS (anyone who reaches it can
    /// launch and stop VMs).
    #[arg(long, env = "MANAGER_INSECURE_LISTEN")]
    pub insecure_listen: bool,
    /// Group allowed to use unix: API sockets (mode 0660; default 0600, owner only).
    #[arg(long, env = "MANAGER_SOCKET_GROUP", value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Most connections open at once on each API listener, HTTP and gRPC (more are
    /// closed as soon as they are accepted).
    #[arg(long, env = "MANAGER_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Seed protocol: the Computations server to dial (ManagerService.Process), e.g. https://cp:7001.
    #[arg(long, env = "MANAGER_GRPC_URL")]
    pub grpc_url: Option<String>,
    /// When an event counts as delivered to the Computations server.
    #[arg(long, env = "MANAGER_GRPC_CONFIRM", value_enum, default_value_t = ConfirmMode::Ack)]
    pub grpc_confirm: ConfirmMode,
    /// CA certificate(s) (PEM) that signed the Computations server's certificate (TLS).
    #[arg(long, env = "MANAGER_GRPC_SERVER_CA_CERTS")]
    pub grpc_server_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long, env = "MANAGER_GRPC_CLIENT_CERT", requires = "grpc_client_key")]
    pub grpc_client_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    #[arg(long, env = "MANAGER_GRPC_CLIENT_KEY", requires = "grpc_client_cert")]
    pub grpc_client_key: Option<PathBuf>,
    /// QEMU binary.
    #[arg(
        long,
        env = "MANAGER_QEMU_BIN_PATH",
        default_value = "qemu-system-x86_64"
    )]
    pub qemu_bin: PathBuf,
    /// QEMU version for TDX measurements (which kernel bytes OVMF hashes depends on
    /// it); default: what `--qemu-bin --version` prints at start.
    #[arg(long, env = "MANAGER_QEMU_VERSION", value_name = "X.Y", value_parser = <cocos_measure::tdx_rules::QemuVersion as std::str::FromStr>::from_str)]
    pub qemu_version: Option<cocos_measure::tdx_rules::QemuVersion>,
    /// OVMF image QEMU boots (-bios); its SHA-256 must be one release.json lists.
    #[arg(
        long,
        env = "MANAGER_QEMU_OVMF_FILE",
        default_value = "/usr/share/ovmf/OVMF.fd"
    )]
    pub ovmf: PathBuf,
    /// Guest RAM (QEMU syntax: 2048M, 2G).
    #[arg(long, env = "MANAGER_QEMU_MEMORY_SIZE", default_value = "2048M")]
    pub memory: String,
    /// Default vCPUs per VM.
    #[arg(long, env = "MANAGER_QEMU_SMP_COUNT", default_value_t = 1)]
    pub vcpus: u32,
    /// Largest vCPU count a run may ask for.
    #[arg(long, env = "MANAGER_QEMU_SMP_MAXCPUS", default_value_t = 64)]
    pub max_vcpus: u32,
    /// QEMU CPU model (SEV-SNP guests use --snp-vcpu-type).
    #[arg(long, env = "MANAGER_QEMU_CPU", default_value = "max")]
    pub cpu: String,
    /// Acceleration.
    #[arg(long, env = "MANAGER_QEMU_ACCEL", value_enum, default_value_t = AccelKind::Auto)]
    pub accel: AccelKind,
    /// TEE to launch under.
    #[arg(long, env = "MANAGER_TEE", value_enum, default_value_t = TeeKind::None)]
    pub tee: TeeKind,
    /// TEE whose launch measurement to report (defaults to --tee; for a plain VM, what
    /// the same tuple would measure under that TEE).
    #[arg(long, env = "MANAGER_MEASURE_AS", value_enum)]
    pub measure_as: Option<TeeKind>,
    /// vCPU type for SNP measurements (as `cocos-measure vcpu-types` lists).
    #[arg(long, env = "MANAGER_SNP_VCPU_TYPE", default_value = "EPYC-v4")]
    pub snp_vcpu_type: String,
    /// SNP guest features (SEV_FEATURES).
    #[arg(long, env = "MANAGER_SNP_GUEST_FEATURES", default_value = "0x1", value_parser = parse_u64)]
    pub snp_guest_features: u64,
    /// SNP C-bit position.
    #[arg(long, env = "MANAGER_QEMU_SEV_SNP_CBIT_POS", default_value_t = 51)]
    pub cbitpos: u32,
    /// SNP reduced physical address bits.
    #[arg(
        long,
        env = "MANAGER_QEMU_SEV_SNP_REDUCED_PHYS_BITS",
        default_value_t = 1
    )]
    pub reduced_phys_bits: u32,
    /// Signs the CoRIM that AttestationPolicy returns (EC P-384: ES384, P-256: ES256; mode 0600).
    #[arg(long, env = "MANAGER_CORIM_SIGNING_KEY", value_name = "KEY.pem")]
    pub corim_key: Option<PathBuf>,
    /// Sign an SEV-SNP ID block for each SNP launch's exact digest with this EC P-384 key
    /// (mode 0600), so the secure processor refuses any other launch
    #[arg(long, env = "MANAGER_SNP_ID_KEY", value_name = "KEY.pem")]
    pub snp_id_key: Option<PathBuf>,
    /// Author key that signs --snp-id-key in each ID block (EC P-384, mode 0600)
    #[arg(
        long,
        env = "MANAGER_SNP_AUTHOR_KEY",
        value_name = "KEY.pem",
        requires = "snp_id_key"
    )]
    pub snp_author_key: Option<PathBuf>,
    /// AMD product line of this host for SNP policies (milan, genoa, turin; default: from /proc/cpuinfo).
    #[arg(long, env = "MANAGER_SNP_PRODUCT")]
    pub snp_product: Option<String>,
    /// SNP host data (base64 of 32 bytes).
    #[arg(long, env = "MANAGER_QEMU_HOST_DATA")]
    pub host_data: Option<String>,
    /// TDX quote generation service socket.
    #[arg(long, env = "MANAGER_QEMU_TDX_QUOTE_SOCKET")]
    pub tdx_quote_socket: Option<PathBuf>,
    /// Intel collateral (PCS/PCCS JSON for the host's FMSPC) to verify TD quotes with
    #[arg(long, env = "MANAGER_TDX_COLLATERAL", value_name = "FILE")]
    pub tdx_collateral: Option<PathBuf>,
    /// Extra SEV-SNP certificates (PEM: e.g. the ASVK chain for VLEK-signed reports)
    #[arg(long, env = "MANAGER_SNP_CHAIN", value_name = "FILE")]
    pub snp_chain: Option<PathBuf>,
    /// TESTS ONLY: a root that replaces AMD's for attestation verdicts (refused by
    /// release builds; every verdict says it was used)
    #[arg(long, value_name = "FILE", hide = true)]
    pub insecure_test_trust_anchor: Option<PathBuf>,
    /// TESTS ONLY: wait this long between spawning QEMU and storing its record, so a
    /// test can crash the manager inside that window (refused by release builds)
    #[arg(long, value_name = "DURATION", hide = true, value_parser = parse_duration)]
    pub test_pause_after_spawn: Option<Duration>,
    /// Agent transport.
    #[arg(long, env = "MANAGER_AGENT_TRANSPORT", value_enum, default_value_t = TransportKind::Serial)]
    pub transport: TransportKind,
    /// Vsock port the agent dials on the host (vsock transport).
    #[arg(long, env = "MANAGER_AGENT_VSOCK_PORT", default_value_t = 9997)]
    pub vsock_port: u32,
    /// Guest port to forward from the host (e.g. 7002 for cocos' Go agent); none by default.
    #[arg(long, env = "MANAGER_QEMU_GUEST_FWD_AGENT")]
    pub agent_guest_port: Option<u16>,
    /// Host ports (on 127.0.0.1) forwards are allocated from.
    #[arg(long, env = "MANAGER_QEMU_HOST_FWD_RANGE", default_value = "6100-6200", value_parser = parse_range)]
    pub host_fwd_range: (u16, u16),
    /// Most VMs at once.
    #[arg(long, env = "MANAGER_MAX_VMS", default_value_t = 10)]
    pub max_vms: usize,
    /// Default time to live of a computation (e.g. 30m, 2h; none = until stopped).
    #[arg(long, env = "MANAGER_DEFAULT_TTL", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,
    /// How long a guest gets to power down before SIGTERM (then SIGKILL after as long again).
    #[arg(long, env = "MANAGER_STOP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// Most events the outbox holds (see the store's policy).
    #[arg(long, env = "MANAGER_OUTBOX_CAPACITY", default_value_t = 1_000_000)]
    pub outbox_capacity: u64,
    /// Most bytes of events the store holds (QEMU size syntax: 512M, 1G; at least
    /// 2 MiB). Ring mode drops the oldest beyond it; confirmed mode refuses agent frames.
    #[arg(long, env = "MANAGER_OUTBOX_BYTES", default_value = "1G", value_parser = parse_size)]
    pub outbox_bytes: u64,
    /// A VM's share of the outbox (events and bytes), in percent. Confirmed mode: a VM
    /// holding its share has its agent frames left unacknowledged (the agent keeps them)
    /// and gets a `guest-throttled` event; ring mode: it loses its own oldest events.
    #[arg(long, env = "MANAGER_GUEST_OUTBOX_SHARE", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub guest_outbox_share: u8,
    /// Agent frames a VM may commit per second, on average (0: no limit). Beyond it
    /// (and its burst) the manager reads the VM's channel at this pace, the agent waits,
    /// and the VM gets a `guest-throttled` event.
    #[arg(long, env = "MANAGER_GUEST_EVENT_RATE", default_value_t = 1000)]
    pub guest_event_rate: u32,
    /// Agent frames a VM may commit at once above its rate.
    #[arg(long, env = "MANAGER_GUEST_EVENT_BURST", default_value_t = 5000)]
    pub guest_event_burst: u32,
    /// How long an attestation request waits for the guest's answer before the manager
    /// emits an `attestation` event with status "timeout"
    #[arg(long, env = "MANAGER_ATTESTATION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub attestation_timeout: Duration,
    /// First wait after a guest's protocol violation (doubling, at most 30 s; the
    /// channel is dropped for good after 8 violations). Tests shorten it.
    #[arg(long, hide = true, default_value = "200ms", value_parser = parse_duration)]
    pub protocol_backoff: Duration,
    /// Repair a damaged state.redb (redb's repair), or start a new store in an empty one;
    /// without it the manager refuses such a file (exit 2) and never overwrites it
    #[arg(long, env = "MANAGER_REPAIR_STORE")]
    pub repair: bool,
    /// Skip the host capability check (e.g. to generate SNP/TDX command lines on a test host).
    #[arg(long, env = "MANAGER_SKIP_HOST_CHECK")]
    pub skip_host_check: bool,
    /// Log filter: a level (error, warn, info, debug, trace, off) or tracing's
    /// EnvFilter directives (e.g. info,cocos_manager::store=debug). Without it:
    /// COCOS_LOG, then RUST_LOG, then info
    #[arg(long, env = "MANAGER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log lines as text (colours only on a terminal) or JSON (one object per line)
    #[arg(long, env = "MANAGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell) and exit
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<cocos_measure::cli_error::Shell>,
    /// Print the man page (roff) and exit
    #[arg(long, exclusive = true)]
    pub man: bool,
}

/// The environment variables the settings read (each flag's `env`).
pub fn env_names() -> Vec<String> {
    <Config as clap::CommandFactory>::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The log filter to use: `--log-level`, else `COCOS_LOG`, else `RUST_LOG`, else info;
/// refused (with the reason) when it is not a level or valid directives — a bare word
/// that is no level (`verbose`) would silently filter everything out.
pub fn log_filter(
    flag: Option<&str>,
    cocos_log: Option<&str>,
    rust_log: Option<&str>,
) -> Result<tracing_subscriber::EnvFilter, String> {
    let (source, f) = match (flag, cocos_log, rust_log) {
        (Some(f), _, _) => ("--log-level", f),
        (None, Some(f), _) => ("COCOS_LOG", f),
        (None, None, Some(f)) => ("RUST_LOG", f),
        (None, None, None) => ("default", "info"),
    };
    const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
    for d in f.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=')
            && !d.contains("::")
            && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "{source} {f:?}: {d:?} is not a level (error, warn, info, debug, trace, off) or a target=level directive"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(f).map_err(|e| format!("{source} {f:?}: {e}"))
}

/// Parses a size in QEMU's syntax (a number with K/M/G/T; a bare number is MiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    cocos_measure::machine::parse_memory(s)
}

/// Parses 0x-prefixed hex or decimal.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    cocos_measure::bytes::parse_u64_hex_or_dec(s)
        .map_err(|_| format!("{s:?} is not a number (decimal or 0x-hex)"))
}

/// Parses a port range "LOW-HIGH".
pub fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: expected a port range like 6100-6200");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses durations like 500ms, 30s, 10m, 2h, 1d (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 30s, 10m, 2h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h, d)")),
    }
    .ok_or_else(|| format!("{s:?}: too long"))?;
    Ok(Duration::from_millis(ms))
}

impl Config {
    /// The HTTP listener: `--http`, or a Unix socket in the state directory (only the
    /// manager's user can reach it: the directory is 0700).
    pub fn http_endpoint(&self) -> String {
        self.http
            .clone()
            .unwrap_or_else(|| self.default_socket("http.sock"))
    }

    /// The gRPC listener: `--grpc-listen`, or a Unix socket in the state directory.
    pub fn grpc_endpoint(&self) -> String {
        self.grpc_listen
            .clone()
            .unwrap_or_else(|| self.default_socket("grpc.sock"))
    }

    fn default_socket(&self, name: &str) -> String {
        let dir = std::path::absolute(&self.state_dir).unwrap_or_else(|_| self.state_dir.clone());
        format!("unix:{}", dir.join(name).display())
    }

    /// The TEE measurements are computed for.
    pub fn measure_target(&self) -> TeeKind {
        self.measure_as.unwrap_or(self.tee)
    }

    /// The QEMU version TDX measurements assume: `--qemu-version`, else what the QEMU
    /// binary says of itself; `None` (with the reason) if it cannot be asked.
    pub fn qemu_version_or_probe(&self) -> Result<cocos_measure::tdx_rules::QemuVersion, String> {
        use std::io::Read;
        if let Some(v) = self.qemu_version {
            return Ok(v);
        }
        let bin = self.qemu_bin.display();
        let mut child = std::process::Command::new(&self.qemu_bin)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("{bin} --version: {e}"))?;
        // The binary is the operator's, but a wrong path may name anything: give it
        // 5 s and read at most 4 KiB of what it prints.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{bin} --version did not answer within 5 s; set --qemu-version"
                    ));
                }
            }
        }
        let mut text = String::new();
        if let Some(out) = child.stdout.take() {
            let mut buf = Vec::new();
            let _ = out.take(4096).read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        cocos_measure::tdx_rules::QemuVersion::parse(&text).ok_or_else(|| {
            let first: String = text.lines().next().unwrap_or("").chars().take(80).collect();
            format!("{bin} --version printed {first:?}, not a QEMU version; set --qemu-version")
        })
    }

    /// Checks settings that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.insecure_test_trust_anchor.is_some() && !cfg!(debug_assertions) {
            return Err("--insecure-test-trust-anchor is for tests and refused by release builds: it makes the manager trust a root that is not AMD's".into());
        }
        if self.test_pause_after_spawn.is_some() && !cfg!(debug_assertions) {
            return Err(
                "--test-pause-after-spawn is for tests and refused by release builds".into(),
            );
        }
        crate::listen::parse(&self.http_endpoint())?;
        crate::listen::parse(&self.grpc_endpoint())?;
        if self.vcpus == 0 || self.vcpus > self.max_vcpus {
            return Err(format!(
                "--vcpus {} must be between 1 and --max-vcpus {}",
                self.vcpus, self.max_vcpus
            ));
        }
        if self.max_vms == 0 {
            return Err("--max-vms must be at least 1".into());
        }
        cocos_measure::machine::parse_memory(&self.memory).map_err(|e| format!("--memory: {e}"))?;
        if self.tee == TeeKind::Snp
            && self.cpu != "max"
            && !self.cpu.eq_ignore_ascii_case(&self.snp_vcpu_type)
        {
            return Err(format!(
                "--cpu {} differs from --snp-vcpu-type {}: an SNP guest runs the vCPU type its measurement assumes (set --snp-vcpu-type)",
                self.cpu, self.snp_vcpu_type
            ));
        }
        if self.tee != TeeKind::None && self.measure_as.is_some_and(|m| m != self.tee) {
            return Err(
                "--measure-as differs from --tee: a TEE launch reports its own measurement".into(),
            );
        }
        Ok(())
    }

    /// Memory in MiB, as QEMU rounds it.
    pub fn memory_mib(&self) -> Result<u64, String> {
        let b = cocos_measure::machine::parse_memory(&self.memory)
            .map_err(|e| format!("--memory: {e}"))?;
        Ok(b.div_ceil(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag wins, then COCOS_LOG, then RUST_LOG; a word that is no level is refused
    /// (it would be read as a target and silence everything).
    #[test]
    fn log_filters() {
        assert_eq!(
            log_filter(Some("debug"), Some("trace"), None)
                .unwrap()
                .to_string(),
            "debug"
        );
        assert_eq!(
            log_filter(None, Some("warn"), Some("trace"))
                .unwrap()
                .to_string(),
            "warn"
        );
        assert_eq!(
            log_filter(None, None, Some("error")).unwrap().to_string(),
            "error"
        );
        assert_eq!(log_filter(None, None, None).unwrap().to_string(), "info");
        assert!(log_filter(Some("info,cocos_manager::store=debug"), None, None).is_ok());
        let e = log_filter(Some("verbose"), None, None).unwrap_err();
        assert!(e.contains("--log-level") && e.contains("verbose"), "{e}");
        assert!(log_filter(None, Some("info,loud"), None)
            .unwrap_err()
            .contains("COCOS_LOG"));
        assert!(log_filter(Some("x=notalevel"), None, None).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        for bad in ["", "s", "5x", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("6100-6200").unwrap(), (6100, 6200));
        for bad in ["", "6100", "6200-6100", "0-5", "a-b", "1-70000"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation() {
        let c = Config::try_parse_from(["m", "--release", "r.json"]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.memory_mib().unwrap(), 2048);
        let c = Config::try_parse_from(["m", "--release", "r", "--vcpus", "0"]).unwrap();
        assert!(c.validate().is_err());
        let c = Config::try_parse_from(["m", "--release", "r", "--http", "nope"]).unwrap();
        assert!(c.validate().is_err());
        let c =
            Config::try_parse_from(["m", "--release", "r", "--tee", "snp", "--measure-as", "tdx"])
                .unwrap();
        assert!(c.validate().is_err());
        assert!(
            Config::try_parse_from(["m"]).is_err(),
            "--release is required"
        );
    }
}
