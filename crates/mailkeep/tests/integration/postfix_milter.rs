//! `mailkeep serve` as a Postfix milter, against a real private Postfix
//! (see `postfix.rs`) with `smtpd_milters = inet:127.0.0.1:PORT`,
//! `milter_protocol = 6`, `milter_default_action = tempfail`, no
//! `milter_*_macros` (mailkeep asks for its macros with SETSYMLIST), and a
//! private Dovecot for SASL: relaying needs a login.
//!
//! Clients are swaks and Python's smtplib; Postfix relays to `smtp-sink`.
//! The archive is read back with Python's `mailbox` module
//! (`util::read_mbox`), the sink's dumps with plain string handling, and
//! `X-Mailkeep-Archived` is recomputed with a BLAKE3 written in Python
//! here (checked against the official test vectors first), so nothing
//! here trusts mailkeep's own readers, writers or hash.
//!
//! Needs root, Postfix, swaks, python3 and dovecot-core; see `postfix.rs`.

use crate::postfix::Mailkeep;
use crate::postfix::{
    queued_as, run, trim_end_newlines, Finished, Layout, PrivatePostfix, Setup, SinkTransaction,
    Submission, Tools, COMMAND_TIMEOUT, SASL_PASSWORD, SASL_USER,
};
use crate::util;
use std::fs::{self};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The header a sender controls; it names someone other than who logged in.
const FORGED_FROM: &str = "Mallory <ceo@example.com>";
/// The envelope sender: neither the login nor the From: header.
const SENDER: &str = "alice@example.com";
/// a@ is in To:, b@ in Cc:, and c@ only in the envelope (a Bcc).
const RCPTS: [&str; 3] = ["a@example.com", "b@example.org", "c@example.net"];

// ---------------------------------------------------------------------------
// The tests

/// A logged-in client sends a message whose From: names someone else, with
/// a Bcc. mailkeep files it under the SASL login (`{auth_authen}`), not
/// under the From: header; the copy is durable before Postfix says 250;
/// its envelope headers hold the login and method, all three envelope
/// recipients and the queue id Postfix logged; the message after them is
/// the submitted one byte for byte (CRLF, dot-stuffing undone; Postfix
/// shows milters no Received: of its own). Onward, the sink gets the
/// message once, with
/// `X-Mailkeep-Archived: b3:` + the first 16 hex digits of the BLAKE3 of
/// exactly that archived original.
#[test]
fn postfix_milter_files_by_sasl_login_with_bcc_and_queue_id() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_milter::postfix_milter_files_by_sasl_login_with_bcc_and_queue_id",
        true,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, milter_setup());
    let _mk = start_mailkeep(&pf);
    let mail = TestMail::new("milter-login", SENDER, &RCPTS);

    let out = pf.swaks(&mail.submission(Some("PLAIN")));
    let qid = accepted(&out);
    // CONTINUE (and so Postfix's 250) only comes once the copy is durable.
    assert_archive_holds(&pf, 1, "as soon as Postfix accepted the message");
    pf.wait_relayed_to_sink(&qid, &RCPTS);

    assert_logged_in(&pf, &qid, "PLAIN");
    let copies = assert_archive_holds(&pf, 1, "once delivered");
    let original = assert_copy(&copies[0], &mail, &qid, "bob (PLAIN)");
    assert_store_holds(&pf, &mail, &qid, &original);

    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 1, "one transaction at the next hop: {tx:#?}");
    assert_onward(&pf, &tx[0], &mail, &original);
}

/// The native store holds exactly one delivery: the login Postfix
/// authenticated, every envelope recipient (Bcc included), the queue id,
/// and the original bytes, exactly.
fn assert_store_holds(pf: &PrivatePostfix, mail: &TestMail, qid: &str, original: &[u8]) {
    let config = pf.root().join("mailkeep.toml");
    let out = util::mailkeep(&config)
        .args(["search", "--json", "login:bob"])
        .output()
        .expect("mailkeep search");
    let text = String::from_utf8_lossy(&out.stdout);
    let hits: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("search --json line"))
        .collect();
    assert_eq!(hits.len(), 1, "one delivery in the store: {text}");
    let h = &hits[0];
    assert_eq!(h["login"], "bob", "{h}");
    assert_eq!(h["capture"], "milter", "{h}");
    assert_eq!(h["queue_id"], qid, "{h}");
    assert_eq!(h["sender"], mail.sender.as_str(), "{h}");
    let rcpts: Vec<&str> = h["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(rcpts, mail.rcpts_ref(), "{h}");
    let id = h["id"].as_i64().expect("id").to_string();
    let raw = util::mailkeep(&config)
        .args(["show", "--raw", &id])
        .output()
        .expect("mailkeep show");
    util::assert_same(&raw.stdout, original, "the stored message");
}

