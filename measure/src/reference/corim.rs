//! [`ReferenceValues`] as CoRIM (draft-ietf-rats-corim), encoded and decoded with
//! veraison's `corim-rs`, optionally signed as COSE_Sign1 (ES384 / ES256) with `coset`.
//!
//! One CoRIM per TEE, since a CoRIM names one profile; one CoMID per launch
//! configuration, whose tag-id is `<id>/<tee>/<label>`, so a verifier can tell which
//! launch a triple describes.
//!
//! * SEV-SNP (draft-deeglaze-amd-sev-snp-corim-profile, editor's copy 2025-06):
//!   profile `32("tag:amd.com,2025:snp-corim-profile")`; environment class-id
//!   `111(1.3.6.1.4.1.3704.3.1)` (VCEK-signed) and a second triple under `…3.2`
//!   (VLEK-signed), no vendor or model ("model MUST NOT be present"); MEASUREMENT is
//!   mkey 641 `digests: [[7, h'…48']]` (7 = sha-384 in the IANA Named Information
//!   registry — not 1, which cocos' corimgen writes for 48-byte values); POLICY mkey 2
//!   and FAMILY_ID / IMAGE_ID mkeys 3 / 4 as `raw-value: 560(bytes)` in report byte
//!   order; HOST_DATA mkey 642 as a 32-byte raw value (the draft's `[[7, bytes48]]`
//!   cannot hold a 32-byte field; veraison writes a raw value too); ID_KEY_DIGEST and
//!   AUTHOR_KEY_DIGEST mkeys 643 / 644 as sha-384 digests.
//! * TDX (draft-cds-rats-intel-corim-profile): profile `111(2.16.840.1.113741.1.16.1)`;
//!   environment class vendor "Intel Corporation", model "TDX TD" (the draft defines no
//!   TD class); MRTD as `tee.mrtee` in the draft's non-negative form, mkey 83 with
//!   `digests: [[7, mrtd]]`; TDATTRIBUTES as `tee.attributes`, mkey 82 raw value; RTMRs,
//!   which the profile does not cover, as base CoRIM `integrity-registers` {0..3 →
//!   [[7, rtmr]]} (mkey "rtmrs"); XFAM, which has no code point, is left out.

use std::borrow::Cow;
use std::collections::BTreeMap;

use corim_rs::{
    ClassIdTypeChoice, ClassMap, ConciseMidTag, ConciseRimTypeChoice, ConciseTagTypeChoice,
    CorimError, CorimIdTypeChoice, CorimMap, CorimMetaMap, CorimSignerMap, CoseAlgorithm,
    CoseEllipticCurve, CoseKey, CoseKeyBuilder, CoseKeyOwner, CoseKty, CoseSigner, Digest,
    EntityNameTypeChoice, EnvironmentMap, HashAlgorithm, Integer, IntegrityRegisters,
    MeasuredElementTypeChoice, MeasurementMap, MeasurementValuesMap, OidType, ProfileTypeChoice,
    RawValueType, RawValueTypeChoice, ReferenceTripleRecord, SignedCorimBuilder, TagIdTypeChoice,
    TagIdentityMap, TaggedBytes, TaggedConciseMidTag, TriplesMapBuilder, Ulabel, Uri,
};

use super::{ReferenceError, ReferenceValues, SnpReference, TdxReference, TeeKind};
use crate::keys::{Curve, SigningKey};

/// The SEV-SNP profile's URI.
pub const SNP_PROFILE: &str = "tag:amd.com,2025:snp-corim-profile";
/// The Intel profile's OID.
pub const INTEL_PROFILE: &str = "2.16.840.1.113741.1.16.1";
/// SNP environment class: reports signed by a VCEK.
pub const SNP_CLASS_VCEK: &str = "1.3.6.1.4.1.3704.3.1";
/// SNP environment class: reports signed by a VLEK.
pub const SNP_CLASS_VLEK: &str = "1.3.6.1.4.1.3704.3.2";
/// TDX environment class vendor.
pub const TDX_VENDOR: &str = "Intel Corporation";
/// TDX environment class model.
pub const TDX_MODEL: &str = "TDX TD";

