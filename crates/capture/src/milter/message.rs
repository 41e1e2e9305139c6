//! Assembling one message from milter events, independent of the milter
//! codec: connection facts and macros in, an [`Envelope`] out.
//!
//! The MTA hands a milter the header fields one by one (name and value)
//! and the body in chunks with CRLF line ends. The archived message is
//! rebuilt as `Name:value CRLF` for each field in order, an empty line, and
//! the body bytes as given. With `SMFIP_HDR_LEADSPC` negotiated the value
//! keeps its leading white space, so the header section is the one the MTA
//! holds, byte for byte. The body goes straight to a spool writer, so
//! memory stays bounded whatever the size.

use mailkeep_envelope::{
    normalize_address_arg, CapturePath, Client, Envelope, RawMessage, SpoolWriter,
};
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

/// What is known about the SMTP connection; outlives each message.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFacts {
    /// Client name, address, port, HELO.
    pub client: Client,
    /// Macros by the command code they came with (`C`onnect, `H`elo,
    /// `M`ail, `R`cpt, `N` end of headers, `E` end of body, ...), names
    /// without braces. A later stage's value wins, as in libmilter.
    macros: HashMap<u8, HashMap<String, String>>,
}

/// Stages whose macros belong to one message and must not outlive it.
const MESSAGE_STAGES: [u8; 7] = [b'M', b'R', b'T', b'L', b'N', b'E', b'B'];

/// Lookup order: latest stage first.
const STAGE_ORDER: [u8; 9] = [b'E', b'B', b'N', b'L', b'T', b'R', b'M', b'H', b'C'];

impl ConnectionFacts {
    /// Records the macros sent with a command (names with or without
    /// braces); they replace that stage's earlier set.
    pub fn set_macros<'a>(
        &mut self,
        stage: u8,
        macros: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let map = macros
            .into_iter()
            .map(|(k, v)| {
                let name = k.trim_start_matches('{').trim_end_matches('}');
                (name.to_string(), v.to_string())
            })
            .collect();
        self.macros.insert(stage, map);
    }

    /// A macro's value (name without braces), from the latest stage that
    /// sent it; empty values count as absent.
    pub fn macro_value(&self, name: &str) -> Option<String> {
        STAGE_ORDER
            .iter()
            .filter_map(|stage| self.macros.get(stage)?.get(name))
            .map(|v| v.trim().to_string())
            .find(|v| !v.is_empty())
    }

    /// Forgets the macros of the message stages (after end of message or
    /// abort), keeping those of the connection and HELO.
    pub fn forget_message_macros(&mut self) {
        for stage in MESSAGE_STAGES {
            self.macros.remove(&stage);
        }
    }

    /// Takes over `other`'s macros of one stage.
    pub fn copy_stage_from(&mut self, other: &ConnectionFacts, stage: u8) {
        if let Some(m) = other.macros.get(&stage) {
            self.macros.insert(stage, m.clone());
        }
    }

    /// Forgets everything (a new connection on a reused milter channel).
    pub fn reset(&mut self) {
        *self = ConnectionFacts::default();
    }
}

/// One message being received.
#[derive(Debug)]
pub struct MessageBuilder {
    sender: Option<String>,
    sender_params: Vec<String>,
    recipients: Vec<String>,
    spool: SpoolWriter,
    headers_done: bool,
}

impl MessageBuilder {
    /// Starts a message at MAIL FROM. `args[0]` is the address (with angle
    /// brackets), the rest are ESMTP parameters.
    pub fn new(args: &[String], spool_dir: &Path, threshold: usize, limit: Option<u64>) -> Self {
        MessageBuilder {
            sender: args.first().and_then(|a| normalize_address_arg(a)),
            sender_params: args.iter().skip(1).cloned().collect(),
            recipients: Vec::new(),
            spool: SpoolWriter::new(spool_dir, threshold).with_limit(limit),
            headers_done: false,
        }
    }

    /// One RCPT TO; `args[0]` is the address.
    pub fn recipient(&mut self, args: &[String]) {
        if let Some(r) = args.first().and_then(|a| normalize_address_arg(a)) {
            self.recipients.push(r);
        }
    }

