//! The query property test: random deliveries, many of them missing fields
//! (no login, the null sender, no queue id, no client, no or an unreadable
//! Date header, no tags, no attachments), go into a real store; random
//! queries from the whole grammar (every key, AND, OR, negation, groups)
//! are run by `Store::search` and by a reference evaluator written here
//! over the in-memory model of each delivery. The two must give the same
//! set of delivery ids for every query.
//!
//! The reference is deliberately naive: it reads the meaning of each term
//! from docs/search.md, not from the SQL (its own glob matcher, its own
//! interval arithmetic, `ipnet` for networks, a tokenizer standing in for
//! FTS5's on this ASCII data). A three-valued SQL condition (a NULL from a
//! missing field swallowed by `NOT`) makes the two disagree on the first
//! negated query over such a delivery.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ipnet::IpNet;
use mailkeep_envelope::{CapturePath, Envelope, RawMessage};
use mailkeep_query::{
    AddressField, ClientMatch, Expr, Moment, Precision, Query, Term, TextField, TimeField,
    TimeRange,
};
use mailkeep_store::{Store, StoreConfig};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A deterministic generator, so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// `None` often: missing values are the point of this test.
    fn maybe<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if self.chance(40) {
            None
        } else {
            Some(self.pick(items).clone())
        }
    }
}

const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "invoice", "Report"];
const LOGINS: &[&str] = &["bob", "Bob", "alice", "carol@example.com", "x_y"];
const SENDERS: &[&str] = &[
    "alice@example.com",
    "BOB@Example.org",
    "x_y@ex.com",
    "xay@ex.com",
    "100%@ex.com",
    "carol@sub.example.org",
];
const ADDRESSES: &[&str] = &[
    "a@example.com",
    "b@example.org",
    "c@example.net",
    "d@EXAMPLE.com",
    "x_y@ex.com",
    "e@sub.example.org",
];
const QUEUE_IDS: &[&str] = &["BA13C9A45E3", "4XyZ1", "q2ab"];
const CLIENT_ADDRESSES: &[&str] = &[
    "192.0.2.1",
    "[10.1.2.3]",
    "IPv6:2001:db8::5",
    "2001:db8:1::9",
    "unknown",
    "::ffff:10.9.8.7",
    "198.51.100.77",
];
const HOSTNAMES: &[&str] = &[
    "mx.example.com",
    "MAIL.Example.COM",
    "host.other.net",
    "unknown",
    "example.com",
];
const TAGS: &[&str] = &["vip", "audit", "Legal", "a_b"];
const CAPTURES: &[CapturePath] = &[
    CapturePath::Milter,
    CapturePath::Filter,
    CapturePath::Pipe,
    CapturePath::Import,
];

/// One message as generated: what its headers say and what its text is.
#[derive(Debug, Clone)]
struct Message {
    bytes: Vec<u8>,
    /// Its Message-ID and the ids its In-Reply-To and References name.
    links: Vec<String>,
    /// Lower-cased addresses the header To and Cc name.
    header_rcpts: BTreeSet<String>,
    body: String,
}

/// One delivery as the model knows it, plus what the store extracted from
/// its message (header fields as the catalog indexes them).
#[derive(Debug, Clone)]
struct Model {
    id: i64,
    hash: String,
    capture: &'static str,
    received: i64,
    login: Option<String>,
    sender: Option<String>,
    recipients: Vec<String>,
    queue_id: Option<String>,
    client_address: Option<String>,
    client_hostname: Option<String>,
    tags: Vec<String>,
    size: u64,
    header_rcpts: BTreeSet<String>,
    body: String,
    from: String,
    to: String,
    cc: String,
    subject: String,
    message_id: String,
    date: Option<i64>,
    /// `name type` per attachment, as the index has them.
    attachments: Vec<String>,
    /// Its message's Message-ID and references.
    links: Vec<String>,
    /// Every id of its message's conversation: the ids linked to its
    /// links, step by step, over all the messages.
    conversation: BTreeSet<String>,
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
}

/// Capture times: mostly random, some exactly on the boundaries a query
/// names (midnight, noon, the last microsecond of a minute).
fn received_time(rng: &mut Rng) -> DateTime<Utc> {
    let day = Duration::days(rng.below(3) as i64);
    match rng.below(5) {
        0 => base() + day,
        1 => base() + day + Duration::hours(12),
        2 => base() + day + Duration::hours(12) - Duration::microseconds(1),
        _ => {
            base()
                + day
                + Duration::seconds(rng.below(86_400) as i64)
                + Duration::microseconds(rng.below(1_000_000) as i64)
        }
    }
}

