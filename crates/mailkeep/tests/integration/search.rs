//! `mailkeep search` and `export` queries through the real binary: negation
//! over deliveries that lack the field, `OR` and groups, the admin's keys
//! (queue id, envelope, client, capture path, tags, sizes, dates), unknown
//! keys as usage errors, and queries that start with `-` without `--`.
//!
//! The exhaustive comparison of the SQL against a reference evaluation is
//! the store's property test (`crates/store/tests/query_property.rs`); these
//! tests pin what a user types at the command line.

use crate::util::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;

const EX_NOTHING: i32 = 1;
const EX_USAGE: i32 = 64;

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A sandbox whose one rule archives everything into a store.
struct Archive {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Archive {
    fn new() -> Archive {
        let dir = sandbox();
        let cfg = write_config(
            dir.path(),
            &format!(
                "[store]\npath = \"{}\"\n[[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
                dir.path().join("store").display()
            ),
        );
        Archive { _dir: dir, cfg }
    }

    fn run(&self, args: &[&str]) -> Output {
        mailkeep(&self.cfg)
            .args(args)
            .env_remove("MAILKEEP_LOG")
            .output()
            .expect("run mailkeep")
    }

    /// Archives `message` through `mailkeep pipe ARGS`; returns its id.
    #[track_caller]
    fn pipe(&self, args: &[&str], message: &[u8]) -> i64 {
        let out = pipe(&self.cfg, args, message);
        assert_eq!(code(&out), 0, "pipe {args:?}: {}", text(&out.stderr));
        self.ids("").into_iter().max().expect("a delivery")
    }

    /// Delivery ids `search QUERY --json` prints, sorted; empty on exit 1.
    #[track_caller]
    fn ids(&self, query: &str) -> Vec<i64> {
        let out = self.run(&["search", "--json", "--", query]);
        let mut ids: Vec<i64> = match code(&out) {
            0 => text(&out.stdout)
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).expect("search --json line");
                    v["id"].as_i64().expect("id")
                })
                .collect(),
            EX_NOTHING => {
                assert!(out.stdout.is_empty(), "exit 1 but output");
                Vec::new()
            }
            c => panic!("search {query:?} exited {c}: {}", text(&out.stderr)),
        };
        ids.sort();
        ids
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.com\nTo: b@example.com\nSubject: {subject}\n\nhello\n").into_bytes()
}

/// Finding 1: `NOT (login = 'bob')` is NULL, not true, for a delivery with
/// no login, so the negation dropped every incoming and imported message.
#[test]
fn negated_login_finds_deliveries_without_a_login() {
    let a = Archive::new();
    let bobs = a.pipe(
        &[
            "--sender=bob@example.com",
            "--recipient=x@example.org",
            "--login=bob",
        ],
        &message("from bob"),
    );
    let anonymous = a.pipe(
        &["--sender=eve@example.net", "--recipient=x@example.org"],
        &message("incoming"),
    );
    assert_eq!(a.ids("login:bob"), [bobs]);
    assert_eq!(a.ids("-login:bob"), [anonymous]);
    assert_eq!(a.ids("hello -login:bob"), [anonymous]);
}