/// SNP profile measurement keys (report fields).
pub mod snp_mkey {
    /// POLICY.
    pub const POLICY: u64 = 2;
    /// FAMILY_ID.
    pub const FAMILY_ID: u64 = 3;
    /// IMAGE_ID.
    pub const IMAGE_ID: u64 = 4;
    /// MEASUREMENT.
    pub const MEASUREMENT: u64 = 641;
    /// HOST_DATA.
    pub const HOST_DATA: u64 = 642;
    /// ID_KEY_DIGEST.
    pub const ID_KEY_DIGEST: u64 = 643;
    /// AUTHOR_KEY_DIGEST.
    pub const AUTHOR_KEY_DIGEST: u64 = 644;
}

/// Intel profile code points used as mkeys.
pub mod tdx_mkey {
    /// `tee.attributes` (TDATTRIBUTES).
    pub const ATTRIBUTES: u64 = 82;
    /// `tee.mrtee` (MRTD).
    pub const MRTEE: u64 = 83;
    /// The measurement holding RTMR0–3 as integrity registers.
    pub const RTMRS: &str = "rtmrs";
}

fn cerr(e: impl std::fmt::Display) -> ReferenceError {
    ReferenceError::Corim(e.to_string())
}

fn oid(s: &str) -> Result<OidType, ReferenceError> {
    OidType::try_from(s).map_err(|e| cerr(format!("OID {s}: {e:?}")))
}

fn uint(n: u64) -> Integer {
    Integer::from(n)
}

fn sha384(v: &[u8; 48]) -> Vec<Digest> {
    vec![Digest::new(HashAlgorithm::Sha384, v.as_slice().into())]
}

fn keyed(
    mkey: MeasuredElementTypeChoice<'static>,
    mval: MeasurementValuesMap<'static>,
) -> MeasurementMap<'static> {
    MeasurementMap {
        mkey: Some(mkey),
        mval,
        authorized_by: None,
    }
}

fn digests(mkey: u64, v: &[u8; 48]) -> MeasurementMap<'static> {
    keyed(
        MeasuredElementTypeChoice::UInt(uint(mkey)),
        MeasurementValuesMap {
            digests: Some(sha384(v)),
            ..Default::default()
        },
    )
}

fn raw(mkey: u64, v: &[u8]) -> MeasurementMap<'static> {
    keyed(
        MeasuredElementTypeChoice::UInt(uint(mkey)),
        MeasurementValuesMap {
            raw: Some(RawValueType {
                raw_value: RawValueTypeChoice::TaggedBytes(TaggedBytes::from(v)),
                raw_value_mask: None,
            }),
            ..Default::default()
        },
    )
}

fn snp_claims(r: &SnpReference) -> Vec<MeasurementMap<'static>> {
    use snp_mkey::*;
    let mut c = vec![digests(MEASUREMENT, &r.measurement)];
    if let Some(p) = r.policy {
        c.push(raw(POLICY, &p.to_le_bytes()));
    }
    if let Some(f) = &r.family_id {
        c.push(raw(FAMILY_ID, f));
    }
    if let Some(i) = &r.image_id {
        c.push(raw(IMAGE_ID, i));
    }
    if let Some(h) = &r.host_data {
        c.push(raw(HOST_DATA, h));
    }
    if let Some(d) = &r.id_key_digest {
        c.push(digests(ID_KEY_DIGEST, d));
    }
    if let Some(d) = &r.author_key_digest {
        c.push(digests(AUTHOR_KEY_DIGEST, d));
    }
    c
}

