//! What search sees of a message: header fields, attachment names and types,
//! and the text of its text parts, extracted with hard limits so that hostile
//! input costs bounded time and memory.
//!
//! [`extract`] never fails and never panics: whatever it could not read is
//! reported in [`Extracted::skipped`] and [`Extracted::truncated`], and the
//! header fields are filled whenever a header block can be found at all.
//! MIME structure and charsets are mail-parser's. This crate pre-scans what
//! it hands to mail-parser (the `prescan` module), decodes transfer encodings
//! itself so that mail-parser never recurses into encoded messages, walks
//! the result with an explicit stack, and reduces HTML to words (the `html`
//! module).

#![forbid(unsafe_code)]

mod html;
mod prescan;

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Address, GetHeader, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders,
    PartType,
};

/// Bytes parsed for headers when the body is not parsed at all: a header
/// block longer than this is not one a mail client would show either.
pub const HEADERS_ONLY_PREFIX: usize = 256 * 1024;

/// Most lines containing a `:` that one parsed buffer may have. mail-parser
/// allocates a ~100-byte struct per header field, and `a:\n` is a field in
/// 3 bytes, so this bounds its header memory to ~100 MiB; ordinary mail
/// (base64 has no colons) stays far below it.
pub const MAX_HEADER_LINES: usize = 1024 * 1024;

/// Budget for mail-parser's boundary searches, in bytes scanned, shared by a
/// message and everything nested in it: each multipart container whose
/// boundary never appears costs a scan to the end of its buffer, so
/// `containers × size` beyond this is refused (measured ~0.2 s worst case).
pub const MAX_BOUNDARY_SCAN: u64 = 256 * 1024 * 1024;

/// Ceiling on [`Limits::max_depth`]: nested encoded messages are followed by
/// recursion, one frame per level, so the depth must stay small whatever the
/// caller configures.
pub const MAX_DEPTH_CAP: usize = 64;

/// Longest attachment file name kept; names are for search, not storage.
pub const MAX_NAME: usize = 1024;

/// Most message ids [`Extracted::references`] keeps: a conversation is
/// found through its start and the latest replies, and a hostile header of
/// thousands of ids costs no more than this.
pub const MAX_REFERENCES: usize = 20;

/// Longest message id kept (RFC 5322's line limit is 998).
pub const MAX_ID: usize = 998;

/// Hard limits on what [`extract`] reads. Every limit bounds time or memory
/// on input written by strangers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Larger input is not parsed as MIME: only the headers in its first
    /// [`HEADERS_ONLY_PREFIX`] bytes are read. Default 64 MiB.
    pub max_input: usize,
    /// Most MIME parts (all levels, nested messages included) looked at.
    /// Default 1000.
    pub max_parts: usize,
    /// Most nesting levels of multipart and message/rfc822 parts followed.
    /// Default 20.
    pub max_depth: usize,
    /// Most bytes of extracted text; the rest is cut and `truncated` set.
    /// Default 1 MiB.
    pub max_text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input: 64 * 1024 * 1024,
            max_parts: 1000,
            max_depth: 20,
            max_text: 1024 * 1024,
        }
    }
}

/// An attachment as search lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name from Content-Disposition `filename` or Content-Type `name`
    /// (decoded), or the Subject of a nested message.
    pub name: Option<String>,
    /// `type/subtype`, lowercased, without parameters; `message/rfc822` for
    /// nested messages, `application/octet-stream` when not declared.
    pub content_type: String,
    /// Decoded size in bytes (for nested messages: their raw size).
    pub size: u64,
}

/// Everything [`extract`] read from a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Every From address as `Display Name <addr@x>`, joined with `", "`.
    pub from: String,
    /// Every To address, same form.
    pub to: String,
    /// Every Cc address, same form.
    pub cc: String,
    /// The Subject, encoded-words decoded.
    pub subject: String,
    /// Date header as unix seconds UTC; `None` if absent or unparsable.
    pub date: Option<i64>,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// The messages this one answers or follows, from In-Reply-To and
    /// References, without angle brackets, each once: at most
    /// [`MAX_REFERENCES`], the first of References (the conversation's
    /// start) and the nearest ones kept when there are more.
    pub references: Vec<String>,
    /// Parts with a file name or `Content-Disposition: attachment`, and
    /// nested message/rfc822 parts, in document order.
    pub attachments: Vec<Attachment>,
    /// Text of text/plain parts and of text/html parts reduced to words,
    /// parts separated by `"\n"`; of a multipart/alternative only the plain
    /// version when it has one.
    pub text: String,
    /// A limit cut the text: it is a prefix of what the message says.
    pub truncated: bool,
    /// Why some or all of the body was not read (too large, too many parts,
    /// nested too deep, unparsable). Header fields may still be present.
    pub skipped: Option<String>,
    /// A part's text was cut at `max_text`: nothing after it is added, so
    /// the text stays a prefix of what the message says.
    text_cut: bool,
}

