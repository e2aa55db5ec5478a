//! Releasing by steps, driven: what the pages of both sides of a rollout
//! reported since its current step began, the verdict on it (and the
//! optional Prometheus gate), the policies that guard a step, and the job
//! that takes scheduled steps and reverts a ticket whose side regressed.
//!
//! Every proxy of a fleet runs the job; each step and revert is a commit
//! guarded by the version read, so two proxies never take the same step
//! twice (the second one's commit is a conflict, and it lets it be).

use std::collections::HashMap;
use std::sync::Arc;

use stamp_model::lifecycle::Transition;
use stamp_model::record::HistoryEvent;
use stamp_model::rollout::{judge, SideCounts, Verdict};
use stamp_model::ticket::{Stage, TicketKey};
use stamp_model::views::Side;
use stamp_model::wire::RolloutDto;
use stamp_model::Role;
use stamp_store::{now_ms, SharedStore, StoreError, TicketRecord};

use crate::config::{ControlConfig, PrometheusGate};
use crate::effects::Desk;
use crate::kinds::{Actor, Change};
use crate::policy::{Engine, TransitionCtx, Verdict as PolicyVerdict};
use crate::workflow::{self, Step, WorkflowError};

/// The actor of the steps and reverts the job takes.
pub const ACTOR: &str = "rollout";

/// What the job did with one ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Held(String),
    Stepped(String),
    Reverted(String),
    Paused(String),
}

/// Why a step was not taken.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{}", .0.message())]
    Policy(PolicyVerdict),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rollouts: their numbers, their steps, their job.
#[derive(Clone)]
pub struct Rollouts {
    cfg: Arc<ControlConfig>,
    store: SharedStore,
    desk: Desk,
    policies: Arc<Engine>,
    http: reqwest::Client,
    proxy_base: String,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").finish()
    }
}

impl Rollouts {
    pub fn new(
        cfg: Arc<ControlConfig>,
        store: SharedStore,
        desk: Desk,
        policies: Arc<Engine>,
        proxy_base: String,
    ) -> Rollouts {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Rollouts {
            cfg,
            store,
            desk,
            policies,
            http,
            proxy_base,
        }
    }

    /// Page views per side since the ticket's current step began, and the
    /// pages sent and heard from that have had `rollout.heard_within` to
    /// report.
    pub async fn counts(&self, t: &TicketRecord) -> Result<(SideCounts, SideCounts), StoreError> {
        let since = t.rollout.as_ref().map_or(0, |r| r.step_at_ms);
        let settled = now_ms().saturating_sub(self.cfg.rollout.heard_within.as_millis() as u64);
        let mut ticket = SideCounts::default();
        let mut production = SideCounts::default();
        for c in self.store.view_counts(&t.key, since).await? {
            // Counts are kept by the minute: the minutes that end after the
            // step began are the step's, the one it began in included (so a
            // step is judged from its first views; up to 59 s of what came
            // before it, the step or the pause before, count with them).
            if c.minute_ms + 60_000 <= since {
                continue;
            }
            let side = match c.side {
                Side::Ticket => &mut ticket,
                Side::Production => &mut production,
            };
            side.views += c.views;
            side.erring_views += c.erring_views;
            side.touched += c.touched_views;
            side.touched_erring += c.touched_erring;
            // Pages sent and heard are counted by the minute each page was
            // sent: a minute is judged once its pages have all had their
            // time to report, so a side whose pages load (and report) a
            // little later is not taken for a silent one.
            if c.minute_ms + 60_000 <= settled {
                side.sent += c.sent;
                side.heard += c.heard.min(c.sent);
            }
        }
        Ok((ticket, production))
    }

