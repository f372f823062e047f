//! cocos-manager as a client of the seed protocol (`ManagerService.Process`), against
//! a test Computations server written here with tonic: runReq launches a VM (QEMU
//! stand-in) and run_res carries the expected measurement; svmInfoReq and
//! attestationPolicyReq are answered; events arrive tagged with the computation id and
//! their outbox sequence numbers, and the server confirms them with EventAck. The
//! server is then down for 30 s under event load: when it returns, every event is
//! delivered (sequence numbers 1..n without gaps; heartbeats 1..n per VM). The same
//! events reach a WatchEvents client on the manager's own gRPC API. A second test runs
//! the stream over mTLS and checks that a manager without a client certificate is
//! turned away.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocos_proto::grpc::manager_service_client::ManagerServiceClient;
use cocos_proto::grpc::{
    client_stream_message, server_stream_message, AttestationPolicyReq, ClientStreamMessage,
    ComputationRunReq, ServerStreamMessage, StopComputation, SvmInfoReq, WatchEvent, WatchReq,
};
use cocos_tests::cp::{CpServer, Seen};
use cocos_tests::{manager_args, synthetic_release, wait_for, ManagerProc};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

fn send(seen: &Arc<Mutex<Seen>>, m: server_stream_message::Message) {
    let tx = wait_for(
        Duration::from_secs(30),
        "the manager's Process stream",
        || seen.lock().unwrap().down.clone(),
    );
    tx.try_send(ServerStreamMessage { message: Some(m) })
        .unwrap();
}

fn find<T>(
    seen: &Arc<Mutex<Seen>>,
    what: &str,
    f: impl Fn(&client_stream_message::Message) -> Option<T>,
) -> T {
    wait_for(Duration::from_secs(30), what, || {
        seen.lock()
            .unwrap()
            .all
            .iter()
            .filter_map(|m| m.message.as_ref())
            .find_map(&f)
    })
}

/// (seq → message) of the agent/manager events received, checking duplicates agree.
fn by_seq(seen: &Arc<Mutex<Seen>>) -> BTreeMap<u64, ClientStreamMessage> {
    let mut out = BTreeMap::new();
    for m in &seen.lock().unwrap().all {
        if m.seq > 0 {
            if let Some(prev) = out.insert(m.seq, m.clone()) {
                assert_eq!(prev, *m, "seq {} re-sent with different content", m.seq);
            }
        }
    }
    out
}

fn heartbeats(events: &BTreeMap<u64, ClientStreamMessage>, id: &str) -> Vec<u64> {
    events
        .values()
        .filter_map(|m| match &m.message {
            Some(client_stream_message::Message::AgentEvent(e))
                if e.computation_id == id && e.event_type == "heartbeat" =>
            {
                serde_json::from_slice::<serde_json::Value>(&e.details).unwrap()["seq"].as_u64()
            }
            _ => None,
        })
        .collect()
}

fn manager(state: &Path, url: &str, extra: &[&str]) -> ManagerProc {
    let (release, fw) = synthetic_release(&state.join("rel"), "console=ttyS0");
    let mut more = vec!["--grpc-url", url];
    more.extend_from_slice(extra);
    let args = manager_args(&release, state, &fw, FAKE, &more);
    ManagerProc::start(
        &args,
        &[("FAKE_QEMU_RATE", "100")],
        &state.join("manager.log"),
    )
}

