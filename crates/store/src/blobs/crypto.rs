//! Encryption at rest: XChaCha20-Poly1305 over the compressed bytes.
//!
//! Keys are 32 random bytes kept in a file as 64 hex digits. Each key has a
//! short id derived from it (never the key itself), recorded in every
//! record and segment, so old segments stay readable after a rotation as
//! long as their key is still listed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use std::fmt;
use std::path::Path;

/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Bytes of an XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;

/// A key's public name: the first 8 bytes of a BLAKE3 key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The id written for unencrypted records.
    pub const NONE: KeyId = KeyId([0; KEY_ID_LEN]);

    /// Hex form, as stored in the catalog.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One encryption key.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The key file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("{0}: a key file must hold exactly 64 hex digits (32 random bytes), e.g. from `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`")]
    Format(String),
}

/// Reads a 32-byte secret written as 64 hex digits (surrounding whitespace
/// allowed).
pub fn read_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_hex32(text.trim()).ok_or_else(|| KeyError::Format(path.display().to_string()))
}

/// Parses exactly 64 hex digits.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl Key {
    /// A key from its 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Key {
        let derived = blake3::derive_key("mailkeep 2026-11 store key id", secret);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&derived[..KEY_ID_LEN]);
        Key {
            id: KeyId(id),
            cipher: XChaCha20Poly1305::new(secret.into()),
        }
    }

    /// Loads a key file (see [`read_secret`]).
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        Ok(Key::from_bytes(&read_secret(path)?))
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Encrypts `plain`, binding `aad`; returns the fresh random nonce and
    /// the ciphertext with its tag.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
        let nonce = Key::fresh_nonce();
        // Encryption fails only for inputs beyond 256 GiB, far above any
        // message size limit.
        let sealed = self.seal_with(&nonce, plain, aad);
        (nonce, sealed)
    }

    /// A fresh random nonce.
    pub fn fresh_nonce() -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        nonce
    }

    /// Encrypts `plain` under a nonce the caller guarantees is used once
    /// with this key (a chunk of a streamed record: see `record`).
    pub fn seal_with(&self, nonce: &[u8; NONCE_LEN], plain: &[u8], aad: &[u8]) -> Vec<u8> {
        self.cipher
            .encrypt(XNonce::from_slice(nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 encryption of a bounded chunk")
    }

    /// Decrypts and authenticates; `None` when the bytes or the additional
    /// data were altered, or the key is wrong.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()
    }
}

/// The key that encrypts new records plus every key that can still read.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    current: Option<Key>,
    all: Vec<Key>,
}

impl Keyring {
    /// A keyring; `current` (if any) also reads.
    pub fn new(current: Option<Key>, old: Vec<Key>) -> Keyring {
        let mut all = old;
        if let Some(k) = &current {
            all.push(k.clone());
        }
        Keyring { current, all }
    }

    /// The key for new records; `None` means records are not encrypted.
    pub fn current(&self) -> Option<&Key> {
        self.current.as_ref()
    }

    /// The key with this id.
    pub fn get(&self, id: KeyId) -> Option<&Key> {
        self.all.iter().find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = Key::from_bytes(&[7u8; 32]);
        let (nonce, sealed) = k.seal(b"hello", b"aad");
        assert_eq!(
            k.open(&nonce, &sealed, b"aad").as_deref(),
            Some(&b"hello"[..])
        );
        assert!(k.open(&nonce, &sealed, b"aaX").is_none());
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(k.open(&nonce, &bad, b"aad").is_none());
        let other = Key::from_bytes(&[8u8; 32]);
        assert_ne!(k.id(), other.id());
        assert!(other.open(&nonce, &sealed, b"aad").is_none());
    }

    #[test]
    fn hex_keys() {
        assert_eq!(parse_hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert!(parse_hex32(&"ab".repeat(31)).is_none());
        assert!(parse_hex32(&"zz".repeat(32)).is_none());
        assert!(parse_hex32(&"é".repeat(32)).is_none());
    }
}