fn tdx_claims(r: &TdxReference) -> Vec<MeasurementMap<'static>> {
    let mut c = vec![digests(tdx_mkey::MRTEE, &r.mrtd)];
    let mut regs = BTreeMap::new();
    for (i, v) in r.rtmrs.iter().enumerate() {
        if let Some(v) = v {
            regs.insert(Ulabel::Uint(uint(i as u64)), sha384(v));
        }
    }
    if !regs.is_empty() {
        c.push(keyed(
            MeasuredElementTypeChoice::Tstr(Cow::Borrowed(tdx_mkey::RTMRS)),
            MeasurementValuesMap {
                integrity_registers: Some(IntegrityRegisters(regs)),
                ..Default::default()
            },
        ));
    }
    if let Some(a) = r.attributes {
        c.push(raw(tdx_mkey::ATTRIBUTES, &a.to_le_bytes()));
    }
    c
}

fn class_env(class: ClassMap<'static>) -> EnvironmentMap<'static> {
    EnvironmentMap {
        class: Some(class),
        instance: None,
        group: None,
    }
}

fn comid(
    tag_id: String,
    triples: Vec<ReferenceTripleRecord<'static>>,
) -> Result<ConciseTagTypeChoice<'static>, ReferenceError> {
    let triples = TriplesMapBuilder::new()
        .reference_triples(triples)
        .build()
        .map_err(cerr)?;
    let tag = ConciseMidTag {
        language: None,
        tag_identity: TagIdentityMap {
            tag_id: TagIdTypeChoice::Tstr(Cow::Owned(tag_id)),
            tag_version: Some(uint(0)),
        },
        entities: None,
        linked_tags: None,
        triples,
        extensions: None,
    };
    Ok(ConciseTagTypeChoice::Mid(TaggedConciseMidTag::new(tag)))
}

/// The unsigned CoRIM for one TEE's values.
pub fn to_corim(
    values: &ReferenceValues,
    tee: TeeKind,
) -> Result<CorimMap<'static>, ReferenceError> {
    values.require(tee)?;
    let mut tags = Vec::new();
    let profile = match tee {
        TeeKind::Snp => {
            for r in &values.snp {
                let claims = snp_claims(r);
                let mut triples = Vec::new();
                for class in [SNP_CLASS_VCEK, SNP_CLASS_VLEK] {
                    triples.push(ReferenceTripleRecord {
                        ref_env: class_env(ClassMap {
                            class_id: Some(ClassIdTypeChoice::Oid(oid(class)?)),
                            ..Default::default()
                        }),
                        ref_claims: claims.clone(),
                    });
                }
                tags.push(comid(format!("{}/snp/{}", values.id, r.label), triples)?);
            }
            ProfileTypeChoice::Uri(Uri::new(Cow::Borrowed(SNP_PROFILE)))
        }
        TeeKind::Tdx => {
            for r in &values.tdx {
                let triple = ReferenceTripleRecord {
                    ref_env: class_env(ClassMap {
                        vendor: Some(Cow::Borrowed(TDX_VENDOR)),
                        model: Some(Cow::Borrowed(TDX_MODEL)),
                        ..Default::default()
                    }),
                    ref_claims: tdx_claims(r),
                };
                tags.push(comid(
                    format!("{}/tdx/{}", values.id, r.label),
                    vec![triple],
                )?);
            }
            ProfileTypeChoice::Oid(oid(INTEL_PROFILE)?)
        }
    };
    Ok(CorimMap {
        id: CorimIdTypeChoice::Tstr(Cow::Owned(format!("{}/{}", values.id, tee.name()))),
        tags,
        dependent_rims: None,
        profile: Some(profile),
        rim_validity: None,
        entities: None,
        extensions: None,
    })
}

/// A release key as corim-rs' COSE signer (public half as the COSE key; ES384 for
/// P-384, ES256 for P-256).
struct KeySigner<'k> {
    key: &'k SigningKey,
    cose: CoseKey,
    alg: CoseAlgorithm,
    /// SHA-256 of the uncompressed public point: the COSE `kid`.
    kid: Vec<u8>,
}

