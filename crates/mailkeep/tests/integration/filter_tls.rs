//! STARTTLS on the SMTP archive receiver, with a client (Python's smtplib)
//! that upgrades the connection, and the TLS recorded in the archive.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn starttls_receiver_archives_and_records_tls() {
    let dir = sandbox();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/test installs it)");
    assert!(made.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let md = dir.path().join("md");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[filter]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ndedup_dir = \"{}/dedup\"\n[[rule]]\narchive = \"maildir:{}\"\n",
            cert.display(),
            key.display(),
            dir.path().display(),
            md.display()
        ),
    );
    let mut child = mailkeep(&cfg)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve did not start");
        if line.starts_with("SMTP archive receiver listening on") {
            break;
        }
    }
    let script = r#"
import smtplib, ssl, sys, json
port = int(sys.argv[1])
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("client.example")
before = s.has_extn("starttls")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo("client.example")
after = s.has_extn("starttls")
msg = b"Subject: over TLS\r\nFrom: a@example.com\r\n\r\nsecret body\r\n"
refused = s.sendmail("a@example.com", ["b@example.org", "hidden@example.net"], msg)
code, text = s.noop()
s.quit()
print(json.dumps({"before": before, "after": after, "refused": refused, "version": s.sock.version() if s.sock else None}))
"#;
    let out = python(script, &[&port.to_string()]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["before"], true, "STARTTLS offered before TLS: {out}");
    assert_eq!(v["after"], false, "and not after: {out}");
    assert_eq!(v["refused"], serde_json::json!({}), "{out}");
    let copies = read_maildir(&md);
    assert_eq!(copies.len(), 1);
    let (env, original) = split_envelope(&copies[0]);
    assert_eq!(
        original,
        b"Subject: over TLS\r\nFrom: a@example.com\r\n\r\nsecret body\r\n"
    );
    assert!(env.contains("X-Mailkeep-TLS: TLSv1."), "{env}");
    assert!(env.contains("X-Envelope-To: <hidden@example.net>"), "{env}");
}
