//! How mfactl fails: [`CtlError`], the exit status and JSON `kind` of each
//! failure, and the one line (and, with `--json`, the one document) that
//! reports it.

use std::io::{self, Write};

use mfa_shared::{ClientError, ErrorKind};
use serde_json::{Value, json};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad command line (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: mfad refused the request for this caller.
pub const EXIT_PERMISSION: u8 = 3;
/// Exit status: no such user or rule.
pub const EXIT_NOT_FOUND: u8 = 4;
/// Exit status: the code was wrong, replayed, or the account is locked.
pub const EXIT_INVALID_CODE: u8 = 5;
/// Exit status: mfad could not be reached or did not answer in time.
pub const EXIT_UNREACHABLE: u8 = 6;
/// Exit status: mfad answered, but cannot reach its store (the database).
pub const EXIT_STORE_UNAVAILABLE: u8 = 7;
/// Exit status of `doctor`: at least one error-level finding.
pub const EXIT_DOCTOR_ERRORS: u8 = 8;
/// Exit status of `doctor`: warnings, and no error.
pub const EXIT_DOCTOR_WARNINGS: u8 = 9;

/// Why mfactl failed; picks the exit status and the JSON error kind.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The code was refused too often during an interactive set-up.
    #[error("{0}")]
    SetupPending(String),
    /// Standard input ended or failed while a question was asked.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    /// mfad answered with a response that does not fit the request.
    #[error("unexpected answer from mfad ({0})")]
    Unexpected(&'static str),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Client(ClientError::Connect { .. } | ClientError::TimedOut) => EXIT_UNREACHABLE,
            CtlError::Client(ClientError::StoreUnavailable(_)) => EXIT_STORE_UNAVAILABLE,
            CtlError::Client(ClientError::Daemon { kind, .. }) => match kind {
                ErrorKind::PermissionDenied => EXIT_PERMISSION,
                ErrorKind::NotFound => EXIT_NOT_FOUND,
                ErrorKind::InvalidCode => EXIT_INVALID_CODE,
                _ => EXIT_FAILURE,
            },
            CtlError::SetupPending(_) => EXIT_INVALID_CODE,
            _ => EXIT_FAILURE,
        }
    }

    /// The `kind` of the JSON error: mfad's error kinds as on the wire, or
    /// mfactl's own (`unreachable`, `timed_out`, `protocol`, `version`, `store_unavailable`,
    /// `input`, `output`).
    pub fn kind(&self) -> String {
        match self {
            CtlError::Client(ClientError::Connect { .. }) => "unreachable".into(),
            CtlError::Client(ClientError::TimedOut) => "timed_out".into(),
            CtlError::Client(ClientError::Frame(_)) => "protocol".into(),
            CtlError::Client(ClientError::Version(_)) => "version".into(),
            CtlError::Client(ClientError::StoreUnavailable(_)) => "store_unavailable".into(),
            CtlError::Client(ClientError::Daemon { kind, .. }) => kind.as_str().into(),
            CtlError::SetupPending(_) => "invalid_code".into(),
            CtlError::Input(_) => "input".into(),
            CtlError::Output(_) => "output".into(),
            CtlError::Unexpected(_) => "protocol".into(),
        }
    }
}

/// The JSON document printed for an error.
pub fn error_json(kind: &str, message: &str) -> Value {
    json!({ "error": { "kind": kind, "message": message } })
}

/// Report a failed command: the message on one line on `err` and, with
/// `--json`, the error document on `out`. Returns the exit status.
pub fn report(e: &CtlError, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let message = one_line(&e.to_string());
    if json {
        let _ = writeln!(out, "{}", error_json(&e.kind(), &message));
    }
    let _ = writeln!(err, "mfactl: {message}");
    let _ = out.flush();
    e.exit_code()
}

/// Report what clap found wrong with the command line (or the `--help` and
/// `--version` it prints on `out`). Returns clap's exit status.
pub fn report_usage(e: &clap::Error, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    use clap::error::ErrorKind as K;
    let text = e.render().to_string();
    let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE);
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        let _ = write!(out, "{text}");
    } else {
        if json {
            let first = text.lines().next().unwrap_or("usage error");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let _ = writeln!(out, "{}", error_json("usage", first));
        }
        let _ = write!(err, "{text}");
    }
    let _ = out.flush();
    code
}

/// Messages from mfad or the OS on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
