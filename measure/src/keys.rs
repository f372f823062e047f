//! Release signing keys: an EC private key (P-384, or P-256 where the format allows it)
//! read from a PEM file that only its owner may read. Owns the permission check, the
//! curve check and the two signature encodings our outputs need (COSE's big-endian
//! `r || s`, and the AMD SEV-SNP ABI's little-endian 72-byte `r`, `s`). A key is
//! never printed: `Debug` shows the path and curve only.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};

/// A PEM key file is a few hundred bytes; anything larger is not a key.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Group or other users may read (or write) the file.
    #[error("{path}: mode {mode:04o} lets other users read the key; run `chmod 600 {path}` (a release key must be readable by its owner only)")]
    Permissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a regular file, or too large to be a key.
    #[error("{path}: {why}")]
    NotAKeyFile {
        /// The key file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The PEM does not hold a private key.
    #[error("{path}: not a PEM private key (PKCS#8 `BEGIN PRIVATE KEY` or SEC1 `BEGIN EC PRIVATE KEY`): {why}")]
    Parse {
        /// The key file.
        path: String,
        /// The parser's reason.
        why: String,
    },
    /// A private key of the wrong type or curve.
    #[error("{path}: {found} key; {wanted}")]
    WrongType {
        /// The key file.
        path: String,
        /// What the file holds.
        found: String,
        /// What is needed.
        wanted: &'static str,
    },
    /// The crypto library failed while signing.
    #[error("signing with {path}: {why}")]
    Sign {
        /// The key file.
        path: String,
        /// The library's reason.
        why: String,
    },
}

/// The curves a release key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (COSE ES256).
    P256,
    /// NIST P-384 (COSE ES384; the only curve the AMD secure processor accepts).
    P384,
}

impl std::fmt::Display for Curve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        })
    }
}

impl Curve {
    /// Size of a coordinate or scalar in bytes.
    pub fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            Curve::P256 => MessageDigest::sha256(),
            Curve::P384 => MessageDigest::sha384(),
        }
    }
}

/// An EC private key loaded from a file only its owner can read.
pub struct SigningKey {
    key: EcKey<Private>,
    curve: Curve,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("path", &self.path)
            .field("curve", &self.curve)
            .finish_non_exhaustive()
    }
}

/// Reads a key file: a regular file, at most 64 KiB, with no group or other permission
/// bits (checked on the opened file, so a swapped path cannot slip past the check).
fn read_private(path: &Path) -> Result<Vec<u8>, KeyError> {
    let shown = path.display().to_string();
    let io = |source| KeyError::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_noctty())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(KeyError::NotAKeyFile {
            path: shown,
            why: "not a regular file".into(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: shown, mode });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::NotAKeyFile {
            path: shown,
            why: format!("{} bytes is too large for a PEM key", meta.len()),
        });
    }
    let mut buf = Vec::new();
    file.by_ref()
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok(buf)
}

/// `O_NOCTTY`: opening a terminal device by mistake must not make it ours.
fn libc_o_noctty() -> i32 {
    0o400
}

