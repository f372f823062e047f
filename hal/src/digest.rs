//! SHA-256 as hex, the digest release.json and the lock file record.

use sha2::{Digest, Sha256};

/// SHA-256 as hex.
pub fn sha256_hex(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}
