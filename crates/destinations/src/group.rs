//! Group commit, with waiting for mbox locks kept off the commit path.
//!
//! One committer thread makes batches of whatever archive requests are
//! waiting and writes each batch with shared fsyncs (see [`crate::Batch`]).
//! Concurrent milter and SMTP sessions, and `mailkeep import`'s worker
//! threads, submit their message (made ready by [`Archiver::ready`]) and
//! wait for the reply; while a batch is being written, new requests queue up and
//! form the next batch. Under light load a batch is one message and costs
//! what a direct archive costs; under heavy load the fsyncs per message
//! fall with the batch size, so throughput is not capped at one fsync (or
//! three) per message. Every request still gets its own all-or-nothing
//! result, and nobody hears "durable" before the fsyncs of its batch. A
//! batch stops at [`BatchLimits`]: a count and a number of message bytes,
//! so a burst of large messages does not make small ones wait behind a
//! gigabyte of writes.
//!
//! The committer never waits for a lock: a wait belongs to the destination
//! that waits. Forming a batch, it tries each message's mbox locks without
//! blocking ([`crate::Batch::try_lock`]). A message whose mbox is held by
//! another program (mutt, procmail, a dovecot reader) goes to the *lock
//! waiter* and the batch goes on without it. The waiter keeps such messages
//! in lanes, one per set of mboxes, retries each lane's locks (never
//! blocking: 2 ms apart at first, growing to 100 ms) and, once it has them,
//! sends the lane's messages back to the committer *with their locks*; the
//! committer stages them in its next batch like any other, so they still
//! share fsyncs, stay all-or-nothing across their destinations (a message
//! for an mbox and a Maildir publishes neither before both are durable) and
//! hear "durable" only after their batch's fsyncs.
//!
//! Each waiting message has its own deadline: `lock_timeout` from the
//! moment the committer found its lock held. When it passes (after one last
//! try) the waiter answers that message alone with
//! [`ArchiveError::Locked`], naming the holder. So messages
//! for one held mbox wait side by side (three of them fail together after
//! one timeout, not after one, two and three), and messages that do not
//! need it are not delayed at all. One waiter thread serves every held
//! mbox: its attempts do not block, so no lane delays another.
//!
//! Lock order: nobody here holds one mbox while waiting for another. A
//! message's mboxes are taken in sorted path order all at once or not at
//! all (see [`crate::mbox`]), a batch that holds some of them simply makes
//! the waiter retry until the batch ends, and within the process the
//! dotlock keeps the committer and the waiter apart. Messages for a held
//! mbox may be overtaken by later ones for it that arrive just as it is
//! freed; mbox order between concurrent sessions was never promised.
//!
//! The threads end when the last handle is dropped, once every queued and
//! waiting request has been answered (written, or failed at its deadline).

use crate::budget::{ByteBudget, DEFAULT_BUDGET};
use crate::mbox::{self, Held, LockTimeout};
use crate::{ArchiveError, Archiver, Batch, Ready, Report};
use mailkeep_envelope::Envelope;
use mailkeep_rules::{DestKind, Plan};
use mailkeep_store::Prepared as StorePrepared;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many waiting messages one batch takes at most.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// How many message bytes one batch takes at most (at least one message,
/// whatever its size). Everyone in a batch hears "durable" only after its
/// fsyncs, so a burst of large messages must not make ten small ones wait
/// for a gigabyte of writes: 64 MiB is about half a second of a plain disk.
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 64 * 1024 * 1024;

/// The lock waiter's first pause between attempts on a lane (the
/// committer has just tried); pauses double up to [`mbox::MAX_PAUSE`].
const FIRST_RETRY: Duration = Duration::from_millis(2);

/// Called with the outcome of one request.
pub type Reply = Box<dyn FnOnce(Result<Report, ArchiveError>) + Send>;

struct Job {
    archiver: Arc<Archiver>,
    env: Envelope,
    /// Prepared by the caller ([`Archiver::ready`]), or `None` to do it here.
    ready: Option<Ready>,
    reply: Reply,
}

/// A request after the rules ran.
struct Planned {
    archiver: Arc<Archiver>,
    env: Envelope,
    plan: Plan,
    store: Option<StorePrepared>,
    reply: Reply,
}

