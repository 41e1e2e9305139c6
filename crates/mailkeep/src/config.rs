//! The configuration file in two layers: the TOML as written
//! ([`RawConfig`]) and the validated runtime settings ([`Settings`]).
//!
//! Validation reports every error it finds, each at the line of the value
//! at fault ([`spans`]), so one `check-config` run shows everything to fix.
//! Only an error in the TOML itself (its syntax, an unknown key, a value
//! of the wrong type) stops at the first: serde cannot read on past it.
//!
//! Paths must be absolute, except in the embedded default, whose
//! `./mailkeep-data/...` paths are resolved against the current directory
//! when it loads (so `cargo run -- serve` works from a checkout). The
//! directories mailkeep keeps for itself default to `/var/lib/mailkeep`
//! and may not overlap the archive or be creatable by another user
//! ([`paths`]).

use ipnet::IpNet;
use mailkeep_capture::listen::{ListenSpec, SocketAccess};
use mailkeep_capture::milter::{Limits, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT};
use mailkeep_capture::policy::FailurePolicy;
use mailkeep_destinations::forward::{self, ForwardConfig};
use mailkeep_destinations::{ArchiveOptions, Archiver};
use mailkeep_envelope::DEFAULT_SPOOL_THRESHOLD;
use mailkeep_lifecycle::retention::{RawPolicy, Retention};
use mailkeep_rules::{DestKind, DestSpec, OneOrMany, RawConditions, RawRule, RuleSet, Size};
use mailkeep_store::{Store, StoreConfig};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod paths;
pub mod section;
mod spans;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mailkeep/mailkeep.toml";

/// The configuration used when there is no file at all.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// `[spool] dir` when not set: a directory of mailkeep's own, never a
/// world-writable one such as `/tmp`.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/mailkeep/spool";

/// `[filter] dedup_dir` when not set. Not under the store: the ledger is
/// pruned by age, and nothing pruned may share a directory with archived
/// mail.
pub const DEFAULT_DEDUP_DIR: &str = "/var/lib/mailkeep/filter-dedup";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    envelope_headers: Option<bool>,
    lock_timeout: Option<u64>,
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    encryption_key_file: Option<PathBuf>,
    #[serde(default)]
    old_key_files: Vec<PathBuf>,
    signing_key_file: Option<PathBuf>,
    compression_level: Option<i32>,
    segment_size: Option<Size>,
    group: Option<String>,
    audit_log: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<PathBuf>,
    threshold: Option<Size>,
    max_message_size: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMilter {
    listen: String,
    socket_mode: Option<String>,
    socket_owner: Option<String>,
    socket_group: Option<String>,
    #[serde(default)]
    on_failure: FailurePolicy,
    #[serde(default)]
    add_header: bool,
    max_connections: Option<usize>,
    timeout: Option<u64>,
    max_message_size: Option<Size>,
    #[serde(default)]
    no_archive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    listen: String,
    relay: Option<String>,
    #[serde(default)]
    allowed_clients: Vec<String>,
    #[serde(default)]
    on_failure: FailurePolicy,
    max_connections: Option<usize>,
    max_recipients: Option<usize>,
    max_message_size: Option<Size>,
    command_timeout: Option<u64>,
    data_timeout: Option<u64>,
    data_done_timeout: Option<u64>,
    dedup_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    no_archive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    relay: String,
    spool: PathBuf,
    sender: Option<String>,
    #[serde(default)]
    trust_archive_header: bool,
    tls: Option<String>,
    #[serde(default)]
    tls_verify: bool,
    auth_user: Option<String>,
    auth_password_file: Option<PathBuf>,
    retry_base: Option<u64>,
    max_age: Option<u64>,
    timeout: Option<u64>,
    marker_key_file: Option<PathBuf>,
}

/// The validated `[filter]` section.
#[derive(Debug, Clone)]
pub struct FilterSettings {
    /// Where to listen (TCP).
    pub listen: ListenSpec,
    /// The next hop; `None`: receiver mode.
    pub relay: Option<String>,
    /// Clients allowed; empty: loopback only.
    pub allowed_clients: Vec<IpNet>,
    /// Proxy mode: what to do when archiving fails.
    pub on_failure: FailurePolicy,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Larger messages get 552.
    pub max_message_size: Option<u64>,
    /// Timeouts.
    pub command_timeout: Duration,
    /// Timeouts.
    pub data_timeout: Duration,
    /// Timeouts.
    pub data_done_timeout: Duration,
    /// The dedup ledger.
    pub dedup_dir: PathBuf,
    /// Relay without archiving (e.g. a reinjection port).
    pub no_archive: bool,
    /// STARTTLS certificate and key, loaded.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// The validated `[milter]` section.
#[derive(Debug, Clone)]
pub struct MilterSettings {
    /// Where to listen.
    pub listen: ListenSpec,
    /// Unix socket mode and owner.
    pub access: SocketAccess,
    /// What to do when archiving fails.
    pub on_failure: FailurePolicy,
    /// Add `X-Mailkeep-Archived`.
    pub add_header: bool,
    /// Connection limit and read timeout.
    pub limits: Limits,
    /// Larger messages are not archived (policy decides).
    pub max_message_size: Option<u64>,
    /// Answer without archiving.
    pub no_archive: bool,
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
    rule: Vec<RawRule>,
    milter: Option<RawMilter>,
    filter: Option<RawFilter>,
    store: Option<RawStore>,
    forward: Option<RawForward>,
    retention: Option<RawRetention>,
    web: Option<RawWeb>,
}

/// `[web]`: the web interface and where the local accounts are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    users_file: Option<PathBuf>,
    listen: Option<String>,
    base_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    auth: OneOrMany,
    #[serde(default)]
    auditors: Vec<String>,
    #[serde(default)]
    admins: Vec<String>,
    default_domain: Option<String>,
    #[serde(default)]
    aliases: std::collections::HashMap<String, Vec<String>>,
    session_idle: Option<u64>,
    session_max: Option<u64>,
    login_timeout: Option<u64>,
    max_view_size: Option<Size>,
    max_export: Option<u64>,
    ldap: Option<RawLdap>,
}

