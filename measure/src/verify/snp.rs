//! SEV-SNP evidence: the ATTESTATION_REPORT (SEV-SNP ABI specification 56860, table
//! "ATTESTATION_REPORT structure"), the extended-report certificate table
//! (configfs-tsm `auxblob`; GHCB specification 56421, "SNP Extended Guest Request"),
//! and [`verify`]: ARK → ASK/ASVK → VCEK/VLEK → report signature over bytes
//! 0x000–0x29F as received, then the report's fields against what the launch must show.
//!
//! The report is read here from its fixed offsets rather than through the `sev`
//! crate's parser, which guesses the product of a version-2 report from its chip ID and
//! refuses masked chip IDs; the product comes from the endorsement key's issuer instead.

use p384::ecdsa::signature::Verifier as _;
use sha2::{Digest as _, Sha512};
use uuid::{uuid, Uuid};

use super::amd::{issuer_product, Cert, KeyKind, Product, Tcb};
use super::{format_time, Check, Verdict, VerifyError};

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4a0;
/// The signed part: bytes 0x000–0x29F.
pub const SIGNED_LEN: usize = 0x2a0;

/// The report fields a verifier compares, read from their offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// VERSION (2–5).
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: u64,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// VMPL the report was requested at.
    pub vmpl: u32,
    /// SIGNATURE_ALGO (1: ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// CURRENT_TCB, raw.
    pub current_tcb: [u8; 8],
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// KEY_INFO bits: AUTHOR_KEY_EN (0), MASK_CHIP_KEY (1), SIGNING_KEY (4:2).
    pub key_info: u32,
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORTED_TCB, raw.
    pub reported_tcb: [u8; 8],
    /// CPUID family, model, stepping (version 3 and later; zero before).
    pub cpuid: (u8, u8, u8),
    /// CHIP_ID.
    pub chip_id: [u8; 64],
    /// The signature's R and S, little-endian, 72 bytes each.
    pub signature: ([u8; 72], [u8; 72]),
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

impl Report {
    /// Parses a report (exactly [`REPORT_LEN`] bytes; configfs-tsm's `outblob` for SNP is
    /// the report itself).
    pub fn parse(b: &[u8]) -> Result<Report, VerifyError> {
        if b.len() != REPORT_LEN {
            return Err(VerifyError::Evidence(format!(
                "an SEV-SNP attestation report is {REPORT_LEN} bytes, this is {}{}",
                b.len(),
                if b.len() < REPORT_LEN {
                    " (truncated?)"
                } else {
                    ""
                }
            )));
        }
        let version = u32_at(b, 0x00);
        if !(2..=5).contains(&version) {
            return Err(VerifyError::Evidence(format!(
                "report version {version}: only versions 2 to 5 (SEV-SNP firmware 1.51 and later) are known"
            )));
        }
        let signature_algo = u32_at(b, 0x34);
        if signature_algo != 1 {
            return Err(VerifyError::Evidence(format!(
                "signature algorithm {signature_algo}: only 1 (ECDSA P-384 with SHA-384) is defined"
            )));
        }
        let cpuid = if version >= 3 {
            let [f, m, s] = arr::<3>(b, 0x188);
            (f, m, s)
        } else {
            (0, 0, 0)
        };
        Ok(Report {
            version,
            guest_svn: u32_at(b, 0x04),
            policy: u64::from_le_bytes(arr(b, 0x08)),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            signature_algo,
            current_tcb: arr(b, 0x38),
            platform_info: u64::from_le_bytes(arr(b, 0x40)),
            key_info: u32_at(b, 0x48),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xc0),
            id_key_digest: arr(b, 0xe0),
            author_key_digest: arr(b, 0x110),
            reported_tcb: arr(b, 0x180),
            cpuid,
            chip_id: arr(b, 0x1a0),
            signature: (arr(b, 0x2a0), arr(b, 0x2a0 + 72)),
        })
    }

    /// SIGNING_KEY: 0 VCEK, 1 VLEK, 7 none.
    pub fn signing_key(&self) -> u32 {
        (self.key_info >> 2) & 7
    }

    /// The product the CPUID fields name (version 3 and later).
    pub fn product(&self) -> Option<Product> {
        (self.version >= 3)
            .then(|| Product::from_cpuid(self.cpuid.0, self.cpuid.1))
            .flatten()
    }
}

