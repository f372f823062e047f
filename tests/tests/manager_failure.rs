//! The manager under bad luck and careless set-ups (issue #15):
//! - a damaged state.redb (truncated, zero-length) stops the start with exit 2 and one
//!   line naming the file and `--repair`, and is left byte for byte as it was;
//! - under umask 000 and with a 0777 state directory, the store is created 0600 and
//!   the directories are tightened to 0700 (other local users cannot read the store);
//! - a socket path longer than the kernel allows is refused at launch (400) instead of
//!   a 201 and a QEMU that cannot start; `ttl` 0 is refused; `/events` errors are JSON;
//! - kill -9 of the manager 0–40 ms into 8 concurrent launches, 30 rounds: after every
//!   restart each QEMU of ours has a record and each record a QEMU (intent records,
//!   and QEMUs found by their arguments, stopped when no record holds them);
//! - a kernel rewritten in place after the manager checked it: QEMU still reads the
//!   released bytes (sealed memfds), as the README promises;
//! - a QMP socket another client holds at restart: the VM is re-adopted ("warning"),
//!   not reported lost, its files kept, and it can be stopped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use cocos_tests::{http, manager_args, manager_bin, synthetic_release, ManagerProc};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

fn start_fails(args: &[String]) -> String {
    let out = Command::new(manager_bin())
        .args(["--http", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_damaged_store_is_refused_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    // A real store with a VM record in it.
    {
        let m = ManagerProc::start(
            &manager_args(&release, &state, &fw, FAKE, &[]),
            &[],
            &d.path().join("m1.log"),
        );
        let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "s1"}"#);
        assert_eq!(st, 201, "{body}");
    }
    let db = state.join("state.redb");
    let bytes = std::fs::read(&db).unwrap();
    for cut in [0, bytes.len() / 3, bytes.len() - 100] {
        std::fs::write(&db, &bytes[..cut]).unwrap();
        let err = start_fails(&manager_args(&release, &state, &fw, FAKE, &[]));
        let line = err
            .lines()
            .filter(|l| l.starts_with("cocos-manager:"))
            .collect::<Vec<_>>();
        assert_eq!(line.len(), 1, "{err}");
        assert!(
            line[0].contains("state.redb") && line[0].contains("--repair"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            &bytes[..cut],
            "the store was changed"
        );
    }
    // --repair on the empty file starts afresh (the operator's explicit choice).
    std::fs::write(&db, b"").unwrap();
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &["--repair"]),
        &[],
        &d.path().join("m2.log"),
    );
    assert_eq!(http(&m.http, "GET", "/health", "").0, 200);
}

#[test]
fn state_is_private_whatever_the_umask() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    std::fs::create_dir_all(state.join("vms")).unwrap();
    for p in [&state, &state.join("vms")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // The manager under umask 000, through a shell.
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "umask 000; exec '{}' --http 127.0.0.1:0 --grpc-listen 127.0.0.1:0 {}",
        manager_bin().display(),
        quoted.join(" ")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let ready = serde_json::from_str::<serde_json::Value>(&line);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.is_ok(), "no ready line: {line}");
    assert_eq!(mode(&state.join("state.redb")), 0o600);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("vms")), 0o700);
}

#[test]
fn bad_launch_settings_are_refused_up_front() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    // A state directory so deep that <state>/vms/<64-char id>/agent.sock exceeds the
    // 107 bytes a Unix socket path may have.
    let state = d.path().join(format!("state-{}", "d".repeat(40)));
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &[]),
        &[],
        &d.path().join("m.log"),
    );
    let long_id = "x".repeat(64);
    let (st, body) = http(
        &m.http,
        "POST",
        "/run",
        &format!(r#"{{"computation_id": "{long_id}"}}"#),
    );
    assert_eq!(st, 400, "{body}");
    assert!(
        body.contains("socket path") && body.contains("108"),
        "{body}"
    );
    assert!(!state.join("vms").join(&long_id).exists());
    // A short id under the same directory launches.
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "ok1"}"#);
    assert_eq!(st, 201, "{body}");
    // ttl 0 would stop the VM at once: refused.
    let (st, body) = http(
        &m.http,
        "POST",
        "/run",
        r#"{"computation_id": "t0", "ttl": "0"}"#,
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("ttl"), "{body}");
    // /events errors are JSON like every other error.
    let (st, body) = http(&m.http, "GET", "/events?from=notanumber", "");
    assert_eq!(st, 400, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["error"].as_str().is_some(), "{body}");
    let _ = http(&m.http, "DELETE", "/computations/ok1", "");
}

