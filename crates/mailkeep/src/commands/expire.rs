//! `mailkeep expire` and `mailkeep erase`: removing deliveries for good
//! (`Store::remove`: a tombstone in the chain for each, and a message left
//! without a delivery compacted out of the segments).
//!
//! Both refuse to touch what a legal hold covers, and both refuse to run
//! on an audit log that fails verification (the holds are entries of that
//! log: a damaged one may hide a hold). `expire` also refuses while the
//! clock is before the newest receive time (a clock set back would make
//! deliveries look older than they are, never younger, but a clock that
//! jumped may have jumped forward before: mailkeep does not guess), and
//! removes only what is past the retention its policy gives, counted from
//! the recorded receive time. `erase` refuses everything when `[retention]
//! locked = true`. What is to be removed is recorded in the audit log
//! before anything is removed.

use super::retention::{held, query_hits};
use crate::audit::Audit;
use crate::cli::{EraseArgs, ExpireArgs};
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_lifecycle::audit::id_ranges;
use mailkeep_store::{RemoveReport, Store};
use serde_json::json;
use std::collections::HashSet;

/// The store opened for writing, and its audit log (as `via`), which must
/// verify.
fn open(settings: &Settings, via: &str) -> Result<(Store, Audit), Failure> {
    let store = settings.open_store_writable()?;
    let audit = settings.audit_for(via, &store)?;
    let report = audit
        .log()
        .verify()
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
    if let Some(p) = report.problems.first() {
        return Err(Failure::new(
            Exit::DATAERR,
            format!(
                "the audit log fails verification ({p}); legal holds are entries of it, so \
                 nothing is removed until `mailkeep verify` passes"
            ),
        ));
    }
    audit.check_anchor(&store)?;
    audit.settle_retention(&settings.retention)?;
    audit.anchor(&store)?;
    Ok((store, audit))
}

fn held_ids(store: &Store, audit: &Audit) -> Result<HashSet<i64>, Failure> {
    Ok(held(store, audit)?
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect())
}

/// Removes, stopping before the next transaction once a hold was placed
/// or released after `mark` (when the holds were read): what a new hold
/// covers is then decided again by the next run. A stop is exit 75.
fn remove_unless_holds_change(
    store: &Store,
    audit: &Audit,
    mark: u64,
    removals: &[(i64, String)],
) -> Result<RemoveReport, Failure> {
    let mut changed = false;
    let mut unrecorded = None;
    let report = store
        .remove_while(removals, &mut |chunk| {
            changed = changed
                || audit
                    .log()
                    .actions_since(mark)
                    .map(|a| a.iter().any(|a| a == mailkeep_lifecycle::hold::ACTION))
                    .unwrap_or(true);
            if changed {
                return false;
            }
            // Each transaction's deliveries are in the audit log before
            // they go: `verify` holds every tombstone against these.
            let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
            match audit.record(REMOVING, json!({"ids": id_ranges(&ids)})) {
                Ok(()) => true,
                Err(f) => {
                    unrecorded = Some(f);
                    false
                }
            }
        })
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    if let Some(f) = unrecorded {
        return Err(f);
    }
    if report.stopped {
        audit.record("removal_stopped", json!({"result": report_json(&report)}))?;
        return Err(Failure::new(
            Exit::TEMPFAIL,
            format!(
                "a legal hold was placed or released while removing: stopped after {} \
                 deliveries (each with its tombstone); run again to decide the rest under the \
                 holds in force",
                report.deliveries.len()
            ),
        ));
    }
    if !report.wal_truncated {
        tracing::warn!(
            "the catalog's write-ahead log is held open by a reader: removed text may stay in \
             it until the next checkpoint"
        );
    }
    Ok(report)
}

/// The audit action naming the deliveries of one removal transaction,
/// written before it.
pub const REMOVING: &str = "removing";

fn report_json(r: &RemoveReport) -> serde_json::Value {
    json!({
        "removed": r.deliveries.len(),
        "messages_removed": r.messages,
        "segments_rewritten": r.compacted.segments_rewritten,
        "bytes_freed": r.compacted.freed,
    })
}

/// What one expiry found and did.
pub struct Expiry {
    /// Deliveries past their retention and not held.
    pub due: Vec<i64>,
    /// Past their retention, but held.
    pub kept_by_hold: Vec<i64>,
    /// What was removed (`None` for a dry run).
    pub report: Option<RemoveReport>,
}

pub fn expire(settings: &Settings, args: ExpireArgs) -> Result<Exit, Failure> {
    let e = run_expiry(settings, "cli", args.dry_run)?;
    let ids = &e.due;
    match &e.report {
        None => {
            if args.json {
                println!(
                    "{}",
                    json!({"due": ids.len(), "ids": id_ranges(ids), "kept_by_hold": e.kept_by_hold.len()})
                );
            } else {
                println!(
                    "{} deliveries are past their retention and would be removed ({}); {} more \
                     are past it but held",
                    ids.len(),
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        id_ranges(ids)
                    },
                    e.kept_by_hold.len()
                );
            }
        }
        Some(report) => print_report(report, e.kept_by_hold.len(), "held", args.json),
    }
    Ok(Exit::OK)
}

