//! mboxrd files, locked the way mutt, procmail and dovecot lock them.
//!
//! Each message is written as a `From SENDER ASCTIME` separator line, the
//! envelope headers, the message with every line matching `^>*From `
//! quoted by one more `>` (mboxrd, so readers that unquote get the original
//! bytes back), a final newline if the message lacked one, and one empty
//! line.
//!
//! Locking, in this order (dovecot's default `mbox_write_locks = dotlock
//! fcntl`, and procmail's):
//! 1. a dotlock `PATH.lock` created with `O_EXCL`, holding our pid as text;
//!    one older than 500 s is stale and removed;
//! 2. an fcntl write lock on the whole file (`l_start = 0, l_len = 0`).
//!    The issue that introduced this asked for a lock on the appended range;
//!    a lock from offset 0 covers that range and every reader's whole-file
//!    lock too, and it cannot race with a concurrent append between
//!    `fstat` and `fcntl`.
//!
//! fcntl locks belong to the process, not the thread or the descriptor:
//! two threads of `serve` would both get one, and closing *any* descriptor
//! of the file drops it. So within the process the dotlock, taken first,
//! is what excludes: the file is opened only by whoever holds the dotlock.
//!
//! [`try_lock_all`] never waits: it takes both locks of every mbox a message
//! needs, in the (sorted) order given, or, if any is held, releases the ones
//! it took and says who holds the other ([`Held`]: the pid from `F_GETLK`
//! or from the dotlock's text, the program from `/proc/PID/comm`). Nobody in
//! mailkeep holds one lock while waiting for another, so a message needing
//! several mboxes cannot deadlock with another message, nor with a program
//! that takes the two locks in the other order; the price is that a waiter
//! retries instead of queueing. The group committer uses it and hands a
//! message whose lock is held to its lock waiter (see `group.rs`), so a held
//! mbox delays only its own messages; [`lock_all`] retries it with pauses
//! until `lock_timeout`, for callers with nothing else to do (`mailkeep
//! pipe`, one process per message). Either way a holder that keeps the lock
//! past the limit yields a temporary failure ([`LockTimeout`]), not a hung
//! mail server. A failed append is truncated back to the old length while
//! the locks are still held, so readers never see a partial message.

use crate::durable::{create_dir_all_durable, fsync_dir};
use chrono::{DateTime, Local, Utc};
use mailkeep_envelope::RawMessage;
use rustix::fs::FlockOperation;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A dotlock older than this is left over from a crash and is removed
/// (the figure mutt and procmail use).
const STALE_DOTLOCK: Duration = Duration::from_secs(500);

/// Pauses of [`lock_all`] between attempts grow from this...
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// ...to this: short waits stay short, long ones do not spin.
pub const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Which of an mbox's two locks another program holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `PATH.lock`.
    Dotlock,
    /// The fcntl write lock on the file.
    Fcntl,
}

/// An mbox lock that someone else holds, and who, when that can be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The mbox.
    pub mbox: PathBuf,
    /// Which lock.
    pub kind: LockKind,
    /// The holder's process id: from `F_GETLK` for fcntl (none for an open
    /// file description lock, or a holder on another NFS client), from the
    /// dotlock's text (procmail, liblockfile and mailkeep write it there).
    pub pid: Option<u32>,
    /// Its program name, from `/proc/PID/comm`, when readable.
    pub program: Option<String>,
}

impl Held {
    fn new(mbox: &Path, kind: LockKind, pid: Option<u32>) -> Held {
        let program = pid.and_then(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some(comm.trim_end().to_string()).filter(|c| !c.is_empty())
        });
        Held {
            mbox: mbox.to_path_buf(),
            kind,
            pid,
            program,
        }
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LockKind::Dotlock => write!(f, "the dotlock {}.lock", self.mbox.display())?,
            LockKind::Fcntl => write!(f, "the fcntl lock on {}", self.mbox.display())?,
        }
        match (self.pid, &self.program) {
            (Some(pid), Some(program)) => write!(f, " is held by pid {pid} ({program})"),
            (Some(pid), None) => write!(f, " is held by pid {pid}"),
            (None, _) => write!(f, " is held (holder unknown)"),
        }
    }
}

