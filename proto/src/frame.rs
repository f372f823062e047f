//! The agent ↔ manager byte stream (cocos' legacy vsock framing, both directions).
//!
//! A message is a frame: u32 LE id, u32 LE length, then `length` bytes of protobuf
//! (at most [`MAX_PAYLOAD`]). The receiver acknowledges a frame by writing its id as a
//! bare u32 LE on the reverse direction; the sender re-sends unacknowledged frames
//! (after a reconnect or a timeout), so receivers drop ids they have already seen.
//!
//! Both sides send frames and acks on one stream, so ids carry their origin: agent
//! frames use ids below 2^31 ([`AGENT_ID_MAX`]) and manager frames ids with the top bit
//! set. A reader therefore knows from the first u32 of a record what it is: on the
//! agent → manager direction a top-bit id is the agent acknowledging a manager frame
//! and anything else opens an agent frame; on the manager → agent direction a top-bit
//! id opens a manager frame and anything else acknowledges an agent frame. Agent frames
//! and the manager's acks are therefore exactly cocos' format.

/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Agent frame ids are 1..=AGENT_ID_MAX.
pub const AGENT_ID_MAX: u32 = 0x7fff_ffff;
/// Manager frame ids have this bit set.
pub const MANAGER_ID_BIT: u32 = 0x8000_0000;

/// Who wrote a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The in-guest agent.
    Agent,
    /// The host-side manager.
    Manager,
}

impl Origin {
    /// Whether `id` is a frame id this origin may use.
    pub fn owns(self, id: u32) -> bool {
        match self {
            Origin::Agent => id != 0 && id & MANAGER_ID_BIT == 0,
            Origin::Manager => id & MANAGER_ID_BIT != 0,
        }
    }
}

/// One record read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message.
    Frame {
        /// Its id.
        id: u32,
        /// Protobuf bytes.
        payload: Vec<u8>,
    },
    /// The peer acknowledges our frame `id`.
    Ack(u32),
}

/// Errors decoding a stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announces more than [`MAX_PAYLOAD`] bytes.
    #[error("frame {id} announces {len} bytes, more than the 1 MiB limit")]
    TooLarge {
        /// Frame id.
        id: u32,
        /// Announced length.
        len: u32,
    },
    /// Payload too large to send.
    #[error("payload of {0} bytes exceeds the 1 MiB limit")]
    PayloadTooLarge(usize),
    /// An id outside the sender's range.
    #[error("frame id {0:#x} is not valid for this sender")]
    BadId(u32),
}

/// Encodes a frame.
pub fn encode(id: u32, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge(payload.len()));
    }
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    Ok(v)
}

/// Encodes an acknowledgement.
pub fn ack(id: u32) -> [u8; 4] {
    id.to_le_bytes()
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Incremental decoder for the stream written by `writer`.
#[derive(Debug)]
pub struct Decoder {
    writer: Origin,
    buf: Vec<u8>,
}

impl Decoder {
    /// A decoder for what `writer` sends.
    pub fn new(writer: Origin) -> Self {
        Self {
            writer,
            buf: Vec::new(),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete record, if any. An error leaves the stream unusable (the
    /// caller should drop the connection).
    pub fn next_record(&mut self) -> Result<Option<Record>, FrameError> {
        let Some(id) = le32(&self.buf, 0) else {
            return Ok(None);
        };
        if !self.writer.owns(id) {
            // Not one of the writer's frame ids: an acknowledgement of ours.
            self.buf.drain(..4);
            return Ok(Some(Record::Ack(id)));
        }
        let Some(len) = le32(&self.buf, 4) else {
            return Ok(None);
        };
        if len as usize > MAX_PAYLOAD {
            return Err(FrameError::TooLarge { id, len });
        }
        let end = 8 + len as usize;
        let Some(payload) = self.buf.get(8..end) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.buf.drain(..end);
        Ok(Some(Record::Frame { id, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_stream_frames_and_acks() {
        let mut bytes = encode(1, b"hello").unwrap();
        bytes.extend_from_slice(&ack(MANAGER_ID_BIT | 7));
        bytes.extend(encode(2, b"").unwrap());
        let mut d = Decoder::new(Origin::Agent);
        // Byte by byte: records only appear when complete.
        let mut got = Vec::new();
        for b in &bytes {
            d.push(&[*b]);
            while let Some(r) = d.next_record().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(
            got,
            vec![
                Record::Frame {
                    id: 1,
                    payload: b"hello".to_vec()
                },
                Record::Ack(MANAGER_ID_BIT | 7),
                Record::Frame {
                    id: 2,
                    payload: vec![]
                },
            ]
        );
    }

    #[test]
    fn manager_stream() {
        let mut bytes = ack(5).to_vec();
        bytes.extend(encode(MANAGER_ID_BIT | 1, b"req").unwrap());
        let mut d = Decoder::new(Origin::Manager);
        d.push(&bytes);
        assert_eq!(d.next_record().unwrap(), Some(Record::Ack(5)));
        assert_eq!(
            d.next_record().unwrap(),
            Some(Record::Frame {
                id: MANAGER_ID_BIT | 1,
                payload: b"req".to_vec()
            })
        );
        assert_eq!(d.next_record().unwrap(), None);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = Decoder::new(Origin::Agent);
        let mut h = 3u32.to_le_bytes().to_vec();
        h.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        d.push(&h);
        assert!(matches!(d.next_record(), Err(FrameError::TooLarge { .. })));
        assert!(encode(1, &vec![0; MAX_PAYLOAD + 1]).is_err());
    }

    #[test]
    fn id_ranges() {
        assert!(Origin::Agent.owns(1) && Origin::Agent.owns(AGENT_ID_MAX));
        assert!(!Origin::Agent.owns(0) && !Origin::Agent.owns(MANAGER_ID_BIT));
        assert!(Origin::Manager.owns(MANAGER_ID_BIT) && !Origin::Manager.owns(1));
    }
}
