//! The conversation against scripted fakes: a prompter that pops expected
//! events, a scripted transport, and a fake daemon speaking the real framing
//! to the real `Client` over a temporary socket.

use std::collections::VecDeque;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mfa_shared::frame::{FrameError, read_frame, write_frame};
use mfa_shared::{
    AuthStep, Client, ClientError, Code, ErrorKind, Message, Outcome, PROTOCOL_VERSION, Request, RequestFrame,
    Response, ResponseFrame,
};

use super::*;
use crate::options::{FailMode, Options};

// ---------------------------------------------------------------- fakes

/// What the module is expected to do with the person, in order.
#[derive(Debug)]
enum Expect {
    Info(&'static str),
    Error(&'static str),
    /// An error message starting with this text.
    ErrorStarting(&'static str),
    /// A prompt with echo off, and the answer (or a conversation failure).
    Secret(&'static str, Result<&'static str, &'static str>),
    /// A prompt with echo on.
    Visible(&'static str, Result<&'static str, &'static str>),
}

/// Pops expected events; fails on anything unexpected and, when dropped,
/// if the script was not used up.
struct ScriptedPrompter {
    script: VecDeque<Expect>,
}

impl ScriptedPrompter {
    fn new(script: Vec<Expect>) -> Self {
        ScriptedPrompter { script: script.into() }
    }

    fn next(&mut self, got: &str) -> Expect {
        match self.script.pop_front() {
            Some(expect) => expect,
            None => panic!("unexpected {got}: the prompter's script is used up"),
        }
    }

    fn answer(answer: Result<&str, &str>) -> Result<String, ConversationError> {
        answer.map(str::to_string).map_err(|why| ConversationError(why.to_string()))
    }
}

impl Prompter for ScriptedPrompter {
    fn prompt_secret(&mut self, text: &str) -> Result<String, ConversationError> {
        match self.next(&format!("secret prompt {text:?}")) {
            Expect::Secret(prompt, answer) => {
                assert_eq!(text, prompt, "secret prompt text");
                Self::answer(answer)
            }
            other => panic!("expected {other:?}, got a secret prompt {text:?}"),
        }
    }

    fn prompt_visible(&mut self, text: &str) -> Result<String, ConversationError> {
        match self.next(&format!("visible prompt {text:?}")) {
            Expect::Visible(prompt, answer) => {
                assert_eq!(text, prompt, "visible prompt text");
                Self::answer(answer)
            }
            other => panic!("expected {other:?}, got a visible prompt {text:?}"),
        }
    }

    fn info(&mut self, text: &str) {
        match self.next(&format!("info {text:?}")) {
            Expect::Info(expected) => assert_eq!(text, expected, "info text"),
            other => panic!("expected {other:?}, got info {text:?}"),
        }
    }

    fn error(&mut self, text: &str) {
        match self.next(&format!("error {text:?}")) {
            Expect::Error(expected) => assert_eq!(text, expected, "error text"),
            Expect::ErrorStarting(prefix) => {
                assert!(text.starts_with(prefix), "error {text:?} should start with {prefix:?}")
            }
            other => panic!("expected {other:?}, got error {text:?}"),
        }
    }
}

impl Drop for ScriptedPrompter {
    fn drop(&mut self) {
        if !thread::panicking() {
            assert!(self.script.is_empty(), "prompter script not used up: {:?}", self.script);
        }
    }
}

/// Answers each request from a script after checking it is the expected one.
struct ScriptedTransport {
    script: VecDeque<(Request, Result<Response, ClientError>)>,
}

impl ScriptedTransport {
    fn new(script: Vec<(Request, Result<Response, ClientError>)>) -> Self {
        ScriptedTransport { script: script.into() }
    }
}

impl Transport for ScriptedTransport {
    fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        let Some((expected, reply)) = self.script.pop_front() else {
            panic!("unexpected request {request:?}: the daemon's script is used up");
        };
        assert_eq!(request, expected);
        reply
    }
}

impl Drop for ScriptedTransport {
    fn drop(&mut self) {
        if !thread::panicking() {
            assert!(self.script.is_empty(), "daemon script not used up: {} left", self.script.len());
        }
    }
}

#[derive(Default)]
struct Lines(Vec<(LogLevel, String)>);

impl Log for Lines {
    fn log(&mut self, level: LogLevel, message: &str) {
        self.0.push((level, message.to_string()));
    }
}

impl Lines {
    fn at(&self, level: LogLevel) -> Vec<&str> {
        self.0.iter().filter(|(l, _)| *l == level).map(|(_, m)| m.as_str()).collect()
    }
    fn all(&self) -> String {
        self.0.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("\n")
    }
}

// ---------------------------------------------------------------- helpers

fn ctx(service: &str) -> Context {
    Context {
        options: Options::default(),
        login: Login {
            service: service.into(),
            user: "alice".into(),
            ruser: None,
            rhost: Some("192.0.2.7".into()),
            tty: Some("ssh".into()),
        },
        silent: false,
    }
}

/// Default options with this failmode.
fn mode(failmode: FailMode) -> Options {
    Options { failmode, ..Options::default() }
}

fn begin(ctx: &Context) -> Request {
    Request::AuthBegin {
        service: ctx.login.service.clone(),
        user: ctx.login.user.clone(),
        ruser: ctx.login.ruser.clone(),
        rhost: ctx.login.rhost.clone(),
        tty: ctx.login.tty.clone(),
        forward_pass: ctx.options.forward_pass,
    }
}

fn answer(session: &str, code: &str) -> Request {
    Request::AuthAnswer { session_id: session.into(), answer: Code::new(code) }
}

fn prompt(session: &str, messages: Vec<Message>, text: &str, echo: bool) -> Response {
    Response::Auth(AuthStep::Prompt { session_id: session.into(), messages, prompt: text.into(), echo })
}

fn decision(outcome: Outcome, messages: Vec<Message>) -> Response {
    Response::Auth(AuthStep::Decision { outcome, messages })
}

const CODE_PROMPT: &str = "Verification code: ";

/// Run `authenticate_with` over a scripted transport.
fn run_scripted(
    ctx: &Context,
    daemon: Vec<(Request, Result<Response, ClientError>)>,
    person: Vec<Expect>,
) -> (PamCode, Lines) {
    let mut prompter = ScriptedPrompter::new(person);
    let mut log = Lines::default();
    let code = authenticate_with(ctx, || Ok(ScriptedTransport::new(daemon)), &mut prompter, &mut log);
    (code, log)
}

/// A one-step conversation: AuthBegin answered by `reply`.
fn one_step(ctx: &Context, reply: Result<Response, ClientError>, person: Vec<Expect>) -> (PamCode, Lines) {
    run_scripted(ctx, vec![(begin(ctx), reply)], person)
}

// ---------------------------------------------------------------- pure mapping

#[test]
fn outcomes_map_onto_pam_codes() {
    assert_eq!(outcome_code(Outcome::Verified), PamCode::Success);
    assert_eq!(outcome_code(Outcome::NotRequired), PamCode::Ignore);
    assert_eq!(outcome_code(Outcome::Failed), PamCode::AuthErr);
    assert_eq!(outcome_code(Outcome::MaxTries), PamCode::MaxTries);
    assert_eq!(outcome_code(Outcome::Denied), PamCode::PermDenied);
}

#[test]
fn daemon_errors_map_onto_pam_codes() {
    let code = |kind, failmode, service| {
        pam_code(&Err(AuthError::Daemon { kind, message: "m".into() }), &mode(failmode), service)
    };
    assert_eq!(code(ErrorKind::InvalidCode, FailMode::Secure, "sshd"), PamCode::AuthErr);
    assert_eq!(code(ErrorKind::InvalidCode, FailMode::Safe, "sshd"), PamCode::AuthErr);
    // An overloaded daemon answered: never the failmode.
    for (failmode, service) in [(FailMode::Secure, "sshd"), (FailMode::Safe, "sshd"), (FailMode::Safe, "sudo")] {
        assert_eq!(code(ErrorKind::Busy, failmode, service), PamCode::AuthErr, "{failmode:?} {service}");
    }
    for kind in [ErrorKind::Internal, ErrorKind::Version] {
        assert_eq!(code(kind, FailMode::Secure, "sshd"), PamCode::AuthInfoUnavail);
        assert_eq!(code(kind, FailMode::Safe, "sshd"), PamCode::Ignore);
        assert_eq!(code(kind, FailMode::Safe, "sudo"), PamCode::AuthInfoUnavail);
    }
    for kind in [ErrorKind::BadRequest, ErrorKind::PermissionDenied, ErrorKind::NotFound, ErrorKind::Conflict] {
        assert_eq!(code(kind, FailMode::Secure, "sshd"), PamCode::ServiceErr, "{kind:?}");
        assert_eq!(code(kind, FailMode::Safe, "sshd"), PamCode::ServiceErr, "{kind:?}");
    }
}

#[test]
fn other_errors_map_onto_pam_codes() {
    let conv = Err(AuthError::Conversation(ConversationError("eof".into())));
    assert_eq!(pam_code(&conv, &mode(FailMode::Secure), "sshd"), PamCode::ConvErr);
    assert_eq!(pam_code(&Err(AuthError::TooManySteps), &mode(FailMode::Safe), "sshd"), PamCode::AuthErr);
    let down = || Err(AuthError::Unavailable(ClientError::TimedOut));
    assert_eq!(pam_code(&down(), &mode(FailMode::Secure), "sshd"), PamCode::AuthInfoUnavail);
    assert_eq!(pam_code(&down(), &mode(FailMode::Safe), "sshd"), PamCode::Ignore);
    let proto = Err(AuthError::Protocol("ok".into()));
    assert_eq!(pam_code(&proto, &mode(FailMode::Secure), "login"), PamCode::AuthInfoUnavail);
    assert_eq!(pam_code(&proto, &mode(FailMode::Safe), "login"), PamCode::Ignore);
}

#[test]
fn errors_after_a_prompt_are_auth_err_whatever_the_failmode() {
    let after = |err: AuthError| Err(AuthError::AfterPrompt(Box::new(err)));
    let daemon = |kind| AuthError::Daemon { kind, message: "m".into() };
    for result in [
        after(AuthError::Unavailable(ClientError::TimedOut)),
        after(AuthError::Unavailable(ClientError::Version(9))),
        after(AuthError::Protocol("ok".into())),
        after(daemon(ErrorKind::Internal)),
        after(daemon(ErrorKind::Version)),
        after(daemon(ErrorKind::NotFound)),
        after(daemon(ErrorKind::Busy)),
    ] {
        assert!(!result.as_ref().is_err_and(AuthError::is_unavailable));
        for failmode in [FailMode::Secure, FailMode::Safe] {
            for service in ["sshd", "sudo"] {
                assert_eq!(
                    pam_code(&result, &mode(failmode), service),
                    PamCode::AuthErr,
                    "{result:?} {failmode:?} {service}"
                );
            }
        }
    }
}

#[test]
fn safe_mode_still_fails_elevation_services() {
    for service in ["sudo", "sudo-i", "su", "su-l", "pkexec", "polkit-1", "doas"] {
        assert!(is_elevation_service(service, &[]));
        assert_eq!(unavailable_code(&mode(FailMode::Safe), service), PamCode::AuthInfoUnavail, "{service}");
        assert_eq!(unavailable_code(&mode(FailMode::Secure), service), PamCode::AuthInfoUnavail, "{service}");
    }
    for service in ["sshd", "login", "gdm-password", "sudoers", "su-x", "run0"] {
        assert!(!is_elevation_service(service, &[]), "{service}");
        assert_eq!(unavailable_code(&mode(FailMode::Safe), service), PamCode::Ignore, "{service}");
        assert_eq!(unavailable_code(&mode(FailMode::Secure), service), PamCode::AuthInfoUnavail, "{service}");
    }
}

#[test]
fn the_elevation_option_adds_services_that_stay_closed_in_safe_mode() {
    let (options, warnings) = Options::parse(&["failmode=safe", "elevation=run0,cockpit"]);
    assert!(warnings.is_empty(), "{warnings:?}");
    for service in ["run0", "cockpit", "sudo", "su"] {
        assert!(is_elevation_service(service, &options.elevation), "{service}");
        assert_eq!(unavailable_code(&options, service), PamCode::AuthInfoUnavail, "{service}");
    }
    for service in ["sshd", "run", "cockpit-ws"] {
        assert!(!is_elevation_service(service, &options.elevation), "{service}");
        assert_eq!(unavailable_code(&options, service), PamCode::Ignore, "{service}");
    }
    // End to end: mfad down, an added elevation service is denied.
    let mut c = ctx("run0");
    c.options = options;
    let unreachable = || -> Result<ScriptedTransport, ClientError> { Err(ClientError::TimedOut) };
    let mut person = ScriptedPrompter::new(vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)]);
    assert_eq!(authenticate_with(&c, unreachable, &mut person, &mut Lines::default()), PamCode::AuthInfoUnavail);
}

#[test]
fn success_only_when_the_daemon_verified() {
    let mut results: Vec<Result<Outcome, AuthError>> =
        [Outcome::Verified, Outcome::NotRequired, Outcome::Failed, Outcome::MaxTries, Outcome::Denied]
            .into_iter()
            .map(Ok)
            .collect();
    for kind in [
        ErrorKind::BadRequest,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::InvalidCode,
        ErrorKind::Conflict,
        ErrorKind::Version,
        ErrorKind::Internal,
        ErrorKind::Busy,
    ] {
        results.push(Err(AuthError::Daemon { kind, message: String::new() }));
        results.push(Err(AuthError::AfterPrompt(Box::new(AuthError::Daemon { kind, message: String::new() }))));
    }
    results.push(Err(AuthError::Unavailable(ClientError::TimedOut)));
    results.push(Err(AuthError::Unavailable(ClientError::Version(9))));
    results.push(Err(AuthError::Protocol(String::new())));
    results.push(Err(AuthError::Conversation(ConversationError(String::new()))));
    results.push(Err(AuthError::TooManySteps));
    for result in &results {
        for failmode in [FailMode::Secure, FailMode::Safe] {
            for service in ["sshd", "sudo"] {
                let code = pam_code(result, &mode(failmode), service);
                let verified = matches!(result, Ok(Outcome::Verified));
                assert_eq!(code == PamCode::Success, verified, "{result:?} {failmode:?} {service}");
            }
        }
    }
}

#[test]
fn raw_values_are_linux_pams() {
    assert_eq!(PamCode::Success.as_raw(), 0);
    assert_eq!(PamCode::ServiceErr.as_raw(), 3);
    assert_eq!(PamCode::PermDenied.as_raw(), 6);
    assert_eq!(PamCode::AuthErr.as_raw(), 7);
    assert_eq!(PamCode::AuthInfoUnavail.as_raw(), 9);
    assert_eq!(PamCode::MaxTries.as_raw(), 11);
    assert_eq!(PamCode::ConvErr.as_raw(), 19);
    assert_eq!(PamCode::Ignore.as_raw(), 25);
}

#[test]
fn empty_items_are_unset() {
    assert_eq!(non_empty(Some(String::new())), None);
    assert_eq!(non_empty(None), None);
    assert_eq!(non_empty(Some("h".into())), Some("h".into()));
}

// ---------------------------------------------------------------- scripted transport

#[test]
fn begin_carries_the_pam_items() {
    let mut c = ctx("sudo");
    c.login.ruser = Some("bob".into());
    c.login.rhost = None;
    c.login.tty = Some("/dev/pts/3".into());
    let expected = Request::AuthBegin {
        service: "sudo".into(),
        user: "alice".into(),
        ruser: Some("bob".into()),
        rhost: None,
        tty: Some("/dev/pts/3".into()),
        forward_pass: false,
    };
    assert_eq!(begin(&c), expected);
    let (code, _) = one_step(&c, Ok(decision(Outcome::NotRequired, vec![])), vec![]);
    assert_eq!(code, PamCode::Ignore);
}

#[test]
fn every_decision_gives_its_code() {
    for (outcome, expected) in [
        (Outcome::Verified, PamCode::Success),
        (Outcome::NotRequired, PamCode::Ignore),
        (Outcome::Failed, PamCode::AuthErr),
        (Outcome::MaxTries, PamCode::MaxTries),
        (Outcome::Denied, PamCode::PermDenied),
    ] {
        let (code, _) = one_step(&ctx("sshd"), Ok(decision(outcome, vec![])), vec![]);
        assert_eq!(code, expected, "{outcome:?}");
    }
}

#[test]
fn prompt_then_verified() {
    let c = ctx("sshd");
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))),
            (answer("s1", "123456"), Ok(decision(Outcome::Verified, vec![]))),
        ],
        vec![Expect::Secret(CODE_PROMPT, Ok("123456"))],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn retry_flow_with_error_message() {
    let c = ctx("sshd");
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))),
            (
                answer("s1", "000000"),
                Ok(prompt("s1", vec![Message::error("Wrong code, try again.")], CODE_PROMPT, false)),
            ),
            (answer("s1", "123456"), Ok(decision(Outcome::Verified, vec![Message::info("Welcome.")]))),
        ],
        vec![
            Expect::Secret(CODE_PROMPT, Ok("000000")),
            Expect::Error("Wrong code, try again."),
            Expect::Secret(CODE_PROMPT, Ok("123456")),
            Expect::Info("Welcome."),
        ],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn retries_used_up_give_maxtries() {
    let c = ctx("sshd");
    let wrong = || Ok(prompt("s1", vec![Message::error("Wrong code.")], CODE_PROMPT, false));
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))),
            (answer("s1", "1"), wrong()),
            (answer("s1", "2"), wrong()),
            (answer("s1", "3"), Ok(decision(Outcome::MaxTries, vec![Message::error("Too many wrong codes.")]))),
        ],
        vec![
            Expect::Secret(CODE_PROMPT, Ok("1")),
            Expect::Error("Wrong code."),
            Expect::Secret(CODE_PROMPT, Ok("2")),
            Expect::Error("Wrong code."),
            Expect::Secret(CODE_PROMPT, Ok("3")),
            Expect::Error("Too many wrong codes."),
        ],
    );
    assert_eq!(code, PamCode::MaxTries);
}

