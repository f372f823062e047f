//! Fuzz target for what comes with an SNP report: the extended report's certificate
//! table (configfs-tsm auxblob), certificates (PEM or DER, bundles) and revocation
//! lists. Nothing may panic; errors are fine.

#![no_main]

use cocos_measure::verify::amd::{Cert, Crl};
use cocos_measure::verify::snp::CertTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = CertTable::parse(data) {
        for c in [t.vcek, t.vlek, t.ask, t.ark].into_iter().flatten() {
            if let Ok(c) = Cert::from_bytes(&c) {
                let _ = (c.tcb(), c.hw_id(), c.validity(), c.issuer_cn());
            }
        }
    }
    let _ = Cert::all_from_bytes(data);
    let _ = Crl::from_bytes(data);
});