impl<'k> KeySigner<'k> {
    fn new(key: &'k SigningKey) -> Result<Self, ReferenceError> {
        let (x, y) = key.public_xy()?;
        let (crv, alg) = match key.curve() {
            Curve::P384 => (CoseEllipticCurve::P384, CoseAlgorithm::ES384),
            Curve::P256 => (CoseEllipticCurve::P256, CoseAlgorithm::ES256),
        };
        let mut point = vec![4u8];
        point.extend(&x);
        point.extend(&y);
        let kid = openssl::sha::sha256(&point).to_vec();
        let cose = CoseKeyBuilder::new()
            .kty(CoseKty::Ec2)
            .crv(crv)
            .alg(alg)
            .x(x.as_slice().into())
            .y(y.as_slice().into())
            .build()
            .map_err(cerr)?;
        Ok(KeySigner {
            key,
            cose,
            alg,
            kid,
        })
    }
}

impl CoseKeyOwner for KeySigner<'_> {
    fn to_cose_key(&self) -> CoseKey {
        self.cose.clone()
    }
}

impl CoseSigner for KeySigner<'_> {
    fn sign(&self, alg: CoseAlgorithm, data: &[u8]) -> Result<Vec<u8>, CorimError> {
        if alg != self.alg {
            return Err(CorimError::custom(format!(
                "a {} key cannot make {alg:?} signatures",
                self.key.curve()
            )));
        }
        let (mut r, s) = self.key.sign(data).map_err(CorimError::custom)?;
        r.extend(s);
        Ok(r)
    }
}

/// Who signs, as the COSE_Sign1's `corim-meta` says.
#[derive(Debug, Clone)]
pub struct Signer<'k> {
    /// The key.
    pub key: &'k SigningKey,
    /// `signer-name` in the protected header's metadata.
    pub name: String,
}

/// CBOR bytes of one TEE's CoRIM: `501(corim-map)`, or `18(COSE_Sign1)` over it when a
/// signer is given.
pub fn encode(
    values: &ReferenceValues,
    tee: TeeKind,
    signer: Option<&Signer<'_>>,
) -> Result<Vec<u8>, ReferenceError> {
    let map = to_corim(values, tee)?;
    let rim: ConciseRimTypeChoice<'static> = match signer {
        None => map.into(),
        Some(s) => {
            let ks = KeySigner::new(s.key)?;
            let meta = CorimMetaMap {
                signer: CorimSignerMap {
                    signer_name: EntityNameTypeChoice::Text(Cow::Owned(s.name.clone())),
                    signer_uri: None,
                    extensions: None,
                },
                signature_validity: None,
                extensions: None,
            };
            SignedCorimBuilder::new()
                .alg(ks.alg)
                .kid(ks.kid.clone())
                .meta(meta)
                .corim_map(map)
                .build_and_sign(ks)
                .map_err(cerr)?
                .into()
        }
    };
    rim.to_cbor().map_err(cerr)
}

/// A CoRIM read back: its values, its TEE and, if signed, the signer's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The reference values.
    pub values: ReferenceValues,
    /// Which profile it follows.
    pub tee: TeeKind,
    /// `signer-name` of a signed CoRIM (the signature itself is not checked here).
    pub signer: Option<String>,
}

fn uint_of(m: &Option<MeasuredElementTypeChoice<'_>>) -> Option<i128> {
    match m {
        Some(MeasuredElementTypeChoice::UInt(i)) => Some(i.0),
        _ => None,
    }
}

/// The SHA-384 value among `digests`, if any.
fn sha384_in(digests: &[Digest]) -> Option<[u8; 48]> {
    digests.iter().find_map(|d| {
        (d.alg == HashAlgorithm::Sha384)
            .then(|| d.val.as_ref().try_into().ok())
            .flatten()
    })
}

