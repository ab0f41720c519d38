//! The login conversation: everything the module does, written against two
//! small traits so that it is tested without libpam.
//!
//! The daemon runs the conversation (how many tries, what to ask, inline
//! enrollment questions); the module relays it:
//!
//! ```text
//! AuthBegin -> loop {
//!     show messages (Info unless PAM_SILENT, essential Info and Error always);
//!     Prompt   -> ask (echo off for codes, on for questions), send AuthAnswer
//!                 with the same session id over the same connection;
//!     Decision -> map the outcome onto a PAM return code.
//! }
//! ```
//!
//! The only decision the module makes on its own is the failmode when mfad
//! cannot be reached ([`pam_code`]): the connect fails, the socket is not
//! served by root, or the first AuthBegin gets no usable answer. Once mfad has
//! prompted, anything that goes wrong is a failed login (PAM_AUTH_ERR),
//! whatever the failmode: a daemon that breaks or hangs mid-conversation must
//! not let the login through on the password alone. PAM_SUCCESS is returned
//! only when the daemon said [`Outcome::Verified`].

use std::path::Path;

use mfa_shared::{
    AuthStep, Client, ClientError, DEFAULT_ELEVATION_SERVICES, ErrorKind, Message, MessageStyle, Outcome, Request,
    Response, is_valid_field, is_valid_user_name,
};

use crate::one_field::{self, StackPassword};
use crate::options::{FailMode, Options};

/// At most this many responses in one conversation; a broken daemon that
/// keeps prompting ends with PAM_AUTH_ERR instead of looping forever. An
/// inline enrollment with max_tries up to 10 takes more than 20 steps.
pub const MAX_STEPS: usize = 64;

/// Prefix of the message shown when mfad cannot be reached (failmode secure,
/// or an elevation service in failmode safe).
pub const UNAVAILABLE_PREFIX: &str = "Two-factor authentication is unavailable: ";

/// Prefix of the message shown when mfad refused or the conversation broke.
pub const FAILED_PREFIX: &str = "Two-factor authentication failed: ";

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
    /// PAM_TEXT_INFO. Under PAM_SILENT, called only for essential messages.
    /// A message that cannot be shown is not an error: the answer to the next
    /// prompt decides.
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
        Login { service: service.into(), user: user.into(), ..Login::default() }
    }

    /// The first PAM item mfad would refuse (control characters, or too
    /// long): checked here, before anything is sent, so that such an item
    /// is a failed login and never an unreachable daemon for the failmode
    /// (an item too big for a frame would otherwise be one).
    pub fn invalid_item(&self) -> Option<&'static str> {
        let names = [("user", Some(&self.user)), ("ruser", self.ruser.as_ref())];
        let fields = [("service", Some(&self.service)), ("rhost", self.rhost.as_ref()), ("tty", self.tty.as_ref())];
        let bad_name = names.into_iter().find(|(_, v)| v.is_some_and(|v| !v.is_empty() && !is_valid_user_name(v)));
        let bad_field = fields.into_iter().find(|(_, v)| v.is_some_and(|v| !is_valid_field(v)));
        bad_name.or(bad_field).map(|(name, _)| name)
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
    /// Any error from mfad or the connection after mfad had prompted: the
    /// daemon was reachable, so this is a failed login, never the failmode.
    #[error("{0}")]
    AfterPrompt(Box<AuthError>),
    /// A PAM item mfad would refuse; nothing was sent.
    #[error("the PAM item {0} holds control characters or is too long")]
    InvalidItem(&'static str),
}

impl AuthError {
    fn from_client(err: ClientError) -> Self {
        match err {
            ClientError::Daemon { kind, message } => AuthError::Daemon { kind, message },
            other => AuthError::Unavailable(other),
        }
    }

    /// Whether the failmode decides: the daemon is out of reach or broken
    /// before it prompted, as opposed to having given an answer. Busy is an
    /// answer (overload must never open logins in failmode=safe).
    pub fn is_unavailable(&self) -> bool {
        match self {
            AuthError::Unavailable(_) | AuthError::Protocol(_) => true,
            AuthError::Daemon { kind, .. } => {
                matches!(kind, ErrorKind::Internal | ErrorKind::Version)
            }
            AuthError::Conversation(_)
            | AuthError::TooManySteps
            | AuthError::AfterPrompt(_)
            | AuthError::InvalidItem(_) => false,
        }
    }
}

