//! The meeting point of mailkeep: what a capture front-end hands over and what
//! a destination writes.
//!
//! Every capture path (milter, SMTP filter, pipe, import) fills one
//! [`Envelope`]: who really sent the message (SASL login, client), the SMTP
//! envelope (sender and every recipient, Bcc included, in order) and the raw
//! message bytes exactly as received, held by [`RawMessage`], which spills to
//! an anonymous spool file past a threshold so no message ever has to fit in
//! memory. Rules read an envelope; destinations write it. Neither knows which
//! front-end produced it.

#![forbid(unsafe_code)]

mod address;
pub mod block;
mod spool;

pub use address::{client_ip, split_address, Address};
pub use spool::{RawMessage, RawMessageReader, SpoolWriter, DEFAULT_SPOOL_THRESHOLD};

use chrono::{DateTime, Datelike, Utc};
use std::fmt;

/// Which front-end captured a message. Recorded with every archived copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapturePath {
    /// Sendmail/Postfix milter (`smtpd_milters`).
    Milter,
    /// SMTP content filter, before-queue proxy or archive receiver.
    Filter,
    /// `mailkeep pipe` under Postfix `pipe(8)` or as `mailbox_command`.
    Pipe,
    /// `mailkeep import` of existing mailboxes.
    Import,
}

impl CapturePath {
    /// The lower-case name used in headers, logs and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            CapturePath::Milter => "milter",
            CapturePath::Filter => "filter",
            CapturePath::Pipe => "pipe",
            CapturePath::Import => "import",
        }
    }

    /// Parses the name written by [`CapturePath::as_str`].
    pub fn parse(name: &str) -> Option<CapturePath> {
        match name.to_ascii_lowercase().as_str() {
            "milter" => Some(CapturePath::Milter),
            "filter" => Some(CapturePath::Filter),
            "pipe" => Some(CapturePath::Pipe),
            "import" => Some(CapturePath::Import),
            _ => None,
        }
    }
}

impl fmt::Display for CapturePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SMTP client as the MTA saw it. Every field may be unknown: a message
/// submitted with `sendmail(1)` has no client at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The client IP address as text (Postfix may say `unknown`).
    pub address: Option<String>,
    /// The client TCP port.
    pub port: Option<u16>,
    /// The verified client host name.
    pub hostname: Option<String>,
    /// What the client said in HELO/EHLO.
    pub helo: Option<String>,
}

impl Client {
    /// The client as one line: `hostname [address]:port helo=name`, omitting
    /// what is unknown; `None` when nothing at all is known.
    pub fn describe(&self) -> Option<String> {
        let mut out = String::new();
        if let Some(h) = &self.hostname {
            out.push_str(h);
        }
        if let Some(a) = &self.address {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('[');
            out.push_str(a);
            out.push(']');
            if let Some(p) = self.port {
                out.push(':');
                out.push_str(&p.to_string());
            }
        }
        if let Some(h) = &self.helo {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("helo=");
            out.push_str(h);
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Everything mailkeep knows about one captured message.
#[derive(Debug)]
pub struct Envelope {
    /// When mailkeep received the message.
    pub received: DateTime<Utc>,
    /// Which front-end captured it.
    pub capture: CapturePath,
    /// The SMTP client, when there was one.
    pub client: Client,
    /// The SASL login of whoever submitted the message: the true owner of
    /// outgoing mail. Absent for unauthenticated mail.
    pub login: Option<String>,
    /// The MTA's queue id, for correlation with the mail log.
    pub queue_id: Option<String>,
    /// The envelope sender; `None` is the null sender `<>` (bounces).
    pub sender: Option<String>,
    /// Every envelope recipient in the order given. This, not the header,
    /// is what keeps Bcc recipients.
    pub recipients: Vec<String>,
    /// Free-form labels a capture path attaches (`mailkeep pipe --tag`).
    pub tags: Vec<String>,
    /// The SASL mechanism used with `login` (`PLAIN`, `LOGIN`, ...).
    pub login_method: Option<String>,
    /// ESMTP parameters of MAIL FROM as given (`SIZE=1234`, `BODY=8BITMIME`).
    pub sender_params: Vec<String>,
    /// TLS of the client connection, e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`.
    pub tls: Option<String>,
    /// The message exactly as received.
    pub message: RawMessage,
}

impl Envelope {
    /// A new envelope received now, with no client, login or recipients.
    pub fn new(capture: CapturePath, message: RawMessage) -> Envelope {
        Envelope {
            received: Utc::now(),
            capture,
            client: Client::default(),
            login: None,
            queue_id: None,
            sender: None,
            recipients: Vec::new(),
            tags: Vec::new(),
            login_method: None,
            sender_params: Vec::new(),
            tls: None,
            message,
        }
    }

    /// The sender as written in SMTP: `<>` for the null sender.
    pub fn sender_display(&self) -> &str {
        self.sender.as_deref().unwrap_or("<>")
    }
}

/// Turns an empty or `<>` address argument into the null sender, and strips
/// one pair of angle brackets otherwise. Postfix writes the null sender as an
/// empty string when `null_sender=` is set and as `<>` in logs.
pub fn normalize_address_arg(arg: &str) -> Option<String> {
    let trimmed = arg.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(trimmed);
    (!inner.is_empty()).then(|| inner.to_string())
}

/// The RFC 2822 form of any instant. chrono's `to_rfc2822` panics outside
/// the years 0..=9999, and a stranger's Date header can name year 22026
/// (found by fuzzing the import); such a date is written in the same
/// shape with its full year instead.
pub fn rfc2822(t: &DateTime<Utc>) -> String {
    if (0..=9999).contains(&t.year()) {
        t.to_rfc2822()
    } else {
        format!(
            "{}, {} {} {} {}",
            t.format("%a"),
            t.day(),
            t.format("%b"),
            t.year(),
            t.format("%H:%M:%S +0000")
        )
    }
}

/// Whether a date read from a message can stand for a capture time: years
/// 1..=9999. Anything else is treated as no date at all.
pub fn plausible_date(t: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

/// An error and its causes on one line, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_sender_forms() {
        assert_eq!(normalize_address_arg(""), None);
        assert_eq!(normalize_address_arg("<>"), None);
        assert_eq!(normalize_address_arg("<a@b>"), Some("a@b".into()));
        assert_eq!(normalize_address_arg("a@b"), Some("a@b".into()));
    }

    #[test]
    fn client_description() {
        let c = Client {
            address: Some("192.0.2.1".into()),
            port: Some(25),
            hostname: Some("mx.example".into()),
            helo: Some("mx".into()),
        };
        assert_eq!(c.describe().unwrap(), "mx.example [192.0.2.1]:25 helo=mx");
        assert_eq!(Client::default().describe(), None);
    }
}
