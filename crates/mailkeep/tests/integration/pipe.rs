//! `mailkeep pipe` end to end: concurrency, independent readers,
//! per-recipient filing, hostile values, failure exit codes, bad input,
//! onward delivery.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Stdio};

const EX_TEMPFAIL: i32 = 75;

/// A message with the lines mbox formats trip over.
fn tricky_message(id: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\n\
         To: bob@example.org\n\
         Subject: quarterly {id}\n\
         Message-ID: <{id}@example.com>\n\
         \n\
         From the desk of Alice\n\
         >From a quoted line\n\
         >>From twice quoted\n\
         .leading dot\n\
         \n\
         From \n\
         last line\n"
    )
    .into_bytes()
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exit code")
}

fn assert_ok(out: &std::process::Output) {
    assert_eq!(
        code(out),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn eight_concurrent_pipes_into_one_mbox_read_back_by_python() {
    let dir = sandbox();
    let mbox = dir.path().join("archive/all.mbox");
    // A small spool threshold makes the large message go through the spool file.
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}threshold = 4096\n[[rule]]\narchive = \"mbox:{}\"\n",
            spool_section(dir.path(), false),
            mbox.display()
        ),
    );
    let mut message = tricky_message("concurrent");
    // Make it big enough that interleaved writes would show.
    for i in 0..20_000 {
        message.extend_from_slice(format!("line {i} From here to there\n").as_bytes());
    }
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = mailkeep(&cfg);
            c.args([
                "pipe",
                "--sender=alice@example.com",
                "--recipient=bob@example.org",
                "--recipient=hidden@example.net",
                &format!("--queue-id=Q{i}"),
            ]);
            c.stdin(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    let mut waits = Vec::new();
    for mut child in children {
        let mut stdin = child.stdin.take().expect("stdin");
        let msg = message.clone();
        waits.push(std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&msg).expect("write");
            drop(stdin);
            child.wait_with_output().expect("wait")
        }));
    }
    for w in waits {
        assert_ok(&w.join().expect("thread"));
    }
    let messages = read_mbox(&mbox);
    assert_eq!(messages.len(), 8, "python's mailbox.mbox sees 8 messages");
    let mut queue_ids = Vec::new();
    for m in &messages {
        let (env, original) = split_envelope(m);
        assert_same(&original, &message, "byte-exact after the envelope block");
        assert!(
            env.starts_with("Return-Path: <alice@example.com>\n"),
            "{env}"
        );
        assert!(
            env.contains("X-Envelope-To: <bob@example.org>\nX-Envelope-To: <hidden@example.net>\n")
        );
        let q = env
            .lines()
            .find_map(|l| l.strip_prefix("X-Mailkeep-Queue-Id: "))
            .expect("queue id header");
        queue_ids.push(q.to_string());
    }
    queue_ids.sort();
    assert_eq!(
        queue_ids,
        (0..8).map(|i| format!("Q{i}")).collect::<Vec<_>>()
    );
    assert!(
        !mbox.with_extension("mbox.lock").exists(),
        "dotlock released"
    );
}

#[test]
fn maildir_read_back_by_python_with_envelope() {
    let dir = sandbox();
    let md = dir.path().join("md");
    let cfg = write_config(
        dir.path(),
        &format!("[[rule]]\narchive = \"maildir:{}\"\n", md.display()),
    );
    let message = tricky_message("maildir");
    let out = pipe(
        &cfg,
        &[
            "--sender=alice@example.com",
            "--recipient=bob@example.org",
            "--recipient=carol@example.org",
            "--recipient=bcc-only@example.net",
            "--login=alice",
            "--client-address=192.0.2.7",
            "--client-hostname=client.example",
            "--client-helo=helo.example",
            "--queue-id=4XyZ12",
            "--tag=outgoing",
        ],
        &message,
    );
    assert_ok(&out);
    let copies = read_maildir(&md);
    assert_eq!(copies.len(), 1);
    let (_, original) = split_envelope(&copies[0]);
    assert_eq!(original, message);
    let headers = python_headers(&copies[0]);
    let get_all = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        get_all("X-Envelope-To"),
        vec![
            "<bob@example.org>",
            "<carol@example.org>",
            "<bcc-only@example.net>"
        ]
    );
    assert_eq!(get_all("Return-Path"), vec!["<alice@example.com>"]);
    assert_eq!(get_all("X-Mailkeep-Login"), vec!["alice"]);
    assert_eq!(get_all("X-Mailkeep-Queue-Id"), vec!["4XyZ12"]);
    assert_eq!(
        get_all("X-Mailkeep-Client"),
        vec!["client.example [192.0.2.7] helo=helo.example"]
    );
    let received = get_all("X-Mailkeep-Received");
    assert!(
        received[0].contains("via pipe tags=outgoing;"),
        "{received:?}"
    );
    assert_eq!(get_all("Subject"), vec!["quarterly maildir"]);
    // Nothing left behind in tmp/.
    assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
}

