//! SMTP command lines and DATA through the whole SMTP side of `mailkeep
//! serve`: `capture::filter::session::Session` in receiver mode (the
//! `always_bcc` target), over a real loopback TCP connection, archiving
//! into a native store in tmpfs. Command parsing is `smtp-proto`'s
//! `Request::parse` plus mailkeep's own XFORWARD, line and DATA handling.
//!
//! Input: a mode byte.
//! - Odd: the rest of the input is what the client sends, then end of
//!   file. Invariants: the session ends; every reply line is
//!   `[2-5]dd[ -]text CRLF` with printable ASCII text, at most 512 bytes
//!   (RFC 5321 4.5.3.1.5), continuation lines keep the code; the first
//!   reply is 220; the store gains at most as many deliveries as the
//!   client got "250 ... archived" replies.
//! - Even: the rest describes one transaction (sender, recipients, the
//!   message, the write size), which is sent one command at a time, as a
//!   well-behaved client would, with XFORWARD naming a queue id. Invariant:
//!   when MAIL, some RCPT and DATA were accepted, the final reply is
//!   "250 2.0.0 Ok: archived b3:ID" with ID the message's BLAKE3 prefix,
//!   and the store gains exactly one delivery whose bytes are the message
//!   as sent (dot-stuffing undone, bare LF made CRLF, a final CRLF added
//!   if missing) and whose sender, recipients (the accepted ones, in
//!   order), queue id and client address are the ones sent; otherwise the
//!   store gains nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_capture::filter::dedup::Ledger;
use mailkeep_capture::filter::{session::Session, Snapshot};
use mailkeep_capture::policy::{FailureCounters, FailurePolicy};
use mailkeep_destinations::{GroupCommitter, BatchLimits};
use mailkeep_envelope::normalize_address_arg;
use mailkeep_smtp::DataEncoder;
use mailkeep_fuzz::{crlf_normalised, scratch_dir, store_archiver, Cursor, NewDeliveries};
use mailkeep_store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

struct Env {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    store: Arc<Store>,
    seen: Mutex<NewDeliveries>,
    snapshot: Arc<Snapshot>,
    committer: GroupCommitter,
    counters: Arc<FailureCounters>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        mailkeep_fuzz::log_if_asked();
        let dir = scratch_dir("smtp-session");
        let (store, archiver) = store_archiver(&dir);
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        std::fs::create_dir_all(dir.join("dedup")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("binding 127.0.0.1");
        Env {
            rt,
            listener,
            seen: Mutex::new(NewDeliveries::new(&store)),
            store,
            snapshot: Arc::new(Snapshot {
                archiver: Arc::new(archiver),
                hostname: "archive.example".into(),
                relay: None,
                allowed_clients: Vec::new(),
                max_message_size: Some(1 << 20),
                max_recipients: 8,
                spool_dir: dir.join("spool"),
                // Small, so that some messages are spooled to a file.
                spool_threshold: 512,
                command_timeout: Duration::from_secs(5),
                data_timeout: Duration::from_secs(5),
                data_done_timeout: Duration::from_secs(5),
                on_failure: FailurePolicy::Tempfail,
                ledger: Ledger::new(&dir.join("dedup")),
                tls: None,
            }),
            committer: GroupCommitter::start(BatchLimits::default()).unwrap(),
            counters: Arc::new(FailureCounters::default()),
        }
    })
}

/// Checks one reply line (without its CRLF) and returns its code and
/// whether it is the last line of the reply.
fn check_line(line: &[u8]) -> (u16, bool) {
    assert!(
        line.len() + 2 <= 512,
        "reply line of {} bytes",
        line.len() + 2
    );
    assert!(line.len() >= 3, "short reply line {line:?}");
    assert!(
        (b'2'..=b'5').contains(&line[0]) && line[1].is_ascii_digit() && line[2].is_ascii_digit(),
        "bad reply code in {:?}",
        String::from_utf8_lossy(line)
    );
    assert!(
        line.len() == 3 || line[3] == b' ' || line[3] == b'-',
        "bad separator in {:?}",
        String::from_utf8_lossy(line)
    );
    assert!(
        line.iter().all(|b| (0x20..0x7f).contains(b)),
        "control or 8-bit byte in {:?}",
        String::from_utf8_lossy(line)
    );
    let code = std::str::from_utf8(&line[..3]).unwrap().parse().unwrap();
    (code, line.len() == 3 || line[3] == b' ')
}

/// Splits everything the server wrote into replies (code, last line).
fn replies(out: &[u8]) -> Vec<(u16, String)> {
    let mut v = Vec::new();
    let mut pending: Option<u16> = None;
    let mut rest = out;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("reply without CRLF: {:?}", String::from_utf8_lossy(rest)));
        let line = &rest[..end];
        let (code, last) = check_line(line);
        if let Some(p) = pending {
            assert_eq!(p, code, "continuation line changed the code");
        }
        if last {
            v.push((code, String::from_utf8_lossy(line).into_owned()));
            pending = None;
        } else {
            pending = Some(code);
        }
        rest = &rest[end + 2..];
    }
    assert!(pending.is_none(), "reply ended on a continuation line");
    v
}

/// Runs a session for one connection; `client` drives the other end.
fn session<F, Fut, T>(client: F) -> T
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let e = env();
    e.rt.block_on(async {
        let addr = e.listener.local_addr().unwrap();
        let (conn, accepted) = tokio::join!(TcpStream::connect(addr), e.listener.accept());
        let (server_side, _) = accepted.unwrap();
        let s = Session::new(
            e.snapshot.clone(),
            e.committer.clone(),
            e.counters.clone(),
            server_side,
        );
        let (_, out) = tokio::time::timeout(Duration::from_secs(30), async {
            let conn = conn.unwrap();
            // Small writes must not wait for delayed acknowledgements.
            conn.set_nodelay(true).unwrap();
            tokio::join!(async { s.run().await.ok() }, client(conn))
        })
        .await
        .expect("the SMTP session did not end");
        out
    })
}

