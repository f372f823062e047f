//! End-to-end error reporting of the `cocos-measure` binary: every way a user can get
//! inputs wrong (truncated, foreign or malformed firmware, firmware lacking what a mode
//! needs, bad or conflicting flags, unreadable paths) must end with exactly one line
//! on stderr starting with "cocos-measure: error: " that names the problem, exit code
//! 2, nothing on stdout, and no panic. Also owns the `inspect` smoke test on Debian's
//! split OVMF_CODE.fd (whose malformed TDX metadata must be reported, not fatal).
//!
//! Firmware images are synthesized (see `cocos_testkit::firmware::synth`) so that each
//! malformed layout is exact; Debian's packaged OVMF is used where a real image is needed
//! (installed by scripts/setup.sh; its absence fails the test rather than skipping it).

// clippy.toml allows these in #[test] functions only; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cocos_testkit::firmware::{
    put_sev_metadata, reset_block, sev_metadata_entry, synth, HASH_TABLE_RV, SEV_METADATA,
    TDX_METADATA,
};
use rand::RngCore;
use tempfile::TempDir;

const PAGE: usize = 4096;
const OVMF_FD: &str = "/usr/share/ovmf/OVMF.fd";
const OVMF_CODE_FD: &str = "/usr/share/OVMF/OVMF_CODE.fd";

const PREFIX: &str = "cocos-measure: error: ";

fn write(dir: &TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// A system firmware file; fails the test if it is not installed.
fn system_fw(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.is_file(),
        "{path} is not installed: run scripts/setup.sh (Debian package ovmf)"
    );
    p
}

fn run(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("COCOS_LOG")
        .output()
        .unwrap()
}

/// Runs the binary and checks the error contract; every `needle` must appear in the
/// message. Returns the message.
fn expect_error(dir: &TempDir, args: &[&str], needles: &[&str]) -> String {
    let out = run(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "args {args:?}: status {:?}, stderr {stderr:?}",
        out.status
    );
    assert!(
        stdout.is_empty(),
        "args {args:?}: stdout not empty: {stdout:?}"
    );
    assert!(
        !stderr.contains("panicked"),
        "args {args:?}: panic: {stderr:?}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "args {args:?}: stderr not one line: {stderr:?}"
    );
    assert!(
        stderr.ends_with('\n'),
        "args {args:?}: stderr not newline-terminated: {stderr:?}"
    );
    let msg = stderr.trim_end().to_owned();
    assert!(
        msg.starts_with(PREFIX),
        "args {args:?}: missing prefix: {msg:?}"
    );
    for n in needles {
        assert!(
            msg.contains(n),
            "args {args:?}: {msg:?} does not mention {n:?}"
        );
    }
    msg
}

const SNP_1: [&str; 6] = ["--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-Milan"];

fn snp_compat<'a>(ovmf: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = SNP_1.to_vec();
    v.extend(["--ovmf", ovmf]);
    v.extend(extra);
    v
}

#[test]
fn truncated_file() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "trunc.fd", &[0x5a; 20]);
    let msg = expect_error(
        &dir,
        &snp_compat(s(&fw), &[]),
        &["too small to be an OVMF image"],
    );
    assert!(msg.contains("20 bytes"), "{msg}");
    assert!(
        msg.contains("trunc.fd"),
        "error should name the file: {msg}"
    );
}

#[test]
fn random_file_has_no_footer_compat_snp() {
    let dir = TempDir::new().unwrap();
    let mut data = vec![0u8; 64 * 1024];
    rand::thread_rng().fill_bytes(&mut data);
    let fw = write(&dir, "random.bin", &data);
    expect_error(&dir, &snp_compat(s(&fw), &[]), &["no OVMF footer table"]);
}

#[test]
fn random_file_has_no_footer_snp_subcommand() {
    let dir = TempDir::new().unwrap();
    let mut data = vec![0u8; 64 * 1024];
    rand::thread_rng().fill_bytes(&mut data);
    let fw = write(&dir, "random.bin", &data);
    expect_error(
        &dir,
        &[
            "snp",
            "--ovmf",
            s(&fw),
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC-Genoa",
        ],
        &["no OVMF footer table"],
    );
}

