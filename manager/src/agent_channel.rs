//! The manager's side of one VM's agent channel, without I/O ("sans-IO"): feed it the
//! bytes read from the transport, store what it hands back, then write the acks it
//! returns for what was stored. An agent frame is acknowledged only after the caller
//! has committed it ([`Session::committed`]), so a crash between receipt and commit
//! makes the agent send it again; duplicates (frame ids at or below the committed
//! high-water mark, which the caller persists with the events) are acknowledged and
//! dropped. The agent numbers frames 1, 2, … and (re)sends them in order, so a
//! high-water mark is an exact dedupe. The manager's own frames (attestation
//! requests) are kept until the agent acknowledges them and re-sent on a new connection.

use std::collections::BTreeMap;

use cocos_proto::frame::{self, Decoder, FrameError, Origin, Record, MANAGER_ID_BIT};
use cocos_proto::messages::{manager_message, AgentMessage, AttestationRequest, ManagerMessage};
use prost::Message;

/// Manager frames kept for re-sending until the agent acknowledges them; older ones
/// are dropped (their requests time out).
pub const MAX_UNACKED_REQUESTS: usize = 16;

/// One new agent message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The VM's computation id (from the manager's records, not from the guest).
    pub computation_id: String,
    /// The agent's frame id.
    pub frame_id: u32,
    /// The decoded message (None if the payload is not an AgentMessage). This is the
    /// frame's only decode: its event or log moves into the stored
    /// `ClientStreamMessage` as is (`runtime::agent_payload`).
    pub message: Option<AgentMessage>,
}

/// What one read produced.
#[derive(Debug, Default, PartialEq)]
pub struct Incoming {
    /// Acks to write now (for frames already committed earlier: re-sends).
    pub acks_now: Vec<u8>,
    /// New frames: commit them, then write [`Session::committed`]'s acks.
    pub new: Vec<Delivery>,
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

/// True if `id` comes after `hw` in the agent's numbering. Agent ids run 1..=
/// [`frame::AGENT_ID_MAX`] and then wrap to 1 (cocos-agent's `frame_id`); "after" is
/// serial-number arithmetic (RFC 1982) on that ring: `id` is after `hw` when it lies
/// less than half the ring ahead. So after a wrap, a small id is after a large mark,
/// and a stale pre-wrap id (large) is not after a small post-wrap mark. `hw` 0 means
/// nothing was received yet: every id is after it.
pub fn is_after(id: u32, hw: u32) -> bool {
    if hw == 0 {
        return id != 0;
    }
    let n = u64::from(frame::AGENT_ID_MAX);
    let (id, hw) = (u64::from(id), u64::from(hw));
    if id == 0 || id > n || hw > n {
        return false;
    }
    let ahead = (id + n - hw) % n;
    ahead != 0 && ahead < n / 2
}

/// One VM's channel state; survives reconnects ([`Session::reconnected`]).
#[derive(Debug)]
pub struct Session {
    computation_id: String,
    decoder: Decoder,
    /// Highest frame id committed (persisted by the caller).
    committed_hw: u32,
    /// Highest frame id handed out as new on this connection.
    offered_hw: u32,
    next_id: u32,
    unacked: BTreeMap<u32, Vec<u8>>,
}

impl Session {
    /// A channel for the VM `computation_id` whose agent frames up to `committed_hw`
    /// are already stored (0 for a new VM).
    pub fn new(computation_id: &str, committed_hw: u32) -> Self {
        Self {
            computation_id: computation_id.to_owned(),
            decoder: Decoder::new(Origin::Agent),
            committed_hw,
            offered_hw: committed_hw,
            next_id: 0,
            unacked: BTreeMap::new(),
        }
    }