/// Whether `failmode=safe` still denies this service: super-user elevation
/// must never proceed without a second factor. The built-in list is the
/// daemon's default one ([`DEFAULT_ELEVATION_SERVICES`]): the module cannot
/// ask mfad for its configured list, since mfad is unreachable when this
/// matters. `extra` is the `elevation=` option.
pub fn is_elevation_service(service: &str, extra: &[String]) -> bool {
    DEFAULT_ELEVATION_SERVICES.contains(&service) || extra.iter().any(|s| s == service)
}

/// What the failmode makes of an unreachable daemon.
pub fn unavailable_code(options: &Options, service: &str) -> PamCode {
    match options.failmode {
        FailMode::Safe if !is_elevation_service(service, &options.elevation) => PamCode::Ignore,
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
pub fn pam_code(result: &Result<Outcome, AuthError>, options: &Options, service: &str) -> PamCode {
    match result {
        Ok(outcome) => outcome_code(*outcome),
        Err(err) if err.is_unavailable() => unavailable_code(options, service),
        Err(AuthError::Daemon { kind: ErrorKind::InvalidCode | ErrorKind::Busy, .. }) => PamCode::AuthErr,
        Err(AuthError::Daemon { .. }) => PamCode::ServiceErr,
        Err(AuthError::Conversation(_)) => PamCode::ConvErr,
        Err(AuthError::TooManySteps | AuthError::AfterPrompt(_) | AuthError::InvalidItem(_)) => PamCode::AuthErr,
        // Covered by `is_unavailable`; kept so a new variant is a compile
        // error here rather than a silent mapping.
        Err(AuthError::Unavailable(_) | AuthError::Protocol(_)) => unavailable_code(options, service),
    }
}

/// Relay one login conversation over `transport`, with no password in the
/// stack. Returns the daemon's outcome, or why there was none.
pub fn converse<T, P, L>(ctx: &Context, transport: &mut T, prompter: &mut P, log: &mut L) -> Result<Outcome, AuthError>
where
    T: Transport + ?Sized,
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    converse_in(ctx, &mut StackPassword::default(), transport, prompter, log)
}

/// [`converse`] in a stack holding `stack.found` as PAM_AUTHTOK; with
/// `forward_pass`, `stack.hand_on` is the password to set for the next
/// module once the outcome is [`Outcome::Verified`] (see [`one_field`]).
pub fn converse_in<T, P, L>(
    ctx: &Context,
    stack: &mut StackPassword,
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
    if let Some(item) = login.invalid_item() {
        return Err(AuthError::InvalidItem(item));
    }
    let mut request = Request::AuthBegin {
        service: login.service.clone(),
        user: login.user.clone(),
        ruser: login.ruser.clone(),
        rhost: login.rhost.clone(),
        tty: login.tty.clone(),
        forward_pass: ctx.options.forward_pass,
    };
    let mut prompted = false;
    for step in 1..=MAX_STEPS {
        debug(ctx, log, || format!("step {step}: sending {}", request.kind()));
        let received = transport.request(request).map_err(AuthError::from_client).and_then(login_step);
        let auth_step = match received {
            Ok(auth_step) => auth_step,
            Err(err) => {
                if let AuthError::Daemon { kind, .. } = &err {
                    debug(ctx, log, || format!("step {step}: received error ({kind:?})"));
                }
                return Err(if prompted { AuthError::AfterPrompt(Box::new(err)) } else { err });
            }
        };
        match auth_step {
            AuthStep::Decision { outcome, messages } => {
                debug(ctx, log, || {
                    format!("step {step}: received decision {outcome:?} with {} message(s)", messages.len())
                });
                show(&messages, ctx.silent, prompter);
                if outcome != Outcome::Verified {
                    stack.hand_on = None;
                }
                return Ok(outcome);
            }
            // A one-field client would answer mfad's prompt with its password.
            AuthStep::Prompt { .. } if ctx.options.forward_pass => {
                let err = AuthError::Protocol("a prompt in a forward_pass conversation".into());
                return Err(if prompted { AuthError::AfterPrompt(Box::new(err)) } else { err });
            }
            AuthStep::Prompt { session_id, messages, prompt, echo } => {
                prompted = true;
                debug(ctx, log, || {
                    format!(
                        "step {step}: received prompt (echo {}) with {} message(s)",
                        if echo { "on" } else { "off" },
                        messages.len()
                    )
                });
                show(&messages, ctx.silent, prompter);
                let answer = if echo { prompter.prompt_visible(&prompt) } else { prompter.prompt_secret(&prompt) }
                    .map_err(AuthError::Conversation)?;
                request = one_field::answer_prompt(session_id, answer, echo, stack);
            }
            AuthStep::CodeInAnswer { session_id, digits, recovery } => {
                if !ctx.options.forward_pass {
                    let err = AuthError::Protocol("a code-in-answer step without forward_pass".into());
                    return Err(if prompted { AuthError::AfterPrompt(Box::new(err)) } else { err });
                }
                prompted = true;
                debug(ctx, log, || format!("step {step}: received code-in-answer ({digits} digits)"));
                request = one_field::answer_in_one(ctx, session_id, digits, recovery, prompter, stack)?;
            }
        }
    }
    Err(AuthError::TooManySteps)
}

/// The login step in a response, or why there is none.
fn login_step(response: Response) -> Result<AuthStep, AuthError> {
    match response {
        Response::Auth(auth_step) => Ok(auth_step),
        Response::Error { kind, message } => Err(AuthError::Daemon { kind, message }),
        // mfad is up but its store is not: the same as mfad being down.
        Response::Unavailable { message } => Err(AuthError::Unavailable(ClientError::StoreUnavailable(message))),
        other => Err(AuthError::Protocol(format!("a {:?} response in a login conversation", other.kind()))),
    }
}

/// Connect with `connect`, relay the conversation, tell the person and the
/// log what went wrong if anything did, and return the PAM code. A connect
/// error is an unreachable daemon: the failmode decides.
pub fn authenticate_with<T, C, P, L>(ctx: &Context, connect: C, prompter: &mut P, log: &mut L) -> PamCode
where
    T: Transport,
    C: FnOnce() -> Result<T, ClientError>,
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    authenticate_in(ctx, &mut StackPassword::default(), connect, prompter, log)
}

