//! Attacks on the running system (SPEC 6, 14), one test per way around the
//! code, each through real parts: a real mfad, real PAM clients (pamtester
//! and `pam_client` under libpam-wrapper, run by root or by the user
//! themselves), real Unix users made with useradd and removed on drop.
//! Each of the first tests failed before mfad resolved names to accounts,
//! counted set-up codes, treated polkit-1 as elevation, distrusted a
//! non-root caller's items and refused control characters; the last one
//! (an item too long for a frame under `failmode=safe`) still fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::*;

/// A login service: the module, then `pam_permit`, so a login that needs no
/// code (the module's PAM_IGNORE) goes through with nothing on stdin.
const LOGIN: &str = "mfaa-login";

/// A login service that checks the password first, as a real one does.
const PASSWORD_LOGIN: &str = "mfaa-pwlogin";

/// What a PAM client run showed and how it ended.
struct Attempt {
    ok: bool,
    /// A code was asked for.
    asked: bool,
    said: String,
}

fn attempt_output(out: &Output) -> Attempt {
    let said = format!("{}{}", stdout(out), stderr(out));
    Attempt { ok: out.status.success(), asked: said.contains("Verification code"), said }
}

fn attempt(cmd: &mut Command, input: &str) -> Attempt {
    attempt_output(&run_with_input(cmd, input))
}

fn assert_not_asked(a: &Attempt, what: &str) {
    assert!(a.ok && !a.asked, "{what}: no code should be asked, the login should pass:\n{}", a.said);
}

fn assert_asked(a: &Attempt, ok: bool, what: &str) {
    assert!(a.asked, "{what}: a code should be asked:\n{}", a.said);
    assert_eq!(a.ok, ok, "{what}: login success should be {ok}:\n{}", a.said);
}

/// Refused before any prompt: the PAM call fails and no code was asked.
fn assert_refused(a: &Attempt, what: &str) {
    assert!(!a.ok && !a.asked, "{what}: the login should be refused without a prompt:\n{}", a.said);
}

fn line(answer: &str) -> String {
    format!("{answer}\n")
}

/// A six-digit code no HOTP counter near the start of `secret` gives.
fn wrong_hotp(secret: &str) -> String {
    let near: Vec<String> = (0..=30).map(|c| hotp(secret, c)).collect();
    (0..).map(|n: u32| format!("{:06}", (n * 111_111) % 1_000_000)).find(|c| !near.contains(c)).unwrap()
}

fn roles(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(group, policy)| format!("\n[[role]]\ngroup = \"{group}\"\npolicy = \"{policy}\"")).collect()
}

