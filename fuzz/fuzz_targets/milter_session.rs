//! Milter packets as an MTA sends them, through the whole milter side of
//! `mailkeep serve`: `miltr-server`'s packet codec, the "no reply" filter,
//! the per-packet deadline and mailkeep's session, archiving into a
//! native store in tmpfs (`capture::milter::serve_stream` over an
//! in-memory stream; `serve` runs the same function on each socket).
//!
//! Input: a mode byte.
//! - Odd: the rest of the input is the MTA's byte stream, then end of
//!   file. Invariants: the session ends (no hang), and everything mailkeep
//!   writes back is a sequence of whole milter packets, each with a reply
//!   code the protocol defines and a length within `MAX_PACKET`.
//! - Even: the rest describes one message (option negotiation flags, MAIL
//!   and RCPT arguments, header fields, body chunks, a login), which is
//!   encoded as the packets Postfix sends, the negotiation answered first.
//!   Invariants: the output is well formed as above, mailkeep never
//!   answers tempfail/reject/discard, and the store gains exactly one
//!   delivery whose bytes are exactly `name ":" value CRLF` per field
//!   (`": "` when the header-leading-space option was not negotiated),
//!   an empty line and the body; its sender, recipients, login and queue
//!   id are the ones sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_capture::milter::{serve_stream, Snapshot, MAX_PACKET};
use mailkeep_capture::policy::{FailureCounters, FailurePolicy};
use mailkeep_destinations::{GroupCommitter, BatchLimits};
use mailkeep_envelope::normalize_address_arg;
use mailkeep_fuzz::{scratch_dir, store_archiver, Cursor, NewDeliveries};
use mailkeep_store::Store;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reply codes a milter may send (libmilter's `SMFIR_*`, plus the
/// negotiation answer).
const REPLY_CODES: &[u8] = b"+-24abcdefhilmpqrstyO";
const LEADSPC: u32 = 0x0010_0000;

struct Env {
    rt: tokio::runtime::Runtime,
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
        let dir = scratch_dir("milter-session");
        let (store, archiver) = store_archiver(&dir);
        let spool_dir = dir.join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap();
        Env {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            seen: Mutex::new(NewDeliveries::new(&store)),
            store,
            snapshot: Arc::new(Snapshot {
                archiver: Arc::new(archiver),
                on_failure: FailurePolicy::Tempfail,
                add_header: false,
                spool_dir,
                // Small, so that some messages are spooled to a file.
                spool_threshold: 512,
                max_message_size: None,
            }),
            committer: GroupCommitter::start(BatchLimits::default()).unwrap(),
            counters: Arc::new(FailureCounters::default()),
        }
    })
}

fn packet(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 5);
    p.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    p.push(code);
    p.extend_from_slice(payload);
    p
}

/// NUL-terminated strings, as milter packets carry them.
fn strings(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

/// Splits mailkeep's output into packets, checking each.
fn frames(out: &[u8]) -> Vec<(u8, &[u8])> {
    let mut rest = out;
    let mut v = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "partial packet header {rest:?}");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!((1..=MAX_PACKET).contains(&len), "packet length {len}");
        assert!(rest.len() >= 4 + len, "partial packet");
        let code = rest[4];
        assert!(REPLY_CODES.contains(&code), "unknown reply code {code:#x}");
        v.push((code, &rest[5..4 + len]));
        rest = &rest[4 + len..];
    }
    v
}

/// Runs one MTA conversation: `first` is sent, then (if `rest` is given)
/// one packet is read (the negotiation answer), `rest(answer)` is sent;
/// then end of file, and everything mailkeep wrote is returned.
fn converse(first: Vec<u8>, rest: Option<&dyn Fn(&[u8]) -> Vec<u8>>) -> Vec<u8> {
    let e = env();
    let (mut mta, milter) = tokio::io::duplex(64 * 1024);
    e.rt.block_on(async {
        let server = serve_stream(
            milter,
            e.snapshot.clone(),
            e.committer.clone(),
            e.counters.clone(),
            Arc::new(AtomicBool::new(false)),
            Duration::from_secs(5),
        );
        let client = async {
            let mut out = Vec::new();
            if mta.write_all(&first).await.is_err() {
                mta.read_to_end(&mut out).await.ok();
                return out;
            }
            if let Some(rest) = rest {
                let mut head = [0u8; 4];
                if mta.read_exact(&mut head).await.is_err() {
                    return out;
                }
                let len = u32::from_be_bytes(head) as usize;
                assert!(len <= MAX_PACKET);
                let mut body = vec![0u8; len];
                mta.read_exact(&mut body).await.unwrap();
                out.extend_from_slice(&head);
                out.extend_from_slice(&body);
                let next = rest(&body);
                let (mut r, mut w) = tokio::io::split(mta);
                let (_, read) = tokio::join!(
                    async {
                        let _ = w.write_all(&next).await;
                        let _ = w.shutdown().await;
                    },
                    async {
                        let mut tail = Vec::new();
                        let _ = r.read_to_end(&mut tail).await;
                        tail
                    }
                );
                out.extend_from_slice(&read);
                return out;
            }
            let (mut r, mut w) = tokio::io::split(mta);
            let _ = w.shutdown().await;
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let (_, out) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(server, client)
        })
        .await
        .expect("the milter session did not end");
        out
    })
}

