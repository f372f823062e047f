//! `corim-check`: an independent CoRIM reader built on Microsoft's `corim` crate
//! (github.com/Azure/corim, draft-ietf-rats-corim-11) and RustCrypto ECDSA (`p384`,
//! `p256`). cocos-rs tests use it to cross-check the CoRIM that `cocos-measure`
//! writes, which is encoded with veraison's `corim-rs` and signed with `coset`:
//! none of those crates, and no OpenSSL, are used here.
//!
//! ```text
//! corim-check FILE [--key PUBKEY.pem]
//! ```
//!
//! `FILE` is `501(corim-map)` or `18(COSE_Sign1)` over it. The whole document goes
//! through `corim::document::validate` at the current time (strict COSE envelope
//! checks for a signed file, CoRIM/CoMID structure and validity windows, the Intel
//! profile when declared). Forms the `corim` crate accepts only for compatibility
//! with older producers (legacy outer tags, an untagged payload, bare CoMID byte
//! strings, flat CWT claims) and tags of unknown type are rejected too. With
//! `--key` (SPKI PEM, P-384 or P-256) the COSE signature over the `Sig_structure`
//! is verified; the protected header's `alg` must match the key's curve.
//!
//! Prints a JSON summary on stdout. Exit status: 0 ok; 1 signature invalid (the
//! JSON is still printed); 2 usage, I/O, decode or validation error (one line on
//! stderr).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use corim::document::{self, TimeCheck, ValidationContext};
use corim::profile::intel::IntelProfile;
use corim::profile::ProfileRegistry;
use corim::types::comid::ComidTag;
use corim::types::common::{ClassIdChoice, MeasuredElement, TagIdChoice};
use corim::types::corim::{CorimId, ProfileChoice};
use corim::types::measurement::{
    Digest, DigestAlg, IntegrityRegisterId, MeasurementMap, RawValueChoice,
};
use corim::types::signed::CoseSign1Corim;
use p256::pkcs8::DecodePublicKey as _;
use p384::ecdsa::signature::Verifier as _;
use serde::Serialize;
use serde_json::Value;

const USAGE: &str = "usage: corim-check FILE [--key PUBKEY.pem]";

/// COSE algorithm identifiers (RFC 9053 §2.1).
const ES256: i64 = -7;
const ES384: i64 = -35;

#[derive(Serialize)]
struct Report {
    signature: &'static str,
    signed_alg: Option<i64>,
    id: String,
    profile: Option<Profile>,
    comids: Vec<Comid>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Profile {
    Uri(String),
    Oid(String),
}

#[derive(Serialize)]
struct Comid {
    tag_id: String,
    /// The CoMID's reference-triples (other triple types are not listed).
    triples: Vec<Triple>,
}

#[derive(Serialize)]
struct Triple {
    class_id_oid: Option<String>,
    vendor: Option<String>,
    model: Option<String>,
    measurements: Vec<Measurement>,
}

/// `[alg, "hex"]`
type DigestJson = (Value, String);

#[derive(Serialize)]
struct Measurement {
    mkey: Option<Value>,
    digests: Option<Vec<DigestJson>>,
    raw: Option<String>,
    integrity_registers: Option<BTreeMap<String, Vec<DigestJson>>>,
}

fn main() -> ExitCode {
    let outcome = parse_args().and_then(|(file, key)| run(&file, key.as_deref()));
    match outcome {
        Ok((report, signature_ok)) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                if signature_ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => fail(&format!("cannot serialize the report: {e}")),
        },
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("corim-check: {}", msg.replace('\n', " "));
    ExitCode::from(2)
}

fn parse_args() -> Result<(PathBuf, Option<PathBuf>), String> {
    let mut file = None;
    let mut key = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--key") => key = Some(args.next().ok_or("--key needs a file")?.into()),
            Some(a) if a.starts_with("--key=") => key = a.strip_prefix("--key=").map(PathBuf::from),
            Some("-h" | "--help") => return Err(USAGE.into()),
            Some(a) if a.starts_with('-') && a != "-" => {
                return Err(format!("unknown option {a}; {USAGE}"))
            }
            _ if file.is_none() => file = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}; {USAGE}")),
        }
    }
    Ok((file.ok_or(USAGE)?, key))
}

