//! Handing an archived message back to the MTA with its original envelope:
//! over SMTP to a reinjection listener (Postfix FILTER_README's
//! `127.0.0.1:10026` smtpd), or through `sendmail -G -i -f SENDER -- RCPT...`.
//!
//! The SMTP client is deliberately strict: any recipient refused, or any
//! reply that is not a success, fails the whole reinjection (after `RSET`),
//! so the pipe exits with EX_TEMPFAIL and Postfix retries the message for
//! every recipient. A partial delivery would either lose the refused
//! recipients or duplicate the accepted ones on retry.
//!
//! Replies are parsed with `smtp-proto`. Lines go out with CRLF and
//! leading dots doubled; a bare LF in the message becomes CRLF on the wire
//! (SMTP cannot carry a bare LF, and Postfix stores lines without CR anyway).

use mailkeep_envelope::Envelope;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EhloResponse, EXT_8BIT_MIME, EXT_SIZE, EXT_SMTP_UTF8};
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Connect timeout for the reinjection listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for each command's reply (Postfix `smtp_*_timeout` are 300 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout for the reply to the final dot (Postfix `smtp_data_done_timeout`).
const DATA_DONE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest reply accepted, all lines together.
const MAX_REPLY: usize = 64 * 1024;

/// Where to hand the message back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reinject {
    /// SMTP to `host:port`.
    Smtp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// The `sendmail` program at this path.
    Sendmail(PathBuf),
}

