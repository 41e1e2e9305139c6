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