/// (computation id, pid) of every VM the manager lists.
fn listed(m: &ManagerProc) -> Vec<(String, u64)> {
    let (st, body) = http(&m.http, "GET", "/computations", "");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["computation_id"].as_str().unwrap().to_owned(),
                c["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kill_9_during_launches_leaves_no_orphan_and_no_ghost() {
    use rand::{Rng, SeedableRng};
    let seed = cocos_testkit::seed("kill9-launch");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let vms = format!("{}/", state.join("vms").display());
    // The window between spawning QEMU and storing its record is widened to 0–30 ms
    // (a test-only flag), so the crashes land in it as they did with real launches.
    let args = manager_args(
        &release,
        &state,
        &fw,
        FAKE,
        &["--max-vms", "64", "--test-pause-after-spawn", "15ms"],
    );
    let mut launched = 0;
    for round in 0..30 {
        let mut m = ManagerProc::start(&args, &[], &d.path().join(format!("m{round}.log")));
        // The invariant after the previous round's crash and this start's recovery.
        let qemus: Vec<u32> = cocos_tests::pids_with(&vms);
        let vms_listed = listed(&m);
        for p in &qemus {
            assert!(
                vms_listed.iter().any(|(_, pid)| *pid == u64::from(*p)),
                "round {round} (seed {seed}): QEMU {p} without a record; listed {vms_listed:?}"
            );
        }
        for (id, pid) in &vms_listed {
            assert!(
                qemus.contains(&(*pid as u32)),
                "round {round} (seed {seed}): {id} listed with pid {pid}, which is not running"
            );
        }
        // Keep the host light: stop what survived.
        for (id, _) in &vms_listed {
            let _ = http(&m.http, "DELETE", &format!("/computations/{id}"), "");
        }
        let addr = m.http.clone();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let _ = std::panic::catch_unwind(|| {
                        http(
                            &addr,
                            "POST",
                            "/run",
                            &format!(r#"{{"computation_id": "r{round}-{i}"}}"#),
                        )
                    });
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..=40)));
        m.kill9();
        for t in threads {
            let _ = t.join();
        }
        launched += 8;
        m.state = None; // its QEMUs are the next start's business, not Drop's
    }
    // Final start: the same invariant, then everything stops.
    let m = ManagerProc::start(&args, &[], &d.path().join("final.log"));
    let qemus = cocos_tests::pids_with(&vms);
    let vms_listed = listed(&m);
    assert_eq!(
        qemus.len(),
        vms_listed.len(),
        "seed {seed}: {qemus:?} vs {vms_listed:?}"
    );
    for (id, _) in &vms_listed {
        assert_eq!(
            http(&m.http, "DELETE", &format!("/computations/{id}"), "").0,
            200
        );
    }
    assert!(cocos_tests::pids_with(&vms).is_empty());
    assert!(launched >= 240);
}

#[test]
fn a_busy_qmp_socket_does_not_lose_a_running_vm() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let mut m = ManagerProc::start(&args, &[], &d.path().join("m1.log"));
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "q1"}"#);
    assert_eq!(st, 201, "{body}");
    let pid = listed(&m)[0].1;
    m.kill9();
    m.state = None;
    // Another client holds QEMU's QMP socket (QEMU 7.2 serves one at a time); the stand-in
    // is told to answer nobody else meanwhile.
    std::fs::write(state.join("vms/q1/qmp-busy"), b"").unwrap();
    let m = ManagerProc::start(&args, &[], &d.path().join("m2.log"));
    let vms_listed = listed(&m);
    assert_eq!(
        vms_listed,
        vec![("q1".to_owned(), pid)],
        "the VM was not re-adopted"
    );
    let evs = cocos_tests::events(&m.http, 0);
    let re: Vec<_> = evs
        .iter()
        .filter(|e| e["event_type"] == "vm-readopted")
        .collect();
    assert_eq!(re.len(), 1, "{re:#?}");
    assert_eq!(re[0]["status"], "warning");
    assert!(
        re[0]["details"]["identity"]
            .as_str()
            .unwrap()
            .contains("QMP"),
        "{}",
        re[0]
    );
    assert!(evs.iter().all(|e| e["status"] != "lost"), "reported lost");
    assert!(state.join("vms/q1").exists());
    std::fs::remove_file(state.join("vms/q1/qmp-busy")).unwrap();
    assert_eq!(http(&m.http, "DELETE", "/computations/q1", "").0, 200);
    assert!(cocos_tests::pids_with(&format!("{}/", state.join("vms").display())).is_empty());
}

#[test]
fn a_kernel_rewritten_in_place_is_not_what_qemu_reads() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let kernel = d.path().join("rel/vmlinuz");
    let released = cocos_hal::build::sha256_hex(&std::fs::read(&kernel).unwrap());
    let state = d.path().join("state");
    let m = ManagerProc::start(
        &manager_args(&release, &state, &fw, FAKE, &[]),
        &[],
        &d.path().join("m.log"),
    );
    // Same inode, same size, other bytes: what an attacker with write access does.
    let len = std::fs::metadata(&kernel).unwrap().len() as usize;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&kernel)
        .unwrap();
    f.write_all(&vec![0x41; len]).unwrap();
    drop(f);
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "k1"}"#);
    assert_eq!(st, 201, "{body}");
    let console = cocos_tests::wait_for(
        std::time::Duration::from_secs(10),
        "the stand-in's console log",
        || {
            std::fs::read_to_string(state.join("vms/k1/console.log"))
                .ok()
                .filter(|c| c.contains("-kernel sha256"))
        },
    );
    assert!(
        console.contains(&format!("-kernel sha256 {released}")),
        "QEMU read other bytes: {console}"
    );
    let _ = http(&m.http, "DELETE", "/computations/k1", "");
}

