//! Where archived copies go, and how a capture path gets them there:
//! [`Archiver::ready`] then the [`GroupCommitter`] (`serve`, `import`), or
//! [`Archiver::archive`], a batch of one (`mailkeep pipe`); either answers
//! only when every copy is durable.
//!
//! Writing goes through a [`Batch`], in these steps:
//! 0. *lock*: the message's mboxes are locked, all or none, before anything
//!    is written: without waiting in the group committer
//!    ([`Batch::try_lock`]; a message whose lock is held waits elsewhere, see
//!    [`GroupCommitter`]), with waiting in a one-message archive
//!    ([`Batch::lock`], `mailkeep pipe`). The batch holds them until it ends.
//! 1. *stage*: each destination of each message writes its copy without
//!    publishing it (Maildir `tmp/`, a hidden `.eml` temporary, an mbox
//!    append under the mbox's locks).
//!    A message whose staging fails anywhere is taken back at once (its
//!    temporaries removed, its mbox appends truncated away), so a message
//!    is all-or-nothing.
//! 2. *sync*: one fsync per touched file: every mbox once, however many
//!    messages the batch appended to it, and every new file.
//! 3. *publish*: link into `new/`, link to the final `.eml` name.
//! 4. *sync directories*: one fsync per directory, however many messages.
//!
//! The native store (`archive = ["store"]`) joins step 2: its records were
//! prepared (hashed, indexed, compressed) by [`Archiver::ready`] before the
//! committer, or at staging when the caller did not, and the whole batch
//! is committed to it in one segment append and one catalog transaction
//! after the files are synced and before anything is published; if that
//! fails, the batch is taken back like a failed fsync.
//!
//! Only then are the messages reported durable and the mbox locks released.
//! A batch of one is a plain synchronous archive; [`GroupCommitter`] makes
//! batches of whatever concurrent captures are waiting, so they share the
//! fsyncs (group commit) instead of paying for them one message at a time.
//! A batch holds each mbox once, and nobody holds one mbox lock while
//! waiting for another (a message's locks are taken in sorted path order,
//! all or none; see [`mbox`]), so no wait, in this process or across
//! processes, can deadlock.
//!
//! A publish step failing after other copies of the same message were
//! published (a link or directory fsync error, rare) fails the capture; the
//! copies already published stay, so the retry may leave a duplicate in
//! them. That is the only duplicate this layer makes.
//!
//! A destination never knows which front-end called it.

#![forbid(unsafe_code)]

pub mod budget;
pub mod durable;
pub mod eml;
pub mod filer;
pub mod forward;
mod group;
pub mod maildir;
pub mod mbox;
pub mod private;
mod unique;

pub use group::{
    BatchLimits, GroupCommitter, GroupStats, Reply, DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH_BYTES,
};