#[test]
fn messages_are_shown_in_order_with_their_style() {
    let c = ctx("sshd");
    let (code, _) = run_scripted(
        &c,
        vec![
            (
                begin(&c),
                Ok(prompt(
                    "s1",
                    vec![Message::info("one"), Message::error("two"), Message::info("three")],
                    CODE_PROMPT,
                    false,
                )),
            ),
            (
                answer("s1", "123456"),
                Ok(decision(Outcome::Denied, vec![Message::error("Account locked."), Message::info("bye")])),
            ),
        ],
        vec![
            Expect::Info("one"),
            Expect::Error("two"),
            Expect::Info("three"),
            Expect::Secret(CODE_PROMPT, Ok("123456")),
            Expect::Error("Account locked."),
            Expect::Info("bye"),
        ],
    );
    assert_eq!(code, PamCode::PermDenied);
}

#[test]
fn echo_on_prompts_are_visible_and_relayed_verbatim() {
    // Inline enrollment: a question, then the code from the new device.
    let c = ctx("sshd");
    let question = "Does your device support scanning a barcode? [y/n] ";
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("e1", vec![Message::info("Two-factor set-up is required.")], question, true))),
            (
                answer("e1", "n"),
                Ok(prompt("e1", vec![Message::info("Secret: ABCD EFGH")], "Code from the new device: ", false)),
            ),
            (answer("e1", "654321"), Ok(decision(Outcome::Verified, vec![]))),
        ],
        vec![
            Expect::Info("Two-factor set-up is required."),
            Expect::Visible(question, Ok("n")),
            Expect::Info("Secret: ABCD EFGH"),
            Expect::Secret("Code from the new device: ", Ok("654321")),
        ],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn the_session_id_of_the_latest_prompt_is_answered() {
    let c = ctx("sshd");
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("first", vec![], CODE_PROMPT, false))),
            (answer("first", "1"), Ok(prompt("second", vec![], CODE_PROMPT, false))),
            (answer("second", "2"), Ok(decision(Outcome::Failed, vec![]))),
        ],
        vec![Expect::Secret(CODE_PROMPT, Ok("1")), Expect::Secret(CODE_PROMPT, Ok("2"))],
    );
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn silent_suppresses_info_only() {
    let mut c = ctx("sshd");
    c.silent = true;
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![Message::info("hidden"), Message::error("shown")], CODE_PROMPT, false))),
            (
                answer("s1", "123456"),
                Ok(decision(Outcome::Verified, vec![Message::info("hidden too"), Message::error("shown too")])),
            ),
        ],
        vec![Expect::Error("shown"), Expect::Secret(CODE_PROMPT, Ok("123456")), Expect::Error("shown too")],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn silent_still_shows_essential_info() {
    // Inline set-up under PAM_SILENT: the key and the recovery codes are the
    // only chance to see them.
    let mut c = ctx("sshd");
    c.silent = true;
    let (code, _) = run_scripted(
        &c,
        vec![
            (
                begin(&c),
                Ok(prompt(
                    "e1",
                    vec![Message::info("Two-factor set-up is required."), Message::essential("Key: ABCD EFGH")],
                    "Code from the new device: ",
                    false,
                )),
            ),
            (
                answer("e1", "654321"),
                Ok(decision(
                    Outcome::Verified,
                    vec![Message::essential("Recovery codes: 1111 2222"), Message::info("Welcome.")],
                )),
            ),
        ],
        vec![
            Expect::Info("Key: ABCD EFGH"),
            Expect::Secret("Code from the new device: ", Ok("654321")),
            Expect::Info("Recovery codes: 1111 2222"),
        ],
    );
    assert_eq!(code, PamCode::Success);

    // Without PAM_SILENT every message shows, in order.
    c.silent = false;
    let (code, _) = one_step(
        &c,
        Ok(decision(Outcome::Verified, vec![Message::info("a"), Message::essential("b")])),
        vec![Expect::Info("a"), Expect::Info("b")],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn conversation_failure_is_conv_err_and_sends_nothing_more() {
    let c = ctx("sshd");
    let (code, log) = run_scripted(
        &c,
        vec![(begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false)))],
        vec![Expect::Secret(CODE_PROMPT, Err("end of input"))],
    );
    assert_eq!(code, PamCode::ConvErr);
    assert!(log.all().contains("end of input"), "{}", log.all());
}

