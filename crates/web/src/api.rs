//! The JSON API under `/api/`, described by `openapi.json` (served at
//! `/api/openapi.json`, checked against [`crate::routes`] by a test).
//!
//! Log in with `POST /api/session` `{"user": U, "password": P}`: the answer
//! sets the session cookie and gives the CSRF token, which `DELETE` (and any
//! other state-changing call) must send as `X-CSRF-Token`. Every read is
//! limited to the reader's own mail ([`crate::identity`]) and recorded in
//! the audit log before it is answered.

use crate::snippet::{self, Segment};
use crate::{blocking, log_in, view, ApiError, App, Client, Identity, Viewer};
use axum::body::Body;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailkeep_query::{Expr, Query, Term};
use mailkeep_store::catalog::{Facets, Hit, Order, Page};
use mailkeep_store::export::{ExportError, ZipExport};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

type Shared = Arc<App>;

/// The most results one page may ask for.
pub const MAX_PAGE: u64 = 200;

/// The furthest a page may start: past it, counting the matches up to the
/// page would cost a full pass per request.
pub const MAX_OFFSET: u64 = 100_000;

/// The API's description, as served.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// The body of `POST /api/session`.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    /// The login name.
    pub user: String,
    /// The password.
    pub password: String,
}

fn session_json(identity: &Identity, csrf: &str) -> Value {
    json!({
        "user": identity.name,
        "role": identity.role.to_string(),
        "addresses": identity.addresses,
        "csrf": csrf,
    })
}

/// `POST /api/session`: 200 with the session cookie, 401, or 429.
pub async fn login(
    State(app): State<Shared>,
    Client(client): Client,
    Json(c): Json<Credentials>,
) -> Result<Response, ApiError> {
    let (id, session) = log_in(&app, client, c.user, c.password).await?;
    let mut r = Json(session_json(&session.identity, &session.csrf)).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, crate::cookie(&app, Some(&id)));
    Ok(r)
}

/// `GET /api/session`.
pub async fn whoami(viewer: Viewer) -> Json<Value> {
    Json(session_json(viewer.identity(), &viewer.session.csrf))
}

/// `DELETE /api/session` (with `X-CSRF-Token`).
pub async fn logout(State(app): State<Shared>, viewer: Viewer) -> Result<Response, ApiError> {
    app.sessions.close(&viewer.id);
    app.record_viewer(&viewer, "logout", json!({})).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, crate::cookie(&app, None));
    Ok(r)
}

/// The parameters of `GET /api/search`.
#[derive(Debug, Deserialize, Default)]
pub struct SearchParams {
    /// The query, in mailkeep's query language (docs/search.md).
    #[serde(default)]
    pub q: String,
    /// Results to skip.
    #[serde(default)]
    pub offset: u64,
    /// Results per page (at most [`MAX_PAGE`]; default 50).
    pub limit: Option<u64>,
    /// `newest` (default), `oldest`, `largest`, `smallest`.
    pub sort: Option<String>,
    /// Whether to give the facets of the matches (`true`).
    #[serde(default)]
    pub facets: bool,
    /// Whether to give each result a snippet of its text around the words
    /// searched for (`true`).
    #[serde(default)]
    pub snippets: bool,
}

/// The order a `sort` parameter names.
pub fn order(sort: Option<&str>) -> Result<Order, ApiError> {
    Ok(match sort.unwrap_or("newest") {
        "newest" | "" => Order::NewestFirst,
        "oldest" => Order::OldestFirst,
        "largest" => Order::LargestFirst,
        "smallest" => Order::SmallestFirst,
        other => {
            return Err(ApiError::BadRequest(format!(
                "sort={other:?}: expected newest, oldest, largest or smallest"
            )))
        }
    })
}

/// RFC 3339 of a capture time (microseconds since the epoch).
pub fn received_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A search result as the API gives it, with the recipients this reader
/// may see.
pub fn summary(identity: &Identity, hit: &Hit) -> Value {
    let r = &hit.record;
    json!({
        "id": r.id,
        "subject": hit.subject,
        "from": hit.from,
        "sender": r.sender.clone().unwrap_or_default(),
        "recipients": identity.visible_recipients(r, &hit.to, &hit.cc),
        "login": r.login,
        "received": received_text(r.received),
        "date": hit.date.and_then(|d| chrono::DateTime::from_timestamp(d, 0))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "size": r.size,
        "attachments": serde_json::from_str::<Vec<Value>>(&hit.attachments).map(|v| v.len()).unwrap_or(0),
        "capture": r.capture,
    })
}

