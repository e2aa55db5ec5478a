//! Moving tickets: preconditions (`expected_version`, `If-Match`, `from`),
//! the policies' verdict (also as a dry run), sign-offs, and transitions.

use super::*;

impl Api {
    /// Reads a transition's body and its precondition (`expected_version`,
    /// `If-Match` or `from`), checked against the ticket as it is now. With
    /// `required`, a request that states none is refused (428): two clicks,
    /// or two people, must never move a ticket twice.
    pub(super) async fn precondition(
        &self,
        key: &TicketKey,
        req: &Request<Bytes>,
        required: bool,
    ) -> Result<(TransitionRequest, TicketRecord, Option<u64>), WebError> {
        let body = read_transition(req.body())?;
        let t = self.ticket(key).await?;
        let expected = body.expected_version.or(if_match(req.headers())?);
        if let Some(v) = expected {
            if v != t.version {
                return Err(WebError::moved(
                    format!("ticket {key} is at version {}, not {v}", t.version),
                    &t,
                ));
            }
        }
        if let Some(from) = body.from {
            if from != t.stage {
                return Err(WebError::moved(
                    format!("ticket {key} is in {}, not {from}", t.stage),
                    &t,
                ));
            }
        }
        if required && expected.is_none() && body.from.is_none() {
            let mut e = WebError::new(
                428,
                ErrorCode::PreconditionRequired,
                format!(
                    "say what this move starts from: send {{\"expected_version\": {}}} (or \
                     If-Match: \"{}\"), or {{\"from\": \"{}\"}}",
                    t.version, t.version, t.stage
                ),
            );
            e.body.version = Some(t.version);
            e.body.stage = Some(t.stage);
            return Err(e);
        }
        Ok((body, t, expected))
    }

    pub(super) async fn sign_off(
        &self,
        principal: &Principal,
        key: &TicketKey,
        req: &Request<Bytes>,
        withdraw: bool,
    ) -> ApiResult {
        let (body, t, _) = self.precondition(key, req, false).await?;
        require(principal, Action::SignOff)?;
        if t.stage != Stage::Qa {
            return Err(WorkflowError::IllegalTransition {
                key: key.clone(),
                action: if withdraw {
                    "withdraw a sign-off of"
                } else {
                    "sign off"
                },
                stage: t.stage,
            }
            .into());
        }
        let actor = Actor {
            name: principal.name.clone(),
            commit: body.commit.clone(),
            branch: body.branch.clone(),
            role: signed_in_role(principal),
            source: None,
        };
        let change = if withdraw {
            let history = self.store.history(key).await?;
            if !crate::policy::has_standing(&history, &principal.name) {
                return Err(WebError::new(
                    409,
                    ErrorCode::Conflict,
                    format!(
                        "{} has no sign-off of {key} standing to withdraw (none since its last upload or promotion)",
                        principal.name
                    ),
                ));
            }
            self.desk
                .withdraw_sign_off(&t, body.comment.clone(), &actor)
                .await?
        } else {
            self.desk.sign_off(&t, body.comment.clone(), &actor).await?
        };
        let summary = self.summary(&change.ticket, principal);
        Ok((200, to_value(&summary)))
    }

    pub(super) async fn transition(
        &self,
        principal: &Principal,
        key: &TicketKey,
        tr: Transition,
        req: &Request<Bytes>,
    ) -> ApiResult {
        let (body, t, expected) = self.precondition(key, req, true).await?;
        let actor = Actor {
            name: principal.name.clone(),
            commit: body.commit.clone(),
            branch: body.branch.clone(),
            role: signed_in_role(principal),
            source: None,
        };
        if tr.target(t.stage).is_none() {
            return Err(WorkflowError::IllegalTransition {
                key: key.clone(),
                action: tr.as_str(),
                stage: t.stage,
            }
            .into());
        }
        require(principal, Action::Move(tr, t.stage))?;
        let rollout = match &body.rollout {
            Some(r) if tr == Transition::Promote && t.stage == Stage::Qa => {
                self.rollout_of(r).await?
            }
            Some(_) => {
                return Err(WebError::bad(
                    "rollout",
                    format!(
                        "goes with promoting a ticket in qa to prod; {key} is in {}",
                        t.stage
                    ),
                ))
            }
            None => None,
        };
        let (change, warnings) = match expected {
            // The caller named the version it read: the move is made on
            // that version or not at all.
            Some(version) => {
                let verdict = self.check_policies(&t, tr, &actor).await?;
                let change = self
                    .desk
                    .transition_with(key, tr, Some(version), &actor, rollout, None)
                    .await?;
                (change, verdict.unwrap_or_default())
            }
            // From a stage only: a write meanwhile that left the stage as
            // it was (and qa's snapshot, for a release of it) is judged
            // again and the move made on it.
            None => {
                self.transition_rechecked(tr, t, &actor, rollout, |read, now| {
                    read.stage == now.stage
                        && (read.stage != Stage::Qa
                            || tr != Transition::Promote
                            || read.qa == now.qa)
                })
                .await?
            }
        };
        // A summary, not the module lists: a transition is a pointer move and
        // its answer should not cost more than the move itself.
        let mut summary = self.summary(&change.ticket, principal);
        summary.warnings = warnings;
        summary.rollout = self.rollouts.status(&change.ticket).await?.map(|(r, _)| r);
        Ok((200, to_value(&summary)))
    }

