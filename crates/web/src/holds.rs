//! Legal holds on the web: auditors and admins see the holds in force and
//! what each covers now; admins place and release them. A hold is an
//! entry of the audit log ([`mailkeep_lifecycle::hold`]), the same one
//! `mailkeep hold` writes: placed or released under the log's lock, then
//! the log's head recorded in the store, so a log cut back to before the
//! change is noticed by the next removal.

use crate::pages::{esc, layout, page_error};
use crate::{blocking, ApiError, App, Role, Viewer};
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailkeep_lifecycle::hold::{self, Hold, HoldError};
use mailkeep_store::catalog::{Order, Page};
use mailkeep_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;

type Shared = Arc<App>;

/// A hold in force and what it covers now.
struct Covered {
    hold: Hold,
    deliveries: Result<u64, String>,
}

/// How many deliveries `query` matches now (every one counted).
fn count(store: &Store, query: &str) -> Result<u64, String> {
    let q = mailkeep_query::parse(query).map_err(|e| e.to_string())?;
    let page = Page {
        offset: 0,
        limit: 0,
        order: Order::NewestFirst,
        count_up_to: u64::MAX,
        facets: false,
    };
    store
        .search_page(&q, page)
        .map(|f| f.total)
        .map_err(|e| e.to_string())
}

fn to_api(e: HoldError) -> ApiError {
    match e {
        HoldError::Invalid(why) | HoldError::Refused(why) => ApiError::BadRequest(why),
        HoldError::Audit(e) => {
            tracing::error!("web: a hold could not be recorded: {e}");
            ApiError::Unavailable("the audit log cannot be written".into())
        }
    }
}

/// Only an admin changes holds (the router closes these routes to
/// everyone else too).
fn admin(viewer: &Viewer) -> Result<(), ApiError> {
    crate::api::session_only(viewer)?;
    if viewer.identity().role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The holds in force with what each covers, the reading recorded.
async fn in_force(app: &Shared, viewer: &Viewer) -> Result<Vec<Covered>, ApiError> {
    if !viewer.identity().sees_all() {
        return Err(ApiError::NotFound);
    }
    app.record_viewer(viewer, "holds", json!({"list": true}))
        .await?;
    let a = app.clone();
    blocking(move || {
        let holds = hold::in_force(&a.audit).map_err(|e| {
            tracing::error!("web: the holds cannot be read: {e}");
            ApiError::Unavailable("the audit log cannot be read".into())
        })?;
        let store = a.store();
        Ok(holds
            .into_iter()
            .map(|h| Covered {
                deliveries: count(store, &h.query),
                hold: h,
            })
            .collect())
    })
    .await
}

/// Places a hold for `viewer` (an admin), then anchors the log in the
/// store. Returns what it covers now.
async fn place(
    app: &Shared,
    viewer: &Viewer,
    name: String,
    query: String,
    reason: String,
) -> Result<u64, ApiError> {
    admin(viewer)?;
    hold::check_new(&name, &query, &reason).map_err(to_api)?;
    let a = app.clone();
    let actor = crate::actor_of(viewer);
    blocking(move || {
        let store = a.store();
        let deliveries = count(store, &query).map_err(ApiError::BadRequest)?;
        hold::place(
            &a.audit,
            &actor,
            &name,
            &query,
            &reason,
            usize::try_from(deliveries).unwrap_or(usize::MAX),
        )
        .map_err(to_api)?;
        a.anchor_audit()?;
        Ok(deliveries)
    })
    .await
}

async fn release(
    app: &Shared,
    viewer: &Viewer,
    name: String,
    reason: String,
) -> Result<(), ApiError> {
    admin(viewer)?;
    let a = app.clone();
    let actor = crate::actor_of(viewer);
    blocking(move || {
        hold::release(&a.audit, &actor, &name, &reason).map_err(to_api)?;
        a.anchor_audit()
    })
    .await
}

fn hold_json(c: &Covered) -> Value {
    json!({
        "name": c.hold.name,
        "query": c.hold.query,
        "reason": c.hold.reason,
        "by": c.hold.by,
        "since": c.hold.since,
        "entry": c.hold.entry,
        "deliveries": c.deliveries.as_ref().ok(),
        "error": c.deliveries.as_ref().err(),
    })
}

/// `GET /api/holds`.
pub async fn api_list(State(app): State<Shared>, viewer: Viewer) -> Result<Json<Value>, ApiError> {
    let holds = in_force(&app, &viewer).await?;
    Ok(Json(
        json!({"holds": holds.iter().map(hold_json).collect::<Vec<_>>()}),
    ))
}

/// The body of `POST /api/holds`.
#[derive(Debug, Deserialize)]
pub struct NewHold {
    /// Its name, unique among the holds in force.
    pub name: String,
    /// What it covers (the query language).
    pub query: String,
    /// Why.
    pub reason: String,
}

/// `POST /api/holds`.
pub async fn api_place(
    State(app): State<Shared>,
    viewer: Viewer,
    Json(h): Json<NewHold>,
) -> Result<Json<Value>, ApiError> {
    let name = h.name.clone();
    let deliveries = place(&app, &viewer, h.name, h.query, h.reason).await?;
    Ok(Json(json!({"name": name, "deliveries": deliveries})))
}

/// The body of `DELETE /api/holds/{name}`.
#[derive(Debug, Deserialize)]
pub struct Release {
    /// Why it is released.
    pub reason: String,
}

/// `DELETE /api/holds/{name}`.
pub async fn api_release(
    State(app): State<Shared>,
    viewer: Viewer,
    Path(name): Path<String>,
    Json(r): Json<Release>,
) -> Result<Json<Value>, ApiError> {
    release(&app, &viewer, name.clone(), r.reason).await?;
    Ok(Json(json!({"name": name, "released": true})))
}

/// The page's forms: the CSRF token and the fields.
#[derive(Debug, Deserialize, Default)]
pub struct HoldForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    reason: String,
}

