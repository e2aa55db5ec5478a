//! `sanity`: looks at the ticket the way QA would, through this proxy. Every
//! configured page, selected with `?dev=KEY` / `?qa=KEY` (the stage holding
//! the set being moved), must answer 2xx and carry the stamped import map
//! (every override's URL); every override URL must answer 2xx with the
//! ticket's exact bytes, JavaScript modules as `text/javascript` and
//! stylesheets as `text/css`. Each failure is its own denial.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{http_client, promotions, Built, Outcome, Policy, Settings, TransitionCtx};
use stamp_model::ticket::{ModuleRef, Stage};

pub const KEYS: &[&str] = &["paths", "timeout", "host", "check_modules"];

/// Requests in flight at once.
const PARALLEL: usize = 8;

pub struct Sanity {
    paths: Vec<String>,
    host: Option<String>,
    check_modules: bool,
    client: reqwest::Client,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let paths = s.strings("paths").unwrap_or_else(|| vec!["/".into()]);
    for p in &paths {
        if !p.starts_with('/') {
            s.problem(
                "paths",
                format!("`{p}` must be an absolute path such as \"/\""),
            );
        }
    }
    let timeout = s.duration("timeout", Duration::from_secs(10));
    let host = s.string("host");
    let check_modules = s.bool("check_modules", true);
    Some(Built {
        policy: Box::new(Sanity {
            paths,
            host,
            check_modules,
            client: http_client(timeout),
        }),
        default_on: promotions(),
    })
}

#[async_trait]
impl Policy for Sanity {
    fn kind(&self) -> &'static str {
        "sanity"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        // The stage whose selection shows the set being moved.
        let stage = match (ctx.from, ctx.to) {
            (Stage::Dev | Stage::Qa, _) => ctx.from,
            (_, Stage::Dev | Stage::Qa) => ctx.to,
            _ => return vec![Outcome::Warn("no stage to look at".into())],
        };
        let base = ctx.proxy_base.trim_end_matches('/');
        let mut jobs: Vec<BoxFuture<'_, Vec<Outcome>>> = Vec::new();
        for p in &self.paths {
            let sep = if p.contains('?') { '&' } else { '?' };
            let url = format!("{base}{p}{sep}{stage}={}", ctx.ticket.key);
            jobs.push(Box::pin(self.page(ctx, p, url)));
        }
        if self.check_modules {
            for (spec, m) in &ctx.overrides {
                jobs.push(Box::pin(self.module(base, spec, m)));
            }
        }
        let results: Vec<Vec<Outcome>> = futures::stream::iter(jobs)
            .buffered(PARALLEL)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }
}

impl Sanity {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.get(url).header("accept-encoding", "identity");
        if let Some(h) = &self.host {
            r = r.header("host", h);
        }
        r
    }

    async fn page(&self, ctx: &TransitionCtx, path: &str, url: String) -> Vec<Outcome> {
        let resp = match self.get(&url).header("accept", "text/html").send().await {
            Ok(r) => r,
            Err(e) => return vec![Outcome::Deny(format!("page {path}: no answer ({e})"))],
        };
        let status = resp.status();
        let info = resp
            .headers()
            .get(stamp_model::wire::header::INFO)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !status.is_success() {
            return vec![Outcome::Deny(format!("page {path} answered {status}"))];
        }
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => return vec![Outcome::Deny(format!("page {path}: body unreadable ({e})"))],
        };
        let missing: Vec<&str> = ctx
            .overrides
            .iter()
            .filter(|(_, m)| {
                let u = m.url();
                !body.contains(&u) && !body.contains(&u.replace('/', "\\/"))
            })
            .map(|(s, _)| s.as_str())
            .collect();
        if missing.is_empty() {
            return vec![Outcome::Allow];
        }
        let why = info
            .filter(|i| i.starts_with("unchanged"))
            .map(|i| format!(" (proxy says: {i})"))
            .unwrap_or_default();
        vec![Outcome::Deny(format!(
            "page {path} does not carry the stamped map: missing {}{why}",
            missing.join(", ")
        ))]
    }

    async fn module(&self, base: &str, spec: &str, m: &ModuleRef) -> Vec<Outcome> {
        let url = format!("{base}{}", m.url());
        let resp = match self.get(&url).send().await {
            Ok(r) => r,
            Err(e) => return vec![Outcome::Deny(format!("module {spec}: no answer ({e})"))],
        };
        let status = resp.status();
        if !status.is_success() {
            return vec![Outcome::Deny(format!("module {spec} answered {status}"))];
        }
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut out = Vec::new();
        let ext = m
            .path
            .rsplit('/')
            .next()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let wanted = match ext.as_str() {
            "js" | "mjs" | "cjs" | "jsx" => Some("javascript"),
            "css" => Some("text/css"),
            _ => None,
        };
        if let Some(w) = wanted {
            if !ctype.contains(w) {
                out.push(Outcome::Deny(format!(
                    "module {spec} is served as `{ctype}`, not {w}"
                )));
            }
        }
        // JavaScript is served with the probe's marker after its code.
        match resp.bytes().await {
            Ok(b)
                if <[u8; 32]>::from(Sha256::digest(&*stamp_model::views::without_ran_marker(
                    &b, &m.hash,
                ))) == *m.hash.bytes() => {}
            Ok(_) => out.push(Outcome::Deny(format!(
                "module {spec} is not the ticket's version (body differs from {})",
                m.hash
            ))),
            Err(e) => out.push(Outcome::Deny(format!(
                "module {spec}: body unreadable ({e})"
            ))),
        }
        out
    }
}
