//! The archive on the web (issue 15), for the people the archive is for:
//! each user sees their own mail by the true envelope, auditors see all,
//! and every access is audited. Built so far:
//!
//! - [`users`]: local accounts (argon2id), managed by `mailkeep user`.
//!
//! The HTTP server, sessions, the other login backends and the pages are
//! to come.

#![forbid(unsafe_code)]

pub mod users;

pub use users::{Role, User, Users, UsersError};
