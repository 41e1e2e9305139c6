//! Rule matching and the per-recipient decision procedure.
//!
//! Rules are tried in order against the recipients not yet decided. A
//! message-level rule (the default) matches the message as a whole and,
//! unless it says `continue = true`, decides every remaining recipient. A
//! `per_recipient = true` rule is tested once per remaining recipient, so
//! one multi-recipient transaction can be filed in a different place for
//! each recipient; it decides only the recipients it matched. Evaluation
//! stops when no recipient is left undecided. A message with no envelope
//! recipients (a `mailbox_command` run without `--recipient`) is decided by
//! message-level rules only.

use crate::glob::Glob;
use crate::headers::HeaderInfo;
use crate::template::{Template, TemplateError, Values};
use chrono::{Datelike, Local};
use ipnet::IpNet;
use mailkeep_envelope::{CapturePath, Envelope};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A string or a list of strings in the configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `key = "value"`.
    One(String),
    /// `key = ["a", "b"]`.
    Many(Vec<String>),
    /// Absent.
    #[default]
    #[serde(skip)]
    None,
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
            OneOrMany::None => Vec::new(),
        }
    }

    /// Each value with its position in the list (`None` for a single
    /// string), for errors that point at one element.
    pub fn items(&self) -> Vec<(Option<usize>, &str)> {
        match self {
            OneOrMany::One(s) => vec![(None, s.as_str())],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (Some(i), s.as_str()))
                .collect(),
            OneOrMany::None => Vec::new(),
        }
    }
}

/// A size as a number of bytes or a string such as `"10M"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// `"512k"`, `"10M"`, `"1G"` (powers of 1024), or a plain number.
    Text(String),
}

impl Size {
    /// The size in bytes, or why the text is not a size.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => parse_size(t).ok_or_else(|| format!("{t:?} is not a size like 10M")),
        }
    }
}

/// Parses `123`, `512k`, `10M`, `1G` (binary multiples, optional `B`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let (num, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1u64 << 10),
        'm' | 'M' => (&t[..t.len() - 1], 1 << 20),
        'g' | 'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// One `[[rule]]` table as written in the configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Shown in logs and `rules test`; defaults to `rule N`.
    pub name: Option<String>,
    /// SASL login globs; a message without a login never matches.
    #[serde(default)]
    pub login: OneOrMany,
    /// Envelope sender globs; `<>` is the null sender.
    #[serde(default)]
    pub sender: OneOrMany,
    /// Envelope recipient globs.
    #[serde(default)]
    pub recipient: OneOrMany,
    /// `From:` header address globs.
    #[serde(default)]
    pub from: OneOrMany,
    /// `To:` and `Cc:` header address globs.
    #[serde(default)]
    pub to: OneOrMany,
    /// Client CIDRs (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.1`) or host name globs.
    #[serde(default)]
    pub client: OneOrMany,
    /// Tags given by the capture path (`mailkeep pipe --tag`).
    #[serde(default)]
    pub tag: OneOrMany,
    /// Capture paths: `milter`, `filter`, `pipe`, `import`.
    #[serde(default)]
    pub capture: OneOrMany,
    /// Matches messages strictly larger than this.
    pub size_over: Option<Size>,
    /// Matching messages are not archived.
    #[serde(default)]
    pub skip: bool,
    /// Destinations: `mbox:PATH`, `maildir:PATH`, `eml:DIR`.
    #[serde(default)]
    pub archive: OneOrMany,
    /// Evaluate once per envelope recipient.
    #[serde(default)]
    pub per_recipient: bool,
    /// Keep trying later rules after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Prepend the envelope headers to copies this rule writes (default:
    /// the global `envelope_headers`).
    pub envelope_headers: Option<bool>,
}