/// The certificates in an extended report's certificate table, by GUID.
#[derive(Debug, Default)]
pub struct CertTable {
    /// VCEK (63da758d-…).
    pub vcek: Option<Vec<u8>>,
    /// VLEK (a8074bc2-…).
    pub vlek: Option<Vec<u8>>,
    /// ASK (4ab7b379-…).
    pub ask: Option<Vec<u8>>,
    /// ARK (c0b406a4-…).
    pub ark: Option<Vec<u8>>,
    /// Entries with other GUIDs (ignored).
    pub other: usize,
}

const GUID_VCEK: Uuid = uuid!("63da758d-e664-4564-adc5-f4b93be8accd");
const GUID_VLEK: Uuid = uuid!("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
const GUID_ASK: Uuid = uuid!("4ab7b379-bbac-4fe4-a02f-05aef327c782");
const GUID_ARK: Uuid = uuid!("c0b406a4-a803-4952-9743-3fb6014cd0ae");

impl CertTable {
    /// Parses the table: 24-byte entries (GUID, offset, length from the table's
    /// start) ending with an all-zero entry; at most 64 entries, every certificate
    /// inside the blob.
    pub fn parse(b: &[u8]) -> Result<CertTable, VerifyError> {
        let bad = |m: String| VerifyError::Evidence(format!("certificate table: {m}"));
        let mut t = CertTable::default();
        for i in 0..64usize {
            let at = i * 24;
            let entry = b
                .get(at..at + 24)
                .ok_or_else(|| bad(format!("entry {i} runs past the end ({} bytes)", b.len())))?;
            if entry.iter().all(|&x| x == 0) {
                return Ok(t);
            }
            let guid = Uuid::from_bytes_le(arr(entry, 0));
            let (off, len) = (u32_at(entry, 16) as usize, u32_at(entry, 20) as usize);
            let cert = b
                .get(off..off.saturating_add(len))
                .filter(|_| off.checked_add(len).is_some())
                .ok_or_else(|| {
                    bad(format!(
                        "entry {i} ({guid}) points at {len} bytes at {off}, outside its {} bytes",
                        b.len()
                    ))
                })?
                .to_vec();
            match guid {
                GUID_VCEK => t.vcek = Some(cert),
                GUID_VLEK => t.vlek = Some(cert),
                GUID_ASK => t.ask = Some(cert),
                GUID_ARK => t.ark = Some(cert),
                _ => t.other += 1,
            }
        }
        Err(bad("more than 64 entries, or no terminating entry".into()))
    }
}

/// The certificates given with a report.
#[derive(Debug, Default)]
pub struct Certs {
    /// The VCEK or VLEK (from a file or the certificate table).
    pub vek: Option<Cert>,
    /// Intermediates and roots given (ASK/ASVK, ARK): checked, never trusted by
    /// themselves; the ARK must be AMD's built-in one (or `trust_anchor`'s).
    pub chain: Vec<Cert>,
    /// Test-only root that replaces AMD's ARKs (made by a test; never from a user).
    pub trust_anchor: Option<Cert>,
    /// The root's certificate revocation list (AMD KDS `crl`), if given.
    pub crl: Option<super::amd::Crl>,
}

/// What the report must show.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The launch measurement.
    pub measurement: Option<[u8; 48]>,
    /// REPORT_DATA (SHA-512 of the nonce, or raw).
    pub report_data: Option<[u8; 64]>,
    /// HOST_DATA.
    pub host_data: Option<[u8; 32]>,
    /// The VMPL the report must come from.
    pub vmpl: u32,
    /// Allow the DEBUG policy bit.
    pub allow_debug: bool,
    /// Allow a migration agent (MIGRATE_MA).
    pub allow_migration_agent: bool,
    /// Refuse a policy that allows SMT.
    pub deny_smt: bool,
    /// Lowest ABI (major, minor) the policy may require.
    pub min_abi: Option<(u8, u8)>,
    /// Lowest REPORTED_TCB.
    pub min_tcb: Option<Tcb>,
    /// CHIP_IDs allowed (empty: any).
    pub chip_ids: Vec<[u8; 64]>,
    /// ID_KEY_DIGEST the ID block must have been signed with.
    pub id_key_digest: Option<[u8; 48]>,
    /// AUTHOR_KEY_DIGEST: the author key that signed the ID key.
    pub author_key_digest: Option<[u8; 48]>,
    /// FAMILY_ID and IMAGE_ID the ID block must carry.
    pub family_id: Option<[u8; 16]>,
    /// IMAGE_ID.
    pub image_id: Option<[u8; 16]>,
    /// The time certificates must be valid at (seconds since the epoch).
    pub now: i64,
}

