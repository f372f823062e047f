//! Verifying attestation evidence offline against what we said it must show: an
//! SEV-SNP report with its AMD certificate chain ([`snp`]). Every check is reported
//! with what was seen and what was expected ([`Check`], [`Verdict`]), so a mismatch says
//! what differs instead of just failing. Input that cannot be verified at all (a
//! truncated report, an unknown version or product, a certificate that does not parse)
//! is a [`VerifyError`]: the caller exits 2, nothing is judged.
//!
//! Behind the `verify` feature (on by default; `cocos-hal` leaves it off), because it
//! brings RSA/ECDSA and X.509 code (the `sev` crate with `crypto_nossl`, `p384`,
//! `x509-cert`) that computing measurements does not need. Nothing is fetched from the
//! network: certificates come from files or the report's certificate table.

pub mod amd;
pub mod ccel;
pub mod snp;
pub mod tdx;

use serde::Serialize;

/// Why evidence cannot be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The report or quote is malformed (too short, wrong version, bad field).
    #[error("{0}")]
    Evidence(String),
    /// A certificate or chain cannot be used.
    #[error("{0}")]
    Certificate(String),
    /// An expected value or setting is malformed.
    #[error("{0}")]
    Expected(String),
}

/// One check: its name, whether it holds, and why, with the values compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`report_signature`, `measurement`, …).
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was checked, or what differs.
    pub detail: String,
    /// The value in the evidence, when one was compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
    /// The value it had to be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl Check {
    /// A check with no values to show.
    pub fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok,
            detail: detail.into(),
            seen: None,
            expected: None,
        }
    }

    /// A comparison of two values, shown as given.
    pub fn compare(name: &'static str, what: &str, seen: String, expected: String) -> Self {
        let ok = seen == expected;
        Self {
            name,
            ok,
            detail: if ok {
                format!("{what}: as expected")
            } else {
                format!("{what}: differs")
            },
            seen: Some(seen),
            expected: Some(expected),
        }
    }
}

impl Check {
    /// Whether `seen` is on an allow-list (`what` names the value: "CHIP_ID", …).
    pub fn allowed<const N: usize>(
        name: &'static str,
        what: &str,
        seen: &[u8; N],
        list: &[[u8; N]],
    ) -> Self {
        let ok = list.contains(seen);
        Self {
            name,
            ok,
            detail: format!(
                "{what} is {}on the allow-list",
                if ok { "" } else { "not " }
            ),
            seen: Some(hex::encode(seen)),
            expected: None,
        }
    }
}

impl Check {
    /// REPORT_DATA against what the nonce binds (`evidence`: "report" or "quote").
    pub fn report_data(evidence: &str, seen: &[u8; 64], expected: &[u8; 64]) -> Self {
        let mut c = Self::compare(
            "report_data",
            "REPORT_DATA",
            hex::encode(seen),
            hex::encode(expected),
        );
        if !c.ok {
            c.detail = format!("REPORT_DATA is not what the nonce binds: a replayed {evidence}, or one made for another request");
        }
        c
    }
}

/// The result of verifying one piece of evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `snp` or `tdx`.
    pub tee: &'static str,
    /// True when every check holds.
    pub verified: bool,
    /// Every check, in the order made.
    pub checks: Vec<Check>,
    /// The certificate chain used, from the trust anchor down (subject names).
    pub chain: Vec<String>,
    /// Fields of the evidence a reader wants to see (version, product, TCB, …).
    pub evidence: serde_json::Map<String, serde_json::Value>,
}

impl Verdict {
    /// Builds the verdict from its checks.
    pub fn new(
        tee: &'static str,
        checks: Vec<Check>,
        chain: Vec<String>,
        evidence: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        Self {
            tee,
            verified: checks.iter().all(|c| c.ok),
            checks,
            chain,
            evidence,
        }
    }

    /// The first failed check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
}

/// Parses an RFC 3339 time (`2024-06-01T00:00:00Z`) to seconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, VerifyError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            VerifyError::Expected(format!(
                "{s:?} is not an RFC 3339 time ({e}); write e.g. 2024-06-01T00:00:00Z"
            ))
        })
}

/// Seconds since the epoch as RFC 3339 (for messages).
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{t} s since the epoch"))
}

/// Decodes hex of exactly `N` bytes, naming `what` in the error.
pub fn hex_exact<const N: usize>(what: &str, s: &str) -> Result<[u8; N], VerifyError> {
    let b = hex::decode(s.trim())
        .map_err(|e| VerifyError::Expected(format!("{what}: not hex ({e})")))?;
    let len = b.len();
    b.try_into().map_err(|_| {
        VerifyError::Expected(format!(
            "{what}: {len} bytes of hex, expected {N} ({} hex digits)",
            2 * N
        ))
    })
}
