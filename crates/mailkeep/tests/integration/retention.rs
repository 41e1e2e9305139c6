//! Retention policies (issue 14): which policy keeps each delivery and until
//! when, counted from the receive time mailkeep recorded, never the Date
//! header; `retention plan` before anything acts on it.

use crate::util::*;
use chrono::{DateTime, Months, Utc};
use serde_json::Value;
use std::path::Path;

const POLICIES: &str = r#"
[retention]
default = "1y"

[[retention.policy]]
name = "newsletters"
from = ["*@news.*"]
keep = "90d"

[[retention.policy]]
name = "contracts"
query = "subject:contract"
keep = "forever"
"#;

fn config(dir: &Path, retention: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[spool]\ndir = \"{d}/spool\"\n\n[store]\npath = \"{d}/store\"\n{retention}\n\
             [[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
            d = dir.display()
        ),
    )
}

fn import(dir: &Path, config: &Path) {
    let mut text = String::new();
    for (from, subject) in [
        ("Daily <daily@news.example.net>", "Today's news"),
        ("Alice <alice@example.com>", "The contract, signed"),
        ("Bob <bob@example.com>", "Lunch"),
    ] {
        // A Date header decades away from the receive time: it must not count.
        text.push_str(&format!(
            "From x@example.com Mon Nov 30 10:00:00 2026\nFrom: {from}\nTo: carol@example.com\n\
             Subject: {subject}\nDate: Fri, 01 Jan 1999 00:00:00 +0000\n\nbody\n\n"
        ));
    }
    import_text(dir, config, "in", &text);
}

fn import_text(dir: &Path, config: &Path, name: &str, text: &str) {
    let mbox = dir.join(format!("{name}.mbox"));
    std::fs::write(&mbox, text).unwrap();
    let out = mailkeep(config).arg("import").arg(&mbox).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json_of(config: &Path, args: &[&str]) -> Value {
    let out = mailkeep(config).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn each_delivery_gets_the_first_matching_policy_from_its_receive_time() {
    let dir = sandbox();
    let config = config(dir.path(), POLICIES);
    import(dir.path(), &config);
    let out = mailkeep(&config)
        .args(["search", "--json", ""])
        .output()
        .unwrap();
    let hits: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 3);
    for hit in &hits {
        let id = hit["id"].as_i64().unwrap();
        let received: DateTime<Utc> = hit["received"].as_str().unwrap().parse().unwrap();
        let shown = json_of(&config, &["retention", "show", &id.to_string(), "--json"]);
        let subject = hit["subject"].as_str().unwrap();
        let (policy, expires) = match subject {
            "Today's news" => (
                Value::from("newsletters"),
                Some(received + chrono::Days::new(90)),
            ),
            "The contract, signed" => (Value::from("contracts"), None),
            _ => (Value::Null, received.checked_add_months(Months::new(12))),
        };
        assert_eq!(shown["policy"], policy, "{subject}: {shown}");
        let got: Option<DateTime<Utc>> = shown["expires"].as_str().map(|t| t.parse().unwrap());
        assert_eq!(got, expires, "{subject}: {shown}");
    }
    let plan = json_of(&config, &["retention", "plan", "--json"]);
    assert_eq!(plan["deliveries"], 3);
    assert_eq!(plan["forever"], 1);
    assert_eq!(
        plan["by_policy"],
        serde_json::json!({"contracts": 1, "default": 1, "newsletters": 1})
    );
    assert_eq!(plan["expired_now"], 0);
    let months: u64 = plan["by_month"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(months, 2);
    // Both were recorded in the audit log.
    let log = std::fs::read_to_string(dir.path().join("store").join("audit.log")).unwrap();
    assert_eq!(log.matches("\"action\":\"retention\"").count(), 4, "{log}");
}

#[test]
fn bad_and_contradictory_policies() {
    let dir = sandbox();
    let bad = config(
        dir.path(),
        "[retention]\ndefault = \"ten years\"\n\n[[retention.policy]]\nname = \"x\"\nlogin = \"bob\"\nkeep = \"0d\"\n",
    );
    let out = mailkeep(&bad).arg("check-config").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("retention.default") && text.contains("\"x\": keep"),
        "{text}"
    );

    let contradictory = config(
        dir.path(),
        "[retention]\n\n[[retention.policy]]\nname = \"bob\"\nlogin = \"bob\"\nkeep = \"1y\"\n\n\
         [[retention.policy]]\nname = \"bob longer\"\nlogin = \"bob\"\nkeep = \"5y\"\n",
    );
    let out = mailkeep(&contradictory)
        .arg("check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: retention policy \"bob longer\" contradicts"),
        "{text}"
    );
}

