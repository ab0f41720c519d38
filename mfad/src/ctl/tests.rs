use super::cli::*;
use super::error::*;
use super::output::*;
use super::request::*;
use super::setup::*;
use super::*;
use crate::enrollment::QrStyle;
use mfa_shared::frame::{read_frame, write_frame};
use mfa_shared::qr::Background;
use mfa_shared::{
    Algorithm, ChallengeLevel, ClientError, Code, DEFAULT_SOCKET, EnrollmentState, ErrorKind, ListedRule, OtpType,
    Request, RequestFrame, Response, ResponseFrame, SetupInfo, UserStatus,
};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("mfactl").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_err(args: &[&str]) -> clap::Error {
    Cli::try_parse_from(std::iter::once("mfactl").chain(args.iter().copied())).unwrap_err()
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn global_flags_before_and_after_the_subcommand() {
    let before = parse(&["--socket", "/tmp/s", "--json", "status"]);
    let after = parse(&["status", "--socket", "/tmp/s", "--json"]);
    for cli in [before, after] {
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/s")));
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Status { target: Target { user: None } }));
    }
    let nested = parse(&["user", "show", "alice", "--json"]);
    assert!(nested.json);
    assert!(matches!(nested.command, Command::User(UserCommand::Show { ref user }) if user == "alice"));
    let mid = parse(&["ip", "--json", "list"]);
    assert!(mid.json);
    let plain = parse(&["status"]);
    assert!(!plain.json);
    assert_eq!(plain.socket, None);
    assert_eq!(plain.timeout, 30);
}

#[test]
fn connection_timeout_and_rule_timeout_do_not_clash() {
    let cli = parse(&["--timeout", "5", "ip", "add", "10.0.0.0/8", "--timeout", "8h", "--bypass-2fa"]);
    assert_eq!(cli.timeout, 5);
    let (request, _) = simple_request(cli.command).unwrap();
    assert_eq!(request, Request::IpAdd { cidr: "10.0.0.0/8".into(), bypass_2fa: true, timeout_secs: Some(8 * 3600) });
    assert_eq!(parse_err(&["--timeout", "0", "status"]).kind(), clap::error::ErrorKind::ValueValidation);
}

#[test]
fn user_flag_goes_into_the_request() {
    let cli = parse(&["level", "always", "--user", "bob"]);
    let (request, _) = simple_request(cli.command).unwrap();
    assert_eq!(request, Request::SetLevel { user: Some("bob".into()), level: ChallengeLevel::Always, code: None });
    let cli = parse(&["status", "--user", "bob"]);
    let (request, _) = simple_request(cli.command).unwrap();
    assert_eq!(request, Request::Status { user: Some("bob".into()) });
    let cli = parse(&["verify", "--code", "123 456", "--user", "carol"]);
    let (request, _) = simple_request(cli.command).unwrap();
    assert_eq!(request, Request::VerifyCode { user: Some("carol".into()), code: Code::new("123 456") });
    let cli = parse(&["disable", "--code", "111111"]);
    let (request, _) = simple_request(cli.command).unwrap();
    assert_eq!(request, Request::Disable { user: None, code: Some(Code::new("111111")) });
    assert!(parse_err(&["disable"]).kind() == clap::error::ErrorKind::MissingRequiredArgument);
}

#[test]
fn admin_commands_build_their_requests() {
    let cases: Vec<(&[&str], Request)> = vec![
        (&["user", "list"], Request::ListUsers { after: None }),
        (&["user", "show", "al"], Request::Status { user: Some("al".into()) }),
        (&["user", "disable", "al"], Request::Disable { user: Some("al".into()), code: None }),
        (
            &["user", "level", "al", "superuser"],
            Request::SetLevel { user: Some("al".into()), level: ChallengeLevel::Superuser, code: None },
        ),
        (&["user", "verify", "al"], Request::CheckValue { user: "al".into() }),
        (
            &["user", "authorize", "al", "--code", "123456"],
            Request::Authorize { user: "al".into(), code: Code::new("123456") },
        ),
        (&["user", "revoke", "al"], Request::Revoke { user: "al".into() }),
        (&["user", "unlock", "al"], Request::Unlock { user: "al".into() }),
        (
            &["ip", "add", "192.0.2.7"],
            Request::IpAdd { cidr: "192.0.2.7".into(), bypass_2fa: false, timeout_secs: None },
        ),
        (&["ip", "list"], Request::IpList),
        (&["ip", "remove", "12"], Request::IpRemove { id: 12 }),
        (&["reload"], Request::Reload),
        (&["recovery-codes", "--code", "654321"], Request::RecoveryCodes { user: None, code: Code::new("654321") }),
    ];
    for (args, expected) in cases {
        let (request, _) = simple_request(parse(args).command).unwrap();
        assert_eq!(request, expected, "{args:?}");
    }
}

