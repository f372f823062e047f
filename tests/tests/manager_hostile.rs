//! The manager against hostile guests (issue #15), with the QEMU stand-in playing the
//! guest (`FAKE_QEMU_HOSTILE`):
//! - `forge`: events posing as the manager's (`vm-exited` "stopped", a `vm-provision`
//!   with a fake expected measurement, originator "manager", a self-issued "verified"
//!   attestation verdict) are never stored as such: guest events carry originator
//!   "agent", manager types become the manager's `guest-protocol-error`, and a guest's
//!   verdict is kept only as `guest_claimed_verdict`;
//! - `garbage`, `huge` (a 4 GiB length): one `guest-protocol-error` when it starts, the
//!   connection retried with doubling backoff, and after 8 violations a last one and no
//!   more connections; the VM keeps running;
//! - `bigevent`: a 200 KiB event is not stored; the manager stores a small
//!   `guest-protocol-error` naming its size, and the channel goes on;
//! - a guest that never answers attestation requests: at most 16 wait (the 17th is
//!   refused at once with 503, the API never blocks), each times out with an
//!   `attestation` event "timeout" from the manager, and then requests are taken again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns

use std::time::Duration;

use cocos_tests::{http, manager_args, synthetic_release, wait_for, ManagerProc};
use serde_json::Value;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

#[test]
fn a_guest_cannot_forge_manager_events() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &[]),
        &[("FAKE_QEMU_HOSTILE", "forge"), ("FAKE_QEMU_RATE", "20")],
        &state.join("manager.log"),
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "h1"}"#);
    assert_eq!(st, 201, "{body}");
    // Wait until the guest's heartbeats (sent after the forgeries) arrive.
    let evs = wait_for(
        Duration::from_secs(30),
        "heartbeats after the forged events",
        || {
            let evs = cocos_tests::events(&m.http, 0);
            let beats = evs
                .iter()
                .filter(|e| e["event_type"] == "heartbeat" && e["details"].get("seq").is_some())
                .count();
            (beats >= 2).then_some(evs)
        },
    );
    let mine: Vec<&Value> = evs.iter().filter(|e| e["computation_id"] == "h1").collect();
    // The manager's own events: exactly one vm-provision (the real one), no vm-exited.
    let of = |t: &str| {
        mine.iter()
            .filter(|e| e["event_type"] == t)
            .copied()
            .collect::<Vec<_>>()
    };
    let prov = of("vm-provision");
    assert_eq!(prov.len(), 1, "{prov:#?}");
    assert_eq!(prov[0]["originator"], "manager");
    assert_eq!(prov[0]["details"]["expected_measurement"]["tee"], "none");
    assert!(
        of("vm-exited").is_empty(),
        "a guest stored vm-exited: {mine:#?}"
    );
    // The forgeries are named, by the manager.
    let errs = of("guest-protocol-error");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    for (e, t) in errs.iter().zip(["vm-exited", "vm-provision"]) {
        assert_eq!(e["originator"], "manager");
        assert!(e["details"]["reason"].as_str().unwrap().contains(t), "{e}");
    }
    // Every other guest event carries originator "agent", whatever it claimed.
    for e in &mine {
        if e["kind"] == "event" && e["originator"] != "manager" {
            assert_eq!(e["originator"], "agent", "{e}");
        }
    }
    assert!(
        mine.iter()
            .filter(|e| e["originator"] == "manager")
            .all(|e| ["vm-provision", "guest-protocol-error"]
                .contains(&e["event_type"].as_str().unwrap())),
        "{mine:#?}"
    );
    // A self-issued verdict is not a verdict.
    let att = of("attestation");
    assert_eq!(att.len(), 1, "{att:#?}");
    assert!(att[0]["details"].get("verdict").is_none(), "{}", att[0]);
    assert_eq!(att[0]["details"]["guest_claimed_verdict"]["verified"], true);
    let _ = http(&m.http, "DELETE", "/computations/h1", "");
}

fn vm_events(m: &ManagerProc, id: &str) -> Vec<Value> {
    cocos_tests::events(&m.http, 0)
        .into_iter()
        .filter(|e| e["computation_id"] == id)
        .collect()
}

