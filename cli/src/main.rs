//! `stamp`: the developer's command for ticket-stamp. Uploads a ticket's
//! modules to stamp-proxy as they are saved and moves the ticket from dev to
//! qa to prod (and back).

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use stamp_cli::error::{Failure, Kind};
use stamp_cli::{cli, commands};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Help and version go to stdout with 0; usage errors to stderr with 2.
fn clap_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Kind::Usage.exit_code()
        }
        _ => {
            eprint!("stamp: ");
            let _ = e.print();
            Kind::Usage.exit_code()
        }
    }
}

/// Prints `stamp: error: …` with details, causes and a hint; returns the exit code.
fn report(e: &anyhow::Error) -> ExitCode {
    if let Some(f) = e.downcast_ref::<Failure>() {
        f.print(&[]);
        return f.kind.exit_code();
    }
    let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
    Failure::new(Kind::Refused, e.to_string()).print(&causes);
    Kind::Refused.exit_code()
}
