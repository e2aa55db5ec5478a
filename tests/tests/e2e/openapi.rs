//! The control API's published contract: the OpenAPI 3.1 description
//! (`proxy/stamp-control/openapi.json`, served at `GET
//! /__stamp/api/v1/openapi.json`) is equal to the router's route table,
//! names every error code and every status the handlers answer with, is a
//! valid OpenAPI 3.1 document, and holds against a live proxy under
//! schemathesis: no 5xx, no answer outside the description, no state
//! change on a refused request.
//!
//! The validator and schemathesis come from PyPI, pinned, in `tests/.venv`
//! (`tests/install-deps openapi`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stamp_control::api_routes::ROUTES;
use stamp_model::wire::ErrorCode;
use stamp_tests::{Origin, Proxy, Route};

use crate::api::{call, call_h, config, in_process, ADMIN, DEV, QA};

/// The committed description, as a reader of the repository gets it.
fn committed() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/stamp-control/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every code the server may answer with. A code added to [`ErrorCode`]
/// stops this from compiling until it is placed here (and in the
/// description's `ErrorCode`).
fn server_codes() -> BTreeSet<&'static str> {
    use ErrorCode::*;
    let all = [
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        IllegalTransition,
        PolicyDenied,
        PreconditionRequired,
        TooLarge,
        TooManyModules,
        UnknownBody,
        UnsupportedType,
        UnsupportedMediaType,
        StoreUnavailable,
        StoreLostState,
        ProviderUnavailable,
        Busy,
        Internal,
    ];
    let mut out = BTreeSet::new();
    for code in all {
        match code {
            BadRequest | Unauthorized | Forbidden | NotFound | MethodNotAllowed | Conflict
            | IllegalTransition | PolicyDenied | PreconditionRequired | TooLarge
            | TooManyModules | UnknownBody | UnsupportedType | UnsupportedMediaType
            | StoreUnavailable | StoreLostState | ProviderUnavailable | Busy | Internal => {
                out.insert(code.as_str());
            }
            // What a client calls a code it does not know; never sent.
            Unknown => {}
        }
    }
    out
}

/// Resolves a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').unwrap();
            resolve(doc, doc.pointer(pointer).unwrap_or(&Value::Null))
        }
        None => v,
    }
}

/// `(METHOD, /path)` → the operation, for every operation of the document.
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()), op);
            }
        }
    }
    out
}

/// `status → codes` an operation documents (its responses' `x-error-codes`).
fn documented(doc: &Value, op: &Value) -> BTreeMap<u16, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (status, resp) in op["responses"].as_object().unwrap() {
        let resp = resolve(doc, resp);
        let codes = resp["x-error-codes"]
            .as_array()
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        out.insert(status.parse().unwrap(), codes);
    }
    out
}

