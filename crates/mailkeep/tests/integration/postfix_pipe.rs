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

use serde_json::Value;
use std::collections::BTreeSet;
use std::env;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for a message to go through Postfix, mailkeep and the sink.
/// It normally takes well under a second; the slack is for a loaded CI box.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for any one helper command (postfix start/stop, swaks, python).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deferred message is watched to prove nothing leaks onward.
/// Postfix would not retry before `minimal_backoff_time` (5 min) anyway; this
/// only has to outlast a reinjection that mailkeep wrongly made regardless.
const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// How long the maillog may lag behind the queue: postlogd receives log
/// records as datagrams and writes them after the event.
const LOG_LAG: Duration = Duration::from_secs(3);

/// Postfix's name for itself here; it must differ from smtp-sink's greeting
/// name ("smtp-sink"), or Postfix's smtp client reports a mail loop.
const MYHOSTNAME: &str = "mailkeep-test.invalid";
/// The reinjection smtpd logs under this name, so its lines can be counted.
const REINJECT_SYSLOG_NAME: &str = "postfix/mailkeep-reinject";

// ---------------------------------------------------------------------------
// The tests

/// One message with To, Cc and Bcc recipients goes through the filter once:
/// archived once (all three envelope recipients in one copy), delivered
/// onward once to all three.
#[test]
fn postfix_pipe_archives_and_reinjects_once_with_full_envelope() {
    let Some(tools) =
        Tools::find_or_skip("postfix_pipe_archives_and_reinjects_once_with_full_envelope")
    else {
        return;
    };
    let pf = PrivatePostfix::start(tools, FilterOn::Smtpd);
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
    let Some(tools) =
        Tools::find_or_skip("postfix_pipe_unwritable_archive_defers_then_flush_delivers_once")
    else {
        return;
    };
    let pf = PrivatePostfix::start(tools, FilterOn::Smtpd);
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
    let Some(tools) = Tools::find_or_skip("postfix_pipe_keeps_the_null_sender") else {
        return;
    };
    let pf = PrivatePostfix::start(tools, FilterOn::MainCf);
    let mail = TestMail::new("", "pipe-null-sender");

    let qid = pf.send(&mail);
    pf.wait_delivered(&qid, &mail);
    pf.assert_delivered_once(&qid, &mail);
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
// The private Postfix instance

/// Programs the tests run, found once.
struct Tools {
    postfix: PathBuf,
    postqueue: PathBuf,
    smtp_sink: PathBuf,
    swaks: PathBuf,
    python3: PathBuf,
}

impl Tools {
    /// The tools, or `None` (after saying so) when MAILKEEP_SKIP_POSTFIX=1.
    /// Panics when the machine cannot run the test: a silently skipped
    /// end-to-end test would hide a broken feature.
    fn find_or_skip(test: &str) -> Option<Tools> {
        if env::var_os("MAILKEEP_SKIP_POSTFIX").is_some_and(|v| v == "1") {
            println!("postfix_pipe::{test}: SKIPPED (MAILKEEP_SKIP_POSTFIX=1)");
            return None;
        }
        assert_eq!(
            effective_uid(),
            Some(0),
            "postfix_pipe::{test} needs root to run a private Postfix (master, pipe(8) \
             user=nobody); run scripts/test as root, or set MAILKEEP_SKIP_POSTFIX=1 to skip it"
        );
        let need = |name: &str, package: &str| {
            find_program(name).unwrap_or_else(|| {
                panic!(
                    "postfix_pipe::{test} needs `{name}` (Debian package {package}), which is \
                     not installed; scripts/test installs it, or set MAILKEEP_SKIP_POSTFIX=1 \
                     to skip"
                )
            })
        };
        Some(Tools {
            postfix: need("postfix", "postfix"),
            postqueue: need("postqueue", "postfix"),
            smtp_sink: need("smtp-sink", "postfix"),
            swaks: need("swaks", "swaks"),
            python3: need("python3", "python3"),
        })
    }
}

/// Loopback ports for the three listeners.
struct Ports {
    /// The smtpd that mail enters, with the content filter.
    smtpd: u16,
    /// The smtpd that mailkeep reinjects into, without one.
    reinject: u16,
    /// smtp-sink, the next hop.
    sink: u16,
}

impl Ports {
    /// Three distinct free ports. They are released before Postfix binds
    /// them, so another process could take one in between; the start-up
    /// check then fails loudly rather than testing the wrong server.
    fn pick() -> Ports {
        let ls: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let port = |i: usize| ls[i].local_addr().unwrap().port();
        Ports {
            smtpd: port(0),
            reinject: port(1),
            sink: port(2),
        }
    }
}

/// Where `content_filter = mailkeep:dummy` is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterOn {
    /// On the receiving smtpd only (`-o`), as in FILTER_README.
    Smtpd,
    /// In main.cf, for every way in; the reinjection smtpd overrides it.
    MainCf,
}