/// Reads the fields, attachments and text of one raw RFC 5322 message.
///
/// Never panics; time is linear in `raw.len()` (bounded by [`Limits`] and
/// the constants of this crate) and memory a small multiple of it.
pub fn extract(raw: &[u8], limits: &Limits) -> Extracted {
    let parser = parser();
    if raw.len() > limits.max_input {
        let reason = format!(
            "message is {} bytes, over the {} byte limit: headers only",
            raw.len(),
            limits.max_input
        );
        return headers_only(&parser, raw, reason);
    }
    let mut walker = Walker {
        parser: &parser,
        limits,
        depth_limit: limits.max_depth.min(MAX_DEPTH_CAP),
        out: Extracted::default(),
        parts_seen: 0,
        scan_left: MAX_BOUNDARY_SCAN,
    };
    if let Err(reason) = walker.admit(raw) {
        return headers_only(&parser, raw, format!("{reason}: headers only"));
    }
    let Some(message) = parser.parse(raw) else {
        return Extracted {
            skipped: Some("no message header found".into()),
            ..Extracted::default()
        };
    };
    read_headers(&message, &mut walker.out);
    walker.walk(&message, raw, 0);
    dismantle(message);
    walker.out
}

/// A parser for just the fields this crate reads: other header fields are
/// skipped rather than parsed (Received parsing alone would cost more than
/// the whole extraction).
///
/// Content-Transfer-Encoding is deliberately not parsed, so mail-parser
/// decodes no part: left to itself it decodes base64/QP message/rfc822 parts
/// and parses them by recursion, where no pre-scan can see them (a 5 MB
/// message built that way took 100 s). [`Walker`] decodes parts instead,
/// and pre-scans a nested message before parsing it.
fn parser() -> MessageParser {
    MessageParser::new()
        .with_mime_headers()
        .ignore_header(HeaderName::ContentTransferEncoding)
        .header_address(HeaderName::From)
        .header_address(HeaderName::To)
        .header_address(HeaderName::Cc)
        .header_text(HeaderName::Subject)
        .header_date(HeaderName::Date)
        .header_id(HeaderName::MessageId)
        .header_id(HeaderName::InReplyTo)
        .header_id(HeaderName::References)
        .default_header_ignore()
}

/// [`extract`] for a message of `total` bytes too large to read whole
/// (over `limits.max_input`), from its header section `head`: the header
/// fields only, and why.
pub fn extract_headers_only(head: &[u8], total: u64, limits: &Limits) -> Extracted {
    let reason = format!(
        "message is {total} bytes, over the {} byte limit: headers only",
        limits.max_input
    );
    headers_only(&parser(), head, reason)
}

/// The Message-ID and [`Extracted::references`] of a message from its
/// header section (or the first bytes of the message): what links it into
/// a conversation, read without the body.
pub fn conversation_ids(head: &[u8]) -> (Option<String>, Vec<String>) {
    let prefix = &head[..head.len().min(HEADERS_ONLY_PREFIX)];
    let mut out = Extracted::default();
    if let Some(message) = parser().parse_headers(prefix) {
        read_headers(&message, &mut out);
    }
    (out.message_id, out.references)
}

fn headers_only(parser: &MessageParser, raw: &[u8], reason: String) -> Extracted {
    let prefix = &raw[..raw.len().min(HEADERS_ONLY_PREFIX)];
    let mut out = Extracted {
        skipped: Some(reason),
        ..Extracted::default()
    };
    if let Some(message) = parser.parse_headers(prefix) {
        read_headers(&message, &mut out);
    }
    out
}

fn read_headers(message: &Message<'_>, out: &mut Extracted) {
    let Some(root) = message.parts.first() else {
        return;
    };
    out.from = addresses(&root.headers, HeaderName::From);
    out.to = addresses(&root.headers, HeaderName::To);
    out.cc = addresses(&root.headers, HeaderName::Cc);
    out.subject = root
        .headers
        .header_value(&HeaderName::Subject)
        .and_then(HeaderValue::as_text)
        .unwrap_or_default()
        .to_owned();
    out.date = root
        .headers
        .header_value(&HeaderName::Date)
        .and_then(HeaderValue::as_datetime)
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp());
    out.message_id = root
        .headers
        .header_value(&HeaderName::MessageId)
        .and_then(|v| ids_of(v).into_iter().next());
    out.references = references(&root.headers);
}

/// The ids of an id header's value, without angle brackets, empty and
/// over-long ones left out.
fn ids_of(value: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<&str> = match value {
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.as_ref()).collect(),
        v => v.as_text().into_iter().collect(),
    };
    list.into_iter()
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID)
        .map(str::to_owned)
        .collect()
}

