//! What a file is, from its first bytes.

/// The kinds of file the walk tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Empty,
    /// Starts with `From `.
    Mbox,
    /// Starts with a header field: one message (`.eml`, Maildir file).
    Message,
    NotMail,
}

/// A header field name may be this long and still count: the line length
/// limit of RFC 5322.
const MAX_NAME: usize = 998;

/// Decides from the first bytes; `None` asks for more (`eof` says there
/// is no more, or that the caller will not read more).
pub(crate) fn detect(start: &[u8], eof: bool) -> Option<Kind> {
    if start.is_empty() {
        return eof.then_some(Kind::Empty);
    }
    let n = start.len().min(5);
    if start[..n] == b"From "[..n] {
        if n == 5 {
            return Some(Kind::Mbox);
        }
        if !eof {
            return None;
        }
    }
    // `field-name *WSP ":"` (RFC 5322, with the obsolete space before the
    // colon): name characters are printable ASCII except the colon.
    let name_len = start
        .iter()
        .take(MAX_NAME + 1)
        .position(|b| !(33..=126).contains(b) || *b == b':');
    let Some(name_len) = name_len else {
        return if eof || start.len() > MAX_NAME {
            Some(Kind::NotMail)
        } else {
            None
        };
    };
    if name_len == 0 {
        return Some(Kind::NotMail);
    }
    match start[name_len..]
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
    {
        Some(off) if start[name_len + off] == b':' => Some(Kind::Message),
        Some(_) => Some(Kind::NotMail),
        None if eof => Some(Kind::NotMail),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(detect(b"", true), Some(Kind::Empty));
        assert_eq!(detect(b"", false), None);
        assert_eq!(detect(b"From a@b Sat", false), Some(Kind::Mbox));
        assert_eq!(detect(b"Fro", false), None);
        assert_eq!(detect(b"From: a@b\n", false), Some(Kind::Message));
        assert_eq!(detect(b"Return-Path: <a@b>\n", false), Some(Kind::Message));
        assert_eq!(detect(b"Subject : old style\n", true), Some(Kind::Message));
        assert_eq!(detect(b"X-Very-Long", false), None);
        assert_eq!(detect(b"X-Very-Long", true), Some(Kind::NotMail));
        assert_eq!(detect(b"Hello world\n", true), Some(Kind::NotMail));
        assert_eq!(detect(b"\nSubject: x", true), Some(Kind::NotMail));
        assert_eq!(detect(b"#!/bin/sh\n", true), Some(Kind::NotMail));
        assert_eq!(detect(&[b'x'; 2000], false), Some(Kind::NotMail));
        assert_eq!(detect(b"\x89PNG\r\n", true), Some(Kind::NotMail));
    }
}
