//! `mailkeep audit`: the audit log, filtered by time and user. Reading it
//! is an access too, and is recorded first like any other.

use super::output::{cell, table};
use crate::cli::AuditArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use chrono::{DateTime, NaiveDate, Utc};
use std::io::Write;

/// `--since`: a day (UTC midnight) or an RFC 3339 time.
fn since(text: &str) -> Result<DateTime<Utc>, Failure> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Failure::new(
                Exit::USAGE,
                format!("--since {text:?}: expected a day like 2026-12-01 or a time like 2026-12-01T14:00:00Z"),
            )
        })
}

pub fn run(settings: &Settings, args: AuditArgs) -> Result<Exit, Failure> {
    let from = args.since.as_deref().map(since).transpose()?;
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    audit.record(
        "audit",
        serde_json::json!({"since": args.since, "user": args.user}),
    )?;
    let entries = audit
        .log()
        .entries(|e| {
            let after = match (&from, DateTime::parse_from_rfc3339(&e.time)) {
                (None, _) => true,
                (Some(f), Ok(t)) => t >= *f,
                (Some(_), Err(_)) => true,
            };
            after && args.user.as_ref().is_none_or(|u| &e.user == u)
        })
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for e in &entries {
            let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
        }
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.time.get(..19).unwrap_or(&e.time).replace('T', " "),
                    cell(&e.user, 16),
                    cell(&format!("{} ({})", e.via, e.from), 36),
                    cell(&e.action, 10),
                    cell(&serde_json::Value::Object(e.detail.clone()).to_string(), 60),
                ]
            })
            .collect();
        let _ = out.write_all(
            table(
                &["SEQ", "TIME (UTC)", "USER", "VIA", "ACTION", "WHAT"],
                &rows,
            )
            .as_bytes(),
        );
    }
    Ok(Exit::OK)
}
