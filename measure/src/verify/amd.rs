//! AMD's certificates for SEV-SNP: the products and their built-in roots (the ARK and
//! ASK the `sev` crate ships for Milan, Genoa and Turin), reading VCEK/VLEK/ASK/ASVK
//! certificates from PEM or DER, their validity, the TCB and hardware-ID extensions
//! of a VCEK (AMD's VCEK specification, 57230, chapter 3), and RSA-PSS signature
//! checks between them (through `sev`).

use sev::certs::snp::{builtin, Certificate, Verifiable};
use x509_cert::der::{Decode, Encode};

use super::VerifyError;

/// The SEV-SNP product lines AMD signs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Product {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl Product {
    /// All products.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name AMD's KDS uses (`Milan`, …).
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// AMD's root key (ARK) for this product, as the `sev` crate ships it.
    pub fn ark(self) -> Result<Cert, VerifyError> {
        let pem = match self {
            Product::Milan => builtin::milan::ARK,
            Product::Genoa => builtin::genoa::ARK,
            Product::Turin => builtin::turin::ARK,
        };
        Cert::from_pem(pem)
    }

    /// AMD's signing key for VCEKs (ASK) for this product.
    pub fn ask(self) -> Result<Cert, VerifyError> {
        let pem = match self {
            Product::Milan => builtin::milan::ASK,
            Product::Genoa => builtin::genoa::ASK,
            Product::Turin => builtin::turin::ASK,
        };
        Cert::from_pem(pem)
    }

    /// The product from a CPUID family and model (report version 3 and later).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f) | (0x19, 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x1f) => Some(Product::Turin),
            _ => None,
        }
    }
}

/// Which endorsement key signs a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Versioned Chip Endorsement Key (per chip and TCB).
    Vcek,
    /// Versioned Loaded Endorsement Key (per cloud provider and TCB).
    Vlek,
}

/// A TCB version as the report and the VCEK's extensions give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Tcb {
    /// SVN of the PSP bootloader.
    pub bootloader: u8,
    /// SVN of the PSP OS.
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest microcode patch level of all cores.
    pub microcode: u8,
    /// SVN of the FMC firmware (Turin only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl Tcb {
    /// Decodes the 8-byte TCB_VERSION of a report for `product` (Turin adds FMC
    /// first; SEV-SNP ABI specification, TCB_VERSION).
    pub fn from_report(raw: [u8; 8], product: Product) -> Self {
        let [b0, b1, b2, b3, _, _, b6, b7] = raw;
        match product {
            Product::Turin => Tcb {
                fmc: Some(b0),
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
            },
            _ => Tcb {
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
                fmc: None,
            },
        }
    }

    /// Whether every component is at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
            && self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
    }

    /// `bl=3 tee=0 snp=8 ucode=115` (and `fmc=` on Turin).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "bl={} tee={} snp={} ucode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        );
        if let Some(f) = self.fmc {
            s.push_str(&format!(" fmc={f}"));
        }
        s
    }

    /// Parses `bl=3,tee=0,snp=8,ucode=115[,fmc=1]` (for `--min-tcb`).
    pub fn parse(s: &str) -> Result<Tcb, VerifyError> {
        let mut t = Tcb::default();
        for part in s.split([',', ' ']).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                VerifyError::Expected(format!(
                    "TCB {s:?}: expected NAME=VALUE pairs, e.g. bl=3,tee=0,snp=8,ucode=115"
                ))
            })?;
            let v: u8 = v.parse().map_err(|_| {
                VerifyError::Expected(format!("TCB {s:?}: {k}={v} is not a number 0-255"))
            })?;
            match k {
                "bl" | "bootloader" => t.bootloader = v,
                "tee" => t.tee = v,
                "snp" => t.snp = v,
                "ucode" | "microcode" => t.microcode = v,
                "fmc" => t.fmc = Some(v),
                _ => {
                    return Err(VerifyError::Expected(format!(
                        "TCB {s:?}: unknown component {k:?} (bl, tee, snp, ucode, fmc)"
                    )))
                }
            }
        }
        Ok(t)
    }
}

