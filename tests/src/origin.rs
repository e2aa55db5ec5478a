//! A real origin server for the tests: an axum app on a free loopback port,
//! on its own thread and runtime, serving routes the test declares (with any
//! status, headers, content coding and chunking), plus streaming, slow,
//! huge, upload and WebSocket endpoints. It counts requests per path and
//! keeps the headers of the last request to each path.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::StreamExt;

/// How the origin encodes a route's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    pub fn encode(self, body: &[u8]) -> Vec<u8> {
        match self {
            Encoding::Identity => body.to_vec(),
            Encoding::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                let _ = e.write_all(body);
                e.finish().unwrap_or_default()
            }
            Encoding::Deflate => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                let _ = e.write_all(body);
                e.finish().unwrap_or_default()
            }
            Encoding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    let _ = w.write_all(body);
                }
                out
            }
            Encoding::Zstd => zstd::encode_all(body, 3).unwrap_or_default(),
        }
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Deflate => Some("deflate"),
            Encoding::Brotli => Some("br"),
            Encoding::Zstd => Some("zstd"),
        }
    }
}

/// A declared route.
#[derive(Debug, Clone)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Always encode with this coding, whatever the client accepts (as some
    /// origins do).
    pub encoding: Encoding,
    /// Send the body in chunks of this size (chunked transfer coding).
    pub chunked: Option<usize>,
    /// Answer 304 to a matching If-None-Match (needs an `etag` header).
    pub conditional: bool,
}

impl Route {
    pub fn html(body: &str) -> Route {
        Route {
            status: 200,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: Bytes::from(body.to_string()),
            encoding: Encoding::Identity,
            chunked: None,
            conditional: false,
        }
    }

    pub fn bytes(content_type: &str, body: Vec<u8>) -> Route {
        Route {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: Bytes::from(body),
            encoding: Encoding::Identity,
            chunked: None,
            conditional: false,
        }
    }

    /// A JavaScript file.
    pub fn js(body: &str) -> Route {
        Route::bytes("text/javascript", body.as_bytes().to_vec())
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn status(mut self, status: u16) -> Route {
        self.status = status;
        self
    }

    pub fn encoded(mut self, e: Encoding) -> Route {
        self.encoding = e;
        self
    }

    pub fn chunked(mut self, size: usize) -> Route {
        self.chunked = Some(size);
        self
    }

    pub fn conditional(mut self) -> Route {
        self.conditional = true;
        self
    }
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, u64>>,
    last_headers: Mutex<HashMap<String, HeaderMap>>,
}

/// The running origin. Stops when dropped (its runtime thread ends).
pub struct Origin {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("url", &self.url).finish()
    }
}

impl Origin {
    pub fn start() -> anyhow::Result<Origin> {
        let shared = Arc::new(Shared::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/__origin/ws", get(ws))
            .route("/__origin/upload", any(upload))
            .route("/__origin/slow", get(slow))
            .route("/__origin/trickle", get(trickle))
            .route("/__origin/big", get(big))
            .fallback(any(declared))
            .with_state(shared.clone());
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("origin runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(Origin {
            port,
            url: format!("http://127.0.0.1:{port}"),
            shared,
            _shutdown: tx,
        })
    }

    /// Declares (or replaces) a route.
    pub fn route(&self, path: &str, route: Route) {
        if let Ok(mut r) = self.shared.routes.lock() {
            r.insert(path.to_string(), route);
        }
    }

