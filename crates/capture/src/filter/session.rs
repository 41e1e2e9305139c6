//! One SMTP client connection of the filter.
//!
//! Proxy mode (a relay is configured): EHLO capabilities follow the
//! relay's; MAIL, RCPT, RSET and DATA are relayed in step and the relay's
//! own replies are returned; the message body goes to the spool and, as it
//! arrives, to the relay; at the end the copy is archived durably, then
//! the final dot goes to the relay and its reply to the client. An archive
//! failure closes the relay connection without the dot (the relay drops
//! the message) and answers 451. mailkeep never answers 250 for a message
//! that is not both archived and accepted by the relay.
//!
//! Receiver mode (no relay): a final destination that archives and answers
//! `250 2.0.0 Ok: archived b3:<id>`.
//!
//! Commands are parsed by smtp-proto; XFORWARD, which it does not know,
//! is handled here. Replies go out in order, so pipelined clients work.

use super::data::{DataDecoder, Feed};
use super::dedup::Ledger;
use super::tls::Conn;
use super::Snapshot;
use crate::policy::{FailureCounters, FailurePolicy};
use mailkeep_destinations::GroupCommitter;
use mailkeep_envelope::{normalize_address_arg, CapturePath, Envelope, SpoolWriter};
use mailkeep_smtp::{xtext, DataEncoder};
use mailkeep_smtp::{Client as Relay, Reply, Timeouts};
use smtp_proto::{Request, EXT_8BIT_MIME, EXT_DSN, EXT_SMTP_UTF8};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest command line accepted (RFC 5321 allows 512; extensions make
/// longer lines legitimate).
pub const MAX_LINE: usize = 4096;

/// Bytes read from a client at a time: one buffer per session, allocated
/// at the first read, so idle sessions cost little (measured with 1,000
/// idle connections in the flood test).
const READ_CHUNK: usize = 16 * 1024;

/// Where the connection came from, as the client (Postfix) tells it.
#[derive(Debug, Default, Clone)]
struct Forwarded {
    name: Option<String>,
    addr: Option<String>,
    port: Option<u16>,
    helo: Option<String>,
    ident: Option<String>,
    /// The XFORWARD attributes as received, to pass on.
    raw: Vec<(String, String)>,
}

struct Transaction {
    sender: Option<String>,
    sender_params: Vec<String>,
    recipients: Vec<String>,
    /// The relay (or mailkeep) failed inside this transaction: every later
    /// reply of it is 4xx, never 5xx, until it ends (DATA, RSET or a new
    /// MAIL), so the MTA defers every recipient instead of bouncing those
    /// it sends after the failure, or those it already had a 250 for.
    failed: bool,
    /// A recipient got a 4xx (from the relay, or the recipient limit): with
    /// no recipient accepted, DATA is then deferred too, not refused.
    deferred: bool,
}

impl Transaction {
    fn new(sender: Option<String>, sender_params: Vec<String>) -> Transaction {
        Transaction {
            sender,
            sender_params,
            recipients: Vec::new(),
            failed: false,
            deferred: false,
        }
    }

    /// What is left of a transaction after a failure: the MTA may still
    /// send RCPTs and DATA for it (pipelined, or not knowing yet).
    fn failed() -> Transaction {
        Transaction {
            failed: true,
            ..Transaction::new(None, Vec::new())
        }
    }
}

/// One client connection.
pub struct Session {
    snapshot: Arc<Snapshot>,
    committer: GroupCommitter,
    counters: Arc<FailureCounters>,
    stream: Option<Conn>,
    peer: String,
    inbuf: Vec<u8>,
    /// Read buffer, allocated at the first read and reused.
    chunk: Vec<u8>,
    out: Vec<u8>,
    relay: Option<Relay>,
    helo: Option<String>,
    forwarded: Forwarded,
    tx: Option<Transaction>,
    /// The relay has a transaction open (MAIL accepted, final dot not yet
    /// answered): RSET must go to it; otherwise RSET is answered here,
    /// saving a round trip per message on cached connections.
    relay_open: bool,
    /// Set when the server shuts down: an idle session is told 421 and
    /// closed, a new MAIL gets 421, a transaction in progress finishes.
    draining: Arc<AtomicBool>,
}

/// Returns once `flag` is set (checked every 100 ms, as the milter does).
async fn wait_until_set(flag: &AtomicBool) {
    while !flag.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unavailable(what: &str) -> Reply {
    Reply::local(451, &format!("4.3.0 {what}; try again later"))
}

impl Session {
    /// A session for an accepted connection.
    pub fn new(
        snapshot: Arc<Snapshot>,
        committer: GroupCommitter,
        counters: Arc<FailureCounters>,
        stream: TcpStream,
    ) -> Session {
        let peer = stream
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        Session {
            snapshot,
            committer,
            counters,
            stream: Some(Conn::Plain(stream)),
            peer,
            inbuf: Vec::new(),
            chunk: Vec::new(),
            out: Vec::new(),
            relay: None,
            helo: None,
            forwarded: Forwarded::default(),
            tx: None,
            relay_open: false,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The session follows `draining` (see [`crate::listen::serve`]).
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Session {
        self.draining = draining;
        self
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// RFC 5321 4.3.2: 421 when the service is shutting down; the MTA
    /// retries the message later, on another connection.
    async fn shutting_down(&mut self) -> io::Result<()> {
        self.send(&Reply::local(421, "4.3.2 Shutting down; try again later"))
            .await?;
        self.flush().await
    }

    /// Serves the connection to its end.
    pub async fn run(mut self) -> io::Result<()> {
        if !self.snapshot.allows(&self.peer) {
            tracing::warn!(client = %self.peer, "refused: not in allowed_clients");
            self.send(&Reply::local(554, "5.7.1 Access denied")).await?;
            return Ok(());
        }
        if self.snapshot.relay.is_some() {
            if let Err(e) = self.connect_relay().await {
                tracing::error!(client = %self.peer, "relay unavailable: {e}");
                self.send(&Reply::local(
                    421,
                    "4.3.0 Relay unavailable, try again later",
                ))
                .await?;
                return Ok(());
            }
        }
        let greeting = format!("220 {} ESMTP mailkeep", self.snapshot.hostname);
        self.send(&Reply::local(220, &greeting[4..])).await?;
        loop {
            let idle = self.tx.is_none() && !self.inbuf.contains(&b'\n');
            if idle && self.is_draining() {
                self.shutting_down().await?;
                break;
            }
            let line = if idle {
                // Between transactions: waiting for the client must not
                // hold up a shutdown until the drain deadline.
                let draining = self.draining.clone();
                tokio::select! {
                    line = self.read_line() => line?,
                    () = wait_until_set(&draining) => continue,
                }
            } else {
                self.read_line().await?
            };
            let Some(line) = line else {
                break;
            };
            let quit = self.command(&line).await?;
            if quit {
                break;
            }
        }
        if let Some(relay) = self.relay.take() {
            relay.quit().await;
        }
        Ok(())
    }

    fn proxy(&self) -> bool {
        self.snapshot.relay.is_some()
    }

    /// The relay connection in proxy mode, reconnecting after an earlier
    /// failure (a transaction whose relay failed is never completed).
    async fn ensure_relay(&mut self) -> Result<(), Reply> {
        if self.relay.is_none() {
            if let Err(e) = self.connect_relay().await {
                tracing::error!("relay unavailable: {e}");
                return Err(unavailable("Relay unavailable"));
            }
        }
        Ok(())
    }

    async fn connect_relay(&mut self) -> Result<(), mailkeep_smtp::Error> {
        let addr = self.snapshot.relay.clone().unwrap_or_default();
        let timeouts = Timeouts {
            connect: self.snapshot.command_timeout,
            command: self.snapshot.command_timeout,
            data_done: self.snapshot.data_done_timeout,
        };
        let relay = Relay::connect(&addr, &self.snapshot.hostname, timeouts).await?;
        self.relay = Some(relay);
        self.relay_open = false;
        Ok(())
    }

    async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.out.extend_from_slice(&reply.raw);
        // Hold replies while pipelined commands are waiting (RFC 2920).
        if self.inbuf.is_empty() {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let data = std::mem::take(&mut self.out);
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| io::Error::other("connection gone"))?;
            timeout(self.snapshot.command_timeout, stream.write_all(&data))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "writing to the client timed out")
                })??;
        }
        Ok(())
    }

    async fn fill(&mut self, limit: Duration) -> io::Result<bool> {
        self.flush().await?;
        if self.chunk.is_empty() {
            self.chunk = vec![0u8; READ_CHUNK];
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("connection gone"))?;
        let n = timeout(limit, stream.read(&mut self.chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client timed out"))??;
        self.inbuf.extend_from_slice(&self.chunk[..n]);
        Ok(n > 0)
    }

    /// One command line without its line end; `None` at end of input.
    /// The whole line must arrive within `command_timeout`, not each read:
    /// a client trickling a byte at a time cannot hold a session forever.
    async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let deadline = tokio::time::Instant::now() + self.snapshot.command_timeout;
        let left = move || deadline.saturating_duration_since(tokio::time::Instant::now());
        loop {
            if let Some(i) = self.inbuf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.inbuf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE {
                    self.send(&Reply::local(500, "5.5.2 Line too long")).await?;
                    continue;
                }
                return Ok(Some(line));
            }
            if self.inbuf.len() > MAX_LINE {
                // Discard the overlong line up to its end.
                self.inbuf.clear();
                self.send(&Reply::local(500, "5.5.2 Line too long")).await?;
                loop {
                    if !self.fill(left()).await? {
                        return Ok(None);
                    }
                    if let Some(i) = self.inbuf.iter().position(|b| *b == b'\n') {
                        self.inbuf.drain(..=i);
                        break;
                    }
                    self.inbuf.clear();
                }
                continue;
            }
            if !self.fill(left()).await? {
                return Ok(None);
            }
        }
    }

    /// Handles one command; true when the session ends.
    async fn command(&mut self, line: &[u8]) -> io::Result<bool> {
        let upper: Vec<u8> = line.iter().take(9).map(u8::to_ascii_uppercase).collect();
        if upper.starts_with(b"XFORWARD ") {
            let reply = self.xforward(line);
            self.send(&reply).await?;
            return Ok(false);
        }
        let mut with_crlf = line.to_vec();
        with_crlf.extend_from_slice(b"\r\n");
        let request = Request::parse(&mut with_crlf.iter());
        let reply = match request {
            Err(smtp_proto::Error::UnknownCommand) => {
                Reply::local(500, "5.5.2 Command unrecognized")
            }
            Err(e) => Reply::local(501, &format!("5.5.4 Syntax error: {}", error_text(&e))),
            Ok(Request::Ehlo { host }) => self.ehlo(&host, true),
            Ok(Request::Helo { host }) => self.ehlo(&host, false),
            Ok(Request::Lhlo { .. }) => Reply::local(502, "5.5.1 LMTP is not spoken here"),
            Ok(Request::Quit) => {
                self.send(&Reply::local(221, "2.0.0 Bye")).await?;
                self.flush().await?;
                return Ok(true);
            }
            Ok(Request::Noop { .. }) => Reply::local(250, "2.0.0 Ok"),
            Ok(Request::Vrfy { .. }) => Reply::local(252, "2.0.0 Cannot verify, send some mail"),
            Ok(Request::Rset) => {
                self.tx = None;
                self.forwarded = Forwarded::default();
                let open = std::mem::replace(&mut self.relay_open, false);
                match self.relay.as_mut().filter(|_| open) {
                    Some(r) => match r.command(b"RSET\r\n").await {
                        Ok(reply) => reply,
                        Err(_) => {
                            // Reconnect at the next MAIL.
                            self.relay = None;
                            Reply::local(250, "2.0.0 Ok")
                        }
                    },
                    None => Reply::local(250, "2.0.0 Ok"),
                }
            }
            Ok(Request::Mail { .. }) if self.is_draining() => {
                self.shutting_down().await?;
                return Ok(true);
            }
            Ok(Request::Mail { from }) => self.mail(from.address.to_string(), &with_crlf).await,
            Ok(Request::Rcpt { to }) => self.rcpt(to.address.to_string(), &with_crlf).await,
            Ok(Request::Data) => return self.data().await.map(|()| false),
            Ok(Request::Bdat { .. }) => Reply::local(502, "5.5.1 CHUNKING is not offered"),
            Ok(Request::StartTls) => return self.starttls().await.map(|()| false),
            Ok(Request::Auth { .. }) => Reply::local(502, "5.5.1 AUTH is not offered"),
            Ok(_) => Reply::local(502, "5.5.1 Command not implemented"),
        };
        self.send(&reply).await?;
        Ok(false)
    }

    /// RFC 3207: 220, then the handshake; anything the client pipelined
    /// after STARTTLS is discarded, and the session starts over (EHLO).
    async fn starttls(&mut self) -> io::Result<()> {
        let in_tls = matches!(self.stream, Some(Conn::Tls(_)));
        let Some(config) = self.snapshot.tls.clone().filter(|_| !in_tls) else {
            return self
                .send(&Reply::local(502, "5.5.1 STARTTLS is not offered"))
                .await;
        };
        self.inbuf.clear();
        self.send(&Reply::local(220, "2.0.0 Ready to start TLS"))
            .await?;
        self.flush().await?;
        let Some(Conn::Plain(tcp)) = self.stream.take() else {
            return Err(io::Error::other("connection gone"));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = timeout(self.snapshot.command_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Some(Conn::Tls(Box::new(tls)));
        self.helo = None;
        self.tx = None;
        Ok(())
    }

    fn ehlo(&mut self, host: &str, extended: bool) -> Reply {
        self.helo = Some(host.to_string());
        self.tx = None;
        let me = &self.snapshot.hostname;
        if !extended {
            return Reply::local(250, me);
        }
        let (caps, relay_size) = match &self.relay {
            Some(r) => (r.offer().capabilities, r.offer().size),
            None => (EXT_8BIT_MIME | EXT_SMTP_UTF8, 0),
        };
        let mut lines = vec![me.clone(), "PIPELINING".to_string()];
        // Never smaller than what the relay accepts.
        let size = match (relay_size, self.snapshot.max_message_size) {
            (0, None) => None,
            (r, None) => Some(r as u64),
            (0, Some(m)) => Some(m),
            (r, Some(m)) => Some((r as u64).max(m)),
        };
        lines.push(match size {
            Some(s) => format!("SIZE {s}"),
            None => "SIZE".to_string(),
        });
        if caps & EXT_8BIT_MIME != 0 {
            lines.push("8BITMIME".into());
        }
        if caps & EXT_SMTP_UTF8 != 0 {
            lines.push("SMTPUTF8".into());
        }
        if caps & EXT_DSN != 0 {
            lines.push("DSN".into());
        }
        lines.push("ENHANCEDSTATUSCODES".into());
        if self.snapshot.tls.is_some() && !matches!(self.stream, Some(Conn::Tls(_))) {
            lines.push("STARTTLS".into());
        }
        lines.push("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE".into());
        let mut raw = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            raw.push_str(&format!("250{sep}{l}\r\n"));
        }
        Reply {
            code: 250,
            raw: raw.into_bytes(),
        }
    }

    fn xforward(&mut self, line: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(&line[9..]).into_owned();
        for attr in text.split_whitespace() {
            let Some((k, v)) = attr.split_once('=') else {
                return Reply::local(501, "5.5.4 Bad XFORWARD syntax");
            };
            let v = xtext_decode(v);
            let known = !v.is_empty() && v != "[UNAVAILABLE]" && v != "[TEMPUNAVAIL]";
            let f = &mut self.forwarded;
            match k.to_ascii_uppercase().as_str() {
                "NAME" => f.name = known.then(|| v.clone()),
                "ADDR" => f.addr = known.then(|| v.trim_start_matches("IPV6:").to_string()),
                "PORT" => f.port = v.parse().ok(),
                "HELO" => f.helo = known.then(|| v.clone()),
                "IDENT" => f.ident = known.then(|| v.clone()),
                "PROTO" | "SOURCE" => {}
                _ => return Reply::local(501, "5.5.4 Bad XFORWARD attribute"),
            }
            f.raw.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
            f.raw.push((k.to_ascii_uppercase(), v));
        }
        Reply::local(250, "2.0.0 Ok")
    }

    async fn mail(&mut self, address: String, line: &[u8]) -> Reply {
        if self.helo.is_none() {
            return Reply::local(503, "5.5.1 Send EHLO first");
        }
        if self.tx.as_ref().is_some_and(|t| !t.failed) {
            return Reply::local(503, "5.5.1 Nested MAIL command");
        }
        self.tx = None;
        let params: Vec<String> = String::from_utf8_lossy(line)
            .trim_end()
            .split_once('>')
            .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let declared = params.iter().find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.eq_ignore_ascii_case("SIZE")
                .then(|| v.parse::<u64>().ok())
                .flatten()
        });
        if let (Some(size), Some(max)) = (declared, self.snapshot.max_message_size) {
            if size > max {
                return Reply::local(552, "5.3.4 Message too big");
            }
        }
        if self.proxy() {
            let reply = match self.relay_mail(line).await {
                Ok(r) => r,
                Err(reply) => {
                    self.tx = Some(Transaction::failed());
                    return reply;
                }
            };
            if !reply.is_positive() {
                return reply;
            }
            self.relay_open = true;
            self.tx = Some(Transaction::new(normalize_address_arg(&address), params));
            return reply;
        }
        self.tx = Some(Transaction::new(normalize_address_arg(&address), params));
        Reply::local(250, "2.1.0 Ok")
    }

    /// MAIL (with XFORWARD) to the relay. Nothing is open on the relay
    /// before MAIL, so a connection it closed while idle (its timeout after
    /// the last message) or that failed here is replaced once and MAIL sent
    /// again: the client never hears about a relay that was only idle.
    async fn relay_mail(&mut self, line: &[u8]) -> Result<Reply, Reply> {
        let reused = self.relay.is_some();
        for attempt in 0..2 {
            self.ensure_relay().await?;
            let Some(relay) = &mut self.relay else {
                return Err(unavailable("Relay unavailable"));
            };
            match xforward_and_mail(relay, &self.forwarded, line).await {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    self.relay = None;
                    if attempt == 0 && reused {
                        tracing::info!("relay connection lost while idle ({e}); reconnecting");
                        continue;
                    }
                    tracing::error!("relay failed at MAIL: {e}");
                }
            }
            break;
        }
        Err(unavailable("Relay failed"))
    }

    async fn rcpt(&mut self, address: String, line: &[u8]) -> Reply {
        let Some(count) = self.tx.as_ref().map(|t| t.recipients.len()) else {
            return Reply::local(503, "5.5.1 Need MAIL before RCPT");
        };
        if self.tx.as_ref().is_some_and(|t| t.failed) {
            return unavailable("Relay failed earlier in this transaction");
        }
        if count >= self.snapshot.max_recipients {
            if let Some(tx) = &mut self.tx {
                tx.deferred = true;
            }
            return Reply::local(452, "4.5.3 Too many recipients");
        }
        // `RCPT TO:<>` names nobody: refused here, as Postfix's smtpd does,
        // rather than accepted and then missing from the envelope.
        let Some(recipient) = normalize_address_arg(&address) else {
            return Reply::local(501, "5.1.3 Bad recipient address syntax");
        };
        if self.proxy() && self.relay.is_none() {
            self.tx = Some(Transaction::failed());
            return unavailable("Relay failed");
        }
        let reply = match &mut self.relay {
            Some(relay) => match relay.command(line).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("relay failed at RCPT: {e}");
                    self.relay = None;
                    self.relay_open = false;
                    self.tx = Some(Transaction::failed());
                    return unavailable("Relay failed");
                }
            },
            None => Reply::local(250, "2.1.5 Ok"),
        };
        if let Some(tx) = &mut self.tx {
            if reply.is_positive() {
                tx.recipients.push(recipient);
            } else if reply.code / 100 == 4 {
                tx.deferred = true;
            }
        }
        reply
    }

    /// DATA: the body to spool and relay, then archive, then the dot.
    async fn data(&mut self) -> io::Result<()> {
        let Some(tx) = self.tx.take() else {
            return self
                .send(&Reply::local(503, "5.5.1 Need MAIL and RCPT before DATA"))
                .await;
        };
        if tx.failed {
            return self
                .send(&unavailable("Relay failed earlier in this transaction"))
                .await;
        }
        if tx.recipients.is_empty() {
            let reply = if tx.deferred {
                Reply::local(451, "4.5.3 No recipient accepted yet; try again later")
            } else {
                Reply::local(554, "5.5.1 No valid recipients")
            };
            return self.send(&reply).await;
        }
        if self.proxy() && self.relay.is_none() {
            return self.send(&unavailable("Relay failed")).await;
        }
        if let Some(relay) = &mut self.relay {
            match relay.command(b"DATA\r\n").await {
                Ok(r) if r.code == 354 => {}
                Ok(r) => return self.send(&r).await,
                Err(e) => {
                    tracing::error!("relay failed at DATA: {e}");
                    self.relay = None;
                    return self.send(&unavailable("Relay failed")).await;
                }
            }
        }
        self.send(&Reply::local(354, "End data with <CR><LF>.<CR><LF>"))
            .await?;
        self.flush().await?;

        let s = self.snapshot.clone();
        let mut spool =
            SpoolWriter::new(&s.spool_dir, s.spool_threshold).with_limit(s.max_message_size);
        let mut decoder = DataDecoder::default();
        let mut encoder = DataEncoder::default();
        let mut decoded = Vec::with_capacity(64 * 1024);
        let mut to_relay = Vec::with_capacity(64 * 1024);
        let mut too_big = false;
        let mut spool_error: Option<String> = None;
        let mut relay_ok = self.relay.is_some();
        loop {
            if self.inbuf.is_empty() && !self.fill(s.data_timeout).await? {
                // The client went away mid-DATA: nothing is archived, and
                // the relay gets no dot.
                tracing::warn!(client = %self.peer, "client disconnected during DATA; nothing archived");
                self.relay = None;
                return Ok(());
            }
            decoded.clear();
            let feed = decoder.feed(&self.inbuf, &mut decoded);
            let used = match feed {
                Feed::Done(n) => n,
                Feed::More => self.inbuf.len(),
            };
            self.inbuf.drain(..used);
            if !too_big && spool_error.is_none() {
                if let Err(e) = spool.write_all(&decoded) {
                    if e.kind() == io::ErrorKind::FileTooLarge {
                        too_big = true;
                    } else {
                        spool_error = Some(e.to_string());
                    }
                }
            }
            if relay_ok && !too_big {
                to_relay.clear();
                encoder.write(&decoded, &mut to_relay)?;
                if let Some(relay) = &mut self.relay {
                    if let Err(e) = relay.write("DATA", &to_relay).await {
                        tracing::error!("relay failed during DATA: {e}");
                        relay_ok = false;
                    }
                }
            }
            if matches!(feed, Feed::Done(_)) {
                break;
            }
        }
        let reply = self
            .finish(tx, spool, too_big, spool_error, relay_ok, encoder)
            .await;
        // XFORWARD attributes hold for one transaction (as in Postfix).
        self.forwarded = Forwarded::default();
        self.send(&reply).await
    }

    async fn finish(
        &mut self,
        tx: Transaction,
        spool: SpoolWriter,
        too_big: bool,
        spool_error: Option<String>,
        relay_ok: bool,
        mut encoder: DataEncoder,
    ) -> Reply {
        let proxy = self.snapshot.relay.is_some();
        if too_big {
            self.relay = None;
            return Reply::local(552, "5.3.4 Message too big");
        }
        if proxy && !relay_ok {
            self.relay = None;
            return unavailable("Relay failed");
        }
        let message = match (spool_error, spool.finish()) {
            (Some(e), _) => return self.not_archived(&e),
            (None, Err(e)) => return self.not_archived(&e.to_string()),
            (None, Ok(m)) => m,
        };
        let mut env = self.envelope(tx, message);
        // Reading the header section may read the spool file: off the
        // async workers, like the archive itself.
        let msg = env.message.clone();
        env.login = tokio::task::spawn_blocking(move || {
            msg.head().ok().and_then(|h| authenticated_sender(&h))
        })
        .await
        .ok()
        .flatten();
        let queue_id = env.queue_id.clone();
        // Already archived on an earlier delivery attempt?
        // Hashing and the ledger's file system work run off the async
        // workers, like the archive itself.
        let ledger = self.snapshot.ledger.clone();
        let (key, seen) = match &queue_id {
            Some(q) => {
                let (q, rcpts, msg, l) = (
                    q.clone(),
                    env.recipients.clone(),
                    env.message.clone(),
                    ledger.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let key = Ledger::key(&q, &rcpts, &msg).ok();
                    let seen = key.as_ref().is_some_and(|k| l.seen(k));
                    (key, seen)
                })
                .await
                .unwrap_or((None, false))
            }
            None => (None, false),
        };
        let mut archive_id = None;
        if seen {
            tracing::info!(
                queue_id = queue_id.as_deref().unwrap_or("-"),
                "already archived on an earlier attempt"
            );
        } else {
            let msg = env.message.clone();
            let id = tokio::task::spawn_blocking(move || crate::archive_id(&msg))
                .await
                .ok()
                .flatten();
            match crate::archive_durably(&self.committer, self.snapshot.archiver.clone(), env).await
            {
                Ok(report) => {
                    crate::log_report(queue_id.as_deref(), &report);
                    if let Some(k) = key.clone() {
                        let l = ledger.clone();
                        match tokio::task::spawn_blocking(move || l.record(&k)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::warn!("cannot record the dedup key: {e}"),
                            Err(e) => tracing::warn!("cannot record the dedup key: {e}"),
                        }
                    }
                    archive_id = id;
                }
                Err(e) => {
                    let why = crate::error_chain(&e);
                    if self.snapshot.on_failure == FailurePolicy::Tempfail || !proxy {
                        // No dot for the relay: closing drops the message there.
                        self.relay = None;
                        self.counters.record(FailurePolicy::Tempfail);
                        tracing::error!(
                            queue_id = queue_id.as_deref().unwrap_or("-"),
                            "not archived, asking the client to retry: {why}"
                        );
                        return unavailable("Archive unavailable");
                    }
                    self.counters.record(FailurePolicy::Accept);
                    tracing::error!(
                        queue_id = queue_id.as_deref().unwrap_or("-"),
                        "not archived, passed on anyway (counted): {why}"
                    );
                }
            }
        }
        if proxy && self.relay.is_none() {
            return unavailable("Relay failed");
        }
        // The dot ends the relay's transaction, whatever it answers.
        self.relay_open = false;
        match &mut self.relay {
            Some(relay) => {
                let mut end = Vec::new();
                let _ = encoder.finish(&mut end);
                let timeout = self.snapshot.data_done_timeout;
                let sent = relay.write("end of data", &end).await;
                match sent {
                    Ok(()) => match relay.reply_within("end of data", timeout).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("relay failed after the message: {e}");
                            self.relay = None;
                            unavailable("Relay did not answer")
                        }
                    },
                    Err(e) => {
                        tracing::error!("relay failed at the final dot: {e}");
                        self.relay = None;
                        unavailable("Relay failed")
                    }
                }
            }
            None => Reply::local(
                250,
                &format!(
                    "2.0.0 Ok: archived {}",
                    archive_id.unwrap_or_else(|| "(already)".into())
                ),
            ),
        }
    }

    fn not_archived(&mut self, why: &str) -> Reply {
        self.relay = None;
        self.counters.record(FailurePolicy::Tempfail);
        tracing::error!("not archived: {why}");
        unavailable("Archive unavailable")
    }

    fn envelope(&self, tx: Transaction, message: mailkeep_envelope::RawMessage) -> Envelope {
        let mut env = Envelope::new(CapturePath::Filter, message);
        let f = &self.forwarded;
        env.sender = tx.sender;
        env.sender_params = tx.sender_params;
        env.recipients = tx.recipients;
        env.queue_id = f.ident.clone();
        env.client.address = f.addr.clone().or_else(|| Some(self.peer.clone()));
        env.client.hostname = f.name.clone();
        env.client.port = f.port;
        env.client.helo = f.helo.clone().or_else(|| self.helo.clone());
        env.tls = self.stream.as_ref().and_then(Conn::describe_tls);
        env
    }
}

