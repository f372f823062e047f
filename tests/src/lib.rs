//! Workspace-level end-to-end tests (real QEMU, real images), in `tests/tests/`, and
//! what they share: starting the `cocos-manager` binary and reading its ready line, a
//! minimal HTTP/1.1 client, a synthetic release for launches under the QEMU stand-in
//! (`src/bin/fake-qemu.rs`), building the default HAL image, and a test Computations
//! server ([`cp`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test support

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cocos_testkit::workspace_root;

pub mod cp;

/// The `cocos-manager` binary of this profile, built once per test process.
pub fn manager_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("cocos-manager", "cocos-manager"))
        .clone()
}

/// The `cocos-measure` binary of this profile, built once per test process.
pub fn measure_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("cocos-measure", "cocos-measure"))
        .clone()
}

/// Builds (if needed) a binary of another workspace package in this test's profile.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(workspace_root())
        .args(["build", "-q", "--locked", "-p", package, "--bin", bin]);
    if profile_dir.ends_with("release") {
        c.arg("--release");
    }
    assert!(c.status().unwrap().success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// A running manager; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct ManagerProc {
    /// The process.
    pub child: Child,
    /// HTTP address.
    pub http: String,
    /// gRPC address.
    pub grpc: String,
    /// Its stderr log file.
    pub log: PathBuf,
    /// Its --state-dir: QEMUs (or stand-ins) naming it are killed on drop, since VMs
    /// outlive their manager by design.
    pub state: Option<PathBuf>,
}