#[test]
fn ovmf_with_footer_zeroed_has_no_footer() {
    let src = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let mut data = std::fs::read(src).unwrap();
    let n = data.len();
    data[n - 64..].fill(0);
    let fw = write(&dir, "nofooter.fd", &data);
    expect_error(&dir, &snp_compat(s(&fw), &[]), &["no OVMF footer table"]);
}

#[test]
fn sev_metadata_points_before_image_start() {
    let dir = TempDir::new().unwrap();
    let len = 4 * PAGE;
    let off = u32::try_from(len + PAGE).unwrap().to_le_bytes().to_vec();
    let img = synth(len, &[reset_block(0x80_b004), (SEV_METADATA, off)]);
    let fw = write(&dir, "md-out.fd", &img);
    expect_error(
        &dir,
        &snp_compat(s(&fw), &[]),
        &["malformed OVMF SEV metadata"],
    );
}

#[test]
fn sev_metadata_header_past_end() {
    let dir = TempDir::new().unwrap();
    // Offset 8 from the end: the 16-byte header would run past the end of the file.
    let img = synth(4 * PAGE, &[(SEV_METADATA, 8u32.to_le_bytes().to_vec())]);
    let fw = write(&dir, "md-tail.fd", &img);
    expect_error(
        &dir,
        &snp_compat(s(&fw), &[]),
        &["malformed OVMF SEV metadata", "past the end"],
    );
}

#[test]
fn sev_metadata_wrong_signature() {
    let dir = TempDir::new().unwrap();
    let len = 4 * PAGE;
    let mut img = synth(
        len,
        &[reset_block(0x80_b004), sev_metadata_entry(len, PAGE)],
    );
    put_sev_metadata(&mut img, PAGE, &[(0x80_0000, 0x1000, 1)]);
    img[PAGE..PAGE + 4].copy_from_slice(b"XSEV");
    let fw = write(&dir, "md-sig.fd", &img);
    expect_error(
        &dir,
        &snp_compat(s(&fw), &[]),
        &["malformed OVMF SEV metadata", "wrong signature"],
    );
}

#[test]
fn footer_entry_overruns_table() {
    let dir = TempDir::new().unwrap();
    let len = 4 * PAGE;
    let mut img = synth(len, &[reset_block(0x80_b004)]);
    // The reset block's size field sits just before the footer entry: claim 200 bytes
    // while the table holds only 22.
    let hdr = len - 32 - 18 - 18;
    img[hdr..hdr + 2].copy_from_slice(&200u16.to_le_bytes());
    let fw = write(&dir, "overrun.fd", &img);
    expect_error(
        &dir,
        &snp_compat(s(&fw), &[]),
        &["malformed OVMF footer table"],
    );
}

#[test]
fn kernel_with_debian_ovmf_snp() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let k = write(&dir, "vmlinuz", b"not really a kernel");
    expect_error(
        &dir,
        &snp_compat(s(&fw), &["--kernel", s(&k)]),
        &[
            "SNP_KERNEL_HASHES",
            "leave out --kernel, --initrd and --append",
        ],
    );
}

#[test]
fn kernel_with_debian_ovmf_sev() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let k = write(&dir, "vmlinuz", b"not really a kernel");
    expect_error(
        &dir,
        &["--mode", "sev", "--ovmf", s(&fw), "--kernel", s(&k)],
        &["SEV_HASH_TABLE_RV", "leave out --kernel"],
    );
}

#[test]
fn kernel_with_debian_ovmf_seves() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let k = write(&dir, "vmlinuz", b"not really a kernel");
    expect_error(
        &dir,
        &[
            "--mode",
            "seves",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            s(&fw),
            "--kernel",
            s(&k),
        ],
        &["SEV_HASH_TABLE_RV"],
    );
}

