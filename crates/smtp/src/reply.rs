//! SMTP replies, sans-IO: [`parse`] takes the bytes received so far and
//! gives the first complete reply, or "need more", or an error.
//!
//! The framing is ours, with bounds, because a hostile relay must not make
//! us buffer without limit (smtp-proto's `ResponseReceiver` keeps at most
//! 4,096 bytes of text *in total*, which a legitimate 20-line EHLO reply can
//! pass, and takes the code of the first line without checking the others).
//! What a reply means (EHLO extensions, SIZE, AUTH mechanisms) is read by
//! smtp-proto, in [`crate::Offer`].

use std::fmt;

/// Longest reply line accepted, CRLF included. RFC 5321 allows 512 bytes;
/// real servers stay far below this.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines accepted in one reply (an EHLO reply has one per extension).
pub const MAX_REPLY_LINES: usize = 100;

/// One reply, as received: the code and every line, CRLF-terminated, ready
/// to pass on as it is (the filter proxy hands the relay's replies to its
/// client unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, the same on every line.
    pub code: u16,
    /// The reply's bytes; lines end in CRLF (a bare LF from the peer is
    /// kept as it came).
    pub raw: Vec<u8>,
}

impl Reply {
    /// A reply of our own: `code text CRLF`.
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

    /// 5xx: asking again will not help.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text of each line, after the code and separator, with invalid
    /// UTF-8 replaced.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.raw
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                String::from_utf8_lossy(line.get(4..).unwrap_or_default())
                    .trim_end()
                    .to_string()
            })
    }
}

/// `250 first line second line`: for logs and error messages. Control
/// characters from the peer are escaped, so a reply cannot forge a log line.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in self.lines() {
            write!(f, " {}", line.escape_debug())?;
        }
        Ok(())
    }
}

/// Why bytes from a peer are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line without its LF passed [`MAX_REPLY_LINE`].
    #[error("a reply line is longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] lines.
    #[error("a reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a code 200–599 and a separator.
    #[error("not a reply line: {0:?}")]
    NotAReply(String),
    /// Continuation lines with another code than the first.
    #[error("reply lines with different codes: {0} then {1}")]
    MixedCodes(u16, u16),
}

/// Parses the first reply in `buf`: `Ok(None)` while it is incomplete,
/// otherwise the reply and the number of bytes it used. Lines may end in
/// CRLF or LF.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut start = 0;
    let mut code = 0;
    let mut lines = 0;
    loop {
        let rest = &buf[start..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() >= MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            return Ok(None);
        };
        if nl + 1 > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += nl + 1;
        let not_a_reply =
            || ReplyError::NotAReply(String::from_utf8_lossy(&line[..line.len().min(80)]).into());
        let this = match line {
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(not_a_reply()),
        };
        if lines == 0 {
            code = this;
        } else if this != code {
            return Err(ReplyError::MixedCodes(code, this));
        }
        lines += 1;
        let more = match line.get(3) {
            None | Some(b' ') => false,
            Some(b'-') => true,
            Some(_) => return Err(not_a_reply()),
        };
        if !more {
            let reply = Reply {
                code,
                raw: buf[..start].to_vec(),
            };
            return Ok(Some((reply, start)));
        }
        if lines >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Reply {
        parse(buf).unwrap().unwrap().0
    }

    #[test]
    fn single_and_multi_line() {
        let (reply, used) = parse(b"250-mx.example\r\n250-SIZE 10\r\n250 8BITMIME\r\nX")
            .unwrap()
            .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(used, 43);
        assert_eq!(
            reply.raw,
            b"250-mx.example\r\n250-SIZE 10\r\n250 8BITMIME\r\n"
        );
        assert_eq!(reply.to_string(), "250 mx.example SIZE 10 8BITMIME");
        assert_eq!(one(b"354\r\n").code, 354);
        assert_eq!(one(b"220 bare lf\n").to_string(), "220 bare lf");
        assert_eq!(parse(b"250-a\r\n250").unwrap(), None);
        assert_eq!(parse(b"").unwrap(), None);
    }

    #[test]
    fn hostile_replies_are_errors() {
        assert_eq!(
            parse(b"250-a\r\n550 b\r\n"),
            Err(ReplyError::MixedCodes(250, 550))
        );
        assert!(matches!(parse(b"hello\r\n"), Err(ReplyError::NotAReply(_))));
        assert!(matches!(parse(b"600 x\r\n"), Err(ReplyError::NotAReply(_))));
        assert!(matches!(parse(b"250x\r\n"), Err(ReplyError::NotAReply(_))));
        let long = vec![b'2'; MAX_REPLY_LINE];
        assert_eq!(parse(&long), Err(ReplyError::LineTooLong));
        let mut many = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            many.extend_from_slice(b"250-x\r\n");
        }
        assert_eq!(parse(&many), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn display_escapes_control_characters() {
        let reply = one(b"550 no\x1b[31m\tway\r\n");
        assert_eq!(reply.to_string(), "550 no\\u{1b}[31m\\tway");
    }
}
