//! Clients that answer one field: forward_pass conversations, and code
//! prompts answered with something that is no code.

use super::*;
use crate::service::one_field::NOT_A_CODE_REASON;

impl Fixture {
    fn begin_forward_pass(&self, user: &str) -> Response {
        self.daemon.handle(
            &ROOT,
            Request::AuthBegin {
                service: "dovecot".into(),
                user: user.into(),
                ruser: None,
                rhost: Some("10.0.0.9".into()),
                tty: None,
                forward_pass: true,
            },
        )
    }

    fn failures(&self, user: &str) -> u32 {
        self.record(user).failures
    }

    fn one_answer_failures(&self, user: &str) -> u32 {
        self.record(user).one_answer_failures
    }
}

/// The session of a forward_pass step that asks for a code in the answer.
fn code_in_answer(response: Response) -> (String, u32, bool) {
    match response {
        Response::Auth(AuthStep::CodeInAnswer { session_id, digits, recovery }) => (session_id, digits, recovery),
        other => panic!("expected a code in the answer, got {other:?}"),
    }
}

fn answer_to(f: &Fixture, session_id: &str, answer: &str) -> Step {
    step(f.daemon.handle(&ROOT, Request::AuthAnswer { session_id: session_id.into(), answer: Code::new(answer) }))
}

#[test]
fn answers_that_are_no_code_are_refused_uncounted_and_audited() {
    let f = fixture(|_| {});
    f.enroll("ann");
    f.audit_lines();
    let first = f.begin("ann", "10.0.0.1");
    // A password, too few digits, a password that is all digits but too
    // long: none is a code, none counts; the tries still end.
    let second = f.answer(&first, "hunter2");
    assert!(prompt_text(&second).2.contains("not a verification code"), "{second:?}");
    let third = f.answer(&second, "12345");
    let (outcome, shown) = done(&f.answer(&third, "12345678901"));
    assert_eq!(outcome, Outcome::MaxTries, "{shown}");
    assert_eq!(f.failures("ann"), 0);
    let lines = f.audit_lines();
    let refused: Vec<_> = lines.iter().filter(|l| l.contains("outcome=not_a_code")).collect();
    assert_eq!(refused.len(), 3, "{lines:#?}");
    assert!(refused[0].contains(NOT_A_CODE_REASON), "{}", refused[0]);
    // The module's word that the answer was the stack's password: the same.
    let Step::Prompt { id, .. } = f.begin("ann", "10.0.0.1") else { panic!("no prompt") };
    let again = step(f.daemon.handle(&ROOT, Request::AuthNotACode { session_id: id }));
    assert!(prompt_text(&again).2.contains("not a verification code"));
    assert_eq!(f.failures("ann"), 0);
}

#[test]
fn code_shaped_and_recovery_shaped_wrong_answers_still_count() {
    let f = fixture(|_| {});
    let secret = f.enroll("ann");
    let first = f.begin("ann", "10.0.0.1");
    let second = f.answer(&first, wrong_code_for(&secret, NOW));
    assert_eq!(f.failures("ann"), 1);
    // Spaces in a code are ignored: still a code.
    let third = f.answer(&second, "000 001");
    assert_eq!(f.failures("ann"), 2);
    // The shape of one of our recovery codes, and of a scratch code.
    f.answer(&third, "abcde-fghjk");
    assert_eq!(f.failures("ann"), 3);
    let first = f.begin("ann", "10.0.0.1");
    f.answer(&first, "12345678");
    assert_eq!(f.failures("ann"), 4);
    assert!(
        recovery::is_shaped("ABCDE FGHJK") && !recovery::is_shaped("hunter2") && !recovery::is_shaped("abcdefghi0")
    );
}

#[test]
fn forward_pass_asks_for_the_code_in_the_answer_once() {
    let f = fixture(|_| {});
    let secret = f.enroll("ann");
    let (id, digits, recovery) = code_in_answer(f.begin_forward_pass("ann"));
    assert_eq!((digits, recovery), (6, true));
    f.clock.set(NOW + 30);
    assert_eq!(done(&answer_to(&f, &id, &totp_code(&secret, NOW + 30))).0, Outcome::Verified);
    // Nothing at the end of the answer (the module sends an empty code):
    // a wrong code, counted (in the one-answer count), and no second try.
    let (id, ..) = code_in_answer(f.begin_forward_pass("ann"));
    assert_eq!(done(&answer_to(&f, &id, "")).0, Outcome::Failed);
    assert_eq!(f.one_answer_failures("ann"), 1);
    let (id, ..) = code_in_answer(f.begin_forward_pass("ann"));
    assert_eq!(done(&answer_to(&f, &id, wrong_code_for(&secret, NOW + 30))).0, Outcome::Failed);
    assert_eq!(f.one_answer_failures("ann"), 2);
    let (id, ..) = code_in_answer(f.begin_forward_pass("ann"));
    assert_eq!(done(&step(f.daemon.handle(&ROOT, Request::AuthNotACode { session_id: id }))).0, Outcome::Failed);
    assert_eq!(f.one_answer_failures("ann"), 2, "no content, nothing to count");
    assert_eq!(f.failures("ann"), 0, "the account's own count is untouched");
}