#[test]
fn seed_protocol_with_a_30s_outage_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (server, addr) = CpServer::start("127.0.0.1:0".parse().unwrap(), seen.clone(), None);
    let m = manager(d.path(), &format!("http://{addr}"), &[]);

    send(
        &seen,
        server_stream_message::Message::RunReq(ComputationRunReq {
            id: "seed-1".into(),
            vcpus: 2,
            ..Default::default()
        }),
    );
    let res = find(&seen, "run_res", |m| match m {
        client_stream_message::Message::RunRes(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(res.computation_id, "seed-1");
    assert!(res.error.is_empty(), "{}", res.error);
    let expected: serde_json::Value = serde_json::from_str(&res.expected_measurement).unwrap();
    assert_eq!(expected["tee"], "none");

    send(
        &seen,
        server_stream_message::Message::SvmInfoReq(SvmInfoReq {
            id: "seed-1".into(),
        }),
    );
    let info = find(&seen, "svm_info", |m| match m {
        client_stream_message::Message::SvmInfo(i) => Some(i.clone()),
        _ => None,
    });
    assert_eq!((info.id.as_str(), info.cpu_num), ("seed-1", 2));
    assert!(info.kernel_cmd.contains("cocos.id=seed-1"), "{info:?}");
    // An unknown id: SvmInfo carries the id alone (no error text in kernel_cmd), and an
    // error log for that id says why.
    send(
        &seen,
        server_stream_message::Message::SvmInfoReq(SvmInfoReq {
            id: "no-such-vm".into(),
        }),
    );
    let info = find(&seen, "svm_info for an unknown id", |m| match m {
        client_stream_message::Message::SvmInfo(i) if i.id == "no-such-vm" => Some(i.clone()),
        _ => None,
    });
    assert!(info.kernel_cmd.is_empty(), "{info:?}");
    let log = find(&seen, "error log for an unknown id", |m| match m {
        client_stream_message::Message::AgentLog(l) if l.computation_id == "no-such-vm" => {
            Some(l.clone())
        }
        _ => None,
    });
    assert_eq!(log.level, "error");
    assert!(log.message.contains("svm info"), "{log:?}");
    send(
        &seen,
        server_stream_message::Message::AttestationPolicyReq(AttestationPolicyReq {
            id: "seed-1".into(),
        }),
    );
    let pol = find(&seen, "attestationPolicy", |m| match m {
        client_stream_message::Message::AttestationPolicy(p) => Some(p.clone()),
        _ => None,
    });
    let pol: serde_json::Value = serde_json::from_slice(&pol.info).unwrap();
    assert_eq!(pol["expected_measurement"], expected);
    // The policy's TEE is the one the expected values are for.
    assert_eq!(pol["tee"], expected["tee"]);

    // WatchEvents on the manager's own gRPC API sees the same events.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let watched: Vec<WatchEvent> = rt.block_on(async {
        let mut c = ManagerServiceClient::connect(format!("http://{}", m.grpc))
            .await
            .unwrap();
        let mut s = c
            .watch_events(WatchReq {
                from_seq: 0,
                computation_id: "seed-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while out.len() < 20 {
            out.push(s.message().await.unwrap().unwrap());
        }
        out
    });
    let kinds: Vec<String> = watched
        .iter()
        .filter_map(
            |w| match w.message.as_ref().and_then(|m| m.message.as_ref()) {
                Some(client_stream_message::Message::AgentEvent(e)) => {
                    assert_eq!(e.computation_id, "seed-1");
                    Some(e.event_type.clone())
                }
                _ => None,
            },
        )
        .collect();
    assert_eq!(kinds[0], "vm-provision");
    assert!(
        kinds.contains(&"boot".to_owned()) && kinds.contains(&"heartbeat".to_owned()),
        "{kinds:?}"
    );

    wait_for(Duration::from_secs(30), "heartbeats upstream", || {
        (heartbeats(&by_seq(&seen), "seed-1").len() >= 50).then_some(())
    });

    // The Computations server goes away for 30 s while the agent keeps sending.
    drop(server);
    let before = by_seq(&seen).len();
    std::thread::sleep(Duration::from_secs(30));
    let (server, _) = CpServer::start(addr, seen.clone(), None);
    let hb = wait_for(
        Duration::from_secs(60),
        "the backlog after the outage",
        || {
            let hb = heartbeats(&by_seq(&seen), "seed-1");
            (hb.len() as u64 >= 3000 + 50).then_some(hb)
        },
    );
    assert_eq!(
        hb,
        (1..=hb.len() as u64).collect::<Vec<_>>(),
        "every heartbeat, once, in order"
    );
    let all = by_seq(&seen);
    let seqs: Vec<u64> = all.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "outbox sequence numbers without gaps"
    );
    assert!(
        all.len() > before + 2900,
        "{} before, {} after",
        before,
        all.len()
    );
    assert!(seen.lock().unwrap().streams >= 2, "the manager reconnected");

    // Stop through the seed protocol.
    send(
        &seen,
        server_stream_message::Message::StopComputation(StopComputation {
            computation_id: "seed-1".into(),
        }),
    );
    let stop = find(&seen, "stopComputationRes", |m| match m {
        client_stream_message::Message::StopComputationRes(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        (stop.computation_id.as_str(), stop.message.as_str()),
        ("seed-1", "")
    );
    // The outbox drains once everything is confirmed.
    wait_for(Duration::from_secs(20), "an empty outbox", || {
        let (_, body) = cocos_tests::http(&m.http, "GET", "/health", "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (v["outbox"] == 0).then_some(())
    });
    drop(server);
}

#[test]
fn seed_protocol_over_mtls() {
    let d = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |name: &str| {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&k, &ca, &ca_key)
            .unwrap();
        (c.pem(), k.serialize_pem())
    };
    let (srv_cert, srv_key) = leaf("localhost");
    let (cli_cert, cli_key) = leaf("manager");
    let w = |n: &str, s: &str| {
        let p = d.path().join(n);
        std::fs::write(&p, s).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (ca_p, cc, ck) = (
        w("ca.pem", &ca.pem()),
        w("client.pem", &cli_cert),
        w("client.key", &cli_key),
    );
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&srv_cert, &srv_key))
        .client_ca_root(Certificate::from_pem(ca.pem()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (_server, addr) = CpServer::start("127.0.0.1:0".parse().unwrap(), seen.clone(), Some(tls));
    let url = format!("https://localhost:{}", addr.port());

    // Without a client certificate the server refuses the stream.
    let no_cert = manager(&d.path().join("a"), &url, &["--grpc-server-ca", &ca_p]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        seen.lock().unwrap().streams,
        0,
        "no stream without a client certificate"
    );
    drop(no_cert);

    let _m = manager(
        &d.path().join("b"),
        &url,
        &[
            "--grpc-server-ca",
            &ca_p,
            "--grpc-client-cert",
            &cc,
            "--grpc-client-key",
            &ck,
        ],
    );
    send(
        &seen,
        server_stream_message::Message::RunReq(ComputationRunReq {
            id: "tls-1".into(),
            ..Default::default()
        }),
    );
    let res = find(&seen, "run_res over mTLS", |m| match m {
        client_stream_message::Message::RunRes(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(res.computation_id, "tls-1");
    wait_for(Duration::from_secs(30), "heartbeats over mTLS", || {
        (heartbeats(&by_seq(&seen), "tls-1").len() >= 5).then_some(())
    });
}

#[test]
fn legacy_server_without_event_ack() {
    // A Computations server that never sends EventAck: with the default confirmation
    // the outbox keeps everything; with --grpc-confirm sent it drains.
    for (mode, drains) in [("ack", false), ("sent", true)] {
        let d = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Seen {
            legacy: true,
            ..Seen::default()
        }));
        let (_server, addr) = CpServer::start("127.0.0.1:0".parse().unwrap(), seen.clone(), None);
        let m = manager(
            d.path(),
            &format!("http://{addr}"),
            &["--grpc-confirm", mode],
        );
        let (st, body) =
            cocos_tests::http(&m.http, "POST", "/run", r#"{"computation_id": "old-1"}"#);
        assert_eq!(st, 201, "{body}");
        wait_for(
            Duration::from_secs(30),
            "heartbeats at the legacy server",
            || (heartbeats(&by_seq(&seen), "old-1").len() >= 30).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(300));
        let (_, body) = cocos_tests::http(&m.http, "GET", "/health", "");
        let outbox = serde_json::from_str::<serde_json::Value>(&body).unwrap()["outbox"]
            .as_u64()
            .unwrap();
        if drains {
            assert!(outbox < 20, "{mode}: outbox {outbox}");
        } else {
            assert!(outbox >= 30, "{mode}: outbox {outbox} (nothing confirmed)");
        }
    }
}
