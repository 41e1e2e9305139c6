//! Who may log in: the backends, tried in the configured order.
//!
//! - `local`: the accounts `mailkeep user add` keeps (argon2id). An
//!   account there also gives its role and addresses.
//! - `imap://HOST:PORT` (or `imaps://`): the site's IMAP server (Dovecot)
//!   says whether the password is right, as piler does; see [`crate::imap`].
//! - `ldap://HOST:PORT` (or `ldaps://`): a bind to the directory, which also
//!   gives the person's addresses; see [`crate::ldap`].
//!
//! Someone accepted by a backend other than `local` is a *user* unless the
//! configuration names them in `auditors` or `admins`; their addresses are
//! the directory's (LDAP), the login itself when it is an address,
//! `NAME@default_domain` when a default domain is set, and the configured
//! aliases.

use crate::identity::Identity;
use crate::users::{Role, Users};
use std::collections::HashMap;
use std::time::Duration;

/// One way to check a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The local accounts file.
    Local,
    /// An IMAP server: `imap://host:port` (plain text, only to a
    /// loopback address) or `imaps://host:port`.
    Imap(crate::imap::ImapServer),
    /// An LDAP directory (`ldap://` or `ldaps://`; its settings are
    /// `[web.ldap]`).
    Ldap(crate::ldap::LdapServer),
}

impl Backend {
    /// Parses `local`, `imap://HOST[:PORT]` or `imaps://HOST[:PORT]`.
    pub fn parse(text: &str) -> Result<Backend, String> {
        if text == "local" {
            return Ok(Backend::Local);
        }
        if text.starts_with("imap://") || text.starts_with("imaps://") {
            return crate::imap::ImapServer::parse(text).map(Backend::Imap);
        }
        if text.starts_with("ldap://") || text.starts_with("ldaps://") {
            return Ok(Backend::Ldap(crate::ldap::LdapServer::new(text)));
        }
        Err(format!(
            "{text:?}: a login backend is \"local\", \"imap://HOST:PORT\", \"imaps://HOST:PORT\", \
             \"ldap://HOST:PORT\" or \"ldaps://HOST:PORT\""
        ))
    }

    /// Its name in the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Imap(_) => "imap",
            Backend::Ldap(_) => "ldap",
        }
    }
}

/// The configured backends and what the configuration says about the people
/// they accept.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Tried in this order; the first that accepts decides.
    pub backends: Vec<Backend>,
    /// The local accounts.
    pub users: Users,
    /// Names that are auditors (for backends other than `local`).
    pub auditors: Vec<String>,
    /// Names that are admins (for backends other than `local`).
    pub admins: Vec<String>,
    /// Appended to a login name without `@` to make its address.
    pub default_domain: Option<String>,
    /// More addresses per login name.
    pub aliases: HashMap<String, Vec<String>>,
    /// How long a backend may take to answer.
    pub timeout: Duration,
}

/// Why nobody could be logged in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Every backend said no.
    #[error("wrong user name or password")]
    Refused,
    /// A backend could not be asked (and none accepted).
    #[error("the login service is unavailable: {0}")]
    Unavailable(String),
}