fn message(rng: &mut Rng, n: usize, earlier: &[String]) -> Message {
    let mut headers = Vec::new();
    headers.push(format!(
        "From: {}",
        rng.pick(&[
            "Alice Example <alice@example.com>",
            "carol@example.net",
            "Bob <BOB@Example.org>"
        ])
    ));
    let mut header_rcpts = BTreeSet::new();
    for name in ["To", "Cc"] {
        if name == "Cc" && rng.chance(50) {
            continue;
        }
        let mut list = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let a = *rng.pick(ADDRESSES);
            header_rcpts.insert(a.to_ascii_lowercase());
            list.push(match rng.below(3) {
                0 => a.to_string(),
                1 => format!("Some One <{a}>"),
                _ => format!("\"Doe, Jane\" <{a}>"),
            });
        }
        headers.push(format!("{name}: {}", list.join(", ")));
    }
    let subject: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(WORDS)).collect();
    headers.push(format!("Subject: {} n{n}", subject.join(" ")));
    let own = format!("m{n}.{}@example.com", rng.pick(WORDS));
    headers.push(format!("Message-ID: <{own}>"));
    // Replies to earlier messages, and references to messages that are
    // not there (they link the messages naming them all the same).
    let mut links = vec![own];
    if !earlier.is_empty() && rng.chance(40) {
        let parent = rng.pick(earlier).clone();
        headers.push(format!("In-Reply-To: <{parent}>"));
        links.push(parent);
    }
    if rng.chance(25) {
        let mut refs = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let id = if !earlier.is_empty() && rng.chance(50) {
                rng.pick(earlier).clone()
            } else {
                format!("lost{}@example.com", rng.below(6))
            };
            refs.push(format!("<{id}>"));
            if !links.contains(&id) {
                links.push(id);
            }
        }
        headers.push(format!("References: {}", refs.join(" ")));
    }
    match rng.below(3) {
        0 => {}
        1 => headers.push("Date: not a date at all".into()),
        _ => {
            let t = received_time(rng);
            let offset = *rng.pick(&[0, 3600, -19800]);
            let local = t.with_timezone(&chrono::FixedOffset::east_opt(offset).unwrap());
            headers.push(format!("Date: {}", local.to_rfc2822()));
        }
    }
    let body: Vec<&str> = (0..rng.below(6)).map(|_| *rng.pick(WORDS)).collect();
    let body = body.join(" ");
    let mut bytes = headers.join("\r\n");
    if rng.chance(35) {
        let name = rng.pick(&["report.pdf", "data.csv", "Invoice beta.txt"]);
        bytes.push_str(&format!(
            "\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
             --XX\r\nContent-Type: text/plain\r\n\r\n{body}\r\n\
             --XX\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJeLjz9MK\r\n--XX--\r\n"
        ));
    } else {
        bytes.push_str(&format!("\r\n\r\n{body}\r\n"));
    }
    // Sizes spread out so size> and size< split the set.
    bytes.push_str(&" ".repeat(rng.below(3000)));
    bytes.push_str("\r\n");
    Message {
        bytes: bytes.into_bytes(),
        links,
        header_rcpts,
        body,
    }
}

