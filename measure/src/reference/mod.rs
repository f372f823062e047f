//! Reference values in the forms verifiers read. [`ReferenceValues`] is the one typed
//! list of what a launch must show — per SEV-SNP launch configuration the MEASUREMENT
//! (and, where the launch fixes them, policy, host data, ID-block fields), per TDX launch
//! MRTD and the RTMRs — built from this crate's results or from any JSON it prints
//! (`snp|tdx|matrix --json`, release.json, the manager's expected value). [`corim`]
//! writes and reads it as CoRIM (optionally COSE_Sign1-signed), [`cocos`] as cocos'
//! attestation-policy JSON.

pub mod cocos;
pub mod corim;

use serde_json::Value;

use crate::bytes::Digest384;
use crate::launch::SnpMeasurement;
use crate::tdx_launch::TdxRegisters;

/// Why reference values cannot be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The input JSON is none of the shapes this crate prints.
    #[error("{0}")]
    Input(String),
    /// Nothing to publish for the chosen TEE.
    #[error("{0}")]
    Empty(String),
    /// The CoRIM could not be built, encoded or decoded.
    #[error("CoRIM: {0}")]
    Corim(String),
    /// A signing or signature problem.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// The COSE_Sign1 signature does not verify.
    #[error("COSE_Sign1 signature does not verify with the given key")]
    BadSignature,
}

/// Which TEE a set of values is for (a CoRIM carries one profile, so one TEE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

impl TeeKind {
    /// `snp` or `tdx`.
    pub fn name(self) -> &'static str {
        match self {
            TeeKind::Snp => "snp",
            TeeKind::Tdx => "tdx",
        }
    }
}

/// One SEV-SNP launch configuration's reference values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReference {
    /// Which launch: `vcpus=4,vcpu-type=EPYC-v4,guest-features=0x1`.
    pub label: String,
    /// MEASUREMENT.
    pub measurement: Digest384,
    /// The guest policy, where the launch fixes it.
    pub policy: Option<u64>,
    /// HOST_DATA, where the launch sets it.
    pub host_data: Option<[u8; 32]>,
    /// FAMILY_ID from the launch's ID block.
    pub family_id: Option<[u8; 16]>,
    /// IMAGE_ID from the launch's ID block.
    pub image_id: Option<[u8; 16]>,
    /// ID_KEY_DIGEST of the launch's ID block.
    pub id_key_digest: Option<Digest384>,
    /// AUTHOR_KEY_DIGEST of the launch's ID block.
    pub author_key_digest: Option<Digest384>,
}

impl SnpReference {
    /// A launch configuration known only by its MEASUREMENT.
    pub fn new(label: impl Into<String>, measurement: Digest384) -> Self {
        SnpReference {
            label: label.into(),
            measurement,
            policy: None,
            host_data: None,
            family_id: None,
            image_id: None,
            id_key_digest: None,
            author_key_digest: None,
        }
    }

    /// States what a signed ID block fixes: policy, FAMILY_ID, IMAGE_ID and the key
    /// digests.
    pub fn apply_id_block(
        &mut self,
        p: &crate::idblock::IdBlockParams,
        b: &crate::idblock::SignedIdBlock,
    ) {
        self.policy = Some(p.policy);
        self.family_id = Some(p.family_id);
        self.image_id = Some(p.image_id);
        self.id_key_digest = Some(b.id_key_digest);
        self.author_key_digest = b.author_key_digest;
    }

    /// From the facade's result, labelled by its settings.
    pub fn from_measurement(m: &SnpMeasurement) -> Self {
        Self::new(
            snp_label(m.vcpus, m.vcpu_type.as_deref(), m.guest_features),
            m.measurement,
        )
    }
}

/// One TDX launch's reference values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxReference {
    /// Which launch: `memory=2G,qemu=10.1`.
    pub label: String,
    /// MRTD.
    pub mrtd: Digest384,
    /// RTMR0–3 where known (RTMR0 depends on the host's ACPI tables; RTMR3 is the
    /// guest's own and is only stated when given).
    pub rtmrs: [Option<Digest384>; 4],
    /// XFAM, where the launch fixes it.
    pub xfam: Option<u64>,
    /// TDATTRIBUTES, where the launch fixes them.
    pub attributes: Option<u64>,
}

impl TdxReference {
    /// From the facade's registers.
    pub fn from_registers(label: impl Into<String>, r: &TdxRegisters) -> Self {
        TdxReference {
            label: label.into(),
            mrtd: r.mrtd,
            rtmrs: [r.rtmr0, r.rtmr1, r.rtmr2, None],
            xfam: None,
            attributes: None,
        }
    }
}

/// What a release (or one launch) must show, for every launch configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReferenceValues {
    /// A stable identifier: the release's `name-version`, or the caller's.
    pub id: String,
    /// SEV-SNP launch configurations.
    pub snp: Vec<SnpReference>,
    /// TDX launches.
    pub tdx: Vec<TdxReference>,
    /// Why a TEE has no values (release.json's `unsupported`).
    pub unsupported: Vec<(TeeKind, String)>,
}

