//! Benchmark of cocos-manager (run by scripts/bench-manager.sh, release build):
//! 1. launch latency, request → QEMU spawned (the manager's own `launch_ms`, which
//!    includes opening and hashing kernel, initrd and OVMF and computing the expected
//!    measurement) and the client's round trip, p50/p99 over N launches of a real
//!    release (default target/demo/hal) with the QEMU stand-in;
//! 2. events/s through the manager from 100 stand-in agents over Unix sockets (each
//!    agent sends EVENTS heartbeats as fast as acks allow), and whether every one was
//!    stored exactly once (per-VM heartbeat sequence 1..EVENTS);
//! 3. the manager's RSS idle and with 100 VMs;
//! 4. scale: 1,000 VMs on the stand-in, RSS with all of them running, and events/s
//!    when all their agents start at once (EVENTS_1000 heartbeats each, within the
//!    per-VM burst), with the same exactly-once check;
//! 5. 1,000 followers of `GET /events?follow=true` attached (each reading everything):
//!    launch latency p50/p99 over 100 launches;
//! 6. one flooding VM (as fast as its agent can send) beside 99 quiet ones (20
//!    heartbeats/s): the quiet VMs' event latency (guest timestamp → a follower),
//!    p50/p99, and whether all their heartbeats arrived in order.
//!
//! `--only 1,2,4` runs some parts (1 and 2 include 3). Prints a JSON summary on stdout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // benchmark tool

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cocos_testkit::workspace_root;
use cocos_tests::{http, wait_for, workspace_bin, ManagerProc};
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
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Opens `GET /events` (HTTP/1.0: the body is the lines, up to the close). Retried a
/// few times: a thousand followers connecting at once can overflow the accept queue.
fn open_events(addr: &str, query: &str) -> BufReader<std::net::TcpStream> {
    let try_open = || -> std::io::Result<BufReader<std::net::TcpStream>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        write!(s, "GET /events?{query} HTTP/1.0\r\n\r\n")?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        // Skip the status line and headers.
        while r.read_line(&mut line)? > 0 && line != "\r\n" {
            line.clear();
        }
        Ok(r)
    };
    let mut last = None;
    for attempt in 0..20 {
        match try_open() {
            Ok(r) => return r,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
    }
    panic!("GET /events?{query}: {last:?}")
}

/// Streams every stored event from `from` and checks each VM named `prefix{i}` has
/// heartbeats exactly 1..=per: the number of VMs that do not.
fn vms_with_loss(addr: &str, from: u64, prefix: &str, vms: usize, per: u64) -> usize {
    let mut seen: HashMap<String, (u64, bool)> = HashMap::new();
    for line in open_events(addr, &format!("from={from}")).lines() {
        let Ok(line) = line else { break };
        let Ok(e) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if e["event_type"] != "heartbeat" {
            continue;
        }
        let id = e["computation_id"].as_str().unwrap_or("").to_owned();
        let n = e["details"]["seq"].as_u64().unwrap_or(0);
        let v = seen.entry(id).or_insert((0, true));
        v.1 &= n == v.0 + 1;
        v.0 = n;
    }
    (0..vms)
        .filter(|i| {
            seen.get(&format!("{prefix}{i}"))
                .is_none_or(|&(last, ok)| !ok || last != per)
        })
        .count()
}

/// Keeps a part's result and shows it on stderr at once (a later part's failure does
/// not lose it).
fn record(out: &mut serde_json::Map<String, Value>, part: &str, v: Value) {
    eprintln!("{part}: {v}");
    out.insert(part.to_owned(), v);
}

fn run(m: &ManagerProc, id: &str) -> f64 {
    let t = Instant::now();
    cocos_tests::launch(&m.http, id);
    t.elapsed().as_secs_f64() * 1000.0
}