/// A Postfix instance in a temporary directory, with its smtp-sink. Dropping
/// it stops both and removes the directory.
struct PrivatePostfix {
    tools: Tools,
    filter_on: FilterOn,
    ports: Ports,
    sink: Option<Child>,
    started: bool,
    // Last, so that it is removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl PrivatePostfix {
    fn start(tools: Tools, filter_on: FilterOn) -> PrivatePostfix {
        let dir = tempfile::Builder::new()
            .prefix("mailkeep-postfix-")
            .tempdir_in(traversable_tmp())
            .expect("create temp dir");
        let mut pf = PrivatePostfix {
            tools,
            filter_on,
            ports: Ports::pick(),
            sink: None,
            started: false,
            dir,
        };
        let root = pf.root().to_path_buf();
        // pipe(8) runs mailkeep as nobody, and smtp-sink drops to nobody:
        // both must traverse the tree; postfix owns data_directory.
        set_mode(&root, 0o755);
        let nobody = user_ids("nobody");
        let postfix = user_ids("postfix");
        for (sub, owner) in [
            ("etc", None),
            ("queue", None),
            ("data", Some(postfix)),
            ("bin", None),
            ("archive", Some(nobody)),
            ("sink", Some(nobody)),
        ] {
            let p = root.join(sub);
            fs::create_dir(&p).unwrap();
            set_mode(&p, 0o755);
            if let Some((uid, gid)) = owner {
                chown(&p, Some(uid), Some(gid)).unwrap();
            }
        }

        // A copy, so that nobody can run it wherever the workspace lives (CI
        // may check out under a directory that only root can enter).
        let bin = root.join("bin/mailkeep");
        fs::copy(env!("CARGO_BIN_EXE_mailkeep"), &bin).expect("copy the mailkeep binary");
        set_mode(&bin, 0o755);

        let config = root.join("mailkeep.toml");
        fs::write(
            &config,
            format!(
                "[[rule]]\n\
                 name = \"everything\"\n\
                 archive = [\"mbox:{0}/archive/all.mbox\", \"maildir:{0}/archive/md\"]\n",
                root.display()
            ),
        )
        .unwrap();
        set_mode(&config, 0o644);

        for (name, text) in [
            ("etc/main.cf", pf.main_cf()),
            ("etc/master.cf", pf.master_cf(&bin, &config)),
        ] {
            fs::write(root.join(name), text).unwrap();
            set_mode(&root.join(name), 0o644);
        }

        let sink_log = File::create(root.join("sink.log")).unwrap();
        let sink = Command::new(&pf.tools.smtp_sink)
            .args(["-u", "nobody", "-d"])
            .arg(root.join("sink/%M."))
            .arg(format!("127.0.0.1:{}", pf.ports.sink))
            .arg("64")
            .stdin(Stdio::null())
            .stdout(sink_log.try_clone().unwrap())
            .stderr(sink_log)
            .spawn()
            .expect("start smtp-sink");
        pf.sink = Some(sink);

        let etc = root.join("etc");
        let out = run(
            Command::new(&pf.tools.postfix)
                .arg("-c")
                .arg(&etc)
                .arg("start"),
            COMMAND_TIMEOUT,
        );
        pf.started = true;
        if !out.status.success() {
            // Postfix reports configuration errors to syslog, which does not
            // exist here, unless its stderr is a terminal.
            let check = try_run(
                Command::new("script").args([
                    "-qc",
                    &format!("{} -c {} check", pf.tools.postfix.display(), etc.display()),
                    "/dev/null",
                ]),
                COMMAND_TIMEOUT,
            )
            .map(|o| o.text())
            .unwrap_or_else(|e| e);
            panic!(
                "postfix start failed ({}):\n{}\npostfix check says:\n{check}",
                out.status,
                out.text()
            );
        }
        for (what, port) in [
            ("filtering smtpd", pf.ports.smtpd),
            ("reinjection smtpd", pf.ports.reinject),
            ("smtp-sink", pf.ports.sink),
        ] {
            pf.wait_for(&format!("the {what} to listen on 127.0.0.1:{port}"), |_| {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                Ok(
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        .ok()
                        .map(|_| ()),
                )
            });
        }
        pf
    }