fn run(file: &Path, key: Option<&Path>) -> Result<(Report, bool), String> {
    let name = file.display();
    let bytes = std::fs::read(file).map_err(|e| format!("{name}: {e}"))?;
    let key_pem = match key {
        Some(k) => Some(std::fs::read_to_string(k).map_err(|e| format!("{}: {e}", k.display()))?),
        None => None,
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or("system clock is out of range")?;
    let mut registry = ProfileRegistry::new();
    registry.register(Box::new(IntelProfile::new()));
    let context = ValidationContext::new(TimeCheck::At(now), &registry);
    let doc = document::validate(&bytes, &context)
        .map_err(|e| format!("{name}: rejected by corim::document::validate: {e}"))?;
    let coverage = doc.coverage();
    if let Some(note) = coverage.compatibility().first() {
        return Err(format!(
            "{name}: uses a pre-draft-11 form the corim crate accepts only for compatibility: {note:?}"
        ));
    }
    if doc.payload().comids.is_empty() {
        // As corim::validate::decode_and_validate* (ValidationError::NoComidTags).
        return Err(format!("{name}: no CoMID tags"));
    }
    if let Some(index) = coverage.unexamined_tags().first() {
        return Err(format!(
            "{name}: tags[{index}] is of a type the corim crate does not know"
        ));
    }

    let (signature, signed_alg, signature_ok) = match (doc.envelope(), &key_pem) {
        (None, _) => ("unsigned", None, true),
        (Some(env), None) => ("not checked", Some(env.protected().alg.to_i64()), true),
        (Some(env), Some(pem)) => {
            let ok = verify(env, pem)?;
            (
                if ok { "valid" } else { "invalid" },
                Some(env.protected().alg.to_i64()),
                ok,
            )
        }
    };

    let corim = &doc.payload().corim;
    let report = Report {
        signature,
        signed_alg,
        id: match &corim.id {
            CorimId::Text(t) => t.clone(),
            CorimId::Uuid(u) => hex(u),
            other => return Err(format!("{name}: unsupported corim id {other:?}")),
        },
        profile: match &corim.profile {
            None => None,
            Some(ProfileChoice::Uri(u)) => Some(Profile::Uri(u.clone())),
            Some(ProfileChoice::Oid(o)) => Some(Profile::Oid(oid_to_dotted(o)?)),
            Some(other) => return Err(format!("{name}: unsupported profile {other:?}")),
        },
        comids: doc
            .payload()
            .comids
            .iter()
            .map(comid)
            .collect::<Result<_, _>>()?,
    };
    Ok((report, signature_ok))
}

/// Verifies the COSE_Sign1 signature (raw `r || s`, RFC 9053 §2.1) over the
/// `Sig_structure` (RFC 9052 §4.4, empty external AAD) with an SPKI PEM key.
/// `Ok(false)` (with the reason on stderr) if it does not verify; `Err` if the key
/// is unusable.
fn verify(env: &CoseSign1Corim, pem: &str) -> Result<bool, String> {
    let tbs = env
        .to_be_signed(&[])
        .map_err(|e| format!("cannot build the Sig_structure: {e}"))?;
    let alg = env.protected().alg.to_i64();
    let sig = env.signature.as_slice();
    let (curve, want_alg, verdict) = if let Ok(key) =
        p384::ecdsa::VerifyingKey::from_public_key_pem(pem)
    {
        let verdict = p384::ecdsa::Signature::from_slice(sig).map(|s| key.verify(&tbs, &s).is_ok());
        ("P-384", ES384, verdict)
    } else if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        let verdict = p256::ecdsa::Signature::from_slice(sig).map(|s| key.verify(&tbs, &s).is_ok());
        ("P-256", ES256, verdict)
    } else {
        return Err("--key is not a P-384 or P-256 SPKI PEM public key".into());
    };
    let reason = if alg != want_alg {
        format!("protected header alg is {alg}, but a {curve} key needs {want_alg}")
    } else {
        match verdict {
            Ok(true) => return Ok(true),
            Ok(false) => "ECDSA verification failed".into(),
            Err(_) => format!("signature is {} bytes, not a valid {curve} r||s", sig.len()),
        }
    };
    eprintln!("corim-check: signature invalid: {reason}");
    Ok(false)
}

