//! `mailkeep serve`'s SMTP content-filter proxy (`[filter]`) behind a real
//! private Postfix (see `postfix.rs`), in the after-queue layout (a) that
//! `mailkeep postfix-snippet filter` prints: `content_filter =
//! mailkeep:[127.0.0.1]:FILTER` in main.cf, the `mailkeep` smtp(8)
//! transport with `smtp_send_xforward_command = yes`, a reinjection smtpd
//! on 127.0.0.1:REINJECT that mailkeep relays to,
//! `smtpd_sasl_authenticated_header = yes`, and a private Dovecot for SASL:
//! relaying needs a login.
//!
//! Mail flows swaks → smtpd (queue id Q1) → qmgr → `mailkeep` smtp(8) →
//! mailkeep serve → reinjection smtpd (queue id Q2, `orig_queue_id=Q1`
//! through XFORWARD) → smtp-sink. The archive is read back with Python's
//! `mailbox` module (`util::read_mbox`, `util::read_maildir`), the sink's
//! dumps and Postfix's maillog with plain string handling, so nothing here
//! trusts mailkeep's own readers or writers.
//!
//! Needs root, Postfix, swaks, python3 and dovecot-core; see `postfix.rs`.

use crate::postfix::Mailkeep;
use crate::postfix::{
    queued_as, rcpt_set, Delivery, Finished, Layout, PrivatePostfix, Setup, SinkTransaction,
    Submission, Tools, FILTER_SYSLOG_NAME, LOG_LAG, REINJECT_SYSLOG_NAME, SASL_PASSWORD, SASL_USER,
};
use crate::util;
use std::collections::BTreeSet;
use std::fs::{self};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The envelope sender: neither the login nor the From: header.
const SENDER: &str = "alice@example.com";
/// a@ is in To:, b@ in Cc:, and c@ only in the envelope (a Bcc).
const RCPTS: [&str; 3] = ["a@example.com", "b@example.org", "c@example.net"];
const BCC: &str = "c@example.net";
/// How long a deferred message is watched to prove nothing leaks onward
/// (Postfix would not retry before `minimal_backoff_time`, 5 min, anyway).
const QUIET_PERIOD: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// The tests

/// bob logs in and sends a message to two header recipients and a Bcc. It
/// goes through mailkeep once and reaches the sink once; mailkeep archives
/// it once into each destination (`bob/sent.mbox` by the login rule, which
/// continues, and the Maildir), with the full envelope: the three envelope
/// recipients, `X-Mailkeep-Login: bob` (from Postfix's Received header),
/// and the ORIGINAL queue id (XFORWARD IDENT), not the reinjected one.
/// Postfix's 250 from the filter is the reinjection smtpd's own `queued as
/// Q2`, and the reinjection smtpd logs `orig_queue_id=Q1`: mailkeep passed
/// XFORWARD on.
#[test]
fn postfix_filter_archives_once_with_full_envelope_and_original_queue_id() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_filter::postfix_filter_archives_once_with_full_envelope_and_original_queue_id",
        true,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, filter_setup(None));
    let _mk = start_mailkeep(&pf);
    let mail = TestMail::new("filter-full");

    let qid = accepted(&pf.swaks(&mail.submission()));
    let reinjected = wait_through_filter(&pf, &qid);
    assert_ne!(qid, reinjected, "the reinjection is a new queue file");
    assert_logged_in(&pf, &qid);
    assert_passed_once(&pf, &qid, &reinjected);

    let archive = Archive::read(&pf);
    archive.assert_holds(&[&mail], "once delivered");
    for (kind, copy) in archive.copies_of(&mail) {
        assert_copy(kind, &copy, &mail, &qid, &reinjected);
    }
    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 1, "one transaction at the sink: {tx:#?}");
    assert_onward(&tx[0], &mail, &qid, &reinjected);
}

