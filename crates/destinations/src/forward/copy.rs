//! The archive copy: a new message whose envelope is in From/To and whose
//! only part is the original, byte for byte, as `message/rfc822` (the
//! design of Wietse Venema's Postfix archive draft).
//!
//! Lines end in CRLF, as SMTP carries them: the original's bare LFs become
//! CRLF, nothing else changes (no re-encoding, no re-wrapping). An 8-bit
//! original is declared `8bit` and needs a relay offering 8BITMIME; raw
//! UTF-8 in the copy's own header fields needs SMTPUTF8.

use mailkeep_envelope::block::header_value;
use mailkeep_envelope::Envelope;
use std::fmt::Write as _;

/// The header that marks an archive copy, so no capture path archives it
/// again. Its value carries a MAC under a local secret: a stranger cannot
/// forge it to keep a message out of the archive.
pub const MARKER: &str = "X-Mailkeep-Archive-Copy";

/// A built copy.
#[derive(Debug, Clone)]
pub struct Copy {
    /// Copy id (also in its Message-ID and marker).
    pub id: String,
    /// The complete message, CRLF line ends.
    pub bytes: Vec<u8>,
    /// Needs 8BITMIME.
    pub eight_bit: bool,
    /// Needs SMTPUTF8.
    pub smtputf8: bool,
}

/// The marker's MAC for a copy id.
pub fn mac(key: &[u8; 32], id: &str) -> String {
    let h = blake3::keyed_hash(key, id.as_bytes());
    h.to_hex()[..32].to_string()
}

/// Whether `head` (a message's header section) carries a marker made with
/// `key`.
pub fn is_archive_copy(head: &[u8], key: &[u8; 32]) -> bool {
    header_fields(head).into_iter().any(|(name, value)| {
        if !name.eq_ignore_ascii_case(MARKER.as_bytes()) {
            return false;
        }
        let v = String::from_utf8_lossy(&value);
        let v = v.trim();
        let Some((id, rest)) = v.split_once(';') else {
            return false;
        };
        let Some(m) = rest.trim().strip_prefix("mac=") else {
            return false;
        };
        // Constant-time enough: the MAC is 128 bits, compared once per message.
        m.trim() == mac(key, id.trim())
    })
}

/// The header fields of a header section: (name, raw value with folding).
fn header_fields(head: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in head.split_inclusive(|b| *b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.is_empty() {
            break;
        }
        if bare[0] == b' ' || bare[0] == b'\t' {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(b"\r\n");
                last.1.extend_from_slice(bare);
            }
            continue;
        }
        if let Some(colon) = bare.iter().position(|b| *b == b':') {
            let value = &bare[colon + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            out.push((bare[..colon].to_vec(), value.to_vec()));
        }
    }
    out
}

/// The first field named `name`, raw.
fn field(head: &[u8], name: &str) -> Option<Vec<u8>> {
    header_fields(head)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
}

