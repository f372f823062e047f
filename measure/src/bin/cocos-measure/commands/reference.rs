//! `cocos-measure reference-values`: any measurement JSON we print (or a release.json)
//! as CoRIM (optionally signed), cocos attestation-policy JSON, or a JSON summary; and
//! `--read` to show what a CoRIM holds. `cocos-measure id-block`: a signed SEV-SNP ID
//! block for one launch digest.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use cocos_measure::idblock::{IdBlockParams, SignedIdBlock, DEFAULT_POLICY};
use cocos_measure::keys::SigningKey;
use cocos_measure::reference::cocos::{snp_policy, tdx_policy, SnpPlatform, SnpProduct};
use cocos_measure::reference::corim::{self, Signer};
use cocos_measure::reference::{ReferenceValues, SnpReference, TdxReference, TeeKind};
use cocos_measure::verify::hex_exact;

use crate::pyint::parse_u64_auto;

/// Output forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// CoRIM (CBOR; COSE_Sign1 with --sign-key)
    Corim,
    /// cocos attestation-policy JSON (one launch configuration)
    CocosPolicy,
    /// The reference values as JSON
    Json,
}

#[derive(Args)]
pub(crate) struct ReferenceCmd {
    /// release.json, or the JSON of `cocos-measure snp|tdx|matrix --json`
    #[arg(value_name = "INPUT", required_unless_present = "read")]
    input: Option<PathBuf>,
    /// Output form
    #[arg(long, value_enum, default_value = "corim")]
    format: Format,
    /// Which TEE (a CoRIM carries one profile; needed when INPUT has both)
    #[arg(long, value_parser = ["snp", "tdx"])]
    tee: Option<String>,
    /// Keep only this launch configuration (a label as `--format json` prints it)
    #[arg(long, value_name = "LABEL")]
    launch: Option<String>,
    /// Identifier of the set (default: release.json's name-version, else the file name)
    #[arg(long)]
    id: Option<String>,
    /// Sign the CoRIM as COSE_Sign1 with this EC key (P-384: ES384, P-256: ES256; mode 0600)
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,
    /// Signer name in the COSE header's CoRIM metadata
    #[arg(long, default_value = "cocos-rs release")]
    signer: String,
    /// SNP guest policy the launches use (stated in the CoRIM and the cocos policy)
    #[arg(long, value_parser = parse_u64_auto)]
    policy: Option<u64>,
    /// SNP HOST_DATA the launches set (64 hex digits)
    #[arg(long, value_name = "HEX")]
    host_data: Option<String>,
    /// TDX XFAM the launches use (cocos policy `xfam`)
    #[arg(long, value_parser = parse_u64_auto)]
    xfam: Option<u64>,
    /// TDX TDATTRIBUTES the launches use (CoRIM `tee.attributes`, cocos policy `tdAttributes`)
    #[arg(long, value_parser = parse_u64_auto)]
    td_attributes: Option<u64>,
    /// ID block JSON (`cocos-measure id-block --json`): its family/image ID, policy and key digests
    #[arg(long, value_name = "FILE")]
    id_block: Option<PathBuf>,
    /// cocos policy: AMD product line of the hosts (milan, genoa, turin)
    #[arg(long, default_value = "milan")]
    product: String,
    /// cocos policy: VMPL the guest requests reports from
    #[arg(long, default_value_t = 0)]
    vmpl: u32,
    /// Write here (atomically) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Show what a CoRIM file holds (as --format json) instead
    #[arg(long, value_name = "CORIM", conflicts_with_all = ["input", "sign_key"])]
    read: Option<PathBuf>,
}

fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    crate::cli::read_bounded(
        path,
        what,
        64 << 20,
        ": far larger than any measurement JSON",
    )
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a
/// rename, so a failure leaves no half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn emit(output: Option<&Path>, bytes: &[u8], binary: bool) -> Result<()> {
    match output {
        Some(p) => write_atomic(p, bytes),
        None => {
            let mut out = std::io::stdout().lock();
            if binary && out.is_terminal() {
                bail!("CoRIM is binary CBOR: give -o FILE, or redirect stdout");
            }
            out.write_all(bytes)?;
            Ok(())
        }
    }
}

fn opt_hex(v: &Option<[u8; 48]>) -> Value {
    v.map_or(Value::Null, |b| Value::String(hex::encode(b)))
}

