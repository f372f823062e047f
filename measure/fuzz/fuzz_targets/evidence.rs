//! Fuzz target owning the attestation-evidence parsers of `cocos-measure verify`:
//! arbitrary bytes are tried as an SEV-SNP report (and, verified against a built-in
//! AMD certificate, as one whose signature must simply fail), as an extended-report
//! certificate table, as a certificate (PEM or DER, bundles too), as a TDX DCAP quote,
//! as DCAP collateral JSON, and as a CCEL event log (parsed and replayed). Nothing may
//! panic; errors are fine.

#![no_main]

use cocos_measure::verify::amd::{Cert, Product};
use cocos_measure::verify::ccel;
use cocos_measure::verify::snp::{self, CertTable, Certs, Expectations, Report};
use cocos_measure::verify::tdx::{self, Collateral};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Report::parse(data);
    let _ = CertTable::parse(data);
    let _ = Cert::from_bytes(data);
    let _ = Cert::all_from_bytes(data);
    let _ = tdx::parse(data);
    let _ = Collateral::from_json(data);
    if let Ok(events) = ccel::parse(data) {
        let _ = ccel::replay(&events);
    }
    // A report-sized input goes through the whole SNP verification with AMD's Milan
    // ASK standing in for the endorsement key: every check must run without panicking.
    if data.len() >= snp::REPORT_LEN {
        if let (Some(report), Ok(ask)) = (data.get(..snp::REPORT_LEN), Product::Milan.ask()) {
            let certs = Certs {
                vek: Some(ask),
                ..Certs::default()
            };
            let _ = snp::verify(report, &certs, &Expectations::default());
        }
    }
});
