//! `mailkeep import`: existing mbox files, Maildirs and `.eml` files into
//! the store, idempotently (a delivery already archived is recognised by
//! its identity and not added again).
//!
//! A pipeline, so both cores work: this thread walks and splits the input,
//! worker threads hash, index and compress, one committer makes batches
//! durable. Channels are bounded, so memory stays bounded whatever the
//! input size.
//!
//! With `--rules`, each message goes through the same `Archiver` as
//! `serve` and `pipe` (the rules' plan, then every destination written
//! durably, all or nothing), one message at a time: the store still
//! recognises a delivery it already holds, but an mbox, Maildir or eml
//! destination gets a second copy when the same input is imported again.

use crate::cli::{ImportArgs, MboxFlavour};
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use indicatif::{ProgressBar, ProgressStyle};
use mailkeep_capture::import::{walk, Found, ImportOptions, MboxFormat, Walker};
use mailkeep_envelope::Envelope;
use mailkeep_store::{Prepared, Store};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Depth of each channel between the stages.
const CHANNEL: usize = 256;

/// A commit takes at most this many deliveries...
const BATCH_MESSAGES: usize = 512;
/// ...or this many bytes of new records, whichever comes first.
const BATCH_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Counts {
    new: u64,
    duplicate: u64,
    new_messages: u64,
    failed: Vec<(String, String)>,
}

