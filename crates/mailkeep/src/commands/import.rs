//! `mailkeep import`: existing mbox files, Maildirs and `.eml` files,
//! through the same pipeline as `serve`: the one `Archiver` (plan by the
//! rules, then the store's preparation) on worker threads, one per core,
//! and the group committer writing and fsyncing in batches, with the
//! preparation budget bounding memory whatever the input size.
//!
//! Without `--rules`, one rule files everything into the store,
//! idempotently (a delivery already archived is recognised by its identity
//! and not added again). With `--rules`, the configuration's rules decide
//! (mbox, Maildir, eml, store, forward): the store still recognises a
//! delivery it holds, but an mbox, Maildir or eml destination gets a second
//! copy when the same input is imported again.

use crate::cli::{ImportArgs, MboxFlavour};
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use indicatif::{ProgressBar, ProgressStyle};
use mailkeep_capture::import::{walk, Found, ImportOptions, MboxFormat, Walker};
use mailkeep_destinations::budget::Share;
use mailkeep_destinations::{ArchiveError, Archiver, BatchLimits, GroupCommitter, Report};
use mailkeep_envelope::Envelope;
use mailkeep_rules::{DestKind, RuleSet};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Depth of the channel from the walker to the workers.
const CHANNEL: usize = 256;

/// An import's batches: larger than `serve`'s (nobody waits for a reply,
/// and each commit's fsyncs are shared by more messages), still bounded in
/// bytes.
const IMPORT_BATCH: BatchLimits = BatchLimits {
    messages: 512,
    bytes: 32 << 20,
};

/// Messages between the workers and their commit at most: two batches,
/// so the committer always has the next one waiting...
const IN_FLIGHT: u64 = 2 * IMPORT_BATCH.messages as u64;
/// ...and at most two batches' bytes, since each holds its message and its
/// prepared record until the commit.
const IN_FLIGHT_BYTES: u64 = 2 * IMPORT_BATCH.bytes;

/// What the import did, gathered from the workers and the committer.
#[derive(Default)]
struct Tally {
    submitted: u64,
    answered: u64,
    /// Message bytes submitted and not yet answered.
    in_flight_bytes: u64,
    /// Messages some rule filed / no rule filed (or a skip rule).
    filed: u64,
    unfiled: u64,
    /// Copies per destination.
    copies: BTreeMap<String, u64>,
    /// Store deliveries: new, already held; message bodies new to it.
    new: u64,
    duplicate: u64,
    new_messages: u64,
    /// Messages that could not be prepared or written (read, parsed,
    /// planned, a file destination).
    failed: Vec<(String, String)>,
    /// Messages the store failed to take: without `--rules`, the import
    /// stops at the first.
    not_written: Vec<(String, String)>,
}

/// The store itself failed (not one message's bytes or plan).
fn is_store_failure(e: &ArchiveError) -> bool {
    matches!(
        e,
        ArchiveError::Store(_)
            | ArchiveError::Write {
                kind: DestKind::Store,
                ..
            }
    )
}

/// One submitted message's answer. The committer calls it once; should it
/// be dropped uncalled (the committer died), the message is recorded as
/// not written, so the import never waits for an answer that cannot come.
struct Answer {
    shared: Shared,
    origin: Option<String>,
    size: u64,
    share: Option<Share>,
}

impl Answer {
    fn give(mut self, result: Result<Report, ArchiveError>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<Report, ArchiveError>) {
        let Some(origin) = self.origin.take() else {
            return;
        };
        // The preparation's memory is free once answered.
        drop(self.share.take());
        lock(&self.shared).record(origin, self.size, result);
        self.shared.1.notify_all();
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.finish(Err(ArchiveError::Store(
            "the archive writer stopped without answering".into(),
        )));
    }
}

