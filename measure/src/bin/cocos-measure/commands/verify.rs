//! `cocos-measure verify snp`: check that an SEV-SNP report is genuine (AMD's chain,
//! the report signature) and shows the launch we expected, bound to the nonce sent.
//! Exit 0 verified, 1 genuine-looking evidence that fails a check, 2 unusable input.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use cocos_measure::verify::amd::{Cert, Tcb};
use cocos_measure::verify::snp::{self, CertTable, Certs, Expectations};
use cocos_measure::verify::tdx;
use cocos_measure::verify::{hex_exact, parse_time, Verdict};

#[derive(Subcommand)]
pub(crate) enum VerifyCmd {
    /// Verify an SEV-SNP attestation report against AMD's chain and the expected launch
    Snp(Box<SnpVerify>),
    /// Verify a TDX quote (v4/v5) with Intel's collateral against the expected launch
    Tdx(Box<TdxVerify>),
}

/// What binds the evidence to this request, and when it is judged.
#[derive(Args)]
pub(crate) struct Binding {
    /// The nonce sent (hex): REPORT_DATA must be its SHA-512, as cocos-agent binds it
    #[arg(long, value_name = "HEX", group = "binding")]
    nonce: Option<String>,
    /// The expected REPORT_DATA itself (128 hex digits), for evidence bound another way
    #[arg(long, value_name = "HEX", group = "binding")]
    report_data: Option<String>,
    /// Do not check REPORT_DATA (the evidence's freshness is then not established)
    #[arg(long, group = "binding")]
    any_report_data: bool,
    /// Time certificates and collateral must be valid at (RFC 3339; default: now)
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
}

impl Binding {
    /// The REPORT_DATA expected, if any is checked.
    fn report_data(&self) -> Result<Option<[u8; 64]>> {
        Ok(match (&self.nonce, &self.report_data, self.any_report_data) {
            (Some(n), _, _) => Some(snp::report_data_for_nonce(
                &hex::decode(n.trim()).context("--nonce: not hex")?,
            )),
            (None, Some(d), _) => Some(hex_exact("--report-data", d)?),
            (None, None, true) => None,
            (None, None, false) => bail!("give --nonce HEX (the nonce sent), --report-data HEX, or --any-report-data: without one, replayed evidence would pass"),
        })
    }

    /// Seconds since the epoch to judge at.
    fn now(&self) -> Result<i64> {
        Ok(match &self.now {
            Some(t) => parse_time(t)?,
            None => time_now(),
        })
    }
}