/// With mailkeep stopped (SIGTERM, exit 0), Postfix
/// (`milter_default_action = tempfail`) refuses the submission with 4xx
/// only (AUTH 454 4.3.0, MAIL 451 4.7.1) and takes nothing; the client retries (swaks again:
/// the milter acts before the queue, so Postfix itself has nothing to
/// retry) once mailkeep is back on the same port, and the message is then
/// accepted, archived and delivered exactly once.
#[test]
fn postfix_milter_down_tempfails_then_retry_archives_once() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_milter::postfix_milter_down_tempfails_then_retry_archives_once",
        true,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, milter_setup());
    let mut mk = start_mailkeep(&pf);
    mk.stop();
    let mail = TestMail::new("milter-down", SENDER, &RCPTS);

    // --auth-optional: past the refused AUTH, on to MAIL FROM.
    let mut submission = mail.submission(Some("PLAIN"));
    submission.extra.push("--auth-optional".into());
    let out = pf.swaks(&submission);
    let text = out.text();
    assert!(
        !out.status.success() && queued_as(&text).is_none(),
        "Postfix accepted a message with its milter down:\n{text}"
    );
    // smtpd still says 250 to EHLO, then refuses AUTH (454 4.3.0) and MAIL
    // (451 4.7.1), the milter's default action.
    let refusals: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("<** "))
        .collect();
    assert!(
        refusals.iter().all(|r| r.starts_with('4'))
            && refusals.iter().any(|r| r.starts_with("451 4.7.1 ")),
        "expected only temporary refusals, MAIL FROM's `451 4.7.1` (milter unavailable, \
         tempfail) among them, got {refusals:?}:\n{text}"
    );
    let log = pf.maillog();
    assert!(
        log.contains(&format!(
            "connect to Milter service inet:127.0.0.1:{}",
            pf.ports.milter
        )) && log.contains("milter-reject: MAIL from ")
            && log.contains("451 4.7.1"),
        "Postfix did not log the unavailable milter and its 451 4.7.1 for MAIL FROM:\n{log}"
    );
    // Nothing can be in flight: the refusal came before the queue.
    assert!(pf.queue_is_empty(), "{}", pf.postqueue("-p"));
    assert_archive_holds(&pf, 0, "while mailkeep was down");
    assert!(
        pf.sink_transactions().is_empty(),
        "the next hop received a message that was never archived"
    );

    let _mk = start_mailkeep(&pf);
    let out = pf.swaks(&mail.submission(Some("PLAIN")));
    let qid = accepted(&out);
    assert_archive_holds(&pf, 1, "as soon as Postfix accepted the retry");
    pf.wait_relayed_to_sink(&qid, &RCPTS);

    let log = pf.maillog();
    let delivered = pf.deliveries(|_| true);
    assert!(
        delivered.len() == 3
            && delivered
                .iter()
                .all(|d| d.qid == qid && d.status == "sent" && pf.is_sink_relay(&d.relay)),
        "expected only the retry, {qid}, relayed to the sink once per recipient:\n{log}"
    );
    let copies = assert_archive_holds(&pf, 1, "once the retry was delivered");
    let original = assert_copy(&copies[0], &mail, &qid, "bob (PLAIN)");
    assert_store_holds(&pf, &mail, &qid, &original);
    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 1, "one transaction at the next hop: {tx:#?}");
    assert_onward(&pf, &tx[0], &mail, &original);
}

