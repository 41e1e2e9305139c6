//! `mailkeep pipe` as a Postfix after-queue content filter run by pipe(8),
//! in the layout of Postfix's FILTER_README, against a real private Postfix.
//!
//! Mail enters an smtpd with `content_filter=mailkeep:dummy` (set on that
//! service, or in main.cf as README.md and `mailkeep postfix-snippet pipe`
//! advise; one test uses each layout); qmgr hands it,
//! every recipient in one delivery, to the `mailkeep` pipe(8) service, which
//! archives it and reinjects it over SMTP into a second smtpd that has no
//! content filter; Postfix then relays it to `smtp-sink`, which dumps each
//! transaction to a file. The archive is read back with Python's `mailbox`
//! module and the sink's dumps with plain string handling, so nothing here
//! trusts mailkeep's own readers or writers.
//!
//! These tests need root (Postfix's master, pipe(8)'s `user=`), `postfix`,
//! `smtp-sink`, `swaks` and `python3`. They fail, saying so, when one is
//! missing (scripts/test installs them), unless `MAILKEEP_SKIP_POSTFIX=1`.
//! The admin guide docs/postfix-pipe.md shows the same main.cf/master.cf
//! lines with production paths; keep the two in step.
//!
//! The private Postfix, smtp-sink and the helpers are in `postfix.rs`
//! (shared with `postfix_milter`); what is particular to pipe(8) is here.

use crate::postfix::{
    rcpt_set, run, set_mode, trim_end_newlines, user_ids, Delivery, FilterOn, Layout,
    PrivatePostfix, Setup, Submission, Tools, COMMAND_TIMEOUT, LOG_LAG, REINJECT_SYSLOG_NAME,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a deferred message is watched to prove nothing leaks onward.
/// Postfix would not retry before `minimal_backoff_time` (5 min) anyway; this
/// only has to outlast a reinjection that mailkeep wrongly made regardless.
const QUIET_PERIOD: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// The tests

/// One message with To, Cc and Bcc recipients goes through the filter once:
/// archived once (all three envelope recipients in one copy), delivered
/// onward once to all three.
#[test]
fn postfix_pipe_archives_and_reinjects_once_with_full_envelope() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_pipe::postfix_pipe_archives_and_reinjects_once_with_full_envelope",
        false,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, pipe_setup(FilterOn::Smtpd));
    let mail = TestMail::new("bounces+pipe@example.com", "pipe-full");

    let qid = pf.send(&mail);
    pf.wait_delivered(&qid, &mail);
    pf.assert_delivered_once(&qid, &mail);
}

/// An archive that cannot be written makes mailkeep exit 75, so Postfix
/// defers the message and nothing goes onward; once the archive is writable
/// again a queue flush delivers it, still exactly once.
#[test]
fn postfix_pipe_unwritable_archive_defers_then_flush_delivers_once() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_pipe::postfix_pipe_unwritable_archive_defers_then_flush_delivers_once",
        false,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, pipe_setup(FilterOn::Smtpd));
    pf.set_archive_writable(false);
    let mail = TestMail::new("owner-list@example.com", "pipe-defer");

    let qid = pf.send(&mail);
    let deferred = pf.wait_for("mailkeep to defer every recipient", |pf| {
        let piped = pf.deliveries(|d| d.qid == qid && d.relay == "mailkeep");
        if let Some(d) = piped.iter().find(|d| d.status != "deferred") {
            return Err(format!(
                "mailkeep could not write its archive, yet Postfix logged: {}",
                d.line
            ));
        }
        Ok((rcpt_set(&piped) == mail.rcpt_set()).then_some(piped))
    });
    eprintln!("postfix_pipe: Postfix logged: {}", deferred[0].line);
    thread::sleep(QUIET_PERIOD);
    let log = pf.maillog();
    assert!(
        pf.deliveries(|d| d.relay == "mailkeep" && d.status != "deferred")
            .is_empty(),
        "mailkeep failed to archive, yet Postfix logged another outcome:\n{log}"
    );
    assert_eq!(
        pf.reinjections(),
        Vec::<String>::new(),
        "mailkeep reinjected a message it failed to archive:\n{log}"
    );
    assert!(
        pf.sink_transactions().is_empty(),
        "the next hop received a message that was never archived"
    );
    assert_eq!(
        fs::read_dir(pf.path("archive")).unwrap().count(),
        0,
        "something was written into an unwritable archive directory"
    );
    let queue = pf.postqueue("-p");
    assert!(
        queue.contains(&qid),
        "the deferred message {qid} is not in the queue:\n{queue}"
    );

    pf.set_archive_writable(true);
    pf.postqueue("-f");
    pf.wait_delivered(&qid, &mail);
    pf.assert_delivered_once(&qid, &mail);
}