fn issue_config(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("archive");
    write_config(
        dir,
        &ISSUE_RULES.replace("/var/archive", root.to_str().unwrap()),
    )
}

#[test]
fn per_recipient_lands_once_per_recipient() {
    let dir = sandbox();
    let cfg = issue_config(dir.path());
    let root = dir.path().join("archive");
    let message = tricky_message("incoming");
    let out = pipe(
        &cfg,
        &[
            "--sender=partner@other.org",
            "--recipient=Alice@Example.com",
            "--recipient=bob@example.com",
            "--recipient=someone@elsewhere.org",
        ],
        &message,
    );
    assert_ok(&out);
    let files = files_under(&root);
    assert_eq!(files.len(), 2, "{files:#?}");
    for (who, file) in ["alice", "bob"].iter().zip(&files) {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(&parts[..3], &["in", "example.com", who], "{rel}");
        // in/DOMAIN/LOCAL/YYYY/MM/DD/NAME.eml
        assert_eq!(parts.len(), 7, "{rel}");
        assert!(parts[6].ends_with(".eml"));
        let (env, original) = split_envelope(&std::fs::read(file).unwrap());
        assert_eq!(original, message);
        // Every copy keeps the whole envelope.
        assert_eq!(env.matches("X-Envelope-To:").count(), 3, "{env}");
    }

    // With a login the message-level rule decides: mbox + maildir, no eml.
    let out = pipe(
        &cfg,
        &[
            "--sender=alice@example.com",
            "--recipient=x@example.com",
            "--login=Alice",
        ],
        &message,
    );
    assert_ok(&out);
    let sent = read_mbox(&root.join("alice/sent.mbox"));
    assert_eq!(sent.len(), 1);
    assert_eq!(split_envelope(&sent[0]).1, message);
    assert_eq!(read_maildir(&root.join("all")).len(), 1);
    assert_eq!(files_under(&root.join("in")).len(), 2, "no new eml");

    // System noise is skipped, and that is success.
    let before = files_under(&root);
    for sender in ["--sender=", "--sender=<>", "--sender=root@host.example"] {
        let out = pipe(&cfg, &[sender, "--recipient=alice@example.com"], &message);
        assert_ok(&out);
    }
    assert_eq!(files_under(&root).len(), before.len());
}

#[test]
fn hostile_values_stay_inside_the_prefix() {
    let dir = sandbox();
    let root = dir.path().join("root");
    let archive = root.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[rule]]\nper_recipient = true\narchive = [\"maildir:{a}/by-login/{{login}}\", \"mbox:{a}/by-rcpt/{{recipient_domain}}/{{recipient_local}}.mbox\"]\n",
            a = archive.display()
        ),
    );
    let hostile = [
        ("../../etc", "%2e.%2f..%2fetc"),
        ("a/b@c", "a%2fb@c"),
        ("%2e%2e", "%252e%252e"),
        ("..", "%2e."),
        (".", "%2e"),
        ("\u{430}dmin", "%d0%b0dmin"),
        ("/etc/passwd", "%2fetc%2fpasswd"),
        ("x\ny", "x%0ay"),
    ];
    let message = tricky_message("hostile");
    for (value, escaped) in hostile {
        let rcpt = format!("--recipient={value}@{value}");
        let login = format!("--login={value}");
        let out = pipe(&cfg, &["--sender=a@b", &rcpt, &login], &message);
        assert_ok(&out);
        let md = archive.join("by-login").join(escaped);
        assert_eq!(read_maildir(&md).len(), 1, "{value:?} -> {}", md.display());
    }
    // Nothing was created anywhere but under the archive directory.
    for f in files_under(&root) {
        assert!(f.starts_with(&archive), "{} escaped", f.display());
    }
    let top: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec!["archive"]);
    assert_eq!(
        std::fs::read_dir(archive.join("by-login")).unwrap().count(),
        hostile.len()
    );
}