/// Matches counted beyond the page asked for: past that, a search says
/// "more than" (see [`Page::count_up_to`]).
pub const COUNTED: u64 = 1000;

/// How many a search found: `n` exactly, or more than `n`.
#[derive(Debug, Clone, Copy)]
pub struct Total {
    pub n: u64,
    pub exact: bool,
}

/// One page of what `q` finds among the reader's own mail, and the total.
pub async fn find_page(
    app: &Shared,
    viewer: &Viewer,
    q: &str,
    offset: u64,
    limit: u64,
    order: Order,
    facets: bool,
) -> Result<(Vec<Hit>, Total, Option<Facets>), ApiError> {
    if offset > MAX_OFFSET {
        return Err(ApiError::BadRequest(format!(
            "offset: at most {MAX_OFFSET}; narrow the search"
        )));
    }
    let query = mailkeep_query::parse(q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let query = viewer.identity().restrict(query);
    let a = app.clone();
    let page = Page {
        offset,
        limit: limit.clamp(1, MAX_PAGE),
        order,
        count_up_to: offset
            .saturating_add(limit.clamp(1, MAX_PAGE))
            .max(COUNTED)
            .saturating_add(1),
        facets,
    };
    let up_to = page.count_up_to;
    let found = blocking(move || Ok(a.store().search_page(&query, page)?)).await?;
    let (hits, counted) = (found.hits, found.total);
    let total = Total {
        n: counted.min(up_to - 1),
        exact: counted < up_to,
    };
    let ids: Vec<i64> = hits.iter().map(|h| h.record.id).collect();
    app.record_viewer(
        viewer,
        "search",
        json!({
            "query": q,
            "results": total.n,
            "results_exact": total.exact,
            "offset": offset,
            "ids": mailkeep_lifecycle::audit::id_ranges(&ids),
        }),
    )
    .await?;
    Ok((hits, total, found.facets))
}

/// Bytes of each message read for its snippet: the text part is nearly
/// always at the start, and a result list must not read whole messages.
pub const SNIPPET_READ_BYTES: usize = 16 * 1024;

/// Characters in a snippet, about.
pub const SNIPPET_WIDTH: usize = 200;

/// The words of `q` a snippet marks ([`snippet::words`]); none when it
/// does not parse.
pub fn words_of(q: &str) -> Vec<String> {
    mailkeep_query::parse(q)
        .map(|query| snippet::words(&query))
        .unwrap_or_default()
}

/// A snippet of each hit's body around `words` (see [`crate::snippet`]),
/// read in one go; `None` for a hit without one.
pub async fn snippets(
    app: &Shared,
    words: &[String],
    hits: &[Hit],
) -> Result<Vec<Option<Vec<Segment>>>, ApiError> {
    if words.is_empty() {
        return Ok(vec![None; hits.len()]);
    }
    let wanted: Vec<String> = hits.iter().map(|h| h.record.content.clone()).collect();
    let words = words.to_vec();
    let a = app.clone();
    blocking(move || {
        let store = a.store();
        let mut out = Vec::with_capacity(wanted.len());
        for content in wanted {
            // A message that cannot be read shows no snippet; opening it
            // reports the damage.
            let text = store
                .raw_prefix(&content, SNIPPET_READ_BYTES)
                .ok()
                .and_then(|raw| view::body_text(&raw));
            out.push(text.and_then(|t| snippet::snippet(&t, &words, SNIPPET_WIDTH)));
        }
        Ok(out)
    })
    .await
}

/// Facets as the API gives them, each with the query term that narrows a
/// search to it.
pub fn facets_json(f: &Facets, total: Total) -> Value {
    json!({
        "exact": total.exact,
        "years": f.years.iter().map(|(y, n)| json!({
            "year": y, "count": n, "q": year_term(*y),
        })).collect::<Vec<_>>(),
        "sender_domains": f.sender_domains.iter().map(|(d, n)| json!({
            "domain": d, "count": n, "q": domain_term(d),
        })).collect::<Vec<_>>(),
        "attachment": [
            {"value": true, "count": f.with_attachment, "q": "has:attachment"},
            {"value": false, "count": f.without_attachment, "q": "-has:attachment"},
        ],
    })
}

/// The term for "captured in `year`" (UTC).
pub fn year_term(year: i32) -> String {
    format!("after:{year:04}-01-01 before:{:04}-01-01", year + 1)
}

/// The term for "the envelope sender's domain is `domain`" (`<>`: the null
/// sender).
pub fn domain_term(domain: &str) -> String {
    let value = if domain == "<>" {
        domain.to_string()
    } else {
        format!("@{domain}")
    };
    Expr::Term(Term::Address {
        field: mailkeep_query::AddressField::Sender,
        value,
    })
    .to_string()
}

/// `GET /api/search?q=QUERY[&offset=N&limit=N&sort=S]`.
pub async fn search(
    State(app): State<Shared>,
    viewer: Viewer,
    UrlQuery(p): UrlQuery<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    let order = order(p.sort.as_deref())?;
    let limit = p.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let (hits, total, facets) =
        find_page(&app, &viewer, &p.q, p.offset, limit, order, p.facets).await?;
    let mut results: Vec<Value> = hits.iter().map(|h| summary(viewer.identity(), h)).collect();
    if p.snippets {
        for (r, s) in results
            .iter_mut()
            .zip(snippets(&app, &words_of(&p.q), &hits).await?)
        {
            r["snippet"] = json!(s);
        }
    }
    let mut answer = json!({
        "query": p.q,
        "total": total.n,
        "total_exact": total.exact,
        "offset": p.offset,
        "limit": limit,
        "results": results,
    });
    if let Some(f) = facets {
        answer["facets"] = facets_json(&f, total);
    }
    Ok(Json(answer))
}

/// The parameters of `GET /api/export`.
#[derive(Debug, Deserialize, Default)]
pub struct ExportParams {
    /// The query, as for a search.
    #[serde(default)]
    pub q: String,
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        match e {
            ExportError::Damaged { id, source } => ApiError::Internal(format!(
                "export: delivery {id} cannot be read ({source}); run `mailkeep verify`"
            )),
            ExportError::Store(e) => e.into(),
            e => ApiError::Internal(format!("export: {e}")),
        }
    }
}

