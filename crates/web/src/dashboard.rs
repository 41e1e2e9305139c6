//! The dashboard, for auditors and admins: deliveries per day over the
//! last 30 days (a chart drawn as inline SVG, so the page still runs no
//! script), by capture path, what the store holds and costs on disk, and
//! what the running server reports (its capture listeners, the messages
//! it asked the MTA to retry or let through unarchived, the queue of
//! archive copies).

use crate::pages::{esc, human_size, layout, page_error};
use crate::{blocking, ApiError, App, Viewer};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;

type Shared = Arc<App>;

/// Days the chart covers, today included.
pub const DAYS: i64 = 30;

/// A capture front-end the server runs.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `milter`, `filter`, `web`.
    pub kind: String,
    /// Where it listens.
    pub address: String,
}

/// The queue of archive copies (`[forward]`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueState {
    /// Copies waiting.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// How long the oldest has waited, in seconds.
    pub oldest_seconds: Option<u64>,
    /// Copies older than the queue's `max_age`.
    pub stuck: u64,
    /// Why the queue could not be read, if it could not.
    pub error: Option<String>,
}

/// What the running server reports about itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerStatus {
    /// Its capture listeners.
    pub listeners: Vec<Listener>,
    /// Messages the MTA was asked to retry (4xx) since it started.
    pub tempfailed: u64,
    /// Messages let through without an archived copy since it started
    /// (a failure policy of `accept`).
    pub accepted_unarchived: u64,
    /// The queue of archive copies, when `[forward]` is configured.
    pub queue: Option<QueueState>,
    /// The retention in force (`Retention::describe`: the default, whether
    /// it is locked, the policies in order).
    pub retention: Option<Value>,
    /// How often `serve` expires what retention no longer keeps, in
    /// seconds; `None`: not scheduled here (`mailkeep expire` from cron).
    pub expire_every_seconds: Option<u64>,
}

/// Where the dashboard asks for the server's state (given by `serve`).
pub type StatusSource = Arc<dyn Fn() -> ServerStatus + Send + Sync>;

fn day_text(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The dashboard's figures, as the API gives them.
async fn figures(app: &Shared) -> Result<Value, ApiError> {
    let a = app.clone();
    let store_figures = blocking(move || {
        let store = a.store();
        let today = chrono::Utc::now().timestamp().div_euclid(86_400);
        let first = today - (DAYS - 1);
        let since = chrono::DateTime::from_timestamp(first * 86_400, 0).unwrap_or_default();
        let counts = store.per_day(since)?;
        let totals = store.totals()?;
        let dir = &store.config().path;
        let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        let catalog = size("catalog.sqlite") + size("catalog.sqlite-wal");
        let mut days = Vec::new();
        for day in first..=today {
            let of_day: Vec<_> = counts.iter().filter(|c| c.day == day).collect();
            let mut by = serde_json::Map::new();
            for c in &of_day {
                by.insert(c.capture.clone(), json!(c.deliveries));
            }
            days.push(json!({
                "day": day_text(day),
                "deliveries": of_day.iter().map(|c| c.deliveries).sum::<u64>(),
                "by_capture": by,
            }));
        }
        let mut by_capture = std::collections::BTreeMap::<String, u64>::new();
        for c in &counts {
            *by_capture.entry(c.capture.clone()).or_default() += c.deliveries;
        }
        Ok(json!({
            "days": days,
            "by_capture": by_capture,
            "store": {
                "messages": totals.messages,
                "deliveries": totals.deliveries,
                "delivered_bytes": totals.delivered_bytes,
                "raw_bytes": totals.raw_bytes,
                "stored_bytes": totals.stored_bytes,
                "catalog_bytes": catalog,
                "segments": totals.segments,
                "unlinked_messages": totals.unlinked,
            },
        }))
    })
    .await?;
    let status = app.status.as_ref().map(|f| f());
    let mut v = store_figures;
    v["server"] = json!(status);
    Ok(v)
}

/// `GET /api/dashboard`.
pub async fn api(State(app): State<Shared>, viewer: Viewer) -> Result<Json<Value>, ApiError> {
    if !viewer.identity().sees_all() {
        return Err(ApiError::NotFound);
    }
    let v = figures(&app).await?;
    app.record_viewer(&viewer, "dashboard", json!({})).await?;
    Ok(Json(v))
}

/// The chart: one bar per day, its height the day's deliveries, each with
/// a title (shown on hover) and the figures in a table beside it.
fn chart(days: &[Value]) -> String {
    let counts: Vec<u64> = days
        .iter()
        .map(|d| d["deliveries"].as_u64().unwrap_or(0))
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    // Bars between `top` and `top + h`, labels above and below.
    let (w, h, bar, top) = (600u64, 160u64, 20u64, 18u64);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {}" role="img" aria-label="Deliveries per day, last {DAYS} days (the figures are in the table below)">"#,
        top + h + 20
    );
    for (i, (d, n)) in days.iter().zip(&counts).enumerate() {
        let height = if *n == 0 { 0 } else { (n * h / max).max(1) };
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="{}" height="{height}"><title>{}: {n}</title></rect>"#,
            i as u64 * bar + 1,
            top + h - height,
            bar - 2,
            esc(d["day"].as_str().unwrap_or("")),
        );
    }
    let _ = write!(
        svg,
        r#"<line x1="0" y1="{base}" x2="{w}" y2="{base}"></line><text x="0" y="{label}">{}</text><text x="{w}" y="{label}" text-anchor="end">{}</text><text x="0" y="12">most in a day: {max}</text></svg>"#,
        esc(days.first().and_then(|d| d["day"].as_str()).unwrap_or("")),
        esc(days.last().and_then(|d| d["day"].as_str()).unwrap_or("")),
        base = top + h,
        label = top + h + 16,
    );
    svg
}

