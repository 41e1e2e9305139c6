//! One record of a segment: a fixed header, then the payload.
//!
//! ```text
//! magic "MKB1" | flags u8 | 3 zero bytes | raw length u64 LE | payload length u32 LE
//! | key id [8] | BLAKE3 of the raw message [32] | nonce [24] | payload
//! ```
//! The payload is the zstd-compressed message, then, when flag
//! [`ENCRYPTED`] is set, XChaCha20-Poly1305 sealed with the header up to the
//! nonce as additional data: a record cannot be moved under another hash
//! or length without failing authentication. Compress-then-encrypt, since
//! ciphertext does not compress.

use super::crypto::{Key, KeyId, Keyring, KEY_ID_LEN, NONCE_LEN};
use std::io::Read;

/// Record magic.
pub const MAGIC: &[u8; 4] = b"MKB1";
/// Header length in bytes.
pub const HEADER_LEN: usize = 4 + 1 + 3 + 8 + 4 + KEY_ID_LEN + 32 + NONCE_LEN;
/// Flag: the payload is zstd.
pub const ZSTD: u8 = 1;
/// Flag: the payload is sealed.
pub const ENCRYPTED: u8 = 2;
const AAD_LEN: usize = HEADER_LEN - NONCE_LEN;

/// Why a record could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Not a record (wrong magic, short, inconsistent lengths).
    #[error("not a valid record: {0}")]
    Malformed(&'static str),
    /// The record names a different message than the catalog.
    #[error("record holds {found}, catalog expects {expected}")]
    WrongHash {
        /// The hash the catalog expects.
        expected: String,
        /// The hash in the record header.
        found: String,
    },
    /// The key is not configured.
    #[error("record is encrypted with key {0}, which is not configured")]
    MissingKey(String),
    /// Authentication failed: the bytes were altered.
    #[error("record fails authentication (altered or wrong key)")]
    Authentication,
    /// zstd rejected the payload.
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    /// The bytes decompress but hash to something else: they were altered.
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    Content {
        /// Expected hash.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

/// Builds a record for `raw` whose BLAKE3 is `hash`.
pub fn encode(raw: &[u8], hash: &blake3::Hash, level: i32, key: Option<&Key>) -> Vec<u8> {
    // Compression of a bounded in-memory buffer only fails on allocation.
    let compressed = zstd::bulk::compress(raw, level).expect("zstd compression of a buffer");
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4] = ZSTD | if key.is_some() { ENCRYPTED } else { 0 };
    header[8..16].copy_from_slice(&(raw.len() as u64).to_le_bytes());
    header[20..28].copy_from_slice(&key.map(|k| k.id()).unwrap_or(KeyId::NONE).0);
    header[28..60].copy_from_slice(hash.as_bytes());
    // The payload length is part of the additional data, so it is set
    // before sealing: XChaCha20-Poly1305 adds a 16-byte tag.
    let payload_len = compressed.len() + if key.is_some() { 16 } else { 0 };
    header[16..20].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let payload = match key {
        Some(k) => {
            let (nonce, sealed) = k.seal(&compressed, &header[..AAD_LEN]);
            header[60..].copy_from_slice(&nonce);
            sealed
        }
        None => compressed,
    };
    debug_assert_eq!(payload.len(), payload_len);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    out
}

/// The fields of a record header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Flags.
    pub flags: u8,
    /// Message length.
    pub raw_len: u64,
    /// Payload length.
    pub payload_len: u32,
    /// Key id (zero when not encrypted).
    pub key: KeyId,
    /// BLAKE3 of the message.
    pub hash: [u8; 32],
}

