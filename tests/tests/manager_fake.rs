//! cocos-manager against the QEMU stand-in (fast, no guest): the HTTP API's launch,
//! listing, events and stop; refusals of bad input with nothing launched; a crash of
//! the manager (SIGKILL) with re-adoption and no event lost or duplicated; a killed
//! QEMU reported and cleaned up; TTL expiry; and a stop that needs SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::path::Path;
use std::time::Duration;

use cocos_tests::{
    events, http, manager_args, pids_of, pids_with, synthetic_release, wait_for, ManagerProc,
};
use serde_json::Value;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

fn start(
    state: &Path,
    release: &Path,
    fw: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ManagerProc {
    let mut more = vec!["--max-vms", "3", "--max-vcpus", "8"];
    more.extend_from_slice(extra);
    let args = manager_args(release, state, fw, FAKE, &more);
    ManagerProc::start(&args, env, &state.join("manager.log"))
}

/// A process's argv, space-separated.
fn argv_of(pid: &Value) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ")
}

fn heartbeat_seqs(ev: &[Value], id: &str) -> Vec<u64> {
    ev.iter()
        .filter(|e| e["computation_id"] == id && e["event_type"] == "heartbeat")
        .map(|e| e["details"]["seq"].as_u64().unwrap())
        .collect()
}

fn count(ev: &[Value], id: &str, ty: &str) -> usize {
    ev.iter()
        .filter(|e| e["computation_id"] == id && e["event_type"] == ty)
        .count()
}

#[test]
fn launch_events_crash_readopt_and_stop() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) = synthetic_release(
        &d.path().join("rel"),
        "console=ttyS0 cocos.events=serial:cocos.events",
    );
    let env = [("FAKE_QEMU_RATE", "50")];
    let mut m = start(&state, &release, &fw, &[], &env);

    let (st, body) = http(
        &m.http,
        "POST",
        "/run",
        r#"{"computation_id": "c1", "vcpus": 2}"#,
    );
    assert_eq!(st, 201, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["computation_id"], "c1");
    assert_eq!(r["expected_measurement"]["tee"], "none");
    assert!(
        r["cmdline"]
            .as_str()
            .unwrap()
            .ends_with("cocos.id=c1 cocos.events=serial:cocos.events"),
        "{body}"
    );
    let pid = r["pid"].as_u64().unwrap() as u32;
    let vm_dir = state.join("vms/c1");
    for f in ["console.log", "qemu.log"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(vm_dir.join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // Events arrive with the computation id; the first is the manager's vm-provision.
    let ev = wait_for(Duration::from_secs(30), "heartbeats", || {
        let ev = events(&m.http, 0);
        (heartbeat_seqs(&ev, "c1").len() >= 20).then_some(ev)
    });
    assert_eq!(ev[0]["event_type"], "vm-provision");
    assert_eq!(count(&ev, "c1", "boot"), 1);

    // Crash the manager mid-stream; the VM keeps running and events keep coming.
    m.kill9();
    std::thread::sleep(Duration::from_millis(800));
    assert!(pids_with(FAKE).contains(&pid), "QEMU survives the manager");
    let m = start(&state, &release, &fw, &[], &env);
    let ev = wait_for(
        Duration::from_secs(30),
        "re-adoption and more heartbeats",
        || {
            let ev = events(&m.http, 0);
            (count(&ev, "c1", "vm-readopted") == 1 && heartbeat_seqs(&ev, "c1").len() >= 100)
                .then_some(ev)
        },
    );
    let hb = heartbeat_seqs(&ev, "c1");
    assert_eq!(
        hb,
        (1..=hb.len() as u64).collect::<Vec<_>>(),
        "heartbeats 1..n, none lost or duplicated"
    );
    assert_eq!(count(&ev, "c1", "boot"), 1, "boot not duplicated");
    let seqs: Vec<u64> = ev.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "outbox sequence has no gaps"
    );

    // Listing and info.
    let (st, body) = http(&m.http, "GET", "/computations", "");
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()[0]["computation_id"],
        "c1"
    );

    // DELETE: QMP powerdown; QEMU gone, files gone, a vm-exited "stopped" event.
    let (st, body) = http(&m.http, "DELETE", "/computations/c1", "");
    assert_eq!(st, 200, "{body}");
    assert!(!pids_with(FAKE).contains(&pid));
    assert!(!vm_dir.exists(), "per-VM files removed");
    let ev = events(&m.http, 0);
    let exited: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event_type"] == "vm-exited")
        .collect();
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0]["status"], "stopped");
    let (st, _) = http(&m.http, "GET", "/computations/c1", "");
    assert_eq!(st, 404);

    // A QEMU killed behind the manager's back: vm-exited "failed", cleaned up.
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "c2"}"#);
    assert_eq!(st, 201, "{body}");
    let pid2 = serde_json::from_str::<Value>(&body).unwrap()["pid"]
        .as_u64()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid2.to_string()])
        .status()
        .unwrap();
    wait_for(Duration::from_secs(10), "vm-exited for c2", || {
        let ev = events(&m.http, 0);
        ev.iter()
            .any(|e| {
                e["computation_id"] == "c2"
                    && e["event_type"] == "vm-exited"
                    && e["status"] == "failed"
            })
            .then_some(())
    });
    assert!(!state.join("vms/c2").exists());

    // TTL: stopped by the manager when it expires.
    let (st, body) = http(
        &m.http,
        "POST",
        "/run",
        r#"{"computation_id": "c3", "ttl": "1s"}"#,
    );
    assert_eq!(st, 201, "{body}");
    wait_for(Duration::from_secs(15), "TTL stop of c3", || {
        let ev = events(&m.http, 0);
        (count(&ev, "c3", "ttl-expired") == 1 && count(&ev, "c3", "vm-exited") == 1).then_some(())
    });
    assert_eq!(
        pids_of(FAKE, state.to_str().unwrap()).len(),
        0,
        "no QEMU of this test left"
    );

    let (st, body) = http(&m.http, "GET", "/metrics", "");
    assert_eq!(st, 200);
    assert!(
        body.contains("cocos_manager_launches_total 2"),
        "launches since the restart: {body}"
    );
    let (st, body) = http(&m.http, "GET", "/health", "");
    assert_eq!(st, 200, "{body}");
}

