//! The bundled demo: a tiny ES-module shop served as the origin on a free
//! loopback port, and the sample ticket DEMO-1 that overrides one of its
//! modules. `stamp-proxy --demo` starts both, so a newcomer sees production
//! and a ticket page side by side within minutes.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use stamp_control::{Actor, Desk, WorkflowError};
use stamp_model::ticket::{Stage, TicketKey};

/// The sample ticket.
pub const DEMO_TICKET: &str = "DEMO-1";

/// Path → (content type, body) of the demo app.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../demo/index.html"),
    ),
    (
        "/about",
        "text/html; charset=utf-8",
        include_str!("../demo/about.html"),
    ),
    (
        "/src/main.js",
        "text/javascript; charset=utf-8",
        include_str!("../demo/src/main.js"),
    ),
    (
        "/src/about.js",
        "text/javascript; charset=utf-8",
        include_str!("../demo/src/about.js"),
    ),
    (
        "/src/lib/greet.js",
        "text/javascript; charset=utf-8",
        include_str!("../demo/src/lib/greet.js"),
    ),
    (
        "/src/lib/format.js",
        "text/javascript; charset=utf-8",
        include_str!("../demo/src/lib/format.js"),
    ),
    (
        "/src/style.css",
        "text/css; charset=utf-8",
        include_str!("../demo/src/style.css"),
    ),
];

/// DEMO-1's version of `/src/lib/greet.js`.
pub const TICKET_GREET: &str = include_str!("../demo/ticket/greet.js");

/// Starts the demo origin on a free loopback port; serves until the process ends.
pub async fn start_origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream));
                }
                Err(e) => {
                    log::warn!("demo origin: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(addr)
}

/// A minimal HTTP/1.1 keep-alive loop: GET/HEAD of the bundled files.
async fn serve_connection(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut parts = head.split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/");
        let file = FILES.iter().find(|(p, _, _)| *p == path);
        let (status, ctype, body) = match file {
            Some((_, ctype, body)) => ("200 OK", *ctype, *body),
            None => ("404 Not Found", "text/plain; charset=utf-8", "not found\n"),
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            response.extend_from_slice(body.as_bytes());
        }
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Makes sure DEMO-1 exists in dev with its greet.js (idempotent).
pub async fn seed(desk: &Desk) -> Result<(), WorkflowError> {
    let store = desk.store();
    #[allow(clippy::unwrap_used)] // a constant, valid key
    let key = TicketKey::parse(DEMO_TICKET).unwrap();
    let body = Bytes::from_static(TICKET_GREET.as_bytes());
    if let Some(t) = store.get_ticket(&key).await? {
        let current = stamp_control::overrides(store, &t, Stage::Dev).await?;
        let same = current
            .and_then(|s| s.get("/src/lib/greet.js").map(|m| m.hash))
            .is_some_and(|h| h == stamp_model::ticket::Hash::of(&body));
        if same && t.stage != Stage::Closed {
            return Ok(());
        }
    }
    desk.upload(
        &key,
        "/src/lib/greet.js",
        "/src/lib/greet.js",
        body,
        &Actor::named("demo"),
    )
    .await?;
    Ok(())
}