/// Parses a header.
pub fn header(bytes: &[u8]) -> Result<Header, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Malformed("shorter than a header"));
    }
    if &bytes[..4] != MAGIC {
        return Err(RecordError::Malformed("bad magic"));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err(RecordError::Malformed("reserved bytes set"));
    }
    let flags = bytes[4];
    if flags & !(ZSTD | ENCRYPTED) != 0 || flags & ZSTD == 0 {
        return Err(RecordError::Malformed("unknown flags"));
    }
    let encrypted = flags & ENCRYPTED != 0;
    if !encrypted
        && bytes[20..28]
            .iter()
            .chain(&bytes[60..HEADER_LEN])
            .any(|b| *b != 0)
    {
        return Err(RecordError::Malformed(
            "key id or nonce on an unencrypted record",
        ));
    }
    let mut raw_len = [0u8; 8];
    raw_len.copy_from_slice(&bytes[8..16]);
    let mut payload_len = [0u8; 4];
    payload_len.copy_from_slice(&bytes[16..20]);
    let mut key = [0u8; KEY_ID_LEN];
    key.copy_from_slice(&bytes[20..28]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[28..60]);
    Ok(Header {
        flags,
        raw_len: u64::from_le_bytes(raw_len),
        payload_len: u32::from_le_bytes(payload_len),
        key: KeyId(key),
        hash,
    })
}

/// Reads a whole record back, checking every layer; returns the message.
pub fn decode(
    record: &[u8],
    expected: &blake3::Hash,
    keys: &Keyring,
) -> Result<Vec<u8>, RecordError> {
    let h = header(record)?;
    if record.len() != HEADER_LEN + h.payload_len as usize {
        return Err(RecordError::Malformed("length does not match header"));
    }
    if &h.hash != expected.as_bytes() {
        return Err(RecordError::WrongHash {
            expected: expected.to_hex().to_string(),
            found: blake3::Hash::from_bytes(h.hash).to_hex().to_string(),
        });
    }
    let payload = &record[HEADER_LEN..];
    let opened;
    let compressed: &[u8] = if h.flags & ENCRYPTED != 0 {
        let key = keys
            .get(h.key)
            .ok_or_else(|| RecordError::MissingKey(h.key.to_hex()))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&record[AAD_LEN..HEADER_LEN]);
        opened = key
            .open(&nonce, payload, &record[..AAD_LEN])
            .ok_or(RecordError::Authentication)?;
        &opened
    } else {
        payload
    };
    // Streamed with a cap one past the recorded length: a forged length
    // cannot make us allocate more than the payload really expands to.
    let mut raw = Vec::with_capacity(h.raw_len.min(16 << 20) as usize);
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| RecordError::Decompress(e.to_string()))?;
    decoder
        .take(h.raw_len.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| RecordError::Decompress(e.to_string()))?;
    let actual = blake3::hash(&raw);
    if &actual != expected || raw.len() as u64 != h.raw_len {
        return Err(RecordError::Content {
            expected: expected.to_hex().to_string(),
            actual: actual.to_hex().to_string(),
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_plain_and_encrypted() {
        let raw = b"Subject: x\n\nhello hello hello hello\n".repeat(50);
        let hash = blake3::hash(&raw);
        let key = Key::from_bytes(&[1; 32]);
        let ring = Keyring::new(Some(key.clone()), vec![]);
        for k in [None, Some(&key)] {
            let rec = encode(&raw, &hash, 3, k);
            assert!(rec.len() < raw.len() / 3, "compressed");
            assert_eq!(decode(&rec, &hash, &ring).unwrap(), raw);
            // Every single flipped byte is caught.
            for i in (0..rec.len()).step_by(7) {
                let mut bad = rec.clone();
                bad[i] ^= 0x40;
                assert!(
                    decode(&bad, &hash, &ring).is_err(),
                    "byte {i} flip undetected"
                );
            }
            assert!(decode(&rec[..rec.len() - 1], &hash, &ring).is_err());
        }
        let rec = encode(&raw, &hash, 3, Some(&key));
        assert_eq!(
            decode(&rec, &hash, &Keyring::default()),
            Err(RecordError::MissingKey(key.id().to_hex()))
        );
    }
}