pub fn run(settings: &mut Settings, args: ImportArgs) -> Result<Exit, Failure> {
    if args.rules {
        return run_rules(settings, args);
    }
    let cfg = settings.store.clone().ok_or_else(|| {
        Failure::new(
            Exit::CONFIG,
            format!(
                "{}: there is no [store] section to import into",
                settings.source
            ),
        )
    })?;
    let opts = import_options(settings, &args)?;
    let store = Arc::new(Store::open(cfg).map_err(|e| Failure::from_store(Exit::IOERR, &e))?);
    let started = Instant::now();
    let mut walker = walk(args.paths.clone(), opts);
    let bar = progress_bar();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (env_tx, env_rx) = sync_channel::<(String, Envelope)>(CHANNEL);
    let env_rx = Arc::new(Mutex::new(env_rx));
    let (prep_tx, prep_rx) = sync_channel::<(String, Result<Prepared, String>)>(CHANNEL);
    let mut handles = Vec::new();
    for _ in 0..workers {
        let rx = env_rx.clone();
        let tx = prep_tx.clone();
        let store = store.clone();
        handles.push(std::thread::spawn(move || loop {
            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok((origin, env)) = next else { break };
            let p = store
                .prepare(&env)
                .map_err(|e| mailkeep_capture::error_chain(&e));
            if tx.send((origin, p)).is_err() {
                break;
            }
        }));
    }
    drop(prep_tx);
    let committer = {
        let store = store.clone();
        std::thread::spawn(move || commit_loop(&store, prep_rx))
    };
    let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
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
    }
    drop(env_tx);
    for h in handles {
        let _ = h.join();
    }
    let counts = committer
        .join()
        .map_err(|_| Failure::new(Exit::SOFTWARE, "the import committer panicked"))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let (counts, fatal) = match counts {
        Ok(c) => (c, None),
        Err((c, e)) => (c, Some(e)),
    };
    let bytes = walker.bytes_read();
    let rate = seen as f64 / elapsed.max(1e-9);
    let skipped_total: usize = skipped.values().map(Vec::len).sum();
    if args.json {
        println!(
            "{}",
            json!({
                "messages": seen,
                "new_deliveries": counts.new,
                "already_archived": counts.duplicate,
                "new_messages": counts.new_messages,
                "failed": counts.failed.len(),
                "skipped": skipped_total,
                "skipped_reasons": skipped_json(&skipped),
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
            counts.new, counts.duplicate, counts.new_messages
        );
        print_skipped(&skipped);
        for (origin, e) in counts.failed.iter().take(20) {
            println!("  failed: {origin}: {e}");
        }
    }
    if let Some(e) = fatal {
        return Err(Failure::new(
            Exit::IOERR,
            format!("import stopped: {e} (everything reported above as new is stored)"),
        ));
    }
    // A message left out (over the size limit, unreadable) is as much a
    // failure for a script as one the store refused.
    let left_out = skipped
        .keys()
        .any(|r| mailkeep_capture::import::skip_loses_mail(r));
    Ok(if counts.failed.is_empty() && !left_out {
        Exit::OK
    } else {
        Exit::DATAERR
    })
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

/// `import --rules`: every message through the configured rules and the
/// one `Archiver`. A message no rule files is counted, not an error (the
/// rules said so); a destination that fails is, and the run exits 75 so
/// a script retries it.
fn run_rules(settings: &mut Settings, args: ImportArgs) -> Result<Exit, Failure> {
    let opts = import_options(settings, &args)?;
    settings
        .attach_store()
        .map_err(|e| Failure::new(Exit::TEMPFAIL, e))?;
    let started = Instant::now();
    let mut walker = walk(args.paths.clone(), opts);
    let bar = progress_bar();
    let mut seen = 0u64;
    let mut filed = 0u64;
    let mut unfiled = 0u64;
    let mut copies: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(found) = walker.next() {
        match found {
            Found::Message { origin, envelope } => {
                seen += 1;
                match settings.archiver.archive(&envelope) {
                    Ok(report) if report.written.is_empty() => unfiled += 1,
                    Ok(report) => {
                        filed += 1;
                        for w in &report.written {
                            *copies
                                .entry(format!("{}:{}", w.kind, w.destination.display()))
                                .or_default() += 1;
                        }
                    }
                    Err(e) => failed.push((origin, mailkeep_capture::error_chain(&e))),
                }
            }
            Found::Skipped { origin, reason } => {
                skipped.entry(reason).or_default().push(origin);
            }
        }
        show_progress(&bar, &walker, seen);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let skipped_total: usize = skipped.values().map(Vec::len).sum();
    if args.json {
        println!(
            "{}",
            json!({
                "messages": seen,
                "filed": filed,
                "no_rule_filed": unfiled,
                "copies": copies,
                "failed": failed.len(),
                "failures": failed.iter().take(20).map(|(o, e)| json!({"origin": o, "error": e})).collect::<Vec<_>>(),
                "skipped": skipped_total,
                "skipped_reasons": skipped_json(&skipped),
                "bytes": walker.bytes_read(),
                "seconds": elapsed,
            })
        );
    } else {
        println!(
            "read {seen} message(s), {:.1} MB, in {elapsed:.2} s; filed by the rules: {filed}, \
             filed nowhere (no rule or skip): {unfiled}",
            walker.bytes_read() as f64 / 1e6
        );
        for (dest, n) in &copies {
            println!("  {dest}: {n}");
        }
        print_skipped(&skipped);
        for (origin, e) in failed.iter().take(20) {
            println!("  failed: {origin}: {e}");
        }
    }
    let left_out = skipped
        .keys()
        .any(|r| mailkeep_capture::import::skip_loses_mail(r));
    Ok(if !failed.is_empty() {
        Exit::TEMPFAIL
    } else if left_out {
        Exit::DATAERR
    } else {
        Exit::OK
    })
}

type CommitResult = Result<Counts, (Counts, String)>;

fn commit_loop(store: &Store, rx: Receiver<(String, Result<Prepared, String>)>) -> CommitResult {
    let mut counts = Counts::default();
    let mut batch: Vec<Prepared> = Vec::new();
    let mut weight = 0usize;
    let mut open = true;
    while open {
        // Commit when the batch is full, or when the input went quiet (a
        // slow walker, e.g. on a huge message), or at the end.
        let quiet = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((_, Ok(p))) => {
                weight += p.weight();
                batch.push(p);
                false
            }
            Ok((origin, Err(e))) => {
                counts.failed.push((origin, e));
                false
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                true
            }
        };
        let full = batch.len() >= BATCH_MESSAGES || weight >= BATCH_BYTES;
        if batch.is_empty() || !(full || quiet) {
            continue;
        }
        match store.commit(std::mem::take(&mut batch)) {
            Ok(results) => {
                for r in results {
                    if r.duplicate {
                        counts.duplicate += 1;
                    } else {
                        counts.new += 1;
                    }
                    if r.new_message {
                        counts.new_messages += 1;
                    }
                }
            }
            Err(e) => return Err((counts, mailkeep_capture::error_chain(&e))),
        }
        weight = 0;
    }
    Ok(counts)
}