/// `vcpus=4,vcpu-type=EPYC-v4,guest-features=0x1`.
pub fn snp_label(vcpus: u32, vcpu_type: Option<&str>, guest_features: u64) -> String {
    format!(
        "vcpus={vcpus},vcpu-type={},guest-features={guest_features:#x}",
        vcpu_type.unwrap_or("custom")
    )
}

/// `memory=2G,qemu=10.1` (`qemu=assumed` when the version was not stated).
pub fn tdx_label(memory: &str, qemu: Option<&str>) -> String {
    format!("memory={memory},qemu={}", qemu.unwrap_or("assumed"))
}

/// A label as a file-name part: `vcpus=4,vcpu-type=EPYC-v4` → `vcpus-4_vcpu-type-EPYC-v4`
/// (what `cocos-hal build` names per-launch files with, and the manager looks for).
pub fn file_label(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            ',' => '_',
            '=' => '-',
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
            _ => '_',
        })
        .collect()
}

fn input(msg: impl Into<String>) -> ReferenceError {
    ReferenceError::Input(msg.into())
}

fn hex_fixed<const N: usize>(what: &str, v: Option<&Value>) -> Result<[u8; N], ReferenceError> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| input(format!("{what}: missing (expected {} hex digits)", 2 * N)))?;
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|e| input(format!("{what}: expected {} hex digits: {e}", 2 * N)))?;
    Ok(out)
}

/// A register that may be null, or (release.json's RTMR0) a sentence saying why it is
/// not computed: only hex is a value.
fn hex_opt(what: &str, v: Option<&Value>) -> Result<Option<Digest384>, ReferenceError> {
    match v {
        Some(Value::String(s)) if s.len() == 96 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            hex_fixed(what, v).map(Some)
        }
        Some(Value::String(_)) | Some(Value::Null) | None => Ok(None),
        Some(other) => Err(input(format!(
            "{what}: expected hex or null, found {other}"
        ))),
    }
}

fn features(what: &str, v: Option<&Value>) -> Result<u64, ReferenceError> {
    match v {
        None | Some(Value::Null) => Ok(1),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| input(format!("{what}: not an unsigned integer"))),
        Some(Value::String(s)) => crate::bytes::parse_u64_hex_or_dec(s.trim())
            .map_err(|e| input(format!("{what}: {s:?}: {e}"))),
        Some(other) => Err(input(format!("{what}: expected a number, found {other}"))),
    }
}

fn vcpus(v: &Value, what: &str) -> Result<u32, ReferenceError> {
    v.get("vcpus")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| input(format!("{what}: missing or bad \"vcpus\"")))
}

fn snp_row(v: &Value, digest_key: &str, what: &str) -> Result<SnpReference, ReferenceError> {
    let measurement = hex_fixed(&format!("{what} {digest_key}"), v.get(digest_key))?;
    let label = snp_label(
        vcpus(v, what)?,
        v.get("vcpu_type").and_then(Value::as_str),
        features(&format!("{what} guest_features"), v.get("guest_features"))?,
    );
    Ok(SnpReference::new(label, measurement))
}

fn tdx_row(v: &Value, label: String, what: &str) -> Result<TdxReference, ReferenceError> {
    let mrtd = hex_fixed(&format!("{what} mrtd"), v.get("mrtd"))?;
    let mut rtmrs = [None; 4];
    for (i, slot) in rtmrs.iter_mut().enumerate() {
        let key = format!("rtmr{i}");
        *slot = hex_opt(&format!("{what} {key}"), v.get(&key))?;
    }
    Ok(TdxReference {
        label,
        mrtd,
        rtmrs,
        xfam: None,
        attributes: None,
    })
}

