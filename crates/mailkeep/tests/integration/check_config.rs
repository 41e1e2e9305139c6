//! `check-config`: every error in one run at the line of the value at
//! fault, values that can never match refused, mailkeep's own directories
//! kept apart from the archive, and `--as USER` asking the kernel whether
//! that user can write where the configuration says.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Runs a command to its end (at most 30 s) and returns its output.
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).env_remove("MAILKEEP_LOG");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

fn check(config: &Path, args: &[&str]) -> Output {
    let mut c = mailkeep(config);
    c.arg("check-config").args(args);
    run(c)
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn show(out: &Output) -> String {
    format!(
        "{:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

#[test]
fn check_config_reports_every_error_at_the_line_of_its_value() {
    let dir = sandbox();
    let d = dir.path().display();
    let text = format!(
        "[spool]\n\
         dir = \"{d}/spool\"\n\
         \n\
         [filter]\n\
         listen = \"127.0.0.1:10025\"\n\
         dedup_dir = \"{d}/dedup\"\n\
         allowed_clients = [\n\
         \x20 \"127.0.0.0/8\",\n\
         \x20 \"10.0.0.0/33\",\n\
         ]\n\
         \n\
         [[rule]]\n\
         name = \"internal\"\n\
         client = [\"10.0.0.0/8\", \"999.1.1.1\"]\n\
         sender = \"<bob@example.com>\"\n\
         archive = [\n\
         \x20 \"mbox:{d}/archive/internal.mbox\",\n\
         \x20 \"mbox:{d}/archive/../{{login}}\",\n\
         ]\n\
         \n\
         [[rule]]\n\
         name = \"relative\"\n\
         archive = \"maildir:archive/all\"\n"
    );
    let cfg = write_config(dir.path(), &text);
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    let c = cfg.display();
    assert_eq!(
        stderr_lines(&out),
        [
            format!("mailkeep: {c}:{}: filter.allowed_clients: \"10.0.0.0/33\" is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)", line(&text, "\"10.0.0.0/33\"")),
            format!("mailkeep: {c}:{}: rule 1 (internal): client: \"999.1.1.1\" is not an IP address or CIDR (like 192.0.2.1, 10.0.0.0/8, 2001:db8::/32)", line(&text, "999.1.1.1")),
            format!("mailkeep: {c}:{}: rule 1 (internal): sender: \"<bob@example.com>\": write the address without angle brackets", line(&text, "<bob@")),
            format!("mailkeep: {c}:{}: rule 1 (internal): archive: \"mbox:{d}/archive/../{{login}}\": a path component is '..', which could leave the destination's directory", line(&text, "/../{login}")),
            format!("mailkeep: {c}:{}: rule 2 (relative): archive: \"maildir:archive/all\": the path must be absolute (start with /)", line(&text, "maildir:archive/all")),
        ]
    );
}

#[test]
fn serve_fails_with_every_error_too() {
    let dir = sandbox();
    let text = "[milter]\nlisten = \"inet:127.0.0.1:1\"\nsocket_mode = \"rw\"\n\n[[rule]]\nclient = \"10.0.0.0/33\"\narchive = \"mbox:relative.mbox\"\n";
    let cfg = write_config(dir.path(), text);
    let mut c = mailkeep(&cfg);
    c.arg("serve").current_dir(dir.path());
    let out = run(c);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    let lines = stderr_lines(&out);
    let at: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap_or(""))
        .collect();
    let c = cfg.display().to_string();
    assert_eq!(
        at,
        [format!("{c}:3"), format!("{c}:6"), format!("{c}:7")],
        "{}",
        show(&out)
    );
}

#[test]
fn check_config_refuses_a_dedup_dir_in_the_archive_at_its_line() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let text = format!(
        "[spool]\ndir = \"{d}/spool\"\n\n[filter]\nlisten = \"127.0.0.1:10025\"\ndedup_dir = \"{a}\"\n\n\
         [[rule]]\nname = \"sent\"\nlogin = \"*\"\narchive = \"mbox:{a}/{{login}}/sent.mbox\"\n",
        d = dir.path().display(),
        a = archive.display()
    );
    let cfg = write_config(dir.path(), &text);
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert_eq!(
        stderr_lines(&out),
        [format!(
            "mailkeep: {}:6: filter.dedup_dir: {a} is {a} (rule 1 (sent): \"mbox:{a}/{{login}}/sent.mbox\"): mailkeep's own files must not share a directory with the archive",
            cfg.display(),
            a = archive.display()
        )]
    );

    // Inside the store, or containing it: refused the same way.
    for dedup in [dir.path().join("store/dedup"), dir.path().to_path_buf()] {
        let text = format!(
            "[spool]\ndir = \"{d}/spool\"\n[filter]\nlisten = \"127.0.0.1:10025\"\ndedup_dir = \"{}\"\n\
             [store]\npath = \"{d}/store\"\n[[rule]]\narchive = \"store\"\n",
            dedup.display(),
            d = dir.path().display()
        );
        let cfg = write_config(dir.path(), &text);
        let out = check(&cfg, &[]);
        assert_eq!(out.status.code(), Some(78), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "mailkeep: {}:5: filter.dedup_dir: ",
                cfg.display()
            )) && err.contains("(store.path)"),
            "{dedup:?}: {err}"
        );
    }
}

