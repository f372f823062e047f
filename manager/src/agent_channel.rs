//! The manager's side of one VM's agent channel, without I/O ("sans-IO"): feed it the
//! bytes read from the transport, write back what it returns. It acknowledges every
//! agent frame, delivers each frame id once (the agent re-sends unacknowledged frames
//! after a reconnect), tags deliveries with the VM's computation id, and keeps the
//! manager's own frames (attestation requests) until the agent acknowledges them, so
//! they can be re-sent on a new connection.

use std::collections::{BTreeMap, BTreeSet};

use cocos_proto::frame::{self, Decoder, FrameError, Origin, Record, MANAGER_ID_BIT};
use cocos_proto::messages::{manager_message, AgentMessage, AttestationRequest, ManagerMessage};
use prost::Message;

/// How far below the newest agent id ids are still remembered for deduplication (the
/// agent keeps at most 10,000 unacknowledged frames, so re-sends fall in this window).
pub const DEDUPE_WINDOW: u32 = 100_000;

/// One delivered agent message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The VM's computation id (from the manager's records, not from the guest).
    pub computation_id: String,
    /// The agent's frame id.
    pub frame_id: u32,
    /// The decoded message (None if the payload is not an AgentMessage).
    pub message: Option<AgentMessage>,
}

/// Errors that end a connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// The byte stream is not valid framing.
    #[error("agent channel of {computation_id}: {source}")]
    Framing {
        /// VM.
        computation_id: String,
        /// What was wrong.
        source: FrameError,
    },
}

/// One VM's channel state; survives reconnects ([`Session::reconnected`]).
#[derive(Debug)]
pub struct Session {
    computation_id: String,
    decoder: Decoder,
    seen: BTreeSet<u32>,
    newest: u32,
    next_id: u32,
    unacked: BTreeMap<u32, Vec<u8>>,
}

impl Session {
    /// A channel for the VM `computation_id`.
    pub fn new(computation_id: &str) -> Self {
        Self {
            computation_id: computation_id.to_owned(),
            decoder: Decoder::new(Origin::Agent),
            seen: BTreeSet::new(),
            newest: 0,
            next_id: 0,
            unacked: BTreeMap::new(),
        }
    }

    /// Processes bytes from the agent. Returns the bytes to write back (acks) and the
    /// messages to deliver, each frame id once.
    pub fn on_bytes(&mut self, data: &[u8]) -> Result<(Vec<u8>, Vec<Delivery>), ChannelError> {
        self.decoder.push(data);
        let mut out = Vec::new();
        let mut deliveries = Vec::new();
        loop {
            let rec = self
                .decoder
                .next_record()
                .map_err(|source| ChannelError::Framing {
                    computation_id: self.computation_id.clone(),
                    source,
                })?;
            match rec {
                None => break,
                Some(Record::Ack(id)) => {
                    self.unacked.remove(&id);
                }
                Some(Record::Frame { id, payload }) => {
                    out.extend_from_slice(&frame::ack(id));
                    if self.first_sight(id) {
                        deliveries.push(Delivery {
                            computation_id: self.computation_id.clone(),
                            frame_id: id,
                            message: AgentMessage::decode(payload.as_slice()).ok(),
                        });
                    }
                }
            }
        }
        Ok((out, deliveries))
    }

    fn first_sight(&mut self, id: u32) -> bool {
        // Ids wrap at 2^31; a much smaller id than the newest means the agent wrapped.
        if self.newest > id && self.newest - id > frame::AGENT_ID_MAX / 2 {
            self.seen.clear();
        }
        if !self.seen.insert(id) {
            return false;
        }
        if id > self.newest {
            self.newest = id;
            let floor = self.newest.saturating_sub(DEDUPE_WINDOW);
            self.seen = self.seen.split_off(&floor);
        }
        true
    }

    /// Queues an attestation request; returns the frame bytes to write now.
    pub fn request_attestation(&mut self, nonce: &[u8]) -> Result<Vec<u8>, FrameError> {
        let msg = ManagerMessage {
            message: Some(manager_message::Message::AttestationRequest(
                AttestationRequest {
                    nonce: nonce.to_vec(),
                },
            )),
        };
        self.next_id = if self.next_id >= u32::MAX - MANAGER_ID_BIT {
            0
        } else {
            self.next_id + 1
        };
        let id = MANAGER_ID_BIT | self.next_id;
        let bytes = frame::encode(id, &msg.encode_to_vec())?;
        self.unacked.insert(id, bytes.clone());
        Ok(bytes)
    }

