//! The seed protocol: the manager dials the Computations server (MANAGER_GRPC_URL),
//! opens `ManagerService.Process`, streams every stored event up (each with its outbox
//! sequence number in `ClientStreamMessage.seq`) and serves the server's requests
//! (runReq / runReqChunks, stopComputation, svmInfoReq, attestationPolicyReq).
//!
//! Confirmation: an event leaves the outbox only when the server sends
//! `EventAck{seq}` (cumulative). A successful stream write is not one: it only means
//! the bytes reached a transport buffer. After a reconnect, everything after the last
//! confirmation is sent again, so the server may see a sequence number twice and must
//! treat events idempotently by `seq`. For servers that predate EventAck,
//! `--grpc-confirm sent` counts an event delivered once it is handed to the stream
//! (at-most-once: what is in flight when the connection breaks is lost). TLS when the URL is https (server CA from
//! MANAGER_GRPC_SERVER_CA_CERTS), mTLS when a client certificate and key are given.
//! Reconnects back off from 250 ms to 5 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocos_proto::grpc::manager_service_client::ManagerServiceClient;
use cocos_proto::grpc::{
    client_stream_message, server_stream_message, AgentLog, AttestationPolicy, ClientStreamMessage,
    ComputationRunReq, RunResponse, StopComputationResponse, SvmInfo,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::{Config, ConfirmMode};
use crate::runtime::{Manager, RunRequest};

/// Why the seed-protocol client cannot be set up or lost its stream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TLS settings do not fit the URL.
    #[error("{0}")]
    Config(String),
    /// A certificate or key file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The server ended the call with an error.
    #[error(transparent)]
    Status(Box<tonic::Status>),
}

impl From<tonic::Status> for UpstreamError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(Box::new(s))
    }
}

/// Builds the TLS settings from the configuration (None for plain http://).
pub fn tls_config(cfg: &Config) -> Result<Option<ClientTlsConfig>, UpstreamError> {
    let Some(url) = &cfg.grpc_url else {
        return Ok(None);
    };
    if !url.starts_with("https://") {
        if cfg.grpc_server_ca.is_some() || cfg.grpc_client_cert.is_some() {
            return Err(UpstreamError::Config(format!(
                "MANAGER_GRPC_URL {url} is not https:// but TLS files were given"
            )));
        }
        return Ok(None);
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| UpstreamError::Io {
            path: p.display().to_string(),
            source,
        })
    };
    let Some(ca) = &cfg.grpc_server_ca else {
        return Err(UpstreamError::Config(
            "MANAGER_GRPC_URL is https:// : give the server's CA with --grpc-server-ca (MANAGER_GRPC_SERVER_CA_CERTS)".into(),
        ));
    };
    let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(c), Some(k)) = (&cfg.grpc_client_cert, &cfg.grpc_client_key) {
        t = t.identity(Identity::from_pem(read(c)?, read(k)?));
    }
    Ok(Some(t))
}

