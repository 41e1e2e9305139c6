//! `mailkeep_destinations::forward::smtp::parse_reply` on whatever a relay
//! sends back.
//!
//! Invariants: never panics; a parsed reply has a code in 200..=599, between
//! one and `MAX_REPLY_LINES` lines, each shorter than `MAX_REPLY_LINE`, and
//! used `n` bytes ending in LF with `n <= buf.len()`; parsing just those `n`
//! bytes gives the same reply (what follows cannot change it); an
//! incomplete reply (`Ok(None)`) is shorter than `MAX_REPLY_LINE *
//! MAX_REPLY_LINES` bytes, so a hostile relay cannot make us buffer without
//! limit; and every prefix of a complete reply is incomplete or an error,
//! never a different reply.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_destinations::forward::smtp::{parse_reply, MAX_REPLY_LINE, MAX_REPLY_LINES};

fuzz_target!(|data: &[u8]| {
    match parse_reply(data) {
        Ok(Some((reply, n))) => {
            assert!((200..=599).contains(&reply.code), "code {}", reply.code);
            assert!(!reply.lines.is_empty());
            assert!(
                reply.lines.len() <= MAX_REPLY_LINES,
                "{} lines",
                reply.lines.len()
            );
            for line in &reply.lines {
                // Invalid UTF-8 becomes U+FFFD (3 bytes), so the bound is
                // on characters, one per input byte at most.
                let chars = line.chars().count();
                assert!(chars < MAX_REPLY_LINE, "line of {chars} chars");
            }
            assert!(n > 0 && n <= data.len());
            assert_eq!(data[n - 1], b'\n');
            let again = parse_reply(&data[..n]);
            assert_eq!(again, Ok(Some((reply.clone(), n))));
            // A prefix cut inside the reply, as a slow relay delivers it.
            let cut = usize::from(data[0]) % n;
            if let Ok(Some((other, m))) = parse_reply(&data[..cut]) {
                panic!("prefix of {cut} bytes parsed as {other:?} ({m} bytes), whole as {reply:?}");
            }
            assert!(!reply.to_string().is_empty());
        }
        Ok(None) => {
            assert!(
                data.len() < MAX_REPLY_LINE * MAX_REPLY_LINES,
                "{} bytes pending",
                data.len()
            );
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
