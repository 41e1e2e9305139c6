//! The encodings SMTP commands carry.

/// xtext (RFC 3461) as XFORWARD requires: `+`, `=`, and bytes outside
/// `!`..`~` become `+XX`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for AUTH PLAIN.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether an address can go between `<>` on a command line: a control
/// character would end the command early or smuggle in another one.
pub fn is_safe_address(addr: &str) -> bool {
    !addr.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_escapes() {
        assert_eq!(xtext("a b+c=d\u{e9}"), "a+20b+2Bc+3Dd+C3+A9");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    #[test]
    fn addresses_with_control_characters_are_unsafe() {
        assert!(is_safe_address("a@example.com"));
        assert!(is_safe_address(""));
        assert!(!is_safe_address("a@example.com>\r\nRCPT TO:<b@example.com"));
        assert!(!is_safe_address("a\0b"));
    }
}