/// The retention in force, as the configuration has it; `where_set`
/// adds where it is changed (the dashboard).
pub(crate) fn retention_html(r: &Value, every: &Value, where_set: bool) -> String {
    let mut out = String::from(if where_set {
        "<h2>Retention</h2>"
    } else {
        "<h2>In force now</h2>"
    });
    let _ = write!(
        out,
        r#"<p>Deliveries no policy matches are kept <strong>{}</strong>. {} {}</p>"#,
        esc(r["default"].as_str().unwrap_or("")),
        if r["locked"] == true {
            "The retention is <strong>locked</strong>: policies can only be lengthened, nothing expires early, erasure is refused."
        } else {
            "The retention is not locked."
        },
        match every.as_u64() {
            Some(s) => format!("This server expires what it no longer keeps every {s} s."),
            None => "This server does not expire on a schedule (run <code>mailkeep expire</code>)."
                .into(),
        },
    );
    let policies = r["policies"].as_array().cloned().unwrap_or_default();
    if !policies.is_empty() {
        out.push_str(r#"<div class="scroll"><table class="retention"><thead><tr><th>Policy</th><th>Matches</th><th>Keeps</th></tr></thead><tbody>"#);
        for p in &policies {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(p["name"].as_str().unwrap_or("")),
                esc(p["matches"].as_str().or(p["keys"].as_str()).unwrap_or("")),
                esc(p["keep"].as_str().unwrap_or("")),
            );
        }
        out.push_str("</tbody></table></div>");
    }
    if where_set {
        out.push_str(r#"<p class="note">Retention is the <code>[retention]</code> section of <code>mailkeep.toml</code>, which admins change on the <a href="/retention">Retention</a> page; legal holds (the Holds page) keep what they cover whatever it says.</p>"#);
    }
    out
}

/// `GET /dashboard`.
pub async fn page(State(app): State<Shared>, viewer: Result<Viewer, ApiError>) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    if !viewer.identity().sees_all() {
        return page_error(ApiError::NotFound);
    }
    let v = match figures(&app).await {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    if let Err(e) = app.record_viewer(&viewer, "dashboard", json!({})).await {
        return page_error(e);
    }
    let days = v["days"].as_array().cloned().unwrap_or_default();
    let mut body = String::from("<h1>Dashboard</h1>");
    let _ = write!(
        body,
        "<section><h2>Deliveries per day, last {DAYS} days (UTC)</h2>{}",
        chart(&days)
    );
    let captures: Vec<String> = v["by_capture"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    body.push_str(r#"<details><summary>The figures</summary><div class="scroll"><table class="days"><thead><tr><th>Day</th><th>Deliveries</th>"#);
    for c in &captures {
        let _ = write!(body, "<th>{}</th>", esc(c));
    }
    body.push_str("</tr></thead><tbody>");
    for d in days.iter().rev() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td>",
            esc(d["day"].as_str().unwrap_or("")),
            d["deliveries"]
        );
        for c in &captures {
            let _ = write!(
                body,
                "<td>{}</td>",
                d["by_capture"][c].as_u64().unwrap_or(0)
            );
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table></div></details></section>");
    body.push_str("<section><h2>Capture paths, last 30 days</h2><dl class=\"figures\">");
    if captures.is_empty() {
        body.push_str("<dt>none</dt><dd>nothing captured</dd>");
    }
    for c in &captures {
        let _ = write!(
            body,
            "<dt>{}</dt><dd>{}</dd>",
            esc(c),
            v["by_capture"][c].as_u64().unwrap_or(0)
        );
    }
    body.push_str("</dl></section>");
    let s = &v["store"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let _ = write!(
        body,
        r#"<section><h2>The store</h2><dl class="figures"><dt>Deliveries</dt><dd>{}</dd><dt>Messages (distinct)</dt><dd>{}</dd><dt>Delivered</dt><dd>{}</dd><dt>Stored (compressed, deduplicated)</dt><dd>{}</dd><dt>Catalog and index</dt><dd>{}</dd><dt>Segments</dt><dd>{}</dd></dl>"#,
        n("deliveries"),
        n("messages"),
        human_size(n("delivered_bytes")),
        human_size(n("stored_bytes")),
        human_size(n("catalog_bytes")),
        n("segments"),
    );
    if n("unlinked_messages") > 0 {
        let _ = write!(
            body,
            r#"<p class="note">{} older message(s) not yet in conversations (being read in the background).</p>"#,
            n("unlinked_messages")
        );
    }
    body.push_str(r#"</section><section><h2>The server</h2>"#);
    match v["server"].as_object() {
        None => body.push_str(r#"<p class="note">Not reported by this server.</p>"#),
        Some(srv) => {
            body.push_str(r#"<dl class="figures">"#);
            for l in srv["listeners"].as_array().into_iter().flatten() {
                let _ = write!(
                    body,
                    "<dt>{}</dt><dd>listening on {}</dd>",
                    esc(l["kind"].as_str().unwrap_or("")),
                    esc(l["address"].as_str().unwrap_or(""))
                );
            }
            let _ = write!(
                body,
                "<dt>Retries asked of the MTA (4xx) since start</dt><dd>{}</dd><dt>Let through unarchived since start</dt><dd>{}</dd>",
                srv["tempfailed"], srv["accepted_unarchived"]
            );
            match srv["queue"].as_object() {
                None => body.push_str("<dt>Queue of archive copies</dt><dd>none configured</dd>"),
                Some(q) => {
                    let _ = write!(
                        body,
                        "<dt>Queue of archive copies</dt><dd>{} waiting ({}), {} stuck{}{}</dd>",
                        q["entries"],
                        human_size(q["bytes"].as_u64().unwrap_or(0)),
                        q["stuck"],
                        q["oldest_seconds"]
                            .as_u64()
                            .map(|s| format!(", the oldest for {s} s"))
                            .unwrap_or_default(),
                        q["error"]
                            .as_str()
                            .map(|e| format!(r#" <span class="error">{}</span>"#, esc(e)))
                            .unwrap_or_default(),
                    );
                }
            }
            body.push_str("</dl>");
            if let Some(r) = srv.get("retention").filter(|r| r.is_object()) {
                body.push_str(&retention_html(r, &srv["expire_every_seconds"], true));
            }
        }
    }
    body.push_str("</section>");
    layout("Dashboard", Some(&viewer), &body).into_response()
}
