//! The store against real bytes: round trips, dedup, tamper detection,
//! encryption and checkpoints.

use mailkeep_envelope::{CapturePath, Envelope, RawMessage};
use mailkeep_store::verify::Checkpoint;
use mailkeep_store::{Store, StoreConfig};
use std::path::{Path, PathBuf};

fn envelope(bytes: &[u8], sender: &str, rcpts: &[&str], queue_id: Option<&str>) -> Envelope {
    let mut env = Envelope::new(CapturePath::Milter, RawMessage::from_bytes(bytes.to_vec()));
    env.sender = Some(sender.into());
    env.recipients = rcpts.iter().map(|r| r.to_string()).collect();
    env.queue_id = queue_id.map(str::to_string);
    env.login = Some("bob".into());
    env
}

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../index/tests/corpus");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("corpus directory").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The ids a search finds, in ascending order.
fn found(store: &Store, q: &str) -> Vec<i64> {
    let mut v: Vec<i64> = store
        .search(&query(q), None)
        .unwrap()
        .iter()
        .map(|h| h.record.id)
        .collect();
    v.sort();
    v
}

fn query(q: &str) -> mailkeep_query::Query {
    mailkeep_query::parse(q).expect("query parses")
}

#[test]
fn corpus_round_trips_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let files = corpus_files();
    assert!(files.len() > 50, "corpus has {} files", files.len());
    let mut prepared = Vec::new();
    let mut originals = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).unwrap();
        let env = envelope(
            &bytes,
            "a@example.com",
            &["b@example.com"],
            Some(&format!("Q{i}")),
        );
        prepared.push(store.prepare(&env).unwrap());
        originals.push(bytes);
    }
    let stored = store.commit(prepared).unwrap();
    assert_eq!(stored.len(), files.len());
    for (s, bytes) in stored.iter().zip(&originals) {
        assert_eq!(&store.raw_by_hash(&s.hash).unwrap(), bytes);
        assert_eq!(store.get(s.id).unwrap().record.size, bytes.len() as u64);
    }
    // Reopened from disk, still exact.
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    for (s, bytes) in stored.iter().zip(&originals) {
        assert_eq!(&store.raw_by_hash(&s.hash).unwrap(), bytes);
    }
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.deliveries, files.len() as u64);
    // Archived mail is private to the store's owner.
    use std::os::unix::fs::PermissionsExt;
    for p in [
        "s",
        "s/catalog.sqlite",
        "s/catalog.sqlite-wal",
        "s/segments",
        "s/segments/00000001.seg",
    ] {
        let mode = std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{p} is {mode:o}");
    }
}

const MSG: &[u8] = b"From: Alice <alice@example.com>\nTo: team@example.com\nSubject: Quarterly invoice\nMessage-ID: <q1@example.com>\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n\nPlease find the numbers attached. Regards.\n";

#[test]
fn dedup_keeps_every_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let rcpts: Vec<String> = (0..40).map(|i| format!("user{i}@example.com")).collect();
    let rcpt_refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let a = store
        .put(&envelope(
            MSG,
            "alice@example.com",
            &rcpt_refs,
            Some("AAA1"),
        ))
        .unwrap();
    // The same bytes seen again on another path with another envelope.
    let mut env = envelope(
        MSG,
        "alice@example.com",
        &["hidden@example.org"],
        Some("BBB2"),
    );
    env.capture = CapturePath::Filter;
    let b = store.put(&env).unwrap();
    assert!(a.new_message && !b.new_message && !a.duplicate && !b.duplicate);
    assert_ne!(a.id, b.id);
    let t = store.totals().unwrap();
    assert_eq!((t.messages, t.deliveries), (1, 2));
    assert_eq!(t.raw_bytes, MSG.len() as u64);
    assert_eq!(t.delivered_bytes, 2 * MSG.len() as u64);
    // Each delivery keeps its own envelope, Bcc included.
    let hit = store.get(a.id).unwrap();
    assert_eq!(hit.record.recipients.len(), 40);
    let hits = store.search(&query("to:hidden@example.org"), None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].record.id, b.id);
    assert_eq!(hits[0].record.capture, "filter");
    // A retry of the same capture (same queue id, recipients, bytes) is not a new delivery.
    let again = store
        .put(&envelope(
            MSG,
            "alice@example.com",
            &rcpt_refs,
            Some("AAA1"),
        ))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, a.id);
    assert_eq!(store.totals().unwrap().deliveries, 2);
}

