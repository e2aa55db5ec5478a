//! The control plane's HTTP side: the router over `/__stamp/` (panel
//! assets, sessions, sign-in, the API, the event stream), with one error
//! type for every refusal ([`WebError`]).

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod panel;
pub(crate) mod signin;
pub(crate) mod slack;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use stamp_model::wire::{self, ErrorCode};
use stamp_store::SharedStore;

use crate::config::ControlConfig;
use crate::identity::Principal;
use crate::Body;
pub use error::WebError;
use stamp_model::share::now_secs;

/// Routes a request under `/__stamp/` to the panel, sign-in or the API.
pub(crate) struct Router {
    pub(crate) cfg: Arc<ControlConfig>,
    pub(crate) store: SharedStore,
    pub(crate) api: api::Api,
    pub(crate) sessions: auth::Sessions,
    pub(crate) sign_in: signin::SignIn,
}

impl Router {
    /// The largest request body a request may send.
    pub(crate) fn body_limit(&self, head: &http::request::Parts) -> usize {
        let path = head.uri.path();
        if head.method == Method::PUT && path.starts_with(wire::API_PREFIX) {
            usize::try_from(self.cfg.api.max_module_bytes).unwrap_or(usize::MAX)
        } else if path == "/__stamp/session" {
            panel::MAX_SIGN_IN
        } else {
            wire::MAX_JSON
        }
    }

    /// Answers one request under `/__stamp/` (besides health and metrics).
    pub(crate) async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !self.cfg.on_control_host(host) {
            // The app's host: scripts there must not reach the panel or
            // the API; only the preview pass is handed over here.
            if path == "/__stamp/pass" {
                return self.pass_handoff(&req);
            }
            return error(
                404,
                ErrorCode::NotFound,
                format!(
                    "the panel and the API answer at {}/__stamp/ (control_url)",
                    self.cfg.control_base()
                ),
            );
        }
        // Open mode trusts whoever reaches the loopback listener; a page
        // whose domain re-resolves to 127.0.0.1 (DNS rebinding) reaches it
        // too, under its own name. So open mode answers only to a loopback
        // name, or the configured public or control URL's host.
        if self.cfg.tokens.is_empty()
            && self.sign_in.session_keys().is_empty()
            && !host.is_some_and(|h| loopback_host(h) || self.cfg.names_host(h))
        {
            return error(
                403,
                ErrorCode::Forbidden,
                format!(
                    "the open control API answers only at a loopback address (localhost, 127.0.0.1, [::1]), \
                     not at Host {:?}: a page on another domain may resolve to this machine; \
                     configure [[tokens]] or public_url",
                    host.unwrap_or_default()
                ),
            );
        }
        if let Some(asset) = panel::asset(&path) {
            return asset;
        }
        // Slack's servers, not a browser: proven by Slack's signature.
        if path == slack::PATH && req.method() == Method::POST {
            return self.slack_actions(&req).await;
        }
        if let Some(why) = foreign_write(&req, &self.cfg.link_base()) {
            return error(403, ErrorCode::Forbidden, why);
        }
        if path == "/__stamp/session" {
            if req.method() == Method::POST {
                if let Some(refusal) = not_json(&req) {
                    return refusal;
                }
            }
            if req.method() == Method::DELETE {
                return self.sign_out(&req).await;
            }
            return panel::session_endpoint(
                &req,
                &self.cfg.tokens.load(),
                &self.sessions,
                self.cfg.secure_cookies(),
                &self.sign_in,
                &|p| self.viewer_cookie(p),
            );
        }
        if let Some(resp) = self.sign_in_routes(&req, &path).await {
            return resp;
        }
        let providers = self.sign_in.session_keys();
        let principal = || {
            panel::principal(
                req.method(),
                req.headers(),
                &self.cfg.tokens.load(),
                &self.sessions,
                &providers,
            )
        };
        if let Some(rest) = path.strip_prefix(wire::API_PREFIX) {
            let p = match principal() {
                Ok(p) => p,
                Err(r) => return r.response(),
            };
            // Only through the route table: what the description publishes.
            let matched = match api::routes::route(req.method().as_str(), rest) {
                Ok(m) => m,
                Err(miss) => return unrouted(miss, req.method(), &path),
            };
            if matched.route.op == api::routes::Op::Events {
                return panel::events(&self.store, &p.name);
            }
            if req.method() == Method::POST {
                if let Some(refusal) = not_json(&req) {
                    return refusal;
                }
            }
            return match self.api.handle(matched, &req, &p).await {
                Ok((status, value)) => error::json(status, value),
                Err(e) => e.response(),
            };
        }
        error(
            404,
            ErrorCode::NotFound,
            "no such endpoint under /__stamp/ (see /__stamp/health, /__stamp/metrics)",
        )
    }
}

