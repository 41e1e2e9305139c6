//! The archive on the web, for the people the archive is for: each user
//! sees their own mail by the true envelope ([`identity`]), auditors see
//! all, and every access is in the audit log before anything is shown.
//!
//! - [`users`]: local accounts (argon2id), managed by `mailkeep user`.
//! - [`auth`], [`imap`], [`ldap`]: the login backends, tried in order.
//! - [`session`]: sessions (HttpOnly, SameSite=Strict cookies, CSRF
//!   tokens, idle and absolute expiry) and login throttling.
//! - [`api`]: the JSON API under `/api/`, described by `openapi.json`.
//! - [`pages`]: the HTML pages; [`view`]: a message made safe to show;
//!   [`snippet`]: the words searched for, marked in the results.
//!
//! Every route is in one table, [`routes`], from which the router is built:
//! the authorisation tests and the OpenAPI check walk that table, so a new
//! route cannot be forgotten by either.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod holds;
pub mod identity;
pub mod imap;
pub mod ldap;
pub mod pages;
mod recorder;
pub mod retention;
pub mod session;
pub mod snippet;
pub mod tls;
pub mod tokens;
pub mod users;
pub mod view;

pub use auth::{Auth, Backend};
pub use identity::Identity;
pub use users::{Role, User, Users, UsersError};

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use ipnet::IpNet;
use mailkeep_lifecycle::{Actor, AuditLog};
use mailkeep_store::Store;
use serde_json::{json, Value};
use session::{Session, Sessions, Throttle};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `[web]` as the server uses it.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The certificate and key to serve HTTPS with; plain HTTP without
    /// (on loopback, or behind a reverse proxy that does TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The site's address as its users reach it (`https://archive.example.com`),
    /// for absolute links; its scheme decides the cookie's `Secure`.
    pub base_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Who may log in.
    pub auth: Auth,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// A session ends this long after login, whatever happens.
    pub session_max: Duration,
    /// Messages larger than this are not parsed for the view (the
    /// envelope and the index's fields are shown, and the original can be
    /// downloaded).
    pub max_view_bytes: u64,
    /// "Export these results" gives at most this many messages; a search
    /// that finds more is refused (narrow it, or `mailkeep export`).
    pub max_export: u64,
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Anyone (the login page, assets, the API description).
    Public,
    /// Anyone logged in; what they see is limited to their own mail.
    User,
    /// Auditors and admins.
    Auditor,
    /// Admins only (changing holds).
    Admin,
}

/// One route of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// The path, `{id}` and `{index}` standing for parameters.
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
    /// Whether it changes state (and so needs the CSRF token).
    pub changes: bool,
    /// What it is for.
    pub about: &'static str,
}

/// The server's state.
pub struct App {
    settings: WebSettings,
    /// Read-only handles on the store, taken in turn: each has its own
    /// catalog connection, so searches run side by side.
    stores: Vec<Arc<Store>>,
    next_store: AtomicUsize,
    audit: AuditLog,
    recorder: recorder::Recorder,
    sessions: Sessions,
    throttle: Throttle,
    /// What the running server reports about itself (the dashboard).
    status: Option<dashboard::StatusSource>,
    /// API tokens.
    tokens: tokens::Tokens,
    /// The server's retention section, for admins to change.
    retention: Option<Arc<dyn retention::RetentionEditor>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "App({})", self.settings.listen)
    }
}

type Shared = Arc<App>;