fn sha384_of(m: &MeasurementValuesMap<'_>) -> Option<[u8; 48]> {
    sha384_in(m.digests.as_ref()?)
}

fn raw_of<const N: usize>(m: &MeasurementValuesMap<'_>) -> Option<[u8; N]> {
    match &m.raw.as_ref()?.raw_value {
        RawValueTypeChoice::TaggedBytes(b) => b.as_ref().as_ref().try_into().ok(),
        _ => None,
    }
}

fn label_of(tag_id: &TagIdTypeChoice<'_>, prefix: &str) -> Result<String, ReferenceError> {
    match tag_id {
        TagIdTypeChoice::Tstr(s) => Ok(s
            .rsplit_once(prefix)
            .map(|(_, l)| l.to_owned())
            .unwrap_or_else(|| s.to_string())),
        other => Err(cerr(format!("CoMID tag-id {other:?} is not text"))),
    }
}

/// Reads a CoRIM this module wrote (signed or not) back into reference values, with
/// corim-rs' decoder.
pub fn decode(bytes: &[u8]) -> Result<Decoded, ReferenceError> {
    let rim = ConciseRimTypeChoice::from_cbor(bytes).map_err(cerr)?;
    let signer = rim
        .as_signed_ref()
        .and_then(|s| s.meta.signer.signer_name.as_str().map(str::to_owned));
    let map = rim.as_map_ref();
    let tee = match &map.profile {
        Some(ProfileTypeChoice::Uri(u)) if u.as_ref() == SNP_PROFILE => TeeKind::Snp,
        Some(ProfileTypeChoice::Oid(o)) if o.to_string() == INTEL_PROFILE => TeeKind::Tdx,
        other => {
            return Err(cerr(format!(
                "profile {other:?} is neither {SNP_PROFILE} nor {INTEL_PROFILE}"
            )))
        }
    };
    let id = match &map.id {
        CorimIdTypeChoice::Tstr(s) => s
            .strip_suffix(&format!("/{}", tee.name()))
            .unwrap_or(s)
            .to_owned(),
        other => format!("{other:?}"),
    };
    let prefix = format!("/{}/", tee.name());
    let mut values = ReferenceValues {
        id,
        ..Default::default()
    };
    for tag in &map.tags {
        let ConciseTagTypeChoice::Mid(mid) = tag else {
            continue;
        };
        let mid = mid.as_ref();
        let label = label_of(&mid.tag_identity.tag_id, &prefix)?;
        let triples = mid.triples.reference_triples.as_deref().unwrap_or_default();
        // The SNP CoMID repeats one claim list per signer class; read the first.
        let Some(first) = triples.first() else {
            continue;
        };
        match tee {
            TeeKind::Snp => values.snp.push(snp_from_claims(label, &first.ref_claims)?),
            TeeKind::Tdx => values.tdx.push(tdx_from_claims(label, &first.ref_claims)?),
        }
    }
    Ok(Decoded {
        values,
        tee,
        signer,
    })
}