fn build(store: &Store, rng: &mut Rng, count: usize) -> Vec<Model> {
    let mut messages: Vec<Message> = Vec::new();
    let mut out = Vec::new();
    for n in 0..count {
        // Some deliveries of an earlier message: one message row, several
        // envelopes.
        let msg = if !messages.is_empty() && rng.chance(20) {
            rng.pick(&messages).clone()
        } else {
            let earlier: Vec<String> = messages.iter().map(|m| m.links[0].clone()).collect();
            let m = message(rng, n, &earlier);
            messages.push(m.clone());
            m
        };
        let capture = *rng.pick(CAPTURES);
        let mut env = Envelope::new(capture, RawMessage::from_bytes(msg.bytes.clone()));
        env.received = received_time(rng);
        env.login = rng.maybe(LOGINS).map(str::to_string);
        env.sender = rng.maybe(SENDERS).map(str::to_string);
        let mut rcpts: Vec<String> = (0..1 + rng.below(3))
            .map(|_| rng.pick(ADDRESSES).to_string())
            .collect();
        rcpts.dedup();
        env.recipients = rcpts;
        env.queue_id = rng.maybe(QUEUE_IDS).map(str::to_string);
        env.client.address = rng.maybe(CLIENT_ADDRESSES).map(str::to_string);
        env.client.hostname = rng.maybe(HOSTNAMES).map(str::to_string);
        env.tags = (0..rng.below(3))
            .map(|_| rng.pick(TAGS).to_string())
            .collect();
        let stored = store.put(&env).expect("store the delivery");
        if stored.duplicate {
            continue;
        }
        let hit = store.get(stored.id).expect("the delivery reads back");
        let attachments: Vec<serde_json::Value> =
            serde_json::from_str(&hit.attachments).expect("attachment list");
        out.push(Model {
            id: stored.id,
            hash: stored.hash.clone(),
            capture: capture.as_str(),
            received: env.received.timestamp_micros(),
            login: env.login.clone(),
            sender: env.sender.clone(),
            recipients: env.recipients.clone(),
            queue_id: env.queue_id.clone(),
            client_address: env.client.address.clone(),
            client_hostname: env.client.hostname.clone(),
            tags: env.tags.clone(),
            size: msg.bytes.len() as u64,
            header_rcpts: msg.header_rcpts.clone(),
            body: msg.body.clone(),
            from: hit.from,
            to: hit.to,
            cc: hit.cc,
            subject: hit.subject,
            message_id: hit.message_id.unwrap_or_default(),
            date: hit.date,
            attachments: attachments
                .iter()
                .map(|a| {
                    format!(
                        "{} {}",
                        a["name"].as_str().unwrap_or(""),
                        a["type"].as_str().unwrap_or("")
                    )
                })
                .collect(),
            links: msg.links.clone(),
            conversation: BTreeSet::new(),
        });
    }
    // The conversations: sets of ids, merged whenever a message's links
    // touch more than one.
    let mut conversations: Vec<BTreeSet<String>> = Vec::new();
    for d in &out {
        let mut merged: BTreeSet<String> = d.links.iter().cloned().collect();
        conversations.retain(|c| {
            if c.is_disjoint(&merged) {
                true
            } else {
                merged.extend(c.iter().cloned());
                false
            }
        });
        conversations.push(merged);
    }
    for d in &mut out {
        d.conversation = conversations
            .iter()
            .find(|c| c.contains(&d.links[0]))
            .cloned()
            .unwrap_or_default();
    }
    out
}

// ---------------------------------------------------------------------------
// The reference evaluator.

/// FTS5's unicode61 tokenizer on ASCII text: runs of letters and digits,
/// folded to lower case.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The phrase's tokens appear one after another in the column.
fn phrase_in(phrase: &str, column: &str) -> bool {
    let want = tokens(phrase);
    let have = tokens(column);
    !want.is_empty() && have.windows(want.len()).any(|w| w == want.as_slice())
}

