//! The SMTP client: one connection to a server. [`Client::command`] sends
//! one command and waits for its reply; a caller may [`Client::write`]
//! several and read each [`Client::reply`] (the filter's XFORWARD and MAIL
//! when the relay offers PIPELINING). Every connect, write and reply is
//! bounded by a timeout, so a peer that stalls or drips bytes cannot hold
//! us forever.
//!
//! It knows the protocol (greeting, EHLO with the HELO fallback, STARTTLS,
//! AUTH PLAIN, DATA's dot-stuffing); what to send and what a refusal means
//! is the caller's: the filter relays its client's commands in step,
//! reinjection sends a whole envelope, `forward:` one archive copy.

use crate::data::DataEncoder;
use crate::offer::Offer;
use crate::reply::{self, Reply, ReplyError};
use crate::text::base64;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Resolving the name and connecting.
    pub connect: Duration,
    /// Each write, and each reply (the greeting and TLS handshake too).
    pub command: Duration,
    /// The reply to the final dot, which a server gives only once the
    /// message is queued (Postfix `smtp_data_done_timeout`).
    pub data_done: Duration,
}

impl Timeouts {
    /// Postfix's defaults: `smtp_connect_timeout` 30 s, `smtp_*_timeout`
    /// 300 s, `smtp_data_done_timeout` 600 s.
    pub const POSTFIX: Timeouts = Timeouts {
        connect: Duration::from_secs(30),
        command: Duration::from_secs(300),
        data_done: Duration::from_secs(600),
    };

    /// The same limit for every step.
    pub fn all(limit: Duration) -> Timeouts {
        Timeouts {
            connect: limit,
            command: limit,
            data_done: limit,
        }
    }
}

/// What went wrong, at which stage, with whom.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {peer}: {failure}")]
pub struct Error {
    /// The command or step (`greeting`, `EHLO`, `RCPT`, `end of data`...).
    pub stage: String,
    /// The server, as given to [`Client::connect`].
    pub peer: String,
    /// What happened.
    pub failure: Failure,
}

/// The kinds of [`Error`].
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Network trouble, a timeout, or the server closed the connection.
    #[error("{0}")]
    Io(io::Error),
    /// The server answered, but not with what the stage needs.
    #[error("replied {0}")]
    Rejected(Reply),
    /// The server sent something that is not a reply.
    #[error("malformed reply: {0}")]
    Malformed(ReplyError),
    /// We refused to go on (credentials without TLS, plaintext injected
    /// before a TLS handshake...).
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// The server's reply, when it gave one.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.failure {
            Failure::Rejected(reply) => Some(reply),
            _ => None,
        }
    }

    /// A 5xx reply: asking again will not help. Everything else (4xx,
    /// network, timeouts, confusion) is temporary.
    pub fn is_permanent(&self) -> bool {
        self.reply().is_some_and(Reply::is_permanent)
    }
}

/// The connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between taking the plain stream for the handshake and a TLS one.
    Gone,
}

/// One connection to an SMTP server.
pub struct Client {
    stream: Stream,
    /// Received, not yet parsed.
    buf: Vec<u8>,
    peer: String,
    helo: String,
    timeouts: Timeouts,
    offer: Offer,
    /// An I/O or protocol error left the dialogue out of step: QUIT and
    /// further commands are pointless.
    broken: bool,
}

/// Read size from the server.
const READ_CHUNK: usize = 4096;
/// Write size of the message body.
const DATA_CHUNK: usize = 64 * 1024;

