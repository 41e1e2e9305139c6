//! `mailkeep serve`'s SMTP content filter (`[filter]`), spoken to over raw
//! SMTP: proxy mode in front of a fake relay written here (and Postfix's
//! `smtp-sink` for a 30 MB message), and receiver mode on its own. Archives
//! are read back with Python's `mailbox` module.

use crate::smtp::*;
use crate::util::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Polls `f` until it returns `Some`, or panics after [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// mailkeep serve

/// Starts serve with `[filter] listen` on a free port, `dedup_dir` in
/// `dir`, the `filter` lines and the `rules`.
fn start_filter(dir: &Path, filter: &str, rules: &str, unprivileged: bool) -> Serve {
    let dedup = dir.join("dedup");
    if unprivileged && is_root() {
        // serve refuses a ledger it cannot create or does not own.
        std::fs::create_dir_all(&dedup).unwrap();
        std::os::unix::fs::chown(&dedup, Some(65534), Some(65534)).unwrap();
    }
    Serve::start(
        dir,
        |port| {
            format!(
                "{}[filter]\nlisten = \"127.0.0.1:{port}\"\ndedup_dir = \"{}\"\n{filter}\n{rules}",
                spool_section(dir, unprivileged),
                dedup.display()
            )
        },
        &[
            "SMTP filter listening on",
            "SMTP archive receiver listening on",
        ],
        unprivileged,
    )
}

/// The proxy-mode `[filter]` lines (after `listen`), relaying to `relay`.
fn proxy(relay: u16) -> String {
    format!(
        "relay = \"127.0.0.1:{relay}\"\nallowed_clients = [\"127.0.0.0/8\"]\n\
         max_recipients = 1000\nmax_message_size = \"30M\"\non_failure = \"tempfail\"\n"
    )
}

fn maildir_rule(md: &Path) -> String {
    format!("[[rule]]\narchive = [\"maildir:{}\"]\n", md.display())
}

/// Every copy in a Maildir (none when it does not exist).
fn archived(md: &Path) -> Vec<Vec<u8>> {
    if md.join("new").exists() || md.join("cur").exists() {
        read_maildir(md)
    } else {
        Vec::new()
    }
}

/// The envelope header lines of an archived copy, and the message after them.
fn envelope_of(copy: &[u8]) -> (Vec<String>, Vec<u8>) {
    let (env, msg) = split_envelope(copy);
    let lines = env
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (lines, msg)
}

fn recipients_of(env: &[String]) -> Vec<String> {
    env.iter()
        .filter_map(|l| l.strip_prefix("X-Envelope-To: "))
        .map(str::to_string)
        .collect()
}

fn header_value(env: &[String], name: &str) -> Option<String> {
    env.iter()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------
// The fake relay

const RELAY_EHLO: &str = "250-fake-relay.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n\
    250-8BITMIME\r\n250-XFORWARD NAME ADDR PROTO HELO IDENT\r\n250 ENHANCEDSTATUSCODES\r\n";
const RELAY_QUEUED: &str = "250 2.0.0 Ok: queued as FAKE1\r\n";
const RELAY_TEMPFAIL: &str = "451 4.3.0 fake relay: try again later (FAKE451)\r\n";

/// The fake relay's (multi-line) answer to a recipient containing "reject".
fn relay_rejects(rcpt_line: &str) -> String {
    let addr = rcpt_line
        .split_once(':')
        .map(|(_, a)| a.trim())
        .unwrap_or("");
    format!(
        "550-5.1.1 {addr}: Recipient address rejected:\r\n550 5.1.1 fake relay: user unknown\r\n"
    )
}

/// One message the relay got after its 354.
#[derive(Debug, Clone, Default)]
struct RelayMessage {
    /// The data lines as received (still dot-stuffed), without the final dot.
    data: Vec<u8>,
    /// The `.` line arrived.
    dot: bool,
}

/// One connection to the fake relay.
#[derive(Debug, Clone, Default)]
struct RelayConn {
    /// Command lines, without CRLF.
    commands: Vec<String>,
    messages: Vec<RelayMessage>,
    /// The peer closed (or QUIT).
    closed: bool,
}

impl RelayConn {
    /// The XFORWARD attributes received, `NAME=value`, sorted.
    fn xforward(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .commands
            .iter()
            .filter_map(|c| c.strip_prefix("XFORWARD "))
            .flat_map(|a| a.split_whitespace().map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

/// Where in a transaction the fake relay fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Mail,
    /// The nth RCPT of the connection, from 1.
    Rcpt(usize),
    Data,
    /// The final dot.
    Dot,
}

/// A failure of the fake relay, applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Close the connection instead of answering.
    CloseAt(Stage),
    /// Stop answering (keep the connection open) there.
    StallAt(Stage),
    /// Answer the dot, then close: an idle timeout on a cached connection.
    CloseAfterDot,
}

/// A minimal SMTP server on 127.0.0.1 that records what it gets.
struct FakeRelay {
    port: u16,
    conns: Arc<Mutex<Vec<RelayConn>>>,
    end_reply: Arc<Mutex<String>>,
    fault: Arc<Mutex<Option<Fault>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeRelay {
    fn start() -> FakeRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake relay");
        let port = listener.local_addr().expect("addr").port();
        let conns = Arc::new(Mutex::new(Vec::<RelayConn>::new()));
        let end_reply = Arc::new(Mutex::new(RELAY_QUEUED.to_string()));
        let fault = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (conns, end_reply, stop) = (conns.clone(), end_reply.clone(), stop.clone());
            let fault = fault.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let idx = {
                        let mut g = conns.lock().unwrap();
                        g.push(RelayConn::default());
                        g.len() - 1
                    };
                    let (conns, end_reply, fault) =
                        (conns.clone(), end_reply.clone(), fault.clone());
                    std::thread::spawn(move || relay_session(stream, idx, conns, end_reply, fault));
                }
            })
        };
        FakeRelay {
            port,
            conns,
            end_reply,
            fault,
            stop,
            accept: Some(accept),
        }
    }

    /// Fails once, at the next occasion for `fault`.
    fn fail_once(&self, fault: Fault) {
        *self.fault.lock().unwrap() = Some(fault);
    }

    /// What to answer to the final dot from now on.
    fn answer_end_with(&self, reply: &str) {
        *self.end_reply.lock().unwrap() = reply.to_string();
    }

    fn conns(&self) -> Vec<RelayConn> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the recorded connections.
    fn wait(&self, what: &str, pred: impl Fn(&[RelayConn]) -> bool) -> Vec<RelayConn> {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = self.conns();
            if pred(&c) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "fake relay: timed out waiting for {what}; it saw {c:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay_session(
    stream: TcpStream,
    idx: usize,
    conns: Arc<Mutex<Vec<RelayConn>>>,
    end_reply: Arc<Mutex<String>>,
    fault: Arc<Mutex<Option<Fault>>>,
) {
    let update = |f: &mut dyn FnMut(&mut RelayConn)| f(&mut conns.lock().unwrap()[idx]);
    // Takes the pending fault when it is for `stage`: Some(true) to close,
    // Some(false) to stall.
    let fault_at = |stage: Stage| {
        let mut f = fault.lock().unwrap();
        let hit = match *f {
            Some(Fault::CloseAt(s)) if s == stage => Some(true),
            Some(Fault::StallAt(s)) if s == stage => Some(false),
            _ => None,
        };
        if hit.is_some() {
            *f = None;
        }
        hit
    };
    let mut rcpts = 0;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    let _ = w.write_all(b"220 fake-relay.test ESMTP\r\n");
    'session: loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        update(&mut |c| c.commands.push(text.clone()));
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let stage = match verb.as_str() {
            "MAIL" => Some(Stage::Mail),
            "RCPT" => {
                rcpts += 1;
                Some(Stage::Rcpt(rcpts))
            }
            "DATA" => Some(Stage::Data),
            _ => None,
        };
        match stage.and_then(fault_at) {
            Some(true) => break,
            Some(false) => {
                // Hold the connection until the peer gives up on it.
                let _ = r.read_until(b'\n', &mut Vec::new());
                break;
            }
            None => {}
        }
        let reply = match verb.as_str() {
            "EHLO" => RELAY_EHLO.to_string(),
            "HELO" => "250 fake-relay.test\r\n".to_string(),
            "XFORWARD" | "RSET" | "NOOP" => "250 2.0.0 Ok\r\n".to_string(),
            "MAIL" => "250 2.1.0 Ok\r\n".to_string(),
            "RCPT" if text.to_ascii_lowercase().contains("reject") => relay_rejects(&text),
            "RCPT" => "250 2.1.5 Ok\r\n".to_string(),
            "QUIT" => {
                let _ = w.write_all(b"221 2.0.0 Bye\r\n");
                break;
            }
            "DATA" => {
                update(&mut |c| c.messages.push(RelayMessage::default()));
                if w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .is_err()
                {
                    break;
                }
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break 'session,
                        Ok(_) => {}
                    }
                    if line == b".\r\n" {
                        update(&mut |c| c.messages.last_mut().unwrap().dot = true);
                        break;
                    }
                    update(&mut |c| c.messages.last_mut().unwrap().data.extend_from_slice(&line));
                }
                match fault_at(Stage::Dot) {
                    Some(true) => break 'session,
                    Some(false) => {
                        let _ = r.read_until(b'\n', &mut Vec::new());
                        break 'session;
                    }
                    None => {}
                }
                let idle_close = {
                    let mut f = fault.lock().unwrap();
                    let hit = *f == Some(Fault::CloseAfterDot);
                    if hit {
                        *f = None;
                    }
                    hit
                };
                if idle_close {
                    let _ = w.write_all(end_reply.lock().unwrap().as_bytes());
                    break 'session;
                }
                end_reply.lock().unwrap().clone()
            }
            _ => "502 5.5.2 Error: command not recognized\r\n".to_string(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
    update(&mut |c| c.closed = true);
}