/// `[web.ldap]`: how an `ldap://` backend finds and binds a person.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    bind_dn: Option<String>,
    base: Option<String>,
    filter: Option<String>,
    search_bind_dn: Option<String>,
    search_bind_password_file: Option<PathBuf>,
    mail_attributes: Option<Vec<String>>,
    #[serde(default)]
    starttls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    default: Option<String>,
    #[serde(default)]
    locked: bool,
    expire_every: Option<String>,
    #[serde(default)]
    policy: Vec<RawRetentionPolicy>,
}

/// A retention policy: the match keys of a rule, a query, and a period.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetentionPolicy {
    name: Option<String>,
    #[serde(default)]
    login: OneOrMany,
    #[serde(default)]
    sender: OneOrMany,
    #[serde(default)]
    recipient: OneOrMany,
    #[serde(default)]
    from: OneOrMany,
    #[serde(default)]
    to: OneOrMany,
    #[serde(default)]
    client: OneOrMany,
    #[serde(default)]
    tag: OneOrMany,
    #[serde(default)]
    capture: OneOrMany,
    size_over: Option<Size>,
    query: Option<String>,
    keep: String,
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
#[derive(Debug, Clone)]
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

/// Every error found in one configuration, in line order; displayed one
/// per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

/// What mailkeep needs to be able to do with a path at run time, for
/// `check-config --as USER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A directory it creates when missing and writes files in.
    Dir,
    /// The store's directory: [`Need::Dir`], and its files writable.
    Store,
    /// An mbox file: written when it exists; its directory takes the
    /// dotlock, so it is a [`Need::Dir`].
    Mbox,
    /// A file that must exist and be readable (a key, a certificate).
    Read,
    /// A key file created when missing: readable, or its directory writable.
    ReadOrCreate,
}

/// A path mailkeep uses at run time and the configuration line it comes
/// from.
#[derive(Debug, Clone)]
pub struct Place {
    /// The setting, e.g. `filter.dedup_dir` or `rule 2 (all): "maildir:/x"`.
    pub what: String,
    /// The path (for a templated destination, its fixed directory).
    pub path: PathBuf,
    /// What is done with it.
    pub need: Need,
    /// The line of the setting (or of its section when defaulted).
    pub line: Option<usize>,
}

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
    /// The milter listener, when configured.
    pub milter: Option<MilterSettings>,
    /// The SMTP filter listener, when configured.
    pub filter: Option<FilterSettings>,
    /// The native store, when configured.
    pub store: Option<StoreConfig>,
    /// The audit log of every access to the store (`[store] audit_log`,
    /// default `audit.log` in the store directory), when there is a store.
    pub audit_log: Option<PathBuf>,
    /// Archive copies as email, when configured (the marker key is loaded
    /// by [`Settings::attach_store`]).
    pub forward: Option<(ForwardConfig, PathBuf)>,
    /// How long deliveries are kept (`[retention]`; none: forever).
    pub retention: Retention,
    /// The local accounts (`[web] users_file`, default `users.json` in the
    /// store directory), when there is a store or the file is given.
    pub users_file: Option<PathBuf>,
    /// The web interface, when `[web] listen` is set (and there is a store).
    pub web: Option<mailkeep_web::WebSettings>,
    /// How often `serve` runs expiry (`[retention] expire_every`, default a
    /// day; `"off"` or no `[retention]`: never).
    pub expire_every: Option<std::time::Duration>,
    /// Every path the configuration makes mailkeep write or read.
    pub places: Vec<Place>,
}

impl Settings {
    /// Opens the store when the rules write to it and attaches it to the
    /// archiver (`serve`, `pipe`).
    pub fn attach_store(&mut self) -> Result<(), String> {
        let store = match (&self.store, self.archiver.rules().uses(DestKind::Store)) {
            (Some(cfg), true) => Some(Arc::new(
                Store::open(cfg.clone()).map_err(|e| mailkeep_capture::error_chain(&e))?,
            )),
            _ => None,
        };
        self.archiver.set_store(store);
        let forward = self.forward_config()?.map(Arc::new);
        self.archiver.set_forward(forward);
        Ok(())
    }

    /// `[forward]` with its marker key loaded (created when missing).
    pub fn forward_config(&self) -> Result<Option<ForwardConfig>, String> {
        let Some((cfg, key_file)) = &self.forward else {
            return Ok(None);
        };
        let mut cfg = cfg.clone();
        cfg.marker_key = forward::load_or_create_key(key_file)
            .map_err(|e| format!("forward.marker_key_file {}: {e}", key_file.display()))?;
        Ok(Some(cfg))
    }

    /// Opens the configured store read-only for the query commands
    /// (search, show, export, stats, verify, checkpoint): they need no write
    /// access and change nothing in it.
    pub fn open_store(&self) -> Result<Store, crate::exit::Failure> {
        Store::open_read_only(self.store_config()?)
            .map_err(|e| crate::exit::Failure::from_store(crate::exit::Exit::IOERR, &e))
    }

    /// Opens the configured store for writing (import, expire, erase, holds).
    pub fn open_store_writable(&self) -> Result<Store, crate::exit::Failure> {
        Store::open(self.store_config()?)
            .map_err(|e| crate::exit::Failure::from_store(crate::exit::Exit::IOERR, &e))
    }

