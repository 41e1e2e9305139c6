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
//! 1. a dotlock `PATH.lock` created with `O_EXCL`; one older than 500 s is
//!    stale and removed;
//! 2. an fcntl write lock on the whole file (`l_start = 0, l_len = 0`).
//!    The issue that introduced this asked for a lock on the appended range;
//!    a lock from offset 0 covers that range and every reader's whole-file
//!    lock too, and it cannot race with a concurrent append between
//!    `fstat` and `fcntl`.
//!
//! Both are polled with a deadline so a stuck lock holder yields a temporary
//! failure, not a hung mail server. A failed append is truncated back to
//! the old length while the locks are still held, so readers never see a
//! partial message.

use crate::durable::{create_dir_all_durable, fsync_dir};
use chrono::{DateTime, Local, Utc};
use mailkeep_envelope::RawMessage;
use rustix::fs::FlockOperation;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A dotlock older than this is left over from a crash and is removed
/// (the figure mutt and procmail use).
const STALE_DOTLOCK: Duration = Duration::from_secs(500);

/// A held dotlock; removed on drop.
#[derive(Debug)]
struct DotLock {
    path: PathBuf,
}

/// Retries `attempt` until it yields a value or the deadline passes.
/// `attempt` returns `Ok(None)` for "held by someone else, try again".
/// Pauses grow from 2 ms to 100 ms: short waits stay short, long ones do
/// not spin.
fn poll<T>(
    deadline: Instant,
    what: impl Fn() -> String,
    mut attempt: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<T> {
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = attempt()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out waiting for {}", what()),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

impl DotLock {
    fn acquire(mbox: &Path, deadline: Instant) -> io::Result<DotLock> {
        let mut name = mbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let what = || format!("dotlock {}", path.display());
        let created = poll(deadline, what, || {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut f) => {
                    // The pid helps an administrator find the holder.
                    let _ = writeln!(f, "{}", std::process::id());
                    Ok(Some(()))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > STALE_DOTLOCK);
                    if stale {
                        tracing::warn!(lock = %path.display(), "removing stale dotlock");
                        let _ = fs::remove_file(&path);
                    }
                    Ok(None)
                }
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("cannot create dotlock {}: {e}", path.display()),
                )),
            }
        });
        created.map(|()| DotLock { path: path.clone() })
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn fcntl_lock(file: &File, path: &Path, deadline: Instant) -> io::Result<()> {
    poll(
        deadline,
        || format!("the fcntl lock on {}", path.display()),
        || match rustix::fs::fcntl_lock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(())),
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => Ok(None),
            Err(e) => Err(e.into()),
        },
    )
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

/// Locks the mbox at `path`, creating it (and its directories, durably)
/// when missing.
pub fn lock(path: &Path, lock_timeout: Duration) -> io::Result<Locked> {
    let dir = path.parent().unwrap_or(Path::new(""));
    create_dir_all_durable(dir)?;
    let deadline = Instant::now() + lock_timeout;
    let dotlock = DotLock::acquire(path, deadline)?;
    let (file, created) = match OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            OpenOptions::new().read(true).append(true).open(path)?,
            false,
        ),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    fcntl_lock(&file, path, deadline)?;
    if created {
        fsync_dir(dir)?;
    }
    let len = file.metadata()?.len();
    Ok(Locked {
        file,
        path: path.to_path_buf(),
        len,
        _dotlock: dotlock,
    })
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
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
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
