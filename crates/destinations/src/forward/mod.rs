//! Archive copies as email (`archive = ["forward:ADDR"]`): the copy built
//! by [`copy`] is written durably into a spool before the capture path
//! says yes, and delivered to `[forward] relay` in the background by
//! [`Queue::run_once`], with exponential back-off. A copy is removed only
//! after the relay's 250 for its data; a crash between the two sends it
//! again, and the receiver can recognise it by its Message-ID.
//!
//! The spool is a Maildir (`tmp/` → `new/`, the same durable steps as a
//! Maildir destination). Each file is one JSON line (the SMTP envelope of
//! the copy) followed by the copy. Retry state lives beside it in
//! `state/NAME` and is rewritten freely: losing it only restarts the
//! back-off. `dropped/` keeps what an administrator dropped, with why.

pub mod copy;
pub mod smtp;

use crate::durable::{create_dir_all_durable, fsync_dir};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Retry delays start here and double per attempt...
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(60);
/// ...up to this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// A copy older than this is reported as stuck (never dropped silently).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 24 * 3600);

/// The MAIL FROM of archive copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopySender {
    /// The original envelope sender.
    Original,
    /// The null sender: nothing can bounce anywhere.
    Null,
}

/// Settings of `[forward]`.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The relay and how to talk to it.
    pub relay: smtp::RelayConfig,
    /// The spool directory.
    pub spool: PathBuf,
    /// MAIL FROM of the copies.
    pub sender: CopySender,
    /// Honour `X-Mailkeep-Archive-To:` set by the MTA.
    pub trust_archive_header: bool,
    /// First retry delay.
    pub retry_base: Duration,
    /// Age at which a copy is reported stuck.
    pub max_age: Duration,
    /// The secret behind the archive-copy marker.
    pub marker_key: [u8; 32],
}

/// The trusted header naming the archive recipient (Postfix
/// `header_checks`: `PREPEND X-Mailkeep-Archive-To: addr`).
pub const ARCHIVE_TO: &str = "X-Mailkeep-Archive-To";

/// The archive address for a message: the last `X-Mailkeep-Archive-To`
/// when trusted (the Postfix design: the last ARCHIVE action wins), else
/// the rule's.
pub fn archive_recipient(head: &[u8], rule_addr: &str, trust_header: bool) -> String {
    if trust_header {
        let mut last = None;
        for line in head.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                if line[..colon].eq_ignore_ascii_case(ARCHIVE_TO.as_bytes()) {
                    let v = String::from_utf8_lossy(&line[colon + 1..]);
                    let v = v
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .trim();
                    if v.contains('@') && !v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        last = Some(v.to_string());
                    }
                }
            }
        }
        if let Some(v) = last {
            return v;
        }
    }
    rule_addr.to_string()
}

/// The SMTP envelope of one spooled copy (the file's first line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpoolMeta {
    /// Copy id.
    pub id: String,
    /// Where to.
    pub rcpt: String,
    /// MAIL FROM; `None` is `<>`.
    pub mail_from: Option<String>,
    /// When it was spooled (Unix seconds).
    pub created: u64,
    /// Needs 8BITMIME.
    pub eight_bit: bool,
    /// Needs SMTPUTF8.
    pub smtputf8: bool,
}

/// Retry state of one copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetryState {
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not before this (Unix seconds).
    pub next: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The first line of a spool file.
