//! The audit log: one line per access to the archive, append-only and
//! hash-chained, so nobody reads the archive without leaving a trace and
//! nobody removes the trace unnoticed.
//!
//! The log is a JSON Lines file (`jq` and `grep` read it). Entry *n* holds
//! `hash_n = BLAKE3("mailkeep-audit-v1" ‖ hash_{n-1} ‖ body_n)`, where
//! `body_n` is the entry's JSON without its `hash` field; the first entry
//! links to [`GENESIS`]. Editing, removing or reordering an entry breaks the
//! chain from there on; a checkpoint of the head (kept elsewhere) catches a
//! log cut short or rewritten whole.
//!
//! An access is recorded *before* its result is shown, and [`AuditLog::
//! append`] returns only once the line is on disk (fsync), so when it
//! fails the access fails: there are no unaudited reads. Several processes
//! append at once (the daemon, root's commands, an auditor's searches):
//! each append takes an exclusive `flock` on the file, links to the last
//! line and writes its own with one `write` in append mode. A line cut by a
//! crash mid-write was never acknowledged (the access it recorded failed):
//! the next append takes it off before adding its own, and says so in the
//! entry (`repaired`).

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The hash the first entry links to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Longest line accepted, newline included: a query or an id list longer
/// than this is cut (and marked) before it is written, so the last line
/// can always be found by reading the end of the file.
pub const MAX_LINE: usize = 256 * 1024;

/// Longest value kept for one detail field.
const MAX_FIELD: usize = 16 * 1024;

/// Who did something, from where, and by which way in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user: the Unix login for the command line, the authenticated
    /// user for the web and IMAP.
    pub user: String,
    /// The Unix uid, for the command line.
    pub uid: Option<u32>,
    /// `cli`, `serve`, and later `web`, `imap`.
    pub via: String,
    /// Where from: an SSH client's address, a terminal, a peer address.
    pub from: String,
}

impl Actor {
    /// The user running this process: the real uid's name (with the user
    /// who ran `sudo`, when there is one), its terminal or SSH client.
    pub fn this_process(via: &str) -> Actor {
        let uid = rustix::process::getuid().as_raw();
        let name = user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
        let mut from = Vec::new();
        if let Ok(sudo) = std::env::var("SUDO_USER") {
            if uid == 0 && !sudo.is_empty() {
                from.push(format!("sudo by {sudo}"));
            }
        }
        if let Some(ssh) = std::env::var("SSH_CLIENT")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
        {
            from.push(format!("ssh from {ssh}"));
        }
        match std::fs::read_link("/proc/self/fd/0") {
            Ok(tty) if tty.starts_with("/dev/pts") || tty.starts_with("/dev/tty") => {
                from.push(format!("tty {}", tty.display()))
            }
            _ => from.push("no terminal".into()),
        }
        Actor {
            user: name,
            uid: Some(uid),
            via: via.to_string(),
            from: from.join(", "),
        }
    }
}

fn user_name(uid: u32) -> Option<String> {
    // /etc/passwd, as getpwuid(3) would read it for local users.
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// One entry, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version.
    pub v: u32,
    /// Position in the log: 1, 2, ...
    pub seq: u64,
    /// When, UTC, RFC 3339 with microseconds.
    pub time: String,
    /// Who.
    pub user: String,
    /// Their uid, for the command line.
    pub uid: Option<u32>,
    /// By which way in.
    pub via: String,
    /// From where.
    pub from: String,
    /// `search`, `show`, `export`, `import`, `checkpoint`, `verify`,
    /// `stats`, `audit`, `config` ...
    pub action: String,
    /// What: the query, the ids, the counts, the outcome.
    pub detail: Map<String, Value>,
    /// The previous entry's hash, hex.
    pub prev: String,
    /// This entry's hash, hex.
    pub hash: String,
}

impl Entry {
    /// The bytes the chain hashes: the entry's JSON without `hash`.
    fn body(&self) -> String {
        let mut v = serde_json::to_value(self).expect("an entry always serialises");
        if let Value::Object(m) = &mut v {
            m.remove("hash");
        }
        serde_json::to_string(&v).expect("a JSON value always serialises")
    }
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened, locked, read or written.
    #[error("the audit log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The last entry is not an entry: the log was edited or damaged.
    #[error("the audit log {path}: its last line is not an entry ({why}); run `mailkeep verify`")]
    Damaged {
        /// The log.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl AuditError {
    /// The I/O error's kind, when there is one (permission denied is
    /// reported as such).
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            AuditError::Io { source, .. } => Some(source.kind()),
            AuditError::Damaged { .. } => None,
        }
    }
}

/// The log at one path.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// The head: (seq, hash hex).
    pub head: Option<(u64, String)>,
    /// Problems, earliest first.
    pub problems: Vec<String>,
}

