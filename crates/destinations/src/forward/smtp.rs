//! SMTP delivery of archive copies to a relay: one synchronous session per
//! copy (connect, EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, QUIT),
//! commands answered one at a time (no pipelining).
//!
//! TLS follows Postfix's `smtp_tls_security_level`: [`TlsMode::Opportunistic`]
//! is `may` (STARTTLS when offered, the certificate not checked: an
//! unverified channel still beats plaintext against a passive listener),
//! [`TlsMode::Required`] is `encrypt`, or `secure` with
//! [`RelayConfig::tls_verify`], which checks the certificate against the
//! system's CA bundle (the PEM file Debian, RHEL, SUSE or Alpine ship, or
//! `SSL_CERT_FILE`) with rustls' own WebPKI verifier.
//!
//! An archive copy must arrive as it was captured, so an 8-bit message is
//! never handed to a relay that does not offer 8BITMIME (it would be
//! entitled to mangle it), nor a UTF-8 envelope to one without SMTPUTF8:
//! both fail permanently before `MAIL`, since asking again will not help.
//! Otherwise a 4xx reply, a timeout or an I/O error is temporary and a 5xx
//! reply is permanent; every error names the stage and the relay's reply.
//!
//! Replies are parsed by [`parse_reply`], a sans-IO function with bounded
//! line length and line count, so a hostile relay cannot make us buffer
//! without limit; each reply must also be complete within
//! [`RelayConfig::timeout`], so it cannot drip bytes to hold us forever.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Default for [`RelayConfig::timeout`]: Postfix's `smtp_*_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest reply line accepted, CRLF included. RFC 5321 allows 512 bytes;
/// real servers stay far below this.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines accepted in one reply (an EHLO reply has one per extension).
pub const MAX_REPLY_LINES: usize = 100;
/// Write buffer for the message body.
const DATA_BUFFER: usize = 64 * 1024;

/// CA bundles tried, in order, after `SSL_CERT_FILE`.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when the relay offers it, certificate not verified
    /// (Postfix `smtp_tls_security_level = may`).
    #[default]
    Opportunistic,
    /// STARTTLS must be offered, or the send fails temporarily; the
    /// certificate is verified only with [`RelayConfig::tls_verify`].
    Required,
    /// Never STARTTLS.
    Off,
}

/// Where and how to send archive copies.
#[derive(Clone)]
pub struct RelayConfig {
    /// `host:port` (`[v6addr]:port` for an IPv6 literal).
    pub addr: String,
    /// Our name in EHLO/HELO.
    pub helo: String,
    /// When to use STARTTLS.
    pub tls: TlsMode,
    /// Verify the relay's certificate against the system CA bundle and
    /// the host name in `addr`. Needs `tls = Required`.
    pub tls_verify: bool,
    /// AUTH PLAIN user and password; only ever sent over TLS.
    pub auth: Option<(String, String)>,
    /// Connect timeout, and the limit for each write and for each reply.
    pub timeout: Duration,
}

impl RelayConfig {
    /// A relay with the defaults: opportunistic TLS, no AUTH,
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(addr: impl Into<String>, helo: impl Into<String>) -> RelayConfig {
        RelayConfig {
            addr: addr.into(),
            helo: helo.into(),
            tls: TlsMode::default(),
            tls_verify: false,
            auth: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks the settings once, at configuration time; [`send`] runs the
    /// same check and fails permanently when it does not pass. With
    /// `tls_verify` this loads the system CA bundle.
    pub fn check(&self) -> Result<(), String> {
        let host = host_of(&self.addr)?;
        if self.helo.is_empty() || self.helo.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "helo {:?}: must be a non-empty name without spaces",
                self.helo
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than zero".into());
        }
        if let Some((user, password)) = &self.auth {
            if self.tls == TlsMode::Off {
                return Err(
                    "auth is set with tls = off: refusing to send AUTH credentials in clear".into(),
                );
            }
            if user.is_empty() || user.contains('\0') || password.contains('\0') {
                return Err("auth: the user must be non-empty, and neither may contain NUL".into());
            }
        }
        if self.tls_verify {
            // With opportunistic TLS, whoever strips STARTTLS from the EHLO
            // reply also strips the verification (Postfix's `verify` level
            // likewise makes TLS mandatory).
            if self.tls != TlsMode::Required {
                return Err("tls_verify needs tls = required".into());
            }
            server_name(host).ok_or_else(|| {
                format!("tls_verify: {host:?} is not a host name or address to verify")
            })?;
            tls_config(true)?;
        }
        Ok(())
    }
}

/// The password stays out of logs.
impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("addr", &self.addr)
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("tls_verify", &self.tls_verify)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The envelope of one archive copy.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The sender; `None` is the null sender `<>`.
    pub mail_from: Option<&'a str>,
    /// The archive mailbox.
    pub rcpt: &'a str,
    /// The message has 8-bit content: needs 8BITMIME.
    pub eight_bit: bool,
    /// The message or envelope needs SMTPUTF8 (implied by a non-ASCII
    /// address).
    pub smtputf8: bool,
}

