//! The command line of `stamp` (clap derive): the doc comments are the help text.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};
use stamp_model::{Stage, TicketKey};

const ABOUT: &str =
    "Upload a ticket's modules to stamp-proxy and move the ticket from dev to qa to prod";

const LONG_ABOUT: &str = "\
Upload a ticket's modules to stamp-proxy and move the ticket from dev to qa to prod.

`stamp TKT-1 --update` makes the ticket's dev overrides exactly the files of the
watched folder that differ from the main branch (committed or not), then keeps
watching the folder and uploads every saved file. Open the app with ?dev=TKT-1 to
see it live; `--promote` moves the ticket to qa (share link ?qa=TKT-1) and then to
prod; `--revert` takes it back a stage; `--close` ends it.";

const AFTER_HELP: &str = "\
Configuration: flag > environment (STAMP_SERVER, STAMP_TOKEN) > stamp.toml (found upward from the working directory) > default.
Without --token or STAMP_TOKEN, the sign-in kept by `stamp login` is used.
Exit codes: 0 ok, 1 refused (policy or state), 2 usage, 3 connection or authentication.
`stamp --help` shows examples and the stamp.toml keys.";

const AFTER_LONG_HELP: &str = "\
Examples:
  stamp TKT-1 --update              sync ./src to TKT-1's dev stage, then watch and upload on save
  stamp 1 -u --once                 the same for <project>-1 (project key from stamp.toml), then exit
  stamp TKT-1 -u src/cart.js        update only this entry
  stamp TKT-1 -u --all              upload every file of the folder, not only what differs from main
  stamp TKT-1 -u -f dist --build    upload a bundler's output; its entries replace production's
  stamp TKT-1 --promote             dev -> qa (checks: clean work tree, HEAD on or ahead of main)
  stamp TKT-1 --promote             qa -> prod (released: every visitor gets it)
  stamp TKT-1 --promote --rollout 10  qa -> prod for 10% of visitors; then --rollout 50, --rollout 100
  stamp TKT-1 --promote --rollout 5,25,100 --every 15m   steps that take themselves while healthy
  stamp TKT-1 --pause | --resume    hold a rollout's steps, or go on
  stamp TKT-1 --revert              prod -> qa, or qa -> dev (aborts a rollout)
  stamp TKT-1 --close               close the ticket (a later --update re-opens it)
  stamp TKT-1 --check               what the policies say of its next promotion, without making it
  stamp TKT-1                       where the ticket stands: stage, overrides per stage, history
  stamp --list                      tickets in qa and prod, with share links
  stamp --list -d -q --json         tickets in dev and qa, as JSON
  stamp --list -p --history         what production served, change by change
  stamp --revert --to 3f2a1c9       take production back to that commit of the history
  stamp TKT-1 --sign-off            sign off the ticket in qa (--comment TEXT; --withdraw-sign-off)
  stamp login                       sign in with the proxy's identity provider (device code in a browser)
  stamp logout                      forget that sign-in

Configuration (each setting from the first source that has it):
  1. flags            --server URL, --token TOKEN, --folder DIR
  2. environment      STAMP_SERVER, STAMP_TOKEN
  3. stamp.toml       the first one found in the working directory or above it
  4. defaults         server http://127.0.0.1:8080, folder ./src

