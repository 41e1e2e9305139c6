//! Retention: how long each delivery is kept, decided by policies tried in
//! order like rules (the first that matches decides), with a default.
//!
//! A delivery's retention is decided from its own envelope (and the header
//! addresses the index keeps) and counted from its **receive time as
//! mailkeep recorded it**, never from the message's `Date:` header, which
//! strangers write. Periods are calendar periods: `10y` after 2026-03-31 is
//! 2036-03-31, `1m` after 2027-01-31 is 2027-02-28 (chrono's month
//! arithmetic, which clamps to the month's last day).
//!
//! This module decides and explains ([`Retention::decide`]); removing what
//! expired is the job of expiry, which also honours legal holds.

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use mailkeep_envelope::RawMessage;
use mailkeep_rules::{Conditions, HeaderInfo, RawConditions};
use mailkeep_store::catalog::Hit;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// A retention period: days and months (weeks are 7 days, years 12
/// months).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    months: u32,
    days: u32,
}

impl Period {
    /// Parses `90d`, `2w`, `6m`, `10y` (one number and one unit).
    pub fn parse(text: &str) -> Result<Period, String> {
        let t = text.trim();
        let bad = || {
            format!("{text:?} is not a period like 90d, 2w, 6m or 10y (days, weeks, months, years)")
        };
        let unit = t.chars().last().ok_or_else(bad)?;
        let n: u32 = t[..t.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(format!(
                "{text:?}: a period of zero keeps nothing; remove the policy or give it a length"
            ));
        }
        let p = match unit.to_ascii_lowercase() {
            'd' => Period { months: 0, days: n },
            'w' => Period {
                months: 0,
                days: n.checked_mul(7).ok_or_else(bad)?,
            },
            'm' => Period { months: n, days: 0 },
            'y' => Period {
                months: n.checked_mul(12).ok_or_else(bad)?,
                days: 0,
            },
            _ => return Err(bad()),
        };
        if p.months > 12 * 1000 || p.days > 366 * 1000 {
            return Err(format!(
                "{text:?}: longer than 1000 years; say `keep = \"forever\"`"
            ));
        }
        Ok(p)
    }

    /// The period in days, when it is given in days or weeks.
    pub fn days_only(&self) -> Option<u32> {
        (self.months == 0).then_some(self.days)
    }

    /// The moment this period after `t` ends.
    pub fn after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_add_months(Months::new(self.months))
            .and_then(|t| t.checked_add_days(chrono::Days::new(u64::from(self.days))))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.months, self.days) {
            (m, 0) if m % 12 == 0 => write!(f, "{}y", m / 12),
            (m, 0) => write!(f, "{m}m"),
            (0, d) if d % 7 == 0 => write!(f, "{}w", d / 7),
            (0, d) => write!(f, "{d}d"),
            (m, d) => write!(f, "{m}m{d}d"),
        }
    }
}

/// How long: a period, or forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Until this long after the receive time.
    For(Period),
    /// Never expires.
    Forever,
}

impl Keep {
    /// A period, or `forever`.
    pub fn parse(text: &str) -> Result<Keep, String> {
        if text.trim().eq_ignore_ascii_case("forever") {
            return Ok(Keep::Forever);
        }
        Period::parse(text).map(Keep::For)
    }

    /// When a delivery received at `t` expires; `None`: never.
    pub fn until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Keep::For(p) => Some(p.after(t)),
            Keep::Forever => None,
        }
    }

    /// Whether this keeps at least as long as `other` for every receive
    /// time (a locked configuration may only lengthen).
    pub fn at_least(&self, other: &Keep) -> bool {
        match (self, other) {
            (Keep::Forever, _) => true,
            (Keep::For(_), Keep::Forever) => false,
            // Months and days do not compare in general (a month is 28-31
            // days): both parts must be at least as long.
            (Keep::For(a), Keep::For(b)) => a.months >= b.months && a.days >= b.days,
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::For(p) => p.fmt(f),
            Keep::Forever => f.write_str("forever"),
        }
    }
}

