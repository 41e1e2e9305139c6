//! HTML reduced to the words a reader sees: tags stripped, `<script>`,
//! `<style>` and comments dropped, the common character references decoded
//! and whitespace collapsed. Not an HTML parser: a single forward pass with
//! no backtracking, so hostile markup costs linear time, and output stops at
//! a byte budget.

/// Longest `&...;` reference we try to decode; anything longer is text.
const MAX_ENTITY_LEN: usize = 12;

/// Tags that separate words when rendered (a line or cell break), so
/// `<td>a</td><td>b</td>` reads "a b" while `<b>W</b>ord` stays one word.
const BREAKING_TAGS: &[&[u8]] = &[
    b"address",
    b"article",
    b"blockquote",
    b"body",
    b"br",
    b"caption",
    b"dd",
    b"div",
    b"dl",
    b"dt",
    b"footer",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"head",
    b"header",
    b"hr",
    b"html",
    b"img",
    b"li",
    b"ol",
    b"p",
    b"pre",
    b"section",
    b"table",
    b"tbody",
    b"td",
    b"tfoot",
    b"th",
    b"thead",
    b"title",
    b"tr",
    b"ul",
];

/// Appends the plain-text reading of `html` to `out`, never letting `out`
/// grow past `limit` bytes. Returns `false` when the budget cut the text.
pub(crate) fn append_text(html: &str, out: &mut String, limit: usize) -> bool {
    let mut w = Writer {
        out,
        limit,
        pending_space: false,
        full: false,
    };
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut text_start = 0;

    while i < bytes.len() && !w.full {
        match bytes[i] {
            b'<' => {
                w.text(&html[text_start..i]);
                i = skip_markup(bytes, i, &mut w);
                text_start = i;
            }
            b'&' => {
                w.text(&html[text_start..i]);
                i = decode_reference(html, i, &mut w);
                text_start = i;
            }
            _ => i += 1,
        }
    }
    if !w.full {
        w.text(&html[text_start..]);
    }
    !w.full
}

/// Consumes the markup starting at `bytes[start] == b'<'` and returns the
/// index just after it.
fn skip_markup(bytes: &[u8], start: usize, w: &mut Writer<'_>) -> usize {
    let rest = &bytes[start + 1..];
    if rest.starts_with(b"!--") {
        return find(bytes, start + 4, b"-->").map_or(bytes.len(), |end| end + 3);
    }
    let (closing, name_at) = match rest.first() {
        Some(b'/') => (true, start + 2),
        _ => (false, start + 1),
    };
    let name_len = bytes[name_at.min(bytes.len())..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    let first = bytes.get(name_at).copied().unwrap_or(b' ');
    if name_len == 0 && !closing && first != b'!' && first != b'?' {
        // "a < b" or a stray '<': it is text, not a tag.
        w.text("<");
        return start + 1;
    }
    let name = &bytes[name_at..name_at + name_len];
    let Some(gt) = memchr(b'>', bytes, name_at) else {
        // An unterminated tag swallows the rest, as a browser would.
        return bytes.len();
    };
    let after = gt + 1;
    if BREAKING_TAGS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
        w.pending_space = true;
    }
    if !closing {
        for raw in [&b"script"[..], b"style"] {
            if name.eq_ignore_ascii_case(raw) {
                // Content is code, not prose: drop it up to the closing tag.
                return match find_ci(bytes, after, raw) {
                    Some(end) => memchr(b'>', bytes, end).map_or(bytes.len(), |gt| gt + 1),
                    None => bytes.len(),
                };
            }
        }
    }
    after
}

/// Decodes the character reference at `html[start] == '&'` (or emits a
/// literal '&') and returns the index just after what it consumed.
fn decode_reference(html: &str, start: usize, w: &mut Writer<'_>) -> usize {
    let bytes = html.as_bytes();
    let window = &bytes[start + 1..bytes.len().min(start + 1 + MAX_ENTITY_LEN)];
    let Some(semi) = window.iter().position(|&b| b == b';') else {
        w.text("&");
        return start + 1;
    };
    let body = &window[..semi];
    let decoded = match body {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        b"nbsp" => Some(' '),
        [b'#', b'x' | b'X', hex @ ..] => numeric(hex, 16),
        [b'#', dec @ ..] => numeric(dec, 10),
        _ => None,
    };
    match decoded {
        Some(c) => {
            let mut buf = [0u8; 4];
            w.text(c.encode_utf8(&mut buf));
            start + 1 + semi + 1
        }
        None => {
            w.text("&");
            start + 1
        }
    }
}

