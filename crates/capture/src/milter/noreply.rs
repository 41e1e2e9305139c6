//! "No reply" for the milter stages that do not need one.
//!
//! Milter protocol 6 lets the milter tell the MTA that it will not answer
//! some commands (`SMFIP_NR_HDR`, `SMFIP_NR_BODY`, ...). The MTA then
//! streams those commands without waiting for a round trip each: for a
//! message with ten header fields that is ten round trips fewer, which is
//! most of a milter's cost to the MTA. miltr-server always writes one
//! answer per command, so this stream wrapper sits between it and the
//! socket and drops the answers the MTA was told not to expect.
//!
//! It follows both directions frame by frame (4-byte big-endian length,
//! then the command or reply code): every command read queues what the
//! milter will write for it (one answer to pass on or to drop, several for
//! end of message, none for macros, abort and quit), and every answer
//! written takes its entry from the queue. The negotiated "no reply" bits
//! are read from the milter's own option-negotiation answer as it goes
//! out. Anything unexpected is passed on unchanged.

use miltr_common::optneg::Protocol;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The "no reply" bits a session asks for (the MTA may grant fewer).
pub fn wanted() -> Protocol {
    Protocol::NR_CONNECT
        | Protocol::NR_HELO
        | Protocol::NR_RECIPIENT
        | Protocol::NR_HEADER
        | Protocol::NR_END_OF_HEADER
        | Protocol::NR_BODY
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Pass one answer on.
    Pass,
    /// Drop one answer: the MTA does not read it.
    Drop,
    /// Pass answers on up to and including a final one (end of message:
    /// modifications, then continue/tempfail/...).
    UntilFinal,
}

/// Splits a byte stream into milter frames.
#[derive(Debug, Default)]
struct Framer {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current frame still to come.
    remaining: u32,
}

enum Event {
    /// A frame's code byte: the frame's header is complete.
    Start(u8),
    /// Bytes of the current frame's body.
    Body(usize),
}

impl Framer {
    /// Consumes from `data`; returns how many bytes were consumed and what
    /// they were.
    fn step(&mut self, data: &[u8]) -> (usize, Option<Event>) {
        if self.remaining > 0 {
            let n = data.len().min(self.remaining as usize);
            self.remaining -= n as u32;
            return (n, Some(Event::Body(n)));
        }
        let n = (5 - self.have).min(data.len());
        self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
        self.have += n;
        if self.have < 5 {
            return (n, None);
        }
        self.have = 0;
        let len = u32::from_be_bytes([
            self.header[0],
            self.header[1],
            self.header[2],
            self.header[3],
        ]);
        self.remaining = len.saturating_sub(1);
        (n, Some(Event::Start(self.header[4])))
    }
}

/// The stream wrapper (see the module documentation).
pub struct NoReply<S> {
    inner: S,
    granted: Protocol,
    expect: VecDeque<Expect>,
    inbound: Framer,
    outbound: Framer,
    /// Whether the outbound frame being written is passed on.
    forwarding: bool,
    /// The outbound frame is the option-negotiation answer: collect its
    /// first 12 body bytes (version, actions, protocol).
    optneg: Option<Vec<u8>>,
    /// Bytes accepted from the milter, waiting to go to the socket.
    out: Vec<u8>,
}

impl<S> NoReply<S> {
    /// Wraps a connection.
    pub fn new(inner: S) -> NoReply<S> {
        NoReply {
            inner,
            granted: Protocol::empty(),
            expect: VecDeque::new(),
            inbound: Framer::default(),
            outbound: Framer::default(),
            forwarding: true,
            optneg: None,
            out: Vec::new(),
        }
    }

    fn expectation(&self, command: u8) -> Option<Expect> {
        let skip = |flag: Protocol| {
            if self.granted.contains(flag) {
                Expect::Drop
            } else {
                Expect::Pass
            }
        };
        Some(match command {
            b'O' => Expect::Pass,
            b'E' => Expect::UntilFinal,
            b'D' | b'A' | b'Q' | b'K' => return None,
            b'C' => skip(Protocol::NR_CONNECT),
            b'H' => skip(Protocol::NR_HELO),
            b'M' => skip(Protocol::NR_MAIL),
            b'R' => skip(Protocol::NR_RECIPIENT),
            b'T' => skip(Protocol::NR_DATA),
            b'L' => skip(Protocol::NR_HEADER),
            b'N' => skip(Protocol::NR_END_OF_HEADER),
            b'B' => skip(Protocol::NR_BODY),
            b'U' => skip(Protocol::NR_UNKNOWN),
            _ => Expect::Pass,
        })
    }