fn comid(tag: &ComidTag) -> Result<Comid, String> {
    let tag_id = match &tag.tag_identity.tag_id {
        TagIdChoice::Text(t) => t.clone(),
        TagIdChoice::Uuid(u) => hex(u),
        other => return Err(format!("unsupported tag-id {other:?}")),
    };
    let mut triples = Vec::new();
    for triple in tag.triples.reference_triples.iter().flatten() {
        let class = triple.environment().class.as_ref();
        triples.push(Triple {
            class_id_oid: match class.and_then(|c| c.class_id.as_ref()) {
                Some(ClassIdChoice::Oid(o)) => Some(oid_to_dotted(o)?),
                _ => None,
            },
            vendor: class.and_then(|c| c.vendor.clone()),
            model: class.and_then(|c| c.model.clone()),
            measurements: triple.measurements().iter().map(measurement).collect(),
        });
    }
    Ok(Comid { tag_id, triples })
}

fn measurement(m: &MeasurementMap) -> Measurement {
    Measurement {
        mkey: match &m.mkey {
            Some(MeasuredElement::Uint(n)) => Some(Value::from(*n)),
            Some(MeasuredElement::Text(t)) => Some(Value::from(t.as_str())),
            _ => None,
        },
        digests: m.mval.digests.as_deref().map(digests),
        raw: match &m.mval.raw_value {
            Some(RawValueChoice::Bytes(b)) => Some(hex(b)),
            _ => None,
        },
        integrity_registers: m.mval.integrity_registers.as_ref().map(|regs| {
            regs.0
                .iter()
                .map(|(id, d)| {
                    let id = match id {
                        IntegrityRegisterId::Uint(n) => n.to_string(),
                        IntegrityRegisterId::Text(t) => t.clone(),
                        other => format!("{other:?}"),
                    };
                    (id, digests(d))
                })
                .collect()
        }),
    }
}

fn digests(ds: &[Digest]) -> Vec<DigestJson> {
    ds.iter()
        .map(|d| {
            let alg = match d.alg() {
                DigestAlg::Int(n) => Value::from(*n),
                DigestAlg::Text(t) => Value::from(t.as_str()),
                other => Value::from(format!("{other:?}")),
            };
            (alg, hex(d.value()))
        })
        .collect()
}

/// Dotted-decimal form of an OID given as BER content octets, as CBOR tag 111
/// carries it (RFC 9090: no 0x06 tag or length). Each arc is base-128, high bit
/// set on all but its last byte; the first arc packs `40 * a + b`.
fn oid_to_dotted(content: &[u8]) -> Result<String, String> {
    let bad = || format!("malformed OID {}", hex(content));
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    let mut in_arc = false;
    for &byte in content {
        if !in_arc && byte == 0x80 {
            return Err(bad()); // non-minimal: leading 0x80 in an arc
        }
        acc = acc
            .checked_mul(128)
            .and_then(|a| a.checked_add(u64::from(byte & 0x7f)))
            .ok_or_else(bad)?;
        in_arc = byte & 0x80 != 0;
        if !in_arc {
            arcs.push(acc);
            acc = 0;
        }
    }
    let (&first, rest) = arcs.split_first().filter(|_| !in_arc).ok_or_else(bad)?;
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let rest: String = rest.iter().map(|arc| format!(".{arc}")).collect();
    Ok(format!("{a}.{b}{rest}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::oid_to_dotted;

    #[test]
    fn oids() {
        let ok = |b: &[u8]| oid_to_dotted(b).ok();
        let amd = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x03, 0x01];
        assert_eq!(ok(&amd).as_deref(), Some("1.3.6.1.4.1.3704.3.1"));
        let intel = [0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x4d, 0x01, 0x10, 0x01];
        assert_eq!(ok(&intel).as_deref(), Some("2.16.840.1.113741.1.16.1"));
        assert_eq!(ok(&[0x88, 0x37, 0x03]).as_deref(), Some("2.999.3")); // multi-byte first arc
        assert_eq!(ok(&[0x27]).as_deref(), Some("0.39"));
        for bad in [&[][..], &[0x2b, 0x86], &[0x2b, 0x80, 0x01], &[0xff; 11]] {
            assert_eq!(ok(bad), None, "{bad:02x?}");
        }
    }
}