/// A certificate, parsed once for both uses: X.509 fields and `sev`'s signature checks.
#[derive(Debug, Clone)]
pub struct Cert {
    x509: x509_cert::Certificate,
    sev: Certificate,
    der: Vec<u8>,
}

const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";
const RSA_PSS: &str = "1.2.840.113549.1.1.10";

impl Cert {
    /// From DER.
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        let x509 = x509_cert::Certificate::from_der(der)
            .map_err(|e| VerifyError::Certificate(format!("not a DER certificate ({e})")))?;
        Self::from_x509(x509)
    }

    /// From one PEM certificate. The PEM is decoded to DER first (`pem-rfc7468`) and
    /// then parsed: `der`'s streaming PEM reader loops forever on a body that ends
    /// inside a DER header (found by the `cert_table` fuzz target).
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let bad = |e: &dyn std::fmt::Display| {
            VerifyError::Certificate(format!("not a PEM certificate ({e})"))
        };
        let (label, der) = x509_cert::der::pem::decode_vec(pem).map_err(|e| bad(&e))?;
        if label != "CERTIFICATE" {
            return Err(bad(&format!("its label is {label:?}")));
        }
        Self::from_der(&der)
    }

    /// From PEM or DER, whichever the bytes are.
    pub fn from_bytes(b: &[u8]) -> Result<Self, VerifyError> {
        if b.starts_with(b"-----BEGIN") {
            Self::from_pem(b)
        } else {
            Self::from_der(b)
        }
    }

    /// Every certificate in a PEM bundle (e.g. AMD KDS's `cert_chain`), or one DER.
    pub fn all_from_bytes(b: &[u8]) -> Result<Vec<Self>, VerifyError> {
        if !b.starts_with(b"-----BEGIN") {
            return Ok(vec![Self::from_der(b)?]);
        }
        let text = std::str::from_utf8(b)
            .map_err(|_| VerifyError::Certificate("PEM bundle is not text".into()))?;
        let end = "-----END CERTIFICATE-----";
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let tail = rest.get(start..).unwrap_or_default();
            let Some(stop) = tail.find(end) else {
                return Err(VerifyError::Certificate(
                    "PEM bundle: a certificate has no END line".into(),
                ));
            };
            let one = tail.get(..stop + end.len()).unwrap_or_default();
            out.push(Self::from_pem(one.as_bytes())?);
            rest = tail.get(stop + end.len()..).unwrap_or_default();
        }
        if out.is_empty() {
            return Err(VerifyError::Certificate(
                "PEM bundle holds no certificate".into(),
            ));
        }
        Ok(out)
    }

    fn from_x509(x509: x509_cert::Certificate) -> Result<Self, VerifyError> {
        let der = x509
            .to_der()
            .map_err(|e| VerifyError::Certificate(format!("certificate re-encoding: {e}")))?;
        Ok(Self {
            sev: Certificate::from(x509.clone()),
            x509,
            der,
        })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject's common name.
    pub fn subject_cn(&self) -> String {
        common_name(&self.x509.tbs_certificate.subject)
    }

    /// The issuer's common name.
    pub fn issuer_cn(&self) -> String {
        common_name(&self.x509.tbs_certificate.issuer)
    }

    /// Not before / not after, seconds since the epoch.
    pub fn validity(&self) -> (i64, i64) {
        let v = &self.x509.tbs_certificate.validity;
        let secs = |t: &x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        (secs(&v.not_before), secs(&v.not_after))
    }

    /// The uncompressed SEC1 public key (a VCEK's or VLEK's P-384 key).
    pub fn public_key_sec1(&self) -> &[u8] {
        self.x509
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.x509
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The TCB the VCEK/VLEK was issued for (its SPL extensions); `None` if absent.
    pub fn tcb(&self) -> Option<Tcb> {
        let spl = |oid: &str| -> Option<u8> { u8::from_der(self.extension(oid)?).ok() };
        Some(Tcb {
            bootloader: spl(OID_BL)?,
            tee: spl(OID_TEE)?,
            snp: spl(OID_SNP)?,
            microcode: spl(OID_UCODE)?,
            fmc: spl(OID_FMC),
        })
    }

    /// The chip ID a VCEK was issued for (its hwID extension), as the 64-byte CHIP_ID
    /// field: Milan and Genoa carry 64 bytes, Turin 8 (the rest of its CHIP_ID is zero).
    pub fn hw_id(&self) -> Option<[u8; 64]> {
        let raw = self.extension(OID_HWID)?;
        let bytes = match x509_cert::der::asn1::OctetString::from_der(raw) {
            Ok(o) if raw.len() != 64 && raw.len() != 8 => o.as_bytes().to_vec(),
            _ => raw.to_vec(),
        };
        let mut id = [0u8; 64];
        id.get_mut(..bytes.len())?.copy_from_slice(&bytes);
        Some(id)
    }

    /// Whether `self`'s key signs `subject`: RSA-PSS SHA-384 as AMD signs (through
    /// `sev`), or ECDSA P-384 SHA-384, which only a root with a P-384 key can produce
    /// (a test's trust anchor; AMD's roots are RSA, so this path cannot succeed under
    /// them).
    pub fn signs(&self, subject: &Cert) -> Result<(), String> {
        if subject.x509.signature_algorithm.oid.to_string() != ECDSA_WITH_SHA384 {
            return (&self.sev, &subject.sev)
                .verify()
                .map_err(|e| e.to_string());
        }
        let tbs = subject
            .x509
            .tbs_certificate
            .to_der()
            .map_err(|e| format!("certificate re-encoding: {e}"))?;
        self.verifies(
            &tbs,
            &subject.x509.signature_algorithm.oid.to_string(),
            subject.x509.signature.raw_bytes(),
        )
        .map_err(|e| format!("{}'s signature: {e}", subject.subject_cn()))
    }

    /// Checks a signature by this certificate's key over `tbs`: RSA-PSS with SHA-384
    /// (salt 48, as AMD signs) or ECDSA P-384 with SHA-384.
    pub fn verifies(&self, tbs: &[u8], algorithm: &str, signature: &[u8]) -> Result<(), String> {
        match algorithm {
            ECDSA_WITH_SHA384 => {
                use p384::ecdsa::signature::Verifier as _;
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(self.public_key_sec1())
                    .map_err(|_| format!("{} has no P-384 key", self.subject_cn()))?;
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|e| format!("not an ECDSA signature ({e})"))?;
                key.verify(tbs, &sig)
                    .map_err(|_| "does not verify".to_owned())
            }
            RSA_PSS => {
                use rsa::signature::Verifier as _;
                use x509_cert::der::referenced::OwnedToRef as _;
                let spki = self
                    .x509
                    .tbs_certificate
                    .subject_public_key_info
                    .owned_to_ref();
                let key = rsa::RsaPublicKey::try_from(spki)
                    .map_err(|e| format!("{} has no RSA key ({e})", self.subject_cn()))?;
                let sig = rsa::pss::Signature::try_from(signature)
                    .map_err(|e| format!("not an RSA signature ({e})"))?;
                rsa::pss::VerifyingKey::<sha2::Sha384>::new(key)
                    .verify(tbs, &sig)
                    .map_err(|_| "does not verify".to_owned())
            }
            other => Err(format!(
                "signature algorithm {other} is neither RSA-PSS nor ECDSA P-384"
            )),
        }
    }

    /// The serial number's bytes.
    pub fn serial(&self) -> &[u8] {
        self.x509.tbs_certificate.serial_number.as_bytes()
    }
}

