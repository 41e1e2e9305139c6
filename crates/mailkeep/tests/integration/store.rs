//! The native store end to end through the CLI: import (idempotence),
//! byte-exact `show --raw` over the corpus, search, export read back by
//! Python's `zipfile`/`hashlib`/`mailbox`, `verify` and signed checkpoints,
//! hostile input, and encryption at rest.

use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

const EX_NOTHING: i32 = 1;
const EX_USAGE: i32 = 64;
const EX_DATAERR: i32 = 65;

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// A sandbox with a config whose one rule archives everything to a store.
struct Store {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Store {
    /// `extra` goes into the `[store]` section.
    fn new(extra: &str) -> Store {
        let dir = sandbox();
        let cfg = write_config(
            dir.path(),
            &format!(
                "{}[store]\npath = \"{}\"\n{extra}\n[[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
                spool_section(dir.path(), false),
                dir.path().join("store").display()
            ),
        );
        Store { dir, cfg }
    }

    fn path(&self, rest: &str) -> PathBuf {
        self.dir.path().join(rest)
    }

    fn run(&self, args: &[&str]) -> Output {
        mailkeep(&self.cfg)
            .args(args)
            .output()
            .expect("run mailkeep")
    }

    /// Runs and asserts exit 0; returns stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert_eq!(
            code(&out),
            0,
            "mailkeep {args:?}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out.stdout
    }

    #[track_caller]
    fn pipe(&self, args: &[&str], message: &[u8]) {
        let out = pipe(&self.cfg, args, message);
        assert_eq!(code(&out), 0, "pipe {args:?}: {}", text(&out.stderr));
    }

    /// `search QUERY --json`, one object per hit; empty when exit 1.
    #[track_caller]
    fn search(&self, query: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["search", query, "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        match code(&out) {
            0 => text(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("search --json line"))
                .collect(),
            EX_NOTHING => {
                assert!(out.stdout.is_empty(), "exit 1 but output");
                Vec::new()
            }
            c => panic!("search {query:?} exited {c}: {}", text(&out.stderr)),
        }
    }

    /// Delivery ids a query matches, newest first.
    #[track_caller]
    fn ids(&self, query: &str) -> Vec<i64> {
        self.search(query, &[])
            .iter()
            .map(|h| h["id"].as_i64().expect("id"))
            .collect()
    }

    #[track_caller]
    fn raw(&self, id: i64) -> Vec<u8> {
        self.ok(&["show", &id.to_string(), "--raw"])
    }

    #[track_caller]
    fn envelope(&self, id: i64) -> Value {
        serde_json::from_slice(&self.ok(&["show", &id.to_string(), "--envelope"]))
            .expect("envelope json")
    }

    #[track_caller]
    fn import(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut c = mailkeep(&self.cfg);
        c.arg("import").arg("--json").args(extra).args(paths);
        let out = c.output().expect("run import");
        assert_eq!(code(&out), 0, "import: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("import --json")
    }

    #[track_caller]
    fn stats(&self) -> Value {
        serde_json::from_slice(&self.ok(&["stats", "--json"])).expect("stats json")
    }

    /// `verify`: (exit code, stdout).
    fn verify(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["verify"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        (code(&out), text(&out.stdout))
    }

    fn sqlite(&self, sql: &str) -> String {
        python(
            "import sqlite3,sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             for row in c.execute(sys.argv[2]):\n\
             \x20   print('|'.join(str(v) for v in row))\n\
             c.commit()\n",
            &[
                self.path("store/catalog.sqlite").to_str().expect("utf-8"),
                sql,
            ],
        )
    }

    fn segments(&self) -> Vec<(PathBuf, Vec<u8>)> {
        files_under(&self.path("store/segments"))
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).expect("read segment");
                (p, b)
            })
            .collect()
    }
}

fn hex_arg(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn simple(n: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender {n} <s{n}@example.com>\n\
         To: r{n}@example.org\n\
         Subject: message {n}\n\
         Date: Sat, 21 Nov 2026 10:00:00 +0000\n\
         Message-ID: <{n}@example.com>\n\
         \n\
         {body}\n"
    )
    .into_bytes()
}

