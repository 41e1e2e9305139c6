//! Administration that cannot break the archive: mailkeep's own directories
//! are never another user's, clean-up never follows a link, commands run as
//! root leave the store usable by its owner, and readers need no write
//! access.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Runs `serve` with `config` for at most `for_at_most` (it is killed then);
/// returns its exit code if it exited by itself, and its stderr.
fn serve_briefly(dir: &Path, config: &str, for_at_most: Duration) -> (Option<i32>, String) {
    let cfg = write_config(dir, config);
    let log = dir.join("serve-briefly.log");
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + for_at_most;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Files like an archive's, two levels deep, last changed long before the
/// dedup ledger's 8-day horizon.
fn old_archive(dir: &Path) -> Vec<PathBuf> {
    let files = vec![
        dir.join("bob/sent.mbox"),
        dir.join("segments/00000001.seg"),
        dir.join("catalog.sqlite"),
    ];
    let old = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    for f in &files {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"archived mail").unwrap();
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    files
}

fn filter_config(port: u16, dedup_lines: &str, archive: &Path) -> String {
    format!(
        "{dedup_lines}\n[filter]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[rule]]\nname = \"all\"\narchive = [\"mbox:{}/{{login}}/sent.mbox\"]\n",
        archive.display()
    )
}

fn assert_all_there(files: &[PathBuf]) {
    for f in files {
        assert!(f.exists(), "{} was deleted", f.display());
    }
}

/// The classic attack on a predictable name in a world-writable directory:
/// another user plants the ledger's directory (here `/tmp`-like, sticky and
/// world-writable, where the ledger defaulted to before) as a link into the
/// archive before mailkeep first starts. serve must refuse it and delete
/// nothing.
#[test]
fn serve_refuses_a_planted_link_at_a_shared_dedup_location_and_deletes_nothing() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let files = old_archive(&archive);
    let shared = dir.path().join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let planted = shared.join("mailkeep-filter-dedup");
    std::os::unix::fs::symlink(&archive, &planted).unwrap();
    let config = filter_config(
        free_port(),
        &format!("[spool]\ndir = \"{}/spool\"\n", dir.path().display()),
        &archive,
    )
    .replace(
        "[filter]\n",
        &format!("[filter]\ndedup_dir = \"{}\"\n", planted.display()),
    );
    let (code, log) = serve_briefly(dir.path(), &config, Duration::from_secs(3));
    assert_all_there(&files);
    assert_eq!(code, Some(78), "serve must refuse the ledger: {log}");
    assert!(log.contains("dedup_dir"), "{log}");
}

/// `dedup_dir` set to an explicit path that is a link into the archive.
#[test]
fn serve_refuses_a_dedup_dir_that_is_a_link() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let files = old_archive(&archive);
    let link = dir.path().join("ledger");
    std::os::unix::fs::symlink(&archive, &link).unwrap();
    let config = filter_config(
        free_port(),
        &format!("[spool]\ndir = \"{}/spool\"\n", dir.path().display()),
        &archive,
    )
    .replace(
        "[filter]\n",
        &format!("[filter]\ndedup_dir = \"{}\"\n", link.display()),
    );
    let (code, log) = serve_briefly(dir.path(), &config, Duration::from_secs(3));
    assert_all_there(&files);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("filter.dedup_dir"), "{log}");
}

/// `dedup_dir` pointed at the archive itself (an admin's mistake): whether
/// the configuration is refused or serve runs, no archive file goes.
#[test]
fn a_dedup_dir_pointed_at_the_archive_deletes_nothing() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let files = old_archive(&archive);
    set_mode(&archive, 0o700);
    let config = filter_config(
        free_port(),
        &format!("[spool]\ndir = \"{}/spool\"\n", dir.path().display()),
        &archive,
    )
    .replace(
        "[filter]\n",
        &format!("[filter]\ndedup_dir = \"{}\"\n", archive.display()),
    );
    let (_code, log) = serve_briefly(dir.path(), &config, Duration::from_secs(3));
    assert_all_there(&files);
    assert!(!log.contains("old dedup keys removed"), "{log}");
}

// ---------------------------------------------------------------------------
// Ownership: root's commands leave the store usable by its owner; readers
// need no write access.

