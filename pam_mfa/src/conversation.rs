//! The login conversation: everything the module does, written against two
//! small traits so that it is tested without libpam.
//!
//! The daemon runs the conversation (how many tries, what to ask, inline
//! enrollment questions); the module relays it:
//!
//! ```text
//! AuthBegin -> loop {
//!     show messages (Info unless PAM_SILENT, Error always);
//!     Prompt   -> ask (echo off for codes, on for questions), send AuthAnswer
//!                 with the same session id over the same connection;
//!     Decision -> map the outcome onto a PAM return code.
//! }
//! ```
//!
//! The only decision the module makes on its own is the failmode when mfad
//! cannot be reached ([`pam_code`]). PAM_SUCCESS is returned only when the
//! daemon said [`Outcome::Verified`].

use std::time::Duration;

use mfa_shared::{
    AuthStep, Client, ClientError, Code, ErrorKind, Message, MessageStyle, Outcome, Request,
    Response,
};

use crate::options::{FailMode, Options};

/// At most this many responses in one conversation; a broken daemon that
/// keeps prompting ends with PAM_AUTH_ERR instead of looping forever.
pub const MAX_STEPS: usize = 20;

/// Services that stay closed in `failmode=safe`: super-user elevation must
/// never proceed without a second factor. The module sends nothing extra to
/// learn the daemon's list (it is unreachable when this matters), so it is
/// the daemon's default list.
pub const ELEVATION_SERVICES: &[&str] = &["sudo", "sudo-i", "su", "su-l", "pkexec", "doas"];

/// Prefix of the message shown when mfad cannot be reached (failmode secure,
/// or an elevation service in failmode safe).
pub const UNAVAILABLE_PREFIX: &str = "Two-factor authentication is unavailable: ";

/// The PAM return codes this module gives. Kept apart from the FFI types so
/// the conversation is testable without libpam; [`PamCode::as_raw`] gives the
/// Linux-PAM value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PamCode {
    Success,
    Ignore,
    AuthErr,
    MaxTries,
    PermDenied,
    AuthInfoUnavail,
    ConvErr,
    ServiceErr,
}

impl PamCode {
    /// The value from Linux-PAM's `_pam_types.h`.
    pub fn as_raw(self) -> i32 {
        match self {
            PamCode::Success => 0,
            PamCode::ServiceErr => 3,
            PamCode::PermDenied => 6,
            PamCode::AuthErr => 7,
            PamCode::AuthInfoUnavail => 9,
            PamCode::MaxTries => 11,
            PamCode::ConvErr => 19,
            PamCode::Ignore => 25,
        }
    }

    /// The C name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            PamCode::Success => "PAM_SUCCESS",
            PamCode::Ignore => "PAM_IGNORE",
            PamCode::AuthErr => "PAM_AUTH_ERR",
            PamCode::MaxTries => "PAM_MAXTRIES",
            PamCode::PermDenied => "PAM_PERM_DENIED",
            PamCode::AuthInfoUnavail => "PAM_AUTHINFO_UNAVAIL",
            PamCode::ConvErr => "PAM_CONV_ERR",
            PamCode::ServiceErr => "PAM_SERVICE_ERR",
        }
    }
}

/// The application could not show a prompt or return an answer (e.g. EOF on
/// the terminal, no conversation function).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConversationError(pub String);

/// The person logging in, reached through the PAM conversation.
pub trait Prompter {
    /// Ask with echo off (PAM_PROMPT_ECHO_OFF): one-time codes.
    fn prompt_secret(&mut self, text: &str) -> Result<String, ConversationError>;
    /// Ask with echo on (PAM_PROMPT_ECHO_ON): questions such as "yes/no".
    fn prompt_visible(&mut self, text: &str) -> Result<String, ConversationError>;
    /// PAM_TEXT_INFO. Not called under PAM_SILENT. A message that cannot be
    /// shown is not an error: the answer to the next prompt decides.
    fn info(&mut self, text: &str);
    /// PAM_ERROR_MSG. Shown even under PAM_SILENT.
    fn error(&mut self, text: &str);
}

/// A connection to mfad.
pub trait Transport {
    /// Send one request and wait (bounded by the timeout) for its response.
    fn request(&mut self, request: Request) -> Result<Response, ClientError>;
}

impl Transport for Client {
    fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        Client::request(self, request)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// Where the module logs (syslog in the real module). Never given a code,
/// an answer or a prompt's text.
pub trait Log {
    fn log(&mut self, level: LogLevel, message: &str);
}

/// The PAM items sent to the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    pub service: String,
    pub user: String,
    pub ruser: Option<String>,
    pub rhost: Option<String>,
    pub tty: Option<String>,
}

impl Login {
    pub fn new(service: impl Into<String>, user: impl Into<String>) -> Self {
        Login {
            service: service.into(),
            user: user.into(),
            ..Login::default()
        }
    }
}

