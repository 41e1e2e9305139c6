//! `mailkeep verify` and `mailkeep checkpoint`.
//!
//! Verification walks the chain from the first delivery to the last,
//! recomputing every link, then re-reads and re-hashes every message's
//! record, then compares each segment's committed length with the file.
//! It does not stop at the first problem (an auditor wants the full
//! picture) but reports them in that order, so the first one named is the
//! earliest damage.
//!
//! A checkpoint is a small text file naming the chain head at some entry;
//! signed with an ed25519 key, it lets an auditor prove later that nothing
//! up to that entry was rewritten, even by someone who rebuilt the whole
//! chain consistently. It is also the only proof against cutting off the
//! newest entries: a shorter chain is still a valid chain. Verification
//! flags messages left without any delivery, which catches that cut when
//! the removed deliveries were the only ones of their messages, but only a
//! checkpoint kept elsewhere catches it in general.

use crate::catalog::{ChainRow, MessageRow};
use crate::chain::{self, DeliveryRecord};
use crate::{Store, StoreError};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::path::Path;

/// What verification is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Checking chain links.
    Chain,
    /// Re-reading message records.
    Messages,
}

/// The outcome of [`Store::verify`].
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Chain entries checked.
    pub deliveries: u64,
    /// Message records re-read.
    pub messages: u64,
    /// Message bytes re-hashed.
    pub bytes: u64,
    /// Problems, earliest first.
    pub problems: Vec<String>,
    /// The chain head: (entry, hash hex).
    pub head: Option<(i64, String)>,
    /// Deliveries removed by a retention policy or an erasure request, as
    /// their tombstones record it.
    pub removed: Vec<String>,
    /// Their ids, in the same order.
    pub removed_ids: Vec<i64>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Problems kept in full; beyond this only counted.
const MAX_PROBLEMS: usize = 1000;

impl Store {
    /// Totals to size a progress bar: (deliveries, messages).
    pub fn verify_sizes(&self) -> Result<(u64, u64), StoreError> {
        let t = self.totals()?;
        Ok((t.deliveries, t.messages))
    }

