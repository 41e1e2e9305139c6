//! `mailkeep check-config [--as USER]`: load and validate, say where it is
//! wrong, and whether the service user can write where mailkeep writes.

use crate::access;
use crate::config::{self, ConfigError, ConfigErrors, Settings};
use crate::exit::{Exit, Failure};
use nix::unistd::User;
use std::path::Path;

/// The user `check-config` checks as when run as root without `--as`
/// (the one the README and the systemd unit run the daemon as).
const SERVICE_USER: &str = "mailkeep";

pub fn run(path: Option<&Path>, as_user: Option<&str>) -> Result<Exit, Failure> {
    let settings = config::load(path).map_err(|e| Failure::new(Exit::CONFIG, e.to_string()))?;
    let user = match as_user {
        Some(name) => Some(
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| Failure::new(Exit::USAGE, format!("--as: no user {name:?}")))?,
        ),
        None if nix::unistd::geteuid().is_root() => User::from_name(SERVICE_USER).ok().flatten(),
        None => None,
    };
    let checked = match &user {
        Some(u) => {
            writable_by(&settings, u)?;
            format!(
                "write access: checked as {} ({} path(s))",
                u.name,
                settings.places.len()
            )
        }
        None if as_user.is_none() && nix::unistd::geteuid().is_root() => {
            format!("write access: not checked (no user {SERVICE_USER:?}; give --as USER)")
        }
        None => "write access: not checked (give --as USER)".to_string(),
    };
    let rules = settings.archiver.rules().rules();
    println!("{}: OK, {} rule(s)", settings.source, rules.len());
    for (i, r) in rules.iter().enumerate() {
        println!("  {}. {}", i + 1, r.name());
    }
    println!("{checked}");
    let r = &settings.retention;
    if !r.policies.is_empty() || r.locked {
        println!(
            "retention: {} policy(ies), default {}{}",
            r.policies.len(),
            r.default,
            if r.locked { ", locked" } else { "" }
        );
    }
    for w in r.warnings() {
        println!("warning: {w}");
    }
    Ok(Exit::OK)
}

/// Every place `user` cannot use, as configuration errors at the line of
/// the setting.
fn writable_by(settings: &Settings, user: &User) -> Result<(), Failure> {
    let failures =
        access::check(user, &settings.places).map_err(|m| Failure::new(Exit::NOPERM, m))?;
    if failures.is_empty() {
        return Ok(());
    }
    let mut errors: Vec<ConfigError> = failures
        .into_iter()
        .map(|(i, why)| {
            let place = &settings.places[i];
            ConfigError {
                source: settings.source.clone(),
                line: place.line,
                message: format!("{}: user {} {why}", place.what, user.name),
            }
        })
        .collect();
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    Err(Failure::new(Exit::CONFIG, ConfigErrors(errors).to_string()))
}
