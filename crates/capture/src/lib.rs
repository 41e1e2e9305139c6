//! Capture front-ends: the ways a message and its envelope reach mailkeep.
//!
//! Each front-end builds one [`mailkeep_envelope::Envelope`] and has it
//! archived; only once every copy is durable does it tell the mail server
//! "yes". [`milter`] and [`filter`] go through [`archive_durably`]
//! ([`mailkeep_destinations::Archiver::ready`] on the blocking pool, then
//! the group committer); [`pipe`] (Postfix `pipe(8)` content filter and
//! `mailbox_command` wrapper) calls `Archiver::archive` and hands the
//! message back with [`reinject`]; [`import`] turns existing mailboxes into
//! envelopes. [`listen`] and [`policy`] are shared by the servers.

#![forbid(unsafe_code)]

pub mod filter;
pub mod import;
pub mod listen;
pub mod milter;
pub mod pipe;
pub mod policy;
pub mod reinject;

pub use mailkeep_envelope::error_chain;

/// `b3:` and the first 16 hex digits of the message's BLAKE3 hash: an id
/// anyone can recompute from the archived bytes.
pub fn archive_id(message: &mailkeep_envelope::RawMessage) -> Option<String> {
    let hash = message.hash().ok()?;
    Some(format!("b3:{}", &hash.to_hex()[..16]))
}

/// Logs what archiving one message did: each copy written, or why there
/// was none (a rule said `skip`, or no rule matched), so an administrator
/// reading the mail log can tell a deliberate skip from a missing rule.
pub fn log_report(queue_id: Option<&str>, report: &mailkeep_destinations::Report) {
    let queue_id = queue_id.unwrap_or("-");
    for w in &report.written {
        tracing::info!(queue_id, destination = %format!("{}:{}", w.kind, w.destination.display()),
            file = %w.file.display(), bytes = w.bytes, "archived");
    }
    if !report.written.is_empty() {
        return;
    }
    let mut skipped_by: Vec<&str> = report
        .plan
        .decisions
        .iter()
        .flat_map(|d| &d.outcomes)
        .filter(|o| o.archive.is_none())
        .map(|o| o.rule.as_str())
        .collect();
    skipped_by.dedup();
    if skipped_by.is_empty() {
        tracing::info!(queue_id, "no rule matched this message; nothing archived");
    } else {
        tracing::info!(queue_id, rule = %skipped_by.join(", "), "skipped by rule; nothing archived");
    }
}

/// Archives an envelope through the group-commit writer and waits until
/// it is durable (or failed): the one "archive this" call of the servers.
/// The CPU work ([`mailkeep_destinations::Archiver::ready`]: the plan, the
/// store's parse, hash, index and compression) runs here on the blocking
/// pool, in parallel across sessions, under the committer's byte budget
/// (what the preparation needs while it runs, then what its record holds
/// until the commit), so the committer only writes, fsyncs and commits.
pub async fn archive_durably(
    committer: &mailkeep_destinations::GroupCommitter,
    archiver: std::sync::Arc<mailkeep_destinations::Archiver>,
    env: mailkeep_envelope::Envelope,
) -> Result<mailkeep_destinations::Report, mailkeep_destinations::ArchiveError> {
    use mailkeep_destinations::ArchiveError;
    let budget = committer.budget().clone();
    let prep = archiver.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let ready = prep.ready(&env, &budget);
        (ready, env)
    })
    .await
    .map_err(|e| ArchiveError::Read(std::io::Error::other(format!("preparing: {e}"))))?;
    let (ready, env) = prepared;
    let (ready, share) = ready?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    committer.submit_ready(
        archiver,
        env,
        Some(ready),
        Box::new(move |r| {
            drop(share);
            let _ = tx.send(r);
        }),
    );
    rx.await.unwrap_or_else(|_| {
        Err(ArchiveError::Read(std::io::Error::other(
            "the archive writer dropped the request",
        )))
    })
}