    /// Checks everything (see the module documentation).
    pub fn verify(&self, progress: &mut dyn FnMut(Phase, u64)) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let mut problems = Vec::new();
        let note = |problems: &mut Vec<String>, p: String| {
            if problems.len() < MAX_PROBLEMS {
                problems.push(p);
            }
        };
        let store_id = self.id();
        let mut prev = chain::genesis(&store_id);
        let mut expected_id = 1i64;
        // Removed deliveries, by id: (their chain hash, the tombstone that
        // says so, if one does).
        let mut removed: std::collections::BTreeMap<i64, (Vec<u8>, i64)> = Default::default();
        let mut tombstones: std::collections::BTreeMap<i64, chain::TombstoneRecord> =
            Default::default();
        {
            let catalog = self.catalog();
            catalog.chain(&mut |row: ChainRow| {
                report.deliveries += 1;
                progress(Phase::Chain, report.deliveries);
                if row.id != expected_id {
                    note(
                        &mut problems,
                        format!(
                            "delivery {}: chain entries {}..{} are missing (deleted rows)",
                            row.id,
                            expected_id,
                            row.id - 1
                        ),
                    );
                }
                expected_id = row.id + 1;
                if row.prev != prev {
                    note(
                        &mut problems,
                        format!(
                            "delivery {}: does not follow the previous entry (chain reordered or rewritten)",
                            row.id
                        ),
                    );
                }
                let kind = serde_json::from_str::<serde_json::Value>(&row.record)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string));
                if kind.as_deref() == Some("deleted") {
                    // Its record was removed on purpose: the link cannot be
                    // recomputed, but its place is kept (`prev` above) and a
                    // tombstone further on must name it with this hash.
                    match serde_json::from_str::<chain::DeletedMarker>(&row.record) {
                        Ok(m) if m.id == row.id => {
                            removed.insert(row.id, (row.hash.clone(), m.tombstone));
                        }
                        _ => note(
                            &mut problems,
                            format!("delivery {}: unreadable removal marker", row.id),
                        ),
                    }
                    prev = row.hash.as_slice().try_into().unwrap_or(prev);
                    return Ok(());
                }
                let computed = chain::link(&prev, &row.record);
                if kind.as_deref() == Some("tombstone") {
                    if row.hash != computed {
                        note(
                            &mut problems,
                            format!("entry {}: tombstone altered (hash does not match)", row.id),
                        );
                    }
                    match serde_json::from_str::<chain::TombstoneRecord>(&row.record) {
                        Ok(t) if t.id == row.id => {
                            tombstones.insert(row.id, t);
                        }
                        _ => note(
                            &mut problems,
                            format!("entry {}: unreadable tombstone", row.id),
                        ),
                    }
                    prev = row.hash.as_slice().try_into().unwrap_or(computed);
                    return Ok(());
                }
                if row.hash != computed {
                    note(
                        &mut problems,
                        format!("delivery {}: record altered (hash does not match)", row.id),
                    );
                }
                match serde_json::from_str::<DeliveryRecord>(&row.record) {
                    Ok(r) => {
                        if r.id != row.id {
                            note(
                                &mut problems,
                                format!(
                                    "delivery {}: record says it is entry {} (rows moved)",
                                    row.id, r.id
                                ),
                            );
                        }
                        if r.content != chain::hex(&row.content) {
                            note(
                                &mut problems,
                                format!("delivery {}: points at other content than its record", row.id),
                            );
                        }
                    }
                    Err(e) => note(
                        &mut problems,
                        format!("delivery {}: record unreadable: {e}", row.id),
                    ),
                }
                if !row.has_message {
                    note(
                        &mut problems,
                        format!(
                            "delivery {}: its message {} is missing from the catalog",
                            row.id,
                            chain::hex(&row.content)
                        ),
                    );
                }
                // Continue from the stored hash, so one altered record is
                // reported once, not as damage to everything after it.
                prev = row.hash.as_slice().try_into().unwrap_or(computed);
                Ok(())
            })?;
            if let Some((id, hash)) = catalog.head()? {
                report.head = Some((id, chain::hex(&hash)));
            }
        }
        // Every removed record must be named, with the hash it had, by the
        // tombstone it names: that is what tells a removal by policy or
        // request apart from a record deleted by hand.
        for (id, (hash, tomb)) in &removed {
            match tombstones.get(tomb) {
                Some(t) if t.deleted == *id && t.deleted_hash == chain::hex(hash) => {
                    let when = chrono::DateTime::from_timestamp_micros(t.time)
                        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default();
                    report.removed_ids.push(*id);
                    report.removed.push(format!(
                        "delivery {id} removed by {} on {when} (tombstone {tomb})",
                        t.reason
                    ));
                }
                _ => note(
                    &mut problems,
                    format!(
                        "delivery {id}: its record is gone and no tombstone names it \
                         (missing or tampered)"
                    ),
                ),
            }
        }
        // Message records: collected first so the catalog lock is not held
        // while reading gigabytes.
        let mut rows: Vec<MessageRow> = Vec::new();
        self.catalog().messages(&mut |m| {
            rows.push(m);
            Ok(())
        })?;
        for row in rows {
            report.messages += 1;
            progress(Phase::Messages, report.messages);
            match self.read_record(&row.hash, row.location) {
                Ok(bytes) => report.bytes += bytes.len() as u64,
                // Not being allowed to read is not damage: verification
                // cannot be done, and says so instead of reporting tampering.
                Err(e) if e.is_permission_denied() => return Err(e),
                Err(e) => {
                    // People look deliveries up by id (`show ID`); name them.
                    let ids = self.catalog().deliveries_of(&row.hash)?;
                    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                    note(
                        &mut problems,
                        format!(
                            "{} {}: its message {} (segment {} offset {}): {}",
                            if ids.len() == 1 {
                                "delivery"
                            } else {
                                "deliveries"
                            },
                            ids.join(", "),
                            chain::hex(&row.hash),
                            row.location.segment,
                            row.location.offset,
                            mailkeep_envelope::error_chain(&e)
                        ),
                    )
                }
            }
        }
        // A message is only ever stored with its first delivery, so one
        // without any lost its deliveries: the one way to shorten the chain
        // that the links alone cannot show is cutting its newest entries.
        for hash in self.catalog().orphans()? {
            note(
                &mut problems,
                format!(
                    "message {}: no delivery points at it (deliveries were removed; \
                     compare with a checkpoint)",
                    chain::hex(&hash)
                ),
            );
        }
        for (segment, committed) in self.catalog().segments()? {
            match self.blobs.len(segment) {
                Ok(len) if len < committed => note(
                    &mut problems,
                    format!("segment {segment}: truncated to {len} bytes, {committed} committed"),
                ),
                Ok(_) => {}
                Err(e) => note(&mut problems, format!("segment {segment}: {e}")),
            }
        }
        report.problems = problems;
        Ok(report)
    }

    /// The chain head now, as a checkpoint, signed when a signing key is
    /// configured.
    pub fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        self.checkpoint_with(None)
    }

    /// [`Store::checkpoint`] that also names the audit log's head
    /// (`(entry, hash hex)`), under the same signature.
    pub fn checkpoint_with(&self, audit: Option<(u64, String)>) -> Result<Checkpoint, StoreError> {
        let store_id = self.id();
        let head = self.catalog().head()?;
        let (entry, head) = head
            .map(|(id, h)| (id, chain::hex(&h)))
            .unwrap_or((0, chain::hex(&chain::genesis(&store_id))));
        let mut cp = Checkpoint {
            store: store_id,
            entry,
            head,
            audit,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            signature: None,
        };
        if let Some(path) = &self.config.signing_key_file {
            let seed = crate::blobs::crypto::read_secret(path)?;
            let key = SigningKey::from_bytes(&seed);
            let sig = key.sign(cp.body().as_bytes());
            cp.signature = Some((
                chain::hex(key.verifying_key().as_bytes()),
                chain::hex(&sig.to_bytes()),
            ));
        }
        Ok(cp)
    }

    /// Checks a checkpoint against this store: same store, and the chain
    /// entry it names still has the hash it recorded. Returns problems.
    pub fn check_checkpoint(&self, cp: &Checkpoint) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        if let Err(e) = cp.verify_signature(None) {
            problems.push(e);
        }
        if cp.store != self.id() {
            problems.push(format!(
                "checkpoint is for store {}, not {}",
                cp.store,
                self.id()
            ));
            return Ok(problems);
        }
        if cp.entry == 0 {
            return Ok(problems);
        }
        match self.catalog().chain_hash(cp.entry)? {
            None => problems.push(format!(
                "checkpoint names delivery {}, which is gone",
                cp.entry
            )),
            Some(h) if chain::hex(&h) != cp.head => problems.push(format!(
                "delivery {}: chain hash differs from the checkpoint of {} (history rewritten)",
                cp.entry, cp.time
            )),
            Some(_) => {}
        }
        Ok(problems)
    }
}

