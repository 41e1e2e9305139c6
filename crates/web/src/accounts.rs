//! Local accounts on the web, for admins: list, add or replace (name, role,
//! addresses, password), remove; the same file and rules as `mailkeep user`
//! ([`crate::users`]). Each change is recorded in the audit log before it
//! is made (never the password) and ends the sessions of the account it
//! changes, so a removed or demoted person is logged out at once. An admin
//! cannot remove or demote themselves (another admin must).
//!
//! The page also shows who else may log in: the backends tried, and the
//! names `auditors` and `admins` give a role.

use crate::pages::{esc, layout, page_error};
use crate::{blocking, ApiError, App, Role, UsersError, Viewer};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;

type Shared = Arc<App>;

fn to_api(e: UsersError) -> ApiError {
    match e {
        UsersError::Refused(why) => ApiError::BadRequest(why),
        e => {
            tracing::error!("web: the accounts: {e}");
            ApiError::Unavailable("the accounts file cannot be read or written".into())
        }
    }
}

fn admin(viewer: &Viewer) -> Result<(), ApiError> {
    crate::api::session_only(viewer)?;
    if viewer.identity().role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The addresses of a form field: separated by commas or whitespace.
fn addresses(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

async fn list(app: &Shared, viewer: &Viewer) -> Result<Vec<Value>, ApiError> {
    admin(viewer)?;
    app.record_viewer(viewer, "user", json!({"op": "list"}))
        .await?;
    let a = app.clone();
    let users = blocking(move || a.settings.auth.users.list().map_err(to_api)).await?;
    Ok(users
        .iter()
        .map(|u| json!({"name": u.name, "role": u.role.to_string(), "addresses": u.addresses}))
        .collect())
}

async fn put(
    app: &Shared,
    viewer: &Viewer,
    name: String,
    role: &str,
    addresses: Vec<String>,
    password: String,
) -> Result<Value, ApiError> {
    admin(viewer)?;
    let role = Role::parse(role)
        .ok_or_else(|| ApiError::BadRequest(format!("role {role:?}: user, auditor or admin")))?;
    if name == viewer.identity().name && role != Role::Admin {
        return Err(ApiError::BadRequest(
            "you cannot take your own admin role; another admin must".into(),
        ));
    }
    app.record_viewer(
        viewer,
        "user",
        json!({"op": "add", "name": name, "role": role.to_string(), "addresses": addresses}),
    )
    .await?;
    let a = app.clone();
    let user = blocking(move || {
        a.settings
            .auth
            .users
            .put(&name, role, &addresses, &password)
            .map_err(to_api)
    })
    .await?;
    app.sessions.close_all_of(&user.name);
    revoke_tokens(app, &user.name).await?;
    Ok(json!({"name": user.name, "role": user.role.to_string(), "addresses": user.addresses}))
}

async fn remove(app: &Shared, viewer: &Viewer, name: String) -> Result<(), ApiError> {
    admin(viewer)?;
    if name == viewer.identity().name {
        return Err(ApiError::BadRequest(
            "you cannot remove your own account; another admin must".into(),
        ));
    }
    app.record_viewer(viewer, "user", json!({"op": "remove", "name": name}))
        .await?;
    let a = app.clone();
    let key = name.clone();
    let removed = blocking(move || a.settings.auth.users.remove(&key).map_err(to_api)).await?;
    if !removed {
        return Err(ApiError::NotFound);
    }
    app.sessions.close_all_of(&name);
    revoke_tokens(app, &name).await?;
    Ok(())
}

/// Ends the API tokens of the local account `name` (changed or removed;
/// a token also stops by itself when the password it was made under
/// changes).
async fn revoke_tokens(app: &Shared, name: &str) -> Result<(), ApiError> {
    let a = app.clone();
    let name = name.to_string();
    blocking(move || {
        a.tokens.revoke_all_local(&name).map(drop).map_err(|e| {
            tracing::error!("web: API tokens: {e}");
            ApiError::Unavailable("the API tokens cannot be written".into())
        })
    })
    .await
}

/// `GET /api/users`.
pub async fn api_list(State(app): State<Shared>, viewer: Viewer) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"users": list(&app, &viewer).await?})))
}

/// The body of `POST /api/users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    /// The login name.
    pub name: String,
    /// `user`, `auditor` or `admin`.
    pub role: String,
    /// The addresses that are theirs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Their password (at least 12 characters).
    pub password: String,
}