/// Every route, with its handler: the one table the router, the
/// authorisation test and the OpenAPI check use.
fn table() -> Vec<(Route, MethodRouter<Shared>)> {
    use axum::routing::{delete, get, post};
    let r = |method, path, access, changes, about| Route {
        method,
        path,
        access,
        changes,
        about,
    };
    vec![
        (
            r("GET", "/", Access::User, false, "the search page"),
            get(pages::search),
        ),
        (
            r("GET", "/login", Access::Public, false, "the login page"),
            get(pages::login_form),
        ),
        (
            r(
                "POST",
                "/login",
                Access::Public,
                true,
                "log in from the page",
            ),
            post(pages::login),
        ),
        (
            r(
                "POST",
                "/logout",
                Access::User,
                true,
                "log out from the page",
            ),
            post(pages::logout),
        ),
        (
            r("GET", "/messages/{id}", Access::User, false, "a message"),
            get(pages::message),
        ),
        (
            r(
                "GET",
                "/messages/{id}/body.html",
                Access::User,
                false,
                "a message's HTML part, sanitised, for its sandboxed frame",
            ),
            get(pages::body_html),
        ),
        (
            r("GET", "/audit", Access::Auditor, false, "the audit log"),
            get(pages::audit),
        ),
        (
            r(
                "GET",
                "/assets/{name}",
                Access::Public,
                false,
                "style sheet",
            ),
            get(pages::asset),
        ),
        (
            r(
                "GET",
                "/api/openapi.json",
                Access::Public,
                false,
                "this API's description",
            ),
            get(api::openapi),
        ),
        (
            r("POST", "/api/session", Access::Public, true, "log in"),
            post(api::login),
        ),
        (
            r(
                "GET",
                "/api/session",
                Access::User,
                false,
                "who is logged in, and the CSRF token",
            ),
            get(api::whoami),
        ),
        (
            r("DELETE", "/api/session", Access::User, true, "log out"),
            delete(api::logout),
        ),
        (
            r("GET", "/api/search", Access::User, false, "search"),
            get(api::search),
        ),
        (
            r(
                "GET",
                "/api/messages/{id}",
                Access::User,
                false,
                "a message: envelope, headers, parts",
            ),
            get(api::message),
        ),
        (
            r(
                "GET",
                "/api/messages/{id}/raw",
                Access::User,
                false,
                "the original bytes (.eml)",
            ),
            get(api::raw),
        ),
        (
            r(
                "GET",
                "/api/messages/{id}/attachments/{index}",
                Access::User,
                false,
                "one attachment",
            ),
            get(api::attachment),
        ),
        (
            r(
                "GET",
                "/api/export",
                Access::User,
                false,
                "what a search finds, as a zip with a manifest",
            ),
            get(api::export),
        ),
        (
            r(
                "GET",
                "/dashboard",
                Access::Auditor,
                false,
                "deliveries per day, capture paths, the store, the server",
            ),
            get(dashboard::page),
        ),
        (
            r(
                "GET",
                "/api/dashboard",
                Access::Auditor,
                false,
                "the dashboard's figures",
            ),
            get(dashboard::api),
        ),
        (
            r(
                "GET",
                "/holds",
                Access::Auditor,
                false,
                "the legal holds in force",
            ),
            get(holds::page),
        ),
        (
            r(
                "POST",
                "/holds",
                Access::Admin,
                true,
                "place a legal hold from the page",
            ),
            post(holds::page_place),
        ),
        (
            r(
                "POST",
                "/holds/{name}/release",
                Access::Admin,
                true,
                "release a legal hold from the page",
            ),
            post(holds::page_release),
        ),
        (
            r(
                "GET",
                "/api/holds",
                Access::Auditor,
                false,
                "the legal holds in force and what each covers",
            ),
            get(holds::api_list),
        ),
        (
            r(
                "POST",
                "/api/holds",
                Access::Admin,
                true,
                "place a legal hold",
            ),
            post(holds::api_place),
        ),
        (
            r(
                "DELETE",
                "/api/holds/{name}",
                Access::Admin,
                true,
                "release a legal hold",
            ),
            delete(holds::api_release),
        ),
        (
            r(
                "GET",
                "/api/tokens",
                Access::User,
                false,
                "the reader's API tokens",
            ),
            get(api::tokens),
        ),
        (
            r(
                "POST",
                "/api/tokens",
                Access::User,
                true,
                "make an API token (from a session)",
            ),
            post(api::token_create),
        ),
        (
            r(
                "DELETE",
                "/api/tokens/{token}",
                Access::User,
                true,
                "revoke one of the reader's API tokens",
            ),
            delete(api::token_revoke),
        ),
        (
            r("GET", "/users", Access::Admin, false, "the local accounts"),
            get(accounts::page),
        ),
        (
            r(
                "POST",
                "/users",
                Access::Admin,
                true,
                "add or replace a local account from the page",
            ),
            post(accounts::page_put),
        ),
        (
            r(
                "POST",
                "/users/{name}/remove",
                Access::Admin,
                true,
                "remove a local account from the page",
            ),
            post(accounts::page_remove),
        ),
        (
            r(
                "GET",
                "/api/users",
                Access::Admin,
                false,
                "the local accounts",
            ),
            get(accounts::api_list),
        ),
        (
            r(
                "POST",
                "/api/users",
                Access::Admin,
                true,
                "add or replace a local account",
            ),
            post(accounts::api_put),
        ),
        (
            r(
                "DELETE",
                "/api/users/{name}",
                Access::Admin,
                true,
                "remove a local account",
            ),
            delete(accounts::api_remove),
        ),
        (
            r(
                "GET",
                "/retention",
                Access::Admin,
                false,
                "the retention section",
            ),
            get(retention::page),
        ),
        (
            r(
                "POST",
                "/retention",
                Access::Admin,
                true,
                "change the retention section from the page",
            ),
            post(retention::page_change),
        ),
        (
            r(
                "GET",
                "/api/retention",
                Access::Admin,
                false,
                "the retention section and the retention in force",
            ),
            get(retention::api_read),
        ),
        (
            r(
                "POST",
                "/api/retention",
                Access::Admin,
                true,
                "change the retention section",
            ),
            post(retention::api_change),
        ),
        (
            r("GET", "/api/audit", Access::Auditor, false, "the audit log"),
            get(api::audit),
        ),
    ]
}

