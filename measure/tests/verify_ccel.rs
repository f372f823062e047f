//! The CCEL event log reader against logs laid out by hand from the TCG PC Client
//! Platform Firmware Profile (TCG_PCR_EVENT with the "Spec ID Event03" listing SHA-1
//! and SHA-384, then TCG_PCR_EVENT2 entries with both digests), carrying the events
//! `cocos-measure` expects for a real launch (IntelTdx-shaped TDVF, the HAL's Debian
//! kernel): the log replays to the computed RTMRs, a changed, missing or extra event is
//! named, and truncations at every length are errors, never panics.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // helpers too

use cocos_measure::launch::QemuBoot;
use cocos_measure::rtmr::Platform;
use cocos_measure::tdx_launch::TdxLaunch;
use cocos_measure::verify::ccel::{self, Expected};
use rand::SeedableRng;

fn spec_id_event() -> Vec<u8> {
    // TCG_PCR_EVENT: pcrIndex 0, EV_NO_ACTION (3), 20 zero bytes, eventSize, event.
    let mut ev = b"Spec ID Event03\0".to_vec();
    ev.extend_from_slice(&0u32.to_le_bytes()); // platformClass
    ev.extend_from_slice(&[0, 2, 0, 2]); // specVersionMinor/Major, errata, uintnSize
    ev.extend_from_slice(&2u32.to_le_bytes()); // numberOfAlgorithms
    ev.extend_from_slice(&0x0004u16.to_le_bytes()); // SHA-1
    ev.extend_from_slice(&20u16.to_le_bytes());
    ev.extend_from_slice(&0x000cu16.to_le_bytes()); // SHA-384
    ev.extend_from_slice(&48u16.to_le_bytes());
    ev.push(0); // vendorInfoSize
    let mut out = Vec::new();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(&(ev.len() as u32).to_le_bytes());
    out.extend_from_slice(&ev);
    out
}

fn event2(mr_index: u32, event_type: u32, sha384: &[u8; 48], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&mr_index.to_le_bytes());
    out.extend_from_slice(&event_type.to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes()); // two digests
    out.extend_from_slice(&0x0004u16.to_le_bytes());
    out.extend_from_slice(&[0xaa; 20]);
    out.extend_from_slice(&0x000cu16.to_le_bytes());
    out.extend_from_slice(sha384);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn log_of(events: &[Expected]) -> Vec<u8> {
    let mut log = spec_id_event();
    for e in events {
        log.extend(event2(
            u32::from(e.rtmr) + 1,
            e.event_type,
            &e.digest,
            e.what.as_bytes(),
        ));
    }
    log.extend_from_slice(&[0xff; 64]); // the log area's unused tail
    log
}

/// The events and registers of a real launch.
fn launch() -> (Vec<Expected>, [[u8; 48]; 3]) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let fw = loop {
        let f = cocos_testkit::firmware::synth_tdvf(&mut rng);
        let ok = QemuBoot::from_bytes(f.clone(), None, None, cocos_measure::Tee::Tdx)
            .and_then(|b| b.tdx())
            .and_then(|b| b.measure("", &Platform::default(), &TdxLaunch::default()))
            .is_ok();
        if ok {
            break f;
        }
    };
    let kernel = std::fs::read(cocos_testkit::stub_measuring_kernel()).unwrap();
    let boot = QemuBoot::from_bytes(fw, Some(kernel), Some(b"initrd"), cocos_measure::Tee::Tdx)
        .unwrap()
        .tdx()
        .unwrap();
    let m = boot
        .measure(
            "console=ttyS0 quiet",
            &Platform::default(),
            &TdxLaunch::default(),
        )
        .unwrap();
    let events = m
        .events
        .iter()
        .map(|e| Expected {
            rtmr: e.rtmr,
            event_type: e.event_type.value(),
            digest: e.digest,
            what: e.what.clone(),
        })
        .collect();
    (events, [[0; 48], m.rtmr[1].unwrap(), m.rtmr[2].unwrap()])
}

#[test]
fn a_log_of_the_expected_events_replays_to_the_computed_rtmrs() {
    let (events, rtmr) = launch();
    assert!(events.len() >= 4);
    let parsed = ccel::parse(&log_of(&events)).unwrap();
    assert_eq!(parsed.len(), events.len());
    let replayed = ccel::replay(&parsed);
    assert_eq!(replayed[1], rtmr[1]);
    assert_eq!(replayed[2], rtmr[2]);
    for r in 0..3 {
        assert_eq!(ccel::first_difference(&parsed, &events, r), None);
    }
}

#[test]
fn a_changed_missing_or_extra_event_is_named() {
    let (events, _) = launch();
    let kernel = events
        .iter()
        .position(|e| e.rtmr == 1 && e.what.contains("kernel"))
        .unwrap();
    let mut changed = events.clone();
    changed[kernel].digest[0] ^= 1;
    let parsed = ccel::parse(&log_of(&changed)).unwrap();
    let d = ccel::first_difference(&parsed, &events, 1).unwrap();
    assert!(d.starts_with("RTMR1 event 1 (kernel"), "{d}");
    assert!(d.contains("differs"), "{d}");

    let mut missing = events.clone();
    let last2 = missing.iter().rposition(|e| e.rtmr == 2).unwrap();
    missing.remove(last2);
    let d = ccel::first_difference(&ccel::parse(&log_of(&missing)).unwrap(), &events, 2).unwrap();
    assert!(d.contains("is missing from the log"), "{d}");

    let mut extra = events.clone();
    extra.push(Expected {
        rtmr: 2,
        event_type: 0xd,
        digest: [7; 48],
        what: "x".into(),
    });
    let d = ccel::first_difference(&ccel::parse(&log_of(&extra)).unwrap(), &events, 2).unwrap();
    assert!(d.contains("is not expected"), "{d}");
}

#[test]
fn truncated_or_corrupt_logs_are_errors_not_panics() {
    let (events, _) = launch();
    let log = log_of(&events[..3]);
    let body = log.len() - 64;
    for n in 0..body {
        // Cut inside an event: an error (or, at an event boundary, fewer events).
        if let Ok(e) = ccel::parse(&log[..n]) {
            assert!(e.len() <= 3);
        }
    }
    let mut bad = log.clone();
    bad[40..47].copy_from_slice(b"Spec IX"); // not the Spec ID signature
    assert!(ccel::parse(&bad).unwrap_err().contains("Spec ID"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..2000 {
        let mut b = log.clone();
        let i = rand::Rng::gen_range(&mut rng, 0..b.len());
        b[i] = rand::Rng::gen(&mut rng);
        let _ = ccel::parse(&b);
    }
    // A digest count the Spec ID event does not allow, and an event size past the end.
    let mut b = spec_id_event();
    let mut e = event2(2, 0xd, &[1; 48], b"data");
    e[8] = 9;
    b.extend(&e);
    assert!(ccel::parse(&b).unwrap_err().contains("9 digests"));
    let mut b = spec_id_event();
    let mut e = event2(2, 0xd, &[1; 48], b"data");
    let n = e.len();
    e[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    b.extend(&e);
    assert!(ccel::parse(&b).unwrap_err().contains("past the end"));
}