impl SigningKey {
    /// Loads a P-384 or P-256 private key from `path` (PKCS#8 or SEC1 PEM).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::load_curves(
            path,
            &[Curve::P384, Curve::P256],
            "need an EC P-384 or P-256 private key",
        )
    }

    /// Loads a P-384 private key (what the AMD secure processor accepts for ID blocks).
    pub fn load_p384(path: &Path) -> Result<Self, KeyError> {
        Self::load_curves(path, &[Curve::P384], "need an EC P-384 private key (`openssl ecparam -name secp384r1 -genkey -noout -out key.pem`)")
    }

    fn load_curves(path: &Path, allowed: &[Curve], wanted: &'static str) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let pem = read_private(path)?;
        let pkey = PKey::private_key_from_pem(&pem).map_err(|e| KeyError::Parse {
            path: shown.clone(),
            why: first_reason(&e),
        })?;
        let wrong = |found: String| KeyError::WrongType {
            path: shown.clone(),
            found,
            wanted,
        };
        if pkey.id() != Id::EC {
            let found = match pkey.id() {
                Id::RSA => "an RSA".to_owned(),
                Id::ED25519 => "an Ed25519".to_owned(),
                Id::DSA => "a DSA".to_owned(),
                other => format!("a type {} ", other.as_raw()),
            };
            return Err(wrong(found));
        }
        let key = pkey.ec_key().map_err(|e| wrong(first_reason(&e)))?;
        let curve = match key.group().curve_name() {
            Some(Nid::SECP384R1) => Curve::P384,
            Some(Nid::X9_62_PRIME256V1) => Curve::P256,
            Some(n) => return Err(wrong(format!("an EC {}", n.short_name().unwrap_or("?")))),
            None => return Err(wrong("an EC key on an explicit (unnamed) curve,".into())),
        };
        if !allowed.contains(&curve) {
            return Err(wrong(format!("an EC {curve}")));
        }
        key.check_key()
            .map_err(|e| wrong(format!("an invalid EC ({})", first_reason(&e))))?;
        Ok(SigningKey {
            key,
            curve,
            path: path.to_owned(),
        })
    }

    /// The key's curve.
    pub fn curve(&self) -> Curve {
        self.curve
    }

    fn sign_err(&self, e: openssl::error::ErrorStack) -> KeyError {
        KeyError::Sign {
            path: self.path.display().to_string(),
            why: first_reason(&e),
        }
    }

    /// ECDSA over `data` with the curve's hash (SHA-256 / SHA-384); `(r, s)` big-endian,
    /// each exactly the curve's size.
    pub fn sign(&self, data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
        let digest =
            openssl::hash::hash(self.curve.digest(), data).map_err(|e| self.sign_err(e))?;
        let sig = EcdsaSig::sign(&digest, &self.key).map_err(|e| self.sign_err(e))?;
        let n = i32::try_from(self.curve.size()).unwrap_or(48);
        let r = sig.r().to_vec_padded(n).map_err(|e| self.sign_err(e))?;
        let s = sig.s().to_vec_padded(n).map_err(|e| self.sign_err(e))?;
        Ok((r, s))
    }

    /// The public point `(x, y)`, big-endian, each exactly the curve's size.
    pub fn public_xy(&self) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
        let mut ctx = BigNumContext::new().map_err(|e| self.sign_err(e))?;
        let mut x = BigNum::new().map_err(|e| self.sign_err(e))?;
        let mut y = BigNum::new().map_err(|e| self.sign_err(e))?;
        self.key
            .public_key()
            .affine_coordinates(self.key.group(), &mut x, &mut y, &mut ctx)
            .map_err(|e| self.sign_err(e))?;
        let n = i32::try_from(self.curve.size()).unwrap_or(48);
        Ok((
            x.to_vec_padded(n).map_err(|e| self.sign_err(e))?,
            y.to_vec_padded(n).map_err(|e| self.sign_err(e))?,
        ))
    }
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_owned))
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_key(dir: &Path, name: &str, pem: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn ec_pem(nid: Nid) -> Vec<u8> {
        let group = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
        let k = EcKey::generate(&group).unwrap();
        PKey::from_ec_key(k)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap()
    }

    #[test]
    fn loads_p384_and_p256_and_signs_verifiably() {
        let d = tempfile::tempdir().unwrap();
        for (nid, curve) in [
            (Nid::SECP384R1, Curve::P384),
            (Nid::X9_62_PRIME256V1, Curve::P256),
        ] {
            let p = write_key(d.path(), "k.pem", &ec_pem(nid), 0o600);
            let k = SigningKey::load(&p).unwrap();
            assert_eq!(k.curve(), curve);
            let (r, s) = k.sign(b"hello").unwrap();
            assert_eq!((r.len(), s.len()), (curve.size(), curve.size()));
            let sig = EcdsaSig::from_private_components(
                BigNum::from_slice(&r).unwrap(),
                BigNum::from_slice(&s).unwrap(),
            )
            .unwrap();
            let digest = openssl::hash::hash(curve.digest(), b"hello").unwrap();
            assert!(sig.verify(&digest, &k.key).unwrap());
            assert!(!format!("{k:?}").contains("BEGIN"));
        }
    }

    #[test]
    fn refuses_readable_wrong_type_and_non_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = write_key(d.path(), "open.pem", &ec_pem(Nid::SECP384R1), 0o644);
        let e = SigningKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        let p = write_key(d.path(), "group.pem", &ec_pem(Nid::SECP384R1), 0o640);
        assert!(matches!(
            SigningKey::load(&p),
            Err(KeyError::Permissions { .. })
        ));

        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pem = PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let p = write_key(d.path(), "rsa.pem", &pem, 0o600);
        let e = SigningKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("RSA key") && e.contains("P-384"), "{e}");

        let p = write_key(d.path(), "p256.pem", &ec_pem(Nid::X9_62_PRIME256V1), 0o600);
        assert!(SigningKey::load(&p).is_ok());
        let e = SigningKey::load_p384(&p).unwrap_err().to_string();
        assert!(e.contains("EC P-256 key") && e.contains("P-384"), "{e}");

        let p = write_key(
            d.path(),
            "junk.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
            0o600,
        );
        assert!(matches!(SigningKey::load(&p), Err(KeyError::Parse { .. })));
        assert!(matches!(
            SigningKey::load(d.path()),
            Err(KeyError::NotAKeyFile { .. })
                | Err(KeyError::Io { .. })
                | Err(KeyError::Permissions { .. })
        ));
        assert!(matches!(
            SigningKey::load(&d.path().join("absent")),
            Err(KeyError::Io { .. })
        ));
    }
}