    fn saw_inbound(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (n, event) = self.inbound.step(data);
            if let Some(Event::Start(code)) = event {
                if let Some(e) = self.expectation(code) {
                    self.expect.push_back(e);
                }
            }
            data = &data[n..];
        }
    }

    /// Takes the milter's bytes: passed-on ones go to `out`.
    fn take_outbound(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (n, event) = self.outbound.step(data);
            match event {
                None => {}
                Some(Event::Start(code)) => {
                    let header = self.outbound.header;
                    self.forwarding = match self.expect.front().copied() {
                        Some(Expect::Drop) => {
                            self.expect.pop_front();
                            false
                        }
                        Some(Expect::Pass) => {
                            self.expect.pop_front();
                            true
                        }
                        Some(Expect::UntilFinal) => {
                            if matches!(code, b'c' | b'a' | b'd' | b'r' | b't' | b'y') {
                                self.expect.pop_front();
                            }
                            true
                        }
                        None => true,
                    };
                    self.optneg = (code == b'O').then(Vec::new);
                    if self.forwarding {
                        self.out.extend_from_slice(&header);
                    }
                }
                Some(Event::Body(len)) => {
                    let body = &data[..len];
                    if self.forwarding {
                        self.out.extend_from_slice(body);
                    }
                    if let Some(buf) = &mut self.optneg {
                        let need = 12usize.saturating_sub(buf.len());
                        buf.extend_from_slice(&body[..need.min(body.len())]);
                        if buf.len() == 12 {
                            let p = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                            self.granted = Protocol::from_bits_retain(p) & wanted();
                            self.optneg = None;
                        }
                    }
                }
            }
            data = &data[n..];
        }
    }
}

impl<S: AsyncWrite + Unpin> NoReply<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.out.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoReply<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled()[before..].to_vec();
                this.saw_inbound(&new);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoReply<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Keep the buffer small: answers are a few bytes; end-of-message
        // modifications are at most a packet each.
        if this.out.len() > 256 * 1024 {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.take_outbound(data);
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(code: u8, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(code);
        v.extend_from_slice(body);
        v
    }

    fn optneg_answer(protocol: u32) -> Vec<u8> {
        let mut body = 6u32.to_be_bytes().to_vec();
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&protocol.to_be_bytes());
        frame(b'O', &body)
    }

    #[test]
    fn drops_answers_to_no_reply_commands_only() {
        let mut w = NoReply::new(Vec::<u8>::new());
        // MTA: option negotiation; milter grants NR_HDR and NR_BODY.
        w.saw_inbound(&frame(b'O', &[0; 12]));
        let granted = (Protocol::NR_HEADER | Protocol::NR_BODY).bits();
        w.take_outbound(&optneg_answer(granted));
        // MTA streams: macro, mail, 2 headers, eoh, body, eom.
        let mut inbound = Vec::new();
        for (c, b) in [
            (b'D', &b"Mi\0Q1\0"[..]),
            (b'M', b"<a@b>\0"),
            (b'L', b"A\0 1\0"),
            (b'L', b"B\0 2\0"),
            (b'N', b""),
            (b'B', b"body"),
            (b'E', b""),
        ] {
            inbound.extend(frame(c, b));
        }
        // Delivered in awkward pieces.
        for piece in inbound.chunks(3) {
            w.saw_inbound(piece);
        }
        // The milter answers every command; end of message with a header
        // addition and continue.
        let mut outbound = Vec::new();
        for code in [b'c', b'c', b'c', b'c', b'c'] {
            outbound.extend(frame(code, b""));
        }
        outbound.extend(frame(b'h', b"X\0 y\0"));
        outbound.extend(frame(b'c', b""));
        for piece in outbound.chunks(2) {
            w.take_outbound(piece);
        }
        let mut want = optneg_answer(granted);
        want.extend(frame(b'c', b"")); // MAIL
        want.extend(frame(b'c', b"")); // EOH (not granted)
        want.extend(frame(b'h', b"X\0 y\0"));
        want.extend(frame(b'c', b"")); // EOM
        assert_eq!(w.out, want);
        assert!(w.expect.is_empty());
    }

    #[test]
    fn without_no_reply_everything_passes() {
        let mut w = NoReply::new(Vec::<u8>::new());
        w.saw_inbound(&frame(b'O', &[0; 12]));
        w.take_outbound(&optneg_answer(0));
        w.saw_inbound(&frame(b'L', b"A\0 1\0"));
        w.take_outbound(&frame(b'c', b""));
        assert_eq!(w.out, [optneg_answer(0), frame(b'c', b"")].concat());
    }
}
