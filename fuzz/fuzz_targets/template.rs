//! Destination path templates (`mailkeep_rules::Template`): the template
//! comes from the configuration, the values (login, sender, recipient,
//! queue id) from strangers.
//!
//! Input: NUL-separated `template`, `login`, `sender`, `recipient`,
//! `queue_id` (a missing field is an absent value).
//!
//! Invariants, for every template that parses:
//! - `expand` succeeds (its `Escaped` error means the escaping failed);
//! - the expansion starts with `Template::prefix`, which is a non-empty
//!   directory written at the start of the template, and has no `..`
//!   component;
//! - each placeholder becomes exactly one path component: the expansion is
//!   the template with every placeholder replaced by `escape_component` of
//!   its value, and it has as many components as the template with each
//!   placeholder replaced by a plain name;
//! - `escape_component` gives a non-empty name of at most 200 bytes, using
//!   only `a-z 0-9 - _ + = , @ .`, `%xx` escapes, `%none` and a final
//!   `~` plus 16 hex digits, never starting with `.`; two values give the
//!   same name only if they are equal ignoring case (or both absent).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_envelope::split_address;
use mailkeep_rules::template::{escape_component, Values, ABSENT};
use mailkeep_rules::Template;
use std::path::{Component, Path};

fn check_component(value: Option<&str>) -> String {
    let name = escape_component(value);
    assert!(!name.is_empty());
    assert!(name.len() <= 200, "{} bytes for {value:?}", name.len());
    assert!(!name.starts_with('.'), "{name:?}");
    if value.is_none_or(str::is_empty) {
        assert_eq!(name, ABSENT);
        return name;
    }
    let b = name.as_bytes();
    // A cut name ends in `~` and 16 hex digits; a `~` is escaped otherwise.
    let body_end = match name.find('~') {
        Some(t) => {
            assert_eq!(b.len() - t, 17, "{name:?}");
            assert!(b[t + 1..].iter().all(u8::is_ascii_hexdigit), "{name:?}");
            t
        }
        None => b.len(),
    };
    let mut i = 0;
    while i < body_end {
        match b[i] {
            b'%' => {
                assert!(i + 2 < body_end, "cut escape in {name:?}");
                assert!(
                    b[i + 1..i + 3]
                        .iter()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)),
                    "{name:?}"
                );
                i += 3;
            }
            c => {
                assert!(
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, b'-' | b'_' | b'+' | b'=' | b',' | b'@' | b'.'),
                    "byte {c:#x} in {name:?}"
                );
                i += 1;
            }
        }
    }
    name
}

/// The expansion as the documentation describes it.
fn expected(template: &str, v: &Values<'_>) -> String {
    fn local(a: Option<&str>) -> Option<&str> {
        a.map(|a| split_address(a).local)
    }
    fn domain(a: Option<&str>) -> Option<&str> {
        a.and_then(|a| split_address(a).domain)
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("parsed template");
        out.push_str(&match &rest[open + 1..close] {
            "login" => check_component(v.login),
            "sender" => check_component(v.sender),
            "sender_local" => check_component(local(v.sender)),
            "sender_domain" => check_component(domain(v.sender)),
            "recipient" => check_component(v.recipient),
            "recipient_local" => check_component(local(v.recipient)),
            "recipient_domain" => check_component(domain(v.recipient)),
            "queue_id" => check_component(v.queue_id),
            "yyyy" => format!("{:04}", v.date.0),
            "mm" => format!("{:02}", v.date.1),
            "dd" => format!("{:02}", v.date.2),
            other => panic!("parsed template with unknown placeholder {other:?}"),
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The template with every placeholder replaced by a plain name.
fn shape(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        out.push('x');
        rest = &rest[open + rest[open..].find('}').unwrap() + 1..];
    }
    out.push_str(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let source = fields.next().unwrap_or_default();
    let login = fields.next();
    let sender = fields.next();
    let recipient = fields.next();
    let queue_id = fields.next();

    // Escaping holds for every value, whatever the template.
    let names: Vec<(Option<&str>, String)> = [login, sender, recipient, queue_id]
        .into_iter()
        .map(|v| (v, check_component(v)))
        .collect();
    for (i, (a, na)) in names.iter().enumerate() {
        for (b, nb) in &names[i + 1..] {
            if na == nb {
                let fold = |v: &Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_lowercase);
                assert_eq!(fold(a), fold(b), "both named {na:?}");
            }
        }
    }

    let Ok(template) = Template::parse(source) else {
        return;
    };
    let values = Values {
        login,
        sender,
        recipient,
        queue_id,
        date: (2026, 3, 7),
    };
    let path = match template.expand(&values) {
        Ok(p) => p,
        Err(e) => panic!("{source:?} with {values:?}: {e}"),
    };
    let prefix = template.prefix();
    assert!(path.starts_with(prefix), "{path:?} outside {prefix:?}");
    assert!(
        !path.components().any(|c| c == Component::ParentDir),
        "{path:?}"
    );
    if source.contains('{') {
        // The prefix must name a directory, not just `/` or nothing
        // (`//./a{login}` once named the root: regressions/template/).
        let names = prefix
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        assert!(
            names > 0,
            "{source:?}: prefix {prefix:?} is no fixed directory"
        );
        let fixed = &source[..source.find('{').unwrap()];
        assert!(
            Path::new(fixed).starts_with(prefix),
            "{source:?}: prefix {prefix:?} is not written before the first placeholder"
        );
    }
    assert_eq!(path, Path::new(&expected(source, &values)), "{source:?}");
    let shape = shape(source);
    assert_eq!(
        path.components().count(),
        Path::new(&shape).components().count(),
        "{source:?} -> {path:?}"
    );
});