#[derive(Args)]
pub(crate) struct TdxVerify {
    /// The quote (configfs-tsm outblob for TDX, or a DCAP quote file)
    #[arg(long, value_name = "FILE")]
    quote: PathBuf,
    /// Intel's collateral as JSON (PCCS fields: pck_crl_issuer_chain, root_ca_crl, pck_crl, tcb_info_issuer_chain, tcb_info, tcb_info_signature, qe_identity_issuer_chain, qe_identity, qe_identity_signature; binary fields hex)
    #[arg(long, value_name = "FILE")]
    collateral: PathBuf,
    /// Expected registers: the JSON `cocos-measure tdx --json` prints (mrtd, rtmr0-3), or a release.json (select with --memory/--qemu-version)
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// Guest memory of the launch (release.json: which entry, as the spec wrote it)
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// QEMU version of the launch (release.json: which entry)
    #[arg(long, value_name = "X.Y")]
    qemu_version: Option<String>,
    /// Expected MRTD (96 hex digits; overrides --expected)
    #[arg(long, value_name = "HEX")]
    mrtd: Option<String>,
    /// Expected RTMR0 (96 hex digits)
    #[arg(long, value_name = "HEX")]
    rtmr0: Option<String>,
    /// Expected RTMR1
    #[arg(long, value_name = "HEX")]
    rtmr1: Option<String>,
    /// Expected RTMR2
    #[arg(long, value_name = "HEX")]
    rtmr2: Option<String>,
    /// Expected RTMR3
    #[arg(long, value_name = "HEX")]
    rtmr3: Option<String>,
    #[command(flatten)]
    binding: Binding,
    /// Expected XFAM (16 hex digits)
    #[arg(long, value_name = "HEX")]
    xfam: Option<String>,
    /// Allowed MR_SEAM (TDX module measurement, 96 hex digits); repeatable; default any
    #[arg(long = "mr-seam", value_name = "HEX")]
    mr_seam: Vec<String>,
    /// Accept a TD with the DEBUG attribute
    #[arg(long)]
    allow_debug: bool,
    /// Accept this TCB status besides UpToDate (e.g. SWHardeningNeeded); repeatable
    #[arg(long = "accept-tcb", value_name = "STATUS")]
    accept_tcb: Vec<String>,
    /// The guest's event log (/sys/firmware/acpi/tables/data/CCEL): replayed against the quote, and compared event by event with --expected's events
    #[arg(long, value_name = "FILE")]
    event_log: Option<PathBuf>,
    /// JSON output (every check, values seen and expected)
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct SnpVerify {
    /// The attestation report (1184 bytes: configfs-tsm outblob, or /dev/sev-guest's report)
    #[arg(long, value_name = "FILE")]
    report: PathBuf,
    /// The VCEK (PEM or DER); AMD's KDS serves it for the report's chip ID and TCB
    #[arg(long, value_name = "FILE", conflicts_with = "vlek")]
    vcek: Option<PathBuf>,
    /// The VLEK (PEM or DER), for reports signed by a cloud provider's loaded key
    #[arg(long, value_name = "FILE")]
    vlek: Option<PathBuf>,
    /// The report's certificate table (configfs-tsm auxblob): VCEK/VLEK, ASK, ARK
    #[arg(long, value_name = "FILE")]
    certs: Option<PathBuf>,
    /// Intermediate and root certificates (PEM bundle, e.g. KDS cert_chain: ASK or ASVK, ARK)
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    /// AMD's certificate revocation list for the product (KDS: curl -o crl.der https://kdsintf.amd.com/vcek/v1/Milan/crl)
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// The expected launch measurement: 96 hex digits, the JSON `cocos-measure snp --json` prints, or a release.json (select with --vcpus/--vcpu-type/--guest-features)
    #[arg(long, value_name = "HEX|FILE")]
    expected: String,
    /// vCPU count of the launch (release.json: which digest)
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// vCPU type of the launch (release.json)
    #[arg(long, value_name = "TYPE")]
    vcpu_type: Option<String>,
    /// SEV features of the launch (release.json; default 0x1)
    #[arg(long, value_name = "BITS")]
    guest_features: Option<String>,
    #[command(flatten)]
    binding: Binding,
    /// VMPL the report must come from
    #[arg(long, value_name = "N", default_value_t = 0)]
    vmpl: u32,
    /// Expected HOST_DATA (64 hex digits)
    #[arg(long, value_name = "HEX")]
    host_data: Option<String>,
    /// Lowest REPORTED_TCB accepted, e.g. bl=3,tee=0,snp=8,ucode=115
    #[arg(long, value_name = "TCB")]
    min_tcb: Option<String>,
    /// Lowest firmware ABI the policy may require (MAJOR.MINOR)
    #[arg(long, value_name = "X.Y")]
    min_abi: Option<String>,
    /// Allowed CHIP_ID (128 hex digits); repeatable; default any
    #[arg(long = "chip-id", value_name = "HEX")]
    chip_ids: Vec<String>,
    /// Expected ID_KEY_DIGEST (96 hex digits) of the launch's ID block
    #[arg(long, value_name = "HEX")]
    id_key_digest: Option<String>,
    /// Expected AUTHOR_KEY_DIGEST (96 hex digits): the author key that signed the ID key
    #[arg(long, value_name = "HEX")]
    author_key_digest: Option<String>,
    /// Expected FAMILY_ID of the ID block (32 hex digits)
    #[arg(long, value_name = "HEX")]
    family_id: Option<String>,
    /// Expected IMAGE_ID of the ID block (32 hex digits)
    #[arg(long, value_name = "HEX")]
    image_id: Option<String>,
    /// Accept a policy that allows debugging
    #[arg(long)]
    allow_debug: bool,
    /// Accept a policy that allows a migration agent
    #[arg(long)]
    allow_migration_agent: bool,
    /// Refuse a policy that allows SMT
    #[arg(long)]
    deny_smt: bool,
    /// JSON output (every check, values seen and expected, the chain)
    #[arg(long)]
    json: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    crate::cli::read_bounded(path, what, 16 << 20, ": far larger than any evidence")
}

fn cert(path: &Path, what: &str) -> Result<Cert> {
    Cert::from_bytes(&read(path, what)?).with_context(|| format!("{what} {}", path.display()))
}

/// The expected measurement from hex, `cocos-measure snp --json`-shaped JSON (or a
/// manager's expected value), or a release.json and the launch settings.
fn expected_measurement(c: &SnpVerify) -> Result<[u8; 48]> {
    let e = c.expected.trim();
    if e.len() == 96 && e.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex48("--expected", e);
    }
    let path = Path::new(e);
    let bytes = read(path, "--expected")?;
    let v: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "--expected {}: neither 96 hex digits nor JSON",
            path.display()
        )
    })?;
    if let Some(m) = v.get("measurement").and_then(Value::as_str) {
        return hex48("--expected measurement", m);
    }
    let Some(snp) = v.pointer("/measurements/snp") else {
        bail!(
            "--expected {}: no \"measurement\" and no release.json \"measurements.snp\"",
            path.display()
        );
    };
    let digests = snp
        .get("digests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if digests.is_empty() {
        let why = snp
            .get("unsupported")
            .and_then(Value::as_str)
            .unwrap_or("no digests");
        bail!(
            "--expected {}: the release has no SNP digests ({why})",
            path.display()
        );
    }
    let features = c.guest_features.clone().unwrap_or_else(|| "0x1".into());
    let matching: Vec<&Value> = digests
        .iter()
        .filter(|d| {
            c.vcpus
                .is_none_or(|n| d.get("vcpus").and_then(Value::as_u64) == Some(u64::from(n)))
        })
        .filter(|d| {
            c.vcpu_type.as_deref().is_none_or(|t| {
                d.get("vcpu_type")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(t))
            })
        })
        .filter(|d| d.get("guest_features").and_then(Value::as_str) == Some(features.as_str()))
        .collect();
    match matching.as_slice() {
        [one] => hex48("release.json digest", one.get("digest").and_then(Value::as_str).unwrap_or_default()),
        [] => bail!("--expected {}: no SNP digest for vcpus {:?}, vcpu type {:?}, guest features {features} (the release lists {} digests)", path.display(), c.vcpus, c.vcpu_type, digests.len()),
        many => bail!("--expected {}: {} SNP digests match; choose one with --vcpus and --vcpu-type", path.display(), many.len()),
    }
}

