//! Legal holds: a named search query whose deliveries are never expired or
//! erased while the hold stands. The query is evaluated whenever expiry or
//! erasure runs, so a hold covers what it matches when it is placed and
//! what arrives later, until it is released.
//!
//! Holds are entries of the audit log (action `hold`, `op` `add` or
//! `release`, with who, when and why): the same hash chain, `verify` and
//! checkpoints cover them, so a hold cannot be removed unnoticed, and the
//! holds in force are those the log adds and does not release.

use crate::audit::{AuditError, AuditLog, Entry};
use serde_json::Value;

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
