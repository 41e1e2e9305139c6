//! The envelope header block: the one codec for the lines mailkeep puts in
//! front of an archived copy (mbox, Maildir and eml unless
//! `envelope_headers = false`, and `export --format mbox`) and reads back
//! when such a copy is imported; the `forward:` copy uses only its
//! [`header_value`] escaping.
//!
//! [`envelope_headers`] writes `Return-Path`, one `X-Envelope-To` per
//! envelope recipient (Bcc included), then `X-Mailkeep-Login`,
//! `X-Mailkeep-Client`, `X-Mailkeep-TLS`, `X-Mailkeep-Queue-Id` (each
//! optional, in that order) and `X-Mailkeep-Received` last. Values come
//! from strangers: control characters (CR and LF above all, which would let
//! a value forge further header fields) are written as `\xNN`, and a
//! backslash as `\\`, so the block is always well-formed and reversible.
//! Lines end as the message's first line does (CRLF or LF), so the copy
//! stays consistent.
//!
//! [`Scanner`] reads a block back. The values are parsed, and the envelope
//! they give is rendered again with [`envelope_headers`]: only when the
//! result is byte-for-byte the block that was read is it taken off. So a
//! block that was edited or written by something else merely looking alike
//! stays in the message, and what is taken off is always exactly what the
//! envelope puts back. A value the writer had to cut (longer than
//! [`MAX_VALUE`]) renders back identically, so blocks with a cut value are
//! refused explicitly. The scanner is sans-IO: it buffers the start of the
//! message (at most [`BLOCK_LIMIT`]) until it can decide.

use crate::{CapturePath, Client, Envelope, RawMessage};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// Header values longer than this are cut (with `...`): a header line must
/// stay readable by every mail reader. Addresses are at most 256 bytes by
/// RFC 5321, so real values are never cut.
pub const MAX_VALUE: usize = 900;

/// Whether [`header_value`] had to cut `value` (then what it wrote is not
/// the value, and must never be read back as it).
pub fn header_value_is_cut(value: &str) -> bool {
    header_value(value).len() > MAX_VALUE
}

/// Escapes a header value (see the module documentation).
pub fn header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            c => out.push(c),
        }
        if out.len() > MAX_VALUE {
            out.push_str("...");
            break;
        }
    }
    out
}

/// The line ending the message itself uses: CRLF when its first line ends
/// in CRLF, LF otherwise.
pub fn line_ending(head: &[u8]) -> &'static str {
    match head.iter().position(|b| *b == b'\n') {
        Some(i) if i > 0 && head[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// Renders the envelope header block for one copy.
pub fn envelope_headers(env: &Envelope, host: &str, eol: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "Return-Path: <{}>{eol}",
        header_value(env.sender.as_deref().unwrap_or(""))
    );
    for r in &env.recipients {
        let _ = write!(h, "X-Envelope-To: <{}>{eol}", header_value(r));
    }
    if let Some(login) = env.login.as_deref().filter(|l| !l.is_empty()) {
        let _ = write!(h, "X-Mailkeep-Login: {}", header_value(login));
        if let Some(m) = env.login_method.as_deref().filter(|m| !m.is_empty()) {
            let _ = write!(h, " ({})", header_value(m));
        }
        h.push_str(eol);
    }
    if let Some(client) = env.client.describe() {
        let _ = write!(h, "X-Mailkeep-Client: {}{eol}", header_value(&client));
    }
    if let Some(tls) = env.tls.as_deref().filter(|t| !t.is_empty()) {
        let _ = write!(h, "X-Mailkeep-TLS: {}{eol}", header_value(tls));
    }
    if let Some(q) = env.queue_id.as_deref().filter(|q| !q.is_empty()) {
        let _ = write!(h, "X-Mailkeep-Queue-Id: {}{eol}", header_value(q));
    }
    let _ = write!(
        h,
        "X-Mailkeep-Received: by {} via {}",
        header_value(host),
        env.capture
    );
    if !env.tags.is_empty() {
        let tags: Vec<String> = env.tags.iter().map(|t| header_value(t)).collect();
        let _ = write!(h, " tags={}", tags.join(","));
    }
    let _ = write!(h, "; {}{eol}", crate::rfc2822(&env.received));
    h
}

/// The longest block looked for. 1 MiB is some 15 000 recipients; the
/// bound keeps a message that merely starts with `Return-Path: <` from
/// being buffered whole.
pub const BLOCK_LIMIT: usize = 1024 * 1024;

const RETURN_PATH: &[u8] = b"Return-Path: <";

/// The envelope read back from a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub received: DateTime<Utc>,
    pub capture: CapturePath,
    pub client: Client,
    pub login: Option<String>,
    pub login_method: Option<String>,
    pub queue_id: Option<String>,
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub tags: Vec<String>,
    pub tls: Option<String>,
}