// ---------------------------------------------------------------------------
// Proxy mode

const SIMPLE: &[u8] = b"From: a@x\r\nTo: b@y, c@z\r\nSubject: pipelined\r\nMessage-ID: <p1@x>\r\n\r\nHello,\r\nbody line.\r\n";

/// The message with its terminating dot (it has no line starting with a dot).
fn with_dot(msg: &[u8]) -> Vec<u8> {
    assert!(!msg.starts_with(b".") && !msg.windows(2).any(|w| w == b"\n."));
    let mut v = msg.to_vec();
    v.extend_from_slice(b".\r\n");
    v
}

#[test]
fn filter_pipelined_transaction_is_archived_and_relayed() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    assert_eq!(
        serve.ready,
        format!(
            "SMTP filter listening on inet:127.0.0.1:{}, relaying to 127.0.0.1:{}",
            serve.port, relay.port
        )
    );
    let mut c = SmtpClient::connect(serve.port);
    expect(&c.reply(), 220, "greeting");
    let ehlo = c.cmd("EHLO client.test");
    expect(&ehlo, 250, "EHLO");
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");

    // One write, four replies in order.
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@z>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..4).map(|_| code(&c.reply())).collect();
    assert_eq!(codes, [250, 250, 250, 354]);
    // The final dot and QUIT pipelined in one write too.
    let mut wire = with_dot(SIMPLE);
    wire.extend_from_slice(b"QUIT\r\n");
    c.send(&wire);
    assert_eq!(c.reply(), RELAY_QUEUED, "the relay's reply, passed on");
    expect(&c.reply(), 221, "QUIT");

    let copies = archived(&md);
    assert_eq!(copies.len(), 1);
    let (env, msg) = envelope_of(&copies[0]);
    assert_same(&msg, SIMPLE, "archived message");
    assert_eq!(header_value(&env, "Return-Path").as_deref(), Some("<a@x>"));
    assert_eq!(recipients_of(&env), ["<b@y>", "<c@z>"]);

    let conns = relay.wait("the message", |c| {
        c.len() == 1 && c[0].messages.len() == 1 && c[0].messages[0].dot
    });
    let cmds: Vec<&str> = conns[0]
        .commands
        .iter()
        .map(String::as_str)
        .filter(|c| !c.starts_with("EHLO") && !c.starts_with("XFORWARD"))
        .collect();
    assert_eq!(
        &cmds[..4],
        ["MAIL FROM:<a@x>", "RCPT TO:<b@y>", "RCPT TO:<c@z>", "DATA"]
    );
    assert_same(&conns[0].messages[0].data, SIMPLE, "relayed message");

    let out = serve.stop();
    assert!(out.iter().any(|l| l.contains("SIGTERM")), "{out:?}");
}

