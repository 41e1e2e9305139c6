//! A message as the web shows it: its header fields decoded, the text
//! part, the HTML part made safe, and the attachments, from the original
//! bytes, which come from strangers.
//!
//! The HTML part goes through ammonia (an allow-list of elements and
//! attributes: no script, no event handler, no style, no form, no `base`,
//! no `meta`, no SVG; URLs only http, https and mailto, and links open in a
//! new context without referrer). It is then shown only inside an
//! `<iframe sandbox>` whose own response carries a Content-Security-Policy
//! of `default-src 'none'` and `sandbox`: even a sanitiser bug cannot run a
//! script or load anything. Images from elsewhere are dropped unless the
//! reader asked for them (`img-src` then allows http and https).

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use serde::Serialize;
use std::collections::HashSet;

/// One header field, decoded for display.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Its name as written.
    pub name: String,
    /// Its value, encoded-words decoded, unfolded.
    pub value: String,
}

/// An attachment, without its content.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentInfo {
    /// Its position (the URL's index).
    pub index: usize,
    /// The name to save it under, made safe ([`safe_file_name`]).
    pub name: String,
    /// What it says it is (only informative: it is served as
    /// application/octet-stream).
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
}

/// What the message view shows.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// Header fields in order (Bcc left out for those who did not send it).
    pub headers: Vec<Field>,
    /// The first text/plain part (or the HTML reduced to text).
    pub text: Option<String>,
    /// Whether there is an HTML part to show in the frame.
    pub has_html: bool,
    /// The attachments.
    pub attachments: Vec<AttachmentInfo>,
}

fn field_value(raw: &[u8], h: &mail_parser::Header<'_>) -> String {
    let text = match &h.value {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(list) => list.join(", "),
        HeaderValue::Address(a) => a
            .iter()
            .map(|addr| match (addr.name(), addr.address()) {
                (Some(n), Some(a)) => format!("{n} <{a}>"),
                (None, Some(a)) => a.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::DateTime(d) => d.to_rfc822(),
        _ => {
            let start = h.offset_start as usize;
            let end = (h.offset_end as usize).min(raw.len());
            String::from_utf8_lossy(raw.get(start..end).unwrap_or_default()).into_owned()
        }
    };
    clean_text(&text)
}

/// Unfolds and removes control characters (other than tab).
fn clean_text(s: &str) -> String {
    s.replace("\r\n", "")
        .replace('\n', "")
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Parses `raw` for display. `show_bcc`: whether a `Bcc` header field (which
/// an MTA normally removes) may be shown to this reader.
pub fn view(raw: &[u8], show_bcc: bool) -> View {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return View {
            headers: Vec::new(),
            text: Some(String::from_utf8_lossy(raw).into_owned()),
            has_html: false,
            attachments: Vec::new(),
        };
    };
    let headers = msg
        .headers()
        .iter()
        .filter(|h| show_bcc || !h.name.as_str().eq_ignore_ascii_case("bcc"))
        .map(|h| Field {
            name: clean_text(h.name.as_str()),
            value: field_value(raw, h),
        })
        .collect();
    let text = msg.body_text(0).map(|t| t.into_owned());
    let has_html =
        msg.html_body_count() > 0 && msg.html_part(0).map(|p| p.is_text_html()).unwrap_or(false);
    let attachments = msg
        .attachments()
        .enumerate()
        .map(|(index, part)| AttachmentInfo {
            index,
            name: safe_file_name(part.attachment_name(), index),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(s) => format!("{}/{}", ct.ctype(), s),
                    None => ct.ctype().to_string(),
                })
                .map(|t| clean_text(&t).to_lowercase())
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: part.len(),
        })
        .collect();
    View {
        headers,
        text,
        has_html,
        attachments,
    }
}

/// The message's first text part (or its HTML reduced to text), for a
/// snippet.
pub fn body_text(raw: &[u8]) -> Option<String> {
    let msg = MessageParser::default().parse(raw)?;
    msg.body_text(0).map(|t| t.into_owned())
}

/// The HTML part, sanitised, as a whole document; `None` when there is
/// none. `remote`: keep http(s) image sources (the reader asked).
pub fn html(raw: &[u8], remote: bool) -> Option<String> {
    let msg = MessageParser::default().parse(raw)?;
    let part = msg.html_part(0)?;
    if !part.is_text_html() {
        return None;
    }
    let body = part.text_contents()?;
    Some(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>{}</body></html>",
        sanitize(body, remote)
    ))
}