    fn store_config(&self) -> Result<StoreConfig, crate::exit::Failure> {
        self.store.clone().ok_or_else(|| {
            crate::exit::Failure::new(
                crate::exit::Exit::CONFIG,
                format!("{}: there is no [store] section", self.source),
            )
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The validation context: the text's spans and the errors so far.
struct Cx<'a> {
    text: &'a str,
    source: &'a Source,
    spans: spans::Spans,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    /// The line of the value at `at` (a path such as `filter.dedup_dir`).
    fn line(&self, at: &str) -> Option<usize> {
        self.spans.find(at).map(|r| line_of(self.text, r.start))
    }

    fn err(&mut self, at: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            source: self.source.clone(),
            line: self.line(at),
            message: message.into(),
        });
    }

    /// Checks that `p`, the value of `key`, is absolute; in the embedded
    /// default a relative path is taken from the current directory.
    fn path(&mut self, key: &str, at: &str, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            return paths::normal(&p);
        }
        if *self.source == Source::Embedded {
            match std::env::current_dir() {
                Ok(cwd) => return paths::normal(&cwd.join(p)),
                Err(e) => self.err(at, format!("{key}: the current directory: {e}")),
            }
        } else {
            self.err(
                at,
                format!(
                    "{key}: {:?} must be an absolute path",
                    p.display().to_string()
                ),
            );
        }
        p
    }

    fn opt_path(&mut self, key: &str, p: Option<PathBuf>) -> Option<PathBuf> {
        p.map(|p| self.path(key, key, p))
    }

    /// A size setting in bytes; 0 and absent are `None`.
    fn size(&mut self, key: &str, s: Option<&Size>) -> Option<u64> {
        match s?.bytes() {
            Ok(b) => Some(b),
            Err(m) => {
                self.err(key, format!("{key}: {m}"));
                None
            }
        }
    }
}

/// Where a raw rule's `archive` value `item` is, as a span path.
fn archive_at(rule: usize, item: Option<usize>) -> String {
    match item {
        Some(i) => format!("rule.{rule}.archive.{i}"),
        None => format!("rule.{rule}.archive"),
    }
}

/// Parses and validates configuration text, reporting every error.
pub fn parse(text: &str, source: Source) -> Result<Settings, ConfigErrors> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
        source: source.clone(),
        line: e.span().map(|s| line_of(text, s.start)),
        // One line: the message goes to stderr and into Postfix's logs.
        message: e.message().trim().replace('\n', "; "),
    })?;
    let mut cx = Cx {
        text,
        source: &source,
        spans: spans::Spans::new(text),
        errors: Vec::new(),
    };
    let settings = validate(&mut cx, raw);
    let mut errors = cx.errors;
    if errors.is_empty() {
        return Ok(settings);
    }
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    Err(ConfigErrors(errors))
}

