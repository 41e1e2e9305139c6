//! Runs `extract` over the mail-parser project's public message corpus
//! (tests/corpus/, Apache-2.0 OR MIT, see its README) and pins a few things
//! an index must get right on real-world and broken messages.

use std::path::{Path, PathBuf};

use mailkeep_index::{extract, Extracted, Limits};

const GROUPS: [&str; 4] = ["rfc", "legacy", "thirdparty", "malformed"];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn extract_file(rel: &str) -> Extracted {
    let raw = std::fs::read(corpus().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    extract(&raw, &Limits::default())
}

#[test]
fn every_corpus_message_extracts() {
    let mut ran = 0;
    let mut with_text = 0;
    for group in GROUPS {
        let mut files: Vec<_> = std::fs::read_dir(corpus().join(group))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        for path in files {
            let raw = std::fs::read(&path).unwrap();
            let x = extract(&raw, &Limits::default());
            assert!(
                x.skipped.is_none(),
                "{}: skipped {:?}",
                path.display(),
                x.skipped
            );
            assert!(!x.truncated, "{}", path.display());
            with_text += usize::from(!x.text.is_empty());
            // Also under limits tight enough to cut most of them: no panic,
            // and what is produced respects the limits.
            let tight = Limits {
                max_parts: 2,
                max_depth: 1,
                max_text: 40,
                ..Limits::default()
            };
            let t = extract(&raw, &tight);
            assert!(t.text.len() <= 40, "{}", path.display());
            assert_eq!(t.subject, x.subject, "{}", path.display());
            ran += 1;
        }
    }
    assert!(ran > 50, "only {ran} corpus messages found");
    assert!(with_text > 50, "only {with_text} messages produced text");
}

#[test]
fn subject_and_addresses_are_decoded() {
    // Subject: =?UTF-8?B?44GT44KT44Gr44Gh44Gv?=
    assert_eq!(extract_file("thirdparty/010.eml").subject, "こんにちは");
    // Subject in UTF-7 encoded-words, To with an ISO-8859-1 encoded name.
    let x = extract_file("legacy/001.eml");
    assert_eq!(
        x.subject,
        "Die Hasen und die Frösche (Microsoft Outlook 00)"
    );
    assert_eq!(
        x.to,
        "Joe Blow <jblow@example.com>, Jürgen Schmürgen <schmuergen@example.com>"
    );
}

#[test]
fn header_fields_of_a_plain_message() {
    let x = extract_file("legacy/000.eml");
    assert_eq!(x.from, "Doug Sauder <doug@example.com>");
    assert_eq!(x.to, "Joe Blow <jblow@example.com>");
    // Date: Wed, 17 May 2000 19:35:05 -0400
    assert_eq!(x.date, Some(958_606_505));
    assert_eq!(
        x.message_id.as_deref(),
        Some("NDBBIAKOPKHFGPLCODIGKEKECHAA.doug@example.com")
    );
    assert_eq!(x.attachments.len(), 1);
    assert_eq!(x.attachments[0].name.as_deref(), Some("redball.png"));
    assert_eq!(x.attachments[0].content_type, "image/png");
    assert_eq!(x.attachments[0].size, 1453);
}

#[test]
fn html_only_message_is_reduced_to_words() {
    // text/html only, quoted-printable ISO-8859-1, with &quot; and <br>.
    let x = extract_file("legacy/002.eml");
    assert!(x
        .text
        .starts_with("Die Hasen und die Frösche Die Hasen klagten"));
    assert!(x.text.contains("\"wir leben\", sprach ein Redner"));
    assert!(!x.text.contains('<') && !x.text.contains("&quot;") && !x.text.contains("font"));
}

#[test]
fn alternative_keeps_only_the_plain_version() {
    // multipart/alternative with the same story as text/plain and text/html.
    let x = extract_file("legacy/003.eml");
    assert_eq!(x.text.matches("Die Hasen klagten").count(), 1, "{}", x.text);
    assert!(
        x.text.contains("\r\n"),
        "the plain version keeps its line breaks"
    );
}

#[test]
fn forwarded_messages_are_attachments_and_text() {
    let x = extract_file("rfc/002.eml");
    let names: Vec<_> = x.attachments.iter().map(|a| a.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some("Map of Argentina with Description"),
            Some("map_of_Argentina.gif")
        ]
    );
    assert_eq!(x.attachments[0].content_type, "message/rfc822");
    assert!(x.text.contains("Fire up Air Force One!"));
    assert!(x.text.contains("I finally figured out this MIME thing"));

    // A base64-encoded message/rfc822 attachment is decoded and read.
    let x = extract_file("rfc/008.eml");
    let fwd = &x.attachments[0];
    assert_eq!(fwd.name.as_deref(), Some("attached_email.eml"));
    assert_eq!(
        (fwd.content_type.as_str(), fwd.size),
        ("message/rfc822", 872)
    );
}

/// Fuzzing found text that, cut at a small `max_text`, was not a prefix of
/// the full text: a short part after the cut one was still appended.
#[test]
fn regression_cut_text_is_a_prefix_of_the_full_text() {
    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions/text-not-prefix-after-cut-0eb665b5"),
    )
    .expect("regression input");
    let full = mailkeep_index::extract(&raw, &mailkeep_index::Limits::default());
    for max_text in 1..full.text.len().min(200) {
        let limits = mailkeep_index::Limits {
            max_text,
            ..Default::default()
        };
        let cut = mailkeep_index::extract(&raw, &limits);
        assert!(cut.truncated, "max_text {max_text}");
        assert!(
            full.text.starts_with(&cut.text),
            "max_text {max_text}: {:?} is not a prefix of {:?}",
            cut.text,
            &full.text[..full.text.len().min(200)]
        );
    }
}
