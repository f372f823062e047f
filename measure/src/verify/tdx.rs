//! TDX evidence: a DCAP quote (version 4 or 5) with its collateral (PCK CRL and issuer
//! chain, root CA CRL, TCB info, QE identity, as Intel's PCS/PCCS serve them), verified
//! with `dcap-qvl` at a given time (Intel's root CA built in), then its TD report against
//! what the launch must show: MRTD, RTMR0–3, REPORT_DATA, XFAM, the debug attribute,
//! MR_SEAM, and the TCB status.

use dcap_qvl::quote::{Quote, TDReport10};
use dcap_qvl::QuoteCollateralV3;
use serde_json::Value;

use super::{format_time, Check, Verdict, VerifyError};

/// Collateral for one quote.
#[derive(Debug, Clone)]
pub struct Collateral(QuoteCollateralV3);

impl Collateral {
    /// Refuses a time outside the TCB info's and QE identity's validity (issueDate to
    /// nextUpdate): the collateral, not the quote, is then what is unusable.
    pub fn check_window(&self, now: i64) -> Result<(), VerifyError> {
        for (what, body) in [
            ("TCB info", &self.0.tcb_info),
            ("QE identity", &self.0.qe_identity),
        ] {
            let v: Value = serde_json::from_str(body).map_err(|e| {
                VerifyError::Evidence(format!("collateral: the {what} is not JSON ({e})"))
            })?;
            let date = |k: &str| -> Result<i64, VerifyError> {
                let s = v.get(k).and_then(Value::as_str).ok_or_else(|| {
                    VerifyError::Evidence(format!("collateral: the {what} has no {k}"))
                })?;
                super::parse_time(s)
            };
            let (from, until) = (date("issueDate")?, date("nextUpdate")?);
            if now < from || now > until {
                return Err(VerifyError::Expected(format!(
                    "the collateral's {what} is valid {} to {}, not at {}: fetch current collateral from Intel's PCS or your PCCS (or give --now inside that window)",
                    format_time(from),
                    format_time(until),
                    format_time(now)
                )));
            }
        }
        Ok(())
    }
}

impl Collateral {
    /// From JSON: the fields of Intel's PCCS response as dcap-qvl names them
    /// (`pck_crl_issuer_chain`, `root_ca_crl`, `pck_crl`, `tcb_info_issuer_chain`,
    /// `tcb_info`, `tcb_info_signature`, `qe_identity_issuer_chain`, `qe_identity`,
    /// `qe_identity_signature`); binary fields as hex strings or byte arrays.
    pub fn from_json(b: &[u8]) -> Result<Self, VerifyError> {
        let bad = |m: String| VerifyError::Evidence(format!("collateral: {m}"));
        let v: Value = serde_json::from_slice(b).map_err(|e| bad(format!("not JSON ({e})")))?;
        let text = |k: &str| -> Result<String, VerifyError> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("no {k:?} (a string)")))
        };
        let bytes = |k: &str| -> Result<Vec<u8>, VerifyError> {
            match v.get(k) {
                Some(Value::String(s)) => {
                    hex::decode(s).map_err(|e| bad(format!("{k}: not hex ({e})")))
                }
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| bad(format!("{k}: not an array of bytes"))),
                _ => Err(bad(format!("no {k:?} (hex or bytes)"))),
            }
        };
        Ok(Self(QuoteCollateralV3 {
            pck_crl_issuer_chain: text("pck_crl_issuer_chain")?,
            root_ca_crl: bytes("root_ca_crl")?,
            pck_crl: bytes("pck_crl")?,
            tcb_info_issuer_chain: text("tcb_info_issuer_chain")?,
            tcb_info: text("tcb_info")?,
            tcb_info_signature: bytes("tcb_info_signature")?,
            qe_identity_issuer_chain: text("qe_identity_issuer_chain")?,
            qe_identity: text("qe_identity")?,
            qe_identity_signature: bytes("qe_identity_signature")?,
            pck_certificate_chain: v
                .get("pck_certificate_chain")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }))
    }
}

