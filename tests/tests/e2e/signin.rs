//! Single sign-on: a real OpenID provider (node-oidc-provider) signs people
//! in to the panel in Chromium; a hostile provider speaking the same
//! protocol issues every kind of bad ID token, and none gets a session.

use std::time::Duration;

use serde_json::{json, Value};
use stamp_tests::browser::Browser;
use stamp_tests::fakes::{rsa_key, FakeIdp, FakeOAuth, IdTokenFault};
use stamp_tests::oidc::OidcProvider;
use stamp_tests::{free_port, Origin, Proxy, Route};

const WAIT: Duration = Duration::from_secs(15);

fn app_origin() -> Origin {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"app\":\"/src/app.js\"}}</script>\
             </head><body><p id=\"msg\">production</p><script type=\"module\">import 'app';</script></body></html>",
        ),
    );
    origin.route(
        "/src/app.js",
        Route::bytes(
            "text/javascript",
            b"document.getElementById('msg').textContent = 'production app';".to_vec(),
        ),
    );
    origin
}

/// A proxy on `port` whose people sign in with `issuer` (client
/// `stamp-panel`, CLI client `stamp-cli`); `ci` is a machine token.
fn sso_proxy(
    origin: &Origin,
    dir: &std::path::Path,
    port: u16,
    issuer: &str,
    extra: &str,
) -> Proxy {
    let block = format!(
        "[[sign_in]]\nname = \"corp\"\nlabel = \"Corp ID\"\nissuer = \"{issuer}\"\n\
         client_id = \"stamp-panel\"\nclient_secret_env = \"CORP_OIDC_SECRET\"\n\
         cli_client_id = \"stamp-cli\"\n\
         scopes = [\"openid\", \"email\", \"profile\", \"groups\", \"offline_access\"]\n\
         [sign_in.roles]\nadmin = [\"email:root@example.com\"]\nqa = [\"group:qa\"]\n\
         dev = [\"group:developers\"]\n"
    );
    proxy_with(
        origin,
        dir,
        port,
        &format!("{extra}\n{block}"),
        "panel-secret",
    )
}

/// A proxy on `port` with `config` (a `[[sign_in]]` named `corp` whose
/// secret is in CORP_OIDC_SECRET); `ci` is a machine token.
fn proxy_with(
    origin: &Origin,
    dir: &std::path::Path,
    port: u16,
    config: &str,
    secret: &str,
) -> Proxy {
    let conf = dir.join("sso.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n{config}\n\
             [[tokens]]\nname = \"ci\"\nrole = \"dev\"\nsha256 = \"{}\"\n",
            origin.url,
            dir.join("store").display(),
            stamp_control::hash_token("ci-secret"),
        ),
    )
    .unwrap();
    Proxy::start_with(
        None,
        &[
            "--config",
            &conf.to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[("CORP_OIDC_SECRET", secret)],
    )
    .unwrap()
}

async fn api(proxy: &Proxy, bearer: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    api_at(&proxy.url, bearer, method, path, body).await
}