/// A rule that failed to compile, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {} ({name}): {field}: {message}", index + 1)]
pub struct RuleError {
    /// Zero-based position in the rule list.
    pub index: usize,
    /// The rule's name.
    pub name: String,
    /// The offending key.
    pub field: &'static str,
    /// Zero-based position of the offending value when the key holds a
    /// list; `None` for a single value or the key as a whole.
    pub item: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// The file formats a destination can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DestKind {
    /// mboxrd file with fcntl + dotlock locking.
    Mbox,
    /// Maildir (`tmp/` → `new/`).
    Maildir,
    /// One `.eml` file per message under `DIR/YYYY/MM/DD/`.
    Eml,
    /// The native store configured in `[store]` (`archive = ["store"]`).
    Store,
    /// An archive copy as email to an address, through `[forward] relay`
    /// (`archive = ["forward:archive@example.com"]`); the delivery's
    /// "path" is the address.
    Forward,
}

impl DestKind {
    /// The prefix used in `archive = ["KIND:PATH"]`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestKind::Mbox => "mbox",
            DestKind::Maildir => "maildir",
            DestKind::Eml => "eml",
            DestKind::Store => "store",
            DestKind::Forward => "forward",
        }
    }
}

impl fmt::Display for DestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination as configured: a kind and a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestSpec {
    /// The file format.
    pub kind: DestKind,
    /// Where, with placeholders.
    pub template: Template,
}

impl DestSpec {
    /// Parses `mbox:PATH`, `maildir:PATH`, `eml:DIR` or `store`.
    pub fn parse(spec: &str) -> Result<DestSpec, String> {
        if spec == "store" {
            // One store per configuration, at `[store] path`; the delivery
            // path is only its name.
            let template = Template::parse("store").map_err(|e| format!("{spec:?}: {e}"))?;
            return Ok(DestSpec {
                kind: DestKind::Store,
                template,
            });
        }
        if let Some(addr) = spec.strip_prefix("forward:") {
            let ok = addr
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !addr
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || "<>/\\,;\"".contains(c));
            if !ok {
                return Err(format!(
                    "{spec:?}: forward needs one plain address, like forward:archive@example.com"
                ));
            }
            let template = Template::parse(addr).map_err(|e| format!("{spec:?}: {e}"))?;
            return Ok(DestSpec {
                kind: DestKind::Forward,
                template,
            });
        }
        let (kind, path) = spec.split_once(':').ok_or_else(|| {
            format!("{spec:?}: expected store, or KIND:PATH with KIND one of mbox, maildir, eml")
        })?;
        let kind = match kind {
            "mbox" => DestKind::Mbox,
            "maildir" => DestKind::Maildir,
            "eml" => DestKind::Eml,
            other => {
                return Err(format!(
                "{spec:?}: unknown destination kind {other:?} (known: mbox, maildir, eml, store)"
            ))
            }
        };
        let template = Template::parse(path).map_err(|e| format!("{spec:?}: {e}"))?;
        // A relative path would depend on the directory each capture path
        // happens to start in (Postfix's pipe(8), a shell, systemd).
        if !Path::new(path).is_absolute() {
            return Err(format!(
                "{spec:?}: the path must be absolute (start with /)"
            ));
        }
        Ok(DestSpec { kind, template })
    }
}

#[derive(Debug, Clone)]
enum ClientPattern {
    Net(IpNet),
    Host(Glob),
}

/// Parses an address (`192.0.2.1`, `2001:db8::1`) or a CIDR
/// (`10.0.0.0/8`, `2001:db8::/32`). A CIDR with bits set after its
/// prefix (`10.0.0.1/8`) is refused: it names the same network as the
/// truncated form, so it is most likely a typo for something else.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        if net.addr() != net.network() {
            return Err(format!(
                "{s:?} has address bits set after the /{}; the network is {}",
                net.prefix_len(),
                net.trunc()
            ));
        }
        return Ok(net);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{s:?} is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)"
    ))
}

impl ClientPattern {
    /// An address or CIDR, or else a glob on the host name. What looks like
    /// an address (only digits and dots, or a `:` or `/`, which no host
    /// name has) must be one: `999.1.1.1` or `10.0.0.*` as a host glob
    /// would silently match nothing.
    fn parse(s: &str) -> Result<ClientPattern, String> {
        let numeric = s.chars().any(|c| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '*');
        if s.contains([':', '/']) || numeric {
            if s.contains('*') {
                return Err(format!(
                    "{s:?}: addresses are matched with a CIDR such as 10.0.0.0/24, not a glob (globs match host names)"
                ));
            }
            return parse_net(s).map(ClientPattern::Net);
        }
        let host_char = |c: char| c.is_ascii_alphanumeric() || "-._*".contains(c);
        if s.is_empty() || !s.chars().all(host_char) {
            return Err(format!(
                "{s:?} is neither an IP address, a CIDR nor a host name glob (like *.example.com)"
            ));
        }
        Ok(ClientPattern::Host(Glob::new(s)))
    }

