//! The manager's API values: what a launch is asked for and returns ([`RunRequest`],
//! [`RunResult`]), what is reported about a VM ([`CvmInfo`], [`VmSummary`],
//! [`Policy`]), and the errors of the API ([`ApiError`] and its [`ApiErrorKind`]) and
//! of start-up ([`StartError`]). HTTP, gRPC and the seed protocol render these.

use crate::config::TeeKind;
use crate::expected::ExpectedMeasurement;
use crate::release;

/// What cocos' `CVMInfo` / the seed protocol's `SvmInfo` report about one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CvmInfo {
    /// Computation id.
    pub id: String,
    /// The firmware, as "FILE sha256:HEX".
    pub ovmf_version: String,
    /// vCPUs.
    pub cpu_num: u32,
    /// QEMU CPU model.
    pub cpu_type: String,
    /// The launched kernel command line.
    pub kernel_cmd: String,
    /// Release name, version and kernel release.
    pub eos_version: String,
}

impl CvmInfo {
    /// The vCPU count as the protobuf's `int32`.
    pub fn cpu_num_i32(&self) -> i32 {
        i32::try_from(self.cpu_num).unwrap_or(i32::MAX)
    }
}

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
    pub expected_measurement: ExpectedMeasurement,
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
    /// A release file does not verify against release.json (nothing is launched).
    #[error(transparent)]
    Refused(#[from] release::ReleaseError),
    /// This host cannot give the TEE or accelerator asked for.
    #[error("{0}")]
    Host(String),
    /// The launch's expected measurement cannot be computed (e.g. the command line or
    /// vCPU count is one QEMU would refuse).
    #[error(transparent)]
    Expected(#[from] crate::expected::ExpectedError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Launch failure (QEMU could not be started, the VM directory cannot be made).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The error's class, for HTTP status codes and gRPC codes.
    pub fn kind(&self) -> ApiErrorKind {
        match self {
            ApiError::BadRequest(_) | ApiError::Expected(_) => ApiErrorKind::BadRequest,
            ApiError::Conflict(_) => ApiErrorKind::Conflict,
            ApiError::NotFound(_) => ApiErrorKind::NotFound,
            ApiError::Capacity(_) => ApiErrorKind::Capacity,
            ApiError::Refused(_) | ApiError::Host(_) => ApiErrorKind::Refused,
            // The store failing (full disk, I/O error) is a temporary unavailability.
            ApiError::Store(_) => ApiErrorKind::Capacity,
            ApiError::Internal(_) => ApiErrorKind::Internal,
        }
    }
}

/// [`ApiError`]'s classes, one per HTTP status / gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 400 / INVALID_ARGUMENT.
    BadRequest,
    /// 409 / ALREADY_EXISTS.
    Conflict,
    /// 404 / NOT_FOUND.
    NotFound,
    /// 503 / RESOURCE_EXHAUSTED.
    Capacity,
    /// 422 / FAILED_PRECONDITION.
    Refused,
    /// 500 / INTERNAL.
    Internal,
}

/// Why the manager cannot start (bad configuration or release: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The state directory cannot be made.
    #[error("{path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// release.json or a file it names is unusable.
    #[error(transparent)]
    Release(#[from] crate::release::ReleaseError),
    /// The firmware is not one the release lists for this TEE.
    #[error("{0}")]
    Firmware(String),
    /// The expected measurement cannot be prepared.
    #[error(transparent)]
    Expected(#[from] crate::expected::ExpectedError),
    /// The event store cannot be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The vsock listener cannot be bound.
    #[error("vsock port {port}: {source} (the vsock transport needs the host's vhost_vsock module; use --transport serial)")]
    Vsock {
        /// The port.
        port: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// A start-up task failed.
    #[error(transparent)]
    Trust(#[from] crate::attest::TrustError),
    /// A start-up task failed.
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A release by name and version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseName {
    /// Name from release.json.
    pub name: String,
    /// Version from release.json.
    pub version: String,
}

/// The attestation policy of one computation (fields in sorted order, as the JSON
/// carries them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Policy {
    /// Computation id.
    pub computation_id: String,
    /// What its attestation must show.
    pub expected_measurement: ExpectedMeasurement,
    /// The TEE the VM was launched under.
    pub launched_under: TeeKind,
    /// The release it runs.
    pub release: ReleaseName,
    /// The TEE the expected values are for (`--measure-as`, else `--tee`).
    pub tee: TeeKind,
}

impl Policy {
    /// JSON with every object's keys sorted (what `AttestationPolicy.info` carries).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&serde_json::to_value(self)?)
    }
}

/// AttestationPolicy's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyAnswer {
    /// The manager's summary.
    pub summary: Policy,
    /// cocos policy JSON and CoRIM (none for a launch without a TEE measurement).
    pub documents: Option<crate::reference::PolicyDocuments>,
}

impl PolicyAnswer {
    /// `AttestationPolicy.info`: the cocos policy JSON, or without a TEE measurement
    /// the summary; and `corim` (empty without one).
    pub fn info_and_corim(&self) -> Result<(Vec<u8>, Vec<u8>), serde_json::Error> {
        match &self.documents {
            Some(d) => Ok((d.cocos_json.clone(), d.corim.clone())),
            None => Ok((self.summary.to_json_bytes()?, Vec::new())),
        }
    }
}

/// One VM in a listing (fields in sorted order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VmSummary {
    /// Computation id.
    pub computation_id: String,
    /// The exact kernel command line.
    pub cmdline: String,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// TTL deadline, ms since the epoch.
    pub deadline_ms: Option<u64>,
    /// What its attestation must show.
    pub expected_measurement: ExpectedMeasurement,
    /// Host port forwarded to the agent, if any.
    pub forwarded_port: Option<u16>,
    /// Request to QEMU spawned, ms.
    pub launch_ms: f64,
    /// RAM, MiB.
    pub memory_mib: u64,
    /// QEMU's pid.
    pub pid: u32,
    /// Being stopped.
    pub stopping: bool,
    /// TEE launched under.
    pub tee: TeeKind,
    /// vCPUs.
    pub vcpus: u32,
}
