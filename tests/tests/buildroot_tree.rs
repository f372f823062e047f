//! buildroot/ (the BR2_EXTERNAL tree):
//! - `tree_is_pinned`: every download is pinned (named buildroot release, named kernel
//!   version with its SHA-256, forced hash checks, no git branches or "latest"), the
//!   kernel fragment is plain `CONFIG_X=y` lines, and the init is cocos-hal's.
//! - `fragment_survives_kconfig`: the fragment merged onto x86_64_defconfig with the
//!   real Kconfig of the pinned kernel series (Debian's linux-source package of that
//!   series, cached in target/kconfig-cache) keeps every requested symbol.
//! - `defconfig_with_buildroot`: with BUILDROOT_DIR pointing at a buildroot checkout,
//!   `make BR2_EXTERNAL=… cocos_defconfig` succeeds, the .config keeps the agent, the
//!   pinned kernel, the cpio rootfs and the fragment, and `printvars` of the agent
//!   package parses. Ignored by default (buildroot is not on a registry this machine
//!   reaches): `scripts/test-buildroot.sh` fetches the pinned release and runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::path::{Path, PathBuf};
use std::process::Command;

use cocos_testkit::workspace_root;

/// The buildroot release the tree is written for.
const BUILDROOT_RELEASE: &str = "2025.02.9";

fn tree() -> PathBuf {
    workspace_root().join("buildroot")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn defconfig_value(key: &str) -> Option<String> {
    read(&tree().join("configs/cocos_defconfig"))
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}="))
                .map(|v| v.trim_matches('"').to_owned())
        })
}

