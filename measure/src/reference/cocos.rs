//! cocos' attestation-policy JSON (`attestation_policy.json`), the form cocos' Go
//! verifiers read with protojson: for SEV-SNP go-sev-guest's `check.Config`
//! (proto/check.proto: `policy` = `Policy`, `rootOfTrust` = `RootOfTrust`), read by
//! cocos' pkg/attestation/vtpm/vtpm.go `ReadPolicyFromByte`; for TDX go-tdx-guest's
//! `checkconfig.Config` (proto/checkconfig.proto), read strictly by
//! pkg/attestation/tdx/tdx.go `ReadTDXAttestationPolicy` (cocos da31d76c, the last
//! commit with these files). protojson's rules apply: lowerCamelCase names, bytes as
//! standard base64, uint64 as decimal strings, no unknown keys.
//!
//! Only what the launch fixes is stated exactly (measurement, policy, ID-block fields,
//! host data, MRTD, RTMRs); host facts (chip ID, minimum TCB and firmware) come from
//! [`SnpPlatform`], and default to "any".

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{SnpReference, TdxReference};

/// SEV-SNP product lines go-sev-guest knows (`SevProduct.SevProductName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpProduct {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl SnpProduct {
    /// Parses `milan`, `genoa`, `turin` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "milan" => Some(SnpProduct::Milan),
            "genoa" => Some(SnpProduct::Genoa),
            "turin" => Some(SnpProduct::Turin),
            _ => None,
        }
    }

    /// `Milan`, `Genoa`, `Turin`: `rootOfTrust.productLine`.
    pub fn line(self) -> &'static str {
        match self {
            SnpProduct::Milan => "Milan",
            SnpProduct::Genoa => "Genoa",
            SnpProduct::Turin => "Turin",
        }
    }

    /// `SEV_PRODUCT_MILAN` etc.: `policy.product.name`.
    pub fn proto_name(self) -> &'static str {
        match self {
            SnpProduct::Milan => "SEV_PRODUCT_MILAN",
            SnpProduct::Genoa => "SEV_PRODUCT_GENOA",
            SnpProduct::Turin => "SEV_PRODUCT_TURIN",
        }
    }
}

/// Facts about the host an SNP policy may pin; `None` accepts any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpPlatform {
    /// The AMD product line (cocos needs it to find the ARK/ASK).
    pub product: SnpProduct,
    /// The VMPL the guest requests reports from (0 without an SVSM).
    pub vmpl: u32,
    /// CHIP_ID of the one host allowed.
    pub chip_id: Option<[u8; 64]>,
    /// Minimum REPORTED_TCB and LAUNCH_TCB (TCB_VERSION as a u64).
    pub minimum_tcb: Option<u64>,
    /// Minimum firmware build.
    pub minimum_build: Option<u32>,
    /// Minimum firmware version `major.minor`.
    pub minimum_version: Option<(u8, u8)>,
    /// Check AMD's CRL.
    pub check_crl: bool,
}

impl Default for SnpPlatform {
    fn default() -> Self {
        SnpPlatform {
            product: SnpProduct::Milan,
            vmpl: 0,
            chip_id: None,
            minimum_tcb: None,
            minimum_build: None,
            minimum_version: None,
            check_crl: true,
        }
    }
}

/// QEMU's default guest policy (SMT allowed, reserved bit 17 set).
pub const DEFAULT_SNP_POLICY: u64 = 0x30000;
/// Guest policy bit 18: a migration agent is allowed.
const POLICY_MIGRATE_MA: u64 = 1 << 18;
/// Intel's QE vendor ID (939a7233-f79c-4ca9-940a-0db3957f0607), which every DCAP quote
/// from Intel's quoting enclave carries in its header.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// uint64 as protojson writes it: a decimal string.
fn u64s(v: u64) -> Value {
    Value::String(v.to_string())
}

