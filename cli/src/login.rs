//! `stamp login` and `stamp logout`: signing in to a proxy with the
//! company's identity provider, and the token cache.
//!
//! The proxy names its providers at `/__stamp/sign-in`. `stamp login` runs
//! the device authorization grant (RFC 8628) against the provider with its
//! public CLI client (the `oauth2` crate does the polling, `slow_down` and
//! expiry included), then trades the ID token at the proxy for a proxy
//! token that lasts an hour. The proxy token and the provider's refresh
//! token are kept per server in `credentials.json` in the user's config
//! directory (mode 0600); an expired proxy token is renewed with the
//! refresh token before a request. `STAMP_TOKEN` and `--token` still win.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, DeviceAuthorizationUrl, EndpointNotSet, EndpointSet, ExtraTokenFields,
    RefreshToken, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Failure, Kind};

/// The ID token in a token response (OpenID Connect adds it to OAuth's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default)]
    pub id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type Tokens = StandardTokenResponse<IdTokenField, BasicTokenType>;
type DeviceClient = oauth2::Client<
    BasicErrorResponse,
    Tokens,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// One server's saved sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub provider: String,
    pub name: String,
    pub role: String,
    /// The proxy token (`stp1.…`).
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// A provider without ID tokens (GitHub): its access token, traded
    /// again at the proxy when the proxy token expires.
    #[serde(default)]
    pub access_token: Option<String>,
    pub token_endpoint: String,
    pub client_id: String,
}

/// Where sign-ins are kept: `$STAMP_CREDENTIALS`, else on Windows
/// `%APPDATA%\ticket-stamp\credentials.json` (where `HOME` is usually
/// unset), else `$XDG_CONFIG_HOME/ticket-stamp/credentials.json`, else
/// `~/.config/ticket-stamp/credentials.json`.
pub fn credentials_path() -> Option<PathBuf> {
    credentials_path_in(|name| std::env::var_os(name), cfg!(windows))
}

/// [`credentials_path`] with the environment and the platform given, so
/// every platform's rule is tested on any.
fn credentials_path_in(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    windows: bool,
) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("STAMP_CREDENTIALS") {
        return Some(p);
    }
    let base = if windows {
        var("APPDATA").or_else(|| var("USERPROFILE").map(|h| h.join("AppData").join("Roaming")))
    } else {
        None
    }
    .or_else(|| var("XDG_CONFIG_HOME"))
    .or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(base.join("ticket-stamp").join("credentials.json"))
}