#[test]
fn daemon_error_invalid_code_is_auth_err_with_its_message() {
    let (code, log) = one_step(
        &ctx("sshd"),
        Ok(Response::error(ErrorKind::InvalidCode, "account locked")),
        vec![Expect::Error("Two-factor authentication failed: account locked")],
    );
    assert_eq!(code, PamCode::AuthErr);
    assert!(!log.at(LogLevel::Info).is_empty());
}

#[test]
fn daemon_error_internal_follows_the_failmode() {
    let (code, _) = one_step(
        &ctx("sshd"),
        Ok(Response::error(ErrorKind::Internal, "store is down")),
        vec![Expect::Error("Two-factor authentication is unavailable: store is down")],
    );
    assert_eq!(code, PamCode::AuthInfoUnavail);

    let mut safe = ctx("sshd");
    safe.options.failmode = FailMode::Safe;
    let (code, log) = one_step(&safe, Ok(Response::error(ErrorKind::Version, "old client")), vec![]);
    assert_eq!(code, PamCode::Ignore);
    assert_eq!(log.at(LogLevel::Warning).len(), 1, "{}", log.all());

    let mut safe_sudo = ctx("sudo");
    safe_sudo.options.failmode = FailMode::Safe;
    let (code, _) = one_step(
        &safe_sudo,
        Ok(Response::error(ErrorKind::Internal, "store is down")),
        vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)],
    );
    assert_eq!(code, PamCode::AuthInfoUnavail);
}

