//! The configuration file in two layers: the TOML as written
//! ([`RawConfig`]) and the validated runtime settings ([`Settings`]).
//! Every error names the file and line it comes from.

use ipnet::IpNet;
use mailkeep_capture::listen::{ListenSpec, SocketAccess};
use mailkeep_capture::milter::{Limits, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT};
use mailkeep_capture::policy::FailurePolicy;
use mailkeep_destinations::forward::{self, ForwardConfig};
use mailkeep_destinations::{ArchiveOptions, Archiver};
use mailkeep_envelope::DEFAULT_SPOOL_THRESHOLD;
use mailkeep_rules::{DestKind, RawRule, RuleSet, Size};
use mailkeep_store::{Store, StoreConfig};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: toml::Spanned<PathBuf>,
    encryption_key_file: Option<PathBuf>,
    #[serde(default)]
    old_key_files: Vec<PathBuf>,
    signing_key_file: Option<PathBuf>,
    compression_level: Option<i32>,
    segment_size: Option<Size>,
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
    listen: toml::Spanned<String>,
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
    listen: toml::Spanned<String>,
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
    relay: toml::Spanned<String>,
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
    rule: Vec<toml::Spanned<RawRule>>,
    milter: Option<RawMilter>,
    filter: Option<RawFilter>,
    store: Option<RawStore>,
    forward: Option<RawForward>,
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
    /// The milter listener, when configured.
    pub milter: Option<MilterSettings>,
    /// The SMTP filter listener, when configured.
    pub filter: Option<FilterSettings>,
    /// The native store, when configured.
    pub store: Option<StoreConfig>,
    /// Archive copies as email, when configured (the marker key is loaded
    /// by [`Settings::attach_store`]).
    pub forward: Option<(ForwardConfig, PathBuf)>,
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

    /// Opens the configured store for the query commands.
    pub fn open_store(&self) -> Result<Store, String> {
        let cfg = self
            .store
            .clone()
            .ok_or_else(|| format!("{}: there is no [store] section", self.source))?;
        Store::open_existing(cfg, false).map_err(|e| mailkeep_capture::error_chain(&e))
    }
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
        // The first error; config errors are reported one at a time.
        let e = e.into_iter().next().expect("compile failed with an error");
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
        store: None,
        forward: None,
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
    let milter = match raw.milter {
        None => None,
        Some(m) => {
            Some(milter_settings(m, text, max_message_size).map_err(|(line, msg)| err(line, msg))?)
        }
    };
    let spool_dir = raw.spool.dir.unwrap_or_else(std::env::temp_dir);
    let filter = match raw.filter {
        None => None,
        Some(f) => Some(
            filter_settings(f, text, max_message_size, &spool_dir)
                .map_err(|(line, msg)| err(line, msg))?,
        ),
    };
    let store = match raw.store {
        None => {
            if rules.uses(DestKind::Store) {
                return Err(err(
                    None,
                    "a rule archives to \"store\" but there is no [store] section with a path"
                        .into(),
                ));
            }
            None
        }
        Some(st) => {
            let line = Some(line_of(text, st.path.span().start));
            let mut cfg = StoreConfig::new(st.path.into_inner());
            cfg.encryption_key_file = st.encryption_key_file;
            cfg.old_key_files = st.old_key_files;
            cfg.signing_key_file = st.signing_key_file;
            if let Some(level) = st.compression_level {
                if !(1..=19).contains(&level) {
                    return Err(err(
                        line,
                        format!("store.compression_level: {level} is not 1..19"),
                    ));
                }
                cfg.compression_level = level;
            }
            if let Some(size) = st.segment_size {
                let bytes = size
                    .bytes()
                    .map_err(|m| err(line, format!("store.segment_size: {m}")))?;
                if bytes < 1 << 20 {
                    return Err(err(line, "store.segment_size: at least 1M".into()));
                }
                cfg.segment_size = bytes;
            }
            Some(cfg)
        }
    };
    let forward = match raw.forward {
        None => {
            if rules.uses(DestKind::Forward) {
                return Err(err(
                    None,
                    "a rule archives to forward:ADDR but there is no [forward] section with a relay"
                        .into(),
                ));
            }
            None
        }
        Some(f) => Some(forward_settings(f, text, &hostname).map_err(|(l, m)| err(l, m))?),
    };
    Ok(Settings {
        source,
        archiver: Archiver::new(rules, options),
        hostname,
        spool_dir,
        spool_threshold: threshold,
        max_message_size,
        milter,
        filter,
        store,
        forward,
    })
}