#[test]
fn import_of_mbox_maildir_and_eml_twice_adds_nothing_the_second_time() {
    let s = Store::new("");
    let mut mbox_msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| simple(&format!("mbox{i}"), &format!("body {i}")))
        .collect();
    mbox_msgs[1] = simple("mbox1", "first line\nFrom the desk of Alice\nlast line");
    mbox_msgs[2] = b"From: Eight Bit <8bit@example.com>\nTo: r@example.org\n\
        Subject: 8-bit body\nContent-Type: text/plain; charset=utf-8\n\
        Content-Transfer-Encoding: 8bit\n\ncaf\xc3\xa9 na\xc3\xafve \xff\xfe raw bytes\n"
        .to_vec();
    let maildir_msgs: Vec<Vec<u8>> = (0..3)
        .map(|i| simple(&format!("maildir{i}"), &format!("maildir body {i}")))
        .collect();
    let eml = simple("loose", "a loose .eml file");

    let mbox = s.path("in/box.mbox");
    let maildir = s.path("in/Maildir");
    let eml_path = s.path("in/loose.eml");
    std::fs::create_dir_all(s.path("in")).expect("mkdir");
    std::fs::write(&eml_path, &eml).expect("write eml");
    python_mailboxes(&mbox, &maildir, &mbox_msgs, &maildir_msgs);
    // Python quoted the body's `From ` line: the file really exercises it.
    let mbox_bytes = std::fs::read(&mbox).expect("read mbox");
    assert!(mbox_bytes
        .windows(b"\n>From the desk".len())
        .any(|w| w == b"\n>From the desk"));

    let first = s.import(&[&mbox, &maildir, &eml_path], &[]);
    let want = [
        ("messages", 9),
        ("new_deliveries", 9),
        ("already_archived", 0),
        ("new_messages", 9),
        ("failed", 0),
        ("skipped", 0),
    ];
    for (k, v) in want {
        assert_eq!(first[k], v, "first import, {k}: {first}");
    }
    // What is stored is exactly what was given to Python, `From ` unquoted.
    let stored: BTreeSet<String> = s
        .search("", &[])
        .iter()
        .map(|h| h["blake3"].as_str().expect("blake3").to_string())
        .collect();
    let given: BTreeSet<String> = mbox_msgs
        .iter()
        .chain(&maildir_msgs)
        .chain([&eml])
        .map(|m| blake3_hex(m))
        .collect();
    assert_eq!(stored, given);
    let stats = s.stats();
    let segments = s.segments();

    let second = s.import(&[&mbox, &maildir, &eml_path], &[]);
    let want = [
        ("messages", 9),
        ("new_deliveries", 0),
        ("already_archived", 9),
        ("new_messages", 0),
        ("failed", 0),
        ("skipped", 0),
    ];
    for (k, v) in want {
        assert_eq!(second[k], v, "second import, {k}: {second}");
    }
    let again = s.stats();
    // The catalog file may grow (SQLite's WAL); what the store holds may not.
    for k in [
        "messages",
        "deliveries",
        "delivered_bytes",
        "raw_bytes",
        "stored_bytes",
        "segments",
    ] {
        assert_eq!(again[k], stats[k], "stats {k}: {stats} then {again}");
    }
    assert_eq!(again["deliveries"], 9);
    assert!(s.segments() == segments, "segment files changed");
    assert_eq!(s.ids("").len(), 9);
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../index/tests/corpus")
}

#[test]
fn show_raw_is_byte_exact_for_every_corpus_message() {
    let s = Store::new("");
    let corpus = corpus_dir();
    let emls: Vec<PathBuf> = files_under(&corpus)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    // Keyed by BLAKE3: two corpus files are identical, and stored once.
    let files: BTreeMap<String, (PathBuf, Vec<u8>)> = emls
        .iter()
        .cloned()
        .map(|p| {
            let b = std::fs::read(&p).expect("read corpus file");
            (blake3_hex(&b), (p, b))
        })
        .collect();
    let summary = s.import(&[&corpus], &[]);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["messages"], emls.len(), "{summary}");
    let hits = s.search("", &[]);
    let mut compared = 0;
    let mut seen = BTreeSet::new();
    for hit in &hits {
        let id = hit["id"].as_i64().expect("id");
        let hash = hit["blake3"].as_str().expect("blake3");
        let raw = s.raw(id);
        assert_eq!(blake3_hex(&raw), hash, "delivery {id}: bytes vs its BLAKE3");
        assert_eq!(hit["size"], raw.len(), "delivery {id}: size");
        let (path, want) = files
            .get(hash)
            .unwrap_or_else(|| panic!("delivery {id}: stored bytes are no corpus file's"));
        assert_same(&raw, want, &path.display().to_string());
        seen.insert(hash.to_string());
        compared += 1;
    }
    assert!(compared > 50, "only {compared} messages compared");
    // Every corpus message was archived (the rest of the tree is README and
    // licences, skipped as not mail).
    let missing: Vec<_> = files
        .iter()
        .filter(|(h, _)| !seen.contains(*h))
        .map(|(_, (p, _))| p.display().to_string())
        .collect();
    assert!(missing.is_empty(), "not archived: {missing:?} ({summary})");
}

