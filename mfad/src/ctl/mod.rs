//! `mfactl`, the command-line client of mfad (SPEC section 11).
//!
//! All logic lives here so it can be tested; `bin/mfactl.rs` only calls
//! [`main`]. Every command is one request (the interactive set-up a few),
//! each over a fresh connection: a person may take minutes to type a code,
//! and the daemon is free to drop idle connections meanwhile.
//!
//! Output is either human text or, with `--json`, exactly one JSON document
//! on stdout (errors included: `{"error": {"kind": ..., "message": ...}}`).
//! Errors also go to stderr as one line `mfactl: MESSAGE`.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mfa_shared::{ChallengeLevel, Client, ClientError, Code, DEFAULT_SOCKET, Request, Response, UserStatus};

mod cli;
mod error;
mod import;
mod output;
mod setup;

pub use cli::{
    Cli, Command, ImportFormat, IpCommand, LevelArg, SetupOptions, Target, TypeArg, UserCommand, parse_lifetime,
};
pub use error::{
    CtlError, EXIT_FAILURE, EXIT_INVALID_CODE, EXIT_NOT_FOUND, EXIT_OK, EXIT_PERMISSION, EXIT_UNREACHABLE, EXIT_USAGE,
    error_json,
};
pub use output::{format_rules, format_status, format_table, format_time, format_users, response_json};
pub use setup::{SETUP_ATTEMPTS, SetupPlan, interactive_setup};

use output::print_response;

/// How to reach mfad: its socket and how long to wait for it. Holds no
/// connection; every [`call`](Self::call) opens its own.
#[derive(Debug, Clone)]
pub struct DaemonAddress {
    pub socket: PathBuf,
    /// Applies to the connect and to every read and write after it.
    pub timeout: Duration,
}

impl DaemonAddress {
    /// Send one request over a fresh connection; mfad's error responses come
    /// back as `Err`.
    pub fn call(&self, request: Request) -> Result<Response, ClientError> {
        Client::connect(&self.socket, self.timeout)?.call(request)
    }
}

/// The socket to use: `--socket`, else `$MFAD_SOCKET` (when not empty),
/// else the default.
pub fn socket_path(arg: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    arg.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let status = run(std::env::args_os(), std::env::var_os("MFAD_SOCKET"), &mut input, &mut out, &mut err);
    ExitCode::from(status)
}

/// Parse `args` (program name first), run the command, print its result and
/// return the exit status.
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
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return error::report_usage(&e, args.iter().any(|a| a == "--json"), out, err),
    };
    let json = cli.json;
    match execute(cli, env_socket, input, out) {
        Ok(()) => EXIT_OK,
        Err(e) => error::report(&e, json, out, err),
    }
}