impl ReferenceValues {
    /// Reads any JSON this project prints: release.json (`measurements.snp.digests`,
    /// `measurements.tdx.launches`), `cocos-measure matrix --json`, `snp --json`, `tdx
    /// --json`, or the manager's expected value. `id` names the set when the input does
    /// not (release.json gives `name-version`).
    pub fn from_json(v: &Value, id: &str) -> Result<Self, ReferenceError> {
        let mut out = ReferenceValues {
            id: id.to_owned(),
            ..Default::default()
        };
        if let Some(m) = v.get("measurements").filter(|m| m.is_object()) {
            // release.json
            if let (Some(n), Some(ver)) = (
                v.get("name").and_then(Value::as_str),
                v.get("version").and_then(Value::as_str),
            ) {
                out.id = format!("{n}-{ver}");
            }
            if let Some(snp) = m.get("snp").filter(|s| !s.is_null()) {
                if let Some(why) = snp.get("unsupported").and_then(Value::as_str) {
                    out.unsupported.push((TeeKind::Snp, why.to_owned()));
                }
                for d in snp
                    .get("digests")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    out.snp
                        .push(snp_row(d, "digest", "release.json SNP digest")?);
                }
            }
            if let Some(tdx) = m.get("tdx").filter(|s| !s.is_null()) {
                for l in tdx
                    .get("launches")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let label = tdx_label(
                        l.get("memory").and_then(Value::as_str).unwrap_or("?"),
                        l.get("qemu_version").and_then(Value::as_str),
                    );
                    out.tdx.push(tdx_row(l, label, "release.json TDX launch")?);
                }
            }
        } else if let Some(rows) = v.get("measurements").and_then(Value::as_array) {
            // matrix --json
            for r in rows {
                out.snp.push(snp_row(r, "measurement", "matrix row")?);
            }
        } else if v.get("measurement").is_some() {
            out.snp.push(snp_row(v, "measurement", "SNP measurement")?);
        } else if v.get("mrtd").is_some() {
            let label = match v.get("memory").and_then(Value::as_u64) {
                Some(bytes) => tdx_label(
                    &format!("{}M", bytes >> 20),
                    v.get("qemu_version").and_then(Value::as_str),
                ),
                None => "tdx".to_owned(),
            };
            out.tdx.push(tdx_row(v, label, "TDX measurement")?);
        } else {
            return Err(input("not a release.json, nor `cocos-measure snp|tdx|matrix --json` output (no \"measurements\", \"measurement\" or \"mrtd\")"));
        }
        Ok(out)
    }

    /// The TEEs with values.
    pub fn tees(&self) -> Vec<TeeKind> {
        let mut t = Vec::new();
        if !self.snp.is_empty() {
            t.push(TeeKind::Snp);
        }
        if !self.tdx.is_empty() {
            t.push(TeeKind::Tdx);
        }
        t
    }

    /// An error unless `tee` has values, saying why not (the release's reason, if any).
    pub fn require(&self, tee: TeeKind) -> Result<(), ReferenceError> {
        let have = match tee {
            TeeKind::Snp => !self.snp.is_empty(),
            TeeKind::Tdx => !self.tdx.is_empty(),
        };
        if have {
            return Ok(());
        }
        let why = self
            .unsupported
            .iter()
            .find(|(t, _)| *t == tee)
            .map(|(_, w)| format!(": {w}"))
            .unwrap_or_default();
        Err(ReferenceError::Empty(format!(
            "no {} reference values{why}",
            tee.name().to_uppercase()
        )))
    }

    /// Keeps the entries whose label equals `label`; an error lists the labels there are.
    pub fn select(&self, label: &str) -> Result<Self, ReferenceError> {
        let mut out = self.clone();
        out.snp.retain(|r| r.label == label);
        out.tdx.retain(|r| r.label == label);
        if out.snp.is_empty() && out.tdx.is_empty() {
            let have: Vec<&str> = self
                .snp
                .iter()
                .map(|r| r.label.as_str())
                .chain(self.tdx.iter().map(|r| r.label.as_str()))
                .collect();
            return Err(ReferenceError::Empty(format!(
                "no launch configuration {label:?}; there are: {}",
                have.join(" ")
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_shape_we_print() {
        let h = |b: u8| hex::encode([b; 48]);
        let release = json!({"name": "demo", "version": "1.0", "measurements": {
            "snp": {"digests": [{"vcpus": 4, "vcpu_type": "EPYC-v4", "guest_features": "0x1", "digest": h(1)}]},
            "tdx": {"launches": [{"memory": "2G", "qemu_version": null, "mrtd": h(2),
                "rtmr0": "depends on the host", "rtmr1": h(3), "rtmr2": null}]}}});
        let r = ReferenceValues::from_json(&release, "x").unwrap();
        assert_eq!(r.id, "demo-1.0");
        assert_eq!(
            r.snp[0].label,
            "vcpus=4,vcpu-type=EPYC-v4,guest-features=0x1"
        );
        assert_eq!(r.snp[0].measurement, [1; 48]);
        assert_eq!(r.tdx[0].label, "memory=2G,qemu=assumed");
        assert_eq!(r.tdx[0].rtmrs, [None, Some([3; 48]), None, None]);
        assert_eq!(r.tees(), vec![TeeKind::Snp, TeeKind::Tdx]);

        let matrix = json!({"mode": "snp", "measurements": [
            {"vcpus": 1, "vcpu_type": "EPYC", "guest_features": "0x21", "measurement": h(4)}]});
        let m = ReferenceValues::from_json(&matrix, "m").unwrap();
        assert_eq!(m.snp[0].label, "vcpus=1,vcpu-type=EPYC,guest-features=0x21");
        assert!(m.select("vcpus=2").is_err());
        assert_eq!(m.select(&m.snp[0].label).unwrap(), m);

        for bad in [
            json!({"measurement": "abc", "vcpus": 1}),
            json!({"measurement": h(1)}),
            json!({"mrtd": 5}),
            json!({"something": "else"}),
            json!({"measurements": {"snp": {"digests": [{"vcpus": 1, "digest": h(1), "guest_features": "zz"}]}}}),
        ] {
            assert!(ReferenceValues::from_json(&bad, "b").is_err(), "{bad}");
        }
    }
}