    /// One header field. `value` is as the MTA sent it: with its leading
    /// white space when `SMFIP_HDR_LEADSPC` was negotiated (`leadspc`),
    /// without it otherwise, in which case one space is put back.
    pub fn header(&mut self, name: &[u8], value: &[u8], leadspc: bool) -> io::Result<()> {
        self.spool.write_all(name)?;
        self.spool.write_all(if leadspc { b":" } else { b": " })?;
        self.spool.write_all(value)?;
        self.spool.write_all(b"\r\n")
    }

    /// End of the header section.
    pub fn end_of_headers(&mut self) -> io::Result<()> {
        if !self.headers_done {
            self.headers_done = true;
            self.spool.write_all(b"\r\n")?;
        }
        Ok(())
    }

    /// A body chunk.
    pub fn body(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.end_of_headers()?;
        self.spool.write_all(chunk)
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.spool.len()
    }

    /// True before any header or body byte.
    pub fn is_empty(&self) -> bool {
        self.spool.is_empty()
    }

    /// The finished envelope, with the connection facts and macros.
    pub fn finish(mut self, facts: &ConnectionFacts) -> io::Result<Envelope> {
        self.end_of_headers()?;
        let message: RawMessage = self.spool.finish()?;
        let mut env = Envelope::new(CapturePath::Milter, message);
        env.client = facts.client.clone();
        env.sender = self.sender;
        env.sender_params = self.sender_params;
        env.recipients = self.recipients;
        env.login = facts.macro_value("auth_authen");
        env.login_method = facts.macro_value("auth_type");
        env.queue_id = facts.macro_value("i");
        env.tls = match (
            facts.macro_value("tls_version"),
            facts.macro_value("cipher"),
        ) {
            (Some(v), Some(c)) => Some(format!("{v} {c}")),
            (Some(v), None) => Some(v),
            (None, Some(c)) => Some(c),
            (None, None) => None,
        };
        if env.client.address.is_none() {
            env.client.address = facts.macro_value("client_addr");
        }
        if env.client.hostname.is_none() {
            env.client.hostname = facts.macro_value("client_name");
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_message_and_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let mut facts = ConnectionFacts::default();
        facts.client.address = Some("192.0.2.1".into());
        facts.set_macros(b'C', [("{client_name}", "mx.example")]);
        facts.set_macros(
            b'M',
            [
                ("{auth_authen}", "bob"),
                ("{auth_type}", "PLAIN"),
                ("i", "4ABC"),
            ],
        );
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut m = MessageBuilder::new(
            &args(&["<alice@example.com>", "SIZE=100"]),
            dir.path(),
            16,
            None,
        );
        m.recipient(&args(&["<a@x>"]));
        m.recipient(&args(&["<bcc@y>", "NOTIFY=NEVER"]));
        m.header(b"From", b" Alice <alice@example.com>", true)
            .unwrap();
        m.header(b"Subject", b"folded\r\n\tline", false).unwrap();
        m.body(b"hello\r\n").unwrap();
        m.body(b"world\r\n").unwrap();
        let env = m.finish(&facts).unwrap();
        assert_eq!(
            env.message.to_vec().unwrap(),
            b"From: Alice <alice@example.com>\r\nSubject: folded\r\n\tline\r\n\r\nhello\r\nworld\r\n"
        );
        assert_eq!(env.sender.as_deref(), Some("alice@example.com"));
        assert_eq!(env.sender_params, vec!["SIZE=100"]);
        assert_eq!(env.recipients, vec!["a@x", "bcc@y"]);
        assert_eq!(env.login.as_deref(), Some("bob"));
        assert_eq!(env.login_method.as_deref(), Some("PLAIN"));
        assert_eq!(env.queue_id.as_deref(), Some("4ABC"));
        assert!(env.message.is_spooled(), "past the 16-byte threshold");
        assert_eq!(env.client.hostname.as_deref(), Some("mx.example"));
        facts.forget_message_macros();
        assert!(facts.macro_value("auth_authen").is_none());
        assert_eq!(
            facts.macro_value("client_name").as_deref(),
            Some("mx.example")
        );
    }

    #[test]
    fn null_sender_and_no_body() {
        let dir = tempfile::tempdir().unwrap();
        let m = MessageBuilder::new(&["<>".to_string()], dir.path(), 1024, None);
        let env = m.finish(&ConnectionFacts::default()).unwrap();
        assert_eq!(env.sender, None);
        assert_eq!(env.message.to_vec().unwrap(), b"\r\n");
    }
}
