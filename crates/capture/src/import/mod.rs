//! `mailkeep import`: capture front-end number four, which turns existing
//! mailboxes into envelopes for the archive.
//!
//! [`walk`] takes files and directories and yields one [`Found`] per
//! message (or per thing it could not use), streaming: every file is read in
//! fixed-size chunks and every message goes through a
//! [`mailkeep_envelope::SpoolWriter`], so a 2 GB mbox, or a 2 GB line with
//! no newline, costs a few MiB of memory at most.
//!
//! What a file is, is decided by its content, never by its name: `From ` at
//! the start is an mbox (module `mbox`), a header field is a single message
//! (`.eml`, a Maildir file), anything else is skipped as "not a mail file".
//! A directory with `cur/` and `new/` is a Maildir; any other directory is
//! walked in sorted order.
//!
//! A copy that mailkeep itself archived starts with its envelope header
//! block (read by [`mailkeep_envelope::block::Scanner`]); that block is taken off again and the envelope rebuilt
//! from it, so re-importing an archive gives back the original bytes and
//! envelope. Any other message gets a guessed envelope (module `guess`).
//!
//! Nothing here is fatal: a file or message that cannot be read is a
//! [`Found::Skipped`] with the reason, and the walk goes on.

/// Skip reasons for what is not mail to begin with; every other reason (a
/// message over the size limit, something unreadable) left mail out.
pub const SKIP_EMPTY: &str = "empty";
/// See [`SKIP_EMPTY`].
pub const SKIP_NOT_MAIL: &str = "not a mail file";
/// See [`SKIP_EMPTY`].
pub const SKIP_SEEN_DIR: &str = "directory already read";

/// True when a [`Found::Skipped`] reason means mail was left out of the
/// archive, which `mailkeep import` reports in its exit status.
pub fn skip_loses_mail(reason: &str) -> bool {
    ![SKIP_EMPTY, SKIP_NOT_MAIL, SKIP_SEEN_DIR].contains(&reason)
}

mod detect;
mod guess;
mod mbox;
mod message;
mod walk;

pub use walk::Walker;

use mailkeep_envelope::Envelope;
use std::path::PathBuf;

/// The default largest message imported: big enough for any real mail
/// (Postfix's default `message_size_limit` is 10 MB, most providers stop at
/// 50 MB), small enough that a corrupt mbox with no separators for
/// gigabytes is reported instead of archived as one "message".
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 256 * 1024 * 1024;

/// How `>From ` lines in an mbox are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MboxFormat {
    /// mboxrd (what mailkeep, mutt and dovecot write): every line matching
    /// `^>+From ` loses one `>`.
    #[default]
    Rd,
    /// mboxo (Python's `mailbox`, old Eudora/Pine): only `^>From ` loses
    /// its `>`. Ambiguous by design: a message line that really was
    /// `>From ` comes back as `From `.
    O,
}

/// Settings of one import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Where messages above the in-memory threshold are spooled (unnamed
    /// files, nothing is left behind).
    pub spool_dir: PathBuf,
    /// Messages larger than this are skipped (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: u64,
    /// Messages up to this size stay in memory (default
    /// [`mailkeep_envelope::DEFAULT_SPOOL_THRESHOLD`]).
    pub spool_threshold: usize,
    /// How mbox files are unquoted (default [`MboxFormat::Rd`]).
    pub mbox_format: MboxFormat,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            spool_dir: std::env::temp_dir(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            spool_threshold: mailkeep_envelope::DEFAULT_SPOOL_THRESHOLD,
            mbox_format: MboxFormat::default(),
        }
    }
}

/// One result of the walk.
// Found values are handed over one at a time, never stored in bulk, so the
// size of `Envelope` costs nothing worth a Box on every message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Found {
    /// A message and its envelope (`capture` is `Import` unless restored
    /// from mailkeep's own envelope header block).
    Message {
        /// The file (`.eml`, Maildir) or `file:N` (the N-th message of an
        /// mbox, from 1).
        origin: String,
        /// The envelope, message bytes included.
        envelope: Envelope,
    },
    /// Something that was not imported.
    Skipped {
        /// As for [`Found::Message`]; a directory's path when the directory
        /// itself could not be read.
        origin: String,
        /// Why: `not a mail file`, `empty`, `larger than 256 MiB`,
        /// `unreadable: <error>`, ...
        reason: String,
    },
}

/// Starts a walk over `paths` (files and directories, in the order given).
/// Nothing is read until the first call to `next`.
pub fn walk(paths: Vec<PathBuf>, opts: ImportOptions) -> Walker {
    Walker::new(paths, opts)
}

/// `256 MiB`, `10 KiB` or `1234 bytes`: limits as people set them.
fn human_size(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}