/// Why a copy was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Try again later: 4xx, timeout, network trouble.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Trying again will not help: 5xx, configuration, missing extension.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl SendError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent(_))
    }
}

/// Delivers one archive copy. `data` is the complete message, lines ending
/// in CRLF or bare LF (bare LF goes out as CRLF), not dot-stuffed. Returns
/// the relay's final reply, code included (`250 2.0.0 Ok: queued as ...`).
pub fn send(relay: &RelayConfig, env: &Envelope<'_>, data: &[u8]) -> Result<String, SendError> {
    relay
        .check()
        .map_err(|e| SendError::Permanent(format!("relay {}: {e}", relay.addr)))?;
    let tls = match relay.tls {
        TlsMode::Off => None,
        _ => Some(tls_config(relay.tls_verify).map_err(SendError::Permanent)?),
    };
    deliver(relay, env, data, tls)
}

/// [`send`] with the TLS client configuration chosen (tests pass their own
/// roots here).
fn deliver(
    relay: &RelayConfig,
    env: &Envelope<'_>,
    data: &[u8],
    tls: Option<Arc<ClientConfig>>,
) -> Result<String, SendError> {
    let mut session = Session::connect(relay)?;
    let result = session.transaction(env, data, tls);
    // QUIT only makes sense while the dialogue is in step; its outcome
    // changes nothing, the copy is delivered or not already.
    if !session.broken {
        let _ = session.command("QUIT", "QUIT");
        let _ = session.reply("QUIT");
    }
    if let Some(conn) = session.tls.as_mut() {
        conn.send_close_notify();
        let _ = conn.complete_io(&mut session.tcp);
    }
    match &result {
        Ok(reply) => {
            tracing::debug!(relay = %relay.addr, rcpt = env.rcpt, reply, "archive copy sent")
        }
        Err(e) => {
            tracing::debug!(relay = %relay.addr, rcpt = env.rcpt, error = %e, "archive copy not sent")
        }
    }
    result
}

/// One parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// Parses the first reply in `buf`: `Ok(None)` while it is incomplete,
/// otherwise the reply and the bytes it used. Lines may end in CRLF or LF.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let mut start = 0;
    let mut reply = Reply {
        code: 0,
        lines: Vec::new(),
    };
    loop {
        let rest = &buf[start..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() >= MAX_REPLY_LINE {
                return Err(format!(
                    "a reply line is longer than {MAX_REPLY_LINE} bytes"
                ));
            }
            return Ok(None);
        };
        if nl + 1 > MAX_REPLY_LINE {
            return Err(format!(
                "a reply line is longer than {MAX_REPLY_LINE} bytes"
            ));
        }
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += nl + 1;
        let code = match line {
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => {
                return Err(format!(
                    "not a reply line: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                ))
            }
        };
        if reply.lines.is_empty() {
            reply.code = code;
        } else if code != reply.code {
            return Err(format!(
                "reply lines with different codes: {} then {code}",
                reply.code
            ));
        }
        let more = match line.get(3) {
            None | Some(b' ') => false,
            Some(b'-') => true,
            Some(_) => {
                return Err(format!(
                    "not a reply line: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                ))
            }
        };
        let text = line.get(4..).unwrap_or_default();
        reply
            .lines
            .push(String::from_utf8_lossy(text).trim_end().to_string());
        if !more {
            return Ok(Some((reply, start)));
        }
        if reply.lines.len() >= MAX_REPLY_LINES {
            return Err(format!("a reply has more than {MAX_REPLY_LINES} lines"));
        }
    }
}

/// What an EHLO reply offers, as far as this client cares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Extensions {
    starttls: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
    dsn: bool,
    auth_plain: bool,
}

impl Extensions {
    fn parse(ehlo: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        // The first line is the server's name and greeting text.
        for line in ehlo.lines.iter().skip(1) {
            // `AUTH=PLAIN LOGIN` is the pre-RFC form some servers still add.
            let mut words = line.split(|c: char| c.is_ascii_whitespace() || c == '=');
            let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => ext.starttls = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "AUTH" => ext.auth_plain |= words.any(|m| m.eq_ignore_ascii_case("PLAIN")),
                _ => {}
            }
        }
        ext
    }
}

struct Session<'r> {
    relay: &'r RelayConfig,
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Received, not yet parsed.
    buf: Vec<u8>,
    /// An I/O or protocol error left the dialogue out of step.
    broken: bool,
}