fn execute(
    cli: Cli,
    env_socket: Option<OsString>,
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
            let plan = SetupPlan::new(target.user, &options, code.map(Code::new), false);
            setup::run_setup(&daemon, plan, options.confirm, json, input, out)
        }
        Command::User(UserCommand::Setup { user, options }) => {
            let plan = SetupPlan::new(Some(user), &options, None, true);
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

/// Replace every CODE argument given as `-` by a line read from `input`,
/// before anything is sent to mfad.
fn read_stdin_codes(command: &mut Command, input: &mut dyn BufRead) -> Result<(), CtlError> {
    let mut codes: Vec<(&str, &mut String)> = Vec::new();
    match command {
        Command::Setup { options, code, .. } => {
            codes.extend(code.as_mut().map(|c| ("--code", c)));
            codes.extend(options.confirm.as_mut().map(|c| ("--confirm", c)));
        }
        Command::User(UserCommand::Setup { options, .. }) => {
            codes.extend(options.confirm.as_mut().map(|c| ("--confirm", c)));
        }
        Command::Level { code, .. } => codes.extend(code.as_mut().map(|c| ("--code", c))),
        Command::Disable { code, .. }
        | Command::RecoveryCodes { code, .. }
        | Command::Verify { code, .. }
        | Command::User(UserCommand::Authorize { code, .. }) => codes.push(("--code", code)),
        _ => {}
    }
    for (flag, code) in codes {
        if code == "-" {
            *code = read_code(input, flag)?;
        }
    }
    Ok(())
}

/// One line of standard input, trimmed, for `FLAG -`.
fn read_code(input: &mut dyn BufRead, flag: &str) -> Result<String, CtlError> {
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .map_err(|e| CtlError::Input(format!("{flag} -: cannot read the code from standard input: {e}")))?;
    if read == 0 {
        return Err(CtlError::Input(format!(
            "{flag} -: standard input ended before a code was given (give the code on one line)"
        )));
    }
    let code = line.trim();
    if code.is_empty() {
        return Err(CtlError::Input(format!("{flag} -: the line read from standard input is empty")));
    }
    Ok(code.to_owned())
}

/// Every account, fetched a page at a time.
fn list_all_users(daemon: &DaemonAddress) -> Result<Vec<UserStatus>, CtlError> {
    let mut all: Vec<UserStatus> = Vec::new();
    loop {
        let after = all.last().map(|u| u.user.clone());
        match daemon.call(Request::ListUsers { after })? {
            Response::Users { users, more } => {
                all.extend(users);
                if !more {
                    return Ok(all);
                }
            }
            other => return Err(CtlError::Unexpected(other.kind())),
        }
    }
}

/// What to print on a bare `Ok` for each command.
type DoneText = String;

/// The request of every command but `setup`, and the text for its `Ok`.
fn simple_request(command: Command) -> Result<(Request, DoneText), CtlError> {
    let for_user = |user: &Option<String>| match user {
        Some(user) => format!(" for {user}"),
        None => String::new(),
    };
    Ok(match command {
        Command::Status { target } => (Request::Status { user: target.user }, String::new()),
        Command::Level { level, code, target } => {
            let level = ChallengeLevel::from(level);
            let done = format!("Challenge level set to {level}{}.", for_user(&target.user));
            (Request::SetLevel { user: target.user, level, code: code.map(Code::new) }, done)
        }
        Command::Disable { code, target } => {
            let done = format!("Two-factor authentication is disabled{}.", for_user(&target.user));
            (Request::Disable { user: target.user, code: Some(Code::new(code)) }, done)
        }
        Command::RecoveryCodes { code, target } => {
            (Request::RecoveryCodes { user: target.user, code: Code::new(code) }, String::new())
        }
        Command::Verify { code, target } => {
            (Request::VerifyCode { user: target.user, code: Code::new(code) }, "Code accepted.".into())
        }
        Command::User(command) => match command {
            UserCommand::Import { .. } => return Err(CtlError::Unexpected("import")),
            UserCommand::List => (Request::ListUsers { after: None }, String::new()),
            UserCommand::Show { user } => (Request::Status { user: Some(user) }, String::new()),
            UserCommand::Disable { user } => {
                let done = format!("Two-factor authentication is disabled for {user}.");
                (Request::Disable { user: Some(user), code: None }, done)
            }
            UserCommand::Level { user, level } => {
                let level = ChallengeLevel::from(level);
                let done = format!("Challenge level set to {level} for {user}.");
                (Request::SetLevel { user: Some(user), level, code: None }, done)
            }
            UserCommand::Verify { user } => (Request::CheckValue { user }, String::new()),
            UserCommand::Authorize { user, code } => {
                let done = format!("{user} is approved for super-user functions.");
                (Request::Authorize { user, code: Code::new(code) }, done)
            }
            UserCommand::Revoke { user } => {
                let done = format!("Super-user approval withdrawn for {user}.");
                (Request::Revoke { user }, done)
            }
            UserCommand::Unlock { user } => {
                let done = format!("{user} is unlocked.");
                (Request::Unlock { user }, done)
            }
            UserCommand::Setup { .. } => return Err(CtlError::Unexpected("setup")),
        },
        Command::Ip(command) => match command {
            IpCommand::Add { cidr, bypass_2fa, timeout } => {
                (Request::IpAdd { cidr, bypass_2fa, timeout_secs: timeout }, String::new())
            }
            IpCommand::List => (Request::IpList, String::new()),
            IpCommand::Remove { id } => (Request::IpRemove { id }, format!("IP rule {id} removed.")),
        },
        Command::Reload => (Request::Reload, "mfad reloaded its configuration.".into()),
        Command::Setup { .. } => return Err(CtlError::Unexpected("setup")),
    })
}

#[cfg(test)]
mod tests;
