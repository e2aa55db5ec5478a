//! `command`: runs a configured program to decide. The ticket arrives as JSON
//! on stdin and in `STAMP_*` environment variables; exit status 0 allows,
//! anything else refuses with the program's output (stdout, then stderr) as
//! the reason. A program that outlives `timeout` is killed and refuses.
//!
//! stdin: `{"ticket", "version", "from", "to", "action", "actor": {"name",
//! "commit", "branch"}, "overrides": {specifier: {"path", "hash", "size"}}}`;
//! env: `STAMP_TICKET STAMP_FROM STAMP_TO STAMP_ACTION STAMP_ACTOR
//! STAMP_COMMIT STAMP_BRANCH STAMP_PROXY`.
//!
//! The program gets a clean environment: `PATH`, the `STAMP_*` variables
//! above, the entry's `env` table, and the proxy's own variables that
//! `pass_env` names — never the rest of the proxy's environment, which holds
//! hook and policy secrets (`STAMP_WEBHOOK_SECRET`, tokens).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{promotions, truncate, Built, Outcome, Policy, Settings, TransitionCtx};

pub const KEYS: &[&str] = &["program", "args", "timeout", "env", "pass_env", "cwd"];

/// `PATH` when the proxy itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Longest reason kept from a program's output.
const MAX_REASON: usize = 2000;

pub struct Command {
    program: String,
    args: Vec<String>,
    timeout: Duration,
    env: BTreeMap<String, String>,
    /// Variables of the proxy's environment passed on by name.
    pass_env: Vec<String>,
    cwd: Option<String>,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let program = s.required_string("program", "the program to run");
    let args = s.strings("args").unwrap_or_default();
    let timeout = s.duration("timeout", Duration::from_secs(30));
    let env = s.string_map("env").unwrap_or_default();
    let pass_env = s.strings("pass_env").unwrap_or_default();
    let cwd = s.string("cwd");
    Some(Built {
        policy: Box::new(Command {
            program: program?,
            args,
            timeout,
            env,
            pass_env,
            cwd,
        }),
        default_on: promotions(),
    })
}

#[async_trait]
impl Policy for Command {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        vec![self.run(ctx).await]
    }
}

impl Command {
    async fn run(&self, ctx: &TransitionCtx) -> Outcome {
        let input = json!({
            "ticket": ctx.ticket.key,
            "version": ctx.ticket.version,
            "from": ctx.from,
            "to": ctx.to,
            "action": ctx.action.as_str(),
            "actor": {"name": ctx.actor.name, "commit": ctx.actor.commit, "branch": ctx.actor.branch},
            "overrides": ctx.overrides,
        })
        .to_string();
        let mut cmd = tokio::process::Command::new(&self.program);
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        cmd.env_clear().env("PATH", path);
        for name in &self.pass_env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.args(&self.args)
            .envs(&self.env)
            .env("STAMP_TICKET", ctx.ticket.key.as_str())
            .env("STAMP_FROM", ctx.from.as_str())
            .env("STAMP_TO", ctx.to.as_str())
            .env("STAMP_ACTION", ctx.action.as_str())
            .env("STAMP_ACTOR", &ctx.actor.name)
            .env("STAMP_COMMIT", ctx.actor.commit.as_deref().unwrap_or(""))
            .env("STAMP_BRANCH", ctx.actor.branch.as_deref().unwrap_or(""))
            .env("STAMP_PROXY", &ctx.proxy_base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Deny(format!("cannot run `{}`: {e}", self.program)),
        };
        if let Some(mut stdin) = child.stdin.take() {
            // Written concurrently: a program may exit without reading it.
            tokio::spawn(async move {
                let _ = stdin.write_all(input.as_bytes()).await;
            });
        }
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            // The child is killed when the timed-out future drops it.
            Err(_) => {
                return Outcome::Deny(format!(
                    "`{}` did not finish within {} and was stopped",
                    self.program,
                    humantime::format_duration(self.timeout)
                ))
            }
            Ok(Err(e)) => return Outcome::Deny(format!("`{}` failed: {e}", self.program)),
            Ok(Ok(o)) => o,
        };
        if output.status.success() {
            return Outcome::Allow;
        }
        let text = [
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
        if text.is_empty() {
            Outcome::Deny(format!("`{}` refused ({})", self.program, output.status))
        } else {
            Outcome::Deny(truncate(&text, MAX_REASON))
        }
    }
}