/// The reference values as JSON (what a CoRIM holds, readable).
pub(crate) fn values_json(v: &ReferenceValues) -> Value {
    let snp: Vec<Value> = v
        .snp
        .iter()
        .map(|r: &SnpReference| {
            json!({
                "label": r.label,
                "measurement": hex::encode(r.measurement),
                "policy": r.policy.map(|p| format!("{p:#x}")),
                "host_data": r.host_data.map(hex::encode),
                "family_id": r.family_id.map(hex::encode),
                "image_id": r.image_id.map(hex::encode),
                "id_key_digest": opt_hex(&r.id_key_digest),
                "author_key_digest": opt_hex(&r.author_key_digest),
            })
        })
        .collect();
    let tdx: Vec<Value> = v
        .tdx
        .iter()
        .map(|r: &TdxReference| {
            json!({
                "label": r.label,
                "mrtd": hex::encode(r.mrtd),
                "rtmr0": opt_hex(&r.rtmrs[0]),
                "rtmr1": opt_hex(&r.rtmrs[1]),
                "rtmr2": opt_hex(&r.rtmrs[2]),
                "rtmr3": opt_hex(&r.rtmrs[3]),
                "xfam": r.xfam.map(|x| format!("{x:#x}")),
                "td_attributes": r.attributes.map(|x| format!("{x:#x}")),
            })
        })
        .collect();
    json!({"id": v.id, "snp": snp, "tdx": tdx})
}

fn pretty(v: &Value) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// Applies `--policy`, `--host-data` and `--id-block` to every SNP entry.
fn apply_launch_facts(c: &ReferenceCmd, v: &mut ReferenceValues) -> Result<()> {
    let host_data = c
        .host_data
        .as_deref()
        .map(|h| hex_exact::<32>("--host-data", h))
        .transpose()?;
    let id_block = match &c.id_block {
        Some(p) => {
            let j: Value = serde_json::from_slice(&read_input(p, "--id-block")?)
                .with_context(|| format!("--id-block {}: not JSON", p.display()))?;
            let b = SignedIdBlock::from_json(&j)
                .with_context(|| format!("--id-block {}", p.display()))?;
            Some((b.params()?, b))
        }
        None => None,
    };
    for r in &mut v.tdx {
        if c.xfam.is_some() {
            r.xfam = c.xfam;
        }
        if c.td_attributes.is_some() {
            r.attributes = c.td_attributes;
        }
    }
    for r in &mut v.snp {
        if c.policy.is_some() {
            r.policy = c.policy;
        }
        if host_data.is_some() {
            r.host_data = host_data;
        }
        if let Some((p, b)) = &id_block {
            if p.measurement == r.measurement {
                r.apply_id_block(p, b);
            }
        }
    }
    if let Some((p, _)) = &id_block {
        if !v.snp.iter().any(|r| r.measurement == p.measurement) {
            bail!(
                "--id-block is for measurement {}, which no SNP launch configuration has",
                hex::encode(p.measurement)
            );
        }
    }
    Ok(())
}

pub(crate) fn run_reference(c: ReferenceCmd) -> Result<()> {
    if let Some(path) = &c.read {
        let bytes = read_input(path, "--read")?;
        let d = corim::decode(&bytes).with_context(|| format!("--read {}", path.display()))?;
        let mut v = values_json(&d.values);
        if let Some(o) = v.as_object_mut() {
            o.insert("profile".into(), json!(d.tee.name()));
            o.insert("signer".into(), json!(d.signer));
        }
        return emit(c.output.as_deref(), &pretty(&v)?, false);
    }
    let Some(input) = &c.input else {
        bail!("give INPUT (release.json or `cocos-measure … --json` output), or --read CORIM");
    };
    let raw = read_input(input, "INPUT")?;
    let json: Value = serde_json::from_slice(&raw)
        .with_context(|| format!("INPUT {}: not JSON", input.display()))?;
    let default_id = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cocos".into());
    let mut values = ReferenceValues::from_json(&json, c.id.as_deref().unwrap_or(&default_id))
        .with_context(|| format!("INPUT {}", input.display()))?;
    if let Some(id) = &c.id {
        values.id.clone_from(id);
    }
    if let Some(l) = &c.launch {
        values = values.select(l)?;
    }
    apply_launch_facts(&c, &mut values)?;
    let tee = match (c.tee.as_deref(), values.tees().as_slice()) {
        (Some("snp"), _) => TeeKind::Snp,
        (Some(_), _) => TeeKind::Tdx,
        (None, [one]) => *one,
        (None, []) => bail!("INPUT {} has no SNP digests and no TDX launches", input.display()),
        (None, _) => bail!("INPUT has SNP and TDX values; a CoRIM or policy is for one TEE: choose --tee snp or --tee tdx"),
    };
    values.require(tee)?;
    match c.format {
        Format::Json => {
            if c.tee.is_some() {
                match tee {
                    TeeKind::Snp => values.tdx.clear(),
                    TeeKind::Tdx => values.snp.clear(),
                }
            }
            emit(c.output.as_deref(), &pretty(&values_json(&values))?, false)
        }
        Format::Corim => {
            let key = c.sign_key.as_deref().map(SigningKey::load).transpose()?;
            let signer = key.as_ref().map(|k| Signer {
                key: k,
                name: c.signer.clone(),
            });
            let bytes = corim::encode(&values, tee, signer.as_ref())?;
            emit(c.output.as_deref(), &bytes, true)
        }
        Format::CocosPolicy => {
            let policy = match tee {
                TeeKind::Snp => {
                    let [one] = values.snp.as_slice() else {
                        bail!("{} SNP launch configurations; a cocos policy holds one: choose with --launch ({})", values.snp.len(), labels(values.snp.iter().map(|r| &r.label)));
                    };
                    let product = SnpProduct::parse(&c.product).with_context(|| {
                        format!("--product {}: expected milan, genoa or turin", c.product)
                    })?;
                    snp_policy(
                        one,
                        &SnpPlatform {
                            product,
                            vmpl: c.vmpl,
                            ..SnpPlatform::default()
                        },
                    )
                }
                TeeKind::Tdx => {
                    let [one] = values.tdx.as_slice() else {
                        bail!(
                            "{} TDX launches; a cocos policy holds one: choose with --launch ({})",
                            values.tdx.len(),
                            labels(values.tdx.iter().map(|r| &r.label))
                        );
                    };
                    let (p, notes) = tdx_policy(one);
                    for n in notes {
                        eprintln!("cocos-measure: warning: {n}");
                    }
                    p
                }
            };
            emit(c.output.as_deref(), &pretty(&policy)?, false)
        }
    }
}

