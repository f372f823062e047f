//! The reference values of one launch: its expected measurement plus what the manager
//! fixed when it launched it ([`LaunchFacts`]: SNP host data, and the release's signed
//! ID block for the launch configuration, which QEMU hands the secure processor so it
//! refuses any other digest). Served by AttestationPolicy as cocos attestation-policy
//! JSON and as CoRIM ([`documents`]), and used for the verifier's expectations.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use cocos_measure::idblock::SignedIdBlock;
use cocos_measure::keys::SigningKey;
use cocos_measure::reference::cocos::{snp_policy, tdx_policy, SnpPlatform, SnpProduct};
use cocos_measure::reference::corim::{self, Signer};
use cocos_measure::reference::{
    file_label, tdx_label, ReferenceValues, SnpReference, TdxReference, TeeKind,
};
use serde::{Deserialize, Serialize};

use crate::expected::ExpectedMeasurement;
use crate::release::ReleaseError;

/// A signed ID block as the VM record keeps it (base64, as QEMU takes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdBlockRef {
    /// `id-block=`.
    pub id_block: String,
    /// `id-auth=`.
    pub id_auth: String,
    /// `author-key-enabled=on`.
    pub author_key_enabled: bool,
}

impl IdBlockRef {
    /// The structures, checked (sizes, VERSION, keys present; digests recomputed).
    pub fn signed(&self) -> Result<SignedIdBlock, String> {
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("stored ID block is not base64: {e}"))
        };
        SignedIdBlock::from_parts(
            &b64(&self.id_block)?,
            &b64(&self.id_auth)?,
            self.author_key_enabled,
        )
        .map_err(|e| e.to_string())
    }
}

/// What the manager fixed at launch beyond the measured files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFacts {
    /// SNP HOST_DATA given to QEMU (base64 of 32 bytes).
    #[serde(default)]
    pub host_data: Option<String>,
    /// The release's ID block for this launch configuration, given to QEMU.
    #[serde(default)]
    pub snp_id_block: Option<IdBlockRef>,
}

/// Largest ID block record read (it is about 6 KiB).
const MAX_ID_BLOCK_FILE: u64 = 64 * 1024;

/// `id-block.snp.<launch>.json` beside release.json, as `cocos-hal build --id-key`
/// names it.
pub fn id_block_path(release_dir: &Path, label: &str) -> PathBuf {
    release_dir.join(format!("id-block.snp.{}.json", file_label(label)))
}

