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