/// Finding 0 of issue 12: with `dedup_dir` set to the archive directory,
/// `serve` pruned the "ledger" at start and deleted archived mail older
/// than 8 days. It must refuse to start, and leave every file in place.
#[test]
fn serve_with_dedup_dir_in_the_archive_refuses_to_start_and_deletes_nothing() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let mbox = archive.join("bob/sent.mbox");
    std::fs::create_dir_all(mbox.parent().unwrap()).unwrap();
    std::fs::write(
        &mbox,
        b"From a@b Thu Jan  1 00:00:00 2026\nSubject: old\n\nkept\n\n",
    )
    .unwrap();
    let old = SystemTime::now() - Duration::from_secs(30 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&mbox)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let text = format!(
        "[spool]\ndir = \"{d}/spool\"\n[filter]\nlisten = \"127.0.0.1:{port}\"\ndedup_dir = \"{a}\"\n\
         [[rule]]\nlogin = \"*\"\narchive = \"mbox:{a}/{{login}}/sent.mbox\"\n",
        d = dir.path().display(),
        a = archive.display(),
        port = free_port()
    );
    let cfg = write_config(dir.path(), &text);
    let mut c = mailkeep(&cfg);
    c.arg("serve").current_dir(dir.path());
    // Today's code would keep serving: `run` kills it after 30 s, and the
    // exit code says so.
    let out = run(c);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("filter.dedup_dir"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&mbox).expect("the archived mbox is still there"),
        b"From a@b Thu Jan  1 00:00:00 2026\nSubject: old\n\nkept\n\n"
    );
}

#[test]
fn check_config_refuses_own_directories_another_user_could_create_first() {
    let dir = sandbox();
    // A predictable name directly in world-writable /tmp.
    let name = format!("/tmp/mailkeep-check-config-test-{}", std::process::id());
    let text = format!(
        "[spool]\ndir = \"{name}/spool\"\n[filter]\nlisten = \"127.0.0.1:10025\"\ndedup_dir = \"{}/dedup\"\n[[rule]]\narchive = \"maildir:{}/md\"\n",
        dir.path().display(),
        dir.path().display()
    );
    let cfg = write_config(dir.path(), &text);
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert_eq!(
        stderr_lines(&out),
        [format!(
            "mailkeep: {}:2: spool.dir: {name}/spool does not exist and would be created in /tmp, which every local user can write: another user could create it first, or a link in its place",
            cfg.display()
        )]
    );
}