/// What the committer receives.
enum Msg {
    /// A new request from a capture path.
    Submit(Box<Job>),
    /// Messages whose mboxes the waiter locked, with those locks.
    Ready {
        jobs: Vec<Planned>,
        locks: Vec<mbox::Locked>,
    },
    /// The last handle was dropped.
    Closed,
}

/// A message handed to the waiter.
struct Parked {
    job: Planned,
    /// Every mbox it needs, sorted: its lane.
    mboxes: Vec<PathBuf>,
    held: Held,
    since: Instant,
    deadline: Instant,
}

/// Batch statistics, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct GroupStats {
    batches: AtomicU64,
    messages: AtomicU64,
    waited: AtomicU64,
}

impl GroupStats {
    /// Batches written.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Messages written in them.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Messages that found an mbox lock held and went to the lock waiter.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }
}

/// Tells the committer when the last handle goes (the waiter holds a
/// sender too, so the channel alone would never close).
struct Handle {
    tx: mpsc::Sender<Msg>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Closed);
    }
}

/// The handle capture paths submit to. Cloning is cheap; the threads end
/// when the last handle is dropped, after finishing queued requests.
#[derive(Clone)]
pub struct GroupCommitter {
    handle: Arc<Handle>,
    stats: Arc<GroupStats>,
    budget: Arc<ByteBudget>,
}

/// How large one batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Messages ([`DEFAULT_MAX_BATCH`]).
    pub messages: usize,
    /// Message bytes ([`DEFAULT_MAX_BATCH_BYTES`]).
    pub bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits {
            messages: DEFAULT_MAX_BATCH,
            bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

impl GroupCommitter {
    /// Starts the committer and the lock waiter.
    pub fn start(limits: BatchLimits) -> std::io::Result<GroupCommitter> {
        let limits = BatchLimits {
            messages: limits.messages.max(1),
            bytes: limits.bytes.max(1),
        };
        let (tx, rx) = mpsc::channel::<Msg>();
        let (park_tx, park_rx) = mpsc::channel::<Parked>();
        let stats = Arc::new(GroupStats::default());
        let thread_stats = stats.clone();
        let to_committer = tx.clone();
        std::thread::Builder::new()
            .name("mailkeep-lockwait".into())
            .spawn(move || wait_for_locks(park_rx, to_committer))?;
        std::thread::Builder::new()
            .name("mailkeep-commit".into())
            .spawn(move || run(rx, park_tx, limits, &thread_stats))?;
        Ok(GroupCommitter {
            handle: Arc::new(Handle { tx }),
            stats,
            budget: ByteBudget::new(DEFAULT_BUDGET),
        })
    }

    /// Queues one message; `reply` is called once it is durable or failed.
    /// If the committer is gone, `reply` gets an error at once.
    pub fn submit(&self, archiver: Arc<Archiver>, env: Envelope, reply: Reply) {
        self.submit_ready(archiver, env, None, reply)
    }

    /// [`GroupCommitter::submit`] for a message the caller made ready
    /// ([`Archiver::ready`]): the committer then only writes and commits it.
    pub fn submit_ready(
        &self,
        archiver: Arc<Archiver>,
        env: Envelope,
        ready: Option<Ready>,
        reply: Reply,
    ) {
        let job = Box::new(Job {
            archiver,
            env,
            ready,
            reply,
        });
        if let Err(mpsc::SendError(Msg::Submit(job))) = self.handle.tx.send(Msg::Submit(job)) {
            (job.reply)(Err(stopped()));
        }
    }

    /// The bytes that may be between preparation and commit at once
    /// ([`crate::budget`]): callers take a share before [`Archiver::ready`]
    /// and keep it until the reply.
    pub fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Batch statistics.
    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }
}

fn stopped() -> ArchiveError {
    ArchiveError::Read(std::io::Error::other("the archive writer has stopped"))
}

/// How many messages, and how many of their bytes, a received item brings
/// into a batch.
fn weight(m: &Msg) -> (usize, u64) {
    match m {
        Msg::Submit(job) => (1, job.env.message.len()),
        Msg::Ready { jobs, .. } => (jobs.len(), jobs.iter().map(|j| j.env.message.len()).sum()),
        Msg::Closed => (0, 0),
    }
}

