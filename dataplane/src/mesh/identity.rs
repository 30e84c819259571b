//! A node's static X25519 key pair, the mesh password → PSK derivation, and the base64
//! text form of keys (what `vswitchctl mesh id` prints and key files hold).
//!
//! Owns: key generation (OS randomness through `ring`), derivation of the public
//! key (`x25519-dalek`), and text encoding. The secret is zeroed when dropped
//! (`x25519_dalek::StaticSecret` zeroizes itself) and never printed by `Debug`.

use std::fmt;

use blake2::{Blake2s256, Digest};
use x25519_dalek::{PublicKey, StaticSecret};

use super::MeshError;

const LABEL_PSK: &[u8] = b"vswitchd-mesh-psk-v1--";

/// A node's long-term identity: an X25519 static secret and its public key.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Identity {
    /// A fresh random identity. Fails only if the OS has no randomness to give.
    pub fn generate() -> Result<Identity, MeshError> {
        let mut b = [0u8; 32];
        super::aead::random(&mut b)?;
        let id = Identity::from_bytes(b);
        b.fill(0);
        Ok(id)
    }

    /// The identity with this secret key (any 32 bytes are valid; X25519 clamps).
    pub fn from_bytes(secret: [u8; 32]) -> Identity {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Identity { secret, public }
    }

    /// The secret key bytes (for a key file; handle with care).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The static public key: this node's name in the mesh.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The public key as base64 (44 characters), the form `vswitchctl mesh id` shows.
    pub fn public_base64(&self) -> String {
        key_to_base64(&self.public)
    }

    /// The secret key as base64 (44 characters), the form a key file holds.
    pub fn secret_base64(&self) -> String {
        key_to_base64(&self.secret.to_bytes())
    }

    /// Reads an identity from the base64 form of its secret key.
    pub fn from_secret_base64(s: &str) -> Result<Identity, MeshError> {
        key_from_base64(s).map(Identity::from_bytes)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("public", &key_to_base64(&self.public)).finish()
    }
}

/// Derives the mesh pre-shared key from the mesh password (Weave Net's `--password`):
/// `BLAKE2s-256(label || password)`. A fast hash is enough here because Noise never shows
/// a passive observer anything to test a password guess against (the PSK is mixed after
/// two DH results the observer cannot compute); guessing needs a live handshake per guess,
/// which the responder rate-limits. Every host of a mesh must use the same password.
pub fn psk_from_password(password: &str) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(LABEL_PSK);
    h.update(password.as_bytes());
    h.finalize().into()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes a 32-byte key as standard padded base64 (RFC 4648 §4), 44 characters.
pub fn key_to_base64(key: &[u8; 32]) -> String {
    encode_base64(key)
}

/// Decodes a 32-byte key from standard padded base64 (surrounding whitespace allowed).
pub fn key_from_base64(s: &str) -> Result<[u8; 32], MeshError> {
    let v = decode_base64(s.trim()).ok_or(MeshError::BadKey)?;
    v.try_into().map_err(|_| MeshError::BadKey)
}

fn encode_base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = B64.iter().position(|&x| x == c)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Non-canonical encodings (stray bits under the padding) are refused.
        if bytes[3 - pad..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), enc);
            assert_eq!(decode_base64(enc).unwrap(), plain.as_bytes());
        }
        for bad in ["Zg=", "Z===", "Zh==", "Zg==Zg==", "Zm9*", "===="] {
            assert!(decode_base64(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn identity_text_round_trip() {
        let id = Identity::generate().unwrap();
        let text = id.public_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(key_from_base64(&text).unwrap(), id.public());
        let back = Identity::from_secret_base64(&format!(" {}\n", id.secret_base64())).unwrap();
        assert_eq!(back.public(), id.public());
        assert!(key_from_base64("AAAA").is_err());
        assert!(!format!("{id:?}").contains(&id.secret_base64()));
    }

    #[test]
    fn psk_depends_on_password() {
        assert_eq!(psk_from_password("s3cret"), psk_from_password("s3cret"));
        assert_ne!(psk_from_password("s3cret"), psk_from_password("s3cret!"));
    }
}