#[test]
fn filter_passes_a_relay_rejection_through_and_archives_only_accepted_recipients() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "client.test");
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    expect(&c.cmd("RCPT TO:<b@y>"), 250, "RCPT b");
    assert_eq!(
        c.cmd("RCPT TO:<reject@y>"),
        relay_rejects("RCPT TO:<reject@y>"),
        "the relay's 550, verbatim"
    );
    expect(&c.cmd("RCPT TO:<c@z>"), 250, "RCPT c");
    expect(&c.cmd("DATA"), 354, "DATA");
    c.send(&with_dot(SIMPLE));
    assert_eq!(c.reply(), RELAY_QUEUED);
    c.quit();

    let copies = archived(&md);
    assert_eq!(copies.len(), 1);
    let (env, msg) = envelope_of(&copies[0]);
    assert_eq!(recipients_of(&env), ["<b@y>", "<c@z>"]);
    assert_same(&msg, SIMPLE, "archived message");
    let conns = relay.wait("the message", |c| {
        c.len() == 1 && c[0].messages.len() == 1 && c[0].messages[0].dot
    });
    assert!(conns[0].commands.iter().any(|c| c == "RCPT TO:<reject@y>"));
    serve.stop();
}

#[test]
fn filter_unstuffs_dots_keeps_bare_lf_in_the_archive_and_restuffs_for_the_relay() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "client.test");

    // CRLF, dot-stuffed, sent in 3-byte pieces.
    let crlf_meant = b"Subject: dots\r\n\r\n.leading\r\n..\r\n. x\r\nmid.dle\r\nlast\r\n";
    let crlf_wire = b"Subject: dots\r\n\r\n..leading\r\n...\r\n.. x\r\nmid.dle\r\nlast\r\n.\r\n";
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    expect(&c.cmd("RCPT TO:<b@y>"), 250, "RCPT");
    expect(&c.cmd("DATA"), 354, "DATA");
    for piece in crlf_wire.chunks(3) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.reply(), RELAY_QUEUED);

    // Bare LF throughout, ended by LF . LF.
    let lf_meant = b"Subject: bare lf\nX-Test: 1\n\n.leading\n..\nlast\n";
    let lf_wire = b"Subject: bare lf\nX-Test: 1\n\n..leading\n...\nlast\n.\n";
    assert_eq!(
        c.transaction("a@x", &["c@z"], lf_wire),
        RELAY_QUEUED,
        "bare-LF message"
    );
    c.quit();

    let copies = archived(&md);
    assert_eq!(copies.len(), 2);
    let mut bodies: Vec<Vec<u8>> = copies.iter().map(|c| envelope_of(c).1).collect();
    bodies.sort_by_key(|b| !b.starts_with(b"Subject: dots"));
    assert_same(&bodies[0], crlf_meant, "archived CRLF message");
    assert_same(&bodies[1], lf_meant, "archived bare-LF message");
    let lf_copy = copies
        .iter()
        .find(|c| envelope_of(c).1.starts_with(b"Subject: bare lf"))
        .unwrap();
    assert!(
        !lf_copy.contains(&b'\r'),
        "the bare-LF copy got CRs: {:?}",
        String::from_utf8_lossy(lf_copy)
    );

    let conns = relay.wait("both messages", |c| {
        c.len() == 1 && c[0].messages.len() == 2 && c[0].messages.iter().all(|m| m.dot)
    });
    assert_same(
        &conns[0].messages[0].data,
        b"Subject: dots\r\n\r\n..leading\r\n...\r\n.. x\r\nmid.dle\r\nlast\r\n",
        "relayed CRLF message",
    );
    assert_same(
        &conns[0].messages[1].data,
        b"Subject: bare lf\r\nX-Test: 1\r\n\r\n..leading\r\n...\r\nlast\r\n",
        "relayed bare-LF message",
    );
    serve.stop();
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn filter_streams_30_megabytes_to_smtp_sink_in_little_memory() {
    let sink = Path::new("/usr/sbin/smtp-sink");
    assert!(
        sink.exists(),
        "smtp-sink (package postfix) is needed; scripts/test installs it"
    );
    let dir = sandbox();
    let dumps = dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    set_mode(&dumps, 0o777);
    let sink_port = free_port();
    let mut cmd = Command::new(sink);
    if is_root() {
        cmd.args(["-u", "nobody"]);
    }
    cmd.arg("-d")
        .arg(format!("{}/%M.", dumps.display()))
        .arg(format!("127.0.0.1:{sink_port}"))
        .arg("10")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut sink_child = KillOnDrop(cmd.spawn().expect("smtp-sink"));
    wait_for("smtp-sink to listen", || {
        if let Ok(Some(s)) = sink_child.0.try_wait() {
            panic!("smtp-sink exited: {s}");
        }
        TcpStream::connect(("127.0.0.1", sink_port)).ok()
    });

    // 30 MB of 78-byte CRLF lines, every 1000th starting with a dot.
    let mut meant = b"From: big@x\r\nSubject: thirty megabytes\r\n\r\n".to_vec();
    let mut i = 0u64;
    while meant.len() < 30_000_000 {
        let lead = if i.is_multiple_of(1000) { "." } else { "L" };
        meant.extend_from_slice(
            format!("{lead}{i:010} abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    meant.extend_from_slice(b"the last line\r\n");
    let mut wire = Vec::with_capacity(meant.len() + 100_000);
    for line in meant.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");

    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(sink_port), &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "client.test");
    c.set_timeout(Duration::from_secs(40));
    let end = c.transaction("big@x", &["r@y"], &wire);
    expect(&end, 250, "end of data");
    c.quit();
    let rss = serve.peak_rss_kib();

    let files = files_under(&md);
    assert_eq!(files.len(), 1, "{files:?}");
    let copy = std::fs::read(&files[0]).unwrap();
    let (env, msg) = envelope_of(&copy);
    assert_eq!(msg.len(), meant.len(), "archived size");
    assert_same(&msg, &meant, "archived message");
    assert_eq!(recipients_of(&env), ["<r@y>"]);

    // smtp-sink dumps the message unstuffed, with LF line ends, then an
    // empty line.
    let mut lf = String::from_utf8(meant.clone())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    lf.push(b'\n');
    let dump = wait_for("smtp-sink's dump", || {
        let f = files_under(&dumps).into_iter().next()?;
        let d = std::fs::read(f).ok()?;
        d.ends_with(b"the last line\n\n").then_some(d)
    });
    assert!(dump.len() >= lf.len(), "dump of {} bytes", dump.len());
    assert_same(&dump[dump.len() - lf.len()..], &lf, "smtp-sink's copy");
    assert!(
        rss < 64 * 1024,
        "serve's peak RSS was {rss} KiB for a 30 MB message"
    );
    serve.stop();
}

#[test]
fn filter_tempfails_and_archives_nothing_when_the_relay_is_down() {
    let dir = sandbox();
    let relay_port = free_port(); // nothing listens there
    let archive = dir.path().join("archive");
    let mut serve = start_filter(
        dir.path(),
        &proxy(relay_port),
        &maildir_rule(&archive.join("md")),
        false,
    );
    let mut c = SmtpClient::connect(serve.port);
    // 421 at once, or 4xx later in the transaction: never 250 at the end.
    let greeting = c.reply();
    let mut tempfailed = greeting.starts_with('4');
    if !tempfailed {
        expect(&greeting, 220, "greeting");
        let steps: [&[u8]; 5] = [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<a@x>\r\n",
            b"RCPT TO:<b@y>\r\n",
            b"DATA\r\n",
            &with_dot(SIMPLE),
        ];
        for step in steps {
            c.send(step);
            let r = c.reply();
            if r.starts_with('4') {
                tempfailed = true;
                break;
            }
            assert!(
                r.starts_with('2') || r.starts_with('3'),
                "relay down: got {r:?}"
            );
        }
    } else {
        expect(&greeting, 421, "greeting with the relay down");
    }
    assert!(tempfailed, "relay down but no 4xx");
    drop(c);
    assert_eq!(files_under(&archive), Vec::<PathBuf>::new());
    serve.stop();
}

#[test]
fn filter_read_only_archive_tempfails_and_the_relay_never_gets_the_dot() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    set_mode(&archive, 0o555);
    let mut serve = start_filter(
        dir.path(),
        &proxy(relay.port),
        &maildir_rule(&archive.join("md")),
        true,
    );
    let mut c = SmtpClient::hello(serve.port, "client.test");
    let end = c.transaction("a@x", &["b@y"], &with_dot(SIMPLE));
    expect(&end, 451, "end of data with an unwritable archive");
    let conns = relay.wait("the relay connection to close", |c| {
        c.len() == 1 && c[0].closed
    });
    assert!(conns[0].commands.iter().any(|c| c == "DATA"), "{conns:#?}");
    assert_eq!(conns[0].messages.len(), 1, "{conns:#?}");
    assert!(!conns[0].messages[0].dot, "the relay got the final dot");

    // The next transaction on the same connection goes to a new relay
    // connection (the relay's own replies), and fails the same way.
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL after the failure");
    assert_eq!(
        c.cmd("RCPT TO:<reject@y>"),
        relay_rejects("RCPT TO:<reject@y>"),
        "RCPT after the failure: the relay's reply"
    );
    expect(&c.cmd("RCPT TO:<b@y>"), 250, "RCPT");
    expect(&c.cmd("DATA"), 354, "DATA");
    c.send(&with_dot(SIMPLE));
    expect(&c.reply(), 451, "second message, archive still unwritable");
    let conns = relay.wait("the second relay connection to close", |c| {
        c.len() == 2 && c[1].closed
    });
    assert_eq!(conns[1].messages.len(), 1, "{conns:#?}");
    assert!(!conns[1].messages[0].dot, "the relay got the final dot");
    c.quit();
    assert_eq!(files_under(&archive), Vec::<PathBuf>::new());
    serve.stop();
}

#[test]
fn filter_oversized_message_gets_552_and_no_dot_and_the_next_one_is_relayed() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let filter = proxy(relay.port).replace("\"30M\"", "\"1k\"");
    assert!(filter.contains("max_message_size = \"1k\""));
    let mut serve = start_filter(dir.path(), &filter, &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "client.test");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 2000 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    let r = c.transaction("a@x", &["b@y"], &with_dot(&big));
    expect(&r, 552, "end of data over max_message_size");
    let conns = relay.wait("the relay connection to close", |c| {
        c.len() == 1 && c[0].closed
    });
    assert!(
        conns[0].messages.iter().all(|m| !m.dot),
        "the relay got the final dot of an oversized message: {conns:#?}"
    );

    // Same connection, next message: relayed (the relay's replies) and archived.
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    assert_eq!(
        c.cmd("RCPT TO:<reject@y>"),
        relay_rejects("RCPT TO:<reject@y>")
    );
    expect(&c.cmd("RCPT TO:<b@y>"), 250, "RCPT");
    expect(&c.cmd("DATA"), 354, "DATA");
    let small = b"Subject: small\r\n\r\nfits\r\n";
    c.send(&with_dot(small));
    assert_eq!(c.reply(), RELAY_QUEUED);
    c.quit();
    let copies = archived(&md);
    assert_eq!(copies.len(), 1, "only the small message");
    let (env, msg) = envelope_of(&copies[0]);
    assert_same(&msg, small, "archived message");
    assert_eq!(recipients_of(&env), ["<b@y>"]);
    let conns = relay.wait("the small message", |c| {
        c.len() == 2 && c[1].messages.len() == 1 && c[1].messages[0].dot
    });
    assert_same(&conns[1].messages[0].data, small, "relayed message");
    serve.stop();
}

