//! The web's audit writer. Every access is in the audit log before it is
//! answered; with many readers at once, one fsync each under the log's
//! lock would make the log the server's speed limit. One thread appends
//! whatever the requests of the moment have handed it, in one write and
//! one fsync ([`AuditLog::append_many`]), and answers each request once its
//! entry is on disk (a group commit). When the log cannot be written, or
//! the thread is gone, each waiting request is refused: access fails
//! closed.

use mailkeep_lifecycle::{Actor, AuditLog};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

/// Entries written together at most.
const MAX_BATCH: usize = 256;

/// Requests waiting for the writer at most; more wait to hand theirs over.
const QUEUE: usize = 1024;

struct Job {
    actor: Actor,
    action: String,
    detail: Map<String, Value>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle requests record through.
pub(crate) struct Recorder {
    tx: mpsc::Sender<Job>,
}

impl Recorder {
    /// Starts the writer thread for `log`; it ends when the recorder is
    /// dropped.
    pub(crate) fn start(log: AuditLog) -> std::io::Result<Recorder> {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("web-audit".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let mut done = Vec::with_capacity(jobs.len());
                    let items = jobs
                        .into_iter()
                        .map(|j| {
                            done.push(j.done);
                            (j.actor, j.action, j.detail)
                        })
                        .collect();
                    match log.append_many(items) {
                        Ok(results) => {
                            for (result, reply) in results.into_iter().zip(done) {
                                let _ = reply.send(result.map(drop));
                            }
                        }
                        Err(e) => {
                            let why = e.to_string();
                            for reply in done {
                                let _ = reply.send(Err(why.clone()));
                            }
                        }
                    }
                }
            })?;
        Ok(Recorder { tx })
    }

    /// Appends one entry; `Ok` once it is on disk.
    pub(crate) async fn record(
        &self,
        actor: Actor,
        action: &str,
        detail: Map<String, Value>,
    ) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            actor,
            action: action.to_string(),
            detail,
            done,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        wait.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: usize) -> Actor {
        Actor {
            user: format!("user{n}"),
            uid: None,
            via: "web".into(),
            from: "127.0.0.1".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_requests_at_once_make_one_clean_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.log"), "test-store");
        log.create(0o600, |_| Ok(())).unwrap();
        let recorder = std::sync::Arc::new(Recorder::start(log.clone()).unwrap());
        let mut tasks = Vec::new();
        for n in 0..200 {
            let r = recorder.clone();
            tasks.push(tokio::spawn(async move {
                let detail = Map::from_iter([("n".to_string(), Value::from(n))]);
                r.record(actor(n), "search", detail).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let all = log.entries(|_| true).unwrap();
        assert_eq!(all.len(), 200);
        let mut seen: Vec<u64> = all
            .iter()
            .map(|e| e.detail["n"].as_u64().unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(log.verify().unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_written_refuses_the_access() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.log"), "test-store");
        log.create(0o600, |_| Ok(())).unwrap();
        let recorder = Recorder::start(log.clone()).unwrap();
        recorder
            .record(actor(1), "search", Map::new())
            .await
            .unwrap();
        std::fs::remove_file(log.path()).unwrap();
        std::fs::create_dir(log.path()).unwrap();
        let err = recorder
            .record(actor(2), "search", Map::new())
            .await
            .unwrap_err();
        assert!(!err.is_empty());
    }
}
