//! The audit log: one line per access to the archive, append-only and
//! hash-chained, so nobody reads the archive without leaving a trace and
//! nobody removes the trace unnoticed.
//!
//! The log is a JSON Lines file (`jq` and `grep` read it). Entry *n* holds
//! `hash_n = BLAKE3("mailkeep-audit-v1" ‖ hash_{n-1} ‖ line_n)`, where
//! `line_n` is the entry's line exactly as written, with its `hash` value
//! (the last field) empty: the bytes on disk are what is hashed, so any
//! edit (a value, an added field, a duplicate key, the spacing) breaks the
//! chain from there on, whatever JSON library reads it. The first entry
//! links to [`genesis`] of the store's id, so a log from another store does
//! not pass for this one's. A checkpoint of the head (kept elsewhere)
//! catches a log cut short or rewritten up to it.
//!
//! An access is recorded *before* its result is shown, and [`AuditLog::
//! append`] returns only once the line is on disk (fsync), so when it
//! fails the access fails: there are no unaudited reads. Several processes
//! append at once (the daemon, root's commands, an auditor's searches):
//! each append takes an exclusive `flock` on the file, links to the last
//! line and writes its own with one `write` in append mode. A line cut by a
//! crash mid-write was never acknowledged (the access it recorded failed):
//! the next append takes it off before adding its own, and says so in the
//! entry (`repaired`). A complete line that is not an entry (damage, an
//! edit) is left where it is for `verify` to name, and the next entry links
//! to the last good one, so a damaged log does not stop every access.
//! Readers take a shared lock, so they never see a line being written.

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The hash the first entry of store `store_id`'s log links to, hex.
pub fn genesis(store_id: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"mailkeep-audit-genesis-v1");
    h.update(store_id.as_bytes());
    h.finalize().to_hex().to_string()
}

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

/// What an entry says about the end of the log it was appended to: a line
/// a crash cut short was removed, damaged lines lie before it.
fn note_tail(tail: &Tail, detail: &mut Map<String, Value>) {
    if tail.torn.is_some() {
        detail.insert(
            "repaired".into(),
            Value::from("a line cut short by a crash was removed"),
        );
    }
    if tail.skipped > 0 {
        detail.insert(
            "links_past".into(),
            Value::from(format!(
                "{} damaged line(s) before this entry; `mailkeep verify` names them",
                tail.skipped
            )),
        );
    }
}

/// Entry `seq` after the entry hashed `prev`, sealed, and its line with the
/// newline; refused when it would exceed [`MAX_LINE`] (not written with
/// its details dropped: a hold placed without its query would not be in
/// force although the command said so).
fn seal_entry(
    actor: &Actor,
    action: &str,
    mut detail: Map<String, Value>,
    seq: u64,
    prev: String,
) -> Result<(Entry, String), String> {
    for value in detail.values_mut() {
        cut(value);
    }
    let short = |text: &str| {
        let mut v = Value::from(text);
        cut_to(&mut v, MAX_NAME);
        v.as_str().unwrap_or_default().to_string()
    };
    let mut entry = Entry {
        v: 1,
        seq,
        time: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        user: short(&actor.user),
        uid: actor.uid,
        via: short(&actor.via),
        from: short(&actor.from),
        action: action.to_string(),
        detail,
        prev,
        hash: String::new(),
    };
    let mut line = entry.seal();
    if line.len() + 1 > MAX_LINE {
        return Err(format!(
            "the audit entry would be {} bytes, more than the {MAX_LINE} an entry may take; \
             nothing was done",
            line.len()
        ));
    }
    line.push('\n');
    Ok((entry, line))
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
#[serde(deny_unknown_fields)]
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

/// The end of every line: the `hash` field, last, and the closing brace.
const HASH_FIELD: &str = ",\"hash\":\"";

impl Entry {
    /// The line this entry is written as (without its newline), its hash
    /// computed over the line with the hash value empty.
    fn seal(&mut self) -> String {
        self.hash = String::new();
        let blank = serde_json::to_string(self).expect("an entry always serialises");
        self.hash = link(&self.prev, &blank);
        let cut = blank.len() - 2; // before `"}`
        format!("{}{}\"}}", &blank[..cut], self.hash)
    }
}

/// Parses one line (without its newline), and tells whether its hash is
/// that of the line as written.
fn open_line(line: &[u8]) -> Result<(Entry, bool), String> {
    let entry: Entry = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(line).map_err(|e| e.to_string())?;
    let tail = format!("{HASH_FIELD}{}\"}}", entry.hash);
    let sound = match text.strip_suffix(&tail) {
        Some(head) if entry.hash.len() == 64 => {
            link(&entry.prev, &format!("{head}{HASH_FIELD}\"}}")) == entry.hash
        }
        _ => false,
    };
    Ok((entry, sound))
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
    /// The log is damaged past what the next entry can link over.
    #[error("the audit log {path}: {why}; run `mailkeep verify`")]
    Damaged {
        /// The log.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The entry was not written: the log's state refused it.
    #[error("{0}")]
    Refused(String),
}

impl AuditError {
    /// The I/O error's kind, when there is one (permission denied is
    /// reported as such).
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            AuditError::Io { source, .. } => Some(source.kind()),
            AuditError::Damaged { .. } | AuditError::Refused(_) => None,
        }
    }
}

