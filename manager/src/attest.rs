//! Verifying the attestation a guest's agent returns, before the event is stored: the
//! report or quote (and the SNP certificate table the agent sends with it) against the
//! launch's expected measurement and the nonces this manager sent, with
//! `cocos-measure`'s verifier. The verdict goes into the attestation event's details
//! (`verdict`), so an operator sees "verified" or exactly which check failed. The guest
//! is hostile: every field it sends is parsed with bounds, and anything unusable gives
//! a verdict that says so, never a panic or a lost event. Trust settings (TDX
//! collateral, extra SNP intermediates) come from files given at start; nothing is
//! fetched from the network.

use std::path::Path;

use cocos_measure::verify::amd::Cert;
use cocos_measure::verify::snp::{self, CertTable, Certs};
use cocos_measure::verify::tdx::{self, Collateral};
use cocos_measure::verify::Verdict;
use serde_json::{json, Value};

use crate::expected::ExpectedMeasurement;
use crate::reference::LaunchFacts;

/// What the manager trusts when it verifies.
#[derive(Debug, Default)]
pub struct Verifier {
    tdx_collateral: Option<Collateral>,
    snp_chain: Vec<Cert>,
    test_anchor: Option<Cert>,
}

/// Why the trust settings cannot be used (exit 2 at start).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustError(String);

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|e| TrustError(format!("{what} {}: {e}", path.display())))
}

impl Verifier {
    /// Loads the TDX collateral and the extra SNP certificates, and (tests only) a
    /// root that replaces AMD's.
    pub fn load(
        tdx_collateral: Option<&Path>,
        snp_chain: Option<&Path>,
        test_anchor: Option<&Path>,
    ) -> Result<Self, TrustError> {
        let tdx_collateral = match tdx_collateral {
            Some(p) => Some(
                Collateral::from_json(&read(p, "--tdx-collateral")?)
                    .map_err(|e| TrustError(format!("--tdx-collateral {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let snp_chain = match snp_chain {
            Some(p) => Cert::all_from_bytes(&read(p, "--snp-chain")?)
                .map_err(|e| TrustError(format!("--snp-chain {}: {e}", p.display())))?,
            None => Vec::new(),
        };
        let test_anchor = match test_anchor {
            Some(p) => Some(
                Cert::from_bytes(&read(p, "--insecure-test-trust-anchor")?).map_err(|e| {
                    TrustError(format!("--insecure-test-trust-anchor {}: {e}", p.display()))
                })?,
            ),
            None => None,
        };
        Ok(Self {
            tdx_collateral,
            snp_chain,
            test_anchor,
        })
    }

    /// Whether a test root replaces AMD's (every verdict then says so).
    pub fn is_test(&self) -> bool {
        self.test_anchor.is_some()
    }

    /// The verdict for one attestation event's details, at `now` (seconds since the
    /// epoch), given the launch's expected measurement and the nonces sent (newest
    /// last).
    pub fn verdict(
        &self,
        expected: &ExpectedMeasurement,
        facts: &LaunchFacts,
        nonces: &[Vec<u8>],
        details: &Value,
        now: i64,
    ) -> Value {
        let mut v = match self.check(expected, facts, nonces, details, now) {
            Ok(verdict) => {
                let first = verdict
                    .first_failure()
                    .map(|c| format!("{}: {}", c.name, c.detail));
                let mut v = serde_json::to_value(&verdict).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "summary".into(),
                        match first {
                            None => "verified".into(),
                            Some(f) => format!("NOT verified: {f}").into(),
                        },
                    );
                }
                v
            }
            Err(why) => {
                json!({"verified": false, "summary": format!("not verified: {why}"), "error": why})
            }
        };
        if self.is_test() {
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "trust_anchor".into(),
                    "TEST ANCHOR from --insecure-test-trust-anchor: not AMD's or Intel's root"
                        .into(),
                );
            }
        }
        v
    }