/// Runs the binary as `nobody` when the tests run as root, because root
/// ignores directory permissions.
fn pipe_unprivileged(cfg: &Path, args: &[&str], message: &[u8]) -> std::process::Output {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .arg("--config")
            .arg(cfg)
            .arg("pipe")
            .args(args);
        run_with_input(c, message)
    } else {
        pipe(cfg, args, message)
    }
}

#[test]
fn read_only_destination_exits_75_and_writes_nothing() {
    let dir = sandbox();
    let ok_dir = dir.path().join("ok");
    let ro_dir = dir.path().join("ro");
    std::fs::create_dir_all(&ok_dir).unwrap();
    std::fs::create_dir_all(&ro_dir).unwrap();
    let mbox = ok_dir.join("all.mbox");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[rule]]\narchive = [\"mbox:{}\", \"maildir:{}/md\", \"eml:{}/eml\"]\n",
            mbox.display(),
            ok_dir.display(),
            ro_dir.display()
        ),
    );
    // A first message goes everywhere while everything is writable.
    set_mode(&ok_dir, 0o777);
    set_mode(&ro_dir, 0o777);
    let first = tricky_message("first");
    assert_ok(&pipe_unprivileged(
        &cfg,
        &["--sender=a@b", "--recipient=c@d"],
        &first,
    ));
    let mbox_before = std::fs::read(&mbox).unwrap();
    let ok_before = files_under(&ok_dir);
    let ro_before = files_under(&ro_dir);

    // Then the eml destination's directory becomes read-only.
    set_mode(&ro_dir, 0o555);
    for sub in files_under(&ro_dir).iter().filter_map(|f| f.parent()) {
        let mut d = sub.to_path_buf();
        while d != ro_dir {
            set_mode(&d, 0o555);
            d.pop();
        }
    }
    // A new day directory would be needed only on a date change; make the
    // existing dated directory read-only too (done above), so the write fails.
    let second = tricky_message("second");
    let out = pipe_unprivileged(&cfg, &["--sender=a@b", "--recipient=c@d"], &second);
    assert_eq!(
        code(&out),
        EX_TEMPFAIL,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eml:") && err.contains("Permission denied"),
        "{err}"
    );
    // Nothing was written anywhere: the mbox append was truncated back and
    // the Maildir copy removed from tmp/.
    assert_eq!(std::fs::read(&mbox).unwrap(), mbox_before);
    assert_eq!(files_under(&ok_dir), ok_before);
    assert_eq!(files_under(&ro_dir), ro_before);
    assert!(!Path::new(&format!("{}.lock", mbox.display())).exists());

    // Writable again: the retry succeeds.
    set_mode(&ro_dir, 0o777);
    for f in files_under(&ro_dir) {
        let mut d = f.parent().unwrap().to_path_buf();
        while d != ro_dir {
            set_mode(&d, 0o777);
            d.pop();
        }
    }
    assert_ok(&pipe_unprivileged(
        &cfg,
        &["--sender=a@b", "--recipient=c@d"],
        &second,
    ));
    assert_eq!(read_mbox(&mbox).len(), 2);
}