impl Tally {
    fn record(&mut self, origin: String, size: u64, result: Result<Report, ArchiveError>) {
        self.answered += 1;
        self.in_flight_bytes -= size;
        match result {
            Ok(report) if report.written.is_empty() => self.unfiled += 1,
            Ok(report) => {
                self.filed += 1;
                for w in &report.written {
                    *self
                        .copies
                        .entry(format!("{}:{}", w.kind, w.destination.display()))
                        .or_default() += 1;
                    if let Some(s) = &w.stored {
                        if s.duplicate {
                            self.duplicate += 1;
                        } else {
                            self.new += 1;
                        }
                        if s.new_message {
                            self.new_messages += 1;
                        }
                    }
                }
            }
            Err(e) if is_store_failure(&e) => self
                .not_written
                .push((origin, mailkeep_capture::error_chain(&e))),
            Err(e) => self
                .failed
                .push((origin, mailkeep_capture::error_chain(&e))),
        }
    }
}

type Shared = Arc<(Mutex<Tally>, Condvar)>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// The archiver an import runs: the configuration's rules with `--rules`,
/// otherwise one rule into the configured store.
fn archiver(settings: &mut Settings, rules: bool) -> Result<Arc<Archiver>, Failure> {
    if rules {
        settings
            .attach_store()
            .map_err(|e| Failure::new(Exit::TEMPFAIL, e))?;
        return Ok(Arc::new(settings.archiver.clone()));
    }
    let store = settings.open_store_writable()?;
    let mut archiver = Archiver::new(
        RuleSet::store_only("import into the store"),
        settings.archiver.options().clone(),
    );
    archiver.set_forward(None);
    archiver.set_store(Some(Arc::new(store)));
    Ok(Arc::new(archiver))
}

pub fn run(settings: &mut Settings, args: ImportArgs) -> Result<Exit, Failure> {
    let opts = import_options(settings, &args)?;
    let archiver = archiver(settings, args.rules)?;
    // An import into a store is recorded in its audit log, before and
    // after (`import --rules` into files alone has no store to record in).
    let audit = match (&archiver.options().store, &settings.store) {
        (Some(store), _) => Some(settings.audit(store)?),
        (None, Some(_)) => Some(settings.audit_as("cli")?),
        (None, None) => None,
    };
    let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
    if let Some(a) = &audit {
        a.record(
            "import",
            json!({"phase": "start", "paths": paths, "rules": args.rules}),
        )?;
    }
    let committer = GroupCommitter::start(IMPORT_BATCH)
        .map_err(|e| Failure::new(Exit::OSERR, format!("cannot start the committer: {e}")))?;
    let shared: Shared = Arc::default();
    let started = Instant::now();
    let mut walker = walk(args.paths.clone(), opts);
    let bar = progress_bar();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (env_tx, env_rx) = sync_channel::<(String, Envelope)>(CHANNEL);
    let env_rx = Arc::new(Mutex::new(env_rx));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let rx = env_rx.clone();
        let (archiver, committer, shared) = (archiver.clone(), committer.clone(), shared.clone());
        let stop_at_store_failure = !args.rules;
        handles.push(std::thread::spawn(move || loop {
            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok((origin, env)) = next else { break };
            if stop_at_store_failure && !lock(&shared).not_written.is_empty() {
                // The store failed: what is still queued is left for a rerun.
                continue;
            }
            match archiver.ready(&env, committer.budget()) {
                Err(e) => lock(&shared)
                    .failed
                    .push((origin, mailkeep_capture::error_chain(&e))),
                Ok((ready, share)) => {
                    let size = env.message.len();
                    {
                        let mut t = lock(&shared);
                        while t.submitted > t.answered
                            && (t.submitted - t.answered >= IN_FLIGHT
                                || t.in_flight_bytes + size > IN_FLIGHT_BYTES)
                        {
                            t = shared.1.wait(t).unwrap_or_else(|e| e.into_inner());
                        }
                        t.submitted += 1;
                        t.in_flight_bytes += size;
                    }
                    let answer = Answer {
                        shared: shared.clone(),
                        origin: Some(origin),
                        size,
                        share,
                    };
                    let reply = Box::new(move |result| answer.give(result));
                    committer.submit_ready(archiver.clone(), env, Some(ready), reply);
                }
            }
        }));
    }
    let mut skipped: Skipped = BTreeMap::new();
    let mut seen = 0u64;
    while let Some(found) = walker.next() {
        match found {
            Found::Message { origin, envelope } => {
                seen += 1;
                if env_tx.send((origin, envelope)).is_err() {
                    break;
                }
            }
            Found::Skipped { origin, reason } => {
                skipped.entry(reason).or_default().push(origin);
            }
        }
        show_progress(&bar, &walker, seen);
        // Without rules, a commit that failed means the store failed:
        // stop rather than fail every message after it.
        if !args.rules && !lock(&shared).not_written.is_empty() {
            break;
        }
    }
    drop(env_tx);
    for h in handles {
        let _ = h.join();
    }
    let tally = {
        let mut t = lock(&shared);
        while t.answered < t.submitted {
            t = shared.1.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut *t)
    };
    bar.finish_and_clear();
    let summary = Summary {
        seen,
        bytes: walker.bytes_read(),
        elapsed: started.elapsed().as_secs_f64(),
        skipped,
        tally,
    };
    // Recorded before the summary is shown, like every other result.
    if let Some(a) = &audit {
        let t = &summary.tally;
        a.record(
            "import",
            json!({
                "phase": "done",
                "paths": paths,
                "messages": summary.seen,
                "filed": t.filed,
                "new_deliveries": t.new,
                "already_archived": t.duplicate,
                "failed": t.failed.len() + t.not_written.len(),
                "skipped": summary.skipped.values().map(Vec::len).sum::<usize>(),
            }),
        )?;
    }
    if args.rules {
        summary.print_rules(args.json)
    } else {
        summary.print_store(args.json)
    }
}