/// A numeric reference's character; invalid code points (surrogates, NUL,
/// out of range) read as U+FFFD like a browser, never as a panic.
fn numeric(digits: &[u8], radix: u32) -> Option<char> {
    if digits.is_empty() || !digits.iter().all(|b| (*b as char).is_digit(radix)) {
        return None;
    }
    let code = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| u32::from_str_radix(s, radix).ok());
    Some(
        code.filter(|&c| c != 0)
            .and_then(char::from_u32)
            .unwrap_or(char::REPLACEMENT_CHARACTER),
    )
}

struct Writer<'a> {
    out: &'a mut String,
    limit: usize,
    /// Whitespace seen since the last word; written only before the next
    /// word so runs collapse and the text never ends in a space.
    pending_space: bool,
    full: bool,
}

impl Writer<'_> {
    fn text(&mut self, s: &str) {
        for word in s.split_inclusive(char::is_whitespace) {
            let trimmed = word.trim_end_matches(char::is_whitespace);
            if !trimmed.is_empty() {
                if self.pending_space && !self.out.is_empty() && !self.out.ends_with('\n') {
                    self.push(" ");
                }
                self.pending_space = false;
                self.push(trimmed);
            }
            if trimmed.len() != word.len() {
                self.pending_space = true;
            }
            if self.full {
                return;
            }
        }
    }

    fn push(&mut self, s: &str) {
        if self.full {
            return;
        }
        let room = self.limit.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
        } else {
            self.out.push_str(&s[..floor_char_boundary(s, room)]);
            self.full = true;
        }
    }
}

/// The largest char boundary of `s` that is `<= at`.
pub(crate) fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|p| p + from)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Index of the `</name` closing tag at or after `from`, ASCII case-insensitive.
fn find_ci(hay: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut at = from;
    while let Some(lt) = find(hay, at, b"</") {
        let tail = &hay[lt + 2..];
        if tail.len() >= name.len() && tail[..name.len()].eq_ignore_ascii_case(name) {
            return Some(lt);
        }
        at = lt + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(html: &str) -> String {
        let mut out = String::new();
        assert!(append_text(html, &mut out, usize::MAX));
        out
    }

    #[test]
    fn strips_tags_and_collapses_whitespace() {
        assert_eq!(
            reduce(
                "<html><body>\n  <p>Hello,\r\n   <b>big</b>\tworld</p><p>again</p></body></html>"
            ),
            "Hello, big world again"
        );
        assert_eq!(reduce("<td>a</td><td>b</td>"), "a b");
        assert_eq!(reduce("<b>W</b>ord"), "Word");
    }

    #[test]
    fn drops_script_style_and_comments() {
        let html = "<head><style type=text/css>p { color: red }</style></head>\
                    <body>keep<script>alert('x < y')</script> <!-- hidden -->this\
                    <SCRIPT>var a = 1;</SCRIPT></body>";
        assert_eq!(reduce(html), "keep this");
    }

    #[test]
    fn decodes_entities() {
        assert_eq!(
            reduce("AT&amp;T &lt;tag&gt; &quot;q&quot; it&#39;s a&nbsp;b &#233;t&#xE9; &#x1F600;"),
            "AT&T <tag> \"q\" it's a b été 😀"
        );
        // Unknown, unterminated and invalid references never panic.
        assert_eq!(
            reduce("&bogus; & &#; &#xD800; &#9999999;"),
            "&bogus; & &#; \u{FFFD} \u{FFFD}"
        );
    }

    #[test]
    fn stray_angle_brackets_and_unterminated_markup() {
        assert_eq!(reduce("1 < 2 and 3 > 2"), "1 < 2 and 3 > 2");
        assert_eq!(reduce("before <a href='x"), "before");
        assert_eq!(reduce("x<script>never closed"), "x");
        assert_eq!(reduce("y<!-- never closed"), "y");
    }

    #[test]
    fn stops_at_the_budget_on_a_char_boundary() {
        let mut out = String::new();
        assert!(!append_text("<p>ééééé</p>", &mut out, 5));
        assert_eq!(out, "éé");
    }
}