#[test]
fn bad_input_is_archived_byte_exact() {
    let dir = sandbox();
    let md = dir.path().join("md");
    let mbox = dir.path().join("all.mbox");
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}threshold = 1000\n[[rule]]\narchive = [\"maildir:{}\", \"mbox:{}\"]\n",
            spool_section(dir.path(), false),
            md.display(),
            mbox.display()
        ),
    );
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary junk", (0..=255u8).cycle().take(70_000).collect()),
        ("nul bytes", b"Subject: a\0b\n\nbody\0with\0nuls\n".to_vec()),
        ("bare cr", b"Subject: cr\r\rbody\rmore\r\n".to_vec()),
        ("long line", {
            let mut v = b"Subject: long\n\n".to_vec();
            v.extend(std::iter::repeat_n(b'x', 5000));
            v.push(b'\n');
            v
        }),
        ("no headers", b"just a body line\nand another\n".to_vec()),
        (
            "8-bit headers",
            "Subject: Grüße aus Köln\nFrom: Jörg <jörg@exämple.de>\n\nKäse\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "crlf",
            b"Subject: crlf\r\nFrom: a@b\r\n\r\nFrom here\r\nbody\r\n".to_vec(),
        ),
    ];
    cases.push(("empty", Vec::new()));
    for (i, (name, msg)) in cases.iter().enumerate() {
        let q = format!("--queue-id=case{i}");
        let out = pipe(&cfg, &["--sender=a@b", "--recipient=c@d", &q], msg);
        assert_eq!(
            code(&out),
            0,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let copies = read_maildir(&md);
    assert_eq!(copies.len(), cases.len());
    let mut originals: Vec<Vec<u8>> = copies.iter().map(|c| split_envelope(c).1).collect();
    let mut expected: Vec<Vec<u8>> = cases.iter().map(|(_, m)| m.clone()).collect();
    originals.sort();
    expected.sort();
    assert_eq!(originals, expected, "Maildir copies are byte-exact");

    // mbox adds a final newline to a message that lacks one (mbox cannot
    // represent it); everything else is exact.
    let mut from_mbox: Vec<Vec<u8>> = read_mbox(&mbox)
        .iter()
        .map(|c| split_envelope(c).1)
        .collect();
    let mut expected_mbox: Vec<Vec<u8>> = cases
        .iter()
        .map(|(_, m)| {
            let mut m = m.clone();
            if !m.is_empty() && !m.ends_with(b"\n") {
                m.push(b'\n');
            }
            m
        })
        .collect();
    from_mbox.sort();
    expected_mbox.sort();
    assert_eq!(from_mbox.len(), cases.len());
    assert_eq!(from_mbox, expected_mbox, "mbox copies are exact (mboxrd)");
}

#[test]
fn large_message_streams_in_bounded_memory() {
    let dir = sandbox();
    let md = dir.path().join("md");
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}[[rule]]\narchive = [\"maildir:{}\"]\n",
            spool_section(dir.path(), false),
            md.display()
        ),
    );
    let size: u64 = 200 * 1024 * 1024;
    // Python runs mailkeep with a generated 200 MB message on stdin and
    // reports the child's peak RSS, so the test measures the real process.
    let script = r#"
import subprocess, resource, sys
size = int(sys.argv[2])
p = subprocess.Popen([sys.argv[1], "--config", sys.argv[3], "pipe", "--sender=a@b", "--recipient=c@d"], stdin=subprocess.PIPE)
p.stdin.write(b"Subject: big\n\n")
line = b"0123456789" * 10 + b"\n"
left = size - 14
chunk = line * 10000
while left > 0:
    n = min(left, len(chunk))
    p.stdin.write(chunk[:n])
    left -= n
p.stdin.close()
rc = p.wait()
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"#;
    let out = python(
        script,
        &[
            bin().to_str().unwrap(),
            &size.to_string(),
            cfg.to_str().unwrap(),
        ],
    );
    let mut parts = out.split_whitespace();
    let rc: i32 = parts.next().unwrap().parse().unwrap();
    let rss_kib: u64 = parts.next().unwrap().parse().unwrap();
    assert_eq!(rc, 0);
    // The default in-memory threshold is 1 MiB and copies stream in 256 KiB
    // buffers: the process must stay far below the message size.
    assert!(
        rss_kib < 64 * 1024,
        "peak RSS {rss_kib} KiB for a 200 MB message"
    );
    let files = files_under(&md.join("new"));
    assert_eq!(files.len(), 1);
    let len = std::fs::metadata(&files[0]).unwrap().len();
    let mut head = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(&files[0]).unwrap(), 4096),
        &mut head,
    )
    .unwrap();
    let (env, _) = split_envelope(&head);
    assert_eq!(len, size + env.len() as u64);
}

