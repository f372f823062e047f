//! End to end, with one real boot: `cocos-hal build` the default image (hal/cocos.toml:
//! Debian's kernel, busybox, the static agent) and check its SNP digests against
//! sev-snp-measure; start `cocos-manager` on it (real QEMU under TCG, Debian's OVMF,
//! virtio-serial agent channel, expected measurements as TDX) dialing a test
//! Computations server; POST /run; then check that
//! - the run response's expected measurement equals `cocos-measure tdx` for exactly
//!   that firmware, kernel, initrd, command line and memory;
//! - the agent's boot event (computation id, TEE "none", the kernel release from
//!   release.json) and heartbeats arrive through WatchEvents and through the seed
//!   protocol, each tagged with the computation id;
//! - an attestation request gets an "unavailable" answer (no TEE here);
//! - DELETE stops it and no QEMU process or per-VM file remains.
//!
//! The build's published reference values are checked too: release.snp.corim and
//! release.tdx.corim read back (corim-rs) to exactly release.json's values, and every
//! cocos-policy.<tee>.<launch>.json passes the field-by-field check against the protos
//! cocos reads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::result_large_err
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocos_proto::grpc::manager_service_client::ManagerServiceClient;
use cocos_proto::grpc::{client_stream_message, AgentEvent, WatchReq};
use cocos_testkit::workspace_root;
use cocos_tests::cp::{CpServer, Seen};
use cocos_tests::{build_default_image, http, pids_of, wait_for, ManagerProc};
use serde_json::Value;

fn event_of(m: &cocos_proto::grpc::ClientStreamMessage) -> Option<&AgentEvent> {
    match &m.message {
        Some(client_stream_message::Message::AgentEvent(e)) => Some(e),
        _ => None,
    }
}

