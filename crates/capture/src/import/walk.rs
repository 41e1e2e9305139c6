//! The walk over files and directories, as an iterator of [`Found`].
//!
//! Directories are read one at a time, entries sorted by name, and their
//! sub-directories walked depth-first where they sort, so the order is the
//! same on every run. Hidden entries (`.name`) are skipped, except a
//! Maildir++ folder (`.Sent` with `cur/` and `new/`) inside a Maildir.
//! A symbolic link to a file is read; a symbolic link to a directory is
//! not followed (reported as skipped), which together with the set of
//! directories already read rules out loops. Paths given on the command
//! line are followed even when they are links: the user named them.
//!
//! A Maildir's `new/` then `cur/` are read, never `tmp/` (files being
//! delivered); other files at the top of a Maildir (`dovecot.index`,
//! `maildirfolder`, ...) are not mail and are passed over in silence.

use super::detect::{detect, Kind};
use super::mbox::{Sink, Splitter};
use super::message::Builder;
use super::{Found, ImportOptions};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, FileType};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files are read in pieces of this size.
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
enum Item {
    Dir(PathBuf),
    /// A file and its size when listed (for the progress figures).
    File(PathBuf, u64),
    Skip(String, String),
}

/// Walks the paths given to [`super::walk`]; see the module documentation.
#[derive(Debug)]
pub struct Walker {
    opts: ImportOptions,
    /// What is left to do, the next item last.
    stack: Vec<Item>,
    mbox: Option<MboxReader>,
    seen_dirs: HashSet<(u64, u64)>,
    bytes_done: u64,
    bytes_total: u64,
}

impl Walker {
    pub(crate) fn new(paths: Vec<PathBuf>, opts: ImportOptions) -> Walker {
        let mut walker = Walker {
            opts,
            stack: Vec::new(),
            mbox: None,
            seen_dirs: HashSet::new(),
            bytes_done: 0,
            bytes_total: 0,
        };
        let mut items = Vec::with_capacity(paths.len());
        for path in paths {
            items.push(match fs::metadata(&path) {
                Ok(m) if m.is_dir() => Item::Dir(path),
                Ok(m) => {
                    walker.bytes_total += m.len();
                    Item::File(path, m.len())
                }
                Err(e) => Item::Skip(origin(&path), unreadable(&e)),
            });
        }
        walker.stack.extend(items.into_iter().rev());
        walker
    }

    /// Bytes of the files read so far (skipped files count as read).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_done + self.mbox.as_ref().map_or(0, |m| m.src.read.min(m.size))
    }

    /// The sizes of all files found so far. It grows as directories are
    /// listed (each one when the walk reaches it, not up front, so that a
    /// huge tree costs no extra pass) and is exact once the walk is over.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    fn visit(&mut self, item: Item) -> Option<Found> {
        match item {
            Item::Skip(origin, reason) => Some(Found::Skipped { origin, reason }),
            Item::Dir(path) => self.expand_dir(path),
            Item::File(path, size) => {
                let found = self.open_file(&path, size);
                if self.mbox.is_none() {
                    self.bytes_done += size;
                }
                found
            }
        }
    }

    fn open_file(&mut self, path: &Path, size: u64) -> Option<Found> {
        let skip = |reason: String| {
            Some(Found::Skipped {
                origin: origin(path),
                reason,
            })
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return skip(unreadable(&e)),
        };
        let mtime = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .map(DateTime::<Utc>::from);
        let mut src = Source::new(file);
        let kind = match src.detect() {
            Ok(k) => k,
            Err(e) => return skip(unreadable(&e)),
        };
        match kind {
            Kind::Empty => skip(super::SKIP_EMPTY.into()),
            Kind::NotMail => skip(super::SKIP_NOT_MAIL.into()),
            Kind::Message => Some(read_message(src, path, &self.opts, mtime)),
            Kind::Mbox => {
                self.mbox = Some(MboxReader {
                    src,
                    size,
                    splitter: Splitter::new(self.opts.mbox_format),
                    sink: MboxSink {
                        path: origin(path),
                        opts: self.opts.clone(),
                        mtime,
                        number: 0,
                        current: None,
                        ready: None,
                    },
                    finished: false,
                });
                None
            }
        }
    }

    fn expand_dir(&mut self, dir: PathBuf) -> Option<Found> {
        let skip = |reason: String| {
            Some(Found::Skipped {
                origin: origin(&dir),
                reason,
            })
        };
        let meta = match fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) => return skip(unreadable(&e)),
        };
        if !self.seen_dirs.insert((meta.dev(), meta.ino())) {
            return skip(super::SKIP_SEEN_DIR.into());
        }
        let items = if is_maildir(&dir) {
            self.maildir_items(&dir)
        } else {
            match list(&dir, false) {
                Ok(entries) => entries
                    .into_iter()
                    .map(|(name, ft)| self.entry_item(dir.join(name), ft, true))
                    .collect(),
                Err(e) => return skip(unreadable(&e)),
            }
        };
        self.stack.extend(items.into_iter().rev());
        None
    }

    /// `new/`, `cur/`, then the Maildir++ folders and other directories.
    fn maildir_items(&mut self, dir: &Path) -> Vec<Item> {
        let mut items = Vec::new();
        for sub in ["new", "cur"] {
            let path = dir.join(sub);
            match list(&path, false) {
                Ok(entries) => items.extend(
                    entries
                        .into_iter()
                        .map(|(name, ft)| self.entry_item(path.join(name), ft, false)),
                ),
                Err(e) => items.push(Item::Skip(origin(&path), unreadable(&e))),
            }
        }
        match list(dir, true) {
            Ok(entries) => {
                for (name, ft) in entries {
                    let path = dir.join(&name);
                    let hidden = name.as_encoded_bytes().starts_with(b".");
                    let wanted = ft.is_dir()
                        && !matches!(name.to_str(), Some("cur" | "new" | "tmp"))
                        && (!hidden || is_maildir(&path));
                    if wanted {
                        items.push(Item::Dir(path));
                    }
                }
            }
            Err(e) => items.push(Item::Skip(origin(dir), unreadable(&e))),
        }
        items
    }

    /// What to do with one directory entry; `recurse` is false inside a
    /// Maildir's `new/` and `cur/`, which hold files only.
    fn entry_item(&mut self, path: PathBuf, ft: FileType, recurse: bool) -> Item {
        let meta = if ft.is_symlink() {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        };
        match meta {
            Err(e) => Item::Skip(origin(&path), unreadable(&e)),
            Ok(m) if m.is_file() => {
                self.bytes_total += m.len();
                Item::File(path, m.len())
            }
            Ok(m) if m.is_dir() && ft.is_symlink() => Item::Skip(
                origin(&path),
                "symbolic link to a directory, not followed".into(),
            ),
            Ok(m) if m.is_dir() && recurse => Item::Dir(path),
            Ok(_) => Item::Skip(origin(&path), "not a regular file".into()),
        }
    }
}

