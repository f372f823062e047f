//! release.json, the contract between `cocos-hal` (which writes it) and
//! `cocos-manager` (which launches exactly what it names): one serde type,
//! [`Manifest`], versioned by its `schema` field. Unknown fields are refused on read, so
//! a manifest from a newer writer fails loudly instead of losing what it says. The
//! JSON Schema generated from these types is kept in `proto/release.schema.json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The schema version this crate writes and reads.
pub const SCHEMA: u32 = 1;

/// A released image: its files with their digests, the command line it boots with,
/// and the launch measurements it must produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// Image name (from the spec).
    pub name: String,
    /// Image version (from the spec).
    pub version: String,
    /// The kernel.
    pub kernel: KernelInfo,
    /// The image's default kernel command line (the manager appends `cocos.id=…`).
    pub cmdline: String,
    /// How the initramfs was packed.
    pub initramfs: Initramfs,
    /// Kernel modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// The files, named relative to release.json's directory.
    pub artifacts: Vec<Artifact>,
    /// Expected launch measurements.
    pub measurements: Measurements,
}

/// The kernel an image boots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// Kernel release (`uname -r`), e.g. `6.12.117+deb13-amd64`.
    pub release: String,
    /// Where it came from: `{debian_package, version, deb_sha256}`, `{file, sha256}`
    /// or `{built_by}`.
    pub source: serde_json::Value,
    /// Its TEE guest support, read from its config (`cocos-hal kernel --json` shows
    /// the same object).
    pub tee: serde_json::Value,
}

/// How the initramfs was packed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Initramfs {
    /// `gzip`, `xz`, `zstd` or `none`.
    pub compression: String,
    /// The modification time of every entry (SOURCE_DATE_EPOCH or the spec's `mtime`).
    pub mtime: u32,
}

/// What an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// The kernel (bzImage), QEMU `-kernel`.
    Kernel,
    /// The initramfs, QEMU `-initrd`.
    Initrd,
}

/// One file of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// What it is.
    pub kind: ArtifactKind,
    /// File name relative to release.json's directory (no `/`, no `..`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// A firmware the measurements were computed for; the manager refuses any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirmwareRef {
    /// File name as the spec named it (for people; the digest is what counts).
    pub file: String,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// Expected launch measurements, per TEE (absent: not computed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Measurements {
    /// AMD SEV-SNP (QEMU `kernel-hashes=on`).
    pub snp: Option<SnpReference>,
    /// Intel TDX (QEMU direct kernel boot).
    pub tdx: Option<TdxReference>,
}

/// SEV-SNP launch digests for a matrix of vCPU types, counts and guest features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnpReference {
    /// The firmware.
    pub firmware: FirmwareRef,
    /// VMM type the VMSAs are built for (`QEMU`); absent when `unsupported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<String>,
    /// One digest per launch configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<SnpDigest>,
    /// Why there are no digests (e.g. the firmware has no SNP_KERNEL_HASHES section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// One SEV-SNP launch configuration and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnpDigest {
    /// vCPU type (as `cocos-measure vcpu-types` lists).
    pub vcpu_type: String,
    /// vCPU count.
    pub vcpus: u32,
    /// SEV_FEATURES, hex (`0x1`).
    pub guest_features: String,
    /// The launch digest (SHA-384, hex).
    pub digest: String,
}

/// TDX values for the launches the spec lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TdxReference {
    /// The firmware.
    pub firmware: FirmwareRef,
    /// What the firmware's drivers show (`cocos-measure inspect --json`'s `edk2`).
    pub edk2: serde_json::Value,
    /// One entry per (QEMU version, memory size).
    pub launches: Vec<TdxLaunchRef>,
}

/// The TDX registers of one launch configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TdxLaunchRef {
    /// Guest memory as the spec wrote it (QEMU `-m` syntax).
    pub memory: String,
    /// The QEMU version measured for (absent: not stated, see `rules`).
    pub qemu_version: Option<String>,
    /// MRTD (hex).
    pub mrtd: String,
    /// RTMR0 (hex), or why it is not given (it depends on the host's ACPI tables).
    pub rtmr0: String,
    /// RTMR1 (hex).
    pub rtmr1: Option<String>,
    /// RTMR2 (hex).
    pub rtmr2: Option<String>,
    /// False when the firmware extends no RTMR (RTMR0–2 are then zero).
    pub rtmrs_extended: bool,
    /// How each QEMU/edk2 behaviour was chosen.
    pub rules: Vec<RuleRef>,
    /// What a verifier should read.
    pub notes: Vec<String>,
}

/// One choice of a TDX measurement and the rule that made it (`cocos-measure tdx
/// --json`'s `rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRef {
    /// The setting.
    pub setting: String,
    /// The value chosen.
    pub value: String,
    /// `flag`, `derived` or `assumed`.
    pub source: String,
    /// The rule, in words.
    pub why: String,
}

/// Why a release.json cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not this schema.
    #[error("{0}")]
    Invalid(String),
}

impl Manifest {
    /// Parses release.json, refusing other schema versions and unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("not JSON: {e}")))?;
        match v.get("schema").and_then(serde_json::Value::as_u64) {
            Some(s) if s == u64::from(SCHEMA) => {}
            Some(s) => {
                return Err(ManifestError::Invalid(format!(
                    "schema {s} is not supported (this cocos-manager reads schema {SCHEMA})"
                )))
            }
            None => {
                return Err(ManifestError::Invalid(format!(
                    "no \"schema\" field: written by a cocos-hal older than release.json schema {SCHEMA}; rebuild the release with `cocos-hal build` or `cocos-hal release`"
                )))
            }
        }
        serde_json::from_value(v).map_err(|e| ManifestError::Invalid(e.to_string()))
    }

    /// The JSON Schema of release.json.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Manifest)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            schema: SCHEMA,
            name: "n".into(),
            version: "1".into(),
            kernel: KernelInfo {
                release: "6.12".into(),
                source: serde_json::json!({"file": "vmlinuz"}),
                tee: serde_json::Value::Null,
            },
            cmdline: "console=ttyS0".into(),
            initramfs: Initramfs {
                compression: "gzip".into(),
                mtime: 0,
            },
            modules: vec![],
            artifacts: vec![Artifact {
                kind: ArtifactKind::Kernel,
                path: "vmlinuz".into(),
                size: 1,
                sha256: "00".repeat(32),
            }],
            measurements: Measurements::default(),
        }
    }

    #[test]
    fn round_trips_and_refuses_unknown_fields_and_schemas() {
        let m = sample();
        let text = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::from_json(&text).unwrap(), m);
        let mut v = serde_json::to_value(&m).unwrap();
        v["artifacts"][0]["extra"] = serde_json::json!(1);
        let e = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let mut v = serde_json::to_value(&m).unwrap();
        v["schema"] = serde_json::json!(2);
        assert!(Manifest::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string()
            .contains("schema 2"));
        v.as_object_mut().unwrap().remove("schema");
        assert!(Manifest::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string()
            .contains("no \"schema\""));
        assert!(Manifest::from_json(b"[").is_err());
    }

    /// `proto/release.schema.json` is what the types generate (regenerate with
    /// `COCOS_UPDATE_SCHEMA=1 cargo test -p cocos-proto --features release`).
    #[test]
    fn schema_file_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("release.schema.json");
        let mut want = serde_json::to_string_pretty(&Manifest::json_schema()).unwrap();
        want.push('\n');
        if std::env::var_os("COCOS_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run COCOS_UPDATE_SCHEMA=1 cargo test -p cocos-proto --features release",
            path.display()
        );
    }
}