/// Two messages in one SMTP session (one login, AUTH LOGIN this time):
/// each archived copy has only its own sender, recipients and queue id,
/// and the login on both; nothing of the first message leaks into the
/// second.
#[test]
fn postfix_milter_two_messages_in_one_session_keep_their_own_envelopes() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_milter::postfix_milter_two_messages_in_one_session_keep_their_own_envelopes",
        true,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, milter_setup());
    let _mk = start_mailkeep(&pf);
    let mut first = TestMail::new("milter-first", SENDER, &RCPTS[..2]);
    let mut second = TestMail::new("milter-second", "carol@example.net", &RCPTS[2..]);
    // One session, one HELO.
    let helo = "milter-session.client.example";
    first.helo = helo.into();
    second.helo = helo.into();

    let qids = smtp_session(&pf, helo, &[&first, &second]);
    assert_ne!(qids[0], qids[1], "two messages, two queue ids");
    assert_archive_holds(&pf, 2, "as soon as Postfix accepted both messages");
    pf.wait_relayed_to_sink(&qids[0], &first.rcpts_ref());
    pf.wait_relayed_to_sink(&qids[1], &second.rcpts_ref());

    // One session: Postfix sums it up at disconnect.
    let log = pf.maillog();
    assert!(
        log.lines().any(|l| l.contains("postfix/smtpd[")
            && l.contains(" disconnect from ")
            && l.contains(" auth=1 mail=2 rcpt=3 data=2 ")),
        "both messages must come in one session after one login:\n{log}"
    );
    for qid in &qids {
        assert_logged_in(&pf, qid, "LOGIN");
    }

    let copies = assert_archive_holds(&pf, 2, "once both were delivered");
    let originals = [
        assert_copy(&copies[0], &first, &qids[0], "bob (LOGIN)"),
        assert_copy(&copies[1], &second, &qids[1], "bob (LOGIN)"),
    ];
    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 2, "two transactions at the next hop: {tx:#?}");
    for (mail, original) in [(&first, &originals[0]), (&second, &originals[1])] {
        let mine: Vec<&SinkTransaction> = tx
            .iter()
            .filter(|t| t.message.contains(&mail.message_id))
            .collect();
        assert_eq!(mine.len(), 1, "{}: {tx:#?}", mail.message_id);
        assert_onward(&pf, mine[0], mail, original);
    }
}

// ---------------------------------------------------------------------------
// Set-up

fn milter_setup() -> Setup {
    Setup {
        layout: Layout::Milter,
        sasl: true,
    }
}

/// Writes this suite's configuration and starts `mailkeep serve`.
fn start_mailkeep(pf: &PrivatePostfix) -> Mailkeep {
    let root = pf.root().display();
    let listen = format!("inet:127.0.0.1:{}", pf.ports.milter);
    let config = util::write_config(
        pf.root(),
        &format!(
            "[milter]\n\
                 listen = \"{listen}\"\n\
                 on_failure = \"tempfail\"\n\
                 add_header = true\n\
                 \n\
                 [[rule]]\n\
                 name = \"outgoing, filed by who logged in\"\n\
                 login = [\"*\"]\n\
                 archive = [\"mbox:{root}/archive/{{login}}/sent.mbox\", \"store\"]\n\
                 \n\
                 [[rule]]\n\
                 name = \"everything\"\n\
                 archive = [\"maildir:{root}/archive/all\"]\n\
                 \n\
                 [store]\n\
                 path = \"{root}/store\"\n"
        ),
    );
    Mailkeep::start(pf, &config, &format!("milter listening on {listen}"))
}

// ---------------------------------------------------------------------------
// The messages

/// A test message: its envelope and text. Headers name a@ (To:) and b@
/// (Cc:) when they are recipients; anything else is a Bcc.
struct TestMail {
    helo: String,
    sender: String,
    rcpts: Vec<String>,
    subject: String,
    message_id: String,
    body: String,
    /// The message as the client submits it, LF line ends.
    text: String,
}

impl TestMail {
    fn new(label: &str, sender: &str, rcpts: &[&str]) -> TestMail {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!("{label}-{}-{nanos}", std::process::id());
        let subject = format!("mailkeep postfix milter test {tag}");
        let message_id = format!("<{tag}@mailkeep.test>");
        // Lines that an mbox writer must quote (mboxrd), that SMTP must
        // dot-stuff, and trailing white space, all to come back unchanged.
        let body = format!(
            "This message tests mailkeep serve as a Postfix milter ({label}).\n\
             From here on, an mbox writer must quote this line.\n\
             >From this one too, once more, in mboxrd.\n\
             .A leading dot survives SMTP dot-stuffing.\n\
             ..And so do two.\n\
             Trailing blanks stay: \t \n\
             \n\
             Last line.\n"
        );
        let mut head = format!("From: {FORGED_FROM}\nTo: Ann <a@example.com>\n");
        if rcpts.contains(&"b@example.org") {
            head.push_str("Cc: Bob <b@example.org>\n");
        }
        let text = format!(
            "{head}\
             Subject: {subject}\n\
             Date: Mon, 01 Jan 2024 12:00:00 +0000\n\
             Message-ID: {message_id}\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n\
             {body}"
        );
        TestMail {
            helo: format!("{label}.client.example"),
            sender: sender.to_string(),
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            subject,
            message_id,
            body,
            text,
        }
    }

