//! Group commit: one thread makes batches of whatever archive requests are
//! waiting and writes each batch with shared fsyncs (see [`crate::Batch`]).
//!
//! Concurrent milter or SMTP sessions submit their message and wait for
//! the reply; while a batch is being written, new requests queue up and
//! form the next batch. Under light load a batch is one message and costs
//! what a direct archive costs; under heavy load the fsyncs per message
//! fall with the batch size, so throughput is not capped at one fsync (or
//! three) per message. Every request still gets its own all-or-nothing
//! result, and nobody hears "durable" before the fsyncs of its batch.

use crate::{ArchiveError, Archiver, Batch, Report};
use mailkeep_envelope::Envelope;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// How many waiting messages one batch takes at most.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Called with the outcome of one request.
pub type Reply = Box<dyn FnOnce(Result<Report, ArchiveError>) + Send>;

struct Job {
    archiver: Arc<Archiver>,
    env: Envelope,
    reply: Reply,
}

/// Batch statistics, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct GroupStats {
    batches: AtomicU64,
    messages: AtomicU64,
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
}

/// The handle capture paths submit to. Cloning is cheap; the writer thread
/// ends when the last handle is dropped, after finishing queued requests.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Job>,
    stats: Arc<GroupStats>,
}

impl GroupCommitter {
    /// Starts the writer thread.
    pub fn start(max_batch: usize) -> std::io::Result<GroupCommitter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(GroupStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("mailkeep-commit".into())
            .spawn(move || run(rx, max_batch.max(1), &thread_stats))?;
        Ok(GroupCommitter { tx, stats })
    }

    /// Queues one message; `reply` is called once it is durable or failed.
    /// If the writer thread is gone, `reply` gets an error at once.
    pub fn submit(&self, archiver: Arc<Archiver>, env: Envelope, reply: Reply) {
        if let Err(mpsc::SendError(job)) = self.tx.send(Job {
            archiver,
            env,
            reply,
        }) {
            (job.reply)(Err(ArchiveError::Read(std::io::Error::other(
                "the archive writer has stopped",
            ))));
        }
    }

    /// Batch statistics.
    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }
}

fn run(rx: mpsc::Receiver<Job>, max_batch: usize, stats: &GroupStats) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        let mut staged = Vec::with_capacity(jobs.len());
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            let planned = job.archiver.plan(&job.env).and_then(|plan| {
                batch
                    .stage(&plan.deliveries, &job.env, job.archiver.options())
                    .map(|s| (plan, s))
            });
            match planned {
                Ok((plan, s)) => {
                    staged.push(s);
                    waiting.push((plan, job.reply));
                }
                Err(e) => (job.reply)(Err(e)),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArchiveOptions;
    use mailkeep_envelope::{CapturePath, RawMessage};
    use mailkeep_rules::{RawRule, RuleSet};
    use std::sync::mpsc::channel;

    #[test]
    fn concurrent_requests_share_batches_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let rule = RawRule {
            archive: mailkeep_rules::OneOrMany::Many(vec![
                format!("mbox:{}/all.mbox", dir.path().display()),
                format!("maildir:{}/md", dir.path().display()),
            ]),
            ..RawRule::default()
        };
        let archiver = Arc::new(Archiver::new(
            RuleSet::compile(vec![rule], true).unwrap(),
            ArchiveOptions::default(),
        ));
        let committer = GroupCommitter::start(DEFAULT_MAX_BATCH).unwrap();
        let (tx, rx) = channel();
        let n = 200;
        for i in 0..n {
            let mut env = Envelope::new(
                CapturePath::Milter,
                RawMessage::from_bytes(format!("Subject: {i}\n\nbody {i}\n").into_bytes()),
            );
            env.recipients = vec![format!("r{i}@x")];
            let tx = tx.clone();
            committer.submit(
                archiver.clone(),
                env,
                Box::new(move |r| tx.send(r.map(|rep| rep.written.len())).unwrap()),
            );
        }
        for _ in 0..n {
            assert_eq!(rx.recv().unwrap().unwrap(), 2);
        }
        let mbox = std::fs::read_to_string(dir.path().join("all.mbox")).unwrap();
        assert_eq!(mbox.matches("\nFrom ").count() + 1, n);
        assert_eq!(
            std::fs::read_dir(dir.path().join("md/new"))
                .unwrap()
                .count(),
            n
        );
        assert_eq!(committer.stats().messages(), n as u64);
        assert!(committer.stats().batches() <= n as u64);
    }
}