    /// Token name → role, for policies that count sign-offs by role.
    pub(super) fn roles(&self) -> std::collections::HashMap<String, stamp_model::roles::Role> {
        if self.cfg.open() {
            return [("anonymous".to_string(), stamp_model::roles::Role::Admin)].into();
        }
        self.cfg
            .tokens
            .load()
            .iter()
            .map(|t| (t.name.clone(), t.role))
            .collect()
    }

    /// Runs the policies that guard `tr` from the ticket's stage; their
    /// warnings, or the refusal.
    pub(super) async fn check_policies(
        &self,
        t: &TicketRecord,
        tr: Transition,
        actor: &Actor,
    ) -> Result<Option<Vec<Value>>, WebError> {
        let Some(to) = tr.target(t.stage) else {
            return Err(WorkflowError::IllegalTransition {
                key: t.key.clone(),
                action: tr.as_str(),
                stage: t.stage,
            }
            .into());
        };
        if !self.policies.guards(t.stage, to) {
            return Ok(None);
        }
        let ctx = crate::policy::TransitionCtx {
            ticket: t.clone(),
            from: t.stage,
            to,
            action: tr,
            actor: actor.clone(),
            history: self.store.history(&t.key).await?,
            overrides: workflow::overrides(&self.store, t, t.stage)
                .await?
                .unwrap_or_default(),
            store: self.store.clone(),
            proxy_base: self.proxy_base.clone(),
            roles: self.roles(),
        };
        let verdict = self.policies.check(&ctx).await;
        if !verdict.allowed() {
            let mut e = WebError::new(422, ErrorCode::PolicyDenied, verdict.message());
            if let Value::Object(extra) = verdict.details() {
                e.body.extra = extra;
            }
            return Err(e);
        }
        Ok(Some(
            verdict.details()["warnings"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        ))
    }

    /// The verdict a move would get now, without making it: whether the
    /// caller's role may make it, and each guarding policy's finding (a
    /// checklist for the panel and `stamp --check`).
    pub(super) async fn dry_run(
        &self,
        principal: &Principal,
        key: &TicketKey,
        query: &str,
        req: &Request<Bytes>,
    ) -> ApiResult {
        let mut action = Transition::Promote;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "action" {
                action = Transition::parse(&v).ok_or_else(|| {
                    WebError::bad("action", "must be promote, revert, close or reopen")
                })?;
            }
        }
        let t = self.ticket(key).await?;
        let Some(to) = action.target(t.stage) else {
            return Err(WorkflowError::IllegalTransition {
                key: key.clone(),
                action: action.as_str(),
                stage: t.stage,
            }
            .into());
        };
        let actor = actor_from(principal, req.headers());
        let may = allowed(principal.role, Action::Move(action, t.stage));
        let kinds = self.policies.applicable(t.stage, to);
        let verdict = if kinds.is_empty() {
            crate::policy::Verdict::default()
        } else {
            let ctx = crate::policy::TransitionCtx {
                ticket: t.clone(),
                from: t.stage,
                to,
                action,
                actor,
                history: self.store.history(key).await?,
                overrides: workflow::overrides(&self.store, &t, t.stage)
                    .await?
                    .unwrap_or_default(),
                store: self.store.clone(),
                proxy_base: self.proxy_base.clone(),
                roles: self.roles(),
            };
            self.policies.check(&ctx).await
        };
        let mut checks: Vec<Value> = Vec::new();
        for kind in &kinds {
            let denials: Vec<&str> = verdict
                .denials
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, r)| r.as_str())
                .collect();
            let warnings: Vec<&str> = verdict
                .warnings
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, r)| r.as_str())
                .collect();
            checks.push(json!({
                "policy": kind,
                "ok": denials.is_empty(),
                "reasons": denials,
                "warnings": warnings,
            }));
        }
        Ok((
            200,
            json!({
                "ticket": key,
                "action": action.as_str(),
                "from": t.stage,
                "to": to,
                "version": t.version,
                "role_allows": may,
                "allowed": may && verdict.allowed(),
                "checks": checks,
            }),
        ))
    }
}