/// `GET /api/export?q=QUERY`: what `q` finds among the reader's own mail,
/// oldest first, as the zip `mailkeep export --format zip` writes: the
/// original messages and `manifest.json` (each message's digests and its
/// envelope as this reader may see it, and the chain head). At most
/// `[web] max_export` messages; more is refused before anything is read.
/// The zip is written to an unnamed temporary file, then sent.
pub async fn export(
    State(app): State<Shared>,
    viewer: Viewer,
    UrlQuery(p): UrlQuery<ExportParams>,
) -> Result<Response, ApiError> {
    let query = mailkeep_query::parse(&p.q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let query = viewer.identity().restrict(query);
    let max = app.settings.max_export;
    let a = app.clone();
    let mut hits = blocking(move || {
        let limit = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
        Ok(a.store().search(&query, Some(limit))?)
    })
    .await?;
    let refused = hits.len() as u64 > max;
    hits.reverse();
    let ids: Vec<i64> = hits.iter().map(|h| h.record.id).collect();
    app.record_viewer(
        &viewer,
        "export",
        json!({
            "query": p.q,
            "format": "zip",
            "results": if refused { json!(format!("more than {max}")) } else { json!(hits.len()) },
            "refused": refused,
            "ids": if refused { String::new() } else { mailkeep_lifecycle::audit::id_ranges(&ids) },
        }),
    )
    .await?;
    if refused {
        return Err(ApiError::BadRequest(format!(
            "more than {max} messages match; narrow the search (the limit is [web] max_export)"
        )));
    }
    let identity = viewer.identity().clone();
    let a = app.clone();
    let q = p.q.clone();
    let (file, len) = blocking(move || {
        let store = a.store();
        let tmp = tempfile::tempfile()
            .map_err(|e| ApiError::Internal(format!("export: a temporary file: {e}")))?;
        let mut zip = ZipExport::new(tmp);
        for hit in &hits {
            let envelope = identity.visible_record(&hit.record, &hit.to, &hit.cc);
            zip.add(store, hit, json!(envelope))?;
        }
        let mut file = zip.finish(store, &q)?;
        let len = file
            .seek(SeekFrom::End(0))
            .and_then(|n| file.rewind().map(|_| n))
            .map_err(|e| ApiError::Internal(format!("export: {e}")))?;
        Ok((file, len))
    })
    .await?;
    let (reader, writer) = tokio::io::duplex(64 * 1024);
    tokio::task::spawn_blocking(move || {
        let mut w = tokio_util::io::SyncIoBridge::new(writer);
        let mut file = file;
        if let Err(e) = std::io::copy(&mut file, &mut w) {
            // The body stops short; the client sees a cut transfer.
            tracing::error!("web: sending an export failed: {e}");
        }
    });
    let mut r = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(reader)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"mailkeep-export.zip\""),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(r)
}

