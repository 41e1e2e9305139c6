//! `mailkeep serve`'s milter driven by Sendmail's `miltertest` (the Lua
//! scripts in `tests/milter/`), with the archive read back by Python's
//! `mailbox` module.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/milter")
        .join(name)
}

/// Starts serve with `[milter] listen` on a free port plus `milter_extra`
/// and `rules`; as `nobody` when `unprivileged` and the tests run as root.
fn start_milter(dir: &Path, milter_extra: &str, rules: &str, unprivileged: bool) -> Serve {
    Serve::start(
        dir,
        |port| {
            format!(
                "{}[milter]\nlisten = \"inet:127.0.0.1:{port}\"\n{milter_extra}\n{rules}",
                spool_section(dir, unprivileged)
            )
        },
        &["milter listening on"],
        unprivileged,
    )
}

/// Runs a miltertest script; panics with its output unless it passed.
fn miltertest(port: u16, script_name: &str, defines: &[(&str, &str)]) -> String {
    let mut c = Command::new("miltertest");
    c.arg("-D").arg(format!("port={port}"));
    for (k, v) in defines {
        c.arg("-D").arg(format!("{k}={v}"));
    }
    c.arg("-s").arg(script(script_name));
    let out = c
        .output()
        .expect("miltertest is needed (package miltertest; scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("PASS"),
        "miltertest {script_name} {defines:?} failed:\n{text}"
    );
    text
}

fn header_values(copy: &[u8], name: &str) -> Vec<String> {
    python_headers(copy)
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

const ORIGINAL: &[u8] = b"From: Mallory <ceo@example.org>\r\nTo: r1@example.com, r2@example.com\r\nSubject: full flow test\r\nMessage-ID: <ff1@example.org>\r\n\r\nHello Bob,\r\nthis is the body.\r\nFrom the second chunk.\r\n";

fn rules(dir: &Path) -> String {
    format!(
        "[[rule]]\nname = \"by login\"\nlogin = \"*\"\narchive = \"mbox:{d}/archive/{{login}}/sent.mbox\"\ncontinue = true\n\
         [[rule]]\nname = \"all\"\narchive = \"maildir:{d}/archive/all\"\n",
        d = dir.display()
    )
}

fn full_flow(version: &str) {
    let dir = sandbox();
    let mut serve = start_milter(dir.path(), "add_header = true", &rules(dir.path()), false);
    miltertest(
        serve.port,
        "full_flow.lua",
        &[("version", version), ("header", "1")],
    );
    let stdout = serve.stop();
    assert!(
        stdout
            .iter()
            .any(|l| l.contains("0 retried by the MTA, 0 accepted unarchived")),
        "{stdout:?}"
    );

    let all = read_maildir(&dir.path().join("archive/all"));
    assert_eq!(all.len(), 1);
    let copy = &all[0];
    let (_, original) = split_envelope(copy);
    // The milter rebuilds the message as the MTA holds it: CRLF, and one
    // space after the colon when the MTA did not keep the leading space.
    assert_same(&original, ORIGINAL, "archived message");
    assert_eq!(header_values(copy, "X-Mailkeep-Login"), vec!["bob (PLAIN)"]);
    assert_eq!(
        header_values(copy, "X-Envelope-To"),
        vec!["<r1@example.com>", "<r2@example.com>", "<r3@example.com>"],
        "the Bcc recipient r3 is in the envelope"
    );
    assert_eq!(
        header_values(copy, "Return-Path"),
        vec!["<alice@example.org>"]
    );
    assert_eq!(header_values(copy, "X-Mailkeep-Queue-Id"), vec!["QID1"]);
    assert_eq!(
        header_values(copy, "X-Mailkeep-Client"),
        // miltertest puts port 12345 in its CONNECT packet.
        vec!["mx.example.net [192.0.2.7]:12345 helo=helo.example.net"]
    );
    // Filed by the SASL login, not by the From: header.
    let sent = read_mbox(&dir.path().join("archive/bob/sent.mbox"));
    assert_eq!(sent.len(), 1);
    assert_same(&split_envelope(&sent[0]).1, ORIGINAL, "mbox copy");
    assert!(!dir.path().join("archive/ceo").exists());
}

#[test]
fn miltertest_v6_archives_login_bcc_and_queue_id() {
    full_flow("6");
}

#[test]
fn miltertest_v2_negotiation_archives_too() {
    full_flow("2");
}

#[test]
fn abort_then_two_messages_on_one_connection() {
    let dir = sandbox();
    let mut serve = start_milter(dir.path(), "", &rules(dir.path()), false);
    miltertest(serve.port, "abort_reuse.lua", &[]);
    serve.stop();
    let all = read_maildir(&dir.path().join("archive/all"));
    assert_eq!(all.len(), 2, "A was aborted: only B and C");
    let mut seen = Vec::new();
    for copy in &all {
        let subject = header_values(copy, "Subject");
        let rcpts = header_values(copy, "X-Envelope-To");
        let qid = header_values(copy, "X-Mailkeep-Queue-Id");
        assert!(
            header_values(copy, "X-Mailkeep-Login").is_empty(),
            "no login leaked from A"
        );
        seen.push((subject, rcpts, qid));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                vec!["msg B".to_string()],
                vec!["<b1@example.com>".to_string()],
                vec!["QIDB".to_string()]
            ),
            (
                vec!["msg C".to_string()],
                vec![
                    "<c1@example.com>".to_string(),
                    "<c2@example.com>".to_string()
                ],
                vec!["QIDC".to_string()]
            ),
        ]
    );
    assert!(
        !dir.path().join("archive/bob").exists(),
        "A's login never filed anything"
    );
}

