//! Fuzz target for the TDX CCEL event log: parsed, replayed and compared with an
//! expected event. Nothing may panic; errors are fine.

#![no_main]

use cocos_measure::verify::ccel::{self, Expected};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = ccel::parse(data) {
        let _ = ccel::replay(&events);
        let want = [Expected {
            rtmr: 1,
            event_type: 0x8000_0003,
            digest: [0; 48],
            what: "kernel".into(),
        }];
        for r in 0..3 {
            let _ = ccel::first_difference(&events, &want, r);
        }
    }
});