impl Router {
    /// Single sign-on's routes: `/__stamp/login[/{provider}]`,
    /// `/__stamp/callback`, `/__stamp/sign-in` and
    /// `/__stamp/sign-in/{provider}/token`.
    async fn sign_in_routes(&self, req: &Request<Bytes>, path: &str) -> Option<Response<Body>> {
        let query = |k: &str| {
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        if path == "/__stamp/login" && get {
            let next = self.sign_in.next(query("next").as_deref());
            let names = self.sign_in.names();
            let to = match names.as_slice() {
                [only] => format!(
                    "/__stamp/login/{only}?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                ),
                // The panel: its sign-in form (tokens, or a choice of
                // providers) sends the browser on to `next`.
                _ => format!(
                    "/__stamp/?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                ),
            };
            return Some(signin::signed_in_redirect(&to, &[]));
        }
        if let Some(name) = path.strip_prefix("/__stamp/login/") {
            if !get {
                return Some(error(405, ErrorCode::MethodNotAllowed, "GET"));
            }
            let next = query("next");
            return Some(
                self.sign_in
                    .start(name, next.as_deref(), &self.sessions)
                    .await,
            );
        }
        if path == "/__stamp/callback" {
            if !get {
                return Some(error(405, ErrorCode::MethodNotAllowed, "GET"));
            }
            let result = self
                .sign_in
                .callback(req, &self.sessions)
                .await
                .and_then(|(p, next)| self.not_a_token(p).map(|p| (p, next)));
            return Some(match result {
                Ok((p, next)) => {
                    log::info!(
                        "sign-in: {} signed in with {:?} as {}",
                        p.name,
                        p.via,
                        p.role
                    );
                    let value = self.sessions.mint(&p);
                    let ttl = self.sessions.ttl().as_secs();
                    let mut cookies = vec![
                        panel::cookie(&value, ttl, self.cfg.secure_cookies()),
                        format!(
                            "{}=; Path=/__stamp/; Max-Age=0; HttpOnly; SameSite=Lax",
                            signin::LOGIN_COOKIE
                        ),
                    ];
                    if next.starts_with('/') {
                        cookies.extend(self.viewer_cookie(&p));
                        signin::signed_in_redirect(&next, &cookies)
                    } else {
                        // Back to the app on its own host: the preview pass
                        // is handed over there, by a short-lived grant.
                        let to = match self.viewer_pass(&p) {
                            Some(pass) => self.pass_grant_url(&pass, &next),
                            None => next.clone(),
                        };
                        signin::signed_in_redirect(&to, &cookies)
                    }
                }
                Err(f) => {
                    log::info!("sign-in refused: {}", f.message());
                    signin::failure_page(f, None)
                }
            });
        }
        if path == "/__stamp/sign-in" && get {
            return Some(panel::json_reply(200, self.sign_in.describe().await, None));
        }
        if let Some(name) = path
            .strip_prefix("/__stamp/sign-in/")
            .and_then(|r| r.strip_suffix("/token"))
        {
            if *req.method() != Method::POST {
                return Some(error(405, ErrorCode::MethodNotAllowed, "POST"));
            }
            if let Some(refusal) = not_json(req) {
                return Some(refusal);
            }
            let result = self
                .sign_in
                .cli_token(name, req.body())
                .await
                .and_then(|p| self.not_a_token(p));
            return Some(match result {
                Ok(p) => {
                    let ttl = signin::CLI_TOKEN_TTL;
                    let token = self.sessions.mint_bearer(&p, ttl);
                    log::info!("sign-in: {} signed in to the CLI as {}", p.name, p.role);
                    panel::json_reply(
                        200,
                        serde_json::json!({
                            "token": token,
                            "expires_in": ttl.as_secs(),
                            "name": p.name,
                            "role": p.role.as_str(),
                        }),
                        None,
                    )
                }
                Err(f) => {
                    log::info!("CLI sign-in refused: {}", f.message());
                    f.response()
                }
            });
        }
        None
    }

    /// A signed-in person named like a machine token would share its
    /// sign-offs and history: refused.
    fn not_a_token(&self, p: Principal) -> Result<Principal, WebError> {
        if self.cfg.tokens.load().iter().any(|t| t.name == p.name) {
            return Err(WebError::sign_in(
                403,
                format!(
                    "{} has the name of a [[tokens]] entry: rename the token",
                    p.name
                ),
            ));
        }
        Ok(p)
    }

    /// `DELETE /__stamp/session`: ends the panel session (and the preview
    /// pass); for a sign-in session, names the provider's logout URL too.
    async fn sign_out(&self, req: &Request<Bytes>) -> Response<Body> {
        let providers = self.sign_in.session_keys();
        let cookie = auth::session_cookie(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        );
        let who = cookie
            .as_deref()
            .and_then(|c| self.sessions.verify(c, &self.cfg.tokens.load(), &providers));
        // The session ends here and on every proxy sharing the store, not
        // only in this browser: a copy of the cookie is refused from now on.
        // `stamp logout` sends its proxy token the same way.
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| {
                self.sessions
                    .verify_bearer(t, &self.cfg.tokens.load(), &providers)
                    .is_some()
            })
            .and_then(|t| self.sessions.bearer_revocation(t));
        let session = cookie
            .as_deref()
            .filter(|_| who.is_some())
            .and_then(|c| self.sessions.revocation(c));
        // The preview pass set with the session ends with it.
        let pass = self.cfg.preview.as_ref().and_then(|preview| {
            let pass = cookie_named(req, stamp_model::share::PASS_COOKIE)?;
            preview.signer().verify_pass(Some(&pass))?;
            stamp_model::share::pass_revocation(&pass)
        });
        for (id, until_ms) in session.into_iter().chain(bearer).chain(pass) {
            self.sessions
                .revoked()
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id.clone());
            if let Err(e) = self.store.revoke(&id, until_ms).await {
                log::warn!("a signed-out session is refused here, but the store did not take it for the fleet: {e}");
            }
        }
        let logout = match who.map(|p| p.via) {
            Some(crate::identity::Via::SignIn(provider)) => {
                self.sign_in.logout_url(&provider).await
            }
            _ => None,
        };
        let mut resp = panel::json_reply(
            200,
            serde_json::json!({ "logout": logout }),
            Some(panel::cookie("", 0, self.cfg.secure_cookies())),
        );
        if let Some(c) = self.clear_viewer_cookie() {
            if let Ok(v) = header::HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// The preview pass set with a session, when previews accept signed-in
    /// people (it names the role only).
    fn viewer_cookie(&self, p: &Principal) -> Option<String> {
        self.viewer_pass(p).map(|pass| self.pass_cookie(&pass))
    }

    /// A preview pass for `p`, when previews accept signed-in people.
    fn viewer_pass(&self, p: &Principal) -> Option<String> {
        let preview = self.cfg.preview.as_ref()?;
        // Every signed-in role gets a pass: the data plane refuses the
        // roles that may not open previews with a reason, where no pass
        // would send the browser back to sign in, again and again.
        if preview.access == stamp_model::share::Access::ShareLink {
            return None;
        }
        let ttl = self.sessions.ttl().as_secs();
        Some(preview.signer().mint_pass(p.role, now_secs() + ttl))
    }

    /// `<public_url>/__stamp/pass?grant=…`: the app's host sets the pass
    /// from a grant sealed for one minute, then goes on to the page.
    fn pass_grant_url(&self, pass: &str, next: &str) -> String {
        let base = self.cfg.link_base();
        let path = next.strip_prefix(&base).unwrap_or("/");
        let grant = serde_json::json!({ "pass": pass, "next": path, "exp": now_secs() + 60 });
        let sealed = self.sessions.seal("pass-grant", &grant.to_string());
        format!(
            "{base}/__stamp/pass?grant={}",
            url::form_urlencoded::byte_serialize(sealed.as_bytes()).collect::<String>()
        )
    }

    /// `GET /__stamp/pass?grant=…` on the app's host.
    fn pass_handoff(&self, req: &Request<Bytes>) -> Response<Body> {
        let grant = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "grant")
            .map(|(_, v)| v.into_owned());
        let opened = grant
            .as_deref()
            .and_then(|g| self.sessions.open("pass-grant", g))
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .filter(|v| v["exp"].as_u64().is_some_and(|e| e > now_secs()));
        let Some(v) = opened else {
            return WebError::new(
                400,
                ErrorCode::BadRequest,
                "This sign-in link is not valid any more: open the preview link again.",
            )
            .for_a_person("Sign-in", None)
            .response();
        };
        let pass = v["pass"].as_str().unwrap_or_default();
        let next = signin::safe_next(v["next"].as_str(), None);
        let next = if next == "/__stamp/" {
            "/".to_string()
        } else {
            next
        };
        signin::signed_in_redirect(&next, &[self.pass_cookie(pass)])
    }

    fn pass_cookie(&self, pass: &str) -> String {
        format!(
            "{}={pass}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            stamp_model::share::PASS_COOKIE,
            self.sessions.ttl().as_secs(),
            if self.cfg.secure_cookies() {
                "; Secure"
            } else {
                ""
            }
        )
    }

    fn clear_viewer_cookie(&self) -> Option<String> {
        let preview = self.cfg.preview.as_ref()?;
        (preview.access != stamp_model::share::Access::ShareLink).then(|| {
            format!(
                "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
                stamp_model::share::PASS_COOKIE,
                if self.cfg.secure_cookies() {
                    "; Secure"
                } else {
                    ""
                }
            )
        })
    }
}

/// Whether a Host header names this machine's loopback interface:
/// `localhost` (and `*.localhost`, which resolves there by RFC 6761),
/// `127.0.0.0/8` or `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The answer to an API path no route has (404), or has with other
/// methods (405, with `Allow`).
fn unrouted(miss: api::routes::Miss, method: &Method, path: &str) -> Response<Body> {
    match miss {
        api::routes::Miss::NotFound => error(
            404,
            ErrorCode::NotFound,
            format!(
                "no API endpoint {path} (every route is in {}openapi.json)",
                wire::API_PREFIX
            ),
        ),
        api::routes::Miss::MethodNotAllowed(allow) => {
            let mut resp = error(
                405,
                ErrorCode::MethodNotAllowed,
                format!(
                    "{method} is not supported on {path} (only {})",
                    allow.join(", ")
                ),
            );
            if let Ok(v) = header::HeaderValue::from_str(&allow.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            resp
        }
    }
}

/// An error response in the model's envelope.
fn error(status: u16, code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    WebError::new(status, code, message).response()
}

/// A write that another site made a browser send (CSRF), in any auth mode:
/// `Sec-Fetch-Site: cross-site`, or an `Origin` that is neither this
/// proxy's public base nor the request's own host.
fn foreign_write(req: &Request<Bytes>, link_base: &str) -> Option<String> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let hs = req.headers();
    let fetch_site = hs.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site.is_some_and(|v| v.eq_ignore_ascii_case(b"cross-site")) {
        return Some("writes from another site are refused (Sec-Fetch-Site: cross-site)".into());
    }
    let origin = hs.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("null");
    let host = hs.get(header::HOST).and_then(|h| h.to_str().ok());
    let same = origin == link_base
        || host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
    (!same).then(|| format!("writes from another site are refused (Origin: {origin})"))
}

/// A POST with a body that is not `application/json` (a form or `text/plain`
/// POST is what a cross-site page can send without a preflight).
fn not_json(req: &Request<Bytes>) -> Option<Response<Body>> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        error(
            415,
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        )
    })
}

/// A cookie's value by name, from every `Cookie` header of `req`.
fn cookie_named(req: &Request<Bytes>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod host_tests {
    use super::loopback_host;

    #[test]
    fn loopback_names_and_addresses_only() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "rebind.example:8080",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "10.0.0.1",
            "[::2]:80",
            "[::1",
            "[::1]x",
            "",
            "0.0.0.0",
            "2130706433",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
