//! `cocos-measure verify snp` on genuine SEV-SNP reports (Milan, Genoa, Turin; VCEK and
//! VLEK), recorded by other projects on real machines (tests/data/evidence, see NOTICE
//! and each SOURCE.txt): each verifies at its fixed time, and each fails, with the
//! right check named, when one byte of a region is changed: the signed body, the
//! signature, the endorsement key's certificate, the nonce binding, the expected
//! measurement, the time. Unusable input (truncated, unknown version, missing chain)
//! is exit 2 with one line.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // helpers too

use std::path::{Path, PathBuf};
use std::process::Command;

use cocos_measure::verify::amd::Cert;
use cocos_measure::verify::snp::{self, Certs, Expectations};
use cocos_measure::verify::{parse_time, Verdict};
use serde_json::Value;

const FIXTURES: [&str; 7] = [
    "azure-genoa",
    "azure-milan",
    "ms-genoa",
    "ms-milan",
    "ms-turin",
    "trustee-milan",
    "trustee-milan-vlek",
];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/evidence/snp")
        .join(name)
}

struct Fixture {
    dir: PathBuf,
    report: Vec<u8>,
    certs: Certs,
    exp: Expectations,
    meta: Value,
}

fn hex_arr<const N: usize>(v: &Value) -> [u8; N] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn load(name: &str) -> Fixture {
    let dir = dir(name);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let vlek = meta["signing_key"] == "vlek";
    let key = dir.join(if vlek { "vlek.der" } else { "vcek.der" });
    let mut certs = Certs {
        vek: Some(Cert::from_bytes(&std::fs::read(key).unwrap()).unwrap()),
        ..Certs::default()
    };
    if vlek {
        certs.chain =
            Cert::all_from_bytes(&std::fs::read(dir.join("cert_chain.pem")).unwrap()).unwrap();
    }
    let exp = Expectations {
        measurement: Some(hex_arr(&meta["measurement"])),
        report_data: Some(hex_arr(&meta["report_data"])),
        host_data: Some(hex_arr(&meta["host_data"])),
        vmpl: meta["vmpl"].as_u64().unwrap() as u32,
        now: parse_time(meta["now"].as_str().unwrap()).unwrap(),
        ..Expectations::default()
    };
    Fixture {
        report: std::fs::read(dir.join("report.bin")).unwrap(),
        dir,
        certs,
        exp,
        meta,
    }
}

fn run(f: &Fixture) -> Verdict {
    snp::verify(&f.report, &f.certs, &f.exp).unwrap()
}

fn failed(v: &Verdict) -> Vec<&'static str> {
    v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
}

#[test]
fn genuine_reports_verify_at_their_time() {
    for name in FIXTURES {
        let f = load(name);
        let v = run(&f);
        assert!(v.verified, "{name}: {:?}", v.first_failure());
        assert_eq!(v.evidence["measurement"], f.meta["measurement"], "{name}");
        assert_eq!(v.evidence["product"], f.meta["product"], "{name}");
        // The chain ends in AMD's root for the product.
        assert_eq!(
            v.chain[0],
            format!("ARK-{}", f.meta["product"].as_str().unwrap()),
            "{name}"
        );
    }
}

