//! mailkeep's own envelope header block (`mailkeep_envelope::block`, the
//! codec's `Scanner` as `import::walk` runs it: the walk reads files, so
//! each run writes a file in tmpfs).
//!
//! Input: the envelope fields (length-prefixed strings, flags, numbers),
//! then the message bytes. The block is rendered by
//! `mailkeep_envelope::block::envelope_headers`, put in front of the message,
//! and the file imported.
//!
//! Invariants:
//! - the walk gives exactly one message;
//! - if the block was taken off (the envelope's capture path is not
//!   `import`; the generated one never is), the message is exactly the
//!   original bytes and the restored envelope renders to exactly the block
//!   that was read (the module's promise); when the fields are unambiguous
//!   in the block syntax (see `ambiguous`), they equal the originals (after
//!   the writer's normalisation of empty values);
//! - if it was not taken off, the message is exactly block + message bytes,
//!   and that may only happen when some value is long enough to be cut by
//!   the writer, or ambiguous.

#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use mailkeep_capture::import::{walk, Found, ImportOptions};
use mailkeep_envelope::block::envelope_headers;
use mailkeep_envelope::{CapturePath, Client, Envelope, RawMessage};
use mailkeep_fuzz::{scratch_dir, Cursor};
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("envelope-block"))
}

/// Values the block syntax cannot tell apart, so that the restored
/// envelope may differ from the original while rendering identically.
fn ambiguous(env: &Envelope, host: &str) -> bool {
    let paren = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains(['(', ')']));
    paren(&env.login)
        || paren(&env.login_method)
        || env.tags.iter().any(|t| t.contains(','))
        || env
            .client
            .hostname
            .as_deref()
            .is_some_and(|h| h.contains('[') || h.contains("helo="))
        || env.client.address.as_deref().is_some_and(|a| a.contains(']'))
        // `by HOST via CAPTURE`: the reader splits at the first ` via `.
        || format!("{host} via ").find(" via ") != Some(host.len())
}

/// The envelope as the block can carry it: empty values are not written.
fn normalised(env: &Envelope) -> Envelope {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let mut n = Envelope::new(env.capture, RawMessage::from_bytes(Vec::new()));
    n.received = env.received;
    n.sender = nonempty(&env.sender);
    n.recipients = env.recipients.clone();
    n.login = nonempty(&env.login);
    n.login_method = n.login.as_ref().and_then(|_| nonempty(&env.login_method));
    n.client = Client {
        hostname: nonempty(&env.client.hostname),
        address: env.client.address.clone(),
        port: env.client.address.as_ref().and(env.client.port),
        helo: env.client.helo.clone(),
    };
    n.tls = nonempty(&env.tls);
    n.queue_id = nonempty(&env.queue_id);
    n.tags = env.tags.clone();
    n
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let flags = c.byte();
    let capture =
        [CapturePath::Milter, CapturePath::Filter, CapturePath::Pipe][usize::from(flags % 3)];
    let eol = if flags & 4 != 0 { "\r\n" } else { "\n" };
    let secs = u32::from_le_bytes([c.byte(), c.byte(), c.byte(), c.byte()]);
    let received: DateTime<Utc> = DateTime::from_timestamp(i64::from(secs), 0).unwrap();
    let host = c.string();
    let mut env = Envelope::new(capture, RawMessage::from_bytes(Vec::new()));
    env.received = received;
    env.sender = c.opt();
    for _ in 0..c.byte() % 4 {
        env.recipients.push(c.string());
    }
    env.login = c.opt();
    env.login_method = c.opt();
    env.client = Client {
        hostname: c.opt(),
        address: c.opt(),
        port: (c.byte() % 2 == 1).then(|| u16::from_le_bytes([c.byte(), c.byte()])),
        helo: c.opt(),
    };
    env.tls = c.opt();
    env.queue_id = c.opt();
    for _ in 0..c.byte() % 3 {
        env.tags.push(c.string());
    }
    let message = c.0;

    let block = envelope_headers(&env, &host, eol);
    let mut file = block.clone().into_bytes();
    file.extend_from_slice(message);
    let path = dir().join("input");
    std::fs::write(&path, &file).unwrap();
    let opts = ImportOptions {
        spool_dir: dir().clone(),
        ..ImportOptions::default()
    };
    let found: Vec<Found> = walk(vec![path], opts).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let Found::Message { envelope: got, .. } = &found[0] else {
        panic!("not imported: {found:?}");
    };
    let bytes = got.message.to_vec().unwrap();

    let all_short = host.len() <= 200
        && [
            &env.sender,
            &env.login,
            &env.login_method,
            &env.tls,
            &env.queue_id,
        ]
        .iter()
        .all(|v| v.as_ref().is_none_or(|s| s.len() <= 200))
        && env
            .recipients
            .iter()
            .chain(&env.tags)
            .all(|s| s.len() <= 200)
        && env.client.describe().is_none_or(|d| d.len() <= 200);

    if got.capture != CapturePath::Import {
        assert_eq!(bytes, message, "block taken off, message changed");
        assert_eq!(
            envelope_headers(got, &host, eol),
            block,
            "restored envelope renders differently"
        );
        if !ambiguous(&env, &host) {
            let want = normalised(&env);
            assert_eq!(got.capture, want.capture);
            assert_eq!(got.received, want.received);
            assert_eq!(got.sender, want.sender);
            assert_eq!(got.recipients, want.recipients);
            assert_eq!(got.login, want.login);
            assert_eq!(got.login_method, want.login_method);
            assert_eq!(got.client, want.client);
            assert_eq!(got.tls, want.tls);
            assert_eq!(got.queue_id, want.queue_id);
            assert_eq!(got.tags, want.tags);
        }
    } else {
        assert_eq!(bytes, file, "block kept, message changed");
        assert!(
            !all_short || ambiguous(&env, &host),
            "block of a plain envelope not recognised: {block:?}"
        );
    }
});
