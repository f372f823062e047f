//! COSE_Sign1 verification for tests, independent of the signer: coset builds the
//! `Sig_structure`, RustCrypto's p384 / p256 check the ES384 / ES256 signature
//! (cocos-rs signs with OpenSSL).

use coset::{iana, RegisteredLabelWithPrivate, TaggedCborSerializable};

/// Parses tagged COSE_Sign1 bytes (`18(...)`); `None` if they do not parse.
pub fn parse(bytes: &[u8]) -> Option<coset::CoseSign1> {
    coset::CoseSign1::from_tagged_slice(bytes).ok()
}

/// Whether `sign1` verifies with the public key `sec1` (uncompressed point), for
/// the algorithm its protected header names (ES384 or ES256; anything else fails).
pub fn verifies(sign1: &coset::CoseSign1, sec1: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    let alg = sign1.protected.header.alg.clone();
    sign1
        .verify_signature(b"", |sig, data| -> Result<(), ()> {
            match alg {
                Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384)) => {
                    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1).map_err(|_| ())?;
                    let s = p384::ecdsa::Signature::from_slice(sig).map_err(|_| ())?;
                    vk.verify(data, &s).map_err(|_| ())
                }
                Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256)) => {
                    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).map_err(|_| ())?;
                    let s = p256::ecdsa::Signature::from_slice(sig).map_err(|_| ())?;
                    vk.verify(data, &s).map_err(|_| ())
                }
                _ => Err(()),
            }
        })
        .is_ok()
}