/// Runs the manager in a private mount namespace (unshare -rm) with its state on a
/// 24 MiB tmpfs; `ctl/fill` fills that disk, `ctl/free` frees it (the script answers
/// with `ctl/filled` / `ctl/freed`). Returns the running set-up and the HTTP address.
fn manager_on_small_disk(
    args: &[String],
    state: &std::path::Path,
    ctl: &std::path::Path,
) -> (SmallDisk, String) {
    std::fs::create_dir_all(state).unwrap();
    std::fs::create_dir_all(ctl).unwrap();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        r#"mount -t tmpfs -o size=24m tmpfs '{s}' || exit 97
'{mgr}' --http 127.0.0.1:0 --grpc-listen 127.0.0.1:0 {args} &
pid=$!
echo $pid > '{c}/pid'
while kill -0 $pid 2>/dev/null; do
  if [ -e '{c}/fill' ] && [ ! -e '{c}/filled' ]; then dd if=/dev/zero of='{s}/filler' bs=64k 2>/dev/null; touch '{c}/filled'; fi
  if [ -e '{c}/free' ] && [ ! -e '{c}/freed' ]; then rm -f '{s}/filler'; touch '{c}/freed'; fi
  sleep 0.05
done"#,
        s = state.display(),
        c = ctl.display(),
        mgr = manager_bin().display(),
        args = quoted.join(" ")
    );
    let mut child = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        // Heartbeats fast enough that the store needs to grow soon after the fill.
        .env("FAKE_QEMU_RATE", "500")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(ctl.join("manager.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "no ready line: {}",
            std::fs::read_to_string(ctl.join("manager.log")).unwrap_or_default()
        )
    });
    let disk = SmallDisk {
        child,
        ctl: ctl.to_path_buf(),
        state: state.to_path_buf(),
    };
    (disk, v["http"].as_str().unwrap().to_owned())
}

/// The namespace's shell and the manager it started (killing the shell alone would
/// leave the manager running), and the stand-in QEMUs naming the state directory: all
/// killed on drop, also when an assertion failed.
struct SmallDisk {
    child: std::process::Child,
    ctl: std::path::PathBuf,
    state: std::path::PathBuf,
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.ctl.join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in cocos_tests::pids_with(&format!("{}/", self.state.join("vms").display())) {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
    }
}

#[test]
fn a_full_disk_degrades_then_heals_without_losing_manager_events() {
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let ctl = d.path().join("ctl");
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let (disk, addr) = manager_on_small_disk(&args, &state, &ctl);
    let health = || http(&addr, "GET", "/health", "");
    assert_eq!(health().0, 200);
    let (st, body) = http(&addr, "POST", "/run", r#"{"computation_id": "d1"}"#);
    assert_eq!(st, 201, "{body}");
    // Fill the disk; the guest's heartbeats make the store grow until a commit fails.
    std::fs::write(ctl.join("fill"), b"").unwrap();
    cocos_tests::wait_for(Duration::from_secs(20), "the disk filled", || {
        ctl.join("filled").exists().then_some(())
    });
    let (_, why) = cocos_tests::wait_for(Duration::from_secs(60), "/health 503", || {
        let (st, body) = health();
        (st == 503).then_some((st, body))
    });
    assert!(
        why.contains("degraded") && why.contains("cannot commit"),
        "{why}"
    );
    // While it cannot commit: no launch (so no 201 without a durable record) ...
    let (st, body) = http(&addr, "POST", "/run", r#"{"computation_id": "d2"}"#);
    assert_eq!(st, 503, "{body}");
    // ... and a stop's vm-exited is held, not lost.
    assert_eq!(http(&addr, "DELETE", "/computations/d1", "").0, 200);
    std::fs::write(ctl.join("free"), b"").unwrap();
    cocos_tests::wait_for(
        Duration::from_secs(30),
        "/health 200 after the disk was freed",
        || (health().0 == 200).then_some(()),
    );
    let evs = cocos_tests::wait_for(Duration::from_secs(10), "d1's vm-exited", || {
        let evs = cocos_tests::events(&addr, 0);
        evs.iter()
            .any(|e| e["computation_id"] == "d1" && e["event_type"] == "vm-exited")
            .then_some(evs)
    });
    assert!(
        evs.iter().all(|e| e["computation_id"] != "d2"),
        "a refused launch left events"
    );
    let (_, metrics) = http(&addr, "GET", "/metrics", "");
    assert!(
        metrics.contains("cocos_manager_store_healthy 1"),
        "{metrics}"
    );
    // Healed: launches are durable again.
    let (st, body) = http(&addr, "POST", "/run", r#"{"computation_id": "d3"}"#);
    assert_eq!(st, 201, "{body}");
    let _ = http(&addr, "DELETE", "/computations/d3", "");
    drop(disk);
}
