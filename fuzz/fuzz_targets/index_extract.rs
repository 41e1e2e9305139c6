//! `mailkeep_index::extract` on any message bytes (every archived message
//! is indexed, and messages come from strangers).
//!
//! Invariants: it returns (libFuzzer's `-timeout` catches a hang), the text
//! is at most `Limits::max_text` bytes, attachment names are at most
//! `MAX_NAME` bytes, and the output strings are valid (they are `String`s,
//! so a bad slice would panic). When the text is longer than a small
//! `max_text`, extracting again under that limit gives a prefix of the full
//! text with `truncated` set: `truncated` promises "a prefix of what the
//! message says".

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_index::{extract, Limits, MAX_NAME};

/// The small limit of the second extraction: a few words, so the cut lands
/// inside real text of most inputs.
const SMALL_TEXT: usize = 64;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let full = extract(data, &limits);
    assert!(full.text.len() <= limits.max_text);
    for a in &full.attachments {
        if let Some(name) = &a.name {
            assert!(name.len() <= MAX_NAME, "name of {} bytes", name.len());
        }
        assert!(!a.content_type.is_empty());
    }
    if full.text.len() > SMALL_TEXT {
        let small = Limits {
            max_text: SMALL_TEXT,
            ..Limits::default()
        };
        let cut = extract(data, &small);
        assert!(cut.text.len() <= SMALL_TEXT, "{} bytes", cut.text.len());
        assert!(
            cut.truncated,
            "text of {} bytes not marked truncated",
            full.text.len()
        );
        assert!(
            full.text.starts_with(&cut.text),
            "cut text {:?} is not a prefix of {:?}",
            cut.text,
            &full.text[..full.text.len().min(200)]
        );
        // The header fields do not depend on the text limit.
        assert_eq!(cut.from, full.from);
        assert_eq!(cut.subject, full.subject);
    }
});