impl Restored {
    /// The envelope around `message`.
    pub fn into_envelope(self, message: RawMessage) -> Envelope {
        let mut env = Envelope::new(self.capture, message);
        env.received = self.received;
        env.client = self.client;
        env.login = self.login;
        env.login_method = self.login_method;
        env.queue_id = self.queue_id;
        env.sender = self.sender;
        env.recipients = self.recipients;
        env.tags = self.tags;
        env.tls = self.tls;
        env
    }
}

/// What the scanner has decided so far.
#[derive(Debug)]
pub enum Scan {
    /// Not decided: feed more (or, at the end of the message, take the bytes back with [`Scanner::into_buf`]).
    NeedMore,
    /// No block: the buffered bytes are message content.
    NotABlock,
    /// The first `len` buffered bytes are a block, the rest is message.
    Block { len: usize, restored: Box<Restored> },
}

/// Fields in the order the writer puts them; `X-Envelope-To` may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    ReturnPath,
    EnvelopeTo,
    Login,
    Client,
    Tls,
    QueueId,
    Received,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "Return-Path" => Field::ReturnPath,
            "X-Envelope-To" => Field::EnvelopeTo,
            "X-Mailkeep-Login" => Field::Login,
            "X-Mailkeep-Client" => Field::Client,
            "X-Mailkeep-TLS" => Field::Tls,
            "X-Mailkeep-Queue-Id" => Field::QueueId,
            "X-Mailkeep-Received" => Field::Received,
            _ => return None,
        })
    }
}

/// Buffers the start of a message and decides whether it is a block.
#[derive(Debug, Default)]
pub struct Scanner {
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed as block lines.
    parsed: usize,
    eol: Option<&'static [u8]>,
    last: Option<Field>,
    partial: Partial,
}

#[derive(Debug, Default)]
struct Partial {
    sender: Option<String>,
    recipients: Vec<String>,
    login: Option<String>,
    login_method: Option<String>,
    client: Client,
    tls: Option<String>,
    queue_id: Option<String>,
}

impl Scanner {
    /// Adds the next bytes of the message. After anything but
    /// [`Scan::NeedMore`], take the bytes back with [`Scanner::into_buf`].
    pub fn push(&mut self, bytes: &[u8]) -> Scan {
        self.buf.extend_from_slice(bytes);
        let n = self.buf.len().min(RETURN_PATH.len());
        if self.buf[..n] != RETURN_PATH[..n] {
            return Scan::NotABlock;
        }
        while let Some(off) = self.buf[self.parsed..].iter().position(|b| *b == b'\n') {
            let end = self.parsed + off + 1;
            match self.line(self.parsed, end) {
                Err(()) => return Scan::NotABlock,
                Ok(Some(restored)) => return Scan::Block { len: end, restored },
                Ok(None) => self.parsed = end,
            }
        }
        if self.buf.len() > BLOCK_LIMIT {
            Scan::NotABlock
        } else {
            Scan::NeedMore
        }
    }