#[test]
fn zero_vcpus_compat() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &[
            "--mode",
            "snp",
            "--vcpus",
            "0",
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            s(&fw),
        ],
        &["--vcpus must be between 1 and 4096"],
    );
}

#[test]
fn zero_vcpus_subcommand() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &[
            "snp",
            "--ovmf",
            s(&fw),
            "--vcpus",
            "0",
            "--vcpu-type",
            "EPYC-Milan",
        ],
        &["--vcpus must be between 1 and 4096"],
    );
}

#[test]
fn unknown_vcpu_type_compat() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Zen9",
            "--ovmf",
            s(&fw),
        ],
        &["EPYC-Zen9", "--vcpu-type"],
    );
}

#[test]
fn unknown_vcpu_type_subcommand() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &[
            "snp",
            "--ovmf",
            s(&fw),
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Zen9",
        ],
        &["unknown vCPU type 'EPYC-Zen9'", "vcpu-types"],
    );
}

#[test]
fn unknown_vmm_type_compat() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &snp_compat(s(&fw), &["--vmm-type", "xen"]),
        &["unknown VMM type 'xen'", "QEMU, ec2 or gce"],
    );
}

#[test]
fn unknown_vmm_type_subcommand() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &[
            "snp",
            "--ovmf",
            s(&fw),
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Milan",
            "--vmm-type",
            "xen",
        ],
        &["--vmm-type", "unknown VMM type 'xen'"],
    );
}

#[test]
fn missing_ovmf_file() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("does-not-exist.fd");
    expect_error(
        &dir,
        &snp_compat(s(&missing), &[]),
        &["cannot read", "does-not-exist.fd"],
    );
}

#[test]
fn directory_as_ovmf() {
    let dir = TempDir::new().unwrap();
    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    expect_error(
        &dir,
        &snp_compat(s(&sub), &[]),
        &["cannot read", "a-directory"],
    );
}

#[test]
fn missing_kernel_file() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    let k = dir.path().join("no-vmlinuz");
    expect_error(
        &dir,
        &["sev", "--ovmf", s(&fw), "--kernel", s(&k)],
        &["cannot read", "no-vmlinuz"],
    );
}

#[test]
fn initrd_without_kernel_compat() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    let initrd = write(&dir, "initrd.img", b"initrd");
    expect_error(
        &dir,
        &snp_compat(s(&fw), &["--initrd", s(&initrd)]),
        &["--kernel required when using --initrd"],
    );
}

#[test]
fn missing_vcpu_type_compat() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &["--mode", "snp", "--vcpus", "1", "--ovmf", s(&fw)],
        &["missing --vcpu-type"],
    );
}

#[test]
fn missing_vcpu_type_subcommand() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &["seves", "--ovmf", s(&fw), "--vcpus", "1"],
        &["--vcpu-type", "--vcpu-sig"],
    );
}

#[test]
fn bad_snp_ovmf_hash_length() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &snp_compat(s(&fw), &["--snp-ovmf-hash", "abcd"]),
        &["--snp-ovmf-hash", "96 hex digits", "abcd"],
    );
}

#[test]
fn bad_ovmf_hash_subcommand_names_its_flag() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    let msg = expect_error(
        &dir,
        &[
            "snp",
            "--ovmf",
            s(&fw),
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf-hash",
            "abcd",
        ],
        &["96 hex digits"],
    );
    // The subcommand's flag is --ovmf-hash; the message should not name another one.
    assert!(
        !msg.contains("--snp-ovmf-hash"),
        "names a flag the user did not give: {msg}"
    );
}

#[test]
fn snp_ovmf_hash_with_mode_sev() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "fw.fd", &synth(4 * PAGE, &[reset_block(0x80_b004)]));
    let hash = "00".repeat(48);
    expect_error(
        &dir,
        &["--mode", "sev", "--ovmf", s(&fw), "--snp-ovmf-hash", &hash],
        &["only works with --mode snp"],
    );
}