/// The delivery `id` if it is the reader's, else [`ApiError::NotFound`]:
/// the same answer whether it does not exist or is someone else's. The
/// access is recorded as `action` either way.
pub async fn find(
    app: &Shared,
    viewer: &Viewer,
    id: &str,
    action: &'static str,
    extra: Value,
) -> Result<Hit, ApiError> {
    let number: Option<i64> = id.parse().ok().filter(|n| *n > 0);
    let found = match number {
        None => None,
        Some(n) => {
            let query = viewer.identity().restrict(Query {
                expr: Some(Expr::Term(Term::Id(n.to_string()))),
            });
            let a = app.clone();
            blocking(move || Ok(a.store().search(&query, Some(1))?.pop())).await?
        }
    };
    let mut detail = json!({"id": id, "found": found.is_some()});
    if let (Value::Object(d), Value::Object(e)) = (&mut detail, extra) {
        d.extend(e);
    }
    app.record_viewer(viewer, action, detail).await?;
    found.ok_or(ApiError::NotFound)
}

/// The most messages of a conversation counted for its link.
pub const CONVERSATION_COUNT: u64 = 1000;

/// The conversation of a hit, as far as this reader sees it: the search
/// that lists it (`thread:<Message-ID>`) and how many of the reader's
/// deliveries it holds (at most [`CONVERSATION_COUNT`]; the hit's own
/// among them). `None` when the message has no Message-ID to start from.
pub async fn conversation(
    app: &Shared,
    viewer: &Viewer,
    hit: &Hit,
) -> Result<Option<(String, u64)>, ApiError> {
    let Some(id) = hit.message_id.clone() else {
        return Ok(None);
    };
    let term = Term::Thread(id);
    let text = term.to_string();
    let query = viewer.identity().restrict(Query {
        expr: Some(Expr::Term(term)),
    });
    // No page, the count only (a page would walk the time window first).
    let page = Page {
        offset: 0,
        limit: 0,
        order: Order::NewestFirst,
        count_up_to: CONVERSATION_COUNT,
        facets: false,
    };
    let a = app.clone();
    let found = blocking(move || Ok(a.store().search_page(&query, page)?)).await?;
    Ok(Some((text, found.total)))
}

/// The original bytes of a hit, when not larger than the view's limit.
pub async fn raw_for_view(app: &Shared, hit: &Hit) -> Result<Option<Vec<u8>>, ApiError> {
    if hit.record.size > app.settings.max_view_bytes {
        return Ok(None);
    }
    let a = app.clone();
    let content = hit.record.content.clone();
    Ok(Some(
        blocking(move || Ok(a.store().raw_by_hash(&content)?)).await?,
    ))
}

