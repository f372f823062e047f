//! The event writer: one task that group-commits every event (the manager's own and the
//! agents') to the store before anything is acknowledged, and the encoding of events
//! into the stored `ClientStreamMessage` bytes.

use super::*;

struct WriteReq {
    items: Vec<Append>,
    reply: oneshot::Sender<Result<Vec<Appended>, String>>,
}

/// Events just committed, in order: what followers receive without reading the store.
pub type Committed = Arc<Vec<Arc<crate::events::Shared>>>;

/// Group-commits events: one store transaction for everything queued meanwhile, then
/// broadcasts what was committed to every follower at once.
#[derive(Debug, Clone)]
pub struct EventWriter {
    tx: std::sync::mpsc::Sender<WriteReq>,
    committed: tokio::sync::broadcast::Sender<Committed>,
    /// Agent bytes between a channel's read and their commit, in all VMs (see
    /// [`IN_FLIGHT_BYTES`]).
    budget: Arc<tokio::sync::Semaphore>,
}

/// Most agent bytes read but not yet committed, across every VM. The manager's memory
/// for events in flight is thus bounded whatever the number of VMs: a thousand agents
/// sending at once wait for this budget instead of each holding a decoded batch.
pub const IN_FLIGHT_BYTES: usize = 4 << 20;

impl std::fmt::Debug for WriteReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteReq")
            .field("items", &self.items.len())
            .finish()
    }
}

impl EventWriter {
    pub(super) fn start(store: Arc<Store>, seq: watch::Sender<u64>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<WriteReq>();
        let (committed, _) = tokio::sync::broadcast::channel::<Committed>(1024);
        let bcast = committed.clone();
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
                let lens: Vec<usize> = batch.iter().map(|r| r.items.len()).collect();
                let all: Vec<Append> = batch
                    .iter_mut()
                    .flat_map(|r| std::mem::take(&mut r.items))
                    .collect();
                match store.append(&all) {
                    Ok(results) => {
                        let stored = results
                            .iter()
                            .filter(|r| matches!(r, Appended::Stored(_)))
                            .count();
                        metrics.events.inc_by(stored as u64);
                        if bcast.receiver_count() > 0 {
                            let batch_out: Vec<Arc<crate::events::Shared>> = all
                                .iter()
                                .zip(&results)
                                .filter_map(|(it, r)| match r {
                                    Appended::Stored(s) => {
                                        Some(Arc::new(crate::events::Shared::new(
                                            *s,
                                            Arc::from(it.payload.as_slice()),
                                        )))
                                    }
                                    _ => None,
                                })
                                .collect();
                            if !batch_out.is_empty() {
                                let _ = bcast.send(Arc::new(batch_out));
                            }
                        }
                        if let Ok(l) = store.last_seq() {
                            seq.send_replace(l);
                        }
                        let mut it = results.into_iter();
                        for (r, n) in batch.into_iter().zip(lens) {
                            let mine: Vec<Appended> = it.by_ref().take(n).collect();
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
        Self {
            tx,
            committed,
            budget: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_BYTES)),
        }
    }

    /// Waits until `bytes` of agent data (capped at the whole budget) may be in flight;
    /// they count until the returned permit is dropped (after their commit).
    pub async fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.clamp(1, IN_FLIGHT_BYTES)).unwrap_or(u32::MAX);
        self.budget.clone().acquire_many_owned(n).await.ok()
    }

    /// Subscribes to what is committed from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Committed> {
        self.committed.subscribe()
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