#[test]
fn search_language() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut e1 = envelope(MSG, "alice@example.com", &["bob@example.com"], Some("Q1"));
    e1.received = "2026-03-01T10:00:00Z".parse().unwrap();
    let other =
        b"From: carol@example.net\nTo: dave@example.net\nSubject: lunch\n\nSee you at noon.\n";
    let mut e2 = envelope(
        other,
        "carol@example.net",
        &["dave@example.net"],
        Some("Q2"),
    );
    e2.login = None;
    e2.received = "2026-08-01T10:00:00Z".parse().unwrap();
    store.put(&e1).unwrap();
    store.put(&e2).unwrap();
    let ids = |q: &str| -> Vec<String> {
        store
            .search(&query(q), None)
            .unwrap()
            .into_iter()
            .map(|h| h.subject)
            .collect()
    };
    assert_eq!(ids(""), vec!["lunch", "Quarterly invoice"], "newest first");
    assert_eq!(ids("from:alice"), vec!["Quarterly invoice"]);
    assert_eq!(
        ids("to:bob@example.com login:bob subject:invoice"),
        vec!["Quarterly invoice"]
    );
    assert_eq!(ids("login:BOB"), vec!["Quarterly invoice"]);
    assert_eq!(
        ids("after:2026-01-01 before:2026-07-01"),
        vec!["Quarterly invoice"]
    );
    assert_eq!(ids("after:2026-07-01"), vec!["lunch"]);
    assert_eq!(ids("\"find the numbers\""), vec!["Quarterly invoice"]);
    assert!(ids("\"numbers the find\"").is_empty());
    assert_eq!(ids("noon"), vec!["lunch"]);
    assert_eq!(ids("-noon"), vec!["Quarterly invoice"]);
    assert!(ids("has:attachment").is_empty());
    assert!(ids("nothingmatchesthis").is_empty());
    // FTS syntax in user input is only ever text.
    assert!(ids("\"a\" OR NEAR(x y)").is_empty());
    assert!(ids("subject:\"*\"").is_empty());
    assert_eq!(store.search(&query(""), Some(1)).unwrap().len(), 1);
}

fn segment_file(dir: &Path) -> PathBuf {
    dir.join("segments/00000001.seg")
}

#[test]
fn verify_catches_flipped_byte_deleted_row_and_reordered_chain() {
    for damage in [
        "flip",
        "delete",
        "reorder",
        "alter",
        "truncate",
        "cut newest",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        for i in 0..5 {
            let body = format!("Subject: m{i}\n\nbody {i}\n");
            store
                .put(&envelope(
                    body.as_bytes(),
                    "a@x",
                    &["b@x"],
                    Some(&format!("Q{i}")),
                ))
                .unwrap();
        }
        assert!(store.verify(&mut |_, _| {}).unwrap().ok());
        drop(store);
        let db = rusqlite::Connection::open(dir.path().join("catalog.sqlite")).unwrap();
        match damage {
            "flip" => {
                let seg = segment_file(dir.path());
                let mut bytes = std::fs::read(&seg).unwrap();
                let at = bytes.len() - 3;
                bytes[at] ^= 0x01;
                std::fs::write(&seg, bytes).unwrap();
            }
            "truncate" => {
                let seg = segment_file(dir.path());
                let len = std::fs::metadata(&seg).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .unwrap()
                    .set_len(len - 10)
                    .unwrap();
            }
            "delete" => {
                db.execute("DELETE FROM deliveries WHERE id = 3", [])
                    .unwrap();
            }
            "alter" => {
                db.execute(
                    "UPDATE deliveries SET record = replace(record, '\"b@x\"', '\"c@x\"') WHERE id = 2",
                    [],
                )
                .unwrap();
            }
            "cut newest" => {
                db.execute("DELETE FROM deliveries WHERE id = 5", [])
                    .unwrap();
            }
            "reorder" => {
                // Swap entries 2 and 4 wholesale (record, links and all).
                db.execute_batch(
                    "UPDATE deliveries SET id = -2 WHERE id = 2;
                     UPDATE deliveries SET id = 2 WHERE id = 4;
                     UPDATE deliveries SET id = 4 WHERE id = -2;",
                )
                .unwrap();
            }
            _ => unreachable!(),
        }
        drop(db);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let report = store.verify(&mut |_, _| {}).unwrap();
        assert!(!report.ok(), "{damage}: not detected");
        let first = &report.problems[0];
        let expect = match damage {
            // A damaged message is named by the deliveries that have it.
            "flip" | "truncate" => "delivery ",
            "delete" => "delivery 4",
            "alter" => "delivery 2",
            "reorder" => "delivery 2",
            "cut newest" => "message ",
            _ => unreachable!(),
        };
        assert!(
            first.starts_with(expect),
            "{damage}: first problem {first:?}"
        );
        if matches!(damage, "flip" | "truncate") {
            assert!(first.contains(": its message "), "{damage}: {first:?}");
        }
    }
}

#[test]
fn catalog_row_without_its_blob_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let s = store
        .put(&envelope(MSG, "a@x", &["b@x"], Some("Q")))
        .unwrap();
    drop(store);
    std::fs::remove_file(segment_file(dir.path())).unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let err = store.raw_by_hash(&s.hash).unwrap_err().to_string();
    assert!(err.contains("reading message"), "{err}");
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(
        report.problems[0].starts_with("delivery 1: its message "),
        "{:?}",
        report.problems
    );
}

#[test]
fn crashed_append_is_cut_off_and_the_store_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store
        .put(&envelope(MSG, "a@x", &["b@x"], Some("Q1")))
        .unwrap();
    drop(store);
    // An append whose catalog commit never happened.
    let seg = segment_file(dir.path());
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"MKB1 half a record").unwrap();
    drop(f);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert!(store.verify(&mut |_, _| {}).unwrap().ok());
    let s = store
        .put(&envelope(
            b"Subject: two\n\nsecond\n",
            "a@x",
            &["b@x"],
            Some("Q2"),
        ))
        .unwrap();
    assert_eq!(
        store.raw_by_hash(&s.hash).unwrap(),
        b"Subject: two\n\nsecond\n"
    );
    assert!(store.verify(&mut |_, _| {}).unwrap().ok());
}