fn expectations(c: &SnpVerify) -> Result<Expectations> {
    fn fixed<const N: usize>(what: &str, s: &Option<String>) -> Result<Option<[u8; N]>> {
        Ok(s.as_deref().map(|h| hex_exact(what, h)).transpose()?)
    }
    let report_data = c.binding.report_data()?;
    let min_abi = match &c.min_abi {
        Some(s) => {
            let (a, b) = s
                .split_once('.')
                .context("--min-abi: write MAJOR.MINOR, e.g. 1.51")?;
            Some((
                a.parse().context("--min-abi major")?,
                b.parse().context("--min-abi minor")?,
            ))
        }
        None => None,
    };
    let mut chip_ids = Vec::new();
    for id in &c.chip_ids {
        chip_ids.push(hex_exact("--chip-id", id)?);
    }
    Ok(Expectations {
        measurement: Some(expected_measurement(c)?),
        report_data,
        host_data: fixed("--host-data", &c.host_data)?,
        vmpl: c.vmpl,
        allow_debug: c.allow_debug,
        allow_migration_agent: c.allow_migration_agent,
        deny_smt: c.deny_smt,
        min_abi,
        min_tcb: c.min_tcb.as_deref().map(Tcb::parse).transpose()?,
        chip_ids,
        id_key_digest: fixed("--id-key-digest", &c.id_key_digest)?,
        author_key_digest: fixed("--author-key-digest", &c.author_key_digest)?,
        family_id: fixed("--family-id", &c.family_id)?,
        image_id: fixed("--image-id", &c.image_id)?,
        now: c.binding.now()?,
    })
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn certs(c: &SnpVerify) -> Result<Certs> {
    let mut certs = Certs::default();
    if let Some(p) = &c.certs {
        let t = CertTable::parse(&read(p, "--certs")?)
            .with_context(|| format!("--certs {}", p.display()))?;
        let one = |b: &Option<Vec<u8>>, what: &str| -> Result<Option<Cert>> {
            b.as_deref()
                .map(|d| {
                    Cert::from_bytes(d)
                        .with_context(|| format!("--certs {}: the {what}", p.display()))
                })
                .transpose()
        };
        certs.vek = one(&t.vcek, "VCEK")?.or(one(&t.vlek, "VLEK")?);
        certs.chain.extend(one(&t.ask, "ASK")?);
        certs.chain.extend(one(&t.ark, "ARK")?);
    }
    if let Some(p) = c.vcek.as_ref().or(c.vlek.as_ref()) {
        certs.vek = Some(cert(p, if c.vcek.is_some() { "--vcek" } else { "--vlek" })?);
    }
    if let Some(p) = &c.crl {
        certs.crl = Some(
            cocos_measure::verify::amd::Crl::from_bytes(&read(p, "--crl")?)
                .with_context(|| format!("--crl {}", p.display()))?,
        );
    }
    if let Some(p) = &c.chain {
        certs.chain.extend(
            Cert::all_from_bytes(&read(p, "--chain")?)
                .with_context(|| format!("--chain {}", p.display()))?,
        );
    }
    Ok(certs)
}

/// Runs `cocos-measure verify …`; returns the exit code (0 verified, 1 not).
pub(crate) fn run_verify(cmd: VerifyCmd) -> Result<u8> {
    let c = match cmd {
        VerifyCmd::Snp(c) => c,
        VerifyCmd::Tdx(t) => return run_tdx(*t),
    };
    let report = read(&c.report, "--report")?;
    let exp = expectations(&c)?;
    let certs = certs(&c)?;
    let verdict = snp::verify(&report, &certs, &exp)
        .with_context(|| format!("--report {}", c.report.display()))?;
    print(&verdict, c.json)?;
    Ok(if verdict.verified { 0 } else { 1 })
}

fn print(v: &Verdict, json: bool) -> Result<()> {
    use std::io::Write as _;
    // Written (not println!) so that a closed stdout is an error, not a panic.
    let mut o = std::io::stdout().lock();
    if json {
        writeln!(o, "{}", serde_json::to_string_pretty(v)?)?;
        return Ok(());
    }
    let tee = if v.tee == "snp" {
        "SEV-SNP report"
    } else {
        "TDX quote"
    };
    match v.first_failure() {
        None => writeln!(o, "{tee}: VERIFIED ({} checks)", v.checks.len())?,
        Some(f) => writeln!(o, "{tee}: NOT VERIFIED: {}: {}", f.name, f.detail)?,
    }
    writeln!(o, "chain: {}", v.chain.join(" -> "))?;
    for c in &v.checks {
        let values = match (&c.seen, &c.expected, c.ok) {
            (Some(s), Some(e), false) => format!(" (seen {s}, expected {e})"),
            _ => String::new(),
        };
        let mark = if c.ok { "ok" } else { "FAILED" };
        writeln!(o, "  {mark:<7} {:<30} {}{values}", c.name, c.detail)?;
    }
    Ok(())
}

fn hex48(what: &str, s: &str) -> Result<[u8; 48]> {
    Ok(hex_exact(what, s)?)
}

/// Expected events from `cocos-measure tdx --json`'s `events`.
fn tdx_expected_events(path: &Path) -> Result<Vec<cocos_measure::verify::ccel::Expected>> {
    let v: Value = serde_json::from_slice(&read(path, "--expected")?)
        .with_context(|| format!("--expected {}: not JSON", path.display()))?;
    let Some(events) = v.get("events").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let field = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .with_context(|| format!("--expected events[{i}]: no {k}"))
            };
            let ty = field("event_type_value")?;
            Ok(cocos_measure::verify::ccel::Expected {
                rtmr: e
                    .get("rtmr")
                    .and_then(Value::as_u64)
                    .and_then(|r| u8::try_from(r).ok())
                    .with_context(|| format!("--expected events[{i}]: no rtmr"))?,
                event_type: u32::from_str_radix(ty.trim_start_matches("0x"), 16)
                    .with_context(|| format!("--expected events[{i}]: event_type_value {ty:?}"))?,
                digest: hex48(&format!("--expected events[{i}] digest"), field("digest")?)?,
                what: field("what")?.to_owned(),
            })
        })
        .collect()
}