#[test]
fn search_by_login_envelope_recipient_attachment_phrase_and_limit() {
    let s = Store::new("");
    let m = |from: &str, to: &str, subject: &str, body: &str| {
        let id: String = subject.split(' ').collect();
        format!("From: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{id}@example.com>\n\n{body}\n")
            .into_bytes()
    };
    s.pipe(
        &[
            "--sender=alice@example.com",
            "--recipient=carol@example.org",
            "--login=alice",
        ],
        &m(
            "alice@example.com",
            "carol@example.org",
            "Invoice 7 for March",
            "please pay",
        ),
    );
    // Bcc: hidden@example.org is in the envelope only.
    s.pipe(
        &[
            "--sender=bob@example.com",
            "--recipient=dave@example.org",
            "--recipient=hidden@example.org",
            "--login=bob",
            "--queue-id=4XyZ1",
        ],
        &m(
            "bob@example.com",
            "dave@example.org",
            "Invoice 8 for April",
            "please pay too",
        ),
    );
    s.pipe(
        &[
            "--sender=bob@example.com",
            "--recipient=erin@example.org",
            "--login=bob",
        ],
        &m(
            "bob@example.com",
            "erin@example.org",
            "Lunch plans",
            "after the quarterly budget review we eat",
        ),
    );
    let attached = b"From: carol@example.org\nTo: frank@example.org\nSubject: Report attached\n\
        MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n\
        --XX\nContent-Type: text/plain\n\nsee the report\n\
        --XX\nContent-Type: application/pdf; name=\"report.pdf\"\n\
        Content-Disposition: attachment; filename=\"report.pdf\"\n\
        Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJeLjz9MK\n--XX--\n";
    s.pipe(
        &[
            "--sender=carol@example.org",
            "--recipient=frank@example.org",
            "--login=carol",
        ],
        attached,
    );
    let all = s.search("", &[]);
    assert_eq!(all.len(), 4);
    let id_of = |subject: &str| {
        all.iter()
            .find(|h| h["subject"] == subject)
            .and_then(|h| h["id"].as_i64())
            .unwrap_or_else(|| panic!("no {subject:?} in {all:?}"))
    };
    let (march, april, lunch, report) = (
        id_of("Invoice 7 for March"),
        id_of("Invoice 8 for April"),
        id_of("Lunch plans"),
        id_of("Report attached"),
    );
    assert_eq!(s.ids("login:bob subject:invoice"), [april]);
    assert_eq!(s.ids("to:hidden@example.org"), [april]);
    assert_eq!(s.ids("has:attachment"), [report]);
    assert_eq!(s.ids("\"quarterly budget review\""), [lunch]);
    assert_eq!(s.ids("\"budget quarterly review\""), Vec::<i64>::new());
    assert_eq!(s.ids("invoice -april"), [march]);
    let mut by_login = s.ids("login:bob");
    by_login.sort();
    assert_eq!(by_login, [april, lunch]);

    // Newest first; --limit keeps the first.
    let ids: Vec<i64> = all.iter().filter_map(|h| h["id"].as_i64()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "not newest first");
    let one = s.search("", &["--limit", "1"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], all[0]["id"]);

    let none = s.run(&["search", "subject:nonexistentword"]);
    assert_eq!(code(&none), EX_NOTHING);
    assert!(none.stdout.is_empty());
    let bad = s.run(&["search", "login:bob after:2026-13-99"]);
    assert_eq!(code(&bad), EX_USAGE);
    assert!(
        text(&bad.stderr).contains("after:2026-13-99"),
        "the bad term is not named: {}",
        text(&bad.stderr)
    );

    let keys: BTreeSet<&str> = [
        "id",
        "message_id",
        "sender",
        "recipients",
        "login",
        "subject",
        "date",
        "received",
        "size",
        "capture",
        "queue_id",
        "from",
        "to",
        "cc",
        "blake3",
        "attachments",
    ]
    .into();
    for hit in &all {
        let got: BTreeSet<&str> = hit
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got, keys);
    }
    let hit = all.iter().find(|h| h["id"] == april).expect("april");
    assert_eq!(hit["sender"], "bob@example.com");
    assert_eq!(
        hit["recipients"],
        serde_json::json!(["dave@example.org", "hidden@example.org"])
    );
    assert_eq!(hit["login"], "bob");
    assert_eq!(hit["queue_id"], "4XyZ1");
    assert_eq!(hit["capture"], "pipe");
    assert_eq!(hit["message_id"], "Invoice8forApril@example.com");
    let hit = all.iter().find(|h| h["id"] == report).expect("report");
    assert_eq!(hit["attachments"][0]["name"], "report.pdf");
    assert_eq!(hit["attachments"][0]["type"], "application/pdf");
}