/// Reads one whole reply: (code, all lines).
async fn read_reply(r: &mut Reader) -> Option<(u16, String)> {
    let mut all = String::new();
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).await.ok()?;
        if line.is_empty() {
            return None;
        }
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF");
        line.truncate(line.len() - 2);
        let (code, last) = check_line(&line);
        all.push_str(&String::from_utf8_lossy(&line));
        all.push('\n');
        if last {
            return Some((code, all));
        }
    }
}

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;

/// Sends one command line and reads its reply.
async fn say(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    r: &mut Reader,
    line: String,
) -> (u16, String) {
    w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    read_reply(r).await.expect("no reply")
}

const ADDR: &[u8] = b"abcxyzABC0189.-_+";

fn address(c: &mut Cursor) -> String {
    let local = c.word(ADDR);
    let domain = c.word(ADDR);
    if local.is_empty() && domain.is_empty() {
        String::new()
    } else {
        format!("{local}@{domain}")
    }
}

fuzz_target!(|data: &[u8]| {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let mut c = Cursor(data);
    let mode = c.byte();
    let e = env();

    if mode & 1 == 1 {
        let input = c.0.to_vec();
        let out = session(|conn| async move {
            let (mut r, mut w) = conn.into_split();
            let (_, out) = tokio::join!(
                async {
                    let _ = w.write_all(&input).await;
                    let _ = w.shutdown().await;
                },
                async {
                    let mut out = Vec::new();
                    let _ = r.read_to_end(&mut out).await;
                    out
                }
            );
            out
        });
        let all = replies(&out);
        assert_eq!(all.first().map(|r| r.0), Some(220), "no greeting");
        let archived = all
            .iter()
            .filter(|(code, text)| *code == 250 && text.contains("Ok: archived"))
            .count() as u64;
        let new = e.seen.lock().unwrap().take(&e.store).len() as u64;
        assert!(
            new <= archived,
            "{new} deliveries stored, {archived} acknowledged"
        );
        return;
    }

    // One transaction, as a careful client sends it.
    let sender = address(&mut c);
    let params = if mode & 2 != 0 { " BODY=8BITMIME" } else { "" };
    let rcpts: Vec<String> = (0..1 + c.byte() % 4).map(|_| address(&mut c)).collect();
    let chunk = usize::from(c.byte() % 64) + 1;
    let message = c.0.to_vec();
    let ident = format!(
        "F{}X{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    );

    let (stored_reply, accepted) = {
        let (sender, rcpts, message, ident) = (
            sender.clone(),
            rcpts.clone(),
            message.clone(),
            ident.clone(),
        );
        session(|conn| async move {
            let (r, mut w) = conn.into_split();
            let mut r = BufReader::new(r);
            assert_eq!(read_reply(&mut r).await.unwrap().0, 220);
            let ehlo = say(&mut w, &mut r, "EHLO client.example".into()).await;
            assert_eq!(ehlo.0, 250, "{}", ehlo.1);
            let xf = say(
                &mut w,
                &mut r,
                format!("XFORWARD ADDR=192.0.2.9 NAME=client.example IDENT={ident}"),
            )
            .await;
            assert_eq!(xf.0, 250, "{}", xf.1);
            let mail = say(&mut w, &mut r, format!("MAIL FROM:<{sender}>{params}")).await;
            let mut accepted = Vec::new();
            let mut stored = None;
            if mail.0 == 250 {
                for rcpt in &rcpts {
                    if say(&mut w, &mut r, format!("RCPT TO:<{rcpt}>")).await.0 == 250 {
                        accepted.push(rcpt.clone());
                    }
                }
                let data = say(&mut w, &mut r, "DATA".into()).await;
                if accepted.is_empty() {
                    assert_ne!(data.0, 354, "DATA without recipients");
                } else {
                    assert_eq!(data.0, 354, "{}", data.1);
                    let mut enc = DataEncoder::default();
                    let mut wire = Vec::new();
                    for piece in message.chunks(chunk) {
                        enc.write(piece, &mut wire).unwrap();
                        w.write_all(&wire).await.unwrap();
                        wire.clear();
                    }
                    enc.finish(&mut wire).unwrap();
                    w.write_all(&wire).await.unwrap();
                    stored = Some(read_reply(&mut r).await.expect("no reply to the final dot"));
                }
            } else {
                assert!(mail.0 >= 500, "MAIL refused with {}", mail.1);
            }
            let quit = say(&mut w, &mut r, "QUIT".into()).await;
            assert_eq!(quit.0, 221);
            (stored, accepted)
        })
    };

    let new = e.seen.lock().unwrap().take(&e.store);
    let Some((code, text)) = stored_reply else {
        assert!(new.is_empty(), "stored without DATA");
        return;
    };
    assert_eq!(code, 250, "final dot answered {text}");
    assert_eq!(new.len(), 1, "deliveries stored");
    let r = &new[0].record;
    let got = e.store.raw_by_hash(&r.content).unwrap();
    assert!(
        got == crlf_normalised(&message),
        "stored bytes differ from the message sent"
    );
    assert!(
        text.contains(&format!("Ok: archived b3:{}", &r.content[..16])),
        "archive id in {text}"
    );
    assert_eq!(r.sender, normalize_address_arg(&format!("<{sender}>")));
    assert_eq!(r.recipients, accepted);
    assert_eq!(r.queue_id.as_deref(), Some(ident.as_str()));
    assert_eq!(r.client_address.as_deref(), Some("192.0.2.9"));
    assert_eq!(r.capture, "filter");
});
