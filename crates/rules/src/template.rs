//! Destination path templates and the escaping that keeps every expansion
//! inside the template's fixed prefix.
//!
//! Placeholder values (logins, addresses, queue ids) come from strangers.
//! Each value is turned into exactly one safe path component by
//! [`escape_component`]:
//!
//! - Unicode lower-cased, then every byte outside `a-z 0-9 - _ + = , @ .`
//!   written as `%xx` (lower-case hex). `/`, NUL, control characters, `%`,
//!   spaces and all non-ASCII bytes (so look-alike letters) are therefore
//!   escaped, and two different values never produce the same name.
//! - A leading `.` is escaped (`%2e`): no value can be `.` or `..` or
//!   create a hidden file.
//! - An absent value (no login, null sender, no domain) becomes `%none`,
//!   which no escaped value can equal because `%` is always followed by two
//!   hex digits otherwise.
//! - Names longer than 200 bytes are cut and suffixed with `~` and 16 hex
//!   digits of the value's BLAKE3 hash (a real `~` is always escaped).
//!
//! A template is checked when the configuration loads: it must begin with a
//! fixed directory, must not contain a `..` component, and may only use
//! known placeholders.

use std::fmt::{self, Write as _};
use std::path::{Component, Path, PathBuf};

/// Longest escaped component; leaves room under `NAME_MAX` (255) for the
/// suffixes destinations add (`.lock`, `.eml`, Maildir info).
const MAX_COMPONENT: usize = 200;

/// What an absent value expands to.
pub const ABSENT: &str = "%none";

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{login}`: the SASL login.
    Login,
    /// `{sender}`: the envelope sender.
    Sender,
    /// `{sender_local}`.
    SenderLocal,
    /// `{sender_domain}`.
    SenderDomain,
    /// `{recipient}`: the envelope recipient (per-recipient rules only).
    Recipient,
    /// `{recipient_local}`.
    RecipientLocal,
    /// `{recipient_domain}`.
    RecipientDomain,
    /// `{queue_id}`: the MTA queue id.
    QueueId,
    /// `{yyyy}`: the receive year (local time).
    Year,
    /// `{mm}`: the receive month, two digits.
    Month,
    /// `{dd}`: the receive day, two digits.
    Day,
}

impl Var {
    const ALL: [(&'static str, Var); 11] = [
        ("login", Var::Login),
        ("sender", Var::Sender),
        ("sender_local", Var::SenderLocal),
        ("sender_domain", Var::SenderDomain),
        ("recipient", Var::Recipient),
        ("recipient_local", Var::RecipientLocal),
        ("recipient_domain", Var::RecipientDomain),
        ("queue_id", Var::QueueId),
        ("yyyy", Var::Year),
        ("mm", Var::Month),
        ("dd", Var::Day),
    ];

    fn parse(name: &str) -> Option<Var> {
        Var::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// True for the placeholders that need one particular recipient.
    pub fn is_recipient(self) -> bool {
        matches!(
            self,
            Var::Recipient | Var::RecipientLocal | Var::RecipientDomain
        )
    }
}

/// Why a template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Empty path.
    #[error("the path is empty")]
    Empty,
    /// `{` without `}`, or a stray `}`.
    #[error("unbalanced braces in {0:?}")]
    Braces(String),
    /// `{name}` that is not a known placeholder.
    #[error("unknown placeholder {{{0}}}; known: login, sender, sender_local, sender_domain, recipient, recipient_local, recipient_domain, queue_id, yyyy, mm, dd")]
    Unknown(String),
    /// A `..` component could leave the prefix.
    #[error("a path component is '..', which could leave the destination's directory")]
    DotDot,
    /// The path starts with a placeholder, so it has no fixed prefix.
    #[error("a placeholder appears before any fixed directory; start the path with a directory, e.g. /var/archive/{{login}}")]
    NoPrefix,
    /// NUL or another control character in the template.
    #[error("the path contains a control character")]
    Control,
    /// An expansion left the prefix (a bug in escaping; refused, never written).
    #[error("expansion {0:?} would leave the destination's directory")]
    Escaped(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A parsed path template such as `/var/archive/{login}/sent.mbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    prefix: PathBuf,
}

/// Values for one expansion. `None` means absent.
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    /// SASL login.
    pub login: Option<&'a str>,
    /// Envelope sender (`None`: null sender).
    pub sender: Option<&'a str>,
    /// The recipient this copy is for.
    pub recipient: Option<&'a str>,
    /// MTA queue id.
    pub queue_id: Option<&'a str>,
    /// Receive date as (year, month, day), local time.
    pub date: (i32, u32, u32),
}