/// Every file of a zip (or of a directory) with its bytes and SHA-256, as
/// Python's `zipfile` and `hashlib` read them.
fn python_files(path: &Path) -> BTreeMap<String, (Vec<u8>, String)> {
    let out = python(
        "import zipfile,hashlib,json,os,sys\n\
         p = sys.argv[1]\n\
         files = {}\n\
         if os.path.isdir(p):\n\
         \x20   for n in os.listdir(p): files[n] = open(os.path.join(p, n), 'rb').read()\n\
         else:\n\
         \x20   z = zipfile.ZipFile(p)\n\
         \x20   assert z.testzip() is None\n\
         \x20   for n in z.namelist(): files[n] = z.read(n)\n\
         print(json.dumps({n: [b.hex(), hashlib.sha256(b).hexdigest()] for n, b in files.items()}))\n",
        &[path.to_str().expect("utf-8")],
    );
    let v: BTreeMap<String, (String, String)> = serde_json::from_str(&out).expect("json");
    v.into_iter()
        .map(|(n, (h, sha))| {
            let bytes = (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            (n, (bytes, sha))
        })
        .collect()
}

/// Checks an export's files against its manifest and the store.
fn check_manifest(s: &Store, files: &BTreeMap<String, (Vec<u8>, String)>, prefix: &str) {
    let manifest: Value =
        serde_json::from_slice(&files.get("manifest.json").expect("manifest.json").0)
            .expect("manifest json");
    let entries = manifest["messages"].as_array().expect("messages");
    let hits = s.search("", &[]);
    assert_eq!(entries.len(), hits.len());
    assert_eq!(files.len(), entries.len() + 1, "files: {:?}", files.keys());
    for e in entries {
        let id = e["id"].as_i64().expect("id");
        let name = e["file"].as_str().expect("file");
        assert_eq!(name, format!("{prefix}{id}.eml"));
        let (bytes, sha256) = files.get(name).expect("listed file exists");
        assert_eq!(e["sha256"].as_str(), Some(sha256.as_str()), "{name} sha256");
        assert_eq!(e["blake3"].as_str(), Some(blake3_hex(bytes).as_str()));
        assert_eq!(e["size"], bytes.len());
        let hit = hits.iter().find(|h| h["id"] == id).expect("hit");
        assert_eq!(e["blake3"], hit["blake3"], "{name}: manifest vs search");
        assert_eq!(e["envelope"]["recipients"], hit["recipients"]);
        // Both write the null sender as null.
        assert_eq!(hit["sender"], e["envelope"]["sender"]);
        assert_same(bytes, &s.raw(id), name);
    }
    let bcc = entries
        .iter()
        .find(|e| e["subject"] == "with bcc")
        .expect("bcc message");
    assert!(
        bcc["envelope"]["recipients"]
            .as_array()
            .expect("recipients")
            .contains(&Value::from("hidden@example.org")),
        "{bcc}"
    );
}

#[test]
fn export_zip_eml_and_mbox_read_by_python_and_mbox_restores_the_envelope() {
    let s = Store::new("");
    let bcc = b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: with bcc\n\n\
        From the desk of Alice\n>From a quoted line\n>>From twice quoted\n\nFrom \nend\n";
    s.pipe(
        &[
            "--sender=alice@example.com",
            "--recipient=bob@example.org",
            "--recipient=hidden@example.org",
            "--login=alice",
            "--queue-id=4AbC9",
            "--client-address=192.0.2.7",
            "--client-hostname=mx.example.com",
            "--client-helo=mx.example.com",
            "--tag=outbound",
        ],
        bcc,
    );
    let crlf = b"From: MAILER-DAEMON@example.com\r\nTo: carol@example.org\r\n\
        Subject: bounce\r\n\r\nundeliverable\r\nFrom here\r\n";
    s.pipe(&["--sender=", "--recipient=carol@example.org"], crlf);
    let eight_bit = b"From: dave@example.com\nTo: erin@example.org, frank@example.org\n\
        Subject: 8bit\nContent-Transfer-Encoding: 8bit\n\ncaf\xc3\xa9 \xff\n";
    s.pipe(
        &[
            "--sender=dave@example.com",
            "--recipient=erin@example.org",
            "--recipient=frank@example.org",
            "--login=dave",
        ],
        eight_bit,
    );
    let originals: Vec<&[u8]> = vec![bcc, crlf, eight_bit];

    let zip = s.path("out.zip");
    s.ok(&[
        "export",
        "",
        "--format",
        "zip",
        "--out",
        zip.to_str().expect("utf-8"),
    ]);
    check_manifest(&s, &python_files(&zip), "messages/");

    let eml = s.path("eml");
    s.ok(&[
        "export",
        "",
        "--format",
        "eml",
        "--out",
        eml.to_str().expect("utf-8"),
    ]);
    check_manifest(&s, &python_files(&eml), "");

    let mbox = s.path("out.mbox");
    s.ok(&[
        "export",
        "",
        "--format",
        "mbox",
        "--out",
        mbox.to_str().expect("utf-8"),
    ]);
    let read = read_mbox(&mbox);
    assert_eq!(read.len(), 3, "Python's mailbox.mbox count");
    // Oldest first; each is the envelope block and then the exact message
    // (Python leaves the From_ line out and the trailing separator in).
    for (got, want) in read.iter().zip(&originals) {
        let (env, body) = split_envelope(got);
        assert!(env.starts_with("Return-Path: <"), "{env}");
        assert!(
            body.starts_with(want),
            "mbox message is not the original: {:?}",
            text(&body)
        );
    }
    assert!(split_envelope(&read[0])
        .0
        .contains("X-Envelope-To: <hidden@example.org>"));

    let second = Store::new("");
    let summary = second.import(&[&mbox], &[]);
    assert_eq!(summary["new_deliveries"], 3, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let first_hits = s.search("", &[]);
    let hits = second.search("", &[]);
    assert_eq!(hits.len(), 3);
    for hit in &hits {
        let id = hit["id"].as_i64().expect("id");
        let orig = first_hits
            .iter()
            .find(|h| h["blake3"] == hit["blake3"])
            .unwrap_or_else(|| panic!("re-imported message {id} is not an original: {hit}"));
        let orig_id = orig["id"].as_i64().expect("id");
        assert_same(&second.raw(id), &s.raw(orig_id), "re-imported bytes");
        let mut want = s.envelope(orig_id);
        let mut got = second.envelope(id);
        // The mbox carries the capture time to the second; `show
        // --envelope` writes it as RFC 3339.
        let secs = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(v["received"].as_str().expect("received"))
                .expect("RFC 3339")
                .timestamp()
        };
        assert_eq!(secs(&got), secs(&want), "received");
        for v in [&mut want, &mut got] {
            let o = v.as_object_mut().expect("object");
            o.remove("id");
            o.remove("received");
        }
        assert_eq!(got, want, "envelope of {orig_id} after mbox export/import");
    }
}

#[test]
fn verify_finds_a_flipped_byte_and_a_deleted_delivery() {
    let s = Store::new("");
    for i in 0..3 {
        s.pipe(
            &["--sender=a@example.com", "--recipient=b@example.org"],
            &simple(&format!("v{i}"), &format!("verify me {i}")),
        );
    }
    let (c, out) = s.verify(&[]);
    assert_eq!(c, 0, "{out}");
    assert!(out.starts_with("OK: 3 deliveries, 3 messages"), "{out}");

    let row =
        s.sqlite("SELECT lower(hex(hash)), offset, record_len FROM messages ORDER BY id LIMIT 1");
    let f: Vec<&str> = row.trim().split('|').collect();
    let (hash, offset, len): (&str, usize, usize) = (
        f[0],
        f[1].parse().expect("offset"),
        f[2].parse().expect("len"),
    );
    let seg = s.path("store/segments/00000001.seg");
    let original = std::fs::read(&seg).expect("segment");
    let mut damaged = original.clone();
    damaged[offset + len / 2] ^= 0x01;
    std::fs::write(&seg, &damaged).expect("write segment");
    let (c, out) = s.verify(&[]);
    assert_eq!(c, EX_DATAERR, "{out}");
    assert!(
        out.starts_with("FAILED: first bad record: delivery ")
            && out.contains(&format!(": its message {hash} ")),
        "{out}"
    );
    std::fs::write(&seg, &original).expect("restore segment");
    assert_eq!(s.verify(&[]).0, 0);

    s.sqlite("DELETE FROM deliveries WHERE id = 2");
    let (c, out) = s.verify(&[]);
    assert_eq!(c, EX_DATAERR, "{out}");
    assert!(
        out.starts_with("FAILED: first bad record: delivery 3: chain entries 2..2 are missing"),
        "{out}"
    );
}

#[test]
fn signed_checkpoint_verifies_with_its_key_only_and_catches_a_cut_chain() {
    let keys = sandbox();
    let key = keys.path().join("signing.key");
    std::fs::write(&key, format!("{}\n", blake3_hex(b"checkpoint seed"))).expect("key");
    let s = Store::new(&format!("signing_key_file = \"{}\"", key.display()));
    for i in 0..2 {
        s.pipe(
            &["--sender=a@example.com", "--recipient=b@example.org"],
            &simple(&format!("c{i}"), "checkpointed"),
        );
    }
    let cp = s.path("cp.txt");
    let cp_arg = cp.to_str().expect("utf-8");
    let out = s.run(&["checkpoint", "--out", cp_arg]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(signed)"),
        "{}",
        text(&out.stderr)
    );
    let body = std::fs::read_to_string(&cp).expect("checkpoint file");
    assert!(body.contains("\nentry: 2\n"), "{body}");
    let sig = body
        .lines()
        .find_map(|l| l.strip_prefix("signature: ed25519 "))
        .unwrap_or_else(|| panic!("no signature line: {body}"));
    let public = sig.split(' ').next().expect("key").to_string();
    assert_eq!(public.len(), 64);

    let (c, out) = s.verify(&["--checkpoint", cp_arg, "--public-key", &public]);
    assert_eq!(c, 0, "{out}");
    let mut wrong = public.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).expect("hex");
    let (c, out) = s.verify(&["--checkpoint", cp_arg, "--public-key", &wrong]);
    assert_eq!(c, EX_DATAERR, "{out}");
    assert!(out.contains("checkpoint") && out.contains(&wrong), "{out}");

    // Growing the chain keeps the checkpoint valid...
    s.pipe(
        &["--sender=a@example.com", "--recipient=b@example.org"],
        &simple("c2", "after the checkpoint"),
    );
    assert_eq!(
        s.verify(&["--checkpoint", cp_arg, "--public-key", &public])
            .0,
        0
    );
    // ...cutting it back past the checkpointed entry does not.
    s.sqlite("DELETE FROM deliveries WHERE id >= 2");
    let (c, out) = s.verify(&["--checkpoint", cp_arg, "--public-key", &public]);
    assert_eq!(c, EX_DATAERR, "{out}");
    assert!(out.contains("delivery 2, which is gone"), "{out}");
}