#[test]
fn no_reset_block_seves() {
    let dir = TempDir::new().unwrap();
    let table = (
        HASH_TABLE_RV,
        [0u32, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let fw = write(&dir, "noreset.fd", &synth(4 * PAGE, &[table]));
    expect_error(
        &dir,
        &[
            "--mode",
            "seves",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            s(&fw),
        ],
        &["SEV_ES_RESET_BLOCK"],
    );
}

#[test]
fn zero_ap_reset_eip_with_two_vcpus() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "eip0.fd", &synth(4 * PAGE, &[reset_block(0)]));
    expect_error(
        &dir,
        &[
            "--mode",
            "snp",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            s(&fw),
        ],
        &["AP reset EIP 0", "2 vCPUs", "(--vcpus 1)"],
    );
}

#[test]
fn size_not_page_multiple_snp() {
    let dir = TempDir::new().unwrap();
    let fw = write(
        &dir,
        "odd.fd",
        &synth(4 * PAGE + 100, &[reset_block(0x80_b004)]),
    );
    expect_error(
        &dir,
        &snp_compat(s(&fw), &[]),
        &["not a multiple of 4096", "16484"],
    );
}

#[test]
fn inspect_debian_ovmf_code_reports_tdx_past_end() {
    let fw = system_fw(OVMF_CODE_FD);
    let dir = TempDir::new().unwrap();
    let out = run(&dir, &["inspect", "--ovmf", s(&fw)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TDX metadata"), "{stdout}");
    assert!(stdout.contains("points past the end"), "{stdout}");

    let out = run(&dir, &["inspect", "--ovmf", s(&fw), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let supports = v["supports"].as_array().unwrap();
    assert!(!supports.is_empty());
    for c in supports {
        assert!(c["launch"].is_string(), "{c}");
        assert!(c["supported"].is_boolean(), "{c}");
    }
    let tdx = supports.iter().find(|c| c["launch"] == "tdx").unwrap();
    assert_eq!(tdx["supported"], false);
    assert!(
        tdx["note"]
            .as_str()
            .unwrap()
            .contains("points past the end"),
        "{tdx}"
    );
    let snp = supports.iter().find(|c| c["launch"] == "snp").unwrap();
    assert_eq!(snp["supported"], true);
    assert!(v["tdx_metadata"]["error"]
        .as_str()
        .unwrap()
        .contains("points past the end"));
}

/// The synthesizer's images are well-formed: without a defect they measure fine, so
/// the failures above come from the defect each one injects.
#[test]
fn synthesized_image_is_accepted() {
    let dir = TempDir::new().unwrap();
    let len = 4 * PAGE;
    let mut img = synth(
        len,
        &[reset_block(0x80_b004), sev_metadata_entry(len, PAGE)],
    );
    put_sev_metadata(
        &mut img,
        PAGE,
        &[(0x80_0000, 0x1000, 1), (0x80_1000, 0x1000, 3)],
    );
    let fw = write(&dir, "good.fd", &img);
    let args = [
        "--mode",
        "snp",
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Milan",
        "--ovmf",
        s(&fw),
    ];
    let out = run(&dir, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    let digest = String::from_utf8(out.stdout).unwrap();
    assert_eq!(digest.trim().len(), 96, "{digest}");
    let out = run(&dir, &["inspect", "--ovmf", s(&fw), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sev_es_reset_eip"], "0x80b004");
    assert_eq!(v["sev_metadata"].as_array().unwrap().len(), 2);
}

/// `inspect` names the IGVM entry (edk2 >= stable202511), says that an AmdSevX64 build
/// without SNP_KERNEL_HASHES predates edk2 stable202402, and warns about empty SNP
/// sections and sections overlapping the flash (edk2 `OvmfPkg/ResetVector`
/// `X64/OvmfSevMetadata.asm` declares them; QEMU `target/i386/sev.c` launches them).
#[test]
fn inspect_explains_old_amdsev_builds_and_odd_snp_sections() {
    let dir = TempDir::new().unwrap();
    let len = 4 * PAGE;
    let hash_table = (
        HASH_TABLE_RV,
        [0x80_f000u32.to_le_bytes(), 0x400u32.to_le_bytes()].concat(),
    );
    let igvm = (
        uuid::uuid!("784fa70e-3176-4677-8a20-04b68699e374"),
        0x2000u32.to_le_bytes().to_vec(),
    );
    let mut img = synth(
        len,
        &[
            reset_block(0x80_b004),
            sev_metadata_entry(len, PAGE),
            hash_table,
            igvm,
        ],
    );
    let flash = u32::try_from((1u64 << 32) - len as u64).unwrap();
    put_sev_metadata(
        &mut img,
        PAGE,
        &[
            (0x80_0000, 0, 1),
            (flash + 0x1000, 0x1000, 1),
            (0x80_1000, 0x1000, 3),
        ],
    );
    let fw = write(&dir, "old-amdsev.fd", &img);
    let out = run(&dir, &["inspect", "--ovmf", s(&fw), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "IGVM_METADATA"));
    let cap = |l: &str| {
        v["supports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["launch"] == l)
            .unwrap()
            .clone()
    };
    let snpk = cap("snp-kernel-hashes");
    assert_eq!(snpk["supported"], false);
    assert!(
        snpk["note"].as_str().unwrap().contains("stable202402"),
        "{snpk}"
    );
    let snp = cap("snp");
    let warnings: Vec<&str> = snp["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("size 0")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("overlaps the firmware image")),
        "{warnings:?}"
    );
    // Random bytes carry no firmware volumes: the edk2 reading says so.
    assert_eq!(v["edk2"]["extends_rtmrs"], serde_json::Value::Null);
    let out = run(&dir, &["inspect", "--ovmf", s(&fw)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: SEV metadata section 0 (SNP_SEC_MEM)"),
        "{text}"
    );
}

/// `inspect` on Debian's OVMF.fd and the IntelTdx build says whether the firmware
/// extends RTMRs, which edk2 behaviours it has, and on what evidence (file GUIDs).
#[test]
fn inspect_reads_the_edk2_behaviours_from_the_drivers() {
    let dir = TempDir::new().unwrap();
    let debian = system_fw(OVMF_FD);
    let tdx = cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.inteltdx.fd");
    assert!(
        tdx.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        tdx.display()
    );
    for (fw, extends, etc_boot) in [(debian, false, false), (tdx, true, true)] {
        let out = run(&dir, &["inspect", "--ovmf", s(&fw), "--json"]);
        assert_eq!(out.status.code(), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &v["edk2"];
        assert_eq!(e["extends_rtmrs"], extends, "{}: {e}", fw.display());
        assert_eq!(e["reads_etc_boot"], etc_boot, "{}: {e}", fw.display());
        assert_eq!(e["initrd_option"], "append", "{}: {e}", fw.display());
        let evidence = e["evidence"].to_string();
        assert!(
            evidence.contains("f062221e-c607-44c2-b0b4-c3886331d351"),
            "{evidence}"
        );
        let tdx_cap = v["supports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["launch"] == "tdx")
            .unwrap()
            .clone();
        let note = tdx_cap["note"].as_str().unwrap();
        assert_eq!(note.contains("not extended"), !extends, "{note}");
    }
}

// ---- cocos-measure tdx ----

/// `tdx` with Debian's OVMF.fd and kernel plus `extra` arguments.
fn tdx_args<'a>(fw: &'a str, kernel: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["tdx", "--firmware", fw, "--kernel", kernel];
    v.extend_from_slice(extra);
    v
}

fn loader_allocating(files: &[&str]) -> Vec<u8> {
    let mut l = Vec::new();
    for f in files {
        let mut c = [0u8; 128];
        c[0] = 1;
        c[4..4 + f.len()].copy_from_slice(f.as_bytes());
        l.extend_from_slice(&c);
    }
    l
}

#[test]
fn tdx_split_ovmf_code_is_not_a_tdx_image() {
    let fw = system_fw(OVMF_CODE_FD);
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw)],
        &["TDX metadata", "past the end", "unified OVMF.fd"],
    );
}

#[test]
fn tdx_firmware_without_tdx_metadata() {
    let dir = TempDir::new().unwrap();
    let fw = write(&dir, "sev.fd", &synth(16 * PAGE, &[reset_block(0x80_b004)]));
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw)],
        &["not a TDX", "IntelTdxX64.dsc"],
    );
}

#[test]
fn tdx_tdvf_metadata_outside_the_image() {
    let dir = TempDir::new().unwrap();
    let len = 16 * PAGE;
    let fw = write(
        &dir,
        "tdvf.fd",
        &synth(len, &[(TDX_METADATA, 0x10_0000u32.to_le_bytes().to_vec())]),
    );
    expect_error(&dir, &["tdx", "--firmware", s(&fw)], &["TDX metadata"]);
}

#[test]
fn tdx_missing_firmware_file() {
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &["tdx", "--firmware", "nope.fd"],
        &["nope.fd", "No such file"],
    );
}

#[test]
fn tdx_bad_memory_size() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--memory", "2Q"],
        &["memory size", "suffix"],
    );
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--memory", "lots"],
        &["memory size", "2G"],
    );
}

