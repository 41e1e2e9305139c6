//! SMTP DATA, received: the sans-IO decoder that removes dot-stuffing and
//! finds the end of the message, whatever the chunk boundaries.
//!
//! Bytes in, message bytes out, and "done" with the number of input bytes
//! the message took (what follows belongs to the next command, since
//! clients may pipeline after the final dot). Line ends are kept as the
//! client sent them, so the archived copy is what the client meant:
//! RFC 5321 dot-stuffing undone and nothing else. The end is CRLF `.` CRLF;
//! a bare LF is accepted in its place (`\n.\n`, `\r\n.\n`, `\n.\r\n`), as
//! Postfix accepts bare LF, so a sloppy client cannot make the message run
//! on into its next command. A line starting with one dot followed by other
//! text (a client that did not stuff) loses that dot, as in Postfix.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A dot at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    /// Inside a line.
    Middle,
}

/// What [`DataDecoder::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All input consumed; the message goes on.
    More,
    /// The message ended after this many input bytes.
    Done(usize),
}

/// The decoder for one message.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    line_len: usize,
    longest_line: usize,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            state: State::LineStart,
            line_len: 0,
            longest_line: 0,
        }
    }
}

impl DataDecoder {
    /// Decodes `input`, appending message bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                State::LineStart => match b {
                    b'.' => self.state = State::Dot,
                    _ => {
                        self.state = State::Middle;
                        self.byte(b, out);
                    }
                },
                State::Dot => match b {
                    b'\r' => self.state = State::DotCr,
                    b'\n' => return self.done(i),
                    _ => {
                        // "..x" is ".x"; ".x" (unstuffed) is "x".
                        self.state = State::Middle;
                        self.byte(b, out);
                    }
                },
                State::DotCr => match b {
                    b'\n' => return self.done(i),
                    _ => {
                        // ".\rx": not an end; keep the CR.
                        self.state = State::Middle;
                        self.byte(b'\r', out);
                        self.byte(b, out);
                    }
                },
                State::Middle => self.byte(b, out),
            }
        }
        Feed::More
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        out.push(b);
        if b == b'\n' {
            self.longest_line = self.longest_line.max(self.line_len);
            self.line_len = 0;
            self.state = State::LineStart;
        } else if b != b'\r' {
            self.line_len += 1;
        }
    }

    fn done(&mut self, i: usize) -> Feed {
        self.state = State::LineStart;
        Feed::Done(i + 1)
    }

    /// The longest line seen so far, without its line end.
    pub fn longest_line(&self) -> usize {
        self.longest_line.max(self.line_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk`; returns the message and where
    /// it ended.
    fn decode(input: &[u8], chunk: usize) -> (Vec<u8>, Option<usize>) {
        let mut d = DataDecoder::default();
        let mut out = Vec::new();
        let mut offset = 0;
        for piece in input.chunks(chunk.max(1)) {
            if let Feed::Done(n) = d.feed(piece, &mut out) {
                return (out, Some(offset + n));
            }
            offset += piece.len();
        }
        (out, None)
    }

    #[test]
    fn unstuffs_and_ends_whatever_the_chunking() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.single\r\nmid.dle\r\n...\r\n.\r\nMAIL FROM:<a@b>\r\n";
        let want = b"Subject: x\r\n\r\n.leading dot\r\nsingle\r\nmid.dle\r\n..\r\n";
        let end = input.len() - b"MAIL FROM:<a@b>\r\n".len();
        for chunk in 1..=input.len() {
            assert_eq!(
                decode(input, chunk),
                (want.to_vec(), Some(end)),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn bare_lf_ends_and_is_kept() {
        assert_eq!(decode(b"a\nb\n.\n", 3), (b"a\nb\n".to_vec(), Some(6)));
        assert_eq!(decode(b"a\r\n.\n", 1), (b"a\r\n".to_vec(), Some(5)));
        assert_eq!(decode(b"a\n.\r\n", 2), (b"a\n".to_vec(), Some(5)));
    }

    #[test]
    fn empty_message_and_no_end() {
        assert_eq!(decode(b".\r\n", 1), (Vec::new(), Some(3)));
        assert_eq!(
            decode(b"text without end\r\n", 4),
            (b"text without end\r\n".to_vec(), None)
        );
        assert_eq!(decode(b".\rx\r\n.\r\n", 1), (b"\rx\r\n".to_vec(), Some(8)));
    }

    #[test]
    fn measures_lines() {
        let mut d = DataDecoder::default();
        let mut out = Vec::new();
        d.feed(b"short\r\n", &mut out);
        d.feed(&[b'x'; 2000], &mut out);
        assert_eq!(d.longest_line(), 2000);
    }
}
