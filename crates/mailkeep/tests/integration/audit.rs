//! The audit log (issue 14): every command that touches the store leaves
//! its entry, with its user, before it answers; an entry cannot be changed
//! or cut off unnoticed; and a log that cannot be written stops the access.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

fn config(dir: &Path, extra_store: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[spool]\ndir = \"{d}/spool\"\n\n[store]\npath = \"{d}/store\"\n{extra_store}\n\
             [[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
            d = dir.display()
        ),
    )
}

fn mbox(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("in.mbox");
    let mut text = String::new();
    for i in 0..3 {
        text.push_str(&format!(
            "From alice@example.com Mon Nov 30 10:00:0{i} 2026\n\
             From: alice@example.com\nTo: bob@example.org\nSubject: audited {i}\n\
             Message-ID: <a{i}@example.com>\n\nbody {i}\n\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn entries(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    mailkeep(config).args(args).output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_command_is_recorded_with_its_user_before_it_answers() {
    let dir = sandbox();
    let config = config(dir.path(), "");
    let input = mbox(dir.path());
    ok(&mailkeep(&config)
        .arg("import")
        .arg(&input)
        .output()
        .unwrap());
    let export = dir.path().join("out.zip");
    let checkpoint = dir.path().join("cp.txt");
    let found = ok(&run(&config, &["search", "--json", "subject:audited"]));
    // Import commits in parallel: ids follow commit order, not the mbox's.
    let audited_1 = found
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|h| h["subject"] == "audited 1")
        .map(|h| h["id"].to_string())
        .unwrap();
    ok(&run(&config, &["show", "2", "--raw"]));
    ok(&run(
        &config,
        &[
            "export",
            "--format",
            "zip",
            "--out",
            export.to_str().unwrap(),
            "subject:\"audited 1\"",
        ],
    ));
    ok(&run(&config, &["stats"]));
    ok(&run(&config, &["verify"]));
    ok(&run(
        &config,
        &["checkpoint", "--out", checkpoint.to_str().unwrap()],
    ));
    let listed = ok(&run(&config, &["audit", "--json"]));

    let log = dir.path().join("store").join("audit.log");
    let all = entries(&log);
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "import",
            "import",
            "search",
            "show",
            "export",
            "stats",
            "verify",
            "checkpoint",
            "audit"
        ]
    );
    let me = if is_root() {
        "root".to_string()
    } else {
        std::env::var("USER").unwrap_or_default()
    };
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["via"], "cli");
        if is_root() {
            assert_eq!(e["user"], me.as_str(), "{e}");
            assert_eq!(e["uid"], 0);
        }
    }
    assert_eq!(all[0]["detail"]["phase"], "start");
    assert_eq!(all[1]["detail"]["new_deliveries"], 3);
    assert_eq!(all[2]["detail"]["query"], "subject:audited");
    assert_eq!(all[2]["detail"]["results"], 3);
    assert_eq!(all[2]["detail"]["ids"], "1-3");
    assert_eq!(
        all[3]["detail"],
        serde_json::json!({"id": 2, "view": "raw"})
    );
    assert_eq!(all[4]["detail"]["ids"], audited_1.as_str());
    assert_eq!(all[4]["detail"]["format"], "zip");
    // `audit --json` lists what the file holds, its own entry included.
    assert_eq!(listed.lines().count(), all.len());
    let filtered = ok(&run(
        &config,
        &["audit", "--json", "--user", "nobody-at-all"],
    ));
    assert_eq!(filtered, "");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let since = ok(&run(&config, &["audit", "--json", "--since", &today]));
    assert!(since.lines().count() >= all.len(), "{since}");

    // The checkpoint names the audit head (its own entry), and still
    // verifies after more accesses.
    let cp = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(cp.contains("\naudit: 8 "), "{cp}");
    ok(&run(&config, &["search", "audited"]));
    let out = ok(&run(
        &config,
        &["verify", "--checkpoint", checkpoint.to_str().unwrap()],
    ));
    assert!(
        out.starts_with("OK: ") && out.contains("audit log: "),
        "{out}"
    );
}

