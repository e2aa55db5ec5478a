//! Sign-in with providers that speak OAuth 2.0 but not OpenID Connect:
//! GitHub (an OAuth app) and Atlassian (OAuth 2.0 "3LO"). There is no ID
//! token, so the person is whoever the provider's own API says the access
//! token belongs to: GitHub's `/user`, `/user/emails`, `/user/teams` and
//! `/user/orgs`, Atlassian's `/me`. The `oauth2` crate runs the code
//! exchange (with PKCE); a CLI's GitHub token is first checked to belong to
//! this OAuth app (`POST /applications/{client_id}/token`), so a token
//! issued to another app cannot be replayed here.

use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenResponse,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpClientError, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use serde_json::Value;

use super::{ProviderConfig, ProviderKind, WebError};

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    BasicTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Where a provider's endpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorize: String,
    pub token: String,
    /// The device authorization endpoint, for the CLI.
    pub device: Option<String>,
    /// The REST API that says who a token is.
    pub api: String,
}

/// The endpoints of a GitHub (github.com or Enterprise Server at `issuer`)
/// or Atlassian provider; `api_url` overrides the API's base.
pub fn endpoints(cfg: &ProviderConfig) -> Endpoints {
    let web = cfg.issuer.trim_end_matches('/');
    match cfg.kind {
        ProviderKind::GitHub => Endpoints {
            authorize: format!("{web}/login/oauth/authorize"),
            token: format!("{web}/login/oauth/access_token"),
            device: Some(format!("{web}/login/device/code")),
            api: cfg.api_url.clone().unwrap_or_else(|| {
                if web == "https://github.com" {
                    "https://api.github.com".into()
                } else {
                    format!("{web}/api/v3")
                }
            }),
        },
        ProviderKind::Atlassian | ProviderKind::Oidc => Endpoints {
            authorize: format!("{web}/authorize"),
            token: format!("{web}/oauth/token"),
            device: None,
            api: cfg
                .api_url
                .clone()
                .unwrap_or_else(|| "https://api.atlassian.com".into()),
        },
    }
}

fn client(
    cfg: &ProviderConfig,
    secret: Option<&str>,
    redirect: &str,
) -> Result<OAuthClient, WebError> {
    let e = endpoints(cfg);
    let bad = |what: &str| WebError::sign_in(500, format!("{}: bad {what} URL", cfg.name));
    let mut c = oauth2::Client::new(ClientId::new(cfg.client_id.clone()))
        .set_auth_uri(AuthUrl::new(e.authorize).map_err(|_| bad("authorize"))?)
        .set_token_uri(TokenUrl::new(e.token).map_err(|_| bad("token"))?)
        .set_redirect_uri(RedirectUrl::new(redirect.to_string()).map_err(|_| bad("redirect"))?)
        // GitHub and Atlassian both take the credentials in the form.
        .set_auth_type(AuthType::RequestBody);
    if let Some(s) = secret {
        c = c.set_client_secret(ClientSecret::new(s.to_string()));
    }
    Ok(c)
}

/// The provider's authorization URL (state, PKCE S256) and what the
/// callback needs back: the state and the verifier.
pub fn authorize(
    cfg: &ProviderConfig,
    secret: Option<&str>,
    redirect: &str,
) -> Result<(String, String, String), WebError> {
    let c = client(cfg, secret, redirect)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = c
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for s in &cfg.scopes {
        req = req.add_scope(Scope::new(s.clone()));
    }
    if cfg.kind == ProviderKind::Atlassian {
        req = req
            .add_extra_param("audience", "api.atlassian.com")
            .add_extra_param("prompt", "consent");
    }
    let (url, state) = req.url();
    Ok((
        url.to_string(),
        state.secret().clone(),
        verifier.secret().clone(),
    ))
}

/// GitHub answers token errors with `200 OK` and an `error` field; RFC 6749
/// (and the `oauth2` crate) expect a 4xx. Such answers become `400`.
fn fix_error_status(mut resp: HttpResponse) -> HttpResponse {
    if resp.status() == http::StatusCode::OK {
        if let Ok(v) = serde_json::from_slice::<Value>(resp.body()) {
            if v.get("error").is_some() && v.get("access_token").is_none() {
                *resp.status_mut() = http::StatusCode::BAD_REQUEST;
            }
        }
    }
    resp
}

/// `reqwest`, with GitHub's `200 OK` errors turned into `400`s.
struct Quirky<'a>(&'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for Quirky<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = oauth2::AsyncHttpClient::call(self.0, request).await?;
            Ok(fix_error_status(resp))
        })
    }
}

/// Trades the authorization code (with the PKCE verifier) for an access token.
pub async fn exchange(
    cfg: &ProviderConfig,
    secret: Option<&str>,
    redirect: &str,
    code: &str,
    verifier: &str,
    http: &reqwest::Client,
) -> Result<String, WebError> {
    let c = client(cfg, secret, redirect)?;
    let quirky = Quirky(http);
    let tokens = c
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
        .request_async(&quirky)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => WebError::sign_in(
                401,
                format!(
                    "{} refused the authorization code: {}{}",
                    cfg.label,
                    r.error(),
                    r.error_description()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            ),
            RequestTokenError::Request(e) => {
                WebError::sign_in(502, format!("{} could not be reached: {e}", cfg.label))
            }
            other => WebError::sign_in(
                502,
                format!("{}'s token answer is unusable: {other}", cfg.label),
            ),
        })?;
    Ok(tokens.access_token().secret().clone())
}

/// Who an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// Verified email, lower case.
    pub email: Option<String>,
    pub groups: Vec<String>,
}