/// The log at one path, of one store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    genesis: String,
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
    /// The log at `path` of the store `store_id` (nothing is opened yet).
    pub fn new(path: impl Into<PathBuf>, store_id: &str) -> AuditLog {
        AuditLog {
            path: path.into(),
            genesis: genesis(store_id),
        }
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
        detail: Map<String, Value>,
    ) -> Result<Entry, AuditError> {
        self.write_entry(actor, action, detail, None)
    }

    /// [`AuditLog::append`] once `check` accepted the entries in the log,
    /// read under the same exclusive lock as the append: a decision that
    /// depends on the log (is a hold of that name in force?) cannot race
    /// with another process's append. A refusal is [`AuditError::Refused`].
    pub fn append_checked(
        &self,
        actor: &Actor,
        action: &str,
        detail: Map<String, Value>,
        check: impl FnOnce(&[Entry]) -> Result<(), String>,
    ) -> Result<Entry, AuditError> {
        self.write_entry(actor, action, detail, Some(Box::new(check)))
    }

    /// The log opened to append, under the exclusive lock every writer
    /// takes (released when the file is closed).
    fn open_locked(&self) -> Result<File, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| self.io(e.into()))?;
        Ok(file)
    }

    /// The append itself; the whole log is read only when there is a
    /// `check` (an ordinary access reads the last lines alone).
    #[allow(clippy::type_complexity)]
    fn write_entry(
        &self,
        actor: &Actor,
        action: &str,
        mut detail: Map<String, Value>,
        check: Option<Box<dyn FnOnce(&[Entry]) -> Result<(), String> + '_>>,
    ) -> Result<Entry, AuditError> {
        let mut file = self.open_locked()?;
        let tail = self.tail(&mut file)?;
        if let Some(check) = check {
            let mut all = Vec::new();
            self.scan(&file, |_, entry| {
                if let Ok((e, _)) = entry {
                    all.push(e);
                }
            })?;
            check(&all).map_err(AuditError::Refused)?;
        }
        if let Some(good) = tail.torn {
            // A line a crash cut short: its access never completed.
            file.set_len(good).map_err(|e| self.io(e))?;
        }
        note_tail(&tail, &mut detail);
        let (seq, prev) = match &tail.last {
            Some(e) => (e.seq + 1, e.hash.clone()),
            None => (1, self.genesis.clone()),
        };
        let (entry, line) =
            seal_entry(actor, action, detail, seq, prev).map_err(AuditError::Refused)?;
        file.write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        file.sync_data().map_err(|e| self.io(e))?;
        Ok(entry)
    }

    /// Appends several entries under one lock with one write and one
    /// fsync (a group commit for a server's many readers), in order; each
    /// is on disk when this returns `Ok`. An entry refused on its own (too
    /// large) is an `Err` in its place and takes no number; the others are
    /// written.
    pub fn append_many(
        &self,
        items: Vec<(Actor, String, Map<String, Value>)>,
    ) -> Result<Vec<Result<Entry, String>>, AuditError> {
        let mut file = self.open_locked()?;
        let tail = self.tail(&mut file)?;
        if let Some(good) = tail.torn {
            file.set_len(good).map_err(|e| self.io(e))?;
        }
        let (mut seq, mut prev) = match &tail.last {
            Some(e) => (e.seq + 1, e.hash.clone()),
            None => (1, self.genesis.clone()),
        };
        let mut out = Vec::with_capacity(items.len());
        let mut lines = String::new();
        // What the tail held is noted on the first entry written.
        let mut noted = false;
        for (actor, action, mut detail) in items {
            if !noted {
                note_tail(&tail, &mut detail);
            }
            match seal_entry(&actor, &action, detail, seq, prev.clone()) {
                Ok((entry, line)) => {
                    noted = true;
                    lines.push_str(&line);
                    seq += 1;
                    prev = entry.hash.clone();
                    out.push(Ok(entry));
                }
                Err(why) => out.push(Err(why)),
            }
        }
        if !lines.is_empty() {
            file.write_all(lines.as_bytes()).map_err(|e| self.io(e))?;
            file.sync_data().map_err(|e| self.io(e))?;
        }
        Ok(out)
    }

    /// The end of the log: the last entry that parses, how many complete
    /// lines after it do not, and, when the file does not end with a
    /// newline, the length to cut it back to.
    fn tail(&self, file: &mut File) -> Result<Tail, AuditError> {
        let len = file.metadata().map_err(|e| self.io(e))?.len();
        let mut tail = Tail::default();
        if len == 0 {
            return Ok(tail);
        }
        let start = len.saturating_sub(2 * MAX_LINE as u64);
        file.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut buf).map_err(|e| self.io(e))?;
        let mut end = buf.len();
        if buf.last() != Some(&b'\n') {
            end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            tail.torn = Some(start + end as u64);
        }
        // Complete lines, newest first; when the window does not start the
        // file, its first piece may be the end of a longer line.
        let mut lines: Vec<&[u8]> = buf[..end].split(|b| *b == b'\n').collect();
        lines.pop(); // what follows the last newline
        let first_whole = usize::from(start > 0).min(lines.len());
        // The entry to link to: the sound one with the highest number (a
        // copied or edited line after it is passed over, and named by
        // verify); the lines after it that are not it are counted.
        let mut best: Option<(usize, Entry)> = None;
        for (i, line) in lines.iter().enumerate().skip(first_whole) {
            if let Ok((entry, true)) = open_line(line) {
                if best.as_ref().is_none_or(|(_, b)| entry.seq > b.seq) {
                    best = Some((i, entry));
                }
            }
        }
        if let Some((i, entry)) = best {
            tail.skipped = (lines.len() - 1 - i) as u64;
            tail.last = Some(entry);
            return Ok(tail);
        }
        tail.skipped = (lines.len() - first_whole) as u64;
        if start > 0 {
            return Err(AuditError::Damaged {
                path: self.path.clone(),
                why: format!("its last {} bytes hold no entry to link to", len - start),
            });
        }
        Ok(tail)
    }

    /// Reads every complete line (the caller holds a lock on the file),
    /// giving each line's number and its entry (with whether its hash is
    /// sound) or why it is not one. A last line without its newline was
    /// cut by a crash.
    fn scan(
        &self,
        file: &File,
        mut each: impl FnMut(u64, Result<(Entry, bool), String>),
    ) -> Result<(), AuditError> {
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        let mut raw = Vec::new();
        let mut n = 0u64;
        loop {
            raw.clear();
            let read = reader.read_until(b'\n', &mut raw).map_err(|e| self.io(e))?;
            if read == 0 {
                return Ok(());
            }
            n += 1;
            if raw.last() != Some(&b'\n') {
                each(
                    n,
                    Err("cut short (no newline): a crash while writing it".into()),
                );
                return Ok(());
            }
            raw.pop();
            each(n, open_line(&raw));
        }
    }

    fn open_shared(&self) -> Result<File, AuditError> {
        let file = File::open(&self.path).map_err(|e| self.io(e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| self.io(e.into()))?;
        Ok(file)
    }

    /// The last entry: (seq, hash hex), or `None` for an empty log.
    pub fn head(&self) -> Result<Option<(u64, String)>, AuditError> {
        let mut file = self.open_shared()?;
        Ok(self.tail(&mut file)?.last.map(|e| (e.seq, e.hash)))
    }

    /// The log's length now, in bytes: a mark for [`AuditLog::actions_since`].
    pub fn mark(&self) -> Result<u64, AuditError> {
        let file = self.open_shared()?;
        file.metadata().map(|m| m.len()).map_err(|e| self.io(e))
    }

    /// The actions of the entries written after `mark` (read from there
    /// on only, so it is cheap however long the log is).
    pub fn actions_since(&self, mark: u64) -> Result<Vec<String>, AuditError> {
        let file = self.open_shared()?;
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(mark)).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = reader.read_until(b'\n', &mut raw).map_err(|e| self.io(e))?;
            if n == 0 || raw.last() != Some(&b'\n') {
                return Ok(out);
            }
            raw.pop();
            if let Ok((e, _)) = open_line(&raw) {
                out.push(e.action);
            }
        }
    }

    /// The hash entry `seq` has now, if a line holds it (damaged lines are
    /// passed over: this answers a checkpoint's question only).
    pub fn hash_of(&self, seq: u64) -> Result<Option<String>, AuditError> {
        let file = self.open_shared()?;
        let mut found = None;
        let mut sound_found = None;
        self.scan(&file, |_, entry| {
            if let Ok((e, sound)) = entry {
                if e.seq == seq {
                    if sound {
                        sound_found = Some(e.hash.clone());
                    }
                    found.get_or_insert(e.hash);
                }
            }
        })?;
        Ok(sound_found.or(found))
    }

    /// Every entry, in order, that `keep` accepts. A line that is not an
    /// entry is an error (`mailkeep verify` says where).
    pub fn entries(&self, mut keep: impl FnMut(&Entry) -> bool) -> Result<Vec<Entry>, AuditError> {
        let file = self.open_shared()?;
        let mut out = Vec::new();
        let mut bad = None;
        self.scan(&file, |n, entry| match entry {
            Ok((e, _)) => {
                if bad.is_none() && keep(&e) {
                    out.push(e);
                }
            }
            Err(why) => {
                bad.get_or_insert(format!("line {n}: {why}"));
            }
        })?;
        match bad {
            Some(why) => Err(AuditError::Damaged {
                path: self.path.clone(),
                why,
            }),
            None => Ok(out),
        }
    }

    /// Re-links every entry from the first: a changed, removed, inserted or
    /// reordered entry is named by its line.
    pub fn verify(&self) -> Result<AuditReport, AuditError> {
        let file = self.open_shared()?;
        let mut report = AuditReport::default();
        let mut prev = self.genesis.clone();
        let mut seq = 0u64;
        self.scan(&file, |n, entry| {
            let (entry, sound) = match entry {
                Ok(e) => e,
                Err(why) => {
                    report
                        .problems
                        .push(format!("line {n}: not an entry: {why}"));
                    return;
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
                let what = if entry.seq == 1 {
                    "does not start this store's log (another store's log, or rewritten)"
                } else {
                    "does not link to the entry before it"
                };
                report
                    .problems
                    .push(format!("line {n}: entry {} {what}", entry.seq));
            }
            if !sound {
                report.problems.push(format!(
                    "line {n}: entry {} was changed after it was written",
                    entry.seq
                ));
            }
            seq = entry.seq;
            prev = entry.hash.clone();
            report.head = Some((entry.seq, entry.hash));
        })?;
        Ok(report)
    }
}