/// `POST /api/users`: adds an account or replaces the one of that name.
pub async fn api_put(
    State(app): State<Shared>,
    viewer: Viewer,
    Json(u): Json<NewUser>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        put(&app, &viewer, u.name, &u.role, u.addresses, u.password).await?,
    ))
}

/// `DELETE /api/users/{name}`.
pub async fn api_remove(
    State(app): State<Shared>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&app, &viewer, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The page's forms.
#[derive(Debug, Deserialize, Default)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    addresses: String,
    #[serde(default)]
    password: String,
}

fn render(app: &App, viewer: &Viewer, users: &[Value], message: Option<&str>) -> Response {
    let mut body = String::from("<h1>Accounts</h1>");
    if let Some(m) = message {
        let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, esc(m));
    }
    let auth = &app.settings.auth;
    let names = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            esc(&v.join(", "))
        }
    };
    let _ = write!(
        body,
        r#"<p class="note">Logins are tried with: {}. Auditors from the configuration: {}. Admins from the configuration: {}.</p>"#,
        esc(&auth
            .backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")),
        names(&auth.auditors),
        names(&auth.admins),
    );
    let csrf = esc(&viewer.session.csrf);
    body.push_str(r#"<h2>Local accounts</h2><div class="scroll"><table class="users"><thead><tr><th>Name</th><th>Role</th><th>Addresses</th><th>Remove</th></tr></thead><tbody>"#);
    for u in users {
        let name = u["name"].as_str().unwrap_or("");
        let addrs: Vec<&str> = u["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let remove = if name == viewer.identity().name {
            "(you)".to_string()
        } else {
            format!(
                r#"<form method="post" action="/users/{}/remove"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Remove</button></form>"#,
                esc(&crate::pages::url_value(name))
            )
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{remove}</td></tr>",
            esc(name),
            esc(u["role"].as_str().unwrap_or("")),
            esc(&addrs.join(", ")),
        );
    }
    body.push_str("</tbody></table></div>");
    let _ = write!(
        body,
        r#"<section><h2>Add or replace an account</h2><form method="post" action="/users" class="user"><input type="hidden" name="csrf" value="{csrf}"><label>Name <input name="name" required autocomplete="off"></label><label>Role <select name="role"><option>user</option><option>auditor</option><option>admin</option></select></label><label>Addresses <input name="addresses" placeholder="bob@example.com, robert@example.com"></label><label>Password <input name="password" type="password" required minlength="{}" autocomplete="new-password"></label><button type="submit">Save</button></form><p class="note">Saving an existing name replaces its role, addresses and password, and logs it out.</p></section>"#,
        crate::users::MIN_PASSWORD
    );
    layout("Accounts", Some(viewer), &body).into_response()
}

/// `GET /users`.
pub async fn page(State(app): State<Shared>, viewer: Result<Viewer, ApiError>) -> Response {
    let viewer = match viewer {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    match list(&app, &viewer).await {
        Ok(users) => render(&app, &viewer, &users, None),
        Err(e) => page_error(e),
    }
}

/// After a change from the page: back to the list, or the list with the
/// refusal.
async fn after(app: &Shared, viewer: &Viewer, outcome: Result<(), ApiError>) -> Response {
    crate::pages::after_change(outcome, "/users", |why| async move {
        let users = list(app, viewer).await?;
        Ok(render(app, viewer, &users, Some(&why)))
    })
    .await
}

/// `POST /users`.
pub async fn page_put(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Form(f): Form<UserForm>,
) -> Response {
    let viewer = match crate::pages::form_viewer(viewer, &f.csrf) {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let outcome = put(
        &app,
        &viewer,
        f.name,
        &f.role,
        addresses(&f.addresses),
        f.password,
    )
    .await
    .map(drop);
    after(&app, &viewer, outcome).await
}

/// `POST /users/{name}/remove`.
pub async fn page_remove(
    State(app): State<Shared>,
    viewer: Result<Viewer, ApiError>,
    Path(name): Path<String>,
    Form(f): Form<UserForm>,
) -> Response {
    let viewer = match crate::pages::form_viewer(viewer, &f.csrf) {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let outcome = remove(&app, &viewer, name).await;
    after(&app, &viewer, outcome).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_split_on_commas_and_spaces() {
        assert_eq!(
            super::addresses(" a@x.example, b@x.example\nc@x.example,,"),
            ["a@x.example", "b@x.example", "c@x.example"]
        );
    }
}