/// A DELETE right after the launch, before QEMU has its QMP socket: the power-down is
/// retried until QEMU can take it, not replaced by SIGTERM after the stop timeout.
#[test]
fn stopping_a_vm_just_launched_powers_it_down() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let m = start(&state, &release, &fw, &[], &[]);
    for i in 0..3 {
        let id = format!("quick{i}");
        cocos_tests::launch(&m.http, &id);
        let t0 = std::time::Instant::now();
        let (st, body) = http(&m.http, "DELETE", &format!("/computations/{id}"), "");
        assert_eq!(st, 200, "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "stopping took {:?}: the power-down was not delivered",
            t0.elapsed()
        );
    }
    let ev = events(&m.http, 0);
    for e in ev.iter().filter(|e| e["event_type"] == "vm-exited") {
        assert_eq!(e["status"], "stopped", "{e}");
        assert!(e["details"]["status"]["signal"].is_null(), "signalled: {e}");
    }
}

#[test]
fn stop_escalates_to_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let m = start(
        &state,
        &release,
        &fw,
        &[],
        &[("FAKE_QEMU_IGNORE_POWERDOWN", "1")],
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "s1"}"#);
    assert_eq!(st, 201, "{body}");
    let pid = serde_json::from_str::<Value>(&body).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    let t0 = std::time::Instant::now();
    let (st, body) = http(&m.http, "DELETE", "/computations/s1", "");
    assert_eq!(st, 200, "{body}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited for the power-down timeout"
    );
    assert!(!pids_with(FAKE).contains(&pid));
    let ev = events(&m.http, 0);
    let ex = ev.iter().find(|e| e["event_type"] == "vm-exited").unwrap();
    assert_eq!(ex["status"], "stopped");
    assert_eq!(ex["details"]["status"]["signal"], 15, "{ex}");
}

