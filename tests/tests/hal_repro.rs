//! Reproducibility of the HAL image: the default spec built from this checkout (umask
//! 022) and from a fresh `git clone` of it in another directory (umask 077, a couple of
//! seconds later, its own agent build) gives byte-identical vmlinuz, initramfs,
//! release.json and the files published beside it (CoRIM, cocos policies). `scripts/repro-hal.sh` does the same with two clones from the shell.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::path::Path;
use std::process::Command;

use cocos_hal::build::{build, BuildOptions};
use cocos_hal::spec::Spec;

/// Builds `checkout`'s hal/cocos.toml (copied beside an empty lock inside that
/// checkout, so both builds resolve the kernel the same way) into `out`.
fn build_in(checkout: &Path, out: &Path, cache: &Path) {
    let spec_dir = tempfile::Builder::new()
        .prefix("hal-repro")
        .tempdir_in(checkout.join("target"))
        .unwrap();
    let spec_path = spec_dir.path().join("cocos.toml");
    std::fs::copy(checkout.join("hal/cocos.toml"), &spec_path).unwrap();
    let spec = Spec::load(&spec_path).unwrap();
    let opts = BuildOptions {
        out: out.to_path_buf(),
        cache: cache.to_path_buf(),
        locked: false,
        source_date_epoch: None,
        publish: Default::default(),
    };
    build(&spec, &opts).unwrap_or_else(|e| panic!("build in {}: {e}", checkout.display()));
}

/// Makes `clone` hold `checkout`'s working tree: its tracked and untracked (not ignored)
/// files as they are, without the tracked files deleted there.
fn overlay_working_tree(checkout: &Path, clone: &Path) {
    let ls = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(checkout)
        .output()
        .unwrap();
    assert!(ls.status.success(), "git ls-files failed");
    let (mut present, mut deleted) = (Vec::new(), Vec::new());
    for f in ls.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let f = std::str::from_utf8(f).unwrap();
        if checkout.join(f).exists() {
            present.extend_from_slice(f.as_bytes());
            present.push(0);
        } else {
            deleted.push(f.to_owned());
        }
    }
    for f in deleted {
        let _ = std::fs::remove_file(clone.join(f));
    }
    let mut tar = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --null -T - -cf - | tar -xf - -C '{}'",
            clone.display()
        ))
        .current_dir(checkout)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tar.stdin.take().unwrap(), &present).unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "copying the working tree failed"
    );
}

#[test]
fn two_checkouts_two_umasks_same_bytes() {
    let root = cocos_testkit::workspace_root();
    let work = tempfile::tempdir().unwrap();
    let cache = root.join("target/hal-cache");
    std::fs::create_dir_all(root.join("target")).unwrap();

    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let a = work.path().join("a");
    build_in(&root, &a, &cache);

    std::thread::sleep(std::time::Duration::from_secs(2));
    let clone = work.path().join("elsewhere/clone");
    let ok = Command::new("git")
        .args(["clone", "-q", "--no-hardlinks"])
        .arg(&root)
        .arg(&clone)
        .status()
        .unwrap();
    assert!(ok.success(), "git clone failed");
    // Uncommitted changes count too (a developer's run): copy the tracked and the new
    // (untracked, not ignored) files as they are, and drop the deleted ones.
    overlay_working_tree(&root, &clone);
    std::fs::create_dir_all(clone.join("target")).unwrap();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let b = work.path().join("b");
    build_in(&clone, &b, &cache);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));

    let mut names: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // The image (kernel, initramfs, release.json) and what is published beside it for
    // verifiers (unsigned CoRIM, cocos policies): every byte the same.
    for want in ["vmlinuz", "release.json", "release.tdx.corim"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("initramfs")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("cocos-policy.tdx.")),
        "{names:?}"
    );
    for n in names {
        let (x, y) = (
            std::fs::read(a.join(&n)).unwrap(),
            std::fs::read(b.join(&n)).unwrap(),
        );
        if x != y && n.starts_with("initramfs") {
            let (ia, ib) = (
                cocos_hal::inspect::open(&x).unwrap(),
                cocos_hal::inspect::open(&y).unwrap(),
            );
            panic!("{n} differs: {:?}", cocos_hal::inspect::diff(&ia, &ib));
        }
        assert!(x == y, "{n} differs between the two checkouts");
    }
}