/// A message's envelope, header fields and parts, for this reader, and
/// its conversation (see [`conversation`]).
pub fn message_json(
    identity: &Identity,
    hit: &Hit,
    parsed: Option<&view::View>,
    conversation: Option<&(String, u64)>,
) -> Value {
    let r = &hit.record;
    let mut v = summary(identity, hit);
    let extra = json!({
        "message_id": hit.message_id,
        "to": hit.to,
        "cc": hit.cc,
        "queue_id": r.queue_id,
        "client": {
            "address": r.client_address,
            "hostname": r.client_hostname,
            "helo": r.client_helo,
        },
        "tls": r.tls,
        "tags": r.tags,
        "truncated": parsed.is_none(),
        "headers": parsed.map(|p| p.headers.clone()).unwrap_or_default(),
        "text": parsed.and_then(|p| p.text.clone()),
        "has_html": parsed.map(|p| p.has_html).unwrap_or(false),
        "attachments": parsed.map(|p| serde_json::to_value(&p.attachments).unwrap_or_default())
            .unwrap_or_else(|| serde_json::from_str(&hit.attachments).unwrap_or_default()),
        "conversation": conversation.map(|(q, n)| json!({"query": q, "messages": n})),
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

/// `GET /api/messages/{id}`.
pub async fn message(
    State(app): State<Shared>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let hit = find(&app, &viewer, &id, "show", json!({})).await?;
    let raw = raw_for_view(&app, &hit).await?;
    let show_bcc = viewer.identity().sees_all() || viewer.identity().sent(&hit.record);
    let parsed = raw.as_deref().map(|r| view::view(r, show_bcc));
    let thread = conversation(&app, &viewer, &hit).await?;
    Ok(Json(message_json(
        viewer.identity(),
        &hit,
        parsed.as_ref(),
        thread.as_ref(),
    )))
}

/// `GET /api/messages/{id}/raw`: the original bytes, streamed.
pub async fn raw(
    State(app): State<Shared>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hit = find(&app, &viewer, &id, "raw", json!({})).await?;
    let (reader, writer) = tokio::io::duplex(64 * 1024);
    let a = app.clone();
    let content = hit.record.content.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = tokio_util::io::SyncIoBridge::new(writer);
        if let Err(e) = a.store().write_raw(&content, &mut w) {
            // The body stops short; the client sees a cut transfer.
            tracing::error!("web: raw download of {content} failed: {e}");
        }
    });
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/rfc822"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(hit.record.size));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!(
            "attachment; filename=\"mailkeep-{}.eml\"",
            hit.record.id
        ))
        .expect("ASCII"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(r)
}

/// `GET /api/messages/{id}/attachments/{index}`: served as
/// `application/octet-stream` under a safe file name, whatever the message
/// claims it is.
pub async fn attachment(
    State(app): State<Shared>,
    viewer: Viewer,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let hit = find(&app, &viewer, &id, "attachment", json!({"index": index})).await?;
    let index: usize = index.parse().map_err(|_| ApiError::NotFound)?;
    let raw = raw_for_view(&app, &hit).await?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the message is larger than the view's limit ({} bytes): download the original",
            app.settings.max_view_bytes
        ))
    })?;
    let (info, bytes) = blocking(move || Ok(view::attachment(&raw, index)))
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&view::content_disposition(&info.name))
            .map_err(|e| ApiError::Internal(format!("disposition: {e}")))?,
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(r)
}

/// The parameters of `GET /api/audit`.
#[derive(Debug, Deserialize, Default)]
pub struct AuditParams {
    /// Entries at most (default 100, at most 1,000), newest first.
    pub limit: Option<usize>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this user.
    pub user: Option<String>,
}

