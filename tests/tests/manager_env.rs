//! The manager's environment (issue #16): an env file written for cocos' Go manager
//! works where we have its settings (`MANAGER_GRPC_HOST`/`_PORT`, `MANAGER_HTTP_PORT`,
//! `MANAGER_QEMU_ENABLE_KVM`, …), and every `MANAGER_*` variable we cannot honour —
//! cocos' pflash firmware pair, a typo of one of ours — stops the start with one line
//! and exit 2, before anything is created.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use cocos_tests::{http, manager_args, manager_bin, synthetic_release, ManagerProc};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

#[test]
fn a_cocos_env_file_is_honoured_where_we_have_the_setting() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let m = ManagerProc::start_listening(
        &args,
        &[
            ("MANAGER_GRPC_HOST", "localhost"),
            ("MANAGER_GRPC_PORT", "0"),
            ("MANAGER_HTTP_HOST", "localhost"),
            ("MANAGER_HTTP_PORT", "0"),
            ("MANAGER_QEMU_ENABLE_SEV_SNP", "false"),
            ("MANAGER_QEMU_ENABLE_TDX", "false"),
            ("MANAGER_LOG_LEVEL", "info"),
        ],
        &d.path().join("m.log"),
    );
    assert!(m.http.starts_with("127.0.0.1:"), "{}", m.http);
    assert!(m.grpc.starts_with("127.0.0.1:"), "{}", m.grpc);
    assert_eq!(http(&m.http, "GET", "/health", "").0, 200);
}

#[test]
fn settings_we_cannot_honour_stop_the_start() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let fails = |env: (&str, &str)| -> String {
        let out = Command::new(manager_bin())
            .args(&args)
            .env(env.0, env.1)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!state.exists(), "{env:?}: the state directory was created");
        err
    };
    let e = fails((
        "MANAGER_QEMU_OVMF_CODE_FILE",
        "/usr/share/OVMF/OVMF_CODE.fd",
    ));
    assert!(e.contains("MANAGER_QEMU_OVMF_FILE"), "{e}");
    let e = fails(("MANAGER_QEMU_KERNEL_CMDLINE", "quiet console=null"));
    assert!(e.contains("release"), "{e}");
    let e = fails(("MANAGER_MAX_VM", "3"));
    assert!(e.contains("unknown setting MANAGER_MAX_VM"), "{e}");
    let e = fails(("MANAGER_GRPC_PORT", "seven"));
    assert!(e.contains("MANAGER_GRPC_PORT"), "{e}");
    // --help still works, to find the right name.
    let out = Command::new(manager_bin())
        .arg("--help")
        .env("MANAGER_MAX_VM", "3")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("MANAGER_MAX_VMS"));
}

/// Issue #16: completions and the man page, without the settings a start needs.
#[test]
fn completions_and_man_page() {
    let o = Command::new(manager_bin())
        .args(["--completions", "zsh"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--max-vms"));
    let o = Command::new(manager_bin()).arg("--man").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH cocos-manager 1"));
    let o = Command::new(manager_bin())
        .arg("--completions")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
