//! Differential tests of the `cocos-measure` binary against sev-snp-measure 0.0.13 (the
//! PyPI reference, run through its real CLI by `tests/oracle/driver.py`), on random
//! synthetic firmware and on Debian's OVMF builds, with random kernels, initrds,
//! command lines (empty, non-ASCII), vCPU counts 1–512, every vCPU type, raw
//! signatures and family/model/stepping, every VMM type and several guest-feature
//! values. Rules: wherever the reference prints a digest we print the same one
//! (or refuse on purpose for a layout it mis-reads, flagged by the generator);
//! wherever it refuses, we refuse with exit code 2 and nothing on stdout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cocos_measure::cpu::VCPU_TYPES;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
struct Case {
    argv: Vec<String>,
    stricter_ok: bool,
    has_kernel: bool,
    desc: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_oracle(cases: &[Case]) -> Vec<Outcome> {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/driver.py");
    let mut child = Command::new(cocos_testkit::oracle_python())
        .arg(driver)
        .env("PYTHONUTF8", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = cases
        .iter()
        .map(|c| serde_json::to_string(&c.argv).expect("json") + "\n")
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let results: Vec<Outcome> = out
        .lines()
        .map(|l| serde_json::from_str(&l.expect("oracle line")).expect("oracle json"))
        .collect();
    writer.join().expect("writer").expect("write cases");
    assert!(
        child.wait().expect("oracle exit").success(),
        "oracle driver failed"
    );
    assert_eq!(results.len(), cases.len(), "oracle answered every case");
    results
}

fn run_ours(cases: &[Case]) -> Vec<Outcome> {
    let bin = env!("CARGO_BIN_EXE_cocos-measure");
    let one = |c: &Case| {
        let o = Command::new(bin)
            .args(&c.argv)
            .output()
            .expect("run cocos-measure");
        Outcome {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    let half = cases.len().div_ceil(2);
    std::thread::scope(|s| {
        let parts: Vec<_> = cases
            .chunks(half.max(1))
            .map(|part| s.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("runner"))
            .collect()
    })
}

#[derive(Debug, Default)]
struct Stats {
    digests_equal: usize,
    with_kernel: usize,
    both_refused: usize,
    stricter: usize,
}

fn compare(cases: &[Case], py: &[Outcome], ours: &[Outcome]) -> Stats {
    let mut st = Stats::default();
    let mut failures = Vec::new();
    for ((c, p), o) in cases.iter().zip(py).zip(ours) {
        let show =
            || {
                format!(
                "argv: {:?}\n  firmware: {}\n  oracle: code {} out {:?} err {:?}\n  ours: code {} \
                 out {:?} err {:?}",
                c.argv, c.desc, p.code, p.stdout.trim(), p.stderr.trim(), o.code, o.stdout.trim(),
                o.stderr.trim()
            )
            };
        if o.stderr.contains("panicked") {
            failures.push(format!("PANIC\n  {}", show()));
        } else if p.code == 0 && o.code == 0 {
            if p.stdout.trim_end() == o.stdout.trim_end() {
                st.digests_equal += 1;
                st.with_kernel += usize::from(c.has_kernel);
            } else {
                failures.push(format!("DIGEST MISMATCH\n  {}", show()));
            }
        } else if p.code == 0 {
            if c.stricter_ok {
                st.stricter += 1;
            } else {
                failures.push(format!("WE REFUSED, ORACLE ACCEPTED\n  {}", show()));
            }
        } else if o.code == 2 && o.stdout.is_empty() && o.stderr.lines().count() == 1 {
            st.both_refused += 1;
        } else {
            failures.push(format!(
                "ORACLE REFUSED, WE DID NOT REFUSE CLEANLY\n  {}",
                show()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    st
}

struct Gen {
    rng: StdRng,
    dir: tempfile::TempDir,
    n: usize,
}

impl Gen {
    fn new(test: &str) -> Self {
        Gen {
            rng: StdRng::seed_from_u64(cocos_testkit::seed(test)),
            dir: tempfile::tempdir().expect("tmp"),
            n: 0,
        }
    }

    fn file(&mut self, prefix: &str, bytes: &[u8]) -> PathBuf {
        self.n += 1;
        let p = self.dir.path().join(format!("{prefix}{}", self.n));
        std::fs::write(&p, bytes).expect("write input");
        p
    }

    fn random_file(&mut self, prefix: &str, max: usize) -> PathBuf {
        let len = if self.rng.gen_bool(0.1) {
            0
        } else {
            self.rng.gen_range(1..max)
        };
        let mut b = vec![0u8; len];
        self.rng.fill(&mut b[..]);
        self.file(prefix, &b)
    }

    /// One case for `mode`, with firmware `fw` (synthetic if None).
    fn case(&mut self, mode: &str, fw: Option<&Path>) -> Case {
        let (fw_path, desc, stricter_ok) = match fw {
            Some(p) => (p.to_owned(), p.display().to_string(), false),
            None => {
                let (bytes, info) = cocos_testkit::firmware::synth_firmware(&mut self.rng, true);
                (self.file("fw", &bytes), info.desc, info.stricter_ok)
            }
        };
        let s = |x: &str| x.to_owned();
        let mut argv = vec![
            s("--mode"),
            s(mode),
            s("--ovmf"),
            fw_path.display().to_string(),
        ];
        let r = &mut self.rng;
        let has_kernel = mode != "snp:ovmf-hash" && r.gen_bool(0.6);
        let (with_initrd, with_append) = (r.gen_bool(0.5), r.gen_bool(0.7));
        let (stray_initrd, stray_append) = (r.gen_bool(0.04), r.gen_bool(0.03));
        if has_kernel {
            let k = self.random_file("kernel", 64 * 1024);
            argv.push(format!("--kernel={}", k.display()));
            if with_initrd {
                let i = self.random_file("initrd", 64 * 1024);
                argv.push(format!("--initrd={}", i.display()));
            }
            if with_append {
                argv.push(format!(
                    "--append={}",
                    cocos_testkit::random_cmdline(&mut self.rng)
                ));
            }
        } else if stray_initrd {
            let i = self.random_file("initrd", 1024);
            argv.push(format!("--initrd={}", i.display()));
        } else if stray_append {
            argv.push(s("--append=console=ttyS0"));
        }
        let r = &mut self.rng;
        if mode != "sev" || r.gen_bool(0.5) {
            if r.gen_bool(0.98) {
                let v = match r.gen_range(0..100) {
                    0..=49 => r.gen_range(1..=8),
                    50..=84 => r.gen_range(9..=64),
                    _ => r.gen_range(65..=512),
                };
                argv.push(format!("--vcpus={v}"));
            }
            match r.gen_range(0..100) {
                0..=59 => {
                    let t = VCPU_TYPES.choose(r).map_or("EPYC", |t| t.0);
                    argv.push(format!("--vcpu-type={t}"));
                }
                60..=79 => {
                    let sig: u32 = if r.gen_bool(0.1) {
                        0
                    } else {
                        r.gen_range(0..0x0100_0000)
                    };
                    argv.push(match r.gen_range(0..3) {
                        0 => format!("--vcpu-sig={sig}"),
                        1 => format!("--vcpu-sig={sig:#x}"),
                        _ => format!("--vcpu-sig=0X{sig:X}"),
                    });
                    if r.gen_bool(0.3) {
                        // Falls back to the type when the signature is 0.
                        argv.push(s("--vcpu-type=EPYC-Genoa"));
                    }
                }
                80..=96 => {
                    let fam = if r.gen_bool(0.05) {
                        0
                    } else {
                        r.gen_range(1..=40)
                    };
                    argv.push(format!("--vcpu-family={fam}"));
                    argv.push(format!("--vcpu-model={}", r.gen_range(0..=255)));
                    argv.push(format!("--vcpu-stepping={}", r.gen_range(0..=15)));
                    if r.gen_bool(0.2) {
                        argv.push(s("--vcpu-type=EPYC-Rome"));
                    }
                }
                _ => {} // none: QEMU refuses, ec2/gce do not need one
            }
        }
        match r.gen_range(0..100) {
            0..=39 => {}
            40..=59 => argv.push(s("--vmm-type=QEMU")),
            60..=79 => argv.push(s("--vmm-type=ec2")),
            80..=97 => argv.push(s("--vmm-type=gce")),
            _ => argv.push(s("--vmm-type=qemu")), // wrong case: refused
        }
        match r.gen_range(0..100) {
            0..=19 => {}
            20..=59 => argv.push(s("--guest-features=0x1")),
            60..=89 => argv.push(s("--guest-features=0x21")),
            _ => argv.push(format!("--guest-features={:#x}", r.gen::<u16>())),
        }
        if r.gen_bool(0.2) {
            argv.push(s("--output-format=base64"));
        } else if r.gen_bool(0.3) {
            argv.push(s("--output-format=hex"));
        }
        if r.gen_bool(0.1) {
            argv.push(s("-v"));
        }
        if mode == "snp" && r.gen_bool(0.12) {
            let len = if r.gen_bool(0.15) { 40 } else { 48 };
            let h: Vec<u8> = (0..len).map(|_| r.gen()).collect();
            argv.push(format!("--snp-ovmf-hash={}", hex::encode(h)));
        }
        Case {
            argv,
            stricter_ok,
            has_kernel,
            desc,
        }
    }
}

fn differential(mode: &str, cases: usize, min_equal: usize, min_kernel: usize) {
    let mut g = Gen::new(&format!("differential {mode}"));
    let cases: Vec<Case> = (0..cases).map(|_| g.case(mode, None)).collect();
    let py = run_oracle(&cases);
    let ours = run_ours(&cases);
    let st = compare(&cases, &py, &ours);
    eprintln!("{mode}: {} cases, {st:?}", cases.len());
    assert!(
        st.digests_equal >= min_equal,
        "too few digests compared for {mode}: {st:?}"
    );
    assert!(
        st.with_kernel >= min_kernel,
        "too few kernel digests compared for {mode}: {st:?}"
    );
    assert!(
        st.both_refused > 0,
        "no refusal exercised for {mode}: {st:?}"
    );
}

#[test]
fn differential_snp() {
    differential("snp", 420, 150, 50);
}

#[test]
fn differential_seves() {
    differential("seves", 420, 150, 50);
}

#[test]
fn differential_sev() {
    differential("sev", 300, 200, 60);
}

#[test]
fn differential_snp_ovmf_hash() {
    differential("snp:ovmf-hash", 300, 240, 0);
}

/// Debian's packaged firmware: both split and unified builds, all modes.
#[test]
fn differential_debian_firmware() {
    let mut g = Gen::new("differential debian");
    let mut cases = Vec::new();
    for fw in ["/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/ovmf/OVMF.fd"] {
        assert!(
            Path::new(fw).exists(),
            "{fw} missing: run scripts/setup.sh (Debian package ovmf)"
        );
        for mode in ["sev", "seves", "snp", "snp:ovmf-hash"] {
            for _ in 0..10 {
                cases.push(g.case(mode, Some(Path::new(fw))));
            }
        }
    }
    let py = run_oracle(&cases);
    let ours = run_ours(&cases);
    let st = compare(&cases, &py, &ours);
    eprintln!("debian: {} cases, {st:?}", cases.len());
    assert!(st.digests_equal >= 30, "too few digests compared: {st:?}");
}

/// Real firmware built from Debian's edk2 source by scripts/build-ovmf.sh: AmdSevX64
/// (with SNP_KERNEL_HASHES) and IntelTdxX64, with random inputs and with Debian's own
/// kernel and initrd from /boot.
#[test]
fn differential_real_edk2_firmware() {
    let out = cocos_testkit::workspace_root().join("target/ovmf/out");
    let amdsev = out.join("OVMF.amdsev.fd");
    let tdx = out.join("OVMF.inteltdx.fd");
    for f in [&amdsev, &tdx] {
        assert!(
            f.exists(),
            "{} missing: run scripts/build-ovmf.sh (scripts/test.sh does)",
            f.display()
        );
    }
    let (kernel, initrd) = (
        cocos_testkit::debian_kernel(),
        cocos_testkit::debian_initrd(),
    );
    let mut g = Gen::new("differential real edk2");
    let mut cases = Vec::new();
    for fw in [&amdsev, &tdx] {
        for mode in ["sev", "seves", "snp", "snp:ovmf-hash"] {
            for i in 0..12 {
                let mut c = g.case(mode, Some(fw));
                if c.has_kernel && i % 2 == 0 {
                    // Swap the random kernel/initrd for Debian's real ones.
                    for a in c.argv.iter_mut() {
                        if a.starts_with("--kernel=") {
                            *a = format!("--kernel={}", kernel.display());
                        } else if a.starts_with("--initrd=") {
                            *a = format!("--initrd={}", initrd.display());
                        }
                    }
                }
                cases.push(c);
            }
        }
    }
    let py = run_oracle(&cases);
    let ours = run_ours(&cases);
    let st = compare(&cases, &py, &ours);
    eprintln!("real edk2: {} cases, {st:?}", cases.len());
    assert!(
        st.digests_equal >= 40 && st.with_kernel >= 10,
        "too few digests compared: {st:?}"
    );
}