fn validate(cx: &mut Cx<'_>, raw: RawConfig) -> Settings {
    let mut places = Vec::new();
    // Destinations as written, for the overlap and --as checks (the rules
    // compile below reports what is wrong with them).
    let mut destinations = Vec::new();
    let (mut uses_store, mut uses_forward) = (None, None);
    for (ri, rule) in raw.rule.iter().enumerate() {
        let name = rule
            .name
            .clone()
            .unwrap_or_else(|| format!("rule {}", ri + 1));
        for (item, spec) in rule.archive.items() {
            let Ok(dest) = DestSpec::parse(spec) else {
                continue;
            };
            let at = archive_at(ri, item);
            let (path, need) = match dest.kind {
                DestKind::Store => {
                    uses_store.get_or_insert(at);
                    continue;
                }
                DestKind::Forward => {
                    uses_forward.get_or_insert(at);
                    continue;
                }
                DestKind::Mbox if dest.template.is_fixed() => {
                    (PathBuf::from(dest.template.as_str()), Need::Mbox)
                }
                _ if dest.template.is_fixed() => (PathBuf::from(dest.template.as_str()), Need::Dir),
                _ => (dest.template.prefix().to_path_buf(), Need::Dir),
            };
            let what = format!("rule {} ({name}): {spec:?}", ri + 1);
            destinations.push((what.clone(), path.clone(), at.clone()));
            places.push(Place {
                what,
                path,
                need,
                line: cx.line(&at),
            });
        }
    }
    let envelope_headers = raw.archive.envelope_headers.unwrap_or(true);
    let rules = match RuleSet::compile(raw.rule, envelope_headers) {
        Ok(rules) => rules,
        Err(errors) => {
            for e in errors {
                let at = match e.item {
                    Some(i) => format!("rule.{}.{}.{i}", e.index, e.field),
                    None => format!("rule.{}.{}", e.index, e.field),
                };
                cx.err(&at, e.to_string());
            }
            RuleSet::empty()
        }
    };
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
        store: None,
        forward: None,
    };
    let threshold = cx
        .size("spool.threshold", raw.spool.threshold.as_ref())
        .map(|t| t as usize)
        .unwrap_or(DEFAULT_SPOOL_THRESHOLD);
    let max_message_size = cx
        .size(
            "spool.max_message_size",
            raw.spool.max_message_size.as_ref(),
        )
        .filter(|m| *m > 0);
    let milter = raw
        .milter
        .and_then(|m| milter_settings(cx, m, max_message_size));
    let spool_dir = match raw.spool.dir {
        Some(d) => cx.path("spool.dir", "spool.dir", d),
        None => PathBuf::from(DEFAULT_SPOOL_DIR),
    };
    // Mailkeep's own directories: none may overlap the archive.
    let mut own = vec![("spool.dir", spool_dir.clone())];
    places.push(Place {
        what: "spool.dir".into(),
        path: spool_dir.clone(),
        need: Need::Dir,
        line: cx.line("spool.dir"),
    });
    let filter = raw
        .filter
        .and_then(|f| filter_settings(cx, f, max_message_size, &mut places));
    if let Some(f) = &filter {
        own.push(("filter.dedup_dir", f.dedup_dir.clone()));
    }
    let store = match raw.store {
        None => {
            if let Some(at) = &uses_store {
                cx.err(
                    at,
                    "a rule archives to \"store\" but there is no [store] section with a path",
                );
            }
            None
        }
        Some(st) => Some(store_settings(cx, st, &mut places)),
    };
    let (store, audit_log) = match store {
        Some((cfg, audit)) => (Some(cfg), Some(audit)),
        None => (None, None),
    };
    if let Some(st) = &store {
        destinations.push(("store.path".into(), st.path.clone(), "store.path".into()));
    }
    let (users_file, web) = match raw.web {
        None => (store.as_ref().map(|s| s.path.join("users.json")), None),
        Some(mut w) => {
            let users_file = cx
                .opt_path("web.users_file", w.users_file.take())
                .or_else(|| store.as_ref().map(|s| s.path.join("users.json")));
            let web = web_settings(cx, w, users_file.clone(), store.is_some(), &mut places);
            (users_file, web)
        }
    };
    let mut expire_every = None;
    let retention = match raw.retention {
        None => Retention::default(),
        Some(r) => {
            expire_every = match r.expire_every.as_deref().map(str::trim) {
                None => Some(std::time::Duration::from_secs(86_400)),
                Some("off") => None,
                Some(text) => match mailkeep_lifecycle::retention::Period::parse(text) {
                    Ok(p) if p.days_only().is_some() => p
                        .days_only()
                        .map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400)),
                    _ => {
                        cx.err(
                            "retention.expire_every",
                            format!(
                                "retention.expire_every: {text:?} is not a number of days or \
                                 weeks like \"1d\" or \"1w\", nor \"off\""
                            ),
                        );
                        None
                    }
                },
            };
            let policies = r
                .policy
                .into_iter()
                .map(|p| RawPolicy {
                    name: p.name,
                    conditions: RawConditions {
                        login: p.login,
                        sender: p.sender,
                        recipient: p.recipient,
                        from: p.from,
                        to: p.to,
                        client: p.client,
                        tag: p.tag,
                        capture: p.capture,
                        size_over: p.size_over,
                    },
                    query: p.query,
                    keep: p.keep,
                })
                .collect();
            match Retention::compile(r.default.as_deref(), r.locked, policies) {
                Ok(ret) => ret,
                Err(errors) => {
                    for e in errors {
                        cx.err("retention", e);
                    }
                    Retention::default()
                }
            }
        }
    };
    let forward = match raw.forward {
        None => {
            if let Some(at) = &uses_forward {
                cx.err(
                    at,
                    "a rule archives to forward:ADDR but there is no [forward] section with a relay",
                );
            }
            None
        }
        Some(f) => forward_settings(cx, f, &hostname, &mut places),
    };
    if let Some((f, _)) = &forward {
        own.push(("forward.spool", f.spool.clone()));
    }
    for (i, (key, dir)) in own.iter().enumerate() {
        for (what, archive, _) in &destinations {
            if let Some(rel) = paths::overlap(dir, archive) {
                cx.err(
                    key,
                    format!(
                        "{key}: {} {rel} {} ({what}): mailkeep's own files must not share a directory with the archive",
                        dir.display(),
                        archive.display()
                    ),
                );
            }
        }
        for (other, odir) in &own[..i] {
            if let Some(rel) = paths::overlap(dir, odir) {
                cx.err(
                    key,
                    format!(
                        "{key}: {} {rel} {other} {}: each needs a directory of its own",
                        dir.display(),
                        odir.display()
                    ),
                );
            }
        }
        if let Some(why) = paths::hijackable(dir) {
            cx.err(key, format!("{key}: {why}"));
        }
    }
    Settings {
        source: cx.source.clone(),
        archiver: Archiver::new(rules, options),
        hostname,
        spool_dir,
        spool_threshold: threshold,
        max_message_size,
        milter,
        filter,
        store,
        audit_log,
        forward,
        retention,
        expire_every,
        users_file,
        web,
        places,
    }
}