    /// The verdict on the current step, and the rollout as the API shows it.
    pub async fn status(
        &self,
        t: &TicketRecord,
    ) -> Result<Option<(RolloutDto, Verdict)>, StoreError> {
        let Some(r) = t.rollout.as_ref().filter(|_| t.stage == Stage::Prod) else {
            return Ok(None);
        };
        let (ticket, production) = self.counts(t).await?;
        let verdict = judge(ticket, production, &self.cfg.rollout.rule);
        let dto = RolloutDto {
            percent: r.percent,
            steps: r.steps.clone(),
            every_ms: r.every_ms,
            step_at_ms: r.step_at_ms,
            paused: r.paused,
            next_at_ms: r.due_ms(),
            ticket,
            production,
            verdict: verdict.name().to_string(),
            said: verdict.to_string(),
            signal: self.cfg.rollout.signal,
        };
        Ok(Some((dto, verdict)))
    }

    /// The Prometheus gate's value for `key`: `Ok(None)` without a gate;
    /// the highest sample and whether it is within `max`.
    pub async fn gate(&self, key: &TicketKey) -> Result<Option<(f64, bool)>, String> {
        let Some(g) = &self.cfg.rollout.prometheus else {
            return Ok(None);
        };
        let value = query(&self.http, g, key).await?;
        Ok(Some((value, value <= g.max)))
    }

    /// The policies' verdict on a step of `t` (taking more visitors to it):
    /// the same policies that guard its release, with the sign-offs that
    /// stood when it was released (and not withdrawn since).
    pub async fn check_step(
        &self,
        t: &TicketRecord,
        actor: &Actor,
    ) -> Result<PolicyVerdict, StoreError> {
        self.check(t, Stage::Qa, Stage::Prod, Transition::Promote, actor)
            .await
    }

    async fn check(
        &self,
        t: &TicketRecord,
        from: Stage,
        to: Stage,
        action: Transition,
        actor: &Actor,
    ) -> Result<PolicyVerdict, StoreError> {
        if !self.policies.guards(from, to) {
            return Ok(PolicyVerdict::default());
        }
        let mut history = self.store.history(&t.key).await?;
        if action == Transition::Promote {
            history = as_released(history);
        }
        let ctx = TransitionCtx {
            ticket: TicketRecord {
                stage: from,
                ..t.clone()
            },
            from,
            to,
            action,
            actor: actor.clone(),
            history,
            overrides: workflow::overrides(&self.store, t, Stage::Prod)
                .await?
                .unwrap_or_default(),
            store: self.store.clone(),
            proxy_base: self.proxy_base.clone(),
            roles: roles(&self.cfg),
        };
        Ok(self.policies.check(&ctx).await)
    }

    /// Takes a step as `actor`, the policies checked first when it takes
    /// more visitors to the ticket.
    pub async fn step(
        &self,
        t: &TicketRecord,
        step: Step,
        actor: &Actor,
        why: Option<String>,
    ) -> Result<(Change, PolicyVerdict), StepError> {
        let widens = match (step, &t.rollout) {
            (Step::Next, _) => true,
            (Step::To(p), Some(r)) => p > r.percent,
            _ => false,
        };
        let verdict = if widens {
            let v = self.check_step(t, actor).await?;
            if !v.allowed() {
                return Err(StepError::Policy(v));
            }
            v
        } else {
            PolicyVerdict::default()
        };
        let change = self
            .desk
            .step(&t.key, step, Some(t.version), actor, why)
            .await?;
        Ok((change, verdict))
    }

    /// How many tickets roll out now.
    pub async fn rolling(&self) -> Result<usize, StoreError> {
        let state = self.store.state().await?;
        Ok(state
            .tickets
            .iter()
            .filter(|t| t.stage == Stage::Prod && t.rollout.is_some())
            .count())
    }