fn snp_from_claims(
    label: String,
    claims: &[MeasurementMap<'_>],
) -> Result<SnpReference, ReferenceError> {
    use snp_mkey::*;
    let mut r: Option<SnpReference> = None;
    let mut rest = Vec::new();
    for c in claims {
        if uint_of(&c.mkey) == Some(i128::from(MEASUREMENT)) {
            let m = sha384_of(&c.mval)
                .ok_or_else(|| cerr(format!("{label}: MEASUREMENT has no sha-384 digest")))?;
            r = Some(SnpReference::new(label.clone(), m));
        } else {
            rest.push(c);
        }
    }
    let mut r = r.ok_or_else(|| cerr(format!("{label}: no MEASUREMENT (mkey 641)")))?;
    for c in rest {
        let k = uint_of(&c.mkey).and_then(|k| u64::try_from(k).ok());
        match k {
            Some(POLICY) => r.policy = raw_of::<8>(&c.mval).map(u64::from_le_bytes),
            Some(FAMILY_ID) => r.family_id = raw_of(&c.mval),
            Some(IMAGE_ID) => r.image_id = raw_of(&c.mval),
            Some(HOST_DATA) => r.host_data = raw_of(&c.mval),
            Some(ID_KEY_DIGEST) => r.id_key_digest = sha384_of(&c.mval),
            Some(AUTHOR_KEY_DIGEST) => r.author_key_digest = sha384_of(&c.mval),
            _ => {}
        }
    }
    Ok(r)
}

fn tdx_from_claims(
    label: String,
    claims: &[MeasurementMap<'_>],
) -> Result<TdxReference, ReferenceError> {
    let mut mrtd = None;
    let mut rtmrs = [None; 4];
    let mut attributes = None;
    for c in claims {
        match (&c.mkey, uint_of(&c.mkey)) {
            (_, Some(k)) if k == i128::from(tdx_mkey::MRTEE) => mrtd = sha384_of(&c.mval),
            (_, Some(k)) if k == i128::from(tdx_mkey::ATTRIBUTES) => {
                attributes = raw_of::<8>(&c.mval).map(u64::from_le_bytes)
            }
            (Some(MeasuredElementTypeChoice::Tstr(s)), _) if s == tdx_mkey::RTMRS => {
                for (k, d) in c.mval.integrity_registers.iter().flat_map(|r| r.0.iter()) {
                    let Ulabel::Uint(i) = k else { continue };
                    let slot = usize::try_from(i.0).ok().and_then(|i| rtmrs.get_mut(i));
                    if let Some(slot) = slot {
                        *slot = sha384_in(d);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(TdxReference {
        mrtd: mrtd.ok_or_else(|| cerr(format!("{label}: no MRTD (tee.mrtee, mkey 83)")))?,
        label,
        rtmrs,
        xfam: None,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    pub(crate) fn sample() -> ReferenceValues {
        let mut s = SnpReference::new("vcpus=4,vcpu-type=EPYC-v4,guest-features=0x1", [1; 48]);
        s.policy = Some(0x30000);
        s.family_id = Some([2; 16]);
        s.image_id = Some([3; 16]);
        s.host_data = Some([4; 32]);
        s.id_key_digest = Some([5; 48]);
        s.author_key_digest = Some([6; 48]);
        ReferenceValues {
            id: "demo-1.0".into(),
            snp: vec![
                s,
                SnpReference::new("vcpus=1,vcpu-type=EPYC,guest-features=0x1", [7; 48]),
            ],
            tdx: vec![TdxReference {
                label: "memory=2G,qemu=10.1".into(),
                mrtd: [8; 48],
                rtmrs: [None, Some([9; 48]), Some([10; 48]), None],
                xfam: None,
                attributes: Some(0x1000_0000),
            }],
            unsupported: Vec::new(),
        }
    }

    #[test]
    fn round_trips_through_corim_rs() {
        let v = sample();
        for tee in [TeeKind::Snp, TeeKind::Tdx] {
            let bytes = encode(&v, tee, None).unwrap();
            if std::env::var_os("COCOS_DUMP_CORIM").is_some() {
                println!("{}: {}", tee.name(), hex::encode(&bytes));
            }
            let d = decode(&bytes).unwrap();
            assert_eq!(d.tee, tee);
            assert_eq!(d.values.id, "demo-1.0");
            match tee {
                TeeKind::Snp => assert_eq!(d.values.snp, v.snp),
                TeeKind::Tdx => assert_eq!(d.values.tdx, v.tdx),
            }
        }
        let none = ReferenceValues {
            id: "x".into(),
            ..Default::default()
        };
        assert!(matches!(
            encode(&none, TeeKind::Snp, None),
            Err(ReferenceError::Empty(_))
        ));
    }
}