/// SHA-512 of a nonce: the REPORT_DATA our agent binds.
pub fn report_data_for_nonce(nonce: &[u8]) -> [u8; 64] {
    Sha512::digest(nonce).into()
}

/// The chain from the trust anchor down to the report's key, with a check per link
/// and one for the validity of every certificate at `now`.
fn chain_checks(
    certs: &Certs,
    report: &Report,
    now: i64,
    checks: &mut Vec<Check>,
) -> Result<(Cert, KeyKind, Product, Vec<String>), VerifyError> {
    let vek = certs.vek.clone().ok_or_else(|| {
        VerifyError::Certificate(
            "no VCEK or VLEK: pass --vcek/--vlek FILE or --certs (the report's certificate table); AMD's KDS serves a VCEK at https://kdsintf.amd.com/vcek/v1/{Milan|Genoa|Turin}/{chip_id hex}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..".into(),
        )
    })?;
    let issuer = vek.issuer_cn();
    let (product, kind) = match (&certs.trust_anchor, issuer_product(&issuer)) {
        (_, Some(pk)) => pk,
        // A test anchor signs its own chain: the product comes from the report.
        (Some(_), None) => (report.product().unwrap_or(Product::Milan), KeyKind::Vcek),
        (None, None) => {
            return Err(VerifyError::Certificate(format!(
                "the endorsement key's issuer is {issuer:?}: not an AMD SEV-SNP signing key (SEV-Milan, SEV-Genoa, SEV-Turin or SEV-VLEK-…)"
            )))
        }
    };
    let ark = match &certs.trust_anchor {
        Some(t) => t.clone(),
        None => product.ark()?,
    };
    // The intermediate: the one given whose subject is the VEK's issuer, else (VCEK)
    // the built-in ASK.
    let given = certs
        .chain
        .iter()
        .find(|c| c.subject_cn() == issuer)
        .cloned();
    let inter = match (given, kind, &certs.trust_anchor) {
        (Some(c), _, _) => c,
        (None, KeyKind::Vcek, None) => product.ask()?,
        (None, KeyKind::Vlek, None) => {
            return Err(VerifyError::Certificate(format!(
                "a VLEK is signed by AMD's ASVK, which is not built in: pass --chain with {p}'s (curl -o cert_chain.pem https://kdsintf.amd.com/vlek/v1/{p}/cert_chain)",
                p = product.name()
            )))
        }
        (None, _, Some(_)) => {
            return Err(VerifyError::Certificate(format!(
                "no intermediate certificate with subject {issuer:?} given"
            )))
        }
    };
    // A root in the given chain must be the one we trust.
    for c in certs
        .chain
        .iter()
        .filter(|c| c.subject_cn() == ark.subject_cn())
    {
        let same = c.der() == ark.der();
        checks.push(Check::new(
            "given_root_is_trusted",
            same,
            if same {
                format!(
                    "the {} in the given chain is the trusted root",
                    c.subject_cn()
                )
            } else {
                format!(
                    "the {} in the given chain is not AMD's root for {}: someone else's chain",
                    c.subject_cn(),
                    product.name()
                )
            },
        ));
    }
    checks.push(link("root_self_signed", &ark, &ark));
    checks.push(link("intermediate_signed_by_root", &ark, &inter));
    checks.push(link("vek_signed_by_intermediate", &inter, &vek));
    if let Some(crl) = &certs.crl {
        crl_checks(crl, &ark, &inter, &vek, now, checks);
    }
    for c in [&ark, &inter, &vek] {
        let (from, until) = c.validity();
        let ok = (from..=until).contains(&now);
        checks.push(Check {
            name: "certificate_valid",
            ok,
            detail: format!(
                "{} {} at {}",
                c.subject_cn(),
                if ok { "is valid" } else { "is NOT valid" },
                format_time(now)
            ),
            seen: Some(format_time(now)),
            expected: Some(format!("{} .. {}", format_time(from), format_time(until))),
        });
    }
    let chain = vec![ark.subject_cn(), inter.subject_cn(), vek.subject_cn()];
    Ok((vek, kind, product, chain))
}