/// A bounce (null envelope sender) keeps its null sender through pipe(8)'s
/// `null_sender=` and mailkeep's reinjection: an empty `--sender=` must not
/// become a real address, or bounces would bounce. This instance sets the
/// filter in main.cf, the layout README.md gives, so the reinjection smtpd's
/// `-o content_filter=` is all that keeps the message from looping.
#[test]
fn postfix_pipe_keeps_the_null_sender() {
    let Some(tools) =
        Tools::find_or_skip("postfix_pipe::postfix_pipe_keeps_the_null_sender", false)
    else {
        return;
    };
    let pf = PrivatePostfix::start(tools, pipe_setup(FilterOn::MainCf));
    let mail = TestMail::new("", "pipe-null-sender");

    let qid = pf.send(&mail);
    pf.wait_delivered(&qid, &mail);
    pf.assert_delivered_once(&qid, &mail);
}

/// FILTER_README's layout with the filter set `on` the smtpd or in main.cf;
/// no SASL (pipe(8) then passes `--login=` empty).
fn pipe_setup(on: FilterOn) -> Setup {
    Setup {
        layout: Layout::Pipe(on),
        sasl: false,
    }
}

// ---------------------------------------------------------------------------
// The message

/// The test message and its envelope. a@ is in To, b@ in Cc, and c@ only in
/// the envelope (a Bcc), so only mailkeep's `X-Envelope-To` can name it.
struct TestMail {
    sender: String,
    rcpts: [&'static str; 3],
    helo: String,
    subject: String,
    message_id: String,
    body: String,
}

const BCC: &str = "c@example.net";

impl TestMail {
    fn new(sender: &str, label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!("{label}-{}-{nanos}", std::process::id());
        TestMail {
            sender: sender.to_string(),
            rcpts: ["a@example.com", "b@example.org", BCC],
            helo: format!("{label}.client.example"),
            subject: format!("mailkeep postfix pipe test {tag}"),
            message_id: format!("<{tag}@mailkeep.test>"),
            // Lines that an mbox writer must quote (mboxrd) and that SMTP
            // must dot-stuff on both hops.
            body: "This message tests mailkeep pipe behind Postfix.\n\
                   From here on, an mbox writer must quote this line.\n\
                   >From this one too, once more, in mboxrd.\n\
                   .A leading dot survives SMTP dot-stuffing twice.\n\
                   ..And so do two.\n\
                   Last line.\n"
                .to_string(),
        }
    }

    fn rfc822(&self) -> String {
        format!(
            "From: Alice Example <alice@example.com>\n\
             To: Ann <a@example.com>\n\
             Cc: Bob <b@example.org>\n\
             Subject: {}\n\
             Message-ID: {}\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n\
             {}",
            self.subject, self.message_id, self.body
        )
    }

    fn rcpt_set(&self) -> BTreeSet<String> {
        self.rcpts.iter().map(|r| r.to_string()).collect()
    }

    fn bracketed_rcpts(&self) -> BTreeSet<String> {
        self.rcpts.iter().map(|r| format!("<{r}>")).collect()
    }
}

// ---------------------------------------------------------------------------
// What the pipe(8) tests do and check on the private Postfix

impl PrivatePostfix {
    /// Submits `mail` with swaks; returns the queue id Postfix assigned.
    fn send(&self, mail: &TestMail) -> String {
        let out = self.swaks(&Submission {
            helo: mail.helo.clone(),
            from: mail.sender.clone(),
            to: mail.rcpts.iter().map(|r| r.to_string()).collect(),
            message: mail.rfc822(),
            auth: None,
            extra: Vec::new(),
        });
        let text = out.text();
        assert!(
            out.status.success(),
            "swaks failed ({}):\n{text}",
            out.status
        );
        crate::postfix::queued_as(&text)
            .unwrap_or_else(|| panic!("no queue id in swaks' transcript:\n{text}"))
    }