    /// Processes bytes from the agent.
    pub fn on_bytes(&mut self, data: &[u8]) -> Result<Incoming, ChannelError> {
        self.decoder.push(data);
        let mut inc = Incoming::default();
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
                    if !is_after(id, self.committed_hw) {
                        inc.acks_now.extend_from_slice(&frame::ack(id));
                    } else if is_after(id, self.offered_hw) {
                        self.offered_hw = id;
                        inc.new.push(Delivery {
                            computation_id: self.computation_id.clone(),
                            frame_id: id,
                            message: AgentMessage::decode(payload.as_slice()).ok(),
                        });
                    }
                    // else: offered on this connection, not yet committed; its ack
                    // follows the commit.
                }
            }
        }
        Ok(inc)
    }

    /// The caller stored these frames (in order); returns their acks.
    pub fn committed(&mut self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if is_after(id, self.committed_hw) {
                self.committed_hw = id;
            }
            out.extend_from_slice(&frame::ack(id));
        }
        out
    }

    /// The highest committed agent frame id.
    pub fn committed_hw(&self) -> u32 {
        self.committed_hw
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
        // Manager ids wrap like the agent's: 1..=AGENT_ID_MAX, then 1.
        self.next_id = if self.next_id >= frame::AGENT_ID_MAX {
            1
        } else {
            self.next_id + 1
        };
        let id = MANAGER_ID_BIT | self.next_id;
        let bytes = frame::encode(id, &msg.encode_to_vec())?;
        self.unacked.insert(id, bytes.clone());
        // A guest that never acknowledges must not make this grow: keep the newest.
        while self.unacked.len() > MAX_UNACKED_REQUESTS {
            self.unacked.pop_first();
        }
        Ok(bytes)
    }

    /// A new connection: resets the decoder and what was offered but not committed,
    /// and returns every unacknowledged manager frame to write again.
    pub fn reconnected(&mut self) -> Vec<u8> {
        self.decoder = Decoder::new(Origin::Agent);
        self.offered_hw = self.committed_hw;
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

    fn ids(d: &[Delivery]) -> Vec<u32> {
        d.iter().map(|x| x.frame_id).collect()
    }

    #[test]
    fn acks_only_after_commit_and_delivers_each_frame_once() {
        let mut s = Session::new("c1", 0);
        let mut bytes = frame::encode(1, &event("boot")).unwrap();
        bytes.extend(frame::encode(2, &event("heartbeat")).unwrap());
        let inc = s.on_bytes(&bytes).unwrap();
        assert!(inc.acks_now.is_empty(), "nothing acked before the commit");
        assert_eq!(ids(&inc.new), vec![1, 2]);
        assert_eq!(inc.new[0].computation_id, "c1");
        let Some(agent_message::Message::AgentEvent(e)) =
            inc.new[0].message.as_ref().and_then(|m| m.message.clone())
        else {
            panic!("not an event")
        };
        assert_eq!(e.event_type, "boot");
        // Only frame 1 was committed before the connection broke.
        assert_eq!(s.committed(&[1]), frame::ack(1).to_vec());
        s.reconnected();
        let mut again = frame::encode(1, &event("boot")).unwrap();
        again.extend(frame::encode(2, &event("heartbeat")).unwrap());
        again.extend(frame::encode(3, &event("heartbeat")).unwrap());
        let inc = s.on_bytes(&again).unwrap();
        assert_eq!(
            inc.acks_now,
            frame::ack(1).to_vec(),
            "stored re-send acked again"
        );
        assert_eq!(
            ids(&inc.new),
            vec![2, 3],
            "uncommitted frame 2 offered again"
        );
        // The same frames again on the same connection are not offered twice.
        assert!(s
            .on_bytes(&frame::encode(3, &event("x")).unwrap())
            .unwrap()
            .new
            .is_empty());
    }

    #[test]
    fn resumes_from_a_persisted_mark() {
        let mut s = Session::new("c1", 41);
        let mut b = frame::encode(40, b"").unwrap();
        b.extend(frame::encode(41, b"").unwrap());
        b.extend(frame::encode(42, b"").unwrap());
        let inc = s.on_bytes(&b).unwrap();
        assert_eq!(inc.acks_now, [frame::ack(40), frame::ack(41)].concat());
        assert_eq!(ids(&inc.new), vec![42]);
        s.committed(&[42]);
        assert_eq!(s.committed_hw(), 42);
    }

    #[test]
    fn wrapped_ids_count_as_new() {
        assert!(is_after(5, frame::AGENT_ID_MAX - 3));
        assert!(!is_after(5, 6));
        assert!(is_after(7, 6));
        let mut s = Session::new("c1", frame::AGENT_ID_MAX);
        assert_eq!(
            ids(&s.on_bytes(&frame::encode(1, b"").unwrap()).unwrap().new),
            vec![1]
        );
    }

    /// Issue #15.15: after the wrap, a stale pre-wrap id is a duplicate, not new.
    #[test]
    fn stale_pre_wrap_ids_are_duplicates_after_the_wrap() {
        let max = frame::AGENT_ID_MAX;
        assert!(is_after(1, max));
        assert!(!is_after(max, 1), "a pre-wrap id after a post-wrap mark");
        assert!(!is_after(max - 10, 5));
        assert!(is_after(5, max - 10));
        assert!(!is_after(5, 5));
        assert!(is_after(1, 0) && is_after(max, 0), "nothing received yet");
        assert!(
            !is_after(0, 7) && !is_after(max + 1, 7),
            "ids outside the agent's range"
        );
        // Half the ring ahead is the limit.
        assert!(is_after(max / 2, 1) && !is_after(max / 2 + 2, 1));
        let mut s = Session::new("c1", 3);
        let mut b = frame::encode(max - 1, b"").unwrap();
        b.extend(frame::encode(max, b"").unwrap());
        b.extend(frame::encode(4, b"").unwrap());
        let inc = s.on_bytes(&b).unwrap();
        assert_eq!(
            inc.acks_now,
            [frame::ack(max - 1), frame::ack(max)].concat()
        );
        assert_eq!(ids(&inc.new), vec![4]);
    }

    #[test]
    fn split_reads_and_garbage() {
        let mut s = Session::new("c1", 0);
        let b = frame::encode(9, &event("boot")).unwrap();
        let inc = s.on_bytes(&b[..5]).unwrap();
        assert!(inc.acks_now.is_empty() && inc.new.is_empty());
        let inc = s.on_bytes(&b[5..]).unwrap();
        assert_eq!(ids(&inc.new), vec![9]);
        let mut bad = 10u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(s.on_bytes(&bad).is_err());
        // Not an AgentMessage: still delivered once, undecoded.
        let mut s = Session::new("c2", 0);
        let inc = s
            .on_bytes(&frame::encode(1, &[0xff, 0xff]).unwrap())
            .unwrap();
        assert_eq!(inc.new[0].message, None);
    }

    #[test]
    fn attestation_requests_are_kept_until_acked() {
        let mut s = Session::new("c1", 0);
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
}