const NOBODY: u32 = 65534;
/// An auditor: neither the store's owner nor root, member of [`AUDITORS`].
const AUDITOR: u32 = 4242;
const AUDITORS: u32 = 4343;

/// A mailkeep command run as `uid` with primary group `gid` and the
/// supplementary `groups`.
fn mailkeep_as(uid: u32, gid: u32, groups: &[u32], config: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        c.arg(format!("--groups={}", list.join(",")));
    }
    c.arg(bin()).arg("--config").arg(config);
    c
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

/// Every file and directory under `dir` (itself included) with its owner,
/// group and mode.
fn owners(dir: &Path) -> Vec<(PathBuf, u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                todo.push(e.expect("entry").path());
            }
        }
        out.push((p, m.uid(), m.gid(), m.mode() & 0o7777));
    }
    out.sort();
    out
}

/// An mbox of `n` messages of about `size` bytes of incompressible text.
fn write_mbox(path: &Path, tag: &str, n: usize, size: usize) {
    python(
        "import base64, mailbox, os, sys, email.message\n\
         box = mailbox.mbox(sys.argv[1])\n\
         for i in range(int(sys.argv[3])):\n\
         \x20   m = email.message.EmailMessage()\n\
         \x20   m['From'] = 'alice@example.com'\n\
         \x20   m['To'] = 'bob@example.org'\n\
         \x20   m['Subject'] = '%s %d' % (sys.argv[2], i)\n\
         \x20   m['Date'] = 'Tue, 01 Dec 2026 10:00:%02d +0000' % i\n\
         \x20   m.set_content(base64.encodebytes(os.urandom(int(sys.argv[4]))).decode())\n\
         \x20   box.add(m)\n\
         box.close()\n",
        &[
            path.to_str().unwrap(),
            tag,
            &n.to_string(),
            &size.to_string(),
        ],
    );
}

fn swaks(port: u16, subject: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "carol@example.com", "--to", "dave@example.org"])
        .args(["--header", &format!("Subject: {subject}")])
        .output()
        .expect("swaks (scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn store_config(dir: &Path, archive: &Path, port: u16, extra_store: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[spool]\ndir = \"{spool}\"\n\n[store]\npath = \"{store}\"\nsegment_size = \"1M\"\n{extra_store}\n\n\
             [filter]\nlisten = \"127.0.0.1:{port}\"\ndedup_dir = \"{dedup}\"\n\n\
             [[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
            spool = archive.join("spool").display(),
            store = archive.join("store").display(),
            dedup = archive.join("dedup").display(),
        ),
    )
}

/// Finding: a root `import` before the daemon's first start left the whole
/// store owned by root (serve as its user then exited 75), and a root import
/// opening a new segment on a live store made it root's (the daemon's next
/// write failed and every message was deferred). Now what the store creates
/// belongs to the store directory's owner.
#[test]
fn root_import_leaves_the_store_to_its_owner_and_serve_as_that_user_archives() {
    if !is_root() {
        eprintln!("skipped: needs root to run commands as two users");
        return;
    }
    let dir = sandbox();
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    chown(&archive, NOBODY, NOBODY);
    set_mode(&archive, 0o700);
    let old = dir.path().join("old.mbox");
    write_mbox(&old, "before", 3, 2000);

    let port = free_port();
    let config = store_config(dir.path(), &archive, port, "");
    let out = mailkeep(&config).arg("import").arg(&old).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root_owned: Vec<_> = owners(&archive)
        .into_iter()
        .filter(|(_, uid, _, _)| *uid != NOBODY)
        .collect();
    assert!(
        root_owned.is_empty(),
        "not the store owner's: {root_owned:#?}"
    );

    let text = std::fs::read_to_string(&config).unwrap();
    let mut serve = Serve::start_on(
        dir.path(),
        port,
        |_| text.clone(),
        &["SMTP archive receiver listening on"],
        true,
    );
    let reply = swaks(port, "first live");
    assert!(reply.contains("250 2.0.0 Ok: archived"), "{reply}");

    // A root import on the live store that fills a segment and opens new ones.
    // Two imports: the first fills the segment, the second must open one.
    for name in ["big1", "big2"] {
        let big = dir.path().join(format!("{name}.mbox"));
        write_mbox(&big, name, 2, 600_000);
        let out = mailkeep(&config).arg("import").arg(&big).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let segments = std::fs::read_dir(archive.join("store/segments"))
        .unwrap()
        .count();
    assert!(
        segments >= 2,
        "the import was to open a new segment: {segments}"
    );
    let root_owned: Vec<_> = owners(&archive)
        .into_iter()
        .filter(|(_, uid, _, _)| *uid != NOBODY)
        .collect();
    assert!(
        root_owned.is_empty(),
        "not the store owner's: {root_owned:#?}"
    );

    let reply = swaks(port, "second live");
    assert!(reply.contains("250 2.0.0 Ok: archived"), "{reply}");
    serve.stop();

    let out = mailkeep_as(NOBODY, NOBODY, &[], &config)
        .arg("verify")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mailkeep_as(NOBODY, NOBODY, &[], &config)
        .args(["search", "--json", ""])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 9);
}

