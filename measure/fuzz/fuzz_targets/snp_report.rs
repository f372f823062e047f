//! Fuzz target for SEV-SNP reports: arbitrary bytes as an attestation report, and a
//! report-sized input through the whole verification with a genuine Milan VCEK (from
//! the test fixtures), so AMD's chain verifies and every report check runs; the
//! signature simply fails. Nothing may panic; errors are fine.

#![no_main]

use cocos_measure::verify::amd::Cert;
use cocos_measure::verify::snp::{self, Certs, Expectations, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Report::parse(data);
    const VCEK: &[u8] = include_bytes!("../../tests/data/evidence/snp/azure-milan/vcek.der");
    if let (Some(report), Ok(vcek)) = (data.get(..snp::REPORT_LEN), Cert::from_der(VCEK)) {
        let certs = Certs {
            vek: Some(vcek),
            ..Certs::default()
        };
        let exp = Expectations {
            measurement: Some([0; 48]),
            report_data: Some([0; 64]),
            now: 1_717_200_000,
            ..Expectations::default()
        };
        let _ = snp::verify(report, &certs, &exp);
    }
});
