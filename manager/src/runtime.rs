//! The manager proper: launches (verify, measure, spawn), per-VM supervision (agent
//! channel, exit, cleanup), stop, TTL, re-adoption after a restart, and the event
//! writer that group-commits every event to the store before anything is
//! acknowledged. The HTTP, gRPC and seed-protocol front ends call into [`Manager`].

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
use crate::expected::{Expected, Target};
use crate::metrics::Metrics;
use crate::qemu::{self, Accel, AgentTransport, Tee, VmSpec};
use crate::release::{self, Release};
use crate::store::{Append, Appended, Retention, Store};
use crate::{procs, qmp};

/// An agent connection (Unix socket or vsock).
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

/// Longest kernel command line (x86 COMMAND_LINE_SIZE).
pub const MAX_CMDLINE: usize = 2048;
/// Virtio-serial port name the agent looks for.
pub const SERIAL_PORT: &str = "cocos.events";
const QMP_TIMEOUT: Duration = Duration::from_secs(3);

/// A launch request (from any front end).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Computation id; generated when absent.
    #[serde(default)]
    pub computation_id: Option<String>,
    /// vCPUs (default: --vcpus).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Time to live ("30m"; default: --default-ttl).
    #[serde(default)]
    pub ttl: Option<String>,
}

impl RunRequest {
    /// From protobuf fields, where "" and 0 mean "not given".
    pub fn from_proto(computation_id: &str, vcpus: u32, ttl: &str) -> Self {
        Self {
            computation_id: (!computation_id.is_empty()).then(|| computation_id.to_owned()),
            vcpus: (vcpus != 0).then_some(vcpus),
            ttl: (!ttl.is_empty()).then(|| ttl.to_owned()),
        }
    }
}

/// A launched VM.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// Computation id.
    pub computation_id: String,
    /// What its attestation must show.
    pub expected_measurement: Value,
    /// QEMU's pid.
    pub pid: u32,
    /// The exact kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Request to QEMU spawned, milliseconds.
    pub launch_ms: f64,
    /// Host port (127.0.0.1) forwarded to the guest's agent port, if forwarding is on.
    pub forwarded_port: Option<u16>,
}

/// Why a request failed; each maps to an HTTP status and a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or out-of-range input.
    #[error("{0}")]
    BadRequest(String),
    /// The computation id is in use.
    #[error("{0}")]
    Conflict(String),
    /// No such computation.
    #[error("{0}")]
    NotFound(String),
    /// MANAGER_MAX_VMS reached.
    #[error("{0}")]
    Capacity(String),
    /// The release's files do not verify.
    #[error("{0}")]
    Refused(String),
    /// Launch or store failure.
    #[error("{0}")]
    Internal(String),
}

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
    pub expected: Value,
    /// Launch latency.
    pub launch_ms: f64,
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
}

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

struct WriteReq {
    items: Vec<Append>,
    reply: oneshot::Sender<Result<Vec<Appended>, String>>,
}

/// Group-commits events: one store transaction for everything queued meanwhile.
#[derive(Debug, Clone)]
pub struct EventWriter {
    tx: std::sync::mpsc::Sender<WriteReq>,
}

impl std::fmt::Debug for WriteReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteReq")
            .field("items", &self.items.len())
            .finish()
    }
}

