//! The manager verifies what it relays: a launch measured for SEV-SNP (the real
//! AmdSevX64 build, `--measure-as snp`) on the QEMU stand-in, whose agent answers an
//! attestation request with a report signed by a test chain
//! (`cocos_testkit::snp_evidence`, trusted through `--insecure-test-trust-anchor`, a
//! flag release builds refuse). The attestation event carries the verdict: verified
//! when the report shows the launch's expected measurement over SHA-512 of the nonce
//! sent; "NOT verified: measurement" when the guest reports another launch; a chain
//! the manager does not trust is named too. The production path (configfs-tsm in the
//! guest, AMD's roots) is the same code without the flag.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns

use std::path::Path;
use std::time::Duration;

use cocos_testkit::snp_evidence::TestChain;
use cocos_tests::{http, manager_args, wait_for, ManagerProc};
use serde_json::Value;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

fn snp_release(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let fw_src = cocos_testkit::workspace_root().join("target/ovmf/out/OVMF.amdsev.fd");
    assert!(
        fw_src.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        fw_src.display()
    );
    let k: Vec<u8> = (0..200_000u32).map(|x| (x * 13) as u8).collect();
    let i: Vec<u8> = (0..3000u32).map(|x| (x * 7) as u8).collect();
    let f = std::fs::read(&fw_src).unwrap();
    std::fs::write(dir.join("vmlinuz"), &k).unwrap();
    std::fs::write(dir.join("initramfs.cpio.gz"), &i).unwrap();
    let fw = dir.join("OVMF.fd");
    std::fs::write(&fw, &f).unwrap();
    let p = cocos_tests::write_release(dir, "console=ttyS0", &k, &i, "snp", &f);
    (p, fw)
}

fn attest(m: &ManagerProc, id: &str, nonce: &str, after: u64) -> Value {
    let (st, body) = http(
        &m.http,
        "POST",
        &format!("/computations/{id}/attestation"),
        &format!(r#"{{"nonce": "{nonce}"}}"#),
    );
    assert_eq!(st, 202, "{body}");
    wait_for(Duration::from_secs(30), "the attestation event", || {
        cocos_tests::events(&m.http, after)
            .into_iter()
            .find(|e| e["computation_id"] == id && e["event_type"] == "attestation")
    })
}

#[test]
fn attestation_events_carry_the_verdict() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = snp_release(&d.path().join("rel"));
    let chain = TestChain::new();
    let snp_dir = d.path().join("snp");
    chain.save(&snp_dir);
    let state = d.path().join("state");
    let anchor = snp_dir.join("root.pem");
    let args = manager_args(
        &release,
        &state,
        &fw,
        FAKE,
        &[
            "--measure-as",
            "snp",
            "--insecure-test-trust-anchor",
            anchor.to_str().unwrap(),
        ],
    );
    let m = ManagerProc::start(
        &args,
        &[("FAKE_QEMU_SNP_DIR", snp_dir.to_str().unwrap())],
        &state.join("manager.log"),
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "a1"}"#);
    assert_eq!(st, 201, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let expected = run["expected_measurement"]["measurement"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(run["expected_measurement"]["tee"], "snp");

    // The guest reports exactly the launch, over the nonce sent: verified.
    std::fs::write(snp_dir.join("measurement"), &expected).unwrap();
    let ev = attest(&m, "a1", "6e6f6e63652d31", 0);
    let v = &ev["details"]["verdict"];
    assert_eq!(v["verified"], true, "{ev:#}");
    assert_eq!(v["summary"], "verified");
    assert!(v["trust_anchor"].as_str().unwrap().contains("TEST ANCHOR"));
    assert_eq!(v["evidence"]["measurement"], expected.as_str());
    let seq = ev["seq"].as_u64().unwrap();

    // Another launch's measurement: the verdict names the check.
    std::fs::write(snp_dir.join("measurement"), "00".repeat(48)).unwrap();
    let ev = attest(&m, "a1", "6e6f6e63652d32", seq);
    let v = &ev["details"]["verdict"];
    assert_eq!(v["verified"], false);
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("NOT verified: measurement"),
        "{v:#}"
    );
    let seq = ev["seq"].as_u64().unwrap();

    // A guest signing with a chain the manager does not trust: refused, named.
    TestChain::new().save(&snp_dir);
    std::fs::write(snp_dir.join("measurement"), &expected).unwrap();
    let ev = attest(&m, "a1", "6e6f6e63652d33", seq);
    let v = &ev["details"]["verdict"];
    assert_eq!(v["verified"], false);
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("intermediate_signed_by_root"),
        "{v:#}"
    );
    let _ = http(&m.http, "DELETE", "/computations/a1", "");
}
