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
//! The dialogue is `mailkeep-smtp`'s client (the one the filter and the
//! pipe's reinjection use): bounded replies, a timeout on every step.

use mailkeep_smtp::{blocking, is_safe_address, tls, Client, Failure, Timeouts};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default for [`RelayConfig::timeout`]: Postfix's `smtp_*_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
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
            tls::server_name(host).ok_or_else(|| {
                format!("tls_verify: {host:?} is not a host name or address to verify")
            })?;
            tls::client_config(true)?;
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
        _ => Some(tls::client_config(relay.tls_verify).map_err(SendError::Permanent)?),
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
    let result = blocking::run(transaction(relay, env, data, tls))
        .map_err(|e| SendError::Temporary(e.to_string()))
        .and_then(|r| r);
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

async fn transaction(
    relay: &RelayConfig,
    env: &Envelope<'_>,
    mut data: &[u8],
    tls: Option<Arc<ClientConfig>>,
) -> Result<String, SendError> {
    check_address(env.mail_from.unwrap_or(""), "sender")?;
    if env.rcpt.is_empty() {
        return Err(SendError::Permanent("RCPT: the recipient is empty".into()));
    }
    check_address(env.rcpt, "recipient")?;
    let smtputf8 = env.smtputf8 || !env.rcpt.is_ascii() || !env.mail_from.unwrap_or("").is_ascii();

    let mut client = Client::connect(&relay.addr, &relay.helo, Timeouts::all(relay.timeout))
        .await
        .map_err(classify)?;
    let result = session(&mut client, relay, env, smtputf8, &mut data, tls).await;
    client.quit().await;
    result
}

async fn session(
    client: &mut Client,
    relay: &RelayConfig,
    env: &Envelope<'_>,
    smtputf8: bool,
    data: &mut &[u8],
    tls: Option<Arc<ClientConfig>>,
) -> Result<String, SendError> {
    if let Some(config) = tls {
        if client.offer().starttls() {
            let name = server_name(client, &relay.addr)?;
            match client.starttls(config, name).await {
                Ok(()) => {}
                // Only a refusal of STARTTLS itself leaves a plaintext
                // session to go on with; a failure after it does not.
                Err(e)
                    if e.stage == "STARTTLS"
                        && e.reply().is_some()
                        && !client.is_tls()
                        && relay.tls != TlsMode::Required =>
                {
                    tracing::warn!(relay = %relay.addr, error = %e,
                        "the relay offered STARTTLS and then refused it; sending in plaintext");
                }
                Err(e) => return Err(classify(e)),
            }
        } else if relay.tls == TlsMode::Required {
            return Err(SendError::Temporary(format!(
                "STARTTLS: {} does not offer STARTTLS and tls = required",
                relay.addr
            )));
        }
    }
    let offer = client.offer().clone();
    if env.eight_bit && !offer.eight_bit_mime() {
        return Err(SendError::Permanent(format!(
            "MAIL: {}: the relay does not offer 8BITMIME; an 8-bit archive copy cannot be \
             sent without corrupting it",
            relay.addr
        )));
    }
    if smtputf8 && !offer.smtputf8() {
        return Err(SendError::Permanent(format!(
            "MAIL: {}: the relay does not offer SMTPUTF8; an archive copy that needs it \
             cannot be sent without corrupting it",
            relay.addr
        )));
    }
    if let Some((user, password)) = &relay.auth {
        if !client.is_tls() {
            return Err(SendError::Permanent(format!(
                "AUTH: {} did not start TLS: refusing to send AUTH credentials in clear",
                relay.addr
            )));
        }
        if !offer.auth_plain {
            return Err(SendError::Permanent(format!(
                "AUTH: {} does not offer AUTH PLAIN",
                relay.addr
            )));
        }
        client.auth_plain(user, password).await.map_err(classify)?;
    }

    let mut mail = format!("MAIL FROM:<{}>", env.mail_from.unwrap_or(""));
    if env.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");
    client.expect(mail, |c| c == 250).await.map_err(classify)?;

    let mut rcpt = format!("RCPT TO:<{}>", env.rcpt);
    // The archive copy must never bounce, nor report delivery, to the
    // original sender: that would reveal the archive to outsiders and
    // send them mail they never asked for.
    if offer.dsn() {
        rcpt.push_str(" NOTIFY=NEVER");
    }
    rcpt.push_str("\r\n");
    client
        .expect(rcpt, |c| c == 250 || c == 251)
        .await
        .map_err(classify)?;

    client
        .expect("DATA\r\n", |c| c == 354)
        .await
        .map_err(classify)?;
    let done = client.data(data).await.map_err(classify)?;
    if done.code != 250 {
        return Err(classify(mailkeep_smtp::Error {
            stage: "end of data".into(),
            peer: relay.addr.clone(),
            failure: Failure::Rejected(done),
        }));
    }
    Ok(done.to_string())
}

