//! `mfactl`, the command-line client of mfad (SPEC section 11).
//!
//! All logic lives in this module so it can be tested; `bin/mfactl.rs` only
//! calls [`main`]. Every command is one request (the interactive set-up a few),
//! each over a fresh connection: a person may take minutes to type a code,
//! and the daemon is free to drop idle connections meanwhile.
//!
//! Output is either human text or, with `--json`, exactly one JSON document
//! on stdout (errors included: `{"error": {"kind": ..., "message": ...}}`).
//! Errors also go to stderr as one line `mfactl: MESSAGE`.
//!
//! This file parses and dispatches; each concept has a file of its own:
//! `cli` (the command line), `request` (requests built from arguments, and
//! where mfad listens), `output` (what is printed on success), `error`
//! (failures, exit statuses and their reports), `setup` (the set-up
//! dialogue), `import` (`user import` and the file formats it reads) and
//! `doctor` (printing the set-up checks of [`crate::doctor`]).

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mfa_shared::{Code, Response};

mod cli;
mod doctor;
mod error;
pub mod import;
mod output;
mod request;
mod setup;

pub use cli::{
    Cli, Command, ImportFormat, IpCommand, LevelArg, QrBackgroundArg, SetupOptions, Target, TypeArg, UserCommand,
    parse_lifetime,
};
pub use error::{
    CtlError, EXIT_FAILURE, EXIT_INVALID_CODE, EXIT_NOT_FOUND, EXIT_OK, EXIT_PERMISSION, EXIT_UNREACHABLE, EXIT_USAGE,
    error_json,
};
pub use output::{format_rules, format_status, format_table, format_time, format_users, response_json};
pub use request::{DaemonAddress, socket_path};
pub use setup::{SETUP_ATTEMPTS, SetupPlan, interactive_setup};

use output::print_response;
use request::{list_all_users, read_stdin_codes, simple_request};

/// The binary's entry point.
pub fn main() -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    // isatty(3) on standard output: a terminal gets the QR code in colours.
    let tty = io::stdout().is_terminal();
    let status = run_on(std::env::args_os(), std::env::var_os("MFAD_SOCKET"), &mut input, &mut out, &mut err, tty);
    ExitCode::from(status)
}

/// Parse `args` (program name first), run the command, print its result and
/// return the exit status; `out` is not a terminal.
pub fn run<I, T>(
    args: I,
    env_socket: Option<OsString>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_on(args, env_socket, input, out, err, false)
}

/// [`run`], saying whether `out` is a terminal (`stdout_is_tty`).
pub fn run_on<I, T>(
    args: I,
    env_socket: Option<OsString>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stdout_is_tty: bool,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return error::report_usage(&e, args.iter().any(|a| a == "--json"), out, err),
    };
    let json = cli.json;
    if let Command::Doctor { root } = cli.command {
        let socket = cli.socket.or_else(|| env_socket.filter(|v| !v.is_empty()).map(Into::into));
        return doctor::run(root, socket, Duration::from_secs(cli.timeout), json, out, err);
    }
    match execute(cli, env_socket, stdout_is_tty, input, out) {
        Ok(()) => EXIT_OK,
        Err(e) => error::report(&e, json, out, err),
    }
}

/// Run a parsed command line: read `-` codes, then send the command's
/// request(s) and print the result.
fn execute(
    cli: Cli,
    env_socket: Option<OsString>,
    stdout_is_tty: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let daemon =
        DaemonAddress { socket: socket_path(cli.socket, env_socket), timeout: Duration::from_secs(cli.timeout) };
    let json = cli.json;
    let mut command = cli.command;
    read_stdin_codes(&mut command, input)?;
    match command {
        Command::Setup { options, code, target } => {
            let plan = SetupPlan::new(target.user, &options, code.map(Code::new), false, stdout_is_tty);
            setup::run_setup(&daemon, plan, options.confirm, json, input, out)
        }
        Command::User(UserCommand::Setup { user, options }) => {
            let plan = SetupPlan::new(Some(user), &options, None, true, stdout_is_tty);
            setup::run_setup(&daemon, plan, options.confirm, json, input, out)
        }
        Command::User(UserCommand::Import { file, format, google_authenticator, keep_going, replace }) => {
            let parsed = import::read_sources(file.as_deref(), format, google_authenticator.as_deref())?;
            import::send_and_report(&daemon, parsed, keep_going, replace, json, out)
        }
        Command::User(UserCommand::List) => {
            let users = list_all_users(&daemon)?;
            print_response(Response::Users { users, more: false }, json, "", out)
        }
        other => {
            let (request, done) = simple_request(other)?;
            let response = daemon.call(request)?;
            print_response(response, json, &done, out)
        }
    }
}

#[cfg(test)]
mod tests;