#[test]
fn protocol_violations_are_reported_backed_off_and_bounded() {
    for mode in ["garbage", "huge"] {
        let d = tempfile::tempdir().unwrap();
        let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
        let state = d.path().join("state");
        let m = ManagerProc::start(
            &manager_args(&release, &state, &fw, FAKE, &["--protocol-backoff", "10ms"]),
            &[("FAKE_QEMU_HOSTILE", mode)],
            &state.join("manager.log"),
        );
        let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "p1"}"#);
        assert_eq!(st, 201, "{body}");
        let errs = wait_for(
            Duration::from_secs(30),
            "the final guest-protocol-error",
            || {
                let errs: Vec<Value> = vm_events(&m, "p1")
                    .into_iter()
                    .filter(|e| e["event_type"] == "guest-protocol-error")
                    .collect();
                (errs.len() >= 2).then_some(errs)
            },
        );
        // After the last one, nothing more: no further connection, no further event.
        std::thread::sleep(Duration::from_millis(1500));
        let again: Vec<Value> = vm_events(&m, "p1")
            .into_iter()
            .filter(|e| e["event_type"] == "guest-protocol-error")
            .collect();
        assert_eq!(again.len(), 2, "{mode}: {again:#?}");
        assert_eq!(errs[0]["status"], "warning");
        assert_eq!(errs[1]["status"], "error");
        assert_eq!(errs[1]["details"]["violations"], 8, "{}", errs[1]);
        let reason = errs[0]["details"]["reason"].as_str().unwrap();
        assert!(
            reason.contains(if mode == "huge" {
                "4294967295"
            } else {
                "more than the 1 MiB limit"
            }),
            "{mode}: {reason}"
        );
        let log = std::fs::read_to_string(state.join("vms/p1/console.log")).unwrap();
        let conns = log
            .lines()
            .filter(|l| l.starts_with("agent connection"))
            .count();
        assert_eq!(conns, 8, "{mode}: {log}");
        // The VM keeps running and can still be stopped.
        let (st, body) = http(&m.http, "GET", "/computations/p1", "");
        assert_eq!(st, 200, "{body}");
        assert_eq!(http(&m.http, "DELETE", "/computations/p1", "").0, 200);
    }
}

#[test]
fn oversized_guest_events_are_named_not_stored() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &[]),
        &[("FAKE_QEMU_HOSTILE", "bigevent"), ("FAKE_QEMU_RATE", "20")],
        &state.join("manager.log"),
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "b1"}"#);
    assert_eq!(st, 201, "{body}");
    let evs = wait_for(
        Duration::from_secs(30),
        "heartbeats after the big event",
        || {
            let evs = vm_events(&m, "b1");
            (evs.iter()
                .filter(|e| e["event_type"] == "heartbeat")
                .count()
                >= 3)
                .then_some(evs)
        },
    );
    assert!(
        evs.iter().all(|e| e["event_type"] != "big"),
        "a 200 KiB event was stored"
    );
    let err: Vec<&Value> = evs
        .iter()
        .filter(|e| e["event_type"] == "guest-protocol-error")
        .collect();
    assert_eq!(err.len(), 1, "{err:#?}");
    assert!(err[0]["details"]["bytes"].as_u64().unwrap() > 200 * 1024);
    assert_eq!(err[0]["originator"], "manager");
    let _ = http(&m.http, "DELETE", "/computations/b1", "");
}

#[test]
fn unanswered_attestation_requests_are_bounded_and_time_out() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    // The stand-in without FAKE_QEMU_SNP_DIR never answers attestation requests.
    let m = ManagerProc::start(
        &manager_args(
            &release,
            &state,
            &fw,
            FAKE,
            &["--attestation-timeout", "2s"],
        ),
        &[],
        &state.join("manager.log"),
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "a1"}"#);
    assert_eq!(st, 201, "{body}");
    let ask = |i: usize| {
        http(
            &m.http,
            "POST",
            "/computations/a1/attestation",
            &format!(r#"{{"nonce": "{i:02x}"}}"#),
        )
    };
    for i in 0..16 {
        assert_eq!(ask(i).0, 202, "request {i}");
    }
    let t0 = std::time::Instant::now();
    let (st, body) = ask(16);
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("16 attestation requests"), "{body}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the API waited on the guest"
    );
    let timeouts = wait_for(Duration::from_secs(20), "16 timeout events", || {
        let t: Vec<Value> = vm_events(&m, "a1")
            .into_iter()
            .filter(|e| e["event_type"] == "attestation" && e["status"] == "timeout")
            .collect();
        (t.len() >= 16).then_some(t)
    });
    assert_eq!(timeouts.len(), 16);
    assert!(timeouts.iter().all(|e| e["originator"] == "manager"));
    assert_eq!(
        ask(17).0,
        202,
        "requests are taken again once the others timed out"
    );
    let _ = http(&m.http, "DELETE", "/computations/a1", "");
}

