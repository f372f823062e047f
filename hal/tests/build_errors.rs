//! `cocos-hal build` on bad specs: one line on stderr naming the problem, exit code 2,
//! and nothing left in --out (not even the directory). Specs use Debian's installed
//! kernel by path, so no download is needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's kernel and its modules directory.
fn kernel() -> (PathBuf, PathBuf) {
    let k = cocos_testkit::debian_kernel();
    let release = cocos_testkit::kernel_release(&k);
    (k, PathBuf::from("/lib/modules").join(release))
}

fn spec(dir: &Path, body: &str) -> PathBuf {
    let (k, m) = kernel();
    let text = format!(
        "name = \"t\"\nversion = \"1\"\ncmdline = \"quiet\"\n{body}\n[kernel]\npath = \"{}\"\nmodules_dir = \"{}\"\n",
        k.display(),
        m.display()
    );
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn expect_failure(body: &str, needle: &str) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("motd"), b"hi").unwrap();
    let s = spec(d.path(), body);
    let out_dir = d.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_cocos-hal"))
        .args(["build", "--spec"])
        .arg(&s)
        .arg("--out")
        .arg(&out_dir)
        .arg("--cache")
        .arg(d.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(2), "{body}: {err}");
    assert!(out.stdout.is_empty(), "{body}");
    assert!(
        last.starts_with("cocos-hal: error: ") && last.contains(needle),
        "{body}: {needle:?} not in {last:?}"
    );
    assert!(!out_dir.exists(), "{body}: output directory created");
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_str().unwrap().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{body}: staging left behind: {leftovers:?}"
    );
}

#[test]
fn missing_file() {
    expect_failure(
        "[[files]]\nsrc = \"nope.txt\"\ndest = \"etc/nope\"",
        "nope.txt",
    );
}

#[test]
fn unknown_module() {
    expect_failure("modules = [\"no_such_module\"]", "unknown module");
}

#[test]
fn path_escaping_the_root() {
    expect_failure(
        "[[files]]\nsrc = \"motd\"\ndest = \"../../etc/motd\"",
        "escape",
    );
}

#[test]
fn duplicate_paths() {
    expect_failure("[[files]]\nsrc = \"motd\"\ndest = \"etc/motd\"\n[[files]]\nsrc = \"motd\"\ndest = \"/etc/motd\"", "twice");
}

#[test]
fn mtime_out_of_range() {
    expect_failure("mtime = 5000000000", "out of range");
}

#[test]
fn unknown_compression() {
    expect_failure("compression = \"lz4\"", "unknown compression");
}

#[test]
fn missing_agent_binary() {
    expect_failure("agent = \"no-agent-here\"", "no-agent-here");
}

#[test]
fn good_spec_builds_and_inspects() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("motd"), b"hi").unwrap();
    let s = spec(d.path(), "compression = \"zstd\"\nmodules = [\"virtio_console\"]\n[[files]]\nsrc = \"motd\"\ndest = \"etc/motd\"");
    let out_dir = d.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_cocos-hal"))
        .args(["build", "--json", "--spec"])
        .arg(&s)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rel: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rel["initramfs"]["compression"], "zstd");
    // The host's kernel (Debian 12's 6.1 here) lacks configfs-tsm: it still builds, with
    // a warning on stderr that release.json records too.
    let tee = &rel["kernel"]["tee"];
    let stderr = String::from_utf8_lossy(&out.stderr);
    for w in tee["warnings"].as_array().unwrap() {
        let w = w.as_str().unwrap();
        assert!(
            stderr.contains(&format!("cocos-hal: warning: {w}")),
            "{w}: {stderr}"
        );
    }
    if tee["config"]["TSM_REPORTS"] != "y" {
        assert_eq!(tee["tsm_reports"], false, "{tee}");
        assert!(stderr.contains("TSM_REPORTS"), "{stderr}");
    }
    assert!(rel["modules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "virtio_console"));
    let img = out_dir.join("initramfs.cpio.zst");
    let listing = Command::new(env!("CARGO_BIN_EXE_cocos-hal"))
        .arg("inspect")
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains("etc/motd")
            && text.contains("etc/cocos/modules")
            && text.contains("virtio_console.ko"),
        "{text}"
    );
    assert!(Path::new(&out_dir.join("release.json")).is_file());
}

#[test]
fn locked_refuses_a_changed_resolution() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("spec.toml");
    std::fs::write(&s, "name = \"t\"\nversion = \"1\"\ncmdline = \"quiet\"\n[kernel]\ndebian_package = \"linux-image-amd64\"\n").unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_cocos-hal"))
            .args(["build", "--locked", "--spec"])
            .arg(&s)
            .arg("--out")
            .arg(d.path().join("out"))
            .arg("--cache")
            .arg(d.path().join("cache"))
            .output()
            .unwrap()
    };
    // No lock at all.
    let out = run();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cocos-hal lock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A lock naming a version apt no longer offers.
    std::fs::write(
        d.path().join("spec.lock"),
        "package = \"linux-image-6.1.0-1-amd64\"\nversion = \"6.1.4-1\"\nsha256 = \"00\"\n",
    )
    .unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--locked") && err.contains("6.1.4-1") && err.contains("cocos-hal lock"),
        "{err}"
    );
    assert!(!d.path().join("out").exists());
    assert!(
        !d.path().join("cache").exists(),
        "nothing may be downloaded before the lock check"
    );
}

#[test]
fn bad_tdx_qemu_version() {
    expect_failure(
        "[measurements.tdx]\nfirmware = \"/usr/share/ovmf/OVMF.fd\"\nqemu_versions = [\"ten\"]",
        "not a QEMU version",
    );
}
