//! Every command that touches the store records itself in the audit log
//! first (`mailkeep_lifecycle::audit`): who (the Unix user, and who ran
//! `sudo`), from where (SSH client, terminal), what (the query, the ids,
//! the counts). When the entry cannot be written, the command does nothing
//! and exits 77 (permission denied) or 74: there are no unaudited reads.

use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_lifecycle::retention::Retention;
use mailkeep_lifecycle::{Actor, AuditError, AuditLog};
use mailkeep_store::owner::Ownership;
use serde_json::{Map, Value};
use std::io;

/// Records a configuration load of `serve` (start or reload). Capture is
/// not an access to what is archived, so a log that cannot be written is
/// an error in the log, not a reason to stop taking mail.
pub fn record_config(settings: &Settings, event: &str) {
    if settings.store.is_none() {
        return;
    }
    let detail = serde_json::json!({
        "event": event,
        "source": settings.source.to_string(),
        "rules": settings.archiver.rules().rules().len(),
    });
    if let Err(e) = settings
        .audit_as("serve")
        .and_then(|a| a.record("config", detail))
    {
        tracing::error!(
            "configuration {event} not recorded in the audit log: {}",
            e.message
        );
    }
}

/// [`Audit::settle_retention`] for `serve`: a locked retention that
/// would shorten is an error (the configuration is refused); the log
/// being unwritable is logged and the configuration used (capture goes on).
pub fn settle_serve_retention(settings: &Settings) -> Result<(), Failure> {
    if settings.store.is_none() {
        return Ok(());
    }
    match settings
        .audit_as("serve")
        .and_then(|a| a.settle_retention(&settings.retention))
    {
        Err(f) if f.code == Exit::CONFIG => Err(f),
        Err(f) => {
            tracing::error!("retention not recorded in the audit log: {}", f.message);
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Whether `settings`' retention may be put in force by `serve` (a
/// locked retention recorded in the log only lengthens), without
/// recording anything: a change is checked before it is written.
pub fn check_serve_retention(settings: &Settings) -> Result<(), Failure> {
    if settings.store.is_none() {
        return Ok(());
    }
    settings
        .audit_as("serve")?
        .check_retention(&settings.retention)
}

/// The audit action recording the retention in force.
const RETENTION_CONFIG: &str = "retention_config";

/// The retention the log's entries last recorded.
fn last_retention(entries: &[mailkeep_lifecycle::Entry]) -> Option<Value> {
    entries
        .iter()
        .rev()
        .find(|e| e.action == RETENTION_CONFIG)
        .and_then(|e| e.detail.get("retention").cloned())
}

/// A locked retention's refusal, as `serve`, `expire` and the web say it.
fn locked(why: String) -> Failure {
    Failure::new(
        Exit::CONFIG,
        format!("[retention] is locked: {why}; this configuration is refused"),
    )
}

/// The log of one store and who this process records as.
pub struct Audit {
    log: AuditLog,
    actor: Actor,
}

impl Settings {
    /// The audit log of the configured store, created (for the store's
    /// owner, 0600, or 0660 with `[store] group`, whose members then append
    /// to it) when it does not exist yet.
    /// `store` is the store the command opened (the log is bound to its
    /// id: its first entry links to it).
    pub fn audit(&self, store: &mailkeep_store::Store) -> Result<Audit, Failure> {
        self.audit_for("cli", store)
    }

    /// [`Settings::audit`] for a caller that has no store open (`serve`).
    pub fn audit_as(&self, via: &str) -> Result<Audit, Failure> {
        self.audit_for(via, &self.open_store()?)
    }

    /// [`Settings::audit`] for a way in other than the command line.
    pub fn audit_for(&self, via: &str, opened: &mailkeep_store::Store) -> Result<Audit, Failure> {
        let (Some(store), Some(path)) = (&self.store, &self.audit_log) else {
            return Err(Failure::new(
                Exit::CONFIG,
                format!("{}: there is no [store] section", self.source),
            ));
        };
        let log = AuditLog::new(path, &opened.id());
        let mode = if store.group.is_some() { 0o660 } else { 0o600 };
        log.create(mode, |file| {
            Ownership::for_store(&store.path, store.group)?.apply(file, false)
        })
        .map_err(fail)?;
        Ok(Audit {
            log,
            actor: Actor::this_process(via),
        })
    }
}

impl Audit {
    /// Records `action` with `detail` (a JSON object), durably, before the
    /// command shows or does anything.
    pub fn record(&self, action: &str, detail: Value) -> Result<(), Failure> {
        self.log
            .append(&self.actor, action, object(detail))
            .map(drop)
            .map_err(fail)
    }

    /// The log.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Who this process records as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Records the log's head in the store (`Store::set_audit_anchor`), so
    /// a later removal can tell that this is still the log it knew.
    pub fn anchor(&self, store: &mailkeep_store::Store) -> Result<(), Failure> {
        if let Some((seq, hash)) = self.log.head().map_err(fail)? {
            store
                .set_audit_anchor(seq, &hash)
                .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
        }
        Ok(())
    }

    /// Refuses (65) when the log no longer holds, unchanged, the entry the
    /// store last recorded as its head: the log was replaced, moved or cut,
    /// and the legal holds and the locked retention in it with it.
    pub fn check_anchor(&self, store: &mailkeep_store::Store) -> Result<(), Failure> {
        let Some((seq, hash)) = store
            .audit_anchor()
            .map_err(|e| Failure::from_store(Exit::IOERR, &e))?
        else {
            return Ok(());
        };
        if self.log.hash_of(seq).map_err(fail)?.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        Err(Failure::new(
            Exit::DATAERR,
            format!(
                "{}: does not hold entry {seq} as the store last recorded it: the audit log was \
                 replaced, moved or cut, and the legal holds and the locked retention are in it, \
                 so nothing is removed (restore the log, or compare it with a checkpoint)",
                self.log.path().display()
            ),
        ))
    }

    /// Holds the configured retention against the last one the log
    /// recorded: once `locked = true` is recorded, a configuration that
    /// would keep anything for less time is refused (78), whoever loads it;
    /// a retention that changed is recorded (`retention_config`).
    pub fn settle_retention(&self, retention: &Retention) -> Result<(), Failure> {
        let current = retention.describe();
        let known = self
            .log
            .entries(|e| e.action == RETENTION_CONFIG)
            .map_err(fail)?;
        if last_retention(&known).as_ref() == Some(&current) {
            return Ok(());
        }
        let check = |entries: &[mailkeep_lifecycle::Entry]| match last_retention(entries) {
            Some(old) => retention.lengthens(&old),
            None => Ok(()),
        };
        self.record_checked(
            RETENTION_CONFIG,
            serde_json::json!({"retention": current}),
            check,
        )
        .map_err(|f| match f.code {
            Exit::USAGE => locked(f.message),
            _ => f,
        })
    }

    /// What [`Audit::settle_retention`] would refuse, recording nothing.
    pub fn check_retention(&self, retention: &Retention) -> Result<(), Failure> {
        let known = self
            .log
            .entries(|e| e.action == RETENTION_CONFIG)
            .map_err(fail)?;
        match last_retention(&known) {
            Some(old) => retention.lengthens(&old).map_err(locked),
            None => Ok(()),
        }
    }

    /// [`Audit::record`] once `check` accepted the log's entries, read
    /// under the append's own lock; a refusal is a usage error (64) with
    /// `check`'s reason, and is itself recorded (as `refused_action`).
    pub fn record_checked(
        &self,
        action: &str,
        detail: Value,
        check: impl FnOnce(&[mailkeep_lifecycle::Entry]) -> Result<(), String>,
    ) -> Result<(), Failure> {
        let map = object(detail);
        match self
            .log
            .append_checked(&self.actor, action, map.clone(), check)
        {
            Ok(_) => Ok(()),
            Err(AuditError::Refused(why)) => {
                let mut refused = map;
                refused.insert("refused".into(), Value::from(why.clone()));
                self.record(&format!("refused_{action}"), Value::Object(refused))?;
                Err(Failure::new(Exit::USAGE, why))
            }
            Err(e) => Err(fail(e)),
        }
    }
}

/// A detail as the log keeps it: a JSON object.
fn object(detail: Value) -> Map<String, Value> {
    match detail {
        Value::Object(m) => m,
        other => Map::from_iter([("detail".to_string(), other)]),
    }
}

fn fail(e: AuditError) -> Failure {
    let exit = match e.kind() {
        Some(io::ErrorKind::PermissionDenied) => Exit::NOPERM,
        _ => Exit::IOERR,
    };
    Failure::new(
        exit,
        format!(
            "{e}; every access to the archive is recorded in its audit log first, so nothing \
             was done"
        ),
    )
}
