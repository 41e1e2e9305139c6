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
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
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
        // The message's own hash, not its bytes again: the one the store
        // and the filter's reply use (keys written before 2026-12-02
        // hashed the bytes here, so they no longer match; the ledger
        // forgets entries after 8 days anyway).
        h.update(message.hash()?.as_bytes());
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
    ///
    /// Only names of the ledger's own making are touched (two hex digits,
    /// then 64 hex digits starting with them, empty regular files), and
    /// nothing is followed: every directory is opened relative to its
    /// parent with `O_NOFOLLOW`, so a link planted in the ledger, or a
    /// ledger directory pointed at an archive by mistake, cannot make this
    /// delete anything else.
    pub fn prune(&self) -> usize {
        let Ok(top) = open_dir(rustix::fs::CWD, &self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for sub in dir_names(&top) {
            let Some(prefix) = sub
                .to_str()
                .ok()
                .filter(|n| n.len() == 2 && is_lower_hex(n))
            else {
                continue;
            };
            let Ok(subdir) = open_dir(&top, Path::new(prefix)) else {
                continue;
            };
            for name in dir_names(&subdir) {
                let own = name
                    .to_str()
                    .is_ok_and(|n| n.len() == 64 && n.starts_with(prefix) && is_lower_hex(n));
                if !own {
                    continue;
                }
                let Ok(st) = rustix::fs::statat(&subdir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                let regular_and_empty =
                    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_size == 0;
                let modified = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0));
                let old = now.duration_since(modified).is_ok_and(|age| age > KEEP);
                if regular_and_empty
                    && old
                    && rustix::fs::unlinkat(&subdir, &name, AtFlags::empty()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Opens a directory relative to `at` without following a link at its last
/// component.
fn open_dir<Fd: AsFd>(at: Fd, path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The entry names of an open directory, without `.` and `..`.
fn dir_names(dir: &OwnedFd) -> Vec<CString> {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect()
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

    fn make_old(path: &Path) {
        let old = SystemTime::now() - KEEP - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    /// The ledger's clean-up used to remove every file older than 8 days two
    /// levels down, following links: a `dedup_dir` pointed at an archive, or
    /// a link planted in it, deleted mail. Only its own old keys may go.
    #[test]
    fn prune_removes_only_its_own_old_keys_and_follows_no_link() {
        let top = tempfile::tempdir().unwrap();
        let ledger_dir = top.path().join("ledger");
        let ledger = Ledger::new(&ledger_dir);
        let m = RawMessage::from_bytes(b"Subject: x\r\n\r\nbody\r\n".to_vec());
        let key = Ledger::key("4ABC", &["a@x".to_string()], &m).unwrap();
        ledger.record(&key).unwrap();
        make_old(&ledger.path(&key));

        // An archive beside the ledger, with old files in two levels.
        let archive = top.path().join("archive");
        let victim_name = format!("{}{}", &key[..2], "0".repeat(62));
        let victims = [
            archive.join("bob/sent.mbox"),
            archive.join("segments/000001.seg"),
            archive.join(&key[..2]).join(&victim_name),
        ];
        for v in &victims {
            std::fs::create_dir_all(v.parent().unwrap()).unwrap();
            std::fs::write(v, b"mail").unwrap();
            make_old(v);
        }
        std::fs::write(archive.join("bob/empty"), b"").unwrap();
        make_old(&archive.join("bob/empty"));
        // Links planted in the ledger: a subdirectory and a key pointing out.
        std::os::unix::fs::symlink(archive.join(&key[..2]), ledger_dir.join("ff")).unwrap();
        std::os::unix::fs::symlink(archive.join("bob"), ledger_dir.join("bob")).unwrap();
        let sub = ledger_dir.join(&key[..2]);
        let link_key = format!("{}{}", &key[..2], "1".repeat(62));
        std::os::unix::fs::symlink(&victims[2], sub.join(link_key)).unwrap();

        assert_eq!(ledger.prune(), 1, "exactly the one old key");
        assert!(!ledger.seen(&key));
        for v in &victims {
            assert!(v.exists(), "{} was removed", v.display());
        }
        assert!(archive.join("bob/empty").exists());

        // The ledger directory itself pointed at the archive.
        assert_eq!(Ledger::new(&archive).prune(), 0);
        let linked = top.path().join("linked");
        std::os::unix::fs::symlink(&archive, &linked).unwrap();
        assert_eq!(Ledger::new(&linked).prune(), 0);
        for v in &victims {
            assert!(v.exists(), "{} was removed", v.display());
        }
        assert!(archive.join("bob/empty").exists());
    }
}
