//! Raw message bytes, in memory while small and in an anonymous spool file
//! past a threshold.
//!
//! The spool file is created with `O_TMPFILE` semantics (`tempfile::tempfile_in`):
//! it has no name, so a crash leaves nothing behind to clean up. Readers use
//! positional reads, so any number of destinations can stream the same
//! message at once without sharing a file offset.
//!
//! Each message has one BLAKE3 hash, [`RawMessage::hash`]: its identity in
//! the store, in the filter's dedup ledger and in the `b3:` id the
//! filter's reply names. A [`SpoolWriter`] computes it as the bytes arrive,
//! so nobody reads a spool file just to hash it; every clone shares it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Messages up to this size stay in memory; larger ones go to the spool
/// directory. 1 MiB covers the large majority of mail while bounding the
/// memory a burst of concurrent captures can take.
pub const DEFAULT_SPOOL_THRESHOLD: usize = 1024 * 1024;

/// How much of the start of a message [`RawMessage::head`] reads at most
/// when looking for the end of the header section.
const MAX_HEAD: usize = 1024 * 1024;

#[derive(Debug, Clone)]
enum Storage {
    Memory(Arc<Vec<u8>>),
    File(Arc<File>),
}

/// The message exactly as received. Cheap to clone (shared storage).
#[derive(Debug, Clone)]
pub struct RawMessage {
    storage: Storage,
    len: u64,
    eight_bit: bool,
    ends_with_newline: bool,
    /// BLAKE3 of the bytes, once known.
    hash: Arc<OnceLock<blake3::Hash>>,
}

impl RawMessage {
    /// A message held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> RawMessage {
        let eight_bit = !bytes.is_ascii();
        let ends_with_newline = bytes.last() == Some(&b'\n');
        RawMessage {
            len: bytes.len() as u64,
            storage: Storage::Memory(Arc::new(bytes)),
            eight_bit,
            ends_with_newline,
            hash: Arc::default(),
        }
    }

    /// The BLAKE3 hash of the bytes, computed at most once per message
    /// (while spooling, for one that came through a [`SpoolWriter`]) and
    /// shared by every clone.
    pub fn hash(&self) -> io::Result<blake3::Hash> {
        if let Some(hash) = self.hash.get() {
            return Ok(*hash);
        }
        let hash = match &self.storage {
            Storage::Memory(bytes) => blake3::hash(bytes),
            Storage::File(_) => {
                let mut hasher = blake3::Hasher::new();
                io::copy(&mut self.reader(), &mut hasher)?;
                hasher.finalize()
            }
        };
        Ok(*self.hash.get_or_init(|| hash))
    }

    /// The hash, when it is known without reading the message.
    pub fn known_hash(&self) -> Option<blake3::Hash> {
        self.hash.get().copied()
    }

    /// Reads a whole stream through a [`SpoolWriter`].
    pub fn from_reader(
        mut input: impl Read,
        spool_dir: &Path,
        threshold: usize,
        limit: Option<u64>,
    ) -> io::Result<RawMessage> {
        let mut writer = SpoolWriter::new(spool_dir, threshold).with_limit(limit);
        io::copy(&mut input, &mut writer)?;
        writer.finish()
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a message of zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when any byte has the high bit set (needs 8BITMIME/SMTPUTF8 to
    /// relay unchanged).
    pub fn is_8bit(&self) -> bool {
        self.eight_bit
    }

    /// True when the last byte is `\n`.
    pub fn ends_with_newline(&self) -> bool {
        self.ends_with_newline
    }

    /// True when the bytes are in a spool file rather than in memory.
    pub fn is_spooled(&self) -> bool {
        matches!(self.storage, Storage::File(_))
    }

    /// A reader over the whole message from its first byte.
    pub fn reader(&self) -> RawMessageReader {
        RawMessageReader {
            storage: self.storage.clone(),
            pos: 0,
            len: self.len,
        }
    }

    /// The header section: bytes up to and including the first empty line
    /// (`\n\n` or `\r\n\r\n`), or the first 1 MiB when there is none.
    pub fn head(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.reader().take(MAX_HEAD as u64).read_to_end(&mut buf)?;
        if let Some(end) = header_end(&buf) {
            buf.truncate(end);
        }
        Ok(buf)
    }

    /// Copies the whole message into `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<u64> {
        io::copy(&mut self.reader(), out)
    }

    /// The bytes, when the message is held in memory (no copy).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::Memory(b) => Some(b),
            Storage::File(_) => None,
        }
    }

    /// The whole message in memory. For tests and small messages only.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len as usize);
        self.reader().read_to_end(&mut v)?;
        Ok(v)
    }
}

/// Position just past the blank line that ends the header section.
fn header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    // A message that starts with a blank line has an empty header section.
    if buf.starts_with(b"\n") {
        return Some(1);
    }
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    while let Some(off) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

/// A reader over a [`RawMessage`] with its own position.
#[derive(Debug)]
pub struct RawMessageReader {
    storage: Storage,
    pos: u64,
    len: u64,
}

