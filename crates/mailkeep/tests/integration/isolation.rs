//! One destination's wait never stalls another (issue 13, "Isolation"):
//! the real `mailkeep serve` as an SMTP archive receiver, with an mbox held
//! locked by another process the way mutt (fcntl) or procmail (dotlock)
//! hold it. A message for that mbox waits; a message for a Maildir and the
//! store is acknowledged meanwhile; messages for the held mbox wait side by
//! side, each against its own `lock_timeout`, and the tempfail names the
//! holder in serve's log.
//!
//! Everything here is asserted by ordering (a reply came while the lock
//! was still held, or while another message was still unanswered), with
//! one coarse bound where ordering cannot tell "side by side" from "one
//! after another" (see `messages_for_a_held_mbox_time_out_side_by_side`).

use crate::smtp::*;
use crate::util::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

// Every reply is awaited at most `SMTP_WAIT` (20 s): well below the
// `lock_timeout` of the tests where a reply must come while the lock is
// held, so the old single writer (which answered the Maildir message only
// after the mbox message's full lock timeout) fails by ordering, not by a
// stopwatch.

/// The recipient whose mail goes to the held mbox (and a second Maildir).
const TO_MBOX: &str = "held@example.com";
/// The recipient whose mail goes to a Maildir and the store.
const TO_MAILDIR: &str = "free@example.com";

/// A message to `to`, stuffed and with its final dot.
fn message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n"
    )
    .into_bytes()
}

/// Which lock the other program holds.
#[derive(Clone, Copy, Debug)]
enum Lock {
    /// `fcntl(F_SETLK)` on the whole file (Python's `fcntl.lockf`), as mutt.
    Fcntl,
    /// `PATH.lock` created with `O_EXCL`, holding its pid, as procmail.
    Dotlock,
}

/// Another process holding the mbox lock until told to let go.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

const HOLDER: &str = r#"
import fcntl, os, sys
path, kind = sys.argv[1], sys.argv[2]
if kind == "fcntl":
    f = open(path, "a")
    fcntl.lockf(f, fcntl.LOCK_EX)
else:
    fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"%d\n" % os.getpid())
    os.close(fd)
print("locked", flush=True)
sys.stdin.readline()
if kind == "fcntl":
    f.close()
else:
    os.unlink(path + ".lock")
print("released", flush=True)
"#;