impl<'r> Session<'r> {
    fn connect(relay: &'r RelayConfig) -> Result<Session<'r>, SendError> {
        let temp = |e: String| SendError::Temporary(format!("connect to {}: {e}", relay.addr));
        let addrs = relay
            .addr
            .to_socket_addrs()
            .map_err(|e| temp(e.to_string()))?;
        let mut last = "the name has no address".to_string();
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, relay.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{addr}: {}", io_text(&e, relay.timeout)),
            }
        }
        let tcp = tcp.ok_or_else(|| temp(last))?;
        // Each command goes out in one write and waits for its reply:
        // Nagle's algorithm would hold it for the peer's delayed ACK.
        tcp.set_nodelay(true)
            .and_then(|()| tcp.set_write_timeout(Some(relay.timeout)))
            .map_err(|e| temp(e.to_string()))?;
        Ok(Session {
            relay,
            tcp,
            tls: None,
            buf: Vec::new(),
            broken: false,
        })
    }

    fn transaction(
        &mut self,
        env: &Envelope<'_>,
        data: &[u8],
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<String, SendError> {
        check_address(env.mail_from.unwrap_or(""), "sender")?;
        if env.rcpt.is_empty() {
            return Err(SendError::Permanent("RCPT: the recipient is empty".into()));
        }
        check_address(env.rcpt, "recipient")?;
        let smtputf8 =
            env.smtputf8 || !env.rcpt.is_ascii() || !env.mail_from.unwrap_or("").is_ascii();

        self.expect("greeting", |c| c == 220)?;
        let mut ext = self.ehlo(true)?;
        if let Some(config) = tls {
            if ext.starttls {
                if self.starttls(config)? {
                    ext = self.ehlo(false)?;
                }
            } else if self.relay.tls == TlsMode::Required {
                return Err(SendError::Temporary(format!(
                    "STARTTLS: {} does not offer STARTTLS and tls = required",
                    self.relay.addr
                )));
            }
        }
        if env.eight_bit && !ext.eight_bit_mime {
            return Err(SendError::Permanent(format!(
                "MAIL: {}: the relay does not offer 8BITMIME; an 8-bit archive copy cannot be \
                 sent without corrupting it",
                self.relay.addr
            )));
        }
        if smtputf8 && !ext.smtputf8 {
            return Err(SendError::Permanent(format!(
                "MAIL: {}: the relay does not offer SMTPUTF8; an archive copy that needs it \
                 cannot be sent without corrupting it",
                self.relay.addr
            )));
        }
        if let Some((user, password)) = &self.relay.auth {
            self.auth(user, password, &ext)?;
        }

        let mut mail = format!("MAIL FROM:<{}>", env.mail_from.unwrap_or(""));
        if env.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        self.command("MAIL", &mail)?;
        self.expect("MAIL", |c| c == 250)?;

        let mut rcpt = format!("RCPT TO:<{}>", env.rcpt);
        // The archive copy must never bounce, nor report delivery, to the
        // original sender: that would reveal the archive to outsiders and
        // send them mail they never asked for.
        if ext.dsn {
            rcpt.push_str(" NOTIFY=NEVER");
        }
        self.command("RCPT", &rcpt)?;
        self.expect("RCPT", |c| c == 250 || c == 251)?;

        self.command("DATA", "DATA")?;
        self.expect("DATA", |c| c == 354)?;
        self.body(data)?;
        let done = self.expect("end of data", |c| c == 250)?;
        Ok(done.to_string())
    }

    /// EHLO, falling back to HELO (no extensions) when EHLO is refused
    /// with 5xx before TLS.
    fn ehlo(&mut self, may_fall_back: bool) -> Result<Extensions, SendError> {
        self.command("EHLO", &format!("EHLO {}", self.relay.helo))?;
        let reply = self.reply("EHLO")?;
        match reply.code {
            250 => Ok(Extensions::parse(&reply)),
            500..=599 if may_fall_back => {
                self.command("HELO", &format!("HELO {}", self.relay.helo))?;
                self.expect("HELO", |c| c == 250)?;
                Ok(Extensions::default())
            }
            _ => Err(self.rejected("EHLO", &reply)),
        }
    }

    /// Returns whether TLS is now up; `false` when an opportunistic
    /// STARTTLS was refused and the session goes on in plaintext.
    fn starttls(&mut self, config: Arc<ClientConfig>) -> Result<bool, SendError> {
        self.command("STARTTLS", "STARTTLS")?;
        let reply = self.reply("STARTTLS")?;
        if reply.code != 220 {
            if self.relay.tls == TlsMode::Required {
                return Err(self.rejected("STARTTLS", &reply));
            }
            tracing::warn!(relay = %self.relay.addr, %reply,
                "the relay offered STARTTLS and then refused it; sending in plaintext");
            return Ok(false);
        }
        // Anything after the 220 was sent before the handshake, in
        // plaintext, so an attacker may have put it there to be read as if
        // it came over TLS (CVE-2011-0411).
        if !self.buf.is_empty() {
            self.broken = true;
            return Err(SendError::Temporary(format!(
                "STARTTLS: {} sent data after its 220 reply, before the TLS handshake",
                self.relay.addr
            )));
        }
        let handshake = |s: &mut Self| -> Result<ClientConnection, String> {
            let host = host_of(&s.relay.addr)?;
            let name = server_name(host)
                .or_else(|| s.tcp.peer_addr().ok().map(|a| ServerName::from(a.ip())))
                .ok_or_else(|| format!("no server name for {host:?}"))?;
            let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
            s.tcp
                .set_read_timeout(Some(s.relay.timeout))
                .map_err(|e| e.to_string())?;
            while conn.is_handshaking() {
                conn.complete_io(&mut s.tcp)
                    .map_err(|e| io_text(&e, s.relay.timeout))?;
            }
            Ok(conn)
        };
        match handshake(self) {
            Ok(conn) => {
                self.tls = Some(Box::new(conn));
                Ok(true)
            }
            Err(e) => {
                self.broken = true;
                Err(SendError::Temporary(format!(
                    "TLS handshake with {}: {e}",
                    self.relay.addr
                )))
            }
        }
    }

    fn auth(&mut self, user: &str, password: &str, ext: &Extensions) -> Result<(), SendError> {
        if self.tls.is_none() {
            return Err(SendError::Permanent(format!(
                "AUTH: {} did not start TLS: refusing to send AUTH credentials in clear",
                self.relay.addr
            )));
        }
        if !ext.auth_plain {
            return Err(SendError::Permanent(format!(
                "AUTH: {} does not offer AUTH PLAIN",
                self.relay.addr
            )));
        }
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.command("AUTH", &format!("AUTH PLAIN {token}"))?;
        self.expect("AUTH", |c| c == 235)?;
        Ok(())
    }

    /// Writes the dot-stuffed, CRLF-terminated message and the final dot.
    fn body(&mut self, data: &[u8]) -> Result<(), SendError> {
        let mut encoder = DataEncoder::default();
        let result = {
            let mut out = BufWriter::with_capacity(DATA_BUFFER, Wire(self));
            encoder
                .write(data, &mut out)
                .and_then(|()| encoder.finish(&mut out))
                .and_then(|()| out.flush())
        };
        result.map_err(|e| self.io_error("DATA", &e))
    }

    /// Sends one command line in a single write.
    fn command(&mut self, stage: &str, line: &str) -> Result<(), SendError> {
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        let mut wire = Wire(self);
        let result = wire.write_all(&buf).and_then(|()| wire.flush());
        result.map_err(|e| self.io_error(stage, &e))
    }

    fn expect(&mut self, stage: &str, ok: impl Fn(u16) -> bool) -> Result<Reply, SendError> {
        let reply = self.reply(stage)?;
        if ok(reply.code) {
            Ok(reply)
        } else {
            Err(self.rejected(stage, &reply))
        }
    }

    /// Reads one reply, which must be complete within the timeout.
    fn reply(&mut self, stage: &str) -> Result<Reply, SendError> {
        let deadline = Instant::now() + self.relay.timeout;
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(SendError::Temporary(format!(
                        "{stage}: {}: malformed reply: {e}",
                        self.relay.addr
                    )));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let e = io::Error::from(io::ErrorKind::TimedOut);
                return Err(self.io_error(stage, &e));
            }
            let mut chunk = [0u8; 4096];
            let read = self
                .tcp
                .set_read_timeout(Some(left))
                .and_then(|()| Wire(self).read(&mut chunk));
            match read {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the relay closed the connection",
                    );
                    return Err(self.io_error(stage, &e));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(stage, &e)),
            }
        }
    }

    fn rejected(&self, stage: &str, reply: &Reply) -> SendError {
        let text = format!("{stage}: {} replied {reply}", self.relay.addr);
        if (500..600).contains(&reply.code) {
            SendError::Permanent(text)
        } else {
            // 4xx, or a success code where another was due: the relay is
            // confused, and a later attempt may find it well.
            SendError::Temporary(text)
        }
    }

    fn io_error(&mut self, stage: &str, e: &io::Error) -> SendError {
        self.broken = true;
        SendError::Temporary(format!(
            "{stage}: {}: {}",
            self.relay.addr,
            io_text(e, self.relay.timeout)
        ))
    }
}