async fn get_json(
    cfg: &ProviderConfig,
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<Value, WebError> {
    let resp = http
        .get(url)
        .bearer_auth(token)
        .header("accept", "application/vnd.github+json, application/json")
        .header("x-github-api-version", "2022-11-28")
        .header(
            "user-agent",
            concat!("ticket-stamp/", env!("CARGO_PKG_VERSION")),
        )
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| WebError::sign_in(502, format!("{} could not be reached: {e}", cfg.label)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(WebError::sign_in(
            401,
            format!(
                "{} does not accept the token (revoked or expired)",
                cfg.label
            ),
        ));
    }
    if !status.is_success() {
        return Err(WebError::sign_in(
            502,
            format!("{} answered {status} for {url}", cfg.label),
        ));
    }
    // Bounded: a person's record, emails, teams and orgs fit in 1 MiB.
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| WebError::sign_in(502, format!("{}: {e}", cfg.label)))?;
    if bytes.len() > 1 << 20 {
        return Err(WebError::sign_in(
            502,
            format!("{} sent an oversized answer", cfg.label),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|_| {
        WebError::sign_in(
            502,
            format!("{} sent something that is not JSON for {url}", cfg.label),
        )
    })
}

/// Who the token is, by the provider's API.
pub async fn identity(
    cfg: &ProviderConfig,
    token: &str,
    http: &reqwest::Client,
) -> Result<Identity, WebError> {
    let api = endpoints(cfg).api;
    let malformed =
        |what: &str| WebError::sign_in(502, format!("{} sent a malformed {what}", cfg.label));
    match cfg.kind {
        ProviderKind::GitHub => {
            let user = get_json(cfg, http, &format!("{api}/user"), token).await?;
            let id = user["id"].as_u64().ok_or_else(|| malformed("user"))?;
            // The primary address, only if GitHub has verified it.
            let emails = get_json(cfg, http, &format!("{api}/user/emails?per_page=100"), token)
                .await
                .unwrap_or(Value::Null);
            let email = emails.as_array().and_then(|list| {
                list.iter()
                    .find(|e| e["primary"] == true && e["verified"] == true)
                    .and_then(|e| e["email"].as_str())
                    .map(str::to_ascii_lowercase)
            });
            let mut groups = Vec::new();
            if let Ok(Value::Array(orgs)) =
                get_json(cfg, http, &format!("{api}/user/orgs?per_page=100"), token).await
            {
                groups.extend(
                    orgs.iter()
                        .filter_map(|o| o["login"].as_str().map(String::from)),
                );
            }
            if let Ok(Value::Array(teams)) =
                get_json(cfg, http, &format!("{api}/user/teams?per_page=100"), token).await
            {
                groups.extend(teams.iter().filter_map(|t| {
                    Some(format!(
                        "{}/{}",
                        t["organization"]["login"].as_str()?,
                        t["slug"].as_str()?
                    ))
                }));
            }
            Ok(Identity {
                subject: id.to_string(),
                email,
                groups,
            })
        }
        ProviderKind::Atlassian | ProviderKind::Oidc => {
            let me = get_json(cfg, http, &format!("{api}/me"), token).await?;
            let subject = me["account_id"]
                .as_str()
                .ok_or_else(|| malformed("profile"))?
                .to_string();
            let verified = me["email_verified"].as_bool() == Some(true);
            let email = me["email"]
                .as_str()
                .filter(|_| verified)
                .map(str::to_ascii_lowercase);
            Ok(Identity {
                subject,
                email,
                groups: Vec::new(),
            })
        }
    }
}

/// Checks that a GitHub token was issued to this OAuth app (the CLI's
/// device flow), with the app's own credentials.
pub async fn check_app_token(
    cfg: &ProviderConfig,
    secret: Option<&str>,
    token: &str,
    http: &reqwest::Client,
) -> Result<(), WebError> {
    let Some(secret) = secret else {
        return Err(WebError::sign_in(
            400,
            format!(
                "{} has no client secret, so a CLI token cannot be checked (client_secret_env)",
                cfg.label
            ),
        ));
    };
    let api = endpoints(cfg).api;
    let url = format!("{api}/applications/{}/token", cfg.client_id);
    let resp = http
        .post(&url)
        .basic_auth(&cfg.client_id, Some(secret))
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header(
            "user-agent",
            concat!("ticket-stamp/", env!("CARGO_PKG_VERSION")),
        )
        .json(&serde_json::json!({ "access_token": token }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| WebError::sign_in(502, format!("{} could not be reached: {e}", cfg.label)))?;
    match resp.status().as_u16() {
        200 => Ok(()),
        404 | 422 => Err(WebError::sign_in(
            401,
            format!("the token was not issued to this proxy's {} app", cfg.label),
        )),
        s => Err(WebError::sign_in(
            502,
            format!("{} answered {s} when checking the token", cfg.label),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn github_errors_in_a_200_become_errors() {
        let mut ok = HttpResponse::new(br#"{"access_token":"x","token_type":"bearer"}"#.to_vec());
        *ok.status_mut() = http::StatusCode::OK;
        assert_eq!(fix_error_status(ok).status(), http::StatusCode::OK);
        let err = HttpResponse::new(br#"{"error":"bad_verification_code"}"#.to_vec());
        assert_eq!(
            fix_error_status(err).status(),
            http::StatusCode::BAD_REQUEST
        );
        let text = HttpResponse::new(b"<html>".to_vec());
        assert_eq!(fix_error_status(text).status(), http::StatusCode::OK);
    }
}