fn stop(m: &ManagerProc, id: &str) {
    http(&m.http, "DELETE", &format!("/computations/{id}"), "");
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
    let scale_vms: usize = get("--scale-vms", "1000").parse().unwrap();
    let per_scale: u64 = get("--events-1000", "1000").parse().unwrap();
    let followers: usize = get("--followers", "1000").parse().unwrap();
    let only = get("--only", "1,2,4,5,6");
    let part = |n: &str| only.split(',').any(|p| p.trim() == n);
    let fake = workspace_bin("cocos-tests", "fake-qemu");
    let work = tempfile::tempdir().unwrap();
    // Each part starts a manager on its own state directory.
    let args_with = |part: &str, extra: &[&str]| -> Vec<String> {
        let state = work.path().join(format!("state{part}"));
        let mut v: Vec<String> = [
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
            "--stop-timeout",
            "2s",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let health = |m: &ManagerProc| -> Value {
        serde_json::from_str(&http(&m.http, "GET", "/health", "").1).unwrap()
    };
    let last_seq = |m: &ManagerProc| health(m)["last_seq"].as_u64().unwrap();
    let mut out = serde_json::Map::new();

    // 1. Launch latency (stand-in QEMU that sends nothing).
    let mut idle_rss = 0;
    if part("1") {
        let m = ManagerProc::start(
            &args_with("1", &["--max-vms", "128"]),
            &[("FAKE_QEMU_EVENTS", "0")],
            &work.path().join("m1.log"),
        );
        idle_rss = {
            std::thread::sleep(Duration::from_millis(500));
            rss_kib(m.child.id())
        };
        let (mut server, mut client) = (Vec::new(), Vec::new());
        for i in 0..launches {
            let t = Instant::now();
            let body = cocos_tests::launch(&m.http, &format!("l{i}"));
            client.push(t.elapsed().as_secs_f64() * 1000.0);
            let v: Value = serde_json::from_str(&body).unwrap();
            server.push(v["launch_ms"].as_f64().unwrap());
            let (st, body) = http(&m.http, "DELETE", &format!("/computations/l{i}"), "");
            assert_eq!(st, 200, "{body}");
        }
        record(
            &mut out,
            "launch",
            json!({
                "n": launches, "measure_as": measure_as,
                "server_ms": {"p50": pct(&mut server, 0.5), "p99": pct(&mut server, 0.99), "max": pct(&mut server, 1.0)},
                "client_ms": {"p50": pct(&mut client, 0.5), "p99": pct(&mut client, 0.99)},
            }),
        );
    }

    // 2 + 3. 100 agents; throughput, loss, RSS.
    if part("2") {
        let per = per_agent.to_string();
        let m = ManagerProc::start(
            &args_with("2", &["--max-vms", "128", "--guest-event-rate", "0"]),
            &[
                ("FAKE_QEMU_EVENTS", per.as_str()),
                ("FAKE_QEMU_RATE", "1000000000"),
            ],
            &work.path().join("m2.log"),
        );
        let seq0 = last_seq(&m);
        let t0 = Instant::now();
        for i in 0..agents {
            run(&m, &format!("a{i}"));
        }
        // Each VM: vm-provision + boot + per_agent heartbeats.
        let total = agents as u64 * (per_agent + 2);
        let mut peak_rss = 0;
        wait_for(Duration::from_secs(600), "every event stored", || {
            peak_rss = peak_rss.max(rss_kib(m.child.id()));
            (last_seq(&m) - seq0 >= total).then_some(())
        });
        let secs = t0.elapsed().as_secs_f64();
        let stored = last_seq(&m) - seq0;
        std::thread::sleep(Duration::from_millis(500));
        let rss_100 = rss_kib(m.child.id());
        let bad = vms_with_loss(&m.http, seq0, "a", agents, per_agent);
        for i in 0..agents {
            stop(&m, &format!("a{i}"));
        }
        record(
            &mut out,
            "events",
            json!({
                "agents": agents, "per_agent": per_agent, "stored": stored, "seconds": secs,
                "per_second": stored as f64 / secs, "vms_with_loss_or_duplicates": bad,
            }),
        );
        record(
            &mut out,
            "rss_kib",
            json!({"idle": idle_rss, "with_100_vms": rss_100, "peak_during_load": peak_rss}),
        );
    }

    // 4. 1,000 VMs: RSS, and events/s with every agent released at once.
    if part("4") {
        let hold = work.path().join("go");
        let per = per_scale.to_string();
        let max = (scale_vms + 10).to_string();
        let m = ManagerProc::start(
            &args_with("4", &["--max-vms", &max, "--max-connections", "4096"]),
            &[
                ("FAKE_QEMU_EVENTS", per.as_str()),
                ("FAKE_QEMU_RATE", "1000000000"),
                ("FAKE_QEMU_HOLD", hold.to_str().unwrap()),
            ],
            &work.path().join("m4.log"),
        );
        let t0 = Instant::now();
        let mut launch = Vec::new();
        for i in 0..scale_vms {
            launch.push(run(&m, &format!("s{i}")));
        }
        let launch_all = t0.elapsed().as_secs_f64();
        // Every VM's vm-provision and boot are in before the agents are released.
        let seq0 = last_seq(&m);
        wait_for(Duration::from_secs(120), "boot events", || {
            let n = last_seq(&m);
            std::thread::sleep(Duration::from_millis(500));
            (last_seq(&m) == n).then_some(())
        });
        let seq0 = seq0.max(last_seq(&m));
        std::thread::sleep(Duration::from_millis(500));
        let rss_idle_vms = rss_kib(m.child.id());
        let t0 = Instant::now();
        std::fs::write(&hold, b"").unwrap();
        let total = scale_vms as u64 * per_scale;
        let mut peak_rss = 0;
        wait_for(Duration::from_secs(900), "every event stored", || {
            peak_rss = peak_rss.max(rss_kib(m.child.id()));
            (last_seq(&m) - seq0 >= total).then_some(())
        });
        let secs = t0.elapsed().as_secs_f64();
        let stored = last_seq(&m) - seq0;
        let bad = vms_with_loss(&m.http, 0, "s", scale_vms, per_scale);
        let rss_after = rss_kib(m.child.id());
        for i in 0..scale_vms {
            stop(&m, &format!("s{i}"));
        }
        record(
            &mut out,
            "scale",
            json!({
                "vms": scale_vms, "launch_all_seconds": launch_all,
                "launch_client_ms": {"p50": pct(&mut launch, 0.5), "p99": pct(&mut launch, 0.99)},
                "per_vm": per_scale, "stored": stored, "seconds": secs,
                "per_second": stored as f64 / secs, "vms_with_loss_or_duplicates": bad,
                "rss_kib": {"with_vms_idle": rss_idle_vms, "peak_during_load": peak_rss, "after": rss_after},
            }),
        );
    }

    // 5. Launch latency with 1,000 followers attached.
    if part("5") {
        let conns = (followers + 64).to_string();
        let m = ManagerProc::start(
            &args_with("5", &["--max-vms", "128", "--max-connections", &conns]),
            &[("FAKE_QEMU_RATE", "5")],
            &work.path().join("m5.log"),
        );
        let stop_followers = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..followers)
            .map(|_| {
                let addr = m.http.clone();
                let halt = stop_followers.clone();
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || {
                        let mut r = open_events(&addr, "follow=true");
                        r.get_ref()
                            .set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        // Counting newlines in raw reads: the followers' own cost
                        // shares these two cores with the manager.
                        let mut n = 0u64;
                        let mut buf = vec![0u8; 64 << 10];
                        while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                            match std::io::Read::read(&mut r, &mut buf) {
                                Ok(0) => break,
                                Ok(k) => {
                                    n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64
                                }
                                Err(_) => continue,
                            }
                        }
                        n
                    })
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let (mut server, mut client) = (Vec::new(), Vec::new());
        let n = launches.min(100);
        for i in 0..n {
            let t = Instant::now();
            let body = cocos_tests::launch(&m.http, &format!("f{i}"));
            client.push(t.elapsed().as_secs_f64() * 1000.0);
            let v: Value = serde_json::from_str(&body).unwrap();
            server.push(v["launch_ms"].as_f64().unwrap());
        }
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_kib(m.child.id());
        for i in 0..n {
            stop(&m, &format!("f{i}"));
        }
        stop_followers.store(true, std::sync::atomic::Ordering::Relaxed);
        let lines: Vec<u64> = readers.into_iter().map(|t| t.join().unwrap()).collect();
        record(
            &mut out,
            "followers",
            json!({
                "followers": followers, "launches": n,
                "server_ms": {"p50": pct(&mut server, 0.5), "p99": pct(&mut server, 0.99), "max": pct(&mut server, 1.0)},
                "client_ms": {"p50": pct(&mut client, 0.5), "p99": pct(&mut client, 0.99)},
                "events_per_follower_min": lines.iter().min(), "rss_kib": rss,
            }),
        );
    }

    // 6. One flooding VM beside 99 quiet ones.
    if part("6") {
        let m = ManagerProc::start(
            &args_with("6", &["--max-vms", "128"]),
            &[
                ("FAKE_QEMU_RATE", "20"),
                ("FAKE_QEMU_RATE_FOR", "flood=1000000000"),
            ],
            &work.path().join("m6.log"),
        );
        run(&m, "flood");
        for i in 0..99 {
            run(&m, &format!("q{i}"));
        }
        let seq0 = last_seq(&m);
        let window = Duration::from_secs(10);
        let mut r = open_events(&m.http, &format!("from={seq0}&follow=true"));
        r.get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let t0 = Instant::now();
        let mut lat = Vec::new();
        let mut last: HashMap<String, (u64, bool)> = HashMap::new();
        let (mut flood_events, mut throttled) = (0u64, 0u64);
        let mut line = String::new();
        while t0.elapsed() < window {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            let at = unix_now();
            let Ok(e) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let id = e["computation_id"].as_str().unwrap_or("").to_owned();
            if e["event_type"] == "guest-throttled" {
                throttled += 1;
            }
            if id == "flood" {
                flood_events += 1;
                continue;
            }
            if e["event_type"] != "heartbeat" {
                continue;
            }
            let ts: f64 = e["timestamp"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0.0);
            lat.push((at - ts) * 1000.0);
            let n = e["details"]["seq"].as_u64().unwrap_or(0);
            let v = last.entry(id).or_insert((n.saturating_sub(1), true));
            v.1 &= n == v.0 + 1;
            v.0 = n;
        }
        let out_of_order = last.values().filter(|v| !v.1).count();
        stop(&m, "flood");
        for i in 0..99 {
            stop(&m, &format!("q{i}"));
        }
        record(
            &mut out,
            "flood",
            json!({
                "quiet_vms": 99, "seconds": window.as_secs_f64(), "quiet_heartbeats": lat.len(),
                "quiet_latency_ms": {"p50": pct(&mut lat, 0.5), "p99": pct(&mut lat, 0.99), "max": pct(&mut lat, 1.0)},
                "quiet_vms_with_gaps": out_of_order, "flood_events_stored": flood_events,
                "guest_throttled_events": throttled,
            }),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(out)).unwrap()
    );
}
