//! A raw SMTP client for the tests that talk to `mailkeep serve` directly
//! (the filter proxy, the archive receiver): one reply at a time, with the
//! final reply of a transaction left unread when a test needs to look at
//! ordering.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one reply may take before the test fails.
pub const SMTP_WAIT: Duration = Duration::from_secs(20);

pub struct SmtpClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl SmtpClient {
    /// Connected; the greeting is not read yet.
    pub fn connect(port: u16) -> SmtpClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to serve");
        stream.set_read_timeout(Some(SMTP_WAIT)).expect("timeout");
        stream.set_write_timeout(Some(SMTP_WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        SmtpClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// A longer wait for each read and write, for a slow transaction.
    pub fn set_timeout(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        self.stream.set_write_timeout(Some(wait)).expect("timeout");
    }

    /// Drops the connection both ways, as a client that crashed.
    pub fn abort(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Greeting and EHLO, both positive.
    #[track_caller]
    pub fn hello(port: u16, helo: &str) -> SmtpClient {
        let mut c = SmtpClient::connect(port);
        expect(&c.reply(), 220, "greeting");
        expect(&c.cmd(&format!("EHLO {helo}")), 250, "EHLO");
        c
    }

    /// A complete (possibly multi-line) reply already in the buffer.
    fn take_reply(&mut self) -> Option<String> {
        let mut start = 0;
        while let Some(off) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let line = &self.buf[start..start + off];
            start += off + 1;
            if line.get(3) != Some(&b'-') {
                let raw: Vec<u8> = self.buf.drain(..start).collect();
                return Some(String::from_utf8(raw).expect("utf-8 reply"));
            }
        }
        None
    }

    /// One complete reply, CRLFs included; `None` when the server closed
    /// the connection first. Panics after [`SMTP_WAIT`].
    pub fn try_reply(&mut self) -> Option<String> {
        loop {
            if let Some(r) = self.take_reply() {
                return Some(r);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                // A signal delivered to the test process; a socket with a
                // receive timeout is never restarted by the kernel.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!(
                    "no reply from serve within {SMTP_WAIT:?} ({e}); partial: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    #[track_caller]
    pub fn reply(&mut self) -> String {
        self.try_reply()
            .expect("serve closed the connection instead of replying")
    }

    /// True when serve has sent anything not read yet (without waiting).
    pub fn answered(&mut self) -> bool {
        self.stream.set_nonblocking(true).expect("nonblocking");
        let mut got = false;
        loop {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    got = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("reading from serve: {e}"),
            }
        }
        self.stream.set_nonblocking(false).expect("blocking");
        got || !self.buf.is_empty()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to serve");
    }

    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// MAIL, RCPTs, DATA (all expected to be accepted), then `wire` (the
    /// stuffed message with its terminating dot); the final reply is left
    /// to [`SmtpClient::reply`].
    #[track_caller]
    pub fn start_transaction(&mut self, from: &str, to: &[&str], wire: &[u8]) {
        expect(&self.cmd(&format!("MAIL FROM:<{from}>")), 250, "MAIL");
        for r in to {
            expect(&self.cmd(&format!("RCPT TO:<{r}>")), 250, "RCPT");
        }
        expect(&self.cmd("DATA"), 354, "DATA");
        self.send(wire);
    }

    /// [`SmtpClient::start_transaction`] and its final reply.
    #[track_caller]
    pub fn transaction(&mut self, from: &str, to: &[&str], wire: &[u8]) -> String {
        self.start_transaction(from, to, wire);
        self.reply()
    }

    /// QUIT, so that serve's shutdown does not wait for this session.
    pub fn quit(mut self) {
        let _ = self.stream.write_all(b"QUIT\r\n");
        let _ = self.try_reply();
    }
}

/// The three-digit code of a reply.
pub fn code(reply: &str) -> u16 {
    reply
        .get(..3)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an SMTP reply: {reply:?}"))
}

#[track_caller]
pub fn expect(reply: &str, want: u16, what: &str) {
    assert_eq!(code(reply), want, "{what}: got {reply:?}");
}
