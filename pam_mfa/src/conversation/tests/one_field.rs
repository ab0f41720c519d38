//! One-field clients: forward_pass conversations and a two-prompt code
//! prompt answered with the stack's password. Each scripted daemon checks
//! the exact requests: the password is never in one.

use super::*;
use crate::one_field::{Secret, StackPassword};
use crate::options::{DEFAULT_FORWARD_PASS_PROMPT, FirstPass};

fn forward(first_pass: FirstPass) -> Context {
    let mut c = ctx("dovecot");
    c.options.forward_pass = true;
    c.options.first_pass = first_pass;
    c
}

fn code_in_answer(session: &str, digits: u32, recovery: bool) -> Response {
    Response::Auth(AuthStep::CodeInAnswer { session_id: session.into(), digits, recovery })
}

fn stack_with(password: Option<&str>) -> StackPassword {
    StackPassword::found(password.map(|p| Secret::new(p.as_bytes().to_vec())))
}

/// Run a conversation in a stack holding `found`; the PAM code and what
/// would be handed on.
fn run_in(
    c: &Context,
    found: Option<&str>,
    daemon: Vec<(Request, Result<Response, ClientError>)>,
    person: Vec<Expect>,
) -> (PamCode, Option<String>) {
    let mut stack = stack_with(found);
    let mut prompter = ScriptedPrompter::new(person);
    let code =
        authenticate_in(c, &mut stack, || Ok(ScriptedTransport::new(daemon)), &mut prompter, &mut Lines::default());
    (code, stack.hand_on.map(|p| String::from_utf8(p.as_bytes().to_vec()).unwrap()))
}

#[test]
fn forward_pass_sends_only_the_code_and_hands_on_the_password() {
    let c = forward(FirstPass::Ask);
    assert!(matches!(begin(&c), Request::AuthBegin { forward_pass: true, .. }));
    let daemon = vec![
        (begin(&c), Ok(code_in_answer("s1", 6, true))),
        (answer("s1", "123456"), Ok(decision(Outcome::Verified, vec![]))),
    ];
    let person = vec![Expect::Secret(DEFAULT_FORWARD_PASS_PROMPT, Ok("pw 2024123456"))];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::Success, Some("pw 2024".into())));
    // An 8-digit device, a recovery code at the end.
    let daemon = vec![
        (begin(&c), Ok(code_in_answer("s2", 8, true))),
        (answer("s2", "12345678"), Ok(decision(Outcome::Verified, vec![]))),
    ];
    let person = vec![Expect::Secret(DEFAULT_FORWARD_PASS_PROMPT, Ok("hunter212345678"))];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::Success, Some("hunter2".into())));
    let daemon = vec![
        (begin(&c), Ok(code_in_answer("s3", 6, true))),
        (answer("s3", "abcde-fghjk"), Ok(decision(Outcome::Verified, vec![]))),
    ];
    let person = vec![Expect::Secret(DEFAULT_FORWARD_PASS_PROMPT, Ok("hunter2abcde-fghjk"))];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::Success, Some("hunter2".into())));
}

#[test]
fn forward_pass_hands_on_nothing_unless_verified() {
    let c = forward(FirstPass::Ask);
    let daemon = vec![
        (begin(&c), Ok(code_in_answer("s1", 6, true))),
        (answer("s1", "000000"), Ok(decision(Outcome::Failed, vec![Message::error("Wrong code.")]))),
    ];
    let person = vec![Expect::Secret(DEFAULT_FORWARD_PASS_PROMPT, Ok("hunter2000000")), Expect::Error("Wrong code.")];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::AuthErr, None));
    // Too short to hold a code: an empty code, which mfad counts as wrong.
    let daemon =
        vec![(begin(&c), Ok(code_in_answer("s2", 6, true))), (answer("s2", ""), Ok(decision(Outcome::Failed, vec![])))];
    let person = vec![Expect::Secret(DEFAULT_FORWARD_PASS_PROMPT, Ok("12345"))];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::AuthErr, None));
}