/// The figures of one run, printed one way or the other.
struct Summary {
    seen: u64,
    bytes: u64,
    elapsed: f64,
    skipped: Skipped,
    tally: Tally,
}

impl Summary {
    /// A message left out (over the size limit, unreadable) is as much a
    /// failure for a script as one the archive refused.
    fn left_out(&self) -> bool {
        self.skipped
            .keys()
            .any(|r| mailkeep_capture::import::skip_loses_mail(r))
    }

    /// Without `--rules`: the store's counts. Exit 74 when the store
    /// failed (everything reported as new is stored), 65 when a message
    /// failed or was left out.
    fn print_store(&self, json: bool) -> Result<Exit, Failure> {
        let (seen, bytes, elapsed, skipped, tally) = (
            self.seen,
            self.bytes,
            self.elapsed,
            &self.skipped,
            &self.tally,
        );
        let rate = seen as f64 / elapsed.max(1e-9);
        let fatal = tally.not_written.first().map(|(_, e)| e.clone());
        let skipped_total: usize = skipped.values().map(Vec::len).sum();
        if json {
            println!(
                "{}",
                json!({
                    "messages": seen,
                    "new_deliveries": tally.new,
                    "already_archived": tally.duplicate,
                    "new_messages": tally.new_messages,
                    "failed": tally.failed.len(),
                    "skipped": skipped_total,
                    "skipped_reasons": skipped_json(skipped),
                    "bytes": bytes,
                    "seconds": elapsed,
                    "messages_per_second": rate,
                    "error": fatal,
                })
            );
        } else {
            println!(
                "read {seen} message(s), {:.1} MB, in {elapsed:.2} s ({rate:.0} msg/s, {:.1} MB/s)",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / elapsed.max(1e-9)
            );
            println!(
                "  new deliveries: {}, already archived: {}, new message bodies: {}",
                tally.new, tally.duplicate, tally.new_messages
            );
            print_skipped(skipped);
            for (origin, e) in tally.failed.iter().take(20) {
                println!("  failed: {origin}: {e}");
            }
        }
        if let Some(e) = fatal {
            return Err(Failure::new(
                Exit::IOERR,
                format!("import stopped: {e} (everything reported above as new is stored)"),
            ));
        }
        Ok(if tally.failed.is_empty() && !self.left_out() {
            Exit::OK
        } else {
            Exit::DATAERR
        })
    }