/// The SNP policy for one launch configuration: go-sev-guest `check.Config`.
pub fn snp_policy(r: &SnpReference, host: &SnpPlatform) -> Value {
    let guest_policy = r.policy.unwrap_or(DEFAULT_SNP_POLICY);
    let mut p = Map::new();
    p.insert("measurement".into(), b64(&r.measurement));
    p.insert("policy".into(), u64s(guest_policy));
    p.insert("familyId".into(), b64(&r.family_id.unwrap_or_default()));
    p.insert("imageId".into(), b64(&r.image_id.unwrap_or_default()));
    p.insert("vmpl".into(), json!(host.vmpl));
    p.insert("minimumTcb".into(), u64s(host.minimum_tcb.unwrap_or(0)));
    p.insert(
        "minimumLaunchTcb".into(),
        u64s(host.minimum_tcb.unwrap_or(0)),
    );
    p.insert(
        "minimumBuild".into(),
        json!(host.minimum_build.unwrap_or(0)),
    );
    let (maj, min) = host.minimum_version.unwrap_or((0, 0));
    p.insert("minimumVersion".into(), json!(format!("{maj}.{min}")));
    p.insert("product".into(), json!({"name": host.product.proto_name()}));
    if guest_policy & POLICY_MIGRATE_MA == 0 {
        // Without a migration agent the firmware reports REPORT_ID_MA as all ones.
        p.insert("reportIdMa".into(), b64(&[0xff; 32]));
    }
    if let Some(h) = &r.host_data {
        p.insert("hostData".into(), b64(h));
    }
    if let Some(c) = &host.chip_id {
        p.insert("chipId".into(), b64(c));
    }
    if let Some(d) = &r.id_key_digest {
        p.insert("requireIdBlock".into(), json!(true));
        p.insert("trustedIdKeyHashes".into(), json!([b64(d)]));
    }
    if let Some(d) = &r.author_key_digest {
        p.insert("requireAuthorKey".into(), json!(true));
        p.insert("trustedAuthorKeyHashes".into(), json!([b64(d)]));
    }
    json!({
        "policy": p,
        "rootOfTrust": {
            "product": host.product.line(),
            "productLine": host.product.line(),
            "checkCrl": host.check_crl,
        },
    })
}

/// The TDX policy for one launch: go-tdx-guest `checkconfig.Config`, and the notes
/// on what it could not pin. `rtmrs` must list all four registers: it is written only
/// when RTMR0–2 are known; RTMR3, which our guest never extends, is then zero unless
/// given.
pub fn tdx_policy(r: &TdxReference) -> (Value, Vec<String>) {
    let mut notes = Vec::new();
    let mut body = Map::new();
    body.insert("mrTd".into(), b64(&r.mrtd));
    match r.rtmrs {
        [Some(r0), Some(r1), Some(r2), r3] => {
            let r3 = r3.unwrap_or([0; 48]);
            body.insert("rtmrs".into(), json!([b64(&r0), b64(&r1), b64(&r2), b64(&r3)]));
        }
        _ => notes.push(format!(
            "{}: RTMR0-2 are not all known (RTMR0 depends on the host's ACPI tables: `cocos-measure tdx --acpi-*`), so the policy pins MRTD only",
            r.label
        )),
    }
    if let Some(x) = r.xfam {
        body.insert("xfam".into(), b64(&x.to_le_bytes()));
    }
    if let Some(a) = r.attributes {
        body.insert("tdAttributes".into(), b64(&a.to_le_bytes()));
    }
    let v = json!({
        "policy": {
            "headerPolicy": {"qeVendorId": b64(&INTEL_QE_VENDOR_ID)},
            "tdQuoteBodyPolicy": body,
        },
        "rootOfTrust": {"checkCrl": true, "getCollateral": true},
    });
    (v, notes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn migration_agent_and_id_block_fields() {
        let mut r = SnpReference::new("x", [1; 48]);
        let v = snp_policy(&r, &SnpPlatform::default());
        assert_eq!(v["policy"]["policy"], "196608");
        assert!(v["policy"]["reportIdMa"].is_string());
        assert!(v["policy"].get("requireIdBlock").is_none());
        r.policy = Some(DEFAULT_SNP_POLICY | POLICY_MIGRATE_MA);
        r.id_key_digest = Some([2; 48]);
        let v = snp_policy(&r, &SnpPlatform::default());
        assert!(v["policy"].get("reportIdMa").is_none());
        assert_eq!(v["policy"]["requireIdBlock"], true);
    }

    #[test]
    fn tdx_rtmrs_only_when_complete() {
        let mut r = TdxReference {
            label: "l".into(),
            mrtd: [1; 48],
            rtmrs: [None, Some([2; 48]), Some([3; 48]), None],
            xfam: None,
            attributes: None,
        };
        let (v, notes) = tdx_policy(&r);
        assert!(v["policy"]["tdQuoteBodyPolicy"].get("rtmrs").is_none());
        assert_eq!(notes.len(), 1);
        r.rtmrs[0] = Some([0; 48]);
        let (v, notes) = tdx_policy(&r);
        assert_eq!(
            v["policy"]["tdQuoteBodyPolicy"]["rtmrs"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert!(notes.is_empty());
    }
}
