//! Shared output for the store commands: JSON objects for scripts, plain
//! aligned tables for people.

use mailkeep_store::catalog::Hit;
use serde_json::{json, Value};

/// A delivery as `search --json` and `show --json` print it.
pub fn hit_json(hit: &Hit) -> Value {
    let r = &hit.record;
    json!({
        "id": r.id,
        "message_id": hit.message_id,
        "sender": r.sender,
        "recipients": r.recipients,
        "login": r.login,
        "subject": hit.subject,
        "date": hit.date.and_then(|d| chrono::DateTime::from_timestamp(d, 0)).map(|d| d.to_rfc3339()),
        "received": received(r.received),
        "size": r.size,
        "capture": r.capture,
        "queue_id": r.queue_id,
        "from": hit.from,
        "to": hit.to,
        "cc": hit.cc,
        "blake3": r.content,
        "attachments": serde_json::from_str::<Value>(&hit.attachments).unwrap_or(Value::Null),
    })
}

/// The envelope sender for people: `<address>`, `<>` for the null sender
/// of captured mail (bounces), and `-` for an import that had no envelope
/// (its sender is unknown, not null). JSON says `null` for both; `capture`
/// tells them apart.
pub fn sender(r: &mailkeep_store::chain::DeliveryRecord) -> String {
    match (&r.sender, r.capture.as_str()) {
        (Some(s), _) => format!("<{s}>"),
        (None, "import") => "-".into(),
        (None, _) => "<>".into(),
    }
}

/// Capture time as RFC 3339 UTC.
pub fn received(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Cuts a cell to `width` characters, marking the cut; control characters
/// (strangers' bytes) become spaces so a row stays one line.
pub fn cell(text: &str, width: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= width {
        clean
    } else {
        let mut s: String = clean.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// Prints rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                let pad = widths[i] - c.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