#[test]
fn encryption_at_rest_and_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = dir.path().join("k1");
    let k2 = dir.path().join("k2");
    std::fs::write(&k1, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::write(&k2, "22".repeat(32)).unwrap();
    let path = dir.path().join("store");
    let mut cfg = StoreConfig::new(&path);
    cfg.encryption_key_file = Some(k1.clone());
    let store = Store::open(cfg.clone()).unwrap();
    let secret = b"Subject: secret\n\nThe launch code is swordfish-swordfish-swordfish.\n";
    let a = store
        .put(&envelope(secret, "a@x", &["b@x"], Some("Q1")))
        .unwrap();
    drop(store);
    let seg = std::fs::read(segment_file(&path)).unwrap();
    assert!(
        !seg.windows(9).any(|w| w == b"swordfish"),
        "plaintext in segment"
    );
    // Rotate: k2 for new records, k1 still reads.
    cfg.encryption_key_file = Some(k2.clone());
    cfg.old_key_files = vec![k1.clone()];
    let store = Store::open(cfg.clone()).unwrap();
    let b = store
        .put(&envelope(
            b"Subject: later\n\nx\n",
            "a@x",
            &["b@x"],
            Some("Q2"),
        ))
        .unwrap();
    assert_eq!(store.raw_by_hash(&a.hash).unwrap(), secret);
    assert!(store.verify(&mut |_, _| {}).unwrap().ok());
    assert!(
        path.join("segments/00000002.seg").exists(),
        "a new key starts a new segment"
    );
    drop(store);
    // Without the old key the old record is reported, the new one reads.
    cfg.old_key_files.clear();
    let store = Store::open(cfg).unwrap();
    assert!(store.raw_by_hash(&b.hash).is_ok());
    let err = store.raw_by_hash(&a.hash).unwrap_err();
    assert!(format!("{err}").contains("not configured"), "{err}");
    // Search still works on the catalog.
    assert_eq!(store.search(&query("swordfish"), None).unwrap().len(), 1);
}

#[test]
fn signed_checkpoint_detects_a_rewritten_history() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sign");
    std::fs::write(&key, "33".repeat(32)).unwrap();
    let mut cfg = StoreConfig::new(dir.path().join("s"));
    cfg.signing_key_file = Some(key);
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..3 {
        store
            .put(&envelope(
                format!("Subject: {i}\n\nx\n").as_bytes(),
                "a@x",
                &["b@x"],
                Some(&format!("Q{i}")),
            ))
            .unwrap();
    }
    let cp = store.checkpoint().unwrap();
    assert_eq!(cp.entry, 3);
    let text = cp.to_text();
    let parsed = Checkpoint::parse(&text).unwrap();
    assert_eq!(parsed, cp);
    assert!(parsed.verify_signature(None).is_ok());
    assert!(store.check_checkpoint(&parsed).unwrap().is_empty());
    // A forged checkpoint fails its signature.
    let forged = Checkpoint::parse(&text.replace("entry: 3", "entry: 2")).unwrap();
    assert!(forged.verify_signature(None).is_err());
    // Rewriting entry 2 consistently (recomputing every later link) passes
    // the chain check but not the checkpoint.
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("s/catalog.sqlite")).unwrap();
    let rows: Vec<(i64, String, Vec<u8>)> = db
        .prepare("SELECT id, record, prev FROM deliveries ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev: [u8; 32] = rows[0].2.clone().try_into().unwrap();
    for (id, record, _) in rows {
        let record = if id == 2 {
            record.replace("\"b@x\"", "\"evil@x\"")
        } else {
            record
        };
        let hash = mailkeep_store::chain::link(&prev, &record);
        db.execute(
            "UPDATE deliveries SET record = ?1, prev = ?2, hash = ?3 WHERE id = ?4",
            rusqlite::params![record, &prev[..], &hash[..], id],
        )
        .unwrap();
        prev = hash;
    }
    drop(db);
    let store = Store::open(cfg).unwrap();
    assert!(
        store.verify(&mut |_, _| {}).unwrap().ok(),
        "a consistent rewrite passes the chain alone"
    );
    let problems = store.check_checkpoint(&parsed).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("history rewritten")),
        "{problems:?}"
    );
}

/// A spooled envelope (as every capture path makes for a message over the
/// spool threshold).
fn spooled(bytes: &[u8], queue_id: &str, spool: &Path) -> Envelope {
    let message = RawMessage::from_reader(bytes, spool, 0, None).unwrap();
    assert!(message.is_spooled());
    let mut env = envelope(b"", "a@x", &["b@x"], Some(queue_id));
    env.message = message;
    env
}