    /// the sink for every recipient, and the queue is empty, so that nothing
    /// more can happen to the message.
    /// Fails as soon as that cannot happen any more: mailkeep deferred the
    /// message (again), or the queue emptied short of a recipient.
    fn wait_delivered(&self, qid: &str, mail: &TestMail) {
        let want = mail.rcpt_set();
        let is_defer = |d: &Delivery| d.qid == qid && d.relay == "mailkeep" && d.status != "sent";
        let earlier_defers = self.deliveries(is_defer).len();
        let mut empty_since: Option<Instant> = None;
        self.wait_for("delivery through mailkeep to the sink", |pf| {
            let defers = pf.deliveries(is_defer);
            if defers.len() > earlier_defers {
                return Err(format!(
                    "mailkeep did not succeed: {}",
                    defers[earlier_defers].line
                ));
            }
            let piped =
                pf.deliveries(|d| d.qid == qid && d.relay == "mailkeep" && d.status == "sent");
            let sunk = pf.deliveries(|d| pf.is_sink_relay(&d.relay) && d.status == "sent");
            let complete = rcpt_set(&piped) == want && rcpt_set(&sunk) == want;
            let original_gone = pf.maillog().contains(&format!("{qid}: removed"));
            if !(complete || original_gone) || !pf.queue_is_empty() {
                empty_since = None;
                return Ok(None);
            }
            if complete {
                return Ok(Some(()));
            }
            // postlogd writes the log after the fact: a delivery can leave
            // the queue before its line reaches the maillog.
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() < LOG_LAG {
                return Ok(None);
            }
            Err(format!(
                "the queue has been empty for {LOG_LAG:?}, but not every recipient went \
                 through mailkeep ({:?}) and on to the sink ({:?})",
                rcpt_set(&piped),
                rcpt_set(&sunk)
            ))
        });
    }

