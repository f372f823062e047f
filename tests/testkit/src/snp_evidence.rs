//! SEV-SNP evidence for tests, signed by a chain made here: a P-384 root standing in
//! for AMD's ARK (`TEST-ARK`), an intermediate (`TEST-ASK`), and a VCEK with AMD's TCB
//! and hwID extensions, then attestation reports laid out as the SEV-SNP ABI
//! specification says (version 3, Milan CPUID) and signed with the VCEK's key. Only a
//! verifier told to trust this root (a test flag) accepts them; against AMD's roots
//! they fail, which tests check too.

use p384::ecdsa::signature::Signer as _;
use p384::pkcs8::DecodePrivateKey as _;
use rcgen::{BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair};
use sha2::Digest as _;

/// The TCB every test VCEK is issued for: (bootloader, tee, snp, microcode).
pub const TCB: (u8, u8, u8, u8) = (3, 0, 8, 115);

/// A chain and the VCEK's signing key.
pub struct TestChain {
    /// The root (PEM), to pass as the trust anchor.
    pub root_pem: String,
    /// The intermediate (DER).
    pub ask_der: Vec<u8>,
    /// The VCEK (DER).
    pub vcek_der: Vec<u8>,
    /// The chip ID the VCEK is issued for.
    pub chip_id: [u8; 64],
    vcek_pkcs8: Vec<u8>,
    vcek_key: p384::ecdsa::SigningKey,
    /// The root and its key (chains made here, not loaded), for revocation lists.
    root: Option<(rcgen::Certificate, KeyPair)>,
}

/// The VCEK's serial number.
pub const VCEK_SERIAL: [u8; 4] = [0x0c, 0x0c, 0x05, 0x01];

fn spl(v: u8) -> Vec<u8> {
    if v < 0x80 {
        vec![0x02, 0x01, v]
    } else {
        vec![0x02, 0x02, 0x00, v]
    }
}