#[test]
fn an_edited_or_cut_audit_log_fails_verify() {
    let dir = sandbox();
    let config = config(dir.path(), "");
    ok(&mailkeep(&config)
        .arg("import")
        .arg(mbox(dir.path()))
        .output()
        .unwrap());
    ok(&run(&config, &["search", "subject:audited"]));
    let checkpoint = dir.path().join("cp.txt");
    ok(&run(
        &config,
        &["checkpoint", "--out", checkpoint.to_str().unwrap()],
    ));
    let log = dir.path().join("store").join("audit.log");
    let original = std::fs::read_to_string(&log).unwrap();

    // Someone hides what they searched for.
    std::fs::write(&log, original.replace("subject:audited", "subject:nothing")).unwrap();
    let out = run(&config, &["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(
        text.contains("audit log") && text.contains("entry 3 was changed"),
        "{text}"
    );

    // Someone removes the last entries, the checkpoint's own among them: the
    // chain that is left is valid, the checkpoint is not (verify's own entry
    // now holds number 4, with another hash).
    let kept: String = original.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, kept).unwrap();
    let out = run(
        &config,
        &["verify", "--checkpoint", checkpoint.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(
        text.contains("audit entry 4 differs from the checkpoint"),
        "{text}"
    );
}

#[test]
fn an_unwritable_audit_log_stops_every_access() {
    let dir = sandbox();
    let good = config(dir.path(), "");
    ok(&mailkeep(&good)
        .arg("import")
        .arg(mbox(dir.path()))
        .output()
        .unwrap());
    // A path no user can create (its parent is a file), root included.
    std::fs::write(dir.path().join("not-a-dir"), b"").unwrap();
    let bad = write_config(
        dir.path(),
        &std::fs::read_to_string(&good).unwrap().replace(
            "[store]\n",
            &format!(
                "[store]\naudit_log = \"{}/not-a-dir/audit.log\"\n",
                dir.path().display()
            ),
        ),
    );
    let export = dir.path().join("out.mbox");
    for args in [
        vec!["search", "--json", ""],
        vec!["show", "1", "--raw"],
        vec![
            "export",
            "--format",
            "mbox",
            "--out",
            export.to_str().unwrap(),
            "",
        ],
        vec!["stats"],
        vec!["verify"],
        vec!["checkpoint"],
        vec!["audit"],
    ] {
        let out = run(&bad, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(74), "{args:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains("audit log") && err.contains("nothing was done"),
            "{args:?}: {err}"
        );
    }
    assert!(!export.exists(), "an unaudited export was written");
    let out = mailkeep(&bad)
        .arg("import")
        .arg(mbox(dir.path()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
}

/// Local accounts for the web interface: argon2id in a 0600 file, the
/// password never in the audit log or the listing.
#[test]
fn user_accounts_are_kept_hashed_and_their_changes_audited() {
    use std::os::unix::fs::PermissionsExt;
    let dir = sandbox();
    let config = config(dir.path(), "");
    ok(&mailkeep(&config)
        .arg("import")
        .arg(mbox(dir.path()))
        .output()
        .unwrap());
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "a long secret passphrase\n").unwrap();
    let add = |name: &str, role: &str, extra: &[&str]| {
        mailkeep(&config)
            .args(["user", "add", name, "--role", role, "--password-file"])
            .arg(&pw)
            .args(extra)
            .output()
            .unwrap()
    };
    ok(&add(
        "bob@example.com",
        "user",
        &["--address", "Bob@Example.org"],
    ));
    ok(&add("audit1", "auditor", &[]));
    assert_eq!(add("x", "root", &[]).status.code(), Some(64));
    std::fs::write(&pw, "short\n").unwrap();
    assert_eq!(
        add("carol@example.com", "user", &[]).status.code(),
        Some(64)
    );
    let listed = ok(&run(&config, &["user", "list", "--json"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("\"addresses\":[\"bob@example.com\",\"bob@example.org\"]"),
        "{listed}"
    );
    assert!(!listed.contains("argon2") && !listed.contains("passphrase"));
    let file = dir.path().join("store").join("users.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("$argon2id$") && !text.contains("passphrase"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    ok(&run(&config, &["user", "remove", "audit1"]));
    assert_eq!(
        run(&config, &["user", "remove", "audit1"]).status.code(),
        Some(1)
    );
    let log = std::fs::read_to_string(dir.path().join("store").join("audit.log")).unwrap();
    assert!(log.contains("\"action\":\"user\""));
    assert!(!log.contains("passphrase") && !log.contains("argon2"));
}
