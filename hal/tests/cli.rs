//! `cocos-hal inspect` end to end: listing, identical and differing images (exit 0 and
//! 1, like diff), and bad input (one line on stderr, exit 2, nothing on stdout);
//! `cocos-hal release` for files built elsewhere; `cocos-hal kernel` on a path kernel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cocos_hal::compress::{compress, Compression};
use cocos_hal::cpio::{Archive, Kind};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocos-hal"))
        .args(args)
        .output()
        .unwrap()
}

fn image(dir: &Path, name: &str, content: &[u8], how: Compression) -> PathBuf {
    let mut a = Archive::new();
    a.add("init", Some(0o755), Kind::File(b"#!/bin/sh\n".to_vec()))
        .unwrap();
    a.add("etc/motd", None, Kind::File(content.to_vec()))
        .unwrap();
    let mut raw = Vec::new();
    a.write(&mut raw, 0).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, compress(&raw, how).unwrap()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn lists_and_diffs() {
    let d = tempfile::tempdir().unwrap();
    let a = image(d.path(), "a.cpio.gz", b"hello", Compression::Gzip);
    let b = image(d.path(), "b.cpio.zst", b"hello", Compression::Zstd);
    let c = image(d.path(), "c.cpio.gz", b"world", Compression::Gzip);

    let out = run(&["inspect", s(&a)]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Gzip, 3 entries"), "{text}");
    assert!(text.contains("etc/motd"), "{text}");

    let out = run(&["inspect", s(&a), s(&a)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().contains("identical"));

    let out = run(&["inspect", s(&a), s(&b), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identical"], false);
    assert_eq!(v["differences"][0]["what"], "compression");

    let out = run(&["inspect", s(&a), s(&c)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("content") && text.contains("etc/motd"),
        "{text}"
    );
}

#[test]
fn bad_input() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk");
    std::fs::write(&junk, b"not an archive").unwrap();
    let truncated = d.path().join("t.gz");
    let full = std::fs::read(image(d.path(), "x.gz", b"x", Compression::Gzip)).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    for (args, needle) in [
        (vec!["inspect", "/nonexistent.img"], "cannot read"),
        (vec!["inspect", s(&junk)], "070701"),
        (vec!["inspect", s(&truncated)], "decompress"),
        (vec!["inspect", s(d.path())], "not a file"),
        (vec!["inspect"], "required"),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("cocos-hal: error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

/// `cocos-hal release`: release.json for files built elsewhere (buildroot's bzImage and
/// rootfs.cpio.gz), with kinds, names, hashes and the kernel release from the header.
#[test]
fn release_for_external_files() {
    let kernel = cocos_testkit::debian_kernel();
    let d = tempfile::tempdir().unwrap();
    let bz = d.path().join("bzImage");
    std::fs::copy(&kernel, &bz).unwrap();
    let initrd = image(d.path(), "rootfs.cpio.gz", b"hi", Compression::Gzip);
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cocos.toml");
    let out = d.path().join("release.json");
    let o = run(&[
        "release",
        "--spec",
        s(&spec),
        "--kernel",
        s(&bz),
        "--initrd",
        s(&initrd),
        "--out",
        s(&out),
        "--built-by",
        "buildroot",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["artifacts"][0]["kind"], "kernel");
    assert_eq!(v["artifacts"][0]["path"], "bzImage");
    assert_eq!(v["artifacts"][1]["kind"], "initrd");
    assert_eq!(v["artifacts"][1]["path"], "rootfs.cpio.gz");
    assert_eq!(v["initramfs"]["compression"], "gzip");
    assert_eq!(v["kernel"]["source"]["built_by"], "buildroot");
    let release = cocos_testkit::kernel_release(&kernel);
    assert_eq!(v["kernel"]["release"], release.as_str());
    assert!(
        v["measurements"]["tdx"]["launches"][0]["mrtd"].is_string(),
        "{}",
        v["measurements"]
    );
    // Files outside release.json's directory are refused.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = run(&[
        "release",
        "--spec",
        s(&spec),
        "--kernel",
        s(&bz),
        "--initrd",
        s(&initrd),
        "--out",
        s(&elsewhere.path().join("r.json")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("must be in"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A bad SOURCE_DATE_EPOCH is refused (it used to become 0 silently), and nothing
    // is written.
    let out2 = d.path().join("r2.json");
    let o = Command::new(env!("CARGO_BIN_EXE_cocos-hal"))
        .args([
            "release",
            "--spec",
            s(&spec),
            "--kernel",
            s(&bz),
            "--initrd",
            s(&initrd),
        ])
        .args(["--out", s(&out2)])
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!out2.exists());
}

/// `cocos-hal kernel` on a spec naming the host's kernel by path (no download): where
/// it is, its TEE support from config-<release>, and stable links under the cache.
#[test]
fn kernel_reports_and_links() {
    let k = cocos_testkit::debian_kernel();
    let release = cocos_testkit::kernel_release(&k);
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"t\"\nversion = \"1\"\ncmdline = \"quiet\"\nmodules = [\"vmw_vsock_virtio_transport\"]\n[kernel]\npath = \"{}\"\nmodules_dir = \"/lib/modules/{release}\"\n",
            k.display()
        ),
    )
    .unwrap();
    let cache = d.path().join("cache");
    let o = run(&["kernel", "--spec", s(&spec), "--cache", s(&cache), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["image"], s(&k));
    assert_eq!(v["release"], release.as_str());
    assert_eq!(v["modules_dir"], format!("/lib/modules/{release}").as_str());
    assert_eq!(v["tee"]["config"]["VIRTIO_VSOCKETS"], "m");
    assert_eq!(v["tee"]["vsock"], true, "{}", v["tee"]);
    assert!(v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "vmw_vsock_virtio_transport"));
    assert_eq!(std::fs::read_link(cache.join("kernel/vmlinuz")).unwrap(), k);
    assert_eq!(
        std::fs::read_link(cache.join("kernel/config")).unwrap(),
        k.with_file_name(format!("config-{release}"))
    );

    let o = run(&["kernel", "--spec", s(&spec), "--cache", s(&cache)]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains(&format!("release  {release}\n")) && text.contains("vsock"),
        "{text}"
    );

    let o = run(&["kernel", "--spec", s(&d.path().join("nope.toml"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("cocos-hal: error: cannot read spec"),
        "{err}"
    );
    // The cause once (issue #16: it was printed twice).
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    // No arguments: the usage, not only the about text.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Usage: cocos-hal <COMMAND>") && err.contains("build"),
        "{err}"
    );
}

/// Issue #16: completions and man pages.
#[test]
fn completions_and_man_pages() {
    let o = run(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("cocos-hal"));
    let o = run(&["man"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH cocos-hal 1"));
    let d = tempfile::tempdir().unwrap();
    let o = run(&["man", "--dir", d.path().to_str().unwrap()]);
    assert!(o.status.success());
    assert!(d.path().join("cocos-hal-build.1").exists());
}

/// Issue #16: an --out that is a file fails at once, before the build.
#[test]
fn build_into_a_file_fails_before_building() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a-file");
    std::fs::write(&f, b"x").unwrap();
    let t0 = std::time::Instant::now();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/cocos.toml");
    let o = run(&["build", "--spec", spec, "--out", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a directory") && !err.contains("resolving the kernel"),
        "{err}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
}
