//! Retention from the web: admins read and change the `[retention]`
//! section of the server's configuration file. The file stays the truth:
//! a change is the section's new text, which the server checks as it
//! checks a reload (the whole configuration must load, and a locked
//! retention only lengthens), writes into the file in place of the old
//! section, and puts in force by reloading, which records the retention in
//! force in the audit log as any reload does. The change itself, with its
//! reason, is recorded first; a refusal is recorded too.

use crate::pages::{esc, layout, page_error};
use crate::{blocking, ApiError, App, Role, Viewer};
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;

type Shared = Arc<App>;

/// The longest section accepted, in bytes.
pub const MAX_SECTION: usize = 64 * 1024;

/// What the server holds of its retention.
#[derive(Debug, Clone)]
pub struct Section {
    /// The configuration file.
    pub file: String,
    /// Its `[retention]` section as written there (comments included);
    /// empty when it has none.
    pub text: String,
}

/// Why a change was not made.
#[derive(Debug, Clone)]
pub enum ChangeError {
    /// The new section is refused (not TOML, more than `[retention]`, a
    /// configuration that does not load, shorter than a locked retention,
    /// no file to change).
    Refused(String),
    /// The file could not be read or written.
    Failed(String),
}

/// The server's side: reading the section and changing it.
pub trait RetentionEditor: Send + Sync {
    /// The file and its section as they are now.
    fn current(&self) -> Result<Section, String>;
    /// Puts `text` (TOML holding `[retention]` and nothing else, or
    /// nothing: everything kept forever) in place of the section, checked,
    /// written and reloaded; the retention then in force
    /// (`Retention::describe`).
    fn apply(&self, text: &str) -> Result<Value, ChangeError>;
}

/// Only admins (the router closes these routes to everyone else too).
fn admin(viewer: &Viewer) -> Result<(), ApiError> {
    if viewer.identity().role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

fn editor(app: &Shared) -> Result<Arc<dyn RetentionEditor>, ApiError> {
    app.retention.clone().ok_or_else(|| {
        ApiError::BadRequest(
            "this server has no configuration file it can change; edit [retention] on the server"
                .into(),
        )
    })
}

/// The section and the retention in force, the reading recorded.
async fn read(app: &Shared, viewer: &Viewer) -> Result<Value, ApiError> {
    admin(viewer)?;
    app.record_viewer(viewer, "retention", json!({"read": true}))
        .await?;
    let status = app.status.as_ref().map(|f| f());
    let in_force = status.as_ref().and_then(|s| s.retention.clone());
    let every = status.and_then(|s| s.expire_every_seconds);
    let section = match app.retention.clone() {
        None => None,
        Some(e) => Some(blocking(move || e.current().map_err(ApiError::Unavailable)).await?),
    };
    Ok(json!({
        "file": section.as_ref().map(|s| s.file.clone()),
        "section": section.map(|s| s.text),
        "in_force": in_force,
        "expire_every_seconds": every,
    }))
}

/// Changes the section for `viewer` (an admin, from a session): recorded
/// with its reason before it is tried, and its refusal after.
async fn change(
    app: &Shared,
    viewer: &Viewer,
    section: String,
    reason: String,
) -> Result<Value, ApiError> {
    admin(viewer)?;
    crate::api::session_only(viewer)?;
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::BadRequest("say why retention changes".into()));
    }
    if section.len() > MAX_SECTION || reason.len() > 2000 {
        return Err(ApiError::BadRequest(format!(
            "the section is limited to {MAX_SECTION} bytes and the reason to 2000"
        )));
    }
    let editor = editor(app)?;
    app.record_viewer(
        viewer,
        "change_retention",
        json!({"section": section, "reason": reason}),
    )
    .await?;
    let outcome = blocking(move || Ok(editor.apply(&section))).await?;
    match outcome {
        Ok(in_force) => Ok(in_force),
        Err(ChangeError::Refused(why)) => {
            app.record_viewer(viewer, "refused_change_retention", json!({"refused": why}))
                .await?;
            Err(ApiError::BadRequest(why))
        }
        Err(ChangeError::Failed(why)) => {
            tracing::error!("web: retention not changed: {why}");
            app.record_viewer(viewer, "refused_change_retention", json!({"refused": why}))
                .await?;
            Err(ApiError::Unavailable(why))
        }
    }
}