/// `[web]` checked; `None` without `listen` (or with errors, which are in
/// `cx`).
fn web_settings(
    cx: &mut Cx<'_>,
    w: RawWeb,
    users_file: Option<PathBuf>,
    has_store: bool,
    places: &mut Vec<Place>,
) -> Option<mailkeep_web::WebSettings> {
    let listen = w.listen.as_deref().map(str::trim)?;
    let tls = tls_pair(cx, places, "web", w.tls_cert, w.tls_key);
    let listen = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                "web.listen",
                format!(
                    "web.listen: {listen:?} is not an address and port like \"127.0.0.1:8025\""
                ),
            );
            None
        }
    };
    if !has_store {
        cx.err(
            "web.listen",
            "web.listen: the web interface reads the store: add a [store] section",
        );
    }
    if let Some(u) = &w.base_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            cx.err(
                "web.base_url",
                format!("web.base_url: {u:?} is not an http:// or https:// URL"),
            );
        }
    }
    let mut trusted = Vec::new();
    for (i, c) in w.trusted_proxies.iter().enumerate() {
        match mailkeep_rules::parse_net(c) {
            Ok(net) => trusted.push(net),
            Err(m) => cx.err(
                &format!("web.trusted_proxies.{i}"),
                format!("web.trusted_proxies: {m}"),
            ),
        }
    }
    let names: Vec<String> = match w.auth {
        OneOrMany::None => vec!["local".into()],
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    let ldap = w.ldap.unwrap_or_default();
    let search_bind = match (&ldap.search_bind_dn, &ldap.search_bind_password_file) {
        (Some(dn), Some(file)) => {
            let key = "web.ldap.search_bind_password_file";
            let file = cx.path(key, key, file.clone());
            match std::fs::read_to_string(&file) {
                Ok(pw) => Some((dn.clone(), pw.trim_end_matches(['\r', '\n']).to_string())),
                Err(e) => {
                    cx.err(key, format!("{key} {}: {e}", file.display()));
                    None
                }
            }
        }
        (None, None) => None,
        _ => {
            cx.err(
                "web.ldap",
                "web.ldap: search_bind_dn and search_bind_password_file go together",
            );
            None
        }
    };
    let mut backends = Vec::new();
    for (i, b) in names.iter().enumerate() {
        let at = if names.len() > 1 {
            format!("web.auth.{i}")
        } else {
            "web.auth".into()
        };
        match mailkeep_web::Backend::parse(b.trim()) {
            Ok(mailkeep_web::Backend::Ldap(mut dir)) => {
                dir.bind_dn = ldap.bind_dn.clone();
                dir.base = ldap.base.clone();
                if let Some(f) = &ldap.filter {
                    dir.filter = f.clone();
                }
                if let Some(a) = &ldap.mail_attributes {
                    dir.mail_attributes = a.clone();
                }
                dir.starttls = ldap.starttls;
                dir.search_bind = search_bind.clone();
                if let Err(m) = dir.check() {
                    cx.err(&at, format!("web.auth: {m}"));
                }
                backends.push(mailkeep_web::Backend::Ldap(dir));
            }
            Ok(b) => backends.push(b),
            Err(m) => cx.err(&at, format!("web.auth: {m}")),
        }
    }
    if backends.is_empty() {
        cx.err("web.auth", "web.auth: at least one login backend is needed");
    }
    for (name, list) in &w.aliases {
        for a in list {
            if !a.contains('@')
                || a.contains('*')
                || a.starts_with('@')
                || a.chars().any(char::is_whitespace)
            {
                cx.err(
                    &format!("web.aliases.{name}"),
                    format!("web.aliases.{name}: {a:?} is not one address"),
                );
            }
        }
    }
    let secs =
        |v: Option<u64>, default: u64| Duration::from_secs(v.filter(|v| *v > 0).unwrap_or(default));
    let max_view_bytes = cx
        .size("web.max_view_size", w.max_view_size.as_ref())
        .unwrap_or(32 << 20);
    let users = mailkeep_web::Users::new(users_file.unwrap_or_else(|| PathBuf::from("users.json")));
    Some(mailkeep_web::WebSettings {
        listen: listen?,
        tls,
        base_url: w.base_url.map(|u| u.trim_end_matches('/').to_string()),
        trusted_proxies: trusted,
        auth: mailkeep_web::Auth {
            backends,
            users,
            auditors: w.auditors,
            admins: w.admins,
            default_domain: w.default_domain.map(|d| d.trim().to_lowercase()),
            aliases: w.aliases,
            timeout: secs(w.login_timeout, 10),
        },
        session_idle: secs(w.session_idle, 30 * 60),
        session_max: secs(w.session_max, 12 * 3600),
        max_view_bytes,
        max_export: w.max_export.filter(|n| *n > 0).unwrap_or(10_000),
    })
}

/// The store's settings and where its audit log is.
fn store_settings(
    cx: &mut Cx<'_>,
    st: RawStore,
    places: &mut Vec<Place>,
) -> (StoreConfig, PathBuf) {
    let path = cx.path("store.path", "store.path", st.path);
    let audit_log = cx
        .opt_path("store.audit_log", st.audit_log)
        .unwrap_or_else(|| path.join("audit.log"));
    places.push(Place {
        what: "store.path".into(),
        path: path.clone(),
        need: Need::Store,
        line: cx.line("store.path"),
    });
    let mut cfg = StoreConfig::new(path);
    cfg.encryption_key_file = cx.opt_path("store.encryption_key_file", st.encryption_key_file);
    cfg.old_key_files = st
        .old_key_files
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            cx.path(
                "store.old_key_files",
                &format!("store.old_key_files.{i}"),
                p,
            )
        })
        .collect();
    cfg.signing_key_file = cx.opt_path("store.signing_key_file", st.signing_key_file);
    let keys = [
        ("store.encryption_key_file", cfg.encryption_key_file.clone()),
        ("store.signing_key_file", cfg.signing_key_file.clone()),
    ];
    let old = cfg
        .old_key_files
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("store.old_key_files.{i}"), Some(p.clone())));
    for (key, p) in keys.into_iter().map(|(k, p)| (k.to_string(), p)).chain(old) {
        if let Some(p) = p {
            places.push(Place {
                what: key.clone(),
                path: p,
                need: Need::Read,
                line: cx.line(&key),
            });
        }
    }
    if let Some(level) = st.compression_level {
        if (1..=19).contains(&level) {
            cfg.compression_level = level;
        } else {
            cx.err(
                "store.compression_level",
                format!("store.compression_level: {level} is not 1..19"),
            );
        }
    }
    if let Some(bytes) = cx.size("store.segment_size", st.segment_size.as_ref()) {
        if bytes < 1 << 20 {
            cx.err("store.segment_size", "store.segment_size: at least 1M");
        } else {
            cfg.segment_size = bytes;
        }
    }
    if let Some(name) = st.group {
        match nix::unistd::Group::from_name(&name) {
            Ok(Some(g)) => cfg.group = Some(g.gid.as_raw()),
            _ => match name.parse::<u32>() {
                Ok(gid) => cfg.group = Some(gid),
                Err(_) => cx.err("store.group", format!("store.group: no group {name:?}")),
            },
        }
    }
    (cfg, audit_log)
}

