//! SEV-SNP ID block and ID authentication information: the structures a launch hands the
//! AMD secure processor at SNP_LAUNCH_FINISH so that it refuses any launch whose digest
//! differs from the one the release key signed. Layouts from the SEV-SNP Firmware ABI
//! specification (AMD 56860, SNP_LAUNCH_FINISH: "ID Block Structure", "ID Authentication
//! Information Structure"; chapter "Digital Signatures": ECDSA signature and public-key
//! formats), checked against `sev-snp-measure`'s `snp-create-id-block` in the tests.
//! QEMU (target/i386/sev.c, `sev_snp_guest_class_init`, since 9.1) takes both base64
//! encoded as the `sev-snp-guest` properties `id-block`, `id-auth` and `author-key-enabled`.

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha384};

use crate::keys::{KeyError, SigningKey};

/// Size of the ID block.
pub const ID_BLOCK_SIZE: usize = 0x60;
/// Size of the ID authentication information structure.
pub const ID_AUTH_SIZE: usize = 0x1000;
/// Size of the public-key structure (ID_KEY, AUTHOR_KEY).
pub const PUBKEY_SIZE: usize = 0x404;
/// The launch policy QEMU uses when none is given (`DEFAULT_SEV_SNP_POLICY`): SMT
/// allowed (bit 16) and the reserved bit 17 set.
pub const DEFAULT_POLICY: u64 = 0x30000;

/// ID_KEY_ALGO / AUTH_KEY_ALGO: ECDSA P-384 with SHA-384.
const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Curve ID of P-384 in the public-key structure.
const CURVE_P384: u32 = 2;
/// Offsets in ID_AUTH_INFO.
const OFF_ID_BLOCK_SIG: usize = 0x040;
const OFF_ID_KEY: usize = 0x240;
const OFF_ID_KEY_SIG: usize = 0x680;
const OFF_AUTHOR_KEY: usize = 0x880;
/// R and S are each 72 bytes (576 bits), little-endian, in a 512-byte field.
const SIG_COMPONENT: usize = 0x48;

/// Why an ID block record cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("ID block: {0}")]
pub struct IdBlockError(String);

fn bad(msg: impl Into<String>) -> IdBlockError {
    IdBlockError(msg.into())
}

/// What the ID block states about the launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlockParams {
    /// The launch digest the secure processor must compute (LD).
    pub measurement: [u8; 48],
    /// FAMILY_ID, copied into the attestation report.
    pub family_id: [u8; 16],
    /// IMAGE_ID, copied into the attestation report.
    pub image_id: [u8; 16],
    /// GUEST_SVN, copied into the attestation report.
    pub guest_svn: u32,
    /// The guest policy; must equal the launch's (`sev-snp-guest,policy=`).
    pub policy: u64,
}

impl IdBlockParams {
    /// An ID block for `measurement` with QEMU's default policy and zero FAMILY_ID,
    /// IMAGE_ID and GUEST_SVN (what cocos-hal and the manager sign).
    pub fn for_digest(measurement: [u8; 48]) -> Self {
        IdBlockParams {
            measurement,
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            policy: DEFAULT_POLICY,
        }
    }

    /// The 96-byte ID block (VERSION 1).
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut b = [0u8; ID_BLOCK_SIZE];
        let fields: [(usize, &[u8]); 6] = [
            (0x00, &self.measurement),
            (0x30, &self.family_id),
            (0x40, &self.image_id),
            (0x50, &1u32.to_le_bytes()),
            (0x54, &self.guest_svn.to_le_bytes()),
            (0x58, &self.policy.to_le_bytes()),
        ];
        for (off, v) in fields {
            if let Some(dst) = b.get_mut(off..off + v.len()) {
                dst.copy_from_slice(v);
            }
        }
        b
    }
}

impl IdBlockParams {
    /// Reads a 96-byte ID block; VERSION must be 1.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdBlockError> {
        let field = |off: usize, len: usize| {
            b.get(off..off + len)
                .ok_or_else(|| bad(format!("{} bytes, expected {ID_BLOCK_SIZE}", b.len())))
        };
        if b.len() != ID_BLOCK_SIZE {
            return Err(bad(format!("{} bytes, expected {ID_BLOCK_SIZE}", b.len())));
        }
        let arr =
            |off, len| -> Result<Vec<u8>, IdBlockError> { field(off, len).map(<[u8]>::to_vec) };
        let u32_at = |off| -> Result<u32, IdBlockError> {
            let v: [u8; 4] = field(off, 4)?.try_into().map_err(|_| bad("short field"))?;
            Ok(u32::from_le_bytes(v))
        };
        let version = u32_at(0x50)?;
        if version != 1 {
            return Err(bad(format!("VERSION {version}, expected 1")));
        }
        let policy: [u8; 8] = field(0x58, 8)?.try_into().map_err(|_| bad("short field"))?;
        Ok(IdBlockParams {
            measurement: arr(0, 48)?.try_into().map_err(|_| bad("short field"))?,
            family_id: arr(0x30, 16)?.try_into().map_err(|_| bad("short field"))?,
            image_id: arr(0x40, 16)?.try_into().map_err(|_| bad("short field"))?,
            guest_svn: u32_at(0x54)?,
            policy: u64::from_le_bytes(policy),
        })
    }
}