/// What the quote must show.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// MRTD.
    pub mrtd: Option<[u8; 48]>,
    /// RTMR0–3 (`None`: not compared).
    pub rtmr: [Option<[u8; 48]>; 4],
    /// REPORT_DATA.
    pub report_data: Option<[u8; 64]>,
    /// XFAM.
    pub xfam: Option<[u8; 8]>,
    /// Allowed MR_SEAM values (the TDX module); empty: any.
    pub mr_seam: Vec<[u8; 48]>,
    /// Accept a TD with the DEBUG attribute.
    pub allow_debug: bool,
    /// TCB statuses accepted besides `UpToDate` (e.g. `SWHardeningNeeded`).
    pub accept_status: Vec<String>,
    /// The time collateral must be valid at (seconds since the epoch).
    pub now: i64,
    /// The guest's CCEL event log, replayed into RTMR0–3 and compared with the quote.
    pub event_log: Option<Vec<u8>>,
    /// The events we expect in it (`cocos-measure tdx --json`'s `events`); compared
    /// event by event when given with a log.
    pub events: Vec<super::ccel::Expected>,
}

/// The parsed quote's version and TD report.
pub fn parse(quote: &[u8]) -> Result<(u16, TDReport10), VerifyError> {
    let q = Quote::parse(quote).map_err(|e| {
        VerifyError::Evidence(format!("not a DCAP quote ({} bytes): {e}", quote.len()))
    })?;
    let td = q
        .report
        .as_td10()
        .cloned()
        .or_else(|| q.report.as_td15().map(|r| r.base))
        .ok_or_else(|| {
            VerifyError::Evidence(format!(
                "quote version {} carries an SGX enclave report, not a TD report",
                q.header.version
            ))
        })?;
    Ok((q.header.version, td))
}

fn reg(
    name: &'static str,
    what: &str,
    seen: &[u8],
    want: &Option<[u8; 48]>,
    checks: &mut Vec<Check>,
) {
    if let Some(w) = want {
        checks.push(Check::compare(
            name,
            what,
            hex::encode(seen),
            hex::encode(w),
        ));
    }
}