    fn rcpts_ref(&self) -> Vec<&str> {
        self.rcpts.iter().map(String::as_str).collect()
    }

    /// swaks' arguments, logging in as bob with `mechanism` if given.
    fn submission(&self, mechanism: Option<&str>) -> Submission {
        Submission {
            helo: self.helo.clone(),
            from: self.sender.clone(),
            to: self.rcpts.clone(),
            // swaks ends DATA with CRLF "." whatever the text ends with: a
            // final newline in the text would become an extra empty line.
            message: self.text.strip_suffix('\n').unwrap().to_string(),
            auth: mechanism.map(|m| (SASL_USER.to_string(), SASL_PASSWORD.to_string(), m.into())),
            extra: Vec::new(),
        }
    }
}

/// The message with CRLF line ends, as it travels over SMTP and as the
/// milter receives it.
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

/// The queue id of a submission swaks got accepted.
fn accepted(out: &Finished) -> String {
    let text = out.text();
    assert!(
        out.status.success(),
        "swaks failed ({}):\n{text}",
        out.status
    );
    queued_as(&text).unwrap_or_else(|| panic!("no queue id in swaks' transcript:\n{text}"))
}

/// Logs in as bob (AUTH LOGIN) and sends `mails` in one SMTP session with
/// Python's smtplib; returns their queue ids.
fn smtp_session(pf: &PrivatePostfix, helo: &str, mails: &[&TestMail]) -> Vec<String> {
    let spec: Vec<serde_json::Value> = mails
        .iter()
        .map(|m| serde_json::json!({"from": m.sender, "to": m.rcpts, "data": m.text}))
        .collect();
    let spec_path = pf.path("session.json");
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = run(
        Command::new(&pf.tools.python3)
            .args(["-c", PY_SMTP_SESSION, "127.0.0.1"])
            .arg(pf.ports.smtpd.to_string())
            .args([helo, SASL_USER, SASL_PASSWORD])
            .arg(&spec_path),
        COMMAND_TIMEOUT,
    );
    let text = out.text();
    assert!(out.status.success(), "the SMTP session failed:\n{text}");
    let replies: Vec<(u16, String)> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(replies.len(), mails.len(), "{text}");
    replies
        .iter()
        .map(|(code, reply)| {
            assert_eq!(*code, 250, "DATA was not accepted: {replies:?}");
            queued_as(reply).unwrap_or_else(|| panic!("no queue id in {reply:?}"))
        })
        .collect()
}

/// Prints, as JSON, the final reply to each message's DATA.
const PY_SMTP_SESSION: &str = r#"
import json, smtplib, sys
host, port, helo, user, password, spec = sys.argv[1:7]
mails = json.load(open(spec))
s = smtplib.SMTP(host, int(port), local_hostname=helo, timeout=20)
s.ehlo(helo)
s.user, s.password = user, password
s.auth("LOGIN", s.auth_login, initial_response_ok=False)
replies = []
for m in mails:
    code, reply = s.mail(m["from"])
    assert code == 250, (code, reply)
    for rcpt in m["to"]:
        code, reply = s.rcpt(rcpt)
        assert code == 250, (rcpt, code, reply)
    code, reply = s.data(m["data"])
    replies.append([code, reply.decode()])
s.quit()
print(json.dumps(replies))
"#;

// ---------------------------------------------------------------------------
// Checks

/// Every file under `archive/`: only `bob/sent.mbox`, holding `n` messages
/// (nothing at all for 0), which are returned as Python's `mailbox` reads
/// them. The "everything" Maildir and any directory named after the From:
/// header or the sender stay empty.
fn assert_archive_holds(pf: &PrivatePostfix, n: usize, when: &str) -> Vec<Vec<u8>> {
    let files = util::files_under(&pf.path("archive"));
    if n == 0 {
        assert_eq!(files, Vec::<PathBuf>::new(), "archive files {when}");
        return Vec::new();
    }
    assert_eq!(
        files,
        [pf.path("archive/bob/sent.mbox")],
        "{when}, the message must be filed under the SASL login (rule 1) and nowhere else"
    );
    let copies = util::read_mbox(&files[0]);
    assert_eq!(copies.len(), n, "messages in archive/bob/sent.mbox {when}");
    copies
}