fn milter_settings(
    cx: &mut Cx<'_>,
    m: RawMilter,
    default_max: Option<u64>,
) -> Option<MilterSettings> {
    let listen = ListenSpec::parse(&m.listen)
        .map_err(|e| cx.err("milter.listen", format!("milter.listen: {e}")))
        .ok();
    let mode = m.socket_mode.and_then(|s| {
        let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777);
        if mode.is_none() {
            cx.err(
                "milter.socket_mode",
                format!("milter.socket_mode: {s:?} is not an octal mode like \"0660\""),
            );
        }
        mode
    });
    let uid = m
        .socket_owner
        .and_then(|name| match nix::unistd::User::from_name(&name) {
            Ok(Some(u)) => Some(u.uid.as_raw()),
            _ => {
                cx.err(
                    "milter.socket_owner",
                    format!("milter.socket_owner: no user {name:?}"),
                );
                None
            }
        });
    let gid = m
        .socket_group
        .and_then(|name| match nix::unistd::Group::from_name(&name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            _ => {
                cx.err(
                    "milter.socket_group",
                    format!("milter.socket_group: no group {name:?}"),
                );
                None
            }
        });
    let max_message_size = match &m.max_message_size {
        Some(s) => cx
            .size("milter.max_message_size", Some(s))
            .filter(|b| *b > 0),
        None => default_max,
    };
    Some(MilterSettings {
        listen: listen?,
        access: SocketAccess { mode, uid, gid },
        on_failure: m.on_failure,
        add_header: m.add_header,
        limits: Limits {
            max_connections: m.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
            timeout: m
                .timeout
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TIMEOUT),
        },
        max_message_size,
        no_archive: m.no_archive,
    })
}

/// `SECTION.tls_cert` and `SECTION.tls_key` checked together and loaded (a
/// certificate chain and its key, PEM); `None` when neither is set.
fn tls_pair(
    cx: &mut Cx<'_>,
    places: &mut Vec<Place>,
    section: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Option<std::sync::Arc<rustls::ServerConfig>> {
    let (cert_at, key_at) = (format!("{section}.tls_cert"), format!("{section}.tls_key"));
    let cert = cx.opt_path(&cert_at, cert);
    let key = cx.opt_path(&key_at, key);
    match (&cert, &key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            for (what, p) in [(&cert_at, cert), (&key_at, key)] {
                places.push(Place {
                    what: what.clone(),
                    path: p.clone(),
                    need: Need::Read,
                    line: cx.line(what),
                });
            }
            match mailkeep_capture::filter::tls::server_config(cert, key) {
                Ok(c) => Some(c),
                Err(e) => {
                    cx.err(&cert_at, format!("{section}.tls_cert/tls_key: {e}"));
                    None
                }
            }
        }
        (Some(_), None) => {
            cx.err(
                &cert_at,
                format!("{section}: tls_cert and tls_key go together"),
            );
            None
        }
        (None, Some(_)) => {
            cx.err(
                &key_at,
                format!("{section}: tls_cert and tls_key go together"),
            );
            None
        }
    }
}

fn filter_settings(
    cx: &mut Cx<'_>,
    f: RawFilter,
    default_max: Option<u64>,
    places: &mut Vec<Place>,
) -> Option<FilterSettings> {
    let spec = &f.listen;
    let spec = if spec.contains(':') && !spec.starts_with("inet") && !spec.starts_with("unix") {
        format!("inet:{spec}")
    } else {
        spec.clone()
    };
    let listen = match ListenSpec::parse(&spec) {
        Ok(ListenSpec::Unix(_)) => {
            cx.err(
                "filter.listen",
                "filter.listen: the SMTP filter listens on TCP (HOST:PORT)",
            );
            None
        }
        Ok(l) => Some(l),
        Err(e) => {
            cx.err("filter.listen", format!("filter.listen: {e}"));
            None
        }
    };
    let mut allowed = Vec::new();
    for (i, c) in f.allowed_clients.iter().enumerate() {
        match mailkeep_rules::parse_net(c) {
            Ok(net) => allowed.push(net),
            Err(m) => cx.err(
                &format!("filter.allowed_clients.{i}"),
                format!("filter.allowed_clients: {m}"),
            ),
        }
    }
    let max_message_size = match &f.max_message_size {
        Some(s) => cx
            .size("filter.max_message_size", Some(s))
            .filter(|b| *b > 0),
        None => default_max,
    };
    let tls = tls_pair(cx, places, "filter", f.tls_cert, f.tls_key);
    let dedup_dir = match f.dedup_dir {
        Some(d) => cx.path("filter.dedup_dir", "filter.dedup_dir", d),
        None => PathBuf::from(DEFAULT_DEDUP_DIR),
    };
    places.push(Place {
        what: "filter.dedup_dir".into(),
        path: dedup_dir.clone(),
        need: Need::Dir,
        line: cx.line("filter.dedup_dir"),
    });
    let secs = |v: Option<u64>, d: u64| Duration::from_secs(v.unwrap_or(d));
    Some(FilterSettings {
        listen: listen?,
        relay: f.relay.filter(|r| !r.is_empty()),
        allowed_clients: allowed,
        on_failure: f.on_failure,
        max_connections: f.max_connections.unwrap_or(100).max(1),
        max_recipients: f.max_recipients.unwrap_or(1000).max(1),
        max_message_size,
        command_timeout: secs(f.command_timeout, 300),
        data_timeout: secs(f.data_timeout, 300),
        data_done_timeout: secs(f.data_done_timeout, 600),
        dedup_dir,
        tls,
        no_archive: f.no_archive,
    })
}