#[test]
fn store_unavailable_follows_the_failmode_before_a_prompt_and_denies_after() {
    let down =
        || Ok(Response::Unavailable { message: "mfad cannot use its store: the database cannot be reached".into() });
    let expected = "Two-factor authentication is unavailable: store unavailable: mfad cannot use its store";
    for (failmode, service, wanted) in [
        (FailMode::Secure, "sshd", PamCode::AuthInfoUnavail),
        (FailMode::Safe, "sshd", PamCode::Ignore),
        (FailMode::Safe, "sudo", PamCode::AuthInfoUnavail),
        (FailMode::Safe, "polkit-1", PamCode::AuthInfoUnavail),
    ] {
        let mut c = ctx(service);
        c.options.failmode = failmode;
        let person = if wanted == PamCode::Ignore { vec![] } else { vec![Expect::ErrorStarting(expected)] };
        let (code, _) = one_step(&c, down(), person);
        assert_eq!(code, wanted, "{failmode:?} {service}");
    }
    // Once mfad has prompted, it was reachable: a failed login.
    let mut c = ctx("sshd");
    c.options.failmode = FailMode::Safe;
    let (code, _) = run_scripted(
        &c,
        vec![(begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))), (answer("s1", "123456"), down())],
        vec![Expect::Secret(CODE_PROMPT, Ok("123456")), Expect::ErrorStarting("Two-factor authentication failed")],
    );
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn daemon_busy_is_auth_err_with_its_message_whatever_the_failmode() {
    for (failmode, service) in [(FailMode::Secure, "sshd"), (FailMode::Safe, "sshd"), (FailMode::Safe, "sudo")] {
        let mut c = ctx(service);
        c.options.failmode = failmode;
        let (code, log) = one_step(
            &c,
            Ok(Response::error(ErrorKind::Busy, "too many logins in progress, try again later")),
            vec![Expect::Error("Two-factor authentication failed: too many logins in progress, try again later")],
        );
        assert_eq!(code, PamCode::AuthErr, "{failmode:?} {service}");
        assert!(log.at(LogLevel::Warning).iter().any(|l| l.contains("Busy")), "{}", log.all());
    }
}