fn kernel_version() -> String {
    defconfig_value("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE")
        .expect("defconfig names a kernel version")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn tree_is_pinned() {
    let t = tree();
    for f in [
        "external.desc",
        "Config.in",
        "external.mk",
        "configs/cocos_defconfig",
        "board/cocos/linux.config",
        "board/cocos/post-image.sh",
        "package/cocos-agent/Config.in",
        "package/cocos-agent/cocos-agent.mk",
    ] {
        assert!(t.join(f).is_file(), "buildroot/{f} missing");
    }
    assert!(read(&t.join("external.desc"))
        .lines()
        .any(|l| l.trim() == "name: COCOS"));
    let def = read(&t.join("configs/cocos_defconfig"));
    for must in ["BR2_x86_64=y", "BR2_DOWNLOAD_FORCE_CHECK_HASHES=y", "BR2_LINUX_KERNEL_CUSTOM_VERSION=y",
                 "BR2_PACKAGE_COCOS_AGENT=y", "BR2_TARGET_ROOTFS_CPIO=y",
                 "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES=\"$(BR2_EXTERNAL_COCOS_PATH)/board/cocos/linux.config\"",
                 "BR2_ROOTFS_OVERLAY=\"$(BR2_EXTERNAL_COCOS_PATH)/../hal/rootfs\""] {
        assert!(def.lines().any(|l| l == must), "cocos_defconfig lacks {must}");
    }
    assert!(
        def.contains(&format!("buildroot {BUILDROOT_RELEASE}")),
        "cocos_defconfig names the buildroot release"
    );
    // The kernel version is exact and its tarball has a SHA-256.
    let v = kernel_version();
    assert!(
        v.split('.').count() == 3 && v.split('.').all(|x| x.parse::<u32>().is_ok()),
        "kernel version {v:?} is not x.y.z"
    );
    let hashes = read(&t.join("board/cocos/patches/linux/linux.hash"));
    let line = hashes
        .lines()
        .find(|l| l.ends_with(&format!("  linux-{v}.tar.xz")))
        .unwrap_or_else(|| panic!("no hash for linux-{v}.tar.xz"));
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts[0], "sha256");
    assert!(
        parts[1].len() == 64 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    // Nothing unpinned anywhere in the tree.
    let mut all = Vec::new();
    files(&t, &mut all);
    let forbidden = [
        "_CUSTOM_GIT",
        "_CUSTOM_HG",
        "_CUSTOM_SVN",
        "_CUSTOM_TARBALL",
        "LATEST_VERSION",
        "_SITE_METHOD = git",
        "_SITE_METHOD = hg",
        "_SITE_METHOD = svn",
        "_REPO_VERSION",
        "_SITE = http",
    ];
    for f in &all {
        let text = read(f);
        for bad in forbidden {
            assert!(
                !text.contains(bad),
                "{}: contains {bad:?} (unpinned source)",
                f.display()
            );
        }
        // Branch names as whole words.
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
            assert!(
                !["master", "main", "HEAD", "trunk"].contains(&word),
                "{}: names the branch {word:?}",
                f.display()
            );
        }
    }
    // Every package either builds from this workspace or has a hash file.
    for mk in all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mk") && p.starts_with(t.join("package")))
    {
        let text = read(mk);
        let local = text.lines().any(|l| l.contains("_SITE_METHOD = local"));
        assert!(
            local || mk.with_extension("hash").is_file(),
            "{}: no .hash beside it",
            mk.display()
        );
    }
    // The fragment: plain CONFIG_X=y lines only.
    for l in read(&t.join("board/cocos/linux.config")).lines() {
        let ok = l
            .strip_prefix("CONFIG_")
            .and_then(|r| r.strip_suffix("=y"))
            .is_some_and(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            });
        assert!(ok, "linux.config line {l:?} is not a plain CONFIG_X=y");
    }
    // The same init as cocos-hal's images.
    assert_eq!(
        read(&workspace_root().join("hal/rootfs/init")),
        cocos_hal::build::INIT
    );
    assert!(
        read(&workspace_root().join("README.md"))
            .contains(&format!("buildroot {BUILDROOT_RELEASE}")),
        "README names the buildroot release"
    );
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn fragment_survives_kconfig() {
    let v = kernel_version();
    let series: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
    let cache = workspace_root().join("target/kconfig-cache");
    let src = cache.join(format!("linux-source-{series}"));
    if !src.join("Kconfig").is_file() {
        std::fs::create_dir_all(&cache).unwrap();
        let dl = tempfile::tempdir_in(&cache).unwrap();
        let pkg = format!("linux-source-{series}");
        let fetch = || {
            Command::new("apt-get")
                .current_dir(dl.path())
                .args(["download", "-q", &pkg])
                .status()
                .is_ok_and(|s| s.success())
        };
        // Stale package lists name versions the mirror has dropped: refresh once.
        if !fetch() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            assert!(
                fetch(),
                "apt-get download {pkg} failed (Debian mirror unreachable?)"
            );
        }
        let deb = std::fs::read_dir(dl.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap();
        // Only what Kconfig and `make *config` need.
        let script = format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO --wildcards '*linux-source-{series}.tar.xz' | xz -d | \
             tar -x -C '{}' --wildcards '*Kconfig*' '*Makefile*' '*Kbuild*' 'linux-source-{series}/scripts/*' \
             'linux-source-{series}/arch/x86/configs/*' 'linux-source-{series}/arch/x86/tools/*' 'linux-source-{series}/kernel/configs/*'",
            deb.display(),
            dl.path().display()
        );
        sh(Command::new("bash").args(["-o", "pipefail", "-c", &script]));
        std::fs::rename(dl.path().join(format!("linux-source-{series}")), &src).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let make = |args: &[&str]| {
        sh(Command::new("make")
            .current_dir(&src)
            .arg(format!("O={}", work.path().display()))
            .args(["-s", "ARCH=x86"])
            .args(args))
    };
    make(&["x86_64_defconfig"]);
    let frag = tree().join("board/cocos/linux.config");
    sh(Command::new(src.join("scripts/kconfig/merge_config.sh"))
        .current_dir(work.path())
        .args([
            "-m",
            "-O",
            work.path().to_str().unwrap(),
            work.path().join(".config").to_str().unwrap(),
            frag.to_str().unwrap(),
        ]));
    make(&["olddefconfig"]);
    let merged = read(&work.path().join(".config"));
    let lost: Vec<String> = read(&frag)
        .lines()
        .filter(|l| !merged.lines().any(|m| m == *l))
        .map(str::to_owned)
        .collect();
    assert!(
        lost.is_empty(),
        "Kconfig of Linux {series} dropped: {lost:?}"
    );
    eprintln!(
        "{} symbols of the fragment survive Linux {series}'s Kconfig",
        read(&frag).lines().count()
    );
}