/// `*` matches any run, everything else itself ignoring ASCII case.
fn glob(pattern: &str, value: &str) -> bool {
    fn go(p: &[u8], v: &[u8]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some((b'*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some((c, rest)) => v
                .split_first()
                .is_some_and(|(d, vr)| c.eq_ignore_ascii_case(d) && go(rest, vr)),
        }
    }
    go(pattern.as_bytes(), value.as_bytes())
}

/// The documented address rule: one pair of angle brackets dropped, `<>`
/// the null sender (`None`), a leading `@` meaning any local part.
fn address_rule(value: &str) -> Option<String> {
    let inner = if value.len() >= 2 && value.starts_with('<') && value.ends_with('>') {
        &value[1..value.len() - 1]
    } else {
        value
    };
    match inner {
        "" => None,
        i if i.starts_with('@') => Some(format!("*{i}")),
        i => Some(i.to_string()),
    }
}

fn client_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim_start_matches('[').trim_end_matches(']');
    let t = t.strip_prefix("IPv6:").unwrap_or(t);
    match t.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// `[low, high)` in seconds, from the documented rules: a moment is its
/// whole day, minute or second; a range ends after a date's whole day or
/// at a date-time; after: is inclusive, before: exclusive.
fn interval(range: &TimeRange) -> (Option<i64>, Option<i64>) {
    let start = |m: &Moment| m.start.timestamp();
    let end = |m: &Moment| {
        start(m)
            + match m.precision {
                Precision::Day => 86_400,
                Precision::Minute => 60,
                Precision::Second => 1,
            }
    };
    match range {
        TimeRange::At(m) => (Some(start(m)), Some(end(m))),
        TimeRange::Span { from, to } => (
            from.as_ref().map(start),
            to.as_ref().map(|m| match m.precision {
                Precision::Day => end(m),
                _ => start(m),
            }),
        ),
        TimeRange::After(m) => (Some(start(m)), None),
        TimeRange::Before(m) => (None, Some(start(m))),
    }
}

/// `low <= t < high`, `t` in units of `scale` per second.
fn within(t: i64, (low, high): (Option<i64>, Option<i64>), scale: i64) -> bool {
    low.is_none_or(|l| t >= l * scale) && high.is_none_or(|h| t < h * scale)
}

fn term_matches(term: &Term, d: &Model) -> bool {
    match term {
        Term::Text { field, value } => {
            let p = value.as_str();
            let message_columns = || {
                [
                    d.from.as_str(),
                    d.to.as_str(),
                    d.cc.as_str(),
                    d.subject.as_str(),
                    d.body.as_str(),
                    &d.attachments.join("\n"),
                    d.message_id.as_str(),
                ]
                .iter()
                .any(|c| phrase_in(p, c))
            };
            let sender = d.sender.clone().unwrap_or_default();
            match field {
                None => message_columns(),
                Some(TextField::From) => phrase_in(p, &d.from) || phrase_in(p, &sender),
                Some(TextField::To) => {
                    phrase_in(p, &d.to)
                        || phrase_in(p, &d.cc)
                        || phrase_in(p, &d.recipients.join("\n"))
                }
                Some(TextField::Cc) => phrase_in(p, &d.cc),
                Some(TextField::Subject) => phrase_in(p, &d.subject),
                Some(TextField::Body) => phrase_in(p, &d.body),
                Some(TextField::Attachment) => phrase_in(p, &d.attachments.join("\n")),
                Some(TextField::MessageId) => phrase_in(p, &d.message_id),
                Some(TextField::ToHeaders) => phrase_in(p, &d.to) || phrase_in(p, &d.cc),
            }
        }
        Term::Address { field, value } => {
            let rule = address_rule(value);
            match (field, rule) {
                (AddressField::Sender, None) => d.sender.is_none(),
                (_, None) => false,
                (AddressField::Sender, Some(g)) => d.sender.as_deref().is_some_and(|s| glob(&g, s)),
                (AddressField::Login, Some(g)) => d.login.as_deref().is_some_and(|s| glob(&g, s)),
                (AddressField::Recipient, Some(g)) => d.recipients.iter().any(|r| glob(&g, r)),
                (AddressField::Bcc, Some(g)) => d
                    .recipients
                    .iter()
                    .any(|r| glob(&g, r) && !d.header_rcpts.contains(&r.to_ascii_lowercase())),
            }
        }
        Term::Queue(q) => d.queue_id.as_deref().is_some_and(|id| glob(q, id)),
        Term::Client(ClientMatch::Net { addr, prefix }) => {
            let net = IpNet::new(*addr, *prefix).expect("a valid prefix");
            d.client_address
                .as_deref()
                .and_then(client_ip)
                .is_some_and(|ip| net.contains(&ip))
        }
        Term::Client(ClientMatch::Host(h)) => {
            d.client_hostname.as_deref().is_some_and(|n| glob(h, n))
        }
        Term::Capture(c) => d.capture == c,
        Term::Tag(t) => d.tags.iter().any(|x| glob(t, x)),
        Term::Size { cmp, bytes } => cmp.holds(d.size, *bytes),
        Term::Time { field, range } => match field {
            TimeField::Received => within(d.received, interval(range), 1_000_000),
            TimeField::Date => d.date.is_some_and(|t| within(t, interval(range), 1)),
        },
        Term::HasAttachment => !d.attachments.is_empty(),
        Term::Id(id) => match id.strip_prefix("b3:") {
            Some(hex) => d.hash.starts_with(hex),
            None => id.parse::<i64>() == Ok(d.id),
        },
        // A message is in the thread of an id when that id is in its
        // conversation (only ids some message has are in one).
        Term::Thread(id) => d.conversation.contains(id),
    }
}

fn matches(e: &Expr, d: &Model) -> bool {
    match e {
        Expr::Term(t) => term_matches(t, d),
        Expr::Not(e) => !matches(e, d),
        Expr::And(v) => v.iter().all(|e| matches(e, d)),
        Expr::Or(v) => v.iter().any(|e| matches(e, d)),
    }
}

fn reference(q: &Query, model: &[Model]) -> BTreeSet<i64> {
    model
        .iter()
        .filter(|d| q.expr.as_ref().is_none_or(|e| matches(e, d)))
        .map(|d| d.id)
        .collect()
}

// ---------------------------------------------------------------------------
// Queries.

/// A moment near the generated times, in every form the parser takes.
fn moment_text(rng: &mut Rng, model: &[Model]) -> String {
    let d = rng.pick(model);
    let t = DateTime::from_timestamp_micros(d.received).unwrap();
    match rng.below(6) {
        0 => format!(
            "2026-{}",
            rng.pick(&["11-30", "12-01", "12-02", "12-03", "12-04"])
        ),
        1 => t.format("%Y-%m-%d").to_string(),
        2 => t.format("%Y-%m-%dT%H:%M").to_string(),
        3 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        4 => {
            let local = t.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap());
            local.format("%Y-%m-%dT%H:%M:%S+01:00").to_string()
        }
        _ => rng
            .pick(&[
                "2026-12-02T12:00",
                "2026-12-01T00:00Z",
                "2026-12-02T11:59:59",
                "2026-12-02T13:00+01:00",
            ])
            .to_string(),
    }
}

