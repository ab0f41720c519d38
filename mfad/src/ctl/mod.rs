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
use mfa_shared::{
    ChallengeLevel, Client, ClientError, Code, DEFAULT_SOCKET, EnrollmentState, ErrorKind, OtpType, Request, Response,
    UserStatus,
};

mod cli;
mod error;
mod import;
mod output;

pub use cli::{
    Cli, Command, ImportFormat, IpCommand, LevelArg, SetupOptions, Target, TypeArg, UserCommand, parse_lifetime,
};
pub use error::{
    CtlError, EXIT_FAILURE, EXIT_INVALID_CODE, EXIT_NOT_FOUND, EXIT_OK, EXIT_PERMISSION, EXIT_UNREACHABLE, EXIT_USAGE,
    error_json,
};
pub use output::{format_rules, format_status, format_table, format_time, format_users, response_json};

use crate::enrollment::{self, format_barcode, format_manual_entry, format_recovery_codes};
use error::one_line;
use output::print_response;

/// How many wrong codes the interactive set-up accepts before giving up.
pub const SETUP_ATTEMPTS: u32 = 3;

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
            setup(&daemon, plan, options.confirm, json, input, out)
        }
        Command::User(UserCommand::Setup { user, options }) => {
            let plan = SetupPlan::new(Some(user), &options, None, true);
            setup(&daemon, plan, options.confirm, json, input, out)
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

// ---------------------------------------------------------------- set-up

/// An interactive or `--json` set-up, as asked on the command line.
#[derive(Debug, Clone)]
pub struct SetupPlan {
    pub user: Option<String>,
    /// None: ask.
    pub otp_type: Option<OtpType>,
    pub level: Option<ChallengeLevel>,
    /// A code from the device already set up.
    pub current_code: Option<Code>,
    /// None: ask; Some(false) with --no-barcode.
    pub barcode: Option<bool>,
    /// `user setup USER` (an administrator): no current code is asked.
    pub admin: bool,
}

impl SetupPlan {
    fn new(user: Option<String>, options: &SetupOptions, current_code: Option<Code>, admin: bool) -> Self {
        SetupPlan {
            user,
            otp_type: options.otp_type.map(OtpType::from),
            level: options.level.map(ChallengeLevel::from),
            current_code,
            barcode: if options.no_barcode { Some(false) } else { None },
            admin,
        }
    }

    /// The command that completes this set-up later.
    fn confirm_hint(&self) -> String {
        match (&self.user, self.admin) {
            (Some(user), true) => format!("mfactl user setup {user} --confirm CODE"),
            (Some(user), false) => format!("mfactl setup --user {user} --confirm CODE"),
            (None, _) => "mfactl setup --confirm CODE".to_owned(),
        }
    }
}

fn setup(
    daemon: &DaemonAddress,
    plan: SetupPlan,
    confirm: Option<String>,
    json: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    if let Some(code) = confirm {
        let response = daemon.call(Request::SetupConfirm { user: plan.user, code: Code::new(code) })?;
        return print_response(response, json, "", out);
    }
    if json {
        let response = daemon.call(Request::SetupBegin {
            user: plan.user,
            otp_type: plan.otp_type,
            level: plan.level,
            current_code: plan.current_code,
        })?;
        return match response {
            Response::SetupStarted { .. } => print_response(response, true, "", out),
            other => Err(CtlError::Unexpected(other.kind())),
        };
    }
    interactive_setup(daemon, plan, input, out)
}

/// Write `prompt`, read one line, trimmed. End of input is an error.
fn ask(input: &mut dyn BufRead, out: &mut dyn Write, prompt: &str) -> Result<String, CtlError> {
    write!(out, "{prompt}")?;
    out.flush()?;
    let mut line = String::new();
    let read = input.read_line(&mut line).map_err(|e| CtlError::Input(format!("cannot read standard input: {e}")))?;
    if read == 0 {
        // The answer would have gone on the prompt's line.
        writeln!(out)?;
        return Err(CtlError::Input("no answer: standard input ended".to_owned()));
    }
    Ok(line.trim().to_owned())
}

fn ask_barcode(input: &mut dyn BufRead, out: &mut dyn Write) -> Result<bool, CtlError> {
    loop {
        let answer = ask(input, out, enrollment::BARCODE_QUESTION)?;
        match enrollment::yes_no(&answer) {
            Some(barcode) => return Ok(barcode),
            None => writeln!(out, "{}", enrollment::YES_NO_HINT)?,
        }
    }
}

fn ask_type(input: &mut dyn BufRead, out: &mut dyn Write) -> Result<OtpType, CtlError> {
    loop {
        let answer = ask(input, out, enrollment::TYPE_QUESTION)?;
        match enrollment::time_or_counter(&answer) {
            Some(otp_type) => return Ok(otp_type),
            None => writeln!(out, "{}", enrollment::TYPE_HINT)?,
        }
    }
}

/// The interactive set-up: questions, SetupBegin, the QR code or the secret,
/// then codes until one completes the set-up (at most [`SETUP_ATTEMPTS`]).
pub fn interactive_setup(
    daemon: &DaemonAddress,
    plan: SetupPlan,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let mut current_code = plan.current_code.clone();
    if !plan.admin && current_code.is_none() {
        // Replacing an enabled device needs a code from it.
        match daemon.call(Request::Status { user: plan.user.clone() })? {
            Response::Status(status) if status.state == EnrollmentState::Enabled => {
                writeln!(out, "A device is already set up; setting up a new one replaces it.")?;
                let code = loop {
                    let code = ask(input, out, "Enter a code from your current device: ")?;
                    if !code.is_empty() {
                        break code;
                    }
                };
                current_code = Some(Code::new(code));
            }
            Response::Status(_) => {}
            other => return Err(CtlError::Unexpected(other.kind())),
        }
    }
    let barcode = match plan.barcode {
        Some(barcode) => barcode,
        None => ask_barcode(input, out)?,
    };
    let otp_type = match plan.otp_type {
        Some(otp_type) => otp_type,
        None => ask_type(input, out)?,
    };
    let info = match daemon.call(Request::SetupBegin {
        user: plan.user.clone(),
        otp_type: Some(otp_type),
        level: plan.level,
        current_code,
    })? {
        Response::SetupStarted { setup } => setup,
        other => return Err(CtlError::Unexpected(other.kind())),
    };
    writeln!(out)?;
    if barcode {
        write!(out, "{}", format_barcode(&info))?;
    } else {
        write!(out, "{}", format_manual_entry(&info))?;
    }
    writeln!(out)?;

    let pending =
        |why: &str| format!("{why}; the set-up stays pending and can be completed with `{}`", plan.confirm_hint());
    let mut attempts = 0;
    while attempts < SETUP_ATTEMPTS {
        let code = match ask(input, out, enrollment::SETUP_CODE_PROMPT) {
            Ok(code) => code,
            Err(CtlError::Input(why)) => return Err(CtlError::Input(pending(&why))),
            Err(e) => return Err(e),
        };
        if code.is_empty() {
            continue;
        }
        attempts += 1;
        match daemon.call(Request::SetupConfirm { user: plan.user.clone(), code: Code::new(code) }) {
            Ok(Response::SetupCompleted { recovery_codes }) => {
                writeln!(out, "Two-factor authentication is enabled.")?;
                write!(out, "{}", format_recovery_codes(&recovery_codes))?;
                out.flush()?;
                return Ok(());
            }
            Ok(other) => return Err(CtlError::Unexpected(other.kind())),
            Err(ClientError::Daemon { kind: ErrorKind::InvalidCode, message }) => {
                let message = one_line(&message);
                if attempts < SETUP_ATTEMPTS {
                    writeln!(out, "That code was not accepted ({message}). Please try again.")?;
                } else {
                    writeln!(out, "That code was not accepted ({message}).")?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CtlError::SetupPending(pending(&format!("the code was not accepted {SETUP_ATTEMPTS} times"))))
}

#[cfg(test)]
mod tests;
