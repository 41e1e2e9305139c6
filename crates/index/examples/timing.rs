//! Hand timing of `extract`, not a benchmark harness and not a test:
//! `cargo run --release -p mailkeep-index --example timing`.
//!
//! Prints the mean time per call for a typical ~10 KB message and the time of
//! one call on each of a few hostile shapes sized to sit just under the
//! crate's refusal thresholds (the worst cases that are still parsed).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mailkeep_index::{extract, Limits};

fn typical() -> Vec<u8> {
    let para = "Hello team, the quarterly numbers are in and they look better than \
                expected. Please review the attached report before Friday's call. ";
    let mut plain = String::new();
    while plain.len() < 3600 {
        plain.push_str(para);
        plain.push_str("\r\n");
    }
    let html = format!(
        "<html><head><style>p {{ margin: 0 }}</style></head><body><p>{}</p>\
         <p>Regards,<br>&nbsp;J&uuml;rgen &amp; team</p></body></html>",
        plain.replace("\r\n", "</p><p>")
    );
    let attachment =
        "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+\r\n"
            .repeat(16);
    let raw = format!(
        "Received: from mx.example.org (mx.example.org [192.0.2.1])\r\n\tby mail.example.com with ESMTPS id 123\r\n\
         From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@example.org>\r\n\
         To: Team <team@example.com>, boss@example.com\r\n\
         Cc: \"Ops\" <ops@example.com>\r\n\
         Subject: =?utf-8?b?UXVhcnRlcmx5IG51bWJlcnMg4oCUIHBsZWFzZSByZXZpZXc=?=\r\n\
         Date: Tue, 1 Jul 2025 10:52:37 +0200\r\n\
         Message-ID: <20250701105237.12345@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n\
         --alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--alt--\r\n\
         --outer\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{attachment}--outer--\r\n"
    );
    raw.into_bytes()
}

/// Multipart containers whose boundary never appears, padded so that
/// `containers × size` sits just under `MAX_BOUNDARY_SCAN`.
fn unmatched_boundaries() -> Vec<u8> {
    let containers = 60;
    let size = (mailkeep_index::MAX_BOUNDARY_SCAN / containers as u64) as usize - 4096;
    let mut raw = String::from("Subject: x\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n");
    for i in 1..containers {
        write!(
            raw,
            "--p\r\nContent-Type: multipart/mixed; boundary=never{i}\r\n\r\n"
        )
        .unwrap();
    }
    raw.push_str(&"x".repeat(size - raw.len()));
    raw.into_bytes()
}

/// The same shape hidden inside a base64 message/rfc822 part, where the
/// pre-scan cannot see it (mail-parser decodes and recurses into it).
fn encoded_nested(inner_size: usize) -> Vec<u8> {
    let mut inner =
        String::from("Subject: inner\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n");
    let mut i = 0;
    while inner.len() < inner_size {
        write!(
            inner,
            "--p\r\nContent-Type: multipart/mixed; boundary=n{i}\r\n\r\n"
        )
        .unwrap();
        i += 1;
    }
    let mut raw = String::from(
        "Subject: outer\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\
         Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    for chunk in base64(inner.as_bytes()).as_bytes().chunks(76) {
        raw.push_str(std::str::from_utf8(chunk).unwrap());
        raw.push_str("\r\n");
    }
    raw.push_str("--o--\r\n");
    raw.into_bytes()
}

/// Header lines of three bytes each, just under `MAX_HEADER_LINES`.
fn header_lines() -> Vec<u8> {
    let mut raw = b"Subject: x\r\n".to_vec();
    raw.extend(b"a:\n".repeat(mailkeep_index::MAX_HEADER_LINES - 10));
    raw
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn once(name: &str, raw: &[u8]) {
    let start = Instant::now();
    let x = extract(raw, &Limits::default());
    println!(
        "{name:>34}: {:>9.1} ms for {:>9} bytes (skipped: {:?})",
        start.elapsed().as_secs_f64() * 1e3,
        raw.len(),
        x.skipped
    );
}

fn main() {
    let raw = typical();
    let limits = Limits::default();
    let x = extract(&raw, &limits);
    assert!(x.text.contains("quarterly") && x.attachments.len() == 1);
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(extract(std::hint::black_box(&raw), &limits));
        n += 1;
    }
    println!(
        "typical message ({} bytes): {:.1} µs per extract over {n} runs",
        raw.len(),
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );

    once("unmatched boundaries", &unmatched_boundaries());
    for size in [64 << 10, 256 << 10, 1 << 20, 4 << 20] {
        once(
            &format!("base64 nested, {} KiB inside", size >> 10),
            &encoded_nested(size),
        );
    }
    once("3-byte header lines", &header_lines());
    let head = b"Subject: big\r\n\r\n";
    let mut big = head.to_vec();
    big.resize(64 << 20, b'a');
    once("64 MiB single text part", &big);
}
