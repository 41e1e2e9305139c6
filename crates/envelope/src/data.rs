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
