//! The HTML pages: login, search, a message, the audit log. Rendered on the
//! server, every value escaped; no script at all (the policy is
//! `default-src 'none'` with this site's own style sheet), so they work
//! with keyboard alone and at 360 px wide. A message's HTML part is shown
//! only in a sandboxed frame ([`crate::view`]).

use crate::api::{self, AuditParams};
use crate::{log_in, snippet, view, ApiError, App, Client, Viewer};
use axum::extract::{Form, Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mailkeep_store::catalog::Facets;
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::Arc;

type Shared = Arc<App>;

/// The style sheet, vendored in the binary.
pub const STYLE: &str = include_str!("assets/style.css");

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
pub(crate) fn url_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(crate) fn layout(title: &str, viewer: Option<&Viewer>, body: &str) -> Html<String> {
    let nav = match viewer {
        Some(v) => {
            let who = v.identity();
            let audit = match who.role {
                crate::Role::Admin => {
                    r#"<a href="/dashboard">Dashboard</a><a href="/holds">Holds</a><a href="/audit">Audit log</a><a href="/users">Accounts</a><a href="/retention">Retention</a>"#
                }
                crate::Role::Auditor => {
                    r#"<a href="/dashboard">Dashboard</a><a href="/holds">Holds</a><a href="/audit">Audit log</a>"#
                }
                crate::Role::User => "",
            };
            format!(
                r#"<nav><a href="/">Search</a>{audit}<span class="who">{name} ({role})</span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form></nav>"#,
                name = esc(&who.name),
                role = who.role,
                csrf = esc(&v.session.csrf),
            )
        }
        None => String::new(),
    };
    Html(format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · mailkeep</title><link rel="stylesheet" href="/assets/style.css"></head>
<body><header><a class="brand" href="/">mailkeep</a>{nav}</header><main>{body}</main></body></html>"#,
        title = esc(title),
    ))
}

/// An error as a page: not logged in goes to the login page.
pub(crate) fn page_error(e: ApiError) -> Response {
    match e {
        ApiError::Unauthenticated => Redirect::to("/login").into_response(),
        e => {
            let status = e.status();
            let body = format!("<h1>{}</h1><p>{}</p>", status.as_u16(), esc(&e.message()));
            (status, layout("Error", None, &body)).into_response()
        }
    }
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "style.css" => (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            STYLE,
        )
            .into_response(),
        _ => ApiError::NotFound.into_response(),
    }
}

/// `GET /login`.
pub async fn login_form(viewer: Result<Viewer, ApiError>) -> Response {
    if viewer.is_ok() {
        return Redirect::to("/").into_response();
    }
    login_page(None, StatusCode::OK)
}

fn login_page(error: Option<&str>, status: StatusCode) -> Response {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Log in</h1>{error}
<form method="post" action="/login" class="login">
<label for="user">User name</label><input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button></form>"#
    );
    (status, layout("Log in", None, &body)).into_response()
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
}

/// Whether a form post comes from this site's own pages (login CSRF): the
/// browser's `Sec-Fetch-Site`, or failing that `Origin` against `Host`.
fn same_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .map(|(_, rest)| rest == host)
            .unwrap_or(false),
        // Not a browser's cross-site post (those send Origin).
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// `POST /login`.
pub async fn login(
    State(app): State<Shared>,
    Client(client): Client,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_site(&headers) {
        return page_error(ApiError::Csrf);
    }
    match log_in(&app, client, f.user, f.password).await {
        Ok((id, _)) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, crate::cookie(&app, Some(&id)));
            r
        }
        Err(e @ (ApiError::BadLogin | ApiError::Throttled(_) | ApiError::Unavailable(_))) => {
            login_page(Some(&e.message()), e.status())
        }
        Err(e) => page_error(e),
    }
}

/// The logout form's field.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// The answer to a change posted from an admin page: back to `list` (a
/// reload does not post again), or, when the change was refused, the page
/// `again` draws with why, under the refusal's status.
pub(crate) async fn after_change<F, Fut>(
    outcome: Result<(), ApiError>,
    list: &'static str,
    again: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    match outcome {
        Ok(()) => Redirect::to(list).into_response(),
        Err(e @ ApiError::BadRequest(_)) => match again(e.message()).await {
            Ok(mut r) => {
                *r.status_mut() = e.status();
                r
            }
            Err(e) => page_error(e),
        },
        Err(e) => page_error(e),
    }
}

