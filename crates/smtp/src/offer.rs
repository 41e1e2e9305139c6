//! What a server offers in its EHLO reply. The extensions, SIZE and AUTH
//! mechanisms are read by smtp-proto's `EhloResponse`; XFORWARD, which it
//! does not know (a Postfix extension), is read here.

use crate::reply::Reply;
use smtp_proto::{
    EhloResponse, AUTH_PLAIN, EXT_8BIT_MIME, EXT_DSN, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS,
};

/// The extensions of one EHLO reply; all off after HELO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// smtp-proto's `EXT_*` bits.
    pub capabilities: u32,
    /// The SIZE limit (0: none given).
    pub size: usize,
    /// AUTH PLAIN is among the mechanisms.
    pub auth_plain: bool,
    /// The XFORWARD attributes accepted, upper-case.
    pub xforward: Vec<String>,
}

impl Offer {
    /// Reads a 250 EHLO reply. One smtp-proto cannot read offers nothing
    /// but what is scanned here: a client then sends the plainest session.
    pub fn from_ehlo(reply: &Reply) -> Offer {
        let mut offer = Offer {
            xforward: xforward_attributes(&reply.raw),
            ..Offer::default()
        };
        if let Ok(ehlo) = EhloResponse::<String>::parse(&mut reply.raw.iter()) {
            offer.capabilities = ehlo.capabilities;
            offer.size = if ehlo.capabilities & EXT_SIZE != 0 {
                ehlo.size
            } else {
                0
            };
            offer.auth_plain = ehlo.auth_mechanisms & AUTH_PLAIN != 0;
        }
        offer
    }

    /// STARTTLS.
    pub fn starttls(&self) -> bool {
        self.capabilities & EXT_START_TLS != 0
    }

    /// 8BITMIME.
    pub fn eight_bit_mime(&self) -> bool {
        self.capabilities & EXT_8BIT_MIME != 0
    }

    /// SMTPUTF8.
    pub fn smtputf8(&self) -> bool {
        self.capabilities & EXT_SMTP_UTF8 != 0
    }

    /// DSN (RFC 3461).
    pub fn dsn(&self) -> bool {
        self.capabilities & EXT_DSN != 0
    }
}

/// The attributes of an `XFORWARD` EHLO line, upper-case.
fn xforward_attributes(ehlo: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(ehlo)
        .lines()
        .filter_map(|l| l.get(4..))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words
                .next()
                .filter(|w| w.eq_ignore_ascii_case("XFORWARD"))
                .map(|_| words.map(str::to_ascii_uppercase).collect())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(text: &str) -> Offer {
        let (reply, _) = crate::reply::parse(text.as_bytes()).unwrap().unwrap();
        Offer::from_ehlo(&reply)
    }

    #[test]
    fn extensions_are_read_from_ehlo() {
        let o = offer(
            "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n\
             250-AUTH LOGIN PLAIN\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n",
        );
        assert!(o.starttls() && o.eight_bit_mime() && o.dsn() && o.smtputf8() && o.auth_plain);
        assert_eq!(o.size, 10_240_000);
        let o = offer("250-mx.example\r\n250 AUTH CRAM-MD5\r\n");
        assert!(!o.auth_plain && !o.starttls() && !o.eight_bit_mime());
        assert_eq!(o.size, 0);
        assert_eq!(offer("250 mx.example\r\n"), Offer::default());
        // Lower case, the pre-RFC `AUTH=` form some servers still add.
        let o = offer(
            "250-mx.example\r\n250-starttls\r\n250-AUTH LOGIN PLAIN\r\n250-AUTH=LOGIN\r\n\
             250-8BITMIME\r\n250 DSN\r\n",
        );
        assert!(o.starttls() && o.auth_plain && o.eight_bit_mime() && o.dsn());
        // The greeting line is the server's name, not an extension.
        assert!(!offer("250 STARTTLS\r\n").starttls());
    }

    #[test]
    fn xforward_offer() {
        let o = offer(
            "250-mx.example\r\n250-PIPELINING\r\n\
             250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n250 SMTPUTF8\r\n",
        );
        assert_eq!(
            o.xforward,
            vec!["NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT"]
        );
        assert!(offer("250-mx\r\n250 SIZE 10\r\n").xforward.is_empty());
    }
}