    /// The assertions shared by every test, once the queue is empty.
    fn assert_delivered_once(&self, qid: &str, mail: &TestMail) {
        let log = self.maillog();

        // Postfix: the original message went through mailkeep exactly once,
        // in one pipe(8) delivery, and exactly one message came back.
        let piped_ok = self.deliveries(|d| d.relay == "mailkeep" && d.status == "sent");
        assert_eq!(
            piped_ok.len(),
            3,
            "expected one successful mailkeep delivery per recipient:\n{log}"
        );
        assert!(
            piped_ok.iter().all(|d| d.qid == qid),
            "mailkeep delivered a message other than {qid} (a reinjection loop?):\n{log}"
        );
        let reinjected = self.reinjections();
        assert_eq!(
            reinjected.len(),
            1,
            "expected exactly one reinjected message, got {reinjected:?}:\n{log}"
        );
        let reinjected_qid = &reinjected[0];
        // XFORWARD: the reinjection smtpd knows the original queue id and
        // client, so its log (and Received header) names them, not only
        // mailkeep's 127.0.0.1 connection.
        let tag = format!("{REINJECT_SYSLOG_NAME}/smtpd[");
        let client_line = log
            .lines()
            .find(|l| l.contains(&tag) && l.contains(&format!("{reinjected_qid}: client=")))
            .unwrap_or_default();
        assert!(
            client_line.contains(&format!("orig_queue_id={qid}"))
                && client_line.contains("orig_client="),
            "the reinjection did not forward the original client (XFORWARD):\n{log}"
        );
        let sunk = self.deliveries(|d| self.is_sink_relay(&d.relay));
        assert_eq!(sunk.len(), 3, "expected three relays to the sink:\n{log}");
        assert!(
            sunk.iter()
                .all(|d| &d.qid == reinjected_qid && d.status == "sent"),
            "the sink got something other than the reinjected {reinjected_qid}:\n{log}"
        );

        // The archive, read by Python's mailbox module.
        let mbox = self.read_mailbox("mbox", &self.path("archive/all.mbox"));
        let maildir = self.read_mailbox("maildir", &self.path("archive/md"));
        for (kind, msgs) in [("mbox", &mbox), ("maildir", &maildir)] {
            assert_eq!(
                msgs.len(),
                1,
                "the {kind} archive should hold exactly one message: {msgs:#?}"
            );
            let m = &msgs[0];
            assert_eq!(
                m.all("Message-ID"),
                [mail.message_id.as_str()],
                "{kind}: {m:#?}"
            );
            assert_eq!(m.all("Subject"), [mail.subject.as_str()], "{kind}: {m:#?}");
            assert_eq!(
                m.headers.first().map(|(k, _)| k.to_ascii_lowercase()),
                Some("return-path".to_string()),
                "{kind}: the envelope headers must come first: {m:#?}"
            );
            assert_eq!(
                m.all("Return-Path"),
                [format!("<{}>", mail.sender)],
                "{kind}: Return-Path must be the envelope sender: {m:#?}"
            );
            let env_to = m.all("X-Envelope-To");
            assert_eq!(
                (
                    env_to.len(),
                    env_to
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<BTreeSet<_>>()
                ),
                (3, mail.bracketed_rcpts()),
                "{kind}: one X-Envelope-To per envelope recipient, Bcc included: {m:#?}"
            );
            assert_eq!(
                m.all("X-Mailkeep-Queue-Id"),
                [qid],
                "{kind}: X-Mailkeep-Queue-Id must be Postfix's queue id: {m:#?}"
            );
            let client = m.all("X-Mailkeep-Client");
            assert!(
                client.len() == 1
                    && client[0].contains("127.0.0.1")
                    && client[0].contains(&mail.helo),
                "{kind}: X-Mailkeep-Client must name the client address and HELO {}: {m:#?}",
                mail.helo
            );
            assert_eq!(
                m.all("X-Mailkeep-Login"),
                Vec::<&str>::new(),
                "{kind}: pipe(8) passed --login= (no SASL login), so no login header: {m:#?}"
            );
            assert_eq!(
                m.all("X-Mailkeep-Received").len(),
                1,
                "{kind}: one X-Mailkeep-Received: {m:#?}"
            );
            assert!(
                m.headers
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("X-Envelope-To"))
                    .all(|(_, v)| !v.contains(BCC)),
                "{kind}: the Bcc recipient leaked into a header other than X-Envelope-To: {m:#?}"
            );
            assert!(
                m.all("Received")
                    .iter()
                    .any(|r| r.contains(&format!("id {qid}"))),
                "{kind}: Postfix's Received header for {qid} is missing: {m:#?}"
            );
        }
        let from_line = mbox[0].from_line.as_deref().unwrap_or_default();
        let from_sender = if mail.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &mail.sender
        };
        assert!(
            from_line.starts_with(&format!("{from_sender} ")),
            "the mbox From_ line should name the envelope sender {from_sender}: {from_line:?}"
        );
        assert_eq!(
            trim_end_newlines(&mboxrd_unquote(&mbox[0].body)),
            trim_end_newlines(&mail.body),
            "the mbox body (after mboxrd unquoting) differs from the original"
        );
        assert_eq!(
            trim_end_newlines(&maildir[0].body),
            trim_end_newlines(&mail.body),
            "the Maildir body differs from the original"
        );
        assert_eq!(
            maildir[0].subdir.as_deref(),
            Some("new"),
            "{:#?}",
            maildir[0]
        );
        let leftovers: Vec<_> = fs::read_dir(self.path("archive/md/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            leftovers.is_empty(),
            "files left in Maildir tmp/: {leftovers:?}"
        );

        // The next hop: one transaction, the original envelope, intact body.
        let tx = self.sink_transactions();
        assert_eq!(tx.len(), 1, "the sink should have one transaction: {tx:#?}");
        let tx = &tx[0];
        assert_eq!(
            tx.mail_from,
            [format!("<{}>", mail.sender)],
            "the sink's MAIL FROM: {tx:#?}"
        );
        assert_eq!(
            (
                tx.rcpt_to.len(),
                tx.rcpt_to.iter().cloned().collect::<BTreeSet<_>>()
            ),
            (3, mail.bracketed_rcpts()),
            "the sink's RCPT TOs, Bcc included: {tx:#?}"
        );
        let (head, body) = tx
            .message
            .split_once("\n\n")
            .unwrap_or((tx.message.as_str(), ""));
        assert!(
            head.contains(&format!("Message-ID: {}", mail.message_id))
                && head.contains(&format!("Subject: {}", mail.subject))
                && head.contains(&format!("id {qid};")),
            "the sink got a different message: {tx:#?}"
        );
        assert!(
            !head.contains("X-Envelope-To") && !head.contains("X-Mailkeep-"),
            "archive-only headers leaked onward: {tx:#?}"
        );
        assert_eq!(
            trim_end_newlines(body),
            trim_end_newlines(&mail.body),
            "the body reached the next hop altered"
        );
    }

