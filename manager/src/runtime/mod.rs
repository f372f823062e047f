//! The manager proper: launches (verify, measure, spawn), per-VM supervision (agent
//! channel, exit, cleanup), stop, TTL, re-adoption after a restart, and the event
//! writer that group-commits every event to the store before anything is
//! acknowledged. The HTTP, gRPC and seed-protocol front ends call into [`Manager`].
//!
//! This module holds the types, start-up and the request entry points; `launch`,
//! `supervise`, `lifecycle` and `writer` each add the `Manager` methods (or the
//! task) of one concern.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cocos_proto::grpc::{client_stream_message, ClientStreamMessage};
use cocos_proto::messages::{agent_message, AgentEvent, AgentLog, AgentMessage};
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::Signal;
use prost::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent_channel::Session;
use crate::config::{AccelKind, Config, TeeKind, TransportKind};
use crate::expected::{Expected, ExpectedMeasurement, Target};
use crate::metrics::Metrics;
use crate::qemu::{self, Accel, AgentTransport, Tee, VmSpec};
use crate::reference::LaunchFacts;
use crate::release::{self, Release};
use crate::store::{Append, Appended, Retention, Store};
use crate::{procs, qmp};

mod launch;
mod lifecycle;
mod supervise;
mod writer;

use launch::LaunchRequest;

mod api;

pub use api::*;
pub use writer::{
    agent_payload, manager_event, Committed, EventWriter, AGENT_ORIGINATOR, MANAGER_EVENT_TYPES,
    MAX_STORED_ATTESTATION, MAX_STORED_EVENT,
};
pub(crate) use writer::{now_ms, timestamp};

/// An agent connection (Unix socket or vsock).
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

/// Longest kernel command line (x86 COMMAND_LINE_SIZE).
pub const MAX_CMDLINE: usize = 2048;
/// Virtio-serial port name the agent looks for.
pub const SERIAL_PORT: &str = "cocos.events";
const QMP_TIMEOUT: Duration = Duration::from_secs(3);

/// What the store keeps about a VM (JSON), enough to re-adopt it after a restart.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmRecord {
    /// Computation id.
    pub id: String,
    /// QEMU -name.
    pub name: String,
    /// QEMU pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// Per-VM directory.
    pub dir: PathBuf,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM, MiB.
    pub memory_mib: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// TEE.
    pub tee: TeeKind,
    /// vsock CID, if any.
    pub cid: Option<u32>,
    /// Forwarded host port, if any.
    #[serde(default)]
    pub forwarded_port: Option<u16>,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// TTL deadline, ms since the epoch.
    pub deadline_ms: Option<u64>,
    /// Expected measurement.
    pub expected: ExpectedMeasurement,
    /// Launch latency.
    pub launch_ms: f64,
    /// An intent: stored before QEMU is spawned (pid 0), replaced by the full record
    /// after; one found at start means the manager died during this launch.
    #[serde(default)]
    pub launching: bool,
    /// What the manager fixed at launch beyond the measured files (SNP host data and
    /// ID block): part of the reference values.
    #[serde(default)]
    pub facts: crate::reference::LaunchFacts,
}

impl VmRecord {
    fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
    fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
}

/// One running VM.
#[derive(Debug)]
pub struct Vm {
    /// Its record.
    pub record: VmRecord,
    stopping: AtomicBool,
    stop_reason: Mutex<String>,
    done_tx: watch::Sender<bool>,
    attest_tx: mpsc::Sender<Vec<u8>>,
    /// The nonces sent to this VM's agent, newest last (at most [`MAX_NONCES`]).
    nonces: Mutex<std::collections::VecDeque<Vec<u8>>>,
    /// Deadlines of the attestation requests sent and not yet answered, oldest first
    /// (an answer may be large; one past its deadline gets a "timeout" event).
    pending_attestations: Mutex<std::collections::VecDeque<Instant>>,
}