/// Every route of the server.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(r, _)| r).collect()
}

/// The router over `app`.
pub fn router(app: Shared) -> Router {
    assemble(app, table())
}

/// The router of `table`'s routes over `app`, each auditors' and admins'
/// route behind the role layer.
fn assemble(app: Shared, table: Vec<(Route, MethodRouter<Shared>)>) -> Router {
    let mut router = Router::new();
    let mut seen: std::collections::HashMap<&str, MethodRouter<Shared>> = Default::default();
    for (route, handler) in table {
        // Routes for auditors and admins are closed to everyone else here,
        // whatever their handler does.
        let handler = match route.access {
            Access::Auditor | Access::Admin => handler.route_layer(
                axum::middleware::from_fn_with_state((app.clone(), route.access), require_role),
            ),
            Access::Public | Access::User => handler,
        };
        let merged = match seen.remove(route.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        seen.insert(route.path, merged);
    }
    for (path, handler) in seen {
        router = router.route(path, handler);
    }
    router
        .fallback(|| async { ApiError::NotFound.into_response() })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Lets a request for an auditor's (or admin's) route through only for
/// someone with that role, found as every handler finds its reader (the
/// [`Viewer`] extractor: session or API token, the account as it is now,
/// the CSRF token), and hands the handler that reader. Anyone else logged
/// in gets the 404 of a missing item; a request that is not logged in
/// gets what a handler would answer (the login page, or 401).
async fn require_role(
    axum::extract::State((app, access)): axum::extract::State<(Shared, Access)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let refuse = |e: ApiError| {
        if api {
            e.into_response()
        } else {
            pages::page_error(e)
        }
    };
    let (mut parts, body) = request.into_parts();
    let viewer = match Viewer::from_request_parts(&mut parts, &app).await {
        Ok(v) => v,
        Err(e) => return refuse(e),
    };
    let allowed = match access {
        Access::Admin => viewer.identity().role == Role::Admin,
        _ => viewer.identity().sees_all(),
    };
    if !allowed {
        return refuse(ApiError::NotFound);
    }
    parts.extensions.insert(viewer);
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Headers every response carries unless it set its own: no sniffing, no
/// referrer, no framing by others, nothing cached, and a policy that lets
/// a page load only this site's own style sheet and frames.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let defaults: [(header::HeaderName, &str); 5] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

impl App {
    /// The state of a server reading the store through `stores` (handles
    /// opened read-only, at least one; requests take them in turn) and
    /// recording every access in `audit`. Starts the audit writer thread.
    pub fn new(settings: WebSettings, stores: Vec<Store>, audit: AuditLog) -> std::io::Result<App> {
        if stores.is_empty() {
            return Err(std::io::Error::other("the web interface needs a store"));
        }
        let sessions = Sessions::new(settings.session_idle, settings.session_max);
        let recorder = recorder::Recorder::start(audit.clone())?;
        Ok(App {
            stores: stores.into_iter().map(Arc::new).collect(),
            next_store: AtomicUsize::new(0),
            audit,
            recorder,
            sessions,
            throttle: Throttle::default(),
            status: None,
            tokens: tokens::Tokens::new(settings.auth.users.path().with_file_name("tokens.json")),
            retention: None,
            settings,
        })
    }

    /// The token a request presents, if it is known and unexpired, with
    /// whom it stands for now.
    async fn token_owner(
        self: &Arc<Self>,
        presented: String,
    ) -> Result<Option<(String, Identity)>, ApiError> {
        let a = self.clone();
        blocking(move || {
            let Some(t) = a
                .tokens
                .check(&presented)
                .map_err(|e| ApiError::Unavailable(format!("API tokens: {e}")))?
            else {
                return Ok(None);
            };
            let who = a
                .settings
                .auth
                .token_identity(&t)
                .map_err(ApiError::Unavailable)?;
            Ok(who.map(|identity| (t.id, identity)))
        })
        .await
    }

    /// Records the audit log's head in the store (a store handle opened to
    /// write for the purpose), after a hold was placed or released: a log
    /// later cut back to before it is then refused by removals.
    fn anchor_audit(&self) -> Result<(), ApiError> {
        let unavailable = |what: String| {
            tracing::error!("web: {what}");
            ApiError::Unavailable(format!(
                "{what}; the change is in the audit log, run `mailkeep hold list` on the server"
            ))
        };
        let Some((seq, hash)) = self
            .audit
            .head()
            .map_err(|e| unavailable(format!("the audit log's head: {e}")))?
        else {
            return Ok(());
        };
        let config = self.store().config().clone();
        Store::open(config)
            .and_then(|w| w.set_audit_anchor(seq, &hash))
            .map_err(|e| unavailable(format!("the store could not record the log's head: {e}")))
    }

    /// The same, reporting `status` on the dashboard.
    pub fn with_status(mut self, status: dashboard::StatusSource) -> App {
        self.status = Some(status);
        self
    }

    /// Lets admins change the server's `[retention]` through `editor`.
    pub fn with_retention(mut self, editor: Arc<dyn retention::RetentionEditor>) -> App {
        self.retention = Some(editor);
        self
    }

    /// The next store handle.
    fn store(&self) -> &Store {
        let n = self.next_store.fetch_add(1, Ordering::Relaxed);
        &self.stores[n % self.stores.len()]
    }

    /// Whether cookies get `Secure` (the site is reached over https:
    /// served with TLS, or behind a proxy at an https `base_url`).
    fn secure(&self) -> bool {
        self.settings.tls.is_some()
            || self
                .settings
                .base_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }

    /// The client's address: the peer, or for a trusted proxy the last
    /// address in `X-Forwarded-For` that is not itself a trusted proxy.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.settings.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        for ip in forwarded.into_iter().rev() {
            client = ip;
            if !trusted(&ip) {
                break;
            }
        }
        client
    }

    /// Records an access, durably, before it is answered; an entry that
    /// cannot be written refuses the access (503).
    async fn record(
        self: &Arc<Self>,
        user: &str,
        from: IpAddr,
        action: &'static str,
        detail: Value,
    ) -> Result<(), ApiError> {
        self.record_via(user, from, None, action, detail).await
    }

    /// [`App::record`] for a logged-in request: an access made with an API
    /// token is recorded `via` `web-token` with the token's id.
    async fn record_viewer(
        self: &Arc<Self>,
        viewer: &Viewer,
        action: &'static str,
        detail: Value,
    ) -> Result<(), ApiError> {
        let name = &viewer.identity().name;
        self.record_via(name, viewer.client, viewer.token.as_deref(), action, detail)
            .await
    }

    async fn record_via(
        self: &Arc<Self>,
        user: &str,
        from: IpAddr,
        token: Option<&str>,
        action: &'static str,
        detail: Value,
    ) -> Result<(), ApiError> {
        let actor = web_actor(user, from, token);
        let mut detail = match detail {
            Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        if let Some(t) = token {
            detail.insert("token".into(), Value::from(t));
        }
        self.recorder
            .record(actor, action, detail)
            .await
            .map_err(|e| {
                tracing::error!("web access refused: the audit log cannot be written: {e}");
                ApiError::Unavailable("the audit log cannot be written".into())
            })
    }
}

/// Runs `f` on the blocking pool (store reads, argon2, audit appends).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))?
}

