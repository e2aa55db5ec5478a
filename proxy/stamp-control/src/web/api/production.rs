//! What production served, change by change, and taking it back to a
//! commit of that log.

use super::*;

impl Api {
    /// What production served, change by change: the history repository's log.
    pub(super) async fn production_history(&self, query: &str) -> ApiResult {
        let mut limit = 50usize;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "limit" {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| WebError::bad("limit", "must be 1-1000"))?;
            }
        }
        let Some(repo) = self.history.as_ref() else {
            return Err(WebError::new(
                404,
                ErrorCode::NotFound,
                "no production history is kept: set `history_repo` in the proxy's configuration",
            ));
        };
        let commits = repo.log(limit).await.map_err(|e| {
            WebError::new(
                500,
                ErrorCode::Internal,
                format!("reading the history: {e}"),
            )
        })?;
        Ok((
            200,
            to_value(&stamp_model::wire::ProductionHistory { commits }),
        ))
    }

    /// Takes production back to what a commit of the history log served, by
    /// reverting (prod → qa) every ticket released since, newest first. Each
    /// revert is checked by the policies and the role matrix like any
    /// revert, all of them before the first is applied. Refused, changing
    /// nothing, when reverting cannot reach that state (a ticket released
    /// then is not released now, or was released again since with other
    /// code).
    pub(super) async fn production_revert(
        &self,
        principal: &Principal,
        req: &Request<Bytes>,
    ) -> ApiResult {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            to: String,
        }
        let body: Body = serde_json::from_slice(req.body()).map_err(|e| {
            WebError::bad("to", format!("expected {{\"to\": \"<commit id>\"}}: {e}"))
        })?;
        // Only who may revert production may take it back (checked again
        // per ticket below, with the policies).
        require(principal, Action::Move(Transition::Revert, Stage::Prod))?;
        let to = body.to.trim();
        if to.len() < 7 || to.len() > 40 || !to.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WebError::bad(
                "to",
                "must be a commit id of the production history (7 to 40 hex digits)",
            ));
        }
        let Some(repo) = self.history.as_ref() else {
            return Err(WebError::new(
                404,
                ErrorCode::NotFound,
                "no production history is kept: set `history_repo` in the proxy's configuration",
            ));
        };
        let target = repo
            .served_at(to)
            .await
            .map_err(|e| {
                WebError::new(
                    500,
                    ErrorCode::Internal,
                    format!("reading the history: {e}"),
                )
            })?
            .ok_or_else(|| {
                WebError::new(
                    404,
                    ErrorCode::NotFound,
                    format!(
                        "no commit {to} in the production history (`stamp --list -p --history`)"
                    ),
                )
            })?;

        let state = self.store.state().await?;
        let mut sets = std::collections::HashMap::new();
        for id in overlay::needed_sets(&state.overlay, &state.tickets) {
            if let Some(set) = self.store.get_set(&id).await? {
                sets.insert(id, set);
            }
        }
        let now = overlay::production(&state.overlay, &state.tickets, |id| sets.get(id))
            .map_err(|e| StoreError::Corrupt(format!("override set {} is missing", e.0)))?;
        if let Some(gone) = target.released.iter().find(|k| !now.released.contains(k)) {
            return Err(WebError::new(
                409,
                ErrorCode::Conflict,
                format!(
                    "{gone} was released at {} and is not now: reverting cannot bring it back; \
                     promote it again",
                    short(&target.id)
                ),
            ));
        }
        let undo: Vec<TicketKey> = now
            .released
            .iter()
            .rev()
            .filter(|k| !target.released.contains(k))
            .cloned()
            .collect();
        // What production would serve afterwards, before anything moves.
        let remaining: Vec<TicketKey> = state
            .overlay
            .iter()
            .filter(|k| !undo.contains(k))
            .cloned()
            .collect();
        let after = overlay::production(&remaining, &state.tickets, |id| sets.get(id))
            .map_err(|e| StoreError::Corrupt(format!("override set {} is missing", e.0)))?;
        let after_imports: BTreeMap<String, String> = after
            .overrides
            .iter()
            .map(|(spec, m)| (spec.clone(), m.url()))
            .collect();
        if after_imports != target.imports {
            let differ: Vec<&String> = after_imports
                .keys()
                .chain(target.imports.keys())
                .filter(|k| after_imports.get(*k) != target.imports.get(*k))
                .collect();
            return Err(WebError::new(
                409,
                ErrorCode::Conflict,
                format!(
                    "reverting cannot reach what {} served: {} would differ (a ticket released \
                     then was released again since, with other code, or settled); revert or \
                     promote those tickets one by one",
                    short(&target.id),
                    differ
                        .iter()
                        .take(5)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }

        // Every check first; nothing moves unless every revert may. Each
        // revert applies only to the version the dry run saw: a change in
        // between is a conflict, not a surprise.
        let actor = actor_from(principal, req.headers());
        let mut records = Vec::new();
        for key in &undo {
            let t = state
                .tickets
                .iter()
                .find(|t| &t.key == key)
                .cloned()
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("released ticket {key} has no record"))
                })?;
            require(principal, Action::Move(Transition::Revert, t.stage))?;
            self.check_policies(&t, Transition::Revert, &actor)
                .await
                .map_err(|mut e| {
                    e.body.message = format!("reverting {}: {}", t.key, e.body.message);
                    e
                })?;
            records.push(t);
        }
        let mut reverted = Vec::new();
        for t in records {
            let _change = self
                .desk
                .transition(&t.key, Transition::Revert, Some(t.version), &actor)
                .await
                .map_err(|e| {
                    let mut err = WebError::from(e);
                    if !reverted.is_empty() {
                        err.body.message = format!(
                            "{} (already reverted: {})",
                            err.body.message,
                            reverted
                                .iter()
                                .map(|k: &TicketKey| k.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                    err
                })?;
            reverted.push(t.key.clone());
        }
        log::info!(
            "API: {} took production back to {} (reverted {})",
            actor.name,
            target.id,
            reverted.len()
        );
        Ok((
            200,
            json!({
                "to": target.id,
                "reverted": reverted,
                "released": target.released,
                "overrides": target.imports.len(),
            }),
        ))
    }
}