#[test]
fn filter_client_disconnecting_mid_data_archives_nothing_and_serve_goes_on() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);

    let mut c = SmtpClient::hello(serve.port, "client.test");
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    expect(&c.cmd("RCPT TO:<b@y>"), 250, "RCPT");
    expect(&c.cmd("DATA"), 354, "DATA");
    c.send(b"Subject: partial\r\n\r\nthe first half of the body\r\n");
    c.abort();
    let conns = relay.wait("the relay connection to close", |c| {
        c.len() == 1 && c[0].closed
    });
    assert_eq!(conns[0].messages.len(), 1, "{conns:#?}");
    assert!(!conns[0].messages[0].dot, "the relay got the final dot");

    // The next client is served.
    let mut c = SmtpClient::hello(serve.port, "client.test");
    let second = b"Subject: second\r\n\r\ncomplete\r\n";
    assert_eq!(
        c.transaction("a@x", &["b@y"], &with_dot(second)),
        RELAY_QUEUED
    );
    c.quit();
    let copies = archived(&md);
    assert_eq!(copies.len(), 1, "only the complete message is archived");
    assert_same(&envelope_of(&copies[0]).1, second, "archived message");
    assert_eq!(files_under(&md).len(), 1, "{:?}", files_under(&md));
    serve.stop();
}