fn forward_settings(
    cx: &mut Cx<'_>,
    f: RawForward,
    hostname: &str,
    places: &mut Vec<Place>,
) -> Option<(ForwardConfig, PathBuf)> {
    use mailkeep_destinations::forward::smtp::{RelayConfig, TlsMode};
    let relay = f.relay;
    let mut ok = true;
    if relay
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        cx.err(
            "forward.relay",
            format!("forward.relay: {relay:?} is not HOST:PORT"),
        );
        ok = false;
    }
    let tls = match f.tls.as_deref().unwrap_or("may") {
        "may" => TlsMode::Opportunistic,
        "encrypt" => TlsMode::Required,
        "none" => TlsMode::Off,
        other => {
            cx.err(
                "forward.tls",
                format!("forward.tls: {other:?} is not one of may, encrypt, none"),
            );
            ok = false;
            TlsMode::Off
        }
    };
    let password_file = cx.opt_path("forward.auth_password_file", f.auth_password_file);
    let auth = match (f.auth_user, password_file) {
        (None, None) => None,
        (Some(u), Some(p)) => match std::fs::read_to_string(&p) {
            Ok(pass) => {
                places.push(Place {
                    what: "forward.auth_password_file".into(),
                    path: p,
                    need: Need::Read,
                    line: cx.line("forward.auth_password_file"),
                });
                Some((u, pass.trim_end_matches(['\r', '\n']).to_string()))
            }
            Err(e) => {
                cx.err(
                    "forward.auth_password_file",
                    format!("forward.auth_password_file {}: {e}", p.display()),
                );
                None
            }
        },
        (user, _) => {
            let at = if user.is_some() {
                "forward.auth_user"
            } else {
                "forward.auth_password_file"
            };
            cx.err(at, "forward: auth_user and auth_password_file go together");
            None
        }
    };
    let sender = match f.sender.as_deref().unwrap_or("original") {
        "original" => forward::CopySender::Original,
        "null" | "<>" => forward::CopySender::Null,
        other => {
            cx.err(
                "forward.sender",
                format!("forward.sender: {other:?} is not \"original\" or \"null\""),
            );
            forward::CopySender::Original
        }
    };
    let spool = cx.path("forward.spool", "forward.spool", f.spool);
    places.push(Place {
        what: "forward.spool".into(),
        path: spool.clone(),
        need: Need::Dir,
        line: cx.line("forward.spool"),
    });
    let key_file = match f.marker_key_file {
        Some(k) => cx.path("forward.marker_key_file", "forward.marker_key_file", k),
        None => spool.join("marker.key"),
    };
    places.push(Place {
        what: "forward.marker_key_file".into(),
        path: key_file.clone(),
        need: Need::ReadOrCreate,
        line: cx.line("forward.marker_key_file"),
    });
    let relay = RelayConfig {
        addr: relay,
        helo: hostname.to_string(),
        tls,
        tls_verify: f.tls_verify,
        auth,
        timeout: Duration::from_secs(f.timeout.unwrap_or(60)),
    };
    if ok {
        if let Err(m) = relay.check() {
            cx.err("forward.relay", format!("forward: {m}"));
        }
    }
    Some((
        ForwardConfig {
            relay,
            spool,
            sender,
            trust_archive_header: f.trust_archive_header,
            retry_base: f
                .retry_base
                .map(Duration::from_secs)
                .unwrap_or(forward::DEFAULT_RETRY_BASE),
            max_age: f
                .max_age
                .map(Duration::from_secs)
                .unwrap_or(forward::DEFAULT_MAX_AGE),
            marker_key: [0; 32],
        },
        key_file,
    ))
}

