//! Checking a password with an LDAP bind, and reading the person's
//! addresses from their entry (`mail`, or `proxyAddresses`-style values
//! such as `smtp:bob@example.com`).
//!
//! Two ways to find the entry: a DN template (`bind_dn = "uid={user},ou=people,dc=example,dc=com"`,
//! the name escaped as RFC 4514 asks), or a search (`base` and `filter`, the name escaped as RFC
//! 4515 asks, optionally after binding as a service account) that must find exactly one entry.
//! Then a simple bind as that entry with the password: result 49 (invalid credentials) is "no",
//! success is "yes", anything else an error. An empty password is refused before (an LDAP bind
//! with an empty password is an anonymous bind, which succeeds).
//!
//! `ldaps://` speaks TLS from the start and `starttls = true` upgrades `ldap://`, both checked
//! against the system's CA bundle; plain `ldap://` is accepted only for a loopback address.

use ldap3::{dn_escape, ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::time::Duration;

/// An LDAP directory to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapServer {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade `ldap://` with StartTLS.
    pub starttls: bool,
    /// The DN to bind as, `{user}` standing for the login name.
    pub bind_dn: Option<String>,
    /// Where to search for the entry (when there is no `bind_dn`).
    pub base: Option<String>,
    /// The search filter, `{user}` standing for the login name.
    pub filter: String,
    /// A service account to bind as before searching: DN and password.
    pub search_bind: Option<(String, String)>,
    /// The attributes holding the person's addresses.
    pub mail_attributes: Vec<String>,
}

impl LdapServer {
    /// A directory at `url` with the default settings (`filter =
    /// "(uid={user})"`, `mail_attributes = ["mail"]`).
    pub fn new(url: &str) -> LdapServer {
        LdapServer {
            url: url.to_string(),
            starttls: false,
            bind_dn: None,
            base: None,
            filter: "(uid={user})".into(),
            search_bind: None,
            mail_attributes: vec!["mail".into()],
        }
    }