/// In-Reply-To and References of a header block, each id once: the first
/// of References, then the nearest [`MAX_REFERENCES`] - 1 of the rest
/// (References lists the oldest first; In-Reply-To is the nearest).
fn references(headers: &[mail_parser::Header<'_>]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for name in [HeaderName::References, HeaderName::InReplyTo] {
        for header in headers.iter().filter(|h| h.name == name) {
            ids.extend(ids_of(&header.value));
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.len() > MAX_REFERENCES {
        let tail = ids.split_off(ids.len() - (MAX_REFERENCES - 1));
        ids.truncate(1);
        ids.extend(tail);
    }
    ids
}

/// Every address of every `name` header (RFC 5322 obsolete syntax allows
/// repeats), groups flattened.
fn addresses(headers: &[mail_parser::Header<'_>], name: HeaderName<'_>) -> String {
    let mut out = String::new();
    for header in headers.iter().filter(|h| h.name == name) {
        let Some(address) = header.value.as_address() else {
            continue;
        };
        let addrs: Box<dyn Iterator<Item = &mail_parser::Addr<'_>>> = match address {
            Address::List(list) => Box::new(list.iter()),
            Address::Group(groups) => Box::new(groups.iter().flat_map(|g| g.addresses.iter())),
        };
        for addr in addrs {
            let name = addr.name().map(str::trim).filter(|n| !n.is_empty());
            let email = addr.address().map(str::trim).filter(|a| !a.is_empty());
            if name.is_none() && email.is_none() {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            match (name, email) {
                (Some(n), Some(a)) => {
                    out.push_str(n);
                    out.push_str(" <");
                    out.push_str(a);
                    out.push('>');
                }
                (Some(only), None) | (None, Some(only)) => out.push_str(only),
                (None, None) => {}
            }
        }
    }
    out
}

/// A transfer encoding this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    Base64,
    QuotedPrintable,
}

/// The part's Content-Transfer-Encoding, read from the raw field (the
/// parser skips it, see [`parser`]).
fn transfer_encoding(part: &MessagePart<'_>, buf: &[u8]) -> Option<Cte> {
    let field = part
        .headers
        .iter()
        .rev()
        .find(|h| h.name == HeaderName::ContentTransferEncoding)?;
    let value = buf.get(field.offset_start as usize..field.offset_end as usize)?;
    let value = value.trim_ascii();
    if value.eq_ignore_ascii_case(b"base64") {
        Some(Cte::Base64)
    } else if value.eq_ignore_ascii_case(b"quoted-printable") {
        Some(Cte::QuotedPrintable)
    } else {
        None
    }
}

/// Decodes a part body with mail-parser's own MIME decoders (an empty
/// boundary means "to the end"); undecodable bodies stay as they are, as
/// mail-parser itself would leave them.
fn decode(body: &[u8], cte: Cte) -> Cow<'_, [u8]> {
    let mut stream = MessageStream::new(body);
    let (end, bytes) = match cte {
        Cte::Base64 => stream.decode_base64_mime(b""),
        Cte::QuotedPrintable => stream.decode_quoted_printable_mime(b""),
    };
    if end == usize::MAX {
        Cow::Borrowed(body)
    } else {
        bytes
    }
}

/// A part's undecoded body bytes.
fn raw_body<'b>(part: &MessagePart<'_>, buf: &'b [u8]) -> &'b [u8] {
    let start = (part.offset_body as usize).min(buf.len());
    let end = (part.offset_end as usize).clamp(start, buf.len());
    &buf[start..end]
}

/// Offset of the next `--boundary` at or after `from`, or the end of `buf`.
/// Compares only where `--` occurs, which the pre-scan has bounded, so a
/// long hostile boundary costs no more than a short one.
fn next_delimiter(buf: &[u8], from: usize, boundary: Option<&str>) -> usize {
    let Some(boundary) = boundary.filter(|b| !b.is_empty()) else {
        return buf.len();
    };
    let mut at = from;
    while let Some(p) = buf
        .get(at..)
        .and_then(|rest| rest.windows(2).position(|w| w == b"--"))
    {
        let dashes = at + p;
        if buf[dashes + 2..].starts_with(boundary.as_bytes()) {
            return dashes;
        }
        at = dashes + 2;
    }
    buf.len()
}

/// Walks parsed messages, filling an [`Extracted`] within the limits.
struct Walker<'a> {
    parser: &'a MessageParser,
    limits: &'a Limits,
    depth_limit: usize,
    out: Extracted,
    /// Parts visited so far, nested messages included.
    parts_seen: usize,
    /// What is left of [`MAX_BOUNDARY_SCAN`] for this message.
    scan_left: u64,
}