    /// Queue ids of the messages the reinjection smtpd accepted.
    fn reinjections(&self) -> Vec<String> {
        let tag = format!("{REINJECT_SYSLOG_NAME}/smtpd[");
        self.maillog()
            .lines()
            .filter(|l| l.contains(&tag) && l.contains(": client="))
            .filter_map(|l| {
                let (before, _) = l.split_once(": client=")?;
                Some(before.rsplit(' ').next()?.to_string())
            })
            .collect()
    }

    /// Makes the archive directory writable by nobody again, or not (owned
    /// by root, mode 0555).
    fn set_archive_writable(&self, writable: bool) {
        let archive = self.path("archive");
        if writable {
            let (uid, gid) = user_ids("nobody");
            chown(&archive, Some(uid), Some(gid)).unwrap();
            set_mode(&archive, 0o755);
        } else {
            chown(&archive, Some(0), Some(0)).unwrap();
            set_mode(&archive, 0o555);
        }
    }

    /// Reads a mailbox with Python's `mailbox` module.
    fn read_mailbox(&self, kind: &str, path: &Path) -> Vec<ArchivedMessage> {
        assert!(
            path.exists(),
            "the {kind} archive {} does not exist",
            path.display()
        );
        let out = run(
            Command::new(&self.tools.python3)
                .args(["-c", PY_READ_MAILBOX, kind])
                .arg(path),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "python3 could not read the {kind} archive {}: {}",
            path.display(),
            out.text()
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("python printed JSON");
        v.as_array()
            .expect("a JSON array")
            .iter()
            .map(ArchivedMessage::from_json)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Python's view of the archive

/// Prints a JSON array with, per message: the mbox From_ line (without
/// "From "), the Maildir subdirectory, the headers in order, and the body.
const PY_READ_MAILBOX: &str = r#"
import json, mailbox, sys
kind, path = sys.argv[1], sys.argv[2]
if kind == "mbox":
    box = mailbox.mbox(path, create=False)
else:
    box = mailbox.Maildir(path, factory=None, create=False)
out = []
for key in sorted(box.keys()):
    m = box[key]
    out.append({
        "from_line": m.get_from() if kind == "mbox" else None,
        "subdir": m.get_subdir() if kind == "maildir" else None,
        "headers": [[k, str(v)] for k, v in m.items()],
        "body": m.get_payload(),
    })
print(json.dumps(out))
"#;

/// A message as Python's `mailbox` read it.
#[derive(Debug)]
struct ArchivedMessage {
    from_line: Option<String>,
    subdir: Option<String>,
    headers: Vec<(String, String)>,
    body: String,
}

impl ArchivedMessage {
    fn from_json(v: &Value) -> ArchivedMessage {
        let s = |v: &Value| v.as_str().map(str::to_string);
        ArchivedMessage {
            from_line: s(&v["from_line"]),
            subdir: s(&v["subdir"]),
            headers: v["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| (s(&h[0]).unwrap(), s(&h[1]).unwrap()))
                .collect(),
            body: s(&v["body"]).expect("a single-part body"),
        }
    }

    /// The values of every header called `name`, in order.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }
}

/// mboxrd: one `>` is removed from every line matching `^>+From `.
/// (Python's `mailbox.mbox` leaves the quoting in place.)
fn mboxrd_unquote(body: &str) -> String {
    body.split_inclusive('\n')
        .map(|l| {
            if l.starts_with('>') && l.trim_start_matches('>').starts_with("From ") {
                &l[1..]
            } else {
                l
            }
        })
        .collect()
}