/// Finding 2 and "what users get": a query starting with `-` needs no
/// `--`, for `search` and `export`, with options before or after it.
#[test]
fn a_leading_dash_needs_no_double_dash() {
    let a = Archive::new();
    let bobs = a.pipe(
        &[
            "--sender=bob@example.com",
            "--recipient=x@example.org",
            "--login=bob",
        ],
        &message("from bob"),
    );
    let anonymous = a.pipe(&["--recipient=x@example.org"], &message("incoming"));
    for args in [
        &["search", "-login:bob", "--json"][..],
        &["search", "--json", "-login:bob"],
        &["search", "--json", "-(login:bob OR login:carol)"],
        &["search", "--json", "--limit", "5", "-login:bob"],
    ] {
        let out = a.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        let ids: Vec<i64> = text(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, [anonymous], "{args:?}");
    }
    // Queries that start like the short options -c (config) and -h (help).
    for q in ["-capture:milter", "-has:attachment", "-client:10.0.0.0/8"] {
        let mut both = vec![bobs, anonymous];
        both.sort();
        let out = a.run(&["search", q, "--json"]);
        assert_eq!(code(&out), 0, "{q}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 2, "{q}");
        assert_eq!(a.ids(q), both, "{q}");
    }
    let table = a.run(&["search", "-login:bob"]);
    assert_eq!(code(&table), 0, "{}", text(&table.stderr));
    assert!(text(&table.stdout).contains("incoming"));
    assert!(!text(&table.stdout).contains("from bob"));

    let out_path = a._dir.path().join("not-bob.mbox");
    let out = a.run(&[
        "export",
        "-login:bob",
        "--format",
        "mbox",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "export: {}", text(&out.stderr));
    let copies = read_mbox(&out_path);
    assert_eq!(copies.len(), 1, "one message exported");
    let copy = text(&copies[0]);
    assert!(copy.contains("Subject: incoming"), "{copy}");
    assert_eq!(a.ids("login:bob"), [bobs]);
}

/// Finding 2: `queue:`, `cc:`, `sender:`, `client:`, `filename:` were
/// words that matched nothing; an unknown key now is a usage error.
#[test]
fn unknown_key_is_a_usage_error_naming_the_keys_and_how_to_quote() {
    let a = Archive::new();
    a.pipe(
        &["--recipient=x@example.org"],
        &message("see http://x for more"),
    );
    for q in ["queu:BA13C9A45E3", "http://x", "subject:a Re:b"] {
        let out = a.run(&["search", q]);
        assert_eq!(code(&out), EX_USAGE, "{q}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("is not a search key"), "{q}: {err}");
        assert!(err.contains("queue, client, capture, tag"), "{q}: {err}");
        assert!(err.contains("quote it"), "{q}: {err}");
        assert!(out.stdout.is_empty());
    }
    // Quoted, it is text again.
    assert_eq!(a.ids("\"http://x\"").len(), 1);
    for (q, needle) in [
        ("(a OR b", "`(` at byte 0 is never closed"),
        ("a) b", "`)` at byte 1 closes no `(`"),
        ("a OR", "`OR` at byte 2 needs a term on each side"),
        ("client:10.0.0.0/33", "not an IP address or network"),
        ("capture:smtp", "milter, filter, pipe and import"),
        ("received:2026-12-02T25:00", "no such time of day"),
    ] {
        let out = a.run(&["search", q]);
        assert_eq!(code(&out), EX_USAGE, "{q}");
        assert!(
            text(&out.stderr).contains(needle),
            "{q}: {}",
            text(&out.stderr)
        );
    }
}

/// The keys an administrator reaches for, each with and without the
/// field present, through the real binary.
#[test]
fn admin_keys_queue_envelope_client_capture_tag_size_and_dates() {
    let a = Archive::new();
    // Outgoing, authenticated, with a Bcc and an attachment.
    let outgoing = a.pipe(
        &[
            "--sender=bob@example.com",
            "--recipient=carol@example.org",
            "--recipient=hidden@example.net",
            "--login=bob",
            "--queue-id=BA13C9A45E3",
            "--client-address=192.0.2.10",
            "--client-hostname=mx1.example.com",
            "--tag=outbound",
        ],
        b"From: Bob <bob@example.com>\nTo: Carol <carol@example.org>\nCc: dave@example.org\n\
          Subject: quarterly report\nDate: Wed, 02 Dec 2026 04:59:16 +0000\n\
          MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n\
          --XX\nContent-Type: text/plain\n\nsee attached\n\
          --XX\nContent-Type: application/pdf; name=\"q3.pdf\"\n\
          Content-Disposition: attachment; filename=\"q3.pdf\"\n\
          Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJeLjz9MK\n--XX--\n",
    );
    // A bounce: null sender, no login, no queue id, no client, no Date.
    let bounce = a.pipe(
        &["--sender=", "--recipient=bob@example.com"],
        format!(
            "From: MAILER-DAEMON@example.com\nTo: bob@example.com\nSubject: undeliverable\n\n{}\n",
            "x".repeat(5000)
        )
        .as_bytes(),
    );
    // Incoming from an IPv6 client with an unverified host name.
    let incoming = a.pipe(
        &[
            "--sender=eve@example.net",
            "--recipient=bob@example.com",
            "--client-address=IPv6:2001:db8::7",
            "--client-hostname=unknown",
        ],
        b"From: eve@example.net\nTo: bob@example.com\nSubject: hello\nDate: Tue, 01 Dec 2026 23:30:00 -0100\n\nhi\n",
    );
    let all = {
        let mut v = vec![outgoing, bounce, incoming];
        v.sort();
        v
    };
    let cases: &[(&str, &[i64])] = &[
        ("queue:BA13C9A45E3", &[outgoing]),
        ("queue:ba13c9a45e3", &[outgoing]),
        ("-queue:BA13C9A45E3", &[bounce, incoming]),
        ("queue:*", &[outgoing]),
        ("-queue:*", &[bounce, incoming]),
        ("cc:dave", &[outgoing]),
        ("-cc:dave", &[bounce, incoming]),
        ("bcc:hidden@example.net", &[outgoing]),
        ("bcc:carol@example.org", &[]),
        ("bcc:*", &[outgoing]),
        ("-bcc:*", &[bounce, incoming]),
        ("sender:<>", &[bounce]),
        ("-sender:<>", &[outgoing, incoming]),
        ("sender:@example.net", &[incoming]),
        ("sender:<BOB@example.com>", &[outgoing]),
        ("-sender:bob@example.com", &[bounce, incoming]),
        ("recipient:@example.com", &[bounce, incoming]),
        ("rcpt:hidden@example.net", &[outgoing]),
        ("login:*", &[outgoing]),
        ("-login:*", &[bounce, incoming]),
        ("client:192.0.2.0/24", &[outgoing]),
        ("-client:192.0.2.0/24", &[bounce, incoming]),
        ("client:2001:db8::/32", &[incoming]),
        ("client:*.example.com", &[outgoing]),
        ("-client:*.example.com", &[bounce, incoming]),
        ("capture:pipe", &all),
        ("-capture:milter", &all),
        ("tag:outbound", &[outgoing]),
        ("-tag:outbound", &[bounce, incoming]),
        ("filename:q3.pdf", &[outgoing]),
        ("attachment:pdf", &[outgoing]),
        ("size>4k", &[bounce]),
        ("size<=4k", &[outgoing, incoming]),
        ("date:2026-12-02T04:59:16Z", &[outgoing]),
        ("date:2026-12-02T05:59:16+01:00", &[outgoing]),
        // 23:30 -01:00 is 00:30 UTC on 2 December.
        ("date:2026-12-02", &[outgoing, incoming]),
        ("date:2026-12-01", &[]),
        ("-date:2026-12-02", &[bounce]),
        ("date:..2026-12-02T04:59", &[incoming]),
        ("date:2026-12-01..2026-12-02T12:00", &[outgoing, incoming]),
        ("received:2000-01-01..", &all),
        ("received:..2000-01-01", &[]),
        ("after:2000-01-01T00:00Z", &all),
        ("before:2000-01-01T00:00:00+01:00", &[]),
        ("-(sender:<> OR login:bob)", &[incoming]),
        ("login:bob OR sender:<>", &[outgoing, bounce]),
        ("(capture:pipe -login:bob) has:attachment", &[]),
        ("report OR hello", &[outgoing, incoming]),
        ("report or hello", &[]),
    ];
    for (q, want) in cases {
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(a.ids(q), want, "{q}");
    }
}
