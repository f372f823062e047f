//! A QEMU stand-in for the manager's tests and benchmarks (it runs no guest). It takes
//! the argv the manager builds, checks that the verified descriptors it was given
//! (`/dev/fd/N` for -kernel, -initrd, -bios) are readable (their SHA-256, as read,
//! go to the console log), serves QMP on the -qmp
//! socket (qmp_capabilities, query-name, system_powerdown, quit) and plays the agent
//! on the virtio-serial chardev socket with cocos-agent's own outbox: a boot event,
//! then heartbeats `{"seq": n}` at FAKE_QEMU_RATE per second (default 5; per
//! computation with FAKE_QEMU_RATE_FOR="id=rate,…"), up to
//! FAKE_QEMU_EVENTS (default unlimited), once the file FAKE_QEMU_HOLD names exists (if
//! set). FAKE_QEMU_IGNORE_POWERDOWN=1 makes it ignore
//! system_powerdown (so the manager must signal it). FAKE_QEMU_SNP_DIR=DIR (a
//! `cocos_testkit::snp_evidence::TestChain` saved there, and DIR/measurement in hex)
//! answers attestation requests as an SEV-SNP guest would: a report over SHA-512 of the
//! nonce, signed by the test VCEK, with the certificate table, through cocos-agent's
//! own event builder. FAKE_QEMU_HOSTILE=forge makes it a hostile guest that, after its
//! boot event, sends events posing as the manager's (`vm-exited` "stopped" and
//! `vm-provision` with originator "manager", a heartbeat claiming originator "manager",
//! an `attestation` with its own "verified" verdict); `garbage` answers every agent
//! connection with bytes that are not frames, `huge` with a frame header announcing
//! 4 GiB (each connection is logged to the console log as `agent connection N`);
//! `bigevent` sends a valid 200 KiB event. Modes combine with commas. While a file
//! `qmp-busy` exists beside the QMP socket, QMP connections get no greeting (as when
//! another client holds QEMU's one QMP session).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test tool

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use cocos_agent::channel::{serve, Outbox};

fn opt(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

fn kv(spec: &str, key: &str) -> Option<String> {
    spec.split(',')
        .find_map(|p| p.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--version") {
        // What the manager asks at start for its TDX measurement rules.
        println!("QEMU emulator version 10.1.0 (fake-qemu stand-in)");
        return;
    }
    let name = opt(&args, "-name").pop().unwrap_or_default();
    let mut digests = String::new();
    for f in ["-kernel", "-initrd", "-bios"] {
        for p in opt(&args, f) {
            let mut b = Vec::new();
            if let Err(e) = std::fs::File::open(&p).and_then(|mut x| x.read_to_end(&mut b)) {
                eprintln!("fake-qemu: {f} {p}: {e}");
                std::process::exit(1);
            }
            digests.push_str(&format!(
                "fake-qemu read {f} sha256 {}\n",
                cocos_hal::build::sha256_hex(&b)
            ));
        }
    }
    let cmdline = opt(&args, "-append").pop().unwrap_or_default();
    let id = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cocos.id="))
        .unwrap_or_default()
        .to_owned();
    let agent_sock = opt(&args, "-chardev")
        .into_iter()
        .find(|c| c.starts_with("socket,id=agent0"))
        .and_then(|c| kv(&c, "path"));
    let qmp_sock = opt(&args, "-qmp").pop().and_then(|q| {
        q.strip_prefix("unix:")
            .map(|s| s.split(',').next().unwrap_or("").to_owned())
    });
    if let Some(console) = opt(&args, "-chardev")
        .into_iter()
        .find(|c| c.starts_with("file,"))
        .and_then(|c| kv(&c, "path"))
    {
        let _ = std::fs::write(console, format!("fake-qemu {name}: {cmdline}\n{digests}"));
    }

    let outbox = Outbox::new();
    // FAKE_QEMU_RATE_FOR="id=rate,…" gives some computations their own rate.
    let own_rate = std::env::var("FAKE_QEMU_RATE_FOR").ok().and_then(|v| {
        v.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == id)
            .and_then(|(_, r)| r.parse::<u64>().ok())
    });
    let rate = own_rate
        .or_else(|| env_u64("FAKE_QEMU_RATE"))
        .unwrap_or(5)
        .max(1);
    let total = env_u64("FAKE_QEMU_EVENTS").unwrap_or(u64::MAX);
    {
        let outbox = outbox.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            outbox
                .push(&cocos_agent::events::event(
                    &id,
                    "boot",
                    "ok",
                    &serde_json::json!({"fake": true}),
                ))
                .unwrap();
            if std::env::var("FAKE_QEMU_HOSTILE").is_ok_and(|v| v.split(',').any(|m| m == "forge"))
            {
                forge(&outbox, &id);
            }
            // FAKE_QEMU_HOLD=PATH: heartbeats wait until PATH exists (benchmarks start
            // every agent at once).
            if let Ok(hold) = std::env::var("FAKE_QEMU_HOLD") {
                while !std::path::Path::new(&hold).exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let start = Instant::now();
            let mut n = 0u64;
            while n < total {
                n += 1;
                outbox
                    .push(&cocos_agent::events::event(
                        &id,
                        "heartbeat",
                        "ok",
                        &serde_json::json!({"seq": n}),
                    ))
                    .unwrap();
                let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        });
    }
    let hostile = std::env::var("FAKE_QEMU_HOSTILE").unwrap_or_default();
    let mode = |m: &str| hostile.split(',').any(|x| x == m);
    let console = opt(&args, "-chardev")
        .into_iter()
        .find(|c| c.starts_with("file,"))
        .and_then(|c| kv(&c, "path"));
    if mode("bigevent") {
        outbox
            .push(&cocos_agent::events::event(
                &id,
                "big",
                "ok",
                &serde_json::json!({"blob": "x".repeat(200 * 1024)}),
            ))
            .unwrap();
    }
    if let (Some(p), true) = (&agent_sock, mode("garbage") || mode("huge")) {
        let l = UnixListener::bind(p).unwrap();
        let huge = mode("huge");
        std::thread::spawn(move || {
            for (n, c) in l.incoming().enumerate() {
                let Ok(mut c) = c else { continue };
                if let Some(log) = &console {
                    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
                        let _ = writeln!(f, "agent connection {}", n + 1);
                    }
                }
                let bytes: Vec<u8> = if huge {
                    // Frame id 1, length 0xffff_ffff.
                    [1u32.to_le_bytes(), u32::MAX.to_le_bytes()].concat()
                } else {
                    // An id with the manager's bit: no agent may send it.
                    [0x8000_0001u32.to_le_bytes(), 4u32.to_le_bytes(), *b"junk"].concat()
                };
                let _ = c.write_all(&bytes);
                let mut sink = Vec::new();
                let _ = c.read_to_end(&mut sink);
            }
        });
    } else if let Some(p) = agent_sock {
        let l = UnixListener::bind(&p).unwrap();
        let outbox = outbox.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let r = c.try_clone().unwrap();
                let (answer, id) = (outbox.clone(), id.clone());
                let _ = serve(c, r, &outbox, move |_, payload| {
                    attest(&answer, &id, &payload)
                });
            }
        });
    }
    let ignore_powerdown = std::env::var("FAKE_QEMU_IGNORE_POWERDOWN").is_ok_and(|v| v == "1");
    let Some(q) = qmp_sock else {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    };
    let l = UnixListener::bind(&q).unwrap();
    let busy = std::path::Path::new(&q).with_file_name("qmp-busy");
    for c in l.incoming() {
        let Ok(c) = c else { continue };
        let name = name.clone();
        let busy = busy.clone();
        std::thread::spawn(move || {
            while busy.exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
            qmp(c, &name, ignore_powerdown)
        });
    }
}

