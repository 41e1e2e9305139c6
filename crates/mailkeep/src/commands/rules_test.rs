//! `mailkeep rules test`: explain, per recipient, which rule matched and the
//! exact paths a message like this would be written to. Writes nothing.

use crate::cli::RulesTestArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_envelope::{normalize_address_arg, CapturePath, Client, Envelope, RawMessage};
use mailkeep_rules::DestKind;

pub fn run(settings: &Settings, args: RulesTestArgs) -> Result<Exit, Failure> {
    let capture = CapturePath::parse(&args.capture).ok_or_else(|| {
        Failure::new(
            Exit::USAGE,
            format!(
                "--capture {:?}: expected milter, filter, pipe or import",
                args.capture
            ),
        )
    })?;
    let message = match &args.message {
        Some(path) => RawMessage::from_bytes(
            std::fs::read(path)
                .map_err(|e| Failure::new(Exit::IOERR, format!("{}: {e}", path.display())))?,
        ),
        None => {
            let mut text = String::new();
            for h in &args.headers {
                text.push_str(h);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            RawMessage::from_bytes(text.into_bytes())
        }
    };
    let mut env = Envelope::new(capture, message);
    env.sender = normalize_address_arg(&args.sender);
    env.recipients = args
        .recipients
        .iter()
        .filter_map(|r| normalize_address_arg(r))
        .collect();
    env.login = args.login.filter(|l| !l.is_empty());
    env.queue_id = args.queue_id;
    env.tags = args.tags;
    env.client = Client {
        address: args.client_address,
        hostname: args.client_hostname,
        ..Client::default()
    };
    let plan = settings
        .archiver
        .plan(&env)
        .map_err(|e| Failure::from_error(Exit::SOFTWARE, &e))?;
    println!("config: {}", settings.source);
    println!(
        "sender <{}>, login {}, {} recipient(s)",
        env.sender.as_deref().unwrap_or(""),
        env.login.as_deref().unwrap_or("(none)"),
        env.recipients.len()
    );
    for d in &plan.decisions {
        match &d.recipient {
            Some(r) => println!("recipient <{r}>:"),
            None => println!("message (no envelope recipients):"),
        }
        if d.outcomes.is_empty() {
            println!("  no rule matched: not archived");
        }
        for o in &d.outcomes {
            match &o.archive {
                None => println!("  rule {:?}: skip (not archived)", o.rule),
                Some(paths) => {
                    println!("  rule {:?}: archive", o.rule);
                    for (kind, path) in paths {
                        println!("    {}", destination(settings, *kind, path));
                    }
                }
            }
        }
    }
    if plan.deliveries.is_empty() {
        println!("writes: nothing");
        return Ok(Exit::NOTHING);
    }
    println!("writes ({}):", plan.deliveries.len());
    for d in &plan.deliveries {
        let what = if d.recipients.is_empty() {
            "whole message".to_string()
        } else {
            format!("for {}", d.recipients.join(", "))
        };
        let headers = match d.kind {
            // The store keeps the envelope in its catalog.
            DestKind::Store => "envelope in the catalog",
            _ if d.envelope_headers => "envelope headers on",
            _ => "envelope headers off",
        };
        println!(
            "  {} ({what}; {headers})",
            destination(settings, d.kind, &d.path)
        );
    }
    Ok(Exit::OK)
}

/// `kind:path`, or `store at PATH` for the native store.
fn destination(settings: &Settings, kind: DestKind, path: &std::path::Path) -> String {
    match (kind, &settings.store) {
        (DestKind::Store, Some(s)) => format!("store at {}", s.path.display()),
        _ => format!("{kind}:{}", path.display()),
    }
}