/// A 5xx reply is permanent; a 4xx, a success code where another was due
/// (the relay is confused, a later attempt may find it well), a timeout or
/// network trouble is temporary.
fn classify(e: mailkeep_smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Permanent(e.to_string())
    } else {
        SendError::Temporary(e.to_string())
    }
}

/// The name the certificate is checked against: the host of `addr`, or
/// the address connected to when the host is not a name.
fn server_name(client: &Client, addr: &str) -> Result<ServerName<'static>, SendError> {
    let host = host_of(addr).map_err(SendError::Permanent)?;
    tls::server_name(host)
        .or_else(|| {
            addr.parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| ServerName::from(a.ip()))
        })
        .ok_or_else(|| {
            SendError::Permanent(format!(
                "STARTTLS: {}: no server name for {host:?}",
                client.peer()
            ))
        })
}

fn check_address(addr: &str, what: &str) -> Result<(), SendError> {
    if !is_safe_address(addr) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::thread::JoinHandle;

    /// How the in-test relay behaves.
    #[derive(Default)]
    struct Script {
        /// EHLO extension lines before TLS.
        ehlo: Vec<&'static str>,
        /// EHLO extension lines after TLS.
        ehlo_tls: Vec<&'static str>,
        /// Replaces the greeting (CRLFs included).
        greeting: Option<&'static str>,
        /// Replies by command prefix (`"RCPT"`, `"EHLO"`, `"."` for end of data).
        replies: Vec<(&'static str, &'static str)>,
        tls: Option<Arc<ServerConfig>>,
        /// Replaces the reply to EHLO over TLS.
        ehlo_tls_reply: Option<&'static str>,
    }

    /// What the relay received.
    #[derive(Debug, Default)]
    struct Transcript {
        /// Each command, and whether it came over TLS.
        commands: Vec<(bool, String)>,
        /// The DATA bytes as received, final dot line included.
        data: Vec<u8>,
        /// Every byte received before TLS.
        plaintext: Vec<u8>,
    }

    impl Transcript {
        fn lines(&self) -> Vec<&str> {
            self.commands.iter().map(|(_, c)| c.as_str()).collect()
        }
    }

    enum ServerStream {
        Plain(TcpStream),
        Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    }

    impl ServerStream {
        fn read_line(&mut self, plaintext: &mut Vec<u8>) -> Option<Vec<u8>> {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                let n = match self {
                    ServerStream::Plain(s) => s.read(&mut byte),
                    ServerStream::Tls(s) => s.read(&mut byte),
                }
                .ok()?;
                if n == 0 {
                    return None;
                }
                if let ServerStream::Plain(_) = self {
                    plaintext.push(byte[0]);
                }
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Some(line);
                }
            }
        }

        fn send(&mut self, text: &str) {
            let text = format!("{}\r\n", text.trim_end_matches("\r\n"));
            let _ = match self {
                ServerStream::Plain(s) => s.write_all(text.as_bytes()),
                ServerStream::Tls(s) => s.write_all(text.as_bytes()).and_then(|()| s.flush()),
            };
        }
    }

    /// Starts a one-connection relay on 127.0.0.1; returns its port.
    fn serve(script: Script) -> (u16, JoinHandle<Transcript>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut t = Transcript::default();
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut s = ServerStream::Plain(tcp);
            let reply = |cmd: &str, default: &str| -> String {
                script
                    .replies
                    .iter()
                    .find(|(prefix, _)| cmd.to_ascii_uppercase().starts_with(prefix))
                    .map_or(default, |(_, r)| r)
                    .to_string()
            };
            s.send(script.greeting.unwrap_or("220 test ESMTP"));
            while let Some(line) = s.read_line(&mut t.plaintext) {
                let tls = matches!(s, ServerStream::Tls(_));
                let cmd = String::from_utf8_lossy(&line).trim_end().to_string();
                t.commands.push((tls, cmd.clone()));
                let verb = cmd.to_ascii_uppercase();
                if let Some(r) = script
                    .ehlo_tls_reply
                    .filter(|_| tls && verb.starts_with("EHLO"))
                {
                    s.send(r);
                } else if verb.starts_with("EHLO") {
                    let mut lines = vec!["test".to_string()];
                    let ext = if tls { &script.ehlo_tls } else { &script.ehlo };
                    lines.extend(ext.iter().map(|e| e.to_string()));
                    let last = lines.len() - 1;
                    let text: Vec<String> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                        .collect();
                    s.send(&reply(&cmd, &text.join("\r\n")));
                } else if verb == "STARTTLS" && script.tls.is_some() && !tls {
                    s.send("220 2.0.0 Ready to start TLS");
                    let ServerStream::Plain(tcp) = s else {
                        unreachable!()
                    };
                    let conn = ServerConnection::new(script.tls.clone().unwrap()).unwrap();
                    s = ServerStream::Tls(Box::new(StreamOwned::new(conn, tcp)));
                } else if verb.starts_with("DATA") {
                    let r = reply(&cmd, "354 go ahead");
                    s.send(&r);
                    if !r.starts_with("354") {
                        continue;
                    }
                    while let Some(line) = s.read_line(&mut t.plaintext) {
                        t.data.extend_from_slice(&line);
                        if line == b".\r\n" {
                            break;
                        }
                    }
                    s.send(&reply(".", "250 2.0.0 Ok: queued as TEST"));
                } else if verb == "QUIT" {
                    s.send("221 2.0.0 Bye");
                    break;
                } else if verb.starts_with("AUTH") {
                    s.send(&reply(&cmd, "235 2.7.0 Authentication successful"));
                } else {
                    s.send(&reply(&cmd, "250 2.1.0 Ok"));
                }
            }
            t
        });
        (port, handle)
    }

    fn relay(port: u16) -> RelayConfig {
        let mut r = RelayConfig::new(format!("127.0.0.1:{port}"), "archiver.example");
        r.timeout = Duration::from_secs(10);
        r
    }

    const ENV: Envelope<'static> = Envelope {
        mail_from: Some("alice@example.org"),
        rcpt: "archive@example.net",
        eight_bit: false,
        smtputf8: false,
    };

    #[test]
    fn mail_and_rcpt_with_extensions_offered() {
        let (port, server) = serve(Script {
            ehlo: vec!["PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "SIZE 10240000"],
            ..Script::default()
        });
        let env = Envelope {
            eight_bit: true,
            smtputf8: true,
            ..ENV
        };
        let reply = send(&relay(port), &env, b"Subject: caf\xc3\xa9\r\n\r\nx\r\n").unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as TEST");
        let t = server.join().unwrap();
        assert_eq!(
            t.lines(),
            [
                "EHLO archiver.example",
                "MAIL FROM:<alice@example.org> BODY=8BITMIME SMTPUTF8",
                "RCPT TO:<archive@example.net> NOTIFY=NEVER",
                "DATA",
                "QUIT"
            ]
        );
        assert_eq!(t.data, b"Subject: caf\xc3\xa9\r\n\r\nx\r\n.\r\n");
    }

    #[test]
    fn mail_and_rcpt_without_extensions() {
        // 8BITMIME offered but the message is 7-bit: no BODY parameter.
        let (port, server) = serve(Script {
            ehlo: vec!["8BITMIME"],
            ..Script::default()
        });
        let env = Envelope {
            mail_from: None,
            ..ENV
        };
        send(&relay(port), &env, b"Subject: x\r\n\r\nx\r\n").unwrap();
        let t = server.join().unwrap();
        assert_eq!(
            t.lines(),
            [
                "EHLO archiver.example",
                "MAIL FROM:<>",
                "RCPT TO:<archive@example.net>",
                "DATA",
                "QUIT"
            ]
        );
    }

    #[test]
    fn falls_back_to_helo_when_ehlo_is_refused() {
        let (port, server) = serve(Script {
            replies: vec![("EHLO", "502 5.5.2 Error: command not recognized")],
            ..Script::default()
        });
        send(&relay(port), &ENV, b"x\n").unwrap();
        let t = server.join().unwrap();
        assert_eq!(
            t.lines()[..3],
            [
                "EHLO archiver.example",
                "HELO archiver.example",
                "MAIL FROM:<alice@example.org>"
            ]
        );
    }

    #[test]
    fn eight_bit_copy_is_not_sent_without_8bitmime() {
        let (port, server) = serve(Script {
            ehlo: vec!["DSN", "SMTPUTF8"],
            ..Script::default()
        });
        let env = Envelope {
            eight_bit: true,
            ..ENV
        };
        let err = send(&relay(port), &env, b"x\xe9\r\n").unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("does not offer 8BITMIME"), "{err}");
        let t = server.join().unwrap();
        assert_eq!(t.lines(), ["EHLO archiver.example", "QUIT"]);
    }

    #[test]
    fn utf8_envelope_is_not_sent_without_smtputf8() {
        for env in [
            Envelope {
                smtputf8: true,
                ..ENV
            },
            Envelope {
                rcpt: "arch\u{ee}ve@example.net",
                ..ENV
            },
        ] {
            let (port, server) = serve(Script {
                ehlo: vec!["8BITMIME", "DSN"],
                ..Script::default()
            });
            let err = send(&relay(port), &env, b"x\r\n").unwrap_err();
            assert!(err.is_permanent(), "{err}");
            assert!(err.to_string().contains("does not offer SMTPUTF8"), "{err}");
            let t = server.join().unwrap();
            assert_eq!(t.lines(), ["EHLO archiver.example", "QUIT"]);
        }
    }

    #[test]
    fn data_is_dot_stuffed_with_crlf_line_ends() {
        let (port, server) = serve(Script::default());
        let data = b"Subject: dots\n\n.leading\r\n..two\n.\nmiddle.\n.\r\nno end";
        send(&relay(port), &ENV, data).unwrap();
        let t = server.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&t.data),
            "Subject: dots\r\n\r\n..leading\r\n...two\r\n..\r\nmiddle.\r\n..\r\nno end\r\n.\r\n"
        );
    }

    #[test]
    fn rcpt_451_is_temporary_and_550_permanent() {
        for (reply, permanent) in [
            ("451 4.3.0 Try again later", false),
            ("550 5.1.1 No such user", true),
        ] {
            let (port, server) = serve(Script {
                replies: vec![("RCPT", reply)],
                ..Script::default()
            });
            let err = send(&relay(port), &ENV, b"x\r\n").unwrap_err();
            assert_eq!(err.is_permanent(), permanent, "{err}");
            let text = err.to_string();
            assert!(text.contains("RCPT") && text.contains(reply), "{text}");
            let t = server.join().unwrap();
            assert!(!t.lines().contains(&"DATA"), "{:?}", t.lines());
            assert_eq!(t.lines().last(), Some(&"QUIT"));
        }
    }

    #[test]
    fn end_of_data_rejection_names_the_stage() {
        let (port, server) = serve(Script {
            replies: vec![(".", "554 5.7.1 Message rejected")],
            ..Script::default()
        });
        let err = send(&relay(port), &ENV, b"x\r\n").unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("end of data"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn connection_refused_is_temporary() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = send(&relay(port), &ENV, b"x\r\n").unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(err.to_string().contains("connect"), "{err}");
    }

    #[test]
    fn multi_line_greeting_and_hostile_replies() {
        let (port, server) = serve(Script {
            greeting: Some("220-test ESMTP\r\n220-more\r\n220 ready"),
            ..Script::default()
        });
        send(&relay(port), &ENV, b"x\r\n").unwrap();
        server.join().unwrap();

        let long: &'static str = Box::leak(format!("220 {}", "x".repeat(10_000)).into_boxed_str());
        let (port, server) = serve(Script {
            greeting: Some(long),
            ..Script::default()
        });
        let err = send(&relay(port), &ENV, b"x\r\n").unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(err.to_string().contains("longer than 4096"), "{err}");
        assert!(err.to_string().contains("greeting"), "{err}");
        let t = server.join().unwrap();
        assert!(t.commands.is_empty(), "{:?}", t.lines());
    }

    #[test]
    fn auth_is_never_sent_in_clear() {
        let (port, server) = serve(Script {
            ehlo: vec!["AUTH PLAIN LOGIN"],
            ..Script::default()
        });
        let mut r = relay(port);
        r.auth = Some(("user".into(), "s3cret-pass".into()));
        let err = send(&r, &ENV, b"x\r\n").unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(
            err.to_string()
                .contains("refusing to send AUTH credentials in clear"),
            "{err}"
        );
        let t = server.join().unwrap();
        assert_eq!(t.lines(), ["EHLO archiver.example", "QUIT"]);
        let wire = String::from_utf8_lossy(&t.plaintext);
        assert!(
            !wire.contains("s3cret-pass")
                && !wire.contains(&mailkeep_smtp::base64(b"\0user\0s3cret-pass"))
        );

        // Configured with tls = off: refused before connecting.
        r.tls = TlsMode::Off;
        let err = send(&r, &ENV, b"x\r\n").unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("in clear"), "{err}");
    }

    #[test]
    fn required_tls_not_offered_is_temporary() {
        let (port, server) = serve(Script {
            ehlo: vec!["8BITMIME"],
            ..Script::default()
        });
        let mut r = relay(port);
        r.tls = TlsMode::Required;
        let err = send(&r, &ENV, b"x\r\n").unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(err.to_string().contains("STARTTLS"), "{err}");
        let t = server.join().unwrap();
        assert_eq!(t.lines(), ["EHLO archiver.example", "QUIT"]);
    }

    #[test]
    fn config_check() {
        let mut r = RelayConfig::new("relay.example:25", "me.example");
        assert_eq!(r.check(), Ok(()));
        r.tls_verify = true;
        assert!(r.check().unwrap_err().contains("tls = required"));
        for addr in ["relay.example", "relay.example:x", ":25", "[::1]25"] {
            r = RelayConfig::new(addr, "me.example");
            assert!(r.check().is_err(), "{addr}");
        }
        assert_eq!(RelayConfig::new("[::1]:25", "me").check(), Ok(()));
        assert!(RelayConfig::new("h:25", "bad name").check().is_err());
        let r = RelayConfig {
            auth: Some(("user".into(), "pw".into())),
            ..RelayConfig::new("h:25", "me")
        };
        assert!(!format!("{r:?}").contains("pw\""), "{r:?}");
    }

    /// A self-signed certificate for localhost and 127.0.0.1, or `None`
    /// (the test is skipped) without openssl.
    fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "1"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some((cert, key)),
            Ok(s) => panic!("openssl req failed: {s}"),
            Err(e) => {
                eprintln!("skipping the TLS test: cannot run openssl: {e}");
                None
            }
        }
    }

    fn server_config(cert: &Path, key: &Path) -> Arc<ServerConfig> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        Arc::new(config)
    }

    fn tls_script(config: Arc<ServerConfig>) -> Script {
        Script {
            // Like Postfix with smtpd_tls_auth_only: AUTH only after TLS.
            ehlo: vec!["STARTTLS", "8BITMIME"],
            ehlo_tls: vec!["AUTH PLAIN LOGIN", "8BITMIME", "DSN"],
            tls: Some(config),
            ..Script::default()
        }
    }

    /// Review finding: an EHLO refused after the TLS handshake was taken for
    /// a refused STARTTLS, and the copy sent on "in plaintext" (over TLS,
    /// with the offer from before it), to fail permanently at MAIL.
    #[test]
    fn ehlo_refused_over_tls_is_temporary_and_nothing_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let Some((cert, key)) = self_signed(dir.path()) else {
            return;
        };
        let mut script = tls_script(server_config(&cert, &key));
        script.ehlo_tls_reply = Some("421 4.3.2 Try again later");
        let (port, server) = serve(script);
        let err = send(&relay(port), &ENV, b"x\n").unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(err.to_string().contains("EHLO"), "{err}");
        let t = server.join().unwrap();
        assert!(
            !t.lines().iter().any(|l| l.starts_with("MAIL")),
            "{:?}",
            t.lines()
        );
    }

    #[test]
    fn starttls_then_auth_plain() {
        let dir = tempfile::tempdir().unwrap();
        let Some((cert, key)) = self_signed(dir.path()) else {
            return;
        };
        let config = server_config(&cert, &key);
        let (port, server) = serve(tls_script(config.clone()));
        let mut r = relay(port);
        r.auth = Some(("user".into(), "s3cret-pass".into()));
        let reply = send(&r, &ENV, b"Subject: tls\n\nbody\n").unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as TEST");
        let t = server.join().unwrap();
        let token = mailkeep_smtp::base64(b"\0user\0s3cret-pass");
        let auth = format!("AUTH PLAIN {token}");
        assert_eq!(
            t.commands,
            [
                (false, "EHLO archiver.example".to_string()),
                (false, "STARTTLS".into()),
                (true, "EHLO archiver.example".into()),
                (true, auth),
                (true, "MAIL FROM:<alice@example.org>".into()),
                (true, "RCPT TO:<archive@example.net> NOTIFY=NEVER".into()),
                (true, "DATA".into()),
                (true, "QUIT".into()),
            ]
        );
        assert_eq!(t.data, b"Subject: tls\r\n\r\nbody\r\n.\r\n");
        let wire = String::from_utf8_lossy(&t.plaintext);
        assert!(!wire.contains("AUTH") && !wire.contains(&token), "{wire}");

        // Required + verified against the system roots: the self-signed
        // certificate is refused, before any credentials go out.
        let (port, server) = serve(tls_script(config.clone()));
        r = relay(port);
        r.tls = TlsMode::Required;
        r.tls_verify = true;
        r.auth = Some(("user".into(), "s3cret-pass".into()));
        match send(&r, &ENV, b"x\n") {
            Err(SendError::Temporary(e)) => {
                assert!(
                    e.contains("TLS handshake") && e.contains("certificate"),
                    "{e}"
                )
            }
            Err(SendError::Permanent(e)) => assert!(e.contains("CA bundle"), "{e}"),
            Ok(reply) => panic!("an unknown certificate was accepted: {reply}"),
        }
        let t = server.join().unwrap();
        assert!(t.commands.iter().all(|(tls, _)| !tls), "{:?}", t.lines());

        // Verified against roots that hold it: accepted, for the name in
        // the relay address.
        let roots = tls::verified_config(&tls::roots_from_pem(&cert).unwrap()).unwrap();
        for host in ["localhost", "127.0.0.1"] {
            let (port, server) = serve(tls_script(config.clone()));
            r.addr = format!("{host}:{port}");
            deliver(&r, &ENV, b"x\n", Some(roots.clone())).unwrap();
            let t = server.join().unwrap();
            assert!(t.lines().iter().any(|l| l.starts_with("AUTH PLAIN ")));
        }
    }

    #[test]
    fn postfix_smtp_sink_accepts_a_copy() {
        let sink = Path::new("/usr/sbin/smtp-sink");
        if !sink.exists() {
            eprintln!("skipping: {} is not installed", sink.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("dump");
        let root = rustix::process::geteuid().is_root();
        if root {
            // smtp-sink writes its dumps as the -u user.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(sink);
        if root {
            cmd.args(["-u", "nobody"]);
        }
        let mut child = cmd
            .arg("-d")
            .arg(dump.join("%H."))
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let env = Envelope {
            eight_bit: true,
            ..ENV
        };
        let result = up.then(|| send(&relay(port), &env, b"Subject: sink\n\n.dot caf\xc3\xa9\n"));
        // smtp-sink writes the dump after its 250; give it a moment.
        let mut dumped = None;
        for _ in 0..100 {
            dumped = std::fs::read_dir(&dump)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| std::fs::read(e.ok()?.path()).ok())
                .filter(|d| !d.is_empty());
            if dumped.is_some() || !matches!(result, Some(Ok(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(up, "smtp-sink did not start listening");
        let reply = result.unwrap().unwrap();
        assert!(reply.starts_with("250 "), "{reply}");
        let dumped = String::from_utf8(dumped.expect("smtp-sink wrote no dump")).unwrap();
        assert!(
            dumped.contains("X-Mail-Args: <alice@example.org> BODY=8BITMIME\n"),
            "{dumped}"
        );
        assert!(
            dumped.contains("X-Rcpt-Args: <archive@example.net> NOTIFY=NEVER\n"),
            "{dumped}"
        );
        assert!(
            dumped.contains("\nSubject: sink\n\n.dot caf\u{e9}\n"),
            "{dumped}"
        );
    }
}
