//! Installing and running the manager as a service (issue #16): `scripts/install.sh`
//! staged into a directory (binaries, unit, environment file kept on a second run),
//! the unit read and checked — systemd is not PID 1 here, so the restart behaviour is
//! shown from the unit's settings (`KillMode=process`: only the manager is signalled)
//! plus a manager stopped the way that setting stops it (SIGTERM to the manager alone)
//! whose VM the next manager re-adopts — `systemd-analyze verify` on the staged unit
//! where it exists, and every variable of the shipped environment file accepted by
//! the manager.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use cocos_testkit::workspace_root;
use cocos_tests::{http, manager_args, manager_bin, synthetic_release, wait_for, ManagerProc};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

/// The [Service] section's settings (a key given twice keeps the last).
fn service_settings(unit: &str) -> BTreeMap<String, String> {
    let mut in_service = false;
    let mut out = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    out
}

#[test]
fn install_stages_binaries_unit_and_env_file() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("root");
    // The script copies what it is given; the manager binary stands in for all three
    // (building the other two here would only cost CI time).
    let bins = d.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    for b in ["cocos-measure", "cocos-hal", "cocos-manager"] {
        std::fs::copy(manager_bin(), bins.join(b)).unwrap();
    }
    let install = || {
        let out = Command::new(workspace_root().join("scripts/install.sh"))
            .args(["--prefix", "/opt/cocos", "--destdir"])
            .arg(&dest)
            .arg("--bins-from")
            .arg(&bins)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    install();
    for b in ["cocos-measure", "cocos-hal", "cocos-manager"] {
        let m = std::fs::metadata(dest.join("opt/cocos/bin").join(b)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755, "{b}");
    }
    let unit =
        std::fs::read_to_string(dest.join("etc/systemd/system/cocos-manager.service")).unwrap();
    let s = service_settings(&unit);
    assert!(
        s["ExecStart"].starts_with("/opt/cocos/bin/cocos-manager "),
        "{}",
        s["ExecStart"]
    );
    // Restarting the service must not take the VMs down: only the manager is signalled.
    assert_eq!(s["KillMode"], "process");
    assert_eq!(s["StateDirectory"], "cocos-manager");
    assert_eq!(s["StateDirectoryMode"], "0700");
    assert!(s["ExecStart"].contains("--state-dir /var/lib/cocos-manager"));
    assert_eq!(s["EnvironmentFile"], "-/etc/cocos/manager.env");
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
    ] {
        assert_eq!(s[k], v, "{k}");
    }
    assert!(!s.contains_key("PrivateDevices"), "QEMU needs /dev/kvm");
    let env = dest.join("etc/cocos/manager.env");
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second install keeps the operator's environment file.
    std::fs::write(&env, "MANAGER_MAX_VMS=3\n").unwrap();
    let out = install();
    assert!(out.contains("keeping"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "MANAGER_MAX_VMS=3\n"
    );
    // systemd's own check of the staged unit, pointed at the built binary.
    if let Ok(o) = Command::new("systemd-analyze").arg("--version").output() {
        if o.status.success() {
            let check = d.path().join("cocos-manager.service");
            std::fs::write(
                &check,
                unit.replace(
                    "/opt/cocos/bin/cocos-manager",
                    manager_bin().to_str().unwrap(),
                )
                .replace("User=cocos-manager\n", "")
                .replace("Group=cocos-manager\n", ""),
            )
            .unwrap();
            let v = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&check)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&v.stderr);
            let serious: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("cocos-manager.service"))
                .collect();
            assert!(serious.is_empty(), "systemd-analyze verify: {err}");
        }
    }
}

/// Every variable the shipped environment file names (set or commented out) is one the
/// manager accepts.
#[test]
fn the_shipped_env_file_names_only_settings_the_manager_takes() {
    let text = std::fs::read_to_string(workspace_root().join("packaging/manager.env")).unwrap();
    let vars: Vec<(String, String)> = text
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("MANAGER_") && !k.contains(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(vars.len() > 20, "{vars:?}");
    let ours = cocos_manager::config::env_names();
    for (k, v) in &vars {
        assert!(
            cocos_manager::cocos_env::translate(&[(k.clone(), v.clone())], &ours).is_ok(),
            "{k} is not a setting of cocos-manager"
        );
        assert!(
            ours.contains(k),
            "{k}: the shipped file should use our own names"
        );
    }
}

/// What `KillMode=process` does on `systemctl restart`: SIGTERM to the manager only.
/// Its VM keeps running and the next manager re-adopts it.
#[test]
fn a_service_restart_keeps_the_vms() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let m = ManagerProc::start(&args, &[("FAKE_QEMU_RATE", "20")], &d.path().join("m1.log"));
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "svc1"}"#);
    assert_eq!(st, 201, "{body}");
    let pid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["pid"]
        .as_u64()
        .unwrap() as i32;
    let mut m = m;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = m.child.wait().unwrap();
    assert!(
        status.success(),
        "the manager stops cleanly on SIGTERM: {status}"
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
        "the VM died with the manager"
    );
    let m2 = ManagerProc::start(&args, &[("FAKE_QEMU_RATE", "20")], &d.path().join("m2.log"));
    let evs = wait_for(Duration::from_secs(30), "re-adoption", || {
        let evs = cocos_tests::events(&m2.http, 0);
        evs.iter()
            .any(|e| e["computation_id"] == "svc1" && e["event_type"] == "vm-readopted")
            .then_some(evs)
    });
    assert!(!evs
        .iter()
        .any(|e| e["computation_id"] == "svc1" && e["event_type"] == "vm-exited"));
    let (st, _) = http(&m2.http, "DELETE", "/computations/svc1", "");
    assert_eq!(st, 200);
}