/// The release's ID block for an SNP launch configuration, if it has one that states
/// exactly `measurement`: read with a size bound and checked; a record that is not an
/// ID block is an error, one for another digest (a release ID block is signed for the
/// release's own command line, which a launch that adds `cocos.id` does not keep) is
/// not used.
pub fn load_id_block(
    path: &Path,
    measurement: &[u8; 48],
) -> Result<Option<IdBlockRef>, ReleaseError> {
    let shown = path.display().to_string();
    let invalid = |why: String| ReleaseError::Invalid {
        path: shown.clone(),
        why,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReleaseError::Io {
                path: shown,
                source,
            })
        }
    };
    let mut text = Vec::new();
    file.take(MAX_ID_BLOCK_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|source| ReleaseError::Io {
            path: shown.clone(),
            source,
        })?;
    if text.len() as u64 > MAX_ID_BLOCK_FILE {
        return Err(invalid(format!(
            "larger than {MAX_ID_BLOCK_FILE} bytes: not an ID block record"
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let signed = SignedIdBlock::from_json(&v).map_err(|e| invalid(e.to_string()))?;
    let params = signed.params().map_err(|e| invalid(e.to_string()))?;
    if &params.measurement != measurement {
        tracing::info!(
            "{shown}: for launch digest {}, this launch measures {}: not used",
            hex::encode(params.measurement),
            hex::encode(measurement)
        );
        return Ok(None);
    }
    Ok(Some(IdBlockRef {
        id_block: signed.block_b64(),
        id_auth: signed.auth_b64(),
        author_key_enabled: signed.author_key_digest.is_some(),
    }))
}

/// Signs an ID block for exactly this launch's digest with the manager's ID key (and
/// author key): the secure processor then refuses any other launch of this VM.
pub fn sign_id_block(
    measurement: &[u8; 48],
    id_key: &SigningKey,
    author_key: Option<&SigningKey>,
) -> Result<IdBlockRef, String> {
    let params = cocos_measure::idblock::IdBlockParams::for_digest(*measurement);
    let b = SignedIdBlock::create(&params, id_key, author_key).map_err(|e| e.to_string())?;
    Ok(IdBlockRef {
        id_block: b.block_b64(),
        id_auth: b.auth_b64(),
        author_key_enabled: b.author_key_digest.is_some(),
    })
}

/// The reference values of one launch (`None` for a launch with no TEE measurement).
pub fn reference_values(
    id: &str,
    expected: &ExpectedMeasurement,
    facts: &LaunchFacts,
) -> Result<Option<ReferenceValues>, String> {
    let mut v = ReferenceValues {
        id: id.to_owned(),
        ..Default::default()
    };
    match expected {
        ExpectedMeasurement::None { .. } => return Ok(None),
        ExpectedMeasurement::Snp(m) => {
            let mut r = SnpReference::from_measurement(m);
            if let Some(h) = &facts.host_data {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(h)
                    .map_err(|e| format!("host data is not base64: {e}"))?;
                r.host_data = Some(
                    b.try_into()
                        .map_err(|_| "host data is not 32 bytes".to_owned())?,
                );
            }
            if let Some(b) = &facts.snp_id_block {
                let signed = b.signed()?;
                r.apply_id_block(&signed.params().map_err(|e| e.to_string())?, &signed);
            }
            v.snp.push(r);
        }
        ExpectedMeasurement::Tdx(t) => {
            let memory = format!("{}M", t.memory >> 20);
            let qemu = t.qemu_version.map(|q| q.to_string());
            v.tdx.push(TdxReference::from_registers(
                tdx_label(&memory, qemu.as_deref()),
                &t.registers,
            ));
        }
    }
    Ok(Some(v))
}

/// AttestationPolicy's two forms of the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocuments {
    /// cocos attestation-policy JSON (go-sev-guest / go-tdx-guest protojson).
    pub cocos_json: Vec<u8>,
    /// CoRIM (COSE_Sign1 when the manager has a signing key).
    pub corim: Vec<u8>,
}

/// The values as cocos policy JSON and CoRIM.
pub fn documents(
    values: &ReferenceValues,
    product: SnpProduct,
    key: Option<&SigningKey>,
) -> Result<PolicyDocuments, String> {
    let tee = match values.tees().as_slice() {
        [one] => *one,
        _ => return Err("a launch has values for exactly one TEE".into()),
    };
    let policy = match (tee, values.snp.first(), values.tdx.first()) {
        (TeeKind::Snp, Some(r), _) => snp_policy(
            r,
            &SnpPlatform {
                product,
                ..SnpPlatform::default()
            },
        ),
        (TeeKind::Tdx, _, Some(r)) => tdx_policy(r).0,
        _ => return Err("no reference values".into()),
    };
    let signer = key.map(|key| Signer {
        key,
        name: "cocos-rs manager".into(),
    });
    Ok(PolicyDocuments {
        cocos_json: serde_json::to_vec(&policy).map_err(|e| e.to_string())?,
        corim: corim::encode(values, tee, signer.as_ref()).map_err(|e| e.to_string())?,
    })
}

/// The AMD product line of this host, from /proc/cpuinfo (family 0x19: Milan below
/// model 0x10, else Genoa; family 0x1a: Turin); Milan when it cannot tell.
pub fn host_snp_product(cpuinfo: &str) -> SnpProduct {
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    match (field("cpu family"), field("model")) {
        (Some(0x1a), _) => SnpProduct::Turin,
        (Some(0x19), Some(m)) if m >= 0x10 => SnpProduct::Genoa,
        _ => SnpProduct::Milan,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn product_from_cpuinfo() {
        let c = |fam: u32, model: u32| {
            format!("vendor_id\t: AuthenticAMD\ncpu family\t: {fam}\nmodel\t\t: {model}\n")
        };
        assert_eq!(host_snp_product(&c(25, 1)), SnpProduct::Milan);
        assert_eq!(host_snp_product(&c(25, 17)), SnpProduct::Genoa);
        assert_eq!(host_snp_product(&c(26, 2)), SnpProduct::Turin);
        assert_eq!(host_snp_product("garbage"), SnpProduct::Milan);
    }

    #[test]
    fn hostile_id_block_records_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        assert!(load_id_block(&p, &[0; 48]).unwrap().is_none());
        for bad in [
            b"not json".to_vec(),
            br#"{"id_block": "AAAA", "id_auth": "AAAA"}"#.to_vec(),
            vec![b' '; 70_000],
        ] {
            std::fs::write(&p, &bad).unwrap();
            assert!(load_id_block(&p, &[0; 48]).is_err());
        }
        let stored = IdBlockRef {
            id_block: "!!".into(),
            id_auth: String::new(),
            author_key_enabled: false,
        };
        assert!(stored.signed().is_err());
    }

    #[test]
    fn label_to_file_name_matches_cocos_hal() {
        let p = id_block_path(
            Path::new("/r"),
            "vcpus=4,vcpu-type=EPYC-v4,guest-features=0x1",
        );
        assert_eq!(
            p,
            Path::new("/r/id-block.snp.vcpus-4_vcpu-type-EPYC-v4_guest-features-0x1.json")
        );
    }
}