/// One policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name, for `retention show` and the tombstones of what it expires.
    pub name: String,
    conditions: Conditions,
    /// A search query the delivery must also match.
    pub query: Option<String>,
    /// How long.
    pub keep: Keep,
    /// The keys as written, to find policies that repeat an earlier one.
    signature: String,
    /// The keys for people: `sender: *@news.example; query: …`.
    matches: String,
}

/// The policies, the default and whether the configuration is locked.
#[derive(Debug, Clone)]
pub struct Retention {
    /// For deliveries no policy matches.
    pub default: Keep,
    /// Policies may only be lengthened, nothing expires early, erase refuses.
    pub locked: bool,
    /// In order.
    pub policies: Vec<Policy>,
}

impl Default for Retention {
    /// No `[retention]` section: everything is kept forever.
    fn default() -> Retention {
        Retention {
            default: Keep::Forever,
            locked: false,
            policies: Vec::new(),
        }
    }
}

/// A policy as the configuration gives it.
#[derive(Debug, Clone, Default)]
pub struct RawPolicy {
    /// Defaults to `policy N`.
    pub name: Option<String>,
    /// The match keys of rules.
    pub conditions: RawConditions,
    /// A search query (the language of `mailkeep search`).
    pub query: Option<String>,
    /// `90d`, `2w`, `6m`, `10y` or `forever`.
    pub keep: String,
}

/// What applies to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The policy's index, or `None` for the default.
    pub policy: Option<usize>,
    /// Its name (`default` for the default).
    pub name: String,
    /// How long.
    pub keep: Keep,
    /// When it expires; `None`: never.
    pub until: Option<DateTime<Utc>>,
}

impl Retention {
    /// Compiles the policies; every error of every policy is returned
    /// (`policy N: key: message`).
    pub fn compile(
        default: Option<&str>,
        locked: bool,
        raw: Vec<RawPolicy>,
    ) -> Result<Retention, Vec<String>> {
        let mut errors = Vec::new();
        let default = match default.map(Keep::parse).transpose() {
            Ok(k) => k.unwrap_or(Keep::Forever),
            Err(e) => {
                errors.push(format!("retention.default: {e}"));
                Keep::Forever
            }
        };
        let mut policies = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let name = p
                .name
                .clone()
                .unwrap_or_else(|| format!("policy {}", i + 1));
            let signature = signature(&p.conditions, p.query.as_deref());
            let matches = matches(&p.conditions, p.query.as_deref());
            let conditions = Conditions::compile(p.conditions, &mut |key, item, message| {
                let at = item.map(|n| format!("[{n}]")).unwrap_or_default();
                errors.push(format!("retention.policy {:?}: {key}{at}: {message}", name));
            });
            if let Some(q) = &p.query {
                if let Err(e) = mailkeep_query::parse(q) {
                    errors.push(format!("retention.policy {name:?}: query: {e}"));
                }
            }
            let keep = Keep::parse(&p.keep).unwrap_or_else(|e| {
                errors.push(format!("retention.policy {name:?}: keep: {e}"));
                Keep::Forever
            });
            policies.push(Policy {
                name,
                conditions,
                query: p.query,
                keep,
                signature,
                matches,
            });
        }
        if errors.is_empty() {
            Ok(Retention {
                default,
                locked,
                policies,
            })
        } else {
            Err(errors)
        }
    }

    /// Policies that can never decide anything or repeat another: each
    /// is loaded, and named in a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let everything = signature(&RawConditions::default(), None);
        for (i, p) in self.policies.iter().enumerate() {
            if let Some(earlier) = self.policies[..i]
                .iter()
                .find(|e| e.signature == everything)
            {
                out.push(format!(
                    "retention policy {:?} is never used: {:?} before it matches every delivery",
                    p.name, earlier.name
                ));
                continue;
            }
            if let Some(earlier) = self.policies[..i]
                .iter()
                .find(|e| e.signature == p.signature)
            {
                let what = if earlier.keep == p.keep {
                    "repeats"
                } else {
                    "contradicts (another period for the same keys)"
                };
                out.push(format!(
                    "retention policy {:?} {what} {:?}, which comes first and decides",
                    p.name, earlier.name
                ));
            }
        }
        out
    }

    /// The policy for one delivery: the first whose keys match (and whose
    /// query matched it: `query_hits[i]` holds the delivery ids policy
    /// `i`'s query matches), else the default.
    pub fn decide(&self, hit: &Hit, query_hits: &[Option<HashSet<i64>>]) -> Decision {
        let r = &hit.record;
        let env = mailkeep_store::envelope_of(r, RawMessage::from_bytes(Vec::new()));
        let headers = HeaderInfo::parse(
            format!(
                "From: {}\r\nTo: {}\r\nCc: {}\r\n\r\n",
                hit.from, hit.to, hit.cc
            )
            .as_bytes(),
        );
        let received = env.received;
        for (i, p) in self.policies.iter().enumerate() {
            let by_query = match query_hits.get(i) {
                Some(Some(ids)) => ids.contains(&r.id),
                _ => p.query.is_none(),
            };
            if by_query && p.conditions.matches(&env, &headers, r.size) {
                return Decision {
                    policy: Some(i),
                    name: p.name.clone(),
                    keep: p.keep,
                    until: p.keep.until(received),
                };
            }
        }
        Decision {
            policy: None,
            name: "default".into(),
            keep: self.default,
            until: self.default.until(received),
        }
    }
}

