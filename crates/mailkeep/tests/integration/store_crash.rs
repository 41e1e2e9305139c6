//! The store under `kill -9`: a client sends through `mailkeep serve`
//! (the SMTP archive receiver) while the test kills the server at random
//! moments and restarts it; every message that got its 250 must be in the
//! store afterwards, and `mailkeep verify` must accept the store.

use crate::util::{bin, sandbox, Serve};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// How many times the server is killed.
const KILLS: usize = 10;

/// Sends messages, one per connection, retrying each until it is accepted
/// (as an MTA would), until the file `stop` exists; appends each accepted
/// Message-ID to `acks` right after its 250.
const CLIENT: &str = r#"
import os, smtplib, sys, time
port, acks, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = open(acks, "a")
deadline = time.time() + 120
for i in range(1000000):
    if os.path.exists(stop):
        break
    mid = "<crash-%d@test.example>" % i
    body = ("From: a@test.example\r\nTo: b@test.example\r\nSubject: crash %d\r\n"
            "Message-ID: %s\r\n\r\n" % (i, mid)) + ("line %d of the body\r\n" % i) * (20 + i % 300)
    while True:
        if time.time() > deadline:
            sys.exit("gave up at message %d" % i)
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=10)
            s.sendmail("a@test.example", ["b@test.example", "hidden%d@test.example" % i], body)
            out.write(mid + "\n"); out.flush()
            try:
                s.quit()
            except Exception:
                pass
            break
        except Exception:
            time.sleep(0.02)
"#;

fn config(dir: &Path) -> impl Fn(u16) -> String + '_ {
    move |port| {
        format!(
            "[filter]\nlisten = \"127.0.0.1:{port}\"\ndedup_dir = \"{}\"\n\n\
             [store]\npath = \"{}\"\n\n[[rule]]\nname = \"all\"\narchive = [\"store\"]\n",
            dir.join("dedup").display(),
            dir.join("store").display()
        )
    }
}

const READY: &[&str] = &["SMTP archive receiver listening on"];

#[test]
fn kill_9_never_loses_an_acknowledged_message() {
    let dir = sandbox();
    let acks = dir.path().join("acks");
    let stop = dir.path().join("stop");
    let mut serve = Serve::start(dir.path(), config(dir.path()), READY, false);
    let port = serve.port;
    let mut client = std::process::Command::new("python3")
        .args(["-c", CLIENT, &port.to_string()])
        .arg(&acks)
        .arg(&stop)
        .spawn()
        .expect("python3");
    // A small LCG: kill at varied moments, reproducibly.
    let mut seed: u64 = 0x5eed_1234;
    let mut kills = 0;
    let started = Instant::now();
    while kills < KILLS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(50 + (seed >> 33) % 300));
        assert!(
            client.try_wait().expect("client").is_none(),
            "the client stopped early"
        );
        serve.kill9();
        kills += 1;
        serve = Serve::start_on(dir.path(), port, config(dir.path()), READY, false);
        assert!(started.elapsed() < Duration::from_secs(100), "too slow");
    }
    // A last stretch with the server up, then the client stops.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&stop, b"").expect("stop file");
    let status = client.wait().expect("client");
    assert!(status.success(), "client failed: {status}");
    serve.stop();

    let acked: BTreeSet<String> = std::fs::read_to_string(&acks)
        .expect("acks")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        acked.len() > 100,
        "only {} messages acknowledged",
        acked.len()
    );
    let cfg = dir.path().join("mailkeep.toml");
    let out = std::process::Command::new(bin())
        .arg("-c")
        .arg(&cfg)
        .args(["search", "--json", ""])
        .output()
        .expect("search");
    let mut stored = BTreeSet::new();
    let mut deliveries = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        deliveries += 1;
        if let Some(id) = v["message_id"].as_str() {
            stored.insert(format!("<{id}>"));
        }
        // The Bcc-only recipient of each message is in its envelope.
        let rcpts = v["recipients"].as_array().expect("recipients");
        assert_eq!(rcpts.len(), 2, "{v}");
    }
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    let verify = std::process::Command::new(bin())
        .arg("-c")
        .arg(&cfg)
        .arg("verify")
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "verify after {kills} kills: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    eprintln!(
        "{kills} kills; {} acknowledged, {deliveries} deliveries stored ({} retried after a kill mid-transaction)",
        acked.len(),
        deliveries - acked.len()
    );
}