const ADDR: &[u8] = b"abcxyzABC0189.-_+=@";
const WORD: &[u8] = b"abcdefXYZ0123456789-._";

fuzz_target!(|data: &[u8]| {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let mut c = Cursor(data);
    let mode = c.byte();
    if mode & 1 == 1 {
        let out = converse(c.0.to_vec(), None);
        frames(&out);
        env().seen.lock().unwrap().take(&env().store);
        return;
    }

    // One message, as Postfix would send it.
    let offered = u32::from(c.byte()) << 12 & 0x001f_f000 | if mode & 2 != 0 { LEADSPC } else { 0 };
    let send_data_cmd = mode & 4 != 0;
    let sender = format!("<{}>", c.word(ADDR));
    let rcpts: Vec<String> = (0..1 + c.byte() % 4)
        .map(|_| format!("<{}>", c.word(ADDR)))
        .collect();
    let login = c.word(WORD);
    let queue_id = format!(
        "Q{}X{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    );
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut body: Vec<Vec<u8>> = Vec::new();
    while !c.0.is_empty() && headers.len() + body.len() < 64 {
        if c.byte() % 2 == 0 && body.is_empty() {
            let name: Vec<u8> = c
                .bytes()
                .iter()
                .map(|b| 0x21 + b % 94)
                .map(|b| if b == b':' { b'-' } else { b })
                .collect();
            let name = if name.is_empty() { b"X".to_vec() } else { name };
            let value: Vec<u8> = c.bytes().iter().map(|b| b.max(&1)).copied().collect();
            headers.push((name, value));
        } else {
            body.push(c.bytes().to_vec());
        }
    }

    let mut optneg = Vec::new();
    optneg.extend_from_slice(&6u32.to_be_bytes());
    optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
    optneg.extend_from_slice(&(0x1f_ffffu32 & (offered | 0x7f)).to_be_bytes());
    let first = packet(b'O', &optneg);

    let leadspc = std::cell::Cell::new(false);
    let rest = |answer: &[u8]| -> Vec<u8> {
        assert_eq!(answer.first(), Some(&b'O'), "negotiation answer");
        assert!(answer.len() >= 13);
        let proto = u32::from_be_bytes(answer[9..13].try_into().unwrap());
        assert_eq!(proto & !(offered | 0x7f), 0, "a protocol bit not offered");
        leadspc.set(proto & LEADSPC != 0);
        let mut p = Vec::new();
        p.extend(packet(
            b'D',
            &[&b"C"[..], &strings(&[b"{client_addr}", b"192.0.2.7"])].concat(),
        ));
        p.extend(packet(
            b'C',
            &[
                &b"client.example\0"[..],
                b"4",
                &25u16.to_be_bytes(),
                b"192.0.2.7\0",
            ]
            .concat(),
        ));
        p.extend(packet(b'H', b"helo.example\0"));
        p.extend(packet(
            b'D',
            &[
                &b"M"[..],
                &strings(&[
                    b"i",
                    queue_id.as_bytes(),
                    b"{auth_authen}",
                    login.as_bytes(),
                ]),
            ]
            .concat(),
        ));
        p.extend(packet(
            b'M',
            &strings(&[sender.as_bytes(), b"BODY=8BITMIME"]),
        ));
        for r in &rcpts {
            p.extend(packet(b'R', &strings(&[r.as_bytes()])));
        }
        if send_data_cmd {
            p.extend(packet(b'T', b""));
        }
        for (name, value) in &headers {
            let mut v = value.clone();
            if leadspc.get() {
                v.insert(0, b' ');
            }
            p.extend(packet(b'L', &strings(&[name, &v])));
        }
        p.extend(packet(b'N', b""));
        for chunk in &body {
            if !chunk.is_empty() {
                p.extend(packet(b'B', chunk));
            }
        }
        p.extend(packet(b'E', b""));
        p.extend(packet(b'Q', b""));
        p
    };

    let out = converse(first, Some(&rest));
    let replies = frames(&out);
    for (code, payload) in &replies {
        assert!(
            !b"trd".contains(code),
            "answered {:?} {:?}",
            char::from(*code),
            String::from_utf8_lossy(payload)
        );
    }
    let new = env().seen.lock().unwrap().take(&env().store);
    assert_eq!(new.len(), 1, "deliveries stored");
    let r = &new[0].record;
    let mut want = Vec::new();
    for (name, value) in &headers {
        want.extend_from_slice(name);
        // With the leading-space option the MTA sent " value": the same bytes.
        want.extend_from_slice(b": ");
        want.extend_from_slice(value);
        want.extend_from_slice(b"\r\n");
    }
    want.extend_from_slice(b"\r\n");
    for chunk in &body {
        want.extend_from_slice(chunk);
    }
    let got = env().store.raw_by_hash(&r.content).unwrap();
    assert!(got == want, "stored bytes differ from the message sent");
    assert_eq!(r.sender, normalize_address_arg(&sender));
    let want_rcpts: Vec<String> = rcpts
        .iter()
        .filter_map(|a| normalize_address_arg(a))
        .collect();
    assert_eq!(r.recipients, want_rcpts);
    assert_eq!(
        r.login.as_deref(),
        Some(login.as_str()).filter(|l| !l.is_empty())
    );
    assert_eq!(r.queue_id.as_deref(), Some(queue_id.as_str()));
    assert_eq!(r.capture, "milter");
});