/// Manager events held in memory while the store cannot commit.
const MAX_UNSTORED: usize = 10_000;

/// How many outstanding nonces a VM's attestation may answer.
pub const MAX_NONCES: usize = 16;

#[derive(Debug)]
enum Slot {
    Launching { cid: Option<u32>, port: Option<u16> },
    Running(Arc<Vm>),
}

impl Slot {
    /// The vsock CID and forwarded port this slot holds.
    fn held(&self) -> (Option<u32>, Option<u16>) {
        match self {
            Slot::Launching { cid, port } => (*cid, *port),
            Slot::Running(v) => (v.record.cid, v.record.forwarded_port),
        }
    }
}

/// Checks a computation id: 1–64 of [A-Za-z0-9._-], not starting with '.' or '-'.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !id.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "computation id {id:?}: use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with . or -)"
        ))
    }
}

/// The manager.
#[derive(Debug)]
pub struct Manager {
    cfg: Config,
    release: Release,
    /// The release files QEMU is given, sealed at start.
    sealed: SealedFiles,
    expected: Expected,
    verifier: crate::attest::Verifier,
    /// Signs the CoRIM AttestationPolicy returns.
    corim_key: Option<cocos_measure::keys::SigningKey>,
    /// Manager events the store could not commit yet (oldest first, bounded).
    unstored: Mutex<std::collections::VecDeque<Append>>,
    /// The host's AMD product line, for SNP policies.
    snp_product: cocos_measure::reference::cocos::SnpProduct,
    /// Signs per-launch SNP ID blocks (and the author key that signs it).
    snp_id_keys: Option<(
        cocos_measure::keys::SigningKey,
        Option<cocos_measure::keys::SigningKey>,
    )>,
    store: Arc<Store>,
    writer: EventWriter,
    seq_rx: watch::Receiver<u64>,
    vms: Mutex<BTreeMap<String, Slot>>,
    vms_dir: PathBuf,
    vsock: Arc<crate::vsock::Router>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Sets `dir` to 0700 if group or others have any access, saying so.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} had mode {mode:04o}: other users could reach the manager's state; set to 0700",
            dir.display()
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl Manager {
    /// Loads the release, verifies the firmware, prepares the measurement, opens the
    /// store (state_dir/state.redb) and re-adopts or cleans up VMs a previous run left.
    pub async fn start(cfg: Config) -> Result<Arc<Self>, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cfg.state_dir.join("vms"))
            .map_err(|source| StartError::StateDir {
                path: cfg.state_dir.display().to_string(),
                source,
            })?;
        // An existing directory keeps its mode: tighten what other users could reach.
        for dir in [cfg.state_dir.clone(), cfg.state_dir.join("vms")] {
            private_dir(&dir).map_err(|source| StartError::StateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let release = Release::load(&cfg.release)?;
        let target = match cfg.measure_target() {
            TeeKind::None => Target::None,
            TeeKind::Snp => Target::Snp {
                vcpu_type: cfg.snp_vcpu_type.clone(),
                guest_features: cfg.snp_guest_features,
            },
            TeeKind::Tdx => Target::Tdx {
                memory: cfg.memory_mib().map_err(StartError::Config)? << 20,
                qemu: {
                    let c = cfg.clone();
                    match tokio::task::spawn_blocking(move || c.qemu_version_or_probe()).await? {
                        Ok(v) => {
                            tracing::info!("TDX measurements for QEMU {v}");
                            Some(v)
                        }
                        Err(why) => {
                            tracing::warn!("TDX measurements assume a QEMU version: {why}");
                            None
                        }
                    }
                },
            },
        };
        let (expected, sealed) = {
            let (cfg, release, target) = (cfg.clone(), release.clone(), target.clone());
            tokio::task::spawn_blocking(move || prepare(&cfg, &release, &target)).await??
        };
        let verifier = crate::attest::Verifier::load(
            cfg.tdx_collateral.as_deref(),
            cfg.snp_chain.as_deref(),
            cfg.insecure_test_trust_anchor.as_deref(),
        )?;
        if verifier.is_test() {
            tracing::warn!("attestation verdicts use a TEST trust anchor (--insecure-test-trust-anchor), not AMD's roots");
        }
        let corim_key = cfg
            .corim_key
            .as_deref()
            .map(cocos_measure::keys::SigningKey::load)
            .transpose()
            .map_err(|e| StartError::Config(format!("--corim-key: {e}")))?;
        let p384 = |p: &Option<PathBuf>, flag: &str| {
            p.as_deref()
                .map(cocos_measure::keys::SigningKey::load_p384)
                .transpose()
                .map_err(|e| StartError::Config(format!("{flag}: {e}")))
        };
        let snp_id_keys = p384(&cfg.snp_id_key, "--snp-id-key")?
            .map(|id| p384(&cfg.snp_author_key, "--snp-author-key").map(|a| (id, a)))
            .transpose()?;
        let snp_product = match &cfg.snp_product {
            Some(p) => cocos_measure::reference::cocos::SnpProduct::parse(p).ok_or_else(|| {
                StartError::Config(format!("--snp-product {p}: expected milan, genoa or turin"))
            })?,
            None => crate::reference::host_snp_product(
                &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
            ),
        };
        let retention = if cfg.grpc_url.is_some() {
            Retention::Confirmed
        } else {
            Retention::Ring
        };
        let store = Arc::new(Store::open_checked(
            &cfg.state_dir.join("state.redb"),
            crate::store::Limits::new(
                cfg.outbox_capacity,
                cfg.outbox_bytes,
                cfg.guest_outbox_share,
            ),
            retention,
            cfg.repair,
        )?);
        let metrics = Arc::new(Metrics::default());
        let (seq_tx, seq_rx) = watch::channel(store.last_seq()?);
        let writer = EventWriter::start(store.clone(), seq_tx, metrics.clone());
        let vsock = Arc::new(crate::vsock::Router::default());
        if cfg.transport == TransportKind::Vsock {
            let l = crate::vsock::bind(cfg.vsock_port).map_err(|source| StartError::Vsock {
                port: cfg.vsock_port,
                source,
            })?;
            tokio::spawn(crate::vsock::serve(l, vsock.clone()));
        }
        let m = Arc::new(Self {
            vsock,
            vms_dir: cfg.state_dir.join("vms"),
            cfg,
            release,
            sealed,
            expected,
            verifier,
            corim_key,
            snp_product,
            snp_id_keys,
            unstored: Mutex::new(std::collections::VecDeque::new()),
            store,
            writer,
            seq_rx,
            vms: Mutex::new(BTreeMap::new()),
            metrics,
        });
        m.recover().await;
        tokio::spawn(m.clone().ttl_reaper());
        tokio::spawn(m.clone().store_healer());
        Ok(m)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The release.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The last committed event sequence number; changes wake watchers.
    pub fn seq(&self) -> watch::Receiver<u64> {
        self.seq_rx.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Running VMs.
    pub fn list(&self) -> Vec<Arc<Vm>> {
        self.lock()
            .values()
            .filter_map(|s| match s {
                Slot::Running(v) => Some(v.clone()),
                Slot::Launching { .. } => None,
            })
            .collect()
    }

    /// One running VM.
    pub fn get(&self, id: &str) -> Result<Arc<Vm>, ApiError> {
        match self.lock().get(id) {
            Some(Slot::Running(v)) => Ok(v.clone()),
            Some(Slot::Launching { .. }) => Err(ApiError::Conflict(format!(
                "computation {id} is still launching"
            ))),
            None => Err(ApiError::NotFound(format!("no computation {id:?}"))),
        }
    }

    /// Stores a manager event.
    pub async fn emit(&self, id: &str, event_type: &str, status: &str, details: Value) {
        let item = Append {
            vm: id.into(),
            frame_id: None,
            payload: manager_event(id, event_type, status, &details),
        };
        if let Err(e) = self.writer.append(vec![item.clone()]).await {
            tracing::error!(computation = id, "cannot store event {event_type} now ({e}); kept in memory until the store commits again");
            if let Ok(mut q) = self.unstored.lock() {
                if q.len() >= MAX_UNSTORED {
                    q.pop_front();
                }
                q.push_back(item);
                self.metrics.events_unstored.set(q.len() as i64);
            }
        }
    }

    /// Reopens the store after a failed write (once a second) and then stores the
    /// manager events that could not be stored meanwhile, in order.
    pub(super) async fn store_healer(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.store.failure().is_some() {
                let s = self.store.clone();
                let r = tokio::task::spawn_blocking(move || s.reopen()).await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!("store still cannot commit: {e}"),
                    Err(e) => tracing::debug!("reopen task: {e}"),
                }
            }
            let healthy = self.store.failure().is_none();
            self.metrics.store_healthy.set(i64::from(healthy));
            if !healthy {
                continue;
            }
            let pending: Vec<Append> = match self.unstored.lock() {
                Ok(mut q) => q.drain(..).collect(),
                Err(_) => Vec::new(),
            };
            if pending.is_empty() {
                continue;
            }
            if let Err(e) = self.writer.append(pending.clone()).await {
                tracing::debug!("held manager events not stored yet: {e}");
                if let Ok(mut q) = self.unstored.lock() {
                    for (i, it) in pending.into_iter().enumerate() {
                        q.insert(i, it);
                    }
                }
            }
            if let Ok(q) = self.unstored.lock() {
                self.metrics.events_unstored.set(q.len() as i64);
            }
        }
    }

    /// The event writer (for tests and benchmarks that feed events directly).
    pub fn writer(&self) -> &EventWriter {
        &self.writer
    }

    /// The final command line for computation `id`.
    pub fn cmdline_for(&self, id: &str) -> Result<String, ApiError> {
        let mut parts: Vec<String> = self
            .release
            .cmdline
            .split_whitespace()
            .filter(|w| !w.starts_with("cocos.id=") && !w.starts_with("cocos.events="))
            .map(str::to_owned)
            .collect();
        parts.push(format!("cocos.id={id}"));
        parts.push(match self.cfg.transport {
            TransportKind::Vsock => format!("cocos.events=vsock:2:{}", self.cfg.vsock_port),
            TransportKind::Serial => format!("cocos.events=serial:{SERIAL_PORT}"),
        });
        let c = parts.join(" ");
        if c.len() > MAX_CMDLINE {
            return Err(ApiError::BadRequest(format!(
                "kernel command line would be {} bytes; the limit is {MAX_CMDLINE}",
                c.len()
            )));
        }
        Ok(c)
    }

    /// Launches one VM.
    pub async fn run(self: &Arc<Self>, req: RunRequest) -> Result<RunResult, ApiError> {
        let t0 = Instant::now();
        let r = self.run_inner(req, t0).await;
        match &r {
            Ok(res) => {
                self.metrics.launches.inc();
                self.metrics.launch_seconds.observe(res.launch_ms / 1000.0);
            }
            Err(e) => {
                self.metrics.launch_failures.inc();
                tracing::warn!("run refused: {e}");
            }
        }
        r
    }

    async fn run_inner(
        self: &Arc<Self>,
        req: RunRequest,
        t0: Instant,
    ) -> Result<RunResult, ApiError> {
        let id = req
            .computation_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        check_id(&id).map_err(ApiError::BadRequest)?;
        if let Some(why) = self.store.failure() {
            return Err(ApiError::Capacity(format!(
                "the event store cannot commit ({why}): launches are refused until it can (see /health)"
            )));
        }
        let vcpus = req.vcpus.unwrap_or(self.cfg.vcpus);
        if vcpus == 0 || vcpus > self.cfg.max_vcpus {
            return Err(ApiError::BadRequest(format!(
                "vcpus {vcpus}: must be between 1 and {}",
                self.cfg.max_vcpus
            )));
        }
        let ttl = match req.ttl.as_deref() {
            Some(t) => Some(
                crate::config::parse_duration(t)
                    .map_err(|e| ApiError::BadRequest(format!("ttl {e}")))?,
            ),
            None => self.cfg.default_ttl,
        };
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(ApiError::BadRequest(
                "ttl 0 would stop the computation at once: give a positive duration (30m, 2h) or leave it out".into(),
            ));
        }
        // Unix socket paths (sockaddr_un) hold 107 bytes and a NUL: the VM's agent and
        // QMP sockets must fit, or QEMU could not start after a 201.
        let sock = self.vms_dir.join(&id).join("agent.sock");
        let len = sock.as_os_str().len();
        if len > 107 {
            return Err(ApiError::BadRequest(format!(
                "computation id {id:?}: its socket path {} is {len} bytes, over the 108 a Unix socket path may have (with its NUL); use a shorter id (at most {} characters here) or a shorter --state-dir",
                sock.display(),
                id.len().saturating_sub(len - 107)
            )));
        }
        // Reserve the id, a CID and a port under the lock: no two launches get the same.
        let (cid, port) = {
            let mut vms = self.lock();
            if vms.contains_key(&id) {
                return Err(ApiError::Conflict(format!(
                    "computation {id} already exists"
                )));
            }
            if vms.len() >= self.cfg.max_vms {
                return Err(ApiError::Capacity(format!(
                    "{} VMs running, the limit (MANAGER_MAX_VMS) is {}",
                    vms.len(),
                    self.cfg.max_vms
                )));
            }
            let held: Vec<(Option<u32>, Option<u16>)> = vms.values().map(Slot::held).collect();
            let cid = (self.cfg.transport == TransportKind::Vsock).then(|| {
                (3u32..)
                    .find(|c| !held.iter().any(|h| h.0 == Some(*c)))
                    .unwrap_or(3)
            });
            let port = match self.cfg.agent_guest_port {
                None => None,
                Some(_) => {
                    let (lo, hi) = self.cfg.host_fwd_range;
                    // Skip ports another VM holds or another process listens on.
                    let free = (lo..=hi).find(|p| {
                        !held.iter().any(|h| h.1 == Some(*p))
                            && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()
                    });
                    Some(free.ok_or_else(|| {
                        ApiError::Capacity(format!(
                            "no free host port in MANAGER_QEMU_HOST_FWD_RANGE {lo}-{hi}"
                        ))
                    })?)
                }
            };
            vms.insert(id.clone(), Slot::Launching { cid, port });
            (cid, port)
        };
        let r = self
            .launch(LaunchRequest {
                id: &id,
                vcpus,
                ttl,
                cid,
                port,
                t0,
            })
            .await;
        if r.is_err() {
            self.lock().remove(&id);
        }
        r
    }

    /// CVMInfo / svmInfo for a computation.
    pub fn info(&self, id: &str) -> Result<CvmInfo, ApiError> {
        let vm = self.get(id)?;
        let fw = self
            .release
            .firmware
            .iter()
            .find(|f| f.sha256 == self.sealed.firmware.sha256)
            .map(|f| format!("{} sha256:{}", f.file, hex::encode(f.sha256)))
            .unwrap_or_default();
        Ok(CvmInfo {
            id: id.to_owned(),
            ovmf_version: fw,
            cpu_num: vm.record.vcpus,
            cpu_type: self.cpu_model(),
            kernel_cmd: vm.record.cmdline.clone(),
            eos_version: format!(
                "{} {} (kernel {})",
                self.release.name, self.release.version, self.release.kernel_release
            ),
        })
    }

    /// The attestation policy for a computation: the reference values its report
    /// must match.
    pub fn policy(&self, id: &str) -> Result<Policy, ApiError> {
        let vm = self.get(id)?;
        Ok(Policy {
            computation_id: id.to_owned(),
            expected_measurement: vm.record.expected.clone(),
            launched_under: self.cfg.tee,
            release: ReleaseName {
                name: self.release.name.clone(),
                version: self.release.version.clone(),
            },
            tee: self.cfg.measure_target(),
        })
    }

    /// AttestationPolicy's answer: the summary, and for a TEE launch its reference
    /// values as cocos policy JSON and CoRIM — exactly this launch's (its vCPUs,
    /// command line with `cocos.id`, host data, ID block), not the release's defaults.
    pub fn attestation_policy(&self, id: &str) -> Result<PolicyAnswer, ApiError> {
        let summary = self.policy(id)?;
        let vm = self.get(id)?;
        let values = crate::reference::reference_values(
            &format!("{}-{}/{id}", self.release.name, self.release.version),
            &vm.record.expected,
            &vm.record.facts,
        )
        .map_err(ApiError::Internal)?;
        let documents = values
            .map(|v| crate::reference::documents(&v, self.snp_product, self.corim_key.as_ref()))
            .transpose()
            .map_err(ApiError::Internal)?;
        Ok(PolicyAnswer { summary, documents })
    }

    /// A VM's summary for listings.
    pub fn describe(vm: &Vm) -> VmSummary {
        let r = &vm.record;
        VmSummary {
            computation_id: r.id.clone(),
            cmdline: r.cmdline.clone(),
            created_ms: r.created_ms,
            deadline_ms: r.deadline_ms,
            expected_measurement: r.expected.clone(),
            forwarded_port: r.forwarded_port,
            launch_ms: r.launch_ms,
            memory_mib: r.memory_mib,
            pid: r.pid,
            stopping: vm.stopping.load(Ordering::SeqCst),
            tee: r.tee,
            vcpus: r.vcpus,
        }
    }
}

