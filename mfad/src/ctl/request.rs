//! From arguments to requests, and to mfad: where mfad listens, CODE
//! arguments read from standard input, the request of each command, and the
//! paged listing of accounts.

use std::ffi::OsString;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use mfa_shared::{ChallengeLevel, Client, ClientError, Code, DEFAULT_SOCKET, Request, Response, UserStatus};

use super::cli::{Command, IpCommand, UserCommand};
use super::error::CtlError;

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

/// Replace every CODE argument given as `-` by a line read from `input`,
/// before anything is sent to mfad.
pub fn read_stdin_codes(command: &mut Command, input: &mut dyn BufRead) -> Result<(), CtlError> {
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
pub fn list_all_users(daemon: &DaemonAddress) -> Result<Vec<UserStatus>, CtlError> {
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
pub type DoneText = String;

/// The request of every command but `setup` and `user import`, and the text
/// for its `Ok`.
pub fn simple_request(command: Command) -> Result<(Request, DoneText), CtlError> {
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
        Command::User(command) => admin_request(command)?,
        Command::Ip(command) => ip_request(command),
        Command::Reload => (Request::Reload, "mfad reloaded its configuration.".into()),
        Command::Setup { .. } => return Err(CtlError::Unexpected("setup")),
        Command::Doctor { .. } => return Err(CtlError::Unexpected("doctor")),
    })
}

/// " for USER" when root acts for another user with `--user`, else nothing.
fn for_user(user: &Option<String>) -> String {
    match user {
        Some(user) => format!(" for {user}"),
        None => String::new(),
    }
}

/// The request of a `user` command but `setup` and `import`.
fn admin_request(command: UserCommand) -> Result<(Request, DoneText), CtlError> {
    Ok(match command {
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
    })
}

/// The request of an `ip` command.
fn ip_request(command: IpCommand) -> (Request, DoneText) {
    match command {
        IpCommand::Add { cidr, bypass_2fa, timeout } => {
            (Request::IpAdd { cidr, bypass_2fa, timeout_secs: timeout }, String::new())
        }
        IpCommand::List => (Request::IpList, String::new()),
        IpCommand::Remove { id } => (Request::IpRemove { id }, format!("IP rule {id} removed.")),
    }
}
