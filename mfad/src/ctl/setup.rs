//! `mfactl setup` and `mfactl user setup`: complete a pending set-up with
//! `--confirm`, start one for a script with `--json`, or walk a person
//! through it (questions, the QR code or the secret, codes from the new
//! device).

use std::io::{BufRead, Write};

use mfa_shared::{
    ChallengeLevel, ClientError, Code, EnrollmentState, ErrorKind, OtpType, Request, Response, SetupInfo,
};

use super::cli::SetupOptions;
use super::error::{CtlError, one_line};
use super::output::{print_response, write_enabled};
use super::request::DaemonAddress;
use crate::enrollment::{self, QrStyle, format_barcode, format_manual_entry};

/// How many wrong codes the interactive set-up accepts before giving up.
pub const SETUP_ATTEMPTS: u32 = 3;

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
    /// How the QR code is drawn.
    pub qr: QrStyle,
}

impl SetupPlan {
    pub(super) fn new(
        user: Option<String>,
        options: &SetupOptions,
        current_code: Option<Code>,
        admin: bool,
        stdout_is_tty: bool,
    ) -> Self {
        SetupPlan {
            user,
            otp_type: options.otp_type.map(OtpType::from),
            level: options.level.map(ChallengeLevel::from),
            current_code,
            barcode: if options.no_barcode { Some(false) } else { None },
            admin,
            qr: options.qr_style(stdout_is_tty),
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

/// Either set-up command: `--confirm CODE` completes a pending set-up,
/// `--json` starts one and prints its secret, anything else is interactive.
pub fn run_setup(
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
    let current_code = match &plan.current_code {
        Some(code) => Some(code.clone()),
        None if plan.admin => None,
        None => ask_current_code_if_enabled(daemon, &plan.user, input, out)?,
    };
    let barcode = match plan.barcode {
        Some(barcode) => barcode,
        None => ask_barcode(input, out)?,
    };
    let otp_type = match plan.otp_type {
        Some(otp_type) => otp_type,
        None => ask_type(input, out)?,
    };
    let info = begin_setup(daemon, &plan, otp_type, current_code)?;
    show_new_secret(&info, barcode.then_some(plan.qr), out)?;
    confirm_new_device(daemon, &plan, input, out)
}

/// Replacing an enabled device needs a code from it: when the account has
/// one, say so and ask for a code. None when there is nothing to replace.
fn ask_current_code_if_enabled(
    daemon: &DaemonAddress,
    user: &Option<String>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<Option<Code>, CtlError> {
    match daemon.call(Request::Status { user: user.clone() })? {
        Response::Status(status) if status.state == EnrollmentState::Enabled => {
            writeln!(out, "A device is already set up; setting up a new one replaces it.")?;
            loop {
                let code = ask(input, out, "Enter a code from your current device: ")?;
                if !code.is_empty() {
                    return Ok(Some(Code::new(code)));
                }
            }
        }
        Response::Status(_) => Ok(None),
        other => Err(CtlError::Unexpected(other.kind())),
    }
}

/// Ask mfad to start the set-up; it answers with the new device's secret.
fn begin_setup(
    daemon: &DaemonAddress,
    plan: &SetupPlan,
    otp_type: OtpType,
    current_code: Option<Code>,
) -> Result<SetupInfo, CtlError> {
    let request =
        Request::SetupBegin { user: plan.user.clone(), otp_type: Some(otp_type), level: plan.level, current_code };
    match daemon.call(request)? {
        Response::SetupStarted { setup } => Ok(setup),
        other => Err(CtlError::Unexpected(other.kind())),
    }
}

/// The new secret: a QR code to scan (drawn in `barcode`'s style), or the
/// secret and its parameters to type in by hand.
fn show_new_secret(info: &SetupInfo, barcode: Option<QrStyle>, out: &mut dyn Write) -> Result<(), CtlError> {
    writeln!(out)?;
    match barcode {
        Some(style) => write!(out, "{}", format_barcode(info, style))?,
        None => write!(out, "{}", format_manual_entry(info))?,
    }
    writeln!(out)?;
    Ok(())
}

/// Ask for codes from the new device until mfad accepts one, at most
/// [`SETUP_ATTEMPTS`] of them (empty lines do not count). A set-up not
/// completed stays pending, and the error says how to complete it.
fn confirm_new_device(
    daemon: &DaemonAddress,
    plan: &SetupPlan,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
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
                write_enabled(&recovery_codes, out)?;
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