/// The API at `base` (the panel's own host, when it has one).
async fn api_at(base: &str, bearer: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let resp = stamp_tests::client()
        .request(
            method.parse().unwrap(),
            format!("{base}/__stamp/api/v1/{path}"),
        )
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn ticket_in_qa(proxy: &Proxy, key: &str) {
    ticket_in_qa_at(&proxy.url, key).await
}

async fn ticket_in_qa_at(base: &str, key: &str) {
    let (s, v) = api_at(
        base,
        "ci-secret",
        "PUT",
        &format!("tickets/{key}/modules/src/app.js"),
        "document.getElementById('msg').textContent = 'ticket app';",
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api_at(
        base,
        "ci-secret",
        "POST",
        &format!("tickets/{key}/promote"),
        r#"{"from": "dev"}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Signs in at node-oidc-provider's login and consent pages.
async fn provider_login(browser: &Browser, login: &str) {
    let c = browser.client().unwrap();
    let found = c
        .wait()
        .at_most(WAIT)
        .for_element(fantoccini::Locator::Css("input[name=login]"))
        .await;
    let Ok(input) = found else {
        panic!(
            "no login form at the provider: {} shows {}",
            browser.current_url().await.unwrap(),
            browser.text("body").await.unwrap_or_default()
        );
    };
    input.send_keys(login).await.unwrap();
    c.find(fantoccini::Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("any password")
        .await
        .unwrap();
    browser.click("button.login-submit").await.unwrap();
    // The consent page, the first time this account meets the client.
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT {
        let url = browser.current_url().await.unwrap();
        if url.contains("/interaction/") {
            let consent = browser
                .execute("return !!document.querySelector('input[name=prompt][value=consent]')")
                .await
                .unwrap();
            if consent == true {
                browser.click("button.login-submit").await.unwrap();
                return;
            }
        } else {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn panel_signs_in_with_the_company_provider_and_history_names_the_person() {
    let origin = app_origin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let op = OidcProvider::start(&json!({
        "redirect_uris": [format!("{base}/__stamp/callback")],
        "post_logout_redirect_uris": [format!("{base}/__stamp/")],
        "accounts": {
            "quinn": { "groups": ["qa"], "name": "Quinn Q" },
            "mallory": { "groups": ["sales"] },
        },
    }))
    .unwrap();
    let proxy = sso_proxy(&origin, dir.path(), port, &op.issuer, "");
    ticket_in_qa(&proxy, "SSO-1").await;

    let browser = Browser::start().await.unwrap();
    browser
        .goto(&proxy.url("/__stamp/#/tickets/SSO-1"))
        .await
        .unwrap();
    browser
        .wait_for_text("#providers", "Sign in with Corp ID", WAIT)
        .await
        .unwrap();
    browser.click("a.provider").await.unwrap();
    provider_login(&browser, "quinn").await;
    browser
        .wait_for_text("#who", "quinn@example.com (qa)", WAIT)
        .await
        .unwrap();
    // Back where the sign-in started: the ticket's page.
    browser
        .wait_for_text("#ticket-stage", "qa", WAIT)
        .await
        .unwrap();
    let cookie = browser.cookie("stamp_session").await.unwrap();
    assert!(cookie.is_some(), "a session cookie");

    // The signed-in QA person releases, and history names them.
    browser.click("#do-promote").await.unwrap();
    browser
        .client()
        .unwrap()
        .find(fantoccini::Locator::Css("#confirm-key"))
        .await
        .unwrap()
        .send_keys("SSO-1")
        .await
        .unwrap();
    browser.click("#confirm-go").await.unwrap();
    browser
        .wait_for_text("#ticket-stage", "prod", WAIT)
        .await
        .unwrap();
    let (s, t) = api(&proxy, "ci-secret", "GET", "tickets/SSO-1", "").await;
    assert_eq!(s, 200, "{t}");
    let history = t["history"].as_array().unwrap();
    let release = history
        .iter()
        .rev()
        .find(|e| e["event"] == "promote")
        .unwrap();
    assert_eq!(release["actor"], "quinn@example.com", "{release}");
    assert_eq!(release["to"], "prod");
    assert_eq!(release["role"], "qa");

    // Signing out ends the provider's session too, then comes back here.
    browser.click("#sign-out").await.unwrap();
    let c = browser.client().unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(fantoccini::Locator::Css("button[name=logout]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text("#providers", "Sign in with Corp ID", WAIT)
        .await
        .unwrap();
    assert_eq!(browser.cookie("stamp_session").await.unwrap(), None);

    // Someone the provider knows but no role rule matches: no session.
    browser.click("a.provider").await.unwrap();
    provider_login(&browser, "mallory").await;
    browser
        .wait_for_text("#message", "no role on this proxy matches", WAIT)
        .await
        .unwrap();
    let text = browser.text("#message").await.unwrap();
    assert!(text.contains("mallory@example.com"), "{text}");
    assert_eq!(browser.cookie("stamp_session").await.unwrap(), None);
    browser.close().await.unwrap();
}

/// `name=value` of the `Set-Cookie` for `name` that sets a value.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&prefix) && !c.starts_with(&format!("{prefix};")))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

/// `GET /__stamp/session` with a session cookie: who it is.
async fn session_of(proxy: &Proxy, cookie: &str) -> Value {
    stamp_tests::client()
        .get(proxy.url("/__stamp/session"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Walks the code flow without a browser: the proxy's login redirect, the
/// fake provider's immediate answer, and the callback. Returns the
/// callback's status, its `Location`, the session cookie it set (if any)
/// and its body.
async fn code_flow(proxy: &Proxy, next: &str) -> (u16, Option<String>, Option<String>, String) {
    let client = stamp_tests::client();
    let resp = client
        .get(proxy.url(&format!("/__stamp/login/corp?next={next}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        302,
        "login redirects to the provider"
    );
    let to_provider = resp.headers()["location"].to_str().unwrap().to_string();
    for needle in ["code_challenge=", "code_challenge_method=S256", "state="] {
        assert!(to_provider.contains(needle), "{needle} in {to_provider}");
    }
    let login_cookie = set_cookie(&resp, "stamp_login").unwrap();
    let resp = client.get(&to_provider).send().await.unwrap();
    let callback = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = client
        .get(&callback)
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let session = set_cookie(&resp, "stamp_session");
    (status, location, session, resp.text().await.unwrap())
}

#[tokio::test]
async fn bad_id_tokens_and_bad_answers_never_get_a_session() {
    let keys = tempfile::tempdir().unwrap();
    let key = rsa_key(keys.path(), "idp").unwrap();
    let foreign = rsa_key(keys.path(), "foreign").unwrap();
    let idp = FakeIdp::start(&key, &foreign).unwrap();
    let origin = app_origin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let proxy = sso_proxy(&origin, dir.path(), port, idp.url(), "");

    // A good token: a session, and back to the (same-origin) page asked for.
    let (status, location, session, body) = code_flow(&proxy, "%2Fshop%3Fqa%3DX").await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(location.as_deref(), Some("/shop?qa=X"));
    assert_eq!(
        idp.pkce_verified(),
        Some(true),
        "the code went with its PKCE verifier"
    );
    let session = session.expect("a session cookie");
    let me = session_of(&proxy, &session).await;
    assert_eq!(me["name"], "quinn@example.com");
    assert_eq!(me["role"], "qa");
    assert_eq!(me["provider"], "corp");

    // Within the allowed clock skew is still fine.
    idp.set_fault(IdTokenFault::ExpiredWithinSkew);
    let (status, _, session, body) = code_flow(&proxy, "%2F").await;
    assert_eq!(status, 302, "{body}");
    assert!(session.is_some());

    // An open redirect is not on offer.
    idp.set_fault(IdTokenFault::None);
    let (_, location, _, _) = code_flow(&proxy, "%2F%2Fevil.example%2F").await;
    assert_eq!(location.as_deref(), Some("/__stamp/"));

    for (fault, status, needle) in [
        (IdTokenFault::Expired, 401, "expired"),
        (
            IdTokenFault::IssuedInTheFuture,
            401,
            "clock is more than 60s ahead",
        ),
        (IdTokenFault::WrongAudience, 401, "audience"),
        (IdTokenFault::WrongIssuer, 401, "issuer"),
        (IdTokenFault::ForeignKey, 401, "signature"),
        (IdTokenFault::Unsigned, 401, "refused"),
        (IdTokenFault::WrongNonce, 401, "nonce"),
        (IdTokenFault::Missing, 502, "no ID token"),
    ] {
        idp.set_fault(fault);
        let (got, _, session, body) = code_flow(&proxy, "%2F").await;
        assert_eq!(got, status, "{fault:?}: {body}");
        assert!(
            body.to_lowercase().contains(&needle.to_lowercase()),
            "{fault:?}: `{needle}` in {body}"
        );
        assert_eq!(session, None, "{fault:?} gave a session");
    }

    // An address the provider does not say it verified matches no email
    // or domain rule (root@example.com is admin by email).
    idp.set_fault(IdTokenFault::EmailUnverified);
    idp.set_person("root@example.com", &[]);
    let (got, _, session, body) = code_flow(&proxy, "%2F").await;
    assert_eq!(got, 403, "{body}");
    assert!(
        body.contains("u-1@corp"),
        "named by subject, not the claimed address: {body}"
    );
    assert_eq!(session, None);
    idp.set_fault(IdTokenFault::None);
    let (got, _, _, body) = code_flow(&proxy, "%2F").await;
    assert_eq!(got, 302, "verified, the same address is admin: {body}");

    // A person named like a machine token would share its identity.
    idp.set_person("ci", &["qa"]);
    let (got, _, session, body) = code_flow(&proxy, "%2F").await;
    assert_eq!(got, 403, "{body}");
    assert!(body.contains("[[tokens]]"), "{body}");
    assert_eq!(session, None);

    // Someone no role rule matches.
    idp.set_fault(IdTokenFault::None);
    idp.set_person("eve@example.com", &["sales"]);
    let (got, _, session, body) = code_flow(&proxy, "%2F").await;
    assert_eq!(got, 403, "{body}");
    assert!(body.contains("no role on this proxy matches"), "{body}");
    assert_eq!(session, None);
    idp.set_person("quinn@example.com", &["qa"]);

    // A callback that this browser did not start, or with a changed state,
    // or the provider's own refusal.
    let client = stamp_tests::client();
    let resp = client
        .get(proxy.url("/__stamp/callback?code=c&state=s"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("not started here"));
    let resp = client
        .get(proxy.url("/__stamp/login/corp"))
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookie(&resp, "stamp_login").unwrap();
    let resp = client
        .get(proxy.url("/__stamp/callback?code=c&state=forged"))
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("state mismatch"));
    let tampered = login_cookie.replacen("stamp_login=", "stamp_login=x", 1);
    let resp = client
        .get(proxy.url("/__stamp/callback?code=c&state=s"))
        .header("cookie", &tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "a forged login cookie");

    // The CLI's exchange: an ID token for the CLI client, nothing else.
    let exchange = |body: String| {
        let proxy_url = proxy.url("/__stamp/sign-in/corp/token");
        async move {
            let resp = stamp_tests::client()
                .post(proxy_url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let s = resp.status().as_u16();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = exchange(json!({ "id_token": idp.mint("stamp-cli") }).to_string()).await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("stp1."), "{token}");
    assert_eq!(v["role"], "qa");
    let (s, v) = api(&proxy, &token, "GET", "tickets", "").await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = api(&proxy, &format!("{token}0"), "GET", "tickets", "").await;
    assert_eq!(s, 401, "a tampered proxy token");
    let (s, v) = exchange(json!({ "id_token": idp.mint("stamp-panel") }).to_string()).await;
    assert_eq!(s, 401, "the panel's audience is not the CLI's: {v}");
    for fault in [
        IdTokenFault::Expired,
        IdTokenFault::ForeignKey,
        IdTokenFault::Unsigned,
        IdTokenFault::IssuedLongAgo,
    ] {
        idp.set_fault(fault);
        let (s, v) = exchange(json!({ "id_token": idp.mint("stamp-cli") }).to_string()).await;
        assert_eq!(s, 401, "{fault:?}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    for hostile in [
        "not json".to_string(),
        json!({ "id_token": "a.b.c" }).to_string(),
        json!({ "id_token": "x".repeat(20_000) }).to_string(),
        json!({ "token": "x" }).to_string(),
    ] {
        let (s, v) = exchange(hostile.clone()).await;
        assert!(matches!(s, 400 | 401 | 415), "{hostile:.40}: {s} {v}");
        assert!(v["error"]["message"].as_str().is_some(), "{v}");
    }

    // An unreachable provider: a clear page, no session.
    let down_port = free_port().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let port2 = free_port().unwrap();
    let proxy2 = sso_proxy(
        &origin,
        dir2.path(),
        port2,
        &format!("http://127.0.0.1:{down_port}"),
        "",
    );
    let resp = stamp_tests::client()
        .get(proxy2.url("/__stamp/login/corp"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("could not be reached"), "{body}");
    let resp = stamp_tests::client()
        .post(proxy2.url("/__stamp/sign-in/corp/token"))
        .header("content-type", "application/json")
        .body(json!({ "id_token": idp.mint("stamp-cli") }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    // Production is untouched by the provider's outage.
    let page = stamp_tests::get_text(&proxy2.url("/")).await;
    assert!(page.contains("production"), "{page}");
}

/// `stamp` with a clean environment whose config directory is in `home`.
fn stamp(
    home: &std::path::Path,
    server: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(stamp_tests::proxy::binary("stamp").unwrap());
    cmd.args(args)
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("STAMP_SERVER", server);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(mut cmd: std::process::Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Completes a device sign-in at node-oidc-provider's pages: the code,
/// the login, the consent and the confirmation, in whatever order they come.
async fn complete_device_flow(browser: &Browser, uri: &str, code: &str, login: &str) {
    browser.goto(uri).await.unwrap();
    let start = std::time::Instant::now();
    let mut logged_in = false;
    while start.elapsed() < Duration::from_secs(30) {
        let page = browser
            .execute(
                "return { title: document.title, \
                  code: !!document.querySelector('input[type=text][name=user_code]'), \
                  login: !!document.querySelector('input[name=login]'), \
                  consent: !!document.querySelector('input[name=prompt][value=consent]'), \
                  confirm: !!document.querySelector('button[autofocus][form=\"op.deviceConfirmForm\"]') }",
            )
            .await
            .unwrap_or(Value::Null);
        if page["title"] == "Sign-in Success" {
            return;
        }
        if page["code"] == true {
            let c = browser.client().unwrap();
            let input = c
                .find(fantoccini::Locator::Css("input[type=text][name=user_code]"))
                .await
                .unwrap();
            input.clear().await.unwrap();
            input.send_keys(code).await.unwrap();
            browser
                .click("button[form=\"op.deviceInputForm\"]")
                .await
                .unwrap();
        } else if page["login"] == true && !logged_in {
            provider_login(browser, login).await;
            logged_in = true;
        } else if page["consent"] == true {
            browser.click("button.login-submit").await.unwrap();
        } else if page["confirm"] == true {
            browser
                .click("button[autofocus][form=\"op.deviceConfirmForm\"]")
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the device sign-in did not finish: {} shows {}",
        browser.current_url().await.unwrap(),
        browser.text("body").await.unwrap_or_default()
    );
}

#[tokio::test]
async fn the_cli_signs_in_with_a_device_code_refreshes_and_signs_out() {
    let origin = app_origin();
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let op = OidcProvider::start(&json!({
        "redirect_uris": [format!("http://127.0.0.1:{port}/__stamp/callback")],
        "accounts": { "dana": { "groups": ["developers"] } },
    }))
    .unwrap();
    let proxy = sso_proxy(&origin, dir.path(), port, &op.issuer, "");

    // `stamp login` prints the code, a browser session completes it.
    let mut child = stamp(home.path(), &proxy.url, &["login", "--json"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "device-code", "{first}");
    let uri = first["verification_uri"].as_str().unwrap().to_string();
    let code = first["user_code"].as_str().unwrap().to_string();
    assert!(uri.starts_with(&op.issuer), "{uri}");
    let browser = Browser::start().await.unwrap();
    complete_device_flow(&browser, &uri, &code, "dana").await;
    browser.close().await.unwrap();
    let done: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(done["event"], "signed-in", "{done}");
    assert_eq!(done["name"], "dana@example.com");
    assert_eq!(done["role"], "dev");
    assert!(child.wait().unwrap().success());

    // Kept privately in the user's config directory.
    let creds = home.path().join(".config/ticket-stamp/credentials.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let entry = &saved[&proxy.url];
    assert!(
        entry["token"].as_str().unwrap().starts_with("stp1."),
        "{saved}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "credentials are private");
    }

    // The CLI uses it, and history names the person.
    let (code_list, out, err) = run(stamp(home.path(), &proxy.url, &["--list", "--all"], &[]));
    assert_eq!(code_list, 0, "{out}{err}");
    let token = entry["token"].as_str().unwrap();
    let (s, v) = api(
        &proxy,
        token,
        "PUT",
        "tickets/DEV-3/modules/src/app.js",
        "x",
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (_, t) = api(&proxy, "ci-secret", "GET", "tickets/DEV-3", "").await;
    assert_eq!(t["history"][0]["actor"], "dana@example.com", "{t}");

    // An expired proxy token is renewed with the provider's refresh token.
    assert!(
        entry["refresh_token"].is_string(),
        "a refresh token was kept: {saved}"
    );
    let mut expired = saved.clone();
    expired[&proxy.url]["expires_at"] = json!(0);
    std::fs::write(&creds, expired.to_string()).unwrap();
    let (c, out, err) = run(stamp(home.path(), &proxy.url, &["--list", "-v"], &[]));
    assert_eq!(c, 0, "{out}{err}");
    assert!(
        err.contains("renewing the sign-in of dana@example.com"),
        "{err}"
    );
    let renewed: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(renewed[&proxy.url]["expires_at"].as_u64().unwrap() > now + 3000);

    // STAMP_TOKEN still wins (for CI): a wrong one is not rescued by the sign-in.
    let (c, _, err) = run(stamp(
        home.path(),
        &proxy.url,
        &["--list"],
        &[("STAMP_TOKEN", "wrong")],
    ));
    assert_eq!(c, 3, "{err}");

    // A refresh token the provider no longer honours: sign in again.
    let mut revoked = renewed.clone();
    revoked[&proxy.url]["expires_at"] = json!(0);
    revoked[&proxy.url]["refresh_token"] = json!("revoked-or-forged");
    std::fs::write(&creds, revoked.to_string()).unwrap();
    let (c, _, err) = run(stamp(home.path(), &proxy.url, &["--list"], &[]));
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("has expired: run `stamp login`"), "{err}");

    // Logout revokes it at the proxy and forgets it here: a copy of the
    // token is refused too.
    std::fs::write(&creds, renewed.to_string()).unwrap();
    let kept = renewed[&proxy.url]["token"].as_str().unwrap().to_string();
    let with_copy = || {
        let url = proxy.url("/__stamp/api/v1/tickets");
        let kept = kept.clone();
        async move {
            stamp_tests::client()
                .get(url)
                .bearer_auth(kept)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(with_copy().await, 200, "the token works before");
    let (c, out, err) = run(stamp(home.path(), &proxy.url, &["logout"], &[]));
    assert_eq!(c, 0);
    assert!(
        out.contains("Signed out of") && !err.contains("not revoked"),
        "{out}{err}"
    );
    assert_eq!(
        with_copy().await,
        401,
        "a copy of the token is refused after logout"
    );
    let after: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert!(after.get(&proxy.url).is_none(), "{after}");
    let (c, _, err) = run(stamp(home.path(), &proxy.url, &["--list"], &[]));
    assert_eq!(c, 3, "{err}");

    // Misuse is a usage error.
    let (c, _, err) = run(stamp(home.path(), &proxy.url, &["login", "TKT-1"], &[]));
    assert_eq!(c, 2, "{err}");
    let (c, _, err) = run(stamp(
        home.path(),
        &proxy.url,
        &["login", "--provider", "nope"],
        &[],
    ));
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("no identity provider `nope`"), "{err}");
}

#[tokio::test]
async fn protected_previews_open_for_signed_in_people_with_an_allowed_role() {
    let origin = app_origin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let op = OidcProvider::start(&json!({
        "redirect_uris": [format!("http://127.0.0.1:{port}/__stamp/callback")],
        "accounts": {
            "quinn": { "groups": ["qa"] },
            "dana": { "groups": ["developers"] },
        },
    }))
    .unwrap();
    let proxy = sso_proxy(
        &origin,
        dir.path(),
        port,
        &op.issuer,
        "[preview]\nprotect = true\nsecret = \"0123456789abcdef0123456789abcdef-test\"\n\
         access = \"sign-in\"\nsign_in_roles = [\"qa\", \"admin\"]\n",
    );
    ticket_in_qa(&proxy, "PRV-1").await;

    // Not signed in: a navigation goes to sign in first, and comes back.
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/?qa=PRV-1")).await.unwrap();
    provider_login(&browser, "quinn").await;
    browser
        .wait_for_text("#msg", "ticket app", WAIT)
        .await
        .unwrap();
    let url = browser.current_url().await.unwrap();
    assert!(url.ends_with("/?qa=PRV-1"), "{url}");
    let pass = browser.cookie("stamp_viewer").await.unwrap();
    assert!(
        pass.as_deref().is_some_and(|p| p.starts_with("p1.")),
        "{pass:?}"
    );
    // The pass and the selection are the proxy's: the origin sees neither.
    browser.refresh().await.unwrap();
    browser
        .wait_for_text("#msg", "ticket app", WAIT)
        .await
        .unwrap();
    let seen = origin.last_headers("/").unwrap();
    let cookies = seen
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!cookies.contains("stamp_viewer"), "{cookies}");
    assert!(
        !cookies.contains("ticket_stamp="),
        "nor the selection: {cookies}"
    );
    browser.close().await.unwrap();

    // A role that may not open previews: production, saying why.
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/?qa=PRV-1")).await.unwrap();
    provider_login(&browser, "dana").await;
    browser
        .wait_for_text("#msg", "production app", WAIT)
        .await
        .unwrap();
    let notice = browser
        .execute(
            "const b = document.querySelector('ticket-stamp-badge'); \
             return b && b.shadowRoot ? b.shadowRoot.querySelector('aside').textContent : null;",
        )
        .await
        .unwrap();
    assert!(
        notice
            .as_str()
            .is_some_and(|n| n.contains("your role may not open them")),
        "the notice says why: {notice}"
    );
    browser.close().await.unwrap();

    // Without a browser: a share link alone is not enough in `sign-in`
    // mode; a script or fetch gets production, not a redirect; a forged
    // pass is nobody.
    let (_, t) = api(&proxy, "ci-secret", "GET", "tickets/PRV-1", "").await;
    let link = t["links"]["qa"].as_str().unwrap().to_string();
    assert!(link.contains("st="), "{link}");
    let client = stamp_tests::client();
    let resp = client
        .get(&link)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/__stamp/login?next=%2F%3Fqa%3DPRV-1"),
        "{location}"
    );
    let resp = client
        .get(proxy.url("/?qa=PRV-1"))
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let info = resp.headers()["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(info.contains("sign in to open them"), "{info}");
    for forged in [
        format!("stamp_viewer=p1.9999999999.admin.{}", "0".repeat(32)),
        "stamp_viewer=p1.1.qa.zz".to_string(),
        format!("stamp_viewer={}", "x".repeat(5000)),
    ] {
        let resp = client
            .get(proxy.url("/?qa=PRV-1"))
            .header("accept", "text/html")
            .header("cookie", &forged)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 302, "{forged:.40}");
    }
    // Production itself is untouched for everyone.
    let page = client.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
}

#[tokio::test]
async fn github_and_atlassian_sign_in_through_their_apis() {
    let gh = FakeOAuth::start("Iv1.stampapp", "gh-app-secret").unwrap();
    let origin = app_origin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let proxy = proxy_with(
        &origin,
        dir.path(),
        port,
        &format!(
            "[[sign_in]]\nname = \"corp\"\nlabel = \"GitHub\"\nkind = \"github\"\n\
             issuer = \"{0}\"\napi_url = \"{0}\"\nclient_id = \"Iv1.stampapp\"\n\
             client_secret_env = \"CORP_OIDC_SECRET\"\n\
             [sign_in.roles]\nqa = [\"group:acme/qa\"]\ndev = [\"group:acme\"]\n",
            gh.url()
        ),
        "gh-app-secret",
    );

    // The panel: GitHub's web flow, with PKCE, and the person's team gives the role.
    let (status, location, session, body) = code_flow(&proxy, "%2F__stamp%2F").await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(location.as_deref(), Some("/__stamp/"));
    assert_eq!(gh.pkce_verified(), Some(true));
    let me = session_of(&proxy, &session.unwrap()).await;
    assert_eq!(
        me["name"], "octocat@github.com",
        "the verified primary email: {me}"
    );
    assert_eq!(me["role"], "qa");

    // A code GitHub refuses (its errors come as 200 OK): a clear page.
    let client = stamp_tests::client();
    let resp = client
        .get(proxy.url("/__stamp/login/corp"))
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookie(&resp, "stamp_login").unwrap();
    let to = resp.headers()["location"].to_str().unwrap().to_string();
    let state = url::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let resp = client
        .get(proxy.url(&format!("/__stamp/callback?code=stale&state={state}")))
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body = resp.text().await.unwrap();
    assert!(body.contains("bad_verification_code"), "{body}");

    // The CLI: GitHub's device flow (pending, then approved), the token
    // checked against the app, and traded again when the proxy token expires.
    let home = tempfile::tempdir().unwrap();
    let mut child = stamp(home.path(), &proxy.url, &["login", "--json"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["user_code"], "WDJB-MJHT", "{first}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gh.approve_device();
    let done: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(done["name"], "octocat@github.com", "{done}");
    assert!(child.wait().unwrap().success());
    let creds = home.path().join(".config/ticket-stamp/credentials.json");
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert!(saved[&proxy.url]["access_token"].is_string(), "{saved}");
    saved[&proxy.url]["expires_at"] = json!(0);
    std::fs::write(&creds, saved.to_string()).unwrap();
    let (c, out, err) = run(stamp(home.path(), &proxy.url, &["--list", "-v"], &[]));
    assert_eq!(c, 0, "{out}{err}");
    assert!(
        err.contains("renewing the sign-in of octocat@github.com"),
        "{err}"
    );

    // A GitHub token issued to another app is not a sign-in here.
    let resp = client
        .post(proxy.url("/__stamp/sign-in/corp/token"))
        .header("content-type", "application/json")
        .body(json!({ "access_token": gh.foreign_token() }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not issued to this proxy"),
        "{v}"
    );

    // Atlassian: the 3LO flow, with its audience, and /me says who.
    let at = FakeOAuth::start("atl-client", "atl-secret").unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let port2 = free_port().unwrap();
    let proxy2 = proxy_with(
        &origin,
        dir2.path(),
        port2,
        &format!(
            "[[sign_in]]\nname = \"corp\"\nlabel = \"Atlassian\"\nkind = \"atlassian\"\n\
             issuer = \"{0}\"\napi_url = \"{0}\"\nclient_id = \"atl-client\"\n\
             client_secret_env = \"CORP_OIDC_SECRET\"\n\
             [sign_in.roles]\ndev = [\"domain:acme.example\"]\n",
            at.url()
        ),
        "atl-secret",
    );
    let resp = client
        .get(proxy2.url("/__stamp/login/corp"))
        .send()
        .await
        .unwrap();
    let to = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.contains("audience=api.atlassian.com") && to.contains("prompt=consent"),
        "{to}"
    );
    let (status, _, session, body) = code_flow(&proxy2, "%2F").await;
    assert_eq!(status, 302, "{body}");
    let me = session_of(&proxy2, &session.unwrap()).await;
    assert_eq!(me["name"], "ana@acme.example");
    assert_eq!(me["role"], "dev");
    // No device flow at Atlassian: the CLI says to use a token.
    let (c, _, err) = run(stamp(home.path(), &proxy2.url, &["login"], &[]));
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("not set up for the CLI"), "{err}");
}

#[tokio::test]
async fn the_panel_on_its_own_host_is_out_of_reach_of_app_scripts() {
    // Two hosts on one proxy: the app at 127.0.0.1, the panel at localhost
    // (different origins, and different sites, to the browser).
    let origin = app_origin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let app = format!("http://127.0.0.1:{port}");
    let control = format!("http://localhost:{port}");
    let op = OidcProvider::start(&json!({
        "redirect_uris": [format!("{control}/__stamp/callback")],
        "accounts": { "quinn": { "groups": ["qa"] } },
    }))
    .unwrap();
    let _proxy = sso_proxy(
        &origin,
        dir.path(),
        port,
        &op.issuer,
        &format!(
            "public_url = \"{app}\"\ncontrol_url = \"{control}\"\n\
             [preview]\nprotect = true\nsecret = \"0123456789abcdef0123456789abcdef-test\"\n\
             access = \"sign-in\"\n"
        ),
    );
    ticket_in_qa_at(&control, "OWN-1").await;

    // On the app's host, the panel, its session and the API are not there.
    let client = stamp_tests::client();
    for path in [
        "/__stamp/",
        "/__stamp/session",
        "/__stamp/api/v1/tickets",
        "/__stamp/login/corp",
    ] {
        let resp = client.get(format!("{app}{path}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(&control), "{path}: {body}");
    }
    let resp = client
        .get(format!("{app}/__stamp/api/v1/tickets"))
        .bearer_auth("ci-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404, "not even with a token");
    // On its own host, the API answers; production and health stay on the app's.
    let resp = client
        .get(format!("{control}/__stamp/api/v1/tickets"))
        .bearer_auth("ci-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client
        .get(format!("{app}/__stamp/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // A preview on the app's host: sign in on the panel's host, and the pass
    // is handed back to the app's host.
    let browser = Browser::start().await.unwrap();
    browser.goto(&format!("{app}/?qa=OWN-1")).await.unwrap();
    provider_login(&browser, "quinn").await;
    browser
        .wait_for_text("#msg", "ticket app", WAIT)
        .await
        .unwrap();
    let url = browser.current_url().await.unwrap();
    assert_eq!(url, format!("{app}/?qa=OWN-1"));
    // The signed-in panel on its host...
    browser.goto(&format!("{control}/__stamp/")).await.unwrap();
    browser
        .wait_for_text("#who", "quinn@example.com (qa)", WAIT)
        .await
        .unwrap();
    // ...is not readable by a script on the app's host.
    browser.goto(&format!("{app}/")).await.unwrap();
    let read = browser
        .client()
        .unwrap()
        .execute_async(&format!(
            "const done = arguments[arguments.length - 1]; \
             Promise.all([ \
               fetch('/__stamp/session', {{credentials: 'include'}}).then(r => r.status), \
               fetch('{control}/__stamp/session', {{credentials: 'include'}}).then(r => 'read ' + r.status, e => 'blocked') \
             ]).then(done);"
        ), vec![])
        .await
        .unwrap();
    assert_eq!(read, json!([404, "blocked"]), "{read}");
    browser.close().await.unwrap();

    // A forged or stale grant does nothing.
    let resp = client
        .get(format!("{app}/__stamp/pass?grant=forged.0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.headers().get("set-cookie").is_none());
}