/// mailkeep is stopped (SIGTERM, exit 0) after a first message went
/// through. The next submission is still accepted (the filter is after the
/// queue), but Postfix defers its delivery to mailkeep: nothing reaches the
/// sink, nothing new is archived, the message waits in the queue. Once
/// mailkeep runs again on the same port, a queue flush delivers it: exactly
/// once at the sink, exactly once in the archive, with its original queue
/// id.
#[test]
fn postfix_filter_down_defers_then_flush_delivers_once() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_filter::postfix_filter_down_defers_then_flush_delivers_once",
        true,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, filter_setup(None));
    let mut mk = start_mailkeep(&pf);
    let first = TestMail::new("filter-before-stop");
    let first_qid = accepted(&pf.swaks(&first.submission()));
    let first_reinjected = wait_through_filter(&pf, &first_qid);
    Archive::read(&pf).assert_holds(&[&first], "before mailkeep stopped");
    mk.stop();

    let mail = TestMail::new("filter-down");
    let qid = accepted(&pf.swaks(&mail.submission()));
    let deferred = pf.wait_for(&format!("Postfix to defer {qid} for mailkeep"), |pf| {
        let mine = filter_deliveries(pf, |d| d.qid == qid);
        if let Some(d) = mine.iter().find(|d| d.status != "deferred") {
            return Err(format!("mailkeep is down, yet Postfix logged: {}", d.line));
        }
        Ok((rcpt_set(&mine) == rcpts()).then_some(mine))
    });
    eprintln!("postfix_filter: Postfix logged: {}", deferred[0].line);
    let refused = format!(
        "connect to 127.0.0.1[127.0.0.1]:{}: Connection refused",
        pf.ports.filter
    );
    assert!(
        deferred.iter().all(|d| d.line.contains(&refused)),
        "the deferral should be mailkeep's port refusing connections: {deferred:#?}"
    );
    thread::sleep(QUIET_PERIOD);
    let queue = pf.postqueue("-p");
    assert!(
        queue.contains(&qid),
        "the deferred message {qid} is not in the queue:\n{queue}"
    );
    assert!(
        filter_deliveries(&pf, |d| d.qid == qid && d.status != "deferred").is_empty(),
        "mailkeep was down, yet Postfix logged another outcome for {qid}:\n{}",
        pf.maillog()
    );
    let tx = pf.sink_transactions();
    assert!(
        tx.len() == 1 && tx[0].message.contains(&first.message_id),
        "the sink got something while mailkeep was down: {tx:#?}"
    );
    Archive::read(&pf).assert_holds(&[&first], "while mailkeep was down");

    let _mk = start_mailkeep(&pf);
    pf.postqueue("-f");
    let reinjected = wait_through_filter(&pf, &qid);
    assert_passed_once(&pf, &first_qid, &first_reinjected);
    assert_passed_once(&pf, &qid, &reinjected);

    let archive = Archive::read(&pf);
    archive.assert_holds(&[&first, &mail], "once the flush delivered");
    for (kind, copy) in archive.copies_of(&mail) {
        assert_copy(kind, &copy, &mail, &qid, &reinjected);
    }
    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 2, "two transactions at the sink: {tx:#?}");
    let mine: Vec<&SinkTransaction> = tx
        .iter()
        .filter(|t| t.message.contains(&mail.message_id))
        .collect();
    assert_eq!(mine.len(), 1, "{}: {tx:#?}", mail.message_id);
    assert_onward(mine[0], &mail, &qid, &reinjected);
}