/// A signed ID block, ready for QEMU and for a verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdBlock {
    /// The 96-byte ID block.
    pub block: [u8; ID_BLOCK_SIZE],
    /// The 4096-byte ID authentication information.
    pub auth: Vec<u8>,
    /// SHA-384 of the ID key structure: the report's ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key structure: the report's AUTHOR_KEY_DIGEST (with
    /// `author-key-enabled=on`).
    pub author_key_digest: Option<[u8; 48]>,
}

impl SignedIdBlock {
    /// Signs `params` with the ID key, and the ID key with the author key if given.
    pub fn create(
        params: &IdBlockParams,
        id_key: &SigningKey,
        author_key: Option<&SigningKey>,
    ) -> Result<Self, KeyError> {
        let block = params.to_bytes();
        let mut auth = vec![0u8; ID_AUTH_SIZE];
        let id_pub = public_key_struct(id_key)?;
        put(&mut auth, 0x000, &ALGO_ECDSA_P384_SHA384.to_le_bytes());
        put(
            &mut auth,
            OFF_ID_BLOCK_SIG,
            &signature_struct(id_key, &block)?,
        );
        put(&mut auth, OFF_ID_KEY, &id_pub);
        let mut author_key_digest = None;
        if let Some(author) = author_key {
            let author_pub = public_key_struct(author)?;
            put(&mut auth, 0x004, &ALGO_ECDSA_P384_SHA384.to_le_bytes());
            put(
                &mut auth,
                OFF_ID_KEY_SIG,
                &signature_struct(author, &id_pub)?,
            );
            put(&mut auth, OFF_AUTHOR_KEY, &author_pub);
            author_key_digest = Some(sha384(&author_pub));
        }
        Ok(SignedIdBlock {
            block,
            auth,
            id_key_digest: sha384(&id_pub),
            author_key_digest,
        })
    }

    /// Rebuilds a signed ID block from its two structures; the key digests are
    /// computed from the key structures the bytes carry, not taken from anyone's word.
    pub fn from_parts(
        block: &[u8],
        auth: &[u8],
        author_key_enabled: bool,
    ) -> Result<Self, IdBlockError> {
        IdBlockParams::from_bytes(block)?;
        let block: [u8; ID_BLOCK_SIZE] = block.try_into().map_err(|_| bad("ID block size"))?;
        if auth.len() != ID_AUTH_SIZE {
            return Err(bad(format!(
                "ID auth {} bytes, expected {ID_AUTH_SIZE}",
                auth.len()
            )));
        }
        let key_at = |off: usize| {
            auth.get(off..off + PUBKEY_SIZE)
                .ok_or_else(|| bad("ID auth size"))
        };
        let id_key = key_at(OFF_ID_KEY)?;
        if id_key.iter().all(|&b| b == 0) {
            return Err(bad("ID auth has no ID key"));
        }
        let author = key_at(OFF_AUTHOR_KEY)?;
        if author_key_enabled && author.iter().all(|&b| b == 0) {
            return Err(bad("author key enabled but ID auth has no author key"));
        }
        Ok(SignedIdBlock {
            block,
            auth: auth.to_vec(),
            id_key_digest: sha384(id_key),
            author_key_digest: author_key_enabled.then(|| sha384(author)),
        })
    }

    /// The launch facts the block states.
    pub fn params(&self) -> Result<IdBlockParams, IdBlockError> {
        IdBlockParams::from_bytes(&self.block)
    }

    /// The JSON record `cocos-measure id-block --json` and `cocos-hal build --id-key`
    /// write: the block's fields in hex, both structures in base64, the key digests.
    pub fn to_json(&self, label: Option<&str>) -> Result<Value, IdBlockError> {
        let p = self.params()?;
        Ok(json!({
            "label": label,
            "measurement": hex::encode(p.measurement),
            "family_id": hex::encode(p.family_id),
            "image_id": hex::encode(p.image_id),
            "guest_svn": p.guest_svn,
            "policy": format!("{:#x}", p.policy),
            "id_block": self.block_b64(),
            "id_auth": self.auth_b64(),
            "author_key_enabled": self.author_key_digest.is_some(),
            "id_key_digest": hex::encode(self.id_key_digest),
            "author_key_digest": self.author_key_digest.map(hex::encode),
            "qemu": self.qemu_properties(),
        }))
    }