/// The newest audit entries matching `p`, for an auditor or admin (for
/// anyone else [`ApiError::NotFound`]); the reading is itself recorded.
pub async fn audit_entries(
    app: &Shared,
    viewer: &Viewer,
    p: &AuditParams,
) -> Result<Vec<mailkeep_lifecycle::Entry>, ApiError> {
    if !viewer.identity().sees_all() {
        return Err(ApiError::NotFound);
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    app.record_viewer(
        viewer,
        "audit",
        json!({"limit": limit, "action": p.action, "user": p.user}),
    )
    .await?;
    let a = app.clone();
    let (action, user) = (p.action.clone(), p.user.clone());
    blocking(move || {
        let mut entries = a
            .audit
            .entries(|e| {
                action.as_deref().is_none_or(|x| e.action == x)
                    && user.as_deref().is_none_or(|x| e.user == x)
            })
            .map_err(|e| ApiError::Unavailable(format!("the audit log cannot be read: {e}")))?;
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    })
    .await
}

/// `GET /api/audit[?limit=N&action=A&user=U]`.
pub async fn audit(
    State(app): State<Shared>,
    viewer: Viewer,
    UrlQuery(p): UrlQuery<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let entries = audit_entries(&app, &viewer, &p).await?;
    Ok(Json(json!({ "entries": entries })))
}

/// A token as its owner sees it (never its secret).
fn token_json(t: &crate::tokens::Token) -> Value {
    let time = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    json!({"id": t.id, "label": t.label, "created": time(t.created), "expires": time(t.expires)})
}

/// Done from a logged-in session only, never with an API token: tokens
/// (a token does not beget tokens), holds and accounts (a stolen token
/// cannot give itself a password, an account or a longer life).
pub fn session_only(viewer: &Viewer) -> Result<(), ApiError> {
    match viewer.token {
        None => Ok(()),
        Some(_) => Err(ApiError::BadRequest(
            "this is done from a logged-in session, not with an API token".into(),
        )),
    }
}

fn tokens_unavailable(e: std::io::Error) -> ApiError {
    tracing::error!("web: API tokens: {e}");
    ApiError::Unavailable("the API tokens cannot be read or written".into())
}

/// `GET /api/tokens`: the reader's unexpired tokens.
pub async fn tokens(State(app): State<Shared>, viewer: Viewer) -> Result<Json<Value>, ApiError> {
    session_only(&viewer)?;
    app.record_viewer(&viewer, "tokens", json!({"list": true}))
        .await?;
    let a = app.clone();
    let who = viewer.identity().clone();
    let list = blocking(move || a.tokens.of(&who).map_err(tokens_unavailable)).await?;
    Ok(Json(
        json!({"tokens": list.iter().map(token_json).collect::<Vec<_>>()}),
    ))
}

/// The body of `POST /api/tokens`.
#[derive(Debug, Deserialize, Default)]
pub struct NewToken {
    /// What it is for.
    #[serde(default)]
    pub label: String,
    /// Days it works (1 to 365; default 30).
    pub days: Option<u32>,
}

/// `POST /api/tokens`: a new token for the reader, its secret shown once.
pub async fn token_create(
    State(app): State<Shared>,
    viewer: Viewer,
    Json(t): Json<NewToken>,
) -> Result<Json<Value>, ApiError> {
    session_only(&viewer)?;
    if t.label.len() > 200 || t.label.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a label is at most 200 characters, without control characters".into(),
        ));
    }
    let days = t.days.unwrap_or(30);
    if !(1..=crate::tokens::MAX_DAYS).contains(&days) {
        return Err(ApiError::BadRequest(format!(
            "days: 1 to {}",
            crate::tokens::MAX_DAYS
        )));
    }
    let a = app.clone();
    let identity = viewer.identity().clone();
    let label = t.label.clone();
    let (token, secret) = blocking(move || {
        let account = a
            .settings
            .auth
            .account_key(&identity)
            .map_err(ApiError::Unavailable)?;
        a.tokens
            .create(&identity, &account, &label, days)
            .map_err(|e| match e {
                crate::tokens::TokenError::TooMany => ApiError::BadRequest(e.to_string()),
                crate::tokens::TokenError::Io(e) => tokens_unavailable(e),
            })
    })
    .await?;
    // Recorded before the secret is given out; a token that cannot be
    // recorded is revoked again.
    if let Err(e) = app
        .record_viewer(
            &viewer,
            "token_add",
            json!({"id": token.id, "label": token.label, "expires": token_json(&token)["expires"]}),
        )
        .await
    {
        let a = app.clone();
        let who = viewer.identity().clone();
        let id = token.id.clone();
        let undone = blocking(move || Ok(a.tokens.revoke(&who, &id))).await;
        if !matches!(undone, Ok(Ok(true))) {
            tracing::error!(id = %token.id, "web: an unrecorded API token could not be revoked");
        }
        return Err(e);
    }
    let mut v = token_json(&token);
    v["token"] = json!(secret);
    Ok(Json(v))
}

/// `DELETE /api/tokens/{token}`: revokes one of the reader's tokens (the
/// same 404 for someone else's as for none). Recorded before it is done.
pub async fn token_revoke(
    State(app): State<Shared>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    session_only(&viewer)?;
    app.record_viewer(&viewer, "token_revoke", json!({"id": id}))
        .await?;
    let a = app.clone();
    let who = viewer.identity().clone();
    let revoked = blocking(move || a.tokens.revoke(&who, &id).map_err(tokens_unavailable)).await?;
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