/// Spooled messages are prepared streaming into a staged record and
/// committed from it: byte-exact back, searchable, verified, deduplicated
/// (the second delivery of the same bytes stages nothing), alongside
/// in-memory records in one batch, plain and encrypted.
#[test]
fn spooled_messages_stream_into_the_store_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "33".repeat(32)).unwrap();
    // Text that needs the full MIME parse to be found, then 5 MB of base64
    // noise: several sealed chunks.
    let mut big = b"From: big@example.com\r\nSubject: streamed\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
        the word quokka is in the text part\r\n--b\r\nContent-Type: application/octet-stream\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let mut h = blake3::Hasher::new();
    h.update(b"spooled");
    let mut noise = vec![0u8; 5 << 20];
    h.finalize_xof().fill(&mut noise);
    for line in noise.chunks(57) {
        big.extend(base64_line(line));
    }
    big.extend_from_slice(b"--b--\r\n");
    for encrypted in [false, true] {
        let path = dir.path().join(format!("store-{encrypted}"));
        let mut cfg = StoreConfig::new(&path);
        if encrypted {
            cfg.encryption_key_file = Some(key.clone());
        }
        let store = Store::open(cfg.clone()).unwrap();
        let first = store.prepare(&spooled(&big, "Q1", &spool)).unwrap();
        assert!(
            first.memory() < 1 << 20,
            "a streamed record is not held in memory: {}",
            first.memory()
        );
        let small = store
            .prepare(&envelope(MSG, "a@x", &["b@x"], Some("Q2")))
            .unwrap();
        let stored = store.commit(vec![small, first]).unwrap();
        assert!(stored.iter().all(|s| s.new_message));
        // The same bytes again: nothing staged, one more delivery.
        let again = store.prepare(&spooled(&big, "Q3", &spool)).unwrap();
        assert_eq!(again.weight(), 0);
        let third = store.commit(vec![again]).unwrap();
        assert!(!third[0].new_message && !third[0].duplicate);
        drop(store);
        let store = Store::open_read_only(cfg).unwrap();
        assert_eq!(store.raw_by_hash(&stored[1].hash).unwrap(), big);
        assert_eq!(store.raw_by_hash(&stored[0].hash).unwrap(), MSG);
        assert_eq!(store.search(&query("quokka"), None).unwrap().len(), 2);
        let report = store.verify(&mut |_, _| {}).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        let seg = std::fs::read(segment_file(&path)).unwrap();
        assert!(
            !encrypted || !seg.windows(6).any(|w| w == b"quokka"),
            "sealed"
        );
        // Nothing staged is left behind: staged records have no name.
        let names: Vec<_> = std::fs::read_dir(path.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".seg")), "{names:?}");
    }
}

fn base64_line(bytes: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(80);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Every file under `dir`, as bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn holding(dir: &Path, marker: &[u8]) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|(_, b)| b.windows(marker.len()).any(|w| w == marker))
        .map(|(p, _)| p)
        .collect()
}

/// Removal (issue 14): the removed message's bytes are in no file of the
/// store afterwards (not the segments, the catalog, its WAL or the index),
/// a message shared with a delivery that stays is kept, verify passes and
/// names the tombstone, a checkpoint from before still verifies, and a
/// record blanked by hand without a tombstone is caught.
#[test]
fn removal_leaves_no_byte_of_the_message_and_verify_tells_it_from_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut cfg = StoreConfig::new(&path);
    // Level 1 and a marker zstd keeps as a literal run: grep finds it in
    // the segment before removal, so its absence after means something.
    cfg.compression_level = 1;
    let store = Store::open(cfg.clone()).unwrap();
    let marker = b"zq7xw3unique9marker4kv";
    let secret = [
        b"Subject: payroll\r\n\r\n".as_slice(),
        marker,
        b" and the rest\r\n".as_slice(),
    ]
    .concat();
    let shared = b"Subject: kept\r\n\r\nshared body stays\r\n".to_vec();
    let batch = vec![
        store
            .prepare(&envelope(
                &secret,
                "a@example.com",
                &["b@example.com"],
                Some("Q1"),
            ))
            .unwrap(),
        store
            .prepare(&envelope(
                &shared,
                "a@example.com",
                &["c@example.com"],
                Some("Q2"),
            ))
            .unwrap(),
        store
            .prepare(&envelope(
                &shared,
                "a@example.com",
                &["d@example.com"],
                Some("Q3"),
            ))
            .unwrap(),
    ];
    let ids: Vec<i64> = store.commit(batch).unwrap().iter().map(|s| s.id).collect();
    let before = store.checkpoint().unwrap();
    assert!(
        !holding(&path, marker).is_empty(),
        "the marker is not in the store to begin with"
    );

    let report = store
        .remove(&[
            (ids[0], "retention policy \"payroll, 1y\"".into()),
            (ids[1], "erase: request 7".into()),
        ])
        .unwrap();
    assert_eq!(report.deliveries.len(), 2);
    assert_eq!(
        report.messages, 1,
        "the shared message still has a delivery"
    );
    assert!(report.compacted.segments_rewritten >= 1);
    drop(store);

    let found = holding(&path, marker);
    assert!(
        found.is_empty(),
        "the removed message is still in {found:?}"
    );
    // Nor are the addresses its envelope named, in the address index.
    let conn = rusqlite::Connection::open(path.join("catalog.sqlite")).unwrap();
    let named = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let sql = format!(
        "SELECT count(*) FROM parties WHERE delivery IN ({}, {})",
        ids[0], ids[1]
    );
    assert_eq!(named(&sql), 0);
    assert_eq!(
        named("SELECT count(*) FROM parties WHERE address IN ('b@example.com', 'c@example.com')"),
        0
    );
    assert_eq!(
        named("SELECT count(*) FROM parties"),
        2,
        "d@ and a@ of the kept one"
    );
    drop(conn);
    let store = Store::open(cfg.clone()).unwrap();
    assert!(store.search(&query("payroll"), None).unwrap().is_empty());
    let left = store.search(&query(""), None).unwrap();
    assert_eq!(
        left.iter().map(|h| h.record.id).collect::<Vec<_>>(),
        [ids[2]]
    );
    assert_eq!(store.raw_by_hash(&left[0].record.content).unwrap(), shared);
    let v = store.verify(&mut |_, _| {}).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.removed.len(), 2, "{:?}", v.removed);
    assert!(v.removed[0].contains("payroll, 1y"), "{:?}", v.removed);
    assert!(store.check_checkpoint(&before).unwrap().is_empty());
    // Removing again changes nothing.
    assert!(store
        .remove(&[(ids[0], "again".into())])
        .unwrap()
        .deliveries
        .is_empty());
    drop(store);

    // A delivery blanked by hand, with no tombstone for it.
    let conn = rusqlite::Connection::open(path.join("catalog.sqlite")).unwrap();
    conn.execute(
        "UPDATE deliveries SET message = 0, record = ?2 WHERE id = ?1",
        rusqlite::params![
            ids[2],
            format!(
                "{{\"v\":1,\"id\":{},\"kind\":\"deleted\",\"tombstone\":1}}",
                ids[2]
            )
        ],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(cfg).unwrap();
    let v = store.verify(&mut |_, _| {}).unwrap();
    assert!(
        v.problems.iter().any(|p| p.contains(&format!(
            "delivery {}: its record is gone and no tombstone",
            ids[2]
        ))),
        "{:?}",
        v.problems
    );
}