#[test]
fn setup_flags() {
    let cli = parse(&["setup", "--type", "hotp", "--no-barcode", "--level", "always", "--code", "123456"]);
    let Command::Setup { options, code, target } = cli.command else { panic!() };
    let plan = SetupPlan::new(target.user, &options, code.map(Code::new), false, false);
    assert_eq!(plan.otp_type, Some(OtpType::Hotp));
    assert_eq!(plan.barcode, Some(false));
    assert_eq!(plan.level, Some(ChallengeLevel::Always));
    assert_eq!(plan.current_code, Some(Code::new("123456")));
    let cli = parse(&["setup", "--confirm", "123456", "--json"]);
    let Command::Setup { options, .. } = cli.command else { panic!() };
    assert_eq!(options.confirm.as_deref(), Some("123456"));
    assert_eq!(
        parse_err(&["setup", "--confirm", "1", "--type", "totp"]).kind(),
        clap::error::ErrorKind::ArgumentConflict
    );
    assert_eq!(parse_err(&["setup", "--type", "sms"]).kind(), clap::error::ErrorKind::InvalidValue);
    let cli = parse(&["user", "setup", "dave", "--type", "totp", "--level", "adaptive"]);
    let Command::User(UserCommand::Setup { user, options }) = cli.command else { panic!() };
    assert_eq!(user, "dave");
    assert_eq!(options.otp_type, Some(TypeArg::Totp));
    assert_eq!(parse_err(&["level", "sometimes"]).kind(), clap::error::ErrorKind::InvalidValue);
}

#[test]
fn qr_background_flag_and_terminal() {
    let style = |args: &[&str], tty: bool| match parse(args).command {
        Command::Setup { options, .. } | Command::User(UserCommand::Setup { options, .. }) => options.qr_style(tty),
        other => panic!("{other:?}"),
    };
    assert_eq!(style(&["setup"], false), QrStyle::Plain(Background::Dark));
    assert_eq!(style(&["setup"], true), QrStyle::BlackOnWhite);
    assert_eq!(style(&["setup", "--qr-background", "light"], true), QrStyle::Plain(Background::Light));
    assert_eq!(style(&["user", "setup", "dave", "--qr-background", "dark"], true), QrStyle::Plain(Background::Dark));
    assert_eq!(parse_err(&["setup", "--qr-background", "blue"]).kind(), clap::error::ErrorKind::InvalidValue);
    assert_eq!(
        parse_err(&["setup", "--no-barcode", "--qr-background", "light"]).kind(),
        clap::error::ErrorKind::ArgumentConflict
    );
    let coloured = crate::enrollment::format_barcode(&sample_info(OtpType::Totp), QrStyle::BlackOnWhite);
    assert!(coloured.contains(&mfa_shared::qr::render_black_on_white(&sample_info(OtpType::Totp).uri).unwrap()));
    let plain = crate::enrollment::format_barcode(&sample_info(OtpType::Totp), QrStyle::Plain(Background::Light));
    assert!(!plain.contains('\x1b'), "{plain}");
}