fn render(viewer: &Viewer, holds: &[Covered], refused: Option<&str>) -> Response {
    let mut body = String::from("<h1>Legal holds</h1>");
    if let Some(why) = refused {
        let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, esc(why));
    }
    body.push_str(
        r#"<p class="note">What a hold's query matches, now and later, is never expired or erased while it stands. Holds are entries of the audit log.</p>"#,
    );
    let is_admin = viewer.identity().role == Role::Admin;
    let csrf = esc(&viewer.session.csrf);
    if holds.is_empty() {
        body.push_str("<p>No hold is in force.</p>");
    } else {
        body.push_str(r#"<div class="scroll"><table class="holds"><thead><tr><th>Name</th><th>Query</th><th>Covers now</th><th>Reason</th><th>Placed</th>"#);
        if is_admin {
            body.push_str("<th>Release</th>");
        }
        body.push_str("</tr></thead><tbody>");
        for c in holds {
            let h = &c.hold;
            let covers = match &c.deliveries {
                Ok(n) => format!(
                    r#"<a href="/?q={}">{n} deliveries</a>"#,
                    esc(&crate::pages::url_value(&h.query))
                ),
                Err(e) => format!(r#"<span class="error">{}</span>"#, esc(e)),
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td><code>{}</code></td><td>{covers}</td><td>{}</td><td>{} by {} (entry {})</td>",
                esc(&h.name),
                esc(&h.query),
                esc(&h.reason),
                esc(h.since.get(..19).unwrap_or(&h.since)),
                esc(&h.by),
                h.entry,
            );
            if is_admin {
                let _ = write!(
                    body,
                    r#"<td><form method="post" action="/holds/{}/release"><input type="hidden" name="csrf" value="{csrf}"><label>Why <input name="reason" required></label><button type="submit">Release</button></form></td>"#,
                    esc(&crate::pages::url_value(&h.name)),
                );
            }
            body.push_str("</tr>");
        }
        body.push_str("</tbody></table></div>");
    }
    if is_admin {
        let _ = write!(
            body,
            r#"<section><h2>Place a hold</h2><form method="post" action="/holds" class="hold"><input type="hidden" name="csrf" value="{csrf}"><label>Name <input name="name" required maxlength="200"></label><label>Query <input name="query" required placeholder="sender:@example.com after:2026-01-01"></label><label>Reason <input name="reason" required></label><button type="submit">Place the hold</button></form></section>"#
        );
    }
    layout("Legal holds", Some(viewer), &body).into_response()
}

/// `GET /holds`.
pub async fn page(State(app): State<Shared>, viewer: Result<Viewer, ApiError>) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    match in_force(&app, &viewer).await {
        Ok(holds) => render(&viewer, &holds, None),
        Err(e) => page_error(e),
    }
}

/// After a change from the page: back to the list, or the list with the
/// refusal.
async fn after(app: &Shared, viewer: &Viewer, outcome: Result<(), ApiError>) -> Response {
    crate::pages::after_change(outcome, "/holds", |why| async move {
        let holds = in_force(app, viewer).await?;
        Ok(render(viewer, &holds, Some(&why)))
    })
    .await
}

/// `POST /holds`: place a hold from the page.
pub async fn page_place(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Form(f): Form<HoldForm>,
) -> Response {
    let viewer = match crate::pages::form_viewer(viewer, &f.csrf) {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let outcome = place(&app, &viewer, f.name, f.query, f.reason)
        .await
        .map(drop);
    after(&app, &viewer, outcome).await
}

/// `POST /holds/{name}/release`: release a hold from the page.
pub async fn page_release(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Path(name): Path<String>,
    Form(f): Form<HoldForm>,
) -> Response {
    let viewer = match crate::pages::form_viewer(viewer, &f.csrf) {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let outcome = release(&app, &viewer, name, f.reason).await;
    after(&app, &viewer, outcome).await
}