/// Loads `--config FILE`, or the default path, or the embedded default
/// when no path was given and the default path does not exist.
pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigErrors> {
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

    fn errors(text: &str) -> Vec<String> {
        parse(text, Source::File("m.toml".into()))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn embedded_default_loads() {
        let s = parse(EMBEDDED_DEFAULT, Source::Embedded).unwrap();
        assert_eq!(s.archiver.rules().rules().len(), 1);
        // Its relative paths are the current directory's.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(s.store.unwrap().path, cwd.join("mailkeep-data/store"));
        assert_eq!(s.spool_dir, cwd.join("mailkeep-data/spool"));
        let m = s.milter.expect("the default listens for the milter");
        assert_eq!(m.listen.to_string(), "inet:127.0.0.1:8894");
        assert_eq!(m.on_failure, FailurePolicy::Tempfail);
    }

    #[test]
    fn milter_section() {
        let text = "[milter]\nlisten = \"unix:/run/m.sock\"\nsocket_mode = \"0660\"\nsocket_owner = \"root\"\non_failure = \"accept\"\nadd_header = true\nmax_connections = 8\ntimeout = 30\nmax_message_size = \"10M\"\n";
        let m = parse(text, Source::Embedded).unwrap().milter.unwrap();
        assert_eq!(
            m.access,
            SocketAccess {
                mode: Some(0o660),
                uid: Some(0),
                gid: None
            }
        );
        assert_eq!(m.on_failure, FailurePolicy::Accept);
        assert!(m.add_header);
        assert_eq!(m.limits.max_connections, 8);
        assert_eq!(m.max_message_size, Some(10 << 20));
        let e = &parse("[milter]\nlisten = \"tcp:1:2\"\n", Source::Embedded)
            .unwrap_err()
            .0[0];
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse(
            "[milter]\nlisten = \"inet:127.0.0.1:1\"\non_failure = \"drop\"\n",
            Source::Embedded,
        )
        .unwrap_err();
        assert!(e.0[0].message.contains("drop"), "{e}");
        let e = errors("[milter]\nlisten = \"unix:/x\"\nsocket_owner = \"no-such-user-xyz\"\n");
        assert_eq!(
            e,
            ["m.toml:3: milter.socket_owner: no user \"no-such-user-xyz\""]
        );
    }

    #[test]
    fn errors_carry_the_line_of_the_value() {
        let text = "[[rule]]\nname = \"ok\"\narchive = \"mbox:/a\"\n\n[[rule]]\nname = \"bad\"\narchive = \"mbox:/a/../{login}\"\n";
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("m.toml:7: rule 2 (bad): archive:"),
            "{e:?}"
        );
        let e = &parse("[[rule]]\nnope = 1\n", Source::Embedded)
            .unwrap_err()
            .0;
        assert_eq!(e[0].line, Some(2), "{e:?}");
        let e = &parse("[[rule]\n", Source::Embedded).unwrap_err().0;
        assert_eq!(e[0].line, Some(1), "{e:?}");
    }

    #[test]
    fn every_error_in_one_pass_in_line_order() {
        let text = "[spool]\n\
                    threshold = \"lots\"\n\
                    [filter]\n\
                    listen = \"127.0.0.1:1\"\n\
                    allowed_clients = [\n  \"127.0.0.0/8\",\n  \"10.0.0.0/33\",\n  \"999.1.1.1\",\n]\n\
                    dedup_dir = \"relative/dedup\"\n\
                    [[rule]]\n\
                    client = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n\
                    archive = [\n  \"mbox:/a/all.mbox\",\n  \"maildir:b/{login}\",\n]\n\
                    [[rule]]\n\
                    archive = \"store\"\n";
        let e = errors(text);
        assert_eq!(
            e,
            [
                "m.toml:2: spool.threshold: \"lots\" is not a size like 10M",
                "m.toml:7: filter.allowed_clients: \"10.0.0.0/33\" is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)",
                "m.toml:8: filter.allowed_clients: \"999.1.1.1\" is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)",
                "m.toml:10: filter.dedup_dir: \"relative/dedup\" must be an absolute path",
                "m.toml:12: rule 1 (rule 1): client: \"10.0.0.0/33\" is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)",
                "m.toml:15: rule 1 (rule 1): archive: \"maildir:b/{login}\": the path must be absolute (start with /)",
                "m.toml:18: a rule archives to \"store\" but there is no [store] section with a path",
            ]
        );
    }

    #[test]
    fn own_directories_default_to_var_lib_mailkeep() {
        let s = parse(
            "[filter]\nlisten = \"127.0.0.1:1\"\n",
            Source::File("m.toml".into()),
        )
        .unwrap();
        assert_eq!(s.spool_dir, Path::new(DEFAULT_SPOOL_DIR));
        assert_eq!(s.filter.unwrap().dedup_dir, Path::new(DEFAULT_DEDUP_DIR));
        for d in [DEFAULT_SPOOL_DIR, DEFAULT_DEDUP_DIR] {
            assert!(d.starts_with("/var/lib/mailkeep/"), "{d}");
        }
    }

    #[test]
    fn own_directories_may_not_overlap_the_archive_or_each_other() {
        let text = "[spool]\n\
                    dir = \"/var/archive/spool\"\n\
                    [filter]\n\
                    listen = \"127.0.0.1:1\"\n\
                    dedup_dir = \"/var/archive\"\n\
                    [store]\n\
                    path = \"/var/lib/mailkeep/store\"\n\
                    [forward]\n\
                    relay = \"127.0.0.1:25\"\n\
                    spool = \"/var/lib/mailkeep\"\n\
                    [[rule]]\n\
                    name = \"all\"\n\
                    archive = [\"maildir:/var/archive/{login}\", \"store\"]\n";
        let e = errors(text);
        assert_eq!(
            e,
            [
                "m.toml:2: spool.dir: /var/archive/spool is inside /var/archive (rule 1 (all): \"maildir:/var/archive/{login}\"): mailkeep's own files must not share a directory with the archive",
                "m.toml:5: filter.dedup_dir: /var/archive is /var/archive (rule 1 (all): \"maildir:/var/archive/{login}\"): mailkeep's own files must not share a directory with the archive",
                "m.toml:5: filter.dedup_dir: /var/archive contains spool.dir /var/archive/spool: each needs a directory of its own",
                "m.toml:10: forward.spool: /var/lib/mailkeep contains /var/lib/mailkeep/store (store.path): mailkeep's own files must not share a directory with the archive",
            ]
        );
        // A fixed mbox is a file: a directory beside it is fine, its own is not.
        let ok = "[filter]\nlisten = \"127.0.0.1:1\"\ndedup_dir = \"/var/archive/dedup\"\n[[rule]]\narchive = \"mbox:/var/archive/all.mbox\"\n";
        assert!(parse(ok, Source::File("m.toml".into())).is_ok());
        let bad = ok.replace("/var/archive/dedup", "/var/archive");
        assert!(errors(&bad)[0].starts_with(
            "m.toml:3: filter.dedup_dir: /var/archive contains /var/archive/all.mbox"
        ));
    }

    #[test]
    fn own_directories_may_not_be_creatable_by_other_users() {
        let e = errors("[spool]\ndir = \"/tmp/mailkeep-spool-never-made\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("m.toml:2: spool.dir: /tmp/mailkeep-spool-never-made does not exist and would be created in /tmp, which every local user can write"),
            "{e:?}"
        );
    }
}