impl Iterator for Walker {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        loop {
            if let Some(mbox) = &mut self.mbox {
                if let Some(found) = mbox.next() {
                    return Some(found);
                }
                self.bytes_done += mbox.size;
                self.mbox = None;
            }
            let item = self.stack.pop()?;
            if let Some(found) = self.visit(item) {
                return Some(found);
            }
        }
    }
}

fn origin(path: &Path) -> String {
    path.display().to_string()
}

fn unreadable(e: &io::Error) -> String {
    format!("unreadable: {e}")
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() && dir.join("new").is_dir()
}

/// The entries of `dir` sorted by name, hidden ones only if asked.
fn list(dir: &Path, hidden: bool) -> io::Result<Vec<(OsString, FileType)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !hidden && name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        entries.push((name, entry.file_type()?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// A file read in fixed-size chunks.
#[derive(Debug)]
struct Source {
    file: File,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    eof: bool,
    /// Bytes read from the file so far.
    read: u64,
}

impl Source {
    fn new(file: File) -> Source {
        Source {
            file,
            buf: vec![0; CHUNK].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            read: 0,
        }
    }

    /// Reads more after what is buffered (or from the start of the buffer
    /// when all of it was used). Sets `eof` at the end of the file.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
        loop {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    self.read += n as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until the kind of file is known; the bytes stay buffered.
    fn detect(&mut self) -> io::Result<Kind> {
        loop {
            let full = self.end == self.buf.len();
            if let Some(kind) = detect(&self.buf[..self.end], self.eof || full) {
                return Ok(kind);
            }
            self.fill()?;
        }
    }
}

/// Reads a whole file as one message.
fn read_message(
    mut src: Source,
    path: &Path,
    opts: &ImportOptions,
    mtime: Option<DateTime<Utc>>,
) -> Found {
    let origin = origin(path);
    let mut builder = Builder::new(opts, None, mtime);
    loop {
        builder.data(&src.buf[src.pos..src.end]);
        src.pos = src.end;
        if src.eof || builder.failed() {
            break;
        }
        if let Err(e) = src.fill() {
            return Found::Skipped {
                origin,
                reason: unreadable(&e),
            };
        }
    }
    match builder.finish() {
        Ok(envelope) => Found::Message { origin, envelope },
        Err(reason) => Found::Skipped { origin, reason },
    }
}

/// An mbox being read, one message per call.
#[derive(Debug)]
struct MboxReader {
    src: Source,
    size: u64,
    splitter: Splitter,
    sink: MboxSink,
    finished: bool,
}

impl MboxReader {
    fn next(&mut self) -> Option<Found> {
        loop {
            if let Some(found) = self.sink.ready.take() {
                return Some(found);
            }
            if self.finished {
                return None;
            }
            if self.src.pos == self.src.end {
                if self.src.eof {
                    self.splitter.finish(&mut self.sink);
                    self.finished = true;
                    continue;
                }
                if let Err(e) = self.src.fill() {
                    // The message being read is lost, and so is the rest
                    // of the file: after a read error there is no telling
                    // where the next message would start.
                    self.finished = true;
                    let number = self.sink.number.max(1);
                    self.sink.current = None;
                    return Some(Found::Skipped {
                        origin: format!("{}:{number}", self.sink.path),
                        reason: unreadable(&e),
                    });
                }
                continue;
            }
            let used = self
                .splitter
                .feed(&self.src.buf[self.src.pos..self.src.end], &mut self.sink);
            self.src.pos += used;
        }
    }
}

/// Turns the splitter's events into [`Found`]s.
#[derive(Debug)]
struct MboxSink {
    path: String,
    opts: ImportOptions,
    mtime: Option<DateTime<Utc>>,
    number: usize,
    current: Option<Builder>,
    ready: Option<Found>,
}

impl Sink for MboxSink {
    fn start(&mut self, from_line: &[u8]) {
        self.number += 1;
        self.current = Some(Builder::new(&self.opts, Some(from_line), self.mtime));
    }

    fn data(&mut self, bytes: &[u8]) {
        if let Some(b) = &mut self.current {
            b.data(bytes);
        }
    }

    fn end(&mut self) {
        let origin = format!("{}:{}", self.path, self.number);
        if let Some(b) = self.current.take() {
            self.ready = Some(match b.finish() {
                Ok(envelope) => Found::Message { origin, envelope },
                Err(reason) => Found::Skipped { origin, reason },
            });
        }
    }
}
