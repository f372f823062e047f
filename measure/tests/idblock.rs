//! SEV-SNP ID blocks against an independent implementation: `sev-snp-measure`'s
//! `snp-create-id-block` (sevsnpmeasure/id_block.py, `snp_calc_id_block`) in the oracle
//! venv signs the same random launch digests with the same keys; everything but the
//! randomised ECDSA signatures must be byte-identical, and our signatures must verify
//! with RustCrypto's p384 (not the OpenSSL that made them). Non-default FAMILY_ID,
//! IMAGE_ID, GUEST_SVN and POLICY, which that tool cannot set, are checked against the
//! SEV-SNP ABI table offsets directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::process::Command;

use base64::Engine;
use cocos_measure::idblock::{IdBlockParams, SignedIdBlock, DEFAULT_POLICY};
use cocos_measure::keys::SigningKey;
use p384::ecdsa::signature::Verifier;
use rand::{Rng, SeedableRng};

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Verifies a 512-byte ABI signature (R, S little-endian in 72 bytes each) over `msg`
/// with a 1028-byte ABI public key, using p384.
fn abi_verify(pubkey: &[u8], sig: &[u8], msg: &[u8]) -> bool {
    assert_eq!(
        u32::from_le_bytes(pubkey[..4].try_into().unwrap()),
        2,
        "curve P-384"
    );
    assert!(pubkey[0x94..].iter().all(|&b| b == 0), "public key padding");
    assert!(pubkey[4 + 48..4 + 72].iter().all(|&b| b == 0));
    assert!(sig[0x90..].iter().all(|&b| b == 0), "signature padding");
    let be = |le: &[u8]| le[..48].iter().rev().copied().collect::<Vec<u8>>();
    let mut sec1 = vec![4u8];
    sec1.extend(be(&pubkey[4..76]));
    sec1.extend(be(&pubkey[0x4c..0x94]));
    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let r: [u8; 48] = be(&sig[..72]).try_into().unwrap();
    let s: [u8; 48] = be(&sig[72..144]).try_into().unwrap();
    let sig = p384::ecdsa::Signature::from_scalars(r, s).unwrap();
    vk.verify(msg, &sig).is_ok()
}

fn oracle(
    measurement: &[u8; 48],
    id: &Path,
    author: &Path,
) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let py = cocos_testkit::oracle_python();
    let tool = py.parent().unwrap().join("snp-create-id-block");
    let out = Command::new(&tool)
        .arg("--measurement")
        .arg(base64::engine::general_purpose::STANDARD.encode(measurement))
        .arg("--idkey")
        .arg(id)
        .arg("--authorkey")
        .arg(author)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", tool.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    let (blk, auth) = first
        .strip_prefix("id-block=")
        .unwrap()
        .split_once(",id-auth=")
        .unwrap();
    let idh = lines.next().unwrap().strip_prefix("id_key_hash: ").unwrap();
    let auh = lines.next().unwrap().strip_prefix("author_key: ").unwrap();
    (b64(blk), b64(auth), b64(idh), b64(auh))
}

#[test]
fn matches_sev_snp_measure_on_random_digests() {
    let seed = cocos_testkit::seed("idblock");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let id_path = cocos_testkit::keys::ec_key_file(
            dir.path(),
            &format!("id{round}.pem"),
            openssl::nid::Nid::SECP384R1,
            0o600,
        );
        let au_path = cocos_testkit::keys::ec_key_file(
            dir.path(),
            &format!("au{round}.pem"),
            openssl::nid::Nid::SECP384R1,
            0o600,
        );
        let mut measurement = [0u8; 48];
        rng.fill(&mut measurement[..]);
        let params = IdBlockParams {
            measurement,
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            policy: DEFAULT_POLICY,
        };
        let id = SigningKey::load_p384(&id_path).unwrap();
        let au = SigningKey::load_p384(&au_path).unwrap();
        let ours = SignedIdBlock::create(&params, &id, Some(&au)).unwrap();
        let (blk, auth, idh, auh) = oracle(&measurement, &id_path, &au_path);

        assert_eq!(ours.block.to_vec(), blk, "ID block");
        assert_eq!(ours.auth.len(), auth.len());
        // Byte-identical outside the two (randomised) signature fields.
        for (range, what) in [
            (0x000..0x040, "algorithms and reserved"),
            (0x240..0x680, "ID key and reserved"),
            (0x880..0x1000, "author key and reserved"),
        ] {
            assert_eq!(
                ours.auth[range.clone()],
                auth[range],
                "{what} (seed {seed})"
            );
        }
        assert_eq!(ours.id_key_digest.to_vec(), idh);
        assert_eq!(ours.author_key_digest.unwrap().to_vec(), auh);
        // Both implementations' signatures verify with p384.
        for a in [&ours.auth, &auth] {
            assert!(abi_verify(&a[0x240..0x644], &a[0x40..0x240], &ours.block));
            assert!(abi_verify(
                &a[0x880..0xc84],
                &a[0x680..0x880],
                &a[0x240..0x644]
            ));
        }
        // The JSON record reads back to the same structures and digests.
        let back = SignedIdBlock::from_json(&ours.to_json(Some("x")).unwrap()).unwrap();
        assert_eq!(back, ours);
        let props = ours.qemu_properties();
        assert!(props.ends_with(",author-key-enabled=on") && !props.contains('\n'));
    }
}

#[test]
fn non_default_fields_and_no_author_key() {
    let dir = tempfile::tempdir().unwrap();
    let id = SigningKey::load_p384(&cocos_testkit::keys::ec_key_file(
        dir.path(),
        "id.pem",
        openssl::nid::Nid::SECP384R1,
        0o600,
    ))
    .unwrap();
    let params = IdBlockParams {
        measurement: [0x5a; 48],
        family_id: *b"cocos-family-001",
        image_id: *b"cocos-image-0001",
        guest_svn: 7,
        policy: 0x30000 | (1 << 19),
    };
    let s = SignedIdBlock::create(&params, &id, None).unwrap();
    let b = &s.block;
    assert_eq!(&b[0x30..0x40], b"cocos-family-001");
    assert_eq!(&b[0x40..0x50], b"cocos-image-0001");
    assert_eq!(
        u32::from_le_bytes(b[0x50..0x54].try_into().unwrap()),
        1,
        "VERSION"
    );
    assert_eq!(u32::from_le_bytes(b[0x54..0x58].try_into().unwrap()), 7);
    assert_eq!(
        u64::from_le_bytes(b[0x58..0x60].try_into().unwrap()),
        0xb0000
    );
    assert!(abi_verify(&s.auth[0x240..0x644], &s.auth[0x40..0x240], b));
    // No author key: its algorithm, signature and key stay zero, and QEMU is not told
    // to enable it.
    assert!(s.auth[4..8].iter().all(|&x| x == 0));
    assert!(s.auth[0x680..].iter().all(|&x| x == 0));
    assert!(s.author_key_digest.is_none());
    assert!(!s.qemu_properties().contains("author-key-enabled"));
    // A changed byte anywhere in the block breaks the signature.
    let mut forged = *b;
    forged[0x58] ^= 1;
    assert!(!abi_verify(
        &s.auth[0x240..0x644],
        &s.auth[0x40..0x240],
        &forged
    ));
    assert_eq!(b64(&s.block_b64()).len(), 96);
    assert_eq!(b64(&s.auth_b64()).len(), 4096);
}
