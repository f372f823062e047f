//! vCPU models QEMU knows for AMD guests and their CPUID signatures (family, model,
//! stepping packed as CPUID Fn0000_0001_EAX). The VMSA's RDX carries this value at
//! reset, so it is part of the SEV-ES and SNP launch digests.

use crate::MeasureError;

/// Packs family / model / stepping the way CPUID Fn0000_0001_EAX does (AMD pub. 25481).
pub fn cpu_sig(family: u64, model: u64, stepping: u64) -> u64 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// `(name, family, model, stepping)` for every QEMU EPYC model sev-snp-measure knows.
pub const VCPU_TYPES: &[(&str, u64, u64, u64)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The signature of a vCPU type, matched exactly (as sev-snp-measure does).
pub fn sig_exact(name: &str) -> Result<u64, MeasureError> {
    VCPU_TYPES
        .iter()
        .find(|t| t.0 == name)
        .map(|t| cpu_sig(t.1, t.2, t.3))
        .ok_or_else(|| MeasureError::UnknownVcpuType(name.to_owned()))
}

/// The signature of a vCPU type, ignoring ASCII case; returns the canonical name too.
pub fn lookup(name: &str) -> Result<(&'static str, u64), MeasureError> {
    VCPU_TYPES
        .iter()
        .find(|t| t.0.eq_ignore_ascii_case(name))
        .map(|t| (t.0, cpu_sig(t.1, t.2, t.3)))
        .ok_or_else(|| MeasureError::UnknownVcpuType(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_signatures() {
        // Values from the AMD CPUID of real parts: Milan B1 = 0x00a00f11, Genoa = 0x00a10f10.
        assert_eq!(sig_exact("EPYC-Milan").unwrap(), 0x00a0_0f11);
        assert_eq!(sig_exact("EPYC-Genoa").unwrap(), 0x00a1_0f10);
        assert_eq!(sig_exact("EPYC").unwrap(), 0x0080_0f12);
        assert_eq!(sig_exact("EPYC-Rome").unwrap(), 0x0083_0f10);
        assert_eq!(sig_exact("EPYC-Turin").unwrap(), 0x00b0_0f00);
        assert!(sig_exact("epyc-milan").is_err());
        assert_eq!(lookup("epyc-milan").unwrap(), ("EPYC-Milan", 0x00a0_0f11));
        assert!(lookup("EPYC-Zen9").is_err());
    }

    #[test]
    fn low_families_are_not_extended() {
        assert_eq!(cpu_sig(6, 0x55, 7), 0x0005_0657);
    }
}
