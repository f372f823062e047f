//! `cocos-measure reference-values` and `id-block` end to end: CoRIM round trips on
//! random release.json / matrix values read back by corim-rs (our decoder) and by an
//! independent reader (scripts/corim-check: Microsoft's `corim` crate, its own CBOR,
//! RustCrypto ECDSA); COSE_Sign1 signatures checked with coset + p384/p256 (not the
//! OpenSSL that signs) and refused after any one-byte change; the cocos policy checked
//! field by field against go-sev-guest's and go-tdx-guest's protos; bad input is one
//! line and exit 2 with no output file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use cocos_measure::reference::corim;
use cocos_measure::reference::{ReferenceValues, TeeKind};
use coset::{CborSerializable, TaggedCborSerializable};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Vec<u8> {
    let out = cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hex48(rng: &mut impl Rng) -> String {
    let mut b = [0u8; 48];
    rng.fill(&mut b[..]);
    hex::encode(b)
}

/// A release.json with random SNP digests and TDX registers (one RTMR0 left as the
/// sentence release.json writes when it depends on the host).
fn random_release(rng: &mut impl Rng) -> Value {
    let types = ["EPYC", "EPYC-v4", "EPYC-Milan", "EPYC-Genoa"];
    let mut digests = Vec::new();
    for t in types.iter().take(rng.gen_range(1..=4)) {
        for vcpus in [1, rng.gen_range(2..=64)] {
            digests.push(json!({"vcpu_type": t, "vcpus": vcpus,
                "guest_features": format!("{:#x}", [1u64, 0x21][rng.gen_range(0..2)]),
                "digest": hex48(rng)}));
        }
    }
    let mut launches = Vec::new();
    for mem in ["2G", "4G", "16G"].iter().take(rng.gen_range(1..=3)) {
        let rtmr0 = if rng.gen() {
            json!(hex48(rng))
        } else {
            json!("depends on the host's QEMU ACPI tables and boot variables")
        };
        launches.push(
            json!({"memory": mem, "qemu_version": "10.1", "mrtd": hex48(rng),
            "rtmr0": rtmr0, "rtmr1": hex48(rng), "rtmr2": hex48(rng), "rtmrs_extended": true}),
        );
    }
    json!({"name": "rand", "version": format!("0.{}", rng.gen::<u16>()),
        "measurements": {"snp": {"digests": digests}, "tdx": {"launches": launches}}})
}

/// scripts/corim-check, built once into target/corim-check.
fn corim_check() -> PathBuf {
    let root = cocos_testkit::workspace_root();
    let target = root.join("target/corim-check");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "--locked", "--manifest-path"])
        .arg(root.join("scripts/corim-check/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "building scripts/corim-check failed");
    target.join("debug/corim-check")
}

fn check_independently(file: &Path, key: Option<&Path>) -> (Option<i32>, Value) {
    let mut cmd = Command::new(corim_check());
    cmd.arg(file);
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "corim-check {}: {e}; stderr {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// What the independent reader saw, in our terms: for each CoMID (tag-id) the
/// measurement digests and RTMRs.
fn values_seen(v: &Value, tee: TeeKind, id: &str) -> ReferenceValues {
    let mut out = ReferenceValues {
        id: id.to_owned(),
        ..Default::default()
    };
    let prefix = format!("{id}/{}/", tee.name());
    for c in v["comids"].as_array().unwrap() {
        let label = c["tag_id"].as_str().unwrap().strip_prefix(&prefix).unwrap();
        let triples = c["triples"].as_array().unwrap();
        let find = |mkey: Value| {
            triples[0]["measurements"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mkey"] == mkey)
                .cloned()
        };
        let digest = |m: &Value| {
            let d = &m["digests"][0];
            assert_eq!(d[0], 7, "sha-384 algorithm id");
            let mut b = [0u8; 48];
            hex::decode_to_slice(d[1].as_str().unwrap(), &mut b).unwrap();
            b
        };
        match tee {
            TeeKind::Snp => {
                // Two triples: VCEK- and VLEK-signed reports, the same claims.
                let classes: Vec<&str> = triples
                    .iter()
                    .map(|t| t["class_id_oid"].as_str().unwrap())
                    .collect();
                assert_eq!(classes, [corim::SNP_CLASS_VCEK, corim::SNP_CLASS_VLEK]);
                assert_eq!(triples[0]["measurements"], triples[1]["measurements"]);
                let m = find(json!(641)).expect("MEASUREMENT (mkey 641)");
                out.snp.push(cocos_measure::reference::SnpReference::new(
                    label,
                    digest(&m),
                ));
            }
            TeeKind::Tdx => {
                assert_eq!(triples[0]["vendor"], corim::TDX_VENDOR);
                assert_eq!(triples[0]["model"], corim::TDX_MODEL);
                let mrtd = digest(&find(json!(83)).expect("MRTD (mkey 83)"));
                let mut rtmrs = [None; 4];
                if let Some(r) = find(json!("rtmrs")) {
                    for (k, d) in r["integrity_registers"].as_object().unwrap() {
                        rtmrs[k.parse::<usize>().unwrap()] = Some(digest(&json!({"digests": d})));
                    }
                }
                out.tdx.push(cocos_measure::reference::TdxReference {
                    label: label.to_owned(),
                    mrtd,
                    rtmrs,
                    xfam: None,
                    attributes: None,
                });
            }
        }
    }
    out
}

#[test]
fn corim_round_trips_through_two_independent_readers() {
    let seed = cocos_testkit::seed("reference-values");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let release = random_release(&mut rng);
        let input = dir.path().join(format!("release{round}.json"));
        std::fs::write(&input, serde_json::to_vec(&release).unwrap()).unwrap();
        let expected = ReferenceValues::from_json(&release, "unused").unwrap();
        for tee in [TeeKind::Snp, TeeKind::Tdx] {
            let out = dir.path().join(format!("r{round}.{}.corim", tee.name()));
            ok(&[
                "reference-values",
                input.to_str().unwrap(),
                "--tee",
                tee.name(),
                "-o",
                out.to_str().unwrap(),
            ]);
            let bytes = std::fs::read(&out).unwrap();
            // corim-rs (the encoder's own library) reads back exactly release.json's values.
            let d = corim::decode(&bytes).unwrap();
            assert_eq!(d.tee, tee);
            assert_eq!(d.values.id, expected.id);
            let mut want = expected.clone();
            match tee {
                TeeKind::Snp => want.tdx.clear(),
                TeeKind::Tdx => want.snp.clear(),
            }
            want.unsupported.clear();
            assert_eq!(d.values, want, "seed {seed}");
            // Microsoft's corim crate decodes and validates it and sees the same values.
            let (code, seen) = check_independently(&out, None);
            assert_eq!(code, Some(0), "{seen}");
            assert_eq!(seen["signature"], "unsigned");
            match tee {
                TeeKind::Snp => assert_eq!(seen["profile"]["uri"], corim::SNP_PROFILE),
                TeeKind::Tdx => assert_eq!(seen["profile"]["oid"], corim::INTEL_PROFILE),
            }
            assert_eq!(seen["id"], format!("{}/{}", expected.id, tee.name()));
            assert_eq!(values_seen(&seen, tee, &expected.id), want, "seed {seed}");
        }
    }
}

fn public_pem(key: &Path, dir: &Path) -> PathBuf {
    let pem = std::fs::read(key).unwrap();
    let k = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    let p = dir.join(format!(
        "{}.pub.pem",
        key.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, k.public_key_to_pem().unwrap()).unwrap();
    p
}

#[test]
fn signed_corim_verifies_and_fails_after_any_one_byte_change() {
    let seed = cocos_testkit::seed("signed-corim");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("release.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&random_release(&mut rng)).unwrap(),
    )
    .unwrap();
    for (name, nid, alg) in [
        (
            "p384",
            openssl::nid::Nid::SECP384R1,
            coset::iana::Algorithm::ES384,
        ),
        (
            "p256",
            openssl::nid::Nid::X9_62_PRIME256V1,
            coset::iana::Algorithm::ES256,
        ),
    ] {
        let k = cocos_testkit::keys::ec_key_file(dir.path(), &format!("{name}.pem"), nid, 0o600);
        let out = dir.path().join(format!("{name}.corim"));
        ok(&[
            "reference-values",
            input.to_str().unwrap(),
            "--tee",
            "snp",
            "--sign-key",
            k.to_str().unwrap(),
            "--signer",
            "test release",
            "-o",
            out.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..1], [0xd2], "CBOR tag 18 (COSE_Sign1)");
        let sign1 = coset::CoseSign1::from_tagged_slice(&bytes).unwrap();
        assert_eq!(
            sign1.protected.header.alg,
            Some(coset::RegisteredLabelWithPrivate::Assigned(alg))
        );
        assert_eq!(
            sign1.protected.header.content_type,
            Some(coset::RegisteredLabel::Text("application/rim+cbor".into()))
        );
        let sec1 = cocos_testkit::keys::public_sec1(&k);
        assert!(
            cocos_testkit::cose::verifies(&sign1, &sec1),
            "{name}: signature does not verify"
        );
        // The payload is the tagged unsigned CoRIM our decoder reads.
        let d = corim::decode(&bytes).unwrap();
        assert_eq!(d.signer.as_deref(), Some("test release"));
        // Another key does not verify it.
        let other =
            cocos_testkit::keys::ec_key_file(dir.path(), &format!("other-{name}.pem"), nid, 0o600);
        assert!(!cocos_testkit::cose::verifies(
            &sign1,
            &cocos_testkit::keys::public_sec1(&other)
        ));
        // The independent reader checks it with its own Sig_structure and ECDSA.
        let (code, seen) = check_independently(&out, Some(&public_pem(&k, dir.path())));
        assert_eq!((code, seen["signature"].as_str()), (Some(0), Some("valid")));
        let (code, seen) = check_independently(&out, Some(&public_pem(&other, dir.path())));
        assert_eq!(
            (code, seen["signature"].as_str()),
            (Some(1), Some("invalid"))
        );
        // Every single-byte change of the signed file is refused: it no longer parses,
        // or its signature no longer verifies. (All of the protected header, payload and
        // signature; a sample of positions when the file is large.)
        let step = (bytes.len() / 400).max(1);
        for i in (0..bytes.len()).step_by(step) {
            let mut b = bytes.clone();
            b[i] ^= 1 << rng.gen_range(0..8);
            if let Ok(s) = coset::CoseSign1::from_tagged_slice(&b) {
                assert!(
                    !cocos_testkit::cose::verifies(&s, &sec1),
                    "{name}: byte {i} changed, still verifies (seed {seed})"
                );
            }
        }
        // Explicitly: one payload byte, one protected-header byte, one signature byte.
        let mut s = sign1.clone();
        let n = s.payload.as_ref().unwrap().len();
        s.payload.as_mut().unwrap()[n / 2] ^= 1;
        assert!(!cocos_testkit::cose::verifies(&s, &sec1));
        let mut s = sign1.clone();
        s.signature[0] ^= 1;
        assert!(!cocos_testkit::cose::verifies(&s, &sec1));
        let mut s = sign1.clone();
        s.protected.original_data.as_mut().unwrap()[1] ^= 1;
        assert!(!cocos_testkit::cose::verifies(&s, &sec1));
        let _ = s.to_vec();
    }
}

fn b64_decode(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

#[test]
fn cocos_policy_matches_the_protos_cocos_reads() {
    let seed = cocos_testkit::seed("cocos-policy");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let release = random_release(&mut rng);
    let input = dir.path().join("release.json");
    std::fs::write(&input, serde_json::to_vec(&release).unwrap()).unwrap();
    let values = ReferenceValues::from_json(&release, "x").unwrap();
    for (i, r) in values.snp.iter().enumerate() {
        let product = ["milan", "genoa", "turin"][i % 3];
        let p: Value = serde_json::from_slice(&ok(&[
            "reference-values",
            input.to_str().unwrap(),
            "--tee",
            "snp",
            "--format",
            "cocos-policy",
            "--launch",
            &r.label,
            "--product",
            product,
        ]))
        .unwrap();
        cocos_testkit::cocos_policy::check_snp(&p);
        assert_eq!(b64_decode(&p["policy"]["measurement"]), r.measurement);
        assert_eq!(p["policy"]["policy"], "196608");
        assert_eq!(p["policy"]["vmpl"], 0);
        assert_eq!(b64_decode(&p["policy"]["reportIdMa"]), [0xff; 32]);
        assert_eq!(
            p["rootOfTrust"]["productLine"]
                .as_str()
                .unwrap()
                .to_lowercase(),
            product
        );
    }
    for r in &values.tdx {
        let out = cli(&[
            "reference-values",
            input.to_str().unwrap(),
            "--tee",
            "tdx",
            "--format",
            "cocos-policy",
            "--launch",
            &r.label,
        ]);
        assert!(out.status.success());
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        cocos_testkit::cocos_policy::check_tdx(&p);
        let body = &p["policy"]["tdQuoteBodyPolicy"];
        assert_eq!(b64_decode(&body["mrTd"]), r.mrtd);
        match r.rtmrs[0] {
            Some(r0) => {
                assert_eq!(b64_decode(&body["rtmrs"][0]), r0);
                assert_eq!(b64_decode(&body["rtmrs"][1]), r.rtmrs[1].unwrap());
                assert_eq!(b64_decode(&body["rtmrs"][3]), [0; 48]);
            }
            // RTMR0 unknown: rtmrs (all four or nothing) left out, and said so.
            None => {
                assert!(body.get("rtmrs").is_none());
                assert!(String::from_utf8_lossy(&out.stderr).contains("RTMR0"));
            }
        }
        // XFAM and TDATTRIBUTES, when stated, as the quote carries them (little-endian).
        let p2: Value = serde_json::from_slice(&ok(&[
            "reference-values",
            input.to_str().unwrap(),
            "--tee",
            "tdx",
            "--format",
            "cocos-policy",
            "--launch",
            &r.label,
            "--xfam",
            "0x2e7",
            "--td-attributes",
            "0x10000000",
        ]))
        .unwrap();
        cocos_testkit::cocos_policy::check_tdx(&p2);
        assert_eq!(
            b64_decode(&p2["policy"]["tdQuoteBodyPolicy"]["xfam"]),
            0x2e7u64.to_le_bytes()
        );
        assert_eq!(
            b64_decode(&p2["policy"]["tdQuoteBodyPolicy"]["tdAttributes"]),
            0x1000_0000u64.to_le_bytes()
        );
        assert_eq!(
            b64_decode(&p["policy"]["headerPolicy"]["qeVendorId"]),
            hex::decode("939a7233f79c4ca9940a0db3957f0607").unwrap()
        );
    }
    // With an ID block: its fields and key digests are pinned.
    let idk =
        cocos_testkit::keys::ec_key_file(dir.path(), "id.pem", openssl::nid::Nid::SECP384R1, 0o600);
    let label = &values.snp[0].label;
    let m = hex::encode(values.snp[0].measurement);
    let idb = dir.path().join("idb.json");
    ok(&[
        "id-block",
        "--measurement",
        &m,
        "--id-key",
        idk.to_str().unwrap(),
        "--family-id",
        "0102030405060708090a0b0c0d0e0f10",
        "--json",
        "-o",
        idb.to_str().unwrap(),
    ]);
    let p: Value = serde_json::from_slice(&ok(&[
        "reference-values",
        input.to_str().unwrap(),
        "--tee",
        "snp",
        "--format",
        "cocos-policy",
        "--launch",
        label,
        "--id-block",
        idb.to_str().unwrap(),
    ]))
    .unwrap();
    cocos_testkit::cocos_policy::check_snp(&p);
    assert_eq!(p["policy"]["requireIdBlock"], true);
    assert_eq!(
        b64_decode(&p["policy"]["familyId"]),
        hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap()
    );
    let j: Value = serde_json::from_slice(&std::fs::read(&idb).unwrap()).unwrap();
    assert_eq!(
        hex::encode(b64_decode(&p["policy"]["trustedIdKeyHashes"][0])),
        j["id_key_digest"].as_str().unwrap()
    );
}

/// One line on stderr, exit 2, nothing on stdout, no output file.
fn refused(args: &[&str], out_file: &Path, needle: &str) {
    let out = cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"));
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!out_file.exists(), "{args:?} left {}", out_file.display());
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(cocos_testkit::seed("reference-bad"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("release.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&random_release(&mut rng)).unwrap(),
    )
    .unwrap();
    let input = input.to_str().unwrap();
    let out = d.join("out.corim");
    let o = out.to_str().unwrap();
    let open = cocos_testkit::keys::ec_key_file(d, "open.pem", openssl::nid::Nid::SECP384R1, 0o644);
    let p256 =
        cocos_testkit::keys::ec_key_file(d, "p256.pem", openssl::nid::Nid::X9_62_PRIME256V1, 0o600);
    let rsa = d.join("rsa.pem");
    std::fs::write(
        &rsa,
        openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&rsa, std::fs::Permissions::from_mode(0o600)).unwrap();
    let notjson = d.join("notjson");
    std::fs::write(&notjson, b"\x00\x01garbage").unwrap();
    let m = hex::encode([7u8; 48]);

    refused(
        &[
            "reference-values",
            input,
            "--tee",
            "snp",
            "--sign-key",
            open.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "chmod 600",
    );
    refused(
        &[
            "reference-values",
            input,
            "--tee",
            "snp",
            "--sign-key",
            rsa.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "RSA key",
    );
    refused(
        &["reference-values", input, "-o", o],
        &out,
        "choose --tee snp or --tee tdx",
    );
    refused(
        &[
            "reference-values",
            input,
            "--tee",
            "snp",
            "--launch",
            "vcpus=999",
            "-o",
            o,
        ],
        &out,
        "no launch configuration",
    );
    refused(
        &[
            "reference-values",
            input,
            "--tee",
            "snp",
            "--format",
            "cocos-policy",
            "-o",
            o,
        ],
        &out,
        "choose with --launch",
    );
    refused(
        &["reference-values", notjson.to_str().unwrap(), "-o", o],
        &out,
        "not JSON",
    );
    refused(
        &[
            "reference-values",
            "--read",
            notjson.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "CoRIM",
    );
    refused(
        &[
            "reference-values",
            input,
            "--tee",
            "snp",
            "--host-data",
            "zz",
            "-o",
            o,
        ],
        &out,
        "--host-data",
    );
    refused(
        &[
            "id-block",
            "--measurement",
            &m,
            "--id-key",
            p256.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "P-384",
    );
    refused(
        &[
            "id-block",
            "--measurement",
            &m,
            "--id-key",
            open.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "chmod 600",
    );
    refused(
        &[
            "id-block",
            "--measurement",
            "abcd",
            "--id-key",
            p256.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "96 hex digits",
    );
    refused(
        &[
            "id-block",
            "--measurement",
            &m,
            "--policy",
            "0x10000",
            "--id-key",
            p256.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "bit 17",
    );
    refused(
        &[
            "id-block",
            "--measurement",
            &m,
            "--family-id",
            "00",
            "--id-key",
            p256.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "--family-id",
    );
    // A key is never echoed.
    let pem = std::fs::read_to_string(&p256).unwrap();
    let body = pem.lines().nth(1).unwrap();
    let e = cli(&[
        "id-block",
        "--measurement",
        &m,
        "--id-key",
        p256.to_str().unwrap(),
    ]);
    assert!(!String::from_utf8_lossy(&e.stderr).contains(body));
}
