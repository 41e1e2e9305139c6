//! `mailkeep import` readers against real writers: mailkeep's own mbox
//! destination, Python's `mailbox` (when python3 is installed), and files
//! laid out as Maildir and plain trees. Memory is measured with a counting
//! allocator (per thread, so tests running in parallel do not disturb
//! each other).

use chrono::{DateTime, TimeZone, Utc};
use mailkeep_capture::import::{walk, Found, ImportOptions, MboxFormat};
use mailkeep_envelope::{CapturePath, Client, Envelope, RawMessage};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// bookkeeping only touches const-initialised thread locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most heap this thread held at once while running `f`, above what
/// it held before.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, (PEAK.with(Cell::get) - base).max(0) as usize)
}

const MIB: usize = 1024 * 1024;

fn options(spool: &Path) -> ImportOptions {
    ImportOptions {
        spool_dir: spool.to_path_buf(),
        ..ImportOptions::default()
    }
}

fn run(paths: Vec<PathBuf>, opts: ImportOptions) -> Vec<Found> {
    let mut walker = walk(paths, opts);
    let found: Vec<Found> = walker.by_ref().collect();
    assert_eq!(walker.bytes_read(), walker.bytes_total());
    found
}

/// `(origin, Ok(bytes) | Err(reason))` for compact assertions.
fn summary(found: &[Found], root: &Path) -> Vec<(String, Result<Vec<u8>, String>)> {
    let prefix = format!("{}/", root.display());
    found
        .iter()
        .map(|f| match f {
            Found::Message { origin, envelope } => (
                origin.trim_start_matches(&prefix).to_string(),
                Ok(envelope.message.to_vec().unwrap()),
            ),
            Found::Skipped { origin, reason } => (
                origin.trim_start_matches(&prefix).to_string(),
                Err(reason.clone()),
            ),
        })
        .collect()
}

fn message(found: &Found) -> &Envelope {
    match found {
        Found::Message { envelope, .. } => envelope,
        Found::Skipped { origin, reason } => panic!("{origin} skipped: {reason}"),
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).unwrap()
}

/// Writes `env` with mailkeep's own mbox writer, block included or not.
fn append_with_mailkeep(mbox: &Path, env: &Envelope, with_block: bool) {
    let head = env.message.head().unwrap();
    let headers = if with_block {
        mailkeep_envelope::block::envelope_headers(
            env,
            "archive.example",
            mailkeep_envelope::block::line_ending(&head),
        )
    } else {
        String::new()
    };
    let mut locked = mailkeep_destinations::mbox::lock(mbox, Duration::from_secs(5)).unwrap();
    locked
        .append(env.received, env.sender.as_deref(), &headers, &env.message)
        .unwrap();
    locked.sync().unwrap();
}

fn assert_same_envelope(got: &Envelope, want: &Envelope) {
    assert_eq!(
        got.message.to_vec().unwrap(),
        want.message.to_vec().unwrap()
    );
    assert_eq!(got.received, want.received);
    assert_eq!(got.capture, want.capture);
    assert_eq!(got.client, want.client);
    assert_eq!(got.login, want.login);
    assert_eq!(got.login_method, want.login_method);
    assert_eq!(got.queue_id, want.queue_id);
    assert_eq!(got.sender, want.sender);
    assert_eq!(got.recipients, want.recipients);
    assert_eq!(got.tags, want.tags);
    assert_eq!(got.tls, want.tls);
}

#[test]
fn import_round_trips_mailkeep_mbox_lf_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("archive.mbox");

    let mut lf = Envelope::new(
        CapturePath::Milter,
        RawMessage::from_bytes(
            b"From: alice@example.com\nSubject: one\n\nFrom the start\n\nFrom here, after a blank line\n\
              >From there\n>>From everywhere\n\n"
                .to_vec(),
        ),
    );
    lf.received = at(1_795_000_000);
    lf.sender = Some("alice@example.com".into());
    lf.recipients = vec!["bob@example.com".into(), "hidden-bcc@example.com".into()];
    lf.login = Some("alice".into());
    lf.login_method = Some("PLAIN".into());
    lf.client = Client {
        address: Some("192.0.2.7".into()),
        port: Some(58_123),
        hostname: Some("laptop.example.com".into()),
        helo: Some("[192.0.2.7]".into()),
    };
    lf.tls = Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into());
    lf.queue_id = Some("4Qx1Yz2abc".into());
    lf.tags = vec!["outgoing".into(), "odd\\tag".into()];

    let mut crlf = Envelope::new(
        CapturePath::Pipe,
        RawMessage::from_bytes(
            b"Subject: bounce\r\n\r\nbody\r\n\r\nFrom x\r\n>From y\r\n\xe9t\xe9\r\n".to_vec(),
        ),
    );
    crlf.received = at(1_795_000_100);
    crlf.recipients = vec!["postmaster@example.com".into()];

    for env in [&lf, &crlf] {
        append_with_mailkeep(&mbox, env, true);
    }
    let raw = fs::read(&mbox).unwrap();
    // The writer quoted what needed it, so this test checks the unquoting.
    assert!(raw.windows(18).any(|w| w == b"\n>From here, after"));
    assert!(raw.windows(16).any(|w| w == b"\n>>>From everywh"));

    let found = run(vec![mbox.clone()], options(dir.path()));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_same_envelope(message(&found[0]), &lf);
    assert_same_envelope(message(&found[1]), &crlf);
    let Found::Message { origin, .. } = &found[1] else {
        unreachable!()
    };
    assert_eq!(origin, &format!("{}:2", mbox.display()));
}

