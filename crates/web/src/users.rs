//! Local accounts: a name, a role, the addresses that are theirs, and an
//! argon2id hash of the password, in one JSON file (0600), replaced
//! atomically on every change (written beside it, fsynced, renamed, the
//! directory fsynced), so a crash leaves the old file or the new one.
//!
//! Roles: a *user* sees the deliveries where one of their addresses is the
//! SASL login, the envelope sender or an envelope recipient; an *auditor*
//! sees everything, read-only; an *admin* also manages holds, users and
//! retention. The checks themselves belong to the web interface.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Their own mail only.
    User,
    /// Everything, read-only, every access audited.
    Auditor,
    /// An auditor who also manages holds, users and retention.
    Admin,
}

impl Role {
    /// `user`, `auditor` or `admin`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "auditor" => Some(Role::Auditor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::User => "user",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        })
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The login name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The addresses whose mail is theirs (the login's own address among
    /// them when it is one), lower-case.
    pub addresses: Vec<String>,
    /// argon2id, in the PHC string format.
    pub password: String,
}

impl User {
    /// Whether `password` is this account's.
    pub fn verify(&self, password: &str) -> bool {
        verify_hash(&self.password, password)
    }
}

/// Whether `password` matches the PHC-format argon2 `hash`.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Why the accounts could not be changed or read.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file is not an accounts file.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The request itself is refused.
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    users: Vec<User>,
}

/// The accounts file.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
}

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

impl Users {
    /// The accounts in `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Users {
        Users { path: path.into() }
    }

    /// Where they are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account; none when the file does not exist yet.
    pub fn list(&self) -> Result<Vec<User>, UsersError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<File>(&bytes)
                .map(|f| f.users)
                .map_err(|e| UsersError::Invalid {
                    path: self.path.clone(),
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(UsersError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The account `name`.
    pub fn get(&self, name: &str) -> Result<Option<User>, UsersError> {
        Ok(self.list()?.into_iter().find(|u| u.name == name))
    }

    /// Adds an account, or replaces the role, addresses and password of
    /// the one of that name.
    pub fn put(
        &self,
        name: &str,
        role: Role,
        addresses: &[String],
        password: &str,
    ) -> Result<User, UsersError> {
        if name.is_empty()
            || name.len() > 256
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(UsersError::Refused(format!(
                "{name:?}: a name is 1 to 256 characters without spaces or control characters"
            )));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(UsersError::Refused(format!(
                "the password is shorter than {MIN_PASSWORD} characters"
            )));
        }
        let mut addresses: Vec<String> =
            addresses.iter().map(|a| a.trim().to_lowercase()).collect();
        if let Some(bad) = addresses
            .iter()
            .find(|a| !a.contains('@') || a.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(UsersError::Refused(format!("{bad:?} is not an address")));
        }
        if name.contains('@') && !addresses.contains(&name.to_lowercase()) {
            addresses.push(name.to_lowercase());
        }
        addresses.sort();
        addresses.dedup();
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| UsersError::Refused(format!("hashing the password: {e}")))?
            .to_string();
        let user = User {
            name: name.to_string(),
            role,
            addresses,
            password: hash,
        };
        let _locked = self.lock()?;
        let mut users = self.list()?;
        users.retain(|u| u.name != name);
        users.push(user.clone());
        users.sort_by(|a, b| a.name.cmp(&b.name));
        self.write(&File { users })?;
        Ok(user)
    }

    /// Removes the account `name`; whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, UsersError> {
        let _locked = self.lock()?;
        let mut users = self.list()?;
        let before = users.len();
        users.retain(|u| u.name != name);
        if users.len() == before {
            return Ok(false);
        }
        self.write(&File { users })?;
        Ok(true)
    }

    /// One change at a time, whichever process makes it (`mailkeep user`
    /// and the web's admin page): an exclusive lock on a file beside the
    /// accounts, held while the file is read, changed and replaced.
    fn lock(&self) -> Result<std::fs::File, UsersError> {
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("users");
        let lock = self.path.with_file_name(format!(".{name}.lock"));
        let io = |source| UsersError::Io {
            path: lock.clone(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    fn write(&self, file: &File) -> Result<(), UsersError> {
        write_private_json(&self.path, file).map_err(|source| UsersError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Replaces `path` with `value` as pretty JSON, readable by its owner only,
/// atomically: written beside it, fsynced, renamed, the directory fsynced,
/// so a crash leaves the old file or the new one.
pub(crate) fn write_private_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    mailkeep_store::replace_file(path, text.as_bytes(), 0o600, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn accounts_are_added_verified_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(dir.path().join("users.json"));
        assert!(users.list().unwrap().is_empty());
        let bob = users
            .put(
                "bob@example.com",
                Role::User,
                &["Bob@Example.org".into()],
                "correct horse battery",
            )
            .unwrap();
        assert_eq!(bob.addresses, ["bob@example.com", "bob@example.org"]);
        assert!(bob.password.starts_with("$argon2id$"));
        assert!(!bob.password.contains("correct horse"));
        let got = users.get("bob@example.com").unwrap().unwrap();
        assert!(got.verify("correct horse battery"));
        assert!(!got.verify("correct horse batterz"));
        let mode = std::fs::metadata(users.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        users
            .put("auditor1", Role::Auditor, &[], "another long password")
            .unwrap();
        users
            .put("bob@example.com", Role::Admin, &[], "a new long password!")
            .unwrap();
        let all = users.list().unwrap();
        assert_eq!(all.len(), 2);
        let bob = users.get("bob@example.com").unwrap().unwrap();
        assert_eq!(bob.role, Role::Admin);
        assert!(bob.verify("a new long password!") && !bob.verify("correct horse battery"));
        assert!(users.remove("auditor1").unwrap());
        assert!(!users.remove("auditor1").unwrap());
        assert_eq!(users.list().unwrap().len(), 1);
    }

    #[test]
    fn bad_names_passwords_and_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(dir.path().join("users.json"));
        for (name, addrs, pw) in [
            ("", vec![], "long enough password"),
            ("a b", vec![], "long enough password"),
            ("bob", vec![], "short"),
            (
                "bob",
                vec!["not an address".to_string()],
                "long enough password",
            ),
        ] {
            assert!(
                matches!(
                    users.put(name, Role::User, &addrs, pw),
                    Err(UsersError::Refused(_))
                ),
                "{name:?}"
            );
        }
        std::fs::write(users.path(), b"{\"users\": 3}").unwrap();
        assert!(matches!(users.list(), Err(UsersError::Invalid { .. })));
    }
}
