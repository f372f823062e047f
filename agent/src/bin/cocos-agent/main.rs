//! `cocos-agent`: started by the HAL image's init. Reads /proc/cmdline, sends a boot
//! event, heartbeats every few seconds, answers attestation requests, and keeps every
//! event until the manager acknowledges it (reconnecting as needed). Everything it
//! sends is also logged on the console.

use std::path::Path;
use std::time::Duration;

use cocos_agent::channel::{self, Outbox};
use cocos_agent::config::Config;
use cocos_agent::{events, tee};
use cocos_proto::messages::{manager_message, ManagerMessage};
use prost::Message;

const HEARTBEAT: Duration = Duration::from_secs(5);

/// Every event and log line also goes to the console, one line each.
fn console(payload: &[u8]) {
    use cocos_proto::messages::{agent_message, AgentMessage};
    match AgentMessage::decode(payload).ok().and_then(|m| m.message) {
        Some(agent_message::Message::AgentEvent(e)) => {
            eprintln!(
                "cocos-agent: event {} ({}): {}",
                e.event_type,
                e.status,
                String::from_utf8_lossy(&e.details)
            );
        }
        Some(agent_message::Message::AgentLog(l)) => {
            eprintln!("cocos-agent: [{}] {}", l.level, l.message)
        }
        None => {}
    }
}

fn main() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cfg = match Config::from_cmdline(&cmdline) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cocos-agent: {e}; running without a channel");
            Config {
                computation_id: String::new(),
                transport: None,
                cmdline: cmdline.trim().to_owned(),
            }
        }
    };
    let tee = tee::detect(Path::new("/"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let transport = cfg
        .transport
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "none".into());
    eprintln!(
        "cocos-agent: id {:?}, tee {}, kernel {kernel}, events via {transport}",
        cfg.computation_id,
        tee.name()
    );

    let outbox = Outbox::new();
    let id = cfg.computation_id.clone();
    let push = {
        let outbox = outbox.clone();
        move |payload: Vec<u8>| {
            console(&payload);
            if let Err(e) = outbox.push(&payload) {
                eprintln!("cocos-agent: cannot queue a message: {e}");
            }
        }
    };
    push(events::event(
        &id,
        "boot",
        "ok",
        &events::boot_details(&kernel, tee, &cfg.cmdline, &transport),
    ));
    push(events::log(
        &id,
        "info",
        &format!("agent started; tee {}", tee.name()),
    ));
    push(events::event(
        &id,
        "state",
        "ok",
        &serde_json::json!({"state": "running"}),
    ));

    {
        let (push, id) = (push.clone(), id.clone());
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            loop {
                std::thread::sleep(HEARTBEAT);
                n += 1;
                push(events::event(
                    &id,
                    "heartbeat",
                    "ok",
                    &serde_json::json!({"seq": n}),
                ));
            }
        });
    }

    let Some(t) = cfg.transport.clone() else {
        eprintln!("cocos-agent: no cocos.events= on the command line: events stay on the console");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    };
    loop {
        match channel::open(&t) {
            Ok(conn) => {
                let reader = match conn.try_clone() {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("cocos-agent: {t}: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                let (push, id) = (push.clone(), id.clone());
                let on_frame = move |fid: u32, payload: Vec<u8>| match ManagerMessage::decode(
                    payload.as_slice(),
                ) {
                    Ok(ManagerMessage {
                        message: Some(manager_message::Message::AttestationRequest(r)),
                    }) => {
                        let result = tee::configfs_report(
                            Path::new("/sys/kernel/config/tsm/report"),
                            &format!("cocos-{fid}"),
                            &r.nonce,
                        )
                        .map(|mut rep| {
                            if tee == tee::Tee::Tdx {
                                rep.event_log = tee::ccel(Path::new("/"));
                            }
                            rep
                        });
                        let (details, status) = events::attestation_details(tee, result);
                        eprintln!("cocos-agent: attestation request {fid}: {status}");
                        push(events::event(&id, "attestation", status, &details));
                    }
                    _ => eprintln!("cocos-agent: ignoring manager frame {fid} (unknown message)"),
                };
                if let Err(e) = channel::serve(conn, reader, &outbox, on_frame) {
                    eprintln!(
                        "cocos-agent: {t}: {e}; {} unacknowledged, reconnecting",
                        outbox.pending()
                    );
                }
            }
            Err(e) => eprintln!("cocos-agent: {t}: {e}; retrying"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
