//! Tests of the administrative subcommands: `check-config`, `rules test`,
//! `file`, `serve`, `postfix-snippet`, and the exit codes of the command
//! line itself. Every command runs the real binary with a time limit, and
//! every child process is killed when a test fails.

use crate::util::*;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for one short-lived command.
const LIMIT: Duration = Duration::from_secs(30);
/// What `serve` gets to start and to stop.
const SERVE_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers

/// A child process that is killed when dropped (so a failed assertion
/// never leaves it running).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for a child up to `limit`; `None` when it is still running.
fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command to completion (stdin closed) within [`LIMIT`].
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("MAILKEEP_LOG");
    let mut child = Guard(cmd.spawn().expect("spawn"));
    let mut out = child.0.stdout.take().expect("stdout");
    let mut err = child.0.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child.0, LIMIT)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {LIMIT:?}"));
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

/// The exit code; panics when the process was killed by a signal.
fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {}", show(out)))
}

/// Both streams, for assertion messages.
fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The 1-based line of the `nth` (0-based) occurrence of `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    let (pos, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in the text"));
    text[..pos].matches('\n').count() + 1
}

/// Seconds since the epoch of a UTC date and hour (days_from_civil).
fn utc(year: i64, month: u32, day: u32, hour: u32) -> SystemTime {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    UNIX_EPOCH + Duration::from_secs((days * 86_400 + hour as i64 * 3_600) as u64)
}

fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open for set_modified")
        .set_modified(when)
        .expect("set_modified");
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .expect("metadata")
        .modified()
        .expect("mtime")
}

/// Every file (and symlink) under `dir` with its content (`-> TARGET` for
/// a symlink), sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let meta = std::fs::symlink_metadata(&p).expect("lstat");
            let content = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).expect("readlink").display()).into_bytes()
            } else {
                std::fs::read(&p).expect("read")
            };
            (p, content)
        })
        .collect()
}

fn sorted(mut v: Vec<(PathBuf, Vec<u8>)>) -> Vec<(PathBuf, Vec<u8>)> {
    v.sort();
    v
}

fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// `mailkeep file DIR [--into DEST] FLAGS...` with the local time zone `tz`.
fn file_cmd(tz: &str, dir: &Path, into: Option<&Path>, flags: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.env("TZ", tz).arg("file").arg(dir);
    if let Some(dest) = into {
        c.arg("--into").arg(dest);
    }
    c.args(flags);
    run(c)
}

/// Strips ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 1. check-config

/// Runs `check-config` on `text` and asserts exit 78 with
/// `mailkeep: PATH:LINE: ...` containing every needle.
fn assert_config_error(text: &str, line: usize, needles: &[&str]) {
    let dir = sandbox();
    let cfg = write_config(dir.path(), text);
    let mut c = mailkeep(&cfg);
    c.arg("check-config");
    let out = run(c);
    assert_eq!(code(&out), 78, "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    let err = stderr(&out);
    let msg = err
        .strip_prefix("mailkeep: ")
        .unwrap_or_else(|| panic!("no `mailkeep: ` prefix: {err:?}"));
    let want = format!("{}:{}: ", cfg.display(), line);
    assert!(
        msg.starts_with(&want),
        "expected the message to start with {want:?}, got {msg:?}"
    );
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in {msg:?}");
    }
}

#[test]
fn check_config_valid_lists_rules() {
    let dir = sandbox();
    let text = format!(
        "# comment\n[archive]\nhostname = \"mx.example.com\"\nlock_timeout = 5\n\n[spool]\nthreshold = \"1M\"\n\n{ISSUE_RULES}\n[[rule]]\narchive = \"mbox:/var/archive/rest.mbox\"\n"
    );
    let cfg = write_config(dir.path(), &text);
    let mut c = mailkeep(&cfg);
    c.arg("check-config");
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    let (listing, access) = text.split_at(text.find("write access: ").unwrap_or(text.len()));
    assert_eq!(
        listing,
        format!(
            "{}: OK, 4 rule(s)\n  1. system noise\n  2. outgoing, filed by who logged in\n  3. each local recipient gets their own copy\n  4. rule 4\n",
            cfg.display()
        )
    );
    // Then one line on the write access check (see check_config.rs).
    assert_eq!(access.lines().count(), 1, "{text}");
    assert_eq!(stderr(&out), "");
    // It only reads: nothing but the config is in the directory.
    assert_eq!(files_under(dir.path()), vec![cfg]);
}

#[test]
fn check_config_without_config_uses_embedded_default() {
    if Path::new("/etc/mailkeep/mailkeep.toml").exists() {
        eprintln!("skipped: /etc/mailkeep/mailkeep.toml exists");
        return;
    }
    let cwd = sandbox();
    let mut c = Command::new(bin());
    c.arg("check-config").current_dir(cwd.path());
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out)
            .starts_with("<embedded default>: OK, 1 rule(s)\n  1. everything\nwrite access: "),
        "{}",
        show(&out)
    );
}

#[test]
fn check_config_rejects_escaping_templates_at_the_archive_line() {
    // `..` in the template: reported at the line of the `archive` value.
    let text = "# archive settings\n[archive]\nenvelope_headers = true\n\n[[rule]]\nname = \"fine\"\narchive = [\"mbox:/x/{login}/sent.mbox\"]\n\n[[rule]]\nname = \"escape\"\narchive = [\"mbox:/x/../{login}\"]\n";
    assert_config_error(
        text,
        line_of(text, "archive = [\"mbox:/x/..", 0),
        &["(escape)", "archive", "\"mbox:/x/../{login}\"", "'..'"],
    );
    assert_eq!(line_of(text, "archive = [\"mbox:/x/..", 0), 11);

    // A placeholder before any fixed directory.
    let text = "[[rule]]\nname = \"fine\"\narchive = \"maildir:/x/all\"\n\n\n[[rule]]\nname = \"no prefix\"\nlogin = \"*\"\narchive = [\"maildir:/x/ok\", \"mbox:{login}/sent.mbox\"]\n";
    assert_config_error(
        text,
        line_of(text, "archive = [\"maildir:/x/ok", 0),
        &[
            "(no prefix)",
            "\"mbox:{login}/sent.mbox\"",
            "fixed directory",
        ],
    );
}

#[test]
fn check_config_rejects_recipient_placeholder_without_per_recipient() {
    let text = format!(
        "{ISSUE_RULES}\n# a mistake: per_recipient is missing\n[[rule]]\nname = \"inbox\"\nrecipient = \"*@example.org\"\narchive = [\"eml:/var/archive/in/{{recipient}}\"]\n"
    );
    let line = line_of(&text, "archive = [\"eml:/var/archive/in/{recipient}", 0);
    // The example file has 5 comment lines, then 15 of rules, then the mistake.
    assert_eq!(line, 26);
    assert_config_error(
        &text,
        line,
        &[
            "(inbox)",
            "\"eml:/var/archive/in/{recipient}\"",
            "per_recipient = true",
        ],
    );
}

#[test]
fn check_config_rejects_unknown_keys_at_their_line() {
    let text = format!(
        "{ISSUE_RULES}\n[[rule]]\nname = \"typo\"\nper_recipients = true\narchive = \"mbox:/x/y\"\n"
    );
    assert_config_error(
        &text,
        line_of(&text, "per_recipients", 0),
        &["unknown field `per_recipients`"],
    );

    let text = "[spool]\ndir = \"/var/spool/mailkeep\"\nthreshhold = \"1M\"\n\n[[rule]]\narchive = \"mbox:/x/y\"\n";
    assert_config_error(
        text,
        line_of(text, "threshhold", 0),
        &["unknown field `threshhold`"],
    );
}

#[test]
fn check_config_rejects_toml_syntax_errors_at_their_line() {
    let text = "# comment\n[[rule]]\nname = \"ok\"\narchive = [\"eml:/x/y\"]\n\n[[rule]]\nname \"missing equals\"\narchive = [\"eml:/x/z\"]\n";
    assert_config_error(text, line_of(text, "name \"missing", 0), &[]);

    let text = "[[rule]]\nname = \"ok\"\narchive = [\"eml:/x/y\"]\n\n[[rule]]\nname = \"unterminated\narchive = [\"eml:/x/z\"]\n";
    assert_config_error(text, line_of(text, "name = \"unterminated", 0), &[]);
}

#[test]
fn check_config_missing_explicit_file_exits_78() {
    let dir = sandbox();
    let cfg = dir.path().join("absent.toml");
    let mut c = mailkeep(&cfg);
    c.arg("check-config").current_dir(dir.path());
    let out = run(c);
    assert_eq!(code(&out), 78, "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(
        stderr(&out).starts_with(&format!("mailkeep: {}: cannot read", cfg.display())),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// 2. rules test

/// The issue's example with its paths under `root`, plus a `from` rule.
fn issue_config(root: &Path) -> String {
    let root = root.display().to_string();
    format!(
        "{}\n[[rule]]\nname = \"the boss\"\nfrom = \"*@corp.example\"\narchive = [\"mbox:{root}/boss.mbox\"]\n",
        ISSUE_RULES.replace("/var/archive", &root)
    )
}

/// The indented lines under `header` in `rules test` output, trimmed.
fn block(out: &str, header: &str) -> Vec<String> {
    let mut lines = out.lines();
    lines
        .by_ref()
        .find(|l| *l == header)
        .unwrap_or_else(|| panic!("no line {header:?} in:\n{out}"));
    lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

struct RulesFixture {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    root: PathBuf,
}

impl RulesFixture {
    fn new() -> RulesFixture {
        let dir = sandbox();
        let root = dir.path().join("archive");
        let cfg = write_config(dir.path(), &issue_config(&root));
        RulesFixture { dir, cfg, root }
    }

    fn test(&self, args: &[&str]) -> Output {
        let mut c = mailkeep(&self.cfg);
        c.args(["rules", "test"]).args(args);
        let out = run(c);
        // `rules test` never writes.
        assert!(!self.root.exists(), "rules test created {:?}", self.root);
        assert_eq!(files_under(self.dir.path()), vec![self.cfg.clone()]);
        assert_eq!(stderr(&out), "", "{}", show(&out));
        out
    }

    fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.root.display())
    }
}

const THREE: [&str; 6] = [
    "--recipient",
    "a@example.com",
    "--recipient",
    "b@example.com",
    "--recipient",
    "c@else.org",
];

#[test]
fn rules_test_per_recipient_paths_and_unmatched_recipient() {
    let f = RulesFixture::new();
    let mut args = vec!["--sender", "ext@other.org"];
    args.extend(THREE);
    let out = f.test(&args);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "config: {}\nsender <ext@other.org>, login (none), 3 recipient(s)\n",
            f.cfg.display()
        )),
        "{text}"
    );
    let rule = "rule \"each local recipient gets their own copy\": archive".to_string();
    assert_eq!(
        block(&text, "recipient <a@example.com>:"),
        vec![rule.clone(), format!("eml:{}", f.path("in/example.com/a"))]
    );
    assert_eq!(
        block(&text, "recipient <b@example.com>:"),
        vec![rule, format!("eml:{}", f.path("in/example.com/b"))]
    );
    assert_eq!(
        block(&text, "recipient <c@else.org>:"),
        vec!["no rule matched: not archived"]
    );
    assert_eq!(
        block(&text, "writes (2):"),
        vec![
            format!(
                "eml:{} (for a@example.com; envelope headers on)",
                f.path("in/example.com/a")
            ),
            format!(
                "eml:{} (for b@example.com; envelope headers on)",
                f.path("in/example.com/b")
            ),
        ]
    );
}

#[test]
fn rules_test_login_files_every_recipient_by_login() {
    let f = RulesFixture::new();
    let mut args = vec!["--sender", "ext@other.org", "--login", "bob"];
    args.extend(THREE);
    let out = f.test(&args);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("\nsender <ext@other.org>, login bob, 3 recipient(s)\n"),
        "{text}"
    );
    let mbox = format!("mbox:{}", f.path("bob/sent.mbox"));
    let maildir = format!("maildir:{}", f.path("all"));
    for r in ["a@example.com", "b@example.com", "c@else.org"] {
        assert_eq!(
            block(&text, &format!("recipient <{r}>:")),
            vec![
                "rule \"outgoing, filed by who logged in\": archive".to_string(),
                mbox.clone(),
                maildir.clone()
            ],
            "{r}"
        );
    }
    assert_eq!(
        block(&text, "writes (2):"),
        vec![
            format!("{mbox} (whole message; envelope headers on)"),
            format!("{maildir} (whole message; envelope headers on)"),
        ]
    );
}

#[test]
fn rules_test_escapes_hostile_login_and_recipient() {
    let f = RulesFixture::new();
    let out = f.test(&[
        "--sender",
        "ext@other.org",
        "--login",
        "../Evil Login",
        "--recipient",
        "x@else.org",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        block(&stdout(&out), "recipient <x@else.org>:"),
        vec![
            "rule \"outgoing, filed by who logged in\": archive".to_string(),
            format!("mbox:{}", f.path("%2e.%2fevil%20login/sent.mbox")),
            format!("maildir:{}", f.path("all")),
        ]
    );

    let out = f.test(&[
        "--sender",
        "ext@other.org",
        "--recipient",
        "../../etc@Example.COM",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        block(&stdout(&out), "recipient <../../etc@Example.COM>:"),
        vec![
            "rule \"each local recipient gets their own copy\": archive".to_string(),
            format!("eml:{}", f.path("in/example.com/%2e.%2f..%2fetc")),
        ]
    );
}

#[test]
fn rules_test_null_sender_is_skipped_and_exits_1() {
    let f = RulesFixture::new();
    for (sender, login) in [("<>", None), ("<>", Some("bob")), ("", Some("bob"))] {
        let mut args = vec!["--sender", sender];
        if let Some(l) = login {
            args.extend(["--login", l]);
        }
        args.extend(THREE);
        let out = f.test(&args);
        assert_eq!(code(&out), 1, "{sender:?} {login:?}: {}", show(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&format!(
                "\nsender <>, login {}, 3 recipient(s)\n",
                login.unwrap_or("(none)")
            )),
            "{text}"
        );
        for r in ["a@example.com", "b@example.com", "c@else.org"] {
            assert_eq!(
                block(&text, &format!("recipient <{r}>:")),
                vec!["rule \"system noise\": skip (not archived)"],
                "{r}"
            );
        }
        assert!(text.ends_with("\nwrites: nothing\n"), "{text}");
    }
}

#[test]
fn rules_test_header_from_rule() {
    let f = RulesFixture::new();
    let boss = vec![
        "rule \"the boss\": archive".to_string(),
        format!("mbox:{}", f.path("boss.mbox")),
    ];
    for from in [
        "From: boss@corp.example",
        "From: The Boss <BOSS@Corp.Example>",
    ] {
        let out = f.test(&[
            "--sender",
            "ext@other.org",
            "--recipient",
            "c@else.org",
            "--header",
            from,
            "--header",
            "Subject: quarterly numbers",
        ]);
        assert_eq!(code(&out), 0, "{from}: {}", show(&out));
        let text = stdout(&out);
        assert_eq!(block(&text, "recipient <c@else.org>:"), boss, "{from}");
        assert_eq!(
            block(&text, "writes (1):"),
            vec![format!(
                "mbox:{} (whole message; envelope headers on)",
                f.path("boss.mbox")
            )]
        );
    }
    // Not the boss: a look-alike domain, or the address in To: only.
    for header in ["From: boss@corp.example.net", "To: boss@corp.example"] {
        let out = f.test(&[
            "--sender",
            "ext@other.org",
            "--recipient",
            "c@else.org",
            "--header",
            header,
        ]);
        assert_eq!(code(&out), 1, "{header}: {}", show(&out));
        assert_eq!(
            block(&stdout(&out), "recipient <c@else.org>:"),
            vec!["no rule matched: not archived"],
            "{header}"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. file

const A: &[u8] = b"Date: Mon, 15 Jan 2024 23:30:00 -0500\r\nFrom: a@example.com\r\nSubject: late evening in New York\r\n\r\nbody a\r\n";
const B: &[u8] = b"Date: Tue, 2 Jul 2019 12:00:00 +0000\nSubject: noon UTC\n\nbody b\n";
const C: &[u8] =
    b"Date: Sat, 1 Mar 2025 01:15:00 +0200\nSubject: just after midnight in Athens\n\nbody c\n";
const NODATE: &[u8] = b"Subject: no date header\n\nbody\n";
const GARBAGE: &[u8] = b"Date: the day after tomorrow\nSubject: garbage date\n\nbody\n";
/// Parses, but day 45 is out of range: not a date either.
const BAD_DAY: &[u8] = b"Date: Mon, 45 Jan 2024 12:00:00 +0000\nSubject: day 45\n\nbody\n";

#[test]
fn file_moves_loose_eml_into_dated_dirs() {
    let dir = sandbox();
    let d = dir.path();
    let outside = sandbox();
    let target = outside.path().join("t.eml");
    write(&target, B);

    write(&d.join("a.eml"), A);
    write(&d.join("b.eml"), B);
    write(&d.join("c.eml"), C);
    write(&d.join("nodate.eml"), NODATE);
    write(&d.join("garbage.eml"), GARBAGE);
    write(&d.join("bad-day.eml"), BAD_DAY);
    write(&d.join("notes.txt"), B);
    write(&d.join(".x.eml"), B);
    write(&d.join("keep/inner.eml"), B);
    std::os::unix::fs::symlink(&target, d.join("link.eml")).expect("symlink");
    set_mtime(&d.join("nodate.eml"), utc(2021, 6, 15, 12));
    set_mtime(&d.join("garbage.eml"), utc(2020, 2, 29, 12));
    set_mtime(&d.join("bad-day.eml"), utc(2022, 12, 25, 12));
    let before = snapshot(d);
    let p = |rest: &str| format!("{}/{rest}", d.display());

    // --dry-run: says what would move, moves and creates nothing.
    let out = file_cmd("UTC0", d, None, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        [
            format!(
                "would file {} -> {} (Date header)",
                p("a.eml"),
                p("2024/01/16/")
            ),
            format!(
                "would file {} -> {} (Date header)",
                p("b.eml"),
                p("2019/07/02/")
            ),
            format!(
                "would file {} -> {} (file time)",
                p("bad-day.eml"),
                p("2022/12/25/")
            ),
            format!(
                "would file {} -> {} (Date header)",
                p("c.eml"),
                p("2025/02/28/")
            ),
            format!(
                "would file {} -> {} (file time)",
                p("garbage.eml"),
                p("2020/02/29/")
            ),
            format!(
                "would file {} -> {} (file time)",
                p("nodate.eml"),
                p("2021/06/15/")
            ),
            "6 file(s) to file".to_string(),
            String::new(),
        ]
        .join("\n")
    );
    assert_eq!(snapshot(d), before);
    for y in ["2019", "2020", "2021", "2022", "2024", "2025"] {
        assert!(!d.join(y).exists(), "--dry-run created {y}/");
    }

    // The real run.
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        [
            format!(
                "filed {} -> {} (Date header)",
                p("a.eml"),
                p("2024/01/16/a.eml")
            ),
            format!(
                "filed {} -> {} (Date header)",
                p("b.eml"),
                p("2019/07/02/b.eml")
            ),
            format!(
                "filed {} -> {} (file time)",
                p("bad-day.eml"),
                p("2022/12/25/bad-day.eml")
            ),
            format!(
                "filed {} -> {} (Date header)",
                p("c.eml"),
                p("2025/02/28/c.eml")
            ),
            format!(
                "filed {} -> {} (file time)",
                p("garbage.eml"),
                p("2020/02/29/garbage.eml")
            ),
            format!(
                "filed {} -> {} (file time)",
                p("nodate.eml"),
                p("2021/06/15/nodate.eml")
            ),
            "6 file(s) processed".to_string(),
            String::new(),
        ]
        .join("\n")
    );
    let expected = sorted(vec![
        (d.join(".x.eml"), B.to_vec()),
        (d.join("2019/07/02/b.eml"), B.to_vec()),
        (d.join("2020/02/29/garbage.eml"), GARBAGE.to_vec()),
        (d.join("2021/06/15/nodate.eml"), NODATE.to_vec()),
        (d.join("2022/12/25/bad-day.eml"), BAD_DAY.to_vec()),
        (d.join("2024/01/16/a.eml"), A.to_vec()),
        (d.join("2025/02/28/c.eml"), C.to_vec()),
        (d.join("keep/inner.eml"), B.to_vec()),
        (
            d.join("link.eml"),
            format!("-> {}", target.display()).into_bytes(),
        ),
        (d.join("notes.txt"), B.to_vec()),
    ]);
    assert_eq!(snapshot(d), expected);
    assert_eq!(std::fs::read(&target).expect("read"), B);
    // A move keeps the file's time (so a rerun would date it the same).
    assert_eq!(
        mtime(&d.join("2021/06/15/nodate.eml")),
        utc(2021, 6, 15, 12)
    );

    // Again: nothing to do.
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(stdout(&out), "0 file(s) processed\n");
    assert_eq!(snapshot(d), expected);
}

#[test]
fn file_removes_duplicates_and_never_overwrites() {
    let dir = sandbox();
    let d = dir.path();
    let p = |rest: &str| format!("{}/{rest}", d.display());
    let msg = |body: &str| {
        format!("Date: Mon, 15 Jan 2024 12:00:00 +0000\nSubject: report\n\n{body}\n").into_bytes()
    };
    let (first, second, third) = (msg("first"), msg("second"), msg("third"));
    let loose = d.join("report.eml");

    write(&loose, &first);
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        snapshot(d),
        vec![(d.join("2024/01/15/report.eml"), first.clone())]
    );

    // The same message again: a duplicate, removed.
    write(&loose, &first);
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "removed {}: identical to {}\n1 file(s) processed\n",
            p("report.eml"),
            p("2024/01/15/report.eml")
        )
    );
    assert_eq!(
        snapshot(d),
        vec![(d.join("2024/01/15/report.eml"), first.clone())]
    );

    // A different message with a taken name: report-1.eml.
    write(&loose, &second);
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "filed {} -> {} (Date header)\n1 file(s) processed\n",
            p("report.eml"),
            p("2024/01/15/report-1.eml")
        )
    );

    // A duplicate of the second one (at report-1.eml) is found too.
    write(&loose, &second);
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "removed {}: identical to {}\n1 file(s) processed\n",
            p("report.eml"),
            p("2024/01/15/report-1.eml")
        )
    );

    // A third different one: report-2.eml.
    write(&loose, &third);
    let out = file_cmd("UTC0", d, None, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        snapshot(d),
        vec![
            (d.join("2024/01/15/report-1.eml"), second),
            (d.join("2024/01/15/report-2.eml"), third),
            (d.join("2024/01/15/report.eml"), first),
        ]
    );
}

#[test]
fn file_into_another_directory() {
    let src_dir = sandbox();
    let src = src_dir.path();
    let dest_dir = sandbox();
    let dest = dest_dir.path().join("archive");
    write(&src.join("a.eml"), A);
    write(&src.join("nodate.eml"), NODATE);
    write(&src.join("notes.txt"), B);
    set_mtime(&src.join("nodate.eml"), utc(2021, 6, 15, 12));
    let before = snapshot(src);

    let out = file_cmd("UTC0", src, Some(&dest), &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "would file {s}/a.eml -> {t}/2024/01/16/ (Date header)\nwould file {s}/nodate.eml -> {t}/2021/06/15/ (file time)\n2 file(s) to file\n",
            s = src.display(),
            t = dest.display()
        )
    );
    assert!(!dest.exists(), "--dry-run created {dest:?}");
    assert_eq!(snapshot(src), before);

    let out = file_cmd("UTC0", src, Some(&dest), &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(snapshot(src), vec![(src.join("notes.txt"), B.to_vec())]);
    assert_eq!(
        snapshot(&dest),
        vec![
            (dest.join("2021/06/15/nodate.eml"), NODATE.to_vec()),
            (dest.join("2024/01/16/a.eml"), A.to_vec()),
        ]
    );
    assert!(!src.join("2024").exists() && !src.join("2021").exists());

    let out = file_cmd("UTC0", src, Some(&dest), &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(stdout(&out), "0 file(s) processed\n");
}

#[test]
fn file_into_another_filesystem() {
    use std::os::unix::fs::MetadataExt;
    let src_dir = sandbox();
    let src = src_dir.path();
    let shm = Path::new("/dev/shm");
    let other_fs = std::fs::metadata(shm)
        .map(|m| m.is_dir() && m.dev() != std::fs::metadata(src).expect("stat").dev())
        .unwrap_or(false);
    let dest_dir = match other_fs.then(|| tempfile::tempdir_in(shm)) {
        Some(Ok(d)) => d,
        _ => {
            eprintln!("skipped: no other writable filesystem at /dev/shm");
            return;
        }
    };
    let dest = dest_dir.path();
    write(&src.join("a.eml"), A);
    write(&src.join("b.eml"), B);
    // A different message already holds a.eml's name there.
    write(&dest.join("2024/01/16/a.eml"), C);

    let out = file_cmd("UTC0", src, Some(dest), &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "filed {s}/a.eml -> {t}/2024/01/16/a-1.eml (Date header)\nfiled {s}/b.eml -> {t}/2019/07/02/b.eml (Date header)\n2 file(s) processed\n",
            s = src.display(),
            t = dest.display()
        )
    );
    assert_eq!(snapshot(src), vec![]);
    // Byte-identical copies, the old file intact, no temporary left over.
    assert_eq!(
        snapshot(dest),
        vec![
            (dest.join("2019/07/02/b.eml"), B.to_vec()),
            (dest.join("2024/01/16/a-1.eml"), A.to_vec()),
            (dest.join("2024/01/16/a.eml"), C.to_vec()),
        ]
    );
}

#[test]
fn file_dates_by_the_local_time_zone() {
    let dir = sandbox();
    let d = dir.path();
    // 20:00 UTC on the 15th; 02:00 UTC on the 20th.
    write(
        &d.join("evening.eml"),
        b"Date: Mon, 15 Jan 2024 20:00:00 +0000\n\nx\n",
    );
    write(
        &d.join("night.eml"),
        b"Date: Sat, 20 Jan 2024 02:00:00 GMT\n\ny\n",
    );
    let dry = |tz: &str| {
        let out = file_cmd(tz, d, None, &["--dry-run"]);
        assert_eq!(code(&out), 0, "{}", show(&out));
        stdout(&out)
    };
    let expect = |evening: &str, night: &str| {
        format!(
            "would file {p}/evening.eml -> {p}/{evening}/ (Date header)\nwould file {p}/night.eml -> {p}/{night}/ (Date header)\n2 file(s) to file\n",
            p = d.display()
        )
    };
    assert_eq!(dry("UTC0"), expect("2024/01/15", "2024/01/20"));
    assert_eq!(dry("JST-9"), expect("2024/01/16", "2024/01/20"));
    assert_eq!(dry("EST5"), expect("2024/01/15", "2024/01/19"));

    // The machine's own zone, whatever it is: as date(1) computes it.
    let local = |secs: u64| {
        let out = Command::new("date")
            .arg("-d")
            .arg(format!("@{secs}"))
            .arg("+%Y/%m/%d")
            .output()
            .expect("date(1)");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("epoch").as_secs();
    let mut c = Command::new(bin());
    c.arg("file").arg(d).arg("--dry-run");
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        stdout(&out),
        expect(
            &local(secs(utc(2024, 1, 15, 20))),
            &local(secs(utc(2024, 1, 20, 2)))
        )
    );
}

// ---------------------------------------------------------------------------
// 4. serve

/// A running `mailkeep serve`, its output read line by line.
struct Daemon {
    child: Guard,
    out: Receiver<String>,
    err: Receiver<String>,
    out_seen: Vec<String>,
    err_seen: Vec<String>,
}

fn line_reader(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Receives lines until one contains `needle`; `None` on timeout or EOF.
fn wait_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            Err(_) => return None,
        }
    }
}

impl Daemon {
    fn start(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("MAILKEEP_LOG");
        let mut child = Guard(cmd.spawn().expect("spawn serve"));
        let out = line_reader(child.0.stdout.take().expect("stdout"));
        let err = line_reader(child.0.stderr.take().expect("stderr"));
        Daemon {
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        }
    }

    fn context(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.out_seen.join("\n"),
            self.err_seen.join("\n")
        )
    }

    fn wait_out(&mut self, needle: &str, limit: Duration) -> String {
        wait_line(&self.out, &mut self.out_seen, needle, limit).unwrap_or_else(|| {
            panic!(
                "no stdout line with {needle:?} within {limit:?}\n{}",
                self.context()
            )
        })
    }

    fn wait_err(&mut self, needle: &str, limit: Duration) -> String {
        wait_line(&self.err, &mut self.err_seen, needle, limit).unwrap_or_else(|| {
            panic!(
                "no stderr line with {needle:?} within {limit:?}\n{}",
                self.context()
            )
        })
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.0.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{sig} failed");
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match wait_timeout(&mut self.child.0, limit) {
            Some(s) => s,
            None => panic!("serve still running after {limit:?}\n{}", self.context()),
        }
    }

    /// The rest of standard output after the process exited.
    fn drain_out(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(l) = self.out.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        self.out_seen.extend(rest.clone());
        rest
    }
}

/// The embedded default listens on 127.0.0.1:8894: one such daemon at a time.
static EMBEDDED_PORT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serve_stops_on(sig: &str) {
    let _port = EMBEDDED_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let cwd = sandbox();
    let mut cmd = Command::new(bin());
    let source = if Path::new("/etc/mailkeep/mailkeep.toml").exists() {
        let cfg = write_config(
            cwd.path(),
            "[[rule]]\nname = \"everything\"\narchive = \"maildir:/var/tmp/mk\"\n",
        );
        cmd.arg("--config").arg(&cfg);
        cfg.display().to_string()
    } else {
        "<embedded default>".to_string()
    };
    cmd.arg("serve").current_dir(cwd.path());
    let started = Instant::now();
    let mut d = Daemon::start(cmd);
    d.wait_out("listening on", SERVE_LIMIT);
    assert!(
        d.out_seen[0].contains(&format!(" serve: configuration {source} (1 rule(s))")),
        "{}",
        d.context()
    );
    assert!(started.elapsed() < SERVE_LIMIT);

    d.signal(sig);
    let stopping = Instant::now();
    let status = d.wait_exit(SERVE_LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", d.context());
    assert!(stopping.elapsed() < SERVE_LIMIT);
    let rest = d.drain_out();
    assert!(
        rest.contains(&format!("SIG{sig}: stopping")),
        "{}",
        d.context()
    );
    assert!(
        rest.last().is_some_and(|l| l.starts_with(&format!(
            "mailkeep serve: stopped (configuration {source}; not archived: 0 retried by the MTA, 0 accepted unarchived)"
        ))),
        "{}",
        d.context()
    );
}

#[test]
fn serve_embedded_default_stops_on_sigterm() {
    serve_stops_on("TERM");
}

#[test]
fn serve_embedded_default_stops_on_sigint() {
    serve_stops_on("INT");
}

#[test]
fn serve_sighup_with_invalid_config_keeps_running() {
    let dir = sandbox();
    let root = dir.path().join("archive");
    let two = format!(
        "[[rule]]\nname = \"noise\"\nsender = \"<>\"\nskip = true\n\n[[rule]]\nname = \"all\"\narchive = \"maildir:{}/all\"\n",
        root.display()
    );
    let cfg = write_config(dir.path(), &two);
    let mut cmd = mailkeep(&cfg);
    cmd.arg("serve").current_dir(dir.path());
    let mut d = Daemon::start(cmd);
    d.wait_out("listening on", SERVE_LIMIT);
    assert!(
        d.out_seen[0].contains(&format!(
            " serve: configuration {} (2 rule(s))",
            cfg.display()
        )),
        "{}",
        d.context()
    );

    // Break the file, then SIGHUP: the error is logged, serve keeps going.
    let bad = format!("{two}\n[[rule]]\nname = \"escape\"\narchive = \"mbox:/x/../{{login}}\"\n");
    let bad_line = line_of(&bad, "archive = \"mbox:/x/..", 0);
    std::fs::write(&cfg, &bad).expect("write");
    d.signal("HUP");
    let logged = strip_ansi(&d.wait_err("reload failed", SERVE_LIMIT));
    assert!(
        logged.contains(&format!(
            "reload failed, keeping the previous configuration: {}:{bad_line}: ",
            cfg.display()
        )),
        "{logged}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        d.child.0.try_wait().expect("try_wait").is_none(),
        "serve exited after SIGHUP with a bad config\n{}",
        d.context()
    );

    // A valid file again (three rules): reloaded.
    let three = format!(
        "{two}\n[[rule]]\nname = \"more\"\narchive = \"mbox:{}/more.mbox\"\n",
        root.display()
    );
    std::fs::write(&cfg, three).expect("write");
    d.signal("HUP");
    let logged = strip_ansi(&d.wait_err("configuration reloaded", SERVE_LIMIT));
    assert!(logged.contains("rules=3"), "{logged}");

    d.signal("TERM");
    let status = d.wait_exit(SERVE_LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", d.context());
    let rest = d.drain_out();
    assert!(rest.contains(&"SIGTERM: stopping".to_string()), "{rest:?}");
    // serve wrote nothing.
    assert!(!root.exists());
}

#[test]
fn serve_logs_have_no_ansi_escapes_when_not_a_terminal() {
    let dir = sandbox();
    let cfg = write_config(dir.path(), "[[rule]]\narchive = \"maildir:/var/tmp/mk\"\n");
    let mut cmd = mailkeep(&cfg);
    cmd.arg("serve").current_dir(dir.path());
    let mut d = Daemon::start(cmd);
    d.wait_out("listening on", SERVE_LIMIT);
    d.signal("HUP");
    let logged = d.wait_err("configuration reloaded", SERVE_LIMIT);
    d.signal("TERM");
    d.wait_exit(SERVE_LIMIT);
    assert!(!logged.contains('\u{1b}'), "{logged:?}");
}

// ---------------------------------------------------------------------------
// 5. postfix-snippet

#[test]
fn postfix_snippet_pipe_defaults() {
    let mut c = Command::new(bin());
    c.args(["postfix-snippet", "pipe"]);
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    for needle in [
        "${sasl_username}",
        "${client_address}",
        "${queue_id}",
        "--sender=${sender} --recipient=${recipient} --login=${sasl_username}",
        "--reinject smtp://127.0.0.1:10026",
        "\n  flags=q user=mailkeep null_sender=\n",
        "\n  argv=/usr/local/bin/mailkeep --config /etc/mailkeep/mailkeep.toml pipe\n",
        "\n127.0.0.1:10026 inet n",
        "\nmailbox_command = /usr/local/bin/mailkeep --config /etc/mailkeep/mailkeep.toml pipe --strip-from-line ",
        "\ncontent_filter = mailkeep:dummy\n",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn postfix_snippet_pipe_with_options() {
    let mut c = Command::new(bin());
    c.args([
        "--config",
        "/srv/mk/mailkeep.toml",
        "postfix-snippet",
        "pipe",
        "--binary",
        "/opt/mk",
        "--user",
        "archiver",
        "--reinject-port",
        "10030",
    ]);
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    for needle in [
        "${sasl_username}",
        "${client_address}",
        "${queue_id}",
        "--reinject smtp://127.0.0.1:10030",
        "\n  flags=q user=archiver null_sender=\n",
        "\n  argv=/opt/mk --config /srv/mk/mailkeep.toml pipe\n",
        "\n127.0.0.1:10030 inet n",
        "\nmailbox_command = /opt/mk --config /srv/mk/mailkeep.toml pipe ",
        "--shell /usr/sbin/nologin archiver\n",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    for absent in [
        "10026",
        "/usr/local/bin/mailkeep",
        "user=mailkeep",
        "/etc/mailkeep/mailkeep.toml",
    ] {
        assert!(!text.contains(absent), "{absent:?} still in:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// 6. exit codes of the command line

#[test]
fn usage_error_exits_64_and_archives_nothing() {
    let dir = sandbox();
    let root = dir.path().join("archive");
    let cfg = write_config(
        dir.path(),
        &format!("[[rule]]\narchive = \"maildir:{}/all\"\n", root.display()),
    );
    let mut c = mailkeep(&cfg);
    c.args(["pipe", "--bogus", "--sender", "a@example.com"]);
    let out = run(c);
    assert_eq!(code(&out), 64, "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(
        stderr(&out).contains("unexpected argument '--bogus'"),
        "{}",
        show(&out)
    );
    assert!(!root.exists());

    // A usage error found after parsing is 64 too.
    let mut c = mailkeep(&cfg);
    c.args(["rules", "test", "--capture", "bogus"]);
    let out = run(c);
    assert_eq!(code(&out), 64, "{}", show(&out));
    assert!(
        stderr(&out).starts_with("mailkeep: --capture \"bogus\": "),
        "{}",
        show(&out)
    );
}

#[test]
fn help_and_version_exit_0() {
    let mut c = Command::new(bin());
    c.arg("--help");
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("Usage: mailkeep "), "{text}");
    for sub in [
        "serve",
        "pipe",
        "file",
        "check-config",
        "rules",
        "postfix-snippet",
    ] {
        assert!(
            text.contains(&format!("\n  {sub} ")),
            "{sub} not in:\n{text}"
        );
    }

    let mut c = Command::new(bin());
    c.args(["pipe", "--help"]);
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("--reinject <TARGET>"),
        "{}",
        show(&out)
    );

    let mut c = Command::new(bin());
    c.arg("--version");
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).starts_with("mailkeep "), "{}", show(&out));
}

#[test]
fn missing_subcommand_is_a_usage_error() {
    for args in [&[][..], &["rules"][..]] {
        let mut c = Command::new(bin());
        c.args(args);
        let out = run(c);
        assert_eq!(code(&out), 64, "{args:?}: {}", show(&out));
    }
}

#[test]
fn postfix_snippet_milter_is_valid_postfix_configuration() {
    let mut c = Command::new(bin());
    c.args(["postfix-snippet", "milter"]);
    let out = run(c);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "smtpd_milters = inet:127.0.0.1:8894",
        "non_smtpd_milters = inet:127.0.0.1:8894",
        "milter_protocol = 6",
        "milter_default_action = tempfail",
        "{auth_authen}",
        "INPUT_MAIL_FILTER(`mailkeep', `S=inet:8894@127.0.0.1, F=T",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
    // The main.cf part, pasted into a real Postfix configuration, parses
    // back to the same values.
    let dir = sandbox();
    let main_cf: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# /etc/postfix/main.cf"))
        .take_while(|l| !l.contains("Sendmail"))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("main.cf"), &main_cf).unwrap();
    std::fs::write(dir.path().join("master.cf"), "").unwrap();
    let out = Command::new("postconf")
        .arg("-c")
        .arg(dir.path())
        .arg("-n")
        .output()
        .expect("postconf (package postfix)");
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in main_cf.lines() {
        assert!(parsed.contains(line), "postconf lost {line:?}:\n{parsed}");
    }

    let mut c = Command::new(bin());
    c.args([
        "postfix-snippet",
        "milter",
        "--listen",
        "unix:/var/spool/postfix/mailkeep/milter.sock",
    ]);
    let text = String::from_utf8_lossy(&run(c).stdout).into_owned();
    assert!(text.contains("smtpd_milters = unix:/var/spool/postfix/mailkeep/milter.sock"));
    assert!(text.contains("S=local:/var/spool/postfix/mailkeep/milter.sock"));
}