/// An unset PAM item and an empty one mean the same: not known.
pub fn non_empty(item: Option<String>) -> Option<String> {
    item.filter(|value| !value.is_empty())
}

/// One call of `pam_sm_authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub options: Options,
    pub login: Login,
    /// PAM_SILENT: suppresses informational messages only.
    pub silent: bool,
}

/// Why a conversation did not end with a daemon's decision.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// mfad could not be reached, did not answer in time, broke the framing
    /// or speaks another protocol version.
    #[error("{0}")]
    Unavailable(ClientError),
    /// mfad answered with an error.
    #[error("{message}")]
    Daemon { kind: ErrorKind, message: String },
    /// mfad answered with something that is not a login step.
    #[error("unexpected reply from mfad: {0}")]
    Protocol(String),
    /// The person could not be asked.
    #[error("conversation failed: {0}")]
    Conversation(ConversationError),
    /// mfad kept the conversation going past [`MAX_STEPS`].
    #[error("mfad did not finish the conversation within {MAX_STEPS} steps")]
    TooManySteps,
}

impl AuthError {
    fn from_client(err: ClientError) -> Self {
        match err {
            ClientError::Daemon { kind, message } => AuthError::Daemon { kind, message },
            other => AuthError::Unavailable(other),
        }
    }

    /// Whether the failmode decides: the daemon is out of reach or broken,
    /// as opposed to having given an answer.
    pub fn is_unavailable(&self) -> bool {
        match self {
            AuthError::Unavailable(_) | AuthError::Protocol(_) => true,
            AuthError::Daemon { kind, .. } => {
                matches!(kind, ErrorKind::Internal | ErrorKind::Version)
            }
            AuthError::Conversation(_) | AuthError::TooManySteps => false,
        }
    }
}

/// Whether `failmode=safe` still denies this service.
pub fn is_elevation_service(service: &str) -> bool {
    ELEVATION_SERVICES.contains(&service)
}

/// What the failmode makes of an unreachable daemon.
pub fn unavailable_code(failmode: FailMode, service: &str) -> PamCode {
    match failmode {
        FailMode::Safe if !is_elevation_service(service) => PamCode::Ignore,
        _ => PamCode::AuthInfoUnavail,
    }
}

/// The daemon's decision as a PAM return code.
pub fn outcome_code(outcome: Outcome) -> PamCode {
    match outcome {
        Outcome::Verified => PamCode::Success,
        Outcome::NotRequired => PamCode::Ignore,
        Outcome::Failed => PamCode::AuthErr,
        Outcome::MaxTries => PamCode::MaxTries,
        Outcome::Denied => PamCode::PermDenied,
    }
}

/// The one function that maps a conversation's result onto a PAM code.
pub fn pam_code(result: &Result<Outcome, AuthError>, failmode: FailMode, service: &str) -> PamCode {
    match result {
        Ok(outcome) => outcome_code(*outcome),
        Err(err) if err.is_unavailable() => unavailable_code(failmode, service),
        Err(AuthError::Daemon {
            kind: ErrorKind::InvalidCode,
            ..
        }) => PamCode::AuthErr,
        Err(AuthError::Daemon { .. }) => PamCode::ServiceErr,
        Err(AuthError::Conversation(_)) => PamCode::ConvErr,
        Err(AuthError::TooManySteps) => PamCode::AuthErr,
        // Covered by `is_unavailable`; kept so a new variant is a compile
        // error here rather than a silent mapping.
        Err(AuthError::Unavailable(_) | AuthError::Protocol(_)) => {
            unavailable_code(failmode, service)
        }
    }
}

/// Relay one login conversation over `transport`. Returns the daemon's
/// outcome, or why there was none.
pub fn converse<T, P, L>(
    ctx: &Context,
    transport: &mut T,
    prompter: &mut P,
    log: &mut L,
) -> Result<Outcome, AuthError>
where
    T: Transport + ?Sized,
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    let login = &ctx.login;
    let mut request = Request::AuthBegin {
        service: login.service.clone(),
        user: login.user.clone(),
        ruser: login.ruser.clone(),
        rhost: login.rhost.clone(),
        tty: login.tty.clone(),
    };
    for step in 1..=MAX_STEPS {
        debug(ctx, log, || {
            format!("step {step}: sending {}", request.kind())
        });
        let response = transport.request(request).map_err(AuthError::from_client)?;
        let auth_step = match response {
            Response::Auth(auth_step) => auth_step,
            Response::Error { kind, message } => {
                debug(ctx, log, || {
                    format!("step {step}: received error ({kind:?})")
                });
                return Err(AuthError::Daemon { kind, message });
            }
            other => {
                return Err(AuthError::Protocol(format!(
                    "a {:?} response in a login conversation",
                    response_kind(&other)
                )));
            }
        };
        match auth_step {
            AuthStep::Decision { outcome, messages } => {
                debug(ctx, log, || {
                    format!(
                        "step {step}: received decision {outcome:?} with {} message(s)",
                        messages.len()
                    )
                });
                show(&messages, ctx.silent, prompter);
                return Ok(outcome);
            }
            AuthStep::Prompt {
                session_id,
                messages,
                prompt,
                echo,
            } => {
                debug(ctx, log, || {
                    format!(
                        "step {step}: received prompt (echo {}) with {} message(s)",
                        if echo { "on" } else { "off" },
                        messages.len()
                    )
                });
                show(&messages, ctx.silent, prompter);
                let answer = if echo {
                    prompter.prompt_visible(&prompt)
                } else {
                    prompter.prompt_secret(&prompt)
                }
                .map_err(AuthError::Conversation)?;
                request = Request::AuthAnswer {
                    session_id,
                    answer: Code::new(answer),
                };
            }
        }
    }
    Err(AuthError::TooManySteps)
}

