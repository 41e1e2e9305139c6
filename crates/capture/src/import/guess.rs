//! The envelope of a message that carries no mailkeep header block,
//! guessed from what mailbox writers and delivery agents leave behind.
//!
//! - Sender: the mbox From_ line, else `Return-Path`, else the null sender.
//!   `MAILER-DAEMON` on the From_ line is what writers put for the null
//!   sender *and* for "unknown" (Python's `mailbox`, mutt on a message
//!   without one), so then a `Return-Path`, if any, decides.
//! - Recipients: every `X-Envelope-To`, else every `Delivered-To`, else
//!   every `X-Original-To` (what Postfix `local`/`virtual`, dovecot and
//!   mailkeep write), without angle brackets.
//! - Received: the From_ line's date, else `Date:`, else the file's mtime.
//!
//! Only the first [`HEAD_LIMIT`] bytes are looked at.

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};

/// How much of a message is searched for header fields: far more than any
/// real header section, and a bound on memory for messages without one.
pub(crate) const HEAD_LIMIT: usize = 64 * 1024;

/// What a From_ line says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FromLine {
    /// The sender token; `MAILER-DAEMON` or missing is `None`.
    pub sender: Option<String>,
    pub date: Option<DateTime<Utc>>,
}

/// Reads `From SENDER DATE`. The date is asctime (`Sat Nov 21 22:54:14
/// 2026`) in local time, the way mailkeep, procmail and Postfix write it;
/// a zone after the year (`+0100`) or before it (`CET`, ignored) is
/// tolerated.
pub(crate) fn parse_from_line(line: &[u8]) -> FromLine {
    let text = String::from_utf8_lossy(line.strip_prefix(b"From ").unwrap_or(line));
    let mut tokens = text.split_whitespace();
    let sender = tokens
        .next()
        .filter(|s| !s.eq_ignore_ascii_case("MAILER-DAEMON"))
        .map(str::to_string);
    let rest: Vec<&str> = tokens.collect();
    FromLine {
        sender,
        date: parse_asctime(&rest),
    }
}

fn parse_asctime(tokens: &[&str]) -> Option<DateTime<Utc>> {
    parse_asctime_any(tokens).filter(mailkeep_envelope::plausible_date)
}

fn parse_asctime_any(tokens: &[&str]) -> Option<DateTime<Utc>> {
    let mut t: Vec<&str> = tokens.to_vec();
    // `Sat Nov 21 22:54:14 CET 2026`: a zone name we cannot resolve.
    if t.len() >= 6 && t[4].chars().all(|c| c.is_ascii_alphabetic()) {
        t.remove(4);
    }
    if t.len() < 5 {
        return None;
    }
    let text = t[..5].join(" ");
    let naive = NaiveDateTime::parse_from_str(&text, "%a %b %d %H:%M:%S %Y").ok()?;
    if let Some(zone) = t.get(5) {
        if let Ok(offset) = parse_offset(zone) {
            return offset
                .from_local_datetime(&naive)
                .single()
                .map(|d| d.with_timezone(&Utc));
        }
    }
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

fn parse_offset(zone: &str) -> Result<FixedOffset, ()> {
    let (sign, digits) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(()),
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let hours: i32 = digits[..2].parse().map_err(|_| ())?;
    let minutes: i32 = digits[2..].parse().map_err(|_| ())?;
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or(())
}

/// The header fields the guess uses, from the head of a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct HeadFields {
    /// The first `Return-Path` (the latest delivery's); `Some(None)` is `<>`.
    pub return_path: Option<Option<String>>,
    pub envelope_to: Vec<String>,
    pub delivered_to: Vec<String>,
    pub original_to: Vec<String>,
    pub date: Option<DateTime<Utc>>,
}

/// Reads the header section at the start of `head` (up to the first empty
/// line), unfolding continuation lines.
pub(crate) fn head_fields(head: &[u8]) -> HeadFields {
    let mut fields = HeadFields::default();
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some((_, value)) = &mut current {
                value.extend_from_slice(line);
            }
            continue;
        }
        if let Some((name, value)) = current.take() {
            fields.add(&name, &String::from_utf8_lossy(&value));
        }
        if line.is_empty() {
            break;
        }
        // A line that is not a field (a stray `>From `) is passed over.
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            let name = String::from_utf8_lossy(&line[..colon])
                .trim()
                .to_ascii_lowercase();
            current = Some((name, line[colon + 1..].to_vec()));
        }
    }
    if let Some((name, value)) = current {
        fields.add(&name, &String::from_utf8_lossy(&value));
    }
    fields
}

impl HeadFields {
    fn add(&mut self, name: &str, value: &str) {
        match name {
            "return-path" if self.return_path.is_none() => {
                self.return_path = Some(address(value));
            }
            "x-envelope-to" => self.envelope_to.extend(address(value)),
            "delivered-to" => self.delivered_to.extend(address(value)),
            "x-original-to" => self.original_to.extend(address(value)),
            "date" if self.date.is_none() => self.date = parse_date(value),
            _ => {}
        }
    }
}

