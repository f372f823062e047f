//! EC key files for tests (release, ID and CoRIM signing keys): generated with
//! OpenSSL, written with the mode a test wants, and their public points.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use openssl::nid::Nid;

/// Writes a fresh EC private key on `curve` (SEC1 PEM) to `dir/name` with `mode`.
pub fn ec_key_file(dir: &Path, name: &str, curve: Nid, mode: u32) -> PathBuf {
    let group = openssl::ec::EcGroup::from_curve_name(curve).unwrap_or_else(|e| panic!("{e}"));
    let k = openssl::ec::EcKey::generate(&group).unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join(name);
    std::fs::write(&p, k.private_key_to_pem().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// The uncompressed public point (SEC1) of the private key in `key`.
pub fn public_sec1(key: &Path) -> Vec<u8> {
    let pem = std::fs::read(key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    let k = openssl::ec::EcKey::private_key_from_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    let mut ctx = openssl::bn::BigNumContext::new().unwrap_or_else(|e| panic!("{e}"));
    k.public_key()
        .to_bytes(
            k.group(),
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut ctx,
        )
        .unwrap_or_else(|e| panic!("{e}"))
}
