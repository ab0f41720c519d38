use std::os::unix::net::UnixDatagram;

use mfa_shared::config::{LockoutConfig, RoleConfig, RolePolicy};
use mfa_shared::otp::{self, OtpParams};
use mfa_shared::protocol::{Algorithm, AuthStep, ChallengeLevel, Code, ImportUser, MessageStyle, OtpType, Outcome};

use super::*;
use crate::clock::ManualClock;
use crate::enrollment::{BARCODE_QUESTION, SETUP_CODE_PROMPT, TYPE_QUESTION};
use crate::nss::Account;
use crate::recovery;
use crate::store::SqliteStore;

const NOW: u64 = 1_700_000_000;

struct Groups;

impl Directory for Groups {
    /// Users are in the group named after the part before the first '_'.
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        if user.starts_with("nss-down") {
            return Err("LDAP server unreachable".into());
        }
        Ok(user.split('_').next().map(|g| vec![g.to_string()]).unwrap_or_default())
    }

    /// A case-insensitive directory that knows `ivy` (uid 4242), `root` and
    /// its alias `toor` (uid 0), and `carol` with the alias `carol2` (uid
    /// 5000, as `useradd -o` adds it); other names are unknown (taken
    /// literally).
    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        let lower = name.to_ascii_lowercase();
        let uid = match lower.as_str() {
            "ivy" => 4242,
            "root" | "toor" => 0,
            "carol" | "carol2" => 5000,
            "nss-broken" => return Err("NSS unavailable".into()),
            _ => return Ok(None),
        };
        Ok(Some(Account { name: lower, uid }))
    }

    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
        Ok(match uid {
            4242 => Some("ivy".into()),
            0 => Some("root".into()),
            5000 => Some("carol".into()),
            _ => None,
        })
    }
}

struct Fixture {
    daemon: Daemon,
    clock: Arc<ManualClock>,
    audit: UnixDatagram,
    _dir: tempfile::TempDir,
}

fn fixture(edit: impl FnOnce(&mut Config)) -> Fixture {
    fixture_with(Arc::new(Groups), edit)
}

fn fixture_with(directory: Arc<dyn Directory>, edit: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("log");
    let audit = UnixDatagram::bind(&audit_path).unwrap();
    audit.set_nonblocking(true).unwrap();
    let mut config = Config {
        enabled: true,
        roles: ["encourage", "force", "require"]
            .iter()
            .map(|p| RoleConfig { group: p.to_string(), policy: policy_named(p) })
            .collect(),
        ..Config::default()
    };
    edit(&mut config);
    let clock = Arc::new(ManualClock::new(NOW));
    let daemon = Daemon::new(
        config,
        None,
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Arc::new(Vault::from_key(&[7u8; 32])),
        clock.clone(),
        directory,
        Audit::new(audit_path),
    );
    Fixture { daemon, clock, audit, _dir: dir }
}

fn policy_named(name: &str) -> RolePolicy {
    match name {
        "encourage" => RolePolicy::Encourage,
        "force" => RolePolicy::Force,
        _ => RolePolicy::Require,
    }
}

const ROOT: Peer = Peer { uid: 0, name: None };

/// A step as the module sees it.
#[derive(Debug)]
enum Step {
    Prompt { id: String, text: String, echo: bool, shown: String },
    Done { outcome: Outcome, shown: String },
}

fn shown(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}\n", if m.style == MessageStyle::Error { "error" } else { "info" }, m.text))
        .collect()
}

fn step(response: Response) -> Step {
    match response {
        Response::Auth(AuthStep::Prompt { session_id, messages, prompt, echo }) => {
            Step::Prompt { id: session_id, text: prompt, echo, shown: shown(&messages) }
        }
        Response::Auth(AuthStep::Decision { outcome, messages }) => Step::Done { outcome, shown: shown(&messages) },
        other => panic!("not an auth step: {other:?}"),
    }
}

impl Fixture {
    fn begin(&self, user: &str, rhost: &str) -> Step {
        step(self.daemon.handle(
            &ROOT,
            Request::AuthBegin {
                service: "sshd".into(),
                user: user.into(),
                ruser: None,
                rhost: Some(rhost.into()),
                tty: None,
                forward_pass: false,
            },
        ))
    }

