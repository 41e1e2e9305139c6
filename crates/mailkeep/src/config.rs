//! The configuration file in two layers: the TOML as written
//! ([`RawConfig`]) and the validated runtime settings ([`Settings`]).
//! Every error names the file and line it comes from.

use mailkeep_destinations::{ArchiveOptions, Archiver};
use mailkeep_envelope::DEFAULT_SPOOL_THRESHOLD;
use mailkeep_rules::{RawRule, RuleSet, Size};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mailkeep/mailkeep.toml";

/// The configuration used when there is no file at all.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    envelope_headers: Option<bool>,
    lock_timeout: Option<u64>,
    hostname: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<PathBuf>,
    threshold: Option<Size>,
    max_message_size: Option<Size>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    archive: RawArchive,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// The embedded default.
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("<embedded default>"),
        }
    }
}

/// A configuration error with its location.
#[derive(Debug)]
pub struct ConfigError {
    /// The file (or the embedded default).
    pub source: Source,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.source, l, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where they came from.
    pub source: Source,
    /// The archiving service (rules + destinations).
    pub archiver: Archiver,
    /// Host name used in headers and SMTP greetings.
    pub hostname: String,
    /// Spool directory for large messages.
    pub spool_dir: PathBuf,
    /// Messages up to this size stay in memory.
    pub spool_threshold: usize,
    /// Larger messages are refused; `None`: no limit.
    pub max_message_size: Option<u64>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Parses and validates configuration text.
pub fn parse(text: &str, source: Source) -> Result<Settings, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError {
        source: source.clone(),
        line,
        message,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        // One line: the message goes to stderr and into Postfix's logs.
        err(line, e.message().trim().replace('\n', "; "))
    })?;
    let spans: Vec<_> = raw.rule.iter().map(|r| r.span()).collect();
    let rules: Vec<RawRule> = raw
        .rule
        .into_iter()
        .map(toml::Spanned::into_inner)
        .collect();
    let envelope_headers = raw.archive.envelope_headers.unwrap_or(true);
    let rules = RuleSet::compile(rules, envelope_headers).map_err(|e| {
        let line = spans.get(e.index).map(|s| line_of(text, s.start));
        err(line, e.to_string())
    })?;
    let hostname = raw
        .archive
        .hostname
        .unwrap_or_else(mailkeep_destinations::hostname);
    let options = ArchiveOptions {
        hostname: hostname.clone(),
        lock_timeout: raw
            .archive
            .lock_timeout
            .map(Duration::from_secs)
            .unwrap_or(mailkeep_destinations::DEFAULT_LOCK_TIMEOUT),
    };
    let size = |s: &Option<Size>, name: &str| {
        s.as_ref()
            .map(|s| {
                s.bytes()
                    .map_err(|m| err(None, format!("spool.{name}: {m}")))
            })
            .transpose()
    };
    let threshold = size(&raw.spool.threshold, "threshold")?
        .map(|t| t as usize)
        .unwrap_or(DEFAULT_SPOOL_THRESHOLD);
    let max_message_size =
        size(&raw.spool.max_message_size, "max_message_size")?.filter(|m| *m > 0);
    Ok(Settings {
        source,
        archiver: Archiver::new(rules, options),
        hostname,
        spool_dir: raw.spool.dir.unwrap_or_else(std::env::temp_dir),
        spool_threshold: threshold,
        max_message_size,
    })
}

/// Loads `--config FILE`, or the default path, or the embedded default
/// when no path was given and the default path does not exist.
pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_PATH);
            if !p.exists() {
                return parse(EMBEDDED_DEFAULT, Source::Embedded);
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
        source: Source::File(path.clone()),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, Source::File(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_loads() {
        let s = parse(EMBEDDED_DEFAULT, Source::Embedded).unwrap();
        assert_eq!(s.archiver.rules().rules().len(), 1);
    }

    #[test]
    fn errors_carry_lines() {
        let text = "[[rule]]\nname = \"ok\"\narchive = \"mbox:/a\"\n\n[[rule]]\nname = \"bad\"\narchive = \"mbox:/a/../{login}\"\n";
        let e = parse(text, Source::File("x.toml".into())).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.to_string()
                .starts_with("x.toml:5: rule 2 (bad): archive:"),
            "{e}"
        );
        let e = parse("[[rule]]\nnope = 1\n", Source::Embedded).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("[[rule]\n", Source::Embedded).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }
}
