//! The agent's channel (cocos-agent) against the manager's session (cocos-manager)
//! over Unix socket pairs: 2,000 events, the connection dropped twice mid-stream (once
//! after frames were received but not committed, so neither stored nor acked),
//! and every event delivered exactly once, in order, with the computation id.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cocos_agent::channel::{serve, Outbox};
use cocos_manager::agent_channel::Session;

#[test]
fn every_event_exactly_once_across_reconnects() {
    const N: u32 = 2000;
    let outbox = Outbox::new();
    for i in 0..N {
        outbox.push(format!("event {i}").as_bytes()).unwrap();
    }
    let mut session = Session::new("vm-7", 0);
    let mut delivered: Vec<u32> = Vec::new();
    let start = Instant::now();
    for round in 0..3 {
        let (agent, mut mgr) = UnixStream::pair().unwrap();
        let ob = outbox.clone();
        let t =
            std::thread::spawn(move || serve(agent.try_clone().unwrap(), agent, &ob, |_, _| {}));
        mgr.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let resend = session.reconnected();
        mgr.write_all(&resend).unwrap();
        // Rounds 0 and 1 hang up after a few hundred deliveries; round 2 drains.
        let stop_after = if round < 2 {
            delivered.len() + 300
        } else {
            usize::MAX
        };
        let mut buf = [0u8; 8192];
        let mut withheld = 0;
        while delivered.len() < N as usize && delivered.len() < stop_after {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "stalled at {}",
                delivered.len()
            );
            let n = match mgr.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => continue,
            };
            let inc = session.on_bytes(&buf[..n]).unwrap();
            mgr.write_all(&inc.acks_now).unwrap();
            // Round 0 "crashes" before committing the frames after the 250th: they are
            // neither stored nor acked, so they must come again.
            if round == 0 && delivered.len() >= 250 {
                withheld += inc.new.len();
                if withheld >= 100 {
                    break;
                }
                continue;
            }
            let ids: Vec<u32> = inc.new.iter().map(|x| x.frame_id).collect();
            for x in inc.new {
                assert_eq!(x.computation_id, "vm-7");
                delivered.push(x.frame_id);
            }
            mgr.write_all(&session.committed(&ids)).unwrap();
        }
        drop(mgr);
        let _ = t.join();
    }
    assert_eq!(delivered.len(), N as usize, "every event delivered");
    assert_eq!(
        delivered,
        (1..=N).collect::<Vec<_>>(),
        "once each, in order"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while outbox.pending() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(outbox.pending(), 0, "the agent's outbox drained");
}
