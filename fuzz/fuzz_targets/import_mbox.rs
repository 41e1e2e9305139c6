//! The mbox reader of `mailkeep import` (module `import::mbox`, reached
//! through the public `import::walk`: the splitter is crate-private and the
//! walk reads files, so each run writes its input to a file in tmpfs).
//!
//! Input: a mode byte, then
//! - even mode: messages separated by `0xFF` bytes (at most 16). Each is
//!   made non-empty and newline-terminated (what an mbox holds) and must not
//!   start with mailkeep's envelope block (`Return-Path: <` becomes
//!   `return-Path: <`; the block has its own target), then written as an
//!   mboxrd file exactly as mailkeep's mbox destination writes it (From_
//!   line, `destinations::mbox::FromQuoter`, empty separator line).
//!   Invariant: the walk gives back exactly those messages, in order, byte
//!   for byte, and nothing else.
//! - odd mode: the rest is the file. Invariant: no panic, and the message
//!   bytes given back add up to no more than the file (unquoting and
//!   separators only ever remove bytes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_capture::import::{walk, Found, ImportOptions};
use mailkeep_destinations::mbox::FromQuoter;
use mailkeep_fuzz::scratch_dir;
use std::path::PathBuf;
use std::sync::OnceLock;

const MAX_MESSAGES: usize = 16;

/// A directory in tmpfs, one per fuzzing process.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("import-mbox"))
}

fn read_back(file: &[u8]) -> Vec<Found> {
    let path = dir().join("input");
    std::fs::write(&path, file).unwrap();
    let opts = ImportOptions {
        spool_dir: dir().clone(),
        ..ImportOptions::default()
    };
    walk(vec![path], opts).collect()
}

fn bytes_of(found: &Found) -> Option<Vec<u8>> {
    match found {
        Found::Message { envelope, .. } => Some(envelope.message.to_vec().unwrap()),
        Found::Skipped { .. } => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let found = read_back(rest);
        let total: usize = found.iter().filter_map(bytes_of).map(|m| m.len()).sum();
        assert!(
            total <= rest.len(),
            "{total} message bytes from a {}-byte file",
            rest.len()
        );
        return;
    }

    let messages: Vec<Vec<u8>> = rest
        .split(|b| *b == 0xFF)
        .take(MAX_MESSAGES)
        .map(|piece| {
            let mut m = piece.to_vec();
            if m.starts_with(b"Return-Path: <") {
                m[0] = b'r';
            }
            if !m.ends_with(b"\n") {
                m.push(b'\n');
            }
            m
        })
        .collect();
    let mut file = Vec::new();
    for m in &messages {
        file.extend_from_slice(b"From fuzz@example.com Sat Nov 21 22:54:14 2026\n");
        let mut q = FromQuoter::default();
        q.write(m, &mut file).unwrap();
        q.finish(&mut file).unwrap();
        file.push(b'\n');
    }
    let found = read_back(&file);
    let got: Vec<Vec<u8>> = found
        .iter()
        .map(|f| bytes_of(f).unwrap_or_else(|| panic!("skipped: {f:?}")))
        .collect();
    assert_eq!(
        got.len(),
        messages.len(),
        "{} messages written, {} read back: {found:?}",
        messages.len(),
        got.len()
    );
    for (i, (g, m)) in got.iter().zip(&messages).enumerate() {
        assert_eq!(
            g,
            m,
            "message {i}: {:?} read back as {:?}",
            String::from_utf8_lossy(m),
            String::from_utf8_lossy(g)
        );
    }
});