#[test]
fn forward_pass_takes_the_item_an_earlier_module_set() {
    let daemon = |c: &Context| {
        vec![
            (begin(c), Ok(code_in_answer("s1", 6, false))),
            (answer("s1", "654321"), Ok(decision(Outcome::Verified, vec![]))),
        ]
    };
    for first_pass in [FirstPass::Try, FirstPass::Use] {
        let c = forward(first_pass);
        let got = run_in(&c, Some("hunter2654321"), daemon(&c), vec![]);
        assert_eq!(got, (PamCode::Success, Some("hunter2".into())), "{first_pass:?}");
    }
    // try_first_pass asks when nothing is set; use_first_pass fails.
    let mut c = forward(FirstPass::Try);
    c.options.prompt = "Mail password+code: ".into();
    let person = vec![Expect::Secret("Mail password+code: ", Ok("hunter2654321"))];
    assert_eq!(run_in(&c, None, daemon(&c), person), (PamCode::Success, Some("hunter2".into())));
    let c = forward(FirstPass::Use);
    let daemon = vec![(begin(&c), Ok(code_in_answer("s1", 6, false)))];
    assert_eq!(run_in(&c, None, daemon, vec![]), (PamCode::ConvErr, None));
}

#[test]
fn forward_pass_no_code_needed_asks_nothing() {
    let c = forward(FirstPass::Ask);
    let daemon = vec![(begin(&c), Ok(decision(Outcome::NotRequired, vec![])))];
    assert_eq!(run_in(&c, None, daemon, vec![]), (PamCode::Ignore, None));
}

#[test]
fn forward_pass_never_relays_a_prompt_of_mfad() {
    // A one-field client would answer it with the password.
    let mut c = forward(FirstPass::Ask);
    let daemon = vec![(begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false)))];
    let person = vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::AuthInfoUnavail, None));
    // And a code-in-answer step is refused without forward_pass.
    c.options.forward_pass = false;
    let daemon = vec![(begin(&c), Ok(code_in_answer("s1", 6, true)))];
    let person = vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)];
    assert_eq!(run_in(&c, None, daemon, person), (PamCode::AuthInfoUnavail, None));
}

#[test]
fn forward_pass_failmode_safe_asks_nothing_and_hands_on_nothing() {
    // mfad out of reach: no prompt, PAM_IGNORE; the next module asks for
    // the password itself, and only the exact password passes there.
    let mut c = forward(FirstPass::Try);
    c.options.failmode = FailMode::Safe;
    let mut stack = stack_with(Some("hunter2123456"));
    let unreachable = || -> Result<ScriptedTransport, ClientError> {
        Err(ClientError::Connect { path: "/nonexistent".into(), source: std::io::ErrorKind::NotFound.into() })
    };
    let code = authenticate_in(&c, &mut stack, unreachable, &mut ScriptedPrompter::new(vec![]), &mut Lines::default());
    assert_eq!(code, PamCode::Ignore);
    assert!(stack.hand_on.is_none());
    c.options.failmode = FailMode::Secure;
    let person = vec![Expect::ErrorStarting(UNAVAILABLE_PREFIX)];
    let code = authenticate_in(&c, &mut stack, unreachable, &mut ScriptedPrompter::new(person), &mut Lines::default());
    assert_eq!(code, PamCode::AuthInfoUnavail);
}

#[test]
fn a_code_prompt_answered_with_the_stacks_password_is_not_sent() {
    let c = ctx("dovecot");
    let not_a_code = Request::AuthNotACode { session_id: "s1".into() };
    let daemon = vec![
        (begin(&c), Ok(prompt("s1", vec![], CODE_PROMPT, false))),
        (not_a_code, Ok(decision(Outcome::MaxTries, vec![]))),
    ];
    let person = vec![Expect::Secret(CODE_PROMPT, Ok("hunter2"))];
    assert_eq!(run_in(&c, Some("hunter2"), daemon, person).0, PamCode::MaxTries);
    // Anything else is sent as typed, and a question (echo on) always is.
    let daemon = vec![
        (begin(&c), Ok(prompt("s1", vec![], "Question? ", true))),
        (answer("s1", "hunter2"), Ok(prompt("s2", vec![], CODE_PROMPT, false))),
        (answer("s2", "hunter3"), Ok(decision(Outcome::Failed, vec![]))),
    ];
    let person = vec![Expect::Visible("Question? ", Ok("hunter2")), Expect::Secret(CODE_PROMPT, Ok("hunter3"))];
    assert_eq!(run_in(&c, Some("hunter2"), daemon, person).0, PamCode::AuthErr);
}