/// [`authenticate_with`] in a stack holding `stack.found` (see [`converse_in`]).
pub fn authenticate_in<T, C, P, L>(
    ctx: &Context,
    stack: &mut StackPassword,
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
        Ok(mut transport) => converse_in(ctx, stack, &mut transport, prompter, log),
        Err(err) => Err(AuthError::from_client(err)),
    };
    let code = pam_code(&result, &ctx.options, &ctx.login.service);
    report::report(ctx, &result, code, prompter, log);
    code
}

/// [`authenticate_with`] over a real connection to `ctx.options.socket`,
/// with `ctx.options.timeout` on the connect and on every read and write,
/// trusted only when root serves the socket.
pub fn authenticate<P, L>(ctx: &Context, stack: &mut StackPassword, prompter: &mut P, log: &mut L) -> PamCode
where
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    let connected = connect_to_root_daemon(&ctx.options, log);
    authenticate_in(ctx, stack, || connected, prompter, log)
}

/// Connect to mfad, and refuse a socket whose server is not root: any local
/// user can serve a socket at the configured path while mfad is down, and
/// such a fake daemon could answer Verified.
fn connect_to_root_daemon<L: Log + ?Sized>(options: &Options, log: &mut L) -> Result<Client, ClientError> {
    let client = Client::connect(&options.socket, options.timeout)?;
    require_root_server(client.server_uid()?, &options.socket).inspect_err(|err| {
        log.log(LogLevel::Warning, &format!("not trusting mfad's socket: {err}"));
    })?;
    Ok(client)
}

/// Ok when `uid` (the peer of mfad's socket) is root; otherwise the daemon
/// counts as unreachable, with a connect error naming the uid.
pub fn require_root_server(uid: u32, socket: &Path) -> Result<(), ClientError> {
    if uid == 0 {
        return Ok(());
    }
    Err(ClientError::Connect {
        path: socket.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the socket is served by uid {uid}, not root"),
        ),
    })
}

/// PAM_SILENT hides Info messages, except essential ones (the key of an
/// inline set-up, recovery codes shown once).
fn show<P: Prompter + ?Sized>(messages: &[Message], silent: bool, prompter: &mut P) {
    for message in messages {
        match message.style {
            MessageStyle::Info if silent && !message.must_show => {}
            MessageStyle::Info => prompter.info(&message.text),
            MessageStyle::Error => prompter.error(&message.text),
        }
    }
}

pub(crate) fn debug<L: Log + ?Sized>(ctx: &Context, log: &mut L, message: impl FnOnce() -> String) {
    if ctx.options.debug {
        log.log(LogLevel::Debug, &message());
    }
}

mod report;

#[cfg(test)]
mod tests;