/// The revocation list: signed by the root, current at `now`, and listing neither the
/// intermediate nor the endorsement key.
fn crl_checks(
    crl: &super::amd::Crl,
    ark: &Cert,
    inter: &Cert,
    vek: &Cert,
    now: i64,
    checks: &mut Vec<Check>,
) {
    let signed = crl.signed_by(ark);
    checks.push(Check::new(
        "crl_signed_by_root",
        signed.is_ok(),
        match signed {
            Ok(()) => format!("{} signs the revocation list", ark.subject_cn()),
            Err(e) => format!(
                "the revocation list (issuer {}) is not {}'s: {e}",
                crl.issuer_cn(),
                ark.subject_cn()
            ),
        },
    ));
    let (this, next) = crl.validity();
    let current = now >= this && next.is_none_or(|n| now <= n);
    checks.push(Check {
        name: "crl_current",
        ok: current,
        detail: if current {
            "the revocation list is current".into()
        } else {
            "the revocation list is not current: fetch AMD's latest".into()
        },
        seen: Some(format_time(now)),
        expected: Some(format!(
            "{} .. {}",
            format_time(this),
            next.map(format_time)
                .unwrap_or_else(|| "(no next update)".into())
        )),
    });
    let revoked: Vec<String> = [inter, vek]
        .iter()
        .filter(|c| crl.revokes(c.serial()))
        .map(|c| c.subject_cn())
        .collect();
    checks.push(Check::new(
        "not_revoked",
        revoked.is_empty(),
        if revoked.is_empty() {
            format!(
                "neither {} nor {} is revoked",
                inter.subject_cn(),
                vek.subject_cn()
            )
        } else {
            format!("revoked: {}", revoked.join(", "))
        },
    ));
}

fn link(name: &'static str, signer: &Cert, signee: &Cert) -> Check {
    let r = signer.signs(signee);
    Check::new(
        name,
        r.is_ok(),
        match r {
            Ok(()) => format!("{} signs {}", signer.subject_cn(), signee.subject_cn()),
            Err(e) => format!(
                "{} does not sign {}: {e}",
                signer.subject_cn(),
                signee.subject_cn()
            ),
        },
    )
}