#[test]
fn tdx_memory_too_small_for_the_tdvf_sections() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--memory", "4M"],
        &["TD HOB", "outside guest RAM", "--memory"],
    );
}

#[test]
fn tdx_zero_cpus() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--cpus", "0"],
        &["--cpus"],
    );
}

#[test]
fn tdx_kernel_not_a_bzimage() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let k = write(&dir, "vmlinux", &[0x7f; 20000]);
    expect_error(
        &dir,
        &tdx_args(s(&fw), s(&k), &[]),
        &["vmlinux", "HdrS", "bzImage"],
    );
}

#[test]
fn tdx_kernel_without_efi_stub() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let mut k = vec![0u8; 0x4000];
    k[0x1f1] = 3;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    k[0x211] = 1;
    let k = write(&dir, "bzImage", &k);
    expect_error(
        &dir,
        &tdx_args(s(&fw), s(&k), &[]),
        &["not a PE/COFF", "CONFIG_EFI_STUB"],
    );
}

#[test]
fn tdx_initrd_too_large_for_memory() {
    let fw = system_fw(OVMF_FD);
    let kernel = cocos_testkit::debian_kernel();
    let dir = TempDir::new().unwrap();
    let initrd = dir.path().join("big.img");
    std::fs::File::create(&initrd)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    expect_error(
        &dir,
        &tdx_args(
            s(&fw),
            s(&kernel),
            &["--initrd", s(&initrd), "--memory", "64M"],
        ),
        &["initrd", "too large", "--memory"],
    );
}