/// The logged-in viewer of a page's form post, whose form carries the
/// session's CSRF token.
pub(crate) fn form_viewer(
    viewer: Result<Viewer, ApiError>,
    csrf: &str,
) -> Result<Viewer, ApiError> {
    let viewer = viewer?;
    if !crate::session::same_token(csrf, &viewer.session.csrf) {
        return Err(ApiError::Csrf);
    }
    Ok(viewer)
}

/// `POST /logout`.
pub async fn logout(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let viewer = match form_viewer(viewer, &f.csrf) {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    app.sessions.close(&viewer.id);
    if let Err(e) = app.record_viewer(&viewer, "logout", json!({})).await {
        return page_error(e);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, crate::cookie(&app, None));
    r
}

/// The search page's fields: the query language, and simple fields that
/// are turned into it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SearchForm {
    #[serde(default)]
    q: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    attachment: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    offset: u64,
}

/// A query-language phrase for any text.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl SearchForm {
    /// The whole query: `q` and the simple fields, ANDed.
    fn query(&self, viewer: &Viewer) -> String {
        let mut parts = Vec::new();
        if !self.q.trim().is_empty() {
            // Written back from its parse, so that the fields below stay
            // ANDed with all of it (`a) OR (b` cannot escape the brackets);
            // a query that does not parse alone is kept as typed and
            // unbracketed, so that the whole fails with its error.
            match mailkeep_query::parse(self.q.trim()) {
                Ok(parsed) => parts.push(format!("({parsed})")),
                Err(_) => parts.push(self.q.trim().to_string()),
            }
        }
        if !self.from.trim().is_empty() {
            parts.push(format!("from:{}", quoted(self.from.trim())));
        }
        if !self.to.trim().is_empty() {
            parts.push(format!("to:{}", quoted(self.to.trim())));
        }
        for (key, value) in [("after", &self.after), ("before", &self.before)] {
            let v = value.trim();
            if !v.is_empty() {
                parts.push(format!("{key}:{}", quoted(v)));
            }
        }
        if self.attachment == "on" {
            parts.push("has:attachment".into());
        }
        let me = viewer.identity();
        let mine = |field: &str| -> Vec<String> {
            let mut v: Vec<String> = me
                .addresses
                .iter()
                .map(|a| format!("{field}:{}", quoted(a)))
                .collect();
            if field == "sender" {
                v.push(format!("login:{}", quoted(&me.name)));
            }
            v
        };
        match self.folder.as_str() {
            "sent" => parts.push(format!("({})", mine("sender").join(" OR "))),
            "received" if !me.addresses.is_empty() => {
                parts.push(format!("({})", mine("recipient").join(" OR ")))
            }
            _ => {}
        }
        parts.join(" ")
    }

    /// A link to this search narrowed by `term`, from its first page.
    fn narrowed(&self, term: &str) -> String {
        let q = if self.q.trim().is_empty() {
            term.to_string()
        } else {
            format!("({}) {term}", self.q.trim())
        };
        SearchForm { q, ..self.clone() }.link(0)
    }

    /// This form's fields as a query string, with another offset.
    fn link(&self, offset: u64) -> String {
        let mut s = String::from("/?");
        for (k, v) in [
            ("q", &self.q),
            ("from", &self.from),
            ("to", &self.to),
            ("after", &self.after),
            ("before", &self.before),
            ("attachment", &self.attachment),
            ("folder", &self.folder),
            ("sort", &self.sort),
        ] {
            if !v.is_empty() {
                let _ = write!(s, "{k}={}&", url_value(v));
            }
        }
        let _ = write!(s, "offset={offset}");
        s
    }
}

const PAGE: u64 = 50;