impl EventWriter {
    fn start(store: Arc<Store>, seq: watch::Sender<u64>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<WriteReq>();
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                let mut n = batch.iter().map(|r| r.items.len()).sum::<usize>();
                while n < 8192 {
                    match rx.try_recv() {
                        Ok(r) => {
                            n += r.items.len();
                            batch.push(r);
                        }
                        Err(_) => break,
                    }
                }
                let all: Vec<Append> = batch.iter().flat_map(|r| r.items.iter().cloned()).collect();
                match store.append(&all) {
                    Ok(results) => {
                        let stored = results
                            .iter()
                            .filter(|r| matches!(r, Appended::Stored(_)))
                            .count();
                        metrics.events.inc_by(stored as u64);
                        if let Ok(l) = store.last_seq() {
                            seq.send_replace(l);
                        }
                        let mut it = results.into_iter();
                        for r in batch {
                            let mine: Vec<Appended> = it.by_ref().take(r.items.len()).collect();
                            let _ = r.reply.send(Ok(mine));
                        }
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        for r in batch {
                            let _ = r.reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Stores `items` (in one transaction with whatever else is queued).
    pub async fn append(&self, items: Vec<Append>) -> Result<Vec<Appended>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteReq { items, reply })
            .map_err(|_| "event writer stopped".to_owned())?;
        rx.await.map_err(|_| "event writer stopped".to_owned())?
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// A manager-originated event as stored.
pub fn manager_event(id: &str, event_type: &str, status: &str, details: &Value) -> Vec<u8> {
    ClientStreamMessage {
        message: Some(client_stream_message::Message::AgentEvent(AgentEvent {
            event_type: event_type.into(),
            timestamp: Some(timestamp()),
            computation_id: id.into(),
            details: details.to_string().into_bytes(),
            originator: "manager".into(),
            status: status.into(),
        })),
        seq: 0,
    }
    .encode_to_vec()
}

/// An agent frame as stored: its message (decoded once, by the agent channel; `None`
/// if the payload was not an `AgentMessage`), tagged with the VM's computation id and
/// encoded as a `ClientStreamMessage`. AgentMessage's oneof (log = 1, event = 2) is
/// ClientStreamMessage's, of the same types (proto/agent.proto), so the message moves
/// across without another decode.
pub fn agent_payload(id: &str, frame_id: u32, message: Option<AgentMessage>) -> Vec<u8> {
    let msg = match message.and_then(|m| m.message) {
        Some(agent_message::Message::AgentEvent(mut e)) => {
            e.computation_id = id.into();
            client_stream_message::Message::AgentEvent(e)
        }
        Some(agent_message::Message::AgentLog(mut l)) => {
            l.computation_id = id.into();
            client_stream_message::Message::AgentLog(l)
        }
        None => client_stream_message::Message::AgentLog(AgentLog {
            message: format!(
                "agent frame {frame_id} is not an agent event or log; kept as this note"
            ),
            computation_id: id.into(),
            level: "error".into(),
            timestamp: Some(timestamp()),
        }),
    };
    ClientStreamMessage {
        message: Some(msg),
        seq: 0,
    }
    .encode_to_vec()
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
    firmware_sha256: [u8; 32],
    expected: Expected,
    store: Arc<Store>,
    writer: EventWriter,
    seq_rx: watch::Receiver<u64>,
    vms: Mutex<BTreeMap<String, Slot>>,
    vms_dir: PathBuf,
    vsock: Arc<crate::vsock::Router>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Manager {
    /// Loads the release, verifies the firmware, prepares the measurement, opens the
    /// store (state_dir/state.redb) and re-adopts or cleans up VMs a previous run left.
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Self>> {
        cfg.validate().map_err(anyhow::Error::msg)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cfg.state_dir.join("vms"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.state_dir.display()))?;
        let release = Release::load(&cfg.release)?;
        let target = match cfg.measure_target() {
            TeeKind::None => Target::None,
            TeeKind::Snp => Target::Snp {
                vcpu_type: cfg.snp_vcpu_type.clone(),
                guest_features: cfg.snp_guest_features,
            },
            TeeKind::Tdx => Target::Tdx {
                memory: cfg.memory_mib().map_err(anyhow::Error::msg)? << 20,
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
        let (expected, firmware_sha256) = {
            let (cfg, release, target) = (cfg.clone(), release.clone(), target.clone());
            tokio::task::spawn_blocking(move || prepare(&cfg, &release, &target)).await??
        };
        let retention = if cfg.grpc_url.is_some() {
            Retention::Confirmed
        } else {
            Retention::Ring
        };
        let store = Arc::new(Store::open(
            &cfg.state_dir.join("state.redb"),
            cfg.outbox_capacity,
            retention,
        )?);
        let metrics = Arc::new(Metrics::default());
        let (seq_tx, seq_rx) = watch::channel(store.last_seq()?);
        let writer = EventWriter::start(store.clone(), seq_tx, metrics.clone());
        let vsock = Arc::new(crate::vsock::Router::default());
        if cfg.transport == TransportKind::Vsock {
            let l = crate::vsock::bind(cfg.vsock_port).map_err(|e| {
                anyhow::anyhow!("vsock port {}: {e} (the vsock transport needs the host's vhost_vsock module; use --transport serial)", cfg.vsock_port)
            })?;
            tokio::spawn(crate::vsock::serve(l, vsock.clone()));
        }
        let m = Arc::new(Self {
            vsock,
            vms_dir: cfg.state_dir.join("vms"),
            cfg,
            release,
            firmware_sha256,
            expected,
            store,
            writer,
            seq_rx,
            vms: Mutex::new(BTreeMap::new()),
            metrics,
        });
        m.recover().await;
        tokio::spawn(m.clone().ttl_reaper());
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
        if let Err(e) = self.writer.append(vec![item]).await {
            tracing::error!(computation = id, "cannot store event {event_type}: {e}");
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
        let r = self.launch(&id, vcpus, ttl, cid, port, t0).await;
        if r.is_err() {
            self.lock().remove(&id);
        }
        r
    }

    async fn launch(
        self: &Arc<Self>,
        id: &str,
        vcpus: u32,
        ttl: Option<Duration>,
        cid: Option<u32>,
        port: Option<u16>,
        t0: Instant,
    ) -> Result<RunResult, ApiError> {
        let cmdline = self.cmdline_for(id)?;
        // Verify from open descriptors and compute the measurement off the runtime.
        let (files, expected) = {
            let m = self.clone();
            let cmdline = cmdline.clone();
            tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
                let refuse = |e: release::ReleaseError| ApiError::Refused(e.to_string());
                let k = release::open_verified(&m.release.kernel.path, &m.release.kernel.sha256)
                    .map_err(refuse)?;
                let i = release::open_verified(&m.release.initrd.path, &m.release.initrd.sha256)
                    .map_err(refuse)?;
                let f = release::open_verified(&m.cfg.ovmf, &m.firmware_sha256).map_err(refuse)?;
                let e = m
                    .expected
                    .compute(k.sha256, i.sha256, &cmdline, vcpus)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                Ok(([k, i, f], e))
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
        };
        let dir = self.vms_dir.join(id);
        let internal = |what: &str, e: std::io::Error| {
            ApiError::Internal(format!("{what} {}: {e}", dir.display()))
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| internal("cannot clear stale", e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| internal("cannot create", e))?;
        let private = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(dir.join(name))
        };
        private("console.log").map_err(|e| internal("console.log in", e))?;
        let qemu_log = private("qemu.log").map_err(|e| internal("qemu.log in", e))?;
        let name = format!("cocos-{id}");
        let [k, i, f] = files;
        let spec = VmSpec {
            name: name.clone(),
            accel: match self.cfg.accel {
                AccelKind::Kvm => Accel::Kvm,
                AccelKind::Tcg => Accel::Tcg,
                AccelKind::Auto if Path::new("/dev/kvm").exists() => Accel::Kvm,
                AccelKind::Auto => Accel::Tcg,
            },
            cpus: vcpus,
            cpu_model: self.cpu_model(),
            memory_mib: self.cfg.memory_mib().map_err(ApiError::Internal)?,
            firmware: PathBuf::from("/dev/fd/5"),
            kernel: PathBuf::from("/dev/fd/3"),
            initrd: Some(PathBuf::from("/dev/fd/4")),
            cmdline: cmdline.clone(),
            tee: self.tee(),
            transport: match cid {
                Some(cid) => AgentTransport::Vsock { cid },
                None => AgentTransport::Serial {
                    socket: dir.join("agent.sock"),
                    name: SERIAL_PORT.into(),
                },
            },
            forward: port.zip(self.cfg.agent_guest_port),
            console_log: dir.join("console.log"),
            qmp_socket: dir.join("qmp.sock"),
        };
        if !self.cfg.skip_host_check {
            let caps = qemu::detect_host(Path::new("/sys"), Path::new("/dev"));
            if let Some(why) = caps.refuse(&spec.tee, spec.accel) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::Refused(why));
            }
        }
        let mut cmd = tokio::process::Command::new(&self.cfg.qemu_bin);
        cmd.args(qemu::argv(&spec))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(qemu_log)
            // Its own process group: a signal to the manager's group leaves VMs running.
            .process_group(0)
            .kill_on_drop(false);
        cmd.fd_mappings(vec![
            FdMapping {
                parent_fd: k.file.into(),
                child_fd: 3,
            },
            FdMapping {
                parent_fd: i.file.into(),
                child_fd: 4,
            },
            FdMapping {
                parent_fd: f.file.into(),
                child_fd: 5,
            },
        ])
        .map_err(|e| ApiError::Internal(format!("fd mapping: {e}")))?;
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::Internal(format!(
                    "cannot start {}: {e}",
                    self.cfg.qemu_bin.display()
                )));
            }
        };
        drop(cmd); // closes our copies of the verified descriptors
        let Some(pid) = child.id() else {
            // Only a child already reaped has no pid; nothing was recorded yet.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ApiError::Internal(format!(
                "{} exited before its pid could be read",
                self.cfg.qemu_bin.display()
            )));
        };
        let launch_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let start_time = procs::start_time(Path::new("/proc"), pid).unwrap_or(0);
        let created_ms = now_ms();
        let record = VmRecord {
            id: id.into(),
            name,
            pid,
            start_time,
            dir,
            vcpus,
            memory_mib: spec.memory_mib,
            cmdline: cmdline.clone(),
            tee: self.cfg.tee,
            cid,
            forwarded_port: port,
            created_ms,
            deadline_ms: ttl.map(|t| created_ms.saturating_add(t.as_millis() as u64)),
            expected: expected.clone(),
            launch_ms,
        };
        let rec_json =
            serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Err(e) = self.store.put_vm(id, &rec_json) {
            tracing::error!("{e}; the VM runs but will not be re-adopted after a restart");
        }
        self.emit(
            id,
            "vm-provision",
            "ok",
            json!({"pid": pid, "cmdline": cmdline, "vcpus": vcpus, "expected_measurement": expected,
                   "release": {"name": self.release.name, "version": self.release.version},
                   "launch_ms": launch_ms}),
        )
        .await;
        self.spawn_supervisor(record, Some(child));
        Ok(RunResult {
            computation_id: id.into(),
            expected_measurement: expected,
            pid,
            cmdline,
            vcpus,
            launch_ms,
            forwarded_port: port,
        })
    }

    /// QEMU's -cpu: an SNP guest runs the vCPU type its measurement assumes.
    fn cpu_model(&self) -> String {
        if self.cfg.tee == TeeKind::Snp {
            self.cfg.snp_vcpu_type.clone()
        } else {
            self.cfg.cpu.clone()
        }
    }

    fn tee(&self) -> Tee {
        match self.cfg.tee {
            TeeKind::None => Tee::None,
            TeeKind::Snp => Tee::SevSnp {
                cbitpos: self.cfg.cbitpos,
                reduced_phys_bits: self.cfg.reduced_phys_bits,
                host_data: self.cfg.host_data.clone(),
            },
            TeeKind::Tdx => Tee::Tdx {
                quote_socket: self.cfg.tdx_quote_socket.clone(),
            },
        }
    }

    fn spawn_supervisor(self: &Arc<Self>, record: VmRecord, child: Option<tokio::process::Child>) {
        let (done_tx, _) = watch::channel(false);
        let (attest_tx, attest_rx) = mpsc::channel(16);
        let vm = Arc::new(Vm {
            record,
            stopping: AtomicBool::new(false),
            stop_reason: Mutex::new(String::new()),
            done_tx,
            attest_tx,
        });
        self.lock()
            .insert(vm.record.id.clone(), Slot::Running(vm.clone()));
        self.metrics.vms.set(self.list().len() as i64);
        let vsock_rx = vm.record.cid.map(|cid| self.vsock.register(cid));
        let m = self.clone();
        tokio::spawn(async move {
            let mut agent = tokio::spawn(m.clone().agent_loop(vm.clone(), attest_rx, vsock_rx));
            let status = match child {
                Some(mut c) => match c.wait().await {
                    Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                        (Some(code), _) => json!({"exit_code": code}),
                        (None, Some(sig)) => json!({"signal": sig}),
                        _ => json!({}),
                    },
                    Err(e) => json!({"error": e.to_string()}),
                },
                None => {
                    while procs::is_same(vm.record.pid, vm.record.start_time) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    json!({"note": "adopted process; exit status unknown"})
                }
            };
            // No more vsock connections for this VM (this also ends its wait for one).
            if let Some(cid) = vm.record.cid {
                m.vsock.unregister(cid);
            }
            // Let the agent task read what QEMU's socket still holds, then stop it.
            if tokio::time::timeout(Duration::from_secs(2), &mut agent)
                .await
                .is_err()
            {
                agent.abort();
            }
            m.finish(&vm, status).await;
        });
    }

    async fn finish(&self, vm: &Arc<Vm>, status: Value) {
        let id = vm.record.id.as_str();
        let requested = vm.stopping.load(Ordering::SeqCst);
        let reason = vm.stop_reason.lock().map(|r| r.clone()).unwrap_or_default();
        let clean = status.get("exit_code").and_then(Value::as_i64) == Some(0);
        let mut details = json!({"status": status, "pid": vm.record.pid});
        let st = if requested {
            if let Some(o) = details.as_object_mut() {
                o.insert("stopped_by".into(), Value::String(reason));
            }
            "stopped"
        } else if clean {
            "exited"
        } else {
            let tail = std::fs::read(vm.record.dir.join("qemu.log")).unwrap_or_default();
            let tail =
                String::from_utf8_lossy(tail.get(tail.len().saturating_sub(2000)..).unwrap_or(&[]))
                    .into_owned();
            if let Some(o) = details.as_object_mut() {
                o.insert("qemu_stderr".into(), Value::String(tail));
            }
            "failed"
        };
        self.emit(id, "vm-exited", st, details).await;
        if let Err(e) = std::fs::remove_dir_all(&vm.record.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", vm.record.dir.display());
            }
        }
        if let Err(e) = self.store.delete_vm(id) {
            tracing::error!("{e}");
        }
        self.lock().remove(id);
        self.metrics.vms.set(self.list().len() as i64);
        vm.done_tx.send_replace(true);
        tracing::info!(computation = id, "VM {st}");
    }

    /// Waits for the VM's next agent connection: dial QEMU's virtio-serial socket, or
    /// take the next vsock connection the listener routed here. None once QEMU is gone.
    async fn next_connection(
        vm: &Vm,
        vsock_rx: &mut Option<mpsc::Receiver<tokio_vsock::VsockStream>>,
        done: &mut watch::Receiver<bool>,
    ) -> Option<Box<dyn Conn>> {
        loop {
            if *done.borrow() {
                return None;
            }
            if let Some(rx) = vsock_rx.as_mut() {
                tokio::select! {
                    s = rx.recv() => return s.map(|s| Box::new(s) as Box<dyn Conn>),
                    _ = done.changed() => return None,
                }
            }
            let sock = vm.record.agent_socket();
            match tokio::net::UnixStream::connect(&sock).await {
                Ok(s) => {
                    // QEMU creates its sockets with the umask's mode: make them private.
                    for p in [sock, vm.record.qmp_socket()] {
                        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
                    }
                    return Some(Box::new(s));
                }
                Err(_) if !procs::is_same(vm.record.pid, vm.record.start_time) => return None,
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = done.changed() => return None,
                    }
                }
            }
        }
    }

    async fn agent_loop(
        self: Arc<Self>,
        vm: Arc<Vm>,
        mut attest_rx: mpsc::Receiver<Vec<u8>>,
        mut vsock_rx: Option<mpsc::Receiver<tokio_vsock::VsockStream>>,
    ) {
        let id = vm.record.id.clone();
        let hw = self.store.agent_hw(&id).unwrap_or(0);
        let mut session = Session::new(&id, hw);
        let mut done = vm.done_tx.subscribe();
        while let Some(conn) = Self::next_connection(&vm, &mut vsock_rx, &mut done).await {
            let (mut r, mut w) = tokio::io::split(conn);
            if w.write_all(&session.reconnected()).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 32 * 1024];
            let ended = loop {
                tokio::select! {
                    n = r.read(&mut buf) => {
                        let n = match n { Ok(0) | Err(_) => break "eof", Ok(n) => n };
                        let inc = match session.on_bytes(buf.get(..n).unwrap_or(&[])) {
                            Ok(i) => i,
                            Err(e) => { tracing::warn!("{e}; reconnecting"); break "framing"; }
                        };
                        if !inc.acks_now.is_empty() && w.write_all(&inc.acks_now).await.is_err() {
                            break "eof";
                        }
                        if inc.new.is_empty() { continue; }
                        let frame_ids: Vec<u32> = inc.new.iter().map(|d| d.frame_id).collect();
                        // Each frame was decoded once (Session::on_bytes); its message
                        // moves into the stored ClientStreamMessage, encoded once.
                        let items: Vec<Append> = inc.new.into_iter().map(|d| Append {
                            vm: id.clone(),
                            frame_id: Some(d.frame_id),
                            payload: agent_payload(&id, d.frame_id, d.message),
                        }).collect();
                        let results = match self.writer.append(items).await {
                            Ok(r) => r,
                            Err(e) => { tracing::error!("{e}"); break "store"; }
                        };
                        let mut ids = Vec::new();
                        let mut refused = false;
                        for (&fid, res) in frame_ids.iter().zip(results) {
                            match res {
                                Appended::Stored(_) | Appended::Duplicate if !refused => ids.push(fid),
                                _ => refused = true,
                            }
                        }
                        if w.write_all(&session.committed(&ids)).await.is_err() { break "eof"; }
                        if refused {
                            self.metrics.refused.inc();
                            break "full";
                        }
                    }
                    nonce = attest_rx.recv() => {
                        let Some(nonce) = nonce else { continue };
                        match session.request_attestation(&nonce) {
                            Ok(b) => if w.write_all(&b).await.is_err() { break "eof"; },
                            Err(e) => tracing::warn!("attestation request: {e}"),
                        }
                    }
                    _ = done.changed() => return,
                }
            };
            match ended {
                "full" => {
                    tracing::warn!(computation = %id, "outbox full: agent frames wait in the agent until the control plane confirms events");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "eof" if procs::is_same(vm.record.pid, vm.record.start_time) => {
                    self.emit(
                        &id,
                        "agent-disconnected",
                        "warning",
                        json!({"reason": "agent channel closed while QEMU runs"}),
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                "eof" => return,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Asks the VM's agent for an attestation report over this nonce; the answer
    /// arrives as an "attestation" event.
    pub async fn attest(&self, id: &str, nonce: Vec<u8>) -> Result<(), ApiError> {
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(ApiError::BadRequest("nonce: 1 to 64 bytes".into()));
        }
        let vm = self.get(id)?;
        vm.attest_tx
            .send(nonce)
            .await
            .map_err(|_| ApiError::NotFound(format!("computation {id} is gone")))
    }

    /// Stops a VM: QMP system_powerdown, then SIGTERM, then SIGKILL, each after
    /// --stop-timeout; returns when QEMU is gone and its files are removed.
    pub async fn stop(&self, id: &str, reason: &str) -> Result<(), ApiError> {
        let vm = self.get(id)?;
        let mut done = vm.done_tx.subscribe();
        if !vm.stopping.swap(true, Ordering::SeqCst) {
            if let Ok(mut r) = vm.stop_reason.lock() {
                *r = reason.into();
            }
            let t = self.cfg.stop_timeout;
            let wait = |done: &mut watch::Receiver<bool>, t: Duration| {
                let mut d = done.clone();
                async move { tokio::time::timeout(t, d.wait_for(|x| *x)).await.is_ok() }
            };
            if let Err(e) = qmp::execute(
                &vm.record.qmp_socket(),
                "system_powerdown",
                None,
                QMP_TIMEOUT,
            )
            .await
            {
                tracing::debug!("{e}");
            }
            if !wait(&mut done, t).await {
                tracing::info!(computation = id, "no power-down within {t:?}: SIGTERM");
                procs::signal_if_same(vm.record.pid, vm.record.start_time, Signal::SIGTERM);
                if !wait(&mut done, t).await {
                    tracing::warn!(computation = id, "still running: SIGKILL");
                    procs::signal_if_same(vm.record.pid, vm.record.start_time, Signal::SIGKILL);
                }
            }
        }
        tokio::time::timeout(
            self.cfg.stop_timeout * 2 + Duration::from_secs(10),
            done.wait_for(|x| *x),
        )
        .await
        .map_err(|_| ApiError::Internal(format!("computation {id} did not stop")))?
        .map_err(|_| ApiError::Internal(format!("computation {id}: supervisor gone")))?;
        Ok(())
    }

    async fn ttl_reaper(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = now_ms();
            for vm in self.list() {
                if vm.record.deadline_ms.is_some_and(|d| d <= now)
                    && !vm.stopping.load(Ordering::SeqCst)
                {
                    let m = self.clone();
                    tokio::spawn(async move {
                        m.emit(
                            &vm.record.id,
                            "ttl-expired",
                            "ok",
                            json!({"deadline_ms": vm.record.deadline_ms}),
                        )
                        .await;
                        let _ = m.stop(&vm.record.id, "ttl").await;
                    });
                }
            }
        }
    }

    /// Re-adopts VMs from the store whose QEMU still runs (same pid, same start time,
    /// QMP answering with the VM's name); cleans up the others.
    async fn recover(self: &Arc<Self>) {
        let records = match self.store.vms() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for (id, bytes) in records {
            let rec: VmRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(computation = %id, "unreadable VM record ({e}); forgetting it");
                    let _ = self.store.delete_vm(&id);
                    continue;
                }
            };
            let alive = procs::is_same(rec.pid, rec.start_time);
            let qmp_name = if alive {
                qmp::execute(&rec.qmp_socket(), "query-name", None, QMP_TIMEOUT)
                    .await
                    .ok()
                    .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
            } else {
                None
            };
            if alive && qmp_name.as_deref() == Some(rec.name.as_str()) {
                tracing::info!(computation = %id, pid = rec.pid, "re-adopted");
                self.emit(&id, "vm-readopted", "ok", json!({"pid": rec.pid}))
                    .await;
                self.spawn_supervisor(rec, None);
                continue;
            }
            let why = if alive {
                format!("pid {} runs with the recorded start time but QMP does not identify it as {}; left running, not adopted", rec.pid, rec.name)
            } else {
                "QEMU exited while the manager was down".to_owned()
            };
            tracing::warn!(computation = %id, "{why}");
            self.emit(
                &id,
                "vm-exited",
                "lost",
                json!({"reason": why, "pid": rec.pid}),
            )
            .await;
            let _ = std::fs::remove_dir_all(&rec.dir);
            let _ = self.store.delete_vm(&id);
        }
        self.metrics.vms.set(self.list().len() as i64);
    }

    /// CVMInfo / svmInfo for a computation.
    pub fn info(&self, id: &str) -> Result<Value, ApiError> {
        let vm = self.get(id)?;
        let fw = self
            .release
            .firmware
            .iter()
            .find(|f| f.sha256 == self.firmware_sha256)
            .map(|f| format!("{} sha256:{}", f.file, hex::encode(f.sha256)))
            .unwrap_or_default();
        Ok(json!({
            "id": id,
            "ovmf_version": fw,
            "cpu_num": vm.record.vcpus,
            "cpu_type": self.cpu_model(),
            "kernel_cmd": vm.record.cmdline,
            "eos_version": format!("{} {} (kernel {})", self.release.name, self.release.version, self.release.kernel_release),
        }))
    }

    /// The attestation policy for a computation: the reference values its report
    /// must match, as JSON.
    pub fn policy(&self, id: &str) -> Result<Value, ApiError> {
        let vm = self.get(id)?;
        Ok(json!({
            "computation_id": id,
            "release": {"name": self.release.name, "version": self.release.version},
            // The TEE the expected values are for (--measure-as, else --tee) and the
            // one the VM was launched under.
            "tee": self.cfg.measure_target(),
            "launched_under": self.cfg.tee,
            "expected_measurement": vm.record.expected,
        }))
    }

    /// A VM's summary for listings.
    pub fn describe(vm: &Vm) -> Value {
        let r = &vm.record;
        json!({
            "computation_id": r.id, "pid": r.pid, "vcpus": r.vcpus, "memory_mib": r.memory_mib,
            "cmdline": r.cmdline, "tee": r.tee, "created_ms": r.created_ms, "deadline_ms": r.deadline_ms,
            "expected_measurement": r.expected, "launch_ms": r.launch_ms,
            "forwarded_port": r.forwarded_port,
            "stopping": vm.stopping.load(Ordering::SeqCst),
        })
    }
}