    /// The message ended before a decision: whatever was buffered is
    /// content (a block is complete only with its `X-Mailkeep-Received`
    /// line and that line's line ending).
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// Parses the line `buf[start..end]` (newline included). `Ok(None)`:
    /// a block line, go on; `Ok(Some)`: the block is complete and verified.
    fn line(&mut self, start: usize, end: usize) -> Result<Option<Box<Restored>>, ()> {
        let raw = &self.buf[start..end];
        let (text, eol): (&[u8], &'static [u8]) = match raw.strip_suffix(b"\r\n") {
            Some(t) => (t, b"\r\n"),
            None => (&raw[..raw.len() - 1], b"\n"),
        };
        if *self.eol.get_or_insert(eol) != eol {
            return Err(());
        }
        let text = std::str::from_utf8(text).map_err(|_| ())?;
        let (name, value) = text.split_once(": ").ok_or(())?;
        let field = Field::from_name(name).ok_or(())?;
        let in_order = match self.last {
            None => field == Field::ReturnPath,
            Some(last) => field > last || (field == Field::EnvelopeTo && last == field),
        };
        if !in_order {
            return Err(());
        }
        self.last = Some(field);
        let p = &mut self.partial;
        match field {
            Field::ReturnPath => {
                let inner = angle(value)?;
                p.sender = Some(unescape(inner)?).filter(|s| !s.is_empty());
            }
            Field::EnvelopeTo => p.recipients.push(unescape(angle(value)?)?),
            Field::Login => {
                let (login, method) =
                    match value.strip_suffix(')').and_then(|v| v.rsplit_once(" (")) {
                        Some((l, m)) => (l, Some(m)),
                        None => (value, None),
                    };
                p.login = Some(unescape(login)?);
                p.login_method = method.map(unescape).transpose()?;
            }
            Field::Client => p.client = parse_client(&unescape(value)?).ok_or(())?,
            Field::Tls => p.tls = Some(unescape(value)?),
            Field::QueueId => p.queue_id = Some(unescape(value)?),
            Field::Received => {
                let partial = std::mem::take(&mut self.partial);
                return finish(partial, value, eol, &self.buf[..end]).map(Some);
            }
        }
        Ok(None)
    }
}

/// Parses the `X-Mailkeep-Received` value, `by HOST via CAPTURE[ tags=a,b];
/// DATE`, and verifies the whole `block` by rendering it again.
fn finish(p: Partial, value: &str, eol: &[u8], block: &[u8]) -> Result<Box<Restored>, ()> {
    let (what, date) = value.rsplit_once("; ").ok_or(())?;
    let received = DateTime::parse_from_rfc2822(date)
        .map_err(|_| ())?
        .with_timezone(&Utc);
    if !crate::plausible_date(&received) {
        return Err(());
    }
    let (host, rest) = what
        .strip_prefix("by ")
        .ok_or(())?
        .split_once(" via ")
        .ok_or(())?;
    let (capture, tags) = match rest.split_once(" tags=") {
        Some((c, t)) => (
            c,
            t.split(',').map(unescape).collect::<Result<Vec<_>, _>>()?,
        ),
        None => (rest, Vec::new()),
    };
    let restored = Restored {
        received,
        capture: CapturePath::parse(capture).ok_or(())?,
        client: p.client,
        login: p.login,
        login_method: p.login_method,
        queue_id: p.queue_id,
        sender: p.sender,
        recipients: p.recipients,
        tags,
        tls: p.tls,
    };
    let host = unescape(host)?;
    let eol = std::str::from_utf8(eol).map_err(|_| ())?;
    let env = restored
        .clone()
        .into_envelope(RawMessage::from_bytes(Vec::new()));
    // A value longer than the writer's limit was cut with `...`, and the
    // cut form renders back identically: it must not pass for the value
    // (found by fuzzing).
    let cut = header_value_is_cut;
    let client = env.client.describe().unwrap_or_default();
    let any_cut = [
        env.sender.as_deref(),
        env.login.as_deref(),
        env.login_method.as_deref(),
        env.tls.as_deref(),
        env.queue_id.as_deref(),
        Some(client.as_str()),
        Some(host.as_str()),
    ]
    .into_iter()
    .flatten()
    .chain(env.recipients.iter().map(String::as_str))
    .chain(env.tags.iter().map(String::as_str))
    .any(cut);
    if any_cut {
        return Err(());
    }
    let again = envelope_headers(&env, &host, eol);
    if again.as_bytes() == block {
        Ok(Box::new(restored))
    } else {
        Err(())
    }
}

fn angle(value: &str) -> Result<&str, ()> {
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .ok_or(())
}