#[test]
#[ignore = "needs BUILDROOT_DIR, a buildroot checkout: run scripts/test-buildroot.sh"]
fn defconfig_with_buildroot() {
    let br = std::env::var_os("BUILDROOT_DIR").map(PathBuf::from).expect(
        "set BUILDROOT_DIR to a buildroot checkout (scripts/test-buildroot.sh fetches one)",
    );
    let mk = read(&br.join("Makefile"));
    let ver = mk
        .lines()
        .find_map(|l| l.strip_prefix("export BR2_VERSION := "))
        .unwrap_or("?")
        .trim()
        .to_owned();
    assert_eq!(
        ver,
        BUILDROOT_RELEASE,
        "{} is buildroot {ver}; the tree is pinned to {BUILDROOT_RELEASE}",
        br.display()
    );
    let out = tempfile::tempdir().unwrap();
    let make = |args: &[&str]| {
        sh(Command::new("make")
            .current_dir(&br)
            .arg(format!("O={}", out.path().display()))
            .arg(format!("BR2_EXTERNAL={}", tree().display()))
            .arg("-s")
            .args(args))
    };
    make(&["cocos_defconfig"]);
    let cfg = read(&out.path().join(".config"));
    let v = kernel_version();
    for must in [
        "BR2_PACKAGE_COCOS_AGENT=y".to_owned(),
        format!("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE=\"{v}\""),
        "BR2_TARGET_ROOTFS_CPIO=y".to_owned(),
        "BR2_TARGET_ROOTFS_CPIO_GZIP=y".to_owned(),
        "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES=\"$(BR2_EXTERNAL_COCOS_PATH)/board/cocos/linux.config\"".to_owned(),
        "BR2_DOWNLOAD_FORCE_CHECK_HASHES=y".to_owned(),
        "BR2_TOOLCHAIN_BUILDROOT_GLIBC=y".to_owned(),
    ] {
        assert!(cfg.lines().any(|l| l == must), ".config lost {must}");
    }
    let vars = make(&["printvars", "VARS=COCOS_AGENT_%", "QUOTED_VARS=YES"]);
    let mut map = std::collections::BTreeMap::new();
    for l in vars.lines() {
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("printvars line without '=': {l:?}"));
        assert!(k.starts_with("COCOS_AGENT_"), "{l}");
        map.insert(k.to_owned(), v.trim_matches('\'').to_owned());
    }
    assert_eq!(map["COCOS_AGENT_SITE_METHOD"], "local");
    assert_eq!(map["COCOS_AGENT_SUBDIR"], "agent");
    assert_eq!(map["COCOS_AGENT_VERSION"], "0.1.0");
    assert!(
        map["COCOS_AGENT_DEPENDENCIES"].contains("host-rustc"),
        "{:?}",
        map["COCOS_AGENT_DEPENDENCIES"]
    );
    assert!(
        map["COCOS_AGENT_CARGO_BUILD_OPTS"].contains("buildroot-vendor"),
        "{:?}",
        map["COCOS_AGENT_CARGO_BUILD_OPTS"]
    );
}

#[test]
fn post_image_writes_release_json() {
    // What buildroot leaves in BINARIES_DIR, stood in by Debian's kernel and a small
    // initramfs; the script must write a release.json the manager accepts.
    let kernel = cocos_testkit::debian_kernel();
    let bin = tempfile::tempdir().unwrap();
    std::fs::copy(&kernel, bin.path().join("bzImage")).unwrap();
    let mut a = cocos_hal::cpio::Archive::new();
    a.add(
        "init",
        Some(0o755),
        cocos_hal::cpio::Kind::File(cocos_hal::build::INIT.as_bytes().to_vec()),
    )
    .unwrap();
    let mut raw = Vec::new();
    a.write(&mut raw, 0).unwrap();
    let gz = cocos_hal::compress::compress(&raw, cocos_hal::compress::Compression::Gzip).unwrap();
    std::fs::write(bin.path().join("rootfs.cpio.gz"), gz).unwrap();
    let hal = cocos_tests::workspace_bin("cocos-hal", "cocos-hal");
    sh(Command::new(tree().join("board/cocos/post-image.sh"))
        .arg(bin.path())
        .env("COCOS_HAL", &hal));
    let rel = cocos_manager::release::Release::load(&bin.path().join("release.json")).unwrap();
    assert_eq!(rel.kernel.path.file_name().unwrap(), "bzImage");
    assert_eq!(rel.initrd.path.file_name().unwrap(), "rootfs.cpio.gz");
    cocos_manager::release::seal(&rel.kernel.path, &rel.kernel.sha256).unwrap();
    cocos_manager::release::seal(&rel.initrd.path, &rel.initrd.sha256).unwrap();
    assert_eq!(rel.document.kernel.source["built_by"], "buildroot");
}