#[test]
fn own_directories_default_outside_world_writable_directories() {
    // No spool dir and no dedup_dir: the defaults (under /var/lib/mailkeep)
    // pass the check that refuses anything another user could create.
    let dir = sandbox();
    let text = format!(
        "[filter]\nlisten = \"127.0.0.1:10025\"\n[[rule]]\narchive = \"maildir:{}/md\"\n",
        dir.path().display()
    );
    let cfg = write_config(dir.path(), &text);
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// `maildir:/root/x` passed as root, then every sender got 451 when the
/// daemon ran as its own user (issue 12, finding 7).
#[test]
fn check_config_as_an_unprivileged_user_names_each_path_it_cannot_write() {
    if !is_root() {
        eprintln!("skipped: needs root to check as nobody");
        return;
    }
    let dir = sandbox();
    let d = dir.path().display();
    let writable = dir.path().join("writable");
    std::fs::create_dir(&writable).unwrap();
    std::os::unix::fs::chown(&writable, Some(65534), Some(65534)).unwrap();
    let text = format!(
        "[spool]\ndir = \"{d}/writable/spool\"\n\n\
         [store]\npath = \"{d}/store\"\n\n\
         [[rule]]\nname = \"all\"\narchive = [\"maildir:/root/x\", \"store\", \"maildir:{d}/writable/md\"]\n\n\
         [[rule]]\nname = \"mine\"\narchive = \"mbox:{d}/writable/mine/{{login}}.mbox\"\n"
    );
    let cfg = write_config(dir.path(), &text);
    let out = check(&cfg, &["--as", "nobody"]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    let c = cfg.display();
    assert_eq!(
        stderr_lines(&out),
        [
            format!("mailkeep: {c}:5: store.path: user nobody cannot create {d}/store: {d}: Permission denied"),
            format!("mailkeep: {c}:9: rule 1 (all): \"maildir:/root/x\": user nobody cannot reach /root/x: permission denied"),
        ]
    );
    // Nothing was created by the check.
    assert!(!dir.path().join("store").exists());
    assert!(!writable.join("spool").exists());

    // Root can write all of it; the same config passes as root.
    let out = check(&cfg, &["--as", "root"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .ends_with("write access: checked as root (5 path(s))\n"),
        "{}",
        show(&out)
    );
}

#[test]
fn check_config_as_a_user_counts_its_group() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // nobody's only group is nogroup; a directory writable by group
    // nogroup (and not by others) is writable for it.
    let dir = sandbox();
    let grp = dir.path().join("grp");
    std::fs::create_dir(&grp).unwrap();
    std::os::unix::fs::chown(&grp, Some(0), Some(65534)).unwrap();
    set_mode(&grp, 0o770);
    let text = format!(
        "[spool]\ndir = \"{g}/spool\"\n[[rule]]\narchive = \"maildir:{g}/md\"\n",
        g = grp.display()
    );
    let cfg = write_config(dir.path(), &text);
    let out = check(&cfg, &["--as", "nobody"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    set_mode(&grp, 0o750);
    let out = check(&cfg, &["--as", "nobody"]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert_eq!(stderr_lines(&out).len(), 2, "{}", show(&out));
}

#[test]
fn check_config_as_another_user_without_root_exits_77() {
    if !is_root() {
        let dir = sandbox();
        let cfg = write_config(dir.path(), "[[rule]]\nskip = true\n");
        let out = check(&cfg, &["--as", "root"]);
        assert_eq!(out.status.code(), Some(77), "{}", show(&out));
        return;
    }
    let dir = sandbox();
    let cfg = write_config(dir.path(), "[[rule]]\nskip = true\n");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["check-config", "--as", "root"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(77), "{}", show(&out));
    assert_eq!(
        stderr_lines(&out),
        ["mailkeep: --as root: checking as another user needs root"]
    );
    let out = check(&cfg, &["--as", "no-such-user-xyz"]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
}

/// The README's configuration files, as pasted: each passes check-config
/// (the demo paths under /tmp are moved into a sandbox the way the recipe
/// makes them; the /etc recipes are checked as root, the way they run).
#[test]
fn readme_configurations_pass_check_config() {
    let readme = include_str!("../../../../README.md");
    let mut configs = Vec::new();
    let mut lines = readme.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("cat > ") && l.contains("mailkeep.toml <<'EOF'") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "EOF").collect();
            configs.push(body.join("\n") + "\n");
        }
    }
    assert!(configs.len() >= 4, "found {} configurations", configs.len());
    for text in configs {
        let dir = sandbox();
        let mut text = text;
        for demo in ["/tmp/mailkeep-demo", "/tmp/mailkeep-fwd"] {
            text = text.replace(demo, &dir.path().display().to_string());
        }
        let cfg = write_config(dir.path(), &text);
        let args: &[&str] = if is_root() { &["--as", "root"] } else { &[] };
        let out = check(&cfg, args);
        assert_eq!(out.status.code(), Some(0), "{text}\n{}", show(&out));
    }
}