/// Undoes [`header_value`]: `\\` and `\xNN`.
fn unescape(value: &str) -> Result<String, ()> {
    if !value.contains('\\') {
        return Ok(value.to_string());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => match bytes.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = bytes.get(i + 2..i + 4).ok_or(())?;
                    let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                    i += 4;
                }
                _ => return Err(()),
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// Parses what `Client::describe` writes: `hostname [address]:port
/// helo=name`, each part optional. Ambiguous inputs are caught by the
/// caller's re-rendering check.
fn parse_client(s: &str) -> Option<Client> {
    let mut client = Client::default();
    let mut rest = s;
    if !rest.starts_with('[') && !rest.starts_with("helo=") {
        let end = [rest.find(" ["), rest.find(" helo=")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        client.hostname = Some(rest[..end].to_string());
        rest = rest[end..].strip_prefix(' ').unwrap_or("");
    }
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']')?;
        client.address = Some(r[..close].to_string());
        rest = &r[close + 1..];
        if let Some(r) = rest.strip_prefix(':') {
            let digits = r.find(' ').unwrap_or(r.len());
            client.port = Some(r[..digits].parse().ok()?);
            rest = &r[digits..];
        }
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
    if let Some(helo) = rest.strip_prefix("helo=") {
        client.helo = Some(helo.to_string());
    } else if !rest.is_empty() {
        return None;
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let mut env = Envelope::new(CapturePath::Milter, RawMessage::from_bytes(Vec::new()));
        env.received = DateTime::parse_from_rfc2822("Sat, 21 Nov 2026 22:54:14 +0000")
            .unwrap()
            .with_timezone(&Utc);
        env.sender = Some("a\\b@x\r\nBcc: evil".into());
        env.recipients = vec!["r1@x".into(), "r2@x".into()];
        env.login = Some("bob (x)".into());
        env.login_method = Some("PLAIN".into());
        env.client = Client {
            address: Some("2001:db8::1".into()),
            port: Some(587),
            hostname: Some("mx.example".into()),
            helo: Some("with space".into()),
        };
        env.tls = Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into());
        env.queue_id = Some("4ABC".into());
        env.tags = vec!["a".into(), "b\x01".into()];
        env
    }

    fn scan_all(bytes: &[u8]) -> (Scan, Vec<u8>) {
        let mut s = Scanner::default();
        for c in bytes.chunks(3) {
            match s.push(c) {
                Scan::NeedMore => continue,
                other => return (other, s.into_buf()),
            }
        }
        (Scan::NeedMore, s.into_buf())
    }

    #[test]
    fn block_is_read_back_for_both_line_endings() {
        for eol in ["\n", "\r\n"] {
            let env = envelope();
            let block = envelope_headers(&env, "host.example", eol);
            let input = format!("{block}Subject: hi{eol}{eol}body{eol}");
            let (scan, buf) = scan_all(input.as_bytes());
            let Scan::Block { len, restored } = scan else {
                panic!("no block found in {input:?}: {scan:?}");
            };
            assert_eq!(len, block.len());
            assert!(buf.starts_with(block.as_bytes()));
            assert_eq!(restored.sender, env.sender);
            assert_eq!(restored.recipients, env.recipients);
            assert_eq!(restored.login, env.login);
            assert_eq!(restored.login_method, env.login_method);
            assert_eq!(restored.client, env.client);
            assert_eq!(restored.tls, env.tls);
            assert_eq!(restored.queue_id, env.queue_id);
            assert_eq!(restored.tags, env.tags);
            assert_eq!(restored.capture, CapturePath::Milter);
            assert_eq!(restored.received, env.received);
        }
    }

    /// Fuzzing found that a value the writer cut (`...` past its limit)
    /// rendered back identically and was restored as if it were the value.
    #[test]
    fn regression_blocks_with_a_cut_value_stay_in_the_message() {
        for field in ["recipient", "sender", "login", "queue id", "tag", "host"] {
            let long = "x".repeat(950);
            let mut env = envelope();
            let mut host = "host.example".to_string();
            match field {
                "recipient" => env.recipients.push(format!("{long}@example.com")),
                "sender" => env.sender = Some(format!("{long}@example.com")),
                "login" => env.login = Some(long.clone()),
                "queue id" => env.queue_id = Some(long.clone()),
                "tag" => env.tags.push(long.clone()),
                _ => host = long.clone(),
            }
            let block = envelope_headers(&env, &host, "\n");
            assert!(block.contains("..."), "{field}: not cut");
            let input = format!("{block}Subject: hi\n\nbody\n");
            let (scan, _) = scan_all(input.as_bytes());
            assert!(
                !matches!(scan, Scan::Block { .. }),
                "{field}: a cut value was restored as the envelope"
            );
        }
    }

    #[test]
    fn minimal_block_with_null_sender() {
        let mut env = Envelope::new(CapturePath::Pipe, RawMessage::from_bytes(Vec::new()));
        env.received = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let block = envelope_headers(&env, "h", "\n");
        assert!(block.starts_with("Return-Path: <>\n"));
        let (scan, _) = scan_all(block.as_bytes());
        let Scan::Block { restored, .. } = scan else {
            panic!("{scan:?}")
        };
        assert_eq!(restored.sender, None);
        assert!(restored.recipients.is_empty());
        assert_eq!(restored.client, Client::default());
    }

    #[test]
    fn lookalikes_are_not_blocks() {
        let date = "Sat, 21 Nov 2026 22:54:14 +0000";
        for input in [
            // An MTA's own Return-Path, then ordinary headers.
            "Return-Path: <a@x>\nReceived: from x\n".to_string(),
            // Out of order.
            format!("Return-Path: <a@x>\nX-Mailkeep-Queue-Id: 1\nX-Envelope-To: <b@x>\nX-Mailkeep-Received: by h via pipe; {date}\n"),
            // Mixed line endings.
            format!("Return-Path: <a@x>\r\nX-Mailkeep-Received: by h via pipe; {date}\n"),
            // Unknown capture path, bad escape, non-UTC date.
            format!("Return-Path: <a@x>\nX-Mailkeep-Received: by h via smoke; {date}\n"),
            format!("Return-Path: <a\\q@x>\nX-Mailkeep-Received: by h via pipe; {date}\n"),
            "Return-Path: <a@x>\nX-Mailkeep-Received: by h via pipe; Sat, 21 Nov 2026 22:54:14 +0100\n".to_string(),
            "Subject: x\n".to_string(),
        ] {
            let (scan, buf) = scan_all(input.as_bytes());
            assert!(matches!(scan, Scan::NotABlock), "{input:?}: {scan:?}");
            assert!(input.as_bytes().starts_with(&buf));
        }
        // Complete but for the last line ending: undecided until the end.
        let (scan, buf) = scan_all(
            format!("Return-Path: <a@x>\nX-Mailkeep-Received: by h via pipe; {date}").as_bytes(),
        );
        assert!(matches!(scan, Scan::NeedMore));
        assert!(buf.ends_with(b"+0000"));
    }

    #[test]
    fn client_forms() {
        for c in [
            Client {
                address: Some("192.0.2.1".into()),
                port: Some(25),
                hostname: Some("mx".into()),
                helo: Some("x y".into()),
            },
            Client {
                address: Some("unknown".into()),
                ..Client::default()
            },
            Client {
                hostname: Some("h".into()),
                ..Client::default()
            },
            Client {
                helo: Some("only".into()),
                ..Client::default()
            },
            Client {
                hostname: Some("h".into()),
                helo: Some("e".into()),
                ..Client::default()
            },
        ] {
            assert_eq!(parse_client(&c.describe().unwrap()), Some(c));
        }
        assert_eq!(parse_client("[1.2.3.4]:notaport"), None);
    }

    #[test]
    fn crlf_injection_is_neutralised() {
        let mut env = Envelope::new(CapturePath::Pipe, RawMessage::from_bytes(Vec::new()));
        env.sender = Some("a@b\r\nBcc: evil@x".into());
        env.recipients = vec!["r1@x".into(), "r2@x".into()];
        env.login = Some("bob\\".into());
        let h = envelope_headers(&env, "host", "\n");
        assert!(h.starts_with("Return-Path: <a@b\\x0d\\x0aBcc: evil@x>\n"));
        assert!(h.contains("X-Envelope-To: <r1@x>\nX-Envelope-To: <r2@x>\n"));
        assert!(h.contains("X-Mailkeep-Login: bob\\\\\n"));
        assert_eq!(h.lines().filter(|l| l.starts_with("Bcc")).count(), 0);
        assert_eq!(line_ending(b"A: b\r\n"), "\r\n");
        assert_eq!(line_ending(b"A: b\n"), "\n");
    }
}
