//! A real private Postfix (3.7, Debian's) for the end-to-end tests, in one
//! temporary directory: its own config_directory, queue and maillog,
//! listeners on 127.0.0.1 only, started by the test and stopped on drop.
//!
//! Two layouts ([`Layout`]):
//! - [`Layout::Pipe`]: FILTER_README's after-queue content filter, mail
//!   entering an smtpd with `content_filter=mailkeep:dummy`, the `mailkeep`
//!   pipe(8) service reinjecting into a second smtpd without a filter
//!   (`postfix_pipe`);
//! - [`Layout::Milter`]: one smtpd with `smtpd_milters =
//!   inet:127.0.0.1:PORT` (protocol 6, `milter_default_action = tempfail`);
//!   the test runs `mailkeep serve` on [`Ports::milter`] itself
//!   (`postfix_milter`);
//! - [`Layout::Filter`]: `mailkeep postfix-snippet filter`'s after-queue
//!   layout, `content_filter = mailkeep:[127.0.0.1]:PORT` in main.cf, the
//!   `mailkeep` smtp(8) transport sending XFORWARD, and a reinjection smtpd
//!   on [`Ports::reinject`] that `mailkeep serve`'s `[filter]` (run by the
//!   test on [`Ports::filter`]) relays to (`postfix_filter`).
//!
//! Either way Postfix relays what it accepts to `smtp-sink`, which dumps
//! each transaction to a file. With [`Setup::sasl`] a private Dovecot
//! ([`Dovecot`]) serves SASL to smtpd over 127.0.0.1, and relaying needs a
//! login ([`SASL_USER`] / [`SASL_PASSWORD`]).
//!
//! These tests need root (Postfix's master; pipe(8)'s `user=`), `postfix`,
//! `smtp-sink`, `swaks`, `python3`, and `dovecot` for SASL. They fail,
//! saying so, when one is missing (scripts/test installs them), unless
//! `MAILKEEP_SKIP_POSTFIX=1`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::env;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for a message to go through Postfix, mailkeep and the sink.
/// It normally takes well under a second; the slack is for a loaded CI box.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for any one helper command (postfix start/stop, swaks, python).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the maillog may lag behind the queue: postlogd receives log
/// records as datagrams and writes them after the event.
pub const LOG_LAG: Duration = Duration::from_secs(3);

/// Postfix's name for itself here; it must differ from smtp-sink's greeting
/// name ("smtp-sink"), or Postfix's smtp client reports a mail loop.
pub const MYHOSTNAME: &str = "mailkeep-test.invalid";
/// The pipe layout's reinjection smtpd logs under this name, so its lines
/// can be counted.
pub const REINJECT_SYSLOG_NAME: &str = "postfix/mailkeep-reinject";
/// The filter layout's `mailkeep` smtp(8) transport (to `mailkeep serve`)
/// logs under this name: a refused connection logs `relay=none`, so only
/// the name tells its deliveries apart.
pub const FILTER_SYSLOG_NAME: &str = "postfix/mailkeep";

/// The one SASL account the private Dovecot knows.
pub const SASL_USER: &str = "bob";
pub const SASL_PASSWORD: &str = "b0b's s3cret";

// ---------------------------------------------------------------------------
// Tools

/// Programs the tests run, found once.
pub struct Tools {
    pub postfix: PathBuf,
    pub postqueue: PathBuf,
    pub smtp_sink: PathBuf,
    pub swaks: PathBuf,
    pub python3: PathBuf,
    /// Only looked for when a test needs SASL.
    pub dovecot: Option<PathBuf>,
}