    /// What is wrong with these settings, if anything.
    pub fn check(&self) -> Result<(), String> {
        let rest = if let Some(r) = self.url.strip_prefix("ldaps://") {
            r
        } else if let Some(r) = self.url.strip_prefix("ldap://") {
            let host = r.trim_end_matches('/');
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.split_once(']').map(|(h, _)| h))
                .unwrap_or_else(|| host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host));
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .map(|a| a.is_loopback())
                    .unwrap_or(false);
            if !loopback && !self.starttls {
                return Err(format!(
                    "{:?}: plain LDAP would send passwords in clear over the network; use \
                     ldaps://, starttls = true, or a directory on 127.0.0.1",
                    self.url
                ));
            }
            r
        } else {
            return Err(format!("{:?}: not an ldap:// or ldaps:// URL", self.url));
        };
        if rest.trim_end_matches('/').is_empty() || rest.contains(['?', '#', '@']) {
            return Err(format!("{:?}: expected ldap://HOST:PORT", self.url));
        }
        match (&self.bind_dn, &self.base) {
            (Some(t), _) if !t.contains("{user}") => {
                Err("web.ldap.bind_dn must contain {user}".into())
            }
            (None, None) => Err("web.ldap: set bind_dn (a DN template) or base (to search)".into()),
            (None, Some(_)) if !self.filter.contains("{user}") => {
                Err("web.ldap.filter must contain {user}".into())
            }
            _ if self.mail_attributes.is_empty() => {
                Err("web.ldap.mail_attributes: at least one attribute".into())
            }
            _ => Ok(()),
        }
    }

    /// `Ok(Some(addresses))` when the directory accepts the password,
    /// `Ok(None)` when it says no. Blocking: call it off the async
    /// workers, within the runtime (it drives the connection there).
    pub fn check_password(
        &self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<String>>, String> {
        if password.is_empty() {
            return Ok(None);
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "LDAP needs the server's runtime".to_string())?;
        let work = self.dialogue(user, password, timeout);
        handle
            .block_on(async { tokio::time::timeout(timeout * 3, work).await })
            .map_err(|_| format!("{}: no answer within {:?}", self.url, timeout * 3))?
            .map_err(|e| format!("{}: {e}", self.url))
    }

    async fn dialogue(
        &self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<String>>, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(self.starttls);
        if self.url.starts_with("ldaps://") || self.starttls {
            settings = settings.set_config(mailkeep_smtp::tls::client_config(true)?);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| e.to_string())?;
        ldap3::drive!(conn);
        let dn = match &self.bind_dn {
            Some(template) => template.replace("{user}", &dn_escape(user)),
            None => {
                if let Some((dn, pw)) = &self.search_bind {
                    ldap.with_timeout(timeout)
                        .simple_bind(dn, pw)
                        .await
                        .and_then(|r| r.success())
                        .map_err(|e| format!("the service account's bind: {e}"))?;
                }
                let filter = self.filter.replace("{user}", &ldap_escape(user));
                let base = self.base.as_deref().unwrap_or("");
                let (entries, _) = ldap
                    .with_timeout(timeout)
                    .search(base, Scope::Subtree, &filter, vec!["1.1"])
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| format!("searching {filter}: {e}"))?;
                if entries.len() != 1 {
                    // Nobody, or ambiguous: no login either way.
                    return Ok(None);
                }
                entry(entries.into_iter().next().expect("one"))?.dn
            }
        };
        let bound = ldap
            .with_timeout(timeout)
            .simple_bind(&dn, password)
            .await
            .map_err(|e| e.to_string())?;
        match bound.rc {
            0 => {}
            // invalidCredentials; noSuchObject for a template naming nobody.
            49 | 32 => return Ok(None),
            _ => return Err(format!("bind: {bound}")),
        }
        let attrs: Vec<&str> = self.mail_attributes.iter().map(String::as_str).collect();
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(&dn, Scope::Base, "(objectClass=*)", attrs)
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("reading {dn}: {e}"))?;
        let mut addresses = Vec::new();
        for e in entries {
            for values in entry(e)?.attrs.into_values() {
                addresses.extend(values.into_iter().filter_map(|v| address(&v)));
            }
        }
        let _ = ldap.unbind().await;
        addresses.sort();
        addresses.dedup();
        Ok(Some(addresses))
    }
}

/// An entry of a search result; ldap3 panics on one it cannot parse, which
/// is turned into an error here.
fn entry(raw: ldap3::ResultEntry) -> Result<SearchEntry, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw)))
        .map_err(|_| "the directory sent an entry that cannot be parsed".to_string())
}

/// An address from an attribute value: `bob@example.com`, or the
/// `smtp:`/`SMTP:` form of `proxyAddresses` (other types, such as `x500:`,
/// are not addresses).
fn address(value: &str) -> Option<String> {
    let v = value.trim();
    let v = match v.split_once(':') {
        Some((kind, rest)) if kind.eq_ignore_ascii_case("smtp") => rest,
        Some(_) => return None,
        None => v,
    };
    let ok = v.contains('@')
        && !v.starts_with('@')
        && !v.contains('*')
        && !v.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| v.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_mail_and_proxy_addresses() {
        assert_eq!(address("Bob@Example.com"), Some("bob@example.com".into()));
        assert_eq!(
            address("SMTP:bob@example.com"),
            Some("bob@example.com".into())
        );
        assert_eq!(
            address("smtp:alias@example.com"),
            Some("alias@example.com".into())
        );
        assert_eq!(address("x500:/o=Org/cn=bob"), None);
        assert_eq!(address("*@example.com"), None);
        assert_eq!(address("nobody"), None);
    }

    #[test]
    fn settings_are_checked() {
        let mut s = LdapServer::new("ldap://127.0.0.1:389");
        assert!(s.check().is_err(), "neither bind_dn nor base");
        s.bind_dn = Some("uid={user},dc=x".into());
        assert!(s.check().is_ok());
        s.url = "ldap://ldap.example.com".into();
        assert!(s.check().is_err(), "plain text to another host");
        s.starttls = true;
        assert!(s.check().is_ok());
        s.bind_dn = Some("uid=bob,dc=x".into());
        assert!(s.check().is_err(), "no {{user}}");
    }
}
