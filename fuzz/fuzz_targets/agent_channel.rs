//! Fuzz target for the manager's side of a VM's agent channel (what a hostile guest
//! controls): bytes fed in arbitrary chunks to `Session::on_bytes`, interleaved with
//! commits, reconnects and attestation requests, from an arbitrary committed mark
//! (near the id wrap too). Nothing may panic, and no frame id is handed out as new
//! twice while it is committed (the dedupe the store relies on).

#![no_main]

use cocos_manager::agent_channel::{is_after, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let hw = match head % 4 {
        0 => 0,
        1 => 0x7fff_fff0,
        2 => 5,
        _ => u32::from(head) << 20,
    };
    let mut s = Session::new("fuzz", hw);
    let mut rest = rest;
    while let Some((&op, tail)) = rest.split_first() {
        let n = usize::from(op & 0x3f).min(tail.len());
        let (chunk, after) = tail.split_at(n);
        rest = after;
        match op >> 6 {
            0 | 1 => match s.on_bytes(chunk) {
                Ok(inc) => {
                    let ids: Vec<u32> = inc.new.iter().map(|d| d.frame_id).collect();
                    for id in &ids {
                        assert!(is_after(*id, s.committed_hw()), "{id} handed out again after {}", s.committed_hw());
                    }
                    let _ = s.committed(&ids);
                }
                Err(_) => {
                    let _ = s.reconnected();
                }
            },
            2 => {
                let _ = s.reconnected();
            }
            _ => {
                let _ = s.request_attestation(chunk);
            }
        }
    }
});