#[test]
fn fifty_megabyte_body_in_64k_chunks_streams() {
    let dir = sandbox();
    let serve = start_milter(dir.path(), "", &rules(dir.path()), false);
    miltertest(
        serve.port,
        "bigbody.lua",
        &[("chunk", "65536"), ("mib", "50")],
    );
    let rss = serve.peak_rss_kib();
    drop(serve);
    let files = files_under(&dir.path().join("archive/all/new"));
    assert_eq!(files.len(), 1);
    let len = std::fs::metadata(&files[0]).unwrap().len();
    assert!(len > 50 * 1024 * 1024, "archived {len} bytes");
    // 1 MiB in memory, the rest spooled; packets are at most 1 MiB.
    assert!(
        rss < 64 * 1024,
        "serve peaked at {rss} KiB for a 50 MiB message"
    );
}

fn unwritable(policy: &str, expect: &str) {
    let dir = sandbox();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    set_mode(&ro, 0o555);
    let rules = format!("[[rule]]\narchive = \"maildir:{}/md\"\n", ro.display());
    let mut serve = start_milter(
        dir.path(),
        &format!("on_failure = \"{policy}\""),
        &rules,
        true,
    );
    let unprivileged_ok = is_root() || std::fs::create_dir(ro.join("probe")).is_err();
    assert!(
        unprivileged_ok,
        "the test cannot make a directory unwritable here"
    );
    miltertest(serve.port, "full_flow.lua", &[("expect", expect)]);
    let stdout = serve.stop();
    assert!(files_under(&ro).is_empty(), "nothing archived");
    let counted = if policy == "tempfail" {
        "1 retried by the MTA, 0 accepted unarchived"
    } else {
        "0 retried by the MTA, 1 accepted unarchived"
    };
    assert!(stdout.iter().any(|l| l.contains(counted)), "{stdout:?}");
}

#[test]
fn unwritable_destination_tempfails_by_default() {
    unwritable("tempfail", "tempfail");
}

#[test]
fn unwritable_destination_with_accept_policy_continues_and_counts() {
    unwritable("accept", "continue");
}

#[test]
fn sigterm_finishes_the_message_in_progress_and_refuses_new_ones() {
    let dir = sandbox();
    let mut serve = start_milter(dir.path(), "", &rules(dir.path()), false);
    let port = serve.port;
    // A message that pauses after its header, so SIGTERM lands mid-message.
    let client = std::thread::spawn(move || {
        miltertest(port, "bigbody.lua", &[("mib", "2"), ("pause", "2")])
    });
    std::thread::sleep(Duration::from_millis(800));
    let pid = serve.pid();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no new connections after SIGTERM"
    );
    client
        .join()
        .expect("the message in progress was answered CONTINUE");
    let stdout = serve.stop();
    assert!(
        stdout.iter().any(|l| l.contains("SIGTERM: stopping")),
        "{stdout:?}"
    );
    let all = read_maildir(&dir.path().join("archive/all"));
    assert_eq!(all.len(), 1, "the message in progress was archived");
    assert!(all[0].len() > 2 * 1024 * 1024);
}