/// Finding: search, verify and the other readers opened the store's lock for
/// writing, so an auditor with read access only got exit 74, and a
/// permission error read "no catalog.sqlite there". With `[store] group`,
/// members of the group search and verify without any write access; others
/// are told "permission denied" and as whom.
#[test]
fn a_third_user_with_group_read_access_searches_and_verifies() {
    if !is_root() {
        eprintln!("skipped: needs root to run commands as three users");
        return;
    }
    let dir = sandbox();
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    chown(&archive, NOBODY, AUDITORS);
    set_mode(&archive, 0o750);
    let old = dir.path().join("old.mbox");
    write_mbox(&old, "kept", 2, 2000);
    let config = store_config(
        dir.path(),
        &archive,
        free_port(),
        &format!("group = \"{AUDITORS}\""),
    );
    let out = mailkeep(&config).arg("import").arg(&old).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, uid, gid, mode) in owners(&archive.join("store")) {
        assert_eq!((uid, gid), (NOBODY, AUDITORS), "{}", path.display());
        // The audit log is the one file the group appends to: every
        // auditor's search is recorded in it.
        let allowed = if path.ends_with("audit.log") {
            0o007
        } else {
            0o027
        };
        assert_eq!(
            mode & allowed,
            0,
            "{}: {mode:o} gives the group write or others access",
            path.display()
        );
    }
    let audit_log = archive.join("store").join("audit.log");
    assert_eq!(
        std::fs::metadata(&audit_log).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let before = owners(&archive);

    let auditor = || mailkeep_as(AUDITOR, AUDITOR, &[AUDITORS], &config);
    let out = auditor().args(["search", "--json", ""]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = auditor().arg("verify").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = auditor().args(["show", "1", "--raw"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Subject: kept "));
    let out = auditor().arg("stats").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(owners(&archive), before, "a reader changed the store");
    // Each of the auditor's commands left its trace, in order, as them.
    let log = std::fs::read_to_string(&audit_log).unwrap();
    let mine: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["uid"] == AUDITOR)
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(mine, ["search", "verify", "show", "stats"], "{log}");

    // Not in the group: refused, and told so.
    let out = mailkeep_as(AUDITOR, AUDITOR, &[], &config)
        .args(["search", ""])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("Permission denied") && err.contains("uid 4242"),
        "{err}"
    );
    assert!(!err.contains("no catalog.sqlite"), "{err}");
}

// ---------------------------------------------------------------------------
// Files holding mail are never readable by others.

/// Finding: zip and eml exports were created 0644. Every file and directory
/// that pipe (into every destination), import, export (each format) and
/// checkpoint create is walked: none may give the group or others any
/// access. Runs with the usual umask 022, which is what made them 0644.
#[test]
fn every_file_the_commands_create_is_private() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let exports = dir.path().join("exports");
    for d in [&archive, &exports] {
        std::fs::create_dir(d).unwrap();
    }
    let config = write_config(
        dir.path(),
        &format!(
            "[spool]\ndir = \"{a}/spool\"\nthreshold = \"1k\"\n\n[store]\npath = \"{a}/store\"\n\n\
             [[rule]]\nname = \"all\"\nper_recipient = true\narchive = [\"store\", \"mbox:{a}/mbox/{{recipient_domain}}/all.mbox\", \
             \"maildir:{a}/maildir/{{recipient_local}}\", \"eml:{a}/eml/{{recipient_domain}}/{{recipient_local}}\"]\n",
            a = archive.display()
        ),
    );
    let mut big =
        b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b"x".as_slice(), 4000).flatten());
    big.extend_from_slice(b"\r\n");
    let umask = |cmd: &mut Command| {
        // The shell sets the usual umask, then runs the command.
        let mut c = Command::new("sh");
        c.arg("-c").arg("umask 022; exec \"$@\"").arg("sh");
        c.arg(cmd.get_program());
        c.args(cmd.get_args());
        c
    };
    let mut pipe_cmd = mailkeep(&config);
    pipe_cmd.args([
        "pipe",
        "--sender",
        "alice@example.com",
        "--recipient",
        "bob@example.org",
    ]);
    let out = run_with_input(umask(&mut pipe_cmd), &big);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = dir.path().join("old.mbox");
    write_mbox(&old, "old", 2, 500);
    let mut steps: Vec<Vec<String>> = vec![vec!["import".into(), old.display().to_string()]];
    for (format, name) in [("zip", "x.zip"), ("eml", "eml-dir"), ("mbox", "x.mbox")] {
        steps.push(
            ["export", "", "--format", format, "--out"]
                .iter()
                .map(|s| s.to_string())
                .chain([exports.join(name).display().to_string()])
                .collect(),
        );
    }
    steps.push(vec![
        "checkpoint".into(),
        "--out".into(),
        exports.join("checkpoint").display().to_string(),
    ]);
    for args in &steps {
        let mut c = mailkeep(&config);
        c.args(args);
        let out = umask(&mut c).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut walked = 0;
    for top in [&archive, &exports] {
        for (path, _, _, mode) in owners(top) {
            if &path == top || path.ends_with("checkpoint") {
                continue; // made by the test; the chain head holds no mail
            }
            walked += 1;
            assert_eq!(mode & 0o077, 0, "{} is {mode:04o}", path.display());
        }
    }
    assert!(walked > 20, "only {walked} files were looked at");

    // An export that matches nothing leaves nothing behind.
    let none = exports.join("none.zip");
    let out = mailkeep(&config)
        .args(["export", "subject:nosuchword", "--format", "zip", "--out"])
        .arg(&none)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!none.exists() && !exports.join("none.zip.partial").exists());
}