    /// A new connection: resets the decoder and returns every unacknowledged manager
    /// frame to write again.
    pub fn reconnected(&mut self) -> Vec<u8> {
        self.decoder = Decoder::new(Origin::Agent);
        self.unacked.values().flatten().copied().collect()
    }

    /// Manager frames the agent has not acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocos_proto::messages::{agent_message, AgentEvent};

    fn event(kind: &str) -> Vec<u8> {
        AgentMessage {
            message: Some(agent_message::Message::AgentEvent(AgentEvent {
                event_type: kind.into(),
                ..AgentEvent::default()
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn acks_and_delivers_each_frame_once() {
        let mut s = Session::new("c1");
        let mut bytes = frame::encode(1, &event("boot")).unwrap();
        bytes.extend(frame::encode(2, &event("heartbeat")).unwrap());
        let (acks, d) = s.on_bytes(&bytes).unwrap();
        assert_eq!(acks, [frame::ack(1), frame::ack(2)].concat());
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].computation_id, "c1");
        let Some(agent_message::Message::AgentEvent(e)) =
            d[0].message.as_ref().and_then(|m| m.message.clone())
        else {
            panic!("not an event")
        };
        assert_eq!(e.event_type, "boot");
        // After a reconnect the agent re-sends frame 2 (our ack was lost) and sends 3.
        s.reconnected();
        let mut again = frame::encode(2, &event("heartbeat")).unwrap();
        again.extend(frame::encode(3, &event("heartbeat")).unwrap());
        let (acks, d) = s.on_bytes(&again).unwrap();
        assert_eq!(
            acks,
            [frame::ack(2), frame::ack(3)].concat(),
            "re-sent frames are acknowledged again"
        );
        assert_eq!(d.iter().map(|x| x.frame_id).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn split_reads_and_garbage() {
        let mut s = Session::new("c1");
        let b = frame::encode(9, &event("boot")).unwrap();
        let (a1, d1) = s.on_bytes(&b[..5]).unwrap();
        assert!(a1.is_empty() && d1.is_empty());
        let (a2, d2) = s.on_bytes(&b[5..]).unwrap();
        assert_eq!((a2, d2.len()), (frame::ack(9).to_vec(), 1));
        let mut bad = 10u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(s.on_bytes(&bad).is_err());
        // Not an AgentMessage: still delivered once, undecoded.
        let mut s = Session::new("c2");
        let (_, d) = s
            .on_bytes(&frame::encode(1, &[0xff, 0xff]).unwrap())
            .unwrap();
        assert_eq!(d[0].message, None);
    }

    #[test]
    fn attestation_requests_are_kept_until_acked() {
        let mut s = Session::new("c1");
        let f = s.request_attestation(b"nonce").unwrap();
        let id = u32::from_le_bytes(f[..4].try_into().unwrap());
        assert_eq!(id, MANAGER_ID_BIT | 1);
        let msg = ManagerMessage::decode(&f[8..]).unwrap();
        assert!(
            matches!(msg.message, Some(manager_message::Message::AttestationRequest(ref r)) if r.nonce == b"nonce")
        );
        assert_eq!(s.unacked(), 1);
        assert_eq!(s.reconnected(), f, "re-sent on a new connection");
        s.on_bytes(&frame::ack(id)).unwrap();
        assert_eq!(s.unacked(), 0);
        assert!(s.reconnected().is_empty());
    }

    #[test]
    fn dedupe_window_is_bounded() {
        let mut s = Session::new("c1");
        for id in (1..=300_000u32).step_by(1000) {
            s.on_bytes(&frame::encode(id, b"").unwrap()).unwrap();
        }
        assert!(s.seen.len() <= (DEDUPE_WINDOW / 1000 + 1) as usize);
        // An old id far below the window counts as new only if the agent wrapped.
        let (_, d) = s.on_bytes(&frame::encode(299_001, b"").unwrap()).unwrap();
        assert!(d.is_empty());
    }
}
