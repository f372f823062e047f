//! Issue #15.15, both sides together: cocos-agent's outbox starting just before its
//! frame ids wrap (AGENT_ID_MAX → 1), served over a socket pair to the manager's
//! sans-IO session, which commits and acknowledges what it stores. Every frame arrives
//! exactly once and in order across the wrap; after a reconnect the agent re-sends
//! what was not acknowledged and the manager drops the re-sends of what it stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cocos_agent::channel::{serve, Outbox};
use cocos_manager::agent_channel::Session;
use cocos_proto::frame::AGENT_ID_MAX;

/// Reads from the agent until `want` new frames were delivered; commits each batch
/// (acks written back); returns each event's `details.i`.
fn receive(mgr: &mut UnixStream, s: &mut Session, want: usize) -> Vec<u64> {
    use cocos_proto::messages::agent_message::Message;
    mgr.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = mgr.read(&mut buf).unwrap();
        assert!(n > 0, "agent closed");
        let inc = s.on_bytes(&buf[..n]).unwrap();
        mgr.write_all(&inc.acks_now).unwrap();
        let ids: Vec<u32> = inc.new.iter().map(|d| d.frame_id).collect();
        for d in inc.new {
            let Some(Message::AgentEvent(e)) = d.message.and_then(|m| m.message) else {
                panic!("frame {} is not an event", d.frame_id)
            };
            let v: serde_json::Value = serde_json::from_slice(&e.details).unwrap();
            got.push(v["i"].as_u64().unwrap());
        }
        mgr.write_all(&s.committed(&ids)).unwrap();
    }
    got
}

#[test]
fn frames_cross_the_id_wrap_once_and_in_order() {
    let ob = Outbox::starting_after(u64::from(AGENT_ID_MAX) - 3);
    let payload = |i: u32| cocos_agent::events::event("w", "n", "ok", &serde_json::json!({"i": i}));
    for i in 0..6 {
        ob.push(&payload(i)).unwrap();
    }
    let mut s = Session::new("w", 0);
    let (agent, mut mgr) = UnixStream::pair().unwrap();
    let o = ob.clone();
    let t = std::thread::spawn(move || serve(agent.try_clone().unwrap(), agent, &o, |_, _| {}));
    assert_eq!(receive(&mut mgr, &mut s, 6), [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        s.committed_hw(),
        3,
        "the mark moved across the wrap to id 3"
    );
    // Two more, then the connection drops before they are acknowledged.
    std::thread::sleep(Duration::from_millis(300));
    ob.push(&payload(6)).unwrap();
    ob.push(&payload(7)).unwrap();
    drop(mgr);
    let _ = t.join();
    // Reconnect: the agent re-sends 6 and 7 (and nothing stored before).
    let (agent, mut mgr) = UnixStream::pair().unwrap();
    mgr.write_all(&s.reconnected()).unwrap();
    let o = ob.clone();
    let t = std::thread::spawn(move || serve(agent.try_clone().unwrap(), agent, &o, |_, _| {}));
    assert_eq!(receive(&mut mgr, &mut s, 2), [6, 7]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ob.pending(), 0, "everything acknowledged");
    drop(mgr);
    let _ = t.join();
}