impl AuditLog {
    /// The log at `path` (nothing is opened yet).
    pub fn new(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Creates the log if it does not exist, with `mode` (0600, or 0660 for
    /// a store with a group of auditors, who append to it), and lets
    /// `finish` give it its owner. A reader that may not create it fails
    /// here, before it reads anything.
    pub fn create(
        &self,
        mode: u32,
        finish: impl FnOnce(&File) -> io::Result<()>,
    ) -> Result<(), AuditError> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&self.path)
        {
            Ok(f) => {
                finish(&f).map_err(|e| self.io(e))?;
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| self.io(e))?;
                f.sync_all().map_err(|e| self.io(e))?;
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| self.io(e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Appends one entry and returns it once it is on disk.
    pub fn append(
        &self,
        actor: &Actor,
        action: &str,
        mut detail: Map<String, Value>,
    ) -> Result<Entry, AuditError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| self.io(e.into()))?;
        let (last, torn) = self.last_entry(&mut file)?;
        if let Some(good) = torn {
            // A line a crash cut short: its access never completed.
            file.set_len(good).map_err(|e| self.io(e))?;
            detail.insert(
                "repaired".into(),
                Value::from("a line cut short by a crash was removed"),
            );
        }
        for value in detail.values_mut() {
            cut(value);
        }
        let (seq, prev) = match &last {
            Some(e) => (e.seq + 1, e.hash.clone()),
            None => (1, crate::hex(&GENESIS)),
        };
        let mut entry = Entry {
            v: 1,
            seq,
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            user: actor.user.clone(),
            uid: actor.uid,
            via: actor.via.clone(),
            from: actor.from.clone(),
            action: action.to_string(),
            detail,
            prev,
            hash: String::new(),
        };
        entry.hash = link(&entry.prev, &entry.body());
        let mut line = serde_json::to_string(&entry).expect("an entry always serialises");
        line.push('\n');
        if line.len() > MAX_LINE {
            entry.detail = Map::from_iter([(
                "cut".to_string(),
                Value::from(format!("the details were {} bytes", line.len())),
            )]);
            entry.hash = link(&entry.prev, &entry.body());
            line = serde_json::to_string(&entry).expect("an entry always serialises");
            line.push('\n');
        }
        file.write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        file.sync_data().map_err(|e| self.io(e))?;
        Ok(entry)
    }

    /// The last complete entry, and, when the file does not end with a
    /// newline, the length to cut it back to.
    fn last_entry(&self, file: &mut File) -> Result<(Option<Entry>, Option<u64>), AuditError> {
        let len = file.metadata().map_err(|e| self.io(e))?.len();
        if len == 0 {
            return Ok((None, None));
        }
        let start = len.saturating_sub(2 * MAX_LINE as u64);
        file.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut tail).map_err(|e| self.io(e))?;
        let mut torn = None;
        let mut end = tail.len();
        if tail.last() != Some(&b'\n') {
            end = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            torn = Some(start + end as u64);
        }
        let complete = &tail[..end];
        let body = complete.strip_suffix(b"\n").unwrap_or(complete);
        if body.is_empty() {
            return Ok((None, torn));
        }
        let line_start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if line_start == 0 && start > 0 {
            return Err(AuditError::Damaged {
                path: self.path.clone(),
                why: format!("longer than {MAX_LINE} bytes"),
            });
        }
        let entry: Entry =
            serde_json::from_slice(&body[line_start..]).map_err(|e| AuditError::Damaged {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
        Ok((Some(entry), torn))
    }

    /// Every entry, in order, that `keep` accepts. A line that is not an
    /// entry is an error (`mailkeep verify` says where).
    pub fn entries(&self, mut keep: impl FnMut(&Entry) -> bool) -> Result<Vec<Entry>, AuditError> {
        let file = File::open(&self.path).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| self.io(e))?;
            let entry: Entry = serde_json::from_str(&line).map_err(|e| AuditError::Damaged {
                path: self.path.clone(),
                why: format!("line {}: {e}", n + 1),
            })?;
            if keep(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Re-links every entry from the first: a changed, removed, inserted or
    /// reordered entry is named by its line.
    pub fn verify(&self) -> Result<AuditReport, AuditError> {
        let file = File::open(&self.path).map_err(|e| self.io(e))?;
        let mut report = AuditReport::default();
        let mut prev = crate::hex(&GENESIS);
        let mut seq = 0u64;
        let mut reader = BufReader::new(file);
        let mut raw = Vec::new();
        let mut n = 0u64;
        loop {
            raw.clear();
            let read = reader.read_until(b'\n', &mut raw).map_err(|e| self.io(e))?;
            if read == 0 {
                break;
            }
            n += 1;
            if raw.last() != Some(&b'\n') {
                report.problems.push(format!(
                    "line {n}: cut short (no newline): a crash while writing it"
                ));
                break;
            }
            let entry: Entry = match serde_json::from_slice(&raw) {
                Ok(e) => e,
                Err(e) => {
                    report.problems.push(format!("line {n}: not an entry: {e}"));
                    continue;
                }
            };
            report.entries += 1;
            if entry.seq != seq + 1 {
                report.problems.push(format!(
                    "line {n}: entry {} follows entry {seq}: entries removed or reordered",
                    entry.seq
                ));
            }
            if entry.prev != prev {
                report.problems.push(format!(
                    "line {n}: entry {} does not link to the entry before it",
                    entry.seq
                ));
            }
            if link(&entry.prev, &entry.body()) != entry.hash {
                report.problems.push(format!(
                    "line {n}: entry {} was changed after it was written",
                    entry.seq
                ));
            }
            seq = entry.seq;
            prev = entry.hash.clone();
            report.head = Some((entry.seq, entry.hash));
        }
        Ok(report)
    }
}

/// `hash_n`, hex, from `hash_{n-1}` (hex) and the entry's body.
fn link(prev_hex: &str, body: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"mailkeep-audit-v1");
    h.update(prev_hex.as_bytes());
    h.update(body.as_bytes());
    h.finalize().to_hex().to_string()
}

/// Cuts a long string (a query, an id list) to [`MAX_FIELD`] bytes.
fn cut(value: &mut Value) {
    if let Value::String(s) = value {
        if s.len() > MAX_FIELD {
            let mut end = MAX_FIELD;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let total = s.len();
            s.truncate(end);
            s.push_str(&format!("... ({total} bytes)"));
        }
    }
}

/// Delivery ids as ranges: `1-40,42,50-51`, so an export of 100,000
/// consecutive deliveries is one short field.
pub fn id_ranges(ids: &[i64]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor {
            user: "alice".into(),
            uid: Some(1000),
            via: "cli".into(),
            from: "tty /dev/pts/1".into(),
        }
    }

    fn detail(q: &str) -> Map<String, Value> {
        Map::from_iter([("query".to_string(), Value::from(q))])
    }

    fn new_log(dir: &Path) -> AuditLog {
        let log = AuditLog::new(dir.join("audit.log"));
        log.create(0o600, |_| Ok(())).unwrap();
        log
    }

    #[test]
    fn entries_chain_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        for q in ["from:bob", "to:carol", "subject:\"q3\""] {
            log.append(&actor(), "search", detail(q)).unwrap();
        }
        let all = log.entries(|_| true).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[1].prev, all[0].hash);
        assert_eq!(all[2].detail["query"], "subject:\"q3\"");
        let report = log.verify().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.head, Some((3, all[2].hash.clone())));
        // The file is JSON Lines a standard tool reads.
        let text = std::fs::read_to_string(log.path()).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["user"], "alice");
        }
    }

    #[test]
    fn an_edited_or_removed_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        for q in ["a", "b", "c", "d"] {
            log.append(&actor(), "search", detail(q)).unwrap();
        }
        let text = std::fs::read_to_string(log.path()).unwrap();
        let edited = text.replacen("\"query\":\"b\"", "\"query\":\"x\"", 1);
        std::fs::write(log.path(), &edited).unwrap();
        let report = log.verify().unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].contains("entry 2 was changed"),
            "{:?}",
            report.problems
        );

        let lines: Vec<&str> = text.lines().collect();
        let removed = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
        std::fs::write(log.path(), removed).unwrap();
        let report = log.verify().unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("entry 3 follows entry 1")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn a_torn_last_line_is_taken_off_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        log.append(&actor(), "search", detail("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"{\"v\":1,\"seq\":2,\"ti").unwrap();
        drop(f);
        assert!(log.verify().unwrap().problems[0].contains("cut short"));
        let e = log.append(&actor(), "show", detail("b")).unwrap();
        assert_eq!(e.seq, 2);
        assert!(e.detail.contains_key("repaired"));
        let report = log.verify().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries, 2);
    }

    #[test]
    fn appends_from_many_threads_make_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        log.append(&actor(), "search", detail(&format!("{t}-{i}")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let report = log.verify().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries, 200);
    }

    #[test]
    fn an_unwritable_log_fails_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("missing").join("audit.log"));
        let err = log.append(&actor(), "search", detail("a")).unwrap_err();
        assert_eq!(err.kind(), Some(io::ErrorKind::NotFound));
        assert!(log.create(0o600, |_| Ok(())).is_err());
    }

    #[test]
    fn long_fields_are_cut_and_ids_are_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        let e = log
            .append(&actor(), "search", detail(&"x".repeat(100_000)))
            .unwrap();
        let q = e.detail["query"].as_str().unwrap();
        assert!(
            q.len() < MAX_FIELD + 32 && q.ends_with("(100000 bytes)"),
            "{}",
            q.len()
        );
        assert_eq!(id_ranges(&[5, 1, 2, 3, 9, 10, 3]), "1-3,5,9-10");
        assert_eq!(id_ranges(&[]), "");
        assert!(log.verify().unwrap().problems.is_empty());
    }
}
