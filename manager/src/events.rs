//! Reading the event log for watchers (HTTP `/events`, gRPC `WatchEvents`): replay
//! what the store holds after a sequence number, a page of at most [`PAGE_BYTES`] at
//! a time, then follow new commits as the writer broadcasts them (one broadcast for
//! every follower, instead of each follower reading the store on every commit). A
//! follower that falls behind the broadcast reads the store again from where it was,
//! so a slow watcher never holds up the agents or loses its place.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use cocos_proto::grpc::{client_stream_message, ClientStreamMessage};
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::runtime::Manager;

/// The computation an event belongs to.
pub fn computation_of(m: &ClientStreamMessage) -> &str {
    match &m.message {
        Some(client_stream_message::Message::AgentEvent(e)) => &e.computation_id,
        Some(client_stream_message::Message::AgentLog(l)) => &l.computation_id,
        _ => "",
    }
}

fn ts(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(t) => json!(format!("{}.{:09}", t.seconds, t.nanos)),
        None => Value::Null,
    }
}

/// An event as JSON (details parsed when they are JSON).
pub fn to_json(seq: u64, m: &ClientStreamMessage) -> Value {
    match &m.message {
        Some(client_stream_message::Message::AgentEvent(e)) => json!({
            "seq": seq, "kind": "event", "computation_id": e.computation_id,
            "event_type": e.event_type, "status": e.status, "originator": e.originator,
            "timestamp": ts(&e.timestamp),
            "details": serde_json::from_slice::<Value>(&e.details)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&e.details).into_owned())),
        }),
        Some(client_stream_message::Message::AgentLog(l)) => json!({
            "seq": seq, "kind": "log", "computation_id": l.computation_id,
            "level": l.level, "message": l.message, "timestamp": ts(&l.timestamp),
        }),
        _ => json!({"seq": seq, "kind": "other"}),
    }
}

/// One stored event as every watcher shares it: decoded at most once and rendered as
/// a JSON line at most once, by whichever follower needs it first (a thousand
/// followers of one commit cost one decode and one rendering, not a thousand).
#[derive(Debug)]
pub struct Shared {
    /// Its sequence number.
    pub seq: u64,
    bytes: Arc<[u8]>,
    msg: OnceLock<Option<ClientStreamMessage>>,
    line: OnceLock<Bytes>,
}

impl Shared {
    /// The event stored as `bytes` under `seq`.
    pub fn new(seq: u64, bytes: Arc<[u8]>) -> Self {
        Self {
            seq,
            bytes,
            msg: OnceLock::new(),
            line: OnceLock::new(),
        }
    }

    /// The decoded event (None: the stored bytes do not decode).
    pub fn message(&self) -> Option<&ClientStreamMessage> {
        self.msg
            .get_or_init(|| ClientStreamMessage::decode(&*self.bytes).ok())
            .as_ref()
    }

    /// The event as a `ClientStreamMessage` carrying its sequence number (what gRPC
    /// watchers and the control plane receive); watchers forward only events that
    /// decode, so the default is never sent.
    pub fn stream_message(&self) -> ClientStreamMessage {
        let mut m = self.message().cloned().unwrap_or_default();
        m.seq = self.seq;
        m
    }

    /// The event as one JSON line, newline included ([`to_json`]).
    pub fn json_line(&self) -> Bytes {
        self.line
            .get_or_init(|| {
                let mut s = match self.message() {
                    Some(m) => to_json(self.seq, m).to_string(),
                    None => json!({"seq": self.seq, "kind": "other"}).to_string(),
                };
                s.push('\n');
                Bytes::from(s)
            })
            .clone()
    }
}

/// A watcher's item: an event, or the store error that ended the watch (the last item
/// then), so that no watcher ends without saying why.
pub type Watched = Result<Arc<Shared>, String>;

/// Sends one stored event if it passes the filter; false when the receiver is gone.
async fn forward(tx: &mpsc::Sender<Watched>, computation: Option<&str>, ev: Arc<Shared>) -> bool {
    match ev.message() {
        Some(m) if computation.is_none_or(|c| c == computation_of(m)) => {
            tx.send(Ok(ev)).await.is_ok()
        }
        Some(_) => true,
        None => {
            tracing::warn!("event {} in the store does not decode; skipped", ev.seq);
            true
        }
    }
}

/// Largest page of stored events a watcher reads at once.
pub const PAGE_BYTES: usize = 1 << 20;

/// Streams events with seq > `from` (filtered by computation id if given); with
/// `follow`, keeps streaming new ones until the receiver is dropped.
pub fn watch(
    mgr: &Arc<Manager>,
    from: u64,
    computation: Option<String>,
    follow: bool,
) -> mpsc::Receiver<Watched> {
    let (tx, rx) = mpsc::channel(64);
    let store = mgr.store().clone();
    // Subscribed before catching up: whatever commits meanwhile is in one or the other.
    let mut live = follow.then(|| mgr.writer().subscribe());
    tokio::spawn(async move {
        let mut cursor = from;
        loop {
            // Catch up from the store.
            loop {
                let page = {
                    let store = store.clone();
                    match tokio::task::spawn_blocking(move || {
                        store.events_after_within(cursor, 1000, PAGE_BYTES)
                    })
                    .await
                    {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => {
                            let why = format!("reading the event store after seq {cursor}: {e}");
                            tracing::error!("event watch ended: {why}");
                            let _ = tx.send(Err(why)).await;
                            return;
                        }
                        Err(e) => {
                            let why = format!("event store reader failed: {e}");
                            tracing::error!("event watch ended: {why}");
                            let _ = tx.send(Err(why)).await;
                            return;
                        }
                    }
                };
                if page.is_empty() {
                    break;
                }
                for (s, bytes) in page {
                    cursor = s;
                    let ev = Arc::new(Shared::new(s, Arc::from(bytes)));
                    if !forward(&tx, computation.as_deref(), ev).await {
                        return;
                    }
                }
            }
            let Some(rx_live) = live.as_mut() else {
                return;
            };
            // Follow the writer's broadcast until it is lost (lagged): then catch up.
            loop {
                tokio::select! {
                    r = rx_live.recv() => match r {
                        Ok(batch) => {
                            for ev in batch.iter() {
                                if ev.seq <= cursor {
                                    continue;
                                }
                                cursor = ev.seq;
                                if !forward(&tx, computation.as_deref(), ev.clone()).await {
                                    return;
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        }
    });
    rx
}