/// A removal asked to stop (a legal hold was placed meanwhile) stops
/// before its next transaction, with what it removed by then recorded and
/// the store valid.
#[test]
fn a_removal_stops_between_transactions_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let batch: Vec<_> = (0..1200)
        .map(|i| {
            let body = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
            store
                .prepare(&envelope(
                    body.as_bytes(),
                    "a@example.com",
                    &["b@example.com"],
                    None,
                ))
                .unwrap()
        })
        .collect();
    let ids: Vec<(i64, String)> = store
        .commit(batch)
        .unwrap()
        .iter()
        .map(|s| (s.id, "test".to_string()))
        .collect();
    let mut asked = 0;
    let report = store
        .remove_while(&ids, &mut |_| {
            asked += 1;
            asked == 1
        })
        .unwrap();
    assert!(report.stopped);
    assert_eq!(report.deliveries.len(), 500);
    assert_eq!(store.search(&query(""), None).unwrap().len(), 700);
    let v = store.verify(&mut |_, _| {}).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.removed.len(), 500);
}

/// Compaction moves a record larger than its write size through a staged
/// file (not memory) and the message reads back byte for byte.
#[test]
fn compaction_moves_a_large_record_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    let mut h = blake3::Hasher::new();
    h.update(b"incompressible");
    let mut noise = vec![0u8; 34 << 20];
    h.finalize_xof().fill(&mut noise);
    big.extend_from_slice(&noise);
    let small = b"Subject: small\r\n\r\nbody\r\n".to_vec();
    let stored = store
        .commit(vec![
            store
                .prepare(&envelope(&small, "a@example.com", &["b@example.com"], None))
                .unwrap(),
            store
                .prepare(&envelope(&big, "a@example.com", &["b@example.com"], None))
                .unwrap(),
        ])
        .unwrap();
    let report = store.remove(&[(stored[0].id, "test".into())]).unwrap();
    assert_eq!(report.compacted.segments_rewritten, 1);
    let hit = store.get(stored[1].id).unwrap();
    assert_eq!(store.raw_by_hash(&hit.record.content).unwrap(), big);
    assert!(store.verify(&mut |_, _| {}).unwrap().ok());
}

