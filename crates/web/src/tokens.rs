//! API tokens: for scripts, a secret sent as `Authorization: Bearer …` in
//! place of a session cookie, with the same authorisation as its owner.
//!
//! A logged-in person makes one (`POST /api/tokens`) and sees it once; the
//! file (`tokens.json` beside the accounts, 0600, replaced atomically)
//! keeps only its BLAKE3 hash, who it is for and when it expires (at most
//! a year). Each use resolves the owner again: a local account's current
//! role and addresses (a removed account's tokens stop working), or for
//! IMAP and LDAP the addresses found at login with the role the
//! configuration gives the name today. A token cannot make or list
//! tokens, and needs no CSRF token (a browser never sends it by itself).

use crate::users::write_private_json;
use crate::Identity;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;

/// What a token string starts with.
pub const PREFIX: &str = "mkt_";

/// The longest a token lives, in days.
pub const MAX_DAYS: u32 = 365;

/// Unexpired tokens one person may have at once.
pub const MAX_PER_OWNER: usize = 20;

/// Why a token was not made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too many already.
    #[error("at most {MAX_PER_OWNER} tokens at once: revoke one first")]
    TooMany,
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What ties a token to a local account's password (see [`Token::account`]).
pub fn account_key(password_hash: &str) -> String {
    blake3::hash(password_hash.as_bytes()).to_hex().to_string()
}

/// One token, as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Its public id (in its string, and to revoke it by).
    pub id: String,
    /// BLAKE3 of its secret, hex.
    pub hash: String,
    /// Whose it is: the login name.
    pub name: String,
    /// The backend that logged them in when it was made.
    pub backend: String,
    /// The addresses the backend found then (IMAP, LDAP).
    pub addresses: Vec<String>,
    /// For a local account: BLAKE3 of its password hash when the token was
    /// made, so a new password, or an account removed and made again under
    /// the same name, ends its tokens. Empty for other backends.
    pub account: String,
    /// What it is for, as its owner wrote it.
    pub label: String,
    /// When it was made, Unix seconds.
    pub created: i64,
    /// When it stops working, Unix seconds.
    pub expires: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tokens: Vec<Token>,
}

/// The tokens file.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    /// One change at a time (the server is the file's only writer).
    write: Mutex<()>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex(&b)
}

impl Tokens {
    /// The tokens kept in `path`.
    pub fn new(path: PathBuf) -> Tokens {
        Tokens {
            path,
            write: Mutex::new(()),
        }
    }

    fn read(&self) -> std::io::Result<File> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(e) => Err(e),
        }
    }

    /// The unexpired tokens of `who` (their name with their backend: a
    /// local `bob` and an IMAP `bob` are two people), oldest first.
    pub fn of(&self, who: &Identity) -> std::io::Result<Vec<Token>> {
        let t = now();
        Ok(self
            .read()?
            .tokens
            .into_iter()
            .filter(|x| owned(x, who) && x.expires > t)
            .collect())
    }

    /// Ends every token of the local account `name` (removed or changed).
    pub fn revoke_all_local(&self, name: &str) -> std::io::Result<usize> {
        let _one = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let before = file.tokens.len();
        file.tokens
            .retain(|x| !(x.name == name && x.backend == "local"));
        let n = before - file.tokens.len();
        if n > 0 {
            write_private_json(&self.path, &file)?;
        }
        Ok(n)
    }

    /// A new token for `who`, valid for `days`: the token and its string,
    /// which is shown once and kept nowhere.
    pub fn create(
        &self,
        who: &Identity,
        account: &str,
        label: &str,
        days: u32,
    ) -> Result<(Token, String), TokenError> {
        let _one = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let id = random_hex(8);
        let secret = random_hex(32);
        let t = now();
        let token = Token {
            id: id.clone(),
            hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
            name: who.name.clone(),
            backend: who.backend.to_string(),
            addresses: who.addresses.clone(),
            account: account.to_string(),
            label: label.to_string(),
            created: t,
            expires: t + i64::from(days.clamp(1, MAX_DAYS)) * 86_400,
        };
        let mut file = self.read()?;
        // Expired tokens leave the file when another is made.
        file.tokens.retain(|x| x.expires > t);
        if file.tokens.iter().filter(|x| owned(x, who)).count() >= MAX_PER_OWNER {
            return Err(TokenError::TooMany);
        }
        file.tokens.push(token.clone());
        write_private_json(&self.path, &file)?;
        Ok((token, format!("{PREFIX}{id}_{secret}")))
    }

    /// Revokes `who`'s token `id`; whether there was one.
    pub fn revoke(&self, who: &Identity, id: &str) -> std::io::Result<bool> {
        let _one = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let before = file.tokens.len();
        file.tokens.retain(|x| !(owned(x, who) && x.id == id));
        if file.tokens.len() == before {
            return Ok(false);
        }
        write_private_json(&self.path, &file)?;
        Ok(true)
    }

    /// The unexpired token a string names, if its secret is right.
    pub fn check(&self, presented: &str) -> std::io::Result<Option<Token>> {
        let Some((id, secret)) = presented
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        let t = now();
        let hash = blake3::hash(secret.as_bytes());
        Ok(self.read()?.tokens.into_iter().find(|x| {
            x.id == id
                && x.expires > t
                // blake3::Hash compares in constant time.
                && blake3::Hash::from_hex(&x.hash).is_ok_and(|h| h == hash)
        }))
    }
}