fn load() -> BTreeMap<String, Saved> {
    credentials_path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn store(all: &BTreeMap<String, Saved>) -> anyhow::Result<PathBuf> {
    let path = credentials_path().ok_or_else(|| {
        Failure::new(
            Kind::Usage,
            "no config directory to keep the sign-in in (set HOME, or APPDATA on Windows, or STAMP_CREDENTIALS)",
        )
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    // A new file of our own (never an existing one or a symlink planted in
    // its place), renamed over the old one.
    let tmp = path.with_extension(format!(
        "json.{}.{:x}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(all)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn http() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        // Redirects would let an answer send the device code elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("stamp/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// GitHub answers token errors (`authorization_pending` included) with
/// `200 OK`; RFC 6749 and the `oauth2` crate expect a 4xx, so such answers
/// are given `400` before the crate reads them.
fn quirk_tolerant(
    http: &reqwest::blocking::Client,
) -> impl Fn(
    oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, oauth2::HttpClientError<reqwest::Error>>
       + '_ {
    move |req| {
        let mut resp = oauth2::SyncHttpClient::call(http, req)?;
        if resp.status() == reqwest::StatusCode::OK {
            if let Ok(v) = serde_json::from_slice::<Value>(resp.body()) {
                if v.get("error").is_some() && v.get("access_token").is_none() {
                    *resp.status_mut() = reqwest::StatusCode::BAD_REQUEST;
                }
            }
        }
        Ok(resp)
    }
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(Kind::Connection, format!("{what}: {e}"))
}

/// A provider as the proxy describes it.
#[derive(Debug, Deserialize)]
struct Described {
    name: String,
    label: String,
    #[serde(default)]
    cli: Option<CliEndpoints>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CliEndpoints {
    client_id: String,
    device_authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

fn client(client_id: &str, device: &str, token: &str) -> anyhow::Result<DeviceClient> {
    let bad = |what: &str, u: &str| {
        Failure::new(
            Kind::Connection,
            format!("the proxy named an unusable {what} URL: {u}"),
        )
    };
    Ok(oauth2::Client::new(ClientId::new(client_id.to_string()))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(device.to_string()).map_err(|_| bad("device", device))?,
        )
        .set_token_uri(TokenUrl::new(token.to_string()).map_err(|_| bad("token", token))?))
}

/// `stamp login [--provider NAME]`.
pub fn login(server: &str, provider: Option<&str>, json: bool) -> anyhow::Result<()> {
    // The proxy names the provider's endpoints and receives the ID token:
    // only over TLS, unless it is this machine.
    let loopback = url::Url::parse(server).ok().is_some_and(|u| {
        matches!(
            u.host(),
            Some(url::Host::Ipv4(a)) if a.is_loopback()
        ) || matches!(u.host(), Some(url::Host::Ipv6(a)) if a.is_loopback())
            || u.host_str() == Some("localhost")
    });
    if !server.starts_with("https://") && !loopback {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "{server} is not https: stamp login signs in only over TLS (or to this machine)"
            ),
        )
        .into());
    }
    let http = http()?;
    let url = format!("{server}/__stamp/sign-in");
    let resp = http
        .get(&url)
        .send()
        .map_err(|e| unreachable(&format!("cannot reach {url}"), e))?;
    if !resp.status().is_success() {
        return Err(Failure::new(
            Kind::Connection,
            format!(
                "{url} answered {}: is this a stamp-proxy with [[sign_in]]?",
                resp.status()
            ),
        )
        .into());
    }
    let described: Value = resp
        .json()
        .map_err(|e| unreachable(&format!("{url} did not answer JSON"), e))?;
    let providers: Vec<Described> =
        serde_json::from_value(described["providers"].clone()).unwrap_or_default();
    let usable: Vec<&Described> = providers.iter().filter(|p| p.cli.is_some()).collect();
    let chosen = match provider {
        Some(name) => providers.iter().find(|p| p.name == name).ok_or_else(|| {
            Failure::new(
                Kind::Usage,
                format!(
                    "{server} has no identity provider `{name}` (it has: {})",
                    names(&providers)
                ),
            )
        })?,
        None => match usable.as_slice() {
            [only] => *only,
            [] if providers.is_empty() => {
                return Err(Failure::new(
                    Kind::Usage,
                    format!("{server} has no [[sign_in]] provider: use an API token (STAMP_TOKEN)"),
                )
                .into())
            }
            [] => providers
                .first()
                .ok_or_else(|| Failure::new(Kind::Usage, "no provider"))?,
            _ => {
                return Err(Failure::new(
                    Kind::Usage,
                    format!(
                        "{server} has several identity providers: pick one with --provider ({})",
                        names(&providers)
                    ),
                )
                .into())
            }
        },
    };
    if let Some(e) = &chosen.error {
        return Err(Failure::new(Kind::Connection, e.clone()).into());
    }
    let Some(cli) = &chosen.cli else {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "{} is not set up for the CLI (the proxy's sign_in.cli_client_id): use an API token",
                chosen.label
            ),
        )
        .into());
    };
    let (Some(device), Some(token)) = (&cli.device_authorization_endpoint, &cli.token_endpoint)
    else {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "{} offers no device authorization endpoint, so the CLI cannot sign in with it: \
                 use an API token (STAMP_TOKEN)",
                chosen.label
            ),
        )
        .into());
    };
    let oauth = client(&cli.client_id, device, token)?;
    let mut req = oauth.exchange_device_code();
    for s in cli.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let details: StandardDeviceAuthorizationResponse = req
        .add_scopes(
            cli.scopes
                .iter()
                .any(|s| s == "openid")
                .then(|| Scope::new("openid".into())),
        )
        .request(&quirk_tolerant(&http))
        .map_err(|e| token_error(&chosen.label, e))?;
    let verify = details.verification_uri().to_string();
    let code = details.user_code().secret().to_string();
    let complete = details
        .verification_uri_complete()
        .map(|u| u.secret().to_string());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "device-code",
                "verification_uri": verify,
                "verification_uri_complete": complete,
                "user_code": code,
                "provider": chosen.name,
            })
        );
    } else {
        eprintln!("Signing in to {server} with {}.", chosen.label);
        eprintln!("Open {verify}");
        eprintln!("and enter the code {code}");
        if let Some(c) = &complete {
            eprintln!("(or open {c})");
        }
        eprintln!("Waiting for the sign-in…");
    }
    let _ = std::io::stdout().flush();
    let tokens: Tokens = oauth
        .exchange_device_access_token(&details)
        .request(&quirk_tolerant(&http), std::thread::sleep, None)
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => Failure::new(
                Kind::Connection,
                format!(
                    "{} did not sign you in: {}{}",
                    chosen.label,
                    r.error(),
                    r.error_description()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            ),
            other => unreachable(&format!("{} could not be reached", chosen.label), other),
        })?;
    let saved = trade(server, &chosen.name, &tokens, token, &cli.client_id, None)?;
    let mut all = load();
    let (name, role) = (saved.name.clone(), saved.role.clone());
    all.insert(server.to_string(), saved);
    let path = store(&all)?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "event": "signed-in", "name": name, "role": role, "server": server })
        );
    } else {
        println!(
            "Signed in to {server} as {name} ({role}); kept in {}",
            path.display()
        );
    }
    Ok(())
}