/// Finding: the README's `runuser ... &` then `kill -HUP "$!"` signalled
/// runuser, which does not pass SIGHUP on. `serve --pidfile` names the
/// daemon itself: HUP through it reloads, TERM stops, and the file goes.
#[test]
fn serve_pidfile_names_the_daemon_for_reload_and_stop() {
    let dir = sandbox();
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[filter]\nlisten = \"127.0.0.1:{port}\"\ndedup_dir = \"{d}/dedup\"\n\n\
             [spool]\ndir = \"{d}/spool\"\n\n[[rule]]\nname = \"all\"\narchive = [\"maildir:{d}/md\"]\n",
            d = dir.path().display()
        ),
    );
    let pidfile = dir.path().join("run/mailkeep.pid");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let log = dir.path().join("serve.log");
    // Through runuser-like indirection: a shell that stays the parent.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("\"$@\"; echo exited $?")
        .arg("sh")
        .arg(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--pidfile"])
        .arg(&pidfile)
        .stdout(std::fs::File::create(dir.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "no pidfile");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, child.id(), "the pidfile names the shell, not mailkeep");
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    kill("-HUP");
    let reloaded = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("configuration reloaded")
    };
    while !reloaded() {
        assert!(
            Instant::now() < deadline,
            "no reload: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill("-TERM");
    assert!(child.wait().unwrap().success());
    let out = std::fs::read_to_string(dir.path().join("serve.out")).unwrap();
    assert!(out.contains("exited 0"), "{out}");
    assert!(!pidfile.exists(), "the pidfile outlived serve");
}

// ---------------------------------------------------------------------------
// The smaller findings.

fn store_only_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[spool]\ndir = \"{d}/spool\"\n\n[store]\npath = \"{d}/store\"\n\n\
             [[rule]]\nname = \"system noise\"\nsender = [\"root@*\"]\nskip = true\n\n\
             [[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
            d = dir.display()
        ),
    )
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `import` that left a message out (over its size limit) exited 0: scripts
/// saw success although the summary listed the skip.
#[test]
fn import_that_skips_a_message_over_the_limit_exits_65() {
    let dir = sandbox();
    let config = store_only_config(dir.path());
    let mbox = dir.path().join("in.mbox");
    write_mbox(&mbox, "sized", 2, 3000);
    let out = mailkeep(&config)
        .args(["import", "--max-message-size", "1k"])
        .arg(&mbox)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", stdout_of(&out));
    assert!(
        stdout_of(&out).contains("larger than"),
        "{}",
        stdout_of(&out)
    );
    // Files that are not mail are not a failure.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("readme.txt"), b"just some notes\n").unwrap();
    let out = mailkeep(&config)
        .arg("import")
        .arg(&notes)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
}