pub(crate) fn now_ms() -> u64 {
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

/// Event types only the manager emits; a guest's event of one of these types is not
/// stored as such (see [`agent_payload`]).
pub const MANAGER_EVENT_TYPES: &[&str] = &[
    "vm-provision",
    "vm-exited",
    "vm-readopted",
    "agent-disconnected",
    "ttl-expired",
    "guest-protocol-error",
    "guest-throttled",
];

/// Largest guest event or log stored (encoded); larger ones become a
/// `guest-protocol-error` naming the size. Far below the 1 MiB frame limit, so that
/// readers and the store are not at a guest's mercy.
pub const MAX_STORED_EVENT: usize = 64 * 1024;

/// Largest `attestation` event stored while the VM has a request outstanding (evidence
/// with its certificate table or TDX event log, hex-encoded): the frame limit.
pub const MAX_STORED_ATTESTATION: usize = cocos_proto::frame::MAX_PAYLOAD;

/// The originator every event from the agent channel carries, whatever the guest wrote.
pub const AGENT_ORIGINATOR: &str = "agent";

/// An agent frame as stored: its message (decoded once, by the agent channel; `None`
/// if the payload was not an `AgentMessage`), tagged with the VM's computation id and
/// encoded as a `ClientStreamMessage`. AgentMessage's oneof (log = 1, event = 2) is
/// ClientStreamMessage's, of the same types (proto/agent.proto), so the message moves
/// across without another decode.
///
/// The guest is not trusted: its events always carry originator
/// [`AGENT_ORIGINATOR`], and an event of a manager type ([`MANAGER_EVENT_TYPES`]) is
/// stored instead as the manager's `guest-protocol-error` saying so, so nothing the
/// guest sends can pass for the manager's own events; one whose stored form exceeds
/// `limit` bytes is replaced by a `guest-protocol-error` saying so.
pub fn agent_payload(
    id: &str,
    frame_id: u32,
    message: Option<AgentMessage>,
    limit: usize,
) -> Vec<u8> {
    let msg = match message.and_then(|m| m.message) {
        Some(agent_message::Message::AgentEvent(e))
            if MANAGER_EVENT_TYPES.contains(&e.event_type.as_str()) =>
        {
            return manager_event(
                id,
                "guest-protocol-error",
                "error",
                &json!({
                    "reason": format!("the guest sent an event of the manager's own type {:?}; not stored as such", e.event_type),
                    "frame_id": frame_id,
                    "claimed_originator": e.originator,
                    "claimed_status": e.status,
                }),
            );
        }
        Some(agent_message::Message::AgentEvent(mut e)) => {
            e.computation_id = id.into();
            e.originator = AGENT_ORIGINATOR.into();
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
    let out = ClientStreamMessage {
        message: Some(msg),
        seq: 0,
    }
    .encode_to_vec();
    if out.len() > limit {
        return manager_event(
            id,
            "guest-protocol-error",
            "error",
            &json!({
                "reason": format!("the guest's frame {frame_id} is {} bytes, over the {limit}-byte limit for a stored event; not stored", out.len()),
                "frame_id": frame_id,
                "bytes": out.len(),
            }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    fn stored(bytes: &[u8]) -> AgentEvent {
        match ClientStreamMessage::decode(bytes).unwrap().message {
            Some(client_stream_message::Message::AgentEvent(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    fn guest_event(event_type: &str, originator: &str, status: &str) -> Option<AgentMessage> {
        Some(AgentMessage {
            message: Some(agent_message::Message::AgentEvent(AgentEvent {
                event_type: event_type.into(),
                timestamp: None,
                computation_id: "someone-else".into(),
                details: br#"{"expected_measurement": "forged"}"#.to_vec(),
                originator: originator.into(),
                status: status.into(),
            })),
        })
    }

    /// A guest cannot pass for the manager: its events carry originator "agent" and
    /// its computation id, and a manager event type becomes guest-protocol-error.
    #[test]
    fn guest_events_cannot_pose_as_the_managers() {
        let e = stored(&agent_payload(
            "vm1",
            7,
            guest_event("heartbeat", "manager", "ok"),
            MAX_STORED_EVENT,
        ));
        assert_eq!(
            (e.originator.as_str(), e.computation_id.as_str()),
            ("agent", "vm1")
        );
        for t in MANAGER_EVENT_TYPES {
            let e = stored(&agent_payload(
                "vm1",
                8,
                guest_event(t, "manager", "stopped"),
                MAX_STORED_EVENT,
            ));
            assert_eq!(e.event_type, "guest-protocol-error", "{t}");
            assert_eq!(
                (e.originator.as_str(), e.status.as_str()),
                ("manager", "error")
            );
            let d: Value = serde_json::from_slice(&e.details).unwrap();
            assert!(d["reason"].as_str().unwrap().contains(t), "{d}");
            assert_eq!(d["frame_id"], 8);
            assert_eq!(e.computation_id, "vm1");
        }
    }

    /// An event over the limit is not stored; the manager says why, in a small event.
    #[test]
    fn oversized_guest_events_are_named_not_stored() {
        let mut m = guest_event("heartbeat", "agent", "ok");
        if let Some(AgentMessage {
            message: Some(agent_message::Message::AgentEvent(e)),
        }) = m.as_mut()
        {
            e.details = vec![b'x'; MAX_STORED_EVENT];
        }
        let out = agent_payload("vm1", 9, m.clone(), MAX_STORED_EVENT);
        assert!(out.len() < 1024);
        let e = stored(&out);
        assert_eq!(
            (e.event_type.as_str(), e.originator.as_str()),
            ("guest-protocol-error", "manager")
        );
        let d: Value = serde_json::from_slice(&e.details).unwrap();
        assert!(d["bytes"].as_u64().unwrap() > MAX_STORED_EVENT as u64);
        // The same under a larger limit (an attestation answering a request) is stored.
        assert_eq!(
            stored(&agent_payload("vm1", 9, m, MAX_STORED_ATTESTATION)).event_type,
            "heartbeat"
        );
    }
}
