//! Fuzz target for TDX evidence: arbitrary bytes as a DCAP quote and as collateral JSON
//! (whose validity window is then checked). Nothing may panic; errors are fine.

#![no_main]

use cocos_measure::verify::tdx::{self, Collateral};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tdx::parse(data);
    if let Ok(c) = Collateral::from_json(data) {
        let _ = c.check_window(1_750_000_000);
    }
});