/// The reinjection smtpd refuses the final dot once (450, from a policy
/// service asked at end of data), after mailkeep archived the message:
/// Postfix hears that 450 and defers; the copy stays (archived once). The
/// flush delivers the same queue file again: mailkeep recognises it (queue
/// id + content in `dedup_dir`) and passes it on without a second copy.
#[test]
fn postfix_filter_relay_refusal_then_retry_is_archived_once() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_filter::postfix_filter_relay_refusal_then_retry_is_archived_once",
        true,
    ) else {
        return;
    };
    let policy = RefuseOnce::start();
    let pf = PrivatePostfix::start(tools, filter_setup(Some(policy.port)));
    let mk = start_mailkeep(&pf);
    let mail = TestMail::new("filter-dedup");

    let qid = accepted(&pf.swaks(&mail.submission()));
    let deferred = pf.wait_for(
        &format!("Postfix to defer {qid} on the relay's 450"),
        |pf| {
            let mine = filter_deliveries(pf, |d| d.qid == qid);
            if let Some(d) = mine.iter().find(|d| d.status != "deferred") {
                return Err(format!(
                    "the relay refused the message, yet Postfix logged: {}",
                    d.line
                ));
            }
            Ok((rcpt_set(&mine) == rcpts()).then_some(mine))
        },
    );
    eprintln!("postfix_filter: Postfix logged: {}", deferred[0].line);
    assert!(
        deferred.iter().all(|d| d.line.contains("said: 450 4.7.1 ")
            && d.line.contains(RefuseOnce::TEXT)
            && d.line.contains("(in reply to end of DATA command)")),
        "Postfix should have heard the relay's own refusal of the final dot: {deferred:#?}"
    );
    thread::sleep(QUIET_PERIOD);
    assert_eq!(
        policy.end_of_data_requests(),
        1,
        "the reinjection smtpd should have asked at end of data once"
    );
    assert!(
        pf.sink_transactions().is_empty(),
        "the relay refused the message, yet the sink got it"
    );
    // Archived before the dot went to the relay: the copy is there already.
    Archive::read(&pf).assert_holds(&[&mail], "after the relay refused the dot");
    assert_eq!(
        util::files_under(&pf.path("dedup")).len(),
        1,
        "one dedup key recorded for the archived message"
    );

    pf.postqueue("-f");
    let reinjected = wait_through_filter(&pf, &qid);
    assert_eq!(
        policy.end_of_data_requests(),
        2,
        "the retry went to the reinjection smtpd"
    );
    assert_passed_once(&pf, &qid, &reinjected);
    let archive = Archive::read(&pf);
    archive.assert_holds(&[&mail], "after the retry (dedup)");
    for (kind, copy) in archive.copies_of(&mail) {
        assert_copy(kind, &copy, &mail, &qid, &reinjected);
    }
    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 1, "one transaction at the sink: {tx:#?}");
    assert_onward(&tx[0], &mail, &qid, &reinjected);
    let log = mk.log_text();
    assert!(
        log.contains("already archived on an earlier attempt") && log.contains(&qid),
        "mailkeep should say it recognised the retry of {qid}:\n{log}"
    );
}

/// Found with this layout: the relay reset the connection at RCPT 2 of 3;
/// mailkeep answered 451 for it, then 503 for RCPT 3 and for DATA, so
/// Postfix bounced recipient 3 and recipient 1 (already accepted with 250)
/// and sent the sender a non-delivery report. Now every recipient is
/// deferred, nothing bounces, and the retry delivers and archives all three
/// once.
#[test]
fn postfix_filter_relay_reset_at_a_recipient_defers_all_and_bounces_nothing() {
    let Some(tools) = Tools::find_or_skip(
        "postfix_filter::postfix_filter_relay_reset_at_a_recipient_defers_all_and_bounces_nothing",
        true,
    ) else {
        return;
    };
    let pf = PrivatePostfix::start(tools, filter_setup(None));
    let proxy = ResetProxy::start(pf.ports.reinject, 2);
    let _mk = start_mailkeep_relaying_to(&pf, proxy.port);
    let mail = TestMail::new("filter-rcpt-reset");
    let qid = accepted(&pf.swaks(&mail.submission()));
    let deferred = pf.wait_for(&format!("Postfix to defer {qid} at the reset"), |pf| {
        let mine = filter_deliveries(pf, |d| d.qid == qid);
        if let Some(d) = mine.iter().find(|d| d.status != "deferred") {
            return Err(format!("the relay reset, yet Postfix logged: {}", d.line));
        }
        Ok((rcpt_set(&mine) == rcpts()).then_some(mine))
    });
    eprintln!("postfix_filter: Postfix logged: {deferred:#?}");
    assert!(
        proxy.resets() == 1,
        "the proxy reset the relay connection once"
    );
    thread::sleep(QUIET_PERIOD);
    let log = pf.maillog();
    assert!(
        !log.contains("status=bounced") && !log.contains("sender non-delivery notification"),
        "something bounced:\n{log}"
    );
    assert!(
        pf.sink_transactions().is_empty(),
        "the sink got something (a bounce, or half the recipients)"
    );
    // Not archived: the relay never took it.
    Archive::read(&pf).assert_holds(&[], "after the reset");

    pf.postqueue("-f");
    let reinjected = wait_through_filter(&pf, &qid);
    assert_passed_once(&pf, &qid, &reinjected);
    Archive::read(&pf).assert_holds(&[&mail], "after the retry");
    let tx = pf.sink_transactions();
    assert_eq!(tx.len(), 1, "one transaction at the sink: {tx:#?}");
    assert_onward(&tx[0], &mail, &qid, &reinjected);
}

/// A TCP proxy in front of `upstream` that closes both sides instead of
/// passing on the `at`-th RCPT it sees (once); otherwise it passes bytes
/// both ways unchanged.
struct ResetProxy {
    port: u16,
    resets: Arc<Mutex<usize>>,
}