fn services(mfad: &Mfad) -> PamServices {
    let services = PamServices::new();
    services.add(LOGIN, &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    services.add(PASSWORD_LOGIN, &["auth required pam_unix.so".into(), mfad.module_line("required", "")]);
    services
}

/// The audit lines so far that contain every one of `needles`, once at
/// least `n` do (waits up to 10 s).
fn audit_matching(mfad: &Mfad, needles: &[&str], n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = mfad
            .audit_lines_until(needles[0])
            .into_iter()
            .filter(|l| needles.iter().all(|needle| l.contains(needle)))
            .collect();
        if lines.len() >= n || Instant::now() >= deadline {
            assert!(lines.len() >= n, "{} audit lines with {needles:?}, expected {n}:\n{lines:#?}", lines.len());
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn users_listed(mfad: &Mfad) -> Vec<serde_json::Value> {
    mfad.json(&["user", "list"])["users"].as_array().unwrap().clone()
}

fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

// ---- 1. a second name for a uid ---------------------------------------------

/// `useradd -o` gives an enrolled account's uid a second name with its own
/// password. Logging in under that name is logging in to the same account:
/// the code of the account's device is asked, and without it there is no
/// login. (Before: the second name was an unenrolled user of its own, and
/// its password alone let it in.)
#[test]
fn a_second_name_for_an_enrolled_uid_is_asked_the_accounts_code() {
    let original = TempUser::new("mfaa_orig", &[]);
    let alias = TempUser::alias("mfaa_alias", &original);
    let mfad = Mfad::start("max_tries = 1");
    let secret = mfad.enroll(&original.name, "hotp");
    mfad.ok(&["user", "level", &original.name, "always"]);
    let services = services(&mfad);
    let login =
        |input: &str| attempt(&mut services.pamtester(PASSWORD_LOGIN, &alias.name, &[("rhost", "127.0.0.5")]), input);
    let pw = password(&alias.name);

    // The alias's own password, no code: no login.
    let a = login(&line(&pw));
    assert_asked(&a, false, "the alias with its password and no code");
    // A wrong code: no login.
    let a = login(&format!("{pw}\n{}\n", wrong_hotp(&secret)));
    assert_asked(&a, false, "the alias with a wrong code");
    // The original's device code: the login goes through.
    let a = login(&format!("{pw}\n{}\n", hotp(&secret, 1)));
    assert_asked(&a, true, "the alias with the account's code");

    let given = format!("given={}", alias.name);
    let user = format!("user={} service={PASSWORD_LOGIN} rhost=127.0.0.5", original.name);
    audit_matching(&mfad, &[&user, "outcome=challenge reason=\"level always\"", &given], 3);
    audit_matching(&mfad, &[&user, "outcome=failure", &given], 1);
    audit_matching(&mfad, &[&user, "outcome=success reason=\"challenge passed\"", &given], 1);
    let lines = mfad.audit_lines_until(&given);
    assert!(!lines.iter().any(|l| l.contains(&format!("user={}", alias.name))), "{lines:#?}");

    // One record, the account's: its failures were counted, its counter moved.
    let listed = users_listed(&mfad);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["user"], original.name.as_str());
    let out = mfad.mfactl(&["verify", "--user", &original.name, "--code", &hotp(&secret, 1)]);
    assert!(!out.status.success(), "the code used under the alias is spent for the account");
}

/// The same for an account a role forces to set up: under the second name,
/// the set-up offered is the account's (its group's policy, its record), and
/// the second name never gets a record of its own. (Before: the second name
/// was in no group, so it logged in with no set-up at all.)
#[test]
fn a_second_name_for_a_forced_uid_sets_up_the_account_itself() {
    let group = TempGroup::new("mfaa_g_force");
    let original = TempUser::new("mfaa_forig", &[&group]);
    let alias = TempUser::alias("mfaa_falias", &original);
    let mfad = Mfad::start(&format!("max_tries = 2{}", roles(&[(&group.name, "force")])));
    let services = services(&mfad);

    let mut conv = Interactive::start(services.pam_client(PASSWORD_LOGIN, &alias.name, &[("rhost", "127.0.0.5")]));
    let q = conv.expect_prompt();
    assert!(!q.echo && q.text.contains("assword"), "pam_unix asks the password first: {q:?}");
    conv.answer(&password(&alias.name));
    let q = conv.expect_prompt();
    assert!(q.shown.contains("must use two-factor authentication"), "a set-up is forced: {}", conv.transcript);
    assert_eq!(q.text, "Does your device support scanning a barcode? [y/n] ");
    conv.answer("y");
    let q = conv.expect_prompt();
    assert_eq!(q.text, "Time-based or counter-based? [t/c] ");
    conv.answer("c");
    let q = conv.expect_prompt();
    assert_eq!(q.text, "Enter the code from your device to complete setup: ");
    let uri = q.shown.lines().find(|l| l.contains("otpauth://")).expect("an otpauth URI").to_string();
    assert!(uri.contains(&original.name) && !uri.contains(&alias.name), "the set-up is the account's: {uri}");
    let secret = secret_from_setup_text(&q.shown);
    conv.answer(&hotp(&secret, 0));
    let (ok, transcript) = conv.finish();
    assert!(ok, "the set-up completes the login:\n{transcript}");

    let given = format!("given={}", alias.name);
    let user = format!("user={} service={PASSWORD_LOGIN}", original.name);
    audit_matching(&mfad, &[&user, "reason=\"enrollment offered (role policy force)\"", &given], 1);
    audit_matching(&mfad, &[&user, "reason=\"enrollment completed (role policy force)\"", &given], 1);

    let listed = users_listed(&mfad);
    let names: Vec<&str> = listed.iter().map(|u| u["user"].as_str().unwrap()).collect();
    assert_eq!(names, [original.name.as_str()], "one record, the account's");
    let status = mfad.json(&["user", "show", &original.name]);
    assert_eq!(status["state"], "enabled", "{status}");
    assert_eq!(status["role_policy"], "force", "{status}");
    // Asked about by either name, an administrator sees the one account.
    assert_eq!(mfad.json(&["user", "show", &alias.name])["user"], original.name.as_str());
    // And the original name now logs in with that device.
    let a =
        attempt(&mut services.pamtester(LOGIN, &original.name, &[("rhost", "127.0.0.6")]), &line(&hotp(&secret, 1)));
    assert_asked(&a, true, "the original name, from a new source");
}

// ---- 2. brute force on a pending set-up ----------------------------------------

/// How one `mfactl setup --confirm` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// The code was checked and was wrong.
    Wrong,
    /// Refused: the account is locked.
    Locked,
    /// Turned away at the door by the per-uid connection cap (mfactl may
    /// report the refusal, or a broken pipe when mfad closed first).
    Busy,
}

fn classify(out: &Output) -> Confirm {
    let said = stderr(out);
    assert!(!out.status.success(), "a wrong code never completes a set-up: {said}");
    if said.contains("wrong code;") {
        Confirm::Wrong
    } else if said.contains("is locked until") {
        Confirm::Locked
    } else if said.contains("too many connections") || said.contains("connection to mfad failed") {
        Confirm::Busy
    } else {
        panic!("an unexpected answer: {said}");
    }
}

/// A user who started a set-up throws wrong codes at `setup --confirm`, many
/// at once: exactly `max_failures` of them are checked, the account locks,
/// every other attempt is refused (locked, or turned away by the per-uid
/// connection cap), each is audited, and the right code is refused while it
/// is locked. (Before: set-up codes were never counted, so a pending set-up
/// could be guessed without limit, and went unaudited.)
#[test]
fn parallel_wrong_set_up_codes_lock_the_account() {
    const MAX_FAILURES: usize = 3;
    const WAVES: usize = 2;
    const PER_WAVE: usize = 12;
    let user = TempUser::new("mfaa_brute", &[]);
    let mfad = Mfad::start(&format!("max_tries = 1\n[lockout]\nmax_failures = {MAX_FAILURES}\nduration = \"15m\""));
    let out = mfad.mfactl_as(&user.name, &["--json", "setup", "--type", "hotp"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let setup: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let secret = setup["secret"].as_str().unwrap().to_string();
    let wrong = wrong_hotp(&secret);

    let confirm = |code: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", &user.name, "--regid", &user.name, "--init-groups", "--"])
            .arg(mfad.dir.path().join("mfactl"))
            .arg("--socket")
            .arg(&mfad.socket)
            .args(["setup", "--confirm", code])
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut results = Vec::new();
    for _ in 0..WAVES {
        let children: Vec<_> = (0..PER_WAVE).map(|_| confirm(&wrong).spawn().unwrap()).collect();
        results.extend(children.into_iter().map(|c| classify(&c.wait_with_output().unwrap())));
    }
    let count = |kind: Confirm| results.iter().filter(|&&r| r == kind).count();
    let (wrong_checked, locked, busy) = (count(Confirm::Wrong), count(Confirm::Locked), count(Confirm::Busy));
    assert_eq!(wrong_checked, MAX_FAILURES, "exactly max_failures codes are checked: {results:?}");
    assert!(locked >= 1, "the attempts after those find the account locked: {results:?}");

    let status = mfad.json(&["user", "show", &user.name]);
    assert_eq!(status["state"], "pending", "{status}");
    assert!(status["locked_until"].is_u64(), "the account is locked: {status}");
    assert_eq!(status["failures"], MAX_FAILURES, "{status}");

    // The right code, while locked: refused, and the set-up stays pending.
    let out = confirm(&hotp(&secret, 0)).output().unwrap();
    assert_eq!(classify(&out), Confirm::Locked, "the right code while locked: {}", stderr(&out));
    assert_eq!(mfad.json(&["user", "show", &user.name])["state"], "pending");

    // One audit line per attempt (a decision for each code that reached the
    // check, a refusal for each connection turned away; all name the
    // caller), or, past the caller's allowance of lines per second, a count
    // in the summary line.
    let who = format!("user={} service=mfactl", user.name);
    let peer = format!("peer_uid={}", user.uid);
    let checked = wrong_checked + locked + 1;
    let refused = format!("uid {}: too many connections, refused", user.uid);
    let summary = format!("uid {}: ", user.uid);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (decisions, refusals, suppressed) = loop {
        let lines = mfad.audit_lines_until(&who);
        let decisions: Vec<String> = lines
            .iter()
            .filter(|l| l.contains(&who) && l.contains("reason=\"set-up not completed") && l.contains(&peer))
            .cloned()
            .collect();
        let refusals = lines.iter().filter(|l| l.contains(&refused)).count();
        let suppressed: usize = lines
            .iter()
            .filter_map(|l| l.split_once(&summary)?.1.strip_suffix(" audit lines suppressed (more than 20 a second)\""))
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        if decisions.len() + refusals + suppressed >= checked + busy || Instant::now() >= deadline {
            break (decisions, refusals, suppressed);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(decisions.len() + refusals + suppressed, checked + busy, "{decisions:#?}");
    // The first codes checked are within the allowance: each wrong one before
    // the lock is a failure line; the one that reaches max_failures locks.
    let failures = decisions.iter().filter(|l| l.contains("outcome=failure")).count();
    assert_eq!(failures, MAX_FAILURES - 1, "{decisions:#?}");
    assert!(decisions.iter().all(|l| l.contains("outcome=failure") || l.contains("outcome=locked")));

    // Once an administrator unlocks it, the right code completes the set-up.
    mfad.ok(&["user", "unlock", &user.name]);
    let out = confirm(&hotp(&secret, 0)).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mfad.json(&["user", "show", &user.name])["state"], "enabled");
    audit_matching(&mfad, &[&who, "outcome=enrolled reason=\"set-up completed\"", &peer], 1);
}

// ---- 3. polkit-1 is elevation -----------------------------------------------------

/// polkit's agent helper authenticates as the PAM service `polkit-1` (pkexec,
/// run0, desktop prompts): it is super-user elevation, so a `superuser`-level
/// user is asked for a code there, and `failmode=safe` does not open it when
/// mfad is gone. (Before: polkit-1 was an ordinary login, so a `superuser`
/// level meant no code at all, and safe mode let it through.)
#[test]
fn polkit_1_is_elevation_in_the_daemon_and_the_module() {
    let user = TempUser::new("mfaa_polkit", &[]);
    let mut mfad = Mfad::start("max_tries = 1");
    let secret = mfad.enroll(&user.name, "hotp");
    mfad.ok(&["user", "level", &user.name, "superuser"]);
    mfad.ok(&["user", "authorize", &user.name, "--code", &hotp(&secret, 1)]);
    let services = services(&mfad);
    services.add("polkit-1", &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);

    assert_not_asked(&attempt(&mut services.pamtester(LOGIN, &user.name, &[]), ""), "an ordinary login");
    let a = attempt(&mut services.pamtester("polkit-1", &user.name, &[]), "");
    assert_asked(&a, false, "polkit-1 without a code");
    let a = attempt(&mut services.pamtester("polkit-1", &user.name, &[]), &line(&hotp(&secret, 2)));
    assert_asked(&a, true, "polkit-1 with the device's code");
    let who = format!("user={} service=polkit-1 rhost=-", user.name);
    audit_matching(&mfad, &[&who, "outcome=challenge reason=\"elevation\""], 2);
    audit_matching(&mfad, &[&who, "outcome=success"], 1);

    // mfad gone, failmode=safe: ordinary logins pass, polkit-1 stays closed.
    mfad.stop();
    let safe = PamServices::new();
    for service in [LOGIN, "polkit-1"] {
        safe.add(service, &[mfad.module_line("required", "failmode=safe"), "auth required pam_permit.so".into()]);
    }
    let a = attempt(&mut safe.pamtester(LOGIN, &user.name, &[]), "");
    assert!(a.ok, "failmode=safe lets an ordinary login through:\n{}", a.said);
    let a = attempt(&mut safe.pamtester("polkit-1", &user.name, &[]), "");
    assert!(!a.ok, "failmode=safe must not open polkit-1:\n{}", a.said);
    assert!(a.said.contains("unavailable"), "{}", a.said);
}

// ---- 4. a user's own PAM client plants an rhost --------------------------------------

/// A user runs a PAM application of their own (not root) claiming to come
/// from 127.0.0.9 and answers their code. That claim must not make
/// 127.0.0.9 a trusted source for a real (root) login, nor match a bypass
/// rule; the audit names the caller's uid. (Before: the claim was taken as
/// fact: the source became trusted, and a bypass rule matched it.)
#[test]
fn a_users_own_client_cannot_plant_a_trusted_or_bypassed_rhost() {
    let user = TempUser::new("mfaa_planter", &[]);
    let config = |bypass: bool| {
        format!(
            "default_level = \"adaptive\"\nmax_tries = 1\n[bypass]\nenabled = {bypass}\n\
             [[bypass.rule]]\ncidr = \"127.0.0.0/8\"\nbypass_2fa = true"
        )
    };
    let mfad = Mfad::start(&config(false));
    let secret = mfad.enroll(&user.name, "hotp");
    let services = services(&mfad);
    // The user's own pam_client claiming 127.0.0.9 (answers as flags; none: no code).
    let own = |answer: Option<&str>| {
        let mut items = vec![("rhost", "127.0.0.9")];
        items.extend(answer.map(|code| ("answer", code)));
        attempt(&mut services.pam_client_as(&user.name, LOGIN, &user.name, &items), "")
    };
    // A root login (pamtester) from 127.0.0.9, answering with `input`.
    let root = |input: &str| attempt(&mut services.pamtester(LOGIN, &user.name, &[("rhost", "127.0.0.9")]), input);

    let a = own(Some(&hotp(&secret, 1)));
    assert_asked(&a, true, "the user's own client, right code");
    let a = root("");
    assert_asked(&a, false, "a root login from 127.0.0.9 after the user's claim");
    let who = format!("user={} service={LOGIN} rhost=127.0.0.9", user.name);
    let peer = format!("peer_uid={}", user.uid);
    audit_matching(
        &mfad,
        &[&who, "outcome=challenge reason=\"adaptive: a non-root caller's source is never trusted\"", &peer],
        1,
    );
    audit_matching(&mfad, &[&who, "outcome=success", &peer], 1);
    audit_matching(&mfad, &[&who, "outcome=challenge reason=\"adaptive: new or expired source\""], 1);

    // Bypass for 127.0.0.0/8 on: root's login from there is bypassed, the
    // user's own claim to come from there is not.
    std::fs::write(&mfad.config_path, Mfad::config_text(mfad.dir.path(), &config(true))).unwrap();
    mfad.ok(&["reload"]);
    let a = own(None);
    assert_asked(&a, false, "the user's own client claiming 127.0.0.9 under a bypass rule");
    assert_not_asked(&root(""), "a root login from 127.0.0.9 under a bypass rule");
    let lines = audit_matching(&mfad, &[&who, "reason=\"ip bypass by rule 127.0.0.0/8 (config)\""], 1);
    assert!(lines.iter().all(|l| !l.contains("peer_uid=")), "only root's login is bypassed: {lines:#?}");
    audit_matching(&mfad, &[&who, "outcome=challenge", &peer], 2);
    // Root's own lines carry no peer_uid.
    let lines = mfad.audit_lines_until(&who);
    assert!(
        lines.iter().filter(|l| l.contains(&who) && l.contains("new or expired")).all(|l| !l.contains("peer_uid")),
        "{lines:#?}"
    );
}

// ---- 5. control characters and oversized items ----------------------------------------

/// A tty or rhost holding an escape sequence, or longer than 256 bytes, is
/// refused before any prompt: nothing of it reaches the audit trail raw, nor
/// the administrator's `mfactl user show` / `user list` afterwards. (Before:
/// the items were taken, and a login from a tty of `ESC[2J` answered with a
/// right code left `local:ESC[2J` as the account's last source, printed raw
/// by mfactl.)
#[test]
fn control_characters_and_oversized_items_are_refused() {
    let user = TempUser::new("mfaa_tty", &[]);
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll(&user.name, "hotp");
    let services = services(&mfad);
    let safe = "mfaa-safe";
    services.add(safe, &[mfad.module_line("required", "failmode=safe"), "auth required pam_permit.so".into()]);
    // Every attempt answers the right code, as an attacker who holds it would.
    let client = |service: &str, items: &[(&str, &str)]| {
        let code = hotp(&secret, 1);
        let mut all = items.to_vec();
        all.push(("answer", &code));
        attempt(&mut services.pam_client(service, &user.name, &all), "")
    };

    let escape = "\x1b[2J\x1b]0;pwned\x07";
    assert_refused(&client(LOGIN, &[("tty", escape)]), "a tty with an escape sequence");
    assert_refused(&client(LOGIN, &[("tty", "pts/1\n")]), "a tty with a newline");
    assert_refused(&client(LOGIN, &[("rhost", "127.0.0.5\x1b[2J")]), "an rhost with an escape sequence");
    assert_refused(&client(LOGIN, &[("tty", &"t".repeat(257))]), "a tty of 257 bytes");
    assert_refused(&client(LOGIN, &[("rhost", &"h".repeat(257))]), "an rhost of 257 bytes");
    // An answer from mfad, not silence: failmode=safe does not let it through.
    assert_refused(&client(safe, &[("tty", escape)]), "an escape sequence, failmode=safe");
    assert_refused(&client(safe, &[("tty", &"t".repeat(300))]), "a tty of 300 bytes, failmode=safe");
    let big = mfad.dir.path().join("big-tty");
    std::fs::write(&big, "t".repeat(1024 * 1024)).unwrap();
    assert_refused(&client(LOGIN, &[("tty-file", big.to_str().unwrap())]), "a tty of 1 MiB");

    // The same client with a plain tty, and one of exactly 256 bytes, is
    // asked as usual: the refusals are the items', nothing else.
    let a = client(LOGIN, &[("tty", "pts/7")]);
    assert_asked(&a, true, "a plain tty");
    let a = attempt(
        &mut services.pam_client(LOGIN, &user.name, &[("tty", &"t".repeat(256)), ("answer", &hotp(&secret, 2))]),
        "",
    );
    assert_asked(&a, true, "a tty of 256 bytes");

    let lines = mfad.audit_lines_until(&format!("user={} service={LOGIN} rhost=- outcome=success", user.name));
    for l in &lines {
        assert!(!has_control(l.trim_end_matches('\n')), "an audit line holds a control character: {l:?}");
    }
    assert!(!lines.iter().any(|l| l.contains("pwned")), "{lines:#?}");
    for args in [&["user", "show", &user.name][..], &["user", "list"], &["--json", "user", "show", &user.name]] {
        let text = mfad.ok(args);
        assert!(!has_control(&text), "mfactl {args:?} prints a control character: {text:?}");
        assert!(!text.contains("pwned") && !text.contains("\\u001b"), "mfactl {args:?}: {text}");
    }
    let status = mfad.json(&["user", "show", &user.name]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(status["last_source"], format!("local:{}:{}", host.trim(), "t".repeat(256)), "{status}");
}

/// An item too long for one frame (over 1 MiB: a legacy service that sets
/// PAM_RHOST from what its client sent, say) must be refused like any item
/// over 256 bytes. Taken for an unreachable daemon instead, `failmode=safe`
/// lets the login through with no code; the secure failmode shows it is not
/// the user's rules that let it through.
#[test]
fn an_item_too_long_for_a_frame_is_no_way_around_failmode_safe() {
    let user = TempUser::new("mfaa_huge", &[]);
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll(&user.name, "hotp");
    let services = PamServices::new();
    let (secure, safe) = ("mfaa-secure", "mfaa-safe");
    services.add(secure, &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    services.add(safe, &[mfad.module_line("required", "failmode=safe"), "auth required pam_permit.so".into()]);
    let big = mfad.dir.path().join("big-item");
    std::fs::write(&big, "1".repeat(1024 * 1024 + 1)).unwrap();
    let big = big.to_str().unwrap();
    let client = |service: &str, item: &str| {
        let mut cmd = services.pam_client(service, &user.name, &[(item, big)]);
        attempt(cmd.args(["--answer", &hotp(&secret, 1)]), "")
    };
    for item in ["rhost-file", "tty-file"] {
        assert_refused(&client(secure, item), &format!("{item} of 1 MiB, failmode=secure"));
        assert_refused(&client(safe, item), &format!("{item} of 1 MiB, failmode=safe"));
    }
    // mfad is there all along: the same user from a plain rhost is asked.
    let a = attempt(
        &mut services.pam_client(safe, &user.name, &[("rhost", "127.0.0.5"), ("answer", &hotp(&secret, 1))]),
        "",
    );
    assert_asked(&a, true, "a plain rhost, failmode=safe");
}

// ---- 6. an audit flood ------------------------------------------------------------

/// A local user floods mfad with malformed frames, as fast as one process
/// can: mfad writes at most its allowance of lines for that uid each second
/// and one summary line with the count of the rest, and a real login's
/// decision made during the flood is in the log. (Before: one line per
/// frame, which journald's and rsyslog's rate limits would then drop along
/// with mfad's real decisions.)
#[test]
fn an_audit_flood_from_a_local_user_is_capped_and_real_decisions_stay() {
    const FRAMES: usize = 400;
    let user = TempUser::new("mfaa_flood", &[]);
    let mfad = Mfad::start("");
    let services = services(&mfad);
    let flood = format!(
        "import socket\n\
         for _ in range({FRAMES}):\n\
         \x20   s = socket.socket(socket.AF_UNIX)\n\
         \x20   s.connect({socket:?})\n\
         \x20   s.sendall(b'\\x00\\x00\\x00\\x09{{not json')\n\
         \x20   s.recv(4096)\n\
         \x20   s.close()\n",
        socket = mfad.socket.display().to_string()
    );
    let mut flooder = Command::new("setpriv")
        .args(["--reuid", &user.name, "--regid", &user.name, "--init-groups", "--", "/usr/bin/python3", "-c", &flood])
        .current_dir("/")
        .spawn()
        .unwrap();
    // A real login while the flood runs.
    let real = attempt(&mut services.pamtester(LOGIN, "root", &[("rhost", "127.0.0.1")]), "");
    assert!(real.ok, "{}", real.said);
    assert!(flooder.wait().unwrap().success());
    mfad.audit_lines_until("user=root service=mfaa-login rhost=127.0.0.1 outcome=not_required");

    let refused = format!("uid {}: malformed request refused", user.uid);
    // A connection may also find the user's 8 connections still held (by
    // threads yet to see the flood's last closes) and be refused as busy.
    let busy = format!("uid {}: too many connections, refused", user.uid);
    let summary = format!("uid {}: ", user.uid);
    let count = |lines: &[String], prefix: &str, suffix: &str| -> usize {
        lines.iter().filter_map(|l| l.split_once(prefix)?.1.strip_suffix(suffix)?.parse::<usize>().ok()).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = mfad.audit_lines_until(&refused);
        let written = lines.iter().filter(|l| l.contains(&refused) || l.contains(&busy)).count();
        let suppressed = count(&lines, &summary, " audit lines suppressed (more than 20 a second)\"");
        // mfad never waits for syslog: what the test's log socket (10
        // datagrams deep) had no room for is counted as lost, in a line of
        // its own, whoever's lines they were.
        let lost = count(&lines, "event=daemon message=\"", " audit lines lost: syslog was not taking them\"");
        assert!(written + suppressed <= FRAMES, "{written} written and {suppressed} suppressed of {FRAMES}");
        if written + suppressed + lost >= FRAMES {
            assert!(suppressed > 0 && written < FRAMES / 2, "{written} written, {suppressed} suppressed");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{written} written, {suppressed} suppressed and {lost} lost of {FRAMES}:\n{lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