/// The `Index:` line of `show ID`.
fn index_line(s: &Store, id: i64) -> String {
    let out = text(&s.ok(&["show", &id.to_string()]));
    out.lines()
        .find(|l| l.starts_with("Index:"))
        .unwrap_or_else(|| panic!("no Index: line in\n{out}"))
        .to_string()
}

#[test]
fn hostile_mime_is_archived_exactly_and_its_index_says_it_was_limited() {
    let s = Store::new("");
    let mut many = b"From: a@example.com\nTo: b@example.org\nSubject: ten thousand parts\n\
        MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n"
        .to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("--b\nContent-Type: text/plain\n\npart {i}\n").as_bytes());
    }
    many.extend_from_slice(b"--b--\n");
    let mut deep = b"From: a@example.com\nTo: b@example.org\nSubject: nested hundred deep\n\
        MIME-Version: 1.0\n"
        .to_vec();
    for i in 0..100 {
        deep.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"n{i}\"\n\n--n{i}\n").as_bytes(),
        );
    }
    deep.extend_from_slice(b"Content-Type: text/plain\n\ninnermost\n");
    for i in (0..100).rev() {
        deep.extend_from_slice(format!("--n{i}--\n").as_bytes());
    }
    for m in [&many, &deep] {
        s.pipe(&["--sender=a@example.com", "--recipient=b@example.org"], m);
    }
    let many_id = s.ids("subject:thousand");
    let deep_id = s.ids("subject:nested");
    assert_eq!(
        (many_id.len(), deep_id.len()),
        (1, 1),
        "headers still indexed"
    );
    assert_same(&s.raw(many_id[0]), &many, "10,000 parts");
    assert_same(&s.raw(deep_id[0]), &deep, "100 deep");
    let line = index_line(&s, many_id[0]);
    assert!(
        line.contains("more than") && line.contains("parts"),
        "{line}"
    );
    let line = index_line(&s, deep_id[0]);
    assert!(line.contains("nested deeper than"), "{line}");
}