#[test]
fn durations_and_networks() {
    assert_eq!(parse_lifetime("90s"), Ok(90));
    assert_eq!(parse_lifetime("15m"), Ok(900));
    assert_eq!(parse_lifetime("8h"), Ok(28_800));
    assert_eq!(parse_lifetime("7d"), Ok(604_800));
    assert_eq!(parse_lifetime("120"), Ok(120));
    assert!(parse_lifetime("0s").is_err());
    assert!(parse_lifetime("soon").is_err());
    assert!(parse_lifetime("8w").is_err());
    let cli = parse(&["ip", "add", "2001:db8::/32", "--timeout", "90s"]);
    let (request, _) = simple_request(cli.command).unwrap();
    assert_eq!(request, Request::IpAdd { cidr: "2001:db8::/32".into(), bypass_2fa: false, timeout_secs: Some(90) });
    assert_eq!(parse_err(&["ip", "add", "10.0.0.0/33"]).kind(), clap::error::ErrorKind::ValueValidation);
    assert_eq!(parse_err(&["ip", "add", "example.com"]).kind(), clap::error::ErrorKind::ValueValidation);
    assert_eq!(
        parse_err(&["ip", "add", "10.0.0.1", "--timeout", "forever"]).kind(),
        clap::error::ErrorKind::ValueValidation
    );
}

#[test]
fn socket_resolution() {
    assert_eq!(socket_path(None, None), PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(socket_path(None, Some("/e".into())), PathBuf::from("/e"));
    assert_eq!(socket_path(None, Some("".into())), PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(socket_path(Some("/a".into()), Some("/e".into())), PathBuf::from("/a"));
}

#[test]
fn human_time() {
    assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
    assert_eq!(format_time(1_709_251_199), "2024-02-29 23:59:59 UTC");
    assert_eq!(format_time(4_102_444_800), "2100-01-01 00:00:00 UTC");
    assert_eq!(format_time(253_402_300_799), "9999-12-31 23:59:59 UTC");
    // Absurd values still format rather than panic.
    assert!(format_time(u64::MAX).ends_with(" UTC"));
}

fn sample_status() -> UserStatus {
    UserStatus {
        user: "alice".into(),
        state: EnrollmentState::Enabled,
        otp_type: Some(OtpType::Totp),
        pending: false,
        level: ChallengeLevel::Adaptive,
        level_is_default: true,
        superuser_approved: true,
        failures: 2,
        locked_until: None,
        one_answer_failures: 0,
        one_answer_locked_until: None,
        last_success: Some(1_700_000_000),
        last_source: Some("192.0.2.1".into()),
        recovery_codes_left: 9,
        role_policy: Some("require".into()),
    }
}

#[test]
fn status_lines_are_aligned() {
    let text = format_status(&sample_status());
    assert!(text.contains("level:               adaptive (default)\n"), "{text}");
    assert!(text.contains("super-user approval: granted\n"), "{text}");
    assert!(text.contains("locked until:        not locked\n"), "{text}");
    assert!(text.contains("one-answer services: 0 failures\n"), "{text}");
    let locked = format_status(&UserStatus {
        one_answer_failures: 5,
        one_answer_locked_until: Some(1_700_000_900),
        ..sample_status()
    });
    assert!(locked.contains("one-answer services: 5 failures, locked until 2023-11-14 22:28:20 UTC\n"), "{locked}");
    assert!(text.contains("last success:        2023-11-14 22:13:20 UTC from 192.0.2.1\n"), "{text}");
    let col: Vec<usize> = text
        .lines()
        .map(|l| l.find(": ").unwrap() + l[l.find(": ").unwrap()..].find(|c: char| c != ':' && c != ' ').unwrap())
        .collect();
    assert!(col.windows(2).all(|w| w[0] == w[1]), "{text}");
    let table = format_users(&[sample_status()]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("USER   STATE    TYPE  LEVEL"), "{table}");
    assert!(lines.next().unwrap().starts_with("alice  enabled  totp  adaptive (default)"), "{table}");
    let rule = mfa_shared::bypass::BypassRule {
        network: mfa_shared::bypass::parse_network("10.0.0.0/8").unwrap(),
        bypass_2fa: true,
        expires_at: None,
        origin: mfa_shared::bypass::RuleOrigin::Runtime { id: 3 },
    };
    let rules = format_rules(&[ListedRule { rule, in_force: false }]);
    assert_eq!(
        rules,
        "ID  CIDR        BYPASS  SOURCE   EXPIRES  IN FORCE\n3   10.0.0.0/8  yes     runtime  never    no\n"
    );
}

#[test]
fn json_shapes() {
    assert_eq!(
        error_json("not_found", "no such user"),
        json!({"error": {"kind": "not_found", "message": "no such user"}})
    );
    let e = CtlError::Client(ClientError::Daemon { kind: ErrorKind::PermissionDenied, message: "no".into() });
    assert_eq!((e.kind().as_str(), e.exit_code()), ("permission_denied", EXIT_PERMISSION));
    let e = CtlError::Client(ClientError::Daemon { kind: ErrorKind::InvalidCode, message: "no".into() });
    assert_eq!((e.kind().as_str(), e.exit_code()), ("invalid_code", EXIT_INVALID_CODE));
    let e = CtlError::Client(ClientError::Daemon { kind: ErrorKind::NotFound, message: "no".into() });
    assert_eq!(e.exit_code(), EXIT_NOT_FOUND);
    let e = CtlError::Client(ClientError::TimedOut);
    assert_eq!((e.kind().as_str(), e.exit_code()), ("timed_out", EXIT_UNREACHABLE));
    assert_eq!(response_json(&Response::Ok { message: None }).unwrap(), json!({"ok": true, "message": null}));
    assert_eq!(
        response_json(&Response::CheckValue { user: "a".into(), value: "123456".into() }).unwrap(),
        json!({"user": "a", "value": "123456"})
    );
    assert_eq!(response_json(&Response::IpRuleAdded { id: 4 }).unwrap(), json!({"id": 4}));
    assert_eq!(
        response_json(&Response::RecoveryCodes { recovery_codes: vec![Code::new("a-b")] }).unwrap(),
        json!({"recovery_codes": ["a-b"]})
    );
    let status = response_json(&Response::Status(sample_status())).unwrap();
    assert_eq!(status["user"], "alice");
    assert_eq!(status["state"], "enabled");
    assert!(status.get("type").is_none());
    let info = response_json(&Response::SetupStarted { setup: sample_info(OtpType::Hotp) }).unwrap();
    for key in ["uri", "secret", "type", "algorithm", "digits", "period", "counter", "user"] {
        assert!(info.get(key).is_some(), "{key} in {info}");
    }
    assert_eq!(info["type"], "hotp");
}

#[test]
fn unreachable_daemon_exits_6_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let (code, out, err) = run_with(&["status", "--json", "--socket", socket.to_str().unwrap()], "", None);
    assert_eq!(code, EXIT_UNREACHABLE);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["error"]["kind"], "unreachable");
    assert!(err.starts_with("mfactl: cannot connect to mfad"), "{err}");
    assert_eq!(err.lines().count(), 1);
    // Without --json, nothing on stdout.
    let (code, out, _) = run_with(&["status"], "", Some(socket.as_os_str().to_owned()));
    assert_eq!((code, out.as_str()), (EXIT_UNREACHABLE, ""));
}