/// Parses and checks the optional body of a transition.
pub(super) fn read_transition(body: &[u8]) -> Result<TransitionRequest, WebError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TransitionRequest::default());
    }
    let req: TransitionRequest = parse_json(body)?;
    for (field, value) in [
        ("commit", &req.commit),
        ("branch", &req.branch),
        ("comment", &req.comment),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.len() > wire::MAX_TEXT || v.chars().any(char::is_control))
        {
            return Err(WebError::bad(
                field,
                format!("must be at most {} printable characters", wire::MAX_TEXT),
            ));
        }
    }
    if req
        .commit
        .as_ref()
        .is_some_and(|c| c.len() < 4 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(WebError::bad("commit", "must be a hex commit id"));
    }
    Ok(req)
}

/// `If-Match: "3"` (a ticket's version as its ETag).
pub(super) fn if_match(headers: &http::HeaderMap) -> Result<Option<u64>, WebError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| WebError::bad("if-match", "must be a ticket version, e.g. \"3\"")),
    }
}

impl Api {
    /// The rollout a release asks for: its steps (or the configured
    /// schedule), checked; `None` when its first step is every visitor.
    pub(super) async fn rollout_of(
        &self,
        r: &wire::RolloutRequest,
    ) -> Result<Option<stamp_model::rollout::Rollout>, WebError> {
        let cfg = &self.cfg.rollout;
        let (steps, every) = if r.steps.is_empty() {
            (cfg.steps.clone(), r.every.clone())
        } else {
            (r.steps.clone(), r.every.clone())
        };
        let text = steps
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let steps = stamp_model::rollout::parse_steps(&text)
            .map_err(|e| WebError::bad("rollout.steps", e))?;
        let every_ms = match every.as_deref() {
            None if r.steps.is_empty() => cfg.every.as_millis() as u64,
            None | Some("0") => 0,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| WebError::bad("rollout.every", format!("`{text}`: {e}")))?
                .as_millis() as u64,
        };
        if steps[0] == 100 {
            return Ok(None);
        }
        let rolling = self.rollouts.rolling().await?;
        if rolling >= cfg.max_concurrent {
            return Err(WebError::new(
                409,
                ErrorCode::Conflict,
                format!(
                    "{rolling} tickets are rolling out already, the most at once \
                     (rollout.max_concurrent): finish or revert one first"
                ),
            ));
        }
        Ok(Some(stamp_model::rollout::Rollout {
            percent: steps[0],
            steps: steps[1..].to_vec(),
            every_ms,
            step_at_ms: stamp_store::now_ms(),
            paused: false,
        }))
    }

    /// `POST tickets/{KEY}/rollout`: a step of a rollout in progress (to a
    /// share, `next`, `pause`, `resume`), guarded by the release's policies
    /// when it takes more visitors to the ticket.
    pub(super) async fn rollout_step(
        &self,
        principal: &Principal,
        key: &TicketKey,
        req: &Request<Bytes>,
    ) -> ApiResult {
        let body: wire::StepRequest = if req.body().iter().all(u8::is_ascii_whitespace) {
            wire::StepRequest::default()
        } else {
            parse_json(req.body())?
        };
        let t = self.ticket(key).await?;
        if let Some(v) = body.expected_version.or(if_match(req.headers())?) {
            if v != t.version {
                return Err(WebError::moved(
                    format!("ticket {key} is at version {}, not {v}", t.version),
                    &t,
                ));
            }
        }
        require(principal, Action::Move(Transition::Promote, Stage::Qa))?;
        let step = match (body.to, body.action.as_deref()) {
            (Some(p), None) => workflow::Step::To(p),
            (None, Some("next")) => workflow::Step::Next,
            (None, Some("pause")) => workflow::Step::Pause,
            (None, Some("resume")) => workflow::Step::Resume,
            (None, Some(other)) => {
                return Err(WebError::bad(
                    "action",
                    format!("`{other}` is not next, pause or resume"),
                ))
            }
            _ => {
                return Err(WebError::bad(
                    "to",
                    "give `to` (a share, 1 to 100) or `action` (next, pause, resume)",
                ))
            }
        };
        if body
            .comment
            .as_ref()
            .is_some_and(|c| c.len() > wire::MAX_TEXT || c.chars().any(char::is_control))
        {
            return Err(WebError::bad(
                "comment",
                format!("must be at most {} printable characters", wire::MAX_TEXT),
            ));
        }
        let actor = actor_from(principal, req.headers());
        // Without a stated version, a change that left the rollout where it
        // was (an upload, a sign-off, the settler's bookkeeping) is not the
        // caller's concern: the step is made on the new version. A step,
        // pause or revert meanwhile is, and answers 409.
        let explicit = body.expected_version.is_some() || if_match(req.headers())?.is_some();
        let outcome = self
            .step_retrying(t, step, &actor, body.comment.clone(), explicit)
            .await?;
        match outcome {
            Ok((change, verdict)) => {
                let live = self.live().await?;
                let mut dto = self
                    .ticket_dto(&change.ticket, false, &live, principal)
                    .await?;
                dto.warnings = verdict.details()["warnings"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                Ok((200, to_value(&dto)))
            }
            Err(crate::rollouts::StepError::Policy(v)) => {
                let mut e = WebError::new(422, ErrorCode::PolicyDenied, v.message());
                if let Value::Object(extra) = v.details() {
                    e.body.extra = extra;
                }
                Err(e)
            }
            Err(crate::rollouts::StepError::Workflow(w)) => Err(w.into()),
            Err(crate::rollouts::StepError::Store(s)) => Err(s.into()),
        }
    }
}