fn names(p: &[Described]) -> String {
    p.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn token_error<E: std::error::Error + 'static>(
    label: &str,
    e: RequestTokenError<E, BasicErrorResponse>,
) -> Failure {
    match e {
        RequestTokenError::ServerResponse(r) => Failure::new(
            Kind::Connection,
            format!(
                "{label} refused the device sign-in: {}{}",
                r.error(),
                r.error_description()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        ),
        other => unreachable(&format!("{label} could not be reached"), other),
    }
}

/// Trades the provider's ID token at the proxy for a proxy token.
fn trade(
    server: &str,
    provider: &str,
    tokens: &Tokens,
    token_endpoint: &str,
    client_id: &str,
    old_refresh: Option<&str>,
) -> anyhow::Result<Saved> {
    // OpenID providers send an ID token; GitHub only an access token,
    // which the proxy checks with GitHub itself.
    let access = tokens.access_token().secret().clone();
    let body = match &tokens.extra_fields().id_token {
        Some(id_token) => serde_json::json!({ "id_token": id_token }),
        None => serde_json::json!({ "access_token": access }),
    };
    let url = format!("{server}/__stamp/sign-in/{provider}/token");
    let resp = http()?
        .post(&url)
        .json(&body)
        .send()
        .map_err(|e| unreachable(&format!("cannot reach {url}"), e))?;
    let status = resp.status();
    let v: Value = resp.json().unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or("refused")
            .to_string();

        return Err(Failure::new(
            Kind::Connection,
            format!("the proxy refused the sign-in: {msg}"),
        )
        .into());
    }
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok(Saved {
        provider: provider.to_string(),
        name: text("name"),
        role: text("role"),
        token: text("token"),
        expires_at: now_secs() + v["expires_in"].as_u64().unwrap_or(3600),
        // A provider that does not rotate refresh tokens keeps the old one valid.
        refresh_token: tokens
            .refresh_token()
            .map(|r| r.secret().clone())
            .or_else(|| old_refresh.map(str::to_string)),
        access_token: tokens.extra_fields().id_token.is_none().then_some(access),
        token_endpoint: token_endpoint.to_string(),
        client_id: client_id.to_string(),
    })
}

/// `stamp logout`: forgets the server's sign-in. Returns whether there was one.
/// What `stamp logout` did.
#[derive(Debug, PartialEq, Eq)]
pub enum LoggedOut {
    NotSignedIn,
    /// The proxy revoked the token on every proxy of its fleet.
    Revoked,
    /// Forgotten here, but the proxy did not revoke it (why).
    ForgottenOnly(String),
}

/// Signs out of `server`: the proxy revokes the token (so a copy of it is
/// refused too), and it is forgotten here whatever the proxy said.
pub fn logout(server: &str) -> anyhow::Result<LoggedOut> {
    let mut all = load();
    let Some(saved) = all.remove(server) else {
        return Ok(LoggedOut::NotSignedIn);
    };
    store(&all)?;
    let url = format!("{}/__stamp/session", server.trim_end_matches('/'));
    let answer = http().and_then(|c| {
        Ok(c.delete(&url)
            .bearer_auth(&saved.token)
            .timeout(std::time::Duration::from_secs(10))
            .send()?)
    });
    Ok(match answer {
        Ok(r) if r.status().is_success() => LoggedOut::Revoked,
        Ok(r) => LoggedOut::ForgottenOnly(format!("the proxy answered {}", r.status())),
        Err(e) => LoggedOut::ForgottenOnly(format!("the proxy could not be reached: {e}")),
    })
}