/// What the end of the log holds.
#[derive(Debug, Default)]
struct Tail {
    last: Option<Entry>,
    skipped: u64,
    torn: Option<u64>,
}

/// `hash_n`, hex, from `hash_{n-1}` (hex) and the entry's line with its
/// hash value empty.
fn link(prev_hex: &str, body: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"mailkeep-audit-v1");
    h.update(prev_hex.as_bytes());
    h.update(body.as_bytes());
    h.finalize().to_hex().to_string()
}

/// Cuts a long string (a query, an id list) to [`MAX_FIELD`] bytes.
fn cut(value: &mut Value) {
    cut_to(value, MAX_FIELD)
}

/// Longest user name, way in or origin kept.
const MAX_NAME: usize = 512;

fn cut_to(value: &mut Value, max: usize) {
    if let Value::String(s) = value {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let total = s.len();
            s.truncate(end);
            s.push_str(&format!("... ({total} bytes)"));
        }
    }
}

/// The ids [`id_ranges`] wrote, as inclusive ranges (`None` for text that
/// is not such a list).
pub fn parse_ranges(text: &str) -> Option<Vec<(i64, i64)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => part.parse().ok().map(|n| (n, n)),
        })
        .collect()
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
        let log = AuditLog::new(dir.join("audit.log"), "test-store");
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
    fn the_bytes_written_are_what_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        for q in ["a", "b", "c"] {
            log.append(&actor(), "search", detail(q)).unwrap();
        }
        let text = std::fs::read_to_string(log.path()).unwrap();
        // Same JSON meaning, other bytes: a space, an added field, a
        // duplicate key.
        for (what, edited) in [
            (
                "space",
                text.replacen("\"query\":\"b\"", "\"query\": \"b\"", 1),
            ),
            (
                "field",
                text.replacen("\"query\":\"b\"", "\"query\":\"b\",\"note\":\"x\"", 1),
            ),
        ] {
            std::fs::write(log.path(), &edited).unwrap();
            let report = log.verify().unwrap();
            assert!(
                report.problems.iter().any(|p| p.starts_with("line 2:")),
                "{what}: {:?}",
                report.problems
            );
        }
        // Another store's log does not pass for this one's.
        std::fs::write(log.path(), &text).unwrap();
        let other = AuditLog::new(log.path(), "another-store");
        let report = other.verify().unwrap();
        assert!(
            report.problems[0].contains("does not start this store's log"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn a_damaged_line_is_named_and_the_next_entry_links_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        log.append(&actor(), "search", detail("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"garbage that is not an entry\n").unwrap();
        drop(f);
        assert!(log.entries(|_| true).is_err());
        let e = log.append(&actor(), "verify", detail("")).unwrap();
        assert_eq!(e.seq, 2);
        assert!(e.detail.contains_key("links_past"));
        let report = log.verify().unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].starts_with("line 2: not an entry"));
        assert_eq!(report.entries, 2);
    }

    #[test]
    fn a_copied_line_at_the_end_is_not_linked_to() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        for q in ["a", "b", "c"] {
            log.append(&actor(), "search", detail(q)).unwrap();
        }
        let text = std::fs::read_to_string(log.path()).unwrap();
        let first = text.lines().next().unwrap().to_string();
        std::fs::write(log.path(), format!("{text}{first}\n")).unwrap();
        let e = log.append(&actor(), "search", detail("d")).unwrap();
        assert_eq!(e.seq, 4);
        assert!(e.detail.contains_key("links_past"));
        let three = log.entries(|e| e.seq == 3).unwrap();
        assert_eq!(e.prev, three[0].hash);
        assert_eq!(log.hash_of(3).unwrap(), Some(three[0].hash.clone()));
        assert!(log
            .verify()
            .unwrap()
            .problems
            .iter()
            .any(|p| p.starts_with("line 4:")));
    }

    #[test]
    fn append_many_is_one_chain_with_the_entries_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        log.append(&actor(), "search", detail("before")).unwrap();
        let mut big = Map::new();
        for i in 0..40 {
            big.insert(format!("k{i}"), Value::from("\u{1}".repeat(MAX_FIELD)));
        }
        let mut web = actor();
        web.via = "web".into();
        let out = log
            .append_many(vec![
                (web.clone(), "search".into(), detail("one")),
                (web.clone(), "show".into(), big),
                (web.clone(), "raw".into(), detail("two")),
            ])
            .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().seq, 2);
        assert!(out[1].as_ref().unwrap_err().contains("more than"));
        assert_eq!(
            out[2].as_ref().unwrap().seq,
            3,
            "a refused entry takes no number"
        );
        log.append(&actor(), "search", detail("after")).unwrap();
        let all = log.entries(|_| true).unwrap();
        let queries: Vec<_> = all.iter().map(|e| e.detail["query"].clone()).collect();
        assert_eq!(queries, ["before", "one", "two", "after"]);
        assert_eq!(all[2].prev, all[1].hash);
        assert_eq!(all[3].prev, all[2].hash);
        assert_eq!(all[1].via, "web");
        assert!(log.verify().unwrap().problems.is_empty());
        // Nothing to write writes nothing.
        assert!(log.append_many(Vec::new()).unwrap().is_empty());
        assert_eq!(log.entries(|_| true).unwrap().len(), 4);
    }

    #[test]
    fn an_entry_too_long_is_refused_not_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        let mut big = Map::new();
        for i in 0..40 {
            big.insert(format!("k{i}"), Value::from("\u{1}".repeat(MAX_FIELD)));
        }
        let err = log.append(&actor(), "hold", big).unwrap_err();
        assert!(matches!(err, AuditError::Refused(_)), "{err}");
        let mut who = actor();
        who.from = "\u{1}".repeat(200_000);
        let e = log.append(&who, "search", detail("x")).unwrap();
        assert!(e.from.len() < 1024, "{}", e.from.len());
        assert!(log.verify().unwrap().problems.is_empty());
    }

    #[test]
    fn a_refused_check_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = new_log(dir.path());
        log.append(&actor(), "hold", detail("x")).unwrap();
        let err = log
            .append_checked(&actor(), "hold", detail("y"), |all| {
                assert_eq!(all.len(), 1);
                Err("no".into())
            })
            .unwrap_err();
        assert!(matches!(err, AuditError::Refused(ref w) if w == "no"));
        assert_eq!(log.verify().unwrap().entries, 1);
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
        let log = AuditLog::new(dir.path().join("missing").join("audit.log"), "test-store");
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
        assert_eq!(
            parse_ranges("1-3,5,9-10"),
            Some(vec![(1, 3), (5, 5), (9, 10)])
        );
        assert_eq!(parse_ranges("1-3... (20 bytes)"), None);
        assert_eq!(id_ranges(&[]), "");
        assert!(log.verify().unwrap().problems.is_empty());
    }
}