    /// Serves every file under `dir` at `prefix` + its path below `dir`
    /// (and `index.html` also at `prefix` itself), typed by extension, each
    /// with `headers` (e.g. CORS for a CDN). Files added later are not seen:
    /// call it again.
    pub fn serve_dir(&self, prefix: &str, dir: &std::path::Path, headers: &[(&str, &str)]) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(dir) else {
                    continue;
                };
                let rel = rel.to_string_lossy().replace('\\', "/");
                let url = format!("{}/{rel}", prefix.trim_end_matches('/'));
                let Ok(body) = std::fs::read(&path) else {
                    continue;
                };
                let mut route = Route::bytes(content_type_of(&rel), body);
                for (k, v) in headers {
                    route = route.header(k, v);
                }
                if rel == "index.html" {
                    let root = if prefix.is_empty() { "/" } else { prefix };
                    self.route(root, route.clone());
                }
                self.route(&url, route);
            }
        }
    }

    /// Requests the origin received for `path` (without query).
    pub fn hits(&self, path: &str) -> u64 {
        self.shared
            .hits
            .lock()
            .map(|h| h.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Headers of the last request to `path`.
    pub fn last_headers(&self, path: &str) -> Option<HeaderMap> {
        self.shared.last_headers.lock().ok()?.get(path).cloned()
    }
}

fn record(shared: &Shared, path: &str, headers: &HeaderMap) {
    if let Ok(mut h) = shared.hits.lock() {
        *h.entry(path.to_string()).or_default() += 1;
    }
    if let Ok(mut l) = shared.last_headers.lock() {
        l.insert(path.to_string(), headers.clone());
    }
}

async fn declared(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    record(&shared, &path, req.headers());
    // Like an app, read the request body before answering.
    let (parts, body) = req.into_parts();
    if axum::body::to_bytes(body, 64 << 20).await.is_err() {
        return (StatusCode::BAD_REQUEST, "unreadable body\n").into_response();
    }
    let req = Request::from_parts(parts, Body::empty());
    let route = shared
        .routes
        .lock()
        .ok()
        .and_then(|r| r.get(&path).cloned());
    let Some(route) = route else {
        return (StatusCode::NOT_FOUND, "no such route\n").into_response();
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &route.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            headers.append(k, v);
        }
    }
    if route.conditional {
        let etag = headers.get("etag").cloned();
        let inm = req.headers().get("if-none-match").cloned();
        if let (Some(etag), Some(inm)) = (etag, inm) {
            if etag == inm {
                let mut resp = StatusCode::NOT_MODIFIED.into_response();
                resp.headers_mut().extend(headers);
                return resp;
            }
        }
    }
    let body = route.encoding.encode(&route.body);
    if let Some(ce) = route.encoding.header() {
        headers.insert("content-encoding", HeaderValue::from_static(ce));
    }
    let status = StatusCode::from_u16(route.status).unwrap_or(StatusCode::OK);
    let body = match route.chunked {
        Some(size) => {
            let pieces: Vec<Result<Bytes, std::io::Error>> = body
                .chunks(size.max(1))
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Body::from_stream(futures::stream::iter(pieces))
        }
        None => Body::from(body),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().extend(headers);
    resp
}

async fn ws(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(format!("echo: {t}").into()),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                other => other,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

/// Consumes the body and answers its length and sha256.
async fn upload(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    record(&shared, "/__origin/upload", req.headers());
    let mut stream = req.into_body().into_data_stream();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                len += c.len() as u64;
                sha2::Digest::update(&mut hasher, &c);
            }
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
    let digest = hex::encode(sha2::Digest::finalize(hasher));
    format!("{len} {digest}").into_response()
}

/// Sleeps `ms` (query) before answering.
async fn slow(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    record(&shared, "/__origin/slow", req.headers());
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "finally\n".into_response()
}

/// An HTML page whose head arrives at once and whose rest arrives 2 s later:
/// proves a proxy streams instead of buffering.
async fn trickle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    record(&shared, "/__origin/trickle", req.headers());
    let head = Bytes::from_static(
        b"<!doctype html><html><head><script type=module src=\"/src/main.js\"></script></head><body><p>first</p>",
    );
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(head)]).chain(
        futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(Bytes::from_static(b"<p>second</p></body></html>"))
        }),
    );
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/html"));
    resp
}

/// A generated HTML page of `mb` MiB (query), streamed in 64 KiB chunks, with
/// an import map and a module script at the top.
async fn big(req: Request) -> Response {
    let mb: usize = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("mb="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let head = "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"lib/greet\":\"/src/lib/greet.js\"}}</script><script type=module src=\"/src/main.js\"></script></head><body>";
    let row = "<div class=\"row\"><span>item</span> <a href=\"/x\">link</a></div>\n";
    let total = mb * 1024 * 1024;
    let chunk: String = row.repeat(65536 / row.len());
    let chunks = total / chunk.len();
    let stream = futures::stream::iter(
        std::iter::once(Bytes::from(head.to_string()))
            .chain((0..chunks).map(move |_| Bytes::from(chunk.clone())))
            .chain(std::iter::once(Bytes::from_static(b"</body></html>")))
            .map(Ok::<_, std::io::Error>),
    );
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/html"));
    resp
}

/// A `Content-Type` by file extension, as a static server sends it.
pub fn content_type_of(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "importmap" => "application/importmap+json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}