/// Followers get every committed event once and in order from the writer's broadcast,
/// and a follower that reads slowly (so it falls behind the broadcast) catches up
/// from the store without a gap or a duplicate.
#[test]
fn followers_see_every_event_once_in_order_even_when_slow() {
    use std::io::{BufRead, BufReader, Write};
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &[]),
        &[("FAKE_QEMU_RATE", "2000")],
        &state.join("manager.log"),
    );
    let follow = |slow: bool| {
        let addr = m.http.clone();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /events?follow=true HTTP/1.1\r\nHost: m\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut seqs = Vec::new();
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(n) = v["seq"].as_u64() {
                        seqs.push(n);
                        if slow && seqs.len() % 500 == 0 {
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        if seqs.len() >= 6000 {
                            break;
                        }
                    }
                }
            }
            seqs
        })
    };
    let fast: Vec<_> = (0..20).map(|_| follow(false)).collect();
    let slow = follow(true);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        let (st, body) = http(
            &m.http,
            "POST",
            "/run",
            &format!(r#"{{"computation_id": "f{i}"}}"#),
        );
        assert_eq!(st, 201, "{body}");
    }
    for t in fast.into_iter().chain([slow]) {
        let seqs = t.join().unwrap();
        assert_eq!(seqs.len(), 6000, "a follower stopped early");
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap or duplicate after seq {}", w[0]);
        }
    }
    for i in 0..3 {
        let _ = http(&m.http, "DELETE", &format!("/computations/f{i}"), "");
    }
}

/// What a follower of `GET /events?follow=true` saw: each event with the Unix time it
/// arrived.
fn follow_events(addr: &str, for_how_long: Duration) -> std::thread::JoinHandle<Vec<(Value, f64)>> {
    use std::io::{BufRead, BufReader, Write};
    let addr = addr.to_owned();
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /events?follow=true HTTP/1.1\r\nHost: m\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let t0 = std::time::Instant::now();
        let mut out = Vec::new();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while t0.elapsed() < for_how_long {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs_f64();
                        out.push((v, now));
                    }
                }
                Err(_) => continue,
            }
        }
        out
    })
}