impl Holder {
    /// Starts the holder and returns once it holds the lock.
    fn hold(mbox: &Path, lock: Lock) -> Holder {
        let kind = match lock {
            Lock::Fcntl => "fcntl",
            Lock::Dotlock => "dotlock",
        };
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HOLDER)
            .arg(mbox)
            .arg(kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed by the tests");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("holder output");
        assert_eq!(line.trim(), "locked", "the holder could not lock {mbox:?}");
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The holder's program name as the kernel reports it.
    fn program(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .expect("comm")
            .trim()
            .to_string()
    }

    /// Lets go of the lock; returns once it is released.
    fn release(mut self) {
        let mut stdin = self.stdin.take().expect("still holding");
        stdin.write_all(b"\n").expect("tell the holder");
        drop(stdin);
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("holder output");
        assert_eq!(line.trim(), "released");
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the archive goes.
struct Paths {
    mbox: PathBuf,
    /// The second destination of the mbox-bound messages.
    beside_mbox: PathBuf,
    maildir: PathBuf,
    store: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Paths {
        let a = dir.join("archive");
        std::fs::create_dir_all(&a).expect("archive dir");
        Paths {
            mbox: a.join("held.mbox"),
            beside_mbox: a.join("beside-mbox"),
            maildir: a.join("md"),
            store: dir.join("store"),
        }
    }
}

/// serve as an SMTP archive receiver: `TO_MBOX`'s mail to the mbox and a
/// Maildir (all or nothing), `TO_MAILDIR`'s to another Maildir and the
/// store.
fn start(dir: &Path, p: &Paths, lock_timeout: u64) -> Serve {
    Serve::start(
        dir,
        |port| {
            format!(
                "{}[archive]\nlock_timeout = {lock_timeout}\n\
                 [store]\npath = \"{store}\"\n\
                 [filter]\nlisten = \"127.0.0.1:{port}\"\nallowed_clients = [\"127.0.0.0/8\"]\n\
                 dedup_dir = \"{dedup}\"\n\
                 [[rule]]\nname = \"held\"\nrecipient = [\"{TO_MBOX}\"]\n\
                 archive = [\"mbox:{mbox}\", \"maildir:{beside}\"]\n\
                 [[rule]]\nname = \"free\"\nrecipient = [\"{TO_MAILDIR}\"]\n\
                 archive = [\"maildir:{md}\", \"store\"]\n",
                spool_section(dir, false),
                store = p.store.display(),
                dedup = dir.join("dedup").display(),
                mbox = p.mbox.display(),
                beside = p.beside_mbox.display(),
                md = p.maildir.display(),
            )
        },
        &["SMTP archive receiver listening on"],
        false,
    )
}

/// Copies in a Maildir (none when it was never created).
fn maildir_copies(md: &Path) -> Vec<Vec<u8>> {
    if md.join("new").exists() {
        read_maildir(md)
    } else {
        Vec::new()
    }
}

fn subject_count(copies: &[Vec<u8>], subject: &str) -> usize {
    let want = format!("Subject: {subject}\r\n");
    copies
        .iter()
        .filter(|c| String::from_utf8_lossy(c).contains(&want))
        .count()
}

/// Lets serve read the message just sent before the next one is sent, so
/// that the old single writer is already stuck on it. Not an assertion:
/// with isolation the outcome is the same whichever arrives first.
fn let_it_arrive() {
    std::thread::sleep(Duration::from_millis(500));
}

fn held_mbox_delays_only_its_own_messages(lock: Lock) {
    let dir = sandbox();
    let p = Paths::new(dir.path());
    // Far above SMTP_WAIT: any reply while the lock is held is isolation's doing.
    let mut serve = start(dir.path(), &p, 60);
    let holder = Holder::hold(&p.mbox, lock);

    let mut waiting = SmtpClient::hello(serve.port, "client.test");
    waiting.start_transaction(
        "sender@example.org",
        &[TO_MBOX],
        &message(TO_MBOX, "for the held mbox"),
    );
    let_it_arrive();

    let mut free = SmtpClient::hello(serve.port, "client.test");
    free.start_transaction(
        "sender@example.org",
        &[TO_MAILDIR],
        &message(TO_MAILDIR, "for the maildir"),
    );
    let reply = free.reply();
    expect(&reply, 250, "the Maildir message while the mbox is held");
    assert!(
        !waiting.answered(),
        "the mbox message was answered while its lock was held"
    );
    assert_eq!(
        maildir_copies(&p.beside_mbox).len(),
        0,
        "a copy of the mbox message was published before its mbox copy was durable"
    );
    assert_eq!(
        subject_count(&read_maildir(&p.maildir), "for the maildir"),
        1
    );
    // Only now, after the Maildir reply, does the lock go.
    holder.release();

    expect(
        &waiting.reply(),
        250,
        "the mbox message once the lock is free",
    );
    let in_mbox = read_mbox(&p.mbox);
    assert_eq!(in_mbox.len(), 1, "the mbox holds the message exactly once");
    assert_eq!(subject_count(&in_mbox, "for the held mbox"), 1);
    assert_eq!(
        subject_count(&maildir_copies(&p.beside_mbox), "for the held mbox"),
        1
    );
    assert!(
        !PathBuf::from(format!("{}.lock", p.mbox.display())).exists(),
        "the dotlock was left behind"
    );
    waiting.quit();
    free.quit();
    serve.stop();

    let cfg = dir.path().join("mailkeep.toml");
    let out = mailkeep(&cfg)
        .args(["search", "", "--json"])
        .output()
        .expect("search");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "the store has the Maildir message once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn held_fcntl_lock_delays_only_its_own_messages() {
    held_mbox_delays_only_its_own_messages(Lock::Fcntl);
}

#[test]
fn held_dotlock_delays_only_its_own_messages() {
    held_mbox_delays_only_its_own_messages(Lock::Dotlock);
}

fn held_mbox_messages_time_out_side_by_side(lock: Lock) {
    const LOCK_TIMEOUT: u64 = 3;
    let dir = sandbox();
    let p = Paths::new(dir.path());
    let mut serve = start(dir.path(), &p, LOCK_TIMEOUT);
    let holder = Holder::hold(&p.mbox, lock);

    // Three messages for the held mbox, each followed by a probe for the
    // Maildir that must be answered while all the mbox messages so far are
    // still waiting: the three waits overlap.
    let first_sent = Instant::now();
    let mut waiting: Vec<SmtpClient> = Vec::new();
    for i in 1..=3 {
        let mut c = SmtpClient::hello(serve.port, "client.test");
        c.start_transaction(
            "sender@example.org",
            &[TO_MBOX],
            &message(TO_MBOX, &format!("held {i}")),
        );
        waiting.push(c);
        let mut probe = SmtpClient::hello(serve.port, "client.test");
        probe.start_transaction(
            "sender@example.org",
            &[TO_MAILDIR],
            &message(TO_MAILDIR, &format!("probe {i}")),
        );
        expect(
            &probe.reply(),
            250,
            "a Maildir probe while the mbox is held",
        );
        probe.quit();
        for (j, w) in waiting.iter_mut().enumerate() {
            assert!(
                !w.answered(),
                "held message {} was answered before probe {i}: waits did not overlap",
                j + 1
            );
        }
    }
    for (i, w) in waiting.iter_mut().enumerate() {
        expect(&w.reply(), 451, &format!("held message {}", i + 1));
    }
    // The one coarse bound: one after another, the third would come after
    // three timeouts (9 s); side by side all three come after about one
    // (plus the probes' round trips). Two timeouts leaves a full timeout of
    // slack for a loaded machine and still fails on a serial wait.
    let last = first_sent.elapsed();
    assert!(
        last < Duration::from_secs(2 * LOCK_TIMEOUT),
        "the last tempfail came {last:?} after the first message: the waits were serial"
    );
    let (pid, program) = (holder.pid(), holder.program());
    holder.release();
    for w in waiting {
        w.quit();
    }
    serve.stop();

    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("serve.log");
    let naming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("pid {pid}")) && l.contains(&program))
        .collect();
    assert!(
        naming.len() >= 3,
        "each tempfail names the holder (pid {pid}, {program}):\n{log}"
    );
    assert_eq!(
        std::fs::metadata(&p.mbox).map(|m| m.len()).unwrap_or(0),
        0,
        "nothing was appended to the held mbox"
    );
    assert_eq!(maildir_copies(&p.beside_mbox).len(), 0);
    assert_eq!(read_maildir(&p.maildir).len(), 3);
}

#[test]
fn messages_for_a_held_mbox_time_out_side_by_side() {
    held_mbox_messages_time_out_side_by_side(Lock::Fcntl);
}

#[test]
fn messages_for_a_held_dotlock_time_out_side_by_side() {
    held_mbox_messages_time_out_side_by_side(Lock::Dotlock);
}