pub fn spool_header(meta: &SpoolMeta) -> String {
    format!(
        "{}\n",
        serde_json::to_string(meta).expect("plain struct serialises")
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One spooled copy, as `mailkeep queue list` shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File name in `new/`: the queue id.
    pub name: String,
    /// Its envelope.
    pub meta: SpoolMeta,
    /// Retry state.
    pub state: RetryState,
    /// Size in bytes.
    pub size: u64,
}

impl Entry {
    /// Older than `max_age`.
    pub fn stuck(&self, max_age: Duration) -> bool {
        now().saturating_sub(self.meta.created) > max_age.as_secs()
    }
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    /// Delivered and removed.
    pub sent: usize,
    /// Failed temporarily (will retry).
    pub deferred: usize,
    /// Failed permanently (kept, reported; an administrator decides).
    pub failed: usize,
    /// Not due yet, or locked by another process.
    pub waiting: usize,
}

/// The spool.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// The spool at `dir`.
    pub fn new(dir: &Path) -> Queue {
        Queue {
            dir: dir.to_path_buf(),
        }
    }

    /// The spool directory (a Maildir).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.dir.join("state").join(name)
    }

    fn read_entry(&self, name: &str) -> io::Result<(Entry, fs::File)> {
        let path = self.dir.join("new").join(name);
        let mut f = fs::File::open(&path)?;
        let size = f.metadata()?.len();
        let mut first = Vec::new();
        let mut byte = [0u8; 1];
        while first.len() < 64 * 1024 {
            if f.read(&mut byte)? == 0 || byte[0] == b'\n' {
                break;
            }
            first.push(byte[0]);
        }
        let meta: SpoolMeta = serde_json::from_slice(&first).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        let state = fs::read(self.state_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok((
            Entry {
                name: name.to_string(),
                meta,
                state,
                size,
            },
            f,
        ))
    }

    /// Every spooled copy, oldest first.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let mut names: Vec<String> = match fs::read_dir(self.dir.join("new")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.read_entry(&n) {
                Ok((e, _)) => out.push(e),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("spool file {n}: {e}"),
            }
        }
        out.sort_by_key(|e| (e.meta.created, e.name.clone()));
        Ok(out)
    }

    fn save_state(&self, name: &str, state: &RetryState) {
        let dir = self.dir.join("state");
        let _ = fs::create_dir_all(&dir);
        let tmp = dir.join(format!(".{name}.tmp"));
        if fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default()).is_ok() {
            let _ = fs::rename(&tmp, self.state_path(name));
        }
    }

    /// Tries every copy that is due (all of them with `force`), one at a
    /// time; a copy another process is sending (flock) is left alone.
    pub fn run_once(&self, cfg: &ForwardConfig, force: bool) -> io::Result<PassReport> {
        let mut report = PassReport::default();
        for entry in self.list()? {
            if !force && entry.state.next > now() {
                report.waiting += 1;
                continue;
            }
            let Ok((entry, mut file)) = self.read_entry(&entry.name) else {
                continue;
            };
            if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
            {
                report.waiting += 1;
                continue;
            }
            // Another process may have sent and removed it meanwhile.
            if !self.dir.join("new").join(&entry.name).exists() {
                continue;
            }
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            let env = smtp::Envelope {
                mail_from: entry.meta.mail_from.as_deref(),
                rcpt: &entry.meta.rcpt,
                eight_bit: entry.meta.eight_bit,
                smtputf8: entry.meta.smtputf8,
            };
            match smtp::send(&cfg.relay, &env, &data) {
                Ok(reply) => {
                    let path = self.dir.join("new").join(&entry.name);
                    fs::remove_file(&path)?;
                    fsync_dir(&self.dir.join("new"))?;
                    let _ = fs::remove_file(self.state_path(&entry.name));
                    tracing::info!(copy = %entry.meta.id, rcpt = %entry.meta.rcpt,
                        relay = %cfg.relay.addr, %reply, "archive copy delivered");
                    report.sent += 1;
                }
                Err(e) => {
                    let permanent = matches!(e, smtp::SendError::Permanent(_));
                    let mut state = entry.state.clone();
                    state.attempts += 1;
                    let delay = cfg
                        .retry_base
                        .saturating_mul(1u32 << state.attempts.saturating_sub(1).min(16))
                        .min(MAX_RETRY_DELAY);
                    state.next = now() + delay.as_secs();
                    state.last_error = Some(e.to_string());
                    self.save_state(&entry.name, &state);
                    if permanent {
                        tracing::error!(copy = %entry.meta.id, error = %e,
                            "archive copy refused by the relay; kept in the spool (mailkeep queue list)");
                        report.failed += 1;
                    } else {
                        tracing::warn!(copy = %entry.meta.id, error = %e, "archive copy deferred");
                        report.deferred += 1;
                    }
                    if entry.stuck(cfg.max_age) {
                        tracing::error!(copy = %entry.meta.id, age_s = now() - entry.meta.created,
                            "archive copy stuck: older than max_age, still kept");
                    }
                }
            }
        }
        Ok(report)
    }

    /// Moves a copy out of the queue into `dropped/`, with the reason.
    pub fn drop_copy(&self, name: &str, reason: &str) -> io::Result<PathBuf> {
        if name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a queue id",
            ));
        }
        let from = self.dir.join("new").join(name);
        let dropped = self.dir.join("dropped");
        create_dir_all_durable(&dropped)?;
        let to = dropped.join(name);
        let mut why = fs::File::create(dropped.join(format!("{name}.reason")))?;
        writeln!(why, "{reason}")?;
        why.sync_all()?;
        fs::rename(&from, &to)?;
        fsync_dir(&dropped)?;
        fsync_dir(&self.dir.join("new"))?;
        let _ = fs::remove_file(self.state_path(name));
        Ok(to)
    }
}

/// The marker secret: the file's 64 hex digits, created (0600) when
/// missing.
pub fn load_or_create_key(path: &Path) -> io::Result<[u8; 32]> {
    match fs::read_to_string(path) {
        Ok(text) => mailkeep_store::parse_hex_hash(text.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: expected 64 hex digits", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                create_dir_all_durable(dir)?;
            }
            let mut key = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            use std::os::unix::fs::OpenOptionsExt;
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(hex.as_bytes())?;
                    f.sync_all()?;
                    Ok(key)
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_header_last_wins_only_when_trusted() {
        let head = b"Subject: x\nX-Mailkeep-Archive-To: <a@arch.example>\nX-Mailkeep-Archive-To: b@arch.example\n\nbody";
        assert_eq!(archive_recipient(head, "rule@x", true), "b@arch.example");
        assert_eq!(archive_recipient(head, "rule@x", false), "rule@x");
        assert_eq!(
            archive_recipient(b"Subject: x\n\n", "rule@x", true),
            "rule@x"
        );
        assert_eq!(
            archive_recipient(b"X-Mailkeep-Archive-To: not an address\n\n", "rule@x", true),
            "rule@x"
        );
    }
}