/// ECDSA P-384 over the signed bytes as received (R and S little-endian in 72 bytes,
/// the upper 24 zero).
fn signature_check(raw: &[u8], report: &Report, vek: &Cert) -> Check {
    let fail = |why: String| Check::new("report_signature", false, why);
    let (r, s) = &report.signature;
    if r.get(48..).is_some_and(|t| t.iter().any(|&x| x != 0))
        || s.get(48..).is_some_and(|t| t.iter().any(|&x| x != 0))
    {
        return fail("the signature's R or S has bits above 384: not a P-384 signature".into());
    }
    let mut be = [0u8; 96];
    for (i, b) in r.iter().take(48).enumerate() {
        if let Some(d) = be.get_mut(47 - i) {
            *d = *b;
        }
    }
    for (i, b) in s.iter().take(48).enumerate() {
        if let Some(d) = be.get_mut(95 - i) {
            *d = *b;
        }
    }
    let Ok(sig) = p384::ecdsa::Signature::from_slice(&be) else {
        return fail("the signature's R or S is zero or not below the curve order".into());
    };
    let Ok(key) = p384::ecdsa::VerifyingKey::from_sec1_bytes(vek.public_key_sec1()) else {
        return fail(format!("{} has no P-384 public key", vek.subject_cn()));
    };
    let signed = raw.get(..SIGNED_LEN).unwrap_or_default();
    match key.verify(signed, &sig) {
        Ok(()) => Check::new(
            "report_signature",
            true,
            format!("{} signs the report (bytes 0x000-0x29F)", vek.subject_cn()),
        ),
        Err(_) => fail(format!(
            "{} does not sign this report: its signed bytes (0x000-0x29F) or signature were changed, or the key is another chip's",
            vek.subject_cn()
        )),
    }
}

/// Verifies a report and its certificates against `exp`. `Err` only for evidence that
/// cannot be judged at all; a report that is genuine but shows something else gives a
/// [`Verdict`] with failed checks.
pub fn verify(raw: &[u8], certs: &Certs, exp: &Expectations) -> Result<Verdict, VerifyError> {
    let report = Report::parse(raw)?;
    let mut checks = Vec::new();
    let (vek, kind, product, chain) = chain_checks(certs, &report, exp.now, &mut checks)?;
    checks.push(signature_check(raw, &report, &vek));
    let want_key = match kind {
        KeyKind::Vcek => 0,
        KeyKind::Vlek => 1,
    };
    checks.push(Check::compare(
        "signing_key",
        "the report's SIGNING_KEY (0 VCEK, 1 VLEK)",
        report.signing_key().to_string(),
        want_key.to_string(),
    ));
    if let Some(p) = report.product() {
        checks.push(Check::compare(
            "product",
            "the product the report's CPUID names",
            p.name().to_owned(),
            product.name().to_owned(),
        ));
    }
    let reported = Tcb::from_report(report.reported_tcb, product);
    match vek.tcb() {
        Some(t) => checks.push(Check::compare(
            "reported_tcb",
            "REPORTED_TCB against the TCB the key was issued for",
            reported.describe(),
            t.describe(),
        )),
        None => checks.push(Check::new(
            "reported_tcb",
            false,
            format!("{} carries no TCB extensions", vek.subject_cn()),
        )),
    }
    if kind == KeyKind::Vcek && report.key_info & 2 == 0 {
        match vek.hw_id() {
            Some(id) => checks.push(Check::compare(
                "chip_id",
                "CHIP_ID against the chip the VCEK was issued for",
                hex::encode(report.chip_id),
                hex::encode(id),
            )),
            None => checks.push(Check::new(
                "chip_id",
                false,
                format!("{} carries no hwID extension", vek.subject_cn()),
            )),
        }
    }
    value_checks(&report, product, exp, &mut checks);
    Ok(Verdict::new(
        "snp",
        checks,
        chain,
        summary(&report, product, kind),
    ))
}

