//! SPEC 15, a fleet: several hosts' mfad on one PostgreSQL database and one
//! key file. Each test runs two (or more) real daemons on a database of its
//! own and logs in through the real module with pamtester, so that any state
//! a host kept to itself (a used code, a failure, an approval, an IP rule)
//! would show as a host disagreeing with another. Also: the database gone
//! and back (failmode, nothing lost, one outage line), a wrong key refused
//! at start, a host's SQLite store moved in, key rotation, and TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::Write as _;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::postgres::{CERT_USER, PgCluster};
use e2e::*;

/// A name for a PAM service of this process's own: `prefix` and a number.
///
/// libpam-wrapper copies each client's stacks into a private dir
/// (/tmp/pam.X) that it picks by checking, then creating it; two clients
/// starting in the same instant (tests run in parallel) may share one,
/// each copying its stacks into it. With a name no other stack has, a
/// client still finds its own stack there, never another test's stack of
/// the same name (which would point at another daemon).
fn service_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Every code asked for, one try per conversation.
const ALWAYS: &str = "default_level = \"always\"\nmax_tries = 1";

// ---- fixtures of this suite ------------------------------------------------------

/// A fresh key file (32 random bytes, mode 0600) at `dir/name`.
fn new_key(dir: &Path, name: &str) -> PathBuf {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key)).unwrap();
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    file.write_all(&key).unwrap();
    path
}

/// The `[store]` lines [`Mfad::start_fleet`] writes.
fn fleet_section(url: &str, key: &Path, store_extra: &str) -> String {
    format!("backend = \"postgres\"\nurl = \"{url}\"\nkey_file = \"{}\"\n{store_extra}\n", key.display())
}

/// `accepted_key_files = [...]` for `[store]`.
fn accepted(keys: &[&Path]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.display())).collect();
    format!("accepted_key_files = [{}]", list.join(", "))
}

/// The database name in a libpq connection string.
fn dbname(conninfo: &str) -> String {
    conninfo.split_whitespace().find_map(|kv| kv.strip_prefix("dbname=")).unwrap().to_string()
}

/// What a PAM client run showed and how it ended.
#[derive(Debug)]
struct Attempt {
    ok: bool,
    /// A code was asked for.
    asked: bool,
    said: String,
}

/// Run a pamtester command with `input` on stdin.
///
/// libpam-wrapper picks each client's private config dir (/tmp/pam.X) by
/// checking then creating it, so two clients starting in the same instant
/// (this suite runs tests in parallel) may share one, and the first to exit
/// removes the other's copy of the stacks: pam_start then fails and nothing
/// reached mfad. Such a run is tried again (twice at most).
fn attempt(cmd: &mut Command, input: &str) -> Attempt {
    for _ in 0..3 {
        let out = run_with_input(cmd, input);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        if !said.contains("pamtester: Initialization failure") {
            return Attempt { ok: out.status.success(), asked: said.contains("Verification code"), said };
        }
    }
    panic!("pamtester could not start PAM three times: {cmd:?}");
}

fn line(code: &str) -> String {
    format!("{code}\n")
}

/// A code that is not `right`.
fn wrong(right: &str) -> &'static str {
    if right == "000000" { "111111" } else { "000000" }
}