impl Client {
    /// Connects to `addr` (`host:port`, `[v6]:port`), reads the 220
    /// greeting and says EHLO (HELO when EHLO is refused with 5xx).
    pub async fn connect(addr: &str, helo: &str, timeouts: Timeouts) -> Result<Client, Error> {
        let fail = |failure| Error {
            stage: "connect".into(),
            peer: addr.to_string(),
            failure,
        };
        let tcp = timeout(timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| fail(Failure::Io(timed_out(timeouts.connect))))?
            .map_err(|e| fail(Failure::Io(e)))?;
        // Each command goes out in one write and waits for its reply:
        // Nagle's algorithm would hold it for the peer's delayed ACK.
        tcp.set_nodelay(true).map_err(|e| fail(Failure::Io(e)))?;
        let mut client = Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            peer: addr.to_string(),
            helo: helo.to_string(),
            timeouts,
            offer: Offer::default(),
            broken: false,
        };
        let greeting = client.reply("greeting").await?;
        if greeting.code != 220 {
            return Err(client.rejected("greeting", greeting));
        }
        client.ehlo(true).await?;
        Ok(client)
    }

    /// What the server offered in its (latest) EHLO reply.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// Whether the connection is now TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The server as given to [`Client::connect`].
    pub fn peer(&self) -> &str {
        &self.peer
    }

    async fn ehlo(&mut self, may_fall_back: bool) -> Result<(), Error> {
        let reply = self.command(&format!("EHLO {}\r\n", self.helo)).await?;
        match reply.code {
            250 => {
                self.offer = Offer::from_ehlo(&reply);
                Ok(())
            }
            // RFC 5321 4.1.4: a server that does not speak ESMTP refuses
            // EHLO; HELO then opens a session without extensions.
            500..=599 if may_fall_back => {
                self.expect(&format!("HELO {}\r\n", self.helo), |c| c == 250)
                    .await?;
                self.offer = Offer::default();
                Ok(())
            }
            _ => Err(self.rejected("EHLO", reply)),
        }
    }

    /// STARTTLS, the handshake, and EHLO again. A refusal of STARTTLS
    /// itself (any reply but 220) is [`Failure::Rejected`] at stage
    /// `STARTTLS`, with the connection still plaintext and the dialogue in
    /// step, so the caller may go on in plaintext; any later failure (the
    /// handshake, the EHLO over TLS) has its own stage.
    pub async fn starttls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), Error> {
        if self.is_tls() {
            return Err(self.error("STARTTLS", Failure::Refused("TLS is already on".into())));
        }
        let reply = self.command(b"STARTTLS\r\n").await?;
        if reply.code != 220 {
            return Err(self.rejected("STARTTLS", reply));
        }
        // Anything after the 220 was sent before the handshake, in
        // plaintext, so an attacker may have put it there to be read as if
        // it came over TLS (CVE-2011-0411).
        if !self.buf.is_empty() {
            self.broken = true;
            return Err(self.error(
                "STARTTLS",
                Failure::Refused(
                    "the server sent data after its 220 reply, before the TLS handshake".into(),
                ),
            ));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(self.error("STARTTLS", Failure::Refused("TLS is already on".into())));
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let limit = self.timeouts.command;
        match timeout(limit, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => self.stream = Stream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                self.broken = true;
                return Err(self.error("TLS handshake", Failure::Io(e)));
            }
            Err(_) => {
                self.broken = true;
                return Err(self.error("TLS handshake", Failure::Io(timed_out(limit))));
            }
        }
        self.ehlo(false).await
    }

    /// AUTH PLAIN, only ever over TLS, and only when offered.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), Error> {
        if !self.is_tls() {
            return Err(self.error(
                "AUTH",
                Failure::Refused("no TLS: refusing to send AUTH credentials in clear".into()),
            ));
        }
        if !self.offer.auth_plain {
            return Err(self.error(
                "AUTH",
                Failure::Refused("the server does not offer AUTH PLAIN".into()),
            ));
        }
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        // The stage is named without the token, which is the password.
        self.write("AUTH", format!("AUTH PLAIN {token}\r\n").as_bytes())
            .await?;
        let reply = self.reply("AUTH").await?;
        if reply.code != 235 {
            return Err(self.rejected("AUTH", reply));
        }
        Ok(())
    }

    /// Sends one command line (CRLF included) in a single write and reads
    /// its reply, whatever the code. The stage is the line's first word.
    pub async fn command(&mut self, line: impl AsRef<[u8]>) -> Result<Reply, Error> {
        let line = line.as_ref();
        let stage = stage_of(line);
        self.write(&stage, line).await?;
        self.reply(&stage).await
    }

    /// [`Client::command`], and a reply whose code `ok` refuses becomes
    /// [`Failure::Rejected`].
    pub async fn expect(
        &mut self,
        line: impl AsRef<[u8]>,
        ok: impl Fn(u16) -> bool,
    ) -> Result<Reply, Error> {
        let line = line.as_ref();
        let reply = self.command(line).await?;
        if ok(reply.code) {
            Ok(reply)
        } else {
            Err(self.rejected(&stage_of(line), reply))
        }
    }

    /// Writes bytes as they are, within the command timeout.
    pub async fn write(&mut self, stage: &str, data: &[u8]) -> Result<(), Error> {
        let limit = self.timeouts.command;
        let written = match &mut self.stream {
            Stream::Plain(s) => bounded(limit, async { s.write_all(data).await }).await,
            Stream::Tls(s) => {
                bounded(limit, async {
                    s.write_all(data).await?;
                    s.flush().await
                })
                .await
            }
            Stream::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        };
        written.map_err(|e| self.io_error(stage, e))
    }

    /// Reads one reply, complete within the command timeout.
    pub async fn reply(&mut self, stage: &str) -> Result<Reply, Error> {
        self.reply_within(stage, self.timeouts.command).await
    }

    /// Reads one reply, complete within `limit` (a reply dripped a byte at
    /// a time cannot hold us past it).
    pub async fn reply_within(&mut self, stage: &str, limit: Duration) -> Result<Reply, Error> {
        match timeout(limit, self.read_reply()).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(failure)) => {
                self.broken = true;
                Err(self.error(stage, failure))
            }
            Err(_) => Err(self.io_error(stage, timed_out(limit))),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, Failure> {
        loop {
            match reply::parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::Malformed(e)),
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk).await,
                Stream::Tls(s) => s.read(&mut chunk).await,
                Stream::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
            }
            .map_err(Failure::Io)?;
            if n == 0 {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// After a 354: the message from `message` (lines ending in CRLF or
    /// bare LF, which goes out as CRLF; not dot-stuffed), the final dot,
    /// and the server's reply to it, whatever the code, within the
    /// data-done timeout. `message` is read synchronously (a spool file or
    /// memory).
    pub async fn data(&mut self, message: &mut impl Read) -> Result<Reply, Error> {
        let mut encoder = DataEncoder::default();
        let mut chunk = vec![0u8; DATA_CHUNK];
        let mut out = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 8);
        loop {
            let n = match message.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The server is waiting for the rest of the message:
                    // the dialogue cannot go on.
                    self.broken = true;
                    return Err(self.error("DATA", Failure::Io(e)));
                }
            };
            out.clear();
            encoder
                .write(&chunk[..n], &mut out)
                .expect("writing to a Vec does not fail");
            self.write("DATA", &out).await?;
        }
        out.clear();
        encoder
            .finish(&mut out)
            .expect("writing to a Vec does not fail");
        self.write("DATA", &out).await?;
        self.reply_within("end of data", self.timeouts.data_done)
            .await
    }

    /// Whether an I/O or protocol error left the dialogue out of step (no
    /// command can be sent any more).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// RSET, best effort and briefly (2 s), when the dialogue is in step:
    /// after a failed transaction, before QUIT.
    pub async fn reset(&mut self) {
        if !self.broken && self.write("RSET", b"RSET\r\n").await.is_ok() {
            let _ = self.reply_within("RSET", Duration::from_secs(2)).await;
        }
    }

    /// QUIT (when the dialogue is in step) and close, best effort: the
    /// outcome of the transaction is settled already.
    pub async fn quit(mut self) {
        if !self.broken {
            let _ = self.write("QUIT", b"QUIT\r\n").await;
            let _ = self.reply_within("QUIT", Duration::from_secs(2)).await;
        }
        if let Stream::Tls(tls) = &mut self.stream {
            let _ = timeout(Duration::from_secs(2), tls.shutdown()).await;
        }
    }

    fn error(&self, stage: &str, failure: Failure) -> Error {
        Error {
            stage: stage.to_string(),
            peer: self.peer.clone(),
            failure,
        }
    }

    fn rejected(&self, stage: &str, reply: Reply) -> Error {
        self.error(stage, Failure::Rejected(reply))
    }

    fn io_error(&mut self, stage: &str, e: io::Error) -> Error {
        self.broken = true;
        self.error(stage, Failure::Io(e))
    }
}