/// The launch-specific comparisons: measurement, report data, policy, VMPL, host
/// data, minimum TCB, chip allow-list, ID key.
fn value_checks(report: &Report, product: Product, exp: &Expectations, checks: &mut Vec<Check>) {
    if let Some(m) = exp.measurement {
        checks.push(Check::compare(
            "measurement",
            "MEASUREMENT",
            hex::encode(report.measurement),
            hex::encode(m),
        ));
    }
    if let Some(d) = exp.report_data {
        checks.push(Check::report_data("report", &report.report_data, &d));
    }
    checks.push(Check::compare(
        "vmpl",
        "the VMPL the report was requested at",
        report.vmpl.to_string(),
        exp.vmpl.to_string(),
    ));
    let bit = |n: u32| report.policy >> n & 1 == 1;
    checks.push(Check::new(
        "policy_debug",
        exp.allow_debug || !bit(19),
        if bit(19) {
            "POLICY allows debugging: the hypervisor can read and change guest memory"
        } else {
            "POLICY forbids debugging"
        },
    ));
    checks.push(Check::new(
        "policy_migration_agent",
        exp.allow_migration_agent || !bit(18),
        if bit(18) {
            "POLICY allows a migration agent"
        } else {
            "POLICY allows no migration agent"
        },
    ));
    checks.push(Check::new(
        "policy_smt",
        !(exp.deny_smt && bit(16)),
        if bit(16) {
            "POLICY allows SMT"
        } else {
            "POLICY forbids SMT"
        },
    ));
    let abi = (
        (report.policy >> 8 & 0xff) as u8,
        (report.policy & 0xff) as u8,
    );
    if let Some(min) = exp.min_abi {
        checks.push(Check {
            name: "policy_abi",
            ok: abi >= min,
            detail: "the lowest firmware ABI POLICY accepts".into(),
            seen: Some(format!("{}.{}", abi.0, abi.1)),
            expected: Some(format!(">= {}.{}", min.0, min.1)),
        });
    }
    if let Some(h) = exp.host_data {
        checks.push(Check::compare(
            "host_data",
            "HOST_DATA",
            hex::encode(report.host_data),
            hex::encode(h),
        ));
    }
    if let Some(min) = &exp.min_tcb {
        let t = Tcb::from_report(report.reported_tcb, product);
        checks.push(Check {
            name: "min_tcb",
            ok: t.at_least(min),
            detail: "REPORTED_TCB against the lowest TCB accepted".into(),
            seen: Some(t.describe()),
            expected: Some(format!(">= {}", min.describe())),
        });
    }
    if !exp.chip_ids.is_empty() {
        checks.push(Check::allowed(
            "chip_allowed",
            "CHIP_ID",
            &report.chip_id,
            &exp.chip_ids,
        ));
    }
    for (name, what, seen, want) in [
        (
            "family_id",
            "FAMILY_ID (from the ID block)",
            report.family_id,
            exp.family_id,
        ),
        (
            "image_id",
            "IMAGE_ID (from the ID block)",
            report.image_id,
            exp.image_id,
        ),
    ] {
        if let Some(w) = want {
            checks.push(Check::compare(
                name,
                what,
                hex::encode(seen),
                hex::encode(w),
            ));
        }
    }
    if let Some(k) = exp.id_key_digest {
        checks.push(Check::compare(
            "id_key_digest",
            "ID_KEY_DIGEST (the key that signed the ID block)",
            hex::encode(report.id_key_digest),
            hex::encode(k),
        ));
    }
    if let Some(k) = exp.author_key_digest {
        checks.push(Check::compare(
            "author_key_digest",
            "AUTHOR_KEY_DIGEST (the key that signed the ID key)",
            hex::encode(report.author_key_digest),
            hex::encode(k),
        ));
    }
}

fn summary(
    r: &Report,
    product: Product,
    kind: KeyKind,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        m.insert(k.into(), v);
    };
    put("version", r.version.into());
    put("product", product.name().into());
    put(
        "signing_key",
        serde_json::to_value(kind).unwrap_or_default(),
    );
    put("measurement", hex::encode(r.measurement).into());
    put("report_data", hex::encode(r.report_data).into());
    put("host_data", hex::encode(r.host_data).into());
    put("policy", format!("{:#x}", r.policy).into());
    put("vmpl", r.vmpl.into());
    put("guest_svn", r.guest_svn.into());
    put(
        "reported_tcb",
        Tcb::from_report(r.reported_tcb, product).describe().into(),
    );
    put(
        "current_tcb",
        Tcb::from_report(r.current_tcb, product).describe().into(),
    );
    put("chip_id", hex::encode(r.chip_id).into());
    put("id_key_digest", hex::encode(r.id_key_digest).into());
    put("family_id", hex::encode(r.family_id).into());
    put("image_id", hex::encode(r.image_id).into());
    m
}