/// Postfix logged that the client of `qid` logged in as bob.
fn assert_logged_in(pf: &PrivatePostfix, qid: &str, method: &str) {
    let clients = pf.smtpd_clients();
    let mine: Vec<&String> = clients
        .iter()
        .filter(|(q, _)| q == qid)
        .map(|(_, rest)| rest)
        .collect();
    assert!(
        mine.len() == 1
            && mine[0].contains(&format!("sasl_method={method}, sasl_username={SASL_USER}")),
        "Postfix did not log a {method} login as {SASL_USER} for {qid}: {mine:?}\n{}",
        pf.maillog()
    );
}

/// Checks one archived copy against what was sent; returns the original
/// message after the envelope headers.
fn assert_copy(copy: &[u8], mail: &TestMail, qid: &str, login: &str) -> Vec<u8> {
    let (env, original) = util::split_envelope(copy);
    let fields: Vec<(&str, &str)> = env
        .lines()
        .map(|l| l.split_once(": ").unwrap_or((l, "")))
        .collect();
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    let mut want_names = vec!["Return-Path"];
    want_names.extend(mail.rcpts.iter().map(|_| "X-Envelope-To"));
    want_names.extend([
        "X-Mailkeep-Login",
        "X-Mailkeep-Client",
        "X-Mailkeep-Queue-Id",
        "X-Mailkeep-Received",
    ]);
    assert_eq!(names, want_names, "envelope header fields:\n{env}");
    let values = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(
        values("Return-Path"),
        [format!("<{}>", mail.sender)],
        "Return-Path must be the envelope sender:\n{env}"
    );
    let want_rcpts: Vec<String> = mail.rcpts.iter().map(|r| format!("<{r}>")).collect();
    assert_eq!(
        values("X-Envelope-To"),
        want_rcpts,
        "one X-Envelope-To per envelope recipient of this message, Bcc included, in \
         RCPT order, no other message's:\n{env}"
    );
    assert_eq!(
        values("X-Mailkeep-Login"),
        [login],
        "the SASL login and method ({{auth_authen}}, {{auth_type}}), not the From: \
         header:\n{env}"
    );
    let client = values("X-Mailkeep-Client");
    assert!(
        client[0].contains("[127.0.0.1]") && client[0].contains(&format!("helo={}", mail.helo)),
        "X-Mailkeep-Client must name the client address and HELO {}:\n{env}",
        mail.helo
    );
    assert_eq!(
        values("X-Mailkeep-Queue-Id"),
        [qid],
        "X-Mailkeep-Queue-Id must be the queue id Postfix gave the message:\n{env}"
    );
    assert!(
        values("X-Mailkeep-Received")[0].contains(" via milter; "),
        "X-Mailkeep-Received:\n{env}"
    );

    // After the envelope: exactly what the client sent, with SMTP's CRLF
    // line ends and dot-stuffing undone. (Postfix does not show milters its
    // own Received: header, so there is nothing in between.)
    util::assert_same(
        &original,
        &crlf(&mail.text),
        "the archived message (after the envelope headers) against the submitted one",
    );
    let text = String::from_utf8_lossy(&original).into_owned();
    let (_, body) = text
        .split_once("\r\n\r\n")
        .expect("a header/body separator");
    assert_eq!(
        body.as_bytes(),
        &crlf(&mail.body)[..],
        "the archived body differs from the submitted one"
    );
    original
}