    fn answer(&self, prompt: &Step, answer: &str) -> Step {
        let Step::Prompt { id, .. } = prompt else { panic!("no open prompt: {prompt:?}") };
        step(self.daemon.handle(&ROOT, Request::AuthAnswer { session_id: id.clone(), answer: Code::new(answer) }))
    }

    fn record(&self, user: &str) -> UserRecord {
        self.daemon.store.get_user(user).unwrap().unwrap_or_else(|| UserRecord::new(user))
    }

    fn audit_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.audit.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        lines
    }
}

fn prompt_text(step: &Step) -> (&str, bool, &str) {
    match step {
        Step::Prompt { text, echo, shown, .. } => (text, *echo, shown),
        Step::Done { .. } => panic!("expected a prompt, got {step:?}"),
    }
}

fn done(step: &Step) -> (Outcome, String) {
    match step {
        Step::Done { outcome, shown } => (*outcome, shown.clone()),
        Step::Prompt { .. } => panic!("expected a decision, got {step:?}"),
    }
}

/// The secret in an otpauth URI shown in a message.
fn secret_from_uri(shown: &str) -> Vec<u8> {
    let start = shown.find("secret=").unwrap() + "secret=".len();
    let b32: String = shown[start..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    otp::base32_decode(&b32).unwrap()
}

fn totp_code(secret: &[u8], now: u64) -> String {
    let params = OtpParams { otp_type: OtpType::Totp, algorithm: Algorithm::Sha1, digits: 6, period: 30 };
    otp::totp(secret, now, &params)
}

#[test]
fn encourage_can_be_skipped_and_returns_next_time() {
    let f = fixture(|_| {});
    for _ in 0..2 {
        let first = f.begin("encourage_ann", "10.0.0.1");
        let (text, echo, shown) = prompt_text(&first);
        assert_eq!(text, BARCODE_QUESTION);
        assert!(echo, "questions are shown as typed");
        assert!(shown.contains("Press Enter"), "{shown}");
        let (outcome, shown) = done(&f.answer(&first, ""));
        assert_eq!(outcome, Outcome::NotRequired);
        assert!(shown.contains("offered again"), "{shown}");
    }
    assert!(!f.record("encourage_ann").is_enrolled());
    let lines = f.audit_lines().join("\n");
    assert_eq!(lines.matches("enrollment offered (role policy encourage)").count(), 2, "{lines}");
    assert_eq!(lines.matches("reason=\"enrollment skipped\"").count(), 2, "{lines}");
}

#[test]
fn force_cannot_be_skipped() {
    let f = fixture(|c| c.max_tries = 2);
    let first = f.begin("force_bob", "10.0.0.1");
    assert!(prompt_text(&first).2.contains("role policy force"));
    let again = f.answer(&first, "");
    let (text, _, shown) = prompt_text(&again);
    assert_eq!(text, BARCODE_QUESTION);
    assert!(shown.contains("error: Set-up is required"), "{shown}");
    let (outcome, shown) = done(&f.answer(&again, "maybe"));
    assert_eq!(outcome, Outcome::Denied);
    assert!(shown.contains("must be set up"), "{shown}");
    assert!(!f.record("force_bob").is_enrolled());
    assert!(f.audit_lines().join("\n").contains("enrollment not completed"));
}

#[test]
fn force_with_barcode_and_time_based_codes() {
    let f = fixture(|_| {});
    let first = f.begin("force_cy", "10.0.0.7");
    let kind = f.answer(&first, "y");
    let (text, echo, _) = prompt_text(&kind);
    assert_eq!((text, echo), (TYPE_QUESTION, true));
    let code_prompt = f.answer(&kind, "");
    let (text, echo, shown) = prompt_text(&code_prompt);
    assert_eq!((text, echo), (SETUP_CODE_PROMPT, false), "the code is asked with echo off");
    assert!(shown.contains("otpauth://totp/"), "{shown}");
    assert!(shown.contains('█'), "a QR code: {shown}");
    assert!(f.record("force_cy").pending.is_some());
    let secret = secret_from_uri(shown);
    let right = totp_code(&secret, NOW);
    let wrong = if right == "000000" { "111111" } else { "000000" };
    let retry = f.answer(&code_prompt, wrong);
    let (text, _, shown) = prompt_text(&retry);
    assert_eq!(text, SETUP_CODE_PROMPT);
    assert!(shown.contains("error: wrong code"), "{shown}");
    let (outcome, shown) = done(&f.answer(&retry, &right));
    assert_eq!(outcome, Outcome::Verified);
    assert!(shown.contains("Recovery codes"), "{shown}");
    let record = f.record("force_cy");
    assert!(record.is_enrolled() && record.pending.is_none());
    assert_eq!(record.recovery_hashes.len(), recovery::COUNT);
    for hash in &record.recovery_hashes {
        assert!(!shown.contains(hash.as_str()));
    }
    // The source of the enrollment code is trusted by the adaptive level.
    f.clock.advance(60);
    let (outcome, _) = done(&f.begin("force_cy", "10.0.0.7"));
    assert_eq!(outcome, Outcome::NotRequired);
    let next = f.begin("force_cy", "10.0.0.8");
    assert_eq!(prompt_text(&next).0, "Verification code: ");
    let lines = f.audit_lines().join("\n");
    assert!(lines.contains("enrollment completed (role policy force)"), "{lines}");
    assert!(lines.contains("reason=\"trusted source\""), "{lines}");
    let b32 = otp::base32_encode(&secret);
    assert!(!lines.contains(&b32) && !lines.contains(&right), "no secret or code in the audit trail");
}

#[test]
fn require_by_hand_with_a_counter_based_device() {
    let f = fixture(|_| {});
    let first = f.begin("require_dee", "10.0.0.1");
    let kind = f.answer(&first, "n");
    let code_prompt = f.answer(&kind, "c");
    let shown = prompt_text(&code_prompt).2.to_string();
    assert!(shown.contains("counter-based (HOTP)") && shown.contains("starting counter"), "{shown}");
    assert!(!shown.contains("otpauth://"), "{shown}");
    let grouped = shown.lines().find(|l| l.starts_with("    ")).unwrap().trim();
    assert!(grouped.split(' ').all(|g| g.len() <= 4), "{grouped}");
    let secret = otp::base32_decode(&grouped.replace(' ', "")).unwrap();
    let (outcome, _) = done(&f.answer(&code_prompt, &otp::hotp(&secret, 0, Algorithm::Sha1, 6)));
    assert_eq!(outcome, Outcome::Verified);
    // Enrolled under require: a code at every login, even from that source.
    f.daemon.handle(
        &ROOT,
        Request::SetLevel { user: Some("require_dee".into()), level: ChallengeLevel::Superuser, code: None },
    );
    let ask = f.begin("require_dee", "10.0.0.1");
    assert_eq!(prompt_text(&ask).0, "Verification code: ");
    let (outcome, _) = done(&f.answer(&ask, &otp::hotp(&secret, 1, Algorithm::Sha1, 6)));
    assert_eq!(outcome, Outcome::Verified);
}

#[test]
fn wrong_codes_leave_the_set_up_pending() {
    let f = fixture(|c| c.max_tries = 2);
    let first = f.begin("force_eve", "10.0.0.1");
    let kind = f.answer(&first, "n");
    let mut code_prompt = f.answer(&kind, "t");
    code_prompt = f.answer(&code_prompt, "12");
    assert!(prompt_text(&code_prompt).2.contains("error:"));
    let (outcome, shown) = done(&f.answer(&code_prompt, "999999x"));
    assert_eq!(outcome, Outcome::Failed);
    assert!(shown.contains("offered again"), "{shown}");
    let record = f.record("force_eve");
    assert!(!record.is_enrolled() && record.pending.is_some());
    assert_eq!(record.failures, 2, "every code check counts, set-up codes too");
    // The next login offers it again.
    assert_eq!(prompt_text(&f.begin("force_eve", "10.0.0.1")).0, BARCODE_QUESTION);
}

#[test]
fn bad_answers_are_asked_again() {
    let f = fixture(|_| {});
    let first = f.begin("encourage_fay", "10.0.0.1");
    let again = f.answer(&first, "perhaps");
    let (text, _, shown) = prompt_text(&again);
    assert_eq!(text, BARCODE_QUESTION);
    assert!(shown.contains("Please answer y or n"), "{shown}");
    let kind = f.answer(&again, "YES");
    let again = f.answer(&kind, "x");
    assert_eq!(prompt_text(&again).0, TYPE_QUESTION);
    assert_eq!(prompt_text(&f.answer(&again, "counter")).0, SETUP_CODE_PROMPT);
    assert_eq!(f.record("encourage_fay").pending.as_ref().map(|d| d.otp_type), Some(OtpType::Hotp));
}

#[test]
fn only_the_caller_that_began_may_answer_and_no_role_means_no_offer() {
    let f = fixture(|_| {});
    let first = f.begin("force_gus", "10.0.0.1");
    let Step::Prompt { id, .. } = &first else { panic!() };
    let stranger = Peer { uid: 4242, name: Some("force_gus".into()) };
    let reply = f.daemon.handle(&stranger, Request::AuthAnswer { session_id: id.clone(), answer: Code::new("y") });
    assert!(matches!(reply, Response::Error { kind: ErrorKind::NotFound, .. }), "{reply:?}");
    // Not-a-role user: no offer at all.
    assert_eq!(done(&f.begin("plain_hal", "10.0.0.1")).0, Outcome::NotRequired);
}

#[test]
fn a_user_may_begin_a_login_only_as_themselves() {
    let f = fixture(|_| {});
    let user = Peer { uid: 4242, name: Some("ivy".into()) };
    let begin = |user_field: &str, ruser: Option<&str>| {
        f.daemon.handle(
            &user,
            Request::AuthBegin {
                service: "sudo".into(),
                user: user_field.into(),
                ruser: ruser.map(String::from),
                rhost: None,
                tty: None,
                forward_pass: false,
            },
        )
    };
    let denied = |r: &Response| matches!(r, Response::Error { kind: ErrorKind::PermissionDenied, .. });
    assert!(denied(&begin("root", None)), "another PAM_USER");
    assert!(denied(&begin("ivy", Some("victim"))), "another PAM_RUSER would spend the victim's tries");
    assert!(!denied(&begin("ivy", Some("ivy"))));
    assert!(!denied(&begin("ivy", None)));
}

#[test]
fn unreadable_group_membership_fails_closed() {
    let f = fixture(|_| {});
    let (outcome, shown) = done(&f.begin("nss-down_user", "10.0.0.1"));
    assert_eq!(outcome, Outcome::Denied);
    assert!(shown.contains("group membership"), "{shown}");
    assert!(f.audit_lines().iter().any(|l| l.contains("group membership unavailable")));
}

#[test]
fn mfa_disabled_judges_no_name() {
    let f = fixture(|c| c.enabled = false);
    assert_eq!(done(&f.begin("DOMAIN\\john smith", "10.0.0.1")).0, Outcome::NotRequired);
    assert_eq!(done(&f.begin("bad/name", "10.0.0.1")).0, Outcome::NotRequired);
}

#[test]
fn revoking_approval_during_the_prompt_refuses_the_code() {
    let f = fixture(|c| c.elevation.services = vec!["sudo".into()]);
    let secret = {
        let Response::SetupStarted { setup } = f.daemon.handle(
            &ROOT,
            Request::SetupBegin {
                user: Some("ann".into()),
                otp_type: Some(OtpType::Hotp),
                level: None,
                current_code: None,
            },
        ) else {
            panic!("no setup")
        };
        otp::base32_decode(&setup.secret).unwrap()
    };
    let code = |c| Code::new(otp::hotp(&secret, c, mfa_shared::protocol::Algorithm::Sha1, 6));
    let ok = |r: Response| !matches!(r, Response::Error { .. });
    assert!(ok(f.daemon.handle(&ROOT, Request::SetupConfirm { user: Some("ann".into()), code: code(0) })));
    assert!(ok(f.daemon.handle(&ROOT, Request::Authorize { user: "ann".into(), code: code(1) })));
    let sudo = |f: &Fixture| {
        step(f.daemon.handle(
            &ROOT,
            Request::AuthBegin {
                service: "sudo".into(),
                user: "ann".into(),
                ruser: None,
                rhost: None,
                tty: None,
                forward_pass: false,
            },
        ))
    };
    let prompt = sudo(&f);
    prompt_text(&prompt);
    assert!(ok(f.daemon.handle(&ROOT, Request::Revoke { user: "ann".into() })));
    let Step::Prompt { id, .. } = &prompt else { unreachable!() };
    let answered = step(f.daemon.handle(&ROOT, Request::AuthAnswer { session_id: id.clone(), answer: code(2) }));
    assert_eq!(done(&answered).0, Outcome::Denied);
    // The code was not spent: after a new approval it still works.
    assert!(ok(f.daemon.handle(&ROOT, Request::Authorize { user: "ann".into(), code: code(2) })));
}

#[test]
fn a_host_name_is_never_a_trusted_source() {
    let f = fixture(|_| {});
    let secret = {
        let Response::SetupStarted { setup } = f.daemon.handle(
            &ROOT,
            Request::SetupBegin {
                user: Some("bea".into()),
                otp_type: Some(OtpType::Hotp),
                level: None,
                current_code: None,
            },
        ) else {
            panic!("no setup")
        };
        otp::base32_decode(&setup.secret).unwrap()
    };
    let code = |c| otp::hotp(&secret, c, mfa_shared::protocol::Algorithm::Sha1, 6);
    f.daemon.handle(&ROOT, Request::SetupConfirm { user: Some("bea".into()), code: Code::new(code(0)) });
    let first = f.begin("bea", "trusted.example.com");
    assert_eq!(done(&f.answer(&first, &code(1))).0, Outcome::Verified);
    prompt_text(&f.begin("bea", "trusted.example.com"));
    // An IP literal is trusted after a success, in either IPv4 spelling.
    let ip = f.begin("bea", "::ffff:10.1.2.3");
    assert_eq!(done(&f.answer(&ip, &code(2))).0, Outcome::Verified);
    assert_eq!(done(&f.begin("bea", "10.1.2.3")).0, Outcome::NotRequired);
}

// ---- identity, claims and every code check (SPEC 14) ----------------------

impl Fixture {
    /// Start a set-up for `user` as root; returns the new device's secret.
    fn start_setup(&self, user: &str) -> Vec<u8> {
        let request = Request::SetupBegin {
            user: Some(user.into()),
            otp_type: Some(OtpType::Totp),
            level: Some(ChallengeLevel::Always),
            current_code: None,
        };
        match self.daemon.handle(&ROOT, request) {
            Response::SetupStarted { setup } => otp::base32_decode(&setup.secret).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn confirm(&self, peer: &Peer, user: &str, code: &str) -> Response {
        self.daemon.handle(peer, Request::SetupConfirm { user: Some(user.into()), code: Code::new(code) })
    }

    /// An enrolled TOTP account (level always), set up as root.
    fn enroll(&self, user: &str) -> Vec<u8> {
        let secret = self.start_setup(user);
        let reply = self.confirm(&ROOT, user, &totp_code(&secret, NOW));
        assert!(matches!(reply, Response::SetupCompleted { .. }), "{reply:?}");
        secret
    }

    /// An imported TOTP account at level always.
    fn import_always(&self, user: &str) {
        let import = ImportUser {
            user: user.into(),
            otp_type: OtpType::Totp,
            secret: Code::new("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
            counter: 0,
            digits: None,
            period: None,
            algorithm: None,
            level: Some(ChallengeLevel::Always),
            recovery_codes: Vec::new(),
        };
        let reply = self.daemon.handle(&ROOT, Request::ImportUsers { users: vec![import], replace: false });
        assert!(matches!(reply, Response::Imported { imported: 1, .. }), "{reply:?}");
    }

    fn begin_as(&self, peer: &Peer, user: &str, rhost: Option<&str>, tty: Option<&str>) -> Response {
        self.daemon.handle(
            peer,
            Request::AuthBegin {
                service: "sshd".into(),
                user: user.into(),
                ruser: None,
                rhost: rhost.map(String::from),
                tty: tty.map(String::from),
                forward_pass: false,
            },
        )
    }
}

fn wrong_code_for(secret: &[u8], now: u64) -> &'static str {
    if totp_code(secret, now) == "000000" { "111111" } else { "000000" }
}

#[test]
fn every_spelling_of_an_account_reaches_its_record() {
    let f = fixture(|_| {});
    let secret = f.enroll("ivy");
    f.clock.set(NOW + 30);
    // A case variant from a case-insensitive directory is the same account.
    let ask = f.begin("IVY", "10.0.0.1");
    assert_eq!(prompt_text(&ask).0, "Verification code: ");
    assert_eq!(done(&f.answer(&ask, &totp_code(&secret, NOW + 30))).0, Outcome::Verified);
    let lines = f.audit_lines().join("\n");
    assert!(lines.contains("user=ivy service=sshd rhost=10.0.0.1 outcome=success"), "{lines}");
    assert!(lines.contains("given=IVY"), "the audit line shows both names: {lines}");
}

#[test]
fn a_second_name_sharing_a_uid_gets_the_enrolled_record() {
    let f = fixture(|_| {});
    // `carol` is enrolled; `carol2` was added later with her uid.
    f.import_always("carol");
    for alias in ["carol2", "Carol"] {
        let ask = f.begin(alias, "10.0.0.1");
        assert_eq!(prompt_text(&ask).0, "Verification code: ", "{alias} must be asked carol's code");
    }
    // A name NSS does not know is taken literally: no record, no role, no code.
    assert_eq!(done(&f.begin("virtual-user", "10.0.0.1")).0, Outcome::NotRequired);
    // Administration finds the account under any of its names.
    let shown = f.daemon.handle(&ROOT, Request::Status { user: Some("carol2".into()) });
    assert!(matches!(&shown, Response::Status(s) if s.user == "carol"), "{shown:?}");
}

#[test]
fn a_non_root_callers_claims_never_create_trust_or_bypass() {
    let f = fixture(|c| {
        c.bypass.enabled = true;
        c.bypass.rules = mfa_shared::config::Config::parse(
            "[bypass]\nenabled = true\n[[bypass.rule]]\ncidr = \"10.0.0.0/8\"\nbypass_2fa = true\n",
        )
        .unwrap()
        .bypass
        .rules;
    });
    let secret = f.enroll("ivy");
    f.daemon.handle(&ROOT, Request::SetLevel { user: Some("ivy".into()), level: ChallengeLevel::Adaptive, code: None });
    let ivy = Peer { uid: 4242, name: Some("ivy".into()) };
    f.clock.set(NOW + 30);
    // Her own PAM application claims a bypassed address: still asked.
    let ask = step(f.begin_as(&ivy, "ivy", Some("10.1.2.3"), None));
    assert_eq!(prompt_text(&ask).0, "Verification code: ", "a claimed rhost never matches a bypass rule");
    // It claims another address and gives a right code...
    let ask = step(f.begin_as(&ivy, "ivy", Some("192.0.2.7"), None));
    let Step::Prompt { id, .. } = &ask else { panic!("{ask:?}") };
    let answer = Request::AuthAnswer { session_id: id.clone(), answer: Code::new(totp_code(&secret, NOW + 30)) };
    assert_eq!(done(&step(f.daemon.handle(&ivy, answer))).0, Outcome::Verified);
    let lines = f.audit_lines().join("\n");
    assert!(lines.contains("outcome=success reason=\"challenge passed\" peer_uid=4242"), "{lines}");
    // ...which a real login from that address does not honour.
    f.clock.set(NOW + 90);
    let real = f.begin_as(&ROOT, "ivy", Some("192.0.2.7"), None);
    assert_eq!(prompt_text(&step(real)).0, "Verification code: ");
    assert!(f.record("ivy").trusted_sources.is_empty(), "a claim planted no trusted source");
}

#[test]
fn pam_items_with_control_characters_or_too_long_are_refused() {
    let f = fixture(|_| {});
    let bad = |reply: Response| matches!(reply, Response::Error { kind: ErrorKind::BadRequest, .. });
    assert!(bad(f.begin_as(&ROOT, "ivy", None, Some("pts/1\u{1b}[2J"))), "escape in the tty");
    assert!(bad(f.begin_as(&ROOT, "ivy", Some("10.0.0.1\n"), None)), "newline in the rhost");
    assert!(bad(f.begin_as(&ROOT, "ivy", None, Some(&"x".repeat(1 << 20)))), "a 1 MiB tty");
    assert!(!bad(f.begin_as(&ROOT, "ivy", None, Some("pts/1"))));
}

#[test]
fn confirming_a_set_up_counts_failures_and_refuses_while_locked() {
    let f = fixture(|c| c.lockout.max_failures = 3);
    let secret = f.start_setup("ivy");
    let ivy = Peer { uid: 4242, name: Some("ivy".into()) };
    let wrong = wrong_code_for(&secret, NOW);
    for _ in 0..3 {
        let reply = f.confirm(&ivy, "ivy", wrong);
        assert!(matches!(reply, Response::Error { kind: ErrorKind::InvalidCode, .. }), "{reply:?}");
    }
    assert!(f.record("ivy").locked_until.is_some(), "three wrong set-up codes lock the account");
    let reply = f.confirm(&ivy, "ivy", &totp_code(&secret, NOW));
    assert!(
        matches!(&reply, Response::Error { kind: ErrorKind::InvalidCode, message } if message.contains("locked")),
        "even the right code is refused while locked: {reply:?}"
    );
    let record = f.record("ivy");
    assert!(!record.is_enrolled() && record.locked_until.is_some(), "the lock stays");
    let lines = f.audit_lines().join("\n");
    assert_eq!(lines.matches("outcome=failure reason=\"set-up not completed").count(), 2, "{lines}");
    assert_eq!(lines.matches("outcome=locked reason=\"set-up not completed").count(), 2, "{lines}");
}

#[test]
fn a_pending_set_up_lapses() {
    let f = fixture(|c| c.setup_timeout = mfa_shared::config::ConfigDuration(std::time::Duration::from_secs(600)));
    let secret = f.start_setup("ivy");
    f.clock.set(NOW + 600);
    let reply = f.confirm(&ROOT, "ivy", &totp_code(&secret, NOW + 600));
    assert!(
        matches!(&reply, Response::Error { kind: ErrorKind::Conflict, message } if message.contains("expired")),
        "{reply:?}"
    );
    assert!(f.record("ivy").pending.is_none());
}

#[test]
fn an_inline_set_up_yields_to_a_device_enrolled_meanwhile() {
    let f = fixture(|_| {});
    let first = f.begin("force_fay", "10.0.0.1");
    let kind = f.answer(&first, "n");
    let code_prompt = f.answer(&kind, "t");
    // Meanwhile an administrator enrolls a device and starts another set-up.
    f.enroll("force_fay");
    let secret = f.start_setup("force_fay");
    let (outcome, shown) = done(&f.answer(&code_prompt, &totp_code(&secret, NOW)));
    assert_eq!(outcome, Outcome::Denied, "{shown}");
    assert!(shown.contains("meanwhile"), "{shown}");
    assert!(f.record("force_fay").pending.is_some(), "the administrator's set-up is untouched");
}

#[test]
fn unanswered_prompts_hold_up_only_their_own_account() {
    let f = fixture(|_| {});
    f.enroll("ivy");
    let busy = |reply: &Response| matches!(reply, Response::Error { kind: ErrorKind::Busy, .. });
    let open: Vec<Response> = (0..8).map(|_| f.begin_as(&ROOT, "ivy", Some("10.0.0.1"), None)).collect();
    assert!(open.iter().all(|r| !busy(r)), "{open:?}");
    assert!(busy(&f.begin_as(&ROOT, "ivy", Some("10.0.0.1"), None)), "a ninth open conversation for ivy");
    assert!(!busy(&f.begin_as(&ROOT, "force_gil", Some("10.0.0.1"), None)), "other accounts log in as usual");
}

/// Groups from a directory that never answers (a hung LDAP server).
struct HungGroups(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl Directory for HungGroups {
    fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
        let _ = self.0.lock().unwrap().recv();
        Ok(Vec::new())
    }
    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        Groups.account(name)
    }
    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
        Groups.name_of_uid(uid)
    }
}

/// Passes on the early answer it is asked to give.
struct Told(std::sync::Mutex<std::sync::mpsc::Sender<String>>);

impl crate::nss::EarlyAnswer for Told {
    fn answer(&self, reason: &str) {
        self.0.lock().unwrap().send(reason.to_string()).unwrap();
    }
}

#[test]
fn a_hung_group_lookup_is_answered_in_time_and_a_deny_with_a_reason_when_it_returns() {
    let (release, rx) = std::sync::mpsc::channel();
    let hung = Arc::new(HungGroups(std::sync::Mutex::new(rx)));
    let deadline = std::time::Duration::from_millis(200);
    let directory = crate::nss::DeadlineDirectory::new(hung, deadline, Arc::new(crate::clock::SystemClock));
    let f = fixture_with(Arc::new(directory), |_| {});
    let (told, early) = std::sync::mpsc::channel();
    let told: Arc<dyn crate::nss::EarlyAnswer> = Arc::new(Told(std::sync::Mutex::new(told)));
    std::thread::scope(|scope| {
        let login = scope.spawn(|| crate::nss::with_early_answer(told, || f.begin("force_hal", "10.0.0.1")));
        // The client is told while the lookup still hangs...
        let reason = early.recv_timeout(std::time::Duration::from_secs(10)).expect("an early answer");
        assert!(reason.contains("did not answer in time"), "{reason}");
        // ... and the login, once the directory answers, does nothing but deny.
        drop(release);
        let (outcome, shown) = done(&login.join().unwrap());
        assert_eq!(outcome, Outcome::Denied, "{shown}");
    });
    let lines = f.audit_lines().join("\n");
    assert!(
        lines.contains(
            "outcome=denied reason=\"group membership unavailable: the user directory did not answer within 200 ms"
        ),
        "{lines}"
    );
}

#[test]
fn times_written_while_the_clock_ran_ahead_are_brought_back() {
    let f = fixture(|c| c.lockout.max_failures = 2);
    let secret = f.enroll("ivy");
    let ahead = NOW + 100_000_000;
    f.clock.set(ahead);
    let ask = f.begin("ivy", "10.0.0.1");
    assert_eq!(done(&f.answer(&ask, &totp_code(&secret, ahead))).0, Outcome::Verified);
    for _ in 0..2 {
        let ask = f.begin("ivy", "10.0.0.1");
        f.answer(&ask, wrong_code_for(&secret, ahead));
    }
    assert!(f.record("ivy").locked_until.unwrap() > ahead);
    // The clock is put right: the lock lasts at most its duration from now.
    f.clock.set(NOW + 100);
    let (outcome, _) = done(&f.begin("ivy", "10.0.0.1"));
    assert_eq!(outcome, Outcome::Denied);
    let lapsed = NOW + 100 + LockoutConfig::default().duration.as_secs();
    f.clock.set(lapsed);
    let ask = f.begin("ivy", "10.0.0.1");
    assert_eq!(done(&f.answer(&ask, &totp_code(&secret, lapsed))).0, Outcome::Verified, "codes work again");
    assert!(f.record("ivy").trusted_sources.iter().all(|t| t.at <= lapsed));
}

#[test]
fn a_record_under_a_spelling_that_is_not_canonical_is_still_reached() {
    let f = fixture(|_| {});
    // Written before names were resolved: keyed by the name as typed.
    f.import_always("placeholder");
    let mut record = f.record("placeholder");
    record.user = "IVY".into();
    f.daemon.store.update_user("IVY", &mut |_| crate::store::Change::Put(record.clone())).unwrap();
    let ask = f.begin("IVY", "10.0.0.1");
    assert_eq!(prompt_text(&ask).0, "Verification code: ", "the enrolled record under the typed spelling");
}

mod one_field;