#[test]
fn one_changed_byte_in_each_region_fails_the_check_for_that_region() {
    for name in FIXTURES {
        let f = load(name);
        let m = &f.meta["mutations"];
        // The signed body and the signature: the report signature no longer holds.
        for at in [
            m["signed_body_byte"].as_u64().unwrap(),
            m["signature_byte"].as_u64().unwrap(),
        ] {
            let mut g = load(name);
            g.report[at as usize] ^= 0x01;
            let v = run(&g);
            assert_eq!(failed(&v), ["report_signature"], "{name}: byte {at:#x}");
        }
        // The endorsement key's certificate (a byte of its signature, at the end).
        let mut g = load(name);
        let key = if f.meta["signing_key"] == "vlek" {
            "vlek.der"
        } else {
            "vcek.der"
        };
        let mut der = std::fs::read(f.dir.join(key)).unwrap();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        g.certs.vek = Some(Cert::from_der(&der).unwrap());
        assert_eq!(
            failed(&run(&g)),
            ["vek_signed_by_intermediate"],
            "{name}: certificate"
        );
        // The nonce binding.
        let mut g = load(name);
        g.exp.report_data.as_mut().unwrap()[0] ^= 1;
        assert_eq!(failed(&run(&g)), ["report_data"], "{name}: report data");
        let mut g = load(name);
        g.exp.report_data = Some(snp::report_data_for_nonce(b"another request"));
        assert_eq!(failed(&run(&g)), ["report_data"], "{name}: nonce");
        // The expected measurement.
        let mut g = load(name);
        g.exp.measurement.as_mut().unwrap()[47] ^= 1;
        let v = run(&g);
        assert_eq!(failed(&v), ["measurement"], "{name}: measurement");
        let c = v.first_failure().unwrap();
        assert_eq!(
            c.seen.as_ref(),
            f.meta["measurement"].as_str().map(str::to_owned).as_ref()
        );
        // The time: before the VCEK was issued.
        let mut g = load(name);
        g.exp.now = parse_time("2015-01-01T00:00:00Z").unwrap();
        assert!(
            failed(&run(&g)).iter().all(|c| *c == "certificate_valid"),
            "{name}: time"
        );
        assert!(!run(&g).verified);
        // Another VMPL than the report's.
        let mut g = load(name);
        g.exp.vmpl += 1;
        assert_eq!(failed(&run(&g)), ["vmpl"], "{name}: vmpl");
    }
}

#[test]
fn a_report_signed_by_another_chips_key_fails() {
    // ms-milan's report with azure-milan's VCEK: a genuine key, but not this chip's.
    let mut f = load("ms-milan");
    f.certs.vek = load("azure-milan").certs.vek;
    let v = run(&f);
    let failed = failed(&v);
    assert!(failed.contains(&"report_signature"), "{failed:?}");
    assert!(failed.contains(&"chip_id"), "{failed:?}");
}