    fn matches(&self, env: &Envelope) -> bool {
        match self {
            ClientPattern::Net(net) => env
                .client
                .address
                .as_deref()
                .and_then(mailkeep_envelope::client_ip)
                .is_some_and(|ip| net.contains(&ip)),
            ClientPattern::Host(g) => env.client.hostname.as_deref().is_some_and(|h| g.matches(h)),
        }
    }
}

#[derive(Debug, Clone)]
enum Action {
    Skip,
    Archive(Vec<DestSpec>),
}

/// The match keys of a rule or a retention policy, as written: each key
/// takes one value or a list (any of them), and all the keys given must
/// match.
#[derive(Debug, Clone, Default)]
pub struct RawConditions {
    /// SASL login globs.
    pub login: OneOrMany,
    /// Envelope sender globs; `<>` is the null sender.
    pub sender: OneOrMany,
    /// Envelope recipient globs.
    pub recipient: OneOrMany,
    /// `From:` header address globs.
    pub from: OneOrMany,
    /// `To:` and `Cc:` header address globs.
    pub to: OneOrMany,
    /// Client CIDRs or host name globs.
    pub client: OneOrMany,
    /// Tag globs.
    pub tag: OneOrMany,
    /// Capture paths.
    pub capture: OneOrMany,
    /// Messages strictly larger than this.
    pub size_over: Option<Size>,
}

/// Compiled match keys (see [`RawConditions`]).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    login: Vec<Glob>,
    sender: Vec<Glob>,
    recipient: Vec<Glob>,
    from: Vec<Glob>,
    to: Vec<Glob>,
    client: Vec<ClientPattern>,
    tag: Vec<Glob>,
    capture: Vec<CapturePath>,
    size_over: Option<u64>,
}