/// A catalog written before the address index (schema 1) is read through
/// a view of its records by a reader, and gets the index, filled from the
/// records, when it is next opened to write; the answers are the same.
#[test]
fn a_version_1_catalog_is_read_through_a_view_and_upgraded_when_opened_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = StoreConfig::new(&path);
    let store = Store::open(cfg.clone()).unwrap();
    let mut batch = Vec::new();
    for (i, (sender, rcpts)) in [
        ("a@example.com", vec!["b@example.com", "C@Example.com"]),
        ("b@example.com", vec!["a@example.com"]),
        ("", vec!["c@example.com"]),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
        let mut env = envelope(body.as_bytes(), sender, &rcpts, Some(&format!("Q{i}")));
        if sender.is_empty() {
            env.sender = None;
        }
        batch.push(store.prepare(&env).unwrap());
    }
    let ids: Vec<i64> = store.commit(batch).unwrap().iter().map(|s| s.id).collect();
    let queries = [
        "recipient:c@example.com",
        "sender:a@example.com",
        "sender:B@EXAMPLE.COM OR recipient:b@example.com",
        "-recipient:a@example.com",
        "sender:<>",
    ];
    let answers =
        |store: &Store| -> Vec<Vec<i64>> { queries.iter().map(|q| found(store, q)).collect() };
    let expected = vec![
        vec![ids[0], ids[2]],
        vec![ids[0]],
        vec![ids[0], ids[1]],
        vec![ids[0], ids[2]],
        vec![ids[2]],
    ];
    assert_eq!(answers(&store), expected);
    drop(store);

    let conn = rusqlite::Connection::open(path.join("catalog.sqlite")).unwrap();
    conn.execute_batch("DROP TABLE parties; UPDATE meta SET value = '1' WHERE key = 'schema';")
        .unwrap();
    drop(conn);
    let reader = Store::open_read_only(cfg.clone()).unwrap();
    assert_eq!(answers(&reader), expected);
    drop(reader);

    let store = Store::open(cfg).unwrap();
    assert_eq!(answers(&store), expected);
    drop(store);
    let conn = rusqlite::Connection::open(path.join("catalog.sqlite")).unwrap();
    let schema: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(schema, "3");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM main.parties", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2 + 4, "two envelope senders and four recipients");
}

/// A conversation is every message linked by Message-ID, In-Reply-To and
/// References, step by step, whichever message's id is asked for; an
/// unrelated message is not in it, and a removed one drops out.
#[test]
fn thread_finds_the_whole_conversation_from_any_of_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let messages = [
        // The start; a reply; a reply to the reply with In-Reply-To only
        // (some clients write no References); a reply naming the start
        // only in References; and an unrelated message.
        "Message-ID: <start@x>\r\nSubject: plan\r\n\r\nA\r\n",
        "Message-ID: <r1@x>\r\nIn-Reply-To: <start@x>\r\nReferences: <start@x>\r\nSubject: Re: plan\r\n\r\nB\r\n",
        "Message-ID: <r2@x>\r\nIn-Reply-To: <r1@x>\r\nSubject: Re: plan\r\n\r\nC\r\n",
        "Message-ID: <r3@x>\r\nReferences: <start@x> <gone@x>\r\nSubject: Re: plan\r\n\r\nD\r\n",
        "Message-ID: <other@x>\r\nReferences: <elsewhere@x>\r\nSubject: other\r\n\r\nE\r\n",
    ];
    let batch = messages
        .iter()
        .map(|m| {
            let env = envelope(m.as_bytes(), "a@example.com", &["b@example.com"], None);
            store.prepare(&env).unwrap()
        })
        .collect();
    let ids: Vec<i64> = store.commit(batch).unwrap().iter().map(|s| s.id).collect();
    let mut conversation = ids[..4].to_vec();
    conversation.sort();
    for asked in ["start@x", "<r1@x>", "r2@x", "r3@x", "gone@x"] {
        let mut got = found(&store, &format!("thread:{asked}"));
        got.sort();
        assert_eq!(got, conversation, "thread:{asked}");
    }
    assert_eq!(found(&store, "thread:other@x"), vec![ids[4]]);
    assert_eq!(found(&store, "thread:elsewhere@x"), vec![ids[4]]);
    assert!(found(&store, "thread:nobody@x").is_empty());
    // Exact ids: a prefix or another case is another id.
    assert!(found(&store, "thread:start").is_empty());
    assert!(found(&store, "thread:START@x").is_empty());
    let mut negated = found(&store, "-thread:r2@x");
    negated.sort();
    assert_eq!(negated, vec![ids[4]]);

    // The reply in the middle goes: r2 named only r1, so it is on its own.
    store.remove(&[(ids[1], "test".into())]).unwrap();
    assert_eq!(found(&store, "thread:r2@x"), vec![ids[2]]);
    let mut rest = found(&store, "thread:start@x");
    rest.sort();
    assert_eq!(rest, vec![ids[0], ids[3]]);
}

