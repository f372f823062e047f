//! cocos attestation-policy JSON checked field by field against the protos cocos'
//! Go verifiers read it with (go-sev-guest / go-tdx-guest, protojson): every key a
//! field of the message, every value in the form protojson takes, exact byte lengths.
#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

use base64::Engine;
use serde_json::Value;

/// Fields of go-sev-guest v0.14.1 proto/check.proto (`Policy`, `RootOfTrust`) and
/// go-tdx-guest proto/checkconfig.proto (`Policy`, `HeaderPolicy`, `TDQuoteBodyPolicy`,
/// `RootOfTrust`), by their protojson (lowerCamelCase) names, with the wire form
/// protojson expects: `b64:N` bytes of exactly N, `u64` a decimal string, `u32` a
/// number. cocos reads SNP policies with pkg/attestation/vtpm/vtpm.go
/// `ReadPolicyFromByte` and TDX ones strictly with pkg/attestation/tdx/tdx.go
/// `ReadTDXAttestationPolicy` (ultravioletrs/cocos da31d76c).
const SNP_POLICY_FIELDS: &[(&str, &str)] = &[
    ("minimumGuestSvn", "u32"),
    ("policy", "u64"),
    ("familyId", "b64:16"),
    ("imageId", "b64:16"),
    ("vmpl", "u32"),
    ("minimumTcb", "u64"),
    ("minimumLaunchTcb", "u64"),
    ("platformInfo", "u64"),
    ("requireAuthorKey", "bool"),
    ("reportData", "b64:64"),
    ("measurement", "b64:48"),
    ("hostData", "b64:32"),
    ("reportId", "b64:32"),
    ("reportIdMa", "b64:32"),
    ("chipId", "b64:64"),
    ("minimumBuild", "u32"),
    ("minimumVersion", "version"),
    ("permitProvisionalFirmware", "bool"),
    ("requireIdBlock", "bool"),
    ("trustedAuthorKeys", "b64list"),
    ("trustedAuthorKeyHashes", "b64list:48"),
    ("trustedIdKeys", "b64list"),
    ("trustedIdKeyHashes", "b64list:48"),
    ("product", "product"),
];
const SNP_ROOT_FIELDS: &[(&str, &str)] = &[
    ("product", "string"),
    ("cabundlePaths", "strings"),
    ("cabundles", "strings"),
    ("checkCrl", "bool"),
    ("disallowNetwork", "bool"),
    ("productLine", "productLine"),
];
const TDX_HEADER_FIELDS: &[(&str, &str)] = &[
    ("minimumQeSvn", "u32"),
    ("minimumPceSvn", "u32"),
    ("qeVendorId", "b64:16"),
];
const TDX_BODY_FIELDS: &[(&str, &str)] = &[
    ("minimumTeeTcbSvn", "b64:16"),
    ("mrSeam", "b64:48"),
    ("tdAttributes", "b64:8"),
    ("xfam", "b64:8"),
    ("mrTd", "b64:48"),
    ("mrConfigId", "b64:48"),
    ("mrOwner", "b64:48"),
    ("mrOwnerConfig", "b64:48"),
    ("rtmrs", "rtmrs"),
    ("reportData", "b64:64"),
    ("anyMrTd", "b64list:48"),
];
const TDX_ROOT_FIELDS: &[(&str, &str)] = &[
    ("cabundlePaths", "strings"),
    ("cabundles", "strings"),
    ("checkCrl", "bool"),
    ("getCollateral", "bool"),
];

fn b64_len(v: &Value) -> Option<usize> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
        .map(|b| b.len())
}

/// Checks one protojson object against a field table (panics naming the field).
pub fn check_fields(obj: &Value, table: &[(&str, &str)], at: &str) {
    let map = obj
        .as_object()
        .unwrap_or_else(|| panic!("{at}: not an object"));
    for (k, v) in map {
        let (_, kind) = table.iter().find(|(name, _)| name == k).unwrap_or_else(|| {
            panic!("{at}.{k}: not a field of the proto (strict protojson refuses it)")
        });
        let good = match *kind {
            "u64" => v.as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
            "u32" => v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
            "bool" => v.is_boolean(),
            "string" => v.is_string(),
            "strings" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "version" => v.as_str().is_some_and(|s| {
                s.split_once('.')
                    .is_some_and(|(a, b)| a.parse::<u8>().is_ok() && b.parse::<u8>().is_ok())
            }),
            "product" => {
                v.as_object()
                    .is_some_and(|o| o.keys().all(|k| k == "name" || k == "machineStepping"))
                    && [
                        "SEV_PRODUCT_MILAN",
                        "SEV_PRODUCT_GENOA",
                        "SEV_PRODUCT_TURIN",
                    ]
                    .contains(&v["name"].as_str().unwrap_or_default())
            }
            "productLine" => ["Milan", "Genoa", "Turin"].contains(&v.as_str().unwrap_or_default()),
            "rtmrs" => v
                .as_array()
                .is_some_and(|a| a.len() == 4 && a.iter().all(|r| b64_len(r) == Some(48))),
            "b64list" => v
                .as_array()
                .is_some_and(|a| a.iter().all(|r| b64_len(r).is_some())),
            k if k.starts_with("b64list:") => {
                let n: usize = k["b64list:".len()..].parse().unwrap();
                v.as_array()
                    .is_some_and(|a| a.iter().all(|r| b64_len(r) == Some(n)))
            }
            k if k.starts_with("b64:") => b64_len(v) == Some(k[4..].parse().unwrap()),
            other => panic!("table kind {other}"),
        };
        assert!(good, "{at}.{k} = {v}: not a valid {kind}");
    }
}

/// An SNP policy (go-sev-guest `check.Config`).
pub fn check_snp(p: &Value) {
    let top = p.as_object().unwrap();
    assert!(
        top.keys().all(|k| k == "policy" || k == "rootOfTrust"),
        "{p}"
    );
    check_fields(&p["policy"], SNP_POLICY_FIELDS, "policy");
    check_fields(&p["rootOfTrust"], SNP_ROOT_FIELDS, "rootOfTrust");
    // go-sev-guest abi.ParseSnpPolicy: bit 17 must be set, bits 63..25 clear.
    let policy: u64 = p["policy"]["policy"].as_str().unwrap().parse().unwrap();
    assert!(policy & (1 << 17) != 0 && policy >> 25 == 0);
    assert!(p["policy"]["vmpl"].as_u64().unwrap() <= 3);
    // cocos needs the product, from policy.product or rootOfTrust.productLine.
    assert!(p["policy"].get("product").is_some() || p["rootOfTrust"].get("productLine").is_some());
}

/// A TDX policy (go-tdx-guest `checkconfig.Config`).
pub fn check_tdx(p: &Value) {
    let top = p.as_object().unwrap();
    assert!(
        top.keys().all(|k| k == "policy" || k == "rootOfTrust"),
        "{p}"
    );
    let pol = p["policy"].as_object().unwrap();
    assert!(
        pol.keys()
            .all(|k| k == "headerPolicy" || k == "tdQuoteBodyPolicy"),
        "{p}"
    );
    check_fields(
        &p["policy"]["headerPolicy"],
        TDX_HEADER_FIELDS,
        "policy.headerPolicy",
    );
    check_fields(
        &p["policy"]["tdQuoteBodyPolicy"],
        TDX_BODY_FIELDS,
        "policy.tdQuoteBodyPolicy",
    );
    check_fields(&p["rootOfTrust"], TDX_ROOT_FIELDS, "rootOfTrust");
}
