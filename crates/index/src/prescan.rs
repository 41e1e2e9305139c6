//! A single cheap pass over the raw bytes that bounds what a full MIME parse
//! could cost, so that hostile structure is refused before mail-parser sees it.
//!
//! mail-parser 0.11 walks multiparts and unencoded message/rfc822 parts with
//! an explicit heap stack (not recursion) and recurses only into base64/QP
//! encoded message parts, at most 3 levels (`MAX_NESTED_ENCODED`) — this
//! crate turns that off and recurses itself, pre-scanning each decoded
//! nested message with this same pass. What mail-parser
//! does not bound is: the number of parts (memory), and the time spent
//! looking for a multipart boundary that never comes — each such lookup scans
//! to the end of the input, so many of them cost `containers × size`.
//! The counts below are upper bounds on both, found without parsing.

/// Upper bounds on the structure of a message, from [`scan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Occurrences of `--`: every MIME delimiter contains one, so this bounds
    /// the number of multipart body parts.
    pub dashes: usize,
    /// Occurrences of `boundary` (any case): every multipart container
    /// declares one, so this bounds how many boundary searches can run.
    pub boundaries: usize,
    /// Occurrences of `message/` and `digest` (any case): every nested
    /// message is declared by one of them.
    pub messages: usize,
    /// Lines containing a `:`, which bounds the number of header fields
    /// mail-parser allocates a struct for.
    pub colon_lines: usize,
}

pub(crate) fn scan(raw: &[u8]) -> Shape {
    let mut shape = Shape::default();
    let mut prev = 0u8;
    let mut colon = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'\n' => {
                shape.colon_lines += usize::from(colon);
                colon = false;
            }
            b':' => colon = true,
            b'-' if prev == b'-' => {
                shape.dashes += 1;
                // Count "----" as two delimiters' worth, not three.
                prev = 0;
                i += 1;
                continue;
            }
            b'b' | b'B' if starts_with_ci(&raw[i..], b"boundary") => shape.boundaries += 1,
            b'm' | b'M' if starts_with_ci(&raw[i..], b"message/") => shape.messages += 1,
            b'd' | b'D' if starts_with_ci(&raw[i..], b"digest") => shape.messages += 1,
            _ => {}
        }
        prev = b;
        i += 1;
    }
    shape.colon_lines += usize::from(colon);
    shape
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_structure() {
        let raw = b"Content-Type: multipart/mixed; BOUNDARY=x\r\n\r\n--x\r\n\
                    Content-Type: message/rfc822\r\n\r\nbody\r\n--x--\r\n";
        let s = scan(raw);
        assert_eq!(s.boundaries, 1);
        assert_eq!(s.messages, 1);
        assert_eq!(s.dashes, 3);
        assert_eq!(s.colon_lines, 2);
    }
}