fn labels<'a>(l: impl Iterator<Item = &'a String>) -> String {
    l.map(String::as_str).collect::<Vec<_>>().join(" ")
}

#[derive(Args)]
pub(crate) struct IdBlockCmd {
    /// Launch digest: 96 hex digits, or the JSON `cocos-measure snp --json` prints
    #[arg(long, value_name = "HEX|FILE")]
    measurement: String,
    /// Guest policy (must equal the launch's `sev-snp-guest,policy=`)
    #[arg(long, default_value = "0x30000", value_parser = parse_u64_auto)]
    policy: u64,
    /// FAMILY_ID (32 hex digits)
    #[arg(
        long,
        value_name = "HEX",
        default_value = "00000000000000000000000000000000"
    )]
    family_id: String,
    /// IMAGE_ID (32 hex digits)
    #[arg(
        long,
        value_name = "HEX",
        default_value = "00000000000000000000000000000000"
    )]
    image_id: String,
    /// GUEST_SVN
    #[arg(long, default_value_t = 0)]
    guest_svn: u32,
    /// ID key: EC P-384 private key (PEM, mode 0600)
    #[arg(long, value_name = "KEY.pem")]
    id_key: PathBuf,
    /// Author key: EC P-384 private key that signs the ID key (enables AUTHOR_KEY_EN)
    #[arg(long, value_name = "KEY.pem")]
    author_key: Option<PathBuf>,
    /// JSON output (id_block, id_auth, digests, the QEMU properties)
    #[arg(long)]
    json: bool,
    /// Write here (atomically) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn measurement_arg(s: &str) -> Result<[u8; 48]> {
    let t = s.trim();
    if t.len() == 96 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(hex_exact("--measurement", t)?);
    }
    let path = Path::new(t);
    if !path.exists() && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "--measurement {t}: expected 96 hex digits (a SHA-384 launch digest), got {}",
            t.len()
        );
    }
    let j: Value =
        serde_json::from_slice(&read_input(path, "--measurement")?).with_context(|| {
            format!(
                "--measurement {}: neither 96 hex digits nor JSON",
                path.display()
            )
        })?;
    let m = j
        .get("measurement")
        .and_then(Value::as_str)
        .with_context(|| format!("--measurement {}: no \"measurement\"", path.display()))?;
    Ok(hex_exact("--measurement", m)?)
}

pub(crate) fn run_id_block(c: IdBlockCmd) -> Result<()> {
    if c.policy & (1 << 17) == 0 {
        bail!("--policy {:#x}: bit 17 is reserved and must be set (QEMU's default is {DEFAULT_POLICY:#x})", c.policy);
    }
    let params = IdBlockParams {
        measurement: measurement_arg(&c.measurement)?,
        family_id: hex_exact("--family-id", &c.family_id)?,
        image_id: hex_exact("--image-id", &c.image_id)?,
        guest_svn: c.guest_svn,
        policy: c.policy,
    };
    let id_key = SigningKey::load_p384(&c.id_key)?;
    let author = c
        .author_key
        .as_deref()
        .map(SigningKey::load_p384)
        .transpose()?;
    let b = SignedIdBlock::create(&params, &id_key, author.as_ref())?;
    let out = if c.json {
        pretty(&b.to_json(None)?)?
    } else {
        format!("{}\n", b.qemu_properties()).into_bytes()
    };
    emit(c.output.as_deref(), &out, false)
}