impl Tools {
    /// The tools, or `None` (after saying so) when MAILKEEP_SKIP_POSTFIX=1.
    /// `test` is the test's path (`postfix_pipe::name`); `sasl` asks for
    /// Dovecot too. Panics when the machine cannot run the test: a silently
    /// skipped end-to-end test would hide a broken feature.
    pub fn find_or_skip(test: &str, sasl: bool) -> Option<Tools> {
        if env::var_os("MAILKEEP_SKIP_POSTFIX").is_some_and(|v| v == "1") {
            println!("{test}: SKIPPED (MAILKEEP_SKIP_POSTFIX=1)");
            return None;
        }
        assert_eq!(
            effective_uid(),
            Some(0),
            "{test} needs root to run a private Postfix (master, pipe(8) user=nobody); \
             run scripts/test as root, or set MAILKEEP_SKIP_POSTFIX=1 to skip it"
        );
        let need = |name: &str, package: &str| {
            find_program(name).unwrap_or_else(|| {
                panic!(
                    "{test} needs `{name}` (Debian package {package}), which is not \
                     installed; scripts/test installs it, or set MAILKEEP_SKIP_POSTFIX=1 \
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
            dovecot: sasl.then(|| need("dovecot", "dovecot-core")),
        })
    }
}

// ---------------------------------------------------------------------------
// Layout

/// Loopback ports for the listeners. All are picked whatever the layout;
/// an unused one costs nothing.
pub struct Ports {
    /// The smtpd that mail enters (with the content filter, or the milter).
    pub smtpd: u16,
    /// Pipe layout: the smtpd that mailkeep reinjects into, without filter.
    pub reinject: u16,
    /// smtp-sink, the next hop.
    pub sink: u16,
    /// Milter layout: where smtpd expects `mailkeep serve`.
    pub milter: u16,
    /// Dovecot's auth service, when SASL is on.
    pub sasl: u16,
    /// Filter layout: where the `mailkeep` smtp(8) transport expects
    /// `mailkeep serve`'s SMTP filter.
    pub filter: u16,
}

impl Ports {
    /// Distinct free ports. They are released before their servers bind
    /// them, so another process could take one in between; the start-up
    /// check then fails loudly rather than testing the wrong server.
    fn pick() -> Ports {
        let ls: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let port = |i: usize| ls[i].local_addr().unwrap().port();
        Ports {
            smtpd: port(0),
            reinject: port(1),
            sink: port(2),
            milter: port(3),
            sasl: port(4),
            filter: port(5),
        }
    }
}

/// Where `content_filter = mailkeep:dummy` is set (pipe layout).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FilterOn {
    /// On the receiving smtpd only (`-o`), as in FILTER_README.
    Smtpd,
    /// In main.cf, for every way in; the reinjection smtpd overrides it.
    MainCf,
}

/// How mailkeep sits in the mail flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// `mailkeep pipe` as a pipe(8) after-queue content filter that
    /// reinjects; the harness writes its configuration (`mailkeep.toml`:
    /// everything to `archive/all.mbox` and the Maildir `archive/md`).
    Pipe(FilterOn),
    /// `smtpd_milters = inet:127.0.0.1:{Ports::milter}`; the test runs the
    /// milter.
    Milter,
    /// `content_filter = mailkeep:[127.0.0.1]:{Ports::filter}` (main.cf),
    /// the `mailkeep` smtp(8) transport with XFORWARD, and the reinjection
    /// smtpd on [`Ports::reinject`], as `mailkeep postfix-snippet filter`
    /// prints them (plus `syslog_name`s); the test runs `mailkeep serve`.
    /// `reinject_eod_policy`: a policy service on 127.0.0.1:PORT that the
    /// reinjection smtpd asks at end of data (so a test can make it
    /// refuse the final dot).
    Filter { reinject_eod_policy: Option<u16> },
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub layout: Layout,
    /// Dovecot SASL on the receiving smtpd, and relaying only for clients
    /// that logged in.
    pub sasl: bool,
}

// ---------------------------------------------------------------------------
// The private Postfix instance

