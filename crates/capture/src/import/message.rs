//! One message on its way in: bytes are fed as they are read, the
//! envelope comes out at the end.
//!
//! The start is held back until it is known whether it is mailkeep's
//! envelope header block ([`mailkeep_envelope::block::Scanner`]); after that the bytes go straight
//! to a [`SpoolWriter`] capped at the size limit, and the first
//! [`HEAD_LIMIT`] bytes are kept for guessing the envelope when there was
//! no block.

use super::guess::{self, FromLine, HEAD_LIMIT};
use super::{human_size, ImportOptions};
use chrono::{DateTime, Utc};
use mailkeep_envelope::block::{Restored, Scan, Scanner};
use mailkeep_envelope::{CapturePath, Envelope, SpoolWriter};
use std::io::{self, BufWriter, Write};

/// Writes to the spool in pieces of this size: the mbox splitter hands
/// over one line at a time, and a spooled message should not cost one
/// `write(2)` per line.
const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Builder {
    out: Option<BufWriter<SpoolWriter>>,
    /// Why the message will be skipped; once set, data is dropped.
    failure: Option<String>,
    max: u64,
    scanner: Option<Scanner>,
    restored: Option<Box<Restored>>,
    head: Vec<u8>,
    fed: u64,
    from_line: Option<FromLine>,
    mtime: Option<DateTime<Utc>>,
}

impl Builder {
    /// A message with its mbox From_ line, if any, and the mtime of its
    /// file as the last resort for the received date.
    pub(crate) fn new(
        opts: &ImportOptions,
        from_line: Option<&[u8]>,
        mtime: Option<DateTime<Utc>>,
    ) -> Builder {
        let writer = SpoolWriter::new(&opts.spool_dir, opts.spool_threshold)
            .with_limit(Some(opts.max_message_size));
        Builder {
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, writer)),
            failure: None,
            max: opts.max_message_size,
            scanner: Some(Scanner::default()),
            restored: None,
            head: Vec::new(),
            fed: 0,
            from_line: from_line.map(guess::parse_from_line),
            mtime,
        }
    }

    /// True once the message is known to be skipped: the rest of it need
    /// not be read (but may be fed, it is dropped).
    pub(crate) fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The next bytes of the message.
    pub(crate) fn data(&mut self, bytes: &[u8]) {
        if self.failure.is_some() || bytes.is_empty() {
            return;
        }
        self.fed += bytes.len() as u64;
        let Some(scanner) = &mut self.scanner else {
            self.write(bytes);
            return;
        };
        match scanner.push(bytes) {
            Scan::NeedMore => {}
            Scan::NotABlock => {
                let buf = self
                    .scanner
                    .take()
                    .map(Scanner::into_buf)
                    .unwrap_or_default();
                self.write(&buf);
            }
            Scan::Block { len, restored } => {
                let buf = self
                    .scanner
                    .take()
                    .map(Scanner::into_buf)
                    .unwrap_or_default();
                self.restored = Some(restored);
                self.write(&buf[len..]);
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.restored.is_none() && self.head.len() < HEAD_LIMIT {
            let n = bytes.len().min(HEAD_LIMIT - self.head.len());
            self.head.extend_from_slice(&bytes[..n]);
        }
        if let Some(out) = &mut self.out {
            if let Err(e) = out.write_all(bytes) {
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        self.out = None;
        self.head = Vec::new();
        self.failure = Some(if e.kind() == io::ErrorKind::FileTooLarge {
            format!("larger than {}", human_size(self.max))
        } else {
            format!("cannot spool: {e}")
        });
    }

    /// The envelope, or why the message is skipped.
    pub(crate) fn finish(mut self) -> Result<Envelope, String> {
        if let Some(scanner) = self.scanner.take() {
            self.write(&scanner.into_buf());
        }
        if let Some(reason) = self.failure.take() {
            return Err(reason);
        }
        if self.fed == 0 {
            return Err(super::SKIP_EMPTY.into());
        }
        let out = self.out.take().ok_or("cannot spool")?;
        let message = match out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(SpoolWriter::finish)
        {
            Ok(m) => m,
            Err(e) => {
                self.fail(&e);
                return Err(self.failure.unwrap_or_default());
            }
        };
        if let Some(restored) = self.restored {
            return Ok(restored.into_envelope(message));
        }
        let g = guess::guess(self.from_line.as_ref(), &self.head, self.mtime);
        let mut env = Envelope::new(CapturePath::Import, message);
        if let Some(received) = g.received {
            env.received = received;
        }
        env.sender = g.sender;
        env.recipients = g.recipients;
        env.tags = vec!["import".into()];
        Ok(env)
    }
}