fn run(
    rx: mpsc::Receiver<Msg>,
    park_tx: mpsc::Sender<Parked>,
    limits: BatchLimits,
    stats: &GroupStats,
) {
    let mut park = Some(park_tx);
    // A message taken off the channel that would have passed the byte
    // limit: it opens the next batch.
    let mut next: Option<Msg> = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let (mut n, mut bytes) = weight(&first);
        let mut msgs = vec![first];
        while n < limits.messages && bytes < limits.bytes {
            match rx.try_recv() {
                Ok(m) => {
                    let (more, more_bytes) = weight(&m);
                    if bytes + more_bytes > limits.bytes {
                        next = Some(m);
                        break;
                    }
                    n += more;
                    bytes += more_bytes;
                    msgs.push(m);
                }
                Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        let mut todo = Vec::with_capacity(n);
        let mut closed = false;
        // The waiter's locks first, so that its messages find them held.
        let mut fresh = Vec::new();
        for m in msgs {
            match m {
                Msg::Ready { jobs, locks } => {
                    batch.adopt(locks);
                    todo.extend(jobs);
                }
                Msg::Submit(job) => fresh.push(job),
                Msg::Closed => closed = true,
            }
        }
        for job in fresh {
            let ready = match job.ready {
                Some(r) => Ok(r),
                None => job
                    .archiver
                    .plan(&job.env)
                    .map(|plan| Ready { plan, store: None }),
            };
            match ready {
                Ok(Ready { plan, store }) => todo.push(Planned {
                    archiver: job.archiver,
                    env: job.env,
                    plan,
                    store,
                    reply: job.reply,
                }),
                Err(e) => (job.reply)(Err(e)),
            }
        }
        let mut staged = Vec::with_capacity(todo.len());
        let mut waiting = Vec::with_capacity(todo.len());
        for p in todo {
            match batch.try_lock(&p.plan.deliveries) {
                Ok(None) => {}
                Ok(Some(held)) => {
                    stats.waited.fetch_add(1, Ordering::Relaxed);
                    to_waiter(park.as_ref(), p, held);
                    continue;
                }
                Err(e) => {
                    (p.reply)(Err(e));
                    continue;
                }
            }
            match batch.stage_ready(&p.plan.deliveries, &p.env, p.archiver.options(), p.store) {
                Ok(s) => {
                    staged.push(s);
                    waiting.push((p.plan, p.reply));
                }
                Err(e) => (p.reply)(Err(e)),
            }
        }
        if closed {
            // The waiter finishes its lanes and then lets the channel close.
            park = None;
        }
        if staged.is_empty() {
            continue;
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .messages
            .fetch_add(staged.len() as u64, Ordering::Relaxed);
        let results = batch.finish(staged);
        for ((plan, reply), result) in waiting.into_iter().zip(results) {
            reply(result.map(|written| Report { plan, written }));
        }
    }
}

/// Hands a message whose lock is held to the waiter (or, once the waiter
/// is stopping, fails it as a lock timeout that did not wait).
fn to_waiter(park: Option<&mpsc::Sender<Parked>>, job: Planned, held: Held) {
    tracing::debug!("waiting off the commit path: {held}");
    let since = Instant::now();
    let parked = Parked {
        mboxes: crate::mboxes_of(&job.plan.deliveries),
        deadline: since + job.archiver.options().lock_timeout,
        job,
        held,
        since,
    };
    let refused = match park {
        Some(tx) => tx.send(parked).err().map(|e| e.0),
        None => Some(parked),
    };
    if let Some(p) = refused {
        give_up(p.job, p.held, p.since);
    }
}

/// Answers one message whose lock stayed held. The error names the
/// holder; the capture path logs it with its verdict (one line per
/// message, from the place that applies the failure policy).
fn give_up(job: Planned, held: Held, since: Instant) {
    let timeout = LockTimeout {
        held,
        waited: since.elapsed(),
    };
    (job.reply)(Err(ArchiveError::Locked(timeout)));
}

/// The messages waiting for one set of mboxes.
struct Lane {
    waiting: Vec<Parked>,
    /// The lock that kept them out last time.
    held: Held,
    pause: Duration,
    next_try: Instant,
}

impl Lane {
    fn wake(&self) -> Instant {
        self.waiting
            .iter()
            .map(|p| p.deadline)
            .min()
            .map_or(self.next_try, |d| d.min(self.next_try))
    }
}

/// The lock waiter: retries each lane's locks until they are had (and
/// the messages go back to the committer) or each message's deadline
/// passes. Sleeping here delays no one: this thread holds no locks between
/// attempts and commits nothing.
fn wait_for_locks(rx: mpsc::Receiver<Parked>, committer: mpsc::Sender<Msg>) {
    let mut lanes: BTreeMap<Vec<PathBuf>, Lane> = BTreeMap::new();
    let mut open = true;
    loop {
        let wake = lanes.values().map(Lane::wake).min();
        let got = match (open, wake) {
            (true, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (true, Some(w)) => rx.recv_timeout(w.saturating_duration_since(Instant::now())),
            (false, None) => return,
            (false, Some(w)) => {
                std::thread::sleep(w.saturating_duration_since(Instant::now()));
                Err(RecvTimeoutError::Timeout)
            }
        };
        match got {
            Ok(p) => {
                let lane = lanes.entry(p.mboxes.clone()).or_insert_with(|| Lane {
                    waiting: Vec::new(),
                    held: p.held.clone(),
                    pause: FIRST_RETRY,
                    next_try: p.since + FIRST_RETRY,
                });
                lane.waiting.push(p);
            }
            Err(RecvTimeoutError::Disconnected) => open = false,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        lanes.retain(|mboxes, lane| {
            if lane.wake() > now {
                return true;
            }
            match mbox::try_lock_all(mboxes.iter().map(PathBuf::as_path)) {
                Ok(mbox::Attempt::Locked(locks)) => {
                    let jobs: Vec<Planned> = lane.waiting.drain(..).map(|p| p.job).collect();
                    if let Err(mpsc::SendError(Msg::Ready { jobs, .. })) =
                        committer.send(Msg::Ready { jobs, locks })
                    {
                        for job in jobs {
                            (job.reply)(Err(stopped()));
                        }
                    }
                    return false;
                }
                Ok(mbox::Attempt::Held(held)) => {
                    lane.held = held;
                    lane.pause = (lane.pause * 2).min(mbox::MAX_PAUSE);
                    lane.next_try = now + lane.pause;
                }
                Err(e) => {
                    let (path, text, kind) = match &e {
                        mbox::LockError::Io { path, source } => {
                            (path.clone(), e.to_string(), source.kind())
                        }
                        mbox::LockError::TimedOut(t) => (
                            t.held.mbox.clone(),
                            e.to_string(),
                            std::io::ErrorKind::TimedOut,
                        ),
                    };
                    for p in lane.waiting.drain(..) {
                        (p.job.reply)(Err(ArchiveError::Write {
                            kind: DestKind::Mbox,
                            path: path.clone(),
                            source: std::io::Error::new(kind, text.clone()),
                        }));
                    }
                    return false;
                }
            }
            let (expired, kept): (Vec<Parked>, Vec<Parked>) =
                lane.waiting.drain(..).partition(|p| p.deadline <= now);
            lane.waiting = kept;
            for p in expired {
                give_up(p.job, lane.held.clone(), p.since);
            }
            !lane.waiting.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArchiveOptions;
    use mailkeep_envelope::{CapturePath, RawMessage};
    use mailkeep_rules::{RawRule, RuleSet};
    use std::path::Path;
    use std::sync::mpsc::{channel, Receiver};

    /// Long enough that nothing below depends on the machine's speed.
    const WAIT: Duration = Duration::from_secs(20);

    fn archiver(archive: &[String], lock_timeout: Duration) -> Arc<Archiver> {
        let rule = RawRule {
            archive: mailkeep_rules::OneOrMany::Many(archive.to_vec()),
            ..RawRule::default()
        };
        Arc::new(Archiver::new(
            RuleSet::compile(vec![rule], true).unwrap(),
            ArchiveOptions {
                lock_timeout,
                ..ArchiveOptions::default()
            },
        ))
    }

    fn envelope(subject: &str) -> Envelope {
        let mut env = Envelope::new(
            CapturePath::Milter,
            RawMessage::from_bytes(format!("Subject: {subject}\n\nbody\n").into_bytes()),
        );
        env.recipients = vec!["r@x".into()];
        env
    }

    type Outcome = Result<Report, ArchiveError>;

    fn submit(c: &GroupCommitter, a: &Arc<Archiver>, subject: &str) -> Receiver<Outcome> {
        let (tx, rx) = channel();
        c.submit(
            a.clone(),
            envelope(subject),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx
    }

    fn hold_dotlock(mbox: &Path) -> PathBuf {
        let lock = PathBuf::from(format!("{}.lock", mbox.display()));
        std::fs::write(&lock, b"4242\n").unwrap();
        lock
    }

    fn mbox_messages(mbox: &Path) -> usize {
        std::fs::read_to_string(mbox)
            .map(|t| t.matches("Subject: ").count())
            .unwrap_or(0)
    }

    fn maildir_messages(md: &Path) -> usize {
        std::fs::read_dir(md.join("new")).map_or(0, |d| d.count())
    }

    #[test]
    fn a_batch_stops_at_its_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let archiver = archiver(
            &[format!("maildir:{}/md", dir.path().display())],
            crate::DEFAULT_LOCK_TIMEOUT,
        );
        let size = envelope("00").message.len();
        for (limits, batches) in [
            (BatchLimits::default(), 1),
            // Two messages fit, a third would pass the limit.
            (
                BatchLimits {
                    messages: 64,
                    bytes: 2 * size + size / 2,
                },
                5,
            ),
            // One message larger than the limit still makes a batch.
            (
                BatchLimits {
                    messages: 64,
                    bytes: 1,
                },
                10,
            ),
        ] {
            // Everything is queued before the committer runs, so the
            // batches it forms depend on the limits alone.
            let (tx, rx) = mpsc::channel::<Msg>();
            let (park_tx, _park_rx) = mpsc::channel::<Parked>();
            let (done_tx, done_rx) = channel();
            for i in 0..10 {
                let done = done_tx.clone();
                tx.send(Msg::Submit(Box::new(Job {
                    archiver: archiver.clone(),
                    env: envelope(&format!("{i:02}")),
                    ready: None,
                    reply: Box::new(move |r| done.send(r.is_ok()).unwrap()),
                })))
                .unwrap();
            }
            drop(tx);
            let stats = GroupStats::default();
            run(rx, park_tx, limits, &stats);
            assert_eq!(stats.batches(), batches, "{limits:?}");
            assert_eq!(stats.messages(), 10);
            assert_eq!(done_rx.try_iter().filter(|ok| *ok).count(), 10);
        }
    }

    #[test]
    fn concurrent_requests_share_batches_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let archiver = archiver(
            &[
                format!("mbox:{}/all.mbox", dir.path().display()),
                format!("maildir:{}/md", dir.path().display()),
            ],
            crate::DEFAULT_LOCK_TIMEOUT,
        );
        let committer = GroupCommitter::start(BatchLimits::default()).unwrap();
        let (tx, rx) = channel();
        let n = 200;
        for i in 0..n {
            let tx = tx.clone();
            committer.submit(
                archiver.clone(),
                envelope(&i.to_string()),
                Box::new(move |r| tx.send(r.map(|rep| rep.written.len())).unwrap()),
            );
        }
        for _ in 0..n {
            assert_eq!(rx.recv().unwrap().unwrap(), 2);
        }
        let mbox = std::fs::read_to_string(dir.path().join("all.mbox")).unwrap();
        assert_eq!(mbox.matches("\nFrom ").count() + 1, n);
        assert_eq!(maildir_messages(&dir.path().join("md")), n);
        assert_eq!(committer.stats().messages(), n as u64);
        assert!(committer.stats().batches() <= n as u64);
        assert_eq!(committer.stats().waited(), 0);
    }

    #[test]
    fn a_held_mbox_delays_only_its_own_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (mbox, beside, md) = (
            dir.path().join("held.mbox"),
            dir.path().join("beside"),
            dir.path().join("md"),
        );
        let lock = hold_dotlock(&mbox);
        let held = archiver(
            &[
                format!("mbox:{}", mbox.display()),
                format!("maildir:{}", beside.display()),
            ],
            Duration::from_secs(600),
        );
        let free = archiver(&[format!("maildir:{}", md.display())], WAIT);
        let committer = GroupCommitter::start(BatchLimits::default()).unwrap();

        let waiting = submit(&committer, &held, "for the mbox");
        let other = submit(&committer, &free, "for the maildir");
        let report = other.recv_timeout(WAIT).expect("answered").unwrap();
        assert_eq!(report.written.len(), 1);
        assert!(
            waiting.try_recv().is_err(),
            "answered while its lock is held"
        );
        assert_eq!(
            maildir_messages(&beside),
            0,
            "its Maildir copy was published before its mbox copy was durable"
        );
        assert_eq!(committer.stats().waited(), 1);

        std::fs::remove_file(&lock).unwrap();
        let report = waiting.recv_timeout(WAIT).expect("answered").unwrap();
        assert_eq!(report.written.len(), 2);
        assert_eq!(mbox_messages(&mbox), 1);
        assert_eq!(maildir_messages(&beside), 1);
        assert!(!lock.exists(), "our dotlock is gone after the batch");
    }

    #[test]
    fn messages_for_a_held_mbox_fail_side_by_side_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("held.mbox");
        let md = dir.path().join("md");
        hold_dotlock(&mbox);
        let held = archiver(
            &[format!("mbox:{}", mbox.display())],
            Duration::from_secs(2),
        );
        let free = archiver(&[format!("maildir:{}", md.display())], WAIT);
        let committer = GroupCommitter::start(BatchLimits::default()).unwrap();
        let waiting: Vec<_> = (0..3)
            .map(|i| submit(&committer, &held, &format!("held {i}")))
            .collect();
        // The committer is not stuck behind them.
        let other = submit(&committer, &free, "free");
        other.recv_timeout(WAIT).expect("answered").unwrap();
        assert!(waiting.iter().all(|w| w.try_recv().is_err()));
        for w in &waiting {
            match w.recv_timeout(WAIT).expect("answered") {
                Err(ArchiveError::Locked(t)) => {
                    assert_eq!(t.held.mbox, mbox);
                    assert_eq!(t.held.kind, mbox::LockKind::Dotlock);
                    assert_eq!(t.held.pid, Some(4242), "the pid in the dotlock");
                    assert!(t.to_string().contains("held by pid 4242"), "{t}");
                }
                other => panic!("not a lock timeout: {other:?}"),
            }
        }
        assert_eq!(mbox_messages(&mbox), 0);
        assert_eq!(committer.stats().waited(), 3);
    }

    #[test]
    fn a_message_waiting_for_one_mbox_does_not_hold_another() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.mbox"), dir.path().join("b.mbox"));
        let lock = hold_dotlock(&b);
        let both = archiver(
            &[
                format!("mbox:{}", a.display()),
                format!("mbox:{}", b.display()),
            ],
            Duration::from_secs(600),
        );
        let only_a = archiver(&[format!("mbox:{}", a.display())], WAIT);
        let committer = GroupCommitter::start(BatchLimits::default()).unwrap();
        let waiting = submit(&committer, &both, "a and b");
        let other = submit(&committer, &only_a, "a only");
        other.recv_timeout(WAIT).expect("answered").unwrap();
        assert!(waiting.try_recv().is_err());
        assert_eq!(mbox_messages(&a), 1, "only the message for a alone");
        std::fs::remove_file(&lock).unwrap();
        waiting.recv_timeout(WAIT).expect("answered").unwrap();
        assert_eq!((mbox_messages(&a), mbox_messages(&b)), (2, 1));
    }

    #[test]
    fn waiting_messages_are_answered_after_the_last_handle_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("held.mbox");
        hold_dotlock(&mbox);
        let held = archiver(
            &[format!("mbox:{}", mbox.display())],
            Duration::from_millis(200),
        );
        let committer = GroupCommitter::start(BatchLimits::default()).unwrap();
        let waiting = submit(&committer, &held, "held");
        drop(committer);
        match waiting.recv_timeout(WAIT) {
            Ok(Err(ArchiveError::Locked(_))) => {}
            other => panic!("not a lock timeout: {other:?}"),
        }
    }
}