impl Read for RawMessageReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let want = out.len().min((self.len - self.pos) as usize);
        let n = match &self.storage {
            Storage::Memory(v) => {
                let start = self.pos as usize;
                out[..want].copy_from_slice(&v[start..start + want]);
                want
            }
            Storage::File(f) => f.read_at(&mut out[..want], self.pos)?,
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file shorter than the message it holds",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Receives a message in pieces: memory first, a spool file past the
/// threshold. [`SpoolWriter::finish`] turns it into a [`RawMessage`].
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    threshold: usize,
    limit: Option<u64>,
    buf: Vec<u8>,
    file: Option<File>,
    len: u64,
    eight_bit: bool,
    last: Option<u8>,
    hasher: blake3::Hasher,
}

impl SpoolWriter {
    /// A writer that spills to an unnamed file in `dir` past `threshold`.
    pub fn new(dir: &Path, threshold: usize) -> SpoolWriter {
        SpoolWriter {
            dir: dir.to_path_buf(),
            threshold,
            limit: None,
            buf: Vec::new(),
            file: None,
            len: 0,
            eight_bit: false,
            last: None,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Refuses (with `ErrorKind::FileTooLarge`) to hold more than `limit` bytes.
    pub fn with_limit(mut self, limit: Option<u64>) -> SpoolWriter {
        self.limit = limit;
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before the first byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The finished message. The spool file, if any, is flushed but not
    /// fsynced: it is a scratch copy, durability is the destinations' job.
    pub fn finish(mut self) -> io::Result<RawMessage> {
        let storage = match self.file.take() {
            Some(mut f) => {
                f.flush()?;
                Storage::File(Arc::new(f))
            }
            None => Storage::Memory(Arc::new(std::mem::take(&mut self.buf))),
        };
        Ok(RawMessage {
            storage,
            len: self.len,
            eight_bit: self.eight_bit,
            ends_with_newline: self.last == Some(b'\n'),
            hash: Arc::new(OnceLock::from(self.hasher.finalize())),
        })
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if let Some(limit) = self.limit {
            if self.len + data.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("message larger than the configured limit of {limit} bytes"),
                ));
            }
        }
        if self.file.is_none() && self.buf.len() + data.len() > self.threshold {
            let mut f = spool_file(&self.dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create spool file in {}: {e}", self.dir.display()),
                )
            })?;
            f.write_all(&self.buf)?;
            self.buf = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => self.buf.extend_from_slice(data),
        }
        // `is_ascii` checks a word at a time; this runs on every byte of
        // every message.
        self.eight_bit = self.eight_bit || !data.is_ascii();
        self.last = data.last().copied();
        self.len += data.len() as u64;
        self.hasher.update(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// An unnamed file in the spool directory, which is created (0700: it
/// holds mail) when missing; its parent must exist.
fn spool_file(dir: &Path) -> io::Result<std::fs::File> {
    match tempfile::tempfile_in(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            tempfile::tempfile_in(dir)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stays_in_memory_large_spills() {
        let dir = tempfile::tempdir().unwrap();
        let small = RawMessage::from_reader(&b"a: b\n\nhi\n"[..], dir.path(), 16, None).unwrap();
        assert!(!small.is_spooled());
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let big = RawMessage::from_reader(&data[..], dir.path(), 1024, None).unwrap();
        assert!(big.is_spooled());
        assert_eq!(big.len(), data.len() as u64);
        assert_eq!(big.to_vec().unwrap(), data);
        assert!(big.is_8bit());
        // Two readers at once do not disturb each other.
        let mut r1 = big.reader();
        let mut r2 = big.reader();
        let mut a = [0u8; 10];
        let mut b = [0u8; 10];
        r1.read_exact(&mut a).unwrap();
        r2.read_exact(&mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn one_hash_computed_while_spooling_and_shared_by_clones() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for threshold in [16, 1 << 20] {
            let mut w = SpoolWriter::new(dir.path(), threshold);
            for chunk in data.chunks(777) {
                w.write_all(chunk).unwrap();
            }
            let m = w.finish().unwrap();
            assert_eq!(m.is_spooled(), threshold == 16);
            assert_eq!(
                m.known_hash(),
                Some(blake3::hash(&data)),
                "known without a read"
            );
            assert_eq!(m.clone().hash().unwrap(), blake3::hash(&data));
        }
        let m = RawMessage::from_bytes(b"Subject: x\n\nbody\n".to_vec());
        assert_eq!(m.known_hash(), None);
        let clone = m.clone();
        assert_eq!(m.hash().unwrap(), blake3::hash(b"Subject: x\n\nbody\n"));
        assert_eq!(clone.known_hash(), m.known_hash(), "clones share it");
    }

    #[test]
    fn limit_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let err = RawMessage::from_reader(&[b'x'; 100][..], dir.path(), 10, Some(50)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn head_stops_at_blank_line() {
        let m = RawMessage::from_bytes(b"A: 1\r\nB: 2\r\n\r\nbody\r\n".to_vec());
        assert_eq!(m.head().unwrap(), b"A: 1\r\nB: 2\r\n\r\n");
        let m = RawMessage::from_bytes(b"A: 1\nB: 2\n\nbody\n".to_vec());
        assert_eq!(m.head().unwrap(), b"A: 1\nB: 2\n\n");
        let m = RawMessage::from_bytes(b"no header end".to_vec());
        assert_eq!(m.head().unwrap(), b"no header end");
        let m = RawMessage::from_bytes(Vec::new());
        assert!(m.head().unwrap().is_empty());
        assert!(!m.ends_with_newline());
    }
}
