//! The agent's messages: boot (kernel release, TEE, command line), heartbeat,
//! attestation (report, or a plain "no TEE" answer), state changes and log lines, as
//! cocos `AgentEvent`/`AgentLog` inside an `AgentMessage`.

use std::time::{SystemTime, UNIX_EPOCH};

use cocos_proto::messages::{agent_message, AgentEvent, AgentLog, AgentMessage};
use prost::Message;
use serde_json::{json, Value};

use crate::tee::{Report, Tee};

fn now() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// An encoded event.
pub fn event(computation_id: &str, event_type: &str, status: &str, details: &Value) -> Vec<u8> {
    AgentMessage {
        message: Some(agent_message::Message::AgentEvent(AgentEvent {
            event_type: event_type.into(),
            timestamp: Some(now()),
            computation_id: computation_id.into(),
            details: serde_json::to_vec(details).unwrap_or_default(),
            originator: "agent".into(),
            status: status.into(),
        })),
    }
    .encode_to_vec()
}

/// An encoded log line.
pub fn log(computation_id: &str, level: &str, message: &str) -> Vec<u8> {
    AgentMessage {
        message: Some(agent_message::Message::AgentLog(AgentLog {
            message: message.into(),
            computation_id: computation_id.into(),
            level: level.into(),
            timestamp: Some(now()),
        })),
    }
    .encode_to_vec()
}

/// The boot event's details.
pub fn boot_details(kernel: &str, tee: Tee, cmdline: &str, transport: &str) -> Value {
    json!({"kernel": kernel, "tee": tee.name(), "cmdline": cmdline, "transport": transport, "agent_version": env!("CARGO_PKG_VERSION")})
}

/// The attestation event's details and status for a request.
pub fn attestation_details(tee: Tee, result: Result<Report, String>) -> (Value, &'static str) {
    match (tee, result) {
        (Tee::None, _) => (
            json!({"tee": "none", "reason": "this guest runs in no TEE (no SEV-SNP or TDX guest support detected), so there is no report"}),
            "unavailable",
        ),
        (_, Ok(r)) => {
            let mut d = json!({"tee": tee.name(), "provider": r.provider, "report": hex::encode(&r.outblob), "report_data": hex::encode(r.report_data)});
            if let Some(o) = d.as_object_mut() {
                if let Some(a) = &r.auxblob {
                    o.insert("certs".into(), hex::encode(a).into());
                }
                if let Some(l) = &r.event_log {
                    o.insert("event_log".into(), hex::encode(l).into());
                }
            }
            (d, "ok")
        }
        (_, Err(e)) => (json!({"tee": tee.name(), "error": e}), "error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_event_round_trips() {
        let b = event(
            "c1",
            "boot",
            "ok",
            &boot_details("6.1.0", Tee::None, "quiet", "serial:x"),
        );
        let m = AgentMessage::decode(b.as_slice()).unwrap();
        let Some(agent_message::Message::AgentEvent(e)) = m.message else {
            panic!("not an event")
        };
        assert_eq!(
            (
                e.event_type.as_str(),
                e.computation_id.as_str(),
                e.originator.as_str()
            ),
            ("boot", "c1", "agent")
        );
        let d: Value = serde_json::from_slice(&e.details).unwrap();
        assert_eq!(d["tee"], "none");
        assert_eq!(d["kernel"], "6.1.0");
    }

    #[test]
    fn no_tee_means_no_report() {
        let (d, status) = attestation_details(Tee::None, Err("x".into()));
        assert_eq!(status, "unavailable");
        assert!(d.get("report").is_none());
        let (d, status) = attestation_details(Tee::Tdx, Err("no configfs".into()));
        assert_eq!(
            (status, d["error"].as_str()),
            ("error", Some("no configfs"))
        );
    }
}