#[test]
fn other_daemon_errors_are_service_err() {
    for kind in [ErrorKind::BadRequest, ErrorKind::PermissionDenied, ErrorKind::NotFound, ErrorKind::Conflict] {
        let (code, log) = one_step(
            &ctx("sshd"),
            Ok(Response::error(kind, "nope")),
            vec![Expect::Error("Two-factor authentication failed: nope")],
        );
        assert_eq!(code, PamCode::ServiceErr, "{kind:?}");
        assert_eq!(log.at(LogLevel::Error).len(), 1);
    }
}

#[test]
fn daemon_error_after_a_prompt() {
    // e.g. the session expired while the person was typing.
    let c = ctx("sshd");
    let (code, _) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))),
            (answer("s1", "123456"), Ok(Response::error(ErrorKind::NotFound, "no such session"))),
        ],
        vec![
            Expect::Secret(CODE_PROMPT, Ok("123456")),
            Expect::Error("Two-factor authentication failed: no such session"),
        ],
    );
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn an_unexpected_response_is_a_protocol_error() {
    let (code, log) = one_step(&ctx("sshd"), Ok(Response::ok()), vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)]);
    assert_eq!(code, PamCode::AuthInfoUnavail);
    assert!(log.all().contains(r#"unexpected reply from mfad: a "ok" response"#), "{}", log.all());

    let mut safe = ctx("login");
    safe.options.failmode = FailMode::Safe;
    let (code, _) = one_step(&safe, Ok(Response::ok()), vec![]);
    assert_eq!(code, PamCode::Ignore);
}

#[test]
fn any_error_after_a_prompt_denies_whatever_the_failmode() {
    // Once mfad has prompted it was reachable: a read/write error, a
    // timeout, a daemon failure or a protocol error now must not let the
    // login through on the password alone (failmode=safe gave PAM_IGNORE).
    type Failure = fn() -> Result<Response, ClientError>;
    let failures: [(Failure, &str); 6] = [
        (|| Err(ClientError::TimedOut), "Two-factor authentication failed: mfad did not answer in time"),
        (
            || Err(ClientError::Frame(FrameError::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe)))),
            "Two-factor authentication failed: connection to mfad failed",
        ),
        (|| Err(ClientError::Version(9)), "Two-factor authentication failed: mfad speaks protocol version 9"),
        (
            || Ok(Response::error(ErrorKind::Internal, "store is down")),
            "Two-factor authentication failed: store is down",
        ),
        (|| Ok(Response::error(ErrorKind::Version, "old client")), "Two-factor authentication failed: old client"),
        (|| Ok(Response::ok()), "Two-factor authentication failed: unexpected reply from mfad"),
    ];
    for (failure, shown) in failures {
        for (failmode, service) in [(FailMode::Secure, "sshd"), (FailMode::Safe, "sshd"), (FailMode::Safe, "sudo")] {
            let mut c = ctx(service);
            c.options.failmode = failmode;
            let (code, log) = run_scripted(
                &c,
                vec![(begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))), (answer("s1", "123456"), failure())],
                vec![Expect::Secret(CODE_PROMPT, Ok("123456")), Expect::ErrorStarting(shown)],
            );
            assert_eq!(code, PamCode::AuthErr, "{shown} {failmode:?} {service}");
            assert!(log.at(LogLevel::Warning).is_empty(), "{}", log.all());
            assert_eq!(log.at(LogLevel::Error).len(), 1, "{}", log.all());
        }
    }
}

#[test]
fn the_same_errors_before_any_prompt_follow_the_failmode() {
    let mut c = ctx("sshd");
    c.options.failmode = FailMode::Safe;
    let (code, log) = one_step(&c, Err(ClientError::TimedOut), vec![]);
    assert_eq!(code, PamCode::Ignore);
    assert_eq!(log.at(LogLevel::Warning).len(), 1, "{}", log.all());
}

#[test]
fn a_long_inline_enrollment_fits_in_max_steps() {
    // Three set-up questions, ten tries at the new device's code, an
    // acknowledgement of the recovery codes, ten tries at a login code:
    // 24 prompts, more than the old limit of 20.
    let c = ctx("sshd");
    let mut daemon = Vec::new();
    let mut person = Vec::new();
    let mut request = begin(&c);
    for _ in 0..24 {
        daemon.push((request, Ok(prompt("e1", vec![], "Answer: ", true))));
        person.push(Expect::Visible("Answer: ", Ok("y")));
        request = answer("e1", "y");
    }
    daemon.push((request, Ok(decision(Outcome::Verified, vec![]))));
    let (code, log) = run_scripted(&c, daemon, person);
    assert_eq!(code, PamCode::Success, "{}", log.all());
}

