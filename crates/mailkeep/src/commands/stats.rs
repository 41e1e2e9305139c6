//! `mailkeep stats`: what the store holds and what it costs on disk.

use super::output::{bytes, table};
use crate::cli::StatsArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use serde_json::json;

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub fn run(settings: &Settings, args: StatsArgs) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    settings
        .audit(&store)?
        .record("stats", serde_json::json!({}))?;
    let t = store
        .totals()
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let dir = &store.config().path;
    let catalog =
        file_size(&dir.join("catalog.sqlite")) + file_size(&dir.join("catalog.sqlite-wal"));
    let on_disk = t.stored_bytes + catalog;
    if args.json {
        println!(
            "{}",
            json!({
                "messages": t.messages,
                "deliveries": t.deliveries,
                "delivered_bytes": t.delivered_bytes,
                "raw_bytes": t.raw_bytes,
                "stored_bytes": t.stored_bytes,
                "catalog_bytes": catalog,
                "segments": t.segments,
                "unlinked_messages": t.unlinked,
                "dedup_ratio": ratio(t.delivered_bytes, t.raw_bytes),
                "compression_ratio": ratio(t.stored_bytes, t.raw_bytes),
                "stored_over_delivered": ratio(on_disk, t.delivered_bytes),
            })
        );
        return Ok(Exit::OK);
    }
    let rows = vec![
        vec!["messages (distinct)".into(), t.messages.to_string()],
        vec!["deliveries".into(), t.deliveries.to_string()],
        vec!["delivered bytes".into(), bytes(t.delivered_bytes)],
        vec!["raw bytes (distinct)".into(), bytes(t.raw_bytes)],
        vec!["stored bytes (segments)".into(), bytes(t.stored_bytes)],
        vec!["catalog and index".into(), bytes(catalog)],
        vec!["segments".into(), t.segments.to_string()],
        vec![
            "conversation links to read".into(),
            format!("{} older message(s) (`serve` reads them)", t.unlinked),
        ],
        vec![
            "dedup ratio".into(),
            format!(
                "{:.2} (delivered / distinct)",
                ratio(t.delivered_bytes, t.raw_bytes)
            ),
        ],
        vec![
            "compression ratio".into(),
            format!(
                "{:.3} (segments / distinct raw)",
                ratio(t.stored_bytes, t.raw_bytes)
            ),
        ],
        vec![
            "on disk / delivered".into(),
            format!(
                "{:.3} (segments + catalog)",
                ratio(on_disk, t.delivered_bytes)
            ),
        ],
    ];
    print!(
        "{}",
        table(&["STORE", dir.display().to_string().as_str()], &rows)
    );
    Ok(Exit::OK)
}