/// Serves `app` on `listener` until `shutdown` completes: HTTPS when
/// `[web]` has a certificate, HTTP otherwise.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = app.settings.tls.clone();
    let service = router(Arc::new(app)).into_make_service_with_connect_info::<tls::Peer>();
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, &config)?;
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// What went wrong, as the API says it. Everything a reader may not see is
/// [`ApiError::NotFound`], exactly as what does not exist.
#[derive(Debug)]
pub enum ApiError {
    /// No such thing, or not theirs (401 never tells which).
    NotFound,
    /// Not logged in, or the session ended.
    Unauthenticated,
    /// Wrong name or password.
    BadLogin,
    /// The CSRF token is missing or wrong.
    Csrf,
    /// The request is malformed (a query that does not parse).
    BadRequest(String),
    /// Too many failed logins: wait this long.
    Throttled(Duration),
    /// A service mailkeep needs is unavailable (the audit log, a login backend).
    Unavailable(String),
    /// A fault of ours.
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthenticated | ApiError::BadLogin => StatusCode::UNAUTHORIZED,
            ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::NotFound => "not found".into(),
            ApiError::Unauthenticated => "not logged in".into(),
            ApiError::BadLogin => "wrong user name or password".into(),
            ApiError::Csrf => "missing or wrong CSRF token".into(),
            ApiError::BadRequest(m) => m.clone(),
            ApiError::Throttled(d) => format!(
                "too many failed logins; try again in {} s",
                d.as_secs().max(1)
            ),
            ApiError::Unavailable(m) => format!("unavailable: {m}"),
            ApiError::Internal(_) => "internal error (see the server's log)".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(m) = &self {
            tracing::error!("web: {m}");
        }
        let mut r = (self.status(), axum::Json(json!({"error": self.message()}))).into_response();
        if let ApiError::Throttled(d) = &self {
            if let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<mailkeep_store::StoreError> for ApiError {
    fn from(e: mailkeep_store::StoreError) -> ApiError {
        match e {
            mailkeep_store::StoreError::NotFound(_) => ApiError::NotFound,
            e => ApiError::Internal(format!("store: {e}")),
        }
    }
}

/// A logged-in request: the session, its id and the client's address.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session's id (the cookie's value).
    pub id: String,
    /// The session.
    pub session: Session,
    /// Where the request came from.
    pub client: IpAddr,
    /// The API token's id, when the request was made with one.
    pub token: Option<String>,
}

impl Viewer {
    /// Who.
    pub fn identity(&self) -> &Identity {
        &self.session.identity
    }
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == session::COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Who the audit log names for a web request: the user, `via` `web` (or
/// `web-token` when made with an API token), from the client's address.
fn web_actor(user: &str, from: IpAddr, token: Option<&str>) -> Actor {
    Actor {
        user: user.to_string(),
        uid: None,
        via: if token.is_some() { "web-token" } else { "web" }.into(),
        from: from.to_string(),
    }
}

/// [`web_actor`] of a logged-in request.
fn actor_of(viewer: &Viewer) -> Actor {
    web_actor(
        &viewer.identity().name,
        viewer.client,
        viewer.token.as_deref(),
    )
}

/// The API token of an `Authorization: Bearer …` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The peer address of a request, from the connection.
fn peer(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<tls::Peer>>()
        .map(|c| c.0 .0.ip())
        // Not from a connection (never in the server): no address a
        // proxy rule could trust.
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The client of a request, whether or not it is logged in.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

impl FromRequestParts<Shared> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        Ok(Client(app.client(peer(parts), &parts.headers)))
    }
}

impl FromRequestParts<Shared> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        // Found already by the role layer of an auditor's or admin's route.
        if let Some(v) = parts.extensions.get::<Viewer>() {
            return Ok(v.clone());
        }
        let client = app.client(peer(parts), &parts.headers);
        if let Some(presented) = bearer(&parts.headers) {
            // The API only; a token stands for its owner as they are now.
            if !parts.uri.path().starts_with("/api/") {
                return Err(ApiError::Unauthenticated);
            }
            let found = app.token_owner(presented).await?;
            let Some((id, identity)) = found else {
                tracing::warn!(%client, "a request with an unknown or expired API token");
                return Err(ApiError::Unauthenticated);
            };
            return Ok(Viewer {
                id: String::new(),
                session: Session::for_token(identity),
                client,
                token: Some(id),
            });
        }
        let id = session_cookie(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        let session = app.sessions.get(&id).ok_or(ApiError::Unauthenticated)?;
        if session.identity.backend == "local" {
            // The account as it is now: removed, or given another role or
            // other addresses (`mailkeep user` on the command line too),
            // the session ends here rather than at its expiry.
            // Read in place: a small file in the page cache costs less than
            // a hop to the blocking pool, which waits behind the searches
            // when the server is busy.
            let now = app
                .settings
                .auth
                .local_now(&session.identity.name)
                .map_err(|e| ApiError::Unavailable(format!("the accounts: {e}")))?;
            let same = now.as_ref().is_some_and(|n| {
                n.role == session.identity.role && n.addresses == session.identity.addresses
            });
            if !same {
                app.sessions.close(&id);
                tracing::info!(user = %session.identity.name, "session ended: the account changed");
                return Err(ApiError::Unauthenticated);
            }
        }
        let viewer = Viewer {
            id,
            session,
            client,
            token: None,
        };
        // A state-changing request carries the session's CSRF token (the
        // pages' forms are checked by their handlers, from the form body).
        let changes = matches!(
            parts.method,
            Method::POST | Method::DELETE | Method::PUT | Method::PATCH
        );
        if changes && parts.uri.path().starts_with("/api/") {
            let token = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !session::same_token(token, &viewer.session.csrf) {
                return Err(ApiError::Csrf);
            }
        }
        Ok(viewer)
    }
}

/// The `Set-Cookie` value opening a session, or (`None`) ending it.
fn cookie(app: &App, id: Option<&str>) -> HeaderValue {
    let secure = if app.secure() { "; Secure" } else { "" };
    let text = match id {
        Some(id) => format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            session::COOKIE,
            app.settings.session_max.as_secs()
        ),
        None => format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            session::COOKIE
        ),
    };
    HeaderValue::from_str(&text).expect("a cookie of hex digits and ASCII is a header value")
}