#[test]
fn a_daemon_that_never_decides_ends_after_max_steps() {
    struct EndlessPrompts(usize);
    impl Transport for EndlessPrompts {
        fn request(&mut self, _: Request) -> Result<Response, ClientError> {
            self.0 += 1;
            Ok(prompt("s1", vec![], CODE_PROMPT, false))
        }
    }
    struct AlwaysAnswers(usize);
    impl Prompter for AlwaysAnswers {
        fn prompt_secret(&mut self, _: &str) -> Result<String, ConversationError> {
            self.0 += 1;
            Ok("123456".into())
        }
        fn prompt_visible(&mut self, _: &str) -> Result<String, ConversationError> {
            panic!("no visible prompt expected")
        }
        fn info(&mut self, _: &str) {}
        fn error(&mut self, _: &str) {}
    }
    let c = ctx("sshd");
    let mut transport = EndlessPrompts(0);
    let mut person = AlwaysAnswers(0);
    let result = converse(&c, &mut transport, &mut person, &mut Lines::default());
    assert!(matches!(result, Err(AuthError::TooManySteps)), "{result:?}");
    assert_eq!(transport.0, MAX_STEPS);
    assert_eq!(pam_code(&result, &mode(FailMode::Safe), "sshd"), PamCode::AuthErr);

    let mut person = AlwaysAnswers(0);
    let code = authenticate_with(&c, || Ok(EndlessPrompts(0)), &mut person, &mut Lines::default());
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn debug_logs_step_kinds_but_never_answers_or_prompts() {
    let mut c = ctx("sshd");
    c.options.debug = true;
    let (code, log) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![Message::info("hint 4711")], "Code please: ", false))),
            (answer("s1", "987654"), Ok(decision(Outcome::Verified, vec![]))),
        ],
        vec![Expect::Info("hint 4711"), Expect::Secret("Code please: ", Ok("987654"))],
    );
    assert_eq!(code, PamCode::Success);
    let all = log.all();
    assert!(all.contains("auth_begin"), "{all}");
    assert!(all.contains("auth_answer"), "{all}");
    assert!(all.contains("prompt (echo off)"), "{all}");
    assert!(all.contains("decision Verified"), "{all}");
    assert!(!all.contains("987654"), "{all}");
    assert!(!all.contains("Code please"), "{all}");
    assert!(!all.contains("4711"), "{all}");
}

#[test]
fn without_debug_a_normal_login_logs_nothing() {
    let c = ctx("sshd");
    let (_, log) = run_scripted(
        &c,
        vec![
            (begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))),
            (answer("s1", "987654"), Ok(decision(Outcome::Verified, vec![]))),
        ],
        vec![Expect::Secret(CODE_PROMPT, Ok("987654"))],
    );
    assert!(log.0.is_empty(), "{}", log.all());
}

#[test]
fn connect_failure_follows_the_failmode() {
    let refused = || -> Result<ScriptedTransport, ClientError> {
        Err(ClientError::Connect {
            path: PathBuf::from("/run/mfad/mfad.sock"),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        })
    };
    let c = ctx("sshd");
    let mut person = ScriptedPrompter::new(vec![Expect::ErrorStarting(
        "Two-factor authentication is unavailable: cannot connect to mfad",
    )]);
    assert_eq!(authenticate_with(&c, refused, &mut person, &mut Lines::default()), PamCode::AuthInfoUnavail);
}

// ---------------------------------------------------------------- real client, fake daemon

/// A daemon on a temporary socket that speaks the real framing and follows
/// a script of (expected request, reply) over a single connection.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

enum Reply {
    Frame(ResponseFrame),
    /// Raw bytes (a broken daemon).
    Bytes(Vec<u8>),
    /// Close the connection without answering.
    Hangup,
}

impl FakeDaemon {
    fn start(script: Vec<(Request, Reply)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfad.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for (expected, reply) in script {
                let frame: RequestFrame = read_frame(&mut stream).unwrap();
                assert_eq!(frame.version, PROTOCOL_VERSION);
                assert_eq!(frame.request, expected);
                match reply {
                    Reply::Frame(frame) => write_frame(&mut stream, &frame).unwrap(),
                    Reply::Bytes(bytes) => std::io::Write::write_all(&mut stream, &bytes).unwrap(),
                    Reply::Hangup => return,
                }
            }
        });
        FakeDaemon { _dir: dir, path, thread: Some(thread) }
    }

    /// Wait for the daemon's thread; its failed assertions fail the test.
    fn finish(mut self) {
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

fn reply(response: Response) -> Reply {
    Reply::Frame(ResponseFrame::new(response))
}

fn ctx_at(service: &str, socket: &Path, timeout_secs: u64) -> Context {
    let mut c = ctx(service);
    c.options.socket = socket.to_path_buf();
    c.options.timeout = Duration::from_secs(timeout_secs);
    c
}

/// [`authenticate`] without its check that root serves the socket: the fake
/// daemons run as whoever runs the tests.
fn authenticate_as_test_user(c: &Context, prompter: &mut ScriptedPrompter, log: &mut Lines) -> PamCode {
    let connect = || Client::connect(&c.options.socket, c.options.timeout);
    authenticate_with(c, connect, prompter, log)
}

#[test]
fn real_client_relays_prompts_and_retries() {
    let c0 = ctx("sshd");
    let daemon = FakeDaemon::start(vec![
        (begin(&c0), reply(prompt("s1", vec![Message::info("Enter the code from your app.")], CODE_PROMPT, false))),
        (
            answer("s1", "000000"),
            reply(prompt("s1", vec![Message::error("Wrong code, try again.")], CODE_PROMPT, false)),
        ),
        (answer("s1", "123456"), reply(decision(Outcome::Verified, vec![Message::info("Verified.")]))),
    ]);
    let c = ctx_at("sshd", &daemon.path, 5);
    let mut person = ScriptedPrompter::new(vec![
        Expect::Info("Enter the code from your app."),
        Expect::Secret(CODE_PROMPT, Ok("000000")),
        Expect::Error("Wrong code, try again."),
        Expect::Secret(CODE_PROMPT, Ok("123456")),
        Expect::Info("Verified."),
    ]);
    let code = authenticate_as_test_user(&c, &mut person, &mut Lines::default());
    daemon.finish();
    assert_eq!(code, PamCode::Success);
}

#[test]
fn real_client_every_outcome() {
    for (outcome, expected) in [
        (Outcome::Verified, PamCode::Success),
        (Outcome::NotRequired, PamCode::Ignore),
        (Outcome::Failed, PamCode::AuthErr),
        (Outcome::MaxTries, PamCode::MaxTries),
        (Outcome::Denied, PamCode::PermDenied),
    ] {
        let c0 = ctx("login");
        let daemon = FakeDaemon::start(vec![(begin(&c0), reply(decision(outcome, vec![])))]);
        let c = ctx_at("login", &daemon.path, 5);
        let code = authenticate_as_test_user(&c, &mut ScriptedPrompter::new(vec![]), &mut Lines::default());
        daemon.finish();
        assert_eq!(code, expected, "{outcome:?}");
    }
}

#[test]
fn real_client_daemon_errors() {
    for (kind, expected, shown) in [
        (ErrorKind::InvalidCode, PamCode::AuthErr, "Two-factor authentication failed: "),
        (ErrorKind::Internal, PamCode::AuthInfoUnavail, UNAVAILABLE_PREFIX),
        (ErrorKind::Version, PamCode::AuthInfoUnavail, UNAVAILABLE_PREFIX),
        (ErrorKind::PermissionDenied, PamCode::ServiceErr, "Two-factor authentication failed: "),
        (ErrorKind::Busy, PamCode::AuthErr, "Two-factor authentication failed: x"),
    ] {
        let c0 = ctx("sshd");
        let daemon = FakeDaemon::start(vec![(begin(&c0), reply(Response::error(kind, "x")))]);
        let c = ctx_at("sshd", &daemon.path, 5);
        let mut person = ScriptedPrompter::new(vec![Expect::ErrorStarting(shown)]);
        let code = authenticate_as_test_user(&c, &mut person, &mut Lines::default());
        daemon.finish();
        assert_eq!(code, expected, "{kind:?}");
    }
}

#[test]
fn real_client_conversation_error() {
    let c0 = ctx("sshd");
    let daemon = FakeDaemon::start(vec![(begin(&c0), reply(prompt("s1", vec![], CODE_PROMPT, false)))]);
    let c = ctx_at("sshd", &daemon.path, 5);
    let mut person = ScriptedPrompter::new(vec![Expect::Secret(CODE_PROMPT, Err("EOF"))]);
    let code = authenticate_as_test_user(&c, &mut person, &mut Lines::default());
    daemon.finish();
    assert_eq!(code, PamCode::ConvErr);
}

#[test]
fn real_client_broken_daemons_follow_the_failmode() {
    let c0 = ctx("sshd");
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"{nope");
    let cases = vec![
        ("hangup", Reply::Hangup),
        ("garbage", Reply::Bytes(garbage)),
        ("oversized", Reply::Bytes(u32::MAX.to_be_bytes().to_vec())),
        (
            "other version",
            Reply::Frame(ResponseFrame {
                version: PROTOCOL_VERSION + 1,
                response: decision(Outcome::Verified, vec![]),
            }),
        ),
    ];
    for (name, broken) in cases {
        for (failmode, service, expected) in [
            (FailMode::Secure, "sshd", PamCode::AuthInfoUnavail),
            (FailMode::Safe, "sshd", PamCode::Ignore),
            (FailMode::Safe, "su", PamCode::AuthInfoUnavail),
        ] {
            let broken = match &broken {
                Reply::Hangup => Reply::Hangup,
                Reply::Bytes(b) => Reply::Bytes(b.clone()),
                Reply::Frame(f) => Reply::Frame(f.clone()),
            };
            let mut begin_req = begin(&c0);
            if let Request::AuthBegin { service: s, .. } = &mut begin_req {
                *s = service.to_string();
            }
            let daemon = FakeDaemon::start(vec![(begin_req, broken)]);
            let mut c = ctx_at(service, &daemon.path, 5);
            c.options.failmode = failmode;
            let script =
                if expected == PamCode::Ignore { vec![] } else { vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)] };
            let code = authenticate_as_test_user(&c, &mut ScriptedPrompter::new(script), &mut Lines::default());
            daemon.finish();
            assert_eq!(code, expected, "{name} {failmode:?} {service}");
        }
    }
}

