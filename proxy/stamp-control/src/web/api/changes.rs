//! What a ticket changes: per-module diffs against production, and dev
//! against qa.

use super::*;

impl Api {
    /// What a stage of the ticket changes: against production as a visitor
    /// gets it now (`against=production`, the default), or against another
    /// stage of the ticket (`against=qa` from dev: what QA has not seen).
    pub(super) async fn diff(&self, key: &TicketKey, query: &str) -> ApiResult {
        // A diff reads every module of a stage and runs on the blocking
        // pool: a few at a time, whoever asks.
        static DIFFS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _permit = DIFFS
            .acquire()
            .await
            // Never closed: an error here is a fault of ours.
            .map_err(|_| WebError::new(500, ErrorCode::Internal, "the diff queue is closed"))?;
        let mut stage = None;
        let mut against = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "stage" => {
                    stage = Some(match &*v {
                        "dev" => Stage::Dev,
                        "qa" => Stage::Qa,
                        "prod" => Stage::Prod,
                        _ => return Err(WebError::bad("stage", "must be dev, qa or prod")),
                    })
                }
                "against" => {
                    against = Some(match &*v {
                        "production" => None,
                        "dev" => Some(Stage::Dev),
                        "qa" => Some(Stage::Qa),
                        "prod" => Some(Stage::Prod),
                        _ => {
                            return Err(WebError::bad(
                                "against",
                                "must be production, dev, qa or prod",
                            ))
                        }
                    })
                }
                _ => {}
            }
        }
        let t = self.ticket(key).await?;
        let stage = stage.unwrap_or(match t.stage {
            Stage::Closed => Stage::Dev,
            s => s,
        });
        let against = against.flatten();
        if against == Some(stage) {
            return Err(WebError::bad(
                "against",
                "must be another stage than `stage`",
            ));
        }
        let Some(set) = workflow::overrides(&self.store, &t, stage).await? else {
            return Err(WebError::new(
                404,
                ErrorCode::NotFound,
                format!("{key} has nothing in {stage}"),
            ));
        };
        let other =
            match against {
                Some(s) => Some(workflow::overrides(&self.store, &t, s).await?.ok_or_else(
                    || {
                        WebError::new(
                            404,
                            ErrorCode::NotFound,
                            format!("{key} has nothing in {s}"),
                        )
                    },
                )?),
                None => None,
            };
        let before_label = match against {
            Some(s) => format!("{key} {s}"),
            None => "production".to_string(),
        };
        let after_label = format!("{key} {stage}");
        let mut modules = Vec::new();
        for (spec, m) in &set {
            let after = self.store.get_module(&m.hash).await?.ok_or_else(|| {
                WebError::from(StoreError::Corrupt(format!("module {} is missing", m.hash)))
            })?;
            let before = match &other {
                Some(o) => match o.get(spec) {
                    Some(prev) => Ok(self.store.get_module(&prev.hash).await?),
                    None => Ok(None),
                },
                None => self.production_body(&m.path).await,
            };
            modules.push(match before {
                Ok(b) => {
                    // CPU-bound (up to the diff's deadline): off the I/O threads.
                    let (spec, path) = (spec.clone(), m.path.clone());
                    let labels = (before_label.clone(), after_label.clone());
                    tokio::task::spawn_blocking(move || {
                        diff::compare(&spec, &path, b.as_deref(), &after, (&labels.0, &labels.1))
                    })
                    .await
                    .map_err(|e| WebError::new(500, ErrorCode::Internal, format!("diff: {e}")))?
                }
                Err(why) => {
                    let mut d = diff::compare(spec, &m.path, None, &after, ("", ""));
                    d.status = "unreachable";
                    d.diff = None;
                    d.added_lines = 0;
                    d.note = Some(why);
                    d
                }
            });
        }
        if let Some(o) = &other {
            for (spec, m) in o.iter().filter(|(s, _)| !set.contains_key(*s)) {
                modules.push(diff::ModuleDiff {
                    specifier: spec.clone(),
                    path: m.path.clone(),
                    status: "removed",
                    before: Some(diff::Side {
                        size: m.size,
                        hash: m.hash.to_string(),
                    }),
                    after: None,
                    kind: if diff::is_text(&m.path) {
                        "text"
                    } else {
                        "binary"
                    },
                    added_lines: 0,
                    removed_lines: 0,
                    diff: None,
                    note: None,
                });
            }
        }
        let history = self.store.history(key).await?;
        let source = history
            .iter()
            .rev()
            .find(|e| e.event == "upload" && (e.commit.is_some() || e.branch.is_some()));
        Ok((
            200,
            json!({
                "ticket": key,
                "stage": stage,
                "against": against.map_or("production".to_string(), |s| s.to_string()),
                "commit": source.and_then(|e| e.commit.clone()),
                "branch": source.and_then(|e| e.branch.clone()),
                "modules": modules,
            }),
        ))
    }

    /// What production serves at a module's location now, as a visitor gets
    /// it (through this proxy, without a selection): `Ok(None)` when it has
    /// nothing there.
    pub(super) async fn production_body(&self, location: &str) -> Result<Option<Bytes>, String> {
        let url = format!(
            "{}{}",
            self.proxy_base,
            stamp_model::assets::serve_path(location)
        );
        let get = |url: String| {
            self.http
                .get(url)
                .header("accept-encoding", "identity")
                .send()
        };
        let mut resp = get(url)
            .await
            .map_err(|e| format!("production could not be read: {e}"))?;
        // The client follows no redirect: the one it takes is the proxy's
        // mirror sending a module on another origin to that very location
        // (checked against asset_origins when it was uploaded).
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if stamp_model::assets::is_remote(location) && to.as_deref() == Some(location) {
                resp = get(location.to_string())
                    .await
                    .map_err(|e| format!("production could not be read: {e}"))?;
            }
        }
        match resp.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            s => return Err(format!("production answered {s}")),
        }
        // A released ticket's body names itself in Server-Timing, and its
        // JavaScript carries the probe's marker, which is no part of it.
        let served_hash = resp
            .headers()
            .get_all("server-timing")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|m| m.trim().strip_prefix("ticket-stamp;desc="))
            .and_then(|h| stamp_model::ticket::Hash::parse(h.trim_matches('"')));
        // Read with a cap, chunked answers included.
        let cap = diff::MAX_DIFF_BYTES * 4;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("production could not be read: {e}"))?
        {
            if body.len() + chunk.len() > cap {
                return Err(format!("production's file is larger than {cap} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(h) = served_hash {
            body = stamp_model::views::without_ran_marker(&body, &h).into_owned();
        }
        Ok(Some(Bytes::from(body)))
    }
}
