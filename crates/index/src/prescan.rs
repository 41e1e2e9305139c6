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
    // Separate SIMD searches (memchr) for each feature: this runs on every
    // archived message, and a byte-at-a-time loop was the largest single
    // cost of an import.
    let mut shape = Shape::default();
    let mut i = 0;
    while let Some(p) = memchr::memchr(b':', &raw[i..]) {
        shape.colon_lines += 1;
        match memchr::memchr(b'\n', &raw[i + p..]) {
            Some(n) => i += p + n + 1,
            None => break,
        }
    }
    // Non-overlapping "--": "----" counts as two delimiters' worth.
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'-', &raw[i..]) {
        let at = i + p;
        if raw.get(at + 1) == Some(&b'-') {
            shape.dashes += 1;
            i = at + 2;
        } else {
            i = at + 1;
        }
    }
    for at in memchr::memchr2_iter(b'y', b'Y', raw) {
        if at >= 7 && raw[at - 7..=at].eq_ignore_ascii_case(b"boundary") {
            shape.boundaries += 1;
        }
    }
    for at in memchr::memchr_iter(b'/', raw) {
        if at >= 7 && raw[at - 7..at].eq_ignore_ascii_case(b"message") {
            shape.messages += 1;
        }
    }
    for at in memchr::memchr2_iter(b'g', b'G', raw) {
        if at >= 2 && raw.len() >= at + 4 && raw[at - 2..at + 4].eq_ignore_ascii_case(b"digest") {
            shape.messages += 1;
        }
    }
    shape
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

    /// The byte-at-a-time definition the fast scan must agree with.
    fn reference(raw: &[u8]) -> Shape {
        let ci = |at: usize, w: &[u8]| {
            raw.len() >= at + w.len() && raw[at..at + w.len()].eq_ignore_ascii_case(w)
        };
        let mut shape = Shape::default();
        let (mut prev, mut colon, mut i) = (0u8, false, 0);
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
                    prev = 0;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            shape.boundaries += usize::from(ci(i, b"boundary"));
            shape.messages += usize::from(ci(i, b"message/") || ci(i, b"digest"));
            prev = b;
            i += 1;
        }
        shape.colon_lines += usize::from(colon);
        shape
    }

    #[test]
    fn agrees_with_the_reference_on_varied_input() {
        let pieces: [&[u8]; 12] = [
            b"--",
            b"-",
            b":",
            b"\n",
            b"\r\n",
            b"BoUnDaRy",
            b"message/",
            b"MESSAGE",
            b"/",
            b"dIgEsT",
            b"y",
            b"text ",
        ];
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut raw = Vec::new();
            for _ in 0..(seed % 40) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                raw.extend_from_slice(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            assert_eq!(
                scan(&raw),
                reference(&raw),
                "{:?}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
}