/// `GET /api/retention`.
pub async fn api_read(State(app): State<Shared>, viewer: Viewer) -> Result<Json<Value>, ApiError> {
    Ok(Json(read(&app, &viewer).await?))
}

/// The body of `POST /api/retention`.
#[derive(Debug, Deserialize)]
pub struct NewSection {
    /// The new `[retention]` section, as TOML.
    pub section: String,
    /// Why.
    pub reason: String,
}

/// `POST /api/retention`.
pub async fn api_change(
    State(app): State<Shared>,
    viewer: Viewer,
    Json(n): Json<NewSection>,
) -> Result<Json<Value>, ApiError> {
    let in_force = change(&app, &viewer, n.section, n.reason).await?;
    Ok(Json(json!({"in_force": in_force})))
}

/// The page's form.
#[derive(Debug, Deserialize, Default)]
pub struct SectionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    section: String,
    #[serde(default)]
    reason: String,
}

fn render(viewer: &Viewer, v: &Value, tried: Option<(&str, &str)>) -> Response {
    let mut body = String::from("<h1>Retention</h1>");
    if let Some((why, _)) = tried {
        let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, esc(why));
    }
    if let Some(r) = v["in_force"].as_object() {
        let _ = write!(
            body,
            "<section>{}</section>",
            crate::dashboard::retention_html(
                &Value::Object(r.clone()),
                &v["expire_every_seconds"],
                false
            )
        );
    }
    match v["section"].as_str() {
        None => body.push_str(r#"<p class="note">This server was not started from a configuration file it can change: edit <code>[retention]</code> on the server and reload it.</p>"#),
        Some(text) => {
            let shown = tried.map_or(text, |(_, t)| t);
            let _ = write!(
                body,
                r#"<section><h2>Change it</h2><p class="note">The <code>[retention]</code> section of <code>{file}</code>, as written there. A change is checked as a reload is (a <strong>locked</strong> retention can only be lengthened), written into the file in place of this section (the rest of the file stays as it is) and put in force at once; it is recorded in the audit log with its reason. Periods: <code>90d</code>, <code>2w</code>, <code>6m</code>, <code>10y</code>, <code>forever</code>. Legal holds keep what they cover whatever it says.</p><form method="post" action="/retention" class="retention"><input type="hidden" name="csrf" value="{csrf}"><label for="section">[retention]</label><textarea id="section" name="section" rows="16" spellcheck="false">{text}</textarea><label>Reason <input name="reason" required maxlength="2000"></label><button type="submit">Change the retention</button></form></section>"#,
                file = esc(v["file"].as_str().unwrap_or("")),
                csrf = esc(&viewer.session.csrf),
                text = esc(shown),
            );
        }
    }
    layout("Retention", Some(viewer), &body).into_response()
}

/// `GET /retention`.
pub async fn page(State(app): State<Shared>, viewer: Result<Viewer, ApiError>) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    match read(&app, &viewer).await {
        Ok(v) => render(&viewer, &v, None),
        Err(e) => page_error(e),
    }
}

/// `POST /retention`: change it from the page; a refusal shows the page
/// again with the text as it was sent.
pub async fn page_change(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Form(f): Form<SectionForm>,
) -> Response {
    let viewer = match crate::pages::form_viewer(viewer, &f.csrf) {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let sent = f.section.clone();
    let outcome = change(&app, &viewer, f.section, f.reason).await.map(drop);
    let (app, viewer) = (&app, &viewer);
    crate::pages::after_change(outcome, "/retention", |why| async move {
        let v = read(app, viewer).await?;
        Ok(render(viewer, &v, Some((&why, &sent))))
    })
    .await
}