/// Verifies the firmware against release.json and prepares the measurement. Each
/// file is read once; what was hashed is what is measured.
fn prepare(
    cfg: &Config,
    release: &Release,
    target: &Target,
) -> anyhow::Result<(Expected, [u8; 32])> {
    let (fw_bytes, fw_sha) = release::read_hashed(&cfg.ovmf)?;
    let entry = release
        .firmware
        .iter()
        .find(|f| f.sha256 == fw_sha && (*target == Target::None || f.tee == target.name()));
    let Some(entry) = entry else {
        anyhow::bail!(
            "{}: SHA-256 {} is not a firmware {} lists{}; launch with the firmware the release was measured with",
            cfg.ovmf.display(),
            hex::encode(fw_sha),
            release.manifest.display(),
            if *target == Target::None { String::new() } else { format!(" for {}", target.name()) }
        );
    };
    let k_bytes = release::read_verified(&release.kernel.path, &release.kernel.sha256)?;
    let i_bytes = release::read_verified(&release.initrd.path, &release.initrd.sha256)?;
    let e = Expected::new(target, fw_bytes, k_bytes, &i_bytes)?;
    Ok((e, entry.sha256))
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
            .map(|d| agent_payload("vm-1", d.frame_id, d.message))
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
        let m =
            ClientStreamMessage::decode(agent_payload("vm-1", d.frame_id, d.message).as_slice())
                .unwrap();
        let Some(client_stream_message::Message::AgentLog(l)) = m.message else {
            unreachable!()
        };
        assert_eq!(l.computation_id, "vm-1");
        assert_eq!(l.level, "error");
        assert!(l.message.contains("agent frame 7"), "{}", l.message);
    }
}