fn term_text(rng: &mut Rng, model: &[Model]) -> String {
    let d = rng.pick(model).clone();
    match rng.below(32) {
        30 | 31 => {
            let pool: Vec<&String> = d.conversation.iter().collect();
            let id = if pool.is_empty() || rng.chance(15) {
                format!("lost{}@example.com", rng.below(8))
            } else {
                rng.pick(&pool).to_string()
            };
            match rng.below(3) {
                0 => format!("thread:<{id}>"),
                1 => format!("thread:\"{id}\""),
                _ => format!("thread:{id}"),
            }
        }
        0 => rng.pick(WORDS).to_string(),
        1 => format!("\"{} {}\"", rng.pick(WORDS), rng.pick(WORDS)),
        2 => format!(
            "{}:{}",
            rng.pick(&[
                "subject",
                "body",
                "from",
                "to",
                "cc",
                "filename",
                "attachment",
                "msgid"
            ]),
            rng.pick(&[
                "alpha", "beta", "example", "alice", "bob", "report", "pdf", "csv", "jane", "m3",
                "org"
            ])
        ),
        3 | 4 => format!(
            "login:{}",
            rng.pick(&[
                "bob",
                "BOB",
                "*",
                "b*",
                "@example.com",
                "x_y",
                "xay",
                "carol@example.com",
                "<bob>"
            ])
        ),
        5 | 6 => format!(
            "sender:{}",
            rng.pick(&[
                "<>",
                "\"<>\"",
                "*",
                "alice@example.com",
                "<bob@example.org>",
                "@example.org",
                "@ex.com",
                "x_y@ex.com",
                "100%@ex.com",
                "*@*example.org",
                "@sub.example.org",
            ])
        ),
        7 => format!(
            "{}:{}",
            rng.pick(&["recipient", "rcpt"]),
            rng.pick(&[
                "a@example.com",
                "@example.com",
                "D@example.COM",
                "*",
                "x_y@ex.com",
                "*.org",
                "@org"
            ])
        ),
        8 | 9 => format!(
            "bcc:{}",
            rng.pick(&[
                "*",
                "@example.com",
                "a@example.com",
                "d@example.com",
                "@example.org",
                "*@sub.example.org"
            ])
        ),
        10 => format!(
            "queue:{}",
            rng.pick(&[
                "BA13C9A45E3",
                "ba13c9a45e3",
                "4xyz1",
                "Q2AB",
                "nope",
                "*",
                "ba13*"
            ])
        ),
        11 | 12 => format!(
            "client:{}",
            rng.pick(&[
                "192.0.2.1",
                "192.0.2.0/24",
                "10.0.0.0/8",
                "10.9.8.7",
                "2001:db8::/32",
                "2001:db8::5",
                "0.0.0.0/0",
                "::/0",
                "::ffff:10.0.0.0/104",
                "*.example.com",
                "mail.example.com",
                "example.com",
                "unknown",
                "*",
            ])
        ),
        13 => format!(
            "capture:{}",
            rng.pick(&["milter", "filter", "pipe", "import"])
        ),
        14 => format!(
            "tag:{}",
            rng.pick(&["vip", "VIP", "legal", "*", "a_b", "axb", "a*"])
        ),
        15 | 16 => format!(
            "size{}{}",
            rng.pick(&[">", "<", ">=", "<="]),
            match rng.below(3) {
                0 => d.size.to_string(),
                1 => format!("{}k", 1 + rng.below(3)),
                _ => (200 + rng.below(3000)).to_string(),
            }
        ),
        17..=19 => {
            let key = rng.pick(&["received", "date"]);
            match rng.below(4) {
                0 => format!("{key}:{}", moment_text(rng, model)),
                1 => format!(
                    "{key}:{}..{}",
                    moment_text(rng, model),
                    moment_text(rng, model)
                ),
                2 => format!("{key}:{}..", moment_text(rng, model)),
                _ => format!("{key}:..{}", moment_text(rng, model)),
            }
        }
        20 | 21 => format!(
            "{}:{}",
            rng.pick(&["after", "before"]),
            moment_text(rng, model)
        ),
        22 => "has:attachment".into(),
        23 => format!("id:{}", d.id),
        24 => format!("id:b3:{}", &d.hash[..1 + rng.below(4)]),
        25 => format!("login:{}", d.login.as_deref().unwrap_or("nobody")),
        26 => format!("queue:{}", d.queue_id.as_deref().unwrap_or("none")),
        27 => format!(
            "client:{}",
            d.client_hostname.as_deref().unwrap_or("none.example")
        ),
        28 => format!(
            "date:{}",
            rng.pick(&["2026-12-01", "2026-12-02", "2026-12-03"])
        ),
        _ => format!("tag:{}", d.tags.first().map_or("none", String::as_str)),
    }
}