/// A lock still held by someone else when the wait for it ended.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{held}, still after {:.1} s (lock_timeout)", waited.as_secs_f64())]
pub struct LockTimeout {
    /// The lock and its holder, as last seen.
    pub held: Held,
    /// How long the message waited.
    pub waited: Duration,
}

/// Why mbox locks could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else held a lock for longer than the limit.
    #[error(transparent)]
    TimedOut(#[from] LockTimeout),
    /// The mbox (or its directory, or its dotlock) could not be created,
    /// opened or locked.
    #[error("{}: {source}", path.display())]
    Io {
        /// The mbox.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The outcome of one [`try_lock_all`].
#[derive(Debug)]
pub enum Attempt {
    /// Every mbox asked for, locked, in the order asked.
    Locked(Vec<Locked>),
    /// One was held; nothing is locked.
    Held(Held),
}

/// A held dotlock; removed on drop.
#[derive(Debug)]
struct DotLock {
    path: PathBuf,
}

impl DotLock {
    /// Creates `MBOX.lock`, or says who holds it. A stale one is removed
    /// and the creation tried once more.
    fn try_acquire(mbox: &Path) -> io::Result<Result<DotLock, Held>> {
        let mut name = mbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        for _ in 0..2 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut f) => {
                    // The pid tells an administrator (and other waiters) who holds it.
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(Ok(DotLock { path }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > STALE_DOTLOCK);
                    if !stale {
                        return Ok(Err(Held::new(mbox, LockKind::Dotlock, dotlock_pid(&path))));
                    }
                    tracing::warn!(lock = %path.display(), "removing stale dotlock");
                    let _ = fs::remove_file(&path);
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create dotlock {}: {e}", path.display()),
                    ))
                }
            }
        }
        Ok(Err(Held::new(mbox, LockKind::Dotlock, dotlock_pid(&path))))
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The pid a dotlock holds as text, if it does (some programs leave it
/// empty or write it in binary).
fn dotlock_pid(path: &Path) -> Option<u32> {
    let mut text = [0u8; 32];
    let n = File::open(path).and_then(|mut f| f.read(&mut text)).ok()?;
    std::str::from_utf8(&text[..n])
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

/// Who holds the fcntl lock that kept us out, by `F_GETLK` (the pid, in
/// our pid namespace; none for an open file description lock).
fn fcntl_holder(file: &File) -> Option<u32> {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_GETLK(&mut probe)).ok()?;
    if probe.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    u32::try_from(probe.l_pid).ok().filter(|pid| *pid > 0)
}

/// Tries once, without waiting, to lock the mbox at `path` (creating it
/// and its directories, durably, when missing).
pub fn try_lock(path: &Path) -> Result<Result<Locked, Held>, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    create_dir_all_durable(dir).map_err(io)?;
    let dotlock = match DotLock::try_acquire(path).map_err(io)? {
        Ok(d) => d,
        Err(held) => return Ok(Err(held)),
    };
    let (file, created) = match OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(io)?,
            false,
        ),
        Err(e) => return Err(io(e)),
    };
    if !file.metadata().map_err(io)?.is_file() {
        return Err(io(io::Error::other("not a regular file")));
    }
    match rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
            // Closing `file` here drops no lock of ours: we hold the
            // dotlock, so no other thread of ours has the file locked.
            let held = Held::new(path, LockKind::Fcntl, fcntl_holder(&file));
            return Ok(Err(held));
        }
        Err(e) => return Err(io(e.into())),
    }
    if created {
        fsync_dir(dir).map_err(io)?;
    }
    let len = file.metadata().map_err(io)?.len();
    Ok(Ok(Locked {
        file,
        path: path.to_path_buf(),
        len,
        _dotlock: dotlock,
    }))
}

/// Tries once, without waiting, to lock every mbox in `paths`, in that
/// order (callers pass them sorted and without duplicates). If one is held,
/// the ones already taken are released again.
pub fn try_lock_all<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<Attempt, LockError> {
    let mut locked = Vec::new();
    for path in paths {
        match try_lock(path)? {
            Ok(l) => locked.push(l),
            Err(held) => return Ok(Attempt::Held(held)),
        }
    }
    Ok(Attempt::Locked(locked))
}

