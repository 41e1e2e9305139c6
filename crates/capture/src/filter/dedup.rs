//! Archive each queued message once, even when the MTA delivers it to the
//! filter again.
//!
//! Postfix retries a content-filter delivery when the filter answered 4xx
//! or the relay failed after the archive was written. The ledger remembers
//! "queue id + recipients + BLAKE3 of the content" for every delivery
//! archived; a retry with the same key is passed on without a second copy.
//! The recipients are part of the key because Postfix splits one queued
//! message into several deliveries (over the transport's recipient limit,
//! or recipients retried on their own): each such delivery is archived. The queue id comes
//! from XFORWARD IDENT (Postfix sends it with `smtp_send_xforward_command =
//! yes`, which the snippet sets); without one, nothing is deduplicated.
//!
//! One empty file per key, under two levels of hex directories; entries
//! older than [`KEEP`] are pruned (Postfix gives up on a message after 5
//! days by default). A crash between writing the archive and recording the
//! key can still leave one duplicate: recorded after, so never a loss.

use mailkeep_envelope::RawMessage;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long keys are kept.
pub const KEEP: Duration = Duration::from_secs(8 * 24 * 3600);

/// The ledger directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// A ledger in `dir` (created when needed).
    pub fn new(dir: &Path) -> Ledger {
        Ledger {
            dir: dir.to_path_buf(),
        }
    }

    /// The key of one delivery.
    pub fn key(queue_id: &str, recipients: &[String], message: &RawMessage) -> io::Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(queue_id.as_bytes());
        h.update(&[0]);
        let mut rcpts: Vec<String> = recipients.iter().map(|r| r.to_lowercase()).collect();
        rcpts.sort();
        rcpts.dedup();
        for r in &rcpts {
            h.update(r.as_bytes());
            h.update(&[0]);
        }
        h.update(&[0]);
        io::copy(&mut message.reader(), &mut h)?;
        Ok(h.finalize().to_hex().to_string())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    /// True when the key was recorded.
    pub fn seen(&self, key: &str) -> bool {
        self.path(key).exists()
    }

    /// Records a key durably.
    pub fn record(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        mailkeep_destinations::durable::create_dir_all_durable(&dir)?;
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        mailkeep_destinations::durable::fsync_dir(&dir)
    }

    /// Removes keys older than [`KEEP`]; returns how many.
    pub fn prune(&self) -> usize {
        let Ok(top) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for sub in top.flatten() {
            let Ok(entries) = fs::read_dir(sub.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > KEEP);
                if old && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_recognises() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(&dir.path().join("ledger"));
        let m = RawMessage::from_bytes(b"Subject: x\r\n\r\nbody\r\n".to_vec());
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k = Ledger::key("4ABC", &r(&["b@y", "a@x"]), &m).unwrap();
        assert_eq!(
            k,
            Ledger::key("4ABC", &r(&["A@x", "b@y"]), &m).unwrap(),
            "a set, any case"
        );
        assert_ne!(
            k,
            Ledger::key("4ABD", &r(&["a@x", "b@y"]), &m).unwrap(),
            "the queue id counts"
        );
        assert_ne!(
            k,
            Ledger::key("4ABC", &r(&["c@z"]), &m).unwrap(),
            "the recipients count"
        );
        assert_ne!(
            k,
            Ledger::key(
                "4ABC",
                &r(&["a@x", "b@y"]),
                &RawMessage::from_bytes(b"other".to_vec())
            )
            .unwrap(),
            "the content counts"
        );
        assert!(!ledger.seen(&k));
        ledger.record(&k).unwrap();
        ledger.record(&k).unwrap();
        assert!(ledger.seen(&k));
        assert_eq!(ledger.prune(), 0, "fresh keys stay");
    }
}