/// Issue #15.4: one flooding guest (as fast as its agent can send) beside two quiet
/// ones (20 heartbeats/s). The flooder is paced at its rate (200/s, burst 200) and
/// told so once per reason (`guest-throttled`); the quiet VMs' heartbeats all arrive, in order,
/// with p99 latency (guest timestamp → follower) under 1 s, and none of their events
/// is pushed out of the store. `confirmed`: with a control plane that never answers,
/// the flooder stops at its share of the outbox (20 % of 1,000 events) while the
/// quiet VMs go on storing; ring mode: the flooder rotates within its share (20 % of
/// 3,000) and the quiet VMs keep everything.
fn one_flooding_guest_does_not_starve_the_quiet_ones(confirmed: bool) {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let capacity = if confirmed { "1000" } else { "3000" };
    let mut extra = vec![
        "--outbox-capacity",
        capacity,
        "--guest-outbox-share",
        "20",
        "--guest-event-rate",
        "200",
        "--guest-event-burst",
        "200",
    ];
    if confirmed {
        // Nothing listens there: no event is ever confirmed.
        extra.extend(["--grpc-url", "http://127.0.0.1:9"]);
    }
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &extra),
        &[
            ("FAKE_QEMU_RATE", "20"),
            ("FAKE_QEMU_RATE_FOR", "flood=1000000"),
        ],
        &state.join("manager.log"),
    );
    let watch = follow_events(&m.http, Duration::from_secs(9));
    std::thread::sleep(Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    for id in ["flood", "q1", "q2"] {
        cocos_tests::launch(&m.http, id);
    }
    let seen = watch.join().unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let of = |vm: &str| -> Vec<&(Value, f64)> {
        seen.iter()
            .filter(|(e, _)| e["computation_id"] == vm)
            .collect()
    };
    for q in ["q1", "q2"] {
        let beats: Vec<&(Value, f64)> = of(q)
            .into_iter()
            .filter(|(e, _)| e["event_type"] == "heartbeat")
            .collect();
        let seqs: Vec<u64> = beats
            .iter()
            .map(|(e, _)| e["details"]["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.len() >= 100,
            "{q}: only {} heartbeats in {elapsed:.1} s",
            seqs.len()
        );
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{q}: heartbeats missing or out of order"
        );
        let mut lat: Vec<f64> = beats
            .iter()
            .map(|(e, at)| at - e["timestamp"].as_str().unwrap().parse::<f64>().unwrap())
            .collect();
        lat.sort_by(f64::total_cmp);
        let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
        eprintln!(
            "{q}: {} heartbeats, latency p50 {:.3} s p99 {p99:.3} s",
            lat.len(),
            lat[lat.len() / 2]
        );
        assert!(p99 < 1.0, "{q}: p99 latency {p99:.3} s");
        assert!(
            !of(q)
                .iter()
                .any(|(e, _)| e["event_type"] == "guest-throttled"),
            "{q} was throttled"
        );
    }
    let flood = of("flood");
    let throttled: Vec<&&(Value, f64)> = flood
        .iter()
        .filter(|(e, _)| e["event_type"] == "guest-throttled")
        .collect();
    let reasons: Vec<&str> = throttled
        .iter()
        .map(|(e, _)| {
            assert_eq!(e["originator"], "manager");
            e["details"]["reason"].as_str().unwrap()
        })
        .collect();
    let rate = reasons.iter().filter(|r| r.contains("rate")).count();
    let share = reasons
        .iter()
        .filter(|r| r.contains("share of the outbox"))
        .count();
    assert_eq!(rate + share, reasons.len(), "unknown reasons: {reasons:?}");
    assert!(
        rate <= 1 && share <= 1,
        "one event per reason, not one per frame: {reasons:?}"
    );
    let flood_beats = flood
        .iter()
        .filter(|(e, _)| e["event_type"] == "heartbeat")
        .count() as f64;
    if confirmed {
        assert_eq!(share, 1, "{reasons:?}");
        assert!(
            flood_beats <= 200.0,
            "the flooder stored {flood_beats} events past its share"
        );
    } else {
        assert_eq!((rate, share), (1, 0), "{reasons:?}");
        // Its rate, its burst, and one read's worth of slack.
        assert!(
            flood_beats <= 200.0 * elapsed + 200.0 + 600.0,
            "the flooder stored {flood_beats} heartbeats in {elapsed:.1} s"
        );
    }
    // What the store still holds: every event of the quiet VMs, the flooder's share.
    let held = cocos_tests::events(&m.http, 0);
    for q in ["q1", "q2"] {
        let live = of(q).len();
        let kept = held.iter().filter(|e| e["computation_id"] == q).count();
        assert!(kept >= live, "{q}: {live} events seen, {kept} still held");
    }
    let flood_kept = held
        .iter()
        .filter(|e| e["computation_id"] == "flood")
        .count();
    assert!(
        flood_kept <= if confirmed { 201 } else { 600 },
        "{flood_kept}"
    );
    let metrics = http(&m.http, "GET", "/metrics", "").1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cocos_manager_guest_throttled_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    for id in ["flood", "q1", "q2"] {
        let _ = http(&m.http, "DELETE", &format!("/computations/{id}"), "");
    }
}

#[test]
fn a_flooding_guest_is_paced_and_the_quiet_ones_keep_their_events() {
    one_flooding_guest_does_not_starve_the_quiet_ones(false);
}

#[test]
fn a_flooding_guest_stops_at_its_outbox_share_while_the_control_plane_is_away() {
    one_flooding_guest_does_not_starve_the_quiet_ones(true);
}