/// Retries [`try_lock_all`] with growing pauses until it succeeds or
/// `lock_timeout` has passed. This sleeps: it is for callers with nothing
/// else to do meanwhile (`mailkeep pipe`), never for the group committer.
pub fn lock_all(paths: &[&Path], lock_timeout: Duration) -> Result<Vec<Locked>, LockError> {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match try_lock_all(paths.iter().copied())? {
            Attempt::Locked(locked) => return Ok(locked),
            Attempt::Held(held) => {
                let waited = start.elapsed();
                if waited >= lock_timeout {
                    return Err(LockTimeout { held, waited }.into());
                }
                std::thread::sleep(pause.min(lock_timeout - waited));
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// [`lock_all`] for one mbox.
pub fn lock(path: &Path, lock_timeout: Duration) -> Result<Locked, LockError> {
    let mut locked = lock_all(&[path], lock_timeout)?;
    Ok(locked.remove(0))
}

/// An mbox held under both locks. Appends go to the end; the caller makes
/// them durable with [`Locked::sync`] (once for any number of appends: the
/// group commit) and can take the last one back with [`Locked::truncate`].
/// Dropping it releases the locks.
#[derive(Debug)]
pub struct Locked {
    file: File,
    path: PathBuf,
    len: u64,
    _dotlock: DotLock,
}

/// Where one append landed: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Append {
    /// File length before the append.
    pub start: u64,
    /// File length after it.
    pub end: u64,
}

impl Locked {
    /// Appends one message (after `headers`), not yet fsynced. On error the
    /// file is truncated back, so it never holds a partial message.
    pub fn append(
        &mut self,
        received: DateTime<Utc>,
        sender: Option<&str>,
        headers: &str,
        message: &RawMessage,
    ) -> io::Result<Append> {
        let start = self.len;
        match self.write_message(&from_line(sender, received), headers, message) {
            Ok(()) => {
                self.len = self.file.metadata()?.len();
                Ok(Append {
                    start,
                    end: self.len,
                })
            }
            Err(e) => {
                self.truncate(start);
                Err(e)
            }
        }
    }

    fn write_message(
        &mut self,
        from_line: &str,
        headers: &str,
        message: &RawMessage,
    ) -> io::Result<()> {
        // A previous writer that died mid-append (one that did not truncate)
        // may have left the file without its closing blank line; restore the
        // separation so our From_ line starts a message.
        let pad = if self.len == 0 {
            ""
        } else {
            let mut tail = [0u8; 2];
            let n = self.len.min(2) as usize;
            self.file
                .read_exact_at(&mut tail[..n], self.len - n as u64)?;
            match &tail[..n] {
                b"\n\n" => "",
                [.., b'\n'] => "\n",
                _ => "\n\n",
            }
        };
        let mut out = BufWriter::with_capacity(256 * 1024, &self.file);
        out.write_all(pad.as_bytes())?;
        out.write_all(from_line.as_bytes())?;
        out.write_all(headers.as_bytes())?;
        let mut quoter = FromQuoter::default();
        let mut reader = message.reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            quoter.write(&buf[..n], &mut out)?;
        }
        quoter.finish(&mut out)?;
        if !message.is_empty() && !message.ends_with_newline() {
            out.write_all(b"\n")?;
        }
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Cuts the file back to `len` (taking back the appends after it) and
    /// makes that durable.
    pub fn truncate(&mut self, len: u64) {
        match self.file.set_len(len).and_then(|()| self.file.sync_data()) {
            Ok(()) => self.len = len,
            Err(e) => tracing::error!(mbox = %self.path.display(), error = %e,
                "cannot truncate a failed append; the mbox may hold a partial message"),
        }
    }

    /// Makes every append so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The mbox path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_lock(&self.file, FlockOperation::Unlock);
    }
}

/// `From sender Sat Nov 21 22:54:14 2026`. Whitespace and control
/// characters in the sender would break the separator line, so they become
/// `_` here; the exact sender is in `Return-Path`.
fn from_line(sender: Option<&str>, received: DateTime<Utc>) -> String {
    let sender: String = match sender.filter(|s| !s.is_empty()) {
        None => "MAILER-DAEMON".into(),
        Some(s) => s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    };
    let when = received
        .with_timezone(&Local)
        .format("%a %b %e %H:%M:%S %Y");
    format!("From {sender} {when}\n")
}

/// Streaming mboxrd quoting: adds one `>` to every line matching
/// `^>*From `, whatever the chunk boundaries, in constant memory (a line of
/// a million `>` is counted, not buffered).
#[derive(Debug)]
pub struct FromQuoter {
    at_line_start: bool,
    /// `>` seen at the start of the current line, not yet written.
    pending_gt: u64,
    /// How much of `From ` followed them.
    pending_from: usize,
}

impl Default for FromQuoter {
    fn default() -> Self {
        FromQuoter {
            at_line_start: true,
            pending_gt: 0,
            pending_from: 0,
        }
    }
}

const FROM: &[u8] = b"From ";

impl FromQuoter {
    fn flush_pending(&mut self, out: &mut impl Write, quote: bool) -> io::Result<()> {
        if quote {
            out.write_all(b">")?;
        }
        let gt = [b'>'; 64];
        let mut left = self.pending_gt;
        while left > 0 {
            let n = left.min(64) as usize;
            out.write_all(&gt[..n])?;
            left -= n as u64;
        }
        out.write_all(&FROM[..self.pending_from])?;
        self.pending_gt = 0;
        self.pending_from = 0;
        Ok(())
    }

    /// Quotes one chunk.
    pub fn write(&mut self, data: &[u8], out: &mut impl Write) -> io::Result<()> {
        let mut i = 0;
        while i < data.len() {
            if !self.at_line_start {
                // Copy through to the next newline in one go.
                match data[i..].iter().position(|b| *b == b'\n') {
                    Some(off) => {
                        out.write_all(&data[i..i + off + 1])?;
                        i += off + 1;
                        self.at_line_start = true;
                    }
                    None => {
                        out.write_all(&data[i..])?;
                        return Ok(());
                    }
                }
                continue;
            }
            let b = data[i];
            if self.pending_from == 0 && b == b'>' {
                self.pending_gt += 1;
                i += 1;
            } else if b == FROM[self.pending_from] {
                self.pending_from += 1;
                i += 1;
                if self.pending_from == FROM.len() {
                    self.flush_pending(out, true)?;
                    self.at_line_start = false;
                }
            } else {
                // Not a From_ line: emit what was held and reprocess `b`
                // as ordinary text.
                self.flush_pending(out, false)?;
                self.at_line_start = false;
            }
        }
        Ok(())
    }

    /// Writes whatever is still held at the end of the message.
    pub fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.flush_pending(out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut q = FromQuoter::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            q.write(c, &mut out).unwrap();
        }
        q.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn quotes_from_lines_whatever_the_chunking() {
        let input = b"From x\nFrom\n>From y\n>>From z\n>Fro\nxFrom \n>\n>>\nFrom ";
        let want = b">From x\nFrom\n>>From y\n>>>From z\n>Fro\nxFrom \n>\n>>\n>From ";
        for chunk in 1..input.len() + 1 {
            assert_eq!(
                quote_in_chunks(input, chunk),
                want.to_vec(),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn lines_of_many_gt_are_not_buffered() {
        let mut input = vec![b'>'; 100_000];
        input.extend_from_slice(b"From a\n");
        let out = quote_in_chunks(&input, 4096);
        assert_eq!(out.len(), input.len() + 1);
        assert_eq!(out[0], b'>');
    }

    #[test]
    fn append_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.mbox");
        let msg = RawMessage::from_bytes(b"Subject: a\n\nFrom here\nno newline".to_vec());
        let mut m = lock(&path, Duration::from_secs(5)).unwrap();
        m.append(Utc::now(), Some("a@b"), "X-H: 1\n", &msg).unwrap();
        m.sync().unwrap();
        drop(m);
        let first = fs::read(&path).unwrap();
        assert!(first.starts_with(b"From a@b "));
        assert!(first.ends_with(b"X-H: 1\nSubject: a\n\n>From here\nno newline\n\n"));
        let mut m = lock(&path, Duration::from_secs(5)).unwrap();
        let a = m.append(Utc::now(), None, "", &msg).unwrap();
        assert!(a.end > a.start);
        m.truncate(a.start);
        drop(m);
        assert_eq!(fs::read(&path).unwrap(), first);
        assert!(!dir.path().join("sub/x.mbox.lock").exists());
    }

    #[test]
    fn held_dotlock_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.mbox");
        fs::write(dir.path().join("x.mbox.lock"), b"1\n").unwrap();
        let err = lock(&path, Duration::from_millis(50)).unwrap_err();
        let LockError::TimedOut(t) = err else {
            panic!("not a timeout: {err}");
        };
        assert_eq!(t.held.kind, LockKind::Dotlock);
        assert_eq!(t.held.pid, Some(1), "the pid the dotlock holds");
        assert_eq!(t.held.program, comm(1));
        assert!(t.to_string().contains("held by pid 1"), "{t}");
    }

    fn comm(pid: u32) -> Option<String> {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim_end().to_string())
    }

    /// Another process holding the fcntl lock on `path` (as mutt does)
    /// until its stdin closes.
    fn fcntl_holder_process(path: &Path) -> std::process::Child {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,sys\nf=open(sys.argv[1],'a')\nfcntl.lockf(f,fcntl.LOCK_EX)\n\
                 print('locked',flush=True)\nsys.stdin.read()\n",
            )
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed by the tests");
        let mut line = String::new();
        io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        child
    }

    #[test]
    fn a_held_fcntl_lock_names_its_holder_and_leaves_no_dotlock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.mbox");
        let mut holder = fcntl_holder_process(&path);
        let held = match try_lock(&path).unwrap() {
            Ok(_) => panic!("locked an mbox another process holds"),
            Err(held) => held,
        };
        assert_eq!(held.kind, LockKind::Fcntl);
        assert_eq!(held.pid, Some(holder.id()), "F_GETLK names the holder");
        assert_eq!(held.program, comm(holder.id()));
        assert!(held.program.is_some(), "/proc/PID/comm is readable here");
        assert!(
            !dir.path().join("x.mbox.lock").exists(),
            "a failed attempt keeps no dotlock"
        );
        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert!(
            try_lock(&path).unwrap().is_ok(),
            "free once the holder exits"
        );
    }

    #[test]
    fn locking_several_mboxes_takes_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.mbox");
        let b = dir.path().join("b.mbox");
        fs::write(dir.path().join("b.mbox.lock"), b"4242\n").unwrap();
        match try_lock_all([a.as_path(), b.as_path()]).unwrap() {
            Attempt::Locked(_) => panic!("b is held"),
            Attempt::Held(held) => {
                assert_eq!(held.mbox, b);
                assert_eq!(held.pid, Some(4242));
            }
        }
        // Nothing of a is kept while b is held: no hold-and-wait.
        assert!(!dir.path().join("a.mbox.lock").exists());
        assert!(try_lock(&a).unwrap().is_ok());
        fs::remove_file(dir.path().join("b.mbox.lock")).unwrap();
        match try_lock_all([a.as_path(), b.as_path()]).unwrap() {
            Attempt::Locked(l) => assert_eq!(l.len(), 2),
            Attempt::Held(held) => panic!("{held}"),
        }
    }

    #[test]
    fn stale_dotlock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.mbox");
        let lockfile = dir.path().join("x.mbox.lock");
        fs::write(&lockfile, b"1\n").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lockfile)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let msg = RawMessage::from_bytes(b"a\n".to_vec());
        let mut m = lock(&path, Duration::from_secs(5)).unwrap();
        m.append(Utc::now(), None, "", &msg).unwrap();
        m.sync().unwrap();
        drop(m);
        assert!(fs::read(&path).unwrap().ends_with(b"a\n\n"));
        assert!(!lockfile.exists());
    }
}