#[test]
fn filter_relay_tempfail_after_archiving_is_passed_on_and_the_retry_is_not_archived_twice() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    relay.answer_end_with(RELAY_TEMPFAIL);
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let message = b"From: a@x\r\nSubject: retried\r\nMessage-ID: <r1@x>\r\n\r\nretry me\r\n";

    let deliver = |ident: &str, msg: &[u8]| -> String {
        let mut c = SmtpClient::hello(serve.port, "postfix.test");
        expect(
            &c.cmd(
                "XFORWARD NAME=spike.example ADDR=192.0.2.7 PORT=4321 PROTO=ESMTP HELO=spike-helo",
            ),
            250,
            "XFORWARD",
        );
        expect(
            &c.cmd(&format!("XFORWARD IDENT={ident} SOURCE=REMOTE")),
            250,
            "XFORWARD",
        );
        let r = c.transaction("a@x", &["b@y"], &with_dot(msg));
        c.quit();
        r
    };

    // First attempt: archived, but the relay says 451, which the client gets.
    assert_eq!(deliver("Q123", message), RELAY_TEMPFAIL);
    let copies = archived(&md);
    assert_eq!(copies.len(), 1, "archived before the relay answered");
    let (env, msg) = envelope_of(&copies[0]);
    assert_same(&msg, message, "archived message");
    assert_eq!(
        header_value(&env, "X-Mailkeep-Queue-Id").as_deref(),
        Some("Q123")
    );
    assert_eq!(
        header_value(&env, "X-Mailkeep-Client").as_deref(),
        Some("spike.example [192.0.2.7]:4321 helo=spike-helo")
    );
    let conns = relay.wait("the first attempt", |c| {
        c.len() == 1 && c[0].messages.len() == 1 && c[0].messages[0].dot
    });
    // Only the attributes the relay offered (not PORT, not SOURCE), before MAIL.
    assert_eq!(
        conns[0].xforward(),
        [
            "ADDR=192.0.2.7",
            "HELO=spike-helo",
            "IDENT=Q123",
            "NAME=spike.example",
            "PROTO=ESMTP"
        ]
    );
    let first_mail = conns[0]
        .commands
        .iter()
        .position(|c| c.starts_with("MAIL"))
        .unwrap();
    let last_xforward = conns[0]
        .commands
        .iter()
        .rposition(|c| c.starts_with("XFORWARD"))
        .unwrap();
    assert!(last_xforward < first_mail, "{:?}", conns[0].commands);

    // The retry, accepted by the relay now: 250, and no second copy.
    relay.answer_end_with(RELAY_QUEUED);
    assert_eq!(deliver("Q123", message), RELAY_QUEUED);
    let conns = relay.wait("the retry", |c| {
        c.len() == 2 && c[1].messages.len() == 1 && c[1].messages[0].dot
    });
    assert_same(&conns[1].messages[0].data, message, "relayed retry");
    assert_eq!(archived(&md).len(), 1, "the retry was archived again");
    assert!(!files_under(&dir.path().join("dedup")).is_empty());

    // The key is queue id and content: either one different is a new copy.
    let other = b"From: a@x\r\nSubject: retried\r\nMessage-ID: <r2@x>\r\n\r\nanother\r\n";
    assert_eq!(deliver("Q123", other), RELAY_QUEUED);
    assert_eq!(archived(&md).len(), 2, "same queue id, other content");
    assert_eq!(deliver("Q124", message), RELAY_QUEUED);
    let copies = archived(&md);
    assert_eq!(copies.len(), 3, "same content, other queue id");
    let mut ids: Vec<String> = copies
        .iter()
        .map(|c| header_value(&envelope_of(c).0, "X-Mailkeep-Queue-Id").unwrap_or_default())
        .collect();
    ids.sort();
    assert_eq!(ids, ["Q123", "Q123", "Q124"]);
    serve.stop();
}

#[test]
fn filter_takes_the_login_from_postfixs_received_header() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let d = dir.path().display();
    let rules = format!(
        "[[rule]]\nname = \"by login\"\nlogin = [\"*\"]\narchive = [\"maildir:{d}/archive/login/{{login}}\"]\ncontinue = true\n\
         [[rule]]\nname = \"all\"\narchive = [\"maildir:{d}/archive/all\"]\n"
    );
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &rules, false);
    let authenticated = b"Received: from c (c [192.0.2.1])\r\n\t(Authenticated sender: bob)\r\n\tby mx (Postfix) with ESMTPSA id Q1\r\n\tfor <b@y>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)\r\nFrom: bob@x\r\nSubject: sent by bob\r\n\r\nhi\r\n";
    // Only the first Received field (Postfix's own) counts.
    let forged = b"Received: from d (d [192.0.2.2])\r\n\tby mx (Postfix) with ESMTP id Q2\r\nReceived: from e (Authenticated sender: mallory)\r\nSubject: not authenticated\r\n\r\nhi\r\n";
    let mut c = SmtpClient::hello(serve.port, "client.test");
    assert_eq!(
        c.transaction("bob@x", &["b@y"], &with_dot(authenticated)),
        RELAY_QUEUED
    );
    assert_eq!(
        c.transaction("eve@x", &["b@y"], &with_dot(forged)),
        RELAY_QUEUED
    );
    c.quit();

    let all = archived(&dir.path().join("archive/all"));
    assert_eq!(all.len(), 2);
    for copy in &all {
        let (env, msg) = envelope_of(copy);
        if msg.starts_with(b"Received: from c ") {
            assert_same(&msg, authenticated, "archived message");
            assert_eq!(
                header_value(&env, "X-Mailkeep-Login").as_deref(),
                Some("bob")
            );
        } else {
            assert_same(&msg, forged, "archived message");
            assert_eq!(header_value(&env, "X-Mailkeep-Login"), None, "{env:?}");
        }
    }
    let by_login = archived(&dir.path().join("archive/login/bob"));
    assert_eq!(by_login.len(), 1, "the login rule got bob's message");
    assert_same(&envelope_of(&by_login[0]).1, authenticated, "by login");
    assert!(!dir.path().join("archive/login/mallory").exists());
    serve.stop();
}