/// The saved proxy token for `server`, renewed with the refresh token
/// when it has expired (or will within a minute). `None`: no sign-in kept.
pub fn saved_token(server: &str, verbose: bool) -> anyhow::Result<Option<String>> {
    let mut all = load();
    let Some(saved) = all.get(server).cloned() else {
        return Ok(None);
    };
    if saved.expires_at > now_secs() + 60 {
        if verbose {
            eprintln!(
                "* token: the sign-in of {} ({})",
                saved.name, saved.provider
            );
        }
        return Ok(Some(saved.token));
    }
    let expired = || {
        Failure::new(
            Kind::Connection,
            format!(
                "your sign-in to {server} as {} has expired: run `stamp login`",
                saved.name
            ),
        )
        .into()
    };
    let Some(refresh) = saved.refresh_token.clone() else {
        // GitHub: no refresh, the access token is traded again (and its
        // person's teams and role read again).
        if let Some(access) = saved.access_token.clone() {
            if verbose {
                eprintln!(
                    "* token: renewing the sign-in of {} with {}",
                    saved.name, saved.provider
                );
            }
            let tokens: Tokens = serde_json::from_value(serde_json::json!({
                "access_token": access,
                "token_type": "bearer",
            }))?;
            let renewed = trade(
                server,
                &saved.provider,
                &tokens,
                &saved.token_endpoint,
                &saved.client_id,
                None,
            )
            .map_err(|_| expired())?;
            let token = renewed.token.clone();
            all.insert(server.to_string(), renewed);
            store(&all)?;
            return Ok(Some(token));
        }
        return Err(expired());
    };
    if verbose {
        eprintln!(
            "* token: renewing the sign-in of {} with {}",
            saved.name, saved.provider
        );
    }
    // The device endpoint is not used for a refresh; the token endpoint is.
    let oauth = client(
        &saved.client_id,
        &saved.token_endpoint,
        &saved.token_endpoint,
    )?;
    let http = http()?;
    let tokens: Tokens = match oauth
        .exchange_refresh_token(&RefreshToken::new(refresh.clone()))
        .request(&quirk_tolerant(&http))
    {
        Ok(t) => t,
        Err(RequestTokenError::ServerResponse(_)) => return Err(expired()),
        Err(e) => return Err(unreachable("the identity provider could not be reached", e).into()),
    };
    let renewed = trade(
        server,
        &saved.provider,
        &tokens,
        &saved.token_endpoint,
        &saved.client_id,
        Some(&refresh),
    )?;
    let token = renewed.token.clone();
    all.insert(server.to_string(), renewed);
    store(&all)?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_live_where_each_platform_keeps_them() {
        fn env<'a>(
            vars: &'a [(&'static str, &'static str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let path = |vars: &[(&'static str, &'static str)], windows| {
            credentials_path_in(env(vars), windows)
        };
        let file = |base: PathBuf| base.join("ticket-stamp").join("credentials.json");
        assert_eq!(
            path(&[("HOME", "/home/ada")], false),
            Some(file(PathBuf::from("/home/ada/.config")))
        );
        assert_eq!(
            path(&[("HOME", "/home/ada"), ("XDG_CONFIG_HOME", "/cfg")], false),
            Some(file(PathBuf::from("/cfg")))
        );
        // Windows: HOME is usually unset; APPDATA, else the profile's
        // roaming folder.
        assert_eq!(
            path(&[("APPDATA", r"C:\Users\ada\AppData\Roaming")], true),
            Some(file(PathBuf::from(r"C:\Users\ada\AppData\Roaming")))
        );
        assert_eq!(
            path(&[("USERPROFILE", r"C:\Users\ada")], true),
            Some(file(
                PathBuf::from(r"C:\Users\ada")
                    .join("AppData")
                    .join("Roaming")
            ))
        );
        assert_eq!(
            path(
                &[("STAMP_CREDENTIALS", "/x/c.json"), ("APPDATA", "/a")],
                true
            ),
            Some(PathBuf::from("/x/c.json"))
        );
        assert_eq!(path(&[("HOME", "")], false), None);
        assert_eq!(path(&[], true), None);
    }
}
