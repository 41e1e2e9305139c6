//! The proxy's connection to the next hop (Postfix's reinjection smtpd):
//! commands are relayed in step with the client, and the relay's own
//! replies are what the client hears.

use crate::reinject::{complete_reply, xforward_attributes};
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::EhloResponse;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest reply accepted from the relay.
const MAX_REPLY: usize = 64 * 1024;

/// One reply: code and the full text (all lines, CRLF-terminated), ready
/// to pass on to the client as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code.
    pub code: u16,
    /// The reply as sent by the relay.
    pub raw: Vec<u8>,
}

impl Reply {
    /// A reply of our own.
    pub fn local(code: u16, text: &str) -> Reply {
        Reply {
            code,
            raw: format!("{code} {text}\r\n").into_bytes(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// What the relay offered in its EHLO reply.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    /// SMTP extension bits (smtp-proto `EXT_*`).
    pub capabilities: u32,
    /// Its SIZE limit (0: none given).
    pub size: usize,
    /// XFORWARD attributes it accepts.
    pub xforward: Vec<String>,
}

/// A connected relay.
pub struct Relay {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
    /// What it offered.
    pub offer: Offer,
}

impl Relay {
    /// Connects, reads the greeting and sends EHLO.
    pub async fn connect(addr: &str, helo: &str, command_timeout: Duration) -> io::Result<Relay> {
        let stream = timeout(command_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )
            })??;
        stream.set_nodelay(true)?;
        let mut relay = Relay {
            stream,
            buf: Vec::new(),
            timeout: command_timeout,
            offer: Offer::default(),
        };
        let greeting = relay.reply().await?;
        if greeting.code != 220 {
            return Err(io::Error::other(format!(
                "relay {addr} greeted with {}",
                String::from_utf8_lossy(&greeting.raw).trim_end()
            )));
        }
        let ehlo = relay.command(format!("EHLO {helo}\r\n").as_bytes()).await?;
        if !ehlo.is_positive() {
            return Err(io::Error::other(format!(
                "relay {addr} refused EHLO: {}",
                String::from_utf8_lossy(&ehlo.raw).trim_end()
            )));
        }
        if let Ok(r) = EhloResponse::parse(&mut ehlo.raw.iter()) {
            relay.offer.capabilities = r.capabilities;
            relay.offer.size = r.size;
        }
        relay.offer.xforward = xforward_attributes(&ehlo.raw);
        Ok(relay)
    }

    /// Reads one complete reply.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        self.reply_within(self.timeout).await
    }

    /// Reads one complete reply, waiting at most `limit`.
    pub async fn reply_within(&mut self, limit: Duration) -> io::Result<Reply> {
        timeout(limit, self.read_reply()).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "the relay did not answer in time")
        })?
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            if let Some(end) = complete_reply(&self.buf) {
                let raw: Vec<u8> = self.buf.drain(..end).collect();
                let code = ResponseReceiver::default()
                    .parse(&mut raw.iter())
                    .map(|r| r.code)
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad reply from the relay: {e:?}"),
                        )
                    })?;
                return Ok(Reply { code, raw });
            }
            if self.buf.len() > MAX_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply from the relay too long",
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the relay closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command line (with its CRLF) and reads the reply.
    pub async fn command(&mut self, line: &[u8]) -> io::Result<Reply> {
        self.write(line).await?;
        self.reply().await
    }

    /// Sends bytes as they are.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        timeout(self.timeout, self.stream.write_all(data))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "writing to the relay timed out")
            })?
    }

    /// Says QUIT and closes (best effort).
    pub async fn quit(mut self) {
        let _ = self.write(b"QUIT\r\n").await;
        let _ = timeout(Duration::from_secs(2), self.read_reply()).await;
    }
}
