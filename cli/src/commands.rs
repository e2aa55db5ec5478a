//! The actions: update (sync, then watch), promote / revert / close, list and
//! show; each turns settings into requests and answers into output.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{ticket_key, Action, Cli, UsageError};
use stamp_model::Stage;

use crate::client::{ApiError, Client, GitMeta, Ticket};
use crate::config::{self, resolve_path, ConfigError, Flags, Settings, Source};
use crate::error::{Failure, Kind};
use crate::git::Repo;
use crate::output::{self, Reporter};
use crate::sync::{Interrupted, Scope, Syncer};
use crate::watch;

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Failure {
        Failure {
            kind: Kind::Usage,
            message: e.message,
            details: vec![],
            hint: e.hint,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        let mut problems = e.problems.into_iter();
        Failure {
            kind: Kind::Usage,
            message: problems
                .next()
                .unwrap_or_else(|| "invalid configuration".into()),
            details: problems.collect(),
            hint: e.hint,
        }
    }
}

/// Runs the command line; the exit code on success (a sync that could not
/// upload everything ends with 1).
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let inv = cli.invocation().map_err(Failure::from)?;
    let cwd = std::env::current_dir()?;
    let file = match config::discover(&cwd) {
        Some(p) => {
            let c = config::load(&p).map_err(Failure::from)?;
            Some((p, c))
        }
        None => None,
    };
    let flags = Flags {
        server: cli.server.clone(),
        token: cli.token.clone(),
        folder: cli.folder.clone(),
    };
    let settings = config::resolve(&flags, &|name| std::env::var(name).ok(), file, &cwd)
        .map_err(Failure::from)?;
    if cli.verbose {
        for line in settings.describe() {
            eprintln!("* {line}");
        }
    }
    let key = match &inv.ticket {
        Some(t) => Some(ticket_key(t, settings.project.as_deref()).map_err(Failure::from)?),
        None => None,
    };
    match inv.action {
        Action::Login => {
            crate::login::login(&settings.server, cli.provider.as_deref(), cli.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Action::Logout => {
            match crate::login::logout(&settings.server)? {
                crate::login::LoggedOut::Revoked => println!("Signed out of {}", settings.server),
                crate::login::LoggedOut::NotSignedIn => {
                    println!("Not signed in to {}", settings.server)
                }
                crate::login::LoggedOut::ForgottenOnly(why) => {
                    println!("Signed out of {} on this machine", settings.server);
                    eprintln!(
                        "stamp: warning: the token was not revoked ({why}); it stays valid until it expires"
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // --token > STAMP_TOKEN > the sign-in kept by `stamp login`.
    let token = match &settings.token {
        Some(t) => Some(t.clone()),
        None => crate::login::saved_token(&settings.server, cli.verbose)?,
    };
    let client = Client::new(&settings.server, token, cli.verbose)?;
    let ctx = Ctx {
        cli,
        settings: &settings,
        client: &client,
        cwd: &cwd,
    };
    match (inv.action, key) {
        (Action::List, None) => ctx.list(),
        (Action::List | Action::Show, Some(key)) => ctx.show(&key),
        (Action::Update, Some(key)) => ctx.update(&key, &inv.files),
        (Action::Promote, Some(key)) => ctx.promote(&key),
        (Action::Revert, Some(key)) => ctx.transition(&key, "revert"),
        (Action::Revert, None) if cli.to.is_some() => {
            ctx.revert_production(cli.to.as_deref().unwrap_or_default())
        }
        (Action::Close, Some(key)) => ctx.transition(&key, "close"),
        (Action::Check, Some(key)) => ctx.check(&key),
        (Action::SignOff, Some(key)) => ctx.sign_off(&key, "sign-off"),
        (Action::WithdrawSignOff, Some(key)) => ctx.sign_off(&key, "withdraw-sign-off"),
        (Action::Rollout, Some(key)) => ctx.rollout_step(&key),
        (Action::Pause, Some(key)) => ctx.rollout_action(&key, "pause"),
        (Action::Resume, Some(key)) => ctx.rollout_action(&key, "resume"),
        (Action::Login | Action::Logout, _) => Ok(ExitCode::SUCCESS),
        (_, None) => Err(Failure::new(Kind::Usage, "this action needs a ticket").into()),
    }
}

struct Ctx<'a> {
    cli: &'a Cli,
    settings: &'a Settings,
    client: &'a Client,
    cwd: &'a Path,
}

impl Ctx<'_> {
    fn api(&self, key: Option<&str>) -> impl Fn(ApiError) -> Failure + '_ {
        let key = key.map(str::to_string);
        move |e| Failure::from_api(&e, key.as_deref(), self.client.has_token())
    }

    fn list(&self) -> anyhow::Result<ExitCode> {
        if self.cli.history {
            return self.production_history();
        }
        let stages = self.cli.stages(&[Stage::Qa, Stage::Prod]).0;
        let raw = self.client.list_raw(&stages).map_err(self.api(None))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        let tickets: Vec<Ticket> = serde_json::from_value(
            raw.get("tickets").cloned().unwrap_or_default(),
        )
        .map_err(|e| {
            Failure::new(
                Kind::Connection,
                format!("unexpected answer from the server: {e}"),
            )
        })?;
        print!("{}", output::list(&tickets, &stages, &self.settings.server));
        Ok(ExitCode::SUCCESS)
    }

    /// `--check`: the policies' checklist for the next promotion.
    fn check(&self, key: &str) -> anyhow::Result<ExitCode> {
        let repo = self.repo().ok().flatten();
        let git = Self::git_meta(repo.as_ref());
        let raw = self
            .client
            .check_raw(key, "promote", &git)
            .map_err(self.api(Some(key)))?;
        if self.cli.json {
            println!("{raw}");
        } else {
            print!("{}", output::checklist(&raw));
        }
        Ok(if raw["allowed"] == serde_json::Value::Bool(true) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    /// `--revert --to COMMIT`: production back to a commit of its log.
    fn revert_production(&self, to: &str) -> anyhow::Result<ExitCode> {
        let raw = self.client.production_revert(to).map_err(self.api(None))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        let id = raw["to"].as_str().unwrap_or(to);
        let short = id.get(..12).unwrap_or(id);
        let reverted: Vec<&str> = raw["reverted"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if reverted.is_empty() {
            println!("production already serves {short}: nothing to revert");
        } else {
            println!(
                "production is back at {short}: reverted {} (prod -> qa)",
                reverted.join(", ")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `--list -p --history`: the proxy's production log.
    fn production_history(&self) -> anyhow::Result<ExitCode> {
        let raw = self
            .client
            .production_history_raw()
            .map_err(self.api(None))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        let history: stamp_model::wire::ProductionHistory =
            serde_json::from_value(raw).map_err(|e| {
                Failure::new(
                    Kind::Connection,
                    format!("unexpected answer from the server: {e}"),
                )
            })?;
        print!("{}", output::production_history(&history));
        Ok(ExitCode::SUCCESS)
    }

    fn show(&self, key: &str) -> anyhow::Result<ExitCode> {
        let stages = self.cli.stages(&[Stage::Dev, Stage::Qa, Stage::Prod]).0;
        let raw = self.client.ticket_raw(key).map_err(self.api(Some(key)))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        let t: Ticket = serde_json::from_value(raw).map_err(|e| {
            Failure::new(
                Kind::Connection,
                format!("unexpected answer from the server: {e}"),
            )
        })?;
        print!("{}", output::ticket(&t, &stages, &self.settings.server));
        Ok(ExitCode::SUCCESS)
    }

    /// The repository of the folder (or of the working directory).
    fn repo(&self) -> anyhow::Result<Option<Repo>> {
        let at = if self.settings.folder.is_dir() {
            self.settings.folder.as_path()
        } else {
            self.cwd
        };
        Repo::discover(at)
    }

    fn git_meta(repo: Option<&Repo>) -> GitMeta {
        let head = repo.and_then(|r| r.head().ok());
        GitMeta {
            commit: head.as_ref().and_then(|h| h.commit.map(|c| c.to_string())),
            branch: head.and_then(|h| h.branch),
            source: None,
        }
    }

    fn promote(&self, key: &str) -> anyhow::Result<ExitCode> {
        let Some(repo) = self.repo()? else {
            return Err(Failure::new(
                Kind::Refused,
                format!(
                    "{} is not in a git repository: --promote checks git first",
                    self.cwd.display()
                ),
            )
            .hint("run stamp from the repository's work tree, where the ticket's commits are")
            .into());
        };
        let ok = match repo.check_promotable(self.settings.main_branch.as_deref())? {
            Ok(ok) => ok,
            Err(refusal) => {
                return Err(Failure::new(
                    Kind::Refused,
                    format!("not promoting {key}: {}", refusal.message),
                )
                .details(refusal.details)
                .hint(refusal.hint)
                .into())
            }
        };
        let git = GitMeta {
            commit: Some(ok.commit.clone()),
            branch: ok.branch.clone(),
            source: None,
        };
        let before = self.existing(key)?;
        if before.stage == Stage::Dev && !self.cli.json {
            self.warn_if_unsynced(key);
        }
        let (after, raw) = self
            .client
            .transition(
                key,
                "promote",
                before.stage,
                &git,
                None,
                self.rollout_request()?,
            )
            .map_err(self.api(Some(key)))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        let at = match &ok.branch {
            Some(b) => format!("{} on {b}", &ok.commit[..7.min(ok.commit.len())]),
            None => format!("{} (detached)", &ok.commit[..7.min(ok.commit.len())]),
        };
        let relation = if ok.ahead == 0 {
            format!("at the tip of {}", ok.main)
        } else {
            format!(
                "{} commit{} ahead of {}",
                ok.ahead,
                if ok.ahead == 1 { "" } else { "s" },
                ok.main
            )
        };
        println!(
            "{key}: {} -> {}  (commit {at}, {relation})",
            before.stage, after.stage
        );
        if after.rollout.is_some() {
            println!("{}", output::rollout_line(&after));
        }
        println!("{}", output::standing(&after, &self.settings.server));
        print_warnings(&after);
        Ok(ExitCode::SUCCESS)
    }

    /// The rollout `--promote --rollout [STEPS] [--every D]` asks for.
    fn rollout_request(&self) -> anyhow::Result<Option<stamp_model::wire::RolloutRequest>> {
        let Some(text) = &self.cli.rollout else {
            return Ok(None);
        };
        let steps = if text.is_empty() {
            Vec::new()
        } else {
            stamp_model::rollout::parse_steps(text).map_err(|e| {
                Failure::new(Kind::Usage, format!("--rollout {text}: {e}"))
                    .hint("a share (10), or shares that grow (5,25,100)")
            })?
        };
        if let Some(every) = &self.cli.every {
            let unit = every.trim_start_matches(|c: char| c.is_ascii_digit());
            let digits = &every[..every.len() - unit.len()];
            if every != "0" && (digits.is_empty() || !["s", "m", "h", "d"].contains(&unit)) {
                return Err(
                    Failure::new(Kind::Usage, format!("--every {every}: not a duration"))
                        .hint("15m, 1h, or 0 to take steps by hand")
                        .into(),
                );
            }
        }
        Ok(Some(stamp_model::wire::RolloutRequest {
            steps,
            every: self.cli.every.clone(),
        }))
    }

    /// `--rollout 50` (or `next`) on a ticket rolling out.
    fn rollout_step(&self, key: &str) -> anyhow::Result<ExitCode> {
        let text = self.cli.rollout.clone().unwrap_or_default();
        let step = if text == "next" {
            stamp_model::wire::StepRequest {
                action: Some("next".into()),
                ..Default::default()
            }
        } else {
            let to = match stamp_model::rollout::parse_steps(&text).as_deref() {
                Ok([one]) => *one,
                _ => {
                    return Err(Failure::new(
                        Kind::Usage,
                        format!("--rollout {text}: one share from 1 to 100, or `next`"),
                    )
                    .hint("stamp TKT-1 --rollout 50")
                    .into())
                }
            };
            stamp_model::wire::StepRequest {
                to: Some(to),
                ..Default::default()
            }
        };
        self.send_step(key, &step)
    }

    /// `--pause` / `--resume`.
    fn rollout_action(&self, key: &str, action: &str) -> anyhow::Result<ExitCode> {
        let step = stamp_model::wire::StepRequest {
            action: Some(action.into()),
            ..Default::default()
        };
        self.send_step(key, &step)
    }

    fn send_step(
        &self,
        key: &str,
        step: &stamp_model::wire::StepRequest,
    ) -> anyhow::Result<ExitCode> {
        let (after, raw) = self
            .client
            .rollout_step(key, step)
            .map_err(self.api(Some(key)))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}", output::rollout_line(&after));
        print_warnings(&after);
        Ok(ExitCode::SUCCESS)
    }

    fn transition(&self, key: &str, action: &str) -> anyhow::Result<ExitCode> {
        let repo = self.repo().ok().flatten();
        let git = Self::git_meta(repo.as_ref());
        let before = self.existing(key)?;
        let (after, raw) = self
            .client
            .transition(
                key,
                action,
                before.stage,
                &git,
                self.cli.comment.as_deref(),
                None,
            )
            .map_err(self.api(Some(key)))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        println!("{key}: {} -> {}", before.stage, after.stage);
        println!("{}", output::standing(&after, &self.settings.server));
        print_warnings(&after);
        Ok(ExitCode::SUCCESS)
    }

    /// `--sign-off` / `--withdraw-sign-off`, then where the release stands
    /// (the policies' checklist for qa -> prod).
    fn sign_off(&self, key: &str, action: &str) -> anyhow::Result<ExitCode> {
        // No git metadata: what the signer has checked out is not the
        // ticket's code, and must not stand for its branch or commit.
        let git = GitMeta::default();
        let before = self.existing(key)?;
        let (after, raw) = self
            .client
            .transition(
                key,
                action,
                before.stage,
                &git,
                self.cli.comment.as_deref(),
                None,
            )
            .map_err(self.api(Some(key)))?;
        if self.cli.json {
            println!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        if action == "sign-off" {
            println!("{key}: signed off in {}", after.stage);
        } else {
            println!("{key}: sign-off withdrawn");
        }
        println!("{}", output::standing(&after, &self.settings.server));
        Ok(ExitCode::SUCCESS)
    }

    /// `--update` on a closed ticket re-initiates its workflow: the ticket is
    /// re-opened in dev (with a history event) whether or not any file
    /// changed since it was closed.
    fn reopen_if_closed(&self, key: &str, repo: Option<&Repo>) -> anyhow::Result<()> {
        let Some(t) = self.client.ticket(key).map_err(self.api(Some(key)))? else {
            return Ok(());
        };
        if t.stage != Stage::Closed {
            return Ok(());
        }
        let git = Self::git_meta(repo);
        let (after, _) = self
            .client
            .transition(key, "reopen", t.stage, &git, None, None)
            .map_err(self.api(Some(key)))?;
        if !self.cli.json {
            eprintln!("re-opened {key}: closed -> {}", after.stage);
        }
        Ok(())
    }

    fn existing(&self, key: &str) -> anyhow::Result<Ticket> {
        match self.client.ticket(key).map_err(self.api(Some(key)))? {
            Some(t) => Ok(t),
            None => Err(
                Failure::new(Kind::Refused, format!("ticket {key} does not exist"))
                    .hint(format!(
                        "a ticket is created by its first upload: stamp {key} --update"
                    ))
                    .into(),
            ),
        }
    }

    /// Where production serves the folder: stamp.toml's `url_path`, else the
    /// folder's path from the repository root, else from stamp.toml's
    /// directory or the working directory.
    fn url_base(&self, folder: &Path, repo: Option<&Repo>) -> Result<String, Failure> {
        if let Some(u) = self.settings.configured_url_path(folder) {
            return Ok(u);
        }
        if let Some(url) = repo.and_then(|r| crate::paths::url_of(&r.root, folder, "/")) {
            return Ok(url);
        }
        let base = self
            .settings
            .file
            .as_ref()
            .and_then(|f| f.parent().map(resolve_path))
            .unwrap_or_else(|| resolve_path(self.cwd));
        match crate::paths::url_of(&base, folder, "/") {
            Some(url) => Ok(url),
            None => Err(Failure::new(
                Kind::Usage,
                format!(
                    "cannot tell which URL path production serves {} at",
                    folder.display()
                ),
            )
            .hint("set `url_path = \"/…\"` in stamp.toml")),
        }
    }

    /// The folder, its URL path, specifiers and FILES, checked; and its repository.
    fn scope(
        &self,
        files: &[PathBuf],
        report: Reporter,
        quiet: bool,
    ) -> anyhow::Result<(Scope, Option<Repo>)> {
        let folder = &self.settings.folder;
        if !folder.is_dir() {
            let from = match &self.settings.folder_from {
                Source::Default => "the default".to_string(),
                other => other.to_string(),
            };
            return Err(Failure::new(
                Kind::Usage,
                format!(
                    "the folder {} does not exist (from {from})",
                    folder.display()
                ),
            )
            .hint("choose the folder with -f DIR or `folder` in stamp.toml")
            .into());
        }
        let repo = Repo::discover(folder)?;
        let url_base = self.url_base(folder, repo.as_ref())?;
        let maybe_build = self.cli.build || self.settings.build == Some(true);
        if let Some(r) = repo.as_ref().filter(|_| !self.cli.all && !maybe_build) {
            if r.head()?.commit.is_some() {
                if let Err(refusal) = r.main_branch(self.settings.main_branch.as_deref()) {
                    return Err(Failure::new(Kind::Usage, refusal.message)
                        .hint(refusal.hint)
                        .into());
                }
            }
        }
        let mut specifiers = HashMap::new();
        for (spec, file) in &self.settings.specifiers {
            if crate::paths::is_within(folder, file) {
                specifiers.insert(file.clone(), spec.clone());
            } else if !quiet {
                report.note(&format!(
                    "warning: specifiers.\"{spec}\" = {} is outside the folder {}: not synced",
                    file.display(),
                    folder.display()
                ));
            }
        }
        // A Rails app's `config/importmap.rb`: its modules go by the
        // specifiers it pins them under (production's URLs carry digests).
        let rails = crate::rails::Source::find(folder, repo.as_ref().map(|r| r.root.as_path()));
        if let (Some(source), true) = (&rails, self.cli.verbose && !quiet) {
            eprintln!(
                "* {} pins this Rails app's modules: pinned files go by their specifiers",
                source.file.display()
            );
        }
        let mut only = Vec::new();
        for f in files {
            let abs = resolve_path(&self.cwd.join(f));
            if !crate::paths::is_within(folder, &abs) {
                return Err(Failure::new(
                    Kind::Usage,
                    format!("{} is not in the folder {}", f.display(), folder.display()),
                )
                .hint("name files inside the watched folder, or choose the folder with -f DIR")
                .into());
            }
            only.push(abs);
        }
        let build = self.cli.build
            || self.settings.build.unwrap_or_else(|| {
                crate::paths::join_slash(folder, ".vite/manifest.json").is_file()
                    || (crate::bundle::looks_built(folder)
                        && repo.as_ref().is_some_and(|r| r.is_ignored(folder)))
            });
        let scope = Scope {
            folder: folder.clone(),
            url_base,
            specifiers,
            rails,
            only,
            all: self.cli.all,
            build,
            live: self.cli.live || self.settings.live,
            main_branch: self.settings.main_branch.clone(),
        };
        if scope.build && self.cli.verbose && !quiet {
            let e = crate::bundle::entries(&scope.folder, &scope.url_base);
            eprintln!(
                "* {} is a build folder: every file counts; {} entr{} paired from {}",
                scope.folder.display(),
                e.patterns.len(),
                if e.patterns.len() == 1 { "y" } else { "ies" },
                e.source
                    .as_deref()
                    .unwrap_or("nothing (no manifest, no index.html)")
            );
        }
        if self.cli.verbose && !quiet {
            eprintln!(
                "* {} is served at {}; comparing with {}",
                scope.folder.display(),
                scope.url_base,
                if self.cli.all || scope.build || repo.is_none() {
                    "nothing (every file counts)"
                } else {
                    "the main branch's merge base"
                }
            );
        }
        Ok((scope, repo))
    }

    /// Before promoting dev: does the ticket hold what the work tree has?
    /// (A warning only: the git checks are what guard a promotion.)
    fn warn_if_unsynced(&self, key: &str) {
        let report = Reporter { json: false };
        let Ok((scope, repo)) = self.scope(&[], report, true) else {
            return;
        };
        let mut syncer = Syncer::new(self.client.clone(), key.to_string(), scope, repo, report);
        let Ok(diff) = syncer.pending() else {
            return;
        };
        if diff.is_empty() {
            return;
        }
        let n = diff.len();
        let mut shown: Vec<String> = diff.into_iter().take(5).collect();
        if n > 5 {
            shown.push(format!("and {} more", n - 5));
        }
        eprintln!(
            "warning: {key}'s dev stage differs from the work tree ({}); run `stamp {key} -u --once` first so the ticket matches the commit",
            shown.join(", ")
        );
    }

    /// Says what in production's page keeps the ticket's modules from
    /// applying. A proxy that cannot tell (older, or the origin down) stays
    /// quiet: the sync itself worked.
    fn warn_setup(&self, key: &str, report: Reporter) {
        match self.client.setup(key) {
            Ok(warnings) => {
                for w in warnings {
                    report.note(&format!("warning: {w}"));
                }
            }
            Err(e) if self.cli.verbose => report.note(&format!("note: setup not checked: {e}")),
            Err(_) => {}
        }
    }

    fn update(&self, key: &str, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
        let report = Reporter {
            json: self.cli.json,
        };
        let (scope, repo) = self.scope(files, report, false)?;
        self.reopen_if_closed(key, repo.as_ref())?;
        // Ctrl-C during the first sync stops the watch right after it.
        let signals = if self.cli.once {
            None
        } else {
            Some(watch::Signals::install()?)
        };
        let mut syncer = Syncer::new(self.client.clone(), key.to_string(), scope, repo, report);
        let summary =
            syncer
                .full(&HashSet::new())
                .map_err(|e| match e.downcast::<Interrupted>() {
                    Ok(Interrupted(api)) => anyhow::Error::from(Failure::from_api(
                        &api,
                        Some(key),
                        self.client.has_token(),
                    )),
                    Err(other) => other,
                })?;
        for f in syncer.unselectable_files() {
            report.note(&format!(
                "warning: {} is ignored (dotfile, .gitignore or editor scratch file): not synced",
                f.display()
            ));
        }
        report.summary(&summary);
        if summary.uploaded > 0 {
            self.warn_setup(key, report);
        }
        match summary.stage {
            Some(Stage::Qa) if !self.cli.json => eprintln!(
                "note: {key} is in qa: uploads change its dev stage (?dev={key}) only; ?qa={key} keeps \
                 what was promoted. To hand QA the new code, revert it to dev (stamp {key} --revert) \
                 and promote it again"
            ),
            Some(Stage::Prod) if !self.cli.json => eprintln!(
                "note: {key} is released: uploads change its dev stage (?dev={key}) only; production \
                 keeps what was released"
            ),
            None if summary.uploaded == 0 && !self.cli.json => {
                eprintln!("note: nothing differs from the main branch yet: {key} is created by its first upload")
            }
            _ => {}
        }
        let Some(signals) = signals else {
            return Ok(if summary.failed > 0 {
                Kind::Refused.exit_code()
            } else {
                ExitCode::SUCCESS
            });
        };
        watch::run(&mut syncer, signals, report, self.cli.verbose).map_err(|e| match e
            .downcast::<Interrupted>()
        {
            Ok(Interrupted(api)) => {
                anyhow::Error::from(Failure::from_api(&api, Some(key), self.client.has_token()))
            }
            Err(other) => other,
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Policy warnings that came with an accepted transition.
fn print_warnings(t: &Ticket) {
    for w in crate::error::items(&serde_json::Value::Array(t.warnings.clone())) {
        eprintln!("warning: {w}");
    }
}