impl ResetProxy {
    fn start(upstream: u16, at: usize) -> ResetProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let resets = Arc::new(Mutex::new(0usize));
        let armed = Arc::new(AtomicBool::new(true));
        {
            let resets = resets.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let (resets, armed) = (resets.clone(), armed.clone());
                    thread::spawn(move || proxy_connection(client, server, at, armed, resets));
                }
            });
        }
        ResetProxy { port, resets }
    }

    fn resets(&self) -> usize {
        *self.resets.lock().unwrap()
    }
}

fn proxy_connection(
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    at: usize,
    armed: Arc<AtomicBool>,
    resets: Arc<Mutex<usize>>,
) {
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let mut to_server = server;
    let mut lines = BufReader::new(client.try_clone().expect("clone"));
    let mut rcpts = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"RCPT") {
            rcpts += 1;
            if rcpts == at && armed.swap(false, Ordering::SeqCst) {
                *resets.lock().unwrap() += 1;
                break;
            }
        }
        if to_server.write_all(&line).is_err() {
            break;
        }
    }
    let _ = to_server.shutdown(std::net::Shutdown::Both);
    let _ = client.shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Set-up

fn filter_setup(reinject_eod_policy: Option<u16>) -> Setup {
    Setup {
        layout: Layout::Filter {
            reinject_eod_policy,
        },
        sasl: true,
    }
}

fn rcpts() -> BTreeSet<String> {
    RCPTS.iter().map(|r| r.to_string()).collect()
}

/// Writes this suite's configuration and starts `mailkeep serve`.
fn start_mailkeep(pf: &PrivatePostfix) -> Mailkeep {
    start_mailkeep_relaying_to(pf, pf.ports.reinject)
}

/// [`start_mailkeep`] with the filter's relay at `relay` (a proxy in front
/// of the reinjection smtpd).
fn start_mailkeep_relaying_to(pf: &PrivatePostfix, relay: u16) -> Mailkeep {
    let root = pf.root().display();
    for dir in ["spool", "dedup"] {
        let _ = fs::create_dir(pf.path(dir));
    }
    let config = util::write_config(
        pf.root(),
        &format!(
            "[spool]\n\
                 dir = \"{root}/spool\"\n\
                 \n\
                 [filter]\n\
                 listen = \"127.0.0.1:{filter}\"\n\
                 relay = \"127.0.0.1:{reinject}\"\n\
                 dedup_dir = \"{root}/dedup\"\n\
                 \n\
                 [[rule]]\n\
                 name = \"outgoing, filed by who logged in\"\n\
                 login = \"*\"\n\
                 archive = \"mbox:{root}/archive/{{login}}/sent.mbox\"\n\
                 continue = true\n\
                 \n\
                 [[rule]]\n\
                 name = \"everything\"\n\
                 archive = \"maildir:{root}/archive/md\"\n",
            filter = pf.ports.filter,
            reinject = relay,
        ),
    );
    let ready = format!(
        "SMTP filter listening on inet:127.0.0.1:{}, relaying to 127.0.0.1:{relay}",
        pf.ports.filter
    );
    Mailkeep::start(pf, &config, &ready)
}