fn said(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// oathtool's TOTP code at unix time `t`.
fn totp_at(secret: &str, t: u64) -> String {
    let out = run(Command::new("oathtool").args(["-b", "--totp", "-N", &format!("@{t}"), secret]));
    assert!(out.status.success(), "oathtool: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// A TOTP code of the next 30 s step: within the default skew of 1, and
/// after the step an enrollment confirmed just now used up.
fn totp_next(secret: &str) -> String {
    totp_at(secret, unix_now() + 30)
}

/// Retry `f` every 200 ms until it returns true, for up to 15 s; whether it did.
fn within_15s(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One host of the fleet: its mfad and PAM stacks pointing at its socket.
struct Host {
    mfad: Mfad,
    pam: PamServices,
    /// A login service: the module, then `pam_permit`, so a login that
    /// needs no code (the module's PAM_IGNORE) goes through with nothing on
    /// stdin.
    login: String,
}

impl Deref for Host {
    type Target = Mfad;
    fn deref(&self) -> &Mfad {
        &self.mfad
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Mfad {
        &mut self.mfad
    }
}

impl Host {
    /// A login service (module + pam_permit) and `sudo` (the module alone:
    /// an elevation service by default) on `mfad`'s socket.
    fn new(mfad: Mfad) -> Host {
        let pam = PamServices::new();
        let login = service_name("mfalogin");
        pam.add(&login, &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
        pam.add("sudo", &[mfad.module_line("required", "")]);
        Host { mfad, pam, login }
    }

    fn fleet(extra: &str, url: &str, key: &Path, store_extra: &str) -> Host {
        Host::new(Mfad::start_fleet(extra, url, key, store_extra))
    }

    /// pamtester on the login service as `user` from `rhost`, answering `input`.
    fn login(&self, user: &str, rhost: &str, input: &str) -> Attempt {
        attempt(&mut self.pam.pamtester(&self.login, user, &[("rhost", rhost)]), input)
    }

    /// A login that must be asked for a code and succeed with `code`.
    fn login_ok(&self, user: &str, code: &str, what: &str) {
        let a = self.login(user, "127.0.0.5", &line(code));
        assert!(a.asked && a.ok, "{what}: a code asked and accepted expected:\n{}\n{}", a.said, self.audit_tail());
    }

    /// A login that must be asked for a code and refused with `code`.
    fn login_refused(&self, user: &str, code: &str, what: &str) {
        let a = self.login(user, "127.0.0.5", &line(code));
        assert!(a.asked && !a.ok, "{what}: a code asked and refused expected:\n{}\n{}", a.said, self.audit_tail());
    }

    /// The host's last audit lines, for failure messages.
    fn audit_tail(&self) -> String {
        let lines = self.audit_lines_until("");
        format!("audit of {}:\n{}", self.socket.display(), lines[lines.len().saturating_sub(12)..].join("\n"))
    }

    /// pamtester on `sudo` for `ruser` (PAM_USER root), answering `input`.
    fn sudo(&self, ruser: &str, input: &str) -> Attempt {
        attempt(&mut self.pam.pamtester("sudo", "root", &[("rhost", "127.0.0.5"), ("ruser", ruser)]), input)
    }

    /// Enroll `user` as root; the secret and the recovery codes.
    fn enroll_with_codes(&self, user: &str, otp_type: &str) -> (String, Vec<String>) {
        let secret = self.json(&["user", "setup", user, "--type", otp_type])["secret"].as_str().unwrap().to_string();
        let code = if otp_type == "hotp" { hotp(&secret, 0) } else { totp_now(&secret) };
        let done = self.json(&["user", "setup", user, "--confirm", &code]);
        let codes = done["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string());
        (secret, codes.collect())
    }

    fn show(&self, user: &str) -> serde_json::Value {
        self.json(&["user", "show", user])
    }

    /// Rewrite the config with these `[store]` lines and restart.
    fn restart_with(&mut self, extra: &str, section: &str) {
        let text = Mfad::config_text_with_section(self.dir.path(), extra, section);
        std::fs::write(&self.config_path, text).unwrap();
        self.stop();
        self.launch();
    }

    /// Rewrite the config with these `[store]` lines, stop, and expect the
    /// next start to be refused; its stderr.
    fn refused_with(&mut self, extra: &str, section: &str) -> String {
        let text = Mfad::config_text_with_section(self.dir.path(), extra, section);
        std::fs::write(&self.config_path, text).unwrap();
        self.stop();
        self.launch_refused()
    }

    /// `mfad --config THIS-HOST'S ARGS...` (migrate-store, rekey).
    fn mfad_command(&self, args: &[&str]) -> Output {
        run(Command::new(bin("mfad")).arg("--config").arg(&self.config_path).args(args))
    }
}

/// Two hosts on a new database of `pg`, with a new key file, started at
/// once (so the schema is created by two hosts racing for it).
struct Fleet {
    a: Host,
    b: Host,
    url: String,
    key: PathBuf,
    keys: tempfile::TempDir,
}

impl Fleet {
    fn start(pg: &PgCluster, extra: &str) -> Fleet {
        Self::start_on(pg.new_database(), extra, "")
    }

    fn start_on(url: String, extra: &str, store_extra: &str) -> Fleet {
        let keys = tempfile::Builder::new().prefix("mfad-fleet-keys-").tempdir().unwrap();
        let key = new_key(keys.path(), "fleet.key");
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| Host::fleet(extra, &url, &key, store_extra));
            let b = s.spawn(|| Host::fleet(extra, &url, &key, store_extra));
            (a.join().unwrap(), b.join().unwrap())
        });
        Fleet { a, b, url, key, keys }
    }
}

/// Start mfad on a config of its own (a host that must not come up):
/// refused within 15 s, its stderr.
fn start_refused(extra: &str, section: &str) -> String {
    let dir = tempfile::Builder::new().prefix("mfad-refused-").tempdir().unwrap();
    let config = dir.path().join("mfad.toml");
    std::fs::write(&config, Mfad::config_text_with_section(dir.path(), extra, section)).unwrap();
    refused_start(&config, &dir.path().join("no-log"))
}

/// An mfad of the test's own (not [`Mfad`], whose start waits 30 s for a
/// READY that may never come): its stderr is kept, so that how it ends can
/// be checked. Killed on drop.
struct OwnDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    audit: Arc<Mutex<Vec<String>>>,
}

impl OwnDaemon {
    /// Start mfad on this config: Ok once it said READY=1, Err(its stderr)
    /// when it exited first (15 s at most).
    fn start(extra: &str, section: &str) -> Result<OwnDaemon, String> {
        let dir = tempfile::Builder::new().prefix("mfad-own-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.path().join("mfad.toml");
        std::fs::write(&config, Mfad::config_text_with_section(dir.path(), extra, section)).unwrap();
        let sink = UnixDatagram::bind(dir.path().join("log")).unwrap();
        let audit = Arc::new(Mutex::new(Vec::new()));
        let lines = audit.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = recv_retrying(&sink, &mut buf) {
                lines.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        let notify = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let child = Command::new(bin("mfad"))
            .arg("--config")
            .arg(&config)
            .arg("--syslog-socket")
            .arg(dir.path().join("log"))
            .env("NOTIFY_SOCKET", dir.path().join("notify"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut own = OwnDaemon { dir, child: Some(child), audit };
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 64];
        loop {
            if let Ok(n) = recv_retrying(&notify, &mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
            {
                return Ok(own);
            }
            let child = own.child.as_mut().unwrap();
            if child.try_wait().unwrap().is_some() {
                let out = own.child.take().unwrap().wait_with_output().unwrap();
                return Err(format!("{} ({})", stderr(&out), out.status));
            }
            assert!(Instant::now() < deadline, "mfad neither became ready nor exited within 15 s");
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mfad.sock")
    }

    fn mfactl(&self, args: &[&str]) -> Output {
        run(Command::new(bin("mfactl")).arg("--socket").arg(self.socket()).args(args))
    }

    fn module_line(&self, control: &str, options: &str) -> String {
        format!("auth {control} {} socket={} {options}", pam_module().display(), self.socket().display())
    }

    fn audit(&self) -> Vec<String> {
        self.audit.lock().unwrap().clone()
    }

    /// SIGTERM; how it exited (within 15 s) and its stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = wait_within(child, Duration::from_secs(15), "mfad did not stop within 15 s of SIGTERM");
        (out.status, stderr(&out))
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How many audit lines so far contain `needle` (once at least `at_least` do).
fn audit_count(mfad: &Mfad, needle: &str, at_least: usize) -> usize {
    mfad.audit_lines_until_count(needle, at_least).iter().filter(|l| l.contains(needle)).count()
}

// ---- 1. enroll once, log in everywhere ------------------------------------------------

#[test]
fn enrolled_on_one_host_logs_in_on_another() {
    let pg = PgCluster::shared();
    let fleet = Fleet::start(pg, ALWAYS);
    let (a, b) = (&fleet.a, &fleet.b);

    let hotp_secret = a.enroll("fl_enroll_h", "hotp");
    let totp_secret = a.enroll("fl_enroll_t", "totp");
    for user in ["fl_enroll_h", "fl_enroll_t"] {
        let shown = b.show(user);
        assert_eq!(shown["state"], "enabled", "{user} on B: {shown}");
    }
    // B opens the secret A sealed: the check value is the device's.
    assert_eq!(b.ok(&["user", "verify", "fl_enroll_h"]).trim(), hotp(&hotp_secret, 0));
    b.login_ok("fl_enroll_h", &hotp(&hotp_secret, 1), "HOTP user on B");
    b.login_ok("fl_enroll_t", &totp_next(&totp_secret), "TOTP user on B");
    b.audit_lines_until(&format!("user=fl_enroll_h service={} rhost=127.0.0.5 outcome=success", b.login));
    // The users are in the database, not on the hosts.
    let listed = pg.psql(&fleet.url, "SELECT name FROM users ORDER BY name");
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["fl_enroll_h", "fl_enroll_t"], "{listed}");
    let schema = pg.psql(&fleet.url, "SELECT count(*), max(version) FROM mfad_schema");
    assert_eq!(schema.trim(), "1|1", "one schema row after two hosts started at once");
    // A third host, started later, knows them too.
    let c = Host::fleet(ALWAYS, &fleet.url, &fleet.key, "");
    c.login_ok("fl_enroll_h", &hotp(&hotp_secret, 2), "HOTP user on a third host");
}

// ---- 2. replay is refused fleet-wide ----------------------------------------------------

#[test]
fn a_code_accepted_on_one_host_is_refused_on_every_other() {
    let fleet = Fleet::start(PgCluster::shared(), ALWAYS);
    let (a, b) = (&fleet.a, &fleet.b);
    let (h, codes) = a.enroll_with_codes("fl_replay_h", "hotp");
    let t = a.enroll("fl_replay_t", "totp");

    // HOTP: each counter once, whichever host sees it first.
    a.login_ok("fl_replay_h", &hotp(&h, 1), "counter 1 on A");
    b.login_refused("fl_replay_h", &hotp(&h, 1), "counter 1 again, on B");
    b.login_ok("fl_replay_h", &hotp(&h, 2), "counter 2 on B");
    a.login_refused("fl_replay_h", &hotp(&h, 2), "counter 2 again, on A");
    assert!(!b.mfactl(&["verify", "--user", "fl_replay_h", "--code", &hotp(&h, 2)]).status.success());

    // TOTP: the step accepted on A is used up on B.
    let code = totp_next(&t);
    a.login_ok("fl_replay_t", &code, "TOTP step on A");
    b.login_refused("fl_replay_t", &code, "the same TOTP step on B");
    let out = b.mfactl(&["verify", "--user", "fl_replay_t", "--code", &code]);
    assert_eq!(out.status.code(), Some(5), "mfactl verify of a used TOTP code on B: {}", said(&out));

    // Recovery codes are single-use fleet-wide too.
    let a_said = a.login("fl_replay_h", "127.0.0.5", &line(&codes[0]));
    assert!(a_said.ok && a_said.said.contains("Recovery code accepted; 9 left"), "{}", a_said.said);
    assert_eq!(b.show("fl_replay_h")["recovery_codes_left"], 9);
    b.login_refused("fl_replay_h", &codes[0], "a used recovery code on B");
}

// ---- 3. failures add up across hosts -----------------------------------------------------

#[test]
fn failures_on_two_hosts_add_up_to_one_lockout() {
    let fleet =
        Fleet::start(PgCluster::shared(), &format!("{ALWAYS}\n[lockout]\nmax_failures = 3\nduration = \"15m\""));
    let (a, b) = (&fleet.a, &fleet.b);
    let secret = a.enroll("fl_lock", "hotp");
    let right = hotp(&secret, 1);

    a.login_refused("fl_lock", wrong(&right), "wrong code 1 on A");
    a.login_refused("fl_lock", wrong(&right), "wrong code 2 on A");
    assert_eq!(b.show("fl_lock")["failures"], 2, "B sees A's failures");
    assert!(b.show("fl_lock")["locked_until"].is_null(), "not locked yet");
    b.login_refused("fl_lock", wrong(&right), "wrong code 3 on B");

    for (name, host) in [("A", a), ("B", b)] {
        let shown = host.show("fl_lock");
        assert!(shown["locked_until"].is_u64(), "locked as seen on {name}: {shown}");
        let out = host.mfactl(&["user", "show", "fl_lock"]);
        assert!(stdout(&out).contains("locked until") && !stdout(&out).contains("not locked"), "{}", said(&out));
        // The right code is refused while locked, on every host.
        let at = host.login("fl_lock", "127.0.0.5", &line(&right));
        assert!(!at.ok && at.said.contains("locked"), "right code while locked on {name}:\n{}", at.said);
    }
    for host in [a, b] {
        let service = &host.login;
        host.audit_lines_until(&format!(
            "user=fl_lock service={service} rhost=127.0.0.5 outcome=denied reason=\"account locked\""
        ));
    }

    // Unlocked on B: A lets the right code in at once.
    b.ok(&["user", "unlock", "fl_lock"]);
    assert_eq!(a.show("fl_lock")["failures"], 0);
    a.login_ok("fl_lock", &right, "after the unlock on B");
}

// ---- 4. approvals, levels and IP rules are fleet-wide ------------------------------------------

#[test]
fn approvals_levels_and_runtime_ip_rules_take_effect_on_every_host_at_once() {
    let extra = format!("{ALWAYS}\n[elevation]\nrequire_approval = true\n[bypass]\nenabled = true");
    let fleet = Fleet::start(PgCluster::shared(), &extra);
    let (a, b) = (&fleet.a, &fleet.b);
    let user = "fl_approve";
    let secret = a.enroll(user, "hotp");

    let s = b.sudo(user, &line(&hotp(&secret, 1)));
    assert!(!s.ok, "sudo on B before any approval:\n{}", s.said);
    b.audit_lines_until(&format!("user={user} service=sudo rhost=127.0.0.5 outcome=denied reason=\"elevation denied: super-user approval not granted\""));

    // Approved through A: B lets sudo in with a code.
    a.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    assert_eq!(b.show(user)["superuser_approved"], true);
    let s = b.sudo(user, &line(&hotp(&secret, 2)));
    assert!(s.ok && s.asked, "sudo on B after the approval on A:\n{}", s.said);

    // Revoked through B: A refuses at once.
    b.ok(&["user", "revoke", user]);
    let s = a.sudo(user, &line(&hotp(&secret, 3)));
    assert!(!s.ok, "sudo on A after the revoke on B:\n{}", s.said);
    a.audit_lines_until(&format!("user={user} service=sudo rhost=127.0.0.5 outcome=denied reason=\"elevation denied: super-user approval not granted\""));

    // A level set through A rules logins on B.
    a.ok(&["user", "level", user, "superuser"]);
    let l = b.login(user, "127.0.0.5", "");
    assert!(l.ok && !l.asked, "level superuser set on A, login on B:\n{}", l.said);
    b.ok(&["user", "level", user, "always"]);
    let l = a.login(user, "127.0.0.5", "");
    assert!(!l.ok && l.asked, "level always set on B, login on A:\n{}", l.said);

    // A runtime IP rule added through A bypasses on B; removed through B,
    // A asks again.
    let l = b.login(user, "127.0.0.77", "");
    assert!(!l.ok && l.asked, "no rule yet:\n{}", l.said);
    let id = a.json(&["ip", "add", "127.0.0.77", "--bypass-2fa"])["id"].as_i64().unwrap();
    let rules = b.json(&["ip", "list"])["rules"].clone();
    assert!(rules.as_array().unwrap().iter().any(|r| r["cidr"] == "127.0.0.77/32"), "B lists A's rule: {rules}");
    let l = b.login(user, "127.0.0.77", "");
    assert!(l.ok && !l.asked, "A's runtime rule on B:\n{}", l.said);
    b.audit_lines_until(&format!(
        "rhost=127.0.0.77 outcome=not_required reason=\"ip bypass by rule 127.0.0.77/32 (runtime #{id})\""
    ));
    b.ok(&["ip", "remove", &id.to_string()]);
    let l = a.login(user, "127.0.0.77", "");
    assert!(!l.ok && l.asked, "the rule removed on B, login on A:\n{}", l.said);
}

// ---- 5. a contested code --------------------------------------------------------------------

/// `per_host` PAM clients on each of `hosts` begin a login for `user`;
/// once every one of them has been asked for the code (its conversation
/// open on its host), all answer `code` at the same moment. How many
/// logins succeeded.
///
/// The clients are started one after the other (libpam-wrapper's set-up of
/// its private config dir races when several start in the same instant);
/// the contest is the answers, which go out together.
fn contest(hosts: &[&Host], per_host: usize, user: &str, code: &str) -> usize {
    let mut clients = Vec::new();
    for host in hosts {
        for _ in 0..per_host {
            let mut client = Interactive::start(host.pam.pam_client(&host.login, user, &[("rhost", "127.0.0.5")]));
            let prompt = client.expect_prompt();
            assert!(prompt.text.contains("Verification code"), "{prompt:?}\n{}", client.transcript);
            clients.push(client);
        }
    }
    let barrier = Barrier::new(clients.len());
    let results: Vec<(bool, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    client.answer(code);
                    client.finish()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(wins, 1, "{user}: {wins} of {} logins accepted code {code}: {results:#?}", results.len());
    // The losers were told their code was wrong (used), not turned away
    // for another reason (busy, unavailable).
    for (ok, transcript) in &results {
        assert!(*ok || transcript.contains("Wrong code"), "a loser: {transcript}");
    }
    wins
}

#[test]
fn a_contested_code_is_accepted_exactly_once_across_hosts() {
    let fleet = Fleet::start(PgCluster::shared(), &format!("{ALWAYS}\n[lockout]\nmax_failures = 1000"));
    let (a, b) = (&fleet.a, &fleet.b);
    let h = a.enroll("fl_contest_h", "hotp");
    let t = b.enroll("fl_contest_t", "totp");
    for counter in 1..=5 {
        let wins = contest(&[a, b], 4, "fl_contest_h", &hotp(&h, counter));
        assert_eq!(wins, 1, "HOTP counter {counter} offered 8 times at once on two hosts");
    }
    let wins = contest(&[a, b], 4, "fl_contest_t", &totp_next(&t));
    assert_eq!(wins, 1, "one TOTP code offered 8 times at once on two hosts");
    // The losers were counted as failures, then the winner's next success
    // cleared them; the device is where the winner left it.
    a.login_ok("fl_contest_h", &hotp(&h, 6), "the next counter after the contest");
}

// ---- 6. the database goes away and comes back -----------------------------------------------

#[test]
fn a_database_outage_applies_the_failmode_loses_nothing_and_heals_by_itself() {
    let pg = PgCluster::start();
    let extra = format!(
        "{ALWAYS}\n[lockout]\nmax_failures = 5\n[bypass]\nenabled = true\n\
         [[bypass.rule]]\ncidr = \"127.0.0.88\"\nbypass_2fa = true"
    );
    let fleet = Fleet::start(&pg, &extra);
    let (a, b) = (&fleet.a, &fleet.b);
    let user = "fl_outage";
    let secret = a.enroll(user, "hotp");
    a.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    // Stacks with failmode=safe on A: an ordinary login, one whose next
    // module denies, and sudo (elevation: stays closed).
    // (sudo-i: elevation for mfad and the module, and a name no other
    // test's stack has.)
    let safe = PamServices::new();
    let safe_line = a.module_line("required", "failmode=safe");
    let (login, deny) = (service_name("mfasafe"), service_name("mfasafedeny"));
    safe.add(&login, &[safe_line.clone(), "auth required pam_permit.so".into()]);
    safe.add(&deny, &[safe_line.clone(), "auth required pam_deny.so".into()]);
    safe.add("sudo-i", &[safe_line, "auth required pam_permit.so".into()]);
    let safe_login = |service: &str, user: &str, ruser: Option<&str>| {
        let mut items = vec![("rhost", "127.0.0.5")];
        items.extend(ruser.map(|r| ("ruser", r)));
        attempt(&mut safe.pamtester(service, user, &items), "")
    };

    // Before: acknowledged changes that must survive the outage.
    a.login_ok(user, &hotp(&secret, 2), "counter 2 on A before the outage");
    b.login_refused(user, wrong(&hotp(&secret, 3)), "a wrong code on B before the outage");
    assert_eq!(a.show(user)["failures"], 1);
    let s = safe_login(&login, user, None);
    assert!(!s.ok && s.asked, "failmode=safe with the database up still asks:\n{}", s.said);

    // A login asked for its code while the database is up, answered once
    // it is gone: mfad had prompted, so no failmode applies; denied.
    let mut mid = Interactive::start(safe.pam_client(&login, user, &[("rhost", "127.0.0.5")]));
    let prompt = mid.expect_prompt();
    assert!(prompt.text.contains("Verification code"), "{prompt:?}");

    pg.stop();

    mid.answer(&hotp(&secret, 3));
    let (ok, transcript) = mid.finish();
    assert!(!ok, "failmode=safe, code asked before the outage and checked during it:\n{transcript}");

    // failmode=secure: denied, saying why.
    for (name, host) in [("A", a), ("B", b)] {
        let l = host.login(user, "127.0.0.5", &line(&hotp(&secret, 3)));
        assert!(!l.ok && !l.asked, "secure login on {name} during the outage:\n{}", l.said);
        assert!(l.said.contains("unavailable"), "a clear message on {name}:\n{}", l.said);
    }
    a.audit_lines_until(&format!("user={user} service={} rhost=127.0.0.5 outcome=unavailable", a.login));
    // failmode=safe: PAM_IGNORE, so the stack's next module decides.
    let s = safe_login(&login, user, None);
    assert!(s.ok && !s.asked, "failmode=safe lets an ordinary login through to pam_permit:\n{}", s.said);
    let s = safe_login(&deny, user, None);
    assert!(!s.ok, "failmode=safe then pam_deny: denied:\n{}", s.said);
    let s = safe_login("sudo-i", "root", Some(user));
    assert!(!s.ok && s.said.contains("unavailable"), "failmode=safe keeps sudo-i closed:\n{}", s.said);
    // What needs no store is still decided: a config bypass rule.
    let l = a.login(user, "127.0.0.88", "");
    assert!(l.ok && !l.asked, "config bypass rule during the outage:\n{}", l.said);
    // mfactl: exit 7, "store unavailable", for reads and writes.
    for args in [
        vec!["user", "show", user],
        vec!["verify", "--user", user, "--code", &hotp(&secret, 3)],
        vec!["ip", "add", "127.0.0.99", "--bypass-2fa"],
    ] {
        for (name, host) in [("A", a), ("B", b)] {
            let out = host.mfactl(&args);
            assert_eq!(out.status.code(), Some(7), "mfactl {args:?} on {name}: {}", said(&out));
            assert!(stderr(&out).contains("store unavailable"), "mfactl {args:?} on {name}: {}", said(&out));
        }
    }

    pg.start_again();

    // No restart of mfad: B answers again by itself, with the failure
    // counted before the outage still there.
    let mut shown = serde_json::Value::Null;
    let back = within_15s(|| {
        let out = b.mfactl(&["--json", "user", "show", user]);
        if out.status.success() {
            shown = serde_json::from_str(&stdout(&out)).unwrap();
        }
        out.status.success()
    });
    assert!(back, "B did not reconnect within 15 s");
    assert_eq!(shown["failures"], 1, "a failure acknowledged before the outage: {shown}");
    // A logs in again by itself (the codes offered during the outage were
    // never checked, so counter 3 is still unused).
    let mut last = None;
    let back = within_15s(|| {
        let l = a.login(user, "127.0.0.5", &line(&hotp(&secret, 3)));
        let ok = l.ok;
        last = Some(l);
        ok
    });
    assert!(back, "A did not let a login in within 15 s of the database's return: {last:?}");
    // Codes accepted before the outage are still used.
    b.login_refused(user, &hotp(&secret, 2), "counter 2, accepted before the outage, on B");
    a.login_refused(user, &hotp(&secret, 3), "counter 3, accepted after the outage, on A");
    assert!(b.json(&["ip", "list"])["rules"].as_array().unwrap().iter().all(|r| r["cidr"] != "127.0.0.99/32"));
    let s = safe_login(&login, user, None);
    assert!(!s.ok && s.asked, "failmode=safe asks again once the database is back:\n{}", s.said);

    // The audit: one outage line and one return line per host, not one per request.
    for (name, host) in [("A", a), ("B", b)] {
        assert_eq!(audit_count(host, "store available again", 1), 1, "on {name}");
        let outage = host.audit_lines_until("the database cannot be reached");
        let outage: Vec<&String> = outage.iter().filter(|l| l.contains("the database cannot be reached")).collect();
        assert_eq!(outage.len(), 1, "one outage line on {name}: {outage:#?}");
        assert!(outage[0].contains("reconnects by itself"), "{}", outage[0]);
    }
}

// ---- 7. a host with another key ----------------------------------------------------------------

#[test]
fn a_host_with_another_key_is_refused_at_start() {
    let fleet = Fleet::start(PgCluster::shared(), ALWAYS);
    let secret = fleet.a.enroll("fl_key", "hotp");
    let other = new_key(fleet.keys.path(), "other.key");
    let refusal = start_refused(ALWAYS, &fleet_section(&fleet.url, &other, ""));
    assert!(refusal.contains("sealed with key"), "{refusal}");
    assert!(refusal.contains("copy the fleet's key file"), "{refusal}");
    // The same through a host that ran with the right key.
    let mut c = Host::fleet(ALWAYS, &fleet.url, &fleet.key, "");
    c.login_ok("fl_key", &hotp(&secret, 1), "on a third host with the fleet's key");
    let refusal = c.refused_with(ALWAYS, &fleet_section(&fleet.url, &other, ""));
    assert!(refusal.contains("sealed with key"), "{refusal}");
    // The refused hosts changed nothing.
    fleet.b.login_ok("fl_key", &hotp(&secret, 2), "on B after the refusals");
    assert_eq!(PgCluster::shared().psql(&fleet.url, "SELECT count(*) FROM meta WHERE name = 'key_id'").trim(), "1");
}

// ---- 8. a host's SQLite store moves into the fleet --------------------------------------------

#[test]
fn a_hosts_sqlite_store_moves_into_the_fleet() {
    let pg = PgCluster::shared();
    // The host as it was: SQLite, its own key file (which becomes the fleet's).
    let mut old = Host::new(Mfad::start(ALWAYS));
    let (m1, m1_codes) = old.enroll_with_codes("fl_mig_1", "hotp");
    let m2 = old.enroll("fl_mig_2", "hotp");
    old.login_ok("fl_mig_1", &hotp(&m1, 1), "counter 1 on the SQLite host");
    old.ok(&["ip", "add", "127.0.0.66", "--bypass-2fa"]);
    old.stop();

    let keys = tempfile::Builder::new().prefix("mfad-fleet-keys-").tempdir().unwrap();
    let key = keys.path().join("fleet.key");
    std::fs::copy(old.dir.path().join("secret.key"), &key).unwrap();
    let url = pg.new_database();
    let a = Host::fleet(ALWAYS, &url, &key, "");
    let b = Host::fleet(ALWAYS, &url, &key, "");
    let f = a.enroll("fl_mig_fleet", "hotp");
    let from = old.store.to_str().unwrap().to_string();

    let out = a.mfad_command(&["migrate-store", "--from", &from]);
    assert!(out.status.success(), "migrate-store: {}", said(&out));
    assert!(stdout(&out).contains("copied 2 accounts (0 replaced) and 1 IP rules"), "{}", said(&out));

    // The migrated users log in through the fleet, with their replay state.
    b.login_refused("fl_mig_1", &hotp(&m1, 1), "counter 1, used on the SQLite host, on B");
    b.login_ok("fl_mig_1", &hotp(&m1, 2), "counter 2 on B");
    a.login_ok("fl_mig_2", &hotp(&m2, 1), "the other migrated user on A");
    let r = a.login("fl_mig_1", "127.0.0.5", &line(&m1_codes[0]));
    assert!(r.ok, "a migrated recovery code on A:\n{}", r.said);
    let rules = b.json(&["ip", "list"])["rules"].clone();
    assert!(rules.as_array().unwrap().iter().any(|r| r["cidr"] == "127.0.0.66/32"), "{rules}");
    b.login_ok("fl_mig_fleet", &hotp(&f, 1), "the fleet's own user");

    // The host's store changes again: a new device for fl_mig_2, a new user.
    old.launch();
    let m2_new = old.enroll("fl_mig_2", "hotp");
    let m3 = old.enroll("fl_mig_3", "hotp");
    old.stop();

    // Without --replace: refused, naming the accounts, nothing copied.
    let out = a.mfad_command(&["migrate-store", "--from", &from]);
    assert!(!out.status.success(), "a second migrate without --replace: {}", said(&out));
    let text = said(&out);
    assert!(text.contains("nothing was copied") && text.contains("fl_mig_1") && text.contains("fl_mig_2"), "{text}");
    assert_eq!(b.show("fl_mig_3")["state"], "not_enrolled", "fl_mig_3 must not have been copied");
    b.login_ok("fl_mig_2", &hotp(&m2, 2), "fl_mig_2's fleet device still in place");
    a.login_refused("fl_mig_1", &hotp(&m1, 2), "fl_mig_1's fleet replay state still in place");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM ip_rules").trim(), "1");

    // With --replace: the host's records win.
    let out = a.mfad_command(&["migrate-store", "--from", &from, "--replace"]);
    assert!(out.status.success(), "migrate-store --replace: {}", said(&out));
    assert!(stdout(&out).contains("copied 3 accounts (2 replaced) and 0 IP rules"), "{}", said(&out));
    b.login_ok("fl_mig_2", &hotp(&m2_new, 1), "fl_mig_2's new device after --replace");
    a.login_refused("fl_mig_2", &hotp(&m2, 3), "fl_mig_2's old device after --replace");
    a.login_ok("fl_mig_3", &hotp(&m3, 1), "fl_mig_3 after --replace");
    b.login_ok("fl_mig_fleet", &hotp(&f, 2), "the fleet's own user is untouched");

    // Another host, with a key of its own: refused, nothing copied.
    let mut stranger = Mfad::start(ALWAYS);
    let s = stranger.enroll("fl_mig_stranger", "hotp");
    stranger.stop();
    let stranger_store = stranger.store.to_str().unwrap().to_string();
    let out = a.mfad_command(&["migrate-store", "--from", &stranger_store]);
    assert!(!out.status.success(), "a store sealed with another key: {}", said(&out));
    assert!(said(&out).contains("sealed with key"), "{}", said(&out));
    assert_eq!(b.show("fl_mig_stranger")["state"], "not_enrolled");
    // Its store re-sealed with the fleet's key: its recovery codes are still
    // hashed under its former key, which the fleet cannot check; they move
    // only when dropped.
    let rekey = run(Command::new(bin("mfad")).arg("--config").arg(&stranger.config_path).args([
        "rekey",
        "--new-key",
        key.to_str().unwrap(),
    ]));
    assert!(rekey.status.success(), "rekey of the host's store: {}", said(&rekey));
    let out = a.mfad_command(&["migrate-store", "--from", &stranger_store]);
    assert!(!out.status.success() && said(&out).contains("--drop-recovery-codes"), "{}", said(&out));
    assert_eq!(b.show("fl_mig_stranger")["state"], "not_enrolled");
    let out = a.mfad_command(&["migrate-store", "--from", &stranger_store, "--drop-recovery-codes"]);
    assert!(
        out.status.success() && stdout(&out).contains("recovery codes of 1 accounts were dropped"),
        "{}",
        said(&out)
    );
    b.login_ok("fl_mig_stranger", &hotp(&s, 1), "the other host's user, through the fleet");
    assert_eq!(b.show("fl_mig_stranger")["recovery_codes_left"], 0);
}

// ---- 9. key rotation --------------------------------------------------------------------------

/// The store's key id as recorded in the database.
fn store_key_id(url: &str) -> String {
    PgCluster::shared().psql(url, "SELECT value FROM meta WHERE name = 'key_id'").trim().to_string()
}

#[test]
fn rekey_reseals_the_fleet_and_retires_the_old_key() {
    let mut fleet = Fleet::start(PgCluster::shared(), ALWAYS);
    let (h, codes) = fleet.a.enroll_with_codes("fl_rekey_h", "hotp");
    let t = fleet.b.enroll("fl_rekey_t", "totp");
    fleet.a.login_ok("fl_rekey_h", &hotp(&h, 1), "before the rekey");
    let old_id = store_key_id(&fleet.url);
    let new = new_key(fleet.keys.path(), "new.key");

    // Every host holds the new key first.
    let both = fleet_section(&fleet.url, &fleet.key, &accepted(&[&new]));
    fleet.a.restart_with(ALWAYS, &both);
    fleet.b.restart_with(ALWAYS, &both);
    let out = fleet.a.mfad_command(&["rekey", "--new-key", new.to_str().unwrap()]);
    assert!(out.status.success(), "rekey: {}", said(&out));
    assert!(stdout(&out).contains("re-sealed 2 of 2 accounts"), "{}", said(&out));
    let new_id = store_key_id(&fleet.url);
    assert_ne!(new_id, old_id);
    assert!(stdout(&out).contains(&new_id), "{}", said(&out));
    let pg = PgCluster::shared();
    assert_eq!(pg.psql(&fleet.url, "SELECT count(*) FROM meta WHERE name = 'rekey_to'").trim(), "0");

    // Logins work on both running hosts.
    let (a, b) = (&fleet.a, &fleet.b);
    b.login_ok("fl_rekey_h", &hotp(&h, 2), "HOTP on B after the rekey");
    a.login_ok("fl_rekey_h", &hotp(&h, 3), "HOTP on A after the rekey");
    a.login_ok("fl_rekey_t", &totp_next(&t), "TOTP on A after the rekey");
    let r = b.login("fl_rekey_h", "127.0.0.5", &line(&codes[0]));
    assert!(r.ok, "a recovery code issued before the rekey, on B:\n{}", r.said);

    // A host with only the new key starts, and opens every record.
    let c = Host::fleet(ALWAYS, &fleet.url, &new, "");
    c.login_ok("fl_rekey_h", &hotp(&h, 4), "on a host with only the new key");
    assert_eq!(c.ok(&["user", "verify", "fl_rekey_t"]).trim(), hotp(&t, 0), "the TOTP secret opens with the new key");
    let r = c.login("fl_rekey_h", "127.0.0.5", &line(&codes[1]));
    assert!(r.ok, "a recovery code on a host with only the new key:\n{}", r.said);

    // A host with only the old key is refused.
    let refusal = fleet.b.refused_with(ALWAYS, &fleet_section(&fleet.url, &fleet.key, ""));
    assert!(refusal.contains("sealed with key") && refusal.contains(&new_id), "{refusal}");
    let refusal = start_refused(ALWAYS, &fleet_section(&fleet.url, &fleet.key, ""));
    assert!(refusal.contains("sealed with key"), "{refusal}");
    // Moved to the new key, B is back.
    fleet.b.restart_with(ALWAYS, &fleet_section(&fleet.url, &new, ""));
    fleet.b.login_ok("fl_rekey_h", &hotp(&h, 5), "B with only the new key");
}

/// A rekey while the hosts run (they held the new key beforehand, as the
/// procedure asks): an enrollment made afterwards on a host that has not
/// been restarted must be sealed so that a host holding only the new key
/// opens it; `mfad rekey` said every record is sealed with it.
#[test]
fn an_enrollment_after_a_rekey_opens_with_the_new_key_alone() {
    let mut fleet = Fleet::start(PgCluster::shared(), ALWAYS);
    let new = new_key(fleet.keys.path(), "new.key");
    let both = fleet_section(&fleet.url, &fleet.key, &accepted(&[&new]));
    fleet.a.restart_with(ALWAYS, &both);
    fleet.b.restart_with(ALWAYS, &both);
    fleet.a.enroll("fl_rekey2_before", "hotp");
    let out = fleet.a.mfad_command(&["rekey", "--new-key", new.to_str().unwrap()]);
    assert!(out.status.success(), "rekey: {}", said(&out));

    let secret = fleet.a.enroll("fl_rekey2_after", "hotp");
    let c = Host::fleet(ALWAYS, &fleet.url, &new, "");
    let out = c.mfactl(&["user", "verify", "fl_rekey2_after"]);
    let audit = c.audit_lines_until("");
    assert!(
        out.status.success() && stdout(&out).trim() == hotp(&secret, 0),
        "a host with only the new key cannot open an enrollment made after the rekey: {}\naudit: {audit:#?}",
        said(&out)
    );
    c.login_ok("fl_rekey2_after", &hotp(&secret, 1), "on the host with only the new key");
}

// ---- 10. TLS ---------------------------------------------------------------------------------

#[test]
fn tls_verify_full_works_with_the_fleets_ca_and_fails_closed_with_another() {
    let (pg, tls) = PgCluster::start_tls();
    let db = dbname(&pg.new_database());
    let url = format!("host=127.0.0.1 port={} user=mfad dbname={db}", tls.tcp_port);
    let verify_full = |ca: &Path| format!("sslmode = \"verify-full\"\nca_file = \"{}\"", ca.display());

    let fleet = Fleet::start_on(url.clone(), ALWAYS, &verify_full(&tls.ca_file));
    let secret = fleet.a.enroll("fl_tls", "hotp");
    fleet.b.login_ok("fl_tls", &hotp(&secret, 1), "over TLS on B");
    // The sessions really are TLS.
    let ssl = pg.psql(
        "postgres",
        &format!(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{db}' AND a.application_name = 'mfad'"
        ),
    );
    let (all_tls, count) = ssl.trim().split_once('|').unwrap();
    assert!(all_tls == "t" && count.parse::<u32>().unwrap() >= 2, "mfad's connections: {ssl}");

    // A host that logs in with the client certificate (cert authentication).
    let cert_url = url.replace("user=mfad", &format!("user={CERT_USER}"));
    let with_cert = format!(
        "{}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        verify_full(&tls.ca_file),
        tls.client_cert.display(),
        tls.client_key.display()
    );
    let c = Host::fleet(ALWAYS, &cert_url, &fleet.key, &with_cert);
    c.login_ok("fl_tls", &hotp(&secret, 2), "over TLS with a client certificate");

    // A server certificate another CA signed, and plain TCP (which the
    // server's pg_hba rejects), must both fail closed. Today mfad connects
    // at start (to bring the schema up to date and check the key), so such
    // a host is refused at start; a host that came up and answered
    // `unavailable` to every request (mfactl exit 7) would fail closed too,
    // and is accepted here.
    for (what, store_extra) in
        [("another CA", verify_full(&tls.other_ca_file)), ("plain TCP", "sslmode = \"disable\"".to_string())]
    {
        match OwnDaemon::start(ALWAYS, &fleet_section(&url, &fleet.key, &store_extra)) {
            Err(refusal) => assert!(refusal.contains("cannot open the store"), "{what}: {refusal}"),
            Ok(host) => {
                let out = host.mfactl(&["user", "show", "fl_tls"]);
                assert_eq!(out.status.code(), Some(7), "{what}: {}", said(&out));
            }
        }
    }
    // Nothing of that reached the fleet.
    fleet.a.login_ok("fl_tls", &hotp(&secret, 3), "over TLS on A afterwards");
}

/// The reason given when the server's certificate does not verify names
/// the certificate (an operator must tell a wrong `ca_file` from a database
/// that is down), and a refusal at start does not promise a reconnect.
#[test]
fn a_server_certificate_from_another_ca_is_named_as_the_reason() {
    let (pg, tls) = PgCluster::start_tls();
    let db = dbname(&pg.new_database());
    let url = format!("host=127.0.0.1 port={} user=mfad dbname={db}", tls.tcp_port);
    let keys = tempfile::Builder::new().prefix("mfad-fleet-keys-").tempdir().unwrap();
    let key = new_key(keys.path(), "fleet.key");
    let store_extra = format!("sslmode = \"verify-full\"\nca_file = \"{}\"", tls.other_ca_file.display());
    match OwnDaemon::start(ALWAYS, &fleet_section(&url, &key, &store_extra)) {
        Err(refusal) => {
            assert!(refusal.to_lowercase().contains("certificate"), "the refusal names the certificate: {refusal}");
            assert!(
                !refusal.contains("reconnects by itself"),
                "mfad exits, yet its refusal says it reconnects by itself: {refusal}"
            );
        }
        Ok(host) => {
            let out = host.mfactl(&["user", "show", "fl_tls_ca"]);
            assert_eq!(out.status.code(), Some(7), "{}", said(&out));
            let audit = host.audit().join("\n");
            assert!(audit.to_lowercase().contains("certificate"), "the audit names the certificate: {audit}");
        }
    }
}

// ---- more on outages -------------------------------------------------------------------------

/// SPEC 15: while the database is unreachable mfad still decides what needs
/// no store (a config bypass rule, `enabled = false`) and reconnects by
/// itself. A host that starts (a reboot, a package upgrade) during an
/// outage does the same, and checks its key once the database answers: a
/// host with another key is then refused every request.
#[test]
fn a_host_started_while_the_database_is_down_answers_unavailable_and_heals() {
    let pg = PgCluster::start();
    let extra =
        format!("{ALWAYS}\n[bypass]\nenabled = true\n[[bypass.rule]]\ncidr = \"127.0.0.88\"\nbypass_2fa = true");
    let url = pg.new_database();
    let keys = tempfile::Builder::new().prefix("mfad-fleet-keys-").tempdir().unwrap();
    let key = new_key(keys.path(), "fleet.key");
    let other = new_key(keys.path(), "other.key");
    let a = Host::fleet(&extra, &url, &key, "");
    let secret = a.enroll("fl_cold", "hotp");

    pg.stop();
    let started = |key: &Path| {
        OwnDaemon::start(&extra, &fleet_section(&url, key, "")).unwrap_or_else(|refusal| {
            panic!(
                "a host started during a database outage must come up and answer `unavailable`; it refused: {refusal}"
            )
        })
    };
    let c = started(&key);
    let wrong = started(&other);
    let out = c.mfactl(&["user", "show", "fl_cold"]);
    assert_eq!(out.status.code(), Some(7), "{}", said(&out));
    let pam = PamServices::new();
    let login = service_name("mfacold");
    pam.add(&login, &[c.module_line("required", ""), "auth required pam_permit.so".into()]);
    let l = attempt(&mut pam.pamtester(&login, "fl_cold", &[("rhost", "127.0.0.88")]), "");
    assert!(l.ok && !l.asked, "a config bypass rule needs no store:\n{}", l.said);

    pg.start_again();
    assert!(within_15s(|| c.mfactl(&["user", "show", "fl_cold"]).status.success()), "no reconnect within 15 s");
    let l = attempt(&mut pam.pamtester(&login, "fl_cold", &[("rhost", "127.0.0.5")]), &line(&hotp(&secret, 1)));
    assert!(l.ok && l.asked, "{}", l.said);
    // The host with another key reaches the database too, and is refused.
    let out = wrong.mfactl(&["user", "show", "fl_cold"]);
    assert!(!out.status.success() && said(&out).contains("may not use the store"), "{}", said(&out));
}

/// SPEC 14: mfad answers every first request within a deadline shorter than
/// the module's default timeout (10 s); a store lookup that outlasts it is
/// answered (a deny, or `unavailable`), never silence. Here the database is
/// up but a session holds the users table locked for 12 s.
#[test]
fn a_database_that_does_not_answer_is_not_silence() {
    let pg = PgCluster::shared();
    let fleet = Fleet::start(pg, ALWAYS);
    let secret = fleet.a.enroll("fl_slow", "hotp");
    let url = fleet.url.clone();
    let holder = std::thread::spawn(move || {
        PgCluster::shared().try_psql(&url, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(12)")
    });
    let locked = within_15s(|| {
        let sql = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                   WHERE c.relname = 'users' AND l.mode = 'AccessExclusiveLock' AND l.granted";
        pg.psql(&fleet.url, sql).trim() == "1"
    });
    assert!(locked, "the lock was not taken");

    let started = Instant::now();
    let l = fleet.a.login("fl_slow", "127.0.0.5", &line(&hotp(&secret, 1)));
    let took = started.elapsed();
    holder.join().unwrap().unwrap();
    assert!(!l.ok, "{}", l.said);
    assert!(
        took < Duration::from_secs(10) && l.said.contains("store"),
        "mfad must answer before the module's 10 s timeout, saying its store is the cause; took {took:?}:\n{}\naudit: {:#?}",
        l.said,
        fleet.a.audit_lines_until("")
    );
    fleet.a.login_ok("fl_slow", &hotp(&secret, 1), "once the lock is gone");
}

/// SIGTERM ends a PostgreSQL-backed mfad cleanly (exit 0, like a SQLite
/// one): a service manager must not see a stop as a failure.
#[test]
fn sigterm_stops_a_fleet_host_cleanly() {
    let url = PgCluster::shared().new_database();
    let keys = tempfile::Builder::new().prefix("mfad-fleet-keys-").tempdir().unwrap();
    let key = new_key(keys.path(), "fleet.key");
    let host = OwnDaemon::start("", &fleet_section(&url, &key, "")).unwrap();
    let out = host.mfactl(&["user", "list"]);
    assert!(out.status.success(), "{}", said(&out));
    let socket = host.socket();
    let (status, err) = host.terminate();
    assert!(!socket.exists(), "the socket is removed");
    assert!(status.success() && !err.contains("panicked"), "mfad stopped with {status}:\n{err}");
}