impl Retention {
    /// The policies as the audit log records them, to compare a later
    /// configuration with ([`Retention::lengthens`]).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "default": self.default.to_string(),
            "locked": self.locked,
            "policies": self.policies.iter().map(|p| serde_json::json!({
                "name": p.name,
                "keys": p.signature,
                "matches": p.matches,
                "keep": p.keep.to_string(),
            })).collect::<Vec<_>>(),
        })
    }

    /// With the retention `old` (as [`Retention::describe`] gave it) locked,
    /// whether this one keeps every delivery at least as long: still
    /// locked, a default at least as long, the old policies first and in
    /// order with the same keys and periods at least as long, and any
    /// policy after them at least as long as the old default (it can only
    /// take deliveries the old default decided). `Err` says what shortens.
    pub fn lengthens(&self, old: &serde_json::Value) -> Result<(), String> {
        if old["locked"] != true {
            return Ok(());
        }
        let keep = |v: &serde_json::Value| {
            Keep::parse(v.as_str().unwrap_or(""))
                .map_err(|e| format!("the recorded retention: {e}"))
        };
        if !self.locked {
            return Err("retention was locked; `locked = true` cannot be taken back".into());
        }
        let old_default = keep(&old["default"])?;
        if !self.default.at_least(&old_default) {
            return Err(format!(
                "the default would go from {old_default} to {}",
                self.default
            ));
        }
        let old_policies = old["policies"].as_array().cloned().unwrap_or_default();
        for (i, o) in old_policies.iter().enumerate() {
            let name = o["name"].as_str().unwrap_or("");
            let Some(p) = self.policies.get(i) else {
                return Err(format!("policy {name:?} would be removed"));
            };
            if p.signature != o["keys"].as_str().unwrap_or("") {
                return Err(format!(
                    "policy {} ({name:?}) would change what it matches; add a new policy after the old ones instead",
                    i + 1
                ));
            }
            let was = keep(&o["keep"])?;
            if !p.keep.at_least(&was) {
                return Err(format!("policy {name:?} would go from {was} to {}", p.keep));
            }
        }
        for p in self.policies.iter().skip(old_policies.len()) {
            if !p.keep.at_least(&old_default) {
                return Err(format!(
                    "the new policy {:?} ({}) is shorter than the default ({old_default}) that kept what it matches",
                    p.name, p.keep
                ));
            }
        }
        Ok(())
    }
}

