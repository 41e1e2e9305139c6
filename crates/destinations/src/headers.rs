//! The envelope headers prepended to every archived copy.
//!
//! `Return-Path`, one `X-Envelope-To` per envelope recipient (Bcc
//! included), then `X-Mailkeep-Login`, `X-Mailkeep-Client`,
//! `X-Mailkeep-Queue-Id` and `X-Mailkeep-Received`. Values come from
//! strangers: control characters (CR and LF above all, which would let a
//! value forge further header fields) are written as `\xNN`, and a backslash
//! as `\\`, so the header block is always well-formed and reversible. Lines
//! end as the message's first line does (CRLF or LF), so the copy stays
//! consistent.

use mailkeep_envelope::Envelope;
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
    let _ = write!(h, "; {}{eol}", mailkeep_envelope::rfc2822(&env.received));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailkeep_envelope::{CapturePath, RawMessage};

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
