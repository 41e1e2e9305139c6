//! Message bytes: content-addressed by BLAKE3, compressed with zstd,
//! optionally encrypted, packed into append-only segment files.
//!
//! A segment is a file of self-describing records (see [`record`]); the
//! catalog holds where each record lies and how long each segment is *as
//! committed*. Bytes past a segment's committed length are an append whose
//! catalog commit never happened (a crash between the two): the next writer
//! cuts them off before appending, so a segment never holds a record the
//! catalog cannot name except transiently.
//!
//! [`BlobBackend`] is the seam a remote object store will implement: it
//! only puts bytes at an offset of a numbered segment durably and reads
//! them back.

pub mod crypto;
pub mod record;

use crate::owner::Ownership;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first bytes of every segment file, so `file(1)` users and people
/// poking around can tell what it is.
pub const SEGMENT_MAGIC: &[u8; 16] = b"mailkeep-seg-v1\n";

/// Where a record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Segment number.
    pub segment: u32,
    /// Byte offset of the record in the segment.
    pub offset: u64,
    /// Record length, header included.
    pub len: u64,
}

/// A piece of an append: bytes in memory, or the first `len` bytes of a
/// staged file (a record too large to hold in memory).
#[derive(Debug)]
pub enum Part {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A staged file, read from its start.
    File {
        /// The file.
        file: File,
        /// How many of its bytes.
        len: u64,
    },
}

impl Part {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }

    /// True for no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Storage for segments.
pub trait BlobBackend: Send + Sync {
    /// Makes `parts`, one after another, durable at `at` in segment
    /// `segment`, dropping whatever followed `at` (a crashed append).
    fn put(&self, segment: u32, at: u64, parts: &[Part]) -> io::Result<()>;
    /// Reads one record's bytes.
    fn get(&self, loc: Location) -> io::Result<Vec<u8>>;
    /// Reads one record as a stream, for records too large to hold (the
    /// default holds it: a backend that can read ranges should override).
    fn stream(&self, loc: Location) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.get(loc)?)))
    }
    /// The current physical length of a segment (0 when it does not exist).
    fn len(&self, segment: u32) -> io::Result<u64>;
    /// Deletes a segment durably (compaction moved what it held).
    fn remove(&self, segment: u32) -> io::Result<()>;
    /// The segments that exist.
    fn list(&self) -> io::Result<Vec<u32>>;
}

/// Segments as files `NNNNNNNN.seg` in one directory.
#[derive(Debug)]
pub struct SegmentDir {
    dir: PathBuf,
    readers: Mutex<HashMap<u32, std::sync::Arc<File>>>,
    /// Owner and modes of new segments.
    own: Ownership,
}

impl SegmentDir {
    /// Segments under `dir`, which is created if needed; new directories
    /// and segments get `own`'s owner and modes, and with a configured
    /// group existing ones are brought to it.
    pub fn open(dir: &Path, own: Ownership) -> io::Result<SegmentDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(own.dir_mode())
            .create(dir)?;
        own.apply_path(dir)?;
        if own.file_mode() != 0o600 {
            for entry in std::fs::read_dir(dir)?.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".seg") {
                    own.apply_path(&entry.path())?;
                }
            }
        }
        Ok(SegmentDir {
            dir: dir.to_path_buf(),
            readers: Mutex::new(HashMap::new()),
            own,
        })
    }

    /// Segments under an existing `dir`, for reading only.
    pub fn existing(dir: &Path) -> SegmentDir {
        SegmentDir {
            dir: dir.to_path_buf(),
            readers: Mutex::new(HashMap::new()),
            own: Ownership::default(),
        }
    }

    /// The file holding a segment.
    pub fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{segment:08}.seg"))
    }

    fn reader(&self, segment: u32) -> io::Result<std::sync::Arc<File>> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = readers.get(&segment) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(File::open(self.path(segment))?);
        readers.insert(segment, f.clone());
        Ok(f)
    }
}

impl BlobBackend for SegmentDir {
    fn put(&self, segment: u32, at: u64, parts: &[Part]) -> io::Result<()> {
        let path = self.path(segment);
        let created = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .mode(self.own.file_mode())
            .truncate(false)
            .write(true)
            .open(&path)?;
        if created {
            self.own.apply(&f, false)?;
        }
        if f.metadata()?.len() != at {
            f.set_len(at)?;
        }
        let mut pos = at;
        for part in parts {
            match part {
                Part::Bytes(bytes) => {
                    f.write_all_at(bytes, pos)?;
                    pos += bytes.len() as u64;
                }
                Part::File { file, len } => {
                    // Copied file to file (copy_file_range on Linux: the
                    // bytes need not pass through this process).
                    f.seek(SeekFrom::Start(pos))?;
                    let mut from = file;
                    from.seek(SeekFrom::Start(0))?;
                    let copied = io::copy(&mut from.take(*len), &mut f)?;
                    if copied != *len {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("staged record: {copied} of {len} bytes"),
                        ));
                    }
                    pos += len;
                }
            }
        }
        f.flush()?;
        // fdatasync is enough for the bytes; the length change is metadata
        // that fdatasync also covers (it changes what a read returns).
        f.sync_data()?;
        if created {
            crate::fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn get(&self, loc: Location) -> io::Result<Vec<u8>> {
        let f = self.reader(loc.segment)?;
        let len = usize::try_from(loc.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "record length"))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, loc.offset)?;
        Ok(buf)
    }

    fn stream(&self, loc: Location) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(RangeReader {
            file: self.reader(loc.segment)?,
            at: loc.offset,
            end: loc.offset.saturating_add(loc.len),
        }))
    }

    fn remove(&self, segment: u32) -> io::Result<()> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&segment);
        match std::fs::remove_file(self.path(segment)) {
            Ok(()) => crate::fsync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn len(&self, segment: u32) -> io::Result<u64> {
        match std::fs::metadata(self.path(segment)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Positional reads of one byte range of a segment file (no shared file
/// offset, so any number of readers at once).
struct RangeReader {
    file: std::sync::Arc<File>,
    at: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.at);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the segment ends inside the record",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}