/// The keys of a policy as a reader would write them, each key with its
/// values as given (`sender: *@news.example, *@list.example; size_over:
/// 10M`); `everything` for a policy without keys.
fn matches(c: &RawConditions, query: Option<&str>) -> String {
    let mut parts = Vec::new();
    for (key, v) in [
        ("login", &c.login),
        ("sender", &c.sender),
        ("recipient", &c.recipient),
        ("from", &c.from),
        ("to", &c.to),
        ("client", &c.client),
        ("tag", &c.tag),
        ("capture", &c.capture),
    ] {
        let items: Vec<&str> = v.items().into_iter().map(|(_, s)| s).collect();
        if !items.is_empty() {
            parts.push(format!("{key}: {}", items.join(", ")));
        }
    }
    match &c.size_over {
        Some(mailkeep_rules::Size::Bytes(n)) => parts.push(format!("size_over: {n}")),
        Some(mailkeep_rules::Size::Text(t)) => parts.push(format!("size_over: {t}")),
        None => {}
    }
    if let Some(q) = query.map(str::trim).filter(|q| !q.is_empty()) {
        parts.push(format!("query: {q}"));
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join("; ")
    }
}

/// The keys of a policy in one normal form, to find policies that repeat
/// another: a value and a one-element list are the same, case and order
/// within a list do not count, an empty list or query is no key at all.
fn signature(c: &RawConditions, query: Option<&str>) -> String {
    let norm = |v: &mailkeep_rules::OneOrMany| {
        let mut items: Vec<String> = v.items().iter().map(|(_, s)| s.to_lowercase()).collect();
        items.sort();
        items.dedup();
        items.join("\u{1f}")
    };
    let size = c.size_over.as_ref().and_then(|s| s.bytes().ok());
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}",
        norm(&c.login),
        norm(&c.sender),
        norm(&c.recipient),
        norm(&c.from),
        norm(&c.to),
        norm(&c.client),
        norm(&c.tag),
        norm(&c.capture),
        size,
        query.map(str::trim).unwrap_or("")
    )
}

/// Expiries by month (`2027-03`), and how many never expire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Month (UTC) → deliveries whose retention ends in it.
    pub by_month: BTreeMap<String, u64>,
    /// Deliveries kept forever.
    pub forever: u64,
    /// Policy name → deliveries it decides.
    pub by_policy: BTreeMap<String, u64>,
    /// Deliveries already past their retention now.
    pub expired_now: u64,
}

impl Plan {
    /// Adds one decision, as seen at `now`.
    pub fn add(&mut self, d: &Decision, now: DateTime<Utc>) {
        *self.by_policy.entry(d.name.clone()).or_default() += 1;
        match d.until {
            None => self.forever += 1,
            Some(t) => {
                *self
                    .by_month
                    .entry(format!("{:04}-{:02}", t.year(), t.month()))
                    .or_default() += 1;
                if t <= now {
                    self.expired_now += 1;
                }
            }
        }
    }
}