impl Reinject {
    /// Parses `smtp://HOST:PORT`, `smtp://[::1]:PORT`, or `sendmail`
    /// (`sendmail_path` is then the program used).
    pub fn parse(spec: &str, sendmail_path: &str) -> Result<Reinject, String> {
        if spec == "sendmail" {
            return Ok(Reinject::Sendmail(PathBuf::from(sendmail_path)));
        }
        let rest = spec
            .strip_prefix("smtp://")
            .ok_or_else(|| format!("{spec:?}: expected smtp://HOST:PORT or sendmail"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (h, p) = v6
                    .split_once("]:")
                    .ok_or_else(|| format!("{spec:?}: expected smtp://[ADDR]:PORT"))?;
                (h, p)
            }
            None => rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{spec:?}: the port is missing"))?,
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{spec:?}: {port:?} is not a port"))?;
        if host.is_empty() {
            return Err(format!("{spec:?}: the host is missing"));
        }
        Ok(Reinject::Smtp {
            host: host.to_string(),
            port,
        })
    }
}

/// Why a reinjection failed. All are temporary from Postfix's point of view.
#[derive(Debug, thiserror::Error)]
pub enum ReinjectError {
    /// Network or pipe trouble.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered something other than success.
    #[error("{stage}: server replied {code} {message}")]
    Rejected {
        /// Which command.
        stage: String,
        /// SMTP reply code.
        code: u16,
        /// Reply text.
        message: String,
    },
    /// The reply could not be parsed.
    #[error("{stage}: malformed reply: {detail}")]
    Protocol {
        /// Which command.
        stage: String,
        /// What was wrong.
        detail: String,
    },
    /// `sendmail` exited unsuccessfully.
    #[error("sendmail exited with {0}")]
    Sendmail(std::process::ExitStatus),
    /// Nothing to deliver to.
    #[error("the envelope has no recipients to reinject to")]
    NoRecipients,
}

/// Sends the message onward with its original envelope.
pub fn reinject(target: &Reinject, env: &Envelope, helo_name: &str) -> Result<(), ReinjectError> {
    if env.recipients.is_empty() {
        return Err(ReinjectError::NoRecipients);
    }
    match target {
        Reinject::Smtp { host, port } => smtp(host, *port, env, helo_name),
        Reinject::Sendmail(path) => sendmail(path, env),
    }
}

fn sendmail(path: &PathBuf, env: &Envelope) -> Result<(), ReinjectError> {
    // Postfix sendmail: -G (not an initial submission: no address rewriting
    // beyond what the reinjection needs), -i (a lone dot is not the end),
    // -f "" for the null sender.
    let mut child = Command::new(path)
        .arg("-G")
        .arg("-i")
        .arg("-f")
        .arg(env.sender.as_deref().unwrap_or(""))
        .arg("--")
        .args(&env.recipients)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", path.display())))?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let copied = env.message.write_to(&mut stdin);
    drop(stdin);
    let status = child.wait()?;
    copied?;
    if status.success() {
        Ok(())
    } else {
        Err(ReinjectError::Sendmail(status))
    }
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Reads one complete (possibly multi-line) reply.
    fn read_reply_text(&mut self, stage: &str) -> Result<Vec<u8>, ReinjectError> {
        loop {
            if let Some(end) = complete_reply(&self.buf) {
                let reply = self.buf[..end].to_vec();
                self.buf.drain(..end);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(ReinjectError::Protocol {
                    stage: stage.into(),
                    detail: "reply too long".into(),
                });
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{stage}: connection closed by the server"),
                )
                .into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn reply(&mut self, stage: &str) -> Result<(u16, String), ReinjectError> {
        let text = self.read_reply_text(stage)?;
        let mut receiver = ResponseReceiver::default();
        let r = receiver
            .parse(&mut text.iter())
            .map_err(|e| ReinjectError::Protocol {
                stage: stage.into(),
                detail: format!("{e:?}"),
            })?;
        Ok((r.code, r.message))
    }

    fn expect(&mut self, stage: &str, ok: impl Fn(u16) -> bool) -> Result<(), ReinjectError> {
        let (code, message) = self.reply(stage)?;
        if ok(code) {
            Ok(())
        } else {
            Err(ReinjectError::Rejected {
                stage: stage.into(),
                code,
                message,
            })
        }
    }

    /// Sends one command line in a single write: two small writes would
    /// meet Nagle's algorithm and the peer's delayed ACK (40 ms a command).
    fn command(&mut self, line: &str) -> io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        self.stream.write_all(&buf)
    }
}

/// Length of the first complete reply in `buf`: lines up to one whose
/// fourth byte is not `-`.
pub(crate) fn complete_reply(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(off) = buf[start..].iter().position(|b| *b == b'\n') {
        let line = &buf[start..start + off];
        start += off + 1;
        if line.get(3) != Some(&b'-') {
            return Some(start);
        }
    }
    None
}

fn is_2xx(code: u16) -> bool {
    (200..300).contains(&code)
}

fn smtp(host: &str, port: u16, env: &Envelope, helo_name: &str) -> Result<(), ReinjectError> {
    let addrs: Vec<_> = (host, port).to_socket_addrs()?.collect();
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = io::Error::new(e.kind(), format!("connect to {addr}: {e}")),
        }
    }
    let stream = stream.ok_or(last_err)?;
    // Commands are written whole and answered one at a time.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let mut c = Client {
        stream,
        buf: Vec::new(),
    };
    c.expect("greeting", |code| code == 220)?;
    c.command(&format!("EHLO {helo_name}"))?;
    let ehlo = c.read_reply_text("EHLO")?;
    let caps = match EhloResponse::parse(&mut ehlo.iter()) {
        Ok(r) => r.capabilities,
        Err(_) => {
            // Not ESMTP: fall back to HELO and plain SMTP.
            c.command(&format!("HELO {helo_name}"))?;
            c.expect("HELO", is_2xx)?;
            0
        }
    };
    let xforward = xforward_attributes(&ehlo);
    let result =
        forward_client(&mut c, env, &xforward).and_then(|()| transaction(&mut c, env, caps));
    if result.is_err() {
        let _ = c.command("RSET");
    }
    let _ = c.command("QUIT");
    result
}

/// The attributes the server offers in an `XFORWARD` EHLO line, upper-case.
/// smtp-proto's capability set has no XFORWARD bit, so the line is read here.
pub(crate) fn xforward_attributes(ehlo: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(ehlo)
        .lines()
        .filter_map(|l| l.get(4..))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words
                .next()
                .filter(|w| w.eq_ignore_ascii_case("XFORWARD"))
                .map(|_| words.map(str::to_ascii_uppercase).collect())
        })
        .unwrap_or_default()
}