/// The code of a one-answer service is checked before the password: anyone
/// who knows a user name can send wrong ones. They lock the one-answer
/// services only, never SSH or sudo; a right code there still works.
#[test]
fn one_answer_failures_lock_only_the_one_answer_services() {
    let f = fixture(|_| {});
    let secret = f.enroll("ann");
    f.clock.set(NOW + 30);
    for _ in 0..LockoutConfig::default().max_failures {
        let (id, ..) = code_in_answer(f.begin_forward_pass("ann"));
        assert_eq!(done(&answer_to(&f, &id, "x000000")).0, Outcome::Failed);
    }
    let record = f.record("ann");
    assert!(record.one_answer_locked_until.is_some() && record.locked_until.is_none());
    assert!(!record.failed_since_success, "anyone's wrong code must not make the adaptive level ask");
    // Locked there, even for the right code.
    let (id, ..) = code_in_answer(f.begin_forward_pass("ann"));
    let (outcome, shown) = done(&answer_to(&f, &id, &totp_code(&secret, NOW + 30)));
    assert_ne!(outcome, Outcome::Verified, "{shown}");
    // SSH asks and accepts the code as ever.
    let prompt = f.begin("ann", "10.0.0.7");
    assert_eq!(done(&f.answer(&prompt, &totp_code(&secret, NOW + 30))).0, Outcome::Verified);
}

#[test]
fn forward_pass_never_offers_inline_set_up() {
    let f = fixture(|_| {});
    let (outcome, shown) = done(&step(f.begin_forward_pass("force_bob")));
    assert_eq!(outcome, Outcome::Denied);
    assert!(shown.contains("mfactl setup"), "{shown}");
    assert_eq!(done(&step(f.begin_forward_pass("require_bob"))).0, Outcome::Denied);
    assert_eq!(done(&step(f.begin_forward_pass("encourage_bob"))).0, Outcome::NotRequired);
    assert_eq!(done(&step(f.begin_forward_pass("nobody"))).0, Outcome::NotRequired);
    let lines = f.audit_lines().join("\n");
    assert!(lines.contains("forward_pass): enroll with mfactl setup over SSH"), "{lines}");
    assert!(!f.record("force_bob").is_enrolled() && f.record("force_bob").pending.is_none());
}

/// A source trusted by the adaptive level lets a one-answer client in
/// without a code only to have the password with the code at its end
/// refused by the password module: one-answer services always ask, and
/// their codes (checked before the password) make no source trusted. A
/// service with neither a remote host nor a terminal has no source to
/// trust either.
#[test]
fn one_answer_services_and_sourceless_logins_are_never_trusted() {
    let f = fixture(|_| {});
    let secret = f.enroll("ann");
    f.daemon.handle(&ROOT, Request::SetLevel { user: Some("ann".into()), level: ChallengeLevel::Adaptive, code: None });
    f.clock.set(NOW + 30);
    let prompt = f.begin("ann", "10.0.0.9");
    assert_eq!(done(&f.answer(&prompt, &totp_code(&secret, NOW + 30))).0, Outcome::Verified);
    assert_eq!(done(&f.begin("ann", "10.0.0.9")).0, Outcome::NotRequired, "SSH from there is trusted now");
    let (id, ..) = code_in_answer(f.begin_forward_pass("ann"));
    f.clock.set(NOW + 60);
    assert_eq!(done(&answer_to(&f, &id, &totp_code(&secret, NOW + 60))).0, Outcome::Verified);
    let trusted: Vec<_> = f.record("ann").trusted_sources.iter().map(|t| t.source.clone()).collect();
    assert_eq!(trusted, vec!["10.0.0.9".to_string()]);
    // No rhost, no tty: asked every time, and nothing is trusted.
    for at in [NOW + 90, NOW + 120] {
        f.clock.set(at);
        let prompt = step(f.begin_as(&ROOT, "ann", None, None));
        assert_eq!(done(&f.answer(&prompt, &totp_code(&secret, at))).0, Outcome::Verified);
    }
    assert_eq!(f.record("ann").trusted_sources.len(), 1);
}