use crate::budget::{ByteBudget, Share};
use mailkeep_envelope::block::{envelope_headers, line_ending};
use mailkeep_envelope::Envelope;
use mailkeep_rules::{Delivery, DestKind, HeaderInfo, Plan, RuleSet, TemplateError};
use mailkeep_store::{Prepared as StorePrepared, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// The native store, when `[store]` is configured.
    pub store: Option<Arc<Store>>,
    /// Archive copies as email, when `[forward]` is configured.
    pub forward: Option<Arc<forward::ForwardConfig>>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            hostname: hostname(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            store: None,
            forward: None,
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
    /// The native store could not take the message.
    #[error("store: {0}")]
    Store(String),
    /// An mbox stayed locked by another program past `lock_timeout`.
    #[error("mbox: {0}")]
    Locked(mbox::LockTimeout),
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

impl From<mbox::LockError> for ArchiveError {
    fn from(e: mbox::LockError) -> ArchiveError {
        match e {
            mbox::LockError::TimedOut(t) => ArchiveError::Locked(t),
            mbox::LockError::Io { path, source } => ArchiveError::Write {
                kind: DestKind::Mbox,
                path,
                source,
            },
        }
    }
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
    /// For the store: what the commit did (a delivery it already held, a
    /// message body new to it).
    pub stored: Option<mailkeep_store::Stored>,
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

    /// The destination settings in use.
    pub fn options(&self) -> &ArchiveOptions {
        &self.options
    }

    /// The same destinations with no rules: archives nothing (a listener
    /// with `no_archive = true`).
    pub fn without_rules(&self) -> Archiver {
        Archiver {
            rules: RuleSet::empty(),
            options: self.options.clone(),
        }
    }

    /// Attaches `[forward]` for `archive = ["forward:ADDR"]` (and the
    /// archive-copy marker check).
    pub fn set_forward(&mut self, forward: Option<Arc<forward::ForwardConfig>>) {
        self.options.forward = forward;
    }

    /// Attaches the native store for `archive = ["store"]`.
    pub fn set_store(&mut self, store: Option<Arc<Store>>) {
        self.options.store = store;
    }

    /// Runs the rules only: what [`Archiver::archive`] would write.
    pub fn plan(&self, env: &Envelope) -> Result<Plan, ArchiveError> {
        let head = env.message.head().map_err(ArchiveError::Read)?;
        if let Some(fwd) = &self.options.forward {
            if forward::copy::is_archive_copy(&head, &fwd.marker_key) {
                // Our own archive copy coming back (a loop through the
                // relay or a reinjection port): never archived again.
                tracing::info!("archive copy made by this mailkeep: not archived again");
                return Ok(Plan::default());
            }
        }
        Ok(self.rules.plan(env, &HeaderInfo::parse(&head))?)
    }

    /// The CPU work of archiving `env` that needs no lock and no order: the
    /// rules' plan and, when the plan writes the store, the store's
    /// preparation (parse, hash, index text, compress, seal). Capture paths
    /// run it on their own threads, in parallel, before the committer, so the
    /// committer only writes, fsyncs and commits.
    ///
    /// The store's preparation first takes what it needs from `budget`
    /// ([`Store::preparation_memory`]); the share returned is shrunk to
    /// what the prepared record still holds until its commit, and is to be
    /// dropped once the message is answered. A plan without the store takes
    /// nothing (the plan reads only the header).
    pub fn ready(
        &self,
        env: &Envelope,
        budget: &Arc<ByteBudget>,
    ) -> Result<(Ready, Option<Share>), ArchiveError> {
        let plan = self.plan(env)?;
        let (Some(d), Some(store)) = (
            plan.deliveries.iter().find(|d| d.kind == DestKind::Store),
            &self.options.store,
        ) else {
            return Ok((Ready { plan, store: None }, None));
        };
        let mut share = budget.take(store.preparation_memory(env));
        let prepared = store.prepare(env).map_err(|e| ArchiveError::Write {
            kind: DestKind::Store,
            path: d.path.clone(),
            source: store_io(e),
        })?;
        share.shrink(prepared.memory() as u64);
        Ok((
            Ready {
                plan,
                store: Some(prepared),
            },
            Some(share),
        ))
    }

    /// Archives one envelope and returns once every copy is durable.
    pub fn archive(&self, env: &Envelope) -> Result<Report, ArchiveError> {
        let plan = self.plan(env)?;
        let written = write_all(&plan.deliveries, env, &self.options)?;
        Ok(Report { plan, written })
    }
}

/// A message's plan and store record, made by [`Archiver::ready`].
pub struct Ready {
    /// The rules' decisions.
    pub plan: Plan,
    /// The store's record of the message, when the plan writes the store.
    pub store: Option<StorePrepared>,
}

/// Writes every delivery durably, all or nothing (a batch of one).
pub fn write_all(
    deliveries: &[Delivery],
    env: &Envelope,
    opts: &ArchiveOptions,
) -> Result<Vec<Written>, ArchiveError> {
    let mut batch = Batch::default();
    batch.lock(deliveries, opts.lock_timeout)?;
    let staged = batch.stage(deliveries, env, opts)?;
    let mut results = batch.finish(vec![staged]);
    results.pop().unwrap_or_else(|| Ok(Vec::new()))
}

/// One message after publishing: its copies (by plan position), the first
/// error, and the copies whose temporary names are still to be removed.
type Published = (Vec<Option<Written>>, Option<ArchiveError>, Vec<Copy>);

/// One staged copy of a message.
enum Copy {
    Mbox {
        path: PathBuf,
        append: mbox::Append,
    },
    Maildir(maildir::Prepared),
    Eml(eml::Prepared),
    /// Taken out at commit time.
    Store(Option<Box<StorePrepared>>),
}

/// The staged copies of one message, in the plan's order.
pub struct Staged {
    copies: Vec<(usize, Copy, u64)>,
    deliveries: Vec<Delivery>,
    /// The store this message goes to, if any.
    store: Option<Arc<Store>>,
    /// Its path, for reports.
    store_path: Option<String>,
}

/// Messages written together and made durable together (see the crate
/// documentation).
#[derive(Default)]
pub struct Batch {
    mboxes: BTreeMap<PathBuf, mbox::Locked>,
}

/// The mboxes among `deliveries`, sorted and without duplicates: the
/// order in which they are locked.
pub fn mboxes_of(deliveries: &[Delivery]) -> Vec<PathBuf> {
    let set: BTreeSet<&PathBuf> = deliveries
        .iter()
        .filter(|d| d.kind == DestKind::Mbox)
        .map(|d| &d.path)
        .collect();
    set.into_iter().cloned().collect()
}

impl Batch {
    /// Tries once, without waiting, to lock the mboxes of `deliveries` that
    /// the batch does not hold yet, all or none. `Ok(Some(held))` says which
    /// lock someone else holds; the batch is then as it was.
    pub fn try_lock(
        &mut self,
        deliveries: &[Delivery],
    ) -> Result<Option<mbox::Held>, ArchiveError> {
        let missing: Vec<PathBuf> = mboxes_of(deliveries)
            .into_iter()
            .filter(|p| !self.mboxes.contains_key(p))
            .collect();
        match mbox::try_lock_all(missing.iter().map(PathBuf::as_path))? {
            mbox::Attempt::Locked(locked) => {
                self.adopt(locked);
                Ok(None)
            }
            mbox::Attempt::Held(held) => Ok(Some(held)),
        }
    }

    /// Locks the mboxes of `deliveries` that the batch does not hold yet,
    /// waiting up to `lock_timeout` ([`mbox::lock_all`]: it sleeps, so only
    /// for a batch of one message with nothing else to do).
    pub fn lock(
        &mut self,
        deliveries: &[Delivery],
        lock_timeout: Duration,
    ) -> Result<(), ArchiveError> {
        let missing: Vec<PathBuf> = mboxes_of(deliveries)
            .into_iter()
            .filter(|p| !self.mboxes.contains_key(p))
            .collect();
        let paths: Vec<&std::path::Path> = missing.iter().map(PathBuf::as_path).collect();
        let locked = mbox::lock_all(&paths, lock_timeout)?;
        self.adopt(locked);
        Ok(())
    }

    /// Takes mboxes locked elsewhere (by the group committer's lock waiter)
    /// into the batch, which releases them when it ends.
    pub fn adopt(&mut self, locked: Vec<mbox::Locked>) {
        for l in locked {
            self.mboxes.insert(l.path().to_path_buf(), l);
        }
    }

    /// Stages every delivery of one message, whose mboxes the batch must
    /// hold already ([`Batch::try_lock`], [`Batch::lock`]); on failure
    /// nothing of this message remains and the other messages of the batch
    /// are untouched.
    pub fn stage(
        &mut self,
        deliveries: &[Delivery],
        env: &Envelope,
        opts: &ArchiveOptions,
    ) -> Result<Staged, ArchiveError> {
        self.stage_ready(deliveries, env, opts, None)
    }

    /// [`Batch::stage`] with the store's record already prepared
    /// ([`Archiver::ready`]); without one it is prepared here.
    pub fn stage_ready(
        &mut self,
        deliveries: &[Delivery],
        env: &Envelope,
        opts: &ArchiveOptions,
        mut prepared: Option<StorePrepared>,
    ) -> Result<Staged, ArchiveError> {
        let store = deliveries
            .iter()
            .any(|d| d.kind == DestKind::Store)
            .then(|| opts.store.clone())
            .flatten();
        let mut staged = Staged {
            copies: Vec::with_capacity(deliveries.len()),
            deliveries: deliveries.to_vec(),
            store_path: store
                .as_ref()
                .map(|s| s.config().path.display().to_string()),
            store,
        };
        if deliveries.is_empty() {
            return Ok(staged);
        }
        let head = env.message.head().map_err(ArchiveError::Read)?;
        let mut order: Vec<usize> = (0..deliveries.len()).collect();
        order.sort_by(|&a, &b| {
            (deliveries[a].kind, &deliveries[a].path)
                .cmp(&(deliveries[b].kind, &deliveries[b].path))
        });
        for i in order {
            let d = &deliveries[i];
            match self.stage_one(d, env, &head, opts, &mut prepared) {
                Ok((copy, bytes)) => staged.copies.push((i, copy, bytes)),
                Err(source) => {
                    self.unstage(staged);
                    return Err(ArchiveError::Write {
                        kind: d.kind,
                        path: d.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(staged)
    }

    fn stage_one(
        &mut self,
        d: &Delivery,
        env: &Envelope,
        head: &[u8],
        opts: &ArchiveOptions,
        prepared: &mut Option<StorePrepared>,
    ) -> io::Result<(Copy, u64)> {
        let headers = if d.envelope_headers {
            envelope_headers(env, &opts.hostname, line_ending(head))
        } else {
            String::new()
        };
        let size = headers.len() as u64 + env.message.len();
        Ok(match d.kind {
            DestKind::Mbox => {
                let locked = self.mboxes.get_mut(&d.path).ok_or_else(|| {
                    io::Error::other("staged before its mbox was locked (a mailkeep bug)")
                })?;
                let append =
                    locked.append(env.received, env.sender.as_deref(), &headers, &env.message)?;
                let bytes = append.end - append.start;
                (
                    Copy::Mbox {
                        path: d.path.clone(),
                        append,
                    },
                    bytes,
                )
            }
            DestKind::Maildir => (
                Copy::Maildir(maildir::prepare(
                    &d.path,
                    &opts.hostname,
                    &headers,
                    &env.message,
                )?),
                size,
            ),
            DestKind::Eml => (
                Copy::Eml(eml::prepare(
                    &d.path,
                    env.received,
                    &opts.hostname,
                    &headers,
                    &env.message,
                )?),
                size,
            ),
            DestKind::Forward => {
                let fwd = opts.forward.as_ref().ok_or_else(|| {
                    io::Error::other("archive to forward:ADDR but no [forward] is configured")
                })?;
                let original = env.message.to_vec()?;
                let rcpt = forward::archive_recipient(
                    head,
                    &d.path.to_string_lossy(),
                    fwd.trust_archive_header,
                );
                let copy = forward::copy::build(env, &original, &opts.hostname, &fwd.marker_key);
                let meta = forward::SpoolMeta {
                    id: copy.id.clone(),
                    rcpt,
                    mail_from: match fwd.sender {
                        forward::CopySender::Original => env.sender.clone(),
                        forward::CopySender::Null => None,
                    },
                    created: env.received.timestamp().max(0) as u64,
                    eight_bit: copy.eight_bit,
                    smtputf8: copy.smtputf8,
                };
                let header = forward::spool_header(&meta);
                let size = copy.bytes.len() as u64;
                let message = mailkeep_envelope::RawMessage::from_bytes(copy.bytes);
                (
                    Copy::Maildir(maildir::prepare(
                        &fwd.spool,
                        &opts.hostname,
                        &header,
                        &message,
                    )?),
                    size,
                )
            }
            DestKind::Store => {
                let store = opts.store.as_ref().ok_or_else(|| {
                    io::Error::other("archive = [\"store\"] but no [store] is configured")
                })?;
                // The store keeps the envelope in its catalog, not in the bytes.
                let prepared = match prepared.take() {
                    Some(p) => p,
                    None => store.prepare(env).map_err(store_io)?,
                };
                (Copy::Store(Some(Box::new(prepared))), env.message.len())
            }
        })
    }

    /// Takes back every staged copy of one message. mbox appends are
    /// truncated in reverse order; a message is always the last thing
    /// appended to its mboxes when it is taken back, because messages of
    /// a batch are staged one after the other.
    fn unstage(&mut self, staged: Staged) {
        for (_, copy, _) in staged.copies.into_iter().rev() {
            match copy {
                Copy::Mbox { path, append } => {
                    if let Some(m) = self.mboxes.get_mut(&path) {
                        m.truncate(append.start);
                    }
                }
                Copy::Maildir(p) => p.remove_tmp(),
                Copy::Eml(p) => p.remove_tmp(),
                Copy::Store(_) => {}
            }
        }
    }

    /// Syncs, publishes and syncs again; returns one result per staged
    /// message, in order, and releases the mbox locks.
    pub fn finish(mut self, mut messages: Vec<Staged>) -> Vec<Result<Vec<Written>, ArchiveError>> {
        // Step 2: one fsync per file.
        let mut sync_error = None;
        for m in self.mboxes.values() {
            if let Err(e) = m.sync() {
                sync_error.get_or_insert((DestKind::Mbox, m.path().to_path_buf(), e));
            }
        }
        for staged in &messages {
            for (i, copy, _) in &staged.copies {
                let file = match copy {
                    Copy::Mbox { .. } | Copy::Store(_) => continue,
                    Copy::Maildir(p) => p.file(),
                    Copy::Eml(p) => p.file(),
                };
                if let Err(e) = file.sync_all() {
                    let d = &staged.deliveries[*i];
                    sync_error.get_or_insert((d.kind, d.path.clone(), e));
                }
            }
        }
        // Step 2b: the store, one commit for the whole batch.
        let mut stored: BTreeMap<usize, mailkeep_store::Stored> = BTreeMap::new();
        if sync_error.is_none() {
            let store = opts_store(&messages);
            if let Err((path, e)) = commit_store(&mut messages, &mut stored, store) {
                sync_error = Some((DestKind::Store, path, e));
            }
        }
        if let Some((kind, path, e)) = sync_error {
            // Nothing is published yet: take every message back.
            let n = messages.len();
            for staged in messages.into_iter().rev() {
                self.unstage(staged);
            }
            let text = e.to_string();
            return (0..n)
                .map(|_| {
                    Err(ArchiveError::Write {
                        kind,
                        path: path.clone(),
                        source: io::Error::new(e.kind(), text.clone()),
                    })
                })
                .collect();
        }
        // Step 3: publish.
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut published: Vec<Published> = Vec::new();
        for (m, staged) in messages.into_iter().enumerate() {
            let mut written: Vec<Option<Written>> = vec![None; staged.deliveries.len()];
            let mut error = None;
            let mut leftovers = Vec::new();
            for (i, copy, bytes) in staged.copies {
                let d = &staged.deliveries[i];
                let stored_here = match &copy {
                    Copy::Store(_) => stored.get(&m).cloned(),
                    _ => None,
                };
                let file = match &copy {
                    Copy::Mbox { path, .. } => Ok(path.clone()),
                    Copy::Store(_) => match stored.get(&m) {
                        Some(s) => Ok(PathBuf::from(format!(
                            "{}#delivery-{}",
                            staged.store_path.as_deref().unwrap_or("store"),
                            s.id
                        ))),
                        None => Err(io::Error::other("the store returned no result")),
                    },
                    Copy::Maildir(p) => p.publish().map(|(f, dir)| {
                        dirs.insert(dir);
                        f
                    }),
                    Copy::Eml(p) => p.publish().map(|(f, dir)| {
                        dirs.insert(dir);
                        f
                    }),
                };
                match file {
                    Ok(file) => {
                        written[i] = Some(Written {
                            kind: d.kind,
                            destination: d.path.clone(),
                            file,
                            bytes,
                            rules: d.rules.clone(),
                            stored: stored_here,
                        })
                    }
                    Err(source) => {
                        tracing::error!(destination = %d.path.display(), error = %source,
                            "publishing failed after other copies were published");
                        error.get_or_insert(ArchiveError::Write {
                            kind: d.kind,
                            path: d.path.clone(),
                            source,
                        });
                    }
                }
                leftovers.push(copy);
            }
            published.push((written, error, leftovers));
        }
        // Step 4: one fsync per directory; then the temporary names go.
        let mut dir_error: Option<(PathBuf, io::Error)> = None;
        for dir in &dirs {
            if let Err(e) = durable::fsync_dir(dir) {
                dir_error.get_or_insert((dir.clone(), e));
            }
        }
        let results = published
            .into_iter()
            .map(|(written, error, leftovers)| {
                for copy in leftovers {
                    match copy {
                        Copy::Mbox { .. } | Copy::Store(_) => {}
                        Copy::Maildir(p) => p.remove_tmp(),
                        Copy::Eml(p) => p.remove_tmp(),
                    }
                }
                if let Some(e) = error {
                    return Err(e);
                }
                let written: Vec<Written> = written.into_iter().flatten().collect();
                if let Some((dir, e)) = &dir_error {
                    if let Some(w) = written.iter().find(|w| w.file.starts_with(dir)) {
                        return Err(ArchiveError::Write {
                            kind: w.kind,
                            path: dir.clone(),
                            source: io::Error::new(e.kind(), e.to_string()),
                        });
                    }
                }
                Ok(written)
            })
            .collect();
        drop(self.mboxes);
        results
    }
}

fn store_io(e: StoreError) -> io::Error {
    io::Error::other(mailkeep_envelope::error_chain(&e))
}

/// The store the batch's messages go to (one per configuration).
fn opts_store(messages: &[Staged]) -> Option<Arc<Store>> {
    messages.iter().find_map(|m| m.store.clone())
}

/// Commits every store copy of the batch at once; fills `stored` by
/// message index.
fn commit_store(
    messages: &mut [Staged],
    stored: &mut BTreeMap<usize, mailkeep_store::Stored>,
    store: Option<Arc<Store>>,
) -> Result<(), (PathBuf, io::Error)> {
    let Some(store) = store else {
        return Ok(());
    };
    let mut owners = Vec::new();
    let mut prepared = Vec::new();
    for (m, staged) in messages.iter_mut().enumerate() {
        for (_, copy, _) in staged.copies.iter_mut() {
            if let Copy::Store(p) = copy {
                if let Some(p) = p.take() {
                    owners.push(m);
                    prepared.push(*p);
                }
            }
        }
    }
    if prepared.is_empty() {
        return Ok(());
    }
    let path = store.config().path.clone();
    let results = store.commit(prepared).map_err(|e| (path, store_io(e)))?;
    for (m, s) in owners.into_iter().zip(results) {
        stored.insert(m, s);
    }
    Ok(())
}
