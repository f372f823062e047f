//! Protobuf messages carried in frames, declared with `prost` derives (no protoc
//! needed). Field numbers follow cocos (`AgentEvent`, `AgentLog`, and the
//! `agent_log = 1`, `agent_event = 2` arms of `ClientStreamMessage`), so the manager
//! can forward what the agent sends to existing control planes unchanged.
//! [`ManagerMessage`] (manager → agent) is ours.

/// An agent event (cocos `AgentEvent`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentEvent {
    /// "boot", "heartbeat", "attestation", "state", …
    #[prost(string, tag = "1")]
    pub event_type: String,
    /// When it happened.
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<prost_types::Timestamp>,
    /// Computation (VM) id from `cocos.id=`.
    #[prost(string, tag = "3")]
    pub computation_id: String,
    /// JSON details.
    #[prost(bytes = "vec", tag = "4")]
    pub details: Vec<u8>,
    /// Who emitted it ("agent").
    #[prost(string, tag = "5")]
    pub originator: String,
    /// Status ("ok", "error", …).
    #[prost(string, tag = "6")]
    pub status: String,
}

/// An agent log line (cocos `AgentLog`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentLog {
    /// The text.
    #[prost(string, tag = "1")]
    pub message: String,
    /// Computation id.
    #[prost(string, tag = "2")]
    pub computation_id: String,
    /// "debug", "info", "warn", "error".
    #[prost(string, tag = "3")]
    pub level: String,
    /// When.
    #[prost(message, optional, tag = "4")]
    pub timestamp: Option<prost_types::Timestamp>,
}

/// What the agent sends: the agent arms of cocos `ClientStreamMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentMessage {
    /// The message.
    #[prost(oneof = "agent_message::Message", tags = "1, 2")]
    pub message: Option<agent_message::Message>,
}

/// The oneof of [`AgentMessage`].
pub mod agent_message {
    /// Log or event.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        /// A log line.
        #[prost(message, tag = "1")]
        AgentLog(super::AgentLog),
        /// An event.
        #[prost(message, tag = "2")]
        AgentEvent(super::AgentEvent),
    }
}

/// Asks the agent for an attestation report bound to a nonce.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttestationRequest {
    /// The nonce; report data is SHA-512(nonce).
    #[prost(bytes = "vec", tag = "1")]
    pub nonce: Vec<u8>,
}

/// What the manager sends to the agent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ManagerMessage {
    /// The message.
    #[prost(oneof = "manager_message::Message", tags = "1")]
    pub message: Option<manager_message::Message>,
}

/// The oneof of [`ManagerMessage`].
pub mod manager_message {
    /// Requests.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        /// Attestation request.
        #[prost(message, tag = "1")]
        AttestationRequest(super::AttestationRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn event_wire_format_matches_cocos_field_numbers() {
        let m = AgentMessage {
            message: Some(agent_message::Message::AgentEvent(AgentEvent {
                event_type: "boot".into(),
                timestamp: None,
                computation_id: "c1".into(),
                details: b"{}".to_vec(),
                originator: "agent".into(),
                status: "ok".into(),
            })),
        };
        let b = m.encode_to_vec();
        // field 2 (agent_event), length-delimited; inside: field 1 "boot", field 3 "c1", ...
        assert_eq!(b[0], 0x12);
        assert_eq!(&b[2..8], &[0x0a, 4, b'b', b'o', b'o', b't']);
        assert_eq!(&b[8..12], &[0x1a, 2, b'c', b'1']);
        assert_eq!(AgentMessage::decode(b.as_slice()).unwrap(), m);
    }
}