impl Walker<'_> {
    /// Checks that `buf` may be handed to mail-parser, charging its boundary
    /// searches to the shared budget.
    fn admit(&mut self, buf: &[u8]) -> Result<(), String> {
        let shape = prescan::scan(buf);
        // The delimiter count overestimates parts (HTML comments, signatures
        // and rules of dashes contain "--" too), so allow slack; the walk
        // enforces `max_parts` exactly on what the parse produced.
        let part_bound = self.limits.max_parts.saturating_mul(4).max(64);
        if shape.dashes > part_bound {
            return Err(format!(
                "more than {} MIME parts ({} delimiter candidates)",
                self.limits.max_parts, shape.dashes
            ));
        }
        if shape.messages > part_bound {
            return Err(format!(
                "more than {} nested messages",
                self.limits.max_parts
            ));
        }
        if shape.colon_lines > MAX_HEADER_LINES {
            return Err(format!(
                "{} header-like lines, over the {MAX_HEADER_LINES} limit",
                shape.colon_lines
            ));
        }
        let cost = (shape.boundaries as u64).saturating_mul(buf.len() as u64);
        if cost > self.scan_left {
            return Err(format!(
                "{} multipart boundaries in {} bytes: too costly to parse",
                shape.boundaries,
                buf.len()
            ));
        }
        self.scan_left -= cost;
        Ok(())
    }

    /// Walks the part tree of `message` (parsed from `buf`) and the messages
    /// nested in it, in document order, with an explicit stack. Only nested
    /// messages that had to be decoded are parsed by recursion, one level
    /// deeper each time, so recursion is bounded by the depth limit.
    fn walk(&mut self, message: &Message<'_>, buf: &[u8], depth: usize) {
        struct Visit<'m, 'x> {
            message: &'m Message<'x>,
            part: u32,
            depth: usize,
            /// The enclosing multipart's boundary, which ends this part.
            boundary: Option<&'m str>,
        }
        let mut stack = vec![Visit {
            message,
            part: 0,
            depth,
            boundary: None,
        }];
        while let Some(Visit {
            message,
            part: id,
            depth,
            boundary,
        }) = stack.pop()
        {
            let Some(part) = message.parts.get(id as usize) else {
                continue;
            };
            if depth > self.depth_limit {
                cut(
                    &mut self.out,
                    format!("nested deeper than {} levels", self.depth_limit),
                );
                continue;
            }
            self.parts_seen += 1;
            if self.parts_seen > self.limits.max_parts {
                cut(
                    &mut self.out,
                    format!("more than {} MIME parts", self.limits.max_parts),
                );
                return;
            }
            let cte = transfer_encoding(part, buf);
            let is_message = matches!(part.body, PartType::Message(_)) || is_message_type(part);
            if let (true, Some(cte)) = (is_message, cte) {
                // An encoded message: mail-parser read the encoded text in
                // place as if it were a message. Decode and parse it here.
                let start = part.offset_body as usize;
                let end = next_delimiter(buf, start, boundary);
                let decoded = decode(buf.get(start..end).unwrap_or_default(), cte);
                let slot = self.out.attachments.len();
                if let Some(a) = attachment(part, || decoded.len()) {
                    self.out.attachments.push(a);
                }
                let subject = self.nested(&decoded, depth + 1);
                if let Some(a) = self.out.attachments.get_mut(slot) {
                    if a.name.is_none() {
                        a.name = subject.map(cap_name);
                    }
                }
                // Base64 has no header fields, so the in-place "message"
                // ran on into the next sibling part and took it as its own
                // header and body: walk whatever starts past the encoded text.
                if let PartType::Message(junk) = &part.body {
                    let past = junk
                        .parts
                        .first()
                        .and_then(|root| root.headers.first())
                        .is_some_and(|h| h.offset_field as usize >= end);
                    if past {
                        stack.push(Visit {
                            message: junk,
                            part: 0,
                            depth,
                            boundary,
                        });
                    }
                }
                continue;
            }
            // Sized lazily: only attachments report a size, and base64 is
            // sized without decoding (most attachment bytes are base64).
            let size = || match (&part.body, cte) {
                (PartType::Message(_), _) => raw_body(part, buf).len(),
                (PartType::Multipart(_), _) => 0,
                (_, Some(Cte::Base64)) => base64_decoded_len(raw_body(part, buf)),
                (_, Some(cte)) => decode(raw_body(part, buf), cte).len(),
                (_, None) => part.len(),
            };
            if let Some(a) = attachment(part, size) {
                self.out.attachments.push(a);
            }
            match &part.body {
                PartType::Multipart(children) => {
                    let boundary = part.content_type().and_then(|ct| ct.attribute("boundary"));
                    // Ids only ever point forward; anything else would loop.
                    stack.extend(children.iter().rev().filter(|&&c| c > id).map(|&c| Visit {
                        message,
                        part: c,
                        depth: depth + 1,
                        boundary,
                    }));
                }
                PartType::Message(nested) => stack.push(Visit {
                    message: nested,
                    part: 0,
                    depth: depth + 1,
                    boundary,
                }),
                PartType::Text(text) | PartType::Html(text) if is_body_text(message, id, part) => {
                    let decoded;
                    let text: &str = match cte {
                        Some(cte) => {
                            decoded = charset_decode(part, &decode(raw_body(part, buf), cte));
                            &decoded
                        }
                        None => text,
                    };
                    let is_html = matches!(part.body, PartType::Html(_));
                    append_part(&mut self.out, self.limits, |out, limit| {
                        if is_html {
                            html::append_text(text, out, limit)
                        } else {
                            let room = limit.saturating_sub(out.len());
                            let end = html::floor_char_boundary(text, room);
                            out.push_str(&text[..end]);
                            end == text.len()
                        }
                    });
                }
                _ => {}
            }
        }
    }

    /// Pre-scans, parses and walks a decoded nested message; returns its
    /// Subject for the attachment name.
    fn nested(&mut self, buf: &[u8], depth: usize) -> Option<String> {
        if depth > self.depth_limit {
            cut(
                &mut self.out,
                format!("nested deeper than {} levels", self.depth_limit),
            );
            return None;
        }
        if let Err(reason) = self.admit(buf) {
            cut(&mut self.out, format!("nested message not read: {reason}"));
            return None;
        }
        let message = self.parser.parse(buf)?;
        let subject = message.subject().map(str::to_owned);
        self.walk(&message, buf, depth);
        dismantle(message);
        subject
    }
}