#[test]
fn tdx_invalid_vga_parameter() {
    let fw = system_fw(OVMF_FD);
    let kernel = cocos_testkit::debian_kernel();
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &tdx_args(s(&fw), s(&kernel), &["--append", "quiet vga=foo"]),
        &["vga=", "QEMU refuses"],
    );
}

#[test]
fn tdx_initrd_needs_a_kernel() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let i = write(&dir, "initrd", b"x");
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--initrd", s(&i)],
        &["--kernel"],
    );
}

#[test]
fn tdx_partial_acpi_inputs() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let t = write(&dir, "tables", b"x");
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--acpi-tables", s(&t)],
        &["--acpi-rsdp"],
    );
}

#[test]
fn tdx_bad_table_loader() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let t = write(&dir, "tables", b"x");
    let r = write(&dir, "rsdp", b"x");
    let ev = dir.path().join("efivars");
    std::fs::create_dir(&ev).unwrap();
    std::fs::write(
        ev.join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [7, 0, 0, 0, 0, 0],
    )
    .unwrap();
    let short = write(&dir, "loader", &[1; 100]);
    let acpi = |l: &Path| -> Vec<String> {
        [
            "tdx",
            "--firmware",
            s(&fw),
            "--acpi-tables",
            s(&t),
            "--acpi-rsdp",
            s(&r),
            "--acpi-loader",
            s(l),
            "--efivars",
            s(&ev),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };
    let a = acpi(&short);
    expect_error(
        &dir,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["table-loader", "128-byte"],
    );
    let tpm = write(
        &dir,
        "loader-tpm",
        &loader_allocating(&["etc/acpi/tables", "etc/tpm/log", "etc/acpi/rsdp"]),
    );
    let a = acpi(&tpm);
    expect_error(
        &dir,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["etc/tpm/log"],
    );
}