/// Expected registers from `cocos-measure tdx --json`-shaped JSON or a release.json.
fn tdx_expected_file(c: &TdxVerify, path: &Path) -> Result<[Option<[u8; 48]>; 5]> {
    let v: Value = serde_json::from_slice(&read(path, "--expected")?)
        .with_context(|| format!("--expected {}: not JSON", path.display()))?;
    let entry = match v
        .pointer("/measurements/tdx/launches")
        .and_then(Value::as_array)
    {
        Some(launches) => {
            let m: Vec<&Value> = launches
                .iter()
                .filter(|l| {
                    c.memory
                        .as_deref()
                        .is_none_or(|m| l.get("memory").and_then(Value::as_str) == Some(m))
                })
                .filter(|l| {
                    c.qemu_version
                        .as_deref()
                        .is_none_or(|q| l.get("qemu_version").and_then(Value::as_str) == Some(q))
                })
                .collect();
            match m.as_slice() {
                [one] => (*one).clone(),
                [] => bail!(
                    "--expected {}: no TDX launch for memory {:?}, QEMU {:?}",
                    path.display(),
                    c.memory,
                    c.qemu_version
                ),
                many => bail!(
                    "--expected {}: {} TDX launches match; choose with --memory and --qemu-version",
                    path.display(),
                    many.len()
                ),
            }
        }
        None => v,
    };
    let mut out = [None; 5];
    for (i, k) in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"]
        .iter()
        .enumerate()
    {
        // A register given as text that is not hex (release.json's RTMR0 explains why
        // it depends on the host) is not compared.
        if let Some(h) = entry
            .get(*k)
            .and_then(Value::as_str)
            .filter(|h| h.len() == 96 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(hex48(&format!("--expected {k}"), h)?);
            }
        }
    }
    Ok(out)
}

