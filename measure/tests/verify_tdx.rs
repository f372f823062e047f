//! `cocos-measure verify tdx` on a genuine TDX quote with Intel's collateral
//! (tests/data/evidence/tdx/dcap-qvl-sample, MIT, see NOTICE): it verifies at a time
//! inside the collateral's window, and fails with the right check named when one byte
//! of the signed body, the signature or the collateral changes, when the time is
//! outside the window, or when a register or the nonce binding differs. A truncated
//! quote or broken collateral is exit 2 with one line.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // helpers too

use std::path::PathBuf;
use std::process::Command;

use cocos_measure::verify::tdx::{self, Collateral, Expectations};
use cocos_measure::verify::{parse_time, Verdict};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/evidence/tdx/dcap-qvl-sample")
}

fn meta() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap()
}

fn h48(v: &Value) -> [u8; 48] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

struct Case {
    quote: Vec<u8>,
    collateral: Vec<u8>,
    exp: Expectations,
}

fn genuine() -> Case {
    let m = meta();
    Case {
        quote: std::fs::read(dir().join("quote.bin")).unwrap(),
        collateral: std::fs::read(dir().join("collateral.json")).unwrap(),
        exp: Expectations {
            mrtd: Some(h48(&m["mrtd"])),
            rtmr: [
                Some(h48(&m["rtmr0"])),
                Some(h48(&m["rtmr1"])),
                Some(h48(&m["rtmr2"])),
                Some(h48(&m["rtmr3"])),
            ],
            report_data: Some(
                hex::decode(m["report_data"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            ),
            xfam: Some(
                hex::decode(m["xfam"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            ),
            now: parse_time(m["now"].as_str().unwrap()).unwrap(),
            ..Expectations::default()
        },
    }
}

fn run(c: &Case) -> Verdict {
    tdx::verify(
        &c.quote,
        &Collateral::from_json(&c.collateral).unwrap(),
        &c.exp,
    )
    .unwrap()
}

fn failed(v: &Verdict) -> Vec<&'static str> {
    v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
}

#[test]
fn the_genuine_quote_verifies_inside_its_collateral_window() {
    let v = run(&genuine());
    assert!(v.verified, "{:?}", v.first_failure());
    assert_eq!(v.evidence["tcb_status"], "UpToDate");
    assert_eq!(v.evidence["quote_version"], 4);
}

#[test]
fn one_changed_byte_in_each_region_fails_the_check_for_that_region() {
    let m = meta();
    for key in ["signed_body_byte", "signature_byte"] {
        let mut c = genuine();
        let at = m["mutations"][key].as_u64().unwrap() as usize;
        c.quote[at] ^= 1;
        let f = failed(&run(&c));
        assert!(
            f.contains(&"quote_signature_and_collateral"),
            "{key}: {f:?}"
        );
    }
    // A certificate: one base64 character of the PCK certificate the quote carries.
    let mut c = genuine();
    let at = c
        .quote
        .windows(27)
        .position(|w| w == b"-----BEGIN CERTIFICATE-----")
        .unwrap()
        + 28
        + 200;
    c.quote[at] = if c.quote[at] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        failed(&run(&c)),
        ["quote_signature_and_collateral"],
        "certificate"
    );
    // The collateral: one character of the signed TCB info.
    let mut c = genuine();
    let mut v: Value = serde_json::from_slice(&c.collateral).unwrap();
    let tcb = v["tcb_info"]
        .as_str()
        .unwrap()
        .replacen("\"version\":3", "\"version\":4", 1);
    assert_ne!(tcb, v["tcb_info"].as_str().unwrap());
    v["tcb_info"] = tcb.into();
    c.collateral = serde_json::to_vec(&v).unwrap();
    assert_eq!(failed(&run(&c)), ["quote_signature_and_collateral"]);
    // Outside the collateral's window: the collateral is unusable (exit 2), named.
    for t in ["2025-06-01T00:00:00Z", "2025-08-01T00:00:00Z"] {
        let mut c = genuine();
        c.exp.now = parse_time(t).unwrap();
        let e = tdx::verify(
            &c.quote,
            &Collateral::from_json(&c.collateral).unwrap(),
            &c.exp,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("TCB info is valid 2025-06-19T10:16:03Z to 2025-07-19T10:16:03Z"),
            "{t}: {e}"
        );
    }
    // Each register and the nonce binding.
    for i in 0..4 {
        let mut c = genuine();
        c.exp.rtmr[i].as_mut().unwrap()[0] ^= 1;
        assert_eq!(failed(&run(&c)), [["rtmr0", "rtmr1", "rtmr2", "rtmr3"][i]]);
    }
    let mut c = genuine();
    c.exp.mrtd.as_mut().unwrap()[47] ^= 1;
    let v = run(&c);
    assert_eq!(failed(&v), ["mrtd"]);
    assert_eq!(
        v.first_failure().unwrap().seen.as_deref(),
        m["mrtd"].as_str()
    );
    let mut c = genuine();
    c.exp.report_data = Some(cocos_measure::verify::snp::report_data_for_nonce(
        b"another request",
    ));
    assert_eq!(failed(&run(&c)), ["report_data"]);
    let mut c = genuine();
    c.exp.xfam = Some([0; 8]);
    assert_eq!(failed(&run(&c)), ["xfam"]);
    let mut c = genuine();
    c.exp.mr_seam = vec![[0; 48]];
    assert_eq!(failed(&run(&c)), ["mr_seam"]);
}

#[test]
fn unusable_input_is_exit_2_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let m = meta();
    let quote = std::fs::read(dir().join("quote.bin")).unwrap();
    let short = d.path().join("short.bin");
    std::fs::write(&short, &quote[..600]).unwrap();
    let broken = d.path().join("broken.json");
    std::fs::write(&broken, b"{\"tcb_info\": 1}").unwrap();
    let good_quote = dir().join("quote.bin");
    let good_coll = dir().join("collateral.json");
    let cases = [
        (short.as_path(), good_coll.as_path(), "not a DCAP quote"),
        (good_quote.as_path(), broken.as_path(), "collateral"),
    ];
    for (q, c, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
            .args(["verify", "tdx", "--quote"])
            .arg(q)
            .arg("--collateral")
            .arg(c)
            .args([
                "--mrtd",
                m["mrtd"].as_str().unwrap(),
                "--any-report-data",
                "--now",
                "2025-07-01T00:00:00Z",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(out.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // Expired collateral: unusable, exit 2, and it says what to fetch.
    let out = Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
        .args(["verify", "tdx", "--quote"])
        .arg(&good_quote)
        .arg("--collateral")
        .arg(&good_coll)
        .args([
            "--mrtd",
            m["mrtd"].as_str().unwrap(),
            "--any-report-data",
            "--now",
            "2026-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fetch current collateral"), "{err}");
    // A genuine quote that shows another launch: exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
        .args(["verify", "tdx", "--quote"])
        .arg(&good_quote)
        .arg("--collateral")
        .arg(&good_coll)
        .args([
            "--mrtd",
            &"00".repeat(48),
            "--any-report-data",
            "--now",
            "2025-07-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("TDX quote: NOT VERIFIED: mrtd"));
}