/// A Postfix instance in a temporary directory, with its smtp-sink and, if
/// asked, its Dovecot. Dropping it stops them all and removes the directory.
pub struct PrivatePostfix {
    pub tools: Tools,
    pub setup: Setup,
    pub ports: Ports,
    sink: Option<Child>,
    dovecot: Option<Dovecot>,
    started: bool,
    // Last, so that it is removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl PrivatePostfix {
    pub fn start(tools: Tools, setup: Setup) -> PrivatePostfix {
        let dir = tempfile::Builder::new()
            .prefix("mailkeep-postfix-")
            .tempdir_in(traversable_tmp())
            .expect("create temp dir");
        let mut pf = PrivatePostfix {
            tools,
            setup,
            ports: Ports::pick(),
            sink: None,
            dovecot: None,
            started: false,
            dir,
        };
        let root = pf.root().to_path_buf();
        // pipe(8) runs mailkeep as nobody, smtp-sink drops to nobody, and
        // Dovecot's auth process runs as dovecot: all must traverse the
        // tree; postfix owns data_directory.
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

        let pipe_paths = match setup.layout {
            Layout::Pipe(_) => Some(pf.write_pipe_mailkeep()),
            Layout::Milter | Layout::Filter { .. } => None,
        };
        for (name, text) in [
            ("etc/main.cf", pf.main_cf()),
            ("etc/master.cf", pf.master_cf(pipe_paths.as_ref())),
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

        if setup.sasl {
            let dovecot = pf
                .tools
                .dovecot
                .clone()
                .expect("Tools::find_or_skip(_, true) looks for dovecot");
            pf.dovecot = Some(Dovecot::start(
                &dovecot,
                &root.join("dovecot"),
                pf.ports.sasl,
            ));
        }

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
        let mut listeners = vec![("receiving smtpd", pf.ports.smtpd)];
        if let Layout::Pipe(_) | Layout::Filter { .. } = setup.layout {
            listeners.push(("reinjection smtpd", pf.ports.reinject));
        }
        listeners.push(("smtp-sink", pf.ports.sink));
        for (what, port) in listeners {
            pf.wait_for(&format!("the {what} to listen on 127.0.0.1:{port}"), |_| {
                Ok(port_open(port).then_some(()))
            });
        }
        pf
    }

    /// Pipe layout: a copy of the binary that nobody can run and its
    /// configuration. Returns their paths.
    fn write_pipe_mailkeep(&self) -> (PathBuf, PathBuf) {
        let root = self.root();
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
        (bin, config)
    }

    fn main_cf(&self) -> String {
        let root = self.root().display();
        let mut cf = format!(
            "# Private instance for mailkeep's Postfix tests ({layout:?}).\n\
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
             alias_database =\n",
            layout = self.setup.layout,
            sink = self.ports.sink,
        );
        if self.setup.sasl {
            cf.push_str(&format!(
                "# Relaying only for clients that logged in (Dovecot SASL).\n\
                 smtpd_sasl_auth_enable = yes\n\
                 smtpd_sasl_type = dovecot\n\
                 smtpd_sasl_path = inet:127.0.0.1:{sasl}\n\
                 smtpd_sasl_security_options = noanonymous\n\
                 smtpd_tls_security_level = none\n\
                 smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
                 smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n",
                sasl = self.ports.sasl
            ));
        } else {
            cf.push_str(
                "smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 smtpd_recipient_restrictions = permit_mynetworks, reject\n",
            );
        }
        cf.push_str(
            "# A deferred message stays put until the test flushes the queue.\n\
             minimal_backoff_time = 300s\n\
             queue_run_delay = 300s\n",
        );
        match self.setup.layout {
            Layout::Pipe(FilterOn::MainCf) => cf.push_str("content_filter = mailkeep:dummy\n"),
            Layout::Pipe(FilterOn::Smtpd) => {}
            Layout::Milter => cf.push_str(&format!(
                "# mailkeep serve; no milter_*_macros: it asks with SETSYMLIST.\n\
                 smtpd_milters = inet:127.0.0.1:{milter}\n\
                 non_smtpd_milters =\n\
                 milter_protocol = 6\n\
                 milter_default_action = tempfail\n\
                 # Headers reach the milter as the client sent them.\n\
                 local_header_rewrite_clients =\n",
                milter = self.ports.milter
            )),
            Layout::Filter { .. } => cf.push_str(&format!(
                "# mailkeep serve's SMTP filter, after the queue.\n\
                 content_filter = mailkeep:[127.0.0.1]:{filter}\n\
                 # \"(Authenticated sender: LOGIN)\" in Received: mailkeep's login.\n\
                 smtpd_sasl_authenticated_header = yes\n",
                filter = self.ports.filter
            )),
        }
        cf
    }

    /// `pipe`: the mailkeep binary and configuration (pipe layout only).
    fn master_cf(&self, pipe: Option<&(PathBuf, PathBuf)>) -> String {
        let smtpd = self.ports.smtpd;
        let front = match (self.setup.layout, pipe) {
            (Layout::Pipe(filter_on), Some((bin, config))) => format!(
                "# FILTER_README's after-queue filter layout, with chroot off everywhere.\n\
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
                 \x20 -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n",
                filter = match filter_on {
                    FilterOn::Smtpd => "  -o content_filter=mailkeep:dummy\n",
                    FilterOn::MainCf => "",
                },
                reinject = self.ports.reinject,
                bin = bin.display(),
                config = config.display(),
            ),
            (Layout::Milter, _) => format!(
                "# One smtpd with the milter (main.cf), chroot off everywhere.\n\
                 127.0.0.1:{smtpd} inet n - n - - smtpd\n"
            ),
            (Layout::Filter { reinject_eod_policy }, _) => format!(
                "# `mailkeep postfix-snippet filter` (a), chroot off everywhere.\n\
                 127.0.0.1:{smtpd} inet n - n - - smtpd\n\
                 mailkeep unix - - n - 10 smtp\n\
                 \x20 -o syslog_name={FILTER_SYSLOG_NAME}\n\
                 \x20 -o smtp_send_xforward_command=yes\n\
                 \x20 -o disable_mime_output_conversion=yes\n\
                 \x20 -o smtp_generic_maps=\n\
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
                 {eod}",
                reinject = self.ports.reinject,
                eod = match reinject_eod_policy {
                    Some(port) => format!(
                        "  -o smtpd_end_of_data_restrictions=check_policy_service,inet:127.0.0.1:{port}\n"
                    ),
                    None => String::new(),
                },
            ),
            (Layout::Pipe(_), None) => unreachable!("the pipe layout writes mailkeep's files"),
        };
        format!(
            "# Private instance for mailkeep's Postfix tests.\n\
             {front}\
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
             postlog   unix-dgram n  -       n       -       1       postlogd\n"
        )
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn maillog(&self) -> String {
        fs::read_to_string(self.path("maillog")).unwrap_or_default()
    }

    /// Runs swaks against the receiving smtpd; the caller judges the outcome.
    pub fn swaks(&self, s: &Submission) -> Finished {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let data = self.path(&format!(
            "submission-{}.eml",
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&data, &s.message).unwrap();
        let from = if s.from.is_empty() {
            "<>".to_string()
        } else {
            s.from.clone()
        };
        let mut cmd = Command::new(&self.tools.swaks);
        cmd.args(["--server", "127.0.0.1", "--port"])
            .arg(self.ports.smtpd.to_string())
            .args(["--helo", &s.helo, "--from", &from, "--to"])
            .arg(s.to.join(","));
        if let Some((user, password, mechanism)) = &s.auth {
            cmd.args([
                "--auth",
                mechanism,
                "--auth-user",
                user,
                "--auth-password",
                password,
            ]);
        }
        cmd.args(&s.extra);
        cmd.args(["--timeout", "20", "--data"]).arg(&data);
        run(&mut cmd, COMMAND_TIMEOUT)
    }

    /// Polls `check` until it yields a value, at most DELIVERY_TIMEOUT; an
    /// error from `check` means the awaited state can no longer come.
    pub fn wait_for<T>(
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

    /// Waits until Postfix has relayed `qid` to the sink for each of
    /// `rcpts`, removed it, and the queue is empty. Fails as soon as a
    /// delivery of it is logged with another status.
    pub fn wait_relayed_to_sink(&self, qid: &str, rcpts: &[&str]) {
        let want: BTreeSet<String> = rcpts.iter().map(|r| r.to_string()).collect();
        self.wait_for(&format!("{qid} to reach the sink"), |pf| {
            let mine = pf.deliveries(|d| d.qid == qid);
            if let Some(d) = mine.iter().find(|d| d.status != "sent") {
                return Err(format!("Postfix logged: {}", d.line));
            }
            let sunk: Vec<Delivery> = mine
                .into_iter()
                .filter(|d| pf.is_sink_relay(&d.relay))
                .collect();
            let done = rcpt_set(&sunk) == want
                && pf.maillog().contains(&format!("{qid}: removed"))
                && pf.queue_is_empty();
            Ok(done.then_some(()))
        });
    }

    /// Delivery attempts Postfix logged, filtered.
    pub fn deliveries(&self, keep: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
        self.maillog()
            .lines()
            .filter_map(Delivery::parse)
            .filter(|d| keep(d))
            .collect()
    }

    pub fn is_sink_relay(&self, relay: &str) -> bool {
        relay == format!("127.0.0.1[127.0.0.1]:{}", self.ports.sink)
    }

    /// The maillog's `QID: client=…` lines of the receiving smtpd, as
    /// (queue id, rest of the line after `client=`).
    pub fn smtpd_clients(&self) -> Vec<(String, String)> {
        self.maillog()
            .lines()
            .filter(|l| l.contains("postfix/smtpd[") && l.contains(": client="))
            .filter_map(|l| {
                let (before, after) = l.split_once(": client=")?;
                Some((before.rsplit(' ').next()?.to_string(), after.to_string()))
            })
            .collect()
    }

    pub fn postqueue(&self, flag: &str) -> String {
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

    pub fn queue_is_empty(&self) -> bool {
        self.postqueue("-p").contains("Mail queue is empty")
    }

    /// Every transaction smtp-sink dumped.
    pub fn sink_transactions(&self) -> Vec<SinkTransaction> {
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
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- postfix: {} maillog ---\n{}--- smtp-sink log ---\n{}",
                self.root().display(),
                self.maillog(),
                fs::read_to_string(self.path("sink.log")).unwrap_or_default()
            );
            if let Some(d) = &self.dovecot {
                eprintln!("--- dovecot log ---\n{}", d.log());
            }
        }
        if self.started {
            let master_pid = read_pid(&self.path("queue/pid/master.pid"));
            let stop = try_run(
                Command::new(&self.tools.postfix)
                    .arg("-c")
                    .arg(self.path("etc"))
                    .arg("stop"),
                COMMAND_TIMEOUT,
            );
            if let Err(e) = &stop {
                eprintln!("postfix: postfix stop: {e}");
            }
            // `postfix stop` returns before master has exited; removing the
            // directory under a live master would leave it logging errors.
            if let Some(pid) = master_pid {
                stop_pid(pid, "postfix master", None);
            }
        }
        // After Postfix, which would otherwise log SASL errors meanwhile.
        drop(self.dovecot.take());
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
    }
}

/// One swaks run: envelope, message text (LF line ends; swaks sends CRLF),
/// optionally a login (user, password, mechanism), and any further swaks
/// arguments.
pub struct Submission {
    pub helo: String,
    pub from: String,
    pub to: Vec<String>,
    pub message: String,
    pub auth: Option<(String, String, String)>,
    pub extra: Vec<String>,
}

/// The queue id in an SMTP transcript's `250 2.0.0 Ok: queued as QID`.
pub fn queued_as(transcript: &str) -> Option<String> {
    transcript.lines().find_map(|l| {
        l.split_once("queued as ")
            .map(|(_, q)| q.trim().to_string())
    })
}

// ---------------------------------------------------------------------------
// Dovecot, for SASL only

/// A private Dovecot that does nothing but SASL authentication, for
/// Postfix's `smtpd_sasl_type = dovecot` over `inet:127.0.0.1:PORT`.
/// Dropping it stops it.
pub struct Dovecot {
    dir: PathBuf,
    master_pid: Option<u32>,
}

impl Dovecot {
    /// Writes `dir/dovecot.conf` (one user, [`SASL_USER`], with a
    /// `{PLAIN}` password) and starts Dovecot; returns once the auth
    /// listener on 127.0.0.1:`port` accepts connections.
    pub fn start(dovecot: &Path, dir: &Path, port: u16) -> Dovecot {
        let service = format!(
            "protocols =\n\
             service auth {{\n\
             \x20 inet_listener {{\n\
             \x20   address = 127.0.0.1\n\
             \x20   port = {port}\n\
             \x20 }}\n\
             }}\n"
        );
        Dovecot::start_with(dovecot, dir, port, &[(SASL_USER, SASL_PASSWORD)], &service)
    }

    /// A Dovecot that answers IMAP logins on 127.0.0.1:`port` for `users`
    /// (name, password); no mail is served (every mailbox is empty).
    pub fn start_imap(dovecot: &Path, dir: &Path, port: u16, users: &[(&str, &str)]) -> Dovecot {
        let mail = dir.join("mail");
        fs::create_dir_all(&mail).unwrap();
        set_mode(&mail, 0o1777);
        let service = format!(
            "protocols = imap\n\
             mail_location = maildir:{m}/%u\n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n\
             \x20   address = 127.0.0.1\n\
             \x20   port = {port}\n\
             \x20 }}\n\
             \x20 inet_listener imaps {{\n\
             \x20   port = 0\n\
             \x20 }}\n\
             }}\n",
            m = mail.display()
        );
        Dovecot::start_with(dovecot, dir, port, users, &service)
    }

    fn start_with(
        dovecot: &Path,
        dir: &Path,
        port: u16,
        users: &[(&str, &str)],
        service: &str,
    ) -> Dovecot {
        fs::create_dir_all(dir).unwrap();
        set_mode(dir, 0o755);
        let conf = dir.join("dovecot.conf");
        let passwd = dir.join("passwd");
        let lines: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        fs::write(&passwd, lines).unwrap();
        set_mode(&passwd, 0o644);
        fs::write(
            &conf,
            format!(
                "# Private Dovecot for mailkeep's tests.\n\
                 base_dir = {d}/run\n\
                 state_dir = {d}/state\n\
                 instance_name = mailkeep-test-{port}\n\
                 listen = 127.0.0.1\n\
                 log_path = {d}/dovecot.log\n\
                 ssl = no\n\
                 disable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\n\
                 auth_verbose = yes\n\
                 passdb {{\n\
                 \x20 driver = passwd-file\n\
                 \x20 args = scheme=PLAIN username_format=%u {passwd}\n\
                 }}\n\
                 userdb {{\n\
                 \x20 driver = static\n\
                 \x20 args = uid=nobody gid=nogroup home=/nonexistent\n\
                 }}\n\
                 {service}",
                d = dir.display(),
                passwd = passwd.display(),
            ),
        )
        .unwrap();
        set_mode(&conf, 0o644);
        let out = run(Command::new(dovecot).arg("-c").arg(&conf), COMMAND_TIMEOUT);
        let mut d = Dovecot {
            dir: dir.to_path_buf(),
            master_pid: None,
        };
        assert!(
            out.status.success(),
            "dovecot -c {} failed ({}):\n{}\nlog:\n{}",
            conf.display(),
            out.status,
            out.text(),
            d.log()
        );
        // The master may write its pid file only after `dovecot` returned,
        // and even after the auth listener accepts connections.
        let pid_file = dir.join("run/master.pid");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            d.master_pid = read_pid(&pid_file).filter(|pid| is_running(*pid));
            if d.master_pid.is_some() && port_open(port) {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "Dovecot's auth service is not listening on 127.0.0.1:{port} (master pid \
                 {:?}) after {COMMAND_TIMEOUT:?}; log:\n{}",
                d.master_pid,
                d.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // What `doveadm stop` does, without its wait of a second or two:
        // SIGTERM to the master, which takes its children down.
        let pid = self
            .master_pid
            .or_else(|| read_pid(&self.dir.join("run/master.pid")));
        if let Some(pid) = pid {
            stop_pid(pid, "dovecot master", Some("-TERM"));
        }
    }
}

// ---------------------------------------------------------------------------
// What the tests read: Postfix's log and smtp-sink's dumps

/// One `to=<…>, relay=…, status=…` line of the maillog.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub qid: String,
    pub rcpt: String,
    pub relay: String,
    pub status: String,
    pub line: String,
}

impl Delivery {
    pub fn parse(line: &str) -> Option<Delivery> {
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

pub fn rcpt_set(ds: &[Delivery]) -> BTreeSet<String> {
    ds.iter().map(|d| d.rcpt.clone()).collect()
}

/// One smtp-sink dump: its `X-Mail-Args`/`X-Rcpt-Args` envelope lines, then
/// the message as received.
#[derive(Debug)]
pub struct SinkTransaction {
    pub mail_from: Vec<String>,
    pub rcpt_to: Vec<String>,
    pub message: String,
}

impl SinkTransaction {
    pub fn parse(text: &str) -> SinkTransaction {
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

pub fn trim_end_newlines(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

// ---------------------------------------------------------------------------
// Small process and system helpers

/// A finished command, stdout and stderr kept apart.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn text(&self) -> String {
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
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Finished, String> {
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

pub fn run(cmd: &mut Command, timeout: Duration) -> Finished {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
}

/// Waits (10 s at most) for a daemon to exit, after sending it `signal`
/// first if given; SIGKILL if it outlives that.
fn stop_pid(pid: u32, what: &str, signal: Option<&str>) {
    if let Some(sig) = signal {
        let _ = Command::new("kill")
            .args([sig, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_running(pid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    if is_running(pid) {
        eprintln!("postfix: {what} {pid} is still running; killing it");
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// The effective uid, from /proc/self/status.
pub fn effective_uid() -> Option<u32> {
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
pub fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    })
}

/// A program on PATH, or in the sbin directories a PATH may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
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
pub fn user_ids(user: &str) -> (u32, u32) {
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
pub fn traversable_tmp() -> PathBuf {
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

pub fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

// ---------------------------------------------------------------------------
// mailkeep serve, for the milter and filter suites

/// A `mailkeep serve` with the milter on the port Postfix expects, logging
/// into `mailkeep.log` in the instance's directory. Killed on drop.
pub struct Mailkeep {
    child: Option<Child>,
    log: PathBuf,
}

impl Mailkeep {
    /// Writes the configuration and starts `mailkeep serve`; returns
    /// when it says it listens.
    /// Starts `mailkeep serve` with `config` (a written file) and returns
    /// when its output contains `ready`.
    pub fn start(pf: &PrivatePostfix, config: &Path, ready: &str) -> Mailkeep {
        let log = pf.path("mailkeep.log");
        let offset = fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = crate::util::mailkeep(config)
            .arg("serve")
            .env("MAILKEEP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start mailkeep serve");
        let mut mk = Mailkeep {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while !mk.log_text()[offset..].contains(ready) {
            if let Some(status) = mk.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mailkeep serve exited ({status}) before listening:\n{}",
                    mk.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mailkeep serve did not say {ready:?} within {COMMAND_TIMEOUT:?}:\n{}",
                mk.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        mk
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; it must exit 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("mailkeep is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mailkeep serve still running {COMMAND_TIMEOUT:?} after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.code(),
            Some(0),
            "mailkeep serve after SIGTERM: {status}\n{}",
            self.log_text()
        );
    }
}

impl Drop for Mailkeep {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- mailkeep serve log ---\n{}", self.log_text());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
