//! The few header fields rules look at, parsed from the header section only.

use mail_parser::{HeaderName, MessageParser};

/// Addresses from the message header, lower-cased. Header fields are
/// whatever the sender typed: they are matched, never trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Addresses in `From:`.
    pub from: Vec<String>,
    /// Addresses in `To:` and `Cc:`.
    pub to: Vec<String>,
}

impl HeaderInfo {
    /// Parses the header section of a message (the body, if present, is
    /// ignored). Malformed fields yield no addresses rather than an error.
    pub fn parse(head: &[u8]) -> HeaderInfo {
        let Some(msg) = MessageParser::default().parse_headers(head) else {
            return HeaderInfo::default();
        };
        let mut info = HeaderInfo::default();
        for header in msg.headers() {
            let target = match &header.name {
                HeaderName::From => &mut info.from,
                HeaderName::To | HeaderName::Cc => &mut info.to,
                _ => continue,
            };
            if let Some(addrs) = header.value.as_address() {
                for a in addrs.iter() {
                    if let Some(addr) = &a.address {
                        target.push(addr.to_lowercase());
                    }
                }
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_to_cc() {
        let h = HeaderInfo::parse(
            b"From: Alice <Alice@Example.com>\r\nTo: b@x.org, \"C\" <c@y.org>\r\nCc: d@z.org\r\nSubject: hi\r\n\r\n",
        );
        assert_eq!(h.from, vec!["alice@example.com"]);
        assert_eq!(h.to, vec!["b@x.org", "c@y.org", "d@z.org"]);
    }

    #[test]
    fn junk_yields_nothing() {
        assert_eq!(
            HeaderInfo::parse(b"\0\xff\xfe garbage"),
            HeaderInfo::default()
        );
        assert_eq!(HeaderInfo::parse(b""), HeaderInfo::default());
    }
}