/// `<a@b>` or `a@b` (or `Name <a@b>`) to `a@b`; `<>` and empty to `None`.
fn address(value: &str) -> Option<String> {
    let v = value.trim();
    let inner = match (v.find('<'), v.rfind('>')) {
        (Some(open), Some(close)) if open < close => &v[open + 1..close],
        _ => v,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// An RFC 5322 date, tolerating the comments (`(UTC)`) and extra
/// whitespace real mailers add.
pub(crate) fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    let mut clean = String::with_capacity(value.len());
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    DateTime::parse_from_rfc2822(&clean)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .filter(mailkeep_envelope::plausible_date)
}

/// The guessed envelope fields.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Guess {
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub received: Option<DateTime<Utc>>,
}

/// Combines the From_ line (mbox only), the head of the message and the
/// file's mtime as the module documentation says.
pub(crate) fn guess(
    from_line: Option<&FromLine>,
    head: &[u8],
    mtime: Option<DateTime<Utc>>,
) -> Guess {
    let fields = head_fields(head);
    let sender = match from_line.and_then(|f| f.sender.clone()) {
        Some(s) => Some(s),
        None => fields.return_path.clone().flatten(),
    };
    let recipients = [fields.envelope_to, fields.delivered_to, fields.original_to]
        .into_iter()
        .find(|r| !r.is_empty())
        .unwrap_or_default();
    let received = from_line.and_then(|f| f.date).or(fields.date).or(mtime);
    Guess {
        sender,
        recipients,
        received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
        Local
            .from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn from_lines() {
        let f = parse_from_line(b"From alice@example.com Sat Nov 21 22:54:14 2026");
        assert_eq!(f.sender.as_deref(), Some("alice@example.com"));
        assert_eq!(f.date, Some(local("2026-11-21 22:54:14")));
        // Day padded with a space, as asctime writes it.
        let f = parse_from_line(b"From MAILER-DAEMON Sun Nov  1 01:02:03 2026");
        assert_eq!(f.sender, None);
        assert_eq!(f.date, Some(local("2026-11-01 01:02:03")));
        let f = parse_from_line(b"From a@b Sun Nov  1 01:02:03 2026 +0100");
        assert_eq!(
            f.date,
            Some(
                DateTime::parse_from_rfc3339("2026-11-01T00:02:03Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        let f = parse_from_line(b"From a@b Sun Nov  1 01:02:03 CET 2026");
        assert_eq!(f.date, Some(local("2026-11-01 01:02:03")));
        assert_eq!(parse_from_line(b"From a@b yesterday").date, None);
    }

    #[test]
    fn headers_give_sender_recipients_and_date() {
        let head = b"Return-Path: <bounce@x>\r\nReturn-Path: <older@x>\r\nDelivered-To: <a@x>\r\n\
            X-Original-To: o@x\r\ndelivered-to:\r\n b@x\r\nDate: Sat, 21 Nov 2026 22:54:14 +0100 (CET)\r\n\r\n\
            Delivered-To: body@x\r\n";
        let g = guess(None, head, None);
        assert_eq!(g.sender.as_deref(), Some("bounce@x"));
        assert_eq!(g.recipients, vec!["a@x".to_string(), "b@x".to_string()]);
        assert_eq!(
            g.received,
            Some(
                DateTime::parse_from_rfc3339("2026-11-21T21:54:14Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );

        // X-Envelope-To wins over Delivered-To; a From_ line over Return-Path.
        let head =
            b"Return-Path: <>\nDelivered-To: d@x\nX-Envelope-To: <e1@x>\nX-Envelope-To: <e2@x>\n\n";
        let from = parse_from_line(b"From s@x Sat Nov 21 22:54:14 2026");
        let g = guess(Some(&from), head, None);
        assert_eq!(g.sender.as_deref(), Some("s@x"));
        assert_eq!(g.recipients, vec!["e1@x".to_string(), "e2@x".to_string()]);
        assert_eq!(g.received, Some(local("2026-11-21 22:54:14")));

        // MAILER-DAEMON defers to Return-Path; `<>` is the null sender.
        let daemon = parse_from_line(b"From MAILER-DAEMON Sat Nov 21 22:54:14 2026");
        assert_eq!(
            guess(Some(&daemon), b"Return-Path: <r@x>\n\n", None)
                .sender
                .as_deref(),
            Some("r@x")
        );
        assert_eq!(guess(Some(&daemon), head, None).sender, None);
        assert_eq!(guess(Some(&daemon), b"X: y\n\n", None).sender, None);

        // Nothing at all: the mtime.
        let mtime = DateTime::from_timestamp(1_700_000_000, 0);
        let g = guess(
            None,
            b"Subject: x\n\nDate: Sat, 21 Nov 2026 22:54:14 +0100\n",
            mtime,
        );
        assert_eq!(
            g,
            Guess {
                sender: None,
                recipients: vec![],
                received: mtime
            }
        );
    }
}