stamp.toml (paths are relative to the file's directory; tokens never belong here):
  server = \"https://app.example.com\"   # the stamp-proxy in front of production
  project = \"TKT\"                      # `stamp 42` means TKT-42
  folder = \"src\"                       # the folder to watch and upload
  url_path = \"/src\"                    # where production serves that folder
                                       # (default: its path from the repository root;
                                       # a URL such as \"https://cdn.example/lib\" for a CDN)
  build = true                         # the folder is a bundler's output (default: detected)
  live = true                          # dev links reload the page after each upload
  main_branch = \"main\"                 # default: main, or master when there is no main
  [specifiers]                         # modules known by a bare specifier
  \"@shop/cart\" = \"src/cart.js\"

Exit codes:
  0  done
  1  refused: a policy or the ticket's state (illegal transition, failed git check, conflict)
  2  usage: bad flags, ticket key or stamp.toml
  3  connection or authentication: server unreachable or down, token missing, unknown or not allowed";

/// `stamp [--ticket] TKT-NUM | tktnum [ACTION] [OPTIONS]`
#[derive(Debug, Parser)]
#[command(
    name = "stamp",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
    arg_required_else_help = true,
    group(ArgGroup::new("action").args(["list", "update", "promote", "revert", "close", "check", "sign_off", "withdraw_sign_off", "pause", "resume"]).multiple(false)),
)]
pub struct Cli {
    /// The ticket: TKT-123 (any case), or a bare number that takes the project key from stamp.toml
    #[arg(value_name = "TICKET")]
    pub ticket_arg: Option<String>,

    /// With --update: update only these files (or the files under these folders)
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,

    /// The ticket, as an option (TKT-123 or a bare number)
    #[arg(short = 't', long = "ticket", value_name = "TKT-NUM")]
    pub ticket: Option<String>,

    /// List tickets by stage (default: --qa --prod); with a ticket, its overrides per stage and its history
    #[arg(short, long)]
    pub list: bool,

    /// Sync the folder to the ticket's dev stage, then watch it and upload every save (see --once)
    #[arg(short, long)]
    pub update: bool,

    /// Promote the ticket to the next stage (dev -> qa -> prod), after checking git
    #[arg(long)]
    pub promote: bool,

    /// Revert the ticket to the previous stage (prod -> qa -> dev)
    #[arg(long)]
    pub revert: bool,

    /// Close the ticket (from dev or qa); a later --update re-opens it
    #[arg(long)]
    pub close: bool,

    /// Sign off the ticket in qa (a qa token): what the `sign-off` policy counts
    #[arg(long)]
    pub sign_off: bool,

    /// Take your sign-off of the ticket back
    #[arg(long)]
    pub withdraw_sign_off: bool,

    /// With --promote of a ticket in qa: release it to a share of production's
    /// visitors first, then by steps (`10`, or `5,25,100`; no value: the proxy's
    /// schedule). On a ticket rolling out: the next share (`50`, `100`), or `next`
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "")]
    pub rollout: Option<String>,

    /// With --rollout when releasing: time between steps (`15m`; `0`: by hand)
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,

    /// Pause a rollout (no scheduled step, no automatic revert) until --resume
    #[arg(long)]
    pub pause: bool,

    /// Resume a paused rollout (its current step's window starts again)
    #[arg(long)]
    pub resume: bool,

    /// With --sign-off or --withdraw-sign-off: a note for the history
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,

    /// What the policies say of the ticket's next promotion, without making
    /// it (exit 1 when it would be refused)
    #[arg(long)]
    pub check: bool,

    /// Folder to watch and upload [default: ./src, or `folder` in stamp.toml]
    #[arg(short, long, value_name = "DIR")]
    pub folder: Option<PathBuf>,

    /// Select the dev stage (for --list)
    #[arg(short, long)]
    pub dev: bool,

    /// Select the qa stage (for --list)
    #[arg(short, long)]
    pub qa: bool,

    /// Select the prod stage (for --list)
    #[arg(short, long)]
    pub prod: bool,

    /// With --update: every file of the folder, not only those that differ from the main branch;
    /// with --list: tickets in every stage, closed ones included
    #[arg(long)]
    pub all: bool,

    /// With --update: the folder is a bundler's output (dist/, build/): every file counts,
    /// git-ignored ones too, and entry chunks and stylesheets replace production's by pattern.
    /// Detected when the folder has a build manifest, or an index.html and git ignores it
    #[arg(long)]
    pub build: bool,

    /// With --list -p: what production served, change by change (the proxy's history_repo)
    #[arg(long)]
    pub history: bool,

    /// With --revert and no ticket: take production back to this commit of
    /// `stamp --list -p --history`, reverting every ticket released since
    #[arg(long, value_name = "COMMIT")]
    pub to: Option<String>,

    /// With --update: open dev pages reload by themselves after each upload (the printed link
    /// turns it on; also `live = true` in stamp.toml)
    #[arg(long)]
    pub live: bool,

    /// With --update: sync once and exit instead of watching
    #[arg(long)]
    pub once: bool,

    /// Machine-readable output (JSON; one JSON object per line while watching)
    #[arg(long)]
    pub json: bool,

    /// Show every request to the server, and where each setting came from
    #[arg(short, long)]
    pub verbose: bool,

    /// The stamp-proxy to talk to [env: STAMP_SERVER] [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// API token (sent as a bearer token) [env: STAMP_TOKEN]; without one, the sign-in kept by `stamp login`
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// With `stamp login`: the identity provider, when the proxy has several
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
}