/// Verifies a quote and its collateral against `exp`. `Err` only for input that cannot
/// be judged (not a quote, no TD report); a quote whose signature, chain or collateral
/// fails gives a [`Verdict`] with that check failed.
pub fn verify(
    quote: &[u8],
    collateral: &Collateral,
    exp: &Expectations,
) -> Result<Verdict, VerifyError> {
    let (version, td) = parse(quote)?;
    collateral.check_window(exp.now)?;
    let mut checks = Vec::new();
    let now = u64::try_from(exp.now).unwrap_or(0);
    let mut evidence = serde_json::Map::new();
    evidence.insert("quote_version".into(), version.into());
    let mut chain = vec![
        "Intel SGX Root CA".to_owned(),
        "Intel SGX PCK CA".to_owned(),
        "PCK certificate".to_owned(),
        "Quoting Enclave".to_owned(),
    ];
    match dcap_qvl::verify::verify(quote, &collateral.0, now) {
        Ok(r) => {
            checks.push(Check::new(
                "quote_signature_and_collateral",
                true,
                format!(
                    "Intel's root signs the PCK chain, the PCK key signs the quoting enclave, which signs the TD report; TCB info and QE identity verify at {}",
                    format_time(exp.now)
                ),
            ));
            let accepted = r.status == "UpToDate" || exp.accept_status.contains(&r.status);
            checks.push(Check {
                name: "tcb_status",
                ok: accepted,
                detail: if r.advisory_ids.is_empty() {
                    format!("the platform's TCB status is {}", r.status)
                } else {
                    format!(
                        "the platform's TCB status is {} (advisories {})",
                        r.status,
                        r.advisory_ids.join(", ")
                    )
                },
                seen: Some(r.status.clone()),
                expected: Some(
                    std::iter::once("UpToDate".to_owned())
                        .chain(exp.accept_status.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(" or "),
                ),
            });
            evidence.insert("tcb_status".into(), r.status.into());
            evidence.insert("advisory_ids".into(), r.advisory_ids.into());
        }
        Err(e) => {
            chain.clear();
            checks.push(Check::new(
                "quote_signature_and_collateral",
                false,
                format!(
                    "the quote does not verify at {}: {e:#}",
                    format_time(exp.now)
                ),
            ));
        }
    }
    let debug = td.td_attributes.first().is_some_and(|b| b & 1 == 1);
    checks.push(Check::new(
        "td_debug",
        exp.allow_debug || !debug,
        if debug {
            "the TD has the DEBUG attribute: the host can read and change its memory"
        } else {
            "the TD is not debuggable"
        },
    ));
    reg("mrtd", "MRTD", &td.mr_td, &exp.mrtd, &mut checks);
    let rtmrs = [&td.rt_mr0, &td.rt_mr1, &td.rt_mr2, &td.rt_mr3];
    let names = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"];
    let whats = [
        "RTMR0 (firmware, ACPI, boot variables)",
        "RTMR1 (the kernel)",
        "RTMR2 (command line and initrd)",
        "RTMR3",
    ];
    for i in 0..4 {
        if let (Some(seen), Some(name), Some(what), Some(want)) =
            (rtmrs.get(i), names.get(i), whats.get(i), exp.rtmr.get(i))
        {
            reg(name, what, &seen[..], want, &mut checks);
        }
    }
    if let Some(d) = exp.report_data {
        checks.push(Check::report_data("quote", &td.report_data, &d));
    }
    if let Some(x) = exp.xfam {
        checks.push(Check::compare(
            "xfam",
            "XFAM",
            hex::encode(td.xfam),
            hex::encode(x),
        ));
    }
    if !exp.mr_seam.is_empty() {
        checks.push(Check::allowed(
            "mr_seam",
            "MR_SEAM (the TDX module)",
            &td.mr_seam,
            &exp.mr_seam,
        ));
    }
    if let Some(log) = &exp.event_log {
        event_log_checks(log, &td, &exp.events, &mut checks);
    }
    for (k, v) in [
        ("mrtd", hex::encode(td.mr_td)),
        ("rtmr0", hex::encode(td.rt_mr0)),
        ("rtmr1", hex::encode(td.rt_mr1)),
        ("rtmr2", hex::encode(td.rt_mr2)),
        ("rtmr3", hex::encode(td.rt_mr3)),
        ("report_data", hex::encode(td.report_data)),
        ("td_attributes", hex::encode(td.td_attributes)),
        ("xfam", hex::encode(td.xfam)),
        ("mr_seam", hex::encode(td.mr_seam)),
        ("tee_tcb_svn", hex::encode(td.tee_tcb_svn)),
    ] {
        evidence.insert(k.into(), v.into());
    }
    Ok(Verdict::new("tdx", checks, chain, evidence))
}

/// The log replayed against the quote's RTMRs, then (with expected events) the first
/// event where it and the launch we computed part ways.
fn event_log_checks(
    log: &[u8],
    td: &TDReport10,
    expected: &[super::ccel::Expected],
    checks: &mut Vec<Check>,
) {
    let events = match super::ccel::parse(log) {
        Ok(e) => e,
        Err(why) => {
            checks.push(Check::new(
                "event_log_replay",
                false,
                format!("the event log cannot be read: {why}"),
            ));
            return;
        }
    };
    let replayed = super::ccel::replay(&events);
    let quoted = [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3];
    let differ: Vec<String> = (0..4)
        .filter(|&i| replayed.get(i) != quoted.get(i))
        .map(|i| format!("RTMR{i}"))
        .collect();
    checks.push(Check::new(
        "event_log_replay",
        differ.is_empty(),
        if differ.is_empty() {
            format!(
                "the log's {} events replay to the quote's RTMR0-3",
                events.len()
            )
        } else {
            format!(
                "the log's events do not replay to the quote's {}: the log is not this TD's",
                differ.join(", ")
            )
        },
    ));
    if expected.is_empty() {
        return;
    }
    for rtmr in 0..3u8 {
        let diff = super::ccel::first_difference(&events, expected, rtmr);
        checks.push(Check::new(
            "event_log_matches_expected",
            diff.is_none(),
            diff.unwrap_or_else(|| format!("RTMR{rtmr}'s events are the ones expected")),
        ));
    }
}