#[test]
fn two_gigabyte_sparse_mbox_is_skipped_in_bounded_memory() {
    let s = Store::new("");
    let mbox = s.path("huge.mbox");
    // Python runs the import, so RUSAGE_CHILDREN is the import's peak alone.
    let out = python(
        "import resource,subprocess,sys,json\n\
         with open(sys.argv[1], 'wb') as f:\n\
         \x20   f.write(b'From a@b Sat Nov 21 22:54:14 2026\\nSubject: x\\n\\n')\n\
         \x20   f.truncate(2 * 1024**3)\n\
         p = subprocess.run([sys.argv[2], '--config', sys.argv[3], 'import', '--json',\n\
         \x20   '--max-message-size', '16M', sys.argv[1]], capture_output=True)\n\
         print(json.dumps({'rc': p.returncode, 'out': p.stdout.decode(), 'err': p.stderr.decode(),\n\
         \x20   'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n",
        &[
            mbox.to_str().expect("utf-8"),
            bin().to_str().expect("utf-8"),
            s.cfg.to_str().expect("utf-8"),
        ],
    );
    let _ = std::fs::remove_file(&mbox);
    let r: Value = serde_json::from_str(&out).expect("json");
    // 65: a message was left out (over the limit), which scripts must see.
    assert_eq!(r["rc"], 65, "{r}");
    let summary: Value = serde_json::from_str(r["out"].as_str().expect("out")).expect("summary");
    assert_eq!(summary["new_deliveries"], 0, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(summary["bytes"], 2u64 * 1024 * 1024 * 1024, "{summary}");
    let reasons = summary["skipped_reasons"].as_object().expect("reasons");
    assert_eq!(reasons.len(), 1, "{summary}");
    let (reason, what) = reasons.iter().next().expect("reason");
    assert_eq!(reason, "larger than 16 MiB");
    assert!(
        what["first"]
            .as_str()
            .is_some_and(|o| o.ends_with("huge.mbox:1")),
        "{what}"
    );
    let kib = r["maxrss_kib"].as_u64().expect("maxrss");
    assert!(kib < 128 * 1024, "import peaked at {kib} KiB");
    assert_eq!(s.stats()["deliveries"], 0);
}

#[test]
fn encrypted_store_keeps_the_body_out_of_segments_but_shows_and_finds_it() {
    const SECRET: &str = "zanzibarquokka";
    // Binary noise beside the text keeps zstd from Huffman-coding the
    // literals, so without encryption the word is stored as it is.
    let mut noise = vec![0u8; 4096];
    blake3::Hasher::new()
        .update(b"noise")
        .finalize_xof()
        .fill(&mut noise);
    let mut message = format!(
        "From: a@example.com\nTo: b@example.org\nSubject: plans\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"B\"\n\n\
         --B\nContent-Type: text/plain\n\nthe password is {SECRET} today\n\
         --B\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n"
    )
    .into_bytes();
    message.extend_from_slice(&noise);
    message.extend_from_slice(b"\n--B--\n");
    let args = ["--sender=a@example.com", "--recipient=b@example.org"];
    let contains = |hay: &[u8]| hay.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());

    // Control: without a key the word is visible in the segment, so the
    // check below can fail.
    let plain = Store::new("");
    plain.pipe(&args, &message);
    assert!(plain.segments().iter().any(|(_, b)| contains(b)));

    let dir = sandbox();
    let key = dir.path().join("store.key");
    std::fs::write(&key, blake3_hex(b"encryption test key")).expect("key");
    let s = Store::new(&format!("encryption_key_file = \"{}\"", key.display()));
    s.pipe(&args, &message);
    let segments = s.segments();
    assert!(!segments.is_empty());
    for (p, b) in &segments {
        assert!(!contains(b), "{} holds the plaintext", p.display());
    }
    let ids = s.ids(SECRET);
    assert_eq!(ids.len(), 1, "the index finds the word");
    assert_same(&s.raw(ids[0]), &message, "decrypted");

    // The same store without its key cannot read the bytes back.
    let keyless = write_config(
        dir.path(),
        &format!(
            "[store]\npath = \"{}\"\n[[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
            s.path("store").display()
        ),
    );
    let out = mailkeep(&keyless)
        .args(["show", &ids[0].to_string(), "--raw"])
        .output()
        .expect("run");
    assert_ne!(code(&out), 0);
    assert!(!contains(&out.stdout));
}

