//! Shared helpers for the integration tests: run the real binary, write
//! configs, read archives back with Python's `mailbox` module.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The mailkeep binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mailkeep"))
}

/// True when the tests run as root (then `nobody` is used to test
/// permissions, because root ignores them).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A temporary directory that `nobody` can traverse.
pub fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    set_mode(dir.path(), 0o755);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A `[spool]` section with `dir = "DIR/spool"`, so that no test spools
/// into the machine's default (`/var/lib/mailkeep/spool`). Made and given
/// to `nobody` when `unprivileged` and the tests run as root; mailkeep
/// creates it otherwise.
pub fn spool_section(dir: &Path, unprivileged: bool) -> String {
    let spool = dir.join("spool");
    if unprivileged && is_root() {
        std::fs::create_dir_all(&spool).expect("spool dir");
        std::os::unix::fs::chown(&spool, Some(65534), Some(65534)).expect("chown spool");
        set_mode(&spool, 0o700);
    }
    format!("[spool]\ndir = \"{}\"\n", spool.display())
}

/// Writes `text` as `DIR/mailkeep.toml` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("mailkeep.toml");
    std::fs::write(&path, text).expect("write config");
    set_mode(&path, 0o644);
    path
}

/// A `mailkeep` command with `--config`.
pub fn mailkeep(config: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config").arg(config);
    c
}

/// Runs a command with `input` on stdin.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread");
    out
}

/// Runs `mailkeep --config CFG pipe ARGS...` with `message` on stdin.
pub fn pipe(config: &Path, args: &[&str], message: &[u8]) -> Output {
    let mut c = mailkeep(config);
    c.arg("pipe").args(args);
    run_with_input(c, message)
}

/// Runs a Python 3 script (an independent reader) with arguments and
/// returns its standard output; panics with its stderr when it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is needed by the tests (scripts/test installs it)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Every message of an mbox as Python's `mailbox.mbox` returns it
/// (`get_bytes()`), mboxrd-unquoted here because Python reads mboxo.
pub fn read_mbox(path: &Path) -> Vec<Vec<u8>> {
    let out = python(
        "import mailbox,sys\n\
         mb = mailbox.mbox(sys.argv[1], create=False)\n\
         for k in mb.keys():\n\
         \x20   print(mb.get_bytes(k).hex())\n",
        &[path.to_str().expect("utf-8 path")],
    );
    out.lines().map(|l| unquote_mboxrd(&unhex(l))).collect()
}

/// Every message of a Maildir (`new/` and `cur/`) as Python's
/// `mailbox.Maildir` returns it.
pub fn read_maildir(path: &Path) -> Vec<Vec<u8>> {
    let out = python(
        "import mailbox,sys\n\
         md = mailbox.Maildir(sys.argv[1], factory=None, create=False)\n\
         for k in sorted(md.keys()):\n\
         \x20   print(md.get_bytes(k).hex())\n",
        &[path.to_str().expect("utf-8 path")],
    );
    out.lines().map(unhex).collect()
}

/// The header fields of a message as Python's `email` parser sees them:
/// (name, value) pairs in order.
pub fn python_headers(message: &[u8]) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("m");
    std::fs::write(&f, message).expect("write");
    let out = python(
        "import email,sys,json\n\
         from email import policy\n\
         m = email.message_from_binary_file(open(sys.argv[1],'rb'), policy=policy.compat32)\n\
         print(json.dumps([[k, str(v)] for k, v in m.items()]))\n",
        &[f.to_str().expect("utf-8 path")],
    );
    serde_json::from_str(&out).expect("json")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// mboxrd unquoting: one `>` removed from every line matching `^>+From `.
pub fn unquote_mboxrd(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|b| *b == b'\n') {
        let gts = line.iter().take_while(|b| **b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Splits an archived copy into the envelope header block mailkeep
/// prepended and the original message after it.
pub fn split_envelope(copy: &[u8]) -> (String, Vec<u8>) {
    let mut pos = 0;
    for line in copy.split_inclusive(|b| *b == b'\n') {
        let is_env = [&b"Return-Path: "[..], b"X-Envelope-To: ", b"X-Mailkeep-"]
            .iter()
            .any(|p| line.starts_with(p));
        if !is_env {
            break;
        }
        pos += line.len();
    }
    (
        String::from_utf8_lossy(&copy[..pos]).into_owned(),
        copy[pos..].to_vec(),
    )
}

/// All regular files under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Asserts two byte strings are equal, reporting lengths and the first
/// difference instead of dumping megabytes.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let ctx = |v: &[u8]| {
            String::from_utf8_lossy(&v[at.saturating_sub(40)..(at + 40).min(v.len())]).into_owned()
        };
        panic!(
            "{what}: {} bytes vs {} expected, first difference at byte {at}:\n got: {:?}\nwant: {:?}",
            got.len(),
            want.len(),
            ctx(got),
            ctx(want)
        );
    }
}

/// The rules of the issue that introduced them, as an administrator would
/// write them (paths under /var/archive; tests replace the prefix).
pub const ISSUE_RULES: &str = include_str!("../../../../examples/issue-rules.toml");

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running `mailkeep serve`, stopped with SIGTERM (or killed, on drop).
pub struct Serve {
    child: Option<std::process::Child>,
    /// The port its listener was given.
    pub port: u16,
    /// The line that said it was ready.
    pub ready: String,
    collected: Option<std::sync::mpsc::Receiver<Vec<String>>>,
}

impl Serve {
    /// Starts serve with the configuration `config(port)` (a free port),
    /// and waits for a stdout line starting with one of `ready`; as
    /// `nobody` when `unprivileged` and the tests run as root.
    pub fn start(
        dir: &Path,
        config: impl Fn(u16) -> String,
        ready: &[&str],
        unprivileged: bool,
    ) -> Serve {
        Serve::start_on(dir, free_port(), config, ready, unprivileged)
    }

    /// [`Serve::start`] on a given port (a restart after a crash).
    pub fn start_on(
        dir: &Path,
        port: u16,
        config: impl Fn(u16) -> String,
        ready: &[&str],
        unprivileged: bool,
    ) -> Serve {
        let cfg = write_config(dir, &config(port));
        let mut cmd = if unprivileged && is_root() {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin());
            c
        } else {
            std::process::Command::new(bin())
        };
        cmd.arg("--config")
            .arg(&cfg)
            .arg("serve")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("serve.log")).expect("log file"));
        let mut child = cmd.spawn().expect("spawn mailkeep serve");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child: Some(child),
            port,
            ready: String::new(),
            collected: None,
        };
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let is_ready = ready.iter().any(|r| line.starts_with(r));
                    seen.push(line.clone());
                    if is_ready {
                        serve.ready = line;
                        break;
                    }
                }
                Err(_) => panic!(
                    "serve did not start: {seen:?}\n{}",
                    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
                ),
            }
        }
        // Keep reading so the pipe never fills; lines are collected at stop.
        let (tx, collected) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let lines: Vec<String> = rx.iter().collect();
            let _ = tx.send(lines);
        });
        serve.collected = Some(collected);
        serve
    }

    /// SIGKILL, as a crash: no draining, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Peak resident memory of the serve process, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM")
    }

    /// SIGTERM; asserts exit status 0; returns the rest of stdout.
    pub fn stop(&mut self) -> Vec<String> {
        let Some(mut child) = self.child.take() else {
            return Vec::new();
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "serve exited with {status}");
                    break;
                }
                _ if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("serve did not stop on SIGTERM");
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        self.collected
            .take()
            .and_then(|rx| rx.recv_timeout(std::time::Duration::from_secs(5)).ok())
            .unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