#[test]
fn dead_socket_secure_denies_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    // A path with no socket, and a socket file nobody listens on.
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for path in [&missing, &stale] {
        let c = ctx_at("sshd", path, 1);
        let mut person = ScriptedPrompter::new(vec![Expect::ErrorStarting(
            "Two-factor authentication is unavailable: cannot connect to mfad at",
        )]);
        let mut log = Lines::default();
        assert_eq!(
            authenticate(&c, &mut StackPassword::default(), &mut person, &mut log),
            PamCode::AuthInfoUnavail,
            "{path:?}"
        );
        assert_eq!(log.at(LogLevel::Error).len(), 1, "{}", log.all());
    }
}

#[test]
fn dead_socket_safe_allows_logins_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    for service in ["sshd", "login", "gdm-password"] {
        let mut c = ctx_at(service, &missing, 1);
        c.options.failmode = FailMode::Safe;
        let mut log = Lines::default();
        // Nothing is shown to the person; the warning goes to syslog.
        let code = authenticate(&c, &mut StackPassword::default(), &mut ScriptedPrompter::new(vec![]), &mut log);
        assert_eq!(code, PamCode::Ignore, "{service}");
        let warnings = log.at(LogLevel::Warning);
        assert_eq!(warnings.len(), 1, "{}", log.all());
        assert!(warnings[0].contains("failmode=safe"), "{}", warnings[0]);
        assert!(warnings[0].contains("alice"), "{}", warnings[0]);
    }
}

#[test]
fn dead_socket_safe_still_denies_elevation() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    for service in DEFAULT_ELEVATION_SERVICES {
        let mut c = ctx_at(service, &missing, 1);
        c.options.failmode = FailMode::Safe;
        let mut person = ScriptedPrompter::new(vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)]);
        let code = authenticate(&c, &mut StackPassword::default(), &mut person, &mut Lines::default());
        assert_eq!(code, PamCode::AuthInfoUnavail, "{service}");
    }
}

/// Run `authenticate_as_test_user` on another thread and wait at most `limit` for it:
/// the bound is a channel timeout, so the test reads no clock.
fn authenticate_within(c: Context, script: Vec<Expect>, limit: Duration) -> PamCode {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut person = ScriptedPrompter::new(script);
        let code = authenticate_as_test_user(&c, &mut person, &mut Lines::default());
        let _ = tx.send(code);
    });
    match rx.recv_timeout(limit) {
        Ok(code) => code,
        Err(err) => panic!("authenticate did not return within {limit:?}: {err}"),
    }
}

#[test]
fn a_daemon_that_accepts_but_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfad.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let hung = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // Hold the connection open, read nothing, answer nothing.
        let _ = stop_rx.recv();
        drop(stream);
    });
    let c = ctx_at("sshd", &path, 1);
    let code = authenticate_within(
        c,
        vec![Expect::Error("Two-factor authentication is unavailable: mfad did not answer in time")],
        Duration::from_secs(5),
    );
    assert_eq!(code, PamCode::AuthInfoUnavail);
    drop(stop_tx);
    hung.join().unwrap();
}

#[test]
fn a_daemon_that_never_accepts_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfad.sock");
    // Listening (the connect completes into the backlog) but never accepting.
    let _listener = UnixListener::bind(&path).unwrap();
    let mut c = ctx_at("sshd", &path, 1);
    c.options.failmode = FailMode::Safe;
    let code = authenticate_within(c, vec![], Duration::from_secs(5));
    assert_eq!(code, PamCode::Ignore);
}

