//! Assembling a message from milter events (`capture::milter::message`):
//! MAIL/RCPT arguments, header fields, body chunks and macros as the MTA
//! sends them (the packet codec itself is the `miltr-common` crate, not
//! mailkeep code).
//!
//! Input: flags (LEADSPC, spool threshold, size limit), then
//! length-prefixed MAIL and RCPT arguments, header fields, body chunks and
//! macro sets for milter stages.
//!
//! Invariants:
//! - the message is exactly `name ":" value CRLF` per field (`": "` without
//!   LEADSPC), an empty line and the body chunks, whether it stayed in
//!   memory or was spooled, and `len()` counts exactly those bytes;
//! - with a size limit, writing fails if and only if the message is longer;
//! - sender and recipients are the normalised arguments (`<>` and empty
//!   give none); login, method and queue id are the macros of the latest
//!   stage that sent them non-empty (names with or without braces), and a
//!   later set for a stage replaces the earlier one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_capture::milter::message::{ConnectionFacts, MessageBuilder};
use mailkeep_envelope::normalize_address_arg;
use mailkeep_fuzz::{scratch_dir, Cursor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

const STAGES: [u8; 9] = [b'C', b'H', b'M', b'R', b'T', b'L', b'N', b'E', b'B'];
/// Lookup order: latest stage first (as documented in the module).
const STAGE_ORDER: [u8; 9] = [b'E', b'B', b'N', b'L', b'T', b'R', b'M', b'H', b'C'];
const NAMES: [&str; 6] = [
    "i",
    "{auth_authen}",
    "auth_type",
    "{auth_type}",
    "auth_authen",
    "{i}",
];

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("milter"))
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let flags = c.byte();
    let leadspc = flags & 1 != 0;
    // 0 spools at once; otherwise small enough that some inputs spool.
    let threshold = usize::from(flags >> 1 & 7) * 64;
    let limit = (flags & 0x10 != 0).then(|| u64::from(c.byte()) * 8);

    let mail: Vec<String> = (0..c.byte() % 3).map(|_| c.string()).collect();
    let mut m = MessageBuilder::new(&mail, dir(), threshold, limit);
    let mut want_rcpts = Vec::new();
    let mut want = Vec::new();
    let mut failed = false;
    let mut facts = ConnectionFacts::default();
    let mut model: HashMap<u8, HashMap<String, String>> = HashMap::new();
    let mut in_body = false;

    while !c.0.is_empty() {
        match c.byte() % 4 {
            0 => {
                let rcpt = vec![c.string()];
                want_rcpts.extend(normalize_address_arg(&rcpt[0]));
                m.recipient(&rcpt);
            }
            1 if !in_body => {
                let (name, value) = (c.bytes(), c.bytes());
                want.extend_from_slice(name);
                want.extend_from_slice(if leadspc { b":" } else { b": " });
                want.extend_from_slice(value);
                want.extend_from_slice(b"\r\n");
                failed |= m.header(name, value, leadspc).is_err();
            }
            1 | 2 => {
                if !in_body {
                    in_body = true;
                    want.extend_from_slice(b"\r\n");
                }
                let chunk = c.bytes();
                want.extend_from_slice(chunk);
                failed |= m.body(chunk).is_err();
            }
            _ => {
                let stage = STAGES[usize::from(c.byte()) % STAGES.len()];
                let pairs: Vec<(&str, String)> = (0..c.byte() % 4)
                    .map(|_| (NAMES[usize::from(c.byte()) % NAMES.len()], c.string()))
                    .collect();
                facts.set_macros(stage, pairs.iter().map(|(k, v)| (*k, v.as_str())));
                model.insert(
                    stage,
                    pairs
                        .iter()
                        .map(|(k, v)| (k.trim_matches(['{', '}']).to_string(), v.clone()))
                        .collect(),
                );
            }
        }
        if !failed {
            assert_eq!(m.len(), want.len() as u64);
        }
    }
    if !in_body {
        want.extend_from_slice(b"\r\n");
    }
    let env = m.finish(&facts);
    let too_big = limit.is_some_and(|l| want.len() as u64 > l);
    if failed || env.is_err() {
        assert!(too_big, "failed under the limit: {:?}", env.err());
        return;
    }
    assert!(
        !too_big,
        "{} bytes accepted over a limit of {limit:?}",
        want.len()
    );
    let env = env.unwrap();
    assert_eq!(env.message.to_vec().unwrap(), want);
    assert_eq!(env.message.len(), want.len() as u64);
    assert_eq!(
        env.sender,
        mail.first().and_then(|a| normalize_address_arg(a))
    );
    assert_eq!(
        env.sender_params,
        mail.iter().skip(1).cloned().collect::<Vec<_>>()
    );
    assert_eq!(env.recipients, want_rcpts);
    let lookup = |name: &str| {
        STAGE_ORDER
            .iter()
            .filter_map(|s| model.get(s)?.get(name))
            .map(|v| v.trim().to_string())
            .find(|v| !v.is_empty())
    };
    assert_eq!(env.queue_id, lookup("i"));
    assert_eq!(env.login, lookup("auth_authen"));
    assert_eq!(env.login_method, lookup("auth_type"));
});
