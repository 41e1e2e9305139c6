//! `mailkeep hold add|list|show|release`: legal holds
//! (`mailkeep_lifecycle::hold`). Placing and releasing a hold are entries of
//! the audit log, with who, when and why; listing and showing are accesses,
//! recorded like any other.

use super::output::table;
use crate::audit::Audit;
use crate::cli::{HoldAddArgs, HoldCommand, HoldReleaseArgs, HoldShowArgs};
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_lifecycle::hold::{self, Hold, HoldError};
use mailkeep_store::Store;
use serde_json::json;
use std::collections::HashSet;

pub fn run(settings: &Settings, command: HoldCommand) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    match command {
        HoldCommand::Add(args) => {
            // Placing or releasing a hold records the log's head in the store:
            // an administrator's task, not an auditor's.
            let writer = settings.open_store_writable()?;
            let exit = add(&store, &audit, args)?;
            // The store remembers the log's head, so a removal can tell a
            // log replaced or cut (and its holds gone with it).
            audit.anchor(&writer)?;
            Ok(exit)
        }
        HoldCommand::List(args) => {
            audit.record("holds", json!({"list": true}))?;
            let holds = in_force(&audit)?;
            if args.json {
                for h in &holds {
                    println!("{}", hold_json(h));
                }
            } else if holds.is_empty() {
                println!("no hold in force");
            } else {
                let rows: Vec<Vec<String>> = holds
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            h.since.get(..19).unwrap_or(&h.since).replace('T', " "),
                            h.by.clone(),
                            h.query.clone(),
                            h.reason.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["NAME", "SINCE (UTC)", "BY", "QUERY", "REASON"], &rows)
                );
            }
            Ok(Exit::OK)
        }
        HoldCommand::Show(args) => show(&store, &audit, args),
        HoldCommand::Release(args) => {
            let writer = settings.open_store_writable()?;
            let exit = release(&audit, args)?;
            audit.anchor(&writer)?;
            Ok(exit)
        }
    }
}

fn in_force(audit: &Audit) -> Result<Vec<Hold>, Failure> {
    hold::in_force(audit.log()).map_err(|e| Failure::new(Exit::IOERR, e.to_string()))
}

fn hold_json(h: &Hold) -> serde_json::Value {
    json!({"name": h.name, "query": h.query, "reason": h.reason, "by": h.by, "since": h.since, "entry": h.entry})
}

/// Deliveries and distinct messages a query matches now.
fn covers(store: &Store, query: &str) -> Result<(usize, usize), Failure> {
    let q = mailkeep_query::parse(query).map_err(|e| Failure::new(Exit::USAGE, e.to_string()))?;
    let hits = store
        .search(&q, None)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let messages: HashSet<&str> = hits.iter().map(|h| h.record.content.as_str()).collect();
    Ok((hits.len(), messages.len()))
}

/// A refused or failed hold change as the command reports it.
fn hold_failure(e: HoldError, refused: Exit) -> Failure {
    match e {
        HoldError::Invalid(why) => Failure::new(Exit::USAGE, why),
        HoldError::Refused(why) => Failure::new(refused, why),
        HoldError::Audit(e) => Failure::new(Exit::IOERR, e.to_string()),
    }
}

fn add(store: &Store, audit: &Audit, args: HoldAddArgs) -> Result<Exit, Failure> {
    hold::check_new(&args.name, &args.query, &args.reason)
        .map_err(|e| hold_failure(e, Exit::USAGE))?;
    let (deliveries, messages) = covers(store, &args.query)?;
    hold::place(
        audit.log(),
        audit.actor(),
        &args.name,
        &args.query,
        &args.reason,
        deliveries,
    )
    .map_err(|e| hold_failure(e, Exit::USAGE))?;
    println!(
        "hold {:?} placed: it covers {deliveries} deliveries ({messages} messages) now, and what \
         arrives later matching {:?}, until released",
        args.name, args.query
    );
    Ok(Exit::OK)
}

fn show(store: &Store, audit: &Audit, args: HoldShowArgs) -> Result<Exit, Failure> {
    audit.record("holds", json!({"show": args.name}))?;
    let Some(h) = in_force(audit)?.into_iter().find(|h| h.name == args.name) else {
        return Err(Failure::new(
            Exit::NOTHING,
            format!("no hold named {:?} is in force", args.name),
        ));
    };
    let (deliveries, messages) = covers(store, &h.query)?;
    if args.json {
        let mut v = hold_json(&h);
        v["deliveries"] = json!(deliveries);
        v["messages"] = json!(messages);
        println!("{v}");
    } else {
        println!("Hold:        {}", h.name);
        println!("Query:       {}", h.query);
        println!("Reason:      {}", h.reason);
        println!(
            "Placed by:   {} at {} (audit entry {})",
            h.by, h.since, h.entry
        );
        println!("Covers now:  {deliveries} deliveries, {messages} messages");
    }
    Ok(Exit::OK)
}

fn release(audit: &Audit, args: HoldReleaseArgs) -> Result<Exit, Failure> {
    hold::release(audit.log(), audit.actor(), &args.name, &args.reason)
        .map_err(|e| hold_failure(e, Exit::NOTHING))?;
    println!("hold {:?} released", args.name);
    Ok(Exit::OK)
}