    /// One pass of the job over every ticket rolling out.
    pub async fn tick(&self) -> Vec<(TicketKey, Outcome)> {
        let state = match self.store.state().await {
            Ok(s) => s,
            Err(e) => {
                log::debug!("rollouts: cannot read the store: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for t in state
            .tickets
            .iter()
            .filter(|t| t.stage == Stage::Prod && t.rollout.as_ref().is_some_and(|r| !r.paused))
        {
            match self.drive(t).await {
                Ok(o) => out.push((t.key.clone(), o)),
                Err(e) => log::warn!("rollout of {}: {e}", t.key),
            }
        }
        out
    }

    /// Pauses a rollout the job cannot move on with, saying why.
    async fn pause(
        &self,
        t: &TicketRecord,
        actor: &Actor,
        said: String,
    ) -> Result<Outcome, StepError> {
        self.desk
            .step(
                &t.key,
                Step::Pause,
                Some(t.version),
                actor,
                Some(said.clone()),
            )
            .await?;
        Ok(Outcome::Paused(said))
    }

    /// Decides one ticket: revert on a regression, step when due and
    /// healthy, else hold.
    async fn drive(&self, t: &TicketRecord) -> Result<Outcome, StepError> {
        let actor = Actor::named(ACTOR);
        let Some(r) = &t.rollout else {
            return Ok(Outcome::Held("not rolling out".into()));
        };
        let Some((_, verdict)) = self.status(t).await? else {
            return Ok(Outcome::Held("not rolling out".into()));
        };
        let gate = self.gate(&t.key).await;
        let gate_said = match &gate {
            Ok(Some((v, ok))) => Some(format!(
                "prometheus {} {v} (max {})",
                if *ok { "at" } else { "over, at" },
                self.cfg.rollout.prometheus.as_ref().map_or(0.0, |g| g.max)
            )),
            Ok(None) => None,
            Err(e) => Some(format!("prometheus query failed: {e}")),
        };
        let regressed = verdict.is_regressed() || matches!(gate, Ok(Some((_, false))));
        let why = match &gate_said {
            Some(g) if self.cfg.rollout.signal => format!("{verdict}; {g}"),
            Some(g) => g.clone(),
            None => verdict.to_string(),
        };
        if regressed {
            let v = self
                .check(t, Stage::Prod, Stage::Qa, Transition::Revert, &actor)
                .await?;
            if !v.allowed() {
                let said = format!("{why}; the policies refuse the revert: {}", v.message());
                return self.pause(t, &actor, said).await;
            }
            self.desk
                .transition_with(
                    &t.key,
                    Transition::Revert,
                    Some(t.version),
                    &actor,
                    None,
                    Some(format!("rollout at {}% regressed: {why}", r.percent)),
                )
                .await?;
            return Ok(Outcome::Reverted(why));
        }
        let Some(due) = r.due_ms() else {
            return Ok(Outcome::Held(why));
        };
        if now_ms() < due {
            return Ok(Outcome::Held(why));
        }
        if gate.is_err() {
            return Ok(Outcome::Held(why));
        }
        // With a signal, a step waits for enough views to judge it by.
        if self.cfg.rollout.signal && matches!(verdict, Verdict::Waiting { .. }) {
            return Ok(Outcome::Held(why));
        }
        let why = if self.cfg.rollout.signal {
            why
        } else {
            format!(
                "on schedule, no page signal (reports.sample = 0){}",
                gate_said.map(|g| format!("; {g}")).unwrap_or_default()
            )
        };
        match self.step(t, Step::Next, &actor, Some(why.clone())).await {
            Ok(_) => Ok(Outcome::Stepped(why)),
            Err(StepError::Policy(v)) => {
                let said = format!("the policies refuse the next step: {}", v.message());
                self.pause(t, &actor, said).await
            }
            Err(e) => Err(e),
        }
    }

    /// Runs [`Rollouts::tick`] every `rollout.check_every` until shutdown.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let every = self.cfg.rollout.check_every;
        let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for (key, outcome) in self.tick().await {
                match outcome {
                    Outcome::Held(why) => log::debug!("rollout of {key}: holding ({why})"),
                    Outcome::Stepped(why) => log::info!("rollout of {key}: stepped ({why})"),
                    Outcome::Reverted(why) => log::warn!("rollout of {key}: reverted ({why})"),
                    Outcome::Paused(why) => log::warn!("rollout of {key}: paused ({why})"),
                }
            }
        }
    }
}

/// The history as it stood at the ticket's release (sign-offs given before
/// it count for its steps), with sign-offs withdrawn since taken back.
fn as_released(history: Vec<HistoryEvent>) -> Vec<HistoryEvent> {
    let release = history
        .iter()
        .rposition(|e| e.event == "promote" && e.to == Some(Stage::Prod));
    let Some(at) = release else {
        return history;
    };
    let (before, after) = history.split_at(at);
    let mut out = before.to_vec();
    out.extend(
        after
            .iter()
            .filter(|e| e.event == workflow::WITHDRAW_SIGN_OFF)
            .cloned(),
    );
    out
}

/// Token name → role (as the API's own checks read them).
fn roles(cfg: &ControlConfig) -> HashMap<String, Role> {
    if cfg.open() {
        return [("anonymous".to_string(), Role::Admin)].into();
    }
    cfg.tokens
        .load()
        .iter()
        .map(|t| (t.name.clone(), t.role))
        .collect()
}

/// Runs the gate's query (`$ticket` replaced) against Prometheus's HTTP API
/// and returns the highest sample (0 when the result is empty: no errors
/// were counted).
async fn query(http: &reqwest::Client, g: &PrometheusGate, key: &TicketKey) -> Result<f64, String> {
    let q = g.query.replace("$ticket", key.as_str());
    let resp = http
        .get(format!("{}/api/v1/query", g.url))
        .query(&[("query", q.as_str())])
        .send()
        .await
        .map_err(|e| format!("{}: {}", g.url, crate::kit::transport_error(&e)))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("{} answered {status} with no JSON: {e}", g.url))?;
    if body["status"] != "success" {
        return Err(format!(
            "{} answered {status}: {}",
            g.url,
            body["error"].as_str().unwrap_or("no error given")
        ));
    }
    let data = &body["data"];
    let number = |v: &serde_json::Value| -> Option<f64> {
        v.get(1)?
            .as_str()?
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
    };
    match data["resultType"].as_str() {
        Some("scalar") => number(&data["result"]).ok_or_else(|| "a scalar without a number".into()),
        Some("vector") => Ok(data["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| number(&s["value"]))
                    .fold(0.0, f64::max)
            })
            .unwrap_or(0.0)),
        other => Err(format!(
            "the query gives {}, not a scalar or an instant vector",
            other.unwrap_or("nothing")
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(event: &str, to: Option<Stage>, actor: &str) -> HistoryEvent {
        HistoryEvent {
            at_ms: 0,
            event: event.into(),
            from: None,
            to,
            actor: actor.into(),
            commit: None,
            branch: None,
            detail: None,
            role: None,
            source: None,
        }
    }

    #[test]
    fn a_step_sees_the_sign_offs_that_stood_at_release() {
        let h = vec![
            ev("upload", Some(Stage::Dev), "dev"),
            ev("promote", Some(Stage::Qa), "dev"),
            ev("sign-off", Some(Stage::Qa), "alice"),
            ev("sign-off", Some(Stage::Qa), "bob"),
            ev("promote", Some(Stage::Prod), "dev"),
            ev("rollout", Some(Stage::Prod), "rollout"),
            ev(workflow::WITHDRAW_SIGN_OFF, Some(Stage::Prod), "bob"),
        ];
        let seen = as_released(h);
        let names: Vec<(&str, &str)> = seen
            .iter()
            .map(|e| (e.event.as_str(), e.actor.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("upload", "dev"),
                ("promote", "dev"),
                ("sign-off", "alice"),
                ("sign-off", "bob"),
                (workflow::WITHDRAW_SIGN_OFF, "bob"),
            ]
        );
        assert!(crate::policy::has_standing(&seen, "alice"));
        assert!(!crate::policy::has_standing(&seen, "bob"));
    }
}