/// What the command was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A ticket and no action flag: where it stands.
    Show,
    List,
    Update,
    Promote,
    Revert,
    Close,
    Check,
    SignOff,
    WithdrawSignOff,
    /// `--rollout` alone: a step of a rollout in progress.
    Rollout,
    Pause,
    Resume,
    /// `stamp login`: sign in with the proxy's identity provider.
    Login,
    /// `stamp logout`: forget the kept sign-in.
    Logout,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Show => "show",
            Action::List => "--list",
            Action::Update => "--update",
            Action::Promote => "--promote",
            Action::Revert => "--revert",
            Action::Close => "--close",
            Action::Check => "--check",
            Action::SignOff => "--sign-off",
            Action::WithdrawSignOff => "--withdraw-sign-off",
            Action::Rollout => "--rollout",
            Action::Pause => "--pause",
            Action::Resume => "--resume",
            Action::Login => "login",
            Action::Logout => "logout",
        }
    }
}

/// A misuse of the flags (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub hint: Option<String>,
}

fn usage(message: impl Into<String>, hint: Option<&str>) -> UsageError {
    UsageError {
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

/// The stages `-d/-q/-p` (and `--all`) select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(pub Vec<Stage>);

/// The arguments, checked against each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub action: Action,
    /// The ticket as typed (resolved against the project key later).
    pub ticket: Option<String>,
    pub files: Vec<PathBuf>,
}

impl Cli {
    /// The action, the ticket and the files, or what is wrong with the combination.
    pub fn invocation(&self) -> Result<Invocation, UsageError> {
        let action = if self.list {
            Action::List
        } else if self.update {
            Action::Update
        } else if self.promote {
            Action::Promote
        } else if self.revert {
            Action::Revert
        } else if self.close {
            Action::Close
        } else if self.check {
            Action::Check
        } else if self.sign_off {
            Action::SignOff
        } else if self.withdraw_sign_off {
            Action::WithdrawSignOff
        } else if self.pause {
            Action::Pause
        } else if self.resume {
            Action::Resume
        } else if self.rollout.is_some() {
            Action::Rollout
        } else {
            Action::Show
        };
        if self.rollout.is_some() && !matches!(action, Action::Promote | Action::Rollout) {
            return Err(usage(
                format!(
                    "--rollout goes with --promote or on its own, not with {}",
                    action.name()
                ),
                Some("stamp TKT-1 --promote --rollout 10, then stamp TKT-1 --rollout 50"),
            ));
        }
        if action == Action::Rollout && self.rollout.as_deref() == Some("") {
            return Err(usage(
                "--rollout on its own takes the next share (`50`, `100`) or `next`",
                Some("stamp TKT-1 --rollout 50"),
            ));
        }
        if self.every.is_some() && !(action == Action::Promote && self.rollout.is_some()) {
            return Err(usage(
                "--every goes with --promote --rollout (the time between steps)",
                Some("stamp TKT-1 --promote --rollout 5,25,100 --every 15m"),
            ));
        }
        // `stamp login` / `stamp logout`: words, never ticket keys (a key has a number).
        if let Some(word @ ("login" | "logout")) = self.ticket_arg.as_deref() {
            if action != Action::Show || self.ticket.is_some() || !self.files.is_empty() {
                return Err(usage(
                    format!("`stamp {word}` takes no ticket, files or action flags"),
                    Some("run it on its own: `stamp login [--provider NAME]`"),
                ));
            }
            return Ok(Invocation {
                action: if word == "login" {
                    Action::Login
                } else {
                    Action::Logout
                },
                ticket: None,
                files: Vec::new(),
            });
        }
        if self.provider.is_some() {
            return Err(usage(
                "--provider goes with `stamp login`",
                Some("stamp login --provider NAME"),
            ));
        }
        let mut files = self.files.clone();
        let ticket = match (&self.ticket, &self.ticket_arg) {
            (Some(t), None) => Some(t.clone()),
            (None, t) => t.clone(),
            (Some(t), Some(positional)) => {
                if action != Action::Update {
                    return Err(usage(
                        format!("two tickets given: `{positional}` and --ticket {t}"),
                        Some(
                            "give the ticket once, as `stamp TKT-1 …` or `stamp --ticket TKT-1 …`",
                        ),
                    ));
                }
                // `stamp -t TKT-1 -u a.js b.js`: every positional is a file.
                files.insert(0, PathBuf::from(positional));
                Some(t.clone())
            }
        };
        if !files.is_empty() && action != Action::Update {
            return Err(usage(
                format!(
                    "unexpected argument `{}`: files can only be given with --update",
                    files[0].display()
                ),
                Some("stamp TKT-1 --update src/a.js src/b.js"),
            ));
        }
        if self.to.is_some() && (action != Action::Revert || ticket.is_some()) {
            return Err(usage(
                "--to goes with --revert and no ticket: it takes production back to a commit",
                Some("stamp --list -p --history, then stamp --revert --to <commit>"),
            ));
        }
        let production_revert = action == Action::Revert && self.to.is_some();
        if ticket.is_none() && !matches!(action, Action::List) && !production_revert {
            return Err(usage(
                format!("{} needs a ticket", action.name()),
                Some("stamp TKT-1 --update (or a bare number with `project` in stamp.toml)"),
            ));
        }
        if self.comment.is_some() && !matches!(action, Action::SignOff | Action::WithdrawSignOff) {
            return Err(usage(
                "--comment goes with --sign-off or --withdraw-sign-off",
                Some("stamp TKT-1 --sign-off --comment \"checked on mobile\""),
            ));
        }
        if self.comment.as_ref().is_some_and(|c| {
            c.chars().any(char::is_control) || c.len() > stamp_model::wire::MAX_TEXT
        }) {
            return Err(usage(
                format!(
                    "--comment must be one line of at most {} characters",
                    stamp_model::wire::MAX_TEXT
                ),
                None,
            ));
        }
        if self.once && action != Action::Update {
            return Err(usage(
                "--once only goes with --update",
                Some("stamp TKT-1 --update --once"),
            ));
        }
        if self.all && !matches!(action, Action::Update | Action::List) {
            return Err(usage(
                "--all only goes with --update (every file) or --list (every stage)",
                None,
            ));
        }
        if (self.dev || self.qa || self.prod) && !matches!(action, Action::List | Action::Show) {
            return Err(usage(
                format!(
                    "-d/-q/-p select the stages to list; they do not go with {}",
                    action.name()
                ),
                Some("stamp --list -q, or stamp TKT-1 --list -d"),
            ));
        }
        if self.all && (self.dev || self.qa || self.prod) {
            return Err(usage(
                "--all and -d/-q/-p both select stages: use one or the other",
                None,
            ));
        }
        Ok(Invocation {
            action,
            ticket,
            files,
        })
    }

    /// The stages to list: `-d/-q/-p` as given, every stage with `--all`, and
    /// otherwise `default`.
    pub fn stages(&self, default: &[Stage]) -> Stages {
        if self.all {
            return Stages(vec![Stage::Dev, Stage::Qa, Stage::Prod, Stage::Closed]);
        }
        let chosen: Vec<Stage> = [
            (self.dev, Stage::Dev),
            (self.qa, Stage::Qa),
            (self.prod, Stage::Prod),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
        if chosen.is_empty() {
            Stages(default.to_vec())
        } else {
            Stages(chosen)
        }
    }
}

/// Turns what the user typed into a ticket key: `tkt-1` → `TKT-1`, `42` →
/// `<project>-42`. The key rules are the server's: `[A-Z][A-Z0-9_]+-[0-9]+`.
pub fn ticket_key(input: &str, project: Option<&str>) -> Result<String, UsageError> {
    let input = input.trim();
    if !input.is_empty() && input.bytes().all(|b| b.is_ascii_digit()) {
        return match project {
            Some(p) => ticket_key(&format!("{p}-{input}"), None),
            None => Err(usage(
                format!("`{input}` is a bare ticket number, but no project key is configured"),
                Some("write the full key (TKT-42), or set `project = \"TKT\"` in stamp.toml"),
            )),
        };
    }
    TicketKey::parse(input)
        .map(|k| k.as_str().to_string())
        .map_err(|e| {
            usage(
                format!("`{input}` is not a ticket key: {e}"),
                Some("a key looks like TKT-123: a letter, letters/digits/_ , a dash and a number"),
            )
        })
}

/// `[A-Z][A-Z0-9_]+` (upper case already applied): the model's rule.
pub use stamp_model::ticket::is_project_key as project_key_ok;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stamp").chain(args.iter().copied()))
    }

    fn inv(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(args).unwrap().invocation()
    }

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ticket_positional_or_option() {
        let i = inv(&["TKT-1", "--update"]).unwrap();
        assert_eq!(
            (i.action, i.ticket.as_deref()),
            (Action::Update, Some("TKT-1"))
        );
        let i = inv(&["-t", "tkt-2", "-l"]).unwrap();
        assert_eq!(
            (i.action, i.ticket.as_deref()),
            (Action::List, Some("tkt-2"))
        );
        let i = inv(&["--ticket", "TKT-3"]).unwrap();
        assert_eq!(i.action, Action::Show);
        let i = inv(&["--promote", "TKT-4"]).unwrap();
        assert_eq!(
            (i.action, i.ticket.as_deref()),
            (Action::Promote, Some("TKT-4"))
        );
    }

    #[test]
    fn files_follow_the_ticket_with_update_only() {
        let i = inv(&["TKT-1", "-u", "src/a.js", "src/b.js"]).unwrap();
        assert_eq!(
            i.files,
            [PathBuf::from("src/a.js"), PathBuf::from("src/b.js")]
        );
        // With --ticket, every positional is a file.
        let i = inv(&["-t", "TKT-1", "-u", "src/a.js", "src/b.js"]).unwrap();
        assert_eq!(i.ticket.as_deref(), Some("TKT-1"));
        assert_eq!(i.files.len(), 2);
        assert!(inv(&["TKT-1", "src/a.js"]).is_err());
        assert!(inv(&["TKT-1", "--promote", "src/a.js"]).is_err());
        assert!(inv(&["TKT-1", "-t", "TKT-2"]).is_err());
    }

    #[test]
    fn short_flags_of_the_original_synopsis() {
        let c = parse(&["TKT-1", "-l", "-d", "-q", "-p", "-v", "-f", "lib"]).unwrap();
        assert!(c.list && c.dev && c.qa && c.prod && c.verbose);
        assert_eq!(c.folder, Some(PathBuf::from("lib")));
        let c = parse(&["-h"]).unwrap_err();
        assert_eq!(c.kind(), clap::error::ErrorKind::DisplayHelp);
        let c = parse(&["--version"]).unwrap_err();
        assert_eq!(c.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[test]
    fn one_action_at_a_time() {
        let e = parse(&["TKT-1", "--promote", "--revert"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["TKT-1", "-u", "-l"]).is_err());
        assert!(parse(&["TKT-1", "--close", "--promote"]).is_err());
    }

    #[test]
    fn flags_that_need_a_companion() {
        assert!(inv(&["TKT-1", "--once"]).is_err());
        assert!(inv(&["TKT-1", "-u", "--once"]).is_ok());
        assert!(inv(&["TKT-1", "--promote", "--all"]).is_err());
        assert!(inv(&["TKT-1", "--promote", "-q"]).is_err());
        assert!(inv(&["-l", "--all", "-q"]).is_err());
        assert!(inv(&["--promote"]).is_err());
        // One action at a time: a check never hides a move, nor a move a check.
        assert!(parse(&["TKT-1", "--check", "--sign-off"]).is_err());
        assert!(parse(&["TKT-1", "--check", "--promote"]).is_err());
        // Rollouts: a release by steps, then steps, pause and resume.
        let c = parse(&[
            "TKT-1",
            "--promote",
            "--rollout",
            "5,25,100",
            "--every",
            "15m",
        ])
        .unwrap();
        assert_eq!(c.invocation().unwrap().action, Action::Promote);
        assert_eq!(c.rollout.as_deref(), Some("5,25,100"));
        let c = parse(&["TKT-1", "--promote", "--rollout"]).unwrap();
        assert_eq!(c.rollout.as_deref(), Some(""));
        assert_eq!(
            inv(&["TKT-1", "--rollout", "50"]).unwrap().action,
            Action::Rollout
        );
        assert!(inv(&["TKT-1", "--rollout"]).is_err());
        assert!(inv(&["TKT-1", "--close", "--rollout", "5"]).is_err());
        assert!(inv(&["TKT-1", "--rollout", "50", "--every", "5m"]).is_err());
        assert_eq!(inv(&["TKT-1", "--pause"]).unwrap().action, Action::Pause);
        assert!(parse(&["TKT-1", "--pause", "--resume"]).is_err());
        assert!(parse(&["TKT-1", "--sign-off", "--withdraw-sign-off"]).is_err());
        assert_eq!(
            inv(&["TKT-1", "--sign-off"]).unwrap().action,
            Action::SignOff
        );
        assert!(inv(&["--update"]).is_err());
        assert!(inv(&["--list"]).is_ok());
        assert!(inv(&["-l", "--json", "--all"]).is_ok());
    }

    #[test]
    fn stages_default_to_qa_and_prod() {
        use Stage::*;
        let c = parse(&["-l"]).unwrap();
        assert_eq!(c.stages(&[Qa, Prod]).0, [Qa, Prod]);
        let c = parse(&["-l", "-d"]).unwrap();
        assert_eq!(c.stages(&[Qa, Prod]).0, [Dev]);
        let c = parse(&["-l", "-p", "-d"]).unwrap();
        assert_eq!(c.stages(&[Qa, Prod]).0, [Dev, Prod]);
        let c = parse(&["-l", "--all"]).unwrap();
        assert_eq!(c.stages(&[Qa, Prod]).0, [Dev, Qa, Prod, Closed]);
    }

    #[test]
    fn ticket_keys() {
        assert_eq!(ticket_key("tkt-1", None).unwrap(), "TKT-1");
        assert_eq!(ticket_key("Shop_2-0042", None).unwrap(), "SHOP_2-0042");
        assert_eq!(ticket_key("42", Some("TKT")).unwrap(), "TKT-42");
        assert!(ticket_key("42", None)
            .unwrap_err()
            .hint
            .unwrap()
            .contains("project"));
        for bad in [
            "", "T-1", "1TKT-1", "TKT-", "TKT1", "TKT-1a", "TK T-1", "-1",
        ] {
            assert!(ticket_key(bad, None).is_err(), "{bad:?} accepted");
        }
        assert!(ticket_key(&format!("{}-1", "A".repeat(70)), None).is_err());
    }

    #[test]
    fn help_documents_precedence_examples_and_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "STAMP_SERVER",
            "STAMP_TOKEN",
            "stamp.toml",
            "Examples:",
            "Exit codes:",
            "flags",
            "environment",
            "--once",
        ] {
            assert!(help.contains(needle), "help lacks {needle}:\n{help}");
        }
    }
}