fn ca(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

impl TestChain {
    /// A fresh chain (new keys each call).
    pub fn new() -> Self {
        let alg = &rcgen::PKCS_ECDSA_P384_SHA384;
        let root_key = KeyPair::generate_for(alg).unwrap();
        let root = ca("TEST-ARK").self_signed(&root_key).unwrap();
        let ask_key = KeyPair::generate_for(alg).unwrap();
        let ask = ca("TEST-ASK")
            .signed_by(&ask_key, &root, &root_key)
            .unwrap();
        let mut chip_id = [0u8; 64];
        for (i, b) in chip_id.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let vcek_key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "SEV-VCEK");
        p.serial_number = Some(rcgen::SerialNumber::from(VCEK_SERIAL.to_vec()));
        let ext = |last: u64, content: Vec<u8>| {
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 3704, 1, 3, last], content)
        };
        p.custom_extensions = vec![
            ext(1, spl(TCB.0)),
            ext(2, spl(TCB.1)),
            ext(3, spl(TCB.2)),
            ext(8, spl(TCB.3)),
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 3704, 1, 4], chip_id.to_vec()),
        ];
        let vcek = p.signed_by(&vcek_key, &ask, &ask_key).unwrap();
        let vcek_pkcs8 = vcek_key.serialize_der();
        Self {
            root_pem: root.pem(),
            ask_der: ask.der().to_vec(),
            vcek_der: vcek.der().to_vec(),
            chip_id,
            vcek_key: p384::ecdsa::SigningKey::from_pkcs8_der(&vcek_pkcs8).unwrap(),
            vcek_pkcs8,
            root: Some((root, root_key)),
        }
    }

    /// A revocation list signed by the root (DER), valid 2020-2040, listing the VCEK
    /// when `revoke_vcek`.
    pub fn crl(&self, revoke_vcek: bool) -> Vec<u8> {
        let (root, key) = self.root.as_ref().expect("a chain made by TestChain::new");
        let t = |y| rcgen::date_time_ymd(y, 1, 1);
        let params = rcgen::CertificateRevocationListParams {
            this_update: t(2020),
            next_update: t(2040),
            crl_number: rcgen::SerialNumber::from(vec![1]),
            issuing_distribution_point: None,
            revoked_certs: if revoke_vcek {
                vec![rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(VCEK_SERIAL.to_vec()),
                    revocation_time: t(2021),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }]
            } else {
                Vec::new()
            },
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(root, key).unwrap().der().to_vec()
    }

    /// Writes the chain and the VCEK's key into `dir` (for another process to sign).
    pub fn save(&self, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("root.pem"), &self.root_pem).unwrap();
        std::fs::write(dir.join("ask.der"), &self.ask_der).unwrap();
        std::fs::write(dir.join("vcek.der"), &self.vcek_der).unwrap();
        std::fs::write(dir.join("chip_id"), self.chip_id).unwrap();
        std::fs::write(dir.join("vcek.pkcs8"), &self.vcek_pkcs8).unwrap();
    }

    /// Reads what [`TestChain::save`] wrote.
    pub fn load(dir: &std::path::Path) -> Self {
        let vcek_pkcs8 = std::fs::read(dir.join("vcek.pkcs8")).unwrap();
        Self {
            root_pem: std::fs::read_to_string(dir.join("root.pem")).unwrap(),
            ask_der: std::fs::read(dir.join("ask.der")).unwrap(),
            vcek_der: std::fs::read(dir.join("vcek.der")).unwrap(),
            chip_id: std::fs::read(dir.join("chip_id"))
                .unwrap()
                .try_into()
                .unwrap(),
            vcek_key: p384::ecdsa::SigningKey::from_pkcs8_der(&vcek_pkcs8).unwrap(),
            vcek_pkcs8,
            root: None,
        }
    }

    /// A report (1184 bytes) with this measurement and report data, signed by the VCEK.
    pub fn report(&self, measurement: &[u8; 48], report_data: &[u8; 64]) -> Vec<u8> {
        let mut r = vec![0u8; 0x4a0];
        r[0..4].copy_from_slice(&3u32.to_le_bytes()); // VERSION
        r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes()); // POLICY: SMT, reserved bit
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // SIGNATURE_ALGO
        let tcb = [TCB.0, TCB.1, 0, 0, 0, 0, TCB.2, TCB.3];
        r[0x38..0x40].copy_from_slice(&tcb); // CURRENT_TCB
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xc0].copy_from_slice(measurement);
        r[0x180..0x188].copy_from_slice(&tcb); // REPORTED_TCB
        r[0x188..0x18b].copy_from_slice(&[0x19, 0x01, 0x01]); // CPUID: Milan
        r[0x1a0..0x1e0].copy_from_slice(&self.chip_id);
        let sig: p384::ecdsa::Signature = self.vcek_key.sign(&r[..0x2a0]);
        let (rb, sb) = sig.split_bytes();
        for i in 0..48 {
            r[0x2a0 + i] = rb[47 - i];
            r[0x2a0 + 72 + i] = sb[47 - i];
        }
        r
    }

    /// The certificate table configfs-tsm's auxblob would hold: VCEK and ASK.
    pub fn cert_table(&self) -> Vec<u8> {
        let vcek = uuid::uuid!("63da758d-e664-4564-adc5-f4b93be8accd");
        let ask = uuid::uuid!("4ab7b379-bbac-4fe4-a02f-05aef327c782");
        let header = 3 * 24;
        let mut t = Vec::new();
        let mut body = Vec::new();
        for (g, der) in [(vcek, &self.vcek_der), (ask, &self.ask_der)] {
            t.extend_from_slice(&g.to_bytes_le());
            t.extend_from_slice(&((header + body.len()) as u32).to_le_bytes());
            t.extend_from_slice(&(der.len() as u32).to_le_bytes());
            body.extend_from_slice(der);
        }
        t.extend_from_slice(&[0u8; 24]);
        t.extend_from_slice(&body);
        t
    }
}

impl Default for TestChain {
    fn default() -> Self {
        Self::new()
    }
}

/// SHA-512 of a nonce (what cocos-agent binds into REPORT_DATA).
pub fn report_data(nonce: &[u8]) -> [u8; 64] {
    sha2::Sha512::digest(nonce).into()
}