/// `GET /`: the search page.
pub async fn search(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    UrlQuery(f): UrlQuery<SearchForm>,
) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let query = f.query(&viewer);
    let order = match api::order(Some(f.sort.as_str())) {
        Ok(o) => o,
        Err(e) => return page_error(e),
    };
    let mut body = String::from("<h1>Search</h1>");
    let selected = |cond: bool| if cond { " selected" } else { "" };
    let _ = write!(
        body,
        r#"<form method="get" action="/" class="search" role="search">
<label for="q">Query</label><input id="q" name="q" value="{q}" placeholder="words, from:, to:, subject:, has:attachment …">
<div class="fields">
<label>From <input name="from" value="{from}"></label>
<label>To <input name="to" value="{to}"></label>
<label>After <input name="after" type="date" value="{after}"></label>
<label>Before <input name="before" type="date" value="{before}"></label>
<label><input type="checkbox" name="attachment" value="on"{att}> Has attachment</label>
<label>Folder <select name="folder"><option value="">all</option><option value="sent"{sent}>sent</option><option value="received"{recv}>received</option></select></label>
<label>Sort <select name="sort"><option value="newest">newest</option><option value="oldest"{old}>oldest</option><option value="largest"{large}>largest</option><option value="smallest"{small}>smallest</option></select></label>
</div><button type="submit">Search</button></form>"#,
        q = esc(&f.q),
        from = esc(&f.from),
        to = esc(&f.to),
        after = esc(&f.after),
        before = esc(&f.before),
        att = if f.attachment == "on" { " checked" } else { "" },
        sent = selected(f.folder == "sent"),
        recv = selected(f.folder == "received"),
        old = selected(f.sort == "oldest"),
        large = selected(f.sort == "largest"),
        small = selected(f.sort == "smallest"),
    );
    let found = api::find_page(&app, &viewer, &query, f.offset, PAGE, order, true).await;
    let (hits, total, facets) = match found {
        Ok(x) => x,
        Err(ApiError::BadRequest(m)) => {
            let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, esc(&m));
            return layout("Search", Some(&viewer), &body).into_response();
        }
        Err(e) => return page_error(e),
    };
    let _ = write!(
        body,
        r#"<p class="count">{count} message(s){shown}</p>"#,
        count = if total.exact {
            total.n.to_string()
        } else {
            format!("More than {}", total.n)
        },
        shown = if query.is_empty() {
            String::new()
        } else {
            format!(" for <code>{}</code>", esc(&query))
        }
    );
    if let Some(facets) = facets.filter(|_| total.n > 0) {
        body.push_str(&facets_html(&f, &facets, total));
    }
    if total.n > 0 {
        // `total.n` is a lower bound when not exact: the export itself
        // refuses a search that finds more than the limit.
        if total.n <= app.settings.max_export {
            let _ = write!(
                body,
                r#"<p class="export"><a href="/api/export?q={}" download>Export these results (.zip with a manifest)</a></p>"#,
                esc(&url_value(&query))
            );
        } else {
            let _ = write!(
                body,
                r#"<p class="export note">Narrow the search to at most {} messages to export it.</p>"#,
                app.settings.max_export
            );
        }
    }
    body.push_str(
        r#"<table class="results"><thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th><th>Size</th></tr></thead><tbody>"#,
    );
    let words = api::words_of(&query);
    let snippets = match api::snippets(&app, &words, &hits).await {
        Ok(s) => s,
        Err(e) => return page_error(e),
    };
    for (h, snip) in hits.iter().zip(snippets) {
        let s = api::summary(viewer.identity(), h);
        let recipients: Vec<String> = s["recipients"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let subject = if h.subject.is_empty() {
            "(no subject)".to_string()
        } else {
            h.subject.clone()
        };
        let _ = write!(
            body,
            r#"<tr><td class="when">{received}</td><td>{from}<div class="env">{sender}</div></td><td>{to}</td><td><a href="/messages/{id}">{subject}</a>{clip}{snip}</td><td class="size">{size}</td></tr>"#,
            received = esc(&shown_time(h.record.received)),
            from = esc(&h.from),
            sender = esc(&format!(
                "envelope: <{}>",
                s["sender"].as_str().unwrap_or("")
            )),
            to = esc(&recipients.join(", ")),
            id = h.record.id,
            subject = snippet::html(&snippet::mark(&subject, &words)),
            snip = snip
                .map(|s| format!(r#"<div class="snippet">{}</div>"#, snippet::html(&s)))
                .unwrap_or_default(),
            clip = if s["attachments"].as_u64().unwrap_or(0) > 0 {
                r#" <span class="clip">(attachment)</span>"#
            } else {
                ""
            },
            size = human_size(h.record.size),
        );
    }
    body.push_str("</tbody></table>");
    let mut pager = String::new();
    if f.offset > 0 {
        let _ = write!(
            pager,
            r#"<a rel="prev" href="{}">← newer</a> "#,
            esc(&f.link(f.offset.saturating_sub(PAGE)))
        );
    }
    if f.offset.saturating_add(PAGE) < total.n || (!total.exact && hits.len() as u64 == PAGE) {
        let _ = write!(
            pager,
            r#"<a rel="next" href="{}">older →</a>"#,
            esc(&f.link(f.offset.saturating_add(PAGE)))
        );
    }
    if !pager.is_empty() {
        let _ = write!(body, r#"<nav class="pager">{pager}</nav>"#);
    }
    layout("Search", Some(&viewer), &body).into_response()
}

/// The facets beside the results: each a link to the search narrowed to it.
fn facets_html(f: &SearchForm, facets: &Facets, total: api::Total) -> String {
    let mut out = String::from(r#"<nav class="facets" aria-label="Narrow the search">"#);
    let mut group = |title: &str, items: Vec<(String, u64, String)>| {
        if items.is_empty() {
            return;
        }
        let _ = write!(out, "<section><h2>{}</h2><ul>", esc(title));
        for (label, n, term) in items {
            let _ = write!(
                out,
                r#"<li><a href="{}">{}</a> <span class="n">{n}</span></li>"#,
                esc(&f.narrowed(&term)),
                esc(&label)
            );
        }
        out.push_str("</ul></section>");
    };
    group(
        "Year",
        facets
            .years
            .iter()
            .map(|(y, n)| (y.to_string(), *n, api::year_term(*y)))
            .collect(),
    );
    group(
        "Sender domain",
        facets
            .sender_domains
            .iter()
            .map(|(d, n)| {
                let label = if d == "<>" {
                    "<> (bounces)"
                } else {
                    d.as_str()
                };
                (label.to_string(), *n, api::domain_term(d))
            })
            .collect(),
    );
    group(
        "Attachment",
        [
            ("with", facets.with_attachment, "has:attachment"),
            ("without", facets.without_attachment, "-has:attachment"),
        ]
        .into_iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(l, n, t)| (l.to_string(), n, t.to_string()))
        .collect(),
    );
    if !total.exact {
        let _ = write!(
            out,
            r#"<p class="note">Counted in the first {} matches found.</p>"#,
            total.n
        );
    }
    out.push_str("</nav>");
    out
}

/// A capture time as the pages show it: `2026-12-02 18:50 UTC`.
fn shown_time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

pub(crate) fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `GET /messages/{id}`.
pub async fn message(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<BodyParams>,
) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let remote = if params.remote.as_deref() == Some("1") {
        "?remote=1"
    } else {
        ""
    };
    let hit = match api::find(&app, &viewer, &id, "show", json!({})).await {
        Ok(h) => h,
        Err(e) => return page_error(e),
    };
    let raw = match api::raw_for_view(&app, &hit).await {
        Ok(r) => r,
        Err(e) => return page_error(e),
    };
    let me = viewer.identity();
    let show_bcc = me.sees_all() || me.sent(&hit.record);
    let parsed = raw.as_deref().map(|r| view::view(r, show_bcc));
    let thread = match api::conversation(&app, &viewer, &hit).await {
        Ok(t) => t,
        Err(e) => return page_error(e),
    };
    let m = api::message_json(me, &hit, parsed.as_ref(), thread.as_ref());
    let r = &hit.record;
    let mut body = String::new();
    let subject = if hit.subject.is_empty() {
        "(no subject)"
    } else {
        &hit.subject
    };
    let _ = write!(body, "<h1>{}</h1>", esc(subject));
    let named = format!(", {}, {}, ", hit.to, hit.cc).to_lowercase();
    let recipients: Vec<String> = m["recipients"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .map(|x| {
                    let low = x.to_lowercase();
                    let bcc = !named.contains(&format!("<{low}>"))
                        && !named.contains(&format!(", {low}, "));
                    if bcc {
                        format!("{} <span class=\"bcc\">(Bcc)</span>", esc(x))
                    } else {
                        esc(x)
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = write!(
        body,
        r#"<section class="envelope" aria-label="Envelope"><h2>Envelope: who really sent it, to whom</h2><dl>
<dt>Envelope sender</dt><dd>{sender}</dd>
<dt>Authenticated as (SASL login)</dt><dd>{login}</dd>
<dt>Envelope recipients</dt><dd class="recipients">{recipients}</dd>
<dt>Received</dt><dd>{received} via {capture}</dd>
<dt>Client</dt><dd>{client}</dd>
<dt>Queue id</dt><dd>{queue}</dd>
<dt>Size</dt><dd>{size}</dd></dl></section>"#,
        sender = esc(&format!("<{}>", r.sender.clone().unwrap_or_default())),
        login = esc(r.login.as_deref().unwrap_or("(none)")),
        recipients = recipients.join(", "),
        received = esc(&shown_time(r.received)),
        capture = esc(&r.capture),
        client = esc(&format!(
            "{} {}",
            r.client_address.as_deref().unwrap_or(""),
            r.client_hostname.as_deref().unwrap_or("")
        )),
        queue = esc(r.queue_id.as_deref().unwrap_or("")),
        size = human_size(r.size),
    );
    let _ = write!(
        body,
        r#"<p class="actions"><a href="/api/messages/{id}/raw" download>Download the original (.eml)</a>"#,
        id = r.id
    );
    if let Some((query, n)) = thread.as_ref().filter(|(_, n)| *n > 1) {
        let more = if *n >= api::CONVERSATION_COUNT {
            "+"
        } else {
            ""
        };
        let _ = write!(
            body,
            r#" · <a class="conversation" href="/?q={q}&amp;sort=oldest">Conversation: {n}{more} messages</a>"#,
            q = esc(&url_value(query)),
        );
    }
    body.push_str("</p>");
    match &parsed {
        None => {
            let _ = write!(
                body,
                r#"<p class="note">This message is larger than the view's limit ({}); only the envelope and the indexed fields are shown. Download the original to read it.</p>"#,
                human_size(app.settings.max_view_bytes)
            );
        }
        Some(p) => {
            body.push_str(r#"<details class="headers"><summary>Header fields</summary><dl>"#);
            for h in &p.headers {
                let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", esc(&h.name), esc(&h.value));
            }
            body.push_str("</dl></details>");
            if !p.attachments.is_empty() {
                body.push_str(r#"<section class="attachments"><h2>Attachments</h2><ul>"#);
                for a in &p.attachments {
                    let _ = write!(
                        body,
                        r#"<li><a href="/api/messages/{id}/attachments/{index}" download>{name}</a> <span class="meta">{ctype}, {size}</span></li>"#,
                        id = r.id,
                        index = a.index,
                        name = esc(&a.name),
                        ctype = esc(&a.content_type),
                        size = human_size(a.size as u64),
                    );
                }
                body.push_str("</ul></section>");
            }
            if p.has_html {
                let _ = write!(
                    body,
                    r#"<section class="html"><h2>HTML part</h2><p class="note">Shown sanitised, in a sandbox; remote images are blocked. <a href="/messages/{id}?remote=1#html">Load remote images</a></p>
<iframe id="html" title="HTML part" sandbox="allow-popups allow-popups-to-escape-sandbox" referrerpolicy="no-referrer" src="/messages/{id}/body.html{remote}"></iframe></section>"#,
                    id = r.id,
                );
            }
            if let Some(text) = &p.text {
                let _ = write!(
                    body,
                    r#"<section class="text"><h2>Text</h2><pre dir="auto">{}</pre></section>"#,
                    esc(text)
                );
            }
        }
    }
    layout(subject, Some(&viewer), &body).into_response()
}

/// The parameters of the HTML part.
#[derive(Debug, Deserialize, Default)]
pub struct BodyParams {
    #[serde(default)]
    remote: Option<String>,
}

/// `GET /messages/{id}/body.html[?remote=1]`: the HTML part, sanitised,
/// under a policy that lets nothing run or load (remote images only when
/// asked), to be shown in the message page's sandboxed frame.
pub async fn body_html(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Path(id): Path<String>,
    UrlQuery(p): UrlQuery<BodyParams>,
) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let remote = p.remote.as_deref() == Some("1");
    let hit = match api::find(
        &app,
        &viewer,
        &id,
        "show",
        json!({"part": "html", "remote": remote}),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => return page_error(e),
    };
    let raw = match api::raw_for_view(&app, &hit).await {
        Ok(Some(r)) => r,
        Ok(None) => return page_error(ApiError::NotFound),
        Err(e) => return page_error(e),
    };
    let Some(doc) = view::html(&raw, remote) else {
        return page_error(ApiError::NotFound);
    };
    let img = if remote {
        "img-src http: https:"
    } else {
        "img-src 'none'"
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; {img}; font-src 'none'; form-action 'none'; \
         base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
    );
    let mut r = Html(doc).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    r
}

/// `GET /audit`: the newest entries of the audit log.
pub async fn audit(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    UrlQuery(p): UrlQuery<AuditParams>,
) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let entries = match api::audit_entries(&app, &viewer, &p).await {
        Ok(e) => e,
        Err(e) => return page_error(e),
    };
    let mut body = String::from(
        r#"<h1>Audit log</h1><div class="scroll"><table class="audit"><thead><tr><th>#</th><th>Time</th><th>User</th><th>Via</th><th>From</th><th>Action</th><th>Detail</th></tr></thead><tbody>"#,
    );
    for e in entries {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            e.seq,
            esc(&e.time),
            esc(&e.user),
            esc(&e.via),
            esc(&e.from),
            esc(&e.action),
            esc(&serde_json::to_string(&e.detail).unwrap_or_default()),
        );
    }
    body.push_str("</tbody></table></div>");
    layout("Audit log", Some(&viewer), &body).into_response()
}