fn import_from(dir: &Path, config: &Path, name: &str, from: &str, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "From x@example.com Mon Nov 30 10:00:00 2026\nFrom: {from}\nTo: carol@example.com\n\
             Subject: {name} {i}\nMessage-ID: <{name}.{i}@example.com>\n\nbody {name} {i}\n\n"
        ));
    }
    import_text(dir, config, name, &text);
}

#[test]
fn a_hold_covers_mail_before_and_after_it_until_released() {
    let dir = sandbox();
    let config = config(dir.path(), POLICIES);
    import_from(dir.path(), &config, "early", "Alice <alice@example.com>", 2);
    import_from(dir.path(), &config, "other", "Bob <bob@example.com>", 1);
    let run = |args: &[&str]| mailkeep(&config).args(args).output().unwrap();
    let out = run(&[
        "hold",
        "add",
        "matter 12",
        "--query",
        "from:alice@example.com",
        "--reason",
        "case 12, counsel's letter",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("covers 2 deliveries"));
    // A second hold of the same name is refused; an empty reason too.
    assert_eq!(
        run(&["hold", "add", "matter 12", "--query", "x", "--reason", "y"])
            .status
            .code(),
        Some(64)
    );
    assert_eq!(
        run(&["hold", "add", "m2", "--query", "x", "--reason", " "])
            .status
            .code(),
        Some(64)
    );
    assert_eq!(
        run(&["hold", "add", "m3", "--query", "nokey:x", "--reason", "r"])
            .status
            .code(),
        Some(64)
    );

    // Mail that arrives after the hold is covered too.
    import_from(dir.path(), &config, "late", "Alice <alice@example.com>", 1);
    let shown = json_of(&config, &["hold", "show", "matter 12", "--json"]);
    assert_eq!(shown["deliveries"], 3, "{shown}");
    assert_eq!(shown["reason"], "case 12, counsel's letter");
    let out = run(&["search", "--json", "subject:late"]);
    let late: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let held = json_of(
        &config,
        &["retention", "show", &late["id"].to_string(), "--json"],
    );
    assert_eq!(held["held_by"], serde_json::json!(["matter 12"]), "{held}");
    let out = run(&["search", "--json", "from:bob"]);
    let bob: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let free = json_of(
        &config,
        &["retention", "show", &bob["id"].to_string(), "--json"],
    );
    assert_eq!(free["held_by"], serde_json::json!([]), "{free}");
    let plan = json_of(&config, &["retention", "plan", "--json"]);
    assert_eq!(plan["held"], 3, "{plan}");

    let list = String::from_utf8_lossy(&run(&["hold", "list", "--json"]).stdout).to_string();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert_eq!(
        run(&["hold", "release", "matter 12", "--reason", ""])
            .status
            .code(),
        Some(64)
    );
    assert!(
        run(&["hold", "release", "matter 12", "--reason", "case closed"])
            .status
            .success()
    );
    assert_eq!(
        run(&["hold", "release", "matter 12", "--reason", "again"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        String::from_utf8_lossy(&run(&["hold", "list"]).stdout).trim(),
        "no hold in force"
    );

    // Placing and releasing are in the chained audit log with who and why:
    // quietly deleting the release line is caught by verify.
    let log_path = dir.path().join("store").join("audit.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let ops: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "hold")
        .collect();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0]["detail"]["op"], "add");
    assert_eq!(ops[1]["detail"]["reason"], "case closed");
    let without: String = log
        .lines()
        .filter(|l| !l.contains("\"op\":\"release\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log_path, without).unwrap();
    let out = run(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// One message with mailkeep's envelope block (as an mbox destination
/// writes it), so an import restores its receive time.
fn aged(from: &str, subject: &str, marker: &str, days_ago: i64) -> String {
    let mut env = mailkeep_envelope::Envelope::new(
        mailkeep_envelope::CapturePath::Milter,
        mailkeep_envelope::RawMessage::from_bytes(Vec::new()),
    );
    env.received = chrono::Utc::now() - chrono::Duration::days(days_ago);
    env.received = chrono::DateTime::from_timestamp(env.received.timestamp(), 0).unwrap();
    env.sender = Some("x@example.com".into());
    env.recipients = vec!["carol@example.com".into()];
    let block = mailkeep_envelope::block::envelope_headers(&env, "archive.example", "\n");
    format!(
        "From x@example.com Mon Nov 30 10:00:00 2026\n{block}From: {from}\nTo: carol@example.com\n\
         Subject: {subject}\n\n{marker}\n\n"
    )
}

#[test]
fn expire_removes_exactly_the_expired_and_unheld_and_erase_refuses_what_is_held() {
    let dir = sandbox();
    let config = config(
        dir.path(),
        "[retention]\ndefault = \"1y\"\n\n[[retention.policy]]\nname = \"news\"\nfrom = \"*@news.*\"\nkeep = \"90d\"\n",
    );
    let text = [
        aged("Bob <bob@example.com>", "old", "7zoldmarker", 800),
        aged("Daily <d@news.example>", "old news", "8znewsmarker", 100),
        aged("Daily <d@news.example>", "fresh news", "9zfreshmarker", 10),
        aged(
            "Alice <alice@example.com>",
            "old but held",
            "6zheldmarker",
            800,
        ),
    ]
    .concat();
    import_text(dir.path(), &config, "aged", &text);
    let run = |args: &[&str]| mailkeep(&config).args(args).output().unwrap();
    let count = |q: &str| {
        String::from_utf8_lossy(&run(&["search", "--json", q]).stdout)
            .lines()
            .count()
    };
    assert_eq!(count(""), 4);
    assert!(run(&[
        "hold",
        "add",
        "alice",
        "--query",
        "from:alice@example.com",
        "--reason",
        "case 3"
    ])
    .status
    .success());

    let dry = json_of(&config, &["expire", "--dry-run", "--json"]);
    assert_eq!(dry["due"], 2, "{dry}");
    assert_eq!(dry["kept_by_hold"], 1, "{dry}");
    assert_eq!(count(""), 4, "a dry run removed something");

    let store_dir = dir.path().join("store");
    let before: Vec<_> = ["7zoldmarker", "8znewsmarker"]
        .iter()
        .map(|m| files_holding(&store_dir, m.as_bytes()))
        .collect();
    assert!(before.iter().all(|f| !f.is_empty()), "{before:?}");
    let done = json_of(&config, &["expire", "--json"]);
    assert_eq!(done["removed"], 2, "{done}");
    assert_eq!(done["messages_removed"], 2, "{done}");
    let subjects: Vec<String> = String::from_utf8_lossy(&run(&["search", "--json", ""]).stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["subject"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(subjects.len(), 2);
    assert!(
        subjects.contains(&"fresh news".to_string())
            && subjects.contains(&"old but held".to_string())
    );
    for m in ["7zoldmarker", "8znewsmarker"] {
        let left = files_holding(&store_dir, m.as_bytes());
        assert!(left.is_empty(), "{m} still in {left:?}");
    }
    let verify = run(&["verify"]);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert_eq!(
        out.matches("removed by retention policy").count(),
        2,
        "{out}"
    );

    // Erase: what a hold covers is refused and listed; released, it goes.
    let out = run(&[
        "erase",
        "--query",
        "from:alice@example.com",
        "--reason",
        "request 9",
    ]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("under a legal hold"));
    assert_eq!(count("from:alice@example.com"), 1);
    assert!(run(&["hold", "release", "alice", "--reason", "closed"])
        .status
        .success());
    let out = run(&[
        "erase",
        "--query",
        "from:alice@example.com",
        "--reason",
        "request 9",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count("from:alice@example.com"), 0);
    // A query that matches everything asks for --yes.
    assert_eq!(
        run(&["erase", "--query", "", "--reason", "all"])
            .status
            .code(),
        Some(64)
    );
    assert_eq!(count(""), 1);
    assert!(files_holding(&store_dir, b"6zheldmarker").is_empty());
    assert!(run(&["verify"]).status.success());

    // Locked: erase refuses.
    let locked = crate::retention::config(dir.path(), "[retention]\nlocked = true\n");
    let out = mailkeep(&locked)
        .args(["erase", "--query", "subject:fresh", "--reason", "r"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
    assert_eq!(count(""), 1);
}

fn files_holding(dir: &Path, marker: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "audit.log"))
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(marker.len()).any(|w| w == marker)
        })
        .collect()
}

/// `kill -9` at any moment of expiry (removal, compaction) while imports
/// run: nothing acknowledged is lost, nothing removed comes back, and the
/// store verifies after every kill.
#[test]
fn kill_9_during_expiry_loses_nothing_and_resurrects_nothing() {
    let dir = sandbox();
    let config = config(dir.path(), "[retention]\ndefault = \"1y\"\n");
    let mut old = String::new();
    for i in 0..1500 {
        old.push_str(&aged(
            "Bob <bob@example.com>",
            &format!("old {i}"),
            &format!("5zold{i}marker {}", "filler ".repeat(i % 400)),
            800,
        ));
    }
    import_text(dir.path(), &config, "old", &old);
    let fresh_count = |config: &Path| {
        let out = mailkeep(config)
            .args(["search", "--json", "subject:fresh"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let old_left = |config: &Path| {
        let out = mailkeep(config)
            .args(["search", "--json", "subject:old"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };

    // Imports of fresh mail run all along; each acknowledged one is counted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let (stop, config, dir) = (stop.clone(), config.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut acked = 0usize;
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut text = String::new();
                for i in 0..5 {
                    text.push_str(&format!(
                        "From a@example.com Mon Nov 30 10:00:00 2026\nFrom: a@example.com\n\
                         Subject: fresh {round}-{i}\nMessage-ID: <f{round}.{i}@example.com>\n\nfresh body {round} {i}\n\n"
                    ));
                }
                let mbox = dir.join(format!("fresh{round}.mbox"));
                std::fs::write(&mbox, text).unwrap();
                if mailkeep(&config)
                    .arg("import")
                    .arg(&mbox)
                    .output()
                    .unwrap()
                    .status
                    .success()
                {
                    acked += 5;
                }
                round += 1;
            }
            acked
        })
    };
    // Kills spread from the end of the preparation (what a dry run takes)
    // over the removal and the compaction after it.
    let started = std::time::Instant::now();
    assert!(mailkeep(&config)
        .args(["expire", "--dry-run"])
        .output()
        .unwrap()
        .status
        .success());
    let prep = started.elapsed().as_millis() as u64;
    let mut seen_left = usize::MAX;
    for kill in 0..16u64 {
        let mut child = mailkeep(&config)
            .arg("expire")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(prep + kill * prep * 2 / 5));
        let _ = child.kill();
        let _ = child.wait();
        let out = mailkeep(&config)
            .args(["verify", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true, "after kill {kill}: {v}");
        let left = old_left(&config);
        eprintln!("after kill {kill}: {left} old deliveries left");
        assert!(
            left <= seen_left,
            "after kill {kill}: {left} old deliveries, {seen_left} before: one came back"
        );
        seen_left = left;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = ingest.join().unwrap();
    let out = mailkeep(&config).arg("expire").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(old_left(&config), 0);
    assert!(
        fresh_count(&config) >= acked,
        "{} fresh in the store, {acked} acknowledged",
        fresh_count(&config)
    );
    assert!(mailkeep(&config)
        .arg("verify")
        .output()
        .unwrap()
        .status
        .success());
    let store_dir = dir.path().join("store");
    for i in [0, 750, 1499] {
        let m = format!("5zold{i}marker");
        assert!(
            files_holding(&store_dir, m.as_bytes()).is_empty(),
            "{m} is still in the store"
        );
    }
}

/// `locked = true`, once recorded, holds: a configuration that would keep
/// anything for less time is refused by expire, erase and serve; a longer
/// one is accepted.
#[test]
fn a_locked_retention_refuses_every_shortening() {
    let dir = sandbox();
    let locked = |retention: &str| crate::retention::config(dir.path(), retention);
    let cfg = locked("[retention]\ndefault = \"10y\"\nlocked = true\n");
    import_text(
        dir.path(),
        &cfg,
        "one",
        &aged("Bob <bob@example.com>", "one", "x", 1),
    );
    let dry = |cfg: &Path| {
        mailkeep(cfg)
            .args(["expire", "--dry-run"])
            .output()
            .unwrap()
    };
    assert!(dry(&cfg).status.success());
    for (shorter, says) in [
        ("default = \"1y\"\nlocked = true\n", "the default would go from 10y to 1y"),
        ("default = \"10y\"\n", "cannot be taken back"),
        (
            "default = \"10y\"\nlocked = true\n\n[[retention.policy]]\nname = \"news\"\nfrom = \"*@news.*\"\nkeep = \"90d\"\n",
            "shorter than the default",
        ),
    ] {
        let cfg = locked(&format!("[retention]\n{shorter}"));
        let out = dry(&cfg);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{shorter}: {err}");
        assert!(err.contains(says), "{shorter}: {err}");
        let out = mailkeep(&cfg).args(["erase", "--query", "subject:one", "--reason", "r"]).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
        let mut serve = mailkeep(&cfg)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(s) = serve.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = serve.kill();
                panic!("serve kept running with a shortened locked retention");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(78), "{shorter}");
    }
    // Longer is fine, and becomes the new floor.
    let longer = locked("[retention]\ndefault = \"20y\"\nlocked = true\n");
    assert!(dry(&longer).status.success());
    // (One configuration file: written again with the earlier 10 years.)
    let cfg = locked("[retention]\ndefault = \"10y\"\nlocked = true\n");
    assert_eq!(
        dry(&cfg).status.code(),
        Some(78),
        "10y after 20y was recorded"
    );
    assert!(String::from_utf8_lossy(&dry(&cfg).stderr).contains("from 20y to 10y"));
}

/// The holds live in the audit log: a log deleted, swapped or cut back
/// after a hold was placed makes expire and erase refuse, instead of
/// removing what the lost hold covered.
#[test]
fn a_replaced_or_cut_audit_log_stops_removal() {
    let dir = sandbox();
    let config = config(dir.path(), "[retention]\ndefault = \"1y\"\n");
    import_text(
        dir.path(),
        &config,
        "old",
        &aged("Alice <alice@example.com>", "held", "3zheldmarker", 800),
    );
    let run = |args: &[&str]| mailkeep(&config).args(args).output().unwrap();
    assert!(run(&[
        "hold",
        "add",
        "a",
        "--query",
        "from:alice@example.com",
        "--reason",
        "case"
    ])
    .status
    .success());
    let log = dir.path().join("store").join("audit.log");
    let kept = std::fs::read_to_string(&log).unwrap();
    for (what, text) in [
        ("deleted", String::new()),
        (
            "cut before the hold",
            kept.lines().take(2).map(|l| format!("{l}\n")).collect(),
        ),
    ] {
        if text.is_empty() {
            std::fs::remove_file(&log).unwrap();
        } else {
            std::fs::write(&log, &text).unwrap();
        }
        for args in [
            vec!["expire"],
            vec![
                "erase",
                "--query",
                "from:alice@example.com",
                "--reason",
                "r",
            ],
        ] {
            let out = run(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(65), "{what}, {args:?}: {err}");
            assert!(
                err.contains("replaced, moved or cut") || err.contains("fails verification"),
                "{what}: {err}"
            );
        }
        assert_eq!(
            String::from_utf8_lossy(&run(&["search", "--json", "from:alice"]).stdout)
                .lines()
                .count(),
            1,
            "{what}: the held message went"
        );
        std::fs::write(&log, &kept).unwrap();
    }
}

/// A removal made behind mailkeep's back (straight into the store, with a
/// well-formed tombstone) is caught by `verify`: the audit log never
/// recorded it.
#[test]
fn a_removal_the_audit_log_never_recorded_fails_verify() {
    let dir = sandbox();
    let config = config(dir.path(), "[retention]\ndefault = \"1y\"\n");
    let text = [
        aged("Bob <bob@example.com>", "expired", "4zexpmarker", 800),
        aged("Carol <carol@example.com>", "kept", "4zkeptmarker", 1),
    ]
    .concat();
    import_text(dir.path(), &config, "two", &text);
    let run = |args: &[&str]| mailkeep(&config).args(args).output().unwrap();
    assert!(run(&["expire"]).status.success());
    assert!(
        run(&["verify"]).status.success(),
        "{}",
        String::from_utf8_lossy(&run(&["verify"]).stdout)
    );
    let out = run(&["search", "--json", "subject:kept"]);
    let kept: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let id = kept["id"].as_i64().unwrap();
    let store =
        mailkeep_store::Store::open(mailkeep_store::StoreConfig::new(dir.path().join("store")))
            .unwrap();
    store
        .remove(&[(id, "retention policy \"default\" (keep 1y)".into())])
        .unwrap();
    drop(store);
    let out = run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(
        text.contains(&format!(
            "delivery {id}: its tombstone names no removal recorded"
        )),
        "{text}"
    );
}
