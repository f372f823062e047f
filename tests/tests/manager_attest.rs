//! The manager verifies what it relays: a launch measured for SEV-SNP (the real
//! AmdSevX64 build, `--measure-as snp`) on the QEMU stand-in, whose agent answers an
//! attestation request with a report signed by a test chain
//! (`cocos_testkit::snp_evidence`, trusted through `--insecure-test-trust-anchor`, a
//! flag release builds refuse). The attestation event carries the verdict: verified
//! when the report shows the launch's expected measurement over SHA-512 of the nonce
//! sent; "NOT verified: measurement" when the guest reports another launch; a chain
//! the manager does not trust is named too. The production path (configfs-tsm in the
//! guest, AMD's roots) is the same code without the flag.
//!
//! An SNP launch (`--tee snp`, host check skipped) with `--snp-id-key`: QEMU gets an
//! ID block signed for exactly the launch's digest; AttestationPolicy (HTTP and gRPC)
//! answers with that launch's reference values as cocos policy JSON and signed CoRIM;
//! verdicts check the host data and ID-block digests. Hostile: a corrupt ID block
//! record in the release is refused before QEMU starts; a key other users can read
//! stops the manager at start.

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

fn b64(s: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

#[test]
fn snp_launch_with_id_block_and_its_reference_values() {
    use cocos_measure::reference::{corim, TeeKind};
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = snp_release(&d.path().join("rel"));
    let keys = d.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (idk, authk, corimk) = (
        cocos_testkit::keys::ec_key_file(
            &keys,
            "id.pem",
            cocos_testkit::keys::Nid::SECP384R1,
            0o600,
        ),
        cocos_testkit::keys::ec_key_file(
            &keys,
            "author.pem",
            cocos_testkit::keys::Nid::SECP384R1,
            0o600,
        ),
        cocos_testkit::keys::ec_key_file(
            &keys,
            "corim.pem",
            cocos_testkit::keys::Nid::SECP384R1,
            0o600,
        ),
    );
    let state = d.path().join("state");
    let host_data = "SE9TVC1EQVRBLTMyLUJZVEVTLUhPU1QtREFUQS0zMiE=";
    let chain = TestChain::new();
    let snp_dir = d.path().join("snp");
    chain.save(&snp_dir);
    let anchor = snp_dir.join("root.pem");
    let extra = [
        "--tee",
        "snp",
        "--skip-host-check",
        "--snp-product",
        "genoa",
        "--snp-id-key",
        idk.to_str().unwrap(),
        "--snp-author-key",
        authk.to_str().unwrap(),
        "--corim-key",
        corimk.to_str().unwrap(),
        "--host-data",
        host_data,
        "--insecure-test-trust-anchor",
        anchor.to_str().unwrap(),
    ];
    let args = manager_args(&release, &state, &fw, FAKE, &extra);
    let m = ManagerProc::start(
        &args,
        &[("FAKE_QEMU_SNP_DIR", snp_dir.to_str().unwrap())],
        &state.join("manager.log"),
    );
    let (st, body) = http(
        &m.http,
        "POST",
        "/run",
        r#"{"computation_id": "idb-1", "vcpus": 2}"#,
    );
    assert_eq!(st, 201, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let expected =
        hex::decode(run["expected_measurement"]["measurement"].as_str().unwrap()).unwrap();

    // QEMU was given an ID block for exactly this digest, with its policy and the
    // author key enabled.
    let pid = run["pid"].as_u64().unwrap();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = argv
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let obj = argv
        .iter()
        .find(|a| a.starts_with("sev-snp-guest"))
        .expect("sev-snp-guest object");
    assert!(obj.contains(&format!(",host-data={host_data}")), "{obj}");
    assert!(
        obj.contains(",policy=0x30000,id-block=") && obj.ends_with(",author-key-enabled=on"),
        "{obj}"
    );
    let kv = |k: &str| {
        obj.split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    let block = b64(&Value::String(kv("id-block")));
    let auth = b64(&Value::String(kv("id-auth")));
    assert_eq!(
        &block[..48],
        &expected[..],
        "the ID block states the launch digest"
    );
    let signed = cocos_measure::idblock::SignedIdBlock::from_parts(&block, &auth, true).unwrap();
    let id_pub = cocos_measure::idblock::public_key_struct(
        &cocos_measure::keys::SigningKey::load_p384(&idk).unwrap(),
    )
    .unwrap();
    assert_eq!(&auth[0x240..0x644], &id_pub[..], "signed by --snp-id-key");

    // AttestationPolicy over HTTP: this launch's values (2 vCPUs, its cocos.id).
    let (st, body) = http(&m.http, "GET", "/computations/idb-1/policy", "");
    assert_eq!(st, 200, "{body}");
    let pol: Value = serde_json::from_str(&body).unwrap();
    let cocos = &pol["cocos_policy"];
    assert_eq!(b64(&cocos["policy"]["measurement"]), expected);
    assert_eq!(
        b64(&cocos["policy"]["hostData"]),
        b64(&Value::String(host_data.into()))
    );
    assert_eq!(cocos["policy"]["requireIdBlock"], true);
    assert_eq!(
        b64(&cocos["policy"]["trustedIdKeyHashes"][0]),
        signed.id_key_digest
    );
    assert_eq!(
        b64(&cocos["policy"]["trustedAuthorKeyHashes"][0]),
        signed.author_key_digest.unwrap()
    );
    assert_eq!(cocos["rootOfTrust"]["productLine"], "Genoa");
    let corim_bytes = b64(&pol["corim"]);
    let sign1 = cocos_testkit::cose::parse(&corim_bytes).expect("COSE_Sign1");
    assert!(
        cocos_testkit::cose::verifies(&sign1, &cocos_testkit::keys::public_sec1(&corimk)),
        "signed with --corim-key"
    );
    let dec = corim::decode(&corim_bytes).unwrap();
    assert_eq!(dec.tee, TeeKind::Snp);
    let r = &dec.values.snp[0];
    assert_eq!(r.label, "vcpus=2,vcpu-type=EPYC-v4,guest-features=0x1");
    assert_eq!(r.measurement.to_vec(), expected);
    assert_eq!(r.id_key_digest, Some(signed.id_key_digest));
    assert_eq!(r.policy, Some(0x30000));
    assert!(dec.values.id.ends_with("/idb-1"), "{}", dec.values.id);

    // The same over gRPC: info is the cocos policy, corim the same CoRIM values.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt.block_on(async {
        let mut c = cocos_proto::grpc::manager_service_client::ManagerServiceClient::connect(
            format!("http://{}", m.grpc),
        )
        .await
        .unwrap();
        c.attestation_policy(cocos_proto::grpc::AttestationPolicyReq { id: "idb-1".into() })
            .await
            .unwrap()
            .into_inner()
    });
    let info: Value = serde_json::from_slice(&res.info).unwrap();
    assert_eq!(&info, cocos);
    assert_eq!(corim::decode(&res.corim).unwrap().values, dec.values);

    // The verdict holds the guest to the host data and ID block too: this test guest's
    // report has neither, so exactly those checks fail.
    std::fs::write(snp_dir.join("measurement"), hex::encode(&expected)).unwrap();
    let ev = attest(&m, "idb-1", "6e6f6e6365", 0);
    let v = &ev["details"]["verdict"];
    assert_eq!(v["verified"], false, "{v:#}");
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["host_data", "id_key_digest", "author_key_digest"],
        "{v:#}"
    );
    let _ = http(&m.http, "DELETE", "/computations/idb-1", "");
    drop(m);

    // Hostile release content: a corrupt ID block record for the launch configuration
    // is refused before QEMU starts, and nothing is left behind.
    let rel_dir = release.parent().unwrap();
    std::fs::write(
        rel_dir.join("id-block.snp.vcpus-1_vcpu-type-EPYC-v4_guest-features-0x1.json"),
        br#"{"id_block": "AAAA", "id_auth": "!!"}"#,
    )
    .unwrap();
    let state2 = d.path().join("state2");
    let m = ManagerProc::start(
        &manager_args(&release, &state2, &fw, FAKE, &extra),
        &[],
        &state2.join("manager.log"),
    );
    let (st, body) = http(&m.http, "POST", "/run", r#"{"computation_id": "idb-2"}"#);
    assert_eq!(st, 422, "{body}");
    assert!(
        body.contains("id-block.snp.vcpus-1") && body.contains("base64"),
        "{body}"
    );
    assert_eq!(http(&m.http, "GET", "/computations/idb-2", "").0, 404);
    assert!(
        cocos_tests::pids_with(state2.to_str().unwrap())
            .iter()
            .all(|&p| p == m.child.id()),
        "a QEMU was started"
    );
    assert!(!state2.join("vms/idb-2").exists());
    drop(m);

    // A signing key other users can read stops the manager at start: one line, exit 2.
    let open = cocos_testkit::keys::ec_key_file(
        &keys,
        "open.pem",
        cocos_testkit::keys::Nid::SECP384R1,
        0o644,
    );
    let mut bad = extra.to_vec();
    let i = bad.iter().position(|a| *a == "--corim-key").unwrap();
    bad[i + 1] = open.to_str().unwrap();
    let out = std::process::Command::new(cocos_tests::manager_bin())
        .args(["--http", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args(manager_args(
            &release,
            &d.path().join("state3"),
            &fw,
            FAKE,
            &bad,
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--corim-key") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("BEGIN"), "a key must never be printed");
}