/// Verifies the firmware against release.json and prepares the measurement. Each
/// file is read once; what was hashed is what is measured.
/// The three release files as sealed memfds, checked once at start: every launch hands
/// QEMU descriptors of these exact bytes.
#[derive(Debug)]
pub(crate) struct SealedFiles {
    kernel: release::Sealed,
    initrd: release::Sealed,
    firmware: release::Sealed,
}

fn prepare(
    cfg: &Config,
    release: &Release,
    target: &Target,
) -> Result<(Expected, SealedFiles), StartError> {
    // The firmware is read once: sealed, then looked up by the digest of what was sealed.
    let firmware = release::seal_any(&cfg.ovmf)?;
    let fw_sha = firmware.sha256;
    let listed = release
        .firmware
        .iter()
        .any(|f| f.sha256 == fw_sha && (*target == Target::None || f.tee == target.name()));
    if !listed {
        return Err(StartError::Firmware(format!(
            "{}: SHA-256 {} is not a firmware {} lists{}; launch with the firmware the release was measured with",
            cfg.ovmf.display(),
            hex::encode(fw_sha),
            release.manifest.display(),
            if *target == Target::None { String::new() } else { format!(" for {}", target.name()) }
        )));
    }
    let sealed = SealedFiles {
        kernel: release::seal(&release.kernel.path, &release.kernel.sha256)?,
        initrd: release::seal(&release.initrd.path, &release.initrd.sha256)?,
        firmware,
    };
    // The measurement is computed from the very bytes QEMU will be given.
    let bytes = |s: &release::Sealed, p: &Path| -> Result<Vec<u8>, StartError> {
        use std::io::{Read, Seek};
        let mut f = s.dup(p)?;
        let mut b = Vec::new();
        f.rewind()
            .and_then(|_| f.read_to_end(&mut b))
            .map_err(|e| release::ReleaseError::Io {
                path: p.display().to_string(),
                source: e,
            })?;
        Ok(b)
    };
    let e = Expected::new(
        target,
        bytes(&sealed.firmware, &cfg.ovmf)?,
        bytes(&sealed.kernel, &release.kernel.path)?,
        &bytes(&sealed.initrd, &release.initrd.path)?,
    )?;
    Ok((e, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocos_proto::frame;

    /// An agent's AgentMessage{agent_event = 2: {event_type = 1 "boot", computation_id
    /// = 3 `id`, details = 4 "{}", originator = 5 "agent", status = 6 "ok"}}, written
    /// out from cocos' field numbers.
    fn event_bytes(id: &str) -> Vec<u8> {
        let body = [
            &[0x0a, 4][..],
            b"boot",
            &[0x1a, id.len() as u8],
            id.as_bytes(),
            &[0x22, 2],
            b"{}",
            &[0x2a, 5],
            b"agent",
            &[0x32, 2],
            b"ok",
        ]
        .concat();
        [&[0x12, body.len() as u8][..], &body].concat()
    }

    /// What the manager stored before it decoded frames once: the agent's bytes
    /// decoded as a ClientStreamMessage, the computation id replaced, encoded again.
    fn stored_the_old_way(id: &str, payload: &[u8]) -> Vec<u8> {
        let mut m = ClientStreamMessage::decode(payload).unwrap();
        match m.message.as_mut().unwrap() {
            client_stream_message::Message::AgentEvent(e) => e.computation_id = id.into(),
            client_stream_message::Message::AgentLog(l) => l.computation_id = id.into(),
            _ => unreachable!(),
        }
        m.encode_to_vec()
    }

    #[test]
    fn agent_frames_are_stored_as_before_with_one_decode() {
        let mut s = Session::new("vm-1", 0);
        let sent = event_bytes("guest-said");
        let log = AgentMessage {
            message: Some(agent_message::Message::AgentLog(AgentLog {
                message: "hi".into(),
                computation_id: String::new(),
                level: "info".into(),
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 2,
                }),
            })),
        }
        .encode_to_vec();
        let mut bytes = frame::encode(1, &sent).unwrap();
        bytes.extend(frame::encode(2, &log).unwrap());
        let inc = s.on_bytes(&bytes).unwrap();
        let stored: Vec<Vec<u8>> = inc
            .new
            .into_iter()
            .map(|d| agent_payload("vm-1", d.frame_id, d.message, MAX_STORED_EVENT))
            .collect();
        // The store format: the agent's event, its computation id the VM's.
        assert_eq!(stored[0], event_bytes("vm-1"));
        assert_eq!(stored[0], stored_the_old_way("vm-1", &sent));
        assert_eq!(stored[1], stored_the_old_way("vm-1", &log));
        let Some(client_stream_message::Message::AgentLog(l)) =
            ClientStreamMessage::decode(stored[1].as_slice())
                .unwrap()
                .message
        else {
            unreachable!()
        };
        assert_eq!(
            (l.computation_id.as_str(), l.message.as_str()),
            ("vm-1", "hi")
        );
    }

    #[test]
    fn a_frame_that_is_no_agent_message_is_stored_as_a_note() {
        let mut s = Session::new("vm-1", 0);
        let inc = s
            .on_bytes(&frame::encode(7, &[0xff, 0xff]).unwrap())
            .unwrap();
        let d = inc.new.into_iter().next().unwrap();
        let m = ClientStreamMessage::decode(
            agent_payload("vm-1", d.frame_id, d.message, MAX_STORED_EVENT).as_slice(),
        )
        .unwrap();
        let Some(client_stream_message::Message::AgentLog(l)) = m.message else {
            unreachable!()
        };
        assert_eq!(l.computation_id, "vm-1");
        assert_eq!(l.level, "error");
        assert!(l.message.contains("agent frame 7"), "{}", l.message);
    }
}