/// Issue 13, "one way through": `import --rules` files each message by the
/// configuration's rules through the same Archiver as `serve`, here into
/// two mbox files (by the From header) and, for one of them, the store.
/// Python's `mailbox` reads back exactly the right messages, byte-exact
/// after the envelope block; the store copies are searchable; a second
/// import adds nothing to the store and, as documented, appends to an mbox
/// again. Before, `--rules` was a usage error and import wrote the store
/// only.
#[test]
fn import_with_rules_files_into_mbox_and_the_store_by_the_rules() {
    let dir = sandbox();
    let alice_mbox = dir.path().join("archive/alice.mbox");
    let bob_mbox = dir.path().join("archive/bob.mbox");
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}[store]\npath = \"{}\"\n\
             [[rule]]\nname = \"alice\"\nfrom = \"*@alice.example\"\n\
             archive = [\"mbox:{}\", \"store\"]\n\
             [[rule]]\nname = \"bob\"\nfrom = \"*@bob.example\"\narchive = [\"mbox:{}\"]\n",
            spool_section(dir.path(), false),
            dir.path().join("store").display(),
            alice_mbox.display(),
            bob_mbox.display()
        ),
    );
    let msg = |who: &str, n: u32, body: &str| -> Vec<u8> {
        format!(
            "From: {who} <{who}@{who}.example>\nTo: team@example.org\n\
             Subject: {who} {n}\nMessage-ID: <{who}{n}@example.com>\n\
             Date: Sat, 21 Nov 2026 10:00:00 +0000\n\n{body}\n"
        )
        .into_bytes()
    };
    let in_mbox = [
        msg("alice", 1, "first\nFrom the desk of Alice\nlast"),
        msg("bob", 1, "bob's first"),
        msg("alice", 2, "alice again"),
        msg("carol", 1, "no rule files carol"),
    ];
    let in_maildir = [
        msg("alice", 3, "from a Maildir"),
        msg("bob", 2, "bob's second"),
    ];
    let mbox = dir.path().join("in/box.mbox");
    let maildir = dir.path().join("in/Maildir");
    std::fs::create_dir_all(dir.path().join("in")).expect("mkdir");
    python_mailboxes(&mbox, &maildir, &in_mbox, &in_maildir);
    let import = || {
        let out = mailkeep(&cfg)
            .args(["import", "--rules", "--json"])
            .arg(&mbox)
            .arg(&maildir)
            .output()
            .expect("run import");
        assert_eq!(code(&out), 0, "import --rules: {}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("import --json")
    };
    let first = import();
    assert_eq!(first["messages"], 6, "{first}");
    assert_eq!(first["filed"], 5, "{first}");
    assert_eq!(first["no_rule_filed"], 1, "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    let originals = |path: &Path| -> BTreeSet<Vec<u8>> {
        read_mbox(path)
            .iter()
            .map(|copy| {
                let (env, original) = split_envelope(copy);
                assert!(env.contains("via import"), "{env}");
                original
            })
            .collect()
    };
    let alice: BTreeSet<Vec<u8>> = [&in_mbox[0], &in_mbox[2], &in_maildir[0]]
        .into_iter()
        .cloned()
        .collect();
    let bob: BTreeSet<Vec<u8>> = [&in_mbox[1], &in_maildir[1]].into_iter().cloned().collect();
    assert_eq!(originals(&alice_mbox), alice);
    assert_eq!(originals(&bob_mbox), bob);
    assert_eq!(read_mbox(&alice_mbox).len(), 3);
    let search = mailkeep(&cfg)
        .args(["search", "", "--json"])
        .output()
        .expect("search");
    assert_eq!(code(&search), 0, "{}", text(&search.stderr));
    let stored: BTreeSet<String> = text(&search.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            v["blake3"].as_str().expect("blake3").to_string()
        })
        .collect();
    assert_eq!(stored, alice.iter().map(|m| blake3_hex(m)).collect());

    let second = import();
    assert_eq!(second["filed"], 5, "{second}");
    assert_eq!(
        read_mbox(&alice_mbox).len(),
        6,
        "an mbox gets the copies again"
    );
    let search = mailkeep(&cfg)
        .args(["stats", "--json"])
        .output()
        .expect("stats");
    let stats: Value = serde_json::from_slice(&search.stdout).expect("stats json");
    assert_eq!(stats["deliveries"], 3, "the store recognises what it holds");
}

