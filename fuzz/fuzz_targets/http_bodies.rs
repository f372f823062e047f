//! Fuzz target for what an HTTP or gRPC client sends the manager: the `POST /run`
//! body (`RunRequest`, unknown fields refused) and its durations, computation ids, and
//! the attestation body's nonce. Nothing may panic.

#![no_main]

use cocos_manager::runtime::RunRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<RunRequest>(data) {
        if let Some(t) = r.ttl.as_deref() {
            let _ = cocos_manager::config::parse_duration(t);
        }
        if let Some(id) = r.computation_id.as_deref() {
            let _ = cocos_manager::runtime::check_id(id);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = v.get("nonce").and_then(serde_json::Value::as_str).map(hex_ok);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cocos_manager::config::parse_duration(s);
        let _ = cocos_manager::runtime::check_id(s);
        let _ = cocos_manager::listen::parse(s);
    }
});

fn hex_ok(s: &str) -> bool {
    s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