impl Api {
    /// A step of `t`'s rollout. Unless `explicit` (the caller named the
    /// version it read), a write meanwhile that left the stage and the
    /// rollout as they were (an upload, a sign-off, the settler's or a
    /// hook's bookkeeping) is not the caller's concern: the step is made
    /// on the new version. A step, pause or revert meanwhile answers 409.
    async fn step_retrying(
        &self,
        mut t: TicketRecord,
        step: workflow::Step,
        actor: &Actor,
        comment: Option<String>,
        explicit: bool,
    ) -> Result<Result<(Change, crate::policy::Verdict), crate::rollouts::StepError>, WebError>
    {
        for _ in 0..8 {
            let result = self.rollouts.step(&t, step, actor, comment.clone()).await;
            let conflict = matches!(
                &result,
                Err(crate::rollouts::StepError::Workflow(WorkflowError::Store(
                    StoreError::Conflict { .. }
                )) | crate::rollouts::StepError::Store(StoreError::Conflict { .. }))
            );
            if !conflict || explicit {
                return Ok(result);
            }
            let now = self.ticket(&t.key).await?;
            if now.stage != t.stage || now.rollout != t.rollout {
                return Err(WebError::moved(
                    format!("the rollout of {} changed meanwhile", t.key),
                    &now,
                ));
            }
            t = now;
        }
        Err(WebError::new(
            409,
            ErrorCode::Conflict,
            format!("ticket {} keeps changing; try again", t.key),
        ))
    }

    /// `tr` on `t`, its policies judged on the version it is made on; the
    /// change and the policies' warnings. A write meanwhile that leaves the
    /// ticket `same` as it was read (for a click in Slack: its stage and
    /// rollout; for a move from a stage: its stage), such as the settler's
    /// bookkeeping of a release, a sign-off or links revoked, makes the move
    /// judged and made again on the new version; any other answers 409, so a
    /// double click never moves a ticket twice.
    async fn transition_rechecked(
        &self,
        tr: Transition,
        mut t: TicketRecord,
        actor: &Actor,
        rollout: Option<stamp_model::rollout::Rollout>,
        same: impl Fn(&TicketRecord, &TicketRecord) -> bool,
    ) -> Result<(Change, Vec<Value>), WebError> {
        for _ in 0..8 {
            let verdict = self.check_policies(&t, tr, actor).await?;
            match self
                .desk
                .transition_with(&t.key, tr, Some(t.version), actor, rollout.clone(), None)
                .await
            {
                Err(WorkflowError::Store(StoreError::Conflict { .. })) => {
                    let now = self.ticket(&t.key).await?;
                    if !same(&t, &now) {
                        return Err(WebError::moved(
                            format!(
                                "ticket {} moved meanwhile (it is {} now): nothing done",
                                t.key, now.stage
                            ),
                            &now,
                        ));
                    }
                    t = now;
                }
                other => {
                    return other
                        .map(|change| (change, verdict.unwrap_or_default()))
                        .map_err(WebError::from)
                }
            }
        }
        Err(WebError::new(
            409,
            ErrorCode::Conflict,
            format!("ticket {} keeps changing; try again", t.key),
        ))
    }

