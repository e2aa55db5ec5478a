//! What a person's browser is sent: redirects and small HTML pages.

use super::*;

pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Full(Bytes::new()));
    *resp.status_mut() = http::StatusCode::FOUND;
    if let Ok(v) = header::HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp.headers_mut().insert(
        "referrer-policy",
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A redirect after a successful sign-in.
pub fn signed_in_redirect(next: &str, cookies: &[String]) -> Response<Body> {
    let mut resp = redirect(next);
    for c in cookies {
        set_cookie(&mut resp, c);
    }
    resp
}

pub(super) fn set_cookie(resp: &mut Response<Body>, c: &str) {
    if let Ok(v) = header::HeaderValue::from_str(c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The page for a failed sign-in; the login cookie is cleared.
pub fn failure_page(f: WebError, provider: Option<&str>) -> Response<Body> {
    f.for_a_person("Sign-in failed", provider)
        .with_cookie(format!(
            "{LOGIN_COOKIE}=; Path=/__stamp/; Max-Age=0; HttpOnly; SameSite=Lax"
        ))
        .response()
}