/// The allow-list sanitiser (see the module documentation).
pub fn sanitize(html: &str, remote: bool) -> String {
    let mut b = ammonia::Builder::default();
    b.url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .set_tag_attribute_value("a", "target", "_blank")
        .rm_tags(["img"]);
    if remote {
        b.add_tags(["img"]);
        b.add_tag_attributes("img", ["src", "alt", "width", "height"]);
    }
    // Relative URLs would resolve against this site.
    b.url_relative(ammonia::UrlRelative::Deny);
    b.clean(html).to_string()
}

/// The attachment's content and metadata.
pub fn attachment(raw: &[u8], index: usize) -> Option<(AttachmentInfo, Vec<u8>)> {
    let msg = MessageParser::default().parse(raw)?;
    let part = msg.attachments().nth(index)?;
    let info = AttachmentInfo {
        index,
        name: safe_file_name(part.attachment_name(), index),
        content_type: "application/octet-stream".into(),
        size: part.len(),
    };
    // Decoded content; a nested message as the bytes it was sent as.
    Some((info, part.contents().to_vec()))
}

/// Characters that reorder text (bidirectional overrides and isolates)
/// and so can disguise `gpj.exe` as `exe.jpg`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
}

/// A file name a browser can be told to save under: the last path
/// component only, no control or bidirectional-override characters, no
/// quotes or backslashes, no leading dots, at most 150 characters;
/// `attachment-N` when nothing is left.
pub fn safe_file_name(name: Option<&str>, index: usize) -> String {
    let name = name.unwrap_or("");
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .map(|c| match c {
            '"' | '\'' | ';' | ':' | '*' | '?' | '<' | '>' | '|' => '_',
            c => c,
        })
        .take(150)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim().to_string();
    if cleaned.is_empty() {
        format!("attachment-{}", index + 1)
    } else {
        cleaned
    }
}

/// The `Content-Disposition` value for a download: an ASCII fallback name
/// and the UTF-8 name percent-encoded (RFC 6266, RFC 8187).
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_file_names_are_made_safe() {
        assert_eq!(safe_file_name(Some("../../etc/passwd"), 0), "passwd");
        assert_eq!(safe_file_name(Some("a\"b\r\nc.txt"), 0), "a_bc.txt");
        assert_eq!(safe_file_name(Some("inv\u{202e}gpj.exe"), 0), "invgpj.exe");
        assert_eq!(safe_file_name(Some(".."), 2), "attachment-3");
        assert_eq!(safe_file_name(None, 0), "attachment-1");
        let d = content_disposition("résumé \"x\".pdf");
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(
            d.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"),
            "{d}"
        );
    }

    #[test]
    fn the_sanitiser_keeps_text_and_drops_what_runs_or_loads() {
        let dirty = r#"<p onclick="x()">hi<script>alert(1)</script><img src="http://e.vil/p.gif">
            <a href="javascript:alert(1)">j</a><a href="https://ok.example/">ok</a>
            <style>body{background:url(http://e.vil/)}</style><form action="http://e.vil"><input></form>
            <svg><script>alert(1)</script></svg><meta http-equiv="refresh" content="0;url=http://e.vil">
            <base href="http://e.vil/"></p>"#;
        let clean = sanitize(dirty, false);
        for bad in [
            "script",
            "onclick",
            "e.vil",
            "javascript",
            "<style",
            "<form",
            "<svg",
            "<meta",
            "<base",
            "<img",
        ] {
            assert!(!clean.contains(bad), "{bad} in {clean}");
        }
        assert!(
            clean.contains("hi") && clean.contains("https://ok.example/"),
            "{clean}"
        );
        assert!(sanitize(r#"<img src="https://x.example/a.png">"#, true).contains("<img"));
    }
}