    /// With `--rules`: what the rules filed where. A message no rule files
    /// is counted, not an error (the rules said so); one that failed is,
    /// and the run exits 75 so a script retries it.
    fn print_rules(&self, json: bool) -> Result<Exit, Failure> {
        let (seen, bytes, elapsed, skipped, tally) = (
            self.seen,
            self.bytes,
            self.elapsed,
            &self.skipped,
            &self.tally,
        );
        let failed: Vec<&(String, String)> =
            tally.failed.iter().chain(&tally.not_written).collect();
        let skipped_total: usize = skipped.values().map(Vec::len).sum();
        if json {
            println!(
                "{}",
                json!({
                    "messages": seen,
                    "filed": tally.filed,
                    "no_rule_filed": tally.unfiled,
                    "copies": tally.copies,
                    "failed": failed.len(),
                    "failures": failed.iter().take(20).map(|(o, e)| json!({"origin": o, "error": e})).collect::<Vec<_>>(),
                    "skipped": skipped_total,
                    "skipped_reasons": skipped_json(skipped),
                    "bytes": bytes,
                    "seconds": elapsed,
                })
            );
        } else {
            println!(
                "read {seen} message(s), {:.1} MB, in {elapsed:.2} s; filed by the rules: {}, \
                 filed nowhere (no rule or skip): {}",
                bytes as f64 / 1e6,
                tally.filed,
                tally.unfiled
            );
            for (dest, n) in &tally.copies {
                println!("  {dest}: {n}");
            }
            print_skipped(skipped);
            for (origin, e) in failed.iter().take(20) {
                println!("  failed: {origin}: {e}");
            }
        }
        Ok(if !failed.is_empty() {
            Exit::TEMPFAIL
        } else if self.left_out() {
            Exit::DATAERR
        } else {
            Exit::OK
        })
    }
}

fn import_options(settings: &Settings, args: &ImportArgs) -> Result<ImportOptions, Failure> {
    let max = mailkeep_rules::parse_size(&args.max_message_size).ok_or_else(|| {
        Failure::new(
            Exit::USAGE,
            format!(
                "--max-message-size: {:?} is not a size like 256M",
                args.max_message_size
            ),
        )
    })?;
    Ok(ImportOptions {
        spool_dir: settings.spool_dir.clone(),
        max_message_size: max,
        spool_threshold: settings.spool_threshold,
        mbox_format: match args.mbox_format {
            MboxFlavour::Mboxrd => MboxFormat::Rd,
            MboxFlavour::Mboxo => MboxFormat::O,
        },
    })
}

/// What was skipped, by reason: counts and the first of each.
type Skipped = BTreeMap<String, Vec<String>>;

fn skipped_json(skipped: &Skipped) -> serde_json::Map<String, serde_json::Value> {
    skipped
        .iter()
        .map(|(r, o)| (r.clone(), json!({"count": o.len(), "first": o.first()})))
        .collect()
}

fn print_skipped(skipped: &Skipped) {
    let total: usize = skipped.values().map(Vec::len).sum();
    if total == 0 {
        return;
    }
    println!("  skipped: {total}");
    for (reason, origins) in skipped {
        println!(
            "    {reason}: {} (first: {})",
            origins.len(),
            origins.first().map(String::as_str).unwrap_or("")
        );
    }
}

/// Updates the progress bar every 64 messages.
fn show_progress(bar: &ProgressBar, walker: &Walker, seen: u64) {
    if seen.is_multiple_of(64) {
        bar.set_length(walker.bytes_total());
        bar.set_position(walker.bytes_read());
        bar.set_message(format!("{seen} messages"));
    }
}

fn progress_bar() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}
