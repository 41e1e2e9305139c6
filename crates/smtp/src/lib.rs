//! mailkeep's one SMTP client, for every path that talks to a mail server:
//! the filter proxy's relay (commands in step with its own client), the
//! pipe's reinjection (`smtp://` back into Postfix with the original
//! envelope) and `forward:` (archive copies to a relay).
//!
//! - [`reply`]: the one reply parser, sans-IO, with bounded lines and line
//!   count (fuzzed as `smtp_reply`).
//! - [`Offer`]: what an EHLO reply offers, read by smtp-proto.
//! - [`Client`]: the connection (tokio), STARTTLS with [`tls`]' two
//!   configurations, AUTH PLAIN, DATA with [`DataEncoder`]; synchronous
//!   callers drive it with [`blocking::run`].
//!
//! Errors name the stage and the peer, and tell a 5xx reply (permanent)
//! from everything else (temporary); what a caller makes of them is its
//! own failure policy.

#![forbid(unsafe_code)]

pub mod blocking;
mod client;
mod data;
mod offer;
pub mod reply;
mod text;
pub mod tls;

pub use client::{Client, Error, Failure, Timeouts};
pub use data::DataEncoder;
pub use offer::Offer;
pub use reply::Reply;
pub use smtp_proto;
pub use text::{base64, is_safe_address, xtext};