/// Writes `in_mbox` into a new mbox and `in_maildir` into a new Maildir
/// with Python's `mailbox` (which From-quotes the mbox).
fn python_mailboxes(mbox: &Path, maildir: &Path, in_mbox: &[Vec<u8>], in_maildir: &[Vec<u8>]) {
    let mut args = vec![
        mbox.to_str().expect("utf-8").to_string(),
        maildir.to_str().expect("utf-8").to_string(),
        in_mbox.len().to_string(),
    ];
    args.extend(in_mbox.iter().chain(in_maildir).map(|m| hex_arg(m)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python(
        "import mailbox,sys\n\
         n = int(sys.argv[3])\n\
         msgs = [bytes.fromhex(h) for h in sys.argv[4:]]\n\
         mb = mailbox.mbox(sys.argv[1])\n\
         for m in msgs[:n]: mb.add(m)\n\
         mb.close()\n\
         md = mailbox.Maildir(sys.argv[2], create=True)\n\
         for m in msgs[n:]: md.add(m)\n",
        &args,
    );
}

/// `show --raw` read a record whole into memory (twice: the record and the
/// message): a 1 GB message needed 2 GB. It now streams: an 80 MB
/// incompressible message comes out byte for byte with the process far
/// below its size, plain and encrypted, and a damaged record is an error
/// that says the bytes written are not the message.
#[test]
fn show_raw_streams_a_large_message_in_bounded_memory_and_refuses_a_damaged_one() {
    let dir = sandbox();
    let key = dir.path().join("key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    for encrypted in [false, true] {
        let sub = dir.path().join(if encrypted { "enc" } else { "plain" });
        std::fs::create_dir(&sub).unwrap();
        let extra = if encrypted {
            format!("encryption_key_file = \"{}\"\n", key.display())
        } else {
            String::new()
        };
        let config = write_config(
            &sub,
            &format!(
                "[spool]\ndir = \"{d}/spool\"\n\n[store]\npath = \"{d}/store\"\n{extra}",
                d = sub.display()
            ),
        );
        let script = r#"
import hashlib, os, resource, subprocess, sys
exe, config, dirname = sys.argv[1], sys.argv[2], sys.argv[3]
body = os.urandom(60 * 1024 * 1024).hex()[: 80 * 1024 * 1024]
msg = ("From a@example.com Mon Nov 30 10:00:00 2026\nSubject: big\n\n" + body + "\n").encode()
path = os.path.join(dirname, "big.mbox")
open(path, "wb").write(msg)
subprocess.run([exe, "--config", config, "import", path], check=True, stdout=subprocess.DEVNULL)
before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
out = os.path.join(dirname, "out.eml")
with open(out, "wb") as f:
    rc = subprocess.run([exe, "--config", config, "show", "1", "--raw"], stdout=f).returncode
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
want = msg[msg.index(b"\n") + 1:]
got = open(out, "rb").read()
print(rc, rss if rss > before else 0, len(got) == len(want) and hashlib.sha256(got).digest() == hashlib.sha256(want).digest())
"#;
        let out = python(
            script,
            &[
                bin().to_str().unwrap(),
                config.to_str().unwrap(),
                sub.to_str().unwrap(),
            ],
        );
        let parts: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(parts[0], "0", "{out}");
        assert_eq!(parts[2], "True", "the bytes differ ({out})");
        let rss_kib: u64 = parts[1].parse().unwrap();
        // The import's peak comes first; `show` must have stayed below it
        // (reported as 0) or, if it set a new peak, far below 80 MB.
        assert!(
            rss_kib < 40 * 1024,
            "show --raw peaked at {rss_kib} KiB for an 80 MB message"
        );

        // Damage the record's payload: the command fails and says what the
        // output is.
        let seg = sub.join("store").join("segments").join("00000001.seg");
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        std::fs::write(&seg, bytes).unwrap();
        let out = mailkeep(&config)
            .args(["show", "1", "--raw"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{err}");
        assert!(err.contains("not the archived message"), "{err}");
        // Export streams too, and leaves nothing of a damaged message.
        for format in ["zip", "eml", "mbox"] {
            let target = sub.join(format!("export.{format}"));
            let out = mailkeep(&config)
                .args(["export", "", "--format", format, "--out"])
                .arg(&target)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(65), "{format}: {err}");
            assert!(err.contains("the export is not written"), "{format}: {err}");
            let partial = sub.join(format!("export.{format}.partial"));
            assert!(!partial.exists(), "{format}: a partial zip was left");
            assert!(!target.exists(), "{format}: a partial export was left");
        }
    }
}

/// A store from before conversations were kept (schema 2): `thread:` finds
/// nothing of it at first; `serve` upgrades it and reads the older
/// messages' links in the background, and then `thread:` finds the whole
/// conversation from any of its messages, and `stats` says none are left.
#[test]
fn serve_reads_the_conversation_links_of_a_store_from_before_them() {
    let s = Store::new("");
    let mut ids = Vec::new();
    for i in 0..3 {
        let refs = match i {
            0 => String::new(),
            _ => format!(
                "In-Reply-To: <c{}@example.com>\nReferences: <c0@example.com>\n",
                i - 1
            ),
        };
        let m = format!(
            "From: a@example.com\nTo: b@example.com\nSubject: part {i}\nMessage-ID: <c{i}@example.com>\n{refs}\nbody {i}\n"
        );
        s.pipe(
            &["--sender=a@example.com", "--recipient=b@example.com"],
            m.as_bytes(),
        );
        ids.push(s.ids(&format!("subject:\"part {i}\""))[0]);
    }
    s.pipe(
        &["--sender=a@example.com", "--recipient=b@example.com"],
        b"From: a@example.com\nSubject: alone\nMessage-ID: <alone@example.com>\n\nx\n",
    );
    let mut conversation = ids.clone();
    conversation.sort();
    let thread = |q: &str| {
        let mut got = s.ids(q);
        got.sort();
        got
    };
    assert_eq!(thread("thread:<c2@example.com>"), conversation);
    assert_eq!(s.stats()["unlinked_messages"], 0);

    s.sqlite("DROP TABLE refs");
    s.sqlite("UPDATE meta SET value = '2' WHERE key = 'schema'");
    assert!(
        thread("thread:<c2@example.com>").is_empty(),
        "a version-2 catalog read as it is"
    );

    let port = free_port();
    let dir = s.dir.path().to_owned();
    let cfg = std::fs::read_to_string(&s.cfg).unwrap();
    let mut serve = Serve::start_on(&dir, port, |_| cfg.clone(), &["stop with SIGTERM"], false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while thread("thread:<c0@example.com>") != conversation {
        assert!(
            std::time::Instant::now() < deadline,
            "the links were not read"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    serve.stop();
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(
        log.lines().any(
            |l| l.contains("conversation links of the older messages read") && l.contains("read=4")
        ),
        "{log}"
    );
    assert_eq!(thread("thread:c1@example.com"), conversation);
    assert_eq!(thread("thread:alone@example.com").len(), 1);
    assert_eq!(s.stats()["unlinked_messages"], 0);
}
