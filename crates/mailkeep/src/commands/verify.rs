//! `mailkeep verify`: re-read everything, check the chain, and optionally
//! a checkpoint; exit 65 naming the first damage.

use crate::cli::VerifyArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use indicatif::{ProgressBar, ProgressStyle};
use mailkeep_store::verify::{Checkpoint, Phase};
use serde_json::json;

pub fn run(settings: &Settings, args: VerifyArgs) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    audit.record(
        "verify",
        json!({"checkpoint": args.checkpoint.as_ref().map(|p| p.display().to_string())}),
    )?;
    let (deliveries, messages) = store
        .verify_sizes()
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    // Drawn on standard error only when it is a terminal.
    let bar = ProgressBar::new(deliveries + messages).with_style(
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut report = store
        .verify(&mut |phase, n| {
            if n.is_multiple_of(256) || n == 1 {
                match phase {
                    Phase::Chain => {
                        bar.set_message("chain");
                        bar.set_position(n);
                    }
                    Phase::Messages => {
                        bar.set_message("messages");
                        bar.set_position(deliveries + n);
                    }
                }
            }
        })
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    bar.finish_and_clear();
    // The audit log is part of what is verified: its chain, and (below)
    // the head a checkpoint recorded.
    let audit_report = audit
        .log()
        .verify()
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
    for p in &audit_report.problems {
        report
            .problems
            .push(format!("audit log {}: {p}", audit.log().path().display()));
    }
    // Every removal the chain's tombstones record must have been recorded
    // in the audit log before it was made: a tombstone without one was
    // forged by someone who wrote the catalog, or the log was cut.
    if !report.removed_ids.is_empty() && audit_report.problems.is_empty() {
        let mut ranges = Vec::new();
        for e in audit
            .log()
            .entries(|e| e.action == super::expire::REMOVING)
            .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?
        {
            if let Some(r) = e
                .detail
                .get("ids")
                .and_then(|v| v.as_str())
                .and_then(mailkeep_lifecycle::audit::parse_ranges)
            {
                ranges.extend(r);
            }
        }
        for id in &report.removed_ids {
            if !ranges.iter().any(|(a, b)| a <= id && id <= b) {
                report.problems.push(format!(
                    "delivery {id}: its tombstone names no removal recorded in the audit log \
                     (forged in the catalog, or the log was cut)"
                ));
            }
        }
    }
    if let Some(path) = &args.checkpoint {
        let cp = Checkpoint::load(path).map_err(|m| Failure::new(Exit::USAGE, m))?;
        if let Err(e) = cp.verify_signature(args.public_key.as_deref()) {
            report
                .problems
                .push(format!("checkpoint {}: {e}", path.display()));
        }
        let problems = store
            .check_checkpoint(&cp)
            .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
        for p in problems {
            if !report.problems.contains(&p) {
                report
                    .problems
                    .push(format!("checkpoint {}: {p}", path.display()));
            }
        }
        if let Some((entry, hash)) = &cp.audit {
            let found = audit
                .log()
                .hash_of(*entry)
                .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
            match found {
                None => report.problems.push(format!(
                    "checkpoint {}: audit entry {entry} is gone (the audit log was cut)",
                    path.display()
                )),
                Some(h) if &h != hash => report.problems.push(format!(
                    "checkpoint {}: audit entry {entry} differs from the checkpoint of {} \
                     (the audit log was rewritten)",
                    path.display(),
                    cp.time
                )),
                Some(_) => {}
            }
        }
    }
    let ok = report.problems.is_empty();
    if args.json {
        println!(
            "{}",
            json!({
                "ok": ok,
                "deliveries": report.deliveries,
                "messages": report.messages,
                "bytes": report.bytes,
                "head": report.head.as_ref().map(|(id, h)| json!({"entry": id, "hash": h})),
                "audit": {
                    "entries": audit_report.entries,
                    "head": audit_report.head.as_ref().map(|(id, h)| json!({"entry": id, "hash": h})),
                },
                "removed": report.removed,
                "first_problem": report.problems.first(),
                "problems": report.problems,
            })
        );
    } else if ok {
        println!(
            "OK: {} deliveries, {} messages ({} bytes) re-read; chain head: entry {} {}; \
             audit log: {} entries",
            report.deliveries,
            report.messages,
            report.bytes,
            report.head.as_ref().map(|h| h.0).unwrap_or(0),
            report.head.as_ref().map(|h| h.1.as_str()).unwrap_or("-"),
            audit_report.entries,
        );
        for r in &report.removed {
            println!("  {r}");
        }
    } else {
        println!("FAILED: first bad record: {}", report.problems[0]);
        for p in report.problems.iter().skip(1) {
            println!("also: {p}");
        }
    }
    Ok(if ok { Exit::OK } else { Exit::DATAERR })
}