#[test]
fn tdx_bad_efivars() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    let t = write(&dir, "tables", b"x");
    let r = write(&dir, "rsdp", b"x");
    let l = write(
        &dir,
        "loader",
        &loader_allocating(&["etc/acpi/tables", "etc/acpi/rsdp"]),
    );
    let base = [
        "tdx",
        "--firmware",
        s(&fw),
        "--acpi-tables",
        s(&t),
        "--acpi-rsdp",
        s(&r),
        "--acpi-loader",
        s(&l),
    ];
    let mut a = base.to_vec();
    a.extend(["--efivars", s(&t)]);
    expect_error(&dir, &a, &["--efivars", "not a directory"]);

    let ev = dir.path().join("efivars");
    std::fs::create_dir(&ev).unwrap();
    let mut a = base.to_vec();
    a.extend(["--efivars", s(&ev)]);
    expect_error(&dir, &a, &["BootOrder", "efivars"]);

    std::fs::write(
        ev.join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [7, 0],
    )
    .unwrap();
    expect_error(&dir, &a, &["4-byte attribute"]);
    std::fs::write(
        ev.join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [7, 0, 0, 0, 1],
    )
    .unwrap();
    expect_error(&dir, &a, &["BootOrder", "16-bit"]);
}

#[test]
fn tdx_bad_fw_cfg_items() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--fw-cfg", "BootMenu"],
        &["NAME=FILE"],
    );
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--fw-cfg", "etc/e820=x"],
        &["etc/e820", "BootMenu"],
    );
}