/// `show --headers` wrote a Subject's terminal escape sequences raw.
#[test]
fn show_headers_escapes_terminal_control_sequences() {
    let dir = sandbox();
    let config = store_only_config(dir.path());
    let message = b"From: a@example.com\r\nSubject: \x1b]0;owned\x07\x1b[2Jhello\r\n\r\nbody\r\n";
    let mut c = mailkeep(&config);
    c.args([
        "pipe",
        "--sender",
        "a@example.com",
        "--recipient",
        "b@example.org",
    ]);
    let out = run_with_input(c, message);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mailkeep(&config)
        .args(["show", "1", "--headers"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
        "{:?}",
        stdout_of(&out)
    );
    assert!(
        stdout_of(&out).contains("Subject: \\x1b]0;owned\\x07\\x1b[2Jhello"),
        "{}",
        stdout_of(&out)
    );
    let raw = mailkeep(&config)
        .args(["show", "1", "--raw"])
        .output()
        .unwrap();
    assert_eq!(raw.stdout, message, "--raw stays byte-exact");
}

/// A skip rule was logged as "no rule selected this message".
#[test]
fn a_skip_rule_is_logged_as_a_skip_by_that_rule() {
    let dir = sandbox();
    let config = store_only_config(dir.path());
    let mut c = mailkeep(&config);
    c.env("MAILKEEP_LOG", "info");
    c.args([
        "pipe",
        "--sender",
        "root@example.com",
        "--recipient",
        "b@example.org",
    ]);
    let out = run_with_input(c, b"Subject: cron\r\n\r\nbody\r\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("skipped by rule") && err.contains("system noise"),
        "{err}"
    );
    assert!(!err.contains("no rule"), "{err}");
}

/// Imports without an envelope showed `<>` (a bounce) in the table while
/// JSON said null; `show --envelope` gave `received` in epoch microseconds;
/// `verify` named a BLAKE3 hash where people look deliveries up by id.
#[test]
fn sender_received_and_verify_speak_the_users_terms() {
    let dir = sandbox();
    let config = store_only_config(dir.path());
    let mbox = dir.path().join("in.mbox");
    write_mbox(&mbox, "imported", 1, 200);
    assert!(mailkeep(&config)
        .arg("import")
        .arg(&mbox)
        .status()
        .unwrap()
        .success());
    let mut c = mailkeep(&config);
    c.args(["pipe", "--sender", "", "--recipient", "b@example.org"]);
    let out = run_with_input(c, b"Subject: a bounce\r\n\r\nundeliverable\r\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let table = stdout_of(&mailkeep(&config).args(["search", ""]).output().unwrap());
    let row = |subject: &str| {
        table
            .lines()
            .find(|l| l.contains(subject))
            .unwrap_or_else(|| panic!("no {subject} in {table}"))
            .to_string()
    };
    assert!(
        !row("imported 0").contains("<>"),
        "an unknown sender shown as a bounce:\n{table}"
    );
    assert!(row("a bounce").contains("<>"), "{table}");

    let env = stdout_of(
        &mailkeep(&config)
            .args(["show", "1", "--envelope"])
            .output()
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(&env).expect("JSON");
    let received = v["received"]
        .as_str()
        .unwrap_or_else(|| panic!("received: {env}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(received).is_ok(),
        "{received}"
    );

    // Damage the stored record of the imported message (delivery 1).
    let seg = std::fs::read_dir(dir.path().join("store/segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = 16 + (bytes.len() - 16) / 4;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let out = mailkeep(&config).arg("verify").output().unwrap();
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(text.contains("delivery 1"), "{text}");
}