/// Connect with `connect`, relay the conversation, tell the person and the
/// log what went wrong if anything did, and return the PAM code.
pub fn authenticate_with<T, C, P, L>(
    ctx: &Context,
    connect: C,
    prompter: &mut P,
    log: &mut L,
) -> PamCode
where
    T: Transport,
    C: FnOnce() -> Result<T, ClientError>,
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    let result = match connect() {
        Ok(mut transport) => converse(ctx, &mut transport, prompter, log),
        Err(err) => Err(AuthError::from_client(err)),
    };
    let code = pam_code(&result, ctx.options.failmode, &ctx.login.service);
    report(ctx, &result, code, prompter, log);
    code
}

/// [`authenticate_with`] over a real connection to `ctx.options.socket`,
/// with `ctx.options.timeout` on the connect and on every read and write.
pub fn authenticate<P, L>(ctx: &Context, prompter: &mut P, log: &mut L) -> PamCode
where
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    let (socket, timeout): (&std::path::Path, Duration) =
        (&ctx.options.socket, ctx.options.timeout);
    authenticate_with(ctx, || Client::connect(socket, timeout), prompter, log)
}

fn report<P, L>(
    ctx: &Context,
    result: &Result<Outcome, AuthError>,
    code: PamCode,
    prompter: &mut P,
    log: &mut L,
) where
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    let who = format!("user {:?} service {:?}", ctx.login.user, ctx.login.service);
    match result {
        Ok(outcome) => {
            debug(ctx, log, || {
                format!("{who}: outcome {outcome:?}, returning {}", code.name())
            });
        }
        Err(err) if err.is_unavailable() => {
            if code == PamCode::Ignore {
                log.log(
                    LogLevel::Warning,
                    &format!(
                        "{who}: mfad is unavailable ({err}); failmode=safe lets this login proceed without a second factor"
                    ),
                );
            } else {
                prompter.error(&format!("{UNAVAILABLE_PREFIX}{err}"));
                log.log(
                    LogLevel::Error,
                    &format!(
                        "{who}: mfad is unavailable ({err}); denying (failmode={}), returning {}",
                        ctx.options.failmode.as_str(),
                        code.name()
                    ),
                );
            }
        }
        Err(AuthError::Daemon { kind, message }) => {
            prompter.error(&format!("Two-factor authentication failed: {message}"));
            let level = if *kind == ErrorKind::InvalidCode {
                LogLevel::Info
            } else {
                LogLevel::Error
            };
            log.log(
                level,
                &format!(
                    "{who}: mfad refused ({kind:?}: {message}), returning {}",
                    code.name()
                ),
            );
        }
        Err(err @ AuthError::Conversation(_)) => {
            log.log(
                LogLevel::Info,
                &format!("{who}: {err}, returning {}", code.name()),
            );
        }
        Err(err) => {
            prompter.error("Two-factor authentication failed.");
            log.log(
                LogLevel::Error,
                &format!("{who}: {err}, returning {}", code.name()),
            );
        }
    }
}

fn show<P: Prompter + ?Sized>(messages: &[Message], silent: bool, prompter: &mut P) {
    for message in messages {
        match message.style {
            MessageStyle::Info if silent => {}
            MessageStyle::Info => prompter.info(&message.text),
            MessageStyle::Error => prompter.error(&message.text),
        }
    }
}

fn debug<L: Log + ?Sized>(ctx: &Context, log: &mut L, message: impl FnOnce() -> String) {
    if ctx.options.debug {
        log.log(LogLevel::Debug, &message());
    }
}

/// The wire name of a response (its `type` tag), for messages. Read from
/// the serialized form so that new response types need no change here.
fn response_kind(response: &Response) -> String {
    serde_json::to_value(response)
        .ok()
        .and_then(|value| value.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests;