#[test]
fn usage_errors() {
    let (code, out, err) = run_with(&["frobnicate", "--json"], "", None);
    assert_eq!(code, EXIT_USAGE);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(err.contains("frobnicate"), "{err}");
    let (code, out, _) = run_with(&["--help"], "", None);
    assert_eq!(code, EXIT_OK);
    assert!(out.contains("6  mfad unreachable"), "{out}");
}

// ------------------------------------------------------- fake daemon

fn sample_info(otp_type: OtpType) -> SetupInfo {
    SetupInfo {
        user: "alice".into(),
        uri: "otpauth://totp/host:alice%40host?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=host".into(),
        secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
        otp_type,
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
        counter: 0,
    }
}

/// A daemon that answers requests, on any number of connections, with
/// `answers` in order, and records the requests.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeDaemon {
    fn start(answers: Vec<Response>) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mfad.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                while let Ok(frame) = read_frame::<_, RequestFrame>(&mut stream) {
                    seen.lock().unwrap().push(frame.request);
                    let answer =
                        answers.next().unwrap_or_else(|| Response::error(ErrorKind::Internal, "unexpected request"));
                    if write_frame(&mut stream, &ResponseFrame::new(answer)).is_err() {
                        break;
                    }
                }
            }
        });
        FakeDaemon { _dir: dir, socket, requests }
    }

    fn daemon(&self) -> DaemonAddress {
        DaemonAddress { socket: self.socket.clone(), timeout: Duration::from_secs(10) }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn run_with(args: &[&str], input: &str, env_socket: Option<OsString>) -> (u8, String, String) {
    let mut input = input.as_bytes();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run(std::iter::once("mfactl").chain(args.iter().copied()), env_socket, &mut input, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn not_enrolled() -> Response {
    Response::Status(UserStatus {
        state: EnrollmentState::NotEnrolled,
        otp_type: None,
        superuser_approved: false,
        ..sample_status()
    })
}

fn completed() -> Response {
    Response::SetupCompleted { recovery_codes: vec![Code::new("rc-one"), Code::new("rc-two")] }
}

fn wrong() -> Response {
    Response::error(ErrorKind::InvalidCode, "wrong code")
}

fn plan() -> SetupPlan {
    SetupPlan {
        user: None,
        otp_type: None,
        level: None,
        current_code: None,
        barcode: None,
        admin: false,
        qr: QrStyle::Plain(Background::Dark),
    }
}

#[test]
fn interactive_setup_with_barcode_and_a_wrong_code() {
    let fake = FakeDaemon::start(vec![
        not_enrolled(),
        Response::SetupStarted { setup: sample_info(OtpType::Totp) },
        wrong(),
        completed(),
    ]);
    let mut input: &[u8] = b"y\n\n111111\n222 222\n";
    let mut out = Vec::new();
    interactive_setup(&fake.daemon(), plan(), &mut input, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let asked: Vec<&str> = out.matches("? [").collect();
    assert_eq!(asked.len(), 2, "{out}");
    assert!(
        out.starts_with("Does your device support scanning a barcode? [y/n] Time-based or counter-based? [t/c] "),
        "{out}"
    );
    assert!(out.contains("Scan this QR code"), "{out}");
    let qr = mfa_shared::qr::render_terminal(&sample_info(OtpType::Totp).uri, Background::Dark).unwrap();
    assert!(out.contains(&qr), "{out}");
    assert!(out.contains(&sample_info(OtpType::Totp).uri), "{out}");
    assert_eq!(out.matches("Enter the code from your device to complete setup: ").count(), 2, "{out}");
    assert!(out.contains("That code was not accepted (wrong code). Please try again."), "{out}");
    assert!(out.contains("Two-factor authentication is enabled."), "{out}");
    assert!(out.contains("store them somewhere safe"), "{out}");
    assert!(out.contains("    rc-one\n    rc-two\n"), "{out}");
    assert_eq!(
        fake.requests(),
        vec![
            Request::Status { user: None },
            Request::SetupBegin { user: None, otp_type: Some(OtpType::Totp), level: None, current_code: None },
            Request::SetupConfirm { user: None, code: Code::new("111111") },
            Request::SetupConfirm { user: None, code: Code::new("222 222") },
        ]
    );
}

#[test]
fn interactive_setup_by_hand_for_hotp() {
    let mut info = sample_info(OtpType::Hotp);
    info.counter = 0;
    let fake = FakeDaemon::start(vec![not_enrolled(), Response::SetupStarted { setup: info }, completed()]);
    let mut input: &[u8] = b"maybe\nn\nc\n123456\n";
    let mut out = Vec::new();
    let plan = SetupPlan { level: Some(ChallengeLevel::Always), ..plan() };
    interactive_setup(&fake.daemon(), plan, &mut input, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("Please answer y or n."), "{out}");
    assert!(out.contains("    JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP\n"), "{out}");
    assert!(out.contains("counter-based (HOTP)"), "{out}");
    assert!(out.contains("starting counter: 0"), "{out}");
    assert!(out.contains("algorithm:        SHA1"), "{out}");
    assert!(!out.contains("QR code"), "{out}");
    assert!(!out.contains("otpauth://"), "{out}");
    assert_eq!(
        fake.requests()[1],
        Request::SetupBegin {
            user: None,
            otp_type: Some(OtpType::Hotp),
            level: Some(ChallengeLevel::Always),
            current_code: None
        }
    );
}

#[test]
fn flags_skip_the_questions() {
    let fake = FakeDaemon::start(vec![Response::SetupStarted { setup: sample_info(OtpType::Totp) }, completed()]);
    let (code, out, err) = run_with(
        &["user", "setup", "alice", "--no-barcode", "--type", "totp", "--socket", fake.socket.to_str().unwrap()],
        "123456\n",
        None,
    );
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(!out.contains("[y/n]") && !out.contains("[t/c]"), "{out}");
    assert!(out.contains("  period:    30 seconds\n"), "{out}");
    assert_eq!(
        fake.requests(),
        vec![
            Request::SetupBegin {
                user: Some("alice".into()),
                otp_type: Some(OtpType::Totp),
                level: None,
                current_code: None
            },
            Request::SetupConfirm { user: Some("alice".into()), code: Code::new("123456") },
        ]
    );
}

#[test]
fn replacing_an_enabled_device_asks_for_the_current_code() {
    let fake = FakeDaemon::start(vec![
        Response::Status(sample_status()),
        Response::SetupStarted { setup: sample_info(OtpType::Totp) },
        completed(),
    ]);
    let mut input: &[u8] = b"999999\nn\nt\n123456\n";
    let mut out = Vec::new();
    interactive_setup(&fake.daemon(), plan(), &mut input, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("Enter a code from your current device: "), "{out}");
    assert_eq!(
        fake.requests()[1],
        Request::SetupBegin {
            user: None,
            otp_type: Some(OtpType::Totp),
            level: None,
            current_code: Some(Code::new("999999"))
        }
    );
}

#[test]
fn three_wrong_codes_leave_it_pending() {
    let fake = FakeDaemon::start(vec![
        Response::SetupStarted { setup: sample_info(OtpType::Totp) },
        wrong(),
        wrong(),
        wrong(),
    ]);
    let (code, out, err) = run_with(
        &["setup", "--user", "bob", "--no-barcode", "--type", "totp", "--code", "000000"],
        "1\n2\n3\n4\n",
        Some(fake.socket.clone().into_os_string()),
    );
    assert_eq!(code, EXIT_INVALID_CODE);
    assert_eq!(out.matches("complete setup: ").count(), 3, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stays pending"), "{err}");
    assert!(err.contains("`mfactl setup --user bob --confirm CODE`"), "{err}");
    assert_eq!(fake.requests().len(), 4);
    assert!(!fake.requests().contains(&Request::SetupConfirm { user: Some("bob".into()), code: Code::new("4") }));
}

#[test]
fn end_of_input_is_a_clean_error() {
    let fake = FakeDaemon::start(vec![not_enrolled()]);
    let (code, _, err) = run_with(&["setup", "--socket", fake.socket.to_str().unwrap()], "y\n", None);
    assert_eq!(code, EXIT_FAILURE);
    assert_eq!(err, "mfactl: no answer: standard input ended\n");
    // Nothing was started: only the status was asked.
    assert_eq!(fake.requests(), vec![Request::Status { user: None }]);

    let fake = FakeDaemon::start(vec![not_enrolled(), Response::SetupStarted { setup: sample_info(OtpType::Totp) }]);
    let (code, _, err) = run_with(&["setup", "--socket", fake.socket.to_str().unwrap()], "y\nt\n", None);
    assert_eq!(code, EXIT_FAILURE);
    assert!(err.contains("stays pending"), "{err}");
}

#[test]
fn setup_json_prints_the_info_and_leaves_it_pending() {
    let fake = FakeDaemon::start(vec![Response::SetupStarted { setup: sample_info(OtpType::Totp) }]);
    let (code, out, _) =
        run_with(&["setup", "--json", "--type", "totp", "--socket", fake.socket.to_str().unwrap()], "", None);
    assert_eq!(code, EXIT_OK);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["secret"], "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    assert_eq!(doc["type"], "totp");
    assert_eq!(doc["period"], 30);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(
        fake.requests(),
        vec![Request::SetupBegin { user: None, otp_type: Some(OtpType::Totp), level: None, current_code: None }]
    );
}

#[test]
fn a_dash_reads_the_code_from_standard_input() {
    let ok = || Response::Ok { message: None };
    let fake = FakeDaemon::start(vec![
        ok(),
        Response::RecoveryCodes { recovery_codes: vec![Code::new("rc-one")] },
        ok(),
        ok(),
        completed(),
        completed(),
        Response::SetupStarted { setup: sample_info(OtpType::Totp) },
        completed(),
    ]);
    let s = fake.socket.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["disable", "--code", "-"], "  111 111 \n"),
        (&["recovery-codes", "--code", "-", "--json"], "222222\n"),
        (&["verify", "--user", "bob", "--code", "-"], "333333"),
        (&["user", "authorize", "al", "--code", "-"], "444444\nignored\n"),
        (&["setup", "--confirm", "-"], "555555\n"),
        (&["user", "setup", "al", "--confirm", "-"], "666666\n"),
        // Interactive: the current code first, then the new device's.
        (&["setup", "--code", "-", "--no-barcode", "--type", "totp"], "777777\n888888\n"),
    ];
    for (args, input) in cases {
        let args: Vec<&str> = args.iter().copied().chain(["--socket", s]).collect();
        let (code, _, err) = run_with(&args, input, None);
        assert_eq!(code, EXIT_OK, "{args:?}: {err}");
    }
    assert_eq!(
        fake.requests(),
        vec![
            Request::Disable { user: None, code: Some(Code::new("111 111")) },
            Request::RecoveryCodes { user: None, code: Code::new("222222") },
            Request::VerifyCode { user: Some("bob".into()), code: Code::new("333333") },
            Request::Authorize { user: "al".into(), code: Code::new("444444") },
            Request::SetupConfirm { user: None, code: Code::new("555555") },
            Request::SetupConfirm { user: Some("al".into()), code: Code::new("666666") },
            Request::SetupBegin {
                user: None,
                otp_type: Some(OtpType::Totp),
                level: None,
                current_code: Some(Code::new("777777")),
            },
            Request::SetupConfirm { user: None, code: Code::new("888888") },
        ]
    );
}

#[test]
fn a_dash_without_a_code_on_standard_input_is_a_clear_error() {
    let fake = FakeDaemon::start(vec![]);
    let s = fake.socket.to_str().unwrap();
    let (code, out, err) = run_with(&["verify", "--code", "-", "--json", "--socket", s], "", None);
    assert_eq!(code, EXIT_FAILURE);
    assert_eq!(err, "mfactl: --code -: standard input ended before a code was given (give the code on one line)\n");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["error"]["kind"], "input");
    let (code, _, err) = run_with(&["user", "setup", "al", "--confirm", "-", "--socket", s], " \n", None);
    assert_eq!(code, EXIT_FAILURE);
    assert_eq!(err, "mfactl: --confirm -: the line read from standard input is empty\n");
    assert!(fake.requests().is_empty(), "nothing is sent without a code");
    let (code, out, _) = run_with(&["--help"], "", None);
    assert_eq!(code, EXIT_OK);
    assert!(out.contains("may be given as `-`: the code is then read\nfrom standard input"), "{out}");
    let (_, out, _) = run_with(&["disable", "--help"], "", None);
    assert!(out.contains("`-` reads it from standard input"), "{out}");
}

#[test]
fn commands_against_the_fake_daemon() {
    let fake = FakeDaemon::start(vec![
        Response::CheckValue { user: "al".into(), value: "328482".into() },
        Response::error(ErrorKind::NotFound, "no such user\n\"zed\""),
        Response::Ok { message: None },
        Response::Ok { message: None },
        completed(),
    ]);
    let s = fake.socket.to_str().unwrap();
    let (code, out, _) = run_with(&["user", "verify", "al", "--socket", s], "", None);
    assert_eq!((code, out.as_str()), (EXIT_OK, "328482\n"));
    let (code, out, err) = run_with(&["--json", "user", "show", "zed", "--socket", s], "", None);
    assert_eq!(code, EXIT_NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"error": {"kind": "not_found", "message": "no such user \"zed\""}})
    );
    assert_eq!(err, "mfactl: no such user \"zed\"\n");
    let (_, out, _) = run_with(&["user", "unlock", "al", "--socket", s], "", None);
    assert_eq!(out, "al is unlocked.\n");
    let (_, out, _) = run_with(&["reload", "--json", "--socket", s], "", None);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"ok": true, "message": null}));
    let (code, out, _) = run_with(&["setup", "--confirm", "123456", "--socket", s], "", None);
    assert_eq!(code, EXIT_OK);
    assert!(out.starts_with("Two-factor authentication is enabled.\n"), "{out}");
    assert!(out.contains("rc-one"), "{out}");
}