fn milter_settings(
    m: RawMilter,
    text: &str,
    default_max: Option<u64>,
) -> Result<MilterSettings, (Option<usize>, String)> {
    let line = Some(line_of(text, m.listen.span().start));
    let listen =
        ListenSpec::parse(m.listen.get_ref()).map_err(|e| (line, format!("milter.listen: {e}")))?;
    let mode = m
        .socket_mode
        .map(|s| {
            u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or((
                    line,
                    format!("milter.socket_mode: {s:?} is not an octal mode like \"0660\""),
                ))
        })
        .transpose()?;
    let uid = m
        .socket_owner
        .map(|name| match nix::unistd::User::from_name(&name) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            _ => Err((line, format!("milter.socket_owner: no user {name:?}"))),
        })
        .transpose()?;
    let gid = m
        .socket_group
        .map(|name| match nix::unistd::Group::from_name(&name) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            _ => Err((line, format!("milter.socket_group: no group {name:?}"))),
        })
        .transpose()?;
    let max_message_size = match m.max_message_size {
        Some(s) => Some(
            s.bytes()
                .map_err(|e| (line, format!("milter.max_message_size: {e}")))?,
        )
        .filter(|b| *b > 0),
        None => default_max,
    };
    Ok(MilterSettings {
        listen,
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

fn filter_settings(
    f: RawFilter,
    text: &str,
    default_max: Option<u64>,
    spool_dir: &Path,
) -> Result<FilterSettings, (Option<usize>, String)> {
    let line = Some(line_of(text, f.listen.span().start));
    let spec = f.listen.get_ref();
    let spec = if spec.contains(':') && !spec.starts_with("inet") && !spec.starts_with("unix") {
        format!("inet:{spec}")
    } else {
        spec.clone()
    };
    let listen = ListenSpec::parse(&spec).map_err(|e| (line, format!("filter.listen: {e}")))?;
    if matches!(listen, ListenSpec::Unix(_)) {
        return Err((
            line,
            "filter.listen: the SMTP filter listens on TCP (HOST:PORT)".into(),
        ));
    }
    let mut allowed = Vec::new();
    for c in &f.allowed_clients {
        let net = c
            .parse::<IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                (
                    line,
                    format!("filter.allowed_clients: {c:?} is not an address or CIDR"),
                )
            })?;
        allowed.push(net);
    }
    let max_message_size = match f.max_message_size {
        Some(s) => Some(
            s.bytes()
                .map_err(|e| (line, format!("filter.max_message_size: {e}")))?,
        )
        .filter(|b| *b > 0),
        None => default_max,
    };
    let tls = match (&f.tls_cert, &f.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(
            mailkeep_capture::filter::tls::server_config(cert, key)
                .map_err(|e| (line, format!("filter.tls_cert/tls_key: {e}")))?,
        ),
        _ => return Err((line, "filter: tls_cert and tls_key go together".into())),
    };
    let secs = |v: Option<u64>, d: u64| Duration::from_secs(v.unwrap_or(d));
    Ok(FilterSettings {
        listen,
        relay: f.relay.filter(|r| !r.is_empty()),
        allowed_clients: allowed,
        on_failure: f.on_failure,
        max_connections: f.max_connections.unwrap_or(100).max(1),
        max_recipients: f.max_recipients.unwrap_or(1000).max(1),
        max_message_size,
        command_timeout: secs(f.command_timeout, 300),
        data_timeout: secs(f.data_timeout, 300),
        data_done_timeout: secs(f.data_done_timeout, 600),
        dedup_dir: f
            .dedup_dir
            .unwrap_or_else(|| spool_dir.join("mailkeep-filter-dedup")),
        tls,
        no_archive: f.no_archive,
    })
}

fn forward_settings(
    f: RawForward,
    text: &str,
    hostname: &str,
) -> Result<(ForwardConfig, PathBuf), (Option<usize>, String)> {
    use mailkeep_destinations::forward::smtp::{RelayConfig, TlsMode};
    let line = Some(line_of(text, f.relay.span().start));
    let relay = f.relay.into_inner();
    if relay
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err((line, format!("forward.relay: {relay:?} is not HOST:PORT")));
    }
    let tls = match f.tls.as_deref().unwrap_or("may") {
        "may" => TlsMode::Opportunistic,
        "encrypt" => TlsMode::Required,
        "none" => TlsMode::Off,
        other => {
            return Err((
                line,
                format!("forward.tls: {other:?} is not one of may, encrypt, none"),
            ))
        }
    };
    let auth = match (f.auth_user, f.auth_password_file) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            let pass = std::fs::read_to_string(&p).map_err(|e| {
                (
                    line,
                    format!("forward.auth_password_file {}: {e}", p.display()),
                )
            })?;
            Some((u, pass.trim_end_matches(['\r', '\n']).to_string()))
        }
        _ => {
            return Err((
                line,
                "forward: auth_user and auth_password_file go together".into(),
            ))
        }
    };
    let sender = match f.sender.as_deref().unwrap_or("original") {
        "original" => forward::CopySender::Original,
        "null" | "<>" => forward::CopySender::Null,
        other => {
            return Err((
                line,
                format!("forward.sender: {other:?} is not \"original\" or \"null\""),
            ))
        }
    };
    let key_file = f
        .marker_key_file
        .unwrap_or_else(|| f.spool.join("marker.key"));
    let relay = RelayConfig {
        addr: relay,
        helo: hostname.to_string(),
        tls,
        tls_verify: f.tls_verify,
        auth,
        timeout: Duration::from_secs(f.timeout.unwrap_or(60)),
    };
    relay.check().map_err(|m| (line, format!("forward: {m}")))?;
    Ok((
        ForwardConfig {
            relay,
            spool: f.spool,
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
        let e = parse("[milter]\nlisten = \"tcp:1:2\"\n", Source::Embedded).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse(
            "[milter]\nlisten = \"inet:127.0.0.1:1\"\non_failure = \"drop\"\n",
            Source::Embedded,
        )
        .unwrap_err();
        assert!(e.message.contains("drop"), "{e}");
        let e = parse(
            "[milter]\nlisten = \"unix:/x\"\nsocket_owner = \"no-such-user-xyz\"\n",
            Source::Embedded,
        )
        .unwrap_err();
        assert!(e.message.contains("no user"), "{e}");
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