/// A password hash to check when there is no such account, so that a
/// wrong name costs as long as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut rand_core::OsRng);
        argon2::Argon2::default()
            .hash_password(b"not a password of anyone", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl Auth {
    /// The identity of someone a backend other than `local` accepted.
    fn external(&self, name: &str, backend: &'static str, found: Vec<String>) -> Identity {
        let role = if self.admins.iter().any(|a| a == name) {
            Role::Admin
        } else if self.auditors.iter().any(|a| a == name) {
            Role::Auditor
        } else {
            Role::User
        };
        let mut addresses = found;
        if name.contains('@') {
            addresses.push(name.to_lowercase());
        } else if let Some(d) = &self.default_domain {
            addresses.push(format!("{name}@{d}").to_lowercase());
        }
        if let Some(more) = self.aliases.get(name) {
            addresses.extend(more.iter().map(|a| a.to_lowercase()));
        }
        addresses.sort();
        addresses.dedup();
        Identity {
            name: name.to_string(),
            role,
            addresses,
            backend,
        }
    }

    /// The identity of a local account, as it is now.
    fn local_identity(&self, u: crate::User) -> Identity {
        let mut addresses = u.addresses.clone();
        if let Some(more) = self.aliases.get(&u.name) {
            addresses.extend(more.iter().map(|a| a.to_lowercase()));
        }
        addresses.sort();
        addresses.dedup();
        Identity {
            name: u.name,
            role: u.role,
            addresses,
            backend: "local",
        }
    }

    /// What ties a token of `who` to their account now (empty but for a
    /// local account).
    pub fn account_key(&self, who: &Identity) -> Result<String, String> {
        if who.backend != "local" {
            return Ok(String::new());
        }
        match self.users.get(&who.name).map_err(|e| e.to_string())? {
            Some(u) => Ok(crate::tokens::account_key(&u.password)),
            None => Err(format!("no local account {:?}", who.name)),
        }
    }

    /// The local account `name` as it is now (`None`: there is none).
    pub fn local_now(&self, name: &str) -> Result<Option<Identity>, String> {
        Ok(self
            .users
            .get(name)
            .map_err(|e| e.to_string())?
            .map(|u| self.local_identity(u)))
    }

    /// Whom an API token acts for now: a local account as it is today
    /// (`None` once removed), someone from IMAP or LDAP with the addresses
    /// found when the token was made and the role the configuration gives
    /// the name today.
    pub fn token_identity(&self, t: &crate::tokens::Token) -> Result<Option<Identity>, String> {
        match t.backend.as_str() {
            // The same account: the password it had when the token was made.
            "local" => match self.users.get(&t.name).map_err(|e| e.to_string())? {
                Some(u) if crate::tokens::account_key(&u.password) == t.account => {
                    Ok(Some(self.local_identity(u)))
                }
                _ => Ok(None),
            },
            "imap" => Ok(Some(self.external(&t.name, "imap", t.addresses.clone()))),
            "ldap" => Ok(Some(self.external(&t.name, "ldap", t.addresses.clone()))),
            _ => Ok(None),
        }
    }

    fn local(&self, name: &str, password: &str) -> Result<Option<Identity>, String> {
        let user = self.users.get(name).map_err(|e| e.to_string())?;
        match user {
            Some(u) if u.verify(password) => Ok(Some(self.local_identity(u))),
            Some(_) => Ok(None),
            None => {
                let _ = crate::users::verify_hash(dummy_hash(), password);
                Ok(None)
            }
        }
    }

    /// Checks the password with each backend in turn (blocking: argon2 and
    /// network round trips; call it off the async workers).
    pub fn login(&self, name: &str, password: &str) -> Result<Identity, AuthError> {
        if name.is_empty()
            || name.len() > 256
            || password.is_empty()
            || password.len() > 1024
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(AuthError::Refused);
        }
        let mut unavailable = Vec::new();
        for backend in &self.backends {
            let result = match backend {
                Backend::Local => self.local(name, password),
                Backend::Imap(server) => server
                    .check(name, password, self.timeout)
                    .map(|ok| ok.then(|| self.external(name, "imap", Vec::new()))),
                Backend::Ldap(dir) => dir
                    .check_password(name, password, self.timeout)
                    .map(|found| found.map(|a| self.external(name, "ldap", a))),
            };
            match result {
                Ok(Some(identity)) => return Ok(identity),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(backend = backend.name(), "login backend unavailable: {e}");
                    unavailable.push(format!("{}: {e}", backend.name()));
                }
            }
        }
        if unavailable.is_empty() {
            Err(AuthError::Refused)
        } else {
            Err(AuthError::Unavailable(unavailable.join("; ")))
        }
    }
}