/// What a syntax error reply says. Client bytes are echoed only as
/// printable ASCII and at most 64 characters: a reply is 7-bit text within
/// RFC 5321's 512 bytes (echoing them through `Debug` put 8-bit bytes in
/// replies; found by fuzzing).
fn error_text(e: &smtp_proto::Error) -> String {
    use smtp_proto::Error as E;
    match e {
        E::InvalidSenderAddress => "bad sender address".into(),
        E::InvalidRecipientAddress => "bad recipient address".into(),
        E::SyntaxError { syntax } => format!("expected {}", printable(syntax)),
        E::InvalidParameter { param } => format!("bad value for {}", printable(param)),
        E::UnsupportedParameter { param } => {
            format!("unsupported parameter {}", printable(param))
        }
        _ => "bad command".into(),
    }
}

/// `text` with anything but printable ASCII shown as `?`, cut at 64
/// characters.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// XFORWARD values are xtext: `+XX` is a byte.
fn xtext_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'+' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends XFORWARD (the attributes the relay offers, in as few commands as
/// fit Postfix's 512-byte line: one, in practice) and then `mail_line`,
/// pipelined in one write when the relay offers PIPELINING: one round trip
/// instead of two. Returns the reply to MAIL; an XFORWARD refusal is only
/// logged (the message still flows, with less context at the relay).
async fn xforward_and_mail(
    relay: &mut Relay,
    f: &Forwarded,
    mail_line: &[u8],
) -> Result<Reply, mailkeep_smtp::Error> {
    let mut lines: Vec<String> = Vec::new();
    for (name, value) in &f.raw {
        if !relay.offer().xforward.iter().any(|o| o == name) {
            continue;
        }
        let attr = format!(" {name}={}", xtext(value));
        match lines.last_mut() {
            Some(l) if l.len() + attr.len() < 500 => l.push_str(&attr),
            _ => lines.push(format!("XFORWARD{attr}")),
        }
    }
    let pipelining = relay.offer().capabilities & smtp_proto::EXT_PIPELINING != 0;
    if pipelining {
        let mut wire = Vec::new();
        for line in &lines {
            wire.extend_from_slice(line.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(mail_line);
        relay.write("MAIL", &wire).await?;
        for _ in &lines {
            let r = relay.reply("XFORWARD").await?;
            if !r.is_positive() {
                tracing::warn!(
                    "relay refused XFORWARD: {}",
                    String::from_utf8_lossy(&r.raw).trim_end()
                );
            }
        }
        return relay.reply("MAIL").await;
    }
    for line in lines {
        let r = relay.command(format!("{line}\r\n").as_bytes()).await?;
        if !r.is_positive() {
            tracing::warn!(
                "relay refused XFORWARD: {}",
                String::from_utf8_lossy(&r.raw).trim_end()
            );
        }
    }
    relay.command(mail_line).await
}

/// The SASL login Postfix wrote into its Received header with
/// `smtpd_sasl_authenticated_header = yes`: `(Authenticated sender: bob)`.
/// Only the first Received field counts: that is the one Postfix added.
pub fn authenticated_sender(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let mut first_received = String::new();
    let mut in_received = false;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if in_received {
            if line.starts_with([' ', '\t']) {
                first_received.push(' ');
                first_received.push_str(line.trim());
                continue;
            }
            break;
        }
        // Bytes, not `str` slicing: byte 9 may be inside a character.
        if line
            .as_bytes()
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"received:"))
        {
            in_received = true;
            first_received.push_str(&line[9..]);
        }
        if line.is_empty() {
            break;
        }
    }
    let start = first_received.find("(Authenticated sender: ")? + "(Authenticated sender: ".len();
    let rest = &first_received[start..];
    let end = rest.find(')')?;
    let login = rest[..end].trim();
    (!login.is_empty()).then(|| login.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_replies_are_short_printable_ascii() {
        let param = format!("SMTPUT\u{fffd}F8\r\n{}", "x".repeat(2000));
        let text = error_text(&smtp_proto::Error::UnsupportedParameter { param });
        assert!(
            text.starts_with("unsupported parameter SMTPUT?F8??xxx"),
            "{text}"
        );
        assert!(text.len() < 100, "{text}");
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
    }

    /// A header line with a multi-byte character across byte 9 panicked
    /// (found by fuzzing the SMTP session).
    #[test]
    fn login_search_survives_a_character_across_byte_nine() {
        assert_eq!(
            authenticated_sender(b"\x00\x00\x00\x00\x00\x00\x00\x00\xe9x\r\n\r\n"),
            None
        );
        assert_eq!(
            authenticated_sender("Receivedé: x\r\n\r\n".as_bytes()),
            None
        );
        assert_eq!(
            authenticated_sender(b"received: (Authenticated sender: \xe9)\r\n\r\n").as_deref(),
            Some("\u{fffd}")
        );
    }

    #[test]
    fn login_from_postfix_received_header() {
        let head = b"Received: from client.example (client.example [192.0.2.1])\r\n\t(Authenticated sender: bob)\r\n\tby mx.example (Postfix) with ESMTPSA id 4ABC\r\n\tfor <a@example.com>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)\r\nReceived: from x (Authenticated sender: mallory)\r\nSubject: x\r\n\r\n";
        assert_eq!(authenticated_sender(head).as_deref(), Some("bob"));
        let forged = b"Subject: x\r\nReceived: from x (Authenticated sender: mallory)\r\n\r\n";
        assert_eq!(authenticated_sender(forged).as_deref(), Some("mallory"));
        assert_eq!(authenticated_sender(b"Received: from a by b\r\n\r\n"), None);
    }

    #[test]
    fn xtext_round_trip() {
        assert_eq!(xtext_decode("a+20b+2Bc"), "a b+c");
        assert_eq!(xtext_decode("plain"), "plain");
        assert_eq!(xtext_decode("bad+zz"), "bad+zz");
        assert_eq!(xtext_decode("end+2"), "end+2");
        assert_eq!(xtext_decode("\u{e9}+\u{e9}"), "\u{e9}+\u{e9}");
    }
}