/// Appends `bytes` with every bare LF turned into CRLF.
fn push_crlf(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the copy of `env` (whose bytes are `original`).
pub fn build(env: &Envelope, original: &[u8], host: &str, key: &[u8; 32]) -> Copy {
    let id = format!("{}.{}", env.received.timestamp(), random_hex(8));
    let head_end = original
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| original.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or(original.len());
    let head = &original[..head_end.min(original.len())];
    let mut boundary = format!("mailkeep-archive-{}", random_hex(12));
    while original
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary = format!("mailkeep-archive-{}", random_hex(12));
    }
    let eight_bit = !original.is_ascii();
    let mut h = String::new();
    let from = match env.sender.as_deref() {
        Some(s) if !s.is_empty() => header_value(s),
        _ => format!("MAILER-DAEMON <MAILER-DAEMON@{}>", header_value(host)),
    };
    let _ = write!(h, "From: {from}\r\n");
    let rcpts: Vec<String> = env.recipients.iter().map(|r| header_value(r)).collect();
    if rcpts.is_empty() {
        h.push_str("To: undisclosed-recipients:;\r\n");
    } else {
        h.push_str("To: ");
        h.push_str(&rcpts.join(",\r\n "));
        h.push_str("\r\n");
    }
    let mut out = h.into_bytes();
    let mut raw_field = |name: &str, fallback: String| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        match field(head, name) {
            Some(v) => push_crlf(&mut out, &v),
            None => out.extend_from_slice(fallback.as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    };
    raw_field("Date", mailkeep_envelope::rfc2822(&env.received));
    raw_field("Subject", String::new());
    let mut h = String::new();
    let _ = write!(
        h,
        "Message-ID: <mailkeep-archive.{id}@{}>\r\n",
        header_value(host)
    );
    h.push_str("MIME-Version: 1.0\r\n");
    let _ = write!(
        h,
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n"
    );
    let cte = if eight_bit { "8bit" } else { "7bit" };
    let _ = write!(h, "Content-Transfer-Encoding: {cte}\r\n");
    let _ = write!(h, "{MARKER}: {id}; mac={}\r\n", mac(key, &id));
    let _ = write!(
        h,
        "X-Mailkeep-Envelope-From: <{}>\r\n",
        header_value(env.sender.as_deref().unwrap_or(""))
    );
    if let Some(login) = env.login.as_deref().filter(|l| !l.is_empty()) {
        let _ = write!(h, "X-Mailkeep-Login: {}", header_value(login));
        if let Some(m) = env.login_method.as_deref().filter(|m| !m.is_empty()) {
            let _ = write!(h, " ({})", header_value(m));
        }
        h.push_str("\r\n");
    }
    if let Some(client) = env.client.describe() {
        let _ = write!(h, "X-Mailkeep-Client: {}\r\n", header_value(&client));
    }
    if let Some(q) = env.queue_id.as_deref().filter(|q| !q.is_empty()) {
        let _ = write!(h, "X-Mailkeep-Queue-Id: {}\r\n", header_value(q));
    }
    let _ = write!(
        h,
        "\r\nThis is an archive copy made by mailkeep: the original message, with its\r\n\
         envelope in From and To, is attached unchanged.\r\n\r\n--{boundary}\r\n\
         Content-Type: message/rfc822\r\nContent-Transfer-Encoding: {cte}\r\n\
         Content-Disposition: inline\r\n\r\n"
    );
    out.extend_from_slice(h.as_bytes());
    push_crlf(&mut out, original);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    // Raw UTF-8 in the copy's own header section needs SMTPUTF8; inside
    // the attached original it is body content, for which 8BITMIME does.
    let own_head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let smtputf8 =
        !out[..own_head_end].is_ascii() || !env.sender.as_deref().unwrap_or("").is_ascii();
    Copy {
        id,
        bytes: out,
        eight_bit,
        smtputf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailkeep_envelope::{CapturePath, RawMessage};

    #[test]
    fn copy_carries_envelope_and_the_original_exactly() {
        let original =
            b"From: Forged <ceo@example.com>\nTo: a@example.com\nSubject: =?utf-8?q?caf=C3=A9?=\n \
            continued\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n\nbody \xc3\xa9\n.dot line\n";
        let mut env = Envelope::new(
            CapturePath::Milter,
            RawMessage::from_bytes(original.to_vec()),
        );
        env.sender = Some("bob@example.com".into());
        env.recipients = vec!["a@example.com".into(), "hidden@example.org".into()];
        env.login = Some("bob".into());
        let key = [9u8; 32];
        let c = build(&env, original, "mx.example", &key);
        let text = String::from_utf8_lossy(&c.bytes);
        assert!(c.eight_bit && !c.smtputf8);
        assert!(text
            .starts_with("From: bob@example.com\r\nTo: a@example.com,\r\n hidden@example.org\r\n"));
        assert!(text.contains("Subject: =?utf-8?q?caf=C3=A9?=\r\n continued\r\n"));
        assert!(text.contains("Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n"));
        assert!(text.contains("Content-Transfer-Encoding: 8bit\r\n"));
        assert!(text.contains("X-Mailkeep-Login: bob\r\n"));
        let mut want = Vec::new();
        push_crlf(&mut want, original);
        assert!(c.bytes.windows(want.len()).any(|w| w == want.as_slice()));
        assert!(c
            .bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b != b'\n' || (i > 0 && c.bytes[i - 1] == b'\r')));
        assert!(is_archive_copy(&c.bytes, &key));
        assert!(
            !is_archive_copy(&c.bytes, &[8u8; 32]),
            "another key's marker is not ours"
        );
        assert!(!is_archive_copy(original, &key));
        let forged = format!("{MARKER}: 1.abc; mac=00000000000000000000000000000000\n\nx");
        assert!(!is_archive_copy(forged.as_bytes(), &key));
    }

    #[test]
    fn null_sender_is_mailer_daemon() {
        let env = Envelope::new(
            CapturePath::Pipe,
            RawMessage::from_bytes(b"Subject: x\n\nb\n".to_vec()),
        );
        let c = build(&env, b"Subject: x\n\nb\n", "mx", &[0; 32]);
        assert!(String::from_utf8_lossy(&c.bytes)
            .starts_with("From: MAILER-DAEMON <MAILER-DAEMON@mx>\r\n"));
        assert!(!c.eight_bit);
    }
}