/// Text of a decoded text part in its declared charset, as mail-parser
/// would have produced it.
fn charset_decode(part: &MessagePart<'_>, bytes: &[u8]) -> String {
    part.content_type()
        .and_then(|ct| ct.attribute("charset"))
        .and_then(|c| charset_decoder(c.as_bytes()))
        .map_or_else(|| String::from_utf8_lossy(bytes).into_owned(), |f| f(bytes))
}

fn is_message_type(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
            })
    })
}

fn cap_name(mut name: String) -> String {
    name.truncate(html::floor_char_boundary(&name, MAX_NAME));
    name
}

/// Records that a limit cut the body, keeping the first reason.
fn cut(out: &mut Extracted, reason: String) {
    out.truncated = true;
    out.skipped.get_or_insert(reason);
}

/// Appends one part's text after a `"\n"` separator; `write` returns
/// `false` when `max_text` cut it.
fn append_part(
    out: &mut Extracted,
    limits: &Limits,
    write: impl FnOnce(&mut String, usize) -> bool,
) {
    // Once a part was cut, nothing after it is added: the text stays a
    // prefix of what the message says (a later short part used to slip in
    // after a cut one; found by fuzzing).
    if out.text_cut {
        return;
    }
    let before = out.text.len();
    if before > 0 {
        if before >= limits.max_text {
            out.truncated = true;
            out.text_cut = true;
            return;
        }
        out.text.push('\n');
    }
    if !write(&mut out.text, limits.max_text) {
        out.truncated = true;
        out.text_cut = true;
    }
    if before > 0 && out.text.len() == before + 1 {
        // The part had no words: drop its separator.
        out.text.pop();
    }
}

/// Whether a text/html part is part of what the message says: mail-parser
/// lists the preferred alternative in `text_body` (the HTML one only when
/// there is no plain one), and leaves the losing HTML alternative only in
/// `html_body`. Attached text files are read too; other text/* types
/// (calendar, csv, vcard) are not prose.
fn is_body_text(message: &Message<'_>, id: u32, part: &MessagePart<'_>) -> bool {
    let prose = part.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_none_or(|s| s.eq_ignore_ascii_case("plain") || s.eq_ignore_ascii_case("html"))
    });
    prose && (message.text_body.contains(&id) || !message.html_body.contains(&id))
}

/// The attachment entry for `part`, if search lists it; `size` is its
/// decoded size.
/// The length base64 text decodes to: 6 bits per alphabet character,
/// whatever whitespace or stray bytes lie between (the decoder skips them).
fn base64_decoded_len(body: &[u8]) -> usize {
    let symbols = body
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'+' || **b == b'/')
        .count();
    symbols * 6 / 8
}

fn attachment(part: &MessagePart<'_>, size: impl FnOnce() -> usize) -> Option<Attachment> {
    let content_type = part.content_type();
    let is_message = matches!(part.body, PartType::Message(_)) || is_message_type(part);
    let name = part
        .attachment_name()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let disposed = part
        .content_disposition()
        .is_some_and(|cd| cd.is_attachment());
    if !(is_message || disposed || name.is_some()) {
        return None;
    }
    let name = name
        .map(str::to_owned)
        .or_else(|| match &part.body {
            PartType::Message(nested) => nested.subject().map(str::to_owned),
            _ => None,
        })
        .map(cap_name);
    let content_type = match content_type {
        Some(ct) => {
            let mut s = ct.ctype().to_ascii_lowercase();
            if let Some(sub) = ct.subtype() {
                s.push('/');
                s.push_str(&sub.to_ascii_lowercase());
            }
            s
        }
        None if is_message => "message/rfc822".to_owned(),
        None => "application/octet-stream".to_owned(),
    };
    Some(Attachment {
        name,
        content_type,
        size: size() as u64,
    })
}