#[test]
fn import_reads_mbox_without_block_and_mboxo() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("plain.mbox");
    // mailkeep's mbox destination with envelope headers turned off: the
    // envelope is guessed from the From_ line and the header fields. The
    // writer quotes `>From q` once more; mboxrd takes that back, mboxo
    // cannot.
    let mut env = Envelope::new(
        CapturePath::Filter,
        RawMessage::from_bytes(
            b"Delivered-To: <d1@example.com>\nDelivered-To: d2@example.com\nSubject: s\n\n>From q\nno final newline"
                .to_vec(),
        ),
    );
    env.received = at(1_795_000_000);
    env.sender = Some("s@example.com".into());
    append_with_mailkeep(&mbox, &env, false);
    env.received = at(1_795_000_001);
    env.sender = None;
    append_with_mailkeep(&mbox, &env, false);

    for (format, body) in [(MboxFormat::Rd, ">From q"), (MboxFormat::O, ">>From q")] {
        let opts = ImportOptions {
            mbox_format: format,
            ..options(dir.path())
        };
        let found = run(vec![mbox.clone()], opts);
        assert_eq!(found.len(), 2);
        let first = message(&found[0]);
        // mbox cannot say whether the last line had its newline: it has one now.
        let want = format!(
            "Delivered-To: <d1@example.com>\nDelivered-To: d2@example.com\nSubject: s\n\n{body}\nno final newline\n"
        );
        assert_eq!(first.message.to_vec().unwrap(), want.as_bytes());
        assert_eq!(first.capture, CapturePath::Import);
        assert_eq!(first.tags, vec!["import".to_string()]);
        assert_eq!(first.sender.as_deref(), Some("s@example.com"));
        assert_eq!(first.received, at(1_795_000_000));
        assert_eq!(
            first.recipients,
            vec!["d1@example.com".to_string(), "d2@example.com".to_string()]
        );
        let second = message(&found[1]);
        assert_eq!(second.sender, None, "MAILER-DAEMON is the null sender");
        assert_eq!(second.received, at(1_795_000_001));
    }

    // mboxrd and mboxo differ on `>>From `.
    let quoted = dir.path().join("quoted.mbox");
    fs::write(
        &quoted,
        "From a Sat Nov 21 22:54:14 2026\nS: 1\n\n>From a\n>>From b\n\n",
    )
    .unwrap();
    for (format, want) in [
        (MboxFormat::Rd, "S: 1\n\nFrom a\n>From b\n"),
        (MboxFormat::O, "S: 1\n\nFrom a\n>>From b\n"),
    ] {
        let opts = ImportOptions {
            mbox_format: format,
            ..options(dir.path())
        };
        let found = run(vec![quoted.clone()], opts);
        assert_eq!(
            message(&found[0]).message.to_vec().unwrap(),
            want.as_bytes(),
            "{format:?}"
        );
    }
}

#[test]
fn import_reads_an_mbox_written_by_python() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("py.mbox");
    let script = r#"