impl Template {
    /// Parses and checks a template.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if source.is_empty() {
            return Err(TemplateError::Empty);
        }
        if source.chars().any(char::is_control) {
            return Err(TemplateError::Control);
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(TemplateError::Braces(source.to_string()))
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| TemplateError::Braces(source.to_string()))?;
                    let name = &after[..end];
                    if name.contains('{') {
                        return Err(TemplateError::Braces(source.to_string()));
                    }
                    let var =
                        Var::parse(name).ok_or_else(|| TemplateError::Unknown(name.into()))?;
                    parts.push(Part::Var(var));
                    rest = &after[end + 1..];
                }
            }
        }
        // Check components with every placeholder standing for "some name".
        let shape: String = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.as_str(),
                Part::Var(_) => "\u{1}",
            })
            .collect();
        if Path::new(&shape)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(TemplateError::DotDot);
        }
        let fixed: &str = match parts.first() {
            Some(Part::Literal(s)) if parts.len() > 1 => s,
            Some(Part::Literal(s)) => s,
            _ => "",
        };
        let has_vars = parts.iter().any(|p| matches!(p, Part::Var(_)));
        let prefix = if has_vars {
            let dir_end = fixed.rfind('/').ok_or(TemplateError::NoPrefix)?;
            let dir = &fixed[..dir_end];
            // A real directory: `//./a{login}` or `././{login}` name only
            // the root or the current directory once normalised (found by
            // fuzzing).
            if !Path::new(dir)
                .components()
                .any(|c| matches!(c, Component::Normal(_)))
            {
                return Err(TemplateError::NoPrefix);
            }
            PathBuf::from(dir)
        } else {
            let p = PathBuf::from(fixed);
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        Ok(Template {
            source: source.to_string(),
            parts,
            prefix,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The fixed directory every expansion stays inside.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// True when the template has no placeholder: every expansion is the
    /// path itself.
    pub fn is_fixed(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    /// True when the template needs a particular recipient.
    pub fn uses_recipient(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if v.is_recipient()))
    }

    /// Expands the template. Every value is escaped into one path component,
    /// and the result is checked to lie inside [`Template::prefix`].
    pub fn expand(&self, v: &Values<'_>) -> Result<PathBuf, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(var) => out.push_str(&value_of(*var, v)),
            }
        }
        let path = PathBuf::from(out);
        // Escaping makes this impossible; the check keeps it impossible.
        if !path.starts_with(&self.prefix) || path.components().any(|c| c == Component::ParentDir) {
            return Err(TemplateError::Escaped(path.display().to_string()));
        }
        Ok(path)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn value_of(var: Var, v: &Values<'_>) -> String {
    fn local(a: Option<&str>) -> Option<&str> {
        a.map(|a| mailkeep_envelope::split_address(a).local)
    }
    fn domain(a: Option<&str>) -> Option<&str> {
        a.and_then(|a| mailkeep_envelope::split_address(a).domain)
    }
    match var {
        Var::Login => escape_component(v.login),
        Var::Sender => escape_component(v.sender),
        Var::SenderLocal => escape_component(local(v.sender)),
        Var::SenderDomain => escape_component(domain(v.sender)),
        Var::Recipient => escape_component(v.recipient),
        Var::RecipientLocal => escape_component(local(v.recipient)),
        Var::RecipientDomain => escape_component(domain(v.recipient)),
        Var::QueueId => escape_component(v.queue_id),
        Var::Year => format!("{:04}", v.date.0),
        Var::Month => format!("{:02}", v.date.1),
        Var::Day => format!("{:02}", v.date.2),
    }
}

/// Turns any string into one safe, lower-case path component (see the
/// module documentation for the exact rules).
pub fn escape_component(value: Option<&str>) -> String {
    let value = match value {
        Some(v) if !v.is_empty() => v,
        _ => return ABSENT.to_string(),
    };
    let lower = value.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    for (i, b) in lower.bytes().enumerate() {
        let safe = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'-' | b'_' | b'+' | b'=' | b',' | b'@')
            || (b == b'.' && i > 0);
        if safe {
            out.push(b as char);
        } else {
            // Into `out` directly: no allocation per escaped byte.
            let _ = write!(out, "%{b:02x}");
        }
    }
    if out.len() > MAX_COMPONENT {
        let mut cut = MAX_COMPONENT - 17;
        // Never cut inside a %xx escape.
        if let Some(pct) = out[cut.saturating_sub(2)..cut].find('%') {
            cut = cut - 2 + pct;
        }
        let hash = blake3::hash(value.as_bytes()).to_hex();
        out.truncate(cut);
        out.push('~');
        out.push_str(&hash[..16]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(login: Option<&'a str>, rcpt: Option<&'a str>) -> Values<'a> {
        Values {
            login,
            sender: Some("Alice@Example.com"),
            recipient: rcpt,
            queue_id: Some("4ABC"),
            date: (2026, 3, 7),
        }
    }

    #[test]
    fn prefix_must_name_a_real_directory() {
        for t in [
            "//./a{login}",
            "././{login}",
            "/./{login}",
            "//{login}",
            "./{login}",
        ] {
            assert!(
                matches!(Template::parse(t), Err(TemplateError::NoPrefix)),
                "{t} accepted"
            );
        }
        assert_eq!(
            Template::parse("/var//./a/{login}").unwrap().prefix(),
            Path::new("/var//./a")
        );
    }

    #[test]
    fn expands_placeholders() {
        let t =
            Template::parse("/var/archive/{login}/{yyyy}-{mm}-{dd}/{sender_domain}.mbox").unwrap();
        assert_eq!(t.prefix(), Path::new("/var/archive"));
        assert_eq!(
            t.expand(&values(Some("Bob"), None)).unwrap(),
            PathBuf::from("/var/archive/bob/2026-03-07/example.com.mbox")
        );
        assert_eq!(
            t.expand(&values(None, None)).unwrap(),
            PathBuf::from("/var/archive/%none/2026-03-07/example.com.mbox")
        );
    }

    #[test]
    fn hostile_values_stay_inside() {
        let t = Template::parse("/a/{login}/{recipient_local}").unwrap();
        for evil in [
            "..",
            ".",
            "../../etc",
            "a/b@c",
            "%2e%2e",
            "/etc/passwd",
            "\0x",
            "a\nb",
            "\u{430}lice",
            "~root",
            "",
        ] {
            let p = t.expand(&values(Some(evil), Some(evil))).unwrap();
            assert!(p.starts_with("/a"), "{evil:?} -> {p:?}");
            assert_eq!(p.components().count(), 4, "{evil:?} -> {p:?}");
            assert!(!p.components().any(|c| c == Component::ParentDir));
        }
        assert_eq!(escape_component(Some("../../etc")), "%2e.%2f..%2fetc");
        assert_eq!(escape_component(Some("a/b@c")), "a%2fb@c");
        assert_eq!(escape_component(Some("%2e%2e")), "%252e%252e");
        assert_eq!(escape_component(Some("\u{430}lice")), "%d0%b0lice");
        assert_ne!(
            escape_component(Some("\u{430}lice")),
            escape_component(Some("alice"))
        );
    }

    #[test]
    fn long_values_are_cut_with_a_hash() {
        let a = escape_component(Some(&"x".repeat(1000)));
        let b = escape_component(Some(&format!("{}y", "x".repeat(999))));
        assert!(a.len() <= MAX_COMPONENT);
        assert_ne!(a, b);
        let pct = escape_component(Some(&"/".repeat(500)));
        assert!(pct.len() <= MAX_COMPONENT);
        assert!(pct.split('~').next().unwrap().ends_with("%2f"));
    }

    #[test]
    fn rejects_escaping_templates() {
        assert_eq!(Template::parse("/a/../{login}"), Err(TemplateError::DotDot));
        assert_eq!(
            Template::parse("/a/{login}/../../x"),
            Err(TemplateError::DotDot)
        );
        assert_eq!(Template::parse("{login}/x"), Err(TemplateError::NoPrefix));
        assert_eq!(Template::parse("/{login}"), Err(TemplateError::NoPrefix));
        assert_eq!(Template::parse("./{login}"), Err(TemplateError::NoPrefix));
        assert!(matches!(
            Template::parse("/a/{nope}"),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            Template::parse("/a/{login"),
            Err(TemplateError::Braces(_))
        ));
        assert!(matches!(
            Template::parse("/a/}x"),
            Err(TemplateError::Braces(_))
        ));
        assert_eq!(Template::parse("/a/\0"), Err(TemplateError::Control));
        assert!(Template::parse("./data/{login}").is_ok());
        assert!(Template::parse("/var/archive/all").is_ok());
    }
}