/// A Postfix policy service (SMTPD_POLICY_README) on 127.0.0.1 for the
/// reinjection smtpd's `smtpd_end_of_data_restrictions`: it answers the
/// first END-OF-MESSAGE request with [`RefuseOnce::REPLY`], every later one
/// with DUNNO. Stopped on drop.
struct RefuseOnce {
    port: u16,
    end_of_data: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl RefuseOnce {
    /// smtpd's reply then reads `450 4.7.1 <END-OF-MESSAGE>: End-of-data
    /// rejected: TEXT`.
    const REPLY: &'static str = "450 4.7.1 refused once by the test's policy service";
    const TEXT: &'static str = "refused once by the test's policy service";

    fn start() -> RefuseOnce {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let end_of_data = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (end_of_data, stop) = (end_of_data.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let end_of_data = end_of_data.clone();
                            thread::spawn(move || {
                                let _ = Self::serve(stream, &end_of_data);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        RefuseOnce {
            port,
            end_of_data,
            stop,
            accept: Some(accept),
        }
    }

    /// One smtpd connection: requests are `name=value` lines ending with
    /// an empty line; smtpd keeps the connection for further requests.
    fn serve(stream: std::net::TcpStream, end_of_data: &Mutex<usize>) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        // Bounded: the thread ends even if smtpd keeps the connection idle.
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut writer = stream.try_clone()?;
        let mut state = String::new();
        for line in BufReader::new(stream).lines() {
            let line = line?;
            if let Some(s) = line.strip_prefix("protocol_state=") {
                state = s.to_string();
            }
            if !line.is_empty() {
                continue;
            }
            let action = if state == "END-OF-MESSAGE" {
                let mut n = end_of_data.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    Self::REPLY
                } else {
                    "DUNNO"
                }
            } else {
                "DUNNO"
            };
            writer.write_all(format!("action={action}\n\n").as_bytes())?;
            state.clear();
        }
        Ok(())
    }

    fn end_of_data_requests(&self) -> usize {
        *self.end_of_data.lock().unwrap()
    }
}

impl Drop for RefuseOnce {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The messages

/// A test message from alice (From: header and envelope), submitted by bob
/// (SASL login), to a@ (To:), b@ (Cc:) and c@ (Bcc: envelope only).
struct TestMail {
    helo: String,
    message_id: String,
    /// The message as the client submits it, LF line ends.
    text: String,
}

impl TestMail {
    fn new(label: &str) -> TestMail {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!("{label}-{}-{nanos}", std::process::id());
        let subject = format!("mailkeep postfix filter test {tag}");
        let message_id = format!("<{tag}@mailkeep.test>");
        // Lines that an mbox writer must quote (mboxrd) and that SMTP must
        // dot-stuff on each of the three hops, all to come back unchanged.
        let body = format!(
            "This message tests mailkeep serve as a Postfix content filter ({label}).\n\
             From here on, an mbox writer must quote this line.\n\
             >From this one too, once more, in mboxrd.\n\
             .A leading dot survives SMTP dot-stuffing.\n\
             ..And so do two.\n\
             .\n\
             A lone dot above did not end the message.\n\
             \n\
             Last line.\n"
        );
        let text = format!(
            "From: Alice Example <{SENDER}>\n\
             To: Ann <a@example.com>\n\
             Cc: Bob <b@example.org>\n\
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
            message_id,
            text,
        }
    }

    /// swaks' arguments: AUTH PLAIN as bob.
    fn submission(&self) -> Submission {
        Submission {
            helo: self.helo.clone(),
            from: SENDER.to_string(),
            to: RCPTS.iter().map(|r| r.to_string()).collect(),
            // swaks ends DATA with CRLF "." whatever the text ends with: a
            // final newline in the text would become an extra empty line.
            message: self.text.strip_suffix('\n').unwrap().to_string(),
            auth: Some((
                SASL_USER.to_string(),
                SASL_PASSWORD.to_string(),
                "PLAIN".to_string(),
            )),
            extra: Vec::new(),
        }
    }
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
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

// ---------------------------------------------------------------------------
// Postfix's log

/// Deliveries by the `mailkeep` smtp(8) transport (to mailkeep serve),
/// whatever their outcome, filtered.
fn filter_deliveries(pf: &PrivatePostfix, keep: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
    let tag = format!(" {FILTER_SYSLOG_NAME}/smtp[");
    pf.deliveries(|d| d.line.contains(&tag) && keep(d))
}

/// The reinjection smtpd's `QID: client=…` lines: (queue id, the rest).
fn reinjections(pf: &PrivatePostfix) -> Vec<(String, String)> {
    let tag = format!(" {REINJECT_SYSLOG_NAME}/smtpd[");
    pf.maillog()
        .lines()
        .filter(|l| l.contains(&tag) && l.contains(": client="))
        .filter_map(|l| {
            let (before, after) = l.split_once(": client=")?;
            Some((before.rsplit(' ').next()?.to_string(), after.to_string()))
        })
        .collect()
}

/// Waits until `qid` went through mailkeep (every recipient `sent` by the
/// `mailkeep` transport), came back as a reinjection that the sink got for
/// every recipient, both queue files are removed and the queue is empty.
/// Returns the reinjected queue id. Fails as soon as mailkeep's delivery of
/// `qid` gets an outcome other than `sent` (beyond those logged before).
fn wait_through_filter(pf: &PrivatePostfix, qid: &str) -> String {
    let earlier_failures = filter_deliveries(pf, |d| d.qid == qid && d.status != "sent").len();
    let mut stale_since: Option<Instant> = None;
    pf.wait_for(&format!("{qid} to go through mailkeep to the sink"), |pf| {
        let failures = filter_deliveries(pf, |d| d.qid == qid && d.status != "sent");
        if failures.len() > earlier_failures {
            return Err(format!(
                "mailkeep's delivery failed: {}",
                failures[earlier_failures].line
            ));
        }
        let sent = filter_deliveries(pf, |d| d.qid == qid && d.status == "sent");
        let log = pf.maillog();
        let reinjected = reinjections(pf)
            .into_iter()
            .filter(|(_, rest)| rest.contains(&format!("orig_queue_id={qid},")))
            .map(|(q, _)| q)
            .find(|q| {
                let sunk = pf.deliveries(|d| &d.qid == q && pf.is_sink_relay(&d.relay));
                rcpt_set(&sunk) == rcpts() && sunk.iter().all(|d| d.status == "sent")
            });
        let removed = |q: &str| log.contains(&format!("{q}: removed"));
        let done = rcpt_set(&sent) == rcpts()
            && reinjected.as_deref().is_some_and(removed)
            && removed(qid)
            && pf.queue_is_empty();
        if done {
            return Ok(reinjected);
        }
        // postlogd writes after the fact: allow the log to lag an empty
        // queue a little, no more.
        if removed(qid) && pf.queue_is_empty() {
            let since = *stale_since.get_or_insert_with(Instant::now);
            if since.elapsed() > LOG_LAG {
                return Err(format!(
                    "{qid} left the queue, but mailkeep delivered it (sent) to {:?}, and the \
                     reinjection that reached the sink for every recipient, logged with \
                     orig_queue_id={qid} (XFORWARD IDENT passed on), is {reinjected:?}",
                    rcpt_set(&sent)
                ));
            }
        }
        Ok(None)
    })
}

/// Postfix logged that the client of `qid` logged in as bob.
fn assert_logged_in(pf: &PrivatePostfix, qid: &str) {
    let clients = pf.smtpd_clients();
    let mine: Vec<&String> = clients
        .iter()
        .filter(|(q, _)| q == qid)
        .map(|(_, rest)| rest)
        .collect();
    assert!(
        mine.len() == 1 && mine[0].contains(&format!("sasl_username={SASL_USER}")),
        "Postfix did not log a login as {SASL_USER} for {qid}: {mine:?}\n{}",
        pf.maillog()
    );
}

/// The maillog, once `qid` is through: mailkeep got it once (one `sent`
/// per recipient, Postfix's 250 being the reinjection smtpd's `queued as
/// {reinjected}`), the reinjection smtpd logged it with `orig_queue_id` and
/// `orig_client` (XFORWARD passed on), the sink got `reinjected` once per
/// recipient, and no reinjected message went back into the filter (loop).
fn assert_passed_once(pf: &PrivatePostfix, qid: &str, reinjected: &str) {
    let log = pf.maillog();
    let sent = filter_deliveries(pf, |d| d.qid == qid && d.status == "sent");
    assert_eq!(
        sent.len(),
        3,
        "expected one successful delivery to mailkeep per recipient of {qid}:\n{log}"
    );
    assert!(
        sent.iter().all(
            |d| d.relay == format!("127.0.0.1[127.0.0.1]:{}", pf.ports.filter)
                && d.line.contains(&format!("queued as {reinjected})"))
        ),
        "mailkeep's 250 should be the reinjection smtpd's `queued as {reinjected}`: {sent:#?}"
    );
    let originals: BTreeSet<String> = pf.smtpd_clients().into_iter().map(|(q, _)| q).collect();
    let looped = filter_deliveries(pf, |d| !originals.contains(&d.qid));
    assert!(
        looped.is_empty(),
        "the filter got a reinjected message (a loop): {looped:#?}"
    );
    let lines: Vec<String> = reinjections(pf)
        .into_iter()
        .filter(|(q, _)| q == reinjected)
        .map(|(_, rest)| rest)
        .collect();
    assert!(
        lines.len() == 1
            && lines[0].contains(&format!("orig_queue_id={qid},"))
            && lines[0].contains("orig_client="),
        "the reinjection smtpd should log {reinjected} with orig_queue_id={qid} and \
         orig_client (XFORWARD from mailkeep): {lines:?}\n{log}"
    );
    let sunk = pf.deliveries(|d| pf.is_sink_relay(&d.relay) && d.qid == reinjected);
    assert!(
        sunk.len() == 3 && sunk.iter().all(|d| d.status == "sent"),
        "expected {reinjected} relayed to the sink once per recipient: {sunk:#?}"
    );
    let sunk_originals = pf.deliveries(|d| pf.is_sink_relay(&d.relay) && d.qid == qid);
    assert!(
        sunk_originals.is_empty(),
        "{qid} went to the sink without mailkeep: {sunk_originals:#?}"
    );
}

// ---------------------------------------------------------------------------
// The archive

/// The archive as Python's `mailbox` reads it: `archive/bob/sent.mbox` (the
/// login rule) and the Maildir `archive/md` (the catch-all rule).
struct Archive {
    mbox: Vec<Vec<u8>>,
    maildir: Vec<Vec<u8>>,
}

impl Archive {
    fn read(pf: &PrivatePostfix) -> Archive {
        let mbox_path = pf.path("archive/bob/sent.mbox");
        let md_path = pf.path("archive/md");
        let md = md_path.display().to_string();
        for f in util::files_under(&pf.path("archive")) {
            assert!(
                f == mbox_path || f.starts_with(format!("{md}/new/")),
                "unexpected archive file {} (the login rule files under bob/, the other \
                 rule into the Maildir's new/, nothing else)",
                f.display()
            );
        }
        Archive {
            mbox: if mbox_path.exists() {
                util::read_mbox(&mbox_path)
            } else {
                Vec::new()
            },
            maildir: if md_path.exists() {
                util::read_maildir(&md_path)
            } else {
                Vec::new()
            },
        }
    }

    /// Each destination holds exactly one copy of each of `mails`, and
    /// nothing else.
    fn assert_holds(&self, mails: &[&TestMail], when: &str) {
        for (kind, copies) in [("bob/sent.mbox", &self.mbox), ("Maildir", &self.maildir)] {
            assert_eq!(
                copies.len(),
                mails.len(),
                "messages in {kind} {when} (want one copy of each of {:?})",
                mails.iter().map(|m| &m.message_id).collect::<Vec<_>>()
            );
            for m in mails {
                let n = copies
                    .iter()
                    .filter(|c| contains(c, &format!("Message-ID: {}", m.message_id)))
                    .count();
                assert_eq!(n, 1, "copies of {} in {kind} {when}", m.message_id);
            }
        }
    }

    /// The copy of `mail` in each destination.
    fn copies_of(&self, mail: &TestMail) -> Vec<(&'static str, Vec<u8>)> {
        let pick = |copies: &Vec<Vec<u8>>| {
            copies
                .iter()
                .find(|c| contains(c, &format!("Message-ID: {}", mail.message_id)))
                .cloned()
                .unwrap_or_else(|| panic!("no copy of {}", mail.message_id))
        };
        vec![
            ("bob/sent.mbox", pick(&self.mbox)),
            ("Maildir", pick(&self.maildir)),
        ]
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Splits the leading `Received:` fields (unfolded) off a message.
fn leading_received(message: &str) -> (Vec<String>, &str) {
    let mut fields: Vec<String> = Vec::new();
    let mut offset = 0;
    for line in message.split_inclusive('\n') {
        if line.starts_with("Received: ") {
            fields.push(line.trim_end().to_string());
        } else if line.starts_with([' ', '\t']) && !fields.is_empty() {
            let last = fields.last_mut().unwrap();
            last.push(' ');
            last.push_str(line.trim());
        } else {
            break;
        }
        offset += line.len();
    }
    (fields, &message[offset..])
}

/// One archived copy: the envelope headers mailkeep prepended (the full
/// envelope, Bcc included; bob's login; the ORIGINAL queue id), then
/// Postfix's Received header (bob authenticated, `id {qid}`), then the
/// message exactly as submitted (CRLF, dot-stuffing undone).
fn assert_copy(kind: &str, copy: &[u8], mail: &TestMail, qid: &str, reinjected: &str) {
    let (env, rest) = util::split_envelope(copy);
    let fields: Vec<(&str, &str)> = env
        .lines()
        .map(|l| l.split_once(": ").unwrap_or((l, "")))
        .collect();
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    let mut want_names = vec!["Return-Path"];
    want_names.extend(RCPTS.iter().map(|_| "X-Envelope-To"));
    want_names.extend([
        "X-Mailkeep-Login",
        "X-Mailkeep-Client",
        "X-Mailkeep-Queue-Id",
        "X-Mailkeep-Received",
    ]);
    assert_eq!(names, want_names, "{kind}: envelope header fields:\n{env}");
    let values = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.trim_end())
            .collect()
    };
    assert_eq!(
        values("Return-Path"),
        [format!("<{SENDER}>")],
        "{kind}: Return-Path must be the envelope sender:\n{env}"
    );
    // qmgr sorts a message's recipients (by domain) before it delivers
    // them, so RCPT order at the filter is not the submission's.
    let mut got_rcpts = values("X-Envelope-To");
    got_rcpts.sort_unstable();
    let want_rcpts: Vec<String> = RCPTS.iter().map(|r| format!("<{r}>")).collect();
    assert_eq!(
        got_rcpts, want_rcpts,
        "{kind}: one X-Envelope-To per envelope recipient, Bcc included:\n{env}"
    );
    assert_eq!(
        values("X-Mailkeep-Login"),
        [SASL_USER],
        "{kind}: the SASL login from Postfix's Received header, not the From: header:\n{env}"
    );
    let client = values("X-Mailkeep-Client");
    assert!(
        client[0].contains("[127.0.0.1]") && client[0].contains(&format!("helo={}", mail.helo)),
        "{kind}: X-Mailkeep-Client must name the original client (XFORWARD ADDR) and its \
         HELO {}:\n{env}",
        mail.helo
    );
    assert_eq!(
        values("X-Mailkeep-Queue-Id"),
        [qid],
        "{kind}: X-Mailkeep-Queue-Id must be the queue id Postfix gave the submission \
         (XFORWARD IDENT), not the reinjected {reinjected}:\n{env}"
    );
    assert!(
        values("X-Mailkeep-Received")[0].contains(" via filter; "),
        "{kind}: X-Mailkeep-Received:\n{env}"
    );

    let rest = String::from_utf8(rest).expect("an ASCII message");
    let (received, message) = leading_received(&rest);
    assert_eq!(
        received.len(),
        1,
        "{kind}: only Postfix's Received header of the submission precedes the message \
         (nothing of the reinjection):\n{rest}"
    );
    assert!(
        received[0].contains(&format!("(Authenticated sender: {SASL_USER})"))
            && received[0].contains(&format!(" id {qid}")),
        "{kind}: Postfix's Received header for {qid}, naming the login: {received:?}"
    );
    util::assert_same(
        message.as_bytes(),
        crlf(&mail.text).as_bytes(),
        &format!("{kind}: the archived message (after Received) against the submitted one"),
    );
    let bcc_elsewhere = env
        .lines()
        .chain(rest.lines())
        .any(|l| !l.starts_with("X-Envelope-To: ") && l.contains(BCC));
    assert!(
        !bcc_elsewhere,
        "{kind}: the Bcc recipient shows outside X-Envelope-To:\n{env}{rest}"
    );
}

/// The copy the sink received: the original envelope (Bcc included), the
/// Received headers of smtp-sink, the reinjection ({reinjected}) and the
/// submission ({qid}), then the message exactly as submitted: mailkeep
/// passed it on untouched, none of its envelope headers leaked.
fn assert_onward(tx: &SinkTransaction, mail: &TestMail, qid: &str, reinjected: &str) {
    assert_eq!(
        tx.mail_from,
        [format!("<{SENDER}>")],
        "the sink's MAIL FROM: {tx:#?}"
    );
    let mut got_rcpts = tx.rcpt_to.clone();
    got_rcpts.sort();
    let want_rcpts: Vec<String> = RCPTS.iter().map(|r| format!("<{r}>")).collect();
    assert_eq!(got_rcpts, want_rcpts, "the sink's RCPT TOs: {tx:#?}");
    let (received, message) = leading_received(&tx.message);
    let at = |id: &str| {
        received
            .iter()
            .position(|r| r.contains(&format!(" id {id}")))
    };
    assert!(
        matches!((at(reinjected), at(qid)), (Some(r), Some(o)) if r < o),
        "the sink's copy should carry the reinjection's Received ({reinjected}) above the \
         submission's ({qid}): {received:#?}"
    );
    // smtp-sink ends its dump with one empty line of its own.
    assert_eq!(
        message.strip_suffix('\n'),
        Some(mail.text.as_str()),
        "the message reached the sink altered (after its Received headers): {tx:#?}"
    );
    assert!(
        !tx.message.contains("X-Envelope-To") && !tx.message.contains("X-Mailkeep-Queue-Id"),
        "archive-only headers leaked onward: {tx:#?}"
    );
}