/// A catalog from before conversations were kept (schema 2) is upgraded
/// at once when opened to write, without reading a message: its older
/// messages are found by `thread:` only once their links are read, in
/// steps, newest first; new messages are linked as they are stored.
#[test]
fn a_version_2_catalog_gets_its_conversation_links_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let cfg = StoreConfig::new(&path);
    let store = Store::open(cfg.clone()).unwrap();
    let batch = (0..5)
        .map(|i| {
            let m = format!(
                "Message-ID: <m{i}@x>\r\nReferences: <m0@x>\r\nSubject: s{i}\r\n\r\nbody\r\n"
            );
            let env = envelope(m.as_bytes(), "a@example.com", &["b@example.com"], None);
            store.prepare(&env).unwrap()
        })
        .collect();
    let ids: Vec<i64> = store.commit(batch).unwrap().iter().map(|s| s.id).collect();
    assert_eq!(store.threads_pending().unwrap(), None);
    drop(store);
    let conn = rusqlite::Connection::open(path.join("catalog.sqlite")).unwrap();
    conn.execute_batch("DROP TABLE refs; UPDATE meta SET value = '2' WHERE key = 'schema';")
        .unwrap();
    drop(conn);

    // Read as it is: no links, nothing found, no error.
    let reader = Store::open_read_only(cfg.clone()).unwrap();
    assert!(found(&reader, "thread:m0@x").is_empty());
    drop(reader);

    let store = Store::open(cfg.clone()).unwrap();
    assert!(store.threads_pending().unwrap().is_some());
    assert!(found(&store, "thread:m0@x").is_empty());
    // A new message is linked as it is stored.
    let env = envelope(
        b"Message-ID: <new@x>\r\nIn-Reply-To: <m0@x>\r\n\r\nnew\r\n",
        "a@example.com",
        &["b@example.com"],
        None,
    );
    let new = store.put(&env).unwrap().id;
    assert_eq!(found(&store, "thread:m0@x"), vec![new]);

    let first = store.link_older_messages(2).unwrap();
    assert_eq!((first.read, first.unreadable), (2, 0));
    assert!(first.pending.is_some());
    let mut got = found(&store, "thread:m0@x");
    got.sort();
    assert_eq!(got, vec![ids[3], ids[4], new], "the two newest first");
    let mut steps = 1;
    while store.threads_pending().unwrap().is_some() {
        store.link_older_messages(2).unwrap();
        steps += 1;
        assert!(steps < 10);
    }
    let mut got = found(&store, "thread:m0@x");
    got.sort();
    let mut all = ids.clone();
    all.push(new);
    assert_eq!(got, all);
    assert_eq!(store.link_older_messages(2).unwrap(), Default::default());
    drop(store);
    let reader = Store::open_read_only(cfg).unwrap();
    assert_eq!(found(&reader, "thread:m3@x").len(), 6);
}

/// A page and the count beside it: the count stops where it was asked to.
#[test]
fn a_page_counts_its_matches_up_to_the_limit_asked() {
    use mailkeep_store::catalog::{Order, Page};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let batch = (0..5)
        .map(|i| {
            let body = format!("Subject: n{i}\r\n\r\ncommon words\r\n");
            let env = envelope(body.as_bytes(), "a@example.com", &["b@example.com"], None);
            store.prepare(&env).unwrap()
        })
        .collect();
    let ids: Vec<i64> = store.commit(batch).unwrap().iter().map(|s| s.id).collect();
    let page = |offset, limit, count_up_to| Page {
        offset,
        limit,
        order: Order::OldestFirst,
        count_up_to,
        facets: false,
    };
    let got = |p: Page| {
        let found = store.search_page(&query("common"), p).unwrap();
        assert!(found.facets.is_none());
        (
            found.hits.iter().map(|h| h.record.id).collect::<Vec<_>>(),
            found.total,
        )
    };
    assert_eq!(got(page(0, 2, u64::MAX)), (ids[..2].to_vec(), 5));
    assert_eq!(got(page(0, 2, 3)), (ids[..2].to_vec(), 3));
    assert_eq!(got(page(3, 5, 3)), (ids[3..].to_vec(), 3));
    assert_eq!(got(page(0, 2, 5)), (ids[..2].to_vec(), 5));
}