/// Runs the client until the process ends, reconnecting as needed.
pub async fn run(mgr: Arc<Manager>, url: String, tls: Option<ClientTlsConfig>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&mgr, &url, tls.clone()).await {
            Ok(()) => {
                tracing::info!("Computations server {url} closed the stream");
                backoff = Duration::from_millis(250);
            }
            Err(e) => tracing::warn!("Computations server {url}: {e:#}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn msg(m: client_stream_message::Message) -> ClientStreamMessage {
    ClientStreamMessage {
        message: Some(m),
        seq: 0,
    }
}

async fn session(
    mgr: &Arc<Manager>,
    url: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<(), UpstreamError> {
    let mut ep = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(t) = tls {
        ep = ep.tls_config(t)?;
    }
    let channel = ep.connect().await?;
    let mut client = ManagerServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<ClientStreamMessage>(512);
    let mut inbound = client.process(ReceiverStream::new(rx)).await?.into_inner();
    tracing::info!("connected to Computations server {url}");
    let sender = tokio::spawn(send_events(mgr.clone(), tx.clone()));
    let mut chunks: HashMap<String, Vec<u8>> = HashMap::new();
    let result = loop {
        let m = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        use server_stream_message::Message as S;
        match m.message {
            Some(S::EventAck(a)) => confirm(mgr, a.seq).await,
            Some(S::RunReq(r)) => spawn_run(mgr, &tx, r),
            Some(S::RunReqChunks(c)) => {
                if c.data.len() > (1 << 20) || chunks.len() > 64 {
                    tracing::warn!(
                        "runReqChunks {}: too large or too many in flight; dropped",
                        c.id
                    );
                    chunks.remove(&c.id);
                    continue;
                }
                let buf = chunks.entry(c.id.clone()).or_default();
                buf.extend_from_slice(&c.data);
                if buf.len() > (16 << 20) {
                    chunks.remove(&c.id);
                    tracing::warn!("runReqChunks {}: over 16 MiB; dropped", c.id);
                    continue;
                }
                if c.is_last {
                    let data = chunks.remove(&c.id).unwrap_or_default();
                    match ComputationRunReq::decode(data.as_slice()) {
                        Ok(r) => spawn_run(mgr, &tx, r),
                        Err(e) => {
                            let _ = tx
                                .send(msg(client_stream_message::Message::RunRes(RunResponse {
                                    computation_id: c.id,
                                    error: format!(
                                        "runReqChunks do not decode as ComputationRunReq: {e}"
                                    ),
                                    ..RunResponse::default()
                                })))
                                .await;
                        }
                    }
                }
            }
            Some(S::StopComputation(s)) => {
                let (mgr, tx) = (mgr.clone(), tx.clone());
                tokio::spawn(async move {
                    let message = match mgr.stop(&s.computation_id, "stopComputation").await {
                        Ok(()) => String::new(),
                        Err(e) => e.to_string(),
                    };
                    let _ = tx
                        .send(msg(client_stream_message::Message::StopComputationRes(
                            StopComputationResponse {
                                computation_id: s.computation_id,
                                message,
                            },
                        )))
                        .await;
                });
            }
            Some(S::SvmInfoReq(r)) => {
                let i = match mgr.info(&r.id) {
                    Ok(v) => v,
                    Err(e) => {
                        // SvmInfo has no error field: answer with the id alone and say
                        // why in an error log for that computation (not in kernel_cmd).
                        tracing::warn!("svmInfoReq {}: {e}", r.id);
                        let _ = tx
                            .send(msg(client_stream_message::Message::AgentLog(AgentLog {
                                message: format!("svm info: {e}"),
                                computation_id: r.id.clone(),
                                level: "error".into(),
                                timestamp: Some(crate::runtime::timestamp()),
                            })))
                            .await;
                        crate::runtime::CvmInfo {
                            id: r.id.clone(),
                            ..Default::default()
                        }
                    }
                };
                let _ = tx
                    .send(msg(client_stream_message::Message::SvmInfo(SvmInfo {
                        cpu_num: i.cpu_num_i32(),
                        id: i.id,
                        ovmf_version: i.ovmf_version,
                        cpu_type: i.cpu_type,
                        kernel_cmd: i.kernel_cmd,
                        eos_version: i.eos_version,
                    })))
                    .await;
            }
            Some(S::AttestationPolicyReq(r)) => {
                let (info, corim) = match mgr.attestation_policy(&r.id).map(|p| p.info_and_corim())
                {
                    Ok(Ok(pair)) => pair,
                    Ok(Err(e)) => (error_json(&r.id, &e), Vec::new()),
                    Err(e) => (error_json(&r.id, &e), Vec::new()),
                };
                let _ = tx
                    .send(msg(client_stream_message::Message::AttestationPolicy(
                        AttestationPolicy {
                            info,
                            id: r.id,
                            corim,
                        },
                    )))
                    .await;
            }
            Some(S::TerminateReq(t)) => {
                tracing::info!(
                    "Computations server asked to end the session: {}",
                    t.message
                );
                break Ok(());
            }
            None => {}
        }
    };
    sender.abort();
    result
}

fn spawn_run(mgr: &Arc<Manager>, tx: &mpsc::Sender<ClientStreamMessage>, r: ComputationRunReq) {
    let (mgr, tx) = (mgr.clone(), tx.clone());
    tokio::spawn(async move {
        let req = RunRequest::from_proto(&r.id, r.vcpus, &r.ttl);
        let res = match mgr.run(req).await {
            Ok(x) => RunResponse {
                agent_port: x.forwarded_port.map(|p| p.to_string()).unwrap_or_default(),
                computation_id: x.computation_id,
                expected_measurement: x.expected_measurement.to_string(),
                error: String::new(),
            },
            Err(e) => RunResponse {
                computation_id: r.id,
                error: e.to_string(),
                ..RunResponse::default()
            },
        };
        let _ = tx
            .send(msg(client_stream_message::Message::RunRes(res)))
            .await;
    });
}

/// Records that every event up to `seq` is delivered.
async fn confirm(mgr: &Manager, seq: u64) {
    let store = mgr.store().clone();
    let before = store.confirmed().unwrap_or(0);
    match tokio::task::spawn_blocking(move || store.confirm(seq)).await {
        Ok(Ok(())) => {
            mgr.metrics.confirmed.inc_by(seq.saturating_sub(before));
        }
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("{e}"),
    }
}

/// Sends every stored event after the last confirmation, then follows new ones. In
/// `sent` mode, events count as delivered at the end of each burst (or every 1,000).
async fn send_events(mgr: Arc<Manager>, tx: mpsc::Sender<ClientStreamMessage>) {
    let sent_mode = mgr.config().grpc_confirm == ConfirmMode::Sent;
    let mut confirmed = mgr.store().confirmed().unwrap_or(0);
    let mut rx = crate::events::watch(&mgr, confirmed, None, true);
    while let Some(w) = rx.recv().await {
        let (s, m) = match w {
            Ok(ev) => (ev.seq, ev.stream_message()),
            Err(why) => {
                // The connection loop reconnects and resends from the last confirmation.
                tracing::error!("upstream: stopped sending events: {why}");
                return;
            }
        };
        if tx.send(m).await.is_err() {
            return;
        }
        if sent_mode && (rx.is_empty() || s - confirmed >= 1000) {
            confirm(&mgr, s).await;
            confirmed = s;
        }
    }
}

/// The policy reply when there is none: `{"computation_id", "error"}`.
fn error_json(id: &str, e: &dyn std::fmt::Display) -> Vec<u8> {
    serde_json::json!({"computation_id": id, "error": e.to_string()})
        .to_string()
        .into_bytes()
}
