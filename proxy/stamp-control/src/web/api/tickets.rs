//! Reading tickets: the list, one ticket, and its overrides as an import map.

use super::*;
use stamp_model::listing::{self, ListQuery};

impl Api {
    pub(super) async fn list(&self, principal: &Principal, query: &str) -> ApiResult {
        require(principal, Action::Read)?;
        let q = ListQuery::parse(query).map_err(|e| WebError::bad(e.param, e.reason))?;
        let state = self.store.state().await?;
        let live = live_keys(&state.overlay, &state.tickets);
        // The records decide stage, text, time and the cursor; only the
        // page's tickets (and with `who`, the candidates) cost a history
        // read, so a page costs the same at 100 tickets or 10,000.
        let matching: Vec<&TicketRecord> = state.tickets.iter().filter(|t| q.matches(t)).collect();
        let total = q.who.is_none().then_some(matching.len());
        let mut rows: Vec<&TicketRecord> = matching.into_iter().filter(|t| q.admits(t)).collect();
        rows.sort_by(|a, b| listing::order(a, b));
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        for t in rows {
            if out.len() == q.limit {
                more = true;
                break;
            }
            last = Some(t);
            let history = self.store.history(&t.key).await?;
            if let Some(who) = &q.who {
                if !history.iter().any(|e| e.actor.to_lowercase() == *who) {
                    continue;
                }
            }
            let mut dto = self.ticket_dto(t, false, &live, principal).await?;
            // Who touched it last, for lists: a person's change, not the
            // settler's bookkeeping of a release.
            dto.last = history
                .into_iter()
                .rev()
                .find(|e| e.event != "baseline")
                .map(|e| LastDto {
                    event: e.event,
                    actor: e.actor,
                    at_ms: e.at_ms,
                });
            let last_view = self.store.recent_views(&t.key).await?;
            dto.views = Some(last_view.into_iter().take(1).collect());
            out.push(dto);
        }
        let next = more
            .then_some(last)
            .flatten()
            .map(|t| listing::Cursor::after(t).encode());
        Ok((
            200,
            to_value(&TicketList {
                tickets: out,
                next,
                total,
            }),
        ))
    }

    /// Stage, version and links, without loading any override set.
    /// A ticket's summary as `principal` sees it: `allowed_actions` are the
    /// moves its role may make from the ticket's stage, not every move the
    /// lifecycle has.
    pub(super) fn summary(&self, t: &TicketRecord, principal: &Principal) -> TicketDto {
        let mut links = BTreeMap::new();
        if t.stage != Stage::Closed {
            links.insert(
                "dev".to_string(),
                self.links.share(&t.key, View::Dev, t.share_gen),
            );
            if t.qa.is_some() {
                links.insert(
                    "qa".to_string(),
                    self.links.share(&t.key, View::Qa, t.share_gen),
                );
            }
        }
        TicketDto {
            key: t.key.clone(),
            stage: t.stage,
            version: t.version,
            updated_ms: t.updated_ms,
            links,
            allowed_actions: stamp_model::roles::actions_for(principal.role, t.stage),
            created_ms: None,
            modules: BTreeMap::new(),
            live_in_production: None,
            overlay: None,
            history: None,
            last: None,
            views: None,
            rollout: None,
            warnings: Vec::new(),
        }
    }

    /// The tickets production serves now (the overlay rule's released set).
    pub(super) async fn live(&self) -> Result<std::collections::HashSet<TicketKey>, WebError> {
        let state = self.store.state().await?;
        Ok(live_keys(&state.overlay, &state.tickets))
    }

    /// A ticket with its overrides; with `full`, its history too. `live`:
    /// the tickets production serves now.
    pub(super) async fn ticket_dto(
        &self,
        t: &TicketRecord,
        full: bool,
        live: &std::collections::HashSet<TicketKey>,
        principal: &Principal,
    ) -> Result<TicketDto, WebError> {
        let mut dto = self.summary(t, principal);
        for stage in [Stage::Dev, Stage::Qa, Stage::Prod] {
            if let Some(set) = workflow::overrides(&self.store, t, stage).await? {
                dto.modules.insert(stage, ModuleDto::list(&set));
            }
        }
        dto.created_ms = Some(t.created_ms);
        dto.live_in_production = Some(live.contains(&t.key));
        if t.stage == Stage::Prod {
            let total = dto.modules.get(&Stage::Prod).map_or(0, Vec::len);
            let retired = match t.retired {
                Some(id) => self.store.get_set(&id).await?.map_or(0, |s| s.len()),
                None => 0,
            };
            dto.overlay = Some(OverlayDto {
                live: total.saturating_sub(retired) as u64,
                retired: retired as u64,
                baseline_recorded: t.baseline.is_some(),
            });
        }
        if let Some((rollout, _)) = self.rollouts.status(t).await? {
            dto.rollout = Some(rollout);
        }
        if full {
            dto.history = Some(self.store.history(&t.key).await?);
            let mut views = self.store.recent_views(&t.key).await?;
            views.truncate(10);
            dto.views = Some(views);
        }
        Ok(dto)
    }

    pub(super) async fn importmap(&self, key: &TicketKey, query: &str) -> ApiResult {
        let mut stage = Stage::Dev;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "stage" {
                stage = match v.parse::<Stage>() {
                    Ok(s @ (Stage::Dev | Stage::Qa | Stage::Prod)) => s,
                    _ => return Err(WebError::bad("stage", "must be dev, qa or prod")),
                };
            }
        }
        let t = self.ticket(key).await?;
        let own = workflow::overrides(&self.store, &t, stage)
            .await?
            .ok_or_else(|| {
                WebError::new(
                    404,
                    ErrorCode::NotFound,
                    format!("ticket {key} has no {stage} stage"),
                )
            })?;
        // The production overlay underneath, by the rule the proxy serves.
        let state = self.store.state().await?;
        let mut sets = std::collections::HashMap::new();
        for id in overlay::needed_sets(&state.overlay, &state.tickets) {
            if let Some(set) = self.store.get_set(&id).await? {
                sets.insert(id, set);
            }
        }
        let mut all: OverrideSet =
            overlay::production(&state.overlay, &state.tickets, |id| sets.get(id))
                .map_err(|e| WebError::from(StoreError::Corrupt(e.to_string())))?
                .overrides;
        all.extend(own);
        let imports: serde_json::Map<String, Value> = all
            .iter()
            .map(|(k, m)| (k.clone(), json!(m.url())))
            .collect();
        Ok((200, json!({ "imports": imports })))
    }
}

pub(super) fn live_keys(
    order: &[TicketKey],
    tickets: &[TicketRecord],
) -> std::collections::HashSet<TicketKey> {
    overlay::released(order, tickets)
        .into_iter()
        .map(|t| t.key.clone())
        .collect()
}