    fn check(
        &self,
        expected: &ExpectedMeasurement,
        facts: &LaunchFacts,
        nonces: &[Vec<u8>],
        details: &Value,
        now: i64,
    ) -> Result<Verdict, String> {
        let blob = |k: &str| -> Result<Option<Vec<u8>>, String> {
            match details.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.len() <= 2 << 20 => hex::decode(s)
                    .map(Some)
                    .map_err(|e| format!("the agent's {k:?} is not hex ({e})")),
                Some(_) => Err(format!(
                    "the agent's {k:?} is not a hex string of at most 1 MiB"
                )),
            }
        };
        let evidence = blob("report")?.ok_or("the agent sent no report")?;
        // REPORT_DATA must bind one of the nonces sent: the one it matches, else the
        // newest (whose check then fails).
        let bound = |rd: &[u8]| {
            nonces
                .iter()
                .map(|n| snp::report_data_for_nonce(n))
                .find(|d| d[..] == *rd)
                .or_else(|| nonces.last().map(|n| snp::report_data_for_nonce(n)))
        };
        match expected {
            ExpectedMeasurement::None { .. } => Err(
                "this launch has no TEE measurement to compare (launched without --tee / --measure-as)".into(),
            ),
            ExpectedMeasurement::Snp(m) => {
                let mut certs = Certs {
                    chain: self.snp_chain.clone(),
                    trust_anchor: self.test_anchor.clone(),
                    ..Certs::default()
                };
                if let Some(table) = blob("certs")? {
                    let t = CertTable::parse(&table).map_err(|e| e.to_string())?;
                    let one = |b: Option<Vec<u8>>| b.map(|d| Cert::from_bytes(&d)).transpose();
                    certs.vek = one(t.vcek).map_err(|e| format!("VCEK: {e}"))?
                        .or(one(t.vlek).map_err(|e| format!("VLEK: {e}"))?);
                    certs.chain.extend(one(t.ask).map_err(|e| format!("ASK: {e}"))?);
                }
                let rd = evidence.get(0x50..0x90).unwrap_or_default();
                // The launch's host data and ID block are part of what it must show.
                let values = crate::reference::reference_values("", expected, facts)?;
                let r = values.as_ref().and_then(|v| v.snp.first());
                let exp = snp::Expectations {
                    measurement: Some(m.measurement),
                    report_data: bound(rd),
                    vmpl: 0,
                    host_data: r.and_then(|r| r.host_data),
                    id_key_digest: r.and_then(|r| r.id_key_digest),
                    author_key_digest: r.and_then(|r| r.author_key_digest),
                    family_id: r.and_then(|r| r.family_id),
                    image_id: r.and_then(|r| r.image_id),
                    now,
                    ..snp::Expectations::default()
                };
                snp::verify(&evidence, &certs, &exp).map_err(|e| e.to_string())
            }
            ExpectedMeasurement::Tdx(t) => {
                let collateral = self.tdx_collateral.as_ref().ok_or(
                    "no TDX collateral: start the manager with --tdx-collateral FILE (Intel PCS/PCCS JSON for the host's FMSPC)",
                )?;
                let (_, td) = tdx::parse(&evidence).map_err(|e| e.to_string())?;
                let r = &t.registers;
                let exp = tdx::Expectations {
                    mrtd: Some(r.mrtd),
                    rtmr: [r.rtmr0, r.rtmr1, r.rtmr2, None],
                    report_data: bound(&td.report_data),
                    event_log: blob("event_log")?,
                    now,
                    ..tdx::Expectations::default()
                };
                tdx::verify(&evidence, collateral, &exp).map_err(|e| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use cocos_measure::launch::SnpMeasurement;
    use cocos_measure::VmmType;
    use std::path::PathBuf;

    fn fixture(name: &str, file: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../measure/tests/data/evidence/snp")
            .join(name)
            .join(file);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A certificate table (as configfs-tsm's auxblob) holding one VCEK.
    fn table_with_vcek(der: &[u8]) -> Vec<u8> {
        let vcek = uuid::uuid!("63da758d-e664-4564-adc5-f4b93be8accd");
        let mut t = vcek.to_bytes_le().to_vec();
        t.extend_from_slice(&48u32.to_le_bytes());
        t.extend_from_slice(&(der.len() as u32).to_le_bytes());
        t.extend_from_slice(&[0u8; 24]);
        t.extend_from_slice(der);
        t
    }

    fn expected(measurement: [u8; 48]) -> ExpectedMeasurement {
        ExpectedMeasurement::Snp(SnpMeasurement {
            measurement,
            vcpus: 1,
            vcpu_type: Some("EPYC-Milan".into()),
            vcpu_sig: 0,
            guest_features: 1,
            vmm_type: VmmType::Qemu,
            ovmf_hash: [0; 48],
            cmdline: None,
        })
    }

    fn names(v: &Value, ok: bool) -> Vec<String> {
        v["checks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["ok"] == ok)
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_genuine_report_is_checked_against_the_launch_and_the_nonces_sent() {
        let report = fixture("azure-milan", "report.bin");
        let measurement: [u8; 48] = report[0x90..0xc0].try_into().unwrap();
        let details = json!({
            "tee": "sev-snp",
            "report": hex::encode(&report),
            "certs": hex::encode(table_with_vcek(&fixture("azure-milan", "vcek.der"))),
        });
        let v = Verifier::default();
        // The report is genuine and shows the launch, but was not made for a nonce this
        // manager sent (its REPORT_DATA is the producer's own): exactly that fails.
        let got = v.verdict(
            &expected(measurement),
            &LaunchFacts::default(),
            &[b"nonce-1".to_vec()],
            &details,
            1_800_000_000,
        );
        assert_eq!(got["verified"], false);
        assert_eq!(names(&got, false), ["report_data"], "{got:#}");
        assert!(names(&got, true).contains(&"report_signature".to_owned()));
        assert!(got["summary"]
            .as_str()
            .unwrap()
            .starts_with("NOT verified: report_data"));
        // Another launch's measurement: the measurement check fails too.
        let got = v.verdict(
            &expected([0; 48]),
            &LaunchFacts::default(),
            &[b"n".to_vec()],
            &details,
            1_800_000_000,
        );
        assert_eq!(
            names(&got, false),
            ["measurement", "report_data"],
            "{got:#}"
        );
        // What the manager fixed at launch is checked too: host data, and the ID
        // block's family/image IDs and key digests (this report has none of them).
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.pem");
        let k = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap(),
        )
        .unwrap();
        std::fs::write(&key, k.private_key_to_pem().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let k = cocos_measure::keys::SigningKey::load_p384(&key).unwrap();
        let params = cocos_measure::idblock::IdBlockParams {
            measurement,
            family_id: [1; 16],
            image_id: [2; 16],
            guest_svn: 0,
            policy: 0x30000,
        };
        let b = cocos_measure::idblock::SignedIdBlock::create(&params, &k, Some(&k)).unwrap();
        let facts = LaunchFacts {
            host_data: Some(base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
            snp_id_block: Some(crate::reference::IdBlockRef {
                id_block: b.block_b64(),
                id_auth: b.auth_b64(),
                author_key_enabled: true,
            }),
        };
        let got = v.verdict(
            &expected(measurement),
            &facts,
            &[b"nonce-1".to_vec()],
            &details,
            1_800_000_000,
        );
        assert_eq!(
            names(&got, false),
            [
                "report_data",
                "host_data",
                "family_id",
                "image_id",
                "id_key_digest",
                "author_key_digest"
            ],
            "{got:#}"
        );
    }

    #[test]
    fn forged_or_broken_agent_details_give_a_verdict_not_a_panic() {
        let v = Verifier::default();
        let e = expected([0; 48]);
        let report = fixture("azure-milan", "report.bin");
        let cases = [
            json!({}),
            json!({"report": 7}),
            json!({"report": "zz"}),
            json!({"report": "00"}),
            json!({"report": hex::encode(&report)}),
            json!({"report": hex::encode(&report), "certs": "00"}),
            json!({"report": hex::encode(&report), "certs": hex::encode([0xffu8; 24])}),
            json!({"report": hex::encode(&report), "certs": hex::encode(table_with_vcek(b"not a certificate"))}),
            json!({"report": "ab".repeat(3 << 20)}),
            json!(["not", "an", "object"]),
        ];
        for d in cases {
            let got = v.verdict(&e, &LaunchFacts::default(), &[], &d, 0);
            assert_eq!(got["verified"], false, "{d}");
            assert!(got["summary"].as_str().is_some_and(|s| s.starts_with("not verified") || s.starts_with("NOT verified")), "{got}");
        }
        // No TEE expected, or TDX without collateral: said plainly.
        let none = ExpectedMeasurement::None {
            note: String::new(),
        };
        let got = v.verdict(
            &none,
            &LaunchFacts::default(),
            &[],
            &json!({"report": "00"}),
            0,
        );
        assert!(got["error"]
            .as_str()
            .unwrap()
            .contains("no TEE measurement"));
    }

    #[test]
    fn trust_files_that_do_not_parse_refuse_the_start() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad");
        std::fs::write(&bad, b"{}").unwrap();
        let e = Verifier::load(Some(&bad), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tdx-collateral"), "{e}");
        let e = Verifier::load(None, Some(&bad), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--snp-chain"), "{e}");
        let e = Verifier::load(None, Some(&d.path().join("missing")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