// ---------------------------------------------------------------------------
// Receiver mode

fn receiver(extra: &str) -> String {
    format!("allowed_clients = [\"127.0.0.0/8\"]\n{extra}")
}

#[test]
fn receiver_archives_and_names_the_copy_in_its_reply() {
    let dir = sandbox();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &receiver(""), &maildir_rule(&md), false);
    assert_eq!(
        serve.ready,
        format!(
            "SMTP archive receiver listening on inet:127.0.0.1:{}",
            serve.port
        )
    );
    let mut c = SmtpClient::hello(serve.port, "sender.test");
    let reply = c.transaction("a@x", &["b@y", "c@z"], &with_dot(SIMPLE));
    expect(&reply, 250, "end of data");
    let id = reply
        .split("archived b3:")
        .nth(1)
        .unwrap_or_else(|| panic!("no archive id in {reply:?}"));
    let hex: String = id.chars().take_while(char::is_ascii_hexdigit).collect();
    assert_eq!(hex.len(), 16, "{reply:?}");
    let other = b"Subject: another\r\n\r\nbody\r\n";
    let reply2 = c.transaction("a@x", &["b@y"], &with_dot(other));
    expect(&reply2, 250, "end of data");
    assert!(reply2.contains("archived b3:"), "{reply2:?}");
    assert!(!reply2.contains(&hex), "two messages, one id: {reply2:?}");
    c.quit();

    let copies = archived(&md);
    assert_eq!(copies.len(), 2);
    let copy = copies
        .iter()
        .find(|c| envelope_of(c).1 == SIMPLE)
        .expect("the first message, byte-exact");
    let (env, _) = envelope_of(copy);
    assert_eq!(header_value(&env, "Return-Path").as_deref(), Some("<a@x>"));
    assert_eq!(recipients_of(&env), ["<b@y>", "<c@z>"]);
    assert_eq!(
        header_value(&env, "X-Mailkeep-Client").as_deref(),
        Some("[127.0.0.1] helo=sender.test")
    );
    serve.stop();
}

/// `RCPT TO:<>` names nobody: 501 at RCPT, not 250 and then a recipient
/// missing from the envelope (found by fuzzing the SMTP session). The
/// transaction goes on with the recipients that were accepted.
#[test]
fn receiver_refuses_an_empty_recipient() {
    let dir = sandbox();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &receiver(""), &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "sender.test");
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    let empty = c.cmd("RCPT TO:<>");
    expect(&empty, 501, "RCPT TO:<>");
    assert!(empty.contains("5.1.3"), "{empty:?}");
    expect(&c.cmd("RCPT TO:<b@y>"), 250, "RCPT");
    expect(&c.cmd("DATA"), 354, "DATA");
    c.send(&with_dot(SIMPLE));
    expect(&c.reply(), 250, "end of data");
    c.quit();
    serve.stop();
    let copies = archived(&md);
    assert_eq!(copies.len(), 1);
    assert_eq!(recipients_of(&envelope_of(&copies[0]).0), ["<b@y>"]);
}

/// `no_archive = true`: the listener answers as usual and archives
/// nothing (a reinjection port, the return path of archive copies).
#[test]
fn receiver_with_no_archive_accepts_and_archives_nothing() {
    let dir = sandbox();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(
        dir.path(),
        &receiver("no_archive = true"),
        &maildir_rule(&md),
        false,
    );
    let mut c = SmtpClient::hello(serve.port, "sender.test");
    let reply = c.transaction("a@x", &["b@y"], &with_dot(SIMPLE));
    expect(&reply, 250, "end of data");
    c.quit();
    serve.stop();
    assert!(archived(&md).is_empty(), "no_archive listener archived");
}

#[test]
fn receiver_refuses_clients_outside_allowed_clients() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let mut serve = start_filter(
        dir.path(),
        "allowed_clients = [\"10.0.0.0/8\"]\n",
        &maildir_rule(&archive.join("md")),
        false,
    );
    let mut c = SmtpClient::connect(serve.port);
    expect(&c.reply(), 554, "greeting for a client not allowed");
    // Nothing more is served on that connection.
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@x>\r\n");
    let more = c.try_reply();
    assert!(more.is_none(), "served after 554: {more:?}");
    assert_eq!(files_under(&archive), Vec::<PathBuf>::new());
    serve.stop();
}

#[test]
fn receiver_limits_recipients_and_message_size() {
    let dir = sandbox();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(
        dir.path(),
        &receiver("max_recipients = 2\nmax_message_size = \"1k\"\n"),
        &maildir_rule(&md),
        false,
    );
    let mut c = SmtpClient::connect(serve.port);
    expect(&c.reply(), 220, "greeting");
    let ehlo = c.cmd("EHLO client.test");
    expect(&ehlo, 250, "EHLO");
    assert!(ehlo.contains("SIZE 1024\r\n"), "{ehlo}");

    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    expect(&c.cmd("RCPT TO:<r1@y>"), 250, "RCPT 1");
    expect(&c.cmd("RCPT TO:<r2@y>"), 250, "RCPT 2");
    expect(&c.cmd("RCPT TO:<r3@y>"), 452, "RCPT 3");
    expect(&c.cmd("DATA"), 354, "DATA");
    let small = b"Subject: small\r\n\r\nfits\r\n";
    c.send(&with_dot(small));
    expect(&c.reply(), 250, "end of data");

    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 2000 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    let r = c.transaction("a@x", &["r1@y"], &with_dot(&big));
    expect(&r, 552, "end of data over max_message_size");
    // Still in step after the rejected message.
    expect(&c.cmd("NOOP"), 250, "NOOP");
    c.quit();

    let copies = archived(&md);
    assert_eq!(copies.len(), 1, "only the small message");
    let (env, msg) = envelope_of(&copies[0]);
    assert_same(&msg, small, "archived message");
    assert_eq!(recipients_of(&env), ["<r1@y>", "<r2@y>"]);
    assert_eq!(files_under(&md).len(), 1, "{:?}", files_under(&md));
    serve.stop();
}

