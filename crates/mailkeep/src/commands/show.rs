//! `mailkeep show`: one delivery, its envelope, or its exact bytes.

use super::output::{bytes, hit_json, received, sender};
use crate::cli::ShowArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use std::io::Write;

/// The header section: everything up to and including the first empty line.
fn header_section(raw: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < raw.len() {
        let end = raw[i..].iter().position(|b| *b == b'\n').map(|p| i + p + 1);
        let Some(end) = end else { return raw };
        let line = &raw[i..end];
        if line == b"\n" || line == b"\r\n" {
            return &raw[..end];
        }
        i = end;
    }
    raw
}

/// Header text for a terminal: strangers' control characters (an escape
/// sequence in a Subject rewrites the screen) are shown as `\xNN`, bytes
/// that are not UTF-8 as U+FFFD; tab and line ends stay. `--raw` is the
/// byte-exact view.
fn escape_controls(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in String::from_utf8_lossy(raw).chars() {
        if c.is_control() && !matches!(c, '\t' | '\r' | '\n') {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn run(settings: &Settings, args: ShowArgs) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    let view = if args.raw {
        "raw"
    } else if args.headers {
        "headers"
    } else if args.envelope {
        "envelope"
    } else if args.json {
        "json"
    } else {
        "summary"
    };
    // Recorded before the lookup: a probe for an id that does not exist
    // leaves its trace too.
    settings
        .audit(&store)?
        .record("show", serde_json::json!({"id": args.id, "view": view}))?;
    let hit = store.get(args.id).map_err(|e| match e {
        mailkeep_store::StoreError::NotFound(_) => Failure::new(Exit::NOTHING, e.to_string()),
        e => Failure::from_store(Exit::IOERR, &e),
    })?;
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>, b: &[u8]| {
        out.write_all(b)
            .and_then(|_| out.flush())
            .map_err(|e| Failure::new(Exit::IOERR, format!("writing: {e}")))
    };
    if args.envelope {
        let mut record = serde_json::to_value(&hit.record).unwrap_or_default();
        // The record keeps microseconds since the epoch (that is what the
        // chain hashes); people read a date.
        record["received"] = serde_json::Value::String(received(hit.record.received));
        let text = serde_json::to_string_pretty(&record).unwrap_or_default();
        write(&mut out, format!("{text}\n").as_bytes())?;
        return Ok(Exit::OK);
    }
    if args.json {
        write(&mut out, format!("{}\n", hit_json(&hit)).as_bytes())?;
        return Ok(Exit::OK);
    }
    if args.raw {
        // Streamed: a message of any size in bounded memory.
        let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, &mut out);
        let written = store.write_raw(&hit.record.content, &mut buffered);
        let flushed = buffered.flush();
        return match (written, flushed) {
            (Ok(_), Ok(())) => Ok(Exit::OK),
            (
                Err(
                    e @ mailkeep_store::StoreError::Record {
                        source: mailkeep_store::blobs::record::RecordError::MissingKey(_),
                        ..
                    },
                ),
                _,
            ) => Err(Failure::new(
                Exit::CONFIG,
                mailkeep_capture::error_chain(&e),
            )),
            (Err(e @ mailkeep_store::StoreError::Record { .. }), _) => Err(Failure::new(
                Exit::DATAERR,
                format!(
                    "delivery {}: {}; what was written is not the archived message (run \
                     `mailkeep verify`)",
                    hit.record.id,
                    mailkeep_capture::error_chain(&e)
                ),
            )),
            (Err(e), _) => Err(Failure::from_store(Exit::IOERR, &e)),
            (Ok(_), Err(e)) => Err(Failure::new(Exit::IOERR, format!("writing: {e}"))),
        };
    }
    let raw = store
        .raw_by_hash(&hit.record.content)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    if args.headers {
        write(&mut out, escape_controls(header_section(&raw)).as_bytes())?;
        return Ok(Exit::OK);
    }
    let r = &hit.record;
    let mut t = String::new();
    let mut field = |k: &str, v: &str| {
        if !v.is_empty() {
            let v: String = v
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            t.push_str(&format!("{k:<13}{v}\n"));
        }
    };
    field("Delivery:", &r.id.to_string());
    field("Received:", &received(r.received));
    field("Capture:", &r.capture);
    field(
        "Login:",
        &match (&r.login, &r.login_method) {
            (Some(l), Some(m)) => format!("{l} ({m})"),
            (Some(l), None) => l.clone(),
            _ => String::new(),
        },
    );
    field("Sender:", &sender(r));
    for rcpt in &r.recipients {
        field("Recipient:", rcpt);
    }
    let client =
        mailkeep_store::envelope_of(r, mailkeep_envelope::RawMessage::from_bytes(Vec::new()))
            .client
            .describe()
            .unwrap_or_default();
    field("Client:", &client);
    field("Queue id:", r.queue_id.as_deref().unwrap_or(""));
    field("TLS:", r.tls.as_deref().unwrap_or(""));
    field("Tags:", &r.tags.join(", "));
    field("From:", &hit.from);
    field("To:", &hit.to);
    field("Cc:", &hit.cc);
    field("Subject:", &hit.subject);
    field("Message-ID:", hit.message_id.as_deref().unwrap_or(""));
    field("Size:", &bytes(r.size));
    field("BLAKE3:", &r.content);
    if hit.attachments != "[]" {
        field("Attachments:", &hit.attachments);
    }
    field("Index:", hit.index_note.as_deref().unwrap_or(""));
    write(&mut out, t.as_bytes())?;
    Ok(Exit::OK)
}

#[cfg(test)]
mod tests {
    use super::{escape_controls, header_section};

    #[test]
    fn terminal_escapes_in_headers_are_shown_not_sent() {
        let raw = b"Subject: \x1b]0;owned\x07\x1b[2J hi \xc2\x9b1m\r\n\tfolded\r\n\r\n";
        let shown = escape_controls(raw);
        assert_eq!(
            shown,
            "Subject: \\x1b]0;owned\\x07\\x1b[2J hi \\x9b1m\r\n\tfolded\r\n\r\n"
        );
        assert!(!shown
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n')));
    }

    #[test]
    fn header_section_ends_at_the_first_empty_line() {
        assert_eq!(header_section(b"A: b\nC: d\n\nbody\n\n"), b"A: b\nC: d\n\n");
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"A: b"), b"A: b");
    }
}