impl Conditions {
    /// Compiles the keys; each value at fault goes to `err` (key, position
    /// in its list, message), and the keys that did compile are kept.
    pub fn compile(
        raw: RawConditions,
        err: &mut impl FnMut(&'static str, Option<usize>, String),
    ) -> Conditions {
        for (field, values) in [
            ("sender", &raw.sender),
            ("recipient", &raw.recipient),
            ("from", &raw.from),
            ("to", &raw.to),
        ] {
            for (i, v) in values.items() {
                if let Some(m) = address_glob_error(field, v) {
                    err(field, i, m);
                }
            }
        }
        for (field, values) in [("login", &raw.login), ("tag", &raw.tag)] {
            for (i, v) in values.items() {
                if let Some(m) = name_error(v) {
                    err(field, i, m);
                }
            }
        }
        let mut client = Vec::new();
        for (i, c) in raw.client.items() {
            match ClientPattern::parse(c) {
                Ok(p) => client.push(p),
                Err(m) => err("client", i, m),
            }
        }
        let size_over = raw
            .size_over
            .as_ref()
            .map(Size::bytes)
            .transpose()
            .unwrap_or_else(|m| {
                err("size_over", None, m);
                None
            });
        let mut capture = Vec::new();
        for (i, c) in raw.capture.items() {
            match CapturePath::parse(c) {
                Some(p) => capture.push(p),
                None => err(
                    "capture",
                    i,
                    format!("{c:?} is not one of milter, filter, pipe, import"),
                ),
            }
        }
        Conditions {
            login: globs(raw.login),
            sender: globs(raw.sender),
            recipient: globs(raw.recipient),
            from: globs(raw.from),
            to: globs(raw.to),
            client,
            tag: globs(raw.tag),
            capture,
            size_over,
        }
    }

    /// Everything except the recipient key, for a message of `size` bytes:
    /// all-of across keys, any-of within one.
    pub fn message_matches(&self, env: &Envelope, headers: &HeaderInfo, size: u64) -> bool {
        let keyed = |globs: &[Glob], value: Option<&str>| {
            globs.is_empty() || value.is_some_and(|v| any(globs, v))
        };
        let keyed_list = |globs: &[Glob], values: &[String]| {
            globs.is_empty() || values.iter().any(|v| any(globs, v))
        };
        keyed(&self.login, env.login.as_deref().filter(|l| !l.is_empty()))
            && keyed(&self.sender, Some(env.sender.as_deref().unwrap_or("")))
            && keyed_list(&self.from, &headers.from)
            && keyed_list(&self.to, &headers.to)
            && keyed_list(&self.tag, &env.tags)
            && (self.client.is_empty() || self.client.iter().any(|c| c.matches(env)))
            && (self.capture.is_empty() || self.capture.contains(&env.capture))
            && self.size_over.is_none_or(|limit| size > limit)
    }

    /// The recipient key alone, for one recipient.
    pub fn recipient_matches(&self, rcpt: &str) -> bool {
        self.recipient.is_empty() || any(&self.recipient, rcpt)
    }

    /// The whole message: [`Conditions::message_matches`] and, when there
    /// is a recipient key, any envelope recipient matching it.
    pub fn matches(&self, env: &Envelope, headers: &HeaderInfo, size: u64) -> bool {
        self.message_matches(env, headers, size)
            && (self.recipient.is_empty()
                || env.recipients.iter().any(|r| self.recipient_matches(r)))
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    conditions: Conditions,
    action: Action,
    per_recipient: bool,
    continue_: bool,
    envelope_headers: bool,
}

fn globs(v: OneOrMany) -> Vec<Glob> {
    v.into_vec().iter().map(|s| Glob::new(s)).collect()
}

/// Why an address glob (`sender`, `recipient`, `from`, `to`) can never
/// match what it was meant to, if it cannot.
fn address_glob_error(field: &str, s: &str) -> Option<String> {
    if s == "<>" {
        return (field != "sender")
            .then(|| "\"<>\" is the null sender, which only `sender` can match".to_string());
    }
    if s.is_empty() {
        return Some("an empty pattern matches nothing (the null sender is \"<>\")".to_string());
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(format!(
            "{s:?} contains a space or control character, which no address has"
        ));
    }
    if s.starts_with('<') || s.ends_with('>') {
        return Some(format!("{s:?}: write the address without angle brackets"));
    }
    None
}

/// Why a `login` or `tag` value can never match, if it cannot.
fn name_error(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("an empty value matches nothing".to_string());
    }
    if s.chars().any(char::is_control) {
        return Some(format!("{s:?} contains a control character"));
    }
    None
}

fn any(globs: &[Glob], value: &str) -> bool {
    globs.iter().any(|g| g.matches(value))
}

impl Rule {
    /// Compiles one rule, reporting every value at fault, not only the
    /// first.
    fn compile(index: usize, raw: RawRule, default_headers: bool) -> Result<Rule, Vec<RuleError>> {
        let name = raw
            .name
            .clone()
            .unwrap_or_else(|| format!("rule {}", index + 1));
        let mut errors = Vec::new();
        let mut err = |field: &'static str, item: Option<usize>, message: String| {
            errors.push(RuleError {
                index,
                name: name.clone(),
                field,
                item,
                message,
            })
        };
        let conditions = Conditions::compile(
            RawConditions {
                login: raw.login.clone(),
                sender: raw.sender.clone(),
                recipient: raw.recipient.clone(),
                from: raw.from.clone(),
                to: raw.to.clone(),
                client: raw.client.clone(),
                tag: raw.tag.clone(),
                capture: raw.capture.clone(),
                size_over: raw.size_over.clone(),
            },
            &mut err,
        );
        let archive = raw.archive.items();
        let action = match (raw.skip, archive.is_empty()) {
            (true, false) => {
                err("skip", None, "a rule cannot both skip and archive".into());
                Action::Skip
            }
            (true, true) => Action::Skip,
            (false, true) => {
                err(
                    "archive",
                    None,
                    "the rule does nothing: give it archive = [...] or skip = true".into(),
                );
                Action::Skip
            }
            (false, false) => {
                let mut dests = Vec::new();
                for (i, spec) in archive {
                    match DestSpec::parse(spec) {
                        Err(m) => err("archive", i, m),
                        Ok(dest) if dest.template.uses_recipient() && !raw.per_recipient => err(
                            "archive",
                            i,
                            format!(
                                "{spec:?} uses a {{recipient...}} placeholder, which needs per_recipient = true"
                            ),
                        ),
                        Ok(dest) => dests.push(dest),
                    }
                }
                Action::Archive(dests)
            }
        };
        if raw.continue_ && raw.skip {
            err(
                "continue",
                None,
                "skip = true with continue = true has no effect".into(),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rule {
            name,
            conditions,
            action,
            per_recipient: raw.per_recipient,
            continue_: raw.continue_,
            envelope_headers: raw.envelope_headers.unwrap_or(default_headers),
        })
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn message_matches(&self, env: &Envelope, headers: &HeaderInfo) -> bool {
        self.conditions
            .message_matches(env, headers, env.message.len())
    }

    fn recipient_matches(&self, rcpt: &str) -> bool {
        self.conditions.recipient_matches(rcpt)
    }
}

/// The compiled, ordered rule list.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// One write to make: a destination path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The file format.
    pub kind: DestKind,
    /// The expanded path (file for mbox, directory for maildir and eml).
    pub path: PathBuf,
    /// The fixed directory the path lies in.
    pub prefix: PathBuf,
    /// Recipients this copy is filed for; empty for a message-level copy.
    pub recipients: Vec<String>,
    /// Names of the rules that asked for this write.
    pub rules: Vec<String>,
    /// Prepend envelope headers.
    pub envelope_headers: bool,
}

/// What one rule did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The rule's name.
    pub rule: String,
    /// `None`: skipped; otherwise the destinations written.
    pub archive: Option<Vec<(DestKind, PathBuf)>>,
}