/// Facets: capture years, envelope sender domains (the null sender as
/// `<>`), attachments, over the matches counted and only those.
#[test]
fn facets_count_years_sender_domains_and_attachments_of_the_matches() {
    use mailkeep_store::catalog::{Facets, Order, Page};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let year = |y: i32| {
        chrono::NaiveDate::from_ymd_opt(y, 6, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
    };
    let attached =
        "Subject: a\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nfacet word\r\n--b\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=x.pdf\r\n\r\nPDF\r\n--b--\r\n";
    let plain = "Subject: p\r\n\r\nfacet word\r\n";
    let other = "Subject: o\r\n\r\nsomething else\r\n";
    let mut batch = Vec::new();
    for (sender, y, body) in [
        ("a@One.example", 2025, attached),
        ("b@one.example", 2026, plain),
        ("c@two.example", 2026, plain),
        ("", 2024, plain),
        ("local", 2026, plain),
        ("d@three.example", 2026, other),
    ] {
        let mut env = envelope(
            format!("{body}X-Sender: {sender}\r\n").as_bytes(),
            sender,
            &["r@example.com"],
            None,
        );
        if sender.is_empty() {
            env.sender = None;
        }
        env.received = year(y);
        batch.push(store.prepare(&env).unwrap());
    }
    store.commit(batch).unwrap();
    let facets = |q: &str, count_up_to: u64| {
        let page = Page {
            offset: 0,
            limit: 2,
            order: Order::NewestFirst,
            count_up_to,
            facets: true,
        };
        let found = store.search_page(&query(q), page).unwrap();
        (found.total, found.facets.unwrap())
    };
    let (total, f) = facets("facet", u64::MAX);
    assert_eq!(total, 5);
    assert_eq!(
        f,
        Facets {
            years: vec![(2026, 3), (2025, 1), (2024, 1)],
            sender_domains: vec![
                ("one.example".into(), 2),
                ("<>".into(), 1),
                ("two.example".into(), 1)
            ],
            with_attachment: 1,
            without_attachment: 4,
        }
    );
    // A page holding every match gives the same facets without the second
    // pass (a limit of 2 needs it, 10 does not).
    for q in [
        "facet",
        "facet OR something",
        "-facet",
        "has:attachment",
        "word",
    ] {
        let page = |limit| Page {
            offset: 0,
            limit,
            order: Order::NewestFirst,
            count_up_to: u64::MAX,
            facets: true,
        };
        let counted = store.search_page(&query(q), page(2)).unwrap();
        let listed = store.search_page(&query(q), page(10)).unwrap();
        assert_eq!(counted.total, listed.total, "{q}");
        assert_eq!(counted.facets, listed.facets, "{q}");
    }
    let (total, f) = facets("facet", 2);
    assert_eq!(total, 2);
    assert_eq!(f.with_attachment + f.without_attachment, 2, "{f:?}");
    let (total, f) = facets("nothing-matches-this", u64::MAX);
    assert_eq!((total, f), (0, Facets::default()));
}

/// A prefix of a message: its first bytes exactly, or all of it.
#[test]
fn a_raw_prefix_is_the_start_of_the_message_or_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..40_000u32 {
        body.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    let env = envelope(&body, "a@example.com", &["b@example.com"], None);
    let saved = store.commit(vec![store.prepare(&env).unwrap()]).unwrap();
    let content = &saved[0].hash;
    assert!(body.len() > 300_000);
    for max in [0, 1, 1000, 65_536, 200_001] {
        assert_eq!(
            store.raw_prefix(content, max).unwrap(),
            body[..max],
            "{max}"
        );
    }
    assert_eq!(store.raw_prefix(content, 10 << 20).unwrap(), body);
}

/// A scope (an OR of literal login and address terms) is kept between
/// searches on a connection: what is added after it was built is found,
/// what is removed is not, on the writer's reader and on a read-only
/// handle alike.
#[test]
fn a_kept_scope_follows_new_and_removed_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path().join("s"));
    let store = Store::open(cfg.clone()).unwrap();
    let add = |sender: &str, rcpt: &str, n: usize| -> i64 {
        let body = format!("Subject: k{n}\r\n\r\nkept {n}\r\n");
        let mut env = envelope(body.as_bytes(), sender, &[rcpt], None);
        env.login = None;
        let prepared = store.prepare(&env).unwrap();
        store.commit(vec![prepared]).unwrap()[0].id
    };
    let scope = "login:amy OR sender:amy@example.com OR recipient:amy@example.com";
    let a = add("amy@example.com", "x@example.com", 1);
    let _other = add("x@example.com", "y@example.com", 2);
    let reader = Store::open_read_only(cfg).unwrap();
    assert_eq!(found(&store, scope), [a]);
    assert_eq!(found(&reader, scope), [a]);
    let b = add("x@example.com", "AMY@example.com", 3);
    let _c = add("y@example.com", "x@example.com", 4);
    assert_eq!(found(&store, scope), [a, b]);
    assert_eq!(found(&reader, scope), [a, b]);
    // ANDed with other terms, as the web does.
    assert_eq!(found(&store, &format!("({scope}) kept")), [a, b]);
    assert_eq!(found(&reader, &format!("({scope}) k3")), [b]);
    store.remove(&[(a, "erase: test".into())]).unwrap();
    assert_eq!(found(&store, scope), [b]);
    assert_eq!(found(&reader, scope), [b]);
    assert_eq!(found(&reader, &format!("({scope}) kept")), [b]);
}

/// The audit anchor only moves forward: two writers that read the log's
/// head one after the other may record it in the other order.
#[test]
fn the_audit_anchor_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    assert_eq!(store.audit_anchor().unwrap(), None);
    store.set_audit_anchor(5, "five").unwrap();
    store.set_audit_anchor(3, "three").unwrap();
    assert_eq!(store.audit_anchor().unwrap(), Some((5, "five".to_string())));
    store.set_audit_anchor(7, "seven").unwrap();
    assert_eq!(
        store.audit_anchor().unwrap(),
        Some((7, "seven".to_string()))
    );
}

/// Reading a message's first bytes only leaves its decompression half
/// done; the next message read on the same thread (one decompression
/// context per thread) still comes back exact, prefix or whole.
#[test]
fn a_prefix_read_leaves_nothing_behind_for_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("s"))).unwrap();
    let body = |seed: u64| -> Vec<u8> {
        let mut x = seed;
        let mut out = format!("Subject: m{seed}\r\n\r\n").into_bytes();
        while out.len() < 300_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.extend_from_slice(format!("{:x} ", x >> 40).as_bytes());
        }
        out
    };
    let messages: Vec<Vec<u8>> = (1..=3).map(body).collect();
    let hashes: Vec<String> = messages
        .iter()
        .map(|m| {
            let env = envelope(m, "a@example.com", &["b@example.com"], None);
            store.put(&env).unwrap().hash
        })
        .collect();
    for round in 0..2 {
        for (i, hash) in hashes.iter().enumerate() {
            let prefix = store.raw_prefix(hash, 1000 + round * 7).unwrap();
            assert_eq!(prefix, messages[i][..prefix.len()], "prefix of {i}");
            assert_eq!(store.raw_by_hash(hash).unwrap(), messages[i], "whole {i}");
            let _ = store.raw_prefix(hash, 100_000).unwrap();
            let mut out = Vec::new();
            store.write_raw(&hashes[(i + 1) % 3], &mut out).unwrap();
            assert_eq!(out, messages[(i + 1) % 3], "streamed after a prefix");
        }
    }
}