#[test]
fn a_daemon_that_hangs_after_a_prompt_is_denied_whatever_the_failmode() {
    for failmode in [FailMode::Secure, FailMode::Safe] {
        let c0 = ctx("sshd");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfad.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let expected_begin = begin(&c0);
        let hung = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let frame: RequestFrame = read_frame(&mut stream).unwrap();
            assert_eq!(frame.request, expected_begin);
            write_frame(&mut stream, &ResponseFrame::new(prompt("s1", vec![], CODE_PROMPT, false))).unwrap();
            let _: RequestFrame = read_frame(&mut stream).unwrap();
            // Never answers the code.
            let _ = stop_rx.recv();
        });
        let mut c = ctx_at("sshd", &path, 1);
        c.options.failmode = failmode;
        let code = authenticate_within(
            c,
            vec![
                Expect::Secret(CODE_PROMPT, Ok("123456")),
                Expect::Error("Two-factor authentication failed: mfad did not answer in time"),
            ],
            Duration::from_secs(5),
        );
        assert_eq!(code, PamCode::AuthErr, "{failmode:?}");
        drop(stop_tx);
        hung.join().unwrap();
    }
}

// ---------------------------------------------------------------- who serves the socket

#[test]
fn only_a_root_served_socket_is_trusted() {
    let socket = Path::new("/run/mfad/mfad.sock");
    assert!(require_root_server(0, socket).is_ok());
    let err = require_root_server(1000, socket).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/run/mfad/mfad.sock"), "{text}");
    assert!(text.contains("uid 1000, not root"), "{text}");
    // An untrusted server is an unreachable daemon: the failmode decides.
    let err = AuthError::from_client(err);
    assert!(err.is_unavailable());
    let result = Err(err);
    assert_eq!(pam_code(&result, &mode(FailMode::Secure), "sshd"), PamCode::AuthInfoUnavail);
    assert_eq!(pam_code(&result, &mode(FailMode::Safe), "sshd"), PamCode::Ignore);
    assert_eq!(pam_code(&result, &mode(FailMode::Safe), "sudo"), PamCode::AuthInfoUnavail);
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A listener in `dir` whose peer credentials (taken at listen()) name a
/// non-root user. Run as root, it is bound on a thread of its own whose
/// effective uid alone is changed to nobody's (the raw syscall, unlike libc's
/// setresuid, affects only the calling thread, which ends right after).
fn listen_as_a_user(dir: &Path) -> (PathBuf, UnixListener) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("user.sock");
    if euid() != 0 {
        return (path.clone(), UnixListener::bind(&path).unwrap());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let listener = {
        let path = path.clone();
        thread::spawn(move || {
            // SAFETY: a raw syscall with integer arguments; u32::MAX
            // (uid_t -1) keeps the real and saved uids.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, u32::MAX, 65534u32, u32::MAX) };
            assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
            UnixListener::bind(&path).unwrap()
        })
        .join()
        .unwrap()
    };
    (path, listener)
}

#[test]
fn the_client_reports_who_serves_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfad.sock");
    let _own = UnixListener::bind(&path).unwrap();
    let client = Client::connect(&path, Duration::from_secs(1)).unwrap();
    assert_eq!(client.server_uid().unwrap(), euid());

    let (user_path, _user) = listen_as_a_user(dir.path());
    let client = Client::connect(&user_path, Duration::from_secs(1)).unwrap();
    assert_ne!(client.server_uid().unwrap(), 0);
}

#[test]
fn authenticate_does_not_trust_a_daemon_run_by_a_user() {
    // A fake daemon that would say Verified, served by a non-root user.
    for (failmode, expected) in [(FailMode::Secure, PamCode::AuthInfoUnavail), (FailMode::Safe, PamCode::Ignore)] {
        let dir = tempfile::tempdir().unwrap();
        let (path, listener) = listen_as_a_user(dir.path());
        let fake = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The module hangs up without sending anything.
            assert!(read_frame::<_, RequestFrame>(&mut stream).is_err());
        });
        let mut c = ctx_at("sshd", &path, 5);
        c.options.failmode = failmode;
        let script = if expected == PamCode::Ignore {
            vec![]
        } else {
            vec![Expect::ErrorStarting("Two-factor authentication is unavailable: cannot connect to mfad at")]
        };
        let mut log = Lines::default();
        let code = authenticate(&c, &mut StackPassword::default(), &mut ScriptedPrompter::new(script), &mut log);
        fake.join().unwrap();
        assert_eq!(code, expected, "{failmode:?}");
        let warnings = log.at(LogLevel::Warning);
        assert!(warnings.iter().any(|w| w.contains("not root")), "{}", log.all());
    }
}

#[test]
fn authenticate_trusts_a_daemon_run_by_root() {
    if euid() != 0 {
        // Only root can serve a socket as root.
        return;
    }
    let c0 = ctx("sshd");
    let daemon = FakeDaemon::start(vec![(begin(&c0), reply(decision(Outcome::Verified, vec![])))]);
    let c = ctx_at("sshd", &daemon.path, 5);
    let code =
        authenticate(&c, &mut StackPassword::default(), &mut ScriptedPrompter::new(vec![]), &mut Lines::default());
    daemon.finish();
    assert_eq!(code, PamCode::Success);
}

#[test]
fn client_implements_transport() {
    fn assert_transport<T: Transport>() {}
    assert_transport::<Client>();
}

#[test]
fn an_item_mfad_would_refuse_is_a_failed_login_in_any_failmode() {
    let long = "x".repeat(2 << 20);
    for (item, login) in [
        ("tty", Login { tty: Some(long.clone()), ..ctx("sshd").login }),
        ("rhost", Login { rhost: Some("10.0.0.1\u{1b}[2J".into()), ..ctx("sshd").login }),
        ("user", Login { user: "a\nb".into(), ..ctx("sshd").login }),
    ] {
        for failmode in [FailMode::Safe, FailMode::Secure] {
            let ctx = Context { options: mode(failmode), login: login.clone(), silent: false };
            // Nothing is sent: an item too big for a frame must not read as
            // an unreachable daemon, which failmode=safe lets through.
            let (code, log) = run_scripted(&ctx, Vec::new(), vec![Expect::Error("Two-factor authentication failed.")]);
            assert_eq!(code, PamCode::AuthErr, "{item} {failmode:?}");
            assert!(log.0.iter().any(|(_, line)| line.contains(item)), "{item}");
        }
    }
}

mod one_field;