/// The decision for one recipient (or for the message when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The envelope recipient; `None` for a message without recipients.
    pub recipient: Option<String>,
    /// Matching rules in order; empty when no rule matched.
    pub outcomes: Vec<Outcome>,
}

/// The result of running the rules on one envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Distinct writes, in rule order; one per (kind, path).
    pub deliveries: Vec<Delivery>,
    /// Per-recipient explanation, for logs and `mailkeep rules test`.
    pub decisions: Vec<Decision>,
}

impl Plan {
    fn add(
        &mut self,
        kind: DestKind,
        path: PathBuf,
        prefix: PathBuf,
        rcpt: Option<&str>,
        rule: &Rule,
    ) {
        let d = match self
            .deliveries
            .iter_mut()
            .find(|d| d.kind == kind && d.path == path)
        {
            Some(d) => d,
            None => {
                self.deliveries.push(Delivery {
                    kind,
                    path,
                    prefix,
                    recipients: Vec::new(),
                    rules: Vec::new(),
                    envelope_headers: false,
                });
                self.deliveries.last_mut().expect("just pushed")
            }
        };
        if let Some(r) = rcpt {
            if !d.recipients.iter().any(|x| x == r) {
                d.recipients.push(r.to_string());
            }
        }
        if !d.rules.iter().any(|x| x == &rule.name) {
            d.rules.push(rule.name.clone());
        }
        d.envelope_headers |= rule.envelope_headers;
    }
}