/// Events a hostile guest sends to pass for the manager.
fn forge(outbox: &Outbox, id: &str) {
    use cocos_proto::messages::{agent_message, AgentEvent, AgentMessage};
    use prost::Message as _;
    let ev = |t: &str, originator: &str, status: &str, details: serde_json::Value| {
        AgentMessage {
            message: Some(agent_message::Message::AgentEvent(AgentEvent {
                event_type: t.into(),
                timestamp: None,
                computation_id: "another-vm".into(),
                details: details.to_string().into_bytes(),
                originator: originator.into(),
                status: status.into(),
            })),
        }
        .encode_to_vec()
    };
    for e in [
        ev(
            "vm-exited",
            "manager",
            "stopped",
            serde_json::json!({"forged": true}),
        ),
        ev(
            "vm-provision",
            "manager",
            "ok",
            serde_json::json!({"expected_measurement": {"tee": "snp", "measurement": "00"}}),
        ),
        ev(
            "heartbeat",
            "manager",
            "ok",
            serde_json::json!({"forged": true}),
        ),
        ev(
            "attestation",
            "agent",
            "error",
            serde_json::json!({"verdict": {"verified": true, "summary": "verified"}}),
        ),
    ] {
        outbox.push(&e).unwrap();
    }
    let _ = id;
}

fn qmp(c: UnixStream, name: &str, ignore_powerdown: bool) {
    let mut w = c.try_clone().unwrap();
    let _ = w
        .write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 0}}, \"capabilities\": []}}\n");
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let reply = match v["execute"].as_str().unwrap_or("") {
            "qmp_capabilities" => serde_json::json!({"return": {}}),
            "query-name" => serde_json::json!({"return": {"name": name}}),
            "system_powerdown" => {
                if !ignore_powerdown {
                    std::thread::spawn(|| {
                        std::thread::sleep(Duration::from_millis(100));
                        std::process::exit(0);
                    });
                }
                serde_json::json!({"return": {}})
            }
            "quit" => std::process::exit(0),
            other => {
                serde_json::json!({"error": {"class": "CommandNotFound", "desc": format!("{other}")}})
            }
        };
        let _ = w.write_all(format!("{reply}\n").as_bytes());
    }
}

/// Answers an attestation request as an SEV-SNP guest with FAKE_QEMU_SNP_DIR's test chain
/// (ignored without it, as a guest without a TEE driver would not answer either).
fn attest(outbox: &Outbox, id: &str, payload: &[u8]) {
    use cocos_proto::messages::{manager_message, ManagerMessage};
    use prost::Message as _;
    let Ok(dir) = std::env::var("FAKE_QEMU_SNP_DIR") else {
        return;
    };
    let Ok(ManagerMessage {
        message: Some(manager_message::Message::AttestationRequest(req)),
    }) = ManagerMessage::decode(payload)
    else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let chain = cocos_testkit::snp_evidence::TestChain::load(dir);
    let m: [u8; 48] = hex::decode(
        std::fs::read_to_string(dir.join("measurement"))
            .unwrap()
            .trim(),
    )
    .unwrap()
    .try_into()
    .unwrap();
    let rd = cocos_testkit::snp_evidence::report_data(&req.nonce);
    let report = cocos_agent::tee::Report {
        provider: "sev_guest".into(),
        outblob: chain.report(&m, &rd),
        report_data: rd,
        auxblob: Some(chain.cert_table()),
        event_log: None,
    };
    let (details, status) =
        cocos_agent::events::attestation_details(cocos_agent::tee::Tee::SevSnp, Ok(report));
    outbox
        .push(&cocos_agent::events::event(
            id,
            "attestation",
            status,
            &details,
        ))
        .unwrap();
}
