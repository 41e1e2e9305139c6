//! Legal holds: a named search query whose deliveries are never expired or
//! erased while the hold stands. The query is evaluated whenever expiry or
//! erasure runs, so a hold covers what it matches when it is placed and
//! what arrives later, until it is released.
//!
//! Holds are entries of the audit log (action `hold`, `op` `add` or
//! `release`, with who, when and why): the same hash chain, `verify` and
//! checkpoints cover them, so a hold cannot be removed unnoticed, and the
//! holds in force are those the log adds and does not release.

use crate::audit::{Actor, AuditError, AuditLog, Entry};
use serde_json::{json, Map, Value};

/// A hold in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its name, unique among the holds in force.
    pub name: String,
    /// What it covers (the language of `mailkeep search`).
    pub query: String,
    /// Why it was placed.
    pub reason: String,
    /// Who placed it.
    pub by: String,
    /// When (UTC, RFC 3339).
    pub since: String,
    /// The audit entry that placed it.
    pub entry: u64,
}

/// The audit action of a hold being placed or released.
pub const ACTION: &str = "hold";

/// Longest query a hold takes: the audit log cuts longer values, and a
/// hold's query must be kept exactly.
pub const MAX_QUERY: usize = 16 * 1024;

/// The holds in force: every `add` not followed by a `release` of its name.
pub fn in_force(log: &AuditLog) -> Result<Vec<Hold>, AuditError> {
    let entries = log.entries(|e| e.action == ACTION)?;
    Ok(replay(&entries))
}

/// [`in_force`] over entries already read.
pub fn replay(entries: &[Entry]) -> Vec<Hold> {
    let mut holds: Vec<Hold> = Vec::new();
    let text = |e: &Entry, k: &str| {
        e.detail
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for e in entries.iter().filter(|e| e.action == ACTION) {
        let name = text(e, "name");
        match e.detail.get("op").and_then(Value::as_str) {
            // A second add of a name in force never replaces the first (the
            // command refuses it; a log that has one anyway keeps the
            // first hold, so nothing loses its protection).
            Some("add") if holds.iter().any(|h| h.name == name) => {}
            Some("add") => {
                holds.push(Hold {
                    query: text(e, "query"),
                    reason: text(e, "reason"),
                    by: e.user.clone(),
                    since: e.time.clone(),
                    entry: e.seq,
                    name,
                });
            }
            Some("release") => holds.retain(|h| h.name != name),
            _ => {}
        }
    }
    holds
}

/// Why a hold's name is refused, if it is: names are how people refer to
/// holds on the command line and in reports.
pub fn name_error(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 200 {
        return Some("a hold's name is 1 to 200 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Some(format!("{name:?} contains a control character"));
    }
    None
}

/// Why placing or releasing a hold did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The request itself is wrong (a name, an empty reason, a long query).
    #[error("{0}")]
    Invalid(String),
    /// The holds in force refused it (a name already in force, or none to
    /// release); the refusal is itself in the log.
    #[error("{0}")]
    Refused(String),
    /// The log could not be written: nothing happened.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What is wrong with a hold to place, if anything (the query's syntax is
/// the caller's to check: it needs the store to count what it covers).
pub fn check_new(name: &str, query: &str, reason: &str) -> Result<(), HoldError> {
    if let Some(why) = name_error(name) {
        return Err(HoldError::Invalid(why));
    }
    if reason.trim().is_empty() {
        return Err(HoldError::Invalid("say why the hold is placed".into()));
    }
    if query.len() > MAX_QUERY {
        return Err(HoldError::Invalid(format!(
            "the query is {} bytes; a hold's query is at most {MAX_QUERY} (split it into several \
             holds)",
            query.len()
        )));
    }
    Ok(())
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Appends `detail` under the log's lock if `check` allows it against
/// the entries there; a refusal is recorded as `refused_hold`.
fn append(
    log: &AuditLog,
    actor: &Actor,
    detail: Map<String, Value>,
    check: impl FnOnce(&[Entry]) -> Result<(), String>,
) -> Result<Entry, HoldError> {
    match log.append_checked(actor, ACTION, detail.clone(), check) {
        Ok(e) => Ok(e),
        Err(AuditError::Refused(why)) => {
            let mut refused = detail;
            refused.insert("refused".into(), Value::from(why.clone()));
            log.append(actor, &format!("refused_{ACTION}"), refused)?;
            Err(HoldError::Refused(why))
        }
        Err(e) => Err(e.into()),
    }
}

/// Places a hold (after [`check_new`]), unless one of that name is in
/// force: decided under the log's lock, so two at once cannot both win.
/// `deliveries_now` is what the query matches as it is placed.
pub fn place(
    log: &AuditLog,
    actor: &Actor,
    name: &str,
    query: &str,
    reason: &str,
    deliveries_now: usize,
) -> Result<Entry, HoldError> {
    check_new(name, query, reason)?;
    let detail = object(json!({
        "op": "add",
        "name": name,
        "query": query,
        "reason": reason,
        "deliveries_now": deliveries_now,
    }));
    append(log, actor, detail, |entries| {
        if replay(entries).iter().any(|h| h.name == name) {
            Err(format!(
                "a hold named {name:?} is in force already (release it first, or choose another \
                 name)"
            ))
        } else {
            Ok(())
        }
    })
}

/// Releases the hold `name`, if it is in force.
pub fn release(
    log: &AuditLog,
    actor: &Actor,
    name: &str,
    reason: &str,
) -> Result<Entry, HoldError> {
    if reason.trim().is_empty() {
        return Err(HoldError::Invalid("say why the hold is released".into()));
    }
    let detail = object(json!({"op": "release", "name": name, "reason": reason}));
    append(log, actor, detail, |entries| {
        if replay(entries).iter().any(|h| h.name == name) {
            Ok(())
        } else {
            Err(format!("no hold named {name:?} is in force"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Actor;
    use serde_json::{json, Map};

    fn detail(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn holds_in_force_are_added_and_not_released() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.log"), "test-store");
        log.create(0o600, |_| Ok(())).unwrap();
        let me = Actor {
            user: "legal".into(),
            uid: Some(0),
            via: "cli".into(),
            from: "tty".into(),
        };
        let add = |name: &str, q: &str| {
            log.append(
                &me,
                ACTION,
                detail(json!({"op": "add", "name": name, "query": q, "reason": "case 7"})),
            )
            .unwrap();
        };
        add("bob", "login:bob");
        add("carol", "to:carol@example.com");
        log.append(&me, "search", detail(json!({"query": "x"})))
            .unwrap();
        log.append(
            &me,
            ACTION,
            detail(json!({"op": "release", "name": "bob", "reason": "settled"})),
        )
        .unwrap();
        add("bob", "login:bob OR from:bob@example.com");
        let holds = in_force(&log).unwrap();
        let names: Vec<(&str, &str)> = holds
            .iter()
            .map(|h| (h.name.as_str(), h.query.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("carol", "to:carol@example.com"),
                ("bob", "login:bob OR from:bob@example.com")
            ]
        );
        assert_eq!(holds[1].entry, 5);
        assert_eq!(holds[0].by, "legal");
        assert!(
            name_error("").is_some()
                && name_error("a\nb").is_some()
                && name_error("matter 12").is_none()
        );
    }
}