/// The session's byte stream, plain or TLS.
struct Wire<'s, 'r>(&'s mut Session<'r>);

impl Read for Wire<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &mut *self.0;
        match s.tls.as_deref_mut() {
            Some(conn) => rustls::Stream::new(conn, &mut s.tcp).read(buf),
            None => s.tcp.read(buf),
        }
    }
}

impl Write for Wire<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let s = &mut *self.0;
        match s.tls.as_deref_mut() {
            Some(conn) => rustls::Stream::new(conn, &mut s.tcp).write(buf),
            None => s.tcp.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let s = &mut *self.0;
        match s.tls.as_deref_mut() {
            Some(conn) => rustls::Stream::new(conn, &mut s.tcp).flush(),
            None => s.tcp.flush(),
        }
    }
}

fn io_text(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("timed out after {}s", timeout.as_secs_f64())
        }
        _ => e.to_string(),
    }
}

/// An address goes between `<>` on a command line: a control character
/// would end the command early or smuggle in another one.
fn check_address(addr: &str, what: &str) -> Result<(), SendError> {
    if addr.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err(SendError::Permanent(format!(
            "the {what} address {addr:?} contains a control character or angle bracket"
        )));
    }
    Ok(())
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> Result<&str, String> {
    let (host, port) = match addr.strip_prefix('[') {
        Some(v6) => v6
            .split_once("]:")
            .ok_or_else(|| format!("relay {addr:?}: expected [ADDRESS]:PORT"))?,
        None => addr
            .rsplit_once(':')
            .ok_or_else(|| format!("relay {addr:?}: expected HOST:PORT"))?,
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("relay {addr:?}: expected HOST:PORT"));
    }
    Ok(host)
}

fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// The client configuration, built once per process for each mode.
fn tls_config(verify: bool) -> Result<Arc<ClientConfig>, String> {
    static UNVERIFIED: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    static VERIFIED: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    if verify {
        VERIFIED
            .get_or_init(|| verified_config(&system_roots()?))
            .clone()
    } else {
        UNVERIFIED.get_or_init(unverified_config).clone()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verified_config(roots: &RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn unverified_config() -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA bundle: `SSL_CERT_FILE`, or the first of [`CA_BUNDLES`] that exists.
fn system_roots() -> Result<RootCertStore, String> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let path = match from_env {
        Some(p) => p,
        None => CA_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                format!(
                    "tls_verify: no CA bundle found (looked for {}; install ca-certificates \
                     or set SSL_CERT_FILE)",
                    CA_BUNDLES.join(", ")
                )
            })?,
    };
    roots_from_pem(&path)
}

fn roots_from_pem(path: &Path) -> Result<RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("tls_verify: {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "tls_verify: {}: no usable CA certificate",
            path.display()
        ));
    }
    Ok(roots)
}

/// Opportunistic TLS's verifier: any certificate is accepted (there is
/// nothing to check it against that a `may` relay promises), but the
/// handshake signatures are still checked, so the session is really keyed
/// to the certificate the relay presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Standard base64 with padding (RFC 4648), for AUTH PLAIN.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Streaming DATA encoding: bare LF becomes CRLF (CRLF is kept), a leading
/// `.` is doubled, and the terminating `.` line follows. The same encoder
/// as mailkeep-capture's reinjection, which this crate cannot depend on.
struct DataEncoder {
    at_line_start: bool,
    prev_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder {
            at_line_start: true,
            prev_cr: false,
        }
    }
}

impl DataEncoder {
    fn write(&mut self, data: &[u8], out: &mut impl Write) -> io::Result<()> {
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if self.at_line_start && b == b'.' {
                out.write_all(&data[start..i])?;
                out.write_all(b".")?;
                start = i;
            }
            if b == b'\n' && !self.prev_cr {
                out.write_all(&data[start..i])?;
                out.write_all(b"\r")?;
                start = i;
            }
            self.at_line_start = b == b'\n';
            self.prev_cr = b == b'\r';
        }
        out.write_all(&data[start..])
    }

    fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.at_line_start {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")
    }
}
