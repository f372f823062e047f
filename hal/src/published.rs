//! What a release publishes for verifiers beside release.json, computed from it:
//! `release.<tee>.corim` (CoRIM per TEE, COSE_Sign1-signed with the release key when
//! one is given), `cocos-policy.<tee>.<launch>.json` (cocos' attestation-policy JSON,
//! one launch configuration each) and, with an ID key, `id-block.snp.<launch>.json`
//! (a signed SEV-SNP ID block per matrix entry, which the manager hands to QEMU).
//! Keys are loaded before anything is built, read with owner-only permission checks,
//! and never written anywhere.

use std::path::PathBuf;

use cocos_measure::idblock::{IdBlockParams, SignedIdBlock};
use cocos_measure::keys::SigningKey;
use cocos_measure::reference::cocos::{snp_policy, tdx_policy, SnpPlatform, SnpProduct};
use cocos_measure::reference::corim::{self, Signer};
use cocos_measure::reference::{file_label, ReferenceValues};
use cocos_proto::release::Manifest;

use crate::error::BuildError;

/// Keys and host facts for the published files.
#[derive(Debug, Default)]
pub struct PublishOptions {
    /// Signs the CoRIMs (P-384: ES384, P-256: ES256).
    pub sign_key: Option<SigningKey>,
    /// `signer-name` in the CoRIM's COSE metadata.
    pub signer: String,
    /// Signs an SNP ID block per matrix entry (P-384).
    pub id_key: Option<SigningKey>,
    /// Signs the ID key (P-384; AUTHOR_KEY_EN).
    pub author_key: Option<SigningKey>,
    /// AMD product line for the cocos SNP policy.
    pub product: Option<SnpProduct>,
}

impl PublishOptions {
    /// Loads the keys named (each must be mode 0600 or stricter).
    pub fn load(
        sign_key: Option<PathBuf>,
        signer: String,
        id_key: Option<PathBuf>,
        author_key: Option<PathBuf>,
        product: Option<SnpProduct>,
    ) -> Result<Self, BuildError> {
        let k = |e: cocos_measure::keys::KeyError| BuildError::Key(e.to_string());
        if author_key.is_some() && id_key.is_none() {
            return Err(BuildError::Key(
                "an author key signs the ID key: give the ID key too".into(),
            ));
        }
        Ok(PublishOptions {
            sign_key: sign_key
                .as_deref()
                .map(SigningKey::load)
                .transpose()
                .map_err(k)?,
            signer,
            id_key: id_key
                .as_deref()
                .map(SigningKey::load_p384)
                .transpose()
                .map_err(k)?,
            author_key: author_key
                .as_deref()
                .map(SigningKey::load_p384)
                .transpose()
                .map_err(k)?,
            product,
        })
    }
}

fn err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Measure(e.to_string())
}

fn pretty(v: &serde_json::Value) -> Result<Vec<u8>, BuildError> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// The files to write beside release.json: (name, bytes).
pub fn files(rel: &Manifest, opts: &PublishOptions) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let mut values =
        ReferenceValues::from_json(&serde_json::to_value(rel)?, &rel.name).map_err(err)?;
    let mut out = Vec::new();
    if let Some(id_key) = &opts.id_key {
        for r in &mut values.snp {
            let params = IdBlockParams::for_digest(r.measurement);
            let b = SignedIdBlock::create(&params, id_key, opts.author_key.as_ref())
                .map_err(|e| BuildError::Key(e.to_string()))?;
            r.apply_id_block(&params, &b);
            let j = b.to_json(Some(&r.label)).map_err(err)?;
            out.push((
                format!("id-block.snp.{}.json", file_label(&r.label)),
                pretty(&j)?,
            ));
        }
    }
    let signer = opts.sign_key.as_ref().map(|key| Signer {
        key,
        name: opts.signer.clone(),
    });
    for tee in values.tees() {
        out.push((
            format!("release.{}.corim", tee.name()),
            corim::encode(&values, tee, signer.as_ref()).map_err(err)?,
        ));
    }
    let host = SnpPlatform {
        product: opts.product.unwrap_or(SnpProduct::Milan),
        ..SnpPlatform::default()
    };
    for r in &values.snp {
        out.push((
            format!("cocos-policy.snp.{}.json", file_label(&r.label)),
            pretty(&snp_policy(r, &host))?,
        ));
    }
    for r in &values.tdx {
        let (p, notes) = tdx_policy(r);
        for n in notes {
            crate::report::warn(&n);
        }
        out.push((
            format!("cocos-policy.tdx.{}.json", file_label(&r.label)),
            pretty(&p)?,
        ));
    }
    Ok(out)
}