#[test]
fn policy_tcb_and_allow_list_checks() {
    let mut f = load("azure-milan");
    f.exp.min_tcb =
        Some(cocos_measure::verify::amd::Tcb::parse("bl=3,tee=0,snp=8,ucode=115").unwrap());
    f.exp.chip_ids = vec![hex_arr(&f.meta["chip_id"])];
    f.exp.min_abi = Some((0, 31));
    // The ID block's fields, as the report carries them (FAMILY_ID at 0x10, IMAGE_ID at
    // 0x20).
    f.exp.family_id = Some(f.report[0x10..0x20].try_into().unwrap());
    f.exp.image_id = Some(f.report[0x20..0x30].try_into().unwrap());
    f.exp.id_key_digest = Some(
        hex::decode(f.meta["id_key_digest"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    assert!(run(&f).verified, "{:?}", run(&f).first_failure());
    f.exp.image_id = Some([1; 16]);
    assert_eq!(failed(&run(&f)), ["image_id"]);
    f.exp.image_id = None;
    f.exp.min_tcb =
        Some(cocos_measure::verify::amd::Tcb::parse("bl=3,tee=0,snp=9,ucode=115").unwrap());
    f.exp.chip_ids = vec![[7u8; 64]];
    f.exp.min_abi = Some((1, 55));
    f.exp.deny_smt = true;
    let mut names = failed(&run(&f));
    names.sort_unstable();
    assert_eq!(
        names,
        ["chip_allowed", "min_tcb", "policy_abi", "policy_smt"]
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_and_one_line_errors() {
    let f = load("azure-milan");
    let d = tempfile::tempdir().unwrap();
    let report = f.dir.join("report.bin");
    let vcek = f.dir.join("vcek.der");
    let (m, rd, now) = (
        f.meta["measurement"].as_str().unwrap(),
        f.meta["report_data"].as_str().unwrap(),
        f.meta["now"].as_str().unwrap(),
    );
    let base = |report: &Path| -> Vec<String> {
        [
            "verify",
            "snp",
            "--report",
            report.to_str().unwrap(),
            "--vcek",
            vcek.to_str().unwrap(),
            "--expected",
            m,
            "--report-data",
            rd,
            "--now",
            now,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = base(&report);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, _) = cli(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("SEV-SNP report: VERIFIED"), "{out}");
    let (code, out, _) = cli(&[&args[..], &["--json"]].concat());
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);

    // A genuine report that shows another launch: exit 1, the check named first.
    let other = "00".repeat(48);
    let mut a = args.clone();
    a[7] = &other;
    let (code, out, _) = cli(&a);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("SEV-SNP report: NOT VERIFIED: measurement"),
        "{out}"
    );

    // The expected value from the JSON cocos-measure prints.
    let mut a = args.clone();
    let expected_json = f.dir.join("expected-measure.json");
    a[7] = expected_json.to_str().unwrap();
    assert_eq!(cli(&a).0, 0);

    // The expected value from a release.json, picked by the launch's settings.
    let release = d.path().join("release.json");
    let digest = |vcpus: u32, t: &str, m: &str| serde_json::json!({"vcpu_type": t, "vcpus": vcpus, "guest_features": "0x1", "digest": m});
    std::fs::write(
        &release,
        serde_json::json!({"schema": 1, "measurements": {"snp": {"digests": [
            digest(1, "EPYC-Milan", &"11".repeat(48)),
            digest(4, "EPYC-Milan", m),
            digest(4, "EPYC-Genoa", &"22".repeat(48)),
        ]}}})
        .to_string(),
    )
    .unwrap();
    let mut a = args.clone();
    a[7] = release.to_str().unwrap();
    let pick = |extra: &[&str]| cli(&[&a[..], extra].concat());
    assert_eq!(pick(&["--vcpus", "4", "--vcpu-type", "EPYC-Milan"]).0, 0);
    let (code, out, _) = pick(&["--vcpus", "1", "--vcpu-type", "EPYC-Milan"]);
    assert_eq!(code, 1);
    assert!(out.contains("NOT VERIFIED: measurement"), "{out}");
    let (code, _, err) = pick(&["--vcpus", "4"]);
    assert_eq!(code, 2, "two digests match");
    assert!(
        err.contains("choose one with --vcpus and --vcpu-type"),
        "{err}"
    );

    // Unusable input: exit 2, one line on stderr, nothing on stdout.
    let bytes = std::fs::read(&report).unwrap();
    let truncated = d.path().join("truncated.bin");
    std::fs::write(&truncated, &bytes[..1000]).unwrap();
    let mut version9 = bytes.clone();
    version9[0] = 9;
    let v9 = d.path().join("v9.bin");
    std::fs::write(&v9, &version9).unwrap();
    for (bad, needle) in [(&truncated, "1184 bytes"), (&v9, "version 9")] {
        let a = base(bad);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, out, err) = cli(&a);
        assert_eq!(code, 2, "{err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // No nonce binding given: refused rather than silently unchecked.
    let (code, _, err) = cli(&args[..args.len() - 4]
        .iter()
        .chain(&["--now", now])
        .copied()
        .collect::<Vec<_>>());
    assert_eq!(code, 2);
    assert!(err.contains("--nonce"), "{err}");
    // A VLEK without its ASVK chain.
    let g = load("trustee-milan-vlek");
    let r = g.dir.join("report.bin");
    let k = g.dir.join("vlek.der");
    let (code, _, err) = cli(&[
        "verify",
        "snp",
        "--report",
        r.to_str().unwrap(),
        "--vlek",
        k.to_str().unwrap(),
        "--expected",
        g.meta["measurement"].as_str().unwrap(),
        "--any-report-data",
        "--vmpl",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("ASVK") && err.contains("--chain"), "{err}");
}

/// The same checks over a chain a test made (cocos_testkit::snp_evidence): trusted only
/// when its root is given as the trust anchor, refused under AMD's roots.
#[test]
fn a_test_chain_verifies_only_under_its_own_anchor() {
    use cocos_testkit::snp_evidence::{report_data, TestChain};
    let chain = TestChain::new();
    let measurement = [0x5a; 48];
    let report = chain.report(&measurement, &report_data(b"nonce"));
    let table = snp::CertTable::parse(&chain.cert_table()).unwrap();
    let certs = |anchor: bool| Certs {
        vek: Some(Cert::from_der(table.vcek.as_ref().unwrap()).unwrap()),
        chain: vec![Cert::from_der(table.ask.as_ref().unwrap()).unwrap()],
        trust_anchor: anchor.then(|| Cert::from_pem(chain.root_pem.as_bytes()).unwrap()),
        crl: None,
    };
    let exp = Expectations {
        measurement: Some(measurement),
        report_data: Some(report_data(b"nonce")),
        now: parse_time("2030-01-01T00:00:00Z").unwrap(),
        ..Expectations::default()
    };
    let v = snp::verify(&report, &certs(true), &exp).unwrap();
    assert!(v.verified, "{:?}", v.first_failure());
    assert_eq!(v.chain, ["TEST-ARK", "TEST-ASK", "SEV-VCEK"]);
    // Without the anchor the chain is nobody's: unusable, not "verified".
    let e = snp::verify(&report, &certs(false), &exp)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an AMD SEV-SNP signing key"), "{e}");
    // Another test chain's root does not sign this one.
    let other = TestChain::new();
    let mut c = certs(true);
    c.trust_anchor = Some(Cert::from_pem(other.root_pem.as_bytes()).unwrap());
    let v = snp::verify(&report, &c, &exp).unwrap();
    assert_eq!(failed(&v), ["intermediate_signed_by_root"]);
}

/// A revocation list: signed by the root and current, it revokes what it lists; one
/// signed by another root, or out of date, fails its own check.
#[test]
fn revocation_lists_are_checked() {
    use cocos_measure::verify::amd::Crl;
    use cocos_testkit::snp_evidence::{report_data, TestChain};
    let chain = TestChain::new();
    let report = chain.report(&[1; 48], &report_data(b"n"));
    let table = snp::CertTable::parse(&chain.cert_table()).unwrap();
    let certs = |crl: Option<Vec<u8>>| Certs {
        vek: Some(Cert::from_der(table.vcek.as_ref().unwrap()).unwrap()),
        chain: vec![Cert::from_der(table.ask.as_ref().unwrap()).unwrap()],
        trust_anchor: Some(Cert::from_pem(chain.root_pem.as_bytes()).unwrap()),
        crl: crl.map(|c| Crl::from_bytes(&c).unwrap()),
    };
    let exp = |year: &str| Expectations {
        measurement: Some([1; 48]),
        report_data: Some(report_data(b"n")),
        now: parse_time(&format!("{year}-06-01T00:00:00Z")).unwrap(),
        ..Expectations::default()
    };
    let v = snp::verify(&report, &certs(Some(chain.crl(false))), &exp("2030")).unwrap();
    assert!(v.verified, "{:?}", v.first_failure());
    assert!(v.checks.iter().any(|c| c.name == "not_revoked" && c.ok));
    let v = snp::verify(&report, &certs(Some(chain.crl(true))), &exp("2030")).unwrap();
    assert_eq!(failed(&v), ["not_revoked"]);
    assert!(v.first_failure().unwrap().detail.contains("SEV-VCEK"));
    let other = TestChain::new();
    let v = snp::verify(&report, &certs(Some(other.crl(false))), &exp("2030")).unwrap();
    assert_eq!(failed(&v), ["crl_signed_by_root"]);
    let v = snp::verify(&report, &certs(Some(chain.crl(false))), &exp("2045")).unwrap();
    assert!(failed(&v).contains(&"crl_current"), "{:?}", failed(&v));
    assert!(Crl::from_bytes(b"not a crl").is_err());
}

/// A certificate that looks like PEM but whose body is a truncated DER header: once made
/// the `der` crate's PEM reader loop forever (found by the cert_table fuzz target); it
/// must be refused, quickly.
#[test]
fn truncated_pem_certificates_are_refused_quickly() {
    let inputs: [&[u8]; 3] = [
        b"-----BEGIN CERTIFICATE-----\nMIIG\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERATIFICATE-----\nMIIGiT3+LPokji905Dxob8XfKH-----BEGIN CERTIFICATE-----\nMIIG\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
    ];
    for input in inputs {
        let (tx, rx) = std::sync::mpsc::channel();
        let owned = input.to_vec();
        std::thread::spawn(move || {
            let a = Cert::from_bytes(&owned).is_err();
            let b = Cert::all_from_bytes(&owned).is_err();
            let _ = tx.send((a, b));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            got,
            Ok((true, true)),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}