/// A certificate revocation list (AMD KDS's `crl`, signed by the ARK).
#[derive(Debug, Clone)]
pub struct Crl(x509_cert::crl::CertificateList);

impl Crl {
    /// From DER or PEM.
    pub fn from_bytes(b: &[u8]) -> Result<Self, VerifyError> {
        let bad = |e: &dyn std::fmt::Display| {
            VerifyError::Certificate(format!("not a certificate revocation list ({e})"))
        };
        let der = if b.starts_with(b"-----BEGIN") {
            x509_cert::der::pem::decode_vec(b).map_err(|e| bad(&e))?.1
        } else {
            b.to_vec()
        };
        x509_cert::crl::CertificateList::from_der(&der)
            .map(Self)
            .map_err(|e| bad(&e))
    }

    /// The issuer's common name.
    pub fn issuer_cn(&self) -> String {
        common_name(&self.0.tbs_cert_list.issuer)
    }

    /// Whether `issuer` signs this list.
    pub fn signed_by(&self, issuer: &Cert) -> Result<(), String> {
        let tbs = self
            .0
            .tbs_cert_list
            .to_der()
            .map_err(|e| format!("CRL re-encoding: {e}"))?;
        issuer.verifies(
            &tbs,
            &self.0.signature_algorithm.oid.to_string(),
            self.0.signature.raw_bytes(),
        )
    }