    /// Reads a [`to_json`](Self::to_json) record back from its base64 structures
    /// (the hex fields are for people; the bytes are what count).
    pub fn from_json(v: &Value) -> Result<Self, IdBlockError> {
        let b64 = |k: &str| -> Result<Vec<u8>, IdBlockError> {
            let s = v
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("no \"{k}\"")))?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| bad(format!("{k}: not base64: {e}")))
        };
        let enabled = match v.get("author_key_enabled") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!("author_key_enabled: {other} is not a boolean")))
            }
        };
        Self::from_parts(&b64("id_block")?, &b64("id_auth")?, enabled)
    }

    /// Base64 of the ID block (QEMU `id-block=`).
    pub fn block_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.block)
    }

    /// Base64 of the ID authentication information (QEMU `id-auth=`).
    pub fn auth_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.auth)
    }

    /// The `sev-snp-guest` object properties: `id-block=…,id-auth=…` and, when an author
    /// key signed the ID key, `,author-key-enabled=on`.
    pub fn qemu_properties(&self) -> String {
        let mut s = format!("id-block={},id-auth={}", self.block_b64(), self.auth_b64());
        if self.author_key_digest.is_some() {
            s.push_str(",author-key-enabled=on");
        }
        s
    }
}

fn put(buf: &mut [u8], off: usize, v: &[u8]) {
    if let Some(dst) = buf.get_mut(off..off + v.len()) {
        dst.copy_from_slice(v);
    }
}

fn sha384(b: &[u8]) -> [u8; 48] {
    Sha384::digest(b).into()
}

/// Big-endian bytes to the ABI's 72-byte little-endian, zero-extended form.
fn le72(be: &[u8]) -> [u8; SIG_COMPONENT] {
    let mut out = [0u8; SIG_COMPONENT];
    for (dst, src) in out.iter_mut().zip(be.iter().rev()) {
        *dst = *src;
    }
    out
}

/// The 1028-byte public-key structure: CURVE, QX, QY.
pub fn public_key_struct(key: &SigningKey) -> Result<[u8; PUBKEY_SIZE], KeyError> {
    let (x, y) = key.public_xy()?;
    let mut out = [0u8; PUBKEY_SIZE];
    put(&mut out, 0x00, &CURVE_P384.to_le_bytes());
    put(&mut out, 0x04, &le72(&x));
    put(&mut out, 0x4c, &le72(&y));
    Ok(out)
}

/// The 512-byte signature structure: ECDSA P-384/SHA-384 over `data`, R and S.
fn signature_struct(key: &SigningKey, data: &[u8]) -> Result<[u8; 0x200], KeyError> {
    let (r, s) = key.sign(data)?;
    let mut out = [0u8; 0x200];
    put(&mut out, 0x00, &le72(&r));
    put(&mut out, SIG_COMPONENT, &le72(&s));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn block_layout_from_the_abi_table() {
        let p = IdBlockParams {
            measurement: [0xaa; 48],
            family_id: [0x11; 16],
            image_id: [0x22; 16],
            guest_svn: 0x0102_0304,
            policy: DEFAULT_POLICY,
        };
        let b = p.to_bytes();
        assert_eq!(&b[..48], &[0xaa; 48]);
        assert_eq!(&b[0x30..0x40], &[0x11; 16]);
        assert_eq!(&b[0x40..0x50], &[0x22; 16]);
        assert_eq!(&b[0x50..0x54], &[1, 0, 0, 0]);
        assert_eq!(&b[0x54..0x58], &[4, 3, 2, 1]);
        assert_eq!(&b[0x58..0x60], &[0, 0, 3, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn block_bytes_round_trip_and_refusals() {
        let p = IdBlockParams {
            measurement: [3; 48],
            family_id: [4; 16],
            image_id: [5; 16],
            guest_svn: 9,
            policy: DEFAULT_POLICY,
        };
        assert_eq!(IdBlockParams::from_bytes(&p.to_bytes()).unwrap(), p);
        let mut b = p.to_bytes();
        b[0x50] = 2;
        assert!(IdBlockParams::from_bytes(&b).is_err());
        assert!(IdBlockParams::from_bytes(&b[..95]).is_err());
        assert!(SignedIdBlock::from_parts(&p.to_bytes(), &[0; ID_AUTH_SIZE], false).is_err());
        assert!(SignedIdBlock::from_parts(&p.to_bytes(), &[1; 100], false).is_err());
        for bad in [
            json!({}),
            json!({"id_block": "!!", "id_auth": ""}),
            json!({"id_block": "AAAA", "id_auth": "AAAA", "author_key_enabled": "yes"}),
        ] {
            assert!(SignedIdBlock::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn le72_reverses_and_pads() {
        let v = le72(&[1, 2, 3]);
        assert_eq!(&v[..3], &[3, 2, 1]);
        assert!(v[3..].iter().all(|&b| b == 0));
    }
}