/// A chain head at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Store id.
    pub store: String,
    /// Chain entry (delivery id); 0 for an empty store.
    pub entry: i64,
    /// Hash of that entry, hex.
    pub head: String,
    /// The audit log's head then: (entry, hash hex). Checkpoints taken
    /// before the audit log existed have none.
    pub audit: Option<(u64, String)>,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// (public key hex, signature hex) over [`Checkpoint::body`].
    pub signature: Option<(String, String)>,
}

impl Checkpoint {
    /// The signed text.
    pub fn body(&self) -> String {
        let audit = match &self.audit {
            Some((entry, hash)) => format!("audit: {entry} {hash}\n"),
            None => String::new(),
        };
        format!(
            "mailkeep-checkpoint: 1\nstore: {}\nentry: {}\nhead: {}\n{audit}time: {}\n",
            self.store, self.entry, self.head, self.time
        )
    }

    /// The file form.
    pub fn to_text(&self) -> String {
        let mut t = self.body();
        if let Some((key, sig)) = &self.signature {
            t.push_str(&format!("signature: ed25519 {key} {sig}\n"));
        }
        t
    }

    /// Parses the file form.
    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                fields.insert(k, v);
            } else if !line.trim().is_empty() {
                return Err(format!("not a checkpoint line: {line:?}"));
            }
        }
        if fields.get("mailkeep-checkpoint") != Some(&"1") {
            return Err("not a mailkeep checkpoint (version 1)".into());
        }
        let get = |k: &str| {
            fields
                .get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("checkpoint lacks {k}"))
        };
        let signature = match fields.get("signature") {
            None => None,
            Some(s) => {
                let parts: Vec<&str> = s.split(' ').collect();
                match parts.as_slice() {
                    ["ed25519", key, sig] => Some((key.to_string(), sig.to_string())),
                    _ => return Err("unreadable signature line".into()),
                }
            }
        };
        let audit = match fields.get("audit") {
            None => None,
            Some(a) => match a.split_once(' ') {
                Some((entry, hash)) => Some((
                    entry
                        .parse()
                        .map_err(|_| "checkpoint audit entry is not a number".to_string())?,
                    hash.to_string(),
                )),
                None => return Err("unreadable audit line".into()),
            },
        };
        Ok(Checkpoint {
            audit,
            store: get("store")?,
            entry: get("entry")?
                .parse()
                .map_err(|_| "checkpoint entry is not a number".to_string())?,
            head: get("head")?,
            time: get("time")?,
            signature,
        })
    }

    /// Checks the signature (and, when given, that it was made by
    /// `expected_key`, hex). Unsigned checkpoints pass unless a key is
    /// expected.
    pub fn verify_signature(&self, expected_key: Option<&str>) -> Result<(), String> {
        let Some((key, sig)) = &self.signature else {
            return match expected_key {
                Some(_) => Err("checkpoint is not signed".into()),
                None => Ok(()),
            };
        };
        if let Some(k) = expected_key {
            if !k.eq_ignore_ascii_case(key) {
                return Err(format!("checkpoint is signed by {key}, not {k}"));
            }
        }
        let key_bytes = crate::parse_hex_hash(key).ok_or("bad public key in checkpoint")?;
        let vk =
            VerifyingKey::from_bytes(&key_bytes).map_err(|_| "bad public key in checkpoint")?;
        let sig_bytes = parse_hex64(sig).ok_or("bad signature in checkpoint")?;
        vk.verify(self.body().as_bytes(), &Signature::from_bytes(&sig_bytes))
            .map_err(|_| "checkpoint signature does not verify (altered)".to_string())
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Checkpoint::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn parse_hex64(text: &str) -> Option<[u8; 64]> {
    if text.len() != 128 || !text.is_ascii() {
        return None;
    }
    let a = crate::parse_hex_hash(&text[..64])?;
    let b = crate::parse_hex_hash(&text[64..])?;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&a);
    out[32..].copy_from_slice(&b);
    Some(out)
}
