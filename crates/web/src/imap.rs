//! Checking a password against the site's IMAP server (RFC 9051 / 3501
//! `LOGIN`), as piler does with Dovecot: mailkeep learns only "yes" or
//! "no" and keeps nothing of the password.
//!
//! `imaps://host:port` speaks TLS from the start, the certificate checked
//! against the system's CA bundle. `imap://host:port` is plain text and is
//! accepted only for a loopback address (a Dovecot on the same machine),
//! so a password never crosses a network in clear.
//!
//! The exchange is three lines (greeting, `LOGIN`, `LOGOUT`); strings are
//! sent quoted, or as literals when they hold anything a quoted string may
//! not (RFC 9051 section 4.3); a reply line is read up to 8 KiB.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The longest reply line read.
const MAX_LINE: usize = 8 * 1024;

/// An IMAP server to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapServer {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte (`imaps://`).
    pub tls: bool,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl ImapServer {
    /// Parses `imap://HOST[:PORT]` (default 143, loopback only) or
    /// `imaps://HOST[:PORT]` (default 993).
    pub fn parse(text: &str) -> Result<ImapServer, String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("imaps://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("imap://") {
            (false, r)
        } else {
            return Err(format!("{text:?}: not an imap:// or imaps:// URL"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed [ in the host"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(format!("{text:?}: expected imap://HOST:PORT"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{text:?}: {p:?} is not a port"))?,
            None if tls => 993,
            None => 143,
        };
        if !tls && !is_loopback(&host) {
            return Err(format!(
                "{text:?}: plain IMAP would send passwords in clear over the network; \
                 use imaps:// (or a server on 127.0.0.1)"
            ));
        }
        Ok(ImapServer { host, port, tls })
    }

    /// Whether the server accepts this name and password: `Ok(false)` for
    /// its `NO`, an error when it could not be asked or answered oddly.
    pub fn check(&self, user: &str, password: &str, timeout: Duration) -> Result<bool, String> {
        self.dialogue(user, password, timeout)
            .map_err(|e| format!("{}:{}: {e}", self.host, self.port))
    }

    fn connect(&self, timeout: Duration) -> io::Result<Box<dyn Stream>> {
        let addrs: Vec<_> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(tcp) => {
                    tcp.set_read_timeout(Some(timeout))?;
                    tcp.set_write_timeout(Some(timeout))?;
                    if !self.tls {
                        return Ok(Box::new(tcp));
                    }
                    let config =
                        mailkeep_smtp::tls::client_config(true).map_err(io::Error::other)?;
                    let name = mailkeep_smtp::tls::server_name(&self.host).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "not a TLS server name")
                    })?;
                    let conn =
                        rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
                    return Ok(Box::new(rustls::StreamOwned::new(conn, tcp)));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn dialogue(&self, user: &str, password: &str, timeout: Duration) -> io::Result<bool> {
        let mut conn = BufReader::new(self.connect(timeout)?);
        let greeting = read_line(&mut conn)?;
        if !greeting.starts_with("* OK") {
            return Err(odd("greeting", &greeting));
        }
        let mut command = b"a1 LOGIN ".to_vec();
        let mut pieces = Vec::new();
        push_string(&mut command, &mut pieces, user);
        command.push(b' ');
        push_string(&mut command, &mut pieces, password);
        command.extend_from_slice(b"\r\n");
        // Literals: send up to each `{n}\r\n`, wait for the continuation.
        let mut start = 0;
        for cut in pieces {
            conn.get_mut().write_all(&command[start..cut])?;
            conn.get_mut().flush()?;
            loop {
                let line = read_line(&mut conn)?;
                if line.starts_with('+') {
                    break;
                }
                if line.starts_with("a1 ") {
                    return tagged(&line);
                }
            }
            start = cut;
        }
        conn.get_mut().write_all(&command[start..])?;
        conn.get_mut().flush()?;
        let accepted = loop {
            let line = read_line(&mut conn)?;
            if line.starts_with("a1 ") {
                break tagged(&line)?;
            }
            if line.starts_with("* BYE") {
                return Err(odd("reply", &line));
            }
        };
        // Polite, and not waited for beyond one reply.
        let _ = conn.get_mut().write_all(b"a2 LOGOUT\r\n");
        let _ = conn.get_mut().flush();
        Ok(accepted)
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|a| a.is_loopback())
            .unwrap_or(false)
}

fn odd(what: &str, line: &str) -> io::Error {
    let shown: String = line.chars().take(100).filter(|c| !c.is_control()).collect();
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected {what}: {shown:?}"),
    )
}

/// `a1 OK` is yes, `a1 NO` is no, anything else an error.
fn tagged(line: &str) -> io::Result<bool> {
    let status = line[3..].split(' ').next().unwrap_or("");
    match status.to_ascii_uppercase().as_str() {
        "OK" => Ok(true),
        "NO" => Ok(false),
        _ => Err(odd("reply to LOGIN", line)),
    }
}

/// Appends `s` as an IMAP string: quoted when it is printable ASCII, else a
/// literal, whose end (where the client must wait for `+`) goes to `cuts`.
fn push_string(out: &mut Vec<u8>, cuts: &mut Vec<usize>, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        cuts.push(out.len());
        out.extend_from_slice(s.as_bytes());
    }
}

fn read_line(conn: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = conn.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a reply line over 8 KiB",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_the_plain_text_rule() {
        assert_eq!(
            ImapServer::parse("imap://127.0.0.1:1143").unwrap(),
            ImapServer {
                host: "127.0.0.1".into(),
                port: 1143,
                tls: false
            }
        );
        assert_eq!(
            ImapServer::parse("imaps://mail.example.com").unwrap().port,
            993
        );
        assert!(ImapServer::parse("imap://mail.example.com").is_err());
        assert!(ImapServer::parse("imap://[::1]:143").is_ok());
        assert!(ImapServer::parse("imap://127.0.0.1:x").is_err());
    }

    #[test]
    fn strings_are_quoted_or_sent_as_literals() {
        let mut out = Vec::new();
        let mut cuts = Vec::new();
        push_string(&mut out, &mut cuts, "a\"b\\c");
        assert_eq!(out, b"\"a\\\"b\\\\c\"");
        assert!(cuts.is_empty());
        out.clear();
        push_string(&mut out, &mut cuts, "pässword\r\n");
        assert_eq!(&out[..6], b"{11}\r\n");
        assert_eq!(cuts, vec![6]);
    }

    #[test]
    fn a_fake_server_says_yes_and_no() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in ["OK", "NO"] {
                let (mut s, _) = listener.accept().unwrap();
                s.write_all(b"* OK ready\r\n").unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let line = read_line(&mut r).unwrap();
                assert_eq!(line, "a1 LOGIN \"bob\" \"secret\"");
                s.write_all(format!("* CAPABILITY IMAP4rev1\r\na1 {answer} done\r\n").as_bytes())
                    .unwrap();
            }
        });
        let imap = ImapServer::parse(&format!("imap://127.0.0.1:{port}")).unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(imap.check("bob", "secret", t), Ok(true));
        assert_eq!(imap.check("bob", "secret", t), Ok(false));
        server.join().unwrap();
    }
}
