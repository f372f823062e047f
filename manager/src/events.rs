//! Reading the event log for watchers (HTTP `/events`, gRPC `WatchEvents`): replay
//! what the store holds after a sequence number, then follow new commits. Each
//! watcher reads the store itself (woken by the writer's sequence watch), so a slow
//! watcher never holds up the agents or loses its place.

use std::sync::Arc;

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

/// A watcher's item: an event with its sequence number, or the store error that ended
/// the watch (the last item then), so that no watcher ends without saying why.
pub type Watched = Result<(u64, ClientStreamMessage), String>;

/// Streams events with seq > `from` (filtered by computation id if given); with
/// `follow`, keeps streaming new ones until the receiver is dropped.
pub fn watch(
    mgr: &Arc<Manager>,
    from: u64,
    computation: Option<String>,
    follow: bool,
) -> mpsc::Receiver<Watched> {
    let (tx, rx) = mpsc::channel(1024);
    let store = mgr.store().clone();
    let mut seq = mgr.seq();
    tokio::spawn(async move {
        let mut cursor = from;
        loop {
            let batch = {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.events_after(cursor, 1000)).await {
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
            let n = batch.len();
            for (s, bytes) in batch {
                cursor = s;
                let Ok(m) = ClientStreamMessage::decode(bytes.as_slice()) else {
                    tracing::warn!("event {s} in the store does not decode; skipped");
                    continue;
                };
                if computation
                    .as_deref()
                    .is_some_and(|c| c != computation_of(&m))
                {
                    continue;
                }
                if tx.send(Ok((s, m))).await.is_err() {
                    return;
                }
            }
            if n == 1000 {
                continue;
            }
            if !follow {
                return;
            }
            tokio::select! {
                r = seq.wait_for(|s| *s > cursor) => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
