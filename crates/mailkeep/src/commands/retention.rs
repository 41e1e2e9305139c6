//! `mailkeep retention show ID` and `mailkeep retention plan`: what the
//! configured policies decide, before anything acts on it, so a changed
//! policy can be checked first. Both are accesses to the store and are
//! recorded in the audit log first.

use super::output::{received, table};
use crate::cli::{RetentionCommand, RetentionPlanArgs, RetentionShowArgs};
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_lifecycle::retention::{Decision, Plan, Retention};
use mailkeep_store::Store;
use serde_json::json;
use std::collections::HashSet;

pub fn run(settings: &Settings, command: RetentionCommand) -> Result<Exit, Failure> {
    for w in settings.retention.warnings() {
        eprintln!("warning: {w}");
    }
    match command {
        RetentionCommand::Show(args) => show(settings, args),
        RetentionCommand::Plan(args) => plan(settings, args),
    }
}

/// For each policy with a `query`, the delivery ids it matches.
pub(super) fn query_hits(
    store: &Store,
    retention: &Retention,
) -> Result<Vec<Option<HashSet<i64>>>, Failure> {
    retention
        .policies
        .iter()
        .map(|p| {
            let Some(q) = &p.query else { return Ok(None) };
            let query = mailkeep_query::parse(q)
                .map_err(|e| Failure::new(Exit::CONFIG, format!("{}: {e}", p.name)))?;
            let hits = store
                .search(&query, None)
                .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
            Ok(Some(hits.iter().map(|h| h.record.id).collect()))
        })
        .collect()
}

/// The deliveries the holds in force cover now, by hold name.
pub(super) fn held(
    store: &Store,
    audit: &crate::audit::Audit,
) -> Result<Vec<(String, HashSet<i64>)>, Failure> {
    let holds = mailkeep_lifecycle::hold::in_force(audit.log())
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
    holds
        .into_iter()
        .map(|h| {
            let q = mailkeep_query::parse(&h.query)
                .map_err(|e| Failure::new(Exit::DATAERR, format!("hold {:?}: {e}", h.name)))?;
            let hits = store
                .search(&q, None)
                .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
            Ok((h.name, hits.iter().map(|h| h.record.id).collect()))
        })
        .collect()
}

fn until_text(d: &Decision) -> String {
    d.until
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

fn show(settings: &Settings, args: RetentionShowArgs) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    audit.record("retention", json!({"show": args.id}))?;
    let hit = store.get(args.id).map_err(|e| match e {
        mailkeep_store::StoreError::NotFound(_) => Failure::new(Exit::NOTHING, e.to_string()),
        e => Failure::from_store(Exit::IOERR, &e),
    })?;
    let hits = query_hits(&store, &settings.retention)?;
    let d = settings.retention.decide(&hit, &hits);
    let held_by: Vec<String> = held(&store, &audit)?
        .into_iter()
        .filter(|(_, ids)| ids.contains(&hit.record.id))
        .map(|(name, _)| name)
        .collect();
    let policy = match d.policy {
        Some(i) => format!(
            "{:?} (policy {} of {})",
            d.name,
            i + 1,
            settings.retention.policies.len()
        ),
        None if settings.retention.policies.is_empty() && d.until.is_none() => {
            "none configured: kept forever".to_string()
        }
        None => "the default (no policy matched)".to_string(),
    };
    if args.json {
        println!(
            "{}",
            json!({
                "id": hit.record.id,
                "received": received(hit.record.received),
                "policy": d.policy.map(|_| d.name.clone()),
                "keep": d.keep.to_string(),
                "expires": d.until.map(|t| t.to_rfc3339()),
                "locked": settings.retention.locked,
                "held_by": held_by,
            })
        );
    } else {
        println!("Delivery:  {}", hit.record.id);
        println!(
            "Received:  {} (as mailkeep recorded it; the Date header does not count)",
            received(hit.record.received)
        );
        println!("Policy:    {policy}");
        println!("Keep:      {}", d.keep);
        println!("Expires:   {}", until_text(&d));
        if !held_by.is_empty() {
            println!(
                "Held by:   {} (kept while held, whatever its retention)",
                held_by.join(", ")
            );
        }
        if settings.retention.locked {
            println!("Locked:    yes (`locked = true`)");
        }
    }
    Ok(Exit::OK)
}

fn plan(settings: &Settings, args: RetentionPlanArgs) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    audit.record("retention", json!({"plan": true}))?;
    let everything =
        mailkeep_query::parse("").map_err(|e| Failure::new(Exit::SOFTWARE, e.to_string()))?;
    let all = store
        .search(&everything, None)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let hits = query_hits(&store, &settings.retention)?;
    let now = chrono::Utc::now();
    let held: HashSet<i64> = held(&store, &audit)?
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    let mut plan = Plan::default();
    let mut held_past = 0u64;
    for hit in &all {
        let d = settings.retention.decide(hit, &hits);
        if held.contains(&hit.record.id) && d.until.is_some_and(|t| t <= now) {
            held_past += 1;
        }
        plan.add(&d, now);
    }
    if args.json {
        println!(
            "{}",
            json!({
                "deliveries": all.len(),
                "expired_now": plan.expired_now,
                "held": held.len(),
                "held_past_retention": held_past,
                "forever": plan.forever,
                "by_month": plan.by_month,
                "by_policy": plan.by_policy,
                "locked": settings.retention.locked,
            })
        );
    } else {
        println!(
            "{} deliveries: {} past their retention now ({held_past} of them held), {} kept \
             forever, {} under a legal hold",
            all.len(),
            plan.expired_now,
            plan.forever,
            held.len()
        );
        let rows: Vec<Vec<String>> = plan
            .by_month
            .iter()
            .map(|(m, n)| vec![m.clone(), n.to_string()])
            .collect();
        if !rows.is_empty() {
            print!("{}", table(&["EXPIRES IN", "DELIVERIES"], &rows));
        }
        let rows: Vec<Vec<String>> = plan
            .by_policy
            .iter()
            .map(|(p, n)| vec![p.clone(), n.to_string()])
            .collect();
        print!("{}", table(&["POLICY", "DELIVERIES"], &rows));
    }
    Ok(Exit::OK)
}