/// One expiry, for the command and for `serve`'s daily run (`via`).
pub fn run_expiry(settings: &Settings, via: &str, dry_run: bool) -> Result<Expiry, Failure> {
    let (store, audit) = open(settings, via)?;
    let all = store
        .search(
            &mailkeep_query::parse("").map_err(|e| Failure::new(Exit::SOFTWARE, e.to_string()))?,
            None,
        )
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let now = chrono::Utc::now();
    let newest = all.iter().map(|h| h.record.received).max().unwrap_or(0);
    if now.timestamp_micros() < newest {
        return Err(Failure::new(
            Exit::TEMPFAIL,
            format!(
                "the clock says {now}, before the newest receive time in the store ({}); \
                 nothing expires until the clock is right",
                chrono::DateTime::from_timestamp_micros(newest).unwrap_or_default()
            ),
        ));
    }
    let hits = query_hits(&store, &settings.retention)?;
    // The log's length when the holds were read: a hold placed after it
    // stops the removal (see `remove_while`).
    let mark = audit
        .log()
        .mark()
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
    let held = held_ids(&store, &audit)?;
    let mut due = Vec::new();
    let mut kept_by_hold = Vec::new();
    for hit in &all {
        let d = settings.retention.decide(hit, &hits);
        if d.until.is_some_and(|t| t <= now) {
            if held.contains(&hit.record.id) {
                kept_by_hold.push(hit.record.id);
            } else {
                due.push((
                    hit.record.id,
                    format!("retention policy {:?} (keep {})", d.name, d.keep),
                ));
            }
        }
    }
    let ids: Vec<i64> = due.iter().map(|(id, _)| *id).collect();
    audit.record(
        "expire",
        json!({
            "dry_run": dry_run,
            "due": ids.len(),
            "ids": id_ranges(&ids),
            "kept_by_hold": id_ranges(&kept_by_hold),
        }),
    )?;
    if dry_run {
        return Ok(Expiry {
            due: ids,
            kept_by_hold,
            report: None,
        });
    }
    let report = remove_unless_holds_change(&store, &audit, mark, &due)?;
    audit.record(
        "expire",
        json!({"done": true, "result": report_json(&report)}),
    )?;
    Ok(Expiry {
        due: ids,
        kept_by_hold,
        report: Some(report),
    })
}

fn print_report(r: &RemoveReport, kept: usize, why: &str, json: bool) {
    if json {
        let mut v = report_json(r);
        v["kept"] = json!(kept);
        println!("{v}");
    } else {
        println!(
            "removed {} deliveries ({} messages no longer stored); {} segment(s) rewritten, {} \
             bytes given back; {kept} kept ({why})",
            r.deliveries.len(),
            r.messages,
            r.compacted.segments_rewritten,
            r.compacted.freed
        );
    }
}

pub fn erase(settings: &Settings, args: EraseArgs) -> Result<Exit, Failure> {
    let query =
        mailkeep_query::parse(&args.query).map_err(|e| Failure::new(Exit::USAGE, e.to_string()))?;
    if args.reason.trim().is_empty() {
        return Err(Failure::new(Exit::USAGE, "--reason: name the request"));
    }
    let (store, audit) = open(settings, "cli")?;
    if settings.retention.locked {
        audit.record(
            "refused_erase",
            json!({"query": args.query, "reason": args.reason, "refused": "retention is locked"}),
        )?;
        return Err(Failure::new(
            Exit::USAGE,
            "[retention] locked = true: nothing may be erased before its retention ends",
        ));
    }
    // The total first: a delivery arriving during the search must not make
    // "everything" look like "everything but one".
    let total = store
        .totals()
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?
        .deliveries;
    let matches = store
        .search(&query, None)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let everything = args.query.trim().is_empty() || matches.len() as u64 >= total;
    if !matches.is_empty() && everything && !args.yes {
        return Err(Failure::new(
            Exit::USAGE,
            format!(
                "{:?} matches every delivery in the store ({total}); add --yes to erase them all",
                args.query
            ),
        ));
    }
    // The log's length when the holds were read: a hold placed after it
    // stops the removal (see `remove_while`).
    let mark = audit
        .log()
        .mark()
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
    let held = held_ids(&store, &audit)?;
    let (refused, to_remove): (Vec<i64>, Vec<i64>) = matches
        .iter()
        .map(|h| h.record.id)
        .partition(|id| held.contains(id));
    audit.record(
        "erase",
        json!({
            "query": args.query,
            "reason": args.reason,
            "dry_run": args.dry_run,
            "matches": matches.len(),
            "ids": id_ranges(&to_remove),
            "refused_held": id_ranges(&refused),
        }),
    )?;
    if matches.is_empty() {
        eprintln!("nothing matched; nothing erased");
        return Ok(Exit::NOTHING);
    }
    if !refused.is_empty() {
        eprintln!(
            "refused, under a legal hold: {} deliveries ({})",
            refused.len(),
            id_ranges(&refused)
        );
    }
    if args.dry_run {
        println!(
            "{} deliveries would be erased ({}); {} refused (held)",
            to_remove.len(),
            id_ranges(&to_remove),
            refused.len()
        );
        return Ok(if refused.is_empty() {
            Exit::OK
        } else {
            Exit::DATAERR
        });
    }
    let removals: Vec<(i64, String)> = to_remove
        .iter()
        .map(|id| (*id, format!("erasure request: {}", args.reason)))
        .collect();
    let report = remove_unless_holds_change(&store, &audit, mark, &removals)?;
    audit.record(
        "erase",
        json!({"done": true, "result": report_json(&report)}),
    )?;
    print_report(&report, refused.len(), "under a legal hold", args.json);
    Ok(if refused.is_empty() {
        Exit::OK
    } else {
        Exit::DATAERR
    })
}