/// Drops a parsed message without recursion: mail-parser's nested messages
/// own each other, so dropping a deep chain would recurse once per level.
fn dismantle(message: Message<'_>) {
    let mut pending = vec![message];
    while let Some(mut message) = pending.pop() {
        for part in &mut message.parts {
            if let PartType::Message(_) = part.body {
                if let PartType::Message(nested) = std::mem::take(&mut part.body) {
                    pending.push(nested);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    const HEADERS: &str = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>, bare@example.org\r\n\
        To: Team: a@example.org, \"B, Bee\" <b@example.org>;\r\n\
        Cc: c@example.org\r\n\
        Subject: =?iso-8859-1?q?Gr=FC=DFe?= aus Berlin\r\n\
        Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n\
        Message-ID: <abc.123@example.org>\r\n\
        MIME-Version: 1.0\r\n";

    #[test]
    fn references_and_in_reply_to_are_kept_once_with_the_start_and_the_nearest() {
        let raw = "Message-ID: <c@x>\r\nIn-Reply-To: <b@x>\r\n\
            References: <a@x>\r\n <b@x>\r\n\r\nbody\r\n";
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_eq!(x.message_id.as_deref(), Some("c@x"));
        assert_eq!(x.references, ["a@x", "b@x"]);
        assert_eq!(
            conversation_ids(raw.as_bytes()),
            (
                Some("c@x".to_owned()),
                vec!["a@x".to_owned(), "b@x".to_owned()]
            )
        );

        let mut long = String::from("References:");
        for i in 0..5000 {
            write!(long, " <r{i}@x>").unwrap();
        }
        let raw = format!("{long}\r\nIn-Reply-To: <r4999@x>\r\n\r\nbody\r\n");
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_eq!(x.references.len(), MAX_REFERENCES);
        assert_eq!(x.references[0], "r0@x");
        assert_eq!(
            x.references[1],
            format!("r{}@x", 5000 - (MAX_REFERENCES - 1))
        );
        assert_eq!(x.references.last().unwrap(), "r4999@x");

        let x = extract(b"Subject: none\r\n\r\nbody\r\n", &Limits::default());
        assert!(x.references.is_empty() && x.message_id.is_none());
    }

    fn assert_headers(x: &Extracted) {
        assert_eq!(x.from, "Jürgen <j@example.org>, bare@example.org");
        assert_eq!(x.to, "a@example.org, B, Bee <b@example.org>");
        assert_eq!(x.cc, "c@example.org");
        assert_eq!(x.subject, "Grüße aus Berlin");
        assert_eq!(x.date, Some(1_057_049_557));
        assert_eq!(x.message_id.as_deref(), Some("abc.123@example.org"));
    }

    #[test]
    fn headers_are_decoded() {
        let raw = format!("{HEADERS}Content-Type: text/plain\r\n\r\nhello\r\n");
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_headers(&x);
        assert_eq!(x.text, "hello\r\n");
        assert_eq!((x.truncated, x.skipped), (false, None));
    }

    #[test]
    fn alternative_takes_the_plain_version() {
        let raw = format!(
            "{HEADERS}Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain words\r\n\
             --b\r\nContent-Type: text/html\r\n\r\n<p>html <b>only</b></p>\r\n--b--\r\n"
        );
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_eq!(x.text, "plain words");
        assert!(x.attachments.is_empty(), "{:?}", x.attachments);
    }

    #[test]
    fn html_only_alternative_is_reduced() {
        let raw = format!(
            "{HEADERS}Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/html\r\n\r\n<style>p{{x:y}}</style><p>Tom &amp; \
             Jerry&nbsp;&lt;3</p><script>evil()</script>\r\n--b--\r\n"
        );
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_eq!(x.text, "Tom & Jerry <3");
    }

    #[test]
    fn mixed_parts_attachments_and_nested_message() {
        let raw = format!(
            "{HEADERS}Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
             --outer\r\nContent-Type: text/plain\r\n\r\nfirst\r\n\
             --outer\r\nContent-Type: application/PDF; name=\"r.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n\
             --outer\r\nContent-Type: message/rfc822\r\n\r\n\
             Subject: inner\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n\
             --outer\r\nContent-Disposition: attachment\r\n\r\nno name\r\n\
             --outer--\r\n"
        );
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_headers(&x);
        assert_eq!(
            x.attachments,
            vec![
                Attachment {
                    name: Some("r.pdf".into()),
                    content_type: "application/pdf".into(),
                    size: 9,
                },
                Attachment {
                    name: Some("inner".into()),
                    content_type: "message/rfc822".into(),
                    size: x.attachments[1].size,
                },
                Attachment {
                    name: None,
                    content_type: "application/octet-stream".into(),
                    size: 7,
                },
            ]
        );
        assert!(x.attachments[1].size > 40, "{:?}", x.attachments[1]);
        assert_eq!(x.text, "first\nsecond\nno name");
    }

    /// A message whose body is `count` sibling text parts.
    fn many_parts(count: usize) -> String {
        let mut raw = format!("{HEADERS}Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n");
        for i in 0..count {
            write!(raw, "--p\r\nContent-Type: text/plain\r\n\r\npart{i}\r\n").unwrap();
        }
        raw.push_str("--p--\r\n");
        raw
    }

    #[test]
    fn ten_thousand_parts_are_refused_before_parsing() {
        let x = extract(many_parts(10_000).as_bytes(), &Limits::default());
        assert_headers(&x);
        assert!(
            x.skipped.as_deref().unwrap().contains("MIME parts"),
            "{x:?}"
        );
        assert!(x.text.is_empty());
    }

    #[test]
    fn parts_over_max_parts_are_cut_by_the_walk() {
        // Under the pre-scan's slack but over the limit: the walk stops.
        let limits = Limits {
            max_parts: 100,
            ..Limits::default()
        };
        let x = extract(many_parts(150).as_bytes(), &limits);
        assert!(x.truncated);
        assert!(
            x.skipped.as_deref().unwrap().contains("more than 100"),
            "{x:?}"
        );
        assert!(x.text.contains("\npart98") && !x.text.contains("part99"));
    }

    fn nested_multiparts(depth: usize) -> String {
        let mut raw = String::from(HEADERS);
        for i in 0..depth {
            write!(
                raw,
                "Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n"
            )
            .unwrap();
        }
        raw.push_str("Content-Type: text/plain\r\n\r\ndeepest\r\n");
        for i in (0..depth).rev() {
            write!(raw, "--n{i}--\r\n").unwrap();
        }
        raw
    }

    fn nested_messages(depth: usize) -> String {
        let mut raw = String::from(HEADERS);
        for i in 0..depth {
            write!(
                raw,
                "Content-Type: message/rfc822\r\n\r\nSubject: level {i}\r\n"
            )
            .unwrap();
        }
        raw.push_str("Content-Type: text/plain\r\n\r\ndeepest\r\n");
        raw
    }

    #[test]
    fn deep_nesting_is_cut_and_headers_kept() {
        for raw in [nested_multiparts(100), nested_messages(100)] {
            let x = extract(raw.as_bytes(), &Limits::default());
            assert_headers(&x);
            assert!(x.truncated, "{x:?}");
            assert!(x
                .skipped
                .as_deref()
                .unwrap()
                .contains("nested deeper than 20"));
            assert!(!x.text.contains("deepest"));
        }
        // Within the limit, the same shapes are read in full.
        for raw in [nested_multiparts(10), nested_messages(10)] {
            let x = extract(raw.as_bytes(), &Limits::default());
            assert_eq!((x.text.trim_end(), x.truncated), ("deepest", false));
        }
    }

    #[test]
    fn very_deep_message_chain_is_refused_before_parsing() {
        // 100k levels would be 100k nested Message values inside mail-parser.
        let x = extract(nested_messages(100_000).as_bytes(), &Limits::default());
        assert_headers(&x);
        assert!(
            x.skipped.as_deref().unwrap().contains("nested messages"),
            "{x:?}"
        );
    }

    #[test]
    fn many_unmatched_boundaries_are_refused() {
        // Each multipart whose boundary never comes makes mail-parser scan to
        // the end of the input: quadratic unless refused.
        let mut raw = many_parts(0).replace("--p--\r\n", "");
        let pad = "x".repeat(2 * 1024 * 1024);
        for i in 0..200 {
            write!(
                raw,
                "--p\r\nContent-Type: multipart/mixed; boundary=\"never{i}\"\r\n\r\n"
            )
            .unwrap();
        }
        raw.push_str(&pad);
        let x = extract(raw.as_bytes(), &Limits::default());
        assert_headers(&x);
        assert!(
            x.skipped.as_deref().unwrap().contains("boundaries"),
            "{x:?}"
        );
    }

    #[test]
    fn big_text_part_is_truncated_at_max_text() {
        let body = "word ".repeat(1024 * 1024); // 5 MiB
        let raw = format!("{HEADERS}Content-Type: text/plain\r\n\r\n{body}");
        let x = extract(raw.as_bytes(), &Limits::default());
        assert!(x.truncated);
        assert_eq!(x.skipped, None);
        assert_eq!(x.text.len(), Limits::default().max_text);
        assert!(x.text.starts_with("word word"));

        let html = format!("{HEADERS}Content-Type: text/html\r\n\r\n<p>{body}</p>");
        let x = extract(html.as_bytes(), &Limits::default());
        assert!(x.truncated);
        assert!(x.text.len() <= Limits::default().max_text);
        assert!(x.text.len() > Limits::default().max_text - 8);
    }

    #[test]
    fn oversized_input_gets_headers_only() {
        let limits = Limits {
            max_input: 1000,
            ..Limits::default()
        };
        let raw = format!(
            "{HEADERS}Content-Type: text/plain\r\n\r\n{}",
            "a".repeat(2000)
        );
        let x = extract(raw.as_bytes(), &limits);
        assert_headers(&x);
        assert!(x.text.is_empty());
        assert!(x
            .skipped
            .as_deref()
            .unwrap()
            .contains("over the 1000 byte limit"));
    }

    /// xorshift64*: deterministic garbage without a dependency.
    fn garbage(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
                alphabet[(r >> 32) as usize % alphabet.len()]
            })
            .collect()
    }

    #[test]
    fn garbage_never_panics() {
        let all: Vec<u8> = (0..=255).collect();
        // Bytes that steer the MIME and header parsers into their edge cases.
        let mimeish =
            b"-\r\n\r\n:;=\"?<>&#/\\ \t\0\xff\xfeboundarymultipart/messagerfc822Content-Type";
        for seed in 0..300u64 {
            let len = (seed as usize * 37) % 4096;
            let alphabet: &[u8] = if seed % 2 == 0 { &all } else { mimeish };
            let _ = extract(&garbage(seed, len, alphabet), &Limits::default());
            let mut framed =
                format!("{HEADERS}Content-Type: multipart/mixed; boundary=\"-\"\r\n\r\n--\r\n")
                    .into_bytes();
            framed.extend(garbage(seed, len, alphabet));
            let _ = extract(&framed, &Limits::default());
        }
        let nasty: [&[u8]; 8] = [
            b"",
            b"\0\0\0\0",
            b"\r\r\r\rSubject: x\rFrom: y\r\r",
            b"Subject: \xff\xfe\xc3\x28 bad =?utf-8?b?////?= =?x-unknown?q?=FF?=\r\n\r\nbody",
            b"From: <<<<@@@>>>, \"unterminated\r\nTo: ;;;,,,\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n----\r\n",
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!",
            b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\n\r\n",
        ];
        for raw in nasty {
            let x = extract(raw, &Limits::default());
            assert_eq!(x.date, None);
        }
        let x = extract(b"Subject: a\xffb\r\n\r\n\xc3\x28", &Limits::default());
        assert!(x.subject.starts_with('a') && x.subject.ends_with('b'));
    }

    /// Standard base64 with 76-column lines, for building test messages.
    fn base64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut flat = String::new();
        for c in data.chunks(3) {
            let n = u32::from(c[0]) << 16
                | u32::from(*c.get(1).unwrap_or(&0)) << 8
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                flat.push(if k <= c.len() {
                    A[(n >> (18 - 6 * k) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        let lines: Vec<&str> = flat
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        lines.join("\r\n")
    }

    fn encoded_forward(inner: &str) -> String {
        format!(
            "{HEADERS}Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
             --o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--o\r\nContent-Type: text/plain\r\n\r\nsibling text\r\n\
             --o\r\nContent-Type: image/png; name=\"after.png\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--o--\r\n",
            base64(inner.as_bytes())
        )
    }

    #[test]
    fn base64_forwarded_message_and_its_siblings_are_read() {
        let inner = "Subject: =?utf-8?q?inner_=C3=BC?=\r\nContent-Type: text/html\r\n\r\n\
                     <p>forwarded &amp; encoded</p>\r\n";
        let x = extract(encoded_forward(inner).as_bytes(), &Limits::default());
        assert_headers(&x);
        assert_eq!(x.text, "forwarded & encoded\nsibling text");
        let names: Vec<_> = x.attachments.iter().map(|a| a.name.as_deref()).collect();
        assert_eq!(names, [Some("inner ü"), Some("after.png")]);
        assert_eq!(x.attachments[0].size, inner.len() as u64);
        assert_eq!(x.attachments[1].size, 8);
        assert_eq!((x.truncated, x.skipped), (false, None));
    }

    #[test]
    fn structure_hidden_in_an_encoded_message_is_prescanned() {
        // 20,000 multiparts whose boundary never comes, visible only after
        // decoding: given to mail-parser's own recursion this took minutes.
        let mut inner =
            String::from("Subject: bomb\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n");
        for i in 0..20_000 {
            write!(
                inner,
                "--p\r\nContent-Type: multipart/mixed; boundary=n{i}\r\n\r\n"
            )
            .unwrap();
        }
        let x = extract(encoded_forward(&inner).as_bytes(), &Limits::default());
        assert_headers(&x);
        assert!(x.truncated);
        assert!(
            x.skipped
                .as_deref()
                .unwrap()
                .starts_with("nested message not read"),
            "{x:?}"
        );
        assert_eq!(x.text, "sibling text");
    }

    #[test]
    fn parser_never_decodes_transfer_encodings() {
        // The invariant behind the two tests above: if mail-parser decoded
        // parts, it would also recurse into encoded messages unscanned (the
        // hidden-structure test then still passes, but after ~50 s).
        let raw = encoded_forward("Subject: inner\r\n\r\nbody\r\n");
        let message = parser().parse(raw.as_bytes()).unwrap();
        let forwarded = &message.parts[1];
        assert!(
            !matches!(&forwarded.body, PartType::Message(m) if m.subject() == Some("inner")),
            "mail-parser decoded and parsed the base64 message itself"
        );
        let png = message.parts.last().unwrap();
        assert_eq!(png.contents(), b"iVBORw0KGgo=");
    }
}
