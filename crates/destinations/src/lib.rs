//! Where archived copies go, and the one call every capture path makes:
//! [`Archiver::archive`] — "archive this envelope, return when it is durable".
//!
//! The call runs the rules, then writes every selected destination in two
//! phases so a capture is all-or-nothing:
//! 1. *prepare*: each destination writes and fsyncs its copy without
//!    publishing it (Maildir `tmp/`, a hidden `.eml` temporary, an mbox
//!    append still under its locks). Destinations are prepared in sorted
//!    path order, so two captures never wait on each other's mbox locks in
//!    opposite orders.
//! 2. *commit*: only when every destination prepared, each one publishes
//!    (link into `new/`, link to the final `.eml` name, unlock the mbox) and
//!    fsyncs the directory.
//!
//! If any prepare fails, every prepared copy is removed again (the mbox is
//! truncated back under its lock) and the capture fails, so the capture
//! path answers "try again" and nothing is written. A commit step failing
//! after others succeeded (a rename or directory fsync error, rare) also
//! fails the capture; the copies already published stay, so the retry may
//! leave a duplicate in them. That is the only duplicate this layer makes.
//!
//! A destination never knows which front-end called it.

#![forbid(unsafe_code)]

pub mod durable;
pub mod eml;
pub mod filer;
mod headers;
pub mod maildir;
pub mod mbox;
mod unique;

pub use headers::{envelope_headers, header_value, line_ending};

use mailkeep_envelope::Envelope;
use mailkeep_rules::{Delivery, DestKind, HeaderInfo, Plan, RuleSet, TemplateError};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// How long a capture waits for an mbox lock before failing temporarily.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings shared by every destination.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// This host's name, for Maildir file names and `X-Mailkeep-Received`.
    pub hostname: String,
    /// How long to wait for mbox locks.
    pub lock_timeout: Duration,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            hostname: hostname(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// The node name from `uname(2)`.
pub fn hostname() -> String {
    let uts = rustix::system::uname();
    let name = uts.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Why a capture could not be archived. Every variant means nothing was
/// reported archived; the capture path should answer "try again later".
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The message could not be read back from the spool.
    #[error("reading the message: {0}")]
    Read(#[source] io::Error),
    /// A path template could not be expanded safely.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A destination could not be written.
    #[error("{kind}:{path}: {source}")]
    Write {
        /// The destination kind.
        kind: DestKind,
        /// The destination path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One copy that is now on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The destination kind.
    pub kind: DestKind,
    /// The destination as configured after expansion (mbox file, Maildir or eml directory).
    pub destination: PathBuf,
    /// The file that holds the copy (the mbox itself for mbox).
    pub file: PathBuf,
    /// Bytes written, envelope headers included.
    pub bytes: u64,
    /// The rules that selected it.
    pub rules: Vec<String>,
}

/// What one capture did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The rules' decisions.
    pub plan: Plan,
    /// The copies written, in the plan's order.
    pub written: Vec<Written>,
}

/// Rules plus destinations: the archiving service a capture path calls.
#[derive(Debug, Clone)]
pub struct Archiver {
    rules: RuleSet,
    options: ArchiveOptions,
}

impl Archiver {
    /// An archiver for a rule set.
    pub fn new(rules: RuleSet, options: ArchiveOptions) -> Archiver {
        Archiver { rules, options }
    }

    /// The rule set in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Runs the rules only: what [`Archiver::archive`] would write.
    pub fn plan(&self, env: &Envelope) -> Result<Plan, ArchiveError> {
        let head = env.message.head().map_err(ArchiveError::Read)?;
        Ok(self.rules.plan(env, &HeaderInfo::parse(&head))?)
    }

    /// Archives one envelope and returns once every copy is durable.
    pub fn archive(&self, env: &Envelope) -> Result<Report, ArchiveError> {
        let plan = self.plan(env)?;
        let written = write_all(&plan.deliveries, env, &self.options)?;
        Ok(Report { plan, written })
    }
}

enum Prepared {
    Mbox(mbox::Prepared),
    Maildir(maildir::Prepared),
    Eml(eml::Prepared),
}

impl Prepared {
    fn abort(self) {
        match self {
            Prepared::Mbox(p) => p.abort(),
            Prepared::Maildir(p) => p.abort(),
            Prepared::Eml(p) => p.abort(),
        }
    }
}

fn prepare(
    d: &Delivery,
    env: &Envelope,
    head: &[u8],
    opts: &ArchiveOptions,
) -> io::Result<(Prepared, u64)> {
    let headers = if d.envelope_headers {
        envelope_headers(env, &opts.hostname, line_ending(head))
    } else {
        String::new()
    };
    let size = headers.len() as u64 + env.message.len();
    let p = match d.kind {
        DestKind::Mbox => {
            let p = mbox::prepare(
                &d.path,
                env.received,
                env.sender.as_deref(),
                &headers,
                &env.message,
                opts.lock_timeout,
            )?;
            let appended = p.appended();
            return Ok((Prepared::Mbox(p), appended));
        }
        DestKind::Maildir => Prepared::Maildir(maildir::prepare(
            &d.path,
            &opts.hostname,
            &headers,
            &env.message,
        )?),
        DestKind::Eml => Prepared::Eml(eml::prepare(
            &d.path,
            env.received,
            &opts.hostname,
            &headers,
            &env.message,
        )?),
    };
    Ok((p, size))
}

/// Writes every delivery durably, all or nothing (see the crate documentation).
pub fn write_all(
    deliveries: &[Delivery],
    env: &Envelope,
    opts: &ArchiveOptions,
) -> Result<Vec<Written>, ArchiveError> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let head = env.message.head().map_err(ArchiveError::Read)?;
    let mut order: Vec<usize> = (0..deliveries.len()).collect();
    order.sort_by(|&a, &b| {
        (deliveries[a].kind, &deliveries[a].path).cmp(&(deliveries[b].kind, &deliveries[b].path))
    });
    let mut prepared: Vec<(usize, Prepared, u64)> = Vec::with_capacity(order.len());
    for &i in &order {
        let d = &deliveries[i];
        match prepare(d, env, &head, opts) {
            Ok((p, bytes)) => prepared.push((i, p, bytes)),
            Err(source) => {
                for (_, p, _) in prepared {
                    p.abort();
                }
                return Err(ArchiveError::Write {
                    kind: d.kind,
                    path: d.path.clone(),
                    source,
                });
            }
        }
    }
    let mut written: Vec<Option<Written>> = vec![None; deliveries.len()];
    let mut first_error = None;
    for (i, p, bytes) in prepared {
        let d = &deliveries[i];
        let file = match p {
            Prepared::Mbox(p) => {
                let path = p.path().to_path_buf();
                p.commit();
                Ok(path)
            }
            Prepared::Maildir(p) => p.commit(),
            Prepared::Eml(p) => p.commit(),
        };
        match file {
            Ok(file) => {
                written[i] = Some(Written {
                    kind: d.kind,
                    destination: d.path.clone(),
                    file,
                    bytes,
                    rules: d.rules.clone(),
                })
            }
            Err(source) => {
                tracing::error!(destination = %d.path.display(), error = %source,
                    "commit failed after other destinations were published");
                first_error.get_or_insert(ArchiveError::Write {
                    kind: d.kind,
                    path: d.path.clone(),
                    source,
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written.into_iter().flatten().collect()),
    }
}
