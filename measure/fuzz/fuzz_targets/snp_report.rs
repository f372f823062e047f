//! Fuzz target for SEV-SNP reports: arbitrary bytes as an attestation report, and a
//! report-sized input through the whole verification (AMD's Milan ASK standing in for
//! the endorsement key, so every check runs and the signature simply fails). Nothing
//! may panic; errors are fine.

#![no_main]

use cocos_measure::verify::amd::Product;
use cocos_measure::verify::snp::{self, Certs, Expectations, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Report::parse(data);
    if let (Some(report), Ok(ask)) = (data.get(..snp::REPORT_LEN), Product::Milan.ask()) {
        let certs = Certs {
            vek: Some(ask),
            ..Certs::default()
        };
        let _ = snp::verify(report, &certs, &Expectations::default());
    }
});