import mailbox, sys
mb = mailbox.mbox(sys.argv[1])
mb.add(b"Return-Path: <py@example.com>\nSubject: p1\n\nFrom the start\n\nFrom after a blank\nend\n")
mb.add(b"Subject: p2\n\nsecond\n")
mb.flush()
"#;
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&mbox)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("python3 with mailbox not usable ({other:?}); skipping the peer test");
            return;
        }
    }
    let opts = ImportOptions {
        mbox_format: MboxFormat::O,
        ..options(dir.path())
    };
    let found = run(vec![mbox], opts);
    assert_eq!(found.len(), 2, "{found:?}");
    let first = message(&found[0]);
    assert_eq!(
        first.message.to_vec().unwrap(),
        b"Return-Path: <py@example.com>\nSubject: p1\n\nFrom the start\n\nFrom after a blank\nend\n"
    );
    // Python writes `From MAILER-DAEMON` for every message; Return-Path decides.
    assert_eq!(first.sender.as_deref(), Some("py@example.com"));
    assert_eq!(
        message(&found[1]).message.to_vec().unwrap(),
        b"Subject: p2\n\nsecond\n"
    );
    assert_eq!(message(&found[1]).sender, None);
}

#[test]
fn import_guesses_envelope_of_eml() {
    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("one.eml");
    let bytes = b"Return-Path: <>\r\nX-Original-To: orig@example.com\r\n\
        Date: Sat, 21 Nov 2026 22:54:14 +0100 (CET)\r\nSubject: s\r\n\r\nbody\r\n";
    fs::write(&eml, bytes).unwrap();
    let found = run(vec![eml.clone()], options(dir.path()));
    let env = message(&found[0]);
    assert_eq!(env.message.to_vec().unwrap(), bytes);
    assert_eq!(env.sender, None);
    assert_eq!(env.recipients, vec!["orig@example.com".to_string()]);
    assert_eq!(
        env.received,
        DateTime::parse_from_rfc3339("2026-11-21T21:54:14Z").unwrap()
    );
    assert_eq!(env.capture, CapturePath::Import);
    assert_eq!(env.tags, vec!["import".to_string()]);

    // No Date: the file's mtime.
    let eml2 = dir.path().join("two.eml");
    fs::write(&eml2, b"Subject: no date\n\nx\n").unwrap();
    let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    fs::File::options()
        .write(true)
        .open(&eml2)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let found = run(vec![eml2], options(dir.path()));
    assert_eq!(message(&found[0]).received, at(1_700_000_000));
}

#[test]
fn import_maildir_reads_new_and_cur_not_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    // A copy mailkeep archived into a Maildir, CRLF, block on top.
    let mut env = Envelope::new(
        CapturePath::Filter,
        RawMessage::from_bytes(b"Subject: archived\r\n\r\nhello\r\n".to_vec()),
    );
    env.received = at(1_795_000_000);
    env.sender = Some("a@example.com".into());
    env.recipients = vec!["b@example.com".into()];
    env.client = Client {
        address: Some("2001:db8::25".into()),
        port: Some(25),
        hostname: None,
        helo: Some("mx.example.net".into()),
    };
    let block = mailkeep_envelope::block::envelope_headers(&env, "archive.example", "\r\n");
    let mut copy = block.into_bytes();
    copy.extend(env.message.to_vec().unwrap());
    fs::write(md.join("new/1795000000.M1P1.archive.example,S=100"), &copy).unwrap();
    fs::write(
        md.join("cur/1700000000.M2P2.host:2,S"),
        b"Subject: seen\n\nold\n",
    )
    .unwrap();
    fs::write(
        md.join("cur/1600000000.M3P3.host:2,"),
        b"Subject: older\n\nolder\n",
    )
    .unwrap();
    fs::write(
        md.join("tmp/1795000001.M4P4.host"),
        b"Subject: being delivered\n\n",
    )
    .unwrap();
    fs::write(md.join("dovecot-uidlist"), b"3 V1 N4\n").unwrap();
    fs::write(
        md.join(".Sent/cur/1650000000.M5P5.host:2,S"),
        b"Subject: sent\n\nsent\n",
    )
    .unwrap();

    let found = run(vec![md.clone()], options(dir.path()));
    let got = summary(&found, dir.path());
    let names: Vec<&str> = got.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        names,
        [
            "Maildir/new/1795000000.M1P1.archive.example,S=100",
            "Maildir/cur/1600000000.M3P3.host:2,",
            "Maildir/cur/1700000000.M2P2.host:2,S",
            "Maildir/.Sent/cur/1650000000.M5P5.host:2,S",
        ]
    );
    assert!(got.iter().all(|(_, r)| r.is_ok()), "{got:?}");
    assert_same_envelope(message(&found[0]), &env);
}

