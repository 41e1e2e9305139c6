//! Tamper evidence: every catalog record joins a hash chain.
//!
//! Entry *n* stores `hash_n = BLAKE3("mailkeep-chain-v1" ‖ hash_{n-1} ‖
//! record_n)`, where `record_n` is the canonical JSON of the delivery
//! (its id, the content's BLAKE3 and the whole envelope). Changing any
//! field, deleting a row or swapping two rows breaks the chain at that
//! entry; a checkpoint (the head hash at some entry, signed and kept
//! elsewhere) makes rewriting the whole chain detectable too.

use serde::{Deserialize, Serialize};

/// One delivery as the chain records it: the envelope is the truth, so all
/// of it is here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Record format version.
    pub v: u32,
    /// Chain position and delivery id (1, 2, ...).
    pub id: i64,
    /// `delivery` (a `delete` kind joins with retention).
    pub kind: String,
    /// BLAKE3 of the message bytes, hex.
    pub content: String,
    /// Message size in bytes.
    pub size: u64,
    /// When it was captured, microseconds since the Unix epoch (UTC).
    pub received: i64,
    /// milter, filter, pipe or import.
    pub capture: String,
    /// Envelope sender; `None` is the null sender `<>`.
    pub sender: Option<String>,
    /// Every envelope recipient, Bcc included, in order.
    pub recipients: Vec<String>,
    /// SASL login of the submitter.
    pub login: Option<String>,
    /// SASL method.
    pub login_method: Option<String>,
    /// MTA queue id.
    pub queue_id: Option<String>,
    /// Client address.
    pub client_address: Option<String>,
    /// Client port.
    pub client_port: Option<u16>,
    /// Client host name.
    pub client_hostname: Option<String>,
    /// HELO/EHLO name.
    pub client_helo: Option<String>,
    /// TLS description.
    pub tls: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// MAIL FROM parameters.
    pub sender_params: Vec<String>,
}

impl DeliveryRecord {
    /// The canonical bytes the chain hashes: serde_json of the struct, whose
    /// field order is fixed by the declaration above.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a plain struct always serialises")
    }
}

/// The hash before the first entry, specific to one store.
pub fn genesis(store_id: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"mailkeep-chain-genesis-v1");
    h.update(store_id.as_bytes());
    *h.finalize().as_bytes()
}

/// `hash_n` from `hash_{n-1}` and the canonical record.
pub fn link(prev: &[u8; 32], canonical: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"mailkeep-chain-v1");
    h.update(prev);
    h.update(canonical.as_bytes());
    *h.finalize().as_bytes()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A chain entry that records a removal (expiry by a retention policy, or
/// an erasure request): which delivery, its content and its chain hash,
/// and why. The removed delivery's own row keeps its place, its `prev` and
/// its `hash`, so the chain still links and a checkpoint taken before the
/// removal still matches; its record (the envelope: personal data) is
/// replaced by a [`DeletedMarker`] naming this entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneRecord {
    /// Record format version.
    pub v: u32,
    /// Chain position.
    pub id: i64,
    /// `tombstone`.
    pub kind: String,
    /// The delivery removed.
    pub deleted: i64,
    /// Its chain hash, hex (what checkpoints recorded).
    pub deleted_hash: String,
    /// BLAKE3 of its message, hex.
    pub content: String,
    /// The policy or request that removed it.
    pub reason: String,
    /// When, microseconds since the Unix epoch (UTC).
    pub time: i64,
}

impl TombstoneRecord {
    /// The canonical bytes the chain hashes.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a plain struct always serialises")
    }
}

/// What a removed delivery's row holds instead of its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedMarker {
    /// Format version.
    pub v: u32,
    /// The row's id.
    pub id: i64,
    /// `deleted`.
    pub kind: String,
    /// The tombstone entry that records why.
    pub tombstone: i64,
}