    /// This update and next update (if given), seconds since the epoch.
    pub fn validity(&self) -> (i64, Option<i64>) {
        let secs = |t: &x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        (
            secs(&self.0.tbs_cert_list.this_update),
            self.0.tbs_cert_list.next_update.as_ref().map(secs),
        )
    }

    /// Whether a certificate with this serial number is revoked.
    pub fn revokes(&self, serial: &[u8]) -> bool {
        self.0
            .tbs_cert_list
            .revoked_certificates
            .as_ref()
            .is_some_and(|r| r.iter().any(|c| c.serial_number.as_bytes() == serial))
    }
}

fn common_name(name: &x509_cert::name::Name) -> String {
    let text = name.to_string();
    text.split(',')
        .find_map(|p| p.trim().strip_prefix("CN="))
        .unwrap_or(&text)
        .to_owned()
}

/// What a VCEK's or VLEK's issuer says about it: the product and the key kind
/// (`SEV-Milan` → Milan VCEK, `SEV-VLEK-Genoa` → Genoa VLEK).
pub fn issuer_product(issuer_cn: &str) -> Option<(Product, KeyKind)> {
    let (kind, name) = match issuer_cn.strip_prefix("SEV-VLEK-") {
        Some(n) => (KeyKind::Vlek, n),
        None => (KeyKind::Vcek, issuer_cn.strip_prefix("SEV-")?),
    };
    Product::ALL
        .into_iter()
        .find(|p| p.name() == name)
        .map(|p| (p, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RSA-PSS path used for revocation lists agrees with `sev`'s certificate check
    /// on AMD's real roots, and refuses a changed signature.
    #[test]
    fn rsa_pss_signatures_of_amds_roots() {
        for p in Product::ALL {
            let (ark, ask) = (p.ark().unwrap(), p.ask().unwrap());
            for subject in [&ark, &ask] {
                let tbs = subject.x509.tbs_certificate.to_der().unwrap();
                let alg = subject.x509.signature_algorithm.oid.to_string();
                assert_eq!(alg, RSA_PSS);
                let sig = subject.x509.signature.raw_bytes().to_vec();
                assert!(ark.verifies(&tbs, &alg, &sig).is_ok(), "{}", p.name());
                assert!(ark.signs(subject).is_ok());
                let mut bad = sig.clone();
                bad[10] ^= 1;
                assert!(ark.verifies(&tbs, &alg, &bad).is_err());
                assert!(
                    ask.verifies(&tbs, &alg, &sig).is_err(),
                    "the ASK does not sign the ARK"
                );
            }
        }
    }

    #[test]
    fn tcb_parse_and_order() {
        let t = Tcb::parse("bl=3,tee=0,snp=8,ucode=115").unwrap();
        assert_eq!(t.describe(), "bl=3 tee=0 snp=8 ucode=115");
        assert!(t.at_least(&Tcb::parse("bl=2,snp=8").unwrap()));
        assert!(!t.at_least(&Tcb::parse("snp=9").unwrap()));
        for bad in ["bl", "bl=300", "xyz=1"] {
            assert!(Tcb::parse(bad).is_err(), "{bad}");
        }
        // Turin's TCB_VERSION puts FMC first.
        let turin = Tcb::from_report([1, 2, 3, 4, 0, 0, 0, 5], Product::Turin);
        assert_eq!(
            (turin.fmc, turin.bootloader, turin.snp, turin.microcode),
            (Some(1), 2, 4, 5)
        );
        let milan = Tcb::from_report([3, 0, 0, 0, 0, 0, 8, 115], Product::Milan);
        assert_eq!(milan, t);
    }
}
