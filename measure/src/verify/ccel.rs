//! The TDX guest's event log (ACPI CCEL table's log area, as Linux exposes it at
//! `/sys/firmware/acpi/tables/data/CCEL`): the TCG crypto-agile format (TCG PC Client
//! Platform Firmware Profile, "TCG_PCR_EVENT" then "TCG_PCR_EVENT2"), whose first
//! event (the Spec ID event) lists the digest algorithms and sizes; UEFI's CC
//! measurement protocol numbers MRs 1–4 for RTMR0–3. [`parse`] reads it with bounds,
//! [`replay`] extends RTMRs from it, and [`first_difference`] compares it event by
//! event with the events we expect.

use serde::Serialize;

use crate::bytes::Digest384;

/// TPM_ALG_SHA384.
const ALG_SHA384: u16 = 0x000c;
/// At most this many events are read.
const MAX_EVENTS: usize = 16_384;

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEvent {
    /// CC MR index (1–4: RTMR0–3).
    pub mr_index: u32,
    /// TCG event type.
    pub event_type: u32,
    /// The SHA-384 digest extended.
    #[serde(with = "crate::bytes::hex_array")]
    pub digest: Digest384,
    /// The event data's size.
    pub data_len: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the log; stops at the first all-0xFF or all-zero header (the log area's
/// unused tail). Errors name the byte offset.
pub fn parse(log: &[u8]) -> Result<Vec<LogEvent>, String> {
    // TCG_PCR_EVENT: pcrIndex, eventType, SHA-1 digest, eventSize, the Spec ID event.
    let spec_size = u32_at(log, 28).ok_or("shorter than the first event's header")? as usize;
    let spec = log
        .get(32..32usize.saturating_add(spec_size))
        .ok_or("the Spec ID event runs past the end")?;
    if !spec.starts_with(b"Spec ID Event03\0") {
        return Err(
            "the first event is not a TCG \"Spec ID Event03\" (not a crypto-agile log)".into(),
        );
    }
    // TCG_EfiSpecIdEvent: signature[16], platformClass u32, versions 3 bytes, uintnSize
    // u8, numberOfAlgorithms u32, then {algorithmId u16, digestSize u16}.
    let n = u32_at(spec, 24).ok_or("Spec ID event truncated")? as usize;
    if n == 0 || n > 32 {
        return Err(format!("the Spec ID event lists {n} digest algorithms"));
    }
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        let alg = u16_at(spec, 28 + 4 * i).ok_or("Spec ID algorithm table truncated")?;
        let size = u16_at(spec, 30 + 4 * i).ok_or("Spec ID algorithm table truncated")?;
        sizes.push((alg, usize::from(size)));
    }
    if !sizes.iter().any(|&(a, s)| a == ALG_SHA384 && s == 48) {
        return Err("the log carries no SHA-384 digests".into());
    }
    let mut at = 32 + spec_size;
    let mut events = Vec::new();
    while let Some(head) = log.get(at..at + 8) {
        if head.iter().all(|&b| b == 0xff) || head.iter().all(|&b| b == 0) {
            break;
        }
        if events.len() == MAX_EVENTS {
            return Err(format!("more than {MAX_EVENTS} events"));
        }
        let bad = |what: &str| format!("event {} at byte {at}: {what}", events.len() + 1);
        let mr_index = u32_at(log, at).ok_or_else(|| bad("truncated"))?;
        let event_type = u32_at(log, at + 4).ok_or_else(|| bad("truncated"))?;
        let count = u32_at(log, at + 8).ok_or_else(|| bad("truncated"))? as usize;
        if count == 0 || count > n {
            return Err(bad(&format!(
                "{count} digests, the log declares {n} algorithms"
            )));
        }
        let mut p = at + 12;
        let mut digest = None;
        for _ in 0..count {
            let alg = u16_at(log, p).ok_or_else(|| bad("digest truncated"))?;
            let size = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    bad(&format!(
                        "digest algorithm {alg:#x} not in the Spec ID event"
                    ))
                })?;
            let d = log
                .get(p + 2..p + 2 + size)
                .ok_or_else(|| bad("digest truncated"))?;
            if alg == ALG_SHA384 {
                digest = d.try_into().ok();
            }
            p += 2 + size;
        }
        let data_len = u32_at(log, p).ok_or_else(|| bad("event size truncated"))? as usize;
        let end = (p + 4)
            .checked_add(data_len)
            .filter(|&e| e <= log.len())
            .ok_or_else(|| bad(&format!("event data of {data_len} bytes runs past the end")))?;
        events.push(LogEvent {
            mr_index,
            event_type,
            digest: digest.ok_or_else(|| bad("no SHA-384 digest"))?,
            data_len,
        });
        at = end;
    }
    Ok(events)
}

/// RTMR0–3 from the log's events with MR index 1–4 (others, e.g. MRTD's 0, are skipped).
pub fn replay(events: &[LogEvent]) -> [Digest384; 4] {
    use sha2::Digest as _;
    let mut r = [[0u8; 48]; 4];
    for e in events {
        let Some(slot) = (e.mr_index as usize)
            .checked_sub(1)
            .and_then(|i| r.get_mut(i))
        else {
            continue;
        };
        let mut h = sha2::Sha384::new();
        h.update(*slot);
        h.update(e.digest);
        *slot = h.finalize().into();
    }
    r
}

/// An expected event: register (0–2), type and digest, and what it measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// RTMR index.
    pub rtmr: u8,
    /// TCG event type.
    pub event_type: u32,
    /// Digest.
    pub digest: Digest384,
    /// What it is, for people.
    pub what: String,
}

/// The first event of `rtmr` where the log and the expectation part ways, described
/// for a person: `"RTMR1 event 1 (EV_EFI_BOOT_SERVICES_APPLICATION, the kernel ...)
/// differs"`. `None` if that register's events agree.
pub fn first_difference(log: &[LogEvent], expected: &[Expected], rtmr: u8) -> Option<String> {
    let seen: Vec<&LogEvent> = log
        .iter()
        .filter(|e| e.mr_index == u32::from(rtmr) + 1)
        .collect();
    let want: Vec<&Expected> = expected.iter().filter(|e| e.rtmr == rtmr).collect();
    for i in 0..seen.len().max(want.len()) {
        match (seen.get(i), want.get(i)) {
            (Some(s), Some(w)) if s.digest == w.digest && s.event_type == w.event_type => {}
            (Some(s), Some(w)) => {
                return Some(format!(
                    "RTMR{rtmr} event {} ({}) differs: the log has type {:#x} digest {}, expected type {:#x} digest {}",
                    i + 1,
                    w.what,
                    s.event_type,
                    hex::encode(s.digest),
                    w.event_type,
                    hex::encode(w.digest)
                ))
            }
            (Some(s), None) => {
                return Some(format!(
                    "RTMR{rtmr} event {} (type {:#x}) is not expected: the guest measured more than the launch should",
                    i + 1,
                    s.event_type
                ))
            }
            (None, Some(w)) => {
                return Some(format!(
                    "RTMR{rtmr} event {} ({}) is missing from the log",
                    i + 1,
                    w.what
                ))
            }
            (None, None) => {}
        }
    }
    None
}