#[test]
fn command_gets_the_message_and_its_status_is_returned() {
    let dir = sandbox();
    let md = dir.path().join("md");
    let out_file = dir.path().join("delivered");
    let cfg = write_config(
        dir.path(),
        &format!("[[rule]]\narchive = [\"maildir:{}\"]\n", md.display()),
    );
    let message = tricky_message("command");
    let script = format!("cat > {}; exit 3", out_file.display());
    let out = pipe(&cfg, &["--sender=a@b", "--", "sh", "-c", &script], &message);
    assert_eq!(code(&out), 3);
    assert_eq!(std::fs::read(&out_file).unwrap(), message);
    assert_eq!(
        read_maildir(&md).len(),
        1,
        "archived before the command ran"
    );

    // A command that cannot run: archived, but 75 so the MTA retries.
    let out = pipe(
        &cfg,
        &["--sender=a@b", "--", "/nonexistent/deliver"],
        &message,
    );
    assert_eq!(code(&out), EX_TEMPFAIL);

    // local(8)'s From_ line is kept out of the archive and the command.
    let mut with_from = b"From alice@example.com  Sat Nov 21 10:00:00 2026\n".to_vec();
    with_from.extend_from_slice(&message);
    let out = pipe(
        &cfg,
        &[
            "--strip-from-line",
            "--sender=a@b",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &with_from,
    );
    assert_eq!(code(&out), 3);
    assert_eq!(std::fs::read(&out_file).unwrap(), message);
    let copies = read_maildir(&md);
    assert!(copies.iter().all(|c| split_envelope(c).1 == message));
}

#[test]
fn sendmail_reinjection_passes_the_envelope() {
    let dir = sandbox();
    let md = dir.path().join("md");
    let cfg = write_config(
        dir.path(),
        &format!("[[rule]]\narchive = [\"maildir:{}\"]\n", md.display()),
    );
    // A stand-in sendmail that records its argument vector and input.
    let fake = dir.path().join("sendmail");
    let log = dir.path().join("args");
    let body = dir.path().join("body");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done > {}\ncat > {}\nexit ${{FAKE_EXIT:-0}}\n",
            log.display(),
            body.display()
        ),
    )
    .unwrap();
    set_mode(&fake, 0o755);
    let message = tricky_message("sendmail");
    let args = [
        "--sender=",
        "--recipient=r1@example.com",
        "--recipient=r2@example.org",
        "--reinject",
        "sendmail",
        "--sendmail",
        fake.to_str().unwrap(),
    ];
    assert_ok(&pipe(&cfg, &args, &message));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "[-G][-i][-f][][--][r1@example.com][r2@example.org]"
    );
    assert_eq!(std::fs::read(&body).unwrap(), message);

    let mut c = mailkeep(&cfg);
    c.arg("pipe").args(args).env("FAKE_EXIT", "75");
    let out = run_with_input(c, &message);
    assert_eq!(code(&out), EX_TEMPFAIL);
}