#[test]
fn import_recurses_sorted_and_skips_what_is_not_mail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::create_dir_all(root.join("loop")).unwrap();
    fs::write(root.join("a.eml"), b"Subject: a\n\nA\n").unwrap();
    fs::write(root.join("b.txt"), b"hello world\n").unwrap();
    fs::write(root.join("c-empty.eml"), b"").unwrap();
    fs::write(root.join(".hidden.eml"), b"Subject: hidden\n\n").unwrap();
    fs::write(
        root.join("d/m.mbox"),
        b"From x Sat Nov 21 22:54:14 2026\nSubject: 1\n\none\n\nFrom y Sat Nov 21 22:54:15 2026\nSubject: 2\n\ntwo\n\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(root.join("d"), root.join("e-link")).unwrap();
    std::os::unix::fs::symlink(root.join("a.eml"), root.join("f-link.eml")).unwrap();
    std::os::unix::fs::symlink("..", root.join("loop/up")).unwrap();

    let found = run(
        vec![root.clone(), root.join("d"), dir.path().join("missing")],
        options(dir.path()),
    );
    let got = summary(&found, dir.path());
    let link = "symbolic link to a directory, not followed".to_string();
    let want: Vec<(String, Result<Vec<u8>, String>)> = vec![
        ("tree/a.eml".into(), Ok(b"Subject: a\n\nA\n".to_vec())),
        ("tree/b.txt".into(), Err("not a mail file".into())),
        ("tree/c-empty.eml".into(), Err("empty".into())),
        (
            "tree/d/m.mbox:1".into(),
            Ok(b"Subject: 1\n\none\n".to_vec()),
        ),
        (
            "tree/d/m.mbox:2".into(),
            Ok(b"Subject: 2\n\ntwo\n".to_vec()),
        ),
        ("tree/e-link".into(), Err(link.clone())),
        ("tree/f-link.eml".into(), Ok(b"Subject: a\n\nA\n".to_vec())),
        ("tree/loop/up".into(), Err(link)),
        ("tree/d".into(), Err("directory already read".into())),
    ];
    assert_eq!(got[..got.len() - 1], want[..]);
    match got.last() {
        Some((o, Err(r))) if o.ends_with("missing") && r.starts_with("unreadable: ") => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_truncated_mbox_yields_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("cut.mbox");
    fs::write(
        &mbox,
        b"From a@x Sat Nov 21 22:54:14 2026\nSubject: one\n\nbody\n\n\
          From b@x Sat Nov 21 22:54:15 2026\nReturn-Path: <b@x>\nX-Envelope-To: <c@x>\nSubj",
    )
    .unwrap();
    let found = run(vec![mbox], options(dir.path()));
    let got = summary(&found, dir.path());
    assert_eq!(
        got,
        vec![
            (
                "cut.mbox:1".to_string(),
                Ok(b"Subject: one\n\nbody\n".to_vec())
            ),
            (
                "cut.mbox:2".to_string(),
                Ok(b"Return-Path: <b@x>\nX-Envelope-To: <c@x>\nSubj".to_vec())
            ),
        ]
    );
    // Not a complete block, so nothing was stripped and the envelope is guessed.
    let second = message(&found[1]);
    assert_eq!(second.recipients, vec!["c@x".to_string()]);
    assert_eq!(second.capture, CapturePath::Import);

    let empty = dir.path().join("empty.mbox");
    fs::write(&empty, b"").unwrap();
    let only_from = dir.path().join("only-from.mbox");
    fs::write(&only_from, b"From a@x Sat Nov 21 22:54:14 2026\n\n").unwrap();
    let found = run(vec![empty, only_from], options(dir.path()));
    assert_eq!(
        summary(&found, dir.path()),
        vec![
            ("empty.mbox".to_string(), Err("empty".to_string())),
            ("only-from.mbox:1".to_string(), Err("empty".to_string())),
        ]
    );
}

/// Writes `prefix`, then `size` bytes of `line` repeated, then `suffix`.
fn write_big(path: &Path, prefix: &[u8], line: &[u8], size: usize, suffix: &[u8]) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    f.write_all(prefix).unwrap();
    let block: Vec<u8> = line.iter().copied().cycle().take(MIB).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
    f.write_all(suffix).unwrap();
    f.flush().unwrap();
}

#[test]
fn import_skips_oversize_message_and_reads_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("big.mbox");
    let mut line = vec![b'x'; 99];
    line.push(b'\n');
    write_big(
        &mbox,
        b"From a@x Sat Nov 21 22:54:14 2026\nSubject: big\n\n",
        &line,
        50 * MIB,
        // Ends the last (cut) line, then the separator.
        b"\n\nFrom b@x Sat Nov 21 22:54:15 2026\nSubject: small\n\nhi\n\n",
    );
    let eml = dir.path().join("big.eml");
    write_big(&eml, b"Subject: big\n\n", &line, 11 * MIB, b"");
    let opts = ImportOptions {
        max_message_size: 10 * MIB as u64,
        ..options(dir.path())
    };
    let (found, peak) = peak_heap(|| summary(&run(vec![mbox, eml], opts), dir.path()));
    assert_eq!(
        found,
        vec![
            (
                "big.mbox:1".to_string(),
                Err("larger than 10 MiB".to_string())
            ),
            (
                "big.mbox:2".to_string(),
                Ok(b"Subject: small\n\nhi\n".to_vec())
            ),
            ("big.eml".to_string(), Err("larger than 10 MiB".to_string())),
        ]
    );
    assert!(peak < 8 * MIB, "peak heap {peak} bytes");
}