/// Logs in with `user`/`password` from `client`, throttled and audited;
/// the new session's id and the session.
async fn log_in(
    app: &Shared,
    client: IpAddr,
    user: String,
    password: String,
) -> Result<(String, Session), ApiError> {
    use session::ThrottleKey;
    let keys = [
        ThrottleKey::User(user.to_lowercase()),
        ThrottleKey::Client(client),
    ];
    let wait = app.throttle.wait(&keys);
    if !wait.is_zero() {
        tracing::warn!(user = %user, %client, "login refused: throttled after failures");
        return Err(ApiError::Throttled(wait));
    }
    let a = app.clone();
    let name = user.clone();
    let outcome = blocking(move || Ok(a.settings.auth.login(&name, &password))).await?;
    match outcome {
        Ok(identity) => {
            app.throttle.succeeded(&keys[0]);
            app.record(
                &identity.name,
                client,
                "login",
                json!({"backend": identity.backend, "role": identity.role.to_string()}),
            )
            .await?;
            Ok(app.sessions.open(identity))
        }
        Err(auth::AuthError::Refused) => {
            let count = app.throttle.failed(&keys);
            tracing::warn!(user = %user, %client, failures = count, "login failed");
            app.record(
                "-",
                client,
                "login_failed",
                json!({"user": user, "failures": count}),
            )
            .await?;
            Err(ApiError::BadLogin)
        }
        Err(auth::AuthError::Unavailable(why)) => Err(ApiError::Unavailable(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_has_no_duplicates_and_every_parameter_is_known() {
        let routes = routes();
        let mut seen = std::collections::HashSet::new();
        for r in &routes {
            assert!(seen.insert((r.method, r.path)), "{r:?} twice");
            let params: Vec<&str> = r.path.split('/').filter(|s| s.starts_with('{')).collect();
            for p in params {
                assert!(
                    ["{id}", "{index}", "{name}", "{token}"].contains(&p),
                    "{r:?}"
                );
            }
            assert_eq!(r.changes, r.method != "GET", "{r:?}");
        }
    }

    /// The role layer on its own: every route's handler replaced by one
    /// that answers "reached" and checks nothing, a user and an auditor are
    /// still answered 404 on the routes above them (and not logged in,
    /// 401), while those allowed reach the handler.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_role_layer_alone_closes_auditors_and_admins_routes() {
        use axum::routing::MethodFilter;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(mailkeep_store::StoreConfig::new(dir.path().join("s"))).unwrap();
        let audit = AuditLog::new(dir.path().join("audit.log"), &store.id());
        let settings = WebSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            base_url: None,
            trusted_proxies: Vec::new(),
            auth: auth::Auth {
                backends: Vec::new(),
                users: users::Users::new(dir.path().join("users.json")),
                auditors: Vec::new(),
                admins: Vec::new(),
                default_domain: None,
                aliases: Default::default(),
                timeout: Duration::from_secs(5),
            },
            session_idle: Duration::from_secs(600),
            session_max: Duration::from_secs(3600),
            max_view_bytes: 1 << 20,
            max_export: 10,
        };
        let app = Arc::new(App::new(settings, vec![store], audit).unwrap());
        let stubs: Vec<(Route, MethodRouter<Shared>)> = routes()
            .into_iter()
            .map(|r| {
                let filter = match r.method {
                    "GET" => MethodFilter::GET,
                    "POST" => MethodFilter::POST,
                    _ => MethodFilter::DELETE,
                };
                (r, axum::routing::on(filter, || async { "reached" }))
            })
            .collect();
        let router = assemble(app.clone(), stubs);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<tls::Peer>(),
            )
            .await
        });
        let session = |role| {
            app.sessions.open(Identity {
                name: format!("{role:?}"),
                role,
                addresses: vec!["x@example.com".into()],
                backend: "imap",
            })
        };
        let request = |route: Route, who: Option<(String, Session)>| async move {
            let path = route
                .path
                .replace("{id}", "1")
                .replace("{index}", "0")
                .replace("{name}", "n")
                .replace("{token}", "t");
            let mut head = format!(
                "{} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n",
                route.method
            );
            if let Some((id, s)) = who {
                head.push_str(&format!(
                    "Cookie: {}={id}\r\nX-CSRF-Token: {}\r\n",
                    session::COOKIE,
                    s.csrf
                ));
            }
            head.push_str("\r\n");
            let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
            c.write_all(head.as_bytes()).await.unwrap();
            let mut reply = String::new();
            c.read_to_string(&mut reply).await.unwrap();
            let status: u16 = reply[9..12].parse().unwrap();
            (status, reply.ends_with("reached"))
        };
        let mut closed = 0;
        for route in routes() {
            let above = |role: Role| match route.access {
                Access::Public | Access::User => false,
                Access::Auditor => role == Role::User,
                Access::Admin => role != Role::Admin,
            };
            for role in [Role::User, Role::Auditor, Role::Admin] {
                let (status, reached) = request(route, Some(session(role))).await;
                if above(role) {
                    closed += 1;
                    assert_eq!((status, reached), (404, false), "{role:?} {route:?}");
                } else {
                    assert_eq!((status, reached), (200, true), "{role:?} {route:?}");
                }
            }
            if matches!(route.access, Access::Auditor | Access::Admin) {
                // The API says 401; a page sends the reader to log in.
                let (status, reached) = request(route, None).await;
                let want = if route.path.starts_with("/api/") {
                    401
                } else {
                    303
                };
                assert!(!reached && status == want, "{route:?}: {status}");
            }
        }
        assert!(closed > 20, "only {closed} refusals");
    }
}