/// Midnight UTC of a day, for tests and reports.
pub fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("a valid date")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailkeep_rules::OneOrMany;

    fn hit(id: i64, login: Option<&str>, from: &str, received: DateTime<Utc>) -> Hit {
        let mut env = mailkeep_envelope::Envelope::new(
            mailkeep_envelope::CapturePath::Milter,
            RawMessage::from_bytes(Vec::new()),
        );
        env.received = received;
        env.sender = Some("someone@example.org".into());
        env.recipients = vec!["r@example.com".into()];
        env.login = login.map(str::to_string);
        let mut record = mailkeep_store::record_of(&env, &blake3::hash(b"m"), 1000);
        record.id = id;
        Hit {
            record,
            message_id: None,
            from: from.into(),
            to: "r@example.com".into(),
            cc: String::new(),
            subject: "s".into(),
            // A Date header far from the receive time: it must not count.
            date: Some(0),
            attachments: "[]".into(),
            index_note: None,
        }
    }

    fn policy(name: &str, keep: &str, f: impl FnOnce(&mut RawConditions)) -> RawPolicy {
        let mut c = RawConditions::default();
        f(&mut c);
        RawPolicy {
            name: Some(name.into()),
            conditions: c,
            query: None,
            keep: keep.into(),
        }
    }

    fn retention() -> Retention {
        Retention::compile(
            Some("10y"),
            false,
            vec![
                policy("finance", "10y", |c| {
                    c.login = OneOrMany::One("*@finance.example.com".into())
                }),
                policy("newsletters", "90d", |c| {
                    c.from = OneOrMany::Many(vec!["*@news.*".into()])
                }),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_first_matching_policy_decides_from_the_receive_time() {
        let r = retention();
        let received = day(2026, 3, 31);
        let fin = r.decide(
            &hit(
                1,
                Some("ann@finance.example.com"),
                "x@news.example",
                received,
            ),
            &[],
        );
        assert_eq!(
            (fin.name.as_str(), fin.until),
            ("finance", Some(day(2036, 3, 31)))
        );
        let news = r.decide(
            &hit(2, None, "Daily <daily@news.example.net>", received),
            &[],
        );
        assert_eq!(
            (news.name.as_str(), news.until),
            ("newsletters", Some(day(2026, 6, 29)))
        );
        let other = r.decide(&hit(3, Some("bob"), "bob@example.com", received), &[]);
        assert_eq!((other.policy, other.name.as_str()), (None, "default"));
        assert_eq!(other.until, Some(day(2036, 3, 31)));
    }

    #[test]
    fn a_query_narrows_a_policy() {
        let mut p = policy("legal", "forever", |_| {});
        p.query = Some("subject:contract".into());
        let r = Retention::compile(Some("1y"), false, vec![p]).unwrap();
        let ids: HashSet<i64> = [7].into();
        let hits = vec![Some(ids)];
        assert_eq!(
            r.decide(&hit(7, None, "a@b.c", day(2026, 1, 1)), &hits)
                .until,
            None
        );
        let d = r.decide(&hit(8, None, "a@b.c", day(2026, 1, 1)), &hits);
        assert_eq!(
            (d.name.as_str(), d.until),
            ("default", Some(day(2027, 1, 1)))
        );
    }

    #[test]
    fn periods_and_errors() {
        assert_eq!(
            Period::parse("2w").unwrap().after(day(2026, 1, 1)),
            day(2026, 1, 15)
        );
        assert_eq!(
            Period::parse("1m").unwrap().after(day(2027, 1, 31)),
            day(2027, 2, 28)
        );
        assert_eq!(Keep::parse("Forever").unwrap(), Keep::Forever);
        for bad in ["", "10", "y", "0d", "10x", "-1d", "1.5y", "2000y"] {
            assert!(Period::parse(bad).is_err(), "{bad:?}");
        }
        let errs = Retention::compile(
            Some("ten years"),
            false,
            vec![
                policy("a", "1q", |c| c.client = OneOrMany::One("999.1.1.1".into())),
                RawPolicy {
                    query: Some("nokey:x".into()),
                    keep: "1d".into(),
                    ..RawPolicy::default()
                },
            ],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("retention.default"));
        assert!(
            errs.iter().any(|e| e.contains("\"a\": client")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("\"policy 2\": query")),
            "{errs:#?}"
        );
        assert!(Keep::parse("10y")
            .unwrap()
            .at_least(&Keep::parse("1y").unwrap()));
        assert!(!Keep::parse("1m")
            .unwrap()
            .at_least(&Keep::parse("30d").unwrap()));
    }

    #[test]
    fn unreachable_and_contradictory_policies_are_named() {
        let r = Retention::compile(
            None,
            false,
            vec![
                policy("bob", "1y", |c| c.login = OneOrMany::One("bob".into())),
                policy("bob again", "2y", |c| {
                    c.login = OneOrMany::Many(vec!["BOB".into()])
                }),
                policy("all", "5y", |c| c.login = OneOrMany::Many(Vec::new())),
                policy("after all", "1d", |c| {
                    c.login = OneOrMany::One("carol".into())
                }),
            ],
        )
        .unwrap();
        let w = r.warnings();
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].contains("\"bob again\" contradicts") && w[0].contains("\"bob\""));
        assert!(w[1].contains("\"after all\" is never used") && w[1].contains("\"all\""));
    }

    #[test]
    fn a_policy_describes_its_keys_as_written() {
        let r = Retention::compile(
            Some("1y"),
            false,
            vec![
                policy("news", "90d", |c| {
                    c.sender =
                        OneOrMany::Many(vec!["*@news.example".into(), "*@list.example".into()]);
                    c.size_over = Some(mailkeep_rules::Size::Text("10M".into()));
                }),
                policy("all", "2y", |_| {}),
            ],
        )
        .unwrap()
        .describe();
        assert_eq!(
            r["policies"][0]["matches"],
            "sender: *@news.example, *@list.example; size_over: 10M"
        );
        assert_eq!(r["policies"][1]["matches"], "everything");
    }

    #[test]
    fn a_locked_retention_may_only_lengthen() {
        let old = Retention::compile(
            Some("1y"),
            true,
            vec![policy("finance", "10y", |c| {
                c.login = OneOrMany::One("*@finance.example.com".into())
            })],
        )
        .unwrap()
        .describe();
        let try_ = |default: &str, locked: bool, policies: Vec<RawPolicy>| {
            Retention::compile(Some(default), locked, policies)
                .unwrap()
                .lengthens(&old)
        };
        let finance = |keep: &str| {
            policy("finance", keep, |c| {
                c.login = OneOrMany::One("*@finance.example.com".into())
            })
        };
        assert!(try_(
            "2y",
            true,
            vec![
                finance("12y"),
                policy("news", "1y", |c| c.from = OneOrMany::One("*@news.*".into()))
            ]
        )
        .is_ok());
        for (why, result) in [
            ("unlocked", try_("1y", false, vec![finance("10y")])),
            ("default shorter", try_("6m", true, vec![finance("10y")])),
            ("policy shorter", try_("1y", true, vec![finance("5y")])),
            ("policy removed", try_("1y", true, vec![])),
            (
                "keys changed",
                try_(
                    "1y",
                    true,
                    vec![policy("finance", "10y", |c| {
                        c.login = OneOrMany::One("*".into())
                    })],
                ),
            ),
            (
                "new one shorter than the default",
                try_("1y", true, vec![finance("10y"), policy("x", "90d", |_| {})]),
            ),
        ] {
            assert!(result.is_err(), "{why}");
        }
        // Not locked before: anything goes.
        let free = Retention::compile(Some("10y"), false, vec![])
            .unwrap()
            .describe();
        assert!(Retention::compile(Some("1d"), false, vec![])
            .unwrap()
            .lengthens(&free)
            .is_ok());
    }

    #[test]
    fn the_plan_counts_by_month() {
        let r = retention();
        let mut plan = Plan::default();
        let now = day(2026, 7, 1);
        for (i, login) in [Some("a@finance.example.com"), None, None]
            .iter()
            .enumerate()
        {
            let from = if i == 1 {
                "n@news.example"
            } else {
                "x@example.com"
            };
            plan.add(
                &r.decide(&hit(i as i64, *login, from, day(2026, 3, 1)), &[]),
                now,
            );
        }
        assert_eq!(plan.by_month.get("2036-03"), Some(&2));
        assert_eq!(plan.by_month.get("2026-05"), Some(&1));
        assert_eq!(plan.expired_now, 1);
        assert_eq!(plan.by_policy.get("default"), Some(&1));
    }
}