#[test]
fn oversized_messages_follow_the_failure_policy() {
    for (policy, expect) in [("tempfail", "tempfail"), ("accept", "continue")] {
        let dir = sandbox();
        let mut serve = start_milter(
            dir.path(),
            &format!("max_message_size = \"1M\"\non_failure = \"{policy}\""),
            &rules(dir.path()),
            false,
        );
        miltertest(
            serve.port,
            "bigbody.lua",
            &[("mib", "3"), ("oversize", expect)],
        );
        // Still serving: a normal message afterwards is archived.
        miltertest(serve.port, "full_flow.lua", &[]);
        let stdout = serve.stop();
        let counted = if policy == "tempfail" {
            "1 retried by the MTA, 0 accepted unarchived"
        } else {
            "0 retried by the MTA, 1 accepted unarchived"
        };
        assert!(
            stdout.iter().any(|l| l.contains(counted)),
            "{policy}: {stdout:?}"
        );
        let all = read_maildir(&dir.path().join("archive/all"));
        assert_eq!(
            all.len(),
            1,
            "{policy}: only the normal message is archived"
        );
        assert_eq!(header_values(&all[0], "X-Mailkeep-Queue-Id"), vec!["QID1"]);
    }
}

/// QUIT_NC: the MTA reuses one milter connection for a new SMTP session.
/// Nothing of the first session (client, login) may reach the second.
/// miltertest has no QUIT_NC, so a raw milter client in Python speaks the
/// protocol here.
#[test]
fn quit_nc_reuses_the_connection_without_leaking_the_previous_session() {
    let dir = sandbox();
    let mut serve = start_milter(dir.path(), "", &rules(dir.path()), false);
    let script = r#"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
def send(cmd, data=b""):
    s.sendall(struct.pack(">I", len(data) + 1) + cmd + data)
def read():
    hdr = b""
    while len(hdr) < 4:
        hdr += s.recv(4 - len(hdr))
    n = struct.unpack(">I", hdr)[0]
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return body[:1], body[1:]
def expect(want):
    code, _ = read()
    assert code == want, (code, want)
# Offer protocol 6, all actions, none of the "no" options: every step answers.
send(b"O", struct.pack(">III", 6, 0x1FF, 0))
assert read()[0] == b"O"
def session(host, addr, helo, login, sender, rcpt, subject):
    send(b"C", host + b"\0" + b"4" + struct.pack(">H", 2525) + addr + b"\0"); expect(b"c")
    send(b"H", helo + b"\0"); expect(b"c")
    macros = b"M" + b"i\0Q-" + subject + b"\0"
    if login:
        macros += b"{auth_authen}\0" + login + b"\0"
    send(b"D", macros)
    send(b"M", sender + b"\0"); expect(b"c")
    send(b"R", rcpt + b"\0"); expect(b"c")
    send(b"L", b"Subject\0" + subject + b"\0"); expect(b"c")
    send(b"N"); expect(b"c")
    send(b"B", b"body of " + subject + b"\r\n"); expect(b"c")
    send(b"E"); expect(b"c")
session(b"first.example", b"192.0.2.1", b"first-helo", b"bob", b"<a@x>", b"<b@y>", b"one")
send(b"K")  # QUIT_NC: same connection, next SMTP session
session(b"second.example", b"192.0.2.2", b"second-helo", None, b"<c@x>", b"<d@y>", b"two")
send(b"Q")
s.close()
print("PASS")
"#;
    let out = python(script, &[&serve.port.to_string()]);
    assert!(out.contains("PASS"), "{out}");
    serve.stop();
    // (Subject, X-Mailkeep-Client, X-Mailkeep-Login, X-Envelope-To) per copy.
    type Seen = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);
    let mut copies: Vec<Seen> = read_maildir(&dir.path().join("archive/all"))
        .iter()
        .map(|c| {
            (
                header_values(c, "Subject"),
                header_values(c, "X-Mailkeep-Client"),
                header_values(c, "X-Mailkeep-Login"),
                header_values(c, "X-Envelope-To"),
            )
        })
        .collect();
    copies.sort();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        copies,
        vec![
            (
                s(&["one"]),
                s(&["first.example [192.0.2.1]:2525 helo=first-helo"]),
                s(&["bob"]),
                s(&["<b@y>"])
            ),
            (
                s(&["two"]),
                s(&["second.example [192.0.2.2]:2525 helo=second-helo"]),
                s(&[]),
                s(&["<d@y>"])
            ),
        ]
    );
}