#[test]
fn smtp_reinjection_to_a_real_smtp_server() {
    // Postfix's smtp-sink is the receiving SMTP server; it dumps every
    // transaction with its envelope.
    let sink = Path::new("/usr/sbin/smtp-sink");
    if !sink.exists() {
        panic!("smtp-sink (package postfix) is needed; scripts/test installs it");
    }
    let dir = sandbox();
    let dumps = dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    set_mode(&dumps, 0o777);
    let md = dir.path().join("md");
    let cfg = write_config(
        dir.path(),
        &format!("[[rule]]\narchive = [\"maildir:{}\"]\n", md.display()),
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut sink_cmd = Command::new(sink);
    if is_root() {
        sink_cmd.args(["-u", "nobody"]);
    }
    sink_cmd
        .arg("-d")
        .arg(format!("{}/%M.", dumps.display()))
        .arg(format!("127.0.0.1:{port}"))
        .arg("10");
    let mut sink_child = sink_cmd.spawn().expect("smtp-sink");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = {
        // Wait for the listener.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "smtp-sink did not start"
            );
            if let Ok(Some(s)) = sink_child.try_wait() {
                panic!("smtp-sink exited: {s}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Kill(sink_child)
    };
    let message = tricky_message("smtp");
    let target = format!("smtp://127.0.0.1:{port}");
    let out = pipe(
        &cfg,
        &[
            "--sender=alice@example.com",
            "--recipient=r1@example.com",
            "--recipient=r2@example.org",
            "--reinject",
            &target,
        ],
        &message,
    );
    assert_ok(&out);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let dump = loop {
        let files = files_under(&dumps);
        if let Some(f) = files.first() {
            let data = std::fs::read(f).unwrap();
            // smtp-sink writes the message, then one empty line.
            if data.ends_with(b"last line\n\n") {
                break data;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing reached the sink"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = String::from_utf8_lossy(&dump).replace("\r\n", "\n");
    assert!(text.contains("X-Mail-Args: <alice@example.com>"), "{text}");
    assert!(
        text.contains("X-Rcpt-Args: <r1@example.com>\nX-Rcpt-Args: <r2@example.org>\n"),
        "{text}"
    );
    // Dot-stuffing undone by the server: the message arrives as it was.
    let body_start = text.find("From: Alice").expect("original header");
    assert_eq!(
        &text[body_start..text.len() - 1],
        String::from_utf8_lossy(&message)
    );
    assert_eq!(read_maildir(&md).len(), 1);

    // Relay down: archived, but the exit status makes the MTA retry.
    drop(_guard);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = pipe(
        &cfg,
        &["--sender=a@b", "--recipient=r@c", "--reinject", &target],
        &message,
    );
    assert_eq!(code(&out), EX_TEMPFAIL);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reinjection failed"));
}

#[test]
fn usage_and_config_errors_have_sysexits_codes() {
    let dir = sandbox();
    let cfg = write_config(dir.path(), "[[rule]]\narchive = \"mbox:/x/../{login}\"\n");
    let out = pipe(&cfg, &["--sender=a@b"], b"x\n");
    assert_eq!(code(&out), 78);
    let good = write_config(
        dir.path(),
        &format!(
            "[[rule]]\narchive = \"maildir:{}/m\"\n",
            dir.path().display()
        ),
    );
    let out = pipe(&good, &["--reinject", "smtp://127.0.0.1:1"], b"x\n");
    assert_eq!(code(&out), 64, "reinjection without recipients");
    let out = pipe(&good, &["--reinject", "gopher://x"], b"x\n");
    assert_eq!(code(&out), 64);
    let too_big = write_config(
        dir.path(),
        &format!(
            "[spool]\nmax_message_size = 100\n[[rule]]\narchive = \"maildir:{}/m\"\n",
            dir.path().display()
        ),
    );
    let out = pipe(&too_big, &["--sender=a@b"], &[b'x'; 500]);
    assert_eq!(code(&out), 65);
    assert!(
        !dir.path().join("m/new").exists() || files_under(&dir.path().join("m/new")).is_empty()
    );
}

#[test]
fn envelope_headers_can_be_turned_off() {
    let dir = sandbox();
    let plain = dir.path().join("plain");
    let with = dir.path().join("with");
    let global_off = dir.path().join("global-off");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[rule]]\narchive = \"maildir:{}\"\nenvelope_headers = false\ncontinue = true\n\
             [[rule]]\narchive = \"maildir:{}\"\n",
            plain.display(),
            with.display()
        ),
    );
    let message = tricky_message("plain");
    assert_ok(&pipe(&cfg, &["--sender=a@b", "--recipient=c@d"], &message));
    assert_eq!(
        read_maildir(&plain),
        vec![message.clone()],
        "exactly the input"
    );
    let with_copies = read_maildir(&with);
    assert!(with_copies[0].starts_with(b"Return-Path: <a@b>\n"));

    let cfg = write_config(
        dir.path(),
        &format!(
            "[archive]\nenvelope_headers = false\n[[rule]]\narchive = \"maildir:{}\"\n",
            global_off.display()
        ),
    );
    assert_ok(&pipe(&cfg, &["--sender=a@b", "--recipient=c@d"], &message));
    assert_eq!(read_maildir(&global_off), vec![message]);
}