/// Whether `t` is `who`'s.
fn owned(t: &Token, who: &Identity) -> bool {
    t.name == who.name && t.backend == who.backend
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn bob() -> Identity {
        Identity::test_user("bob", "imap")
    }

    #[test]
    fn a_token_is_checked_listed_and_revoked_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let tokens = Tokens::new(path.clone());
        let (t, secret) = tokens.create(&bob(), "", "backup script", 30).unwrap();
        assert!(secret.starts_with("mkt_"));
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(!file.contains(secret.rsplit('_').next().unwrap()), "{file}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(tokens.check(&secret).unwrap().unwrap().id, t.id);
        assert_eq!(tokens.of(&bob()).unwrap().len(), 1);
        assert!(tokens
            .of(&Identity::test_user("alice", "imap"))
            .unwrap()
            .is_empty());
        assert!(
            tokens
                .of(&Identity::test_user("bob", "local"))
                .unwrap()
                .is_empty(),
            "a local bob is someone else"
        );
        // A wrong secret, a wrong id, garbage: nothing.
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push(if secret.ends_with('0') { '1' } else { '0' });
        for s in [wrong.as_str(), "mkt_", "mkt_x_y", "", "Bearer"] {
            assert!(tokens.check(s).unwrap().is_none(), "{s}");
        }
        // Someone else cannot revoke it; its owner can.
        assert!(!tokens
            .revoke(&Identity::test_user("alice", "imap"), &t.id)
            .unwrap());
        assert!(!tokens
            .revoke(&Identity::test_user("bob", "local"), &t.id)
            .unwrap());
        assert!(tokens.revoke(&bob(), &t.id).unwrap());
        assert!(tokens.check(&secret).unwrap().is_none());
    }

    #[test]
    fn an_expired_token_does_not_work_and_lives_at_most_a_year() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::new(dir.path().join("tokens.json"));
        let (t, _) = tokens.create(&bob(), "", "", 10_000).unwrap();
        assert_eq!(t.expires - t.created, i64::from(MAX_DAYS) * 86_400);
        let (_, secret) = tokens.create(&bob(), "", "", 1).unwrap();
        let mut file = tokens.read().unwrap();
        for x in &mut file.tokens {
            x.expires = now() - 1;
        }
        write_private_json(&tokens.path, &file).unwrap();
        assert!(tokens.check(&secret).unwrap().is_none());
        assert!(tokens.of(&bob()).unwrap().is_empty());
    }

    #[test]
    fn one_owner_has_at_most_twenty_and_a_local_account_change_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::new(dir.path().join("tokens.json"));
        for _ in 0..MAX_PER_OWNER {
            tokens.create(&bob(), "", "", 1).unwrap();
        }
        assert!(matches!(
            tokens.create(&bob(), "", "", 1),
            Err(TokenError::TooMany)
        ));
        let local = Identity::test_user("bob", "local");
        let (_, secret) = tokens.create(&local, "k", "", 1).unwrap();
        assert_eq!(tokens.revoke_all_local("bob").unwrap(), 1);
        assert!(tokens.check(&secret).unwrap().is_none());
        assert_eq!(
            tokens.of(&bob()).unwrap().len(),
            MAX_PER_OWNER,
            "the IMAP bob's stay"
        );
    }
}