/// The copy the sink received: this message's envelope, the message with
/// `X-Mailkeep-Archived` as its last header field, and that id equal to the
/// BLAKE3 of the archived original; no envelope header leaked onward.
fn assert_onward(pf: &PrivatePostfix, tx: &SinkTransaction, mail: &TestMail, original: &[u8]) {
    assert_eq!(
        tx.mail_from,
        [format!("<{}>", mail.sender)],
        "the sink's MAIL FROM: {tx:#?}"
    );
    let want_rcpts: Vec<String> = mail.rcpts.iter().map(|r| format!("<{r}>")).collect();
    let mut got_rcpts = tx.rcpt_to.clone();
    got_rcpts.sort();
    assert_eq!(got_rcpts, want_rcpts, "the sink's RCPT TOs: {tx:#?}");
    let (head, body) = tx
        .message
        .split_once("\n\n")
        .expect("a header/body separator");
    assert_eq!(
        trim_end_newlines(body),
        trim_end_newlines(&mail.body),
        "the body reached the next hop altered"
    );
    assert!(
        head.contains(&format!("Message-ID: {}", mail.message_id))
            && head.contains(&format!("Subject: {}", mail.subject)),
        "the sink got a different message: {tx:#?}"
    );
    assert!(
        !head.contains("X-Envelope-To") && !head.contains("X-Mailkeep-Login"),
        "archive-only headers leaked onward: {tx:#?}"
    );
    let archived: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-mailkeep-archived:"))
        .collect();
    assert_eq!(
        archived.len(),
        1,
        "one X-Mailkeep-Archived header onward: {tx:#?}"
    );
    let last = head.lines().last().unwrap_or_default();
    assert_eq!(
        last, archived[0],
        "X-Mailkeep-Archived must be added at the end of the header: {tx:#?}"
    );
    let hash_file = pf.path("original.eml");
    fs::write(&hash_file, original).unwrap();
    let digest = blake3_hex(&hash_file);
    // Exactly one space after the colon: mailkeep negotiates
    // SMFIP_HDR_LEADSPC, under which Postfix takes the value verbatim.
    let value = &archived[0]["X-Mailkeep-Archived:".len()..];
    assert_eq!(
        value,
        format!(" b3:{}", &digest[..16]),
        "the id must be `b3:` and the first 16 hex digits of the BLAKE3 of the archived \
         message (BLAKE3 {digest}): {}",
        archived[0]
    );
}

/// BLAKE3 (hex, 32 bytes) of a file's contents, by the Python below.
fn blake3_hex(path: &Path) -> String {
    let out = util::python(PY_BLAKE3, &[path.to_str().expect("utf-8 path")]);
    let hex = out.trim().to_string();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{out:?}"
    );
    hex
}

/// BLAKE3's hash function (default mode, 32-byte output) written from the
/// specification, self-checked against the official test vectors (inputs
/// of 0 to 4097 bytes: 1 to 5 chunks) before it hashes the files named.
const PY_BLAKE3: &str = r#"
import sys
M = 0xFFFFFFFF
IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
      0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8

def rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & M

def g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & M; s[d] = rotr(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M;     s[b] = rotr(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b] + y) & M; s[d] = rotr(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M;     s[b] = rotr(s[b] ^ s[c], 7)

def compress(cv, block, counter, block_len, flags):
    m = [int.from_bytes(block[4 * i:4 * i + 4], "little") for i in range(16)]
    s = cv[:] + IV[:4] + [counter & M, (counter >> 32) & M, block_len, flags]
    for _ in range(7):
        g(s, 0, 4, 8, 12, m[0], m[1]); g(s, 1, 5, 9, 13, m[2], m[3])
        g(s, 2, 6, 10, 14, m[4], m[5]); g(s, 3, 7, 11, 15, m[6], m[7])
        g(s, 0, 5, 10, 15, m[8], m[9]); g(s, 1, 6, 11, 12, m[10], m[11])
        g(s, 2, 7, 8, 13, m[12], m[13]); g(s, 3, 4, 9, 14, m[14], m[15])
        m = [m[p] for p in PERM]
    return [s[i] ^ s[i + 8] for i in range(8)]

def chunk_cv(data, counter, root):
    cv = IV[:]
    blocks = [data[i:i + 64] for i in range(0, len(data), 64)] or [b""]
    for i, b in enumerate(blocks):
        flags = CHUNK_START if i == 0 else 0
        if i == len(blocks) - 1:
            flags |= CHUNK_END | (ROOT if root else 0)
        cv = compress(cv, b.ljust(64, b"\0"), counter, len(b), flags)
    return cv

def node_cv(data, counter, root):
    chunks = max(1, -(-len(data) // 1024))
    if chunks == 1:
        return chunk_cv(data, counter, root)
    left = 1 << ((chunks - 1).bit_length() - 1)  # largest power of two < chunks
    l = node_cv(data[:left * 1024], counter, False)
    r = node_cv(data[left * 1024:], counter + left, False)
    block = b"".join(w.to_bytes(4, "little") for w in l + r)
    return compress(IV[:], block, 0, 64, PARENT | (ROOT if root else 0))

def blake3_hex(data):
    return b"".join(w.to_bytes(4, "little") for w in node_cv(data, 0, True)).hex()

VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    2048: "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
    2049: "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
    3072: "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2",
    3073: "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3",
    4097: "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995",
}
for n, want in VECTORS.items():
    got = blake3_hex(bytes(i % 251 for i in range(n)))
    assert got == want, "BLAKE3 self-test failed for %d bytes: %s" % (n, got)
for path in sys.argv[1:]:
    print(blake3_hex(open(path, "rb").read()))
"#;
