//! The raw message as SMTP DATA carries it.

use std::io::{self, Write};

/// Streaming SMTP DATA encoding: LF → CRLF (CRLF kept), a leading `.`
/// doubled, and the terminating `.` line.
#[derive(Debug)]
pub struct DataEncoder {
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
    /// Encodes one chunk.
    pub fn write(&mut self, data: &[u8], out: &mut impl Write) -> io::Result<()> {
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

    /// Ends the last line if needed and writes the terminating dot.
    pub fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.at_line_start {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_crlf_whatever_the_chunks() {
        let input = b"a\n.b\r\n..c\nd.\n.";
        let want = b"a\r\n..b\r\n...c\r\nd.\r\n..\r\n.\r\n";
        for chunk in 1..=input.len() {
            let mut e = DataEncoder::default();
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                e.write(c, &mut out).unwrap();
            }
            e.finish(&mut out).unwrap();
            assert_eq!(out, want, "chunk {chunk}");
        }
        let mut out = Vec::new();
        let mut e = DataEncoder::default();
        e.write(b"x\r\n", &mut out).unwrap();
        e.finish(&mut out).unwrap();
        assert_eq!(out, b"x\r\n.\r\n", "a final CRLF is not doubled");
        let mut out = Vec::new();
        DataEncoder::default().finish(&mut out).unwrap();
        assert_eq!(out, b".\r\n");
    }
}
