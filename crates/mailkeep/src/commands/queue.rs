//! `mailkeep queue`: the spool of archive copies (`[forward]`).

use super::output::{cell, table};
use crate::cli::QueueCommand;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_destinations::forward::Queue;
use serde_json::json;

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub fn run(settings: &Settings, command: QueueCommand) -> Result<Exit, Failure> {
    let cfg = settings
        .forward_config()
        .map_err(|m| Failure::new(Exit::CONFIG, m))?
        .ok_or_else(|| {
            Failure::new(
                Exit::CONFIG,
                format!("{}: there is no [forward] section", settings.source),
            )
        })?;
    let queue = Queue::new(&cfg.spool);
    let io = |e: std::io::Error| Failure::new(Exit::IOERR, format!("{}: {e}", cfg.spool.display()));
    match command {
        QueueCommand::List { json } => {
            let entries = queue.list().map_err(io)?;
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            if json {
                for e in &entries {
                    println!(
                        "{}",
                        json!({
                            "id": e.name,
                            "copy": e.meta.id,
                            "rcpt": e.meta.rcpt,
                            "mail_from": e.meta.mail_from,
                            "created": e.meta.created,
                            "size": e.size,
                            "attempts": e.state.attempts,
                            "next": e.state.next,
                            "last_error": e.state.last_error,
                            "stuck": e.stuck(cfg.max_age),
                        })
                    );
                }
            } else if entries.is_empty() {
                println!("queue {} is empty", cfg.spool.display());
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            age(now.saturating_sub(e.meta.created)),
                            e.state.attempts.to_string(),
                            if e.stuck(cfg.max_age) { "STUCK" } else { "" }.to_string(),
                            cell(&e.meta.rcpt, 32),
                            cell(e.state.last_error.as_deref().unwrap_or(""), 60),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "AGE", "TRIES", "", "TO", "LAST ERROR"], &rows)
                );
            }
            Ok(Exit::OK)
        }
        QueueCommand::Flush => {
            let r = queue.run_once(&cfg, true).map_err(io)?;
            println!(
                "sent {}, deferred {}, refused {}, busy {}",
                r.sent, r.deferred, r.failed, r.waiting
            );
            let left = queue.list().map_err(io)?.len();
            Ok(if left == 0 { Exit::OK } else { Exit::TEMPFAIL })
        }
        QueueCommand::Drop { id, reason } => {
            let to = queue
                .drop_copy(&id, &reason)
                .map_err(|e| Failure::new(Exit::IOERR, format!("dropping {id}: {e}")))?;
            tracing::warn!(%id, %reason, "archive copy dropped by the administrator");
            println!("dropped {id}: kept as {}", to.display());
            Ok(Exit::OK)
        }
    }
}