impl ManagerProc {
    /// Starts the manager with `args` (plus `--http/--grpc-listen 127.0.0.1:0`), waits
    /// for its ready line.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)], log: &Path) -> Self {
        Self::start_inner(args, env, log, true)
    }

    /// As [`start`](Self::start), with the listeners `args` give (`--http`,
    /// `--grpc-listen`) instead of loopback ones.
    pub fn start_listening<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        Self::start_inner(args, env, log, false)
    }

    fn start_inner<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        env: &[(&str, &str)],
        log: &Path,
        loopback: bool,
    ) -> Self {
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut c = Command::new(manager_bin());
        if loopback {
            c.args(["--http", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]);
        }
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "no ready line; stderr:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let state = args
            .windows(2)
            .find(|w| w[0].as_ref() == "--state-dir")
            .map(|w| PathBuf::from(w[1].as_ref()));
        Self {
            child,
            state,
            http: v["http"].as_str().unwrap_or_default().to_owned(),
            grpc: v["grpc"].as_str().unwrap_or_default().to_owned(),
            log: log.to_path_buf(),
        }
    }

    /// SIGKILL, no cleanup (as a crash).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagerProc {
    fn drop(&mut self) {
        self.kill9();
        // Whatever VMs the test left running under this state directory.
        if let Some(state) = self.state.as_ref().and_then(|s| s.to_str()) {
            for pid in pids_with(state) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Launches computation `id` (`POST /run`), asserting 201; returns the response body.
pub fn launch(addr: &str, id: &str) -> String {
    let (st, body) = http(
        addr,
        "POST",
        "/run",
        &format!(r#"{{"computation_id": "{id}"}}"#),
    );
    assert_eq!(st, 201, "launching {id}: {body}");
    body
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Events held by the manager (GET /events?from=0), as JSON values.
pub fn events(addr: &str, from: u64) -> Vec<serde_json::Value> {
    let (st, body) = http(addr, "GET", &format!("/events?from={from}"), "");
    assert_eq!(st, 200, "{body}");
    body.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The manager's arguments for launching `release` with `qemu` (the QEMU stand-in):
/// state in `state`, firmware `fw`, TCG, 1 s stop timeout, plus `extra`.
pub fn manager_args(
    release: &Path,
    state: &Path,
    fw: &Path,
    qemu: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "--release",
        release.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--qemu-bin",
        qemu,
        "--ovmf",
        fw.to_str().unwrap(),
        "--accel",
        "tcg",
        "--stop-timeout",
        "1s",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend(extra.iter().map(|s| (*s).to_owned()));
    a
}

/// Writes release.json (schema 1) into `dir` for files already there: `vmlinuz`,
/// `initramfs.cpio.gz` and firmware `OVMF.fd` listed under `tee` ("snp" or "tdx"),
/// with no measurements computed. Returns its path.
pub fn write_release(
    dir: &Path,
    cmdline: &str,
    kernel: &[u8],
    initrd: &[u8],
    tee: &str,
    firmware: &[u8],
) -> PathBuf {
    use cocos_proto::release::{
        Artifact, ArtifactKind, FirmwareRef, Initramfs, KernelInfo, Manifest, Measurements,
        SnpReference, TdxReference, SCHEMA,
    };
    let sha = cocos_hal::build::sha256_hex;
    let fw = FirmwareRef {
        file: "OVMF.fd".into(),
        sha256: sha(firmware),
    };
    let measurements = match tee {
        "snp" => Measurements {
            snp: Some(SnpReference {
                firmware: fw,
                vmm: None,
                digests: vec![],
                unsupported: Some("synthetic release".into()),
            }),
            tdx: None,
        },
        _ => Measurements {
            snp: None,
            tdx: Some(TdxReference {
                firmware: fw,
                edk2: serde_json::Value::Null,
                launches: vec![],
            }),
        },
    };
    let m = Manifest {
        schema: SCHEMA,
        name: "synthetic".into(),
        version: "0".into(),
        kernel: KernelInfo {
            release: "0.0.0".into(),
            source: serde_json::Value::Null,
            tee: serde_json::Value::Null,
        },
        cmdline: cmdline.into(),
        initramfs: Initramfs {
            compression: "gzip".into(),
            mtime: 0,
        },
        modules: vec![],
        artifacts: vec![
            Artifact {
                kind: ArtifactKind::Kernel,
                path: "vmlinuz".into(),
                size: kernel.len() as u64,
                sha256: sha(kernel),
            },
            Artifact {
                kind: ArtifactKind::Initrd,
                path: "initramfs.cpio.gz".into(),
                size: initrd.len() as u64,
                sha256: sha(initrd),
            },
        ],
        measurements,
    };
    let p = dir.join("release.json");
    std::fs::write(&p, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    p
}

/// Writes a release (random kernel/initrd/firmware bytes; measure target none) into
/// `dir`; returns (release.json, firmware path).
pub fn synthetic_release(dir: &Path, cmdline: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let seed = std::process::id() as u8;
    let k: Vec<u8> = (0..4096u32).map(|i| (i as u8) ^ seed).collect();
    let i: Vec<u8> = (0..2048u32)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect();
    let f: Vec<u8> = (0..8192u32).map(|i| (i as u8).wrapping_mul(13)).collect();
    std::fs::write(dir.join("vmlinuz"), &k).unwrap();
    std::fs::write(dir.join("initramfs.cpio.gz"), &i).unwrap();
    let fw = dir.join("OVMF.fd");
    std::fs::write(&fw, &f).unwrap();
    let p = write_release(dir, cmdline, &k, &i, "snp", &f);
    (p, fw)
}

/// Pids of live processes running `program` (`argv[0]`) whose arguments contain `needle`.
pub fn pids_of(program: &str, needle: &str) -> Vec<u32> {
    pids_with(needle)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(program.as_bytes()))
        })
        .collect()
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(needle) && pid != std::process::id() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            {
                out.push(pid);
            }
        }
    }
    out
}

/// Builds the default HAL image (hal/cocos.toml) into `out`, with SNP digests computed
/// on the AmdSev OVMF build (scripts/build-ovmf.sh), which can measure kernels
/// (Debian's OVMF cannot). The spec is copied beside a fresh (empty) lock so the
/// current kernel package is resolved: the committed hal/cocos.lock may name a version
/// the mirror has dropped since. Returns the spec's command line.
pub fn build_default_image(out: &Path) -> String {
    let root = workspace_root();
    std::fs::create_dir_all(root.join("target")).unwrap();
    let spec_dir = tempfile::Builder::new()
        .prefix("hal-test-spec")
        .tempdir_in(root.join("target"))
        .unwrap();
    let amdsev = root.join("target/ovmf/out/OVMF.amdsev.fd");
    assert!(
        amdsev.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        amdsev.display()
    );
    let text = std::fs::read_to_string(root.join("hal/cocos.toml")).unwrap();
    let text = text.replacen(
        "[measurements.snp]\nfirmware = \"/usr/share/ovmf/OVMF.fd\"",
        &format!("[measurements.snp]\nfirmware = \"{}\"", amdsev.display()),
        1,
    );
    assert!(
        text.contains("OVMF.amdsev.fd"),
        "hal/cocos.toml's [measurements.snp] changed shape"
    );
    let spec_path = spec_dir.path().join("cocos.toml");
    std::fs::write(&spec_path, text).unwrap();
    let spec = cocos_hal::spec::Spec::load(&spec_path).unwrap();
    let opts = cocos_hal::build::BuildOptions {
        out: out.to_path_buf(),
        cache: root.join("target/hal-cache"),
        locked: false,
        source_date_epoch: None,
        publish: Default::default(),
    };
    cocos_hal::build::build(&spec, &opts).unwrap_or_else(|e| panic!("cocos-hal build: {e}"));
    spec.cmdline.clone()
}