/// The first word of a command line, upper-case: `RCPT`, `MAIL`, `DATA`.
fn stage_of(line: &[u8]) -> String {
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    String::from_utf8_lossy(&word[..word.len().min(16)]).to_ascii_uppercase()
}

fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out after {}s", limit.as_secs_f64()),
    )
}

async fn bounded<T>(limit: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(limit, f).await.map_err(|_| timed_out(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// A one-connection server on 127.0.0.1 that runs `script` on the
    /// accepted socket; returns its address.
    fn serve(script: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((s, _)) = listener.accept() {
                script(s);
            }
        });
        addr
    }

    fn line(r: &mut impl BufRead) -> String {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    }

    #[test]
    fn a_dripped_reply_cannot_hold_the_client_past_its_timeout() {
        let addr = serve(|mut s| {
            for b in b"220 slow".iter().cycle().take(200) {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let start = Instant::now();
        let limit = Duration::from_millis(300);
        let err = blocking::run(Client::connect(&addr, "me.example", Timeouts::all(limit)))
            .unwrap()
            .err()
            .expect("the greeting never ends");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.stage, "greeting");
        assert!(
            matches!(&err.failure, Failure::Io(e) if e.kind() == io::ErrorKind::TimedOut),
            "{err}"
        );
        assert!(!err.is_permanent());
    }

    #[test]
    fn plaintext_after_the_starttls_reply_is_refused() {
        // CVE-2011-0411: what follows the 220 came before the handshake.
        let addr = serve(|s| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"220 mx ESMTP\r\n").unwrap();
            line(&mut r);
            w.write_all(b"250-mx\r\n250 STARTTLS\r\n").unwrap();
            line(&mut r);
            w.write_all(b"220 go ahead\r\n250 injected\r\n").unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        let err = blocking::run(async {
            let mut c = Client::connect(&addr, "me.example", Timeouts::all(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(c.offer().starttls());
            // Both replies may arrive in one read, or the second after.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let config = crate::tls::client_config(false).unwrap();
            let name = ServerName::try_from("mx.example").unwrap();
            c.starttls(config, name).await.unwrap_err()
        })
        .unwrap();
        assert!(matches!(err.failure, Failure::Refused(_)), "{err}");
        assert!(
            err.to_string().contains("before the TLS handshake"),
            "{err}"
        );
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo_without_extensions() {
        let addr = serve(|s| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"220 old\r\n").unwrap();
            assert!(line(&mut r).starts_with("EHLO me.example"));
            w.write_all(b"502 5.5.1 what\r\n").unwrap();
            assert!(line(&mut r).starts_with("HELO me.example"));
            w.write_all(b"250 old\r\n").unwrap();
            assert!(line(&mut r).starts_with("MAIL"));
            w.write_all(b"550 5.7.1 no\r\n").unwrap();
            let _ = line(&mut r);
        });
        let err = blocking::run(async {
            let mut c = Client::connect(&addr, "me.example", Timeouts::all(Duration::from_secs(5)))
                .await
                .unwrap();
            assert_eq!(c.offer(), &Offer::default());
            c.expect("MAIL FROM:<>\r\n", |code| code == 250)
                .await
                .unwrap_err()
        })
        .unwrap();
        assert_eq!(err.stage, "MAIL");
        assert!(err.is_permanent(), "{err}");
        assert_eq!(err.reply().map(|r| r.code), Some(550));
    }
}