#[test]
fn receiver_rejects_bad_commands_and_stays_in_step() {
    let dir = sandbox();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &receiver(""), &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "client.test");

    expect(&c.cmd("FROBNICATE now"), 500, "unknown command");
    // A long line within the limit is fine; one over it gets one 500 and
    // nothing of it is taken as a command.
    expect(
        &c.cmd(&format!("NOOP {}", "n".repeat(3000))),
        250,
        "long NOOP",
    );
    expect(
        &c.cmd(&format!("NOOP {}", "x".repeat(5000))),
        500,
        "5 kB line",
    );
    expect(&c.cmd("NOOP"), 250, "NOOP after the long line");
    expect(
        &c.cmd(&format!("MAIL FROM:<{}@x>", "a".repeat(5000))),
        500,
        "5 kB MAIL",
    );
    expect(&c.cmd("DATA"), 503, "DATA before MAIL");
    expect(&c.cmd("RCPT TO:<b@y>"), 503, "RCPT before MAIL");
    expect(&c.cmd("MAIL FROM:<a@x>"), 250, "MAIL after the long MAIL");
    let r = c.cmd("DATA");
    assert!(
        code(&r) == 503 || code(&r) == 554,
        "DATA before RCPT: {r:?}"
    );
    expect(&c.cmd("BDAT 10 LAST"), 502, "BDAT");
    expect(&c.cmd("RSET"), 250, "RSET");
    // The session still works.
    let ok = b"Subject: after errors\r\n\r\nok\r\n";
    expect(
        &c.transaction("a@x", &["b@y"], &with_dot(ok)),
        250,
        "end of data",
    );
    c.quit();
    let copies = archived(&md);
    assert_eq!(copies.len(), 1);
    assert_same(&envelope_of(&copies[0]).1, ok, "archived message");
    serve.stop();
}

/// Regression: Postfix splits one queued message into several deliveries
/// (over the transport's recipient limit, or a recipient retried on its
/// own) with the same queue id and content; each must be archived.
#[test]
fn filter_split_deliveries_of_one_queue_id_are_each_archived() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let message = b"From: a@x\r\nSubject: split\r\n\r\nsame content\r\n";
    for rcpt in ["b@y", "later@z", "b@y"] {
        let mut c = SmtpClient::hello(serve.port, "postfix.test");
        expect(&c.cmd("XFORWARD IDENT=Q7 SOURCE=REMOTE"), 250, "XFORWARD");
        let r = c.transaction("a@x", &[rcpt], &with_dot(message));
        expect(&r, 250, "delivery");
        c.quit();
    }
    serve.stop();
    let mut got: Vec<Vec<String>> = archived(&md)
        .iter()
        .map(|copy| recipients_of(&envelope_of(copy).0))
        .collect();
    got.sort();
    // b@y's retry is the same delivery: archived once; later@z is another.
    assert_eq!(
        got,
        vec![vec!["<b@y>".to_string()], vec!["<later@z>".to_string()]]
    );
}

/// Regression: XFORWARD attributes hold for one transaction, as in
/// Postfix; a later transaction on the connection must not inherit the
/// queue id (and so must not be deduplicated under it).
#[test]
fn filter_xforward_does_not_carry_over_to_the_next_transaction() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let message = b"From: a@x\r\nSubject: carry\r\n\r\nsame content\r\n";
    let mut c = SmtpClient::hello(serve.port, "postfix.test");
    expect(
        &c.cmd("XFORWARD NAME=spike.example ADDR=192.0.2.7 IDENT=Q1"),
        250,
        "XFORWARD",
    );
    expect(
        &c.transaction("a@x", &["b@y"], &with_dot(message)),
        250,
        "first",
    );
    expect(
        &c.transaction("a@x", &["b@y"], &with_dot(message)),
        250,
        "second",
    );
    c.quit();
    serve.stop();
    let copies = archived(&md);
    assert_eq!(copies.len(), 2, "the second transaction is archived too");
    let mut qids: Vec<Option<String>> = copies
        .iter()
        .map(|copy| header_value(&envelope_of(copy).0, "X-Mailkeep-Queue-Id"))
        .collect();
    qids.sort();
    assert_eq!(qids, vec![None, Some("Q1".to_string())]);
}

// ---------------------------------------------------------------------------
// Relay faults: ours and the relay's failures are 4xx, never 5xx

/// Every reply, as codes, of one attempt to deliver `message` for `rcpts`
/// with queue id `ident`, carried on whatever the server answers (as an MTA
/// does: it sends DATA only when a recipient was accepted).
fn attempt(c: &mut SmtpClient, ident: &str, rcpts: &[&str], message: &[u8]) -> Vec<(String, u16)> {
    let mut codes = Vec::new();
    let mut step = |what: &str, reply: String| {
        let n = code(&reply);
        codes.push((what.to_string(), n));
        n
    };
    step("XFORWARD", c.cmd(&format!("XFORWARD IDENT={ident}")));
    if step("MAIL", c.cmd("MAIL FROM:<a@x>")) / 100 != 2 {
        return codes;
    }
    for r in rcpts {
        step(&format!("RCPT {r}"), c.cmd(&format!("RCPT TO:<{r}>")));
    }
    if step("DATA", c.cmd("DATA")) == 354 {
        c.send(&with_dot(message));
        step("end of data", c.reply());
    }
    codes
}

#[track_caller]
fn assert_no_5xx(codes: &[(String, u16)], what: &str) {
    assert!(
        codes.iter().all(|(_, c)| *c / 100 != 5),
        "{what}: a 5xx for a relay failure: {codes:?}"
    );
}

