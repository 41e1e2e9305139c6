//! Archive copies as email (`forward:ADDR`) against Postfix's `smtp-sink
//! -d`, which records each transaction with its envelope: the copy's
//! From/To carry the envelope (Bcc included), its one part is the
//! original byte for byte, 8BITMIME and NOTIFY=NEVER are used; with the
//! relay down the copy waits in the spool, survives `kill -9`, and is
//! delivered once; a copy coming back is not archived again.

use crate::util::{free_port, is_root, mailkeep, pipe, python, sandbox, Serve};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `smtp-sink -d DIR/%Y%m%d` on `port`, stopped on drop.
struct Sink {
    child: Child,
    dir: PathBuf,
}

impl Sink {
    fn start(root: &Path, port: u16) -> Option<Sink> {
        let bin = ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = root.join("sink");
        std::fs::create_dir_all(&dir).expect("sink dir");
        crate::util::set_mode(&dir, 0o777);
        let mut c = Command::new(bin);
        if is_root() {
            c.args(["-u", "nobody"]);
        }
        let child = c
            .arg("-d")
            .arg(dir.join("%Y%m%d"))
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .spawn()
            .expect("smtp-sink");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Sink { child, dir })
    }

    fn dumps(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("sink dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).expect("dump"))
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(root: &Path, relay_port: u16, extra: &str) -> String {
    format!(
        "[forward]\nrelay = \"127.0.0.1:{relay_port}\"\nspool = \"{}\"\nretry_base = 1\n{extra}\n\
         [[rule]]\nname = \"copy everything\"\narchive = [\"forward:archive@archive.example.com\"]\n",
        root.join("spool").display()
    )
}

fn spooled(root: &Path) -> usize {
    std::fs::read_dir(root.join("spool/new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

const ORIGINAL: &[u8] = b"From: Someone Else <forged@example.com>\nTo: bob@example.org\n\
Subject: =?utf-8?q?Caf=C3=A9?= plans\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n\
Message-ID: <orig-1@example.com>\n\nCaf\xc3\xa9 at noon? Bring the Bcc.\n.a line with a dot\nFrom here on\n";

/// Reads a sink dump with Python's `email`: the copy's fields, the SMTP
/// arguments smtp-sink recorded, and the attached part's raw bytes.
const READ_DUMP: &str = r#"
import email, email.policy, json, sys
raw = open(sys.argv[1], "rb").read()
m = email.message_from_bytes(raw, policy=email.policy.compat32)
parts = m.get_payload()
boundary = m.get_boundary().encode()
start = raw.index(b"--" + boundary + b"\n")
body_start = raw.index(b"\n\n", start) + 2
end = raw.index(b"\n--" + boundary + b"--", body_start)
print(json.dumps({
    "from": m["From"], "to": m["To"], "subject": m["Subject"], "date": m["Date"],
    "mime": m["MIME-Version"], "ctype": m.get_content_type(),
    "parts": [p.get_content_type() for p in parts],
    "cte": parts[0]["Content-Transfer-Encoding"],
    "login": m["X-Mailkeep-Login"], "queue": m["X-Mailkeep-Queue-Id"],
    "mail_args": m["X-Mail-Args"], "rcpt_args": m["X-Rcpt-Args"],
    "marker": m["X-Mailkeep-Archive-Copy"],
    "attached": raw[body_start:end + 1].hex(),
}))
"#;

fn read_dump(root: &Path, dump: &[u8]) -> serde_json::Value {
    let f = root.join("dump.eml");
    std::fs::write(&f, dump).expect("dump copy");
    let out = python(READ_DUMP, &[f.to_str().expect("utf-8 path")]);
    serde_json::from_str(&out).expect("json")
}

#[test]
fn copy_carries_the_envelope_and_the_original_and_never_bounces() {
    let dir = sandbox();
    let port = free_port();
    let Some(sink) = Sink::start(dir.path(), port) else {
        eprintln!("skipped: smtp-sink (postfix) is not installed");
        return;
    };
    let cfg = crate::util::write_config(dir.path(), &config(dir.path(), port, ""));
    let out = pipe(
        &cfg,
        &[
            "--sender=alice@example.com",
            "--recipient=bob@example.org",
            "--recipient=hidden@example.net",
            "--login=alice",
            "--queue-id=4ABC123",
        ],
        ORIGINAL,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        spooled(dir.path()),
        1,
        "the copy waits in the spool, durable"
    );
    assert!(sink.dumps().is_empty(), "pipe itself does not send");
    let flush = mailkeep(&cfg)
        .args(["queue", "flush"])
        .output()
        .expect("flush");
    assert!(
        flush.status.success(),
        "{}",
        String::from_utf8_lossy(&flush.stdout)
    );
    assert_eq!(spooled(dir.path()), 0, "sent copies leave the spool");
    let dumps = sink.dumps();
    assert_eq!(dumps.len(), 1);
    let d = read_dump(dir.path(), &dumps[0]);
    assert_eq!(d["from"], "alice@example.com");
    let to = d["to"].as_str().expect("To");
    assert!(
        to.contains("bob@example.org") && to.contains("hidden@example.net"),
        "{to}"
    );
    assert_eq!(
        d["subject"], "=?utf-8?q?Caf=C3=A9?= plans",
        "encoded words kept"
    );
    assert_eq!(d["date"], "Sat, 21 Nov 2026 10:00:00 +0000");
    assert_eq!(d["mime"], "1.0");
    assert_eq!(d["ctype"], "multipart/mixed");
    assert_eq!(d["parts"], serde_json::json!(["message/rfc822"]));
    assert_eq!(d["cte"], "8bit");
    assert_eq!(d["login"], "alice");
    assert_eq!(d["queue"], "4ABC123");
    let mail_args = d["mail_args"].as_str().unwrap_or("");
    assert!(
        mail_args.starts_with("<alice@example.com>") && mail_args.contains("BODY=8BITMIME"),
        "{mail_args}"
    );
    assert_eq!(d["rcpt_args"], "<archive@archive.example.com> NOTIFY=NEVER");
    // smtp-sink stores lines with LF: the part is the original exactly.
    let attached = d["attached"].as_str().expect("hex");
    let want: String = ORIGINAL.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        attached, want,
        "the attached message is the original, byte for byte"
    );

    // The copy coming back through any capture path is not archived again...
    let again = pipe(
        &cfg,
        &["--sender=x@example.com", "--recipient=y@example.com"],
        &dumps[0],
    );
    assert!(again.status.success());
    assert_eq!(spooled(dir.path()), 0, "an archive copy was archived again");
    // ...but a stranger's forged marker does not keep a message out.
    let forged = [
        b"X-Mailkeep-Archive-Copy: 1.abc; mac=0123456789abcdef0123456789abcdef\n".as_slice(),
        ORIGINAL,
    ]
    .concat();
    let out = pipe(
        &cfg,
        &["--sender=x@example.com", "--recipient=y@example.com"],
        &forged,
    );
    assert!(out.status.success());
    assert_eq!(
        spooled(dir.path()),
        1,
        "a forged marker must not prevent archiving"
    );
}

#[test]
fn relay_down_copy_waits_survives_kill_9_and_is_delivered_once() {
    let dir = sandbox();
    let port = free_port();
    let text = config(dir.path(), port, "");
    let cfg = crate::util::write_config(dir.path(), &text);
    let out = pipe(
        &cfg,
        &["--sender=alice@example.com", "--recipient=bob@example.org"],
        ORIGINAL,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut serve = Serve::start(dir.path(), |_| text.clone(), &["stop with SIGTERM"], false);
    // Wait for a failed attempt to be recorded.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = mailkeep(&cfg)
            .args(["queue", "list", "--json"])
            .output()
            .expect("list");
        let text = String::from_utf8_lossy(&list.stdout).to_string();
        if text.contains("\"attempts\":1") || text.contains("\"attempts\":2") {
            assert!(text.contains("connect"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.kill9();
    assert_eq!(
        spooled(dir.path()),
        1,
        "the copy survives kill -9 in the spool"
    );
    let Some(sink) = Sink::start(dir.path(), port) else {
        eprintln!("skipped: smtp-sink (postfix) is not installed");
        return;
    };
    let mut serve = Serve::start(dir.path(), |_| text.clone(), &["stop with SIGTERM"], false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while spooled(dir.path()) > 0 {
        assert!(
            Instant::now() < deadline,
            "not delivered after the relay came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    serve.stop();
    let dumps = sink.dumps();
    assert_eq!(dumps.len(), 1, "delivered exactly once");
    let d = read_dump(dir.path(), &dumps[0]);
    assert_eq!(d["to"], "bob@example.org");
}

#[test]
fn trusted_archive_header_picks_the_recipient_last_one_wins() {
    let dir = sandbox();
    let port = free_port();
    let Some(sink) = Sink::start(dir.path(), port) else {
        eprintln!("skipped: smtp-sink (postfix) is not installed");
        return;
    };
    let msg = [
        b"X-Mailkeep-Archive-To: first@arch.example\nX-Mailkeep-Archive-To: <legal@arch.example>\n"
            .as_slice(),
        ORIGINAL,
    ]
    .concat();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for (trust, want) in [
        (false, "<archive@archive.example.com>"),
        (true, "<legal@arch.example>"),
    ] {
        let cfg = crate::util::write_config(
            dir.path(),
            &config(
                dir.path(),
                port,
                &format!("trust_archive_header = {trust}\nsender = \"null\""),
            ),
        );
        let out = pipe(
            &cfg,
            &["--sender=alice@example.com", "--recipient=bob@example.org"],
            &msg,
        );
        assert!(out.status.success());
        let flush = mailkeep(&cfg)
            .args(["queue", "flush"])
            .output()
            .expect("flush");
        assert!(flush.status.success());
        // Dump names are random: the new one is the one not seen before.
        let dumps = sink.dumps();
        let new: Vec<_> = dumps.iter().filter(|d| !seen.contains(*d)).collect();
        assert_eq!(new.len(), 1, "one new transaction");
        let d = read_dump(dir.path(), new[0]);
        seen = dumps.clone();
        assert_eq!(
            d["rcpt_args"],
            format!("{want} NOTIFY=NEVER"),
            "trust = {trust}"
        );
        assert!(
            d["mail_args"].as_str().unwrap_or("").starts_with("<>"),
            "sender = null"
        );
    }
}

/// A copy the relay keeps refusing is never dropped on its own: past
/// `max_age` it is listed as STUCK, and only `queue drop` takes it out,
/// keeping it with the reason.
#[test]
fn stuck_copies_are_reported_and_dropped_only_by_hand() {
    let dir = sandbox();
    let port = free_port(); // nothing listens: every attempt fails
    let cfg = crate::util::write_config(dir.path(), &config(dir.path(), port, "max_age = 0"));
    let out = pipe(
        &cfg,
        &["--sender=a@example.com", "--recipient=b@example.org"],
        ORIGINAL,
    );
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1100));
    let flush = mailkeep(&cfg)
        .args(["queue", "flush"])
        .output()
        .expect("flush");
    assert_eq!(flush.status.code(), Some(75), "a copy remains: exit 75");
    let list = mailkeep(&cfg)
        .args(["queue", "list"])
        .output()
        .expect("list");
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(text.contains("STUCK") && text.contains("connect"), "{text}");
    let json = mailkeep(&cfg)
        .args(["queue", "list", "--json"])
        .output()
        .expect("list");
    let entry: serde_json::Value =
        serde_json::from_slice(json.stdout.split(|b| *b == b'\n').next().unwrap_or(b""))
            .expect("json");
    assert_eq!(entry["stuck"], true);
    assert_eq!(entry["attempts"], 1);
    let id = entry["id"].as_str().expect("id").to_string();
    let drop = mailkeep(&cfg)
        .args(["queue", "drop", &id, "--reason", "archive server retired"])
        .output()
        .expect("drop");
    assert!(
        drop.status.success(),
        "{}",
        String::from_utf8_lossy(&drop.stderr)
    );
    assert_eq!(spooled(dir.path()), 0);
    let kept = dir.path().join("spool/dropped").join(&id);
    assert!(kept.exists(), "the dropped copy is kept");
    let reason = std::fs::read_to_string(dir.path().join(format!("spool/dropped/{id}.reason")))
        .expect("reason");
    assert_eq!(reason.trim(), "archive server retired");
    let list = mailkeep(&cfg)
        .args(["queue", "list"])
        .output()
        .expect("list");
    assert!(String::from_utf8_lossy(&list.stdout).contains("is empty"));
}
