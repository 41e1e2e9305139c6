//! `mailkeep_smtp::reply::parse`, the one reply parser, on whatever a
//! server sends back (the filter's relay, reinjection, `forward:`).
//!
//! Invariants: never panics; a parsed reply has a code in 200..=599, between
//! one and `MAX_REPLY_LINES` lines, each at most `MAX_REPLY_LINE` bytes, and
//! used `n` bytes ending in LF with `n <= buf.len()`, which are exactly its
//! `raw` bytes; parsing just those `n` bytes gives the same reply (what
//! follows cannot change it); an incomplete reply (`Ok(None)`) is shorter
//! than `MAX_REPLY_LINE * MAX_REPLY_LINES` bytes, so a hostile relay cannot
//! make us buffer without limit; every prefix of a complete reply is
//! incomplete or an error, never a different reply; and its display has
//! no control character (a reply cannot forge a log line).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_smtp::reply::{parse, MAX_REPLY_LINE, MAX_REPLY_LINES};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some((reply, n))) => {
            assert!((200..=599).contains(&reply.code), "code {}", reply.code);
            let lines: Vec<&[u8]> = reply.raw.split_inclusive(|&b| b == b'\n').collect();
            assert!(!lines.is_empty() && lines.len() <= MAX_REPLY_LINES, "{} lines", lines.len());
            for line in &lines {
                assert!(line.len() <= MAX_REPLY_LINE, "line of {} bytes", line.len());
            }
            assert!(n > 0 && n <= data.len());
            assert_eq!(data[n - 1], b'\n');
            assert_eq!(reply.raw, &data[..n]);
            let again = parse(&data[..n]);
            assert_eq!(again, Ok(Some((reply.clone(), n))));
            // A prefix cut inside the reply, as a slow relay delivers it.
            let cut = usize::from(data[0]) % n;
            if let Ok(Some((other, m))) = parse(&data[..cut]) {
                panic!("prefix of {cut} bytes parsed as {other:?} ({m} bytes), whole as {reply:?}");
            }
            let shown = reply.to_string();
            assert!(!shown.is_empty() && !shown.chars().any(char::is_control), "{shown:?}");
        }
        Ok(None) => {
            assert!(
                data.len() < MAX_REPLY_LINE * MAX_REPLY_LINES,
                "{} bytes pending",
                data.len()
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