#[test]
fn default_image_runs_under_the_manager() {
    let root = workspace_root();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let cmdline = build_default_image(&out);
    let release: Value =
        serde_json::from_slice(&std::fs::read(out.join("release.json")).unwrap()).unwrap();
    let kernel_release = release["kernel"]["release"].as_str().unwrap().to_owned();
    let initrd = out.join(release["artifacts"][1]["path"].as_str().unwrap());
    check_snp_digests(
        &root,
        &release,
        &root.join("target/ovmf/out/OVMF.amdsev.fd"),
        &out.join("vmlinuz"),
        &initrd,
        &cmdline,
    );
    check_published(&out, &release);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (_cp, cp_addr) = CpServer::start("127.0.0.1:0".parse().unwrap(), seen.clone(), None);
    let state = work.path().join("state");
    let m = ManagerProc::start(
        &[
            "--release",
            out.join("release.json").to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--ovmf",
            "/usr/share/ovmf/OVMF.fd",
            "--accel",
            "tcg",
            "--memory",
            "1G",
            "--measure-as",
            "tdx",
            "--stop-timeout",
            "2s",
            "--grpc-url",
            &format!("http://{cp_addr}"),
        ],
        &[],
        &work.path().join("manager.log"),
    );
    let id = format!("e2e-{}", std::process::id());
    let (st, body) = http(
        &m.http,
        "POST",
        "/run",
        &format!(r#"{{"computation_id": "{id}"}}"#),
    );
    assert_eq!(st, 201, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let start = Instant::now();
    eprintln!("launch took {} ms", run["launch_ms"]);

    // The expected measurement is cocos-measure's for exactly this tuple and the QEMU
    // the manager runs (it asks `qemu-system-x86_64 --version` at start).
    let exp = &run["expected_measurement"];
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .unwrap();
    let qemu = String::from_utf8_lossy(&qemu.stdout);
    let qemu = qemu
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap();
    let cmd = run["cmdline"].as_str().unwrap();
    assert!(cmd.contains(&format!("cocos.id={id}")), "{cmd}");
    let measure = Command::new(cocos_tests::measure_bin())
        .args([
            "tdx",
            "--firmware",
            "/usr/share/ovmf/OVMF.fd",
            "--memory",
            "1G",
            "--qemu-version",
            qemu,
            "--json",
        ])
        .arg("--kernel")
        .arg(out.join("vmlinuz"))
        .arg("--initrd")
        .arg(&initrd)
        .args(["--append", cmd])
        .output()
        .unwrap();
    assert!(
        measure.status.success(),
        "{}",
        String::from_utf8_lossy(&measure.stderr)
    );
    let want: Value = serde_json::from_slice(&measure.stdout).unwrap();
    for k in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmrs_extended", "rules"] {
        assert_eq!(exp[k], want[k], "{k}");
    }
    assert_eq!(exp["tee"], "tdx");
    // Debian 12's OVMF.fd has no TdTcg2Dxe: a TD on it reports zero RTMRs, and the
    // manager says so rather than reporting values no TD produces.
    assert_eq!(exp["rtmrs_extended"], false, "{exp}");
    assert_eq!(exp["rtmr1"], "00".repeat(48));
    assert!(exp["notes"][0]
        .as_str()
        .unwrap()
        .contains("RTMRs not extended by this firmware"));

    // WatchEvents: boot and a heartbeat, tagged with the computation id.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (boot, kinds) = rt.block_on(async {
        let mut c = ManagerServiceClient::connect(format!("http://{}", m.grpc))
            .await
            .unwrap();
        let mut s = c
            .watch_events(WatchReq {
                from_seq: 0,
                computation_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut boot = None;
        let mut kinds = Vec::new();
        let limit = Duration::from_secs(180);
        while !(boot.is_some() && kinds.iter().any(|k| k == "heartbeat")) {
            let w = tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.message())
                .await
                .unwrap_or_else(|_| panic!("no boot + heartbeat within {limit:?}: {kinds:?}"))
                .unwrap()
                .unwrap();
            let e = event_of(w.message.as_ref().unwrap()).cloned();
            if let Some(e) = e {
                assert_eq!(e.computation_id, id);
                if e.event_type == "boot" {
                    boot = Some(e.clone());
                }
                kinds.push(e.event_type);
            }
        }
        (boot.unwrap(), kinds)
    });
    eprintln!(
        "boot and first heartbeat after {:?}: {kinds:?}",
        start.elapsed()
    );
    assert_eq!(kinds[0], "vm-provision");
    assert_eq!(boot.originator, "agent");
    let details: Value = serde_json::from_slice(&boot.details).unwrap();
    assert_eq!(details["tee"], "none");
    assert_eq!(details["kernel"], kernel_release.as_str());
    assert_eq!(details["transport"], "serial:cocos.events");
    assert!(
        details["cmdline"].as_str().unwrap().starts_with(cmd),
        "{details}"
    );

    // The same events reached the Computations server, confirmed by seq.
    wait_for(
        Duration::from_secs(30),
        "boot and heartbeat upstream",
        || {
            let s = seen.lock().unwrap();
            let ev: Vec<&AgentEvent> = s
                .all
                .iter()
                .filter_map(event_of)
                .filter(|e| e.computation_id == id)
                .collect();
            (ev.iter().any(|e| e.event_type == "boot")
                && ev.iter().any(|e| e.event_type == "heartbeat"))
            .then_some(())
        },
    );

    // Attestation off-hardware: a plain "unavailable" answer, no report.
    let (st, body) = http(
        &m.http,
        "POST",
        &format!("/computations/{id}/attestation"),
        r#"{"nonce": "6e6f6e6365"}"#,
    );
    assert_eq!(st, 202, "{body}");
    let att = wait_for(Duration::from_secs(60), "the attestation event", || {
        cocos_tests::events(&m.http, 0)
            .into_iter()
            .find(|e| e["computation_id"] == id.as_str() && e["event_type"] == "attestation")
    });
    assert_eq!(att["status"], "unavailable");
    assert_eq!(att["details"]["tee"], "none");
    assert!(att["details"].get("report").is_none());

    // DELETE: stopped, no QEMU, no per-VM files.
    let (st, body) = http(&m.http, "DELETE", &format!("/computations/{id}"), "");
    assert_eq!(st, 200, "{body}");
    assert!(
        pids_of("qemu-system-x86_64", state.to_str().unwrap()).is_empty(),
        "QEMU left running"
    );
    assert!(
        std::fs::read_dir(state.join("vms"))
            .unwrap()
            .next()
            .is_none(),
        "per-VM files left"
    );
}