/// Found in a real Postfix: the relay reset at RCPT 2 of 3 got 451 for it,
/// then `503 Need MAIL before RCPT` for RCPT 3 and `503 Need MAIL and RCPT
/// before DATA`, so recipient 3 and recipient 1 (already accepted) bounced.
/// Now the rest of the transaction is 4xx, and the next MAIL, on the same
/// client connection, reaches the relay again.
#[test]
fn filter_relay_reset_at_a_recipient_defers_the_whole_transaction_and_the_next_mail_reconnects() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let message = b"From: a@x\r\nSubject: three recipients\r\n\r\nhello\r\n";
    let rcpts = ["one@y", "two@y", "three@y"];
    relay.fail_once(Fault::CloseAt(Stage::Rcpt(2)));
    let mut c = SmtpClient::hello(serve.port, "postfix.test");
    let first = attempt(&mut c, "QRESET", &rcpts, message);
    assert_no_5xx(&first, "the faulty attempt");
    assert_eq!(
        first.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [250, 250, 250, 451, 451, 451],
        "{first:?}"
    );
    assert!(archived(&md).is_empty(), "nothing was archived");
    // Postfix retries on the connection it cached.
    let retry = attempt(&mut c, "QRESET", &rcpts, message);
    assert_eq!(
        retry.last().map(|(_, c)| *c),
        Some(250),
        "the retry: {retry:?}"
    );
    c.quit();
    assert_eq!(archived(&md).len(), 1, "archived once");
    let conns = relay.wait("a second relay connection with the message", |c| {
        c.len() == 2 && c[1].messages.len() == 1 && c[1].messages[0].dot
    });
    assert!(conns[1].commands.iter().any(|l| l == "RCPT TO:<three@y>"));
    serve.stop();
}

/// A fault at each step toward the relay: the client never sees a 5xx for
/// it, and delivering again (the MTA's retry, same queue id) is accepted and
/// leaves exactly one archived copy.
#[test]
fn filter_every_relay_fault_is_a_4xx_and_the_retry_archives_once() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let filter = format!(
        "{}command_timeout = 2\ndata_done_timeout = 2\n",
        proxy(relay.port)
    );
    let mut serve = start_filter(dir.path(), &filter, &maildir_rule(&md), false);
    let faults = [
        Fault::CloseAt(Stage::Mail),
        Fault::CloseAt(Stage::Rcpt(1)),
        Fault::StallAt(Stage::Rcpt(1)),
        Fault::CloseAt(Stage::Data),
        Fault::StallAt(Stage::Data),
        Fault::CloseAt(Stage::Dot),
        Fault::StallAt(Stage::Dot),
    ];
    for (n, fault) in faults.iter().enumerate() {
        let ident = format!("QF{n}");
        let message = format!("From: a@x\r\nSubject: fault {n}\r\n\r\n{fault:?}\r\n");
        relay.fail_once(*fault);
        let mut c = SmtpClient::hello(serve.port, "postfix.test");
        let first = attempt(&mut c, &ident, &["b@y", "c@y"], message.as_bytes());
        assert_no_5xx(&first, &format!("{fault:?}"));
        c.quit();
        let mut c = SmtpClient::hello(serve.port, "postfix.test");
        let retry = attempt(&mut c, &ident, &["b@y", "c@y"], message.as_bytes());
        c.quit();
        assert_eq!(
            retry.last().map(|(_, c)| *c),
            Some(250),
            "{fault:?}: the retry: {retry:?} (first attempt {first:?})"
        );
        let copies = archived(&md)
            .iter()
            .filter(|m| String::from_utf8_lossy(m).contains(&format!("Subject: fault {n}\r\n")))
            .count();
        assert_eq!(
            copies, 1,
            "{fault:?}: copies archived (first attempt {first:?})"
        );
    }
    serve.stop();
}

/// Found: after the relay closed an idle cached connection (250 to the dot,
/// then close), the next MAIL on Postfix's reused connection got 451
/// instead of a reconnect.
#[test]
fn filter_reconnects_when_the_relay_closed_an_idle_connection() {
    let dir = sandbox();
    let relay = FakeRelay::start();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &proxy(relay.port), &maildir_rule(&md), false);
    let mut c = SmtpClient::hello(serve.port, "postfix.test");
    for n in 0..4 {
        relay.fail_once(Fault::CloseAfterDot);
        let message = format!("From: a@x\r\nSubject: cached {n}\r\n\r\nhello\r\n");
        let codes = attempt(&mut c, &format!("QI{n}"), &["b@y"], message.as_bytes());
        assert_eq!(
            codes.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            [250, 250, 250, 354, 250],
            "message {n}: {codes:?}"
        );
        relay.wait("the relay to close", |conns| {
            conns.len() == n + 1 && conns[n].closed
        });
    }
    c.quit();
    assert_eq!(archived(&md).len(), 4);
    serve.stop();
}

/// Found: on SIGTERM, idle SMTP sessions were held until the 30 s drain
/// deadline and then dropped without a reply, and a new transaction started
/// on an open session after SIGTERM was accepted. Now an idle session hears
/// 421 at once, the transaction in progress finishes, and a MAIL after it
/// is 421; serve then exits well within the drain deadline.
#[test]
fn filter_sigterm_says_421_to_idle_sessions_and_finishes_the_transaction_in_progress() {
    let dir = sandbox();
    let md = dir.path().join("archive/md");
    let mut serve = start_filter(dir.path(), &receiver(""), &maildir_rule(&md), false);
    let mut idle = SmtpClient::hello(serve.port, "idle.test");
    let mut busy = SmtpClient::hello(serve.port, "busy.test");
    expect(&busy.cmd("MAIL FROM:<a@x>"), 250, "MAIL");
    expect(&busy.cmd("RCPT TO:<b@y>"), 250, "RCPT");
    expect(&busy.cmd("DATA"), 354, "DATA");
    let wire = with_dot(SIMPLE);
    let (head, tail) = wire.split_at(20);
    busy.send(head);
    assert!(Command::new("kill")
        .args(["-TERM", &serve.pid().to_string()])
        .status()
        .unwrap()
        .success());
    let said = idle.try_reply();
    assert!(
        said.as_deref().is_some_and(|r| r.starts_with("421 ")),
        "the idle session: {said:?}"
    );
    assert_eq!(idle.try_reply(), None, "closed after the 421");
    busy.send(tail);
    expect(&busy.reply(), 250, "the message in progress");
    let after = busy.cmd("MAIL FROM:<a@x>");
    expect(&after, 421, "a new transaction after SIGTERM");
    assert_eq!(busy.try_reply(), None, "closed after the 421");
    assert_eq!(archived(&md).len(), 1);
    // stop() fails when serve is not gone within 20 s; holding the idle
    // session to the 30 s drain deadline was the bug.
    serve.stop();
}