fn expr_text(rng: &mut Rng, model: &[Model], depth: usize) -> String {
    let choice = if depth == 0 { 0 } else { rng.below(10) };
    match choice {
        0..=3 => term_text(rng, model),
        4 => format!("-{}", term_text(rng, model)),
        5 => format!("-({})", expr_text(rng, model, depth - 1)),
        6 => format!(
            "{} {}",
            expr_text(rng, model, depth - 1),
            expr_text(rng, model, depth - 1)
        ),
        7 => format!(
            "{} AND {}",
            expr_text(rng, model, depth - 1),
            expr_text(rng, model, depth - 1)
        ),
        8 => format!(
            "{} OR {}",
            expr_text(rng, model, depth - 1),
            expr_text(rng, model, depth - 1)
        ),
        _ => format!("({})", expr_text(rng, model, depth - 1)),
    }
}

#[test]
fn search_agrees_with_a_reference_evaluation_over_deliveries_with_missing_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let mut rng = Rng(0x5eed_0f3a_11a7);
    let model = build(&store, &mut rng, 70);
    assert!(model.len() > 55, "only {} deliveries", model.len());

    // The data set really has the missing values this test is about.
    let missing = |f: &dyn Fn(&Model) -> bool| model.iter().filter(|d| f(d)).count();
    for (what, n) in [
        ("no login", missing(&|d| d.login.is_none())),
        ("null sender", missing(&|d| d.sender.is_none())),
        ("no queue id", missing(&|d| d.queue_id.is_none())),
        (
            "no client address",
            missing(&|d| d.client_address.is_none()),
        ),
        ("no client host", missing(&|d| d.client_hostname.is_none())),
        ("no Date", missing(&|d| d.date.is_none())),
        ("a Date", missing(&|d| d.date.is_some())),
        ("no tags", missing(&|d| d.tags.is_empty())),
        ("no attachment", missing(&|d| d.attachments.is_empty())),
        ("an attachment", missing(&|d| !d.attachments.is_empty())),
        (
            "a conversation of four ids or more",
            missing(&|d| d.conversation.len() >= 4),
        ),
        (
            "a conversation of its own",
            missing(&|d| d.conversation.len() == 1),
        ),
        (
            "an envelope-only recipient",
            missing(&|d| {
                d.recipients
                    .iter()
                    .any(|r| !d.header_rcpts.contains(&r.to_ascii_lowercase()))
            }),
        ),
    ] {
        assert!(n >= 5, "only {n} deliveries with {what}");
    }

    let reader = Store::open_read_only(StoreConfig::new(dir.path().join("s"))).unwrap();
    // A page by capture time is first looked for among the newest (or
    // oldest) deliveries: with a window of ten, these 70 go through both
    // that and the planner's plan, and each page must be exactly the one
    // the reference orders.
    store.set_page_window(10);
    reader.set_page_window(10);
    let by_time: std::collections::HashMap<i64, i64> =
        model.iter().map(|d| (d.id, d.received)).collect();
    let all: BTreeSet<i64> = model.iter().map(|d| d.id).collect();
    let (mut some, mut negated_some) = (0, 0);
    let queries = 600;
    for i in 0..queries {
        let text = expr_text(&mut rng, &model, 1 + i % 4);
        let query = mailkeep_query::parse(&text)
            .unwrap_or_else(|e| panic!("generated query {text:?} does not parse: {e}"));
        assert_eq!(
            mailkeep_query::parse(&query.to_string()).as_ref(),
            Ok(&query),
            "{text:?} prints as {query}"
        );
        let want = reference(&query, &model);
        // Every other query through a read-only open, as the CLI searches.
        let searcher = if i % 2 == 0 { &store } else { &reader };
        let got: BTreeSet<i64> = searcher
            .search(&query, None)
            .unwrap_or_else(|e| panic!("search {text:?}: {e}"))
            .iter()
            .map(|h| h.record.id)
            .collect();
        // A page of it (its full-text matches materialised for the page
        // and the count): the whole set, and a short page with the count.
        for limit in [1000, 3] {
            let page = mailkeep_store::catalog::Page {
                offset: 0,
                limit,
                order: mailkeep_store::catalog::Order::NewestFirst,
                count_up_to: u64::MAX,
                facets: i % 3 == 0,
            };
            let found = searcher
                .search_page(&query, page)
                .unwrap_or_else(|e| panic!("search_page {text:?}: {e}"));
            assert_eq!(found.total, want.len() as u64, "{text:?} counted");
            let ids: BTreeSet<i64> = found.hits.iter().map(|h| h.record.id).collect();
            if limit == 1000 {
                assert_eq!(ids, want, "{text:?} paged");
            } else {
                assert!(
                    ids.is_subset(&want) && ids.len() == want.len().min(3),
                    "{text:?}"
                );
            }
        }
        // Short pages in both time orders, at two offsets: exactly the
        // reference's deliveries, in its order.
        let mut ordered: Vec<i64> = want.iter().copied().collect();
        ordered.sort_by_key(|id| (by_time[id], *id));
        for (order, offset) in [
            (mailkeep_store::catalog::Order::NewestFirst, 0),
            (mailkeep_store::catalog::Order::NewestFirst, 2),
            (mailkeep_store::catalog::Order::OldestFirst, 0),
            (mailkeep_store::catalog::Order::OldestFirst, 3),
        ] {
            let page = mailkeep_store::catalog::Page {
                offset,
                limit: 3,
                order,
                count_up_to: u64::MAX,
                facets: false,
            };
            let found = searcher
                .search_page(&query, page)
                .unwrap_or_else(|e| panic!("search_page {text:?}: {e}"));
            let mut expected = ordered.clone();
            if order == mailkeep_store::catalog::Order::NewestFirst {
                expected.reverse();
            }
            let expected: Vec<i64> = expected.into_iter().skip(offset as usize).take(3).collect();
            let got: Vec<i64> = found.hits.iter().map(|h| h.record.id).collect();
            assert_eq!(got, expected, "{text:?} {order:?} from {offset}");
            assert_eq!(found.total, want.len() as u64, "{text:?} {order:?} counted");
        }
        if got != want {
            let differ: Vec<&Model> = model
                .iter()
                .filter(|d| got.contains(&d.id) != want.contains(&d.id))
                .collect();
            panic!(
                "query {text:?} (parsed: {query})\n  store:     {got:?}\n  reference: {want:?}\n  \
                 deliveries that differ: {differ:#?}"
            );
        }
        if !want.is_empty() && want != all {
            some += 1;
            if text.contains('-') {
                negated_some += 1;
            }
        }
    }
    // Most queries split the set, so agreement means something.
    assert!(some > queries / 3, "only {some} queries split the set");
    assert!(
        negated_some > queries / 10,
        "only {negated_some} negated queries split the set"
    );
}