/// release.json's SNP digests must equal sev-snp-measure 0.0.13's and cocos-measure's
/// for the same firmware, kernel, initrd and command line.
fn check_snp_digests(
    root: &std::path::Path,
    release: &serde_json::Value,
    fw: &std::path::Path,
    kernel: &std::path::Path,
    initrd: &std::path::Path,
    cmdline: &str,
) {
    let oracle = root.join("target/oracle-venv/bin/sev-snp-measure");
    assert!(
        oracle.is_file(),
        "{} missing: run scripts/setup.sh",
        oracle.display()
    );
    let measure = root.join("target/debug/cocos-measure");
    let digests = release["measurements"]["snp"]["digests"]
        .as_array()
        .unwrap_or_else(|| panic!("no SNP digests: {}", release["measurements"]["snp"]));
    assert!(digests.len() >= 2);
    for d in digests {
        let vcpus = d["vcpus"].as_u64().unwrap().to_string();
        let vcpu_type = d["vcpu_type"].as_str().unwrap();
        let args = |bin: &std::path::Path| {
            let out = Command::new(bin)
                .args([
                    "--mode",
                    "snp",
                    "--vcpus",
                    &vcpus,
                    "--vcpu-type",
                    vcpu_type,
                    "--guest-features",
                    d["guest_features"].as_str().unwrap(),
                ])
                .arg("--ovmf")
                .arg(fw)
                .arg("--kernel")
                .arg(kernel)
                .arg("--initrd")
                .arg(initrd)
                .args(["--append", cmdline])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let want = args(&oracle);
        assert_eq!(
            d["digest"].as_str().unwrap(),
            want,
            "release.json vs sev-snp-measure for {vcpu_type} x{vcpus}"
        );
        if measure.is_file() {
            assert_eq!(args(&measure), want, "cocos-measure vs sev-snp-measure");
        }
    }
}

/// The default release's CoRIMs and cocos policies.
fn check_published(out: &std::path::Path, release: &Value) {
    use cocos_measure::reference::{corim, file_label, ReferenceValues, TeeKind};
    let want = ReferenceValues::from_json(release, "").unwrap();
    assert!(
        !want.snp.is_empty() && !want.tdx.is_empty(),
        "the default release measures both TEEs"
    );
    for tee in [TeeKind::Snp, TeeKind::Tdx] {
        let bytes = std::fs::read(out.join(format!("release.{}.corim", tee.name()))).unwrap();
        let got = corim::decode(&bytes).unwrap();
        assert_eq!(got.tee, tee);
        assert_eq!(got.values.id, want.id);
        match tee {
            TeeKind::Snp => assert_eq!(got.values.snp, want.snp),
            TeeKind::Tdx => assert_eq!(got.values.tdx, want.tdx),
        }
    }
    for r in &want.snp {
        let p = out.join(format!("cocos-policy.snp.{}.json", file_label(&r.label)));
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        cocos_testkit::cocos_policy::check_snp(&v);
        assert_eq!(
            v["policy"]["measurement"],
            base64_of(&r.measurement),
            "{}",
            p.display()
        );
    }
    for r in &want.tdx {
        let p = out.join(format!("cocos-policy.tdx.{}.json", file_label(&r.label)));
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        cocos_testkit::cocos_policy::check_tdx(&v);
        assert_eq!(
            v["policy"]["tdQuoteBodyPolicy"]["mrTd"],
            base64_of(&r.mrtd),
            "{}",
            p.display()
        );
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
