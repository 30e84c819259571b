//! Hellos: how a host that knows only a member's address learns its public key (which a
//! Noise `IK` initiator needs). A request and its reply have the same length, so a hello
//! amplifies nothing; admission is still the handshake's business.
//!
//! With a mesh password the hello is sealed (ChaCha20-Poly1305 under a key derived from
//! the mesh PSK with HKDF-SHA256, a random 64-bit nonce, the kind byte authenticated):
//! `kind | nonce (8) | public key (32, encrypted) | tag (16)`, 57 bytes. So nothing on the
//! underlay is in clear, not even who the members are, and a host without the password
//! learns no member's key. Without a password (members listed by key) the hello is
//! `kind | public key`, 33 bytes: public keys are not secret, and such a mesh has no
//! shared secret to seal with. A host with both a password and listed keys accepts both
//! forms (a listed host need not know the password) and answers in the form it was
//! asked in.

use super::aead::{random, Key};
use super::wire::TAG_LEN;

/// A request for the member's key.
pub const HELLO_REQ: u8 = 0x10;
/// The answer.
pub const HELLO_RESP: u8 = 0x11;
/// Length of a plain hello.
pub const PLAIN_LEN: usize = 1 + 32;
/// Length of a sealed hello.
pub const SEALED_LEN: usize = 1 + 8 + 32 + TAG_LEN;

/// The key hellos are sealed with.
pub struct HelloKey(Key);

impl HelloKey {
    /// Derives the hello key from the mesh PSK (HKDF-SHA256, its own label, so it is
    /// independent of the PSK's use in the Noise handshake).
    pub fn from_psk(psk: &[u8; 32]) -> Option<HelloKey> {
        use ring::hkdf::{Salt, HKDF_SHA256};
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = Salt::new(HKDF_SHA256, b"vswitchd mesh hello v1").extract(psk);
        let okm = prk.expand(&[b"hello key"], Len32).ok()?;
        let mut k = [0u8; 32];
        okm.fill(&mut k).ok()?;
        Key::new(&k).map(HelloKey)
    }
}

/// Why a hello was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// Neither length, or an unknown kind.
    Malformed,
    /// A plain hello where only sealed ones are taken.
    PlainRefused,
    /// A sealed hello that does not open (another password) or that we cannot open (no
    /// password here).
    BadSeal,
}

/// A hello read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub kind: u8,
    pub public: [u8; 32],
    /// It came sealed (so the reply goes sealed).
    pub sealed: bool,
}

/// Writes a hello of `kind` carrying `public` into `out`, sealed when `key` is given;
/// returns its length. `out` must hold [`SEALED_LEN`] bytes. `None` only if the OS
/// random source fails.
pub fn write(kind: u8, public: &[u8; 32], key: Option<&HelloKey>, out: &mut [u8; SEALED_LEN]) -> Option<usize> {
    out[0] = kind;
    let Some(k) = key else {
        out[1..PLAIN_LEN].copy_from_slice(public);
        return Some(PLAIN_LEN);
    };
    let mut n = [0u8; 8];
    random(&mut n).ok()?;
    out[1..9].copy_from_slice(&n);
    out[9..41].copy_from_slice(public);
    let tag = k.0.seal(u64::from_le_bytes(n), &[kind], &mut out[9..41])?;
    out[41..].copy_from_slice(&tag);
    Some(SEALED_LEN)
}

/// Reads a hello. `key`: this host's hello key (it has a password); `accept_plain`:
/// plain hellos are taken (no password, or listed keys).
pub fn read(msg: &[u8], key: Option<&HelloKey>, accept_plain: bool) -> Result<Hello, HelloError> {
    let kind = *msg.first().ok_or(HelloError::Malformed)?;
    if kind != HELLO_REQ && kind != HELLO_RESP {
        return Err(HelloError::Malformed);
    }
    match msg.len() {
        PLAIN_LEN if accept_plain => {
            let mut public = [0u8; 32];
            public.copy_from_slice(&msg[1..]);
            Ok(Hello { kind, public, sealed: false })
        }
        PLAIN_LEN => Err(HelloError::PlainRefused),
        SEALED_LEN => {
            let k = key.ok_or(HelloError::BadSeal)?;
            let mut n = [0u8; 8];
            n.copy_from_slice(&msg[1..9]);
            let mut public = [0u8; 32];
            public.copy_from_slice(&msg[9..41]);
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&msg[41..]);
            if !k.0.open(u64::from_le_bytes(n), &[kind], &mut public, &tag) {
                return Err(HelloError::BadSeal);
            }
            Ok(Hello { kind, public, sealed: true })
        }
        _ => Err(HelloError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_hellos_open_only_with_the_same_password() {
        let right = HelloKey::from_psk(&crate::mesh::psk_from_password("right")).unwrap();
        let wrong = HelloKey::from_psk(&crate::mesh::psk_from_password("wrong")).unwrap();
        let public = [7u8; 32];
        let mut out = [0u8; SEALED_LEN];
        let n = write(HELLO_REQ, &public, Some(&right), &mut out).unwrap();
        assert_eq!(n, SEALED_LEN);
        assert!(!out.windows(32).any(|w| w == public), "the key is not in clear");
        assert_eq!(read(&out, Some(&right), false), Ok(Hello { kind: HELLO_REQ, public, sealed: true }));
        assert_eq!(read(&out, Some(&wrong), true), Err(HelloError::BadSeal));
        assert_eq!(read(&out, None, true), Err(HelloError::BadSeal));
        // The kind is authenticated.
        let mut flipped = out;
        flipped[0] = HELLO_RESP;
        assert_eq!(read(&flipped, Some(&right), false), Err(HelloError::BadSeal));
        // Two hellos differ (random nonce).
        let mut again = [0u8; SEALED_LEN];
        write(HELLO_REQ, &public, Some(&right), &mut again).unwrap();
        assert_ne!(out, again);
    }

    #[test]
    fn plain_hellos_only_where_accepted() {
        let public = [9u8; 32];
        let mut out = [0u8; SEALED_LEN];
        let n = write(HELLO_RESP, &public, None, &mut out).unwrap();
        assert_eq!(n, PLAIN_LEN);
        assert_eq!(read(&out[..n], None, true), Ok(Hello { kind: HELLO_RESP, public, sealed: false }));
        assert_eq!(read(&out[..n], None, false), Err(HelloError::PlainRefused));
        assert_eq!(read(&out[..n - 1], None, true), Err(HelloError::Malformed));
        assert_eq!(read(&[], None, true), Err(HelloError::Malformed));
        let mut bad = out;
        bad[0] = 0x42;
        assert_eq!(read(&bad[..n], None, true), Err(HelloError::Malformed));
    }
}