fn tdx_expectations(c: &TdxVerify) -> Result<tdx::Expectations> {
    let mut regs = match &c.expected {
        Some(p) => tdx_expected_file(c, p)?,
        None => [None; 5],
    };
    for (i, (flag, v)) in [
        ("--mrtd", &c.mrtd),
        ("--rtmr0", &c.rtmr0),
        ("--rtmr1", &c.rtmr1),
        ("--rtmr2", &c.rtmr2),
        ("--rtmr3", &c.rtmr3),
    ]
    .into_iter()
    .enumerate()
    {
        if let (Some(h), Some(slot)) = (v, regs.get_mut(i)) {
            *slot = Some(hex48(flag, h)?);
        }
    }
    let [mrtd, r0, r1, r2, r3] = regs;
    if mrtd.is_none() {
        bail!("give the expected MRTD: --expected FILE (cocos-measure tdx --json, or release.json) or --mrtd HEX");
    }
    let report_data = c.binding.report_data()?;
    let mut mr_seam = Vec::new();
    for m in &c.mr_seam {
        mr_seam.push(hex48("--mr-seam", m)?);
    }
    Ok(tdx::Expectations {
        mrtd,
        rtmr: [r0, r1, r2, r3],
        report_data,
        xfam: c
            .xfam
            .as_deref()
            .map(|x| hex_exact("--xfam", x))
            .transpose()?,
        mr_seam,
        allow_debug: c.allow_debug,
        accept_status: c.accept_tcb.clone(),
        event_log: c
            .event_log
            .as_deref()
            .map(|p| read(p, "--event-log"))
            .transpose()?,
        events: match (&c.expected, &c.event_log) {
            (Some(p), Some(_)) => tdx_expected_events(p)?,
            _ => Vec::new(),
        },
        now: c.binding.now()?,
    })
}

fn run_tdx(c: TdxVerify) -> Result<u8> {
    let quote = read(&c.quote, "--quote")?;
    let collateral = tdx::Collateral::from_json(&read(&c.collateral, "--collateral")?)
        .with_context(|| format!("--collateral {}", c.collateral.display()))?;
    let exp = tdx_expectations(&c)?;
    let verdict = tdx::verify(&quote, &collateral, &exp)
        .with_context(|| format!("--quote {}", c.quote.display()))?;
    print(&verdict, c.json)?;
    Ok(if verdict.verified { 0 } else { 1 })
}