impl RuleSet {
    /// Compiles raw rules. `envelope_headers` is the default for rules that
    /// do not set it. Every error of every rule is returned, in rule order.
    pub fn compile(raw: Vec<RawRule>, envelope_headers: bool) -> Result<RuleSet, Vec<RuleError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            match Rule::compile(i, r, envelope_headers) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(errors)
        }
    }

    /// The compiled rules in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// One rule, named `name`, that files every message into the store
    /// (`mailkeep import` without `--rules`).
    pub fn store_only(name: &str) -> RuleSet {
        let raw = RawRule {
            name: Some(name.to_string()),
            archive: OneOrMany::One("store".into()),
            ..RawRule::default()
        };
        RuleSet::compile(vec![raw], false).expect("archive = [\"store\"] compiles")
    }

    /// No rules: nothing is archived.
    pub fn empty() -> RuleSet {
        RuleSet { rules: Vec::new() }
    }

    /// Whether any rule writes to this kind of destination.
    pub fn uses(&self, kind: DestKind) -> bool {
        self.rules.iter().any(|r| match &r.action {
            Action::Archive(dests) => dests.iter().any(|d| d.kind == kind),
            _ => false,
        })
    }

    /// Decides where one message goes.
    pub fn plan(&self, env: &Envelope, headers: &HeaderInfo) -> Result<Plan, TemplateError> {
        let local = env.received.with_timezone(&Local);
        let base = Values {
            login: env.login.as_deref(),
            sender: env.sender.as_deref(),
            recipient: None,
            queue_id: env.queue_id.as_deref(),
            date: (local.year(), local.month(), local.day()),
        };
        // With no recipients, one slot stands for the whole message.
        let slots: Vec<Option<&str>> = if env.recipients.is_empty() {
            vec![None]
        } else {
            env.recipients.iter().map(|r| Some(r.as_str())).collect()
        };
        let mut plan = Plan {
            deliveries: Vec::new(),
            decisions: slots
                .iter()
                .map(|r| Decision {
                    recipient: r.map(str::to_string),
                    outcomes: Vec::new(),
                })
                .collect(),
        };
        let mut undecided = vec![true; slots.len()];
        for rule in &self.rules {
            if !undecided.contains(&true) {
                break;
            }
            if !rule.message_matches(env, headers) {
                continue;
            }
            let matched: Vec<usize> = if rule.per_recipient {
                (0..slots.len())
                    .filter(|&i| undecided[i])
                    .filter(|&i| slots[i].is_some_and(|r| rule.recipient_matches(r)))
                    .collect()
            } else {
                let open: Vec<usize> = (0..slots.len()).filter(|&i| undecided[i]).collect();
                let hit = rule.conditions.recipient.is_empty()
                    || open
                        .iter()
                        .any(|&i| slots[i].is_some_and(|r| rule.recipient_matches(r)));
                if hit {
                    open
                } else {
                    Vec::new()
                }
            };
            if matched.is_empty() {
                continue;
            }
            let mut message_paths = None;
            for &i in &matched {
                let archive = match &rule.action {
                    Action::Skip => None,
                    Action::Archive(dests) if rule.per_recipient => {
                        let values = Values {
                            recipient: slots[i],
                            ..base.clone()
                        };
                        let mut paths = Vec::new();
                        for d in dests {
                            let path = d.template.expand(&values)?;
                            plan.add(
                                d.kind,
                                path.clone(),
                                d.template.prefix().into(),
                                slots[i],
                                rule,
                            );
                            paths.push((d.kind, path));
                        }
                        Some(paths)
                    }
                    Action::Archive(dests) => {
                        if message_paths.is_none() {
                            let mut paths = Vec::new();
                            for d in dests {
                                let path = d.template.expand(&base)?;
                                plan.add(
                                    d.kind,
                                    path.clone(),
                                    d.template.prefix().into(),
                                    None,
                                    rule,
                                );
                                paths.push((d.kind, path));
                            }
                            message_paths = Some(paths);
                        }
                        message_paths.clone()
                    }
                };
                plan.decisions[i].outcomes.push(Outcome {
                    rule: rule.name.clone(),
                    archive,
                });
                if !rule.continue_ {
                    undecided[i] = false;
                }
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailkeep_envelope::RawMessage;

    fn rules(toml_rules: &str) -> RuleSet {
        #[derive(Deserialize)]
        struct F {
            rule: Vec<RawRule>,
        }
        let f: F = toml::from_str(toml_rules).unwrap();
        RuleSet::compile(f.rule, true).unwrap()
    }

    fn env(sender: Option<&str>, rcpts: &[&str], login: Option<&str>) -> Envelope {
        let mut e = Envelope::new(
            CapturePath::Pipe,
            RawMessage::from_bytes(b"Subject: x\n\nhi\n".to_vec()),
        );
        e.sender = sender.map(str::to_string);
        e.recipients = rcpts.iter().map(|s| s.to_string()).collect();
        e.login = login.map(str::to_string);
        e
    }

    const ISSUE_EXAMPLE: &str = include_str!("../../../examples/issue-rules.toml");

    #[test]
    fn issue_example_outgoing() {
        let rs = rules(ISSUE_EXAMPLE);
        let plan = rs
            .plan(
                &env(Some("bob@example.com"), &["x@other.org"], Some("Bob")),
                &HeaderInfo::default(),
            )
            .unwrap();
        let paths: Vec<_> = plan.deliveries.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/var/archive/bob/sent.mbox"),
                PathBuf::from("/var/archive/all")
            ]
        );
    }

    #[test]
    fn issue_example_noise_and_null_sender() {
        let rs = rules(ISSUE_EXAMPLE);
        for s in [None, Some("ROOT@host"), Some("mailer-daemon@x")] {
            let plan = rs
                .plan(
                    &env(s, &["a@example.com"], Some("bob")),
                    &HeaderInfo::default(),
                )
                .unwrap();
            assert!(plan.deliveries.is_empty(), "{s:?}");
            assert_eq!(plan.decisions[0].outcomes[0].rule, "system noise");
        }
    }

    #[test]
    fn issue_example_per_recipient() {
        let rs = rules(ISSUE_EXAMPLE);
        let plan = rs
            .plan(
                &env(
                    Some("ext@other.org"),
                    &["A@example.com", "b@example.com", "c@else.org"],
                    None,
                ),
                &HeaderInfo::default(),
            )
            .unwrap();
        let paths: Vec<_> = plan.deliveries.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/var/archive/in/example.com/a"),
                PathBuf::from("/var/archive/in/example.com/b")
            ]
        );
        assert_eq!(plan.deliveries[0].recipients, vec!["A@example.com"]);
        assert!(
            plan.decisions[2].outcomes.is_empty(),
            "c@else.org is selected by no rule"
        );
    }

    #[test]
    fn continue_and_merge() {
        let rs = rules(
            r#"
[[rule]]
name = "all"
archive = "maildir:/a/all"
continue = true
[[rule]]
name = "per"
per_recipient = true
archive = ["maildir:/a/all", "mbox:/a/{recipient_local}.mbox"]
"#,
        );
        let plan = rs
            .plan(
                &env(Some("s@x"), &["r1@x", "r2@x"], None),
                &HeaderInfo::default(),
            )
            .unwrap();
        assert_eq!(plan.deliveries.len(), 3, "{plan:#?}");
        assert_eq!(plan.deliveries[0].path, PathBuf::from("/a/all"));
        assert_eq!(plan.deliveries[0].rules, vec!["all", "per"]);
        assert_eq!(plan.decisions[0].outcomes.len(), 2);
    }

    #[test]
    fn header_client_size_keys() {
        let rs = rules(
            r#"
[[rule]]
from = "*@boss.example"
to = "*@partner.example"
client = ["10.0.0.0/8", "*.trusted.example"]
size_over = "1k"
archive = "maildir:/a/b"
"#,
        );
        let mut e = env(Some("s@x"), &["r@x"], None);
        e.message = RawMessage::from_bytes(vec![b'x'; 2000]);
        let h = HeaderInfo {
            from: vec!["ceo@boss.example".into()],
            to: vec!["a@partner.example".into()],
        };
        assert!(rs.plan(&e, &h).unwrap().deliveries.is_empty(), "no client");
        e.client.address = Some("10.1.2.3".into());
        assert_eq!(rs.plan(&e, &h).unwrap().deliveries.len(), 1);
        e.client.address = Some("192.0.2.1".into());
        e.client.hostname = Some("mx.trusted.example".into());
        assert_eq!(rs.plan(&e, &h).unwrap().deliveries.len(), 1);
        e.message = RawMessage::from_bytes(vec![b'x'; 100]);
        assert!(rs.plan(&e, &h).unwrap().deliveries.is_empty(), "too small");
    }

    #[test]
    fn compile_errors() {
        #[derive(Deserialize)]
        struct F {
            rule: Vec<RawRule>,
        }
        let bad = |s: &str| {
            let f: F = toml::from_str(s).unwrap();
            RuleSet::compile(f.rule, true).unwrap_err().remove(0)
        };
        assert_eq!(
            bad("[[rule]]\narchive='mbox:/a/{recipient}'").field,
            "archive"
        );
        assert_eq!(
            bad("[[rule]]\narchive='mbox:/a/../{login}'").field,
            "archive"
        );
        assert_eq!(bad("[[rule]]\nsender='x'").field, "archive");
        assert_eq!(bad("[[rule]]\nskip=true\narchive='mbox:/a'").field, "skip");
        assert_eq!(bad("[[rule]]\narchive='tape:/a'").field, "archive");
        assert_eq!(
            bad("[[rule]]\ncapture='smtp'\narchive='mbox:/a'").field,
            "capture"
        );
        assert_eq!(
            bad("[[rule]]\nsize_over='lots'\narchive='mbox:/a'").field,
            "size_over"
        );
    }

    #[test]
    fn every_error_of_every_rule_with_its_list_position() {
        #[derive(Deserialize)]
        struct F {
            rule: Vec<RawRule>,
        }
        let f: F = toml::from_str(
            r#"
[[rule]]
name = "a"
client = ["10.0.0.0/8", "10.0.0.0/33", "999.1.1.1", "*.example.com", "10.0.0.*", "10.0.0.1/8", "fe80::/129"]
sender = ["<bob@example.com>", "<>", "a b@c"]
recipient = "<>"
archive = ["mbox:/ok", "mbox:relative/x", "maildir:./x/{login}", "eml:/x/../{login}"]
[[rule]]
name = "b"
to = ""
login = ""
capture = ["pipe", "smtp"]
archive = "mbox:x.mbox"
"#,
        )
        .unwrap();
        let errs = RuleSet::compile(f.rule, true).unwrap_err();
        let got: Vec<(usize, &str, Option<usize>)> =
            errs.iter().map(|e| (e.index, e.field, e.item)).collect();
        assert_eq!(
            got,
            vec![
                (0, "sender", Some(0)),
                (0, "sender", Some(2)),
                (0, "recipient", None),
                (0, "client", Some(1)),
                (0, "client", Some(2)),
                (0, "client", Some(4)),
                (0, "client", Some(5)),
                (0, "client", Some(6)),
                (0, "archive", Some(1)),
                (0, "archive", Some(2)),
                (0, "archive", Some(3)),
                (1, "to", None),
                (1, "login", None),
                (1, "capture", Some(1)),
                (1, "archive", None),
            ],
            "{errs:#?}"
        );
        assert!(errs[3]
            .message
            .contains("\"10.0.0.0/33\" is not an IP address or CIDR"));
        assert!(
            errs[6].message.contains("the network is 10.0.0.0/8"),
            "{}",
            errs[6]
        );
        assert!(errs[8].message.contains("must be absolute"), "{}", errs[8]);
    }

    #[test]
    fn client_patterns() {
        for ok in [
            "192.0.2.1",
            "10.0.0.0/8",
            "2001:db8::/32",
            "::1",
            "mx-1.example.com",
            "*",
        ] {
            assert!(ClientPattern::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.0/33",
            "999.1.1.1",
            "10.0.0",
            "1.2.3.4.5",
            "10.*",
            "[10.0.0.1]",
            "a b",
            "",
            "2001:db8::/200",
            "host/24",
        ] {
            assert!(ClientPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_net("10.0.0.0/33").unwrap_err(), "\"10.0.0.0/33\" is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("512kB"), Some(512 << 10));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999G"), None);
    }

    #[test]
    fn client_ip_forms() {
        assert_eq!(
            mailkeep_envelope::client_ip("[10.0.0.1]"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            mailkeep_envelope::client_ip("IPv6:::ffff:10.0.0.1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(mailkeep_envelope::client_ip("unknown"), None);
    }
}
