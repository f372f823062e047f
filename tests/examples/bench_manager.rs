//! Benchmark of cocos-manager (run by scripts/bench-manager.sh, release build):
//! 1. launch latency, request → QEMU spawned (the manager's own `launch_ms`, which
//!    includes opening and hashing kernel, initrd and OVMF and computing the expected
//!    measurement) and the client's round trip, p50/p99 over N launches of a real
//!    release (default target/demo/hal) with the QEMU stand-in;
//! 2. events/s through the manager from 100 stand-in agents over Unix sockets (each
//!    agent sends EVENTS heartbeats as fast as acks allow), and whether every one was
//!    stored exactly once (per-VM heartbeat sequence 1..EVENTS);
//! 3. the manager's RSS idle and with 100 VMs.
//!
//! Prints a JSON summary on stdout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // benchmark tool

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cocos_testkit::workspace_root;
use cocos_tests::{events, http, wait_for, workspace_bin, ManagerProc};
use serde_json::{json, Value};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str, d: &str| -> String {
        args.windows(2)
            .find(|w| w[0] == k)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| d.to_owned())
    };
    let release = PathBuf::from(get(
        "--release",
        workspace_root()
            .join("target/demo/hal/release.json")
            .to_str()
            .unwrap(),
    ));
    let ovmf = get("--ovmf", "/usr/share/ovmf/OVMF.fd");
    let measure_as = get("--measure-as", "tdx");
    let launches: usize = get("--launches", "200").parse().unwrap();
    let agents: usize = get("--agents", "100").parse().unwrap();
    let per_agent: u64 = get("--events", "5000").parse().unwrap();
    let fake = workspace_bin("cocos-tests", "fake-qemu");
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let base = [
        "--release",
        release.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--ovmf",
        &ovmf,
        "--qemu-bin",
        fake.to_str().unwrap(),
        "--accel",
        "tcg",
        "--measure-as",
        &measure_as,
        "--max-vms",
        "128",
        "--stop-timeout",
        "2s",
        "--log-level",
        "warn",
    ];

    // 1. Launch latency (stand-in QEMU that sends nothing).
    let m = ManagerProc::start(
        &base,
        &[("FAKE_QEMU_EVENTS", "0")],
        &work.path().join("m1.log"),
    );
    let idle_rss = {
        std::thread::sleep(Duration::from_millis(500));
        rss_kib(m.child.id())
    };
    let (mut server, mut client) = (Vec::new(), Vec::new());
    for i in 0..launches {
        let t = Instant::now();
        let (st, body) = http(
            &m.http,
            "POST",
            "/run",
            &format!(r#"{{"computation_id": "l{i}"}}"#),
        );
        client.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(st, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        server.push(v["launch_ms"].as_f64().unwrap());
        let (st, body) = http(&m.http, "DELETE", &format!("/computations/l{i}"), "");
        assert_eq!(st, 200, "{body}");
    }
    drop(m);

    // 2 + 3. 100 agents; throughput, loss, RSS.
    let per = per_agent.to_string();
    let m = ManagerProc::start(
        &base,
        &[
            ("FAKE_QEMU_EVENTS", per.as_str()),
            ("FAKE_QEMU_RATE", "1000000000"),
        ],
        &work.path().join("m2.log"),
    );
    let health = |m: &ManagerProc| -> Value {
        serde_json::from_str(&http(&m.http, "GET", "/health", "").1).unwrap()
    };
    let seq0 = health(&m)["last_seq"].as_u64().unwrap();
    let t0 = Instant::now();
    for i in 0..agents {
        let (st, body) = http(
            &m.http,
            "POST",
            "/run",
            &format!(r#"{{"computation_id": "a{i}"}}"#),
        );
        assert_eq!(st, 201, "{body}");
    }
    // Each VM: vm-provision + boot + per_agent heartbeats.
    let total = agents as u64 * (per_agent + 2);
    let mut peak_rss = 0;
    wait_for(Duration::from_secs(600), "every event stored", || {
        peak_rss = peak_rss.max(rss_kib(m.child.id()));
        (health(&m)["last_seq"].as_u64().unwrap() - seq0 >= total).then_some(())
    });
    let secs = t0.elapsed().as_secs_f64();
    let stored = health(&m)["last_seq"].as_u64().unwrap() - seq0;
    std::thread::sleep(Duration::from_millis(500));
    let rss_100 = rss_kib(m.child.id());
    // Exactly once: every VM's heartbeats are 1..=per_agent.
    let ev = events(&m.http, seq0);
    let mut bad = 0;
    for i in 0..agents {
        let id = format!("a{i}");
        let hb: Vec<u64> = ev
            .iter()
            .filter(|e| e["computation_id"] == id.as_str() && e["event_type"] == "heartbeat")
            .map(|e| e["details"]["seq"].as_u64().unwrap())
            .collect();
        if hb != (1..=per_agent).collect::<Vec<_>>() {
            bad += 1;
        }
    }
    for i in 0..agents {
        http(&m.http, "DELETE", &format!("/computations/a{i}"), "");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "launch": {
                "n": launches, "measure_as": measure_as,
                "server_ms": {"p50": pct(&mut server, 0.5), "p99": pct(&mut server, 0.99), "max": pct(&mut server, 1.0)},
                "client_ms": {"p50": pct(&mut client, 0.5), "p99": pct(&mut client, 0.99)},
            },
            "events": {
                "agents": agents, "per_agent": per_agent, "stored": stored, "seconds": secs,
                "per_second": stored as f64 / secs, "vms_with_loss_or_duplicates": bad,
            },
            "rss_kib": {"idle": idle_rss, "with_100_vms": rss_100, "peak_during_load": peak_rss},
        }))
        .unwrap()
    );
}