/// xtext (RFC 3461) as XFORWARD requires: `+`, `=`, and bytes outside
/// `!`..`~` become `+XX`.
pub(crate) fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Tells a Postfix reinjection smtpd who the original client was (Postfix
/// XFORWARD_README), so its Received header and log name the real client
/// and the original queue id instead of 127.0.0.1. Sent only when the
/// server offers XFORWARD (it does for `smtpd_authorized_xforward_hosts`),
/// one attribute per command to stay far below Postfix's line limit.
fn forward_client(c: &mut Client, env: &Envelope, offered: &[String]) -> Result<(), ReinjectError> {
    let client = &env.client;
    let source = if client.address.is_some() {
        "REMOTE"
    } else {
        "LOCAL"
    };
    let attributes = [
        ("NAME", client.hostname.as_deref()),
        ("ADDR", client.address.as_deref()),
        ("HELO", client.helo.as_deref()),
        ("IDENT", env.queue_id.as_deref()),
        ("SOURCE", Some(source)),
    ];
    for (name, value) in attributes {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        if offered.iter().any(|o| o == name) {
            c.command(&format!("XFORWARD {name}={}", xtext(value)))?;
            c.expect("XFORWARD", is_2xx)?;
        }
    }
    Ok(())
}

fn transaction(c: &mut Client, env: &Envelope, caps: u32) -> Result<(), ReinjectError> {
    let mut mail = format!("MAIL FROM:<{}>", env.sender.as_deref().unwrap_or(""));
    if env.message.is_8bit() && caps & EXT_8BIT_MIME != 0 {
        mail.push_str(" BODY=8BITMIME");
    }
    let utf8_addr = env
        .sender
        .iter()
        .chain(&env.recipients)
        .any(|a| !a.is_ascii());
    if utf8_addr && caps & EXT_SMTP_UTF8 != 0 {
        mail.push_str(" SMTPUTF8");
    }
    if caps & EXT_SIZE != 0 {
        mail.push_str(&format!(" SIZE={}", env.message.len()));
    }
    c.command(&mail)?;
    c.expect("MAIL FROM", is_2xx)?;
    for r in &env.recipients {
        c.command(&format!("RCPT TO:<{r}>"))?;
        c.expect(&format!("RCPT TO:<{r}>"), is_2xx)?;
    }
    c.command("DATA")?;
    c.expect("DATA", |code| code == 354)?;
    {
        let mut out = BufWriter::with_capacity(256 * 1024, &c.stream);
        let mut enc = DataEncoder::default();
        let mut reader = env.message.reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            enc.write(&buf[..n], &mut out)?;
        }
        enc.finish(&mut out)?;
        out.flush()?;
    }
    c.stream.set_read_timeout(Some(DATA_DONE_TIMEOUT))?;
    c.expect("end of DATA", is_2xx)
}

pub use mailkeep_envelope::DataEncoder;

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = DataEncoder::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            e.write(c, &mut out).unwrap();
        }
        e.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn dot_stuffing_and_crlf() {
        let input = b"a\n.b\r\n..c\nd.\n.";
        let want = b"a\r\n..b\r\n...c\r\nd.\r\n..\r\n.\r\n";
        for chunk in 1..=input.len() {
            assert_eq!(encode(input, chunk), want.to_vec(), "chunk {chunk}");
        }
        assert_eq!(encode(b"", 1), b".\r\n");
    }

    #[test]
    fn parses_targets() {
        assert_eq!(
            Reinject::parse("smtp://127.0.0.1:10026", "/usr/sbin/sendmail").unwrap(),
            Reinject::Smtp {
                host: "127.0.0.1".into(),
                port: 10026
            }
        );
        assert_eq!(
            Reinject::parse("smtp://[::1]:25", "x").unwrap(),
            Reinject::Smtp {
                host: "::1".into(),
                port: 25
            }
        );
        assert_eq!(
            Reinject::parse("sendmail", "/usr/sbin/sendmail").unwrap(),
            Reinject::Sendmail("/usr/sbin/sendmail".into())
        );
        assert!(Reinject::parse("smtp://host", "x").is_err());
        assert!(Reinject::parse("lmtp://host:24", "x").is_err());
    }

    #[test]
    fn xforward_offer_and_xtext() {
        let ehlo = b"250-mx.example\r\n250-PIPELINING\r\n250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n250 SMTPUTF8\r\n";
        assert_eq!(
            xforward_attributes(ehlo),
            vec!["NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT"]
        );
        assert!(xforward_attributes(b"250-mx\r\n250 SIZE 10\r\n").is_empty());
        assert_eq!(xtext("a b+c=d\u{e9}"), "a+20b+2Bc+3Dd+C3+A9");
    }

    #[test]
    fn reply_framing() {
        assert_eq!(complete_reply(b"250-a\r\n250 b\r\nX"), Some(14));
        assert_eq!(complete_reply(b"250-a\r\n250"), None);
        assert_eq!(complete_reply(b"354\r\n"), Some(5));
    }
}