#[test]
fn bad_input_is_refused_and_nothing_launches() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let m = start(&state, &release, &fw, &[], &[]);
    // Only this test's QEMUs (their argv names this state directory).
    let mine = || pids_of(FAKE, state.to_str().unwrap()).len();
    for (body, code, what) in [
        ("{", 400, "request body"),
        ("[1,2]", 400, "request body"),
        (
            r#"{"computation_id": "x", "bogus": 1}"#,
            400,
            "unknown field",
        ),
        (r#"{"vcpus": 0}"#, 400, "vcpus 0"),
        (r#"{"vcpus": 9}"#, 400, "vcpus 9"),
        (r#"{"vcpus": -1}"#, 400, "request body"),
        (r#"{"computation_id": "../etc"}"#, 400, "computation id"),
        (r#"{"computation_id": "a b"}"#, 400, "computation id"),
        (r#"{"computation_id": ""}"#, 400, "computation id"),
        (r#"{"ttl": "5 parsecs"}"#, 400, "ttl"),
    ] {
        let (st, resp) = http(&m.http, "POST", "/run", body);
        assert_eq!(st, code, "{body}: {resp}");
        let err = serde_json::from_str::<Value>(&resp).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(err.contains(what), "{body}: {err}");
    }
    // Duplicate id.
    assert_eq!(
        http(&m.http, "POST", "/run", r#"{"computation_id": "dup"}"#).0,
        201
    );
    let (st, resp) = http(&m.http, "POST", "/run", r#"{"computation_id": "dup"}"#);
    assert_eq!(st, 409, "{resp}");
    assert!(resp.contains("already exists"));
    // MANAGER_MAX_VMS (3).
    assert_eq!(
        http(&m.http, "POST", "/run", r#"{"computation_id": "m2"}"#).0,
        201
    );
    assert_eq!(
        http(&m.http, "POST", "/run", r#"{"computation_id": "m3"}"#).0,
        201
    );
    let (st, resp) = http(&m.http, "POST", "/run", r#"{"computation_id": "m4"}"#);
    assert_eq!(st, 503, "{resp}");
    assert!(resp.contains("MANAGER_MAX_VMS"), "{resp}");
    for id in ["dup", "m2", "m3"] {
        assert_eq!(
            http(&m.http, "DELETE", &format!("/computations/{id}"), "").0,
            200
        );
    }
    assert_eq!(mine(), 0);
    // A file changed or removed after the manager started: launches still boot the
    // released bytes (sealed at start), never the file on disk.
    let initrd = d.path().join("rel/initramfs.cpio.gz");
    let orig = std::fs::read(&initrd).unwrap();
    std::fs::write(&initrd, b"tampered").unwrap();
    let (st, resp) = http(&m.http, "POST", "/run", r#"{"computation_id": "t1"}"#);
    assert_eq!(st, 201, "{resp}");
    std::fs::remove_file(&initrd).unwrap();
    let (st, resp) = http(&m.http, "POST", "/run", r#"{"computation_id": "t2"}"#);
    assert_eq!(st, 201, "{resp}");
    let released = format!("-initrd sha256 {}", cocos_hal::build::sha256_hex(&orig));
    for id in ["t1", "t2"] {
        let log = cocos_tests::wait_for(
            std::time::Duration::from_secs(10),
            "the stand-in's console",
            || {
                std::fs::read_to_string(state.join("vms").join(id).join("console.log"))
                    .ok()
                    .filter(|c| c.contains("-initrd sha256"))
            },
        );
        assert!(
            log.contains(&released),
            "{id} read other initrd bytes: {log}"
        );
        assert_eq!(
            http(&m.http, "DELETE", &format!("/computations/{id}"), "").0,
            200
        );
    }
    std::fs::write(&initrd, orig).unwrap();
    assert_eq!(mine(), 0, "nothing left running");
    assert!(
        std::fs::read_dir(state.join("vms"))
            .unwrap()
            .next()
            .is_none(),
        "no per-VM files left"
    );
    // Unknown computation.
    assert_eq!(http(&m.http, "DELETE", "/computations/nope", "").0, 404);
    drop(m);

    // Start-up refusals exit 2 and say why: a release path escaping its directory, a
    // firmware the release does not list, an oversized command line.
    let refuse = |release: &Path, fw: &Path, want: &str| {
        let out = std::process::Command::new(cocos_tests::manager_bin())
            .args([
                "--release",
                release.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--ovmf",
                fw.to_str().unwrap(),
                "--http",
                "127.0.0.1:0",
                "--grpc-listen",
                "off",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
    };
    let text = std::fs::read_to_string(&release).unwrap();
    let esc = d.path().join("rel/escape.json");
    std::fs::write(
        &esc,
        text.replace("\"initramfs.cpio.gz\"", "\"../rel/initramfs.cpio.gz\""),
    )
    .unwrap();
    refuse(&esc, &fw, "release directory");
    let other_fw = d.path().join("other.fd");
    std::fs::write(&other_fw, b"not the firmware").unwrap();
    refuse(&release, &other_fw, "is not a firmware");
    // A file that does not match release.json when the manager starts: nothing starts.
    let initrd = d.path().join("rel/initramfs.cpio.gz");
    let orig = std::fs::read(&initrd).unwrap();
    std::fs::write(&initrd, b"tampered").unwrap();
    refuse(&release, &fw, "does not match release.json");
    std::fs::write(&initrd, orig).unwrap();
    let long = d.path().join("rel/long.json");
    std::fs::write(
        &long,
        text.replace(
            "\"console=ttyS0\"",
            &format!("\"console=ttyS0 {}\"", "x".repeat(2100)),
        ),
    )
    .unwrap();
    let m = start(&state, &long, &fw, &[], &[]);
    let (st, resp) = http(&m.http, "POST", "/run", "{}");
    assert_eq!(st, 400, "{resp}");
    assert!(resp.contains("limit is 2048"), "{resp}");
}

#[test]
fn vsock_launches_get_distinct_cids() {
    // No vhost-vsock here, so no agent can connect: this checks what the manager
    // launches (argv, command line, CIDs) and that the listener binds.
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) =
        synthetic_release(&d.path().join("rel"), "console=ttyS0 cocos.events=serial:x");
    let m = start(
        &state,
        &release,
        &fw,
        &["--transport", "vsock", "--vsock-port", "49152"],
        &[],
    );
    let mut cids = Vec::new();
    for i in 0..3 {
        let (st, body) = http(
            &m.http,
            "POST",
            "/run",
            &format!(r#"{{"computation_id": "v{i}"}}"#),
        );
        assert_eq!(st, 201, "{body}");
        let r: Value = serde_json::from_str(&body).unwrap();
        assert!(
            r["cmdline"]
                .as_str()
                .unwrap()
                .ends_with(&format!("cocos.id=v{i} cocos.events=vsock:2:49152")),
            "{body}"
        );
        let argv = argv_of(&r["pid"]);
        let cid: u32 = argv
            .split("guest-cid=")
            .nth(1)
            .and_then(|x| x.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(!argv.contains("virtserialport"), "{argv}");
        cids.push(cid);
    }
    assert_eq!(cids, vec![3, 4, 5]);
    assert_eq!(http(&m.http, "DELETE", "/computations/v1", "").0, 200);
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "v3"}"#);
    assert_eq!(st, 201, "{body}");
    let pid = serde_json::from_str::<Value>(&body).unwrap()["pid"].clone();
    let argv = argv_of(&pid);
    assert!(
        argv.contains("guest-cid=4"),
        "a freed CID is reused: {argv}"
    );
    for id in ["v0", "v2", "v3"] {
        assert_eq!(
            http(&m.http, "DELETE", &format!("/computations/{id}"), "").0,
            200
        );
    }
}

#[test]
fn port_forwards_bind_loopback_and_skip_taken_ports() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    // A range of three ports whose first is taken by someone else.
    let (taken, lo) = loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && (1..=2).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break (l, p);
        }
    };
    let range = format!("{lo}-{}", lo + 2);
    let m = start(
        &state,
        &release,
        &fw,
        &["--agent-guest-port", "7002", "--host-fwd-range", &range],
        &[],
    );
    let mut ports = Vec::new();
    for i in 0..2 {
        let (st, body) = http(
            &m.http,
            "POST",
            "/run",
            &format!(r#"{{"computation_id": "p{i}"}}"#),
        );
        assert_eq!(st, 201, "{body}");
        let r: Value = serde_json::from_str(&body).unwrap();
        let port = r["forwarded_port"].as_u64().unwrap();
        let argv = argv_of(&r["pid"]);
        assert!(
            argv.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:7002")),
            "{argv}"
        );
        ports.push(port as u16);
    }
    assert_eq!(
        ports,
        vec![lo + 1, lo + 2],
        "the taken port is skipped, no port twice"
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "p2"}"#);
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("no free host port"), "{body}");
    drop(taken);
    for id in ["p0", "p1"] {
        assert_eq!(
            http(&m.http, "DELETE", &format!("/computations/{id}"), "").0,
            200
        );
    }
}

/// A release of Debian's kernel with the IntelTdx firmware (which extends RTMRs and
/// loads fw_cfg etc/boot/kernel), measured as TDX.
fn tdx_release(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let fw_src = cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.inteltdx.fd");
    assert!(
        fw_src.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        fw_src.display()
    );
    let k = std::fs::read(cocos_testkit::debian_kernel()).unwrap();
    let i: Vec<u8> = (0..3000u32).map(|x| (x * 7) as u8).collect();
    let f = std::fs::read(&fw_src).unwrap();
    std::fs::write(dir.join("vmlinuz"), &k).unwrap();
    std::fs::write(dir.join("initramfs.cpio.gz"), &i).unwrap();
    let fw = dir.join("OVMF.fd");
    std::fs::write(&fw, &f).unwrap();
    let p = cocos_tests::write_release(
        dir,
        "console=ttyS0 cocos.events=serial:x",
        &k,
        &i,
        "tdx",
        &f,
    );
    (p, fw)
}

/// The expected TDX measurement follows the QEMU the manager runs (asked with
/// `--version`, or `--qemu-version`), equals `cocos-measure tdx` for the same launch,
/// and a QEMU binary that answers `--version` with garbage, a flood or not at all
/// neither stops nor hangs the manager: the measurement then says what it assumed.
#[test]
fn tdx_expected_measurement_follows_the_qemu_version_and_survives_hostile_answers() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = tdx_release(&d.path().join("rel"));
    let run = |state: &str, qemu: &str, extra: &[&str]| -> Value {
        let state = d.path().join(state);
        let mut more = vec!["--measure-as", "tdx", "--memory", "2G"];
        more.extend_from_slice(extra);
        let args = manager_args(&release, &state, &fw, qemu, &more);
        let t0 = std::time::Instant::now();
        let m = ManagerProc::start(&args, &[], &state.join("manager.log"));
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "start took {:?}",
            t0.elapsed()
        );
        let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "t1"}"#);
        assert_eq!(st, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let _ = http(&m.http, "DELETE", "/computations/t1", "");
        v
    };
    let rule = |exp: &Value, setting: &str| -> Value {
        exp["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["setting"] == setting)
            .unwrap_or_else(|| panic!("no rule {setting}: {exp}"))
            .clone()
    };

    // The stand-in says "QEMU emulator version 10.1.0": the firmware reads
    // etc/boot/kernel, so OVMF hashes the unpatched kernel.
    let a = run("s1", FAKE, &[]);
    let exp = &a["expected_measurement"];
    assert_eq!(exp["qemu_version"], "10.1", "{exp}");
    assert_eq!(rule(exp, "kernel_setup")["value"], "unmodified", "{exp}");
    assert_eq!(exp["rtmrs_extended"], true);
    let cmd = a["cmdline"].as_str().unwrap();
    let out = std::process::Command::new(cocos_tests::measure_bin())
        .args([
            "tdx",
            "--firmware",
            fw.to_str().unwrap(),
            "--memory",
            "2G",
            "--qemu-version",
            "10.1",
            "--json",
        ])
        .arg("--kernel")
        .arg(d.path().join("rel/vmlinuz"))
        .arg("--initrd")
        .arg(d.path().join("rel/initramfs.cpio.gz"))
        .arg(format!("--append={cmd}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["mrtd", "rtmr1", "rtmr2", "rtmrs_extended", "rules"] {
        assert_eq!(exp[k], want[k], "{k}");
    }

    // An older QEMU patches the header: RTMR1 changes, and the rule says why.
    let b = run("s2", FAKE, &["--qemu-version", "9.2"]);
    let exp_b = &b["expected_measurement"];
    assert_eq!(rule(exp_b, "kernel_setup")["value"], "patched", "{exp_b}");
    assert_ne!(exp_b["rtmr1"], exp["rtmr1"]);

    // Hostile `--version` answers: garbage, a flood, silence.
    for (name, script) in [
        (
            "garbage",
            "#!/bin/sh\nprintf 'QEMU emulator version \\377\\376 99999.x\\n'\n",
        ),
        (
            "flood",
            "#!/bin/sh\nexec yes 'QEMU emulator version 10.1.0'\n",
        ),
        ("silent", "#!/bin/sh\nexec sleep 600\n"),
    ] {
        let qemu = d.path().join(format!("qemu-{name}"));
        std::fs::write(&qemu, script).unwrap();
        std::fs::set_permissions(&qemu, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let state = d.path().join(format!("h-{name}"));
        let args = manager_args(
            &release,
            &state,
            &fw,
            qemu.to_str().unwrap(),
            &["--measure-as", "tdx"],
        );
        let t0 = std::time::Instant::now();
        let m = ManagerProc::start(&args, &[], &state.join("manager.log"));
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{name}: start took {:?}",
            t0.elapsed()
        );
        let (st, health) = http(&m.http, "GET", "/health", "");
        assert_eq!(st, 200, "{name}: {health}");
        drop(m);
        let log = std::fs::read_to_string(state.join("manager.log")).unwrap();
        // A flood fills the pipe and never exits: like silence, it runs out the 5 s.
        assert!(
            log.contains("TDX measurements assume a QEMU version"),
            "{name}: {log}"
        );
        assert!(
            pids_with(qemu.to_str().unwrap()).is_empty(),
            "{name}: the probe left its process running"
        );
    }

    // A bad --qemu-version is refused at start: one line, exit 2.
    let state = d.path().join("bad");
    let mut args = manager_args(&release, &state, &fw, FAKE, &["--qemu-version", "ten"]);
    args.extend([
        "--http".into(),
        "127.0.0.1:0".into(),
        "--grpc-listen".into(),
        "off".into(),
    ]);
    let out = std::process::Command::new(cocos_tests::manager_bin())
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a QEMU version"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