    fn main_cf(&self) -> String {
        let root = self.root().display();
        format!(
            "# Private instance for mailkeep's postfix_pipe tests.\n\
             compatibility_level = 3.6\n\
             queue_directory = {root}/queue\n\
             data_directory = {root}/data\n\
             maillog_file = {root}/maillog\n\
             maillog_file_prefixes = {root}\n\
             myhostname = {MYHOSTNAME}\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             relayhost = [127.0.0.1]:{sink}\n\
             default_transport = smtp\n\
             relay_transport = smtp\n\
             local_transport = error:no local delivery in this test\n\
             alias_maps =\n\
             alias_database =\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject\n\
             # A deferred message stays put until the test flushes the queue.\n\
             minimal_backoff_time = 300s\n\
             queue_run_delay = 300s\n\
             {filter}",
            sink = self.ports.sink,
            filter = match self.filter_on {
                FilterOn::MainCf => "content_filter = mailkeep:dummy\n",
                FilterOn::Smtpd => "",
            },
        )
    }

    fn master_cf(&self, bin: &Path, config: &Path) -> String {
        format!(
            "# Private instance for mailkeep's postfix_pipe tests: FILTER_README's\n\
             # after-queue filter layout, with chroot off everywhere.\n\
             127.0.0.1:{smtpd} inet n - n - - smtpd\n\
             {filter}\
             mailkeep unix - n n - 10 pipe\n\
             \x20 flags=q user=nobody null_sender=\n\
             \x20 argv={bin} --config {config} pipe\n\
             \x20 --sender=${{sender}} --recipient=${{recipient}}\n\
             \x20 --login=${{sasl_username}}\n\
             \x20 --client-address=${{client_address}} --client-hostname=${{client_hostname}}\n\
             \x20 --client-helo=${{client_helo}} --queue-id=${{queue_id}}\n\
             \x20 --reinject smtp://127.0.0.1:{reinject}\n\
             127.0.0.1:{reinject} inet n - n - 10 smtpd\n\
             \x20 -o syslog_name={REINJECT_SYSLOG_NAME}\n\
             \x20 -o content_filter=\n\
             \x20 -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters\n\
             \x20 -o smtpd_helo_restrictions=\n\
             \x20 -o smtpd_client_restrictions=\n\
             \x20 -o smtpd_sender_restrictions=\n\
             \x20 -o smtpd_relay_restrictions=\n\
             \x20 -o smtpd_recipient_restrictions=permit_mynetworks,reject\n\
             \x20 -o mynetworks=127.0.0.0/8\n\
             \x20 -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n\
             pickup    unix  n       -       n       60      1       pickup\n\
             cleanup   unix  n       -       n       -       0       cleanup\n\
             qmgr      unix  n       -       n       300     1       qmgr\n\
             rewrite   unix  -       -       n       -       -       trivial-rewrite\n\
             bounce    unix  -       -       n       -       0       bounce\n\
             defer     unix  -       -       n       -       0       bounce\n\
             trace     unix  -       -       n       -       0       bounce\n\
             verify    unix  -       -       n       -       1       verify\n\
             flush     unix  n       -       n       1000?   0       flush\n\
             proxymap  unix  -       -       n       -       -       proxymap\n\
             smtp      unix  -       -       n       -       -       smtp\n\
             relay     unix  -       -       n       -       -       smtp\n\
             showq     unix  n       -       n       -       -       showq\n\
             error     unix  -       -       n       -       -       error\n\
             retry     unix  -       -       n       -       -       error\n\
             discard   unix  -       -       n       -       -       discard\n\
             anvil     unix  -       -       n       -       1       anvil\n\
             scache    unix  -       -       n       -       1       scache\n\
             postlog   unix-dgram n  -       n       -       1       postlogd\n",
            smtpd = self.ports.smtpd,
            filter = match self.filter_on {
                FilterOn::Smtpd => "  -o content_filter=mailkeep:dummy\n",
                FilterOn::MainCf => "",
            },
            reinject = self.ports.reinject,
            bin = bin.display(),
            config = config.display(),
        )
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn maillog(&self) -> String {
        fs::read_to_string(self.path("maillog")).unwrap_or_default()
    }

    /// Submits `mail` with swaks; returns the queue id Postfix assigned.
    fn send(&self, mail: &TestMail) -> String {
        let data = self.path("message.eml");
        fs::write(&data, mail.rfc822()).unwrap();
        let from = if mail.sender.is_empty() {
            "<>".to_string()
        } else {
            mail.sender.clone()
        };
        let out = run(
            Command::new(&self.tools.swaks)
                .args(["--server", "127.0.0.1", "--port"])
                .arg(self.ports.smtpd.to_string())
                .args(["--helo", &mail.helo, "--from", &from, "--to"])
                .arg(mail.rcpts.join(","))
                .args(["--timeout", "20", "--data"])
                .arg(&data),
            COMMAND_TIMEOUT,
        );
        let text = out.text();
        assert!(
            out.status.success(),
            "swaks failed ({}):\n{text}",
            out.status
        );
        text.lines()
            .find_map(|l| {
                l.split_once("queued as ")
                    .map(|(_, q)| q.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no queue id in swaks' transcript:\n{text}"))
    }

    /// Polls `check` until it yields a value, at most DELIVERY_TIMEOUT; an
    /// error from `check` means the awaited state can no longer come.
    fn wait_for<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<Option<T>, String>,
    ) -> T {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            match check(self) {
                Ok(Some(v)) => return v,
                Ok(None) => {}
                Err(e) => panic!(
                    "while waiting for {what}: {e}; maillog:\n{}",
                    self.maillog()
                ),
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {DELIVERY_TIMEOUT:?} waiting for {what}; maillog:\n{}",
                self.maillog()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until Postfix has logged mailkeep's success and the relay to
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

    /// Delivery attempts Postfix logged, filtered.
    fn deliveries(&self, keep: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
        self.maillog()
            .lines()
            .filter_map(Delivery::parse)
            .filter(|d| keep(d))
            .collect()
    }

    fn is_sink_relay(&self, relay: &str) -> bool {
        relay == format!("127.0.0.1[127.0.0.1]:{}", self.ports.sink)
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

    fn postqueue(&self, flag: &str) -> String {
        let out = run(
            Command::new(&self.tools.postqueue)
                .arg("-c")
                .arg(self.path("etc"))
                .arg(flag),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "postqueue {flag} failed: {}",
            out.text()
        );
        out.text()
    }

    fn queue_is_empty(&self) -> bool {
        self.postqueue("-p").contains("Mail queue is empty")
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

    /// Every transaction smtp-sink dumped.
    fn sink_transactions(&self) -> Vec<SinkTransaction> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.path("sink"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| SinkTransaction::parse(&String::from_utf8_lossy(&fs::read(p).unwrap())))
            .collect()
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

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- postfix_pipe: {} maillog ---\n{}--- smtp-sink log ---\n{}",
                self.root().display(),
                self.maillog(),
                fs::read_to_string(self.path("sink.log")).unwrap_or_default()
            );
        }
        if self.started {
            let master_pid = fs::read_to_string(self.path("queue/pid/master.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            let stop = try_run(
                Command::new(&self.tools.postfix)
                    .arg("-c")
                    .arg(self.path("etc"))
                    .arg("stop"),
                COMMAND_TIMEOUT,
            );
            if let Err(e) = &stop {
                eprintln!("postfix_pipe: postfix stop: {e}");
            }
            // `postfix stop` returns before master has exited; removing the
            // directory under a live master would leave it logging errors.
            if let Some(pid) = master_pid {
                let deadline = Instant::now() + Duration::from_secs(10);
                while is_running(pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(50));
                }
                if is_running(pid) {
                    eprintln!("postfix_pipe: master {pid} outlived postfix stop; killing it");
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// What the tests read: Postfix's log, smtp-sink's dumps, Python's view of
// the archive

/// One `to=<…>, relay=…, status=…` line of the maillog.
#[derive(Debug, Clone)]
struct Delivery {
    qid: String,
    rcpt: String,
    relay: String,
    status: String,
    line: String,
}

impl Delivery {
    fn parse(line: &str) -> Option<Delivery> {
        let (before, after) = line.split_once(": to=<")?;
        let qid = before.rsplit(' ').next()?.to_string();
        let (rcpt, rest) = after.split_once('>')?;
        let relay = rest.split_once("relay=")?.1.split(',').next()?.to_string();
        let status = rest
            .split_once("status=")?
            .1
            .split_whitespace()
            .next()?
            .to_string();
        Some(Delivery {
            qid,
            rcpt: rcpt.to_string(),
            relay,
            status,
            line: line.to_string(),
        })
    }
}

fn rcpt_set(ds: &[Delivery]) -> BTreeSet<String> {
    ds.iter().map(|d| d.rcpt.clone()).collect()
}

/// One smtp-sink dump: its `X-Mail-Args`/`X-Rcpt-Args` envelope lines, then
/// the message as received.
#[derive(Debug)]
struct SinkTransaction {
    mail_from: Vec<String>,
    rcpt_to: Vec<String>,
    message: String,
}

impl SinkTransaction {
    fn parse(text: &str) -> SinkTransaction {
        let mut mail_from = Vec::new();
        let mut rcpt_to = Vec::new();
        let mut offset = 0;
        // smtp-sink's own lines all start with "X-"; the message it dumps
        // starts with the Received header smtp-sink adds.
        for line in text.split_inclusive('\n') {
            if !line.starts_with("X-") {
                break;
            }
            offset += line.len();
            let first_arg = |v: &str| v.split_whitespace().next().unwrap_or("").to_string();
            if let Some(v) = line.strip_prefix("X-Mail-Args:") {
                mail_from.push(first_arg(v));
            } else if let Some(v) = line.strip_prefix("X-Rcpt-Args:") {
                rcpt_to.push(first_arg(v));
            }
        }
        SinkTransaction {
            mail_from,
            rcpt_to,
            message: text[offset..].replace("\r\n", "\n"),
        }
    }
}

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

fn trim_end_newlines(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

// ---------------------------------------------------------------------------
// Small process and system helpers

/// A finished command, stdout and stderr kept apart.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Finished {
    fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Runs `cmd` to completion within `timeout`, killing it past that. Output
/// goes to anonymous files, not pipes: `postfix start` leaves a daemon that
/// could hold a pipe open forever.
fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Finished, String> {
    let desc = format!("{cmd:?}");
    let mut out = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut err = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{desc} still running after {timeout:?}; killed it"));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &mut File| {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut v))
            .map(|_| v)
            .map_err(|e| e.to_string())
    };
    Ok(Finished {
        status,
        stdout: read(&mut out)?,
        stderr: read(&mut err)?,
    })
}

fn run(cmd: &mut Command, timeout: Duration) -> Finished {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// The effective uid, from /proc/self/status.
fn effective_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether a process exists and has not exited: a zombie whose parent does
/// not reap it (PID 1 in some containers) counts as gone.
fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    })
}

/// A program on PATH, or in the sbin directories a PATH may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// (uid, gid) of a system user, via getent so that NSS is honoured.
fn user_ids(user: &str) -> (u32, u32) {
    let out = run(
        Command::new("getent").args(["passwd", user]),
        COMMAND_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = text.trim().split(':').collect();
    assert!(
        out.status.success() && f.len() >= 4,
        "no user {user} (getent passwd {user}: {text:?})"
    );
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// The temp directory, if every ancestor lets others through (pipe(8) runs
/// mailkeep as nobody); /tmp otherwise.
fn traversable_tmp() -> PathBuf {
    let tmp = env::temp_dir();
    let ok = tmp.ancestors().all(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    });
    if ok {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}