    /// A button clicked in Slack, by a person whose role was found from
    /// their verified email: the same roles and policies as the panel. The
    /// ticket must still be where the message showed it (`stage`, and the
    /// rollout step that began at `step`). Answers what happened.
    pub(crate) async fn act_from_chat(
        &self,
        principal: &Principal,
        key: &TicketKey,
        action: &str,
        stage: &str,
        step: u64,
    ) -> Result<String, WebError> {
        let t = self.ticket(key).await?;
        let now_step = t.rollout.as_ref().map_or(0, |r| r.step_at_ms);
        if t.stage.as_str() != stage || now_step != step {
            return Err(WebError::moved(
                format!(
                    "{key} changed since this message (it is {}{} now): nothing done",
                    t.stage,
                    t.rollout
                        .as_ref()
                        .map(|r| format!(" at {}%", r.percent))
                        .unwrap_or_default()
                ),
                &t,
            ));
        }
        let actor = Actor {
            name: principal.name.clone(),
            commit: None,
            branch: None,
            role: signed_in_role(principal),
            source: None,
        };
        match action {
            "release" => {
                if t.stage != Stage::Qa {
                    return Err(WorkflowError::IllegalTransition {
                        key: key.clone(),
                        action: "release",
                        stage: t.stage,
                    }
                    .into());
                }
                require(principal, Action::Move(Transition::Promote, Stage::Qa))?;
                let rollout = self.rollout_of(&wire::RolloutRequest::default()).await?;
                let (change, _) = self
                    .transition_rechecked(Transition::Promote, t, &actor, rollout, same_in_chat)
                    .await?;
                Ok(match &change.ticket.rollout {
                    Some(r) => format!(
                        "{key} released to {}% of production by {}",
                        r.percent, principal.name
                    ),
                    None => format!("{key} released to production by {}", principal.name),
                })
            }
            "revert" => {
                require(principal, Action::Move(Transition::Revert, t.stage))?;
                let (change, _) = self
                    .transition_rechecked(Transition::Revert, t, &actor, None, same_in_chat)
                    .await?;
                Ok(format!(
                    "{key} reverted to {} by {}",
                    change.ticket.stage, principal.name
                ))
            }
            "next" | "pause" | "resume" => {
                require(principal, Action::Move(Transition::Promote, Stage::Qa))?;
                let step = match action {
                    "next" => workflow::Step::Next,
                    "pause" => workflow::Step::Pause,
                    _ => workflow::Step::Resume,
                };
                // The message named the stage and the step it showed,
                // checked above: a write that left them as they were is
                // not the clicker's concern.
                match self.step_retrying(t, step, &actor, None, false).await? {
                    Ok((change, _)) => Ok(format!(
                        "{key}: {} (by {})",
                        change.detail.unwrap_or_default(),
                        principal.name
                    )),
                    Err(crate::rollouts::StepError::Policy(v)) => {
                        Err(WebError::new(422, ErrorCode::PolicyDenied, v.message()))
                    }
                    Err(crate::rollouts::StepError::Workflow(w)) => Err(w.into()),
                    Err(crate::rollouts::StepError::Store(s)) => Err(s.into()),
                }
            }
            other => Err(WebError::bad(
                "action",
                format!("`{other}` is not release, next, pause, resume or revert"),
            )),
        }
    }
}

/// What a message in chat showed of a ticket: a click acts while it holds.
fn same_in_chat(read: &TicketRecord, now: &TicketRecord) -> bool {
    read.stage == now.stage && read.rollout == now.rollout
}
