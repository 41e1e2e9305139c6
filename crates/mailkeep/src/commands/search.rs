//! `mailkeep search`: deliveries matching a query, newest first.

use super::output::{cell, hit_json, received, sender, table};
use crate::cli::SearchArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use std::io::Write;

pub fn run(settings: &Settings, args: SearchArgs) -> Result<Exit, Failure> {
    let query =
        mailkeep_query::parse(&args.query).map_err(|e| Failure::new(Exit::USAGE, e.to_string()))?;
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    let hits = store
        .search(&query, args.limit)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let ids: Vec<i64> = hits.iter().map(|h| h.record.id).collect();
    audit.record(
        "search",
        serde_json::json!({
            "query": args.query,
            "limit": args.limit,
            "results": hits.len(),
            "ids": mailkeep_lifecycle::audit::id_ranges(&ids),
        }),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for hit in &hits {
            let _ = writeln!(out, "{}", hit_json(hit));
        }
    } else if !hits.is_empty() {
        let rows: Vec<Vec<String>> = hits
            .iter()
            .map(|h| {
                let r = &h.record;
                vec![
                    r.id.to_string(),
                    received(r.received),
                    cell(r.login.as_deref().unwrap_or("-"), 16),
                    cell(&sender(r), 28),
                    cell(&r.recipients.join(","), 32),
                    cell(&h.subject, 50),
                ]
            })
            .collect();
        let _ = out.write_all(
            table(
                &["ID", "RECEIVED", "LOGIN", "SENDER", "RECIPIENTS", "SUBJECT"],
                &rows,
            )
            .as_bytes(),
        );
    }
    Ok(if hits.is_empty() {
        Exit::NOTHING
    } else {
        Exit::OK
    })
}