#[test]
fn tdx_without_platform_inputs_explains_rtmr0() {
    // The IntelTdx build extends RTMRs, so RTMR0 needs the host's ACPI blobs.
    let fw = cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.inteltdx.fd");
    assert!(
        fw.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        fw.display()
    );
    let kernel = cocos_testkit::debian_kernel();
    let dir = TempDir::new().unwrap();
    let out = run(
        &dir,
        &tdx_args(s(&fw), s(&kernel), &["--append", "console=ttyS0"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("RTMR0: not computed"), "{stdout}");
    assert!(
        stderr.contains("/sys/firmware/qemu_fw_cfg/by_name/etc/acpi/tables/raw"),
        "{stderr}"
    );
    assert!(stderr.contains("etc/table-loader/raw"), "{stderr}");
}

#[test]
fn tdx_on_firmware_that_measures_nothing_gives_zero_rtmrs_with_the_reason() {
    // Debian 12's OVMF.fd (edk2 2022.11, OvmfPkgX64) has no TdTcg2Dxe.
    let fw = system_fw(OVMF_FD);
    let kernel = cocos_testkit::debian_kernel();
    let dir = TempDir::new().unwrap();
    let out = run(
        &dir,
        &tdx_args(s(&fw), s(&kernel), &["--append", "console=ttyS0"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("MRTD:  4c7206f0"), "{stdout}");
    for r in 0..3 {
        assert!(
            stdout.contains(&format!("RTMR{r}: {}", "0".repeat(96))),
            "{stdout}"
        );
    }
    assert!(
        stderr.contains("RTMRs not extended by this firmware"),
        "{stderr}"
    );
    let out = run(
        &dir,
        &tdx_args(s(&fw), s(&kernel), &["--append", "console=ttyS0", "--json"]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rtmrs_extended"], false);
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0));
    assert!(v["notes"][0]
        .as_str()
        .unwrap()
        .contains("RTMRs not extended by this firmware"));
    assert_eq!(v["inputs"]["firmware"]["edk2"]["extends_rtmrs"], false);
    // Forcing it says so in the rules.
    let out = run(
        &dir,
        &tdx_args(
            s(&fw),
            s(&kernel),
            &["--append", "x", "--firmware-measures", "yes", "--json"],
        ),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rtmrs_extended"], true);
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["setting"] == "extends_rtmrs" && r["source"] == "flag"));
}

/// fw_cfg items are measured only by edk2 >= stable202505 (commit be529ef3c9,
/// `QemuFwCfgCacheInit.c`); for the 2025.02 IntelTdx build, giving them is refused
/// rather than measured into an RTMR0 no TD would show.
#[test]
fn tdx_fw_cfg_items_refused_for_firmware_that_does_not_measure_them() {
    let dir = TempDir::new().unwrap();
    let fw = cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.inteltdx.fd");
    let item = write(&dir, "bootmenu", &[1, 0]);
    let arg = format!("BootMenu={}", s(&item));
    expect_error(
        &dir,
        &["tdx", "--firmware", s(&fw), "--fw-cfg", &arg],
        &["does not measure", "stable202505"],
    );
}

#[test]
fn tdx_new_flags_refuse_bad_values() {
    let fw = system_fw(OVMF_FD);
    let dir = TempDir::new().unwrap();
    for (flag, bad, needle) in [
        ("--qemu-version", "ten", "not a QEMU version"),
        ("--qemu-version", "10", "not a QEMU version"),
        ("--qemu-version", "10.1.2.3", "not a QEMU version"),
        ("--edk2-version", "2025", "not an edk2 release"),
        ("--edk2-version", "2025.13", "not an edk2 release"),
        ("--kernel-setup", "maybe", "maybe"),
        ("--initrd-option", "middle", "middle"),
        ("--firmware-measures", "perhaps", "perhaps"),
    ] {
        expect_error(&dir, &["tdx", "--firmware", s(&fw), flag, bad], &[needle]);
    }
}

#[test]
fn append_value_that_looks_like_an_option_is_refused() {
    // sev-snp-measure's argparse refuses `--append --json`; we used to measure "--json".
    let dir = TempDir::new().unwrap();
    let fw = system_fw(OVMF_FD);
    let kernel = cocos_testkit::debian_kernel();
    for bad in ["--json", "-v", "--", "-x"] {
        expect_error(
            &dir,
            &[
                "--mode",
                "sev",
                "--ovmf",
                s(&fw),
                "--kernel",
                s(&kernel),
                "--append",
                bad,
            ],
            &["--append=", "looks like an option"],
        );
        expect_error(
            &dir,
            &tdx_args(s(&fw), s(&kernel), &["--append", bad]),
            &["--append="],
        );
    }
    // What argparse takes as a value we take too: `=` form, negative numbers, spaces.
    let fw = cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.amdsev.fd");
    for good in [
        vec!["--append=--json"],
        vec!["--append", "-5"],
        vec!["--append", "-.5"],
        vec!["--append", "-x console=ttyS0"],
        vec!["--append", "-"],
    ] {
        let mut args = vec!["--mode", "sev", "--ovmf", s(&fw), "--kernel", s(&kernel)];
        args.extend(good.iter().copied());
        let out = run(&dir, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{good:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue #16: completions for every shell clap knows, and man pages (one per
/// subcommand with --dir).
#[test]
fn completions_and_man_pages() {
    let bin = env!("CARGO_BIN_EXE_cocos-measure");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = Command::new(bin)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("cocos-measure") && text.contains("reference-values"),
            "{shell}"
        );
    }
    let o = Command::new(bin).arg("man").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH cocos-measure 1"));
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(bin)
        .args(["man", "--dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    for page in [
        "cocos-measure.1",
        "cocos-measure-snp.1",
        "cocos-measure-tdx.1",
    ] {
        assert!(d.path().join(page).exists(), "{page}");
    }
    let o = Command::new(bin)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with(PREFIX));
}