/// `CamelCase` → `snake_case`, as serde names the codes.
fn snake(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The `(status, code)` pairs the API's handlers construct, read from their
/// source: `WebError::new(STATUS, …ErrorCode::CODE`, `WebError::bad` (400),
/// `WebError::moved` (409), `WebError::refused(STATUS` (401, else 403).
fn constructed_pairs() -> BTreeMap<(u16, String), Vec<String>> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/stamp-control/src/web");
    let mut files = vec![web.join("error.rs"), web.join("panel.rs")];
    let mut stack = vec![web.join("api")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    let mut out: BTreeMap<(u16, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests build errors of their own.
        let text = text.split("#[cfg(test)]").next().unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let status_after = |rest: &str| -> Option<(u16, usize)> {
            let trimmed = rest.trim_start();
            let skipped = rest.len() - trimmed.len();
            let digits: String = trimmed.chars().take_while(char::is_ascii_digit).collect();
            (digits.len() == 3).then(|| (digits.parse().unwrap(), skipped + 3))
        };
        for (at, _) in text.match_indices("WebError::new(") {
            let rest = &text[at + "WebError::new(".len()..];
            let Some((status, used)) = status_after(rest) else {
                continue;
            };
            let rest = &rest[used..];
            let code_at = rest.find("ErrorCode::").unwrap();
            let between = &rest[..code_at];
            assert!(
                between.chars().all(|c| c.is_whitespace()
                    || c == ','
                    || c == ':'
                    || c.is_alphanumeric()
                    || c == '_'),
                "{name}: cannot read the code of WebError::new({status}, …): {between:?}"
            );
            let ident: String = rest[code_at + "ErrorCode::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            out.entry((status, snake(&ident)))
                .or_default()
                .push(name.clone());
        }
        for (at, _) in text.match_indices("WebError::refused(") {
            if let Some((status, _)) = status_after(&text[at + "WebError::refused(".len()..]) {
                let code = if status == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                out.entry((status, code.into()))
                    .or_default()
                    .push(name.clone());
            }
        }
        if text.contains("WebError::bad(") {
            out.entry((400, "bad_request".into()))
                .or_default()
                .push(name.clone());
        }
        if text.contains("WebError::moved(") {
            out.entry((409, "conflict".into()))
                .or_default()
                .push(name.clone());
        }
    }
    out
}

/// The route table and the description name the same operations: every
/// path and method, with the same operation ids and path parameters.
#[test]
fn the_description_has_exactly_the_routers_routes() {
    let doc = committed();
    let ops = operations(&doc);
    let mut routed = BTreeSet::new();
    for r in ROUTES {
        let key = (r.method.to_string(), format!("/{}", r.path));
        let op = ops.get(&key).unwrap_or_else(|| {
            panic!("{} /{} is routed but not in openapi.json", r.method, r.path)
        });
        assert_eq!(op["operationId"], r.id, "{key:?}");
        let mut in_path: Vec<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| resolve(&doc, p))
                    .filter(|p| p["in"] == "path")
                    .map(|p| {
                        assert_eq!(p["required"], true, "{key:?}");
                        format!("{{{}}}", p["name"].as_str().unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut in_template: Vec<String> = r
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(str::to_string)
            .collect();
        in_path.sort();
        in_template.sort();
        assert_eq!(in_path, in_template, "path parameters of {key:?}");
        routed.insert(key);
    }
    let described: BTreeSet<_> = ops.keys().cloned().collect();
    let extra: Vec<_> = described.difference(&routed).collect();
    assert!(extra.is_empty(), "described but not routed: {extra:?}");
    assert_eq!(
        doc["servers"][0]["url"].as_str().map(|u| format!("{u}/")),
        Some(stamp_model::wire::API_PREFIX.to_string())
    );
}

/// Every error code is in the description's `ErrorCode`, every response
/// names codes from it, and every `(status, code)` the handlers construct
/// is documented on an operation (and none is documented that nothing
/// answers with).
#[test]
fn the_description_names_every_status_and_error_code() {
    let doc = committed();
    let codes = server_codes();
    let described: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        described, codes,
        "ErrorCode in openapi.json against stamp_model::wire::ErrorCode"
    );
    let description = doc["components"]["schemas"]["ErrorCode"]["description"]
        .as_str()
        .unwrap();
    for c in &codes {
        assert!(
            description.contains(&format!("`{c}`:")),
            "ErrorCode's description says nothing of {c}"
        );
    }

    // Every operation: what each response documents.
    let mut pairs: BTreeMap<(u16, String), Vec<String>> = BTreeMap::new();
    for ((method, path), op) in operations(&doc) {
        let statuses = documented(&doc, op);
        for (status, codes_of) in &statuses {
            let resp = resolve(&doc, &op["responses"][status.to_string()]);
            if *status >= 400 {
                assert!(
                    !codes_of.is_empty(),
                    "{method} {path} {status}: no x-error-codes"
                );
                assert_eq!(
                    resp["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status}: not the error envelope"
                );
            }
            for c in codes_of {
                assert!(
                    codes.contains(c.as_str()),
                    "{method} {path} {status}: unknown code {c}"
                );
                pairs
                    .entry((*status, c.clone()))
                    .or_default()
                    .push(format!("{method} {path}"));
            }
        }
        // What every request may be told: the body reader, auth, the host.
        for s in [400, 401, 403, 404, 413] {
            assert!(
                statuses.contains_key(&s),
                "{method} {path} does not document {s}"
            );
        }
        if method == "POST" {
            assert!(
                statuses
                    .get(&415)
                    .is_some_and(|c| c.contains("unsupported_media_type")),
                "{method} {path}: a POST is refused 415 without a JSON content type"
            );
        }
        if path.contains("{key}") {
            assert!(
                statuses.contains_key(&410) || method == "PUT" || method == "DELETE",
                "{method} {path}: a purged ticket answers 410"
            );
        }
    }

    let constructed = constructed_pairs();
    assert!(
        constructed.len() > 15,
        "the source scan found too little: {constructed:?}"
    );
    let undocumented: Vec<_> = constructed
        .iter()
        .filter(|(pair, _)| !pairs.contains_key(*pair))
        .collect();
    assert!(
        undocumented.is_empty(),
        "answered by the handlers but documented on no operation: {undocumented:?}"
    );
    // Answered outside the handlers: the body reader (stamp-data: 400, 413),
    // the router (404 for another host or no route, 403 for a cross-site
    // write or a foreign Host in open mode, 415 for a POST that is not JSON).
    let elsewhere = [
        (400, "bad_request"),
        (413, "too_large"),
        (404, "not_found"),
        (403, "forbidden"),
        (415, "unsupported_media_type"),
    ];
    let stale: Vec<_> = pairs
        .keys()
        .filter(|(s, c)| {
            !constructed.contains_key(&(*s, c.clone())) && !elsewhere.contains(&(*s, c.as_str()))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "documented, but nothing answers with it: {stale:?}"
    );
}

/// The proxy serves the committed description, to any authenticated
/// caller; a path it does not route is 404, and a method a path does not
/// have is 405 with `Allow` naming exactly the methods described.
#[tokio::test]
async fn the_proxy_serves_the_description_and_answers_by_it() {
    let p = &in_process("").await;
    let doc = committed();
    for token in [DEV, QA, ADMIN] {
        let (s, served) = call(p, "GET", "openapi.json", Some(token), None).await;
        assert_eq!(s, 200);
        assert_eq!(served, doc, "served is not the committed openapi.json");
    }
    let (s, v) = call(p, "GET", "openapi.json", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );

    let (s, v) = call(p, "GET", "nothing/here", Some(DEV), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openapi.json"),
        "{v}"
    );

    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (method, path) in operations(&doc).keys() {
        by_path
            .entry(path.clone())
            .or_default()
            .insert(method.clone());
    }
    let req = |method: &str, path: &str| {
        let uri = format!(
            "/__stamp/api/v1{}",
            path.replace("{key}", "TKT-1").replace("{path}", "src/a.js")
        );
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(bytes::Bytes::new())
            .unwrap()
    };
    for (path, methods) in &by_path {
        for other in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            if methods.contains(other) {
                continue;
            }
            let resp = p.control.handle(req(other, path)).await;
            assert_eq!(resp.status(), 405, "{other} {path}");
            let mut allow: BTreeSet<String> = resp.headers()["allow"]
                .to_str()
                .unwrap()
                .split(", ")
                .map(str::to_string)
                .collect();
            if methods.contains("GET") {
                assert!(allow.remove("HEAD"), "{path}: a GET answers HEAD too");
            }
            assert_eq!(&allow, methods, "Allow of {path}");
        }
    }
}

/// The venv `tests/install-deps openapi` makes, with the pinned validator
/// and schemathesis; a failure that says so when it is missing.
fn venv_tool(name: &str) -> PathBuf {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        tool.exists(),
        "{} is missing: run `tests/install-deps openapi` (a Python venv in tests/.venv with the \
         pinned openapi-spec-validator and schemathesis from PyPI; Debian needs python3-venv)",
        tool.display()
    );
    tool
}

/// The committed description is a valid OpenAPI 3.1 document, by the
/// reference validator (openapi-spec-validator, from PyPI).
#[test]
fn the_description_is_valid_openapi_3_1() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/stamp-control/openapi.json");
    let out = Command::new(venv_tool("openapi-spec-validator"))
        .arg(&spec)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator refused openapi.json:\n{text}"
    );
    assert!(text.contains("OK"), "{text}");
    assert_eq!(committed()["openapi"], "3.1.0");

    // And it refuses a broken one, so the check above can fail.
    let dir = tempfile::tempdir().unwrap();
    let mut broken = committed();
    broken["paths"]["/tickets"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"] = json!({"$ref": "#/components/schemas/NoSuchSchema"});
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let out = Command::new(venv_tool("openapi-spec-validator"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a dangling $ref passed the validator"
    );
}

const PAGE: &str = "<html><head><script type=importmap>{\"imports\":{\"@shop/greet\":\"/src/lib/greet.js\"}}</script>\
                    <script type=module src=/src/main.js></script></head><body>prod</body></html>";

/// schemathesis against a live proxy, for a bounded time (about 90 s):
/// examples, coverage, fuzzing and stateful phases over every operation
/// but the event stream (a stream that never ends while read), with an
/// admin token, and these checks: no 5xx, statuses, content types,
/// headers and bodies as described, and (`openapi_hooks.py`) no state
/// change on any refused request. A failure prints schemathesis's report
/// with a `curl` line per finding.
#[tokio::test]
async fn schemathesis_finds_nothing_against_a_live_proxy() {
    let schemathesis = venv_tool("schemathesis");
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"import '@shop/greet';\n".to_vec()),
    );
    origin.route(
        "/src/lib/greet.js",
        Route::bytes("text/javascript", b"export const hi = 'Hello';\n".to_vec()),
    );
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let extra = format!("history_repo = {:?}\n", history.to_string_lossy());
    let store = dir.path().join("store").to_string_lossy().into_owned();
    let conf = config(dir.path(), &origin.url, &store, &extra);
    let proxy = Proxy::start_with(None, &["--config", &conf], &[]).unwrap();

    // Tickets in every stage, so the fuzzer's moves reach the lifecycle.
    let up = |key: &'static str, path: &'static str, body: &'static str| {
        let proxy = &proxy;
        async move {
            let (s, v) = call(
                proxy,
                "PUT",
                &format!("tickets/{key}/modules/{path}"),
                Some(DEV),
                Some(body.as_bytes().to_vec()),
            )
            .await;
            assert!(s == 200 || s == 201, "{v}");
        }
    };
    let from = |stage: &str| Some(json!({ "from": stage }).to_string().into_bytes());
    for key in ["TKT-1", "TKT-2", "TKT-3", "TKT-4", "TKT-5"] {
        up(
            key,
            "src/main.js",
            "import '@shop/greet'; console.log(1);\n",
        )
        .await;
    }
    up(
        "TKT-1",
        "src/lib/greet.js",
        "export const hi = 'Welcome';\n",
    )
    .await;
    let (s, v) = call_h(
        &proxy,
        "PUT",
        "tickets/TKT-1/modules/src/lib/greet.js",
        Some(DEV),
        Some(b"export const hi = 'Welcome back';\n".to_vec()),
        &[("x-stamp-specifier", "@shop/greet")],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    for (key, moves) in [
        ("TKT-2", &[("promote", "dev", DEV)][..]),
        (
            "TKT-3",
            &[("promote", "dev", DEV), ("promote", "qa", QA)][..],
        ),
        ("TKT-4", &[("close", "dev", DEV)][..]),
    ] {
        for (action, stage, token) in moves {
            let (s, v) = call(
                &proxy,
                "POST",
                &format!("tickets/{key}/{action}"),
                Some(token),
                from(stage),
            )
            .await;
            assert_eq!(s, 200, "{key} {action}: {v}");
        }
    }
    let (s, v) = call(&proxy, "POST", "tickets/TKT-2/sign-off", Some(QA), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &proxy,
        "POST",
        "tickets/TKT-5/promote",
        Some(DEV),
        from("dev"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let release = json!({ "from": "qa", "rollout": { "steps": [5, 25, 100], "every": "0" } });
    let (s, v) = call(
        &proxy,
        "POST",
        "tickets/TKT-5/promote",
        Some(QA),
        Some(release.to_string().into_bytes()),
    )
    .await;
    assert_eq!((s, v["rollout"]["percent"].as_u64()), (200, Some(5)), "{v}");

    let work = dir.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    // Realistic values most of the time: the seeded tickets and modules.
    std::fs::write(
        work.join("schemathesis.toml"),
        "[dictionaries.keys]\nvalues = [\"TKT-1\", \"TKT-2\", \"TKT-3\", \"TKT-4\", \"TKT-5\", \"tkt-1\"]\n\n\
         [dictionaries.paths]\nvalues = [\"src/main.js\", \"src/lib/greet.js\", \"src/lib/new.js\"]\n\n\
         [parameters]\n\
         \"path.key\" = { dictionary = \"keys\", probability = 0.8 }\n\
         \"path.path\" = { dictionary = \"paths\", probability = 0.5 }\n",
    )
    .unwrap();
    let hooks_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let api = proxy.url("/__stamp/api/v1");
    let checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "refusal_changes_nothing",
    ];
    let mut child = Command::new(&schemathesis)
        .current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", "openapi_hooks")
        .env("PYTHONPATH", &hooks_dir)
        .env("STAMP_API", &api)
        .env("STAMP_TOKEN", ADMIN)
        .env("NO_COLOR", "1")
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(format!("{api}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--checks", &checks.join(",")])
        .args(["--exclude-path", "/events"])
        .args([
            "--workers",
            "1",
            "--max-time",
            "90",
            "--request-timeout",
            "30",
        ])
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .args(["--no-color", "--generation-database", "none"])
        .stdout(std::fs::File::create(work.join("report.txt")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran over 300 s (it was given 90):\n{}",
                std::fs::read_to_string(work.join("report.txt")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(work.join("report.txt")).unwrap();
    assert!(
        status.success(),
        "schemathesis found problems ({status}):\n{report}\n--- proxy log (tail) ---\n{}",
        tail(&proxy.log_text(), 60)
    );
    // A run that tested nothing passes vacuously: it must have covered
    // every operation it was given.
    let operations = ROUTES.len() - 2; // the stream, and the description it was loaded from
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "schemathesis did not test all {operations} operations:\n{report}"
    );
    let counts = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default()
        .trim();
    eprintln!("schemathesis: {counts}");
    assert!(!counts.is_empty(), "{report}");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