#[test]
fn import_file_without_newline_uses_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let size = 20 * MIB;
    let eml = dir.path().join("a-one-line.eml");
    write_big(&eml, b"X-Long: ", b"x", size, b"");
    let from = dir.path().join("b-from-only.mbox");
    write_big(&from, b"From ", b"y", size, b"");
    let mbox = dir.path().join("c-body.mbox");
    write_big(
        &mbox,
        b"From a@x Sat Nov 21 22:54:14 2026\nSubject: s\n\n",
        b"z",
        size,
        b"",
    );
    let junk = dir.path().join("d-junk");
    write_big(&junk, b"", b"j", size, b"");
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();

    let (found, peak) = peak_heap(|| {
        let found = run(vec![dir.path().to_path_buf()], options(&spool));
        found
            .into_iter()
            .map(|f| match f {
                Found::Message { origin, envelope } => {
                    assert!(envelope.message.is_spooled(), "{origin} held in memory");
                    (origin, Ok(envelope.message.len()))
                }
                Found::Skipped { origin, reason } => (origin, Err(reason)),
            })
            .collect::<Vec<_>>()
    });
    let d = dir.path().display();
    assert_eq!(
        found,
        vec![
            (format!("{d}/a-one-line.eml"), Ok(size as u64 + 8)),
            (format!("{d}/b-from-only.mbox:1"), Err("empty".to_string())),
            (format!("{d}/c-body.mbox:1"), Ok(size as u64 + 12)),
            (format!("{d}/d-junk"), Err("not a mail file".to_string())),
        ]
    );
    assert!(peak < 8 * MIB, "peak heap {peak} bytes");
}

#[test]
fn import_progress_counts_every_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.eml"), b"Subject: a\n\nA\n").unwrap();
    fs::write(dir.path().join("b.txt"), b"not mail\n").unwrap();
    fs::write(
        dir.path().join("c.mbox"),
        b"From x Sat Nov 21 22:54:14 2026\nS: 1\n\n1\n\nFrom x Sat Nov 21 22:54:14 2026\nS: 2\n\n2\n\n",
    )
    .unwrap();
    let mut walker = walk(vec![dir.path().to_path_buf()], options(dir.path()));
    assert_eq!(walker.bytes_read(), 0);
    for _ in walker.by_ref() {}
    let total: u64 = ["a.eml", "b.txt", "c.mbox"]
        .iter()
        .map(|n| fs::metadata(dir.path().join(n)).unwrap().len())
        .sum();
    assert_eq!(walker.bytes_total(), total);
    assert_eq!(walker.bytes_read(), total);
}

/// Fuzzing found dates with five-digit years (`Sat, 21 Nov 22026 ...` in
/// a mailkeep envelope block, or a Date header) that made rendering the
/// envelope headers panic. Such dates now count as no date; the files
/// import without a panic, every message found or skipped.
#[test]
fn regression_five_digit_years_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n = 0;
    for entry in fs::read_dir(&inputs).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        // The fuzz input's first byte chooses the format; the rest is the file.
        for (i, body) in [&bytes[..], &bytes[1.min(bytes.len())..]]
            .iter()
            .enumerate()
        {
            let file = dir.path().join(format!("in{n}-{i}.mbox"));
            fs::write(&file, body).unwrap();
            let found = run(vec![file], options(dir.path()));
            for f in &found {
                if let Found::Message { envelope, .. } = f {
                    assert!(mailkeep_envelope::plausible_date(&envelope.received));
                    let _ = mailkeep_envelope::block::envelope_headers(envelope, "h", "\n");
                }
            }
        }
        n += 1;
    }
    assert!(n >= 3, "regression inputs: {n}");
    let far = Utc.with_ymd_and_hms(22026, 11, 21, 22, 54, 14).unwrap();
    assert_eq!(
        mailkeep_envelope::rfc2822(&far),
        "Sat, 21 Nov 22026 22:54:14 +0000"
    );
}
