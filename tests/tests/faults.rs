//! SPEC 13 fault tests: mfad killed in the middle of a load loses no
//! enrollment and, after a restart, never accepts a code it acknowledged
//! before the crash; the store full, read-only, deleted or corrupt fails
//! closed with a reason and loses nothing; a stopped daemon denies logins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const USERS: usize = 6;

#[test]
fn a_crash_mid_load_loses_nothing_acknowledged() {
    let mut mfad = Mfad::start("[lockout]\nmax_failures = 1000");
    let file = mfad.dir.path().join("users.jsonl");
    let mut text = String::new();
    for u in 0..USERS {
        writeln!(text, "{{\"user\":\"crash{u}\",\"type\":\"hotp\",\"secret\":\"{SECRET}\"}}").unwrap();
    }
    std::fs::write(&file, text).unwrap();
    assert_eq!(mfad.json(&["user", "import", file.to_str().unwrap()])["imported"], USERS as u64);

    // Each worker walks its user's counter; it records the counters mfad
    // acknowledged as accepted.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(vec![Vec::<u64>::new(); USERS]));
    let socket = mfad.socket.clone();
    let workers: Vec<_> = (0..USERS)
        .map(|u| {
            let (stop, acknowledged, socket) = (stop.clone(), acknowledged.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut counter = 0;
                while !stop.load(Ordering::SeqCst) && counter < 400 {
                    let code = hotp(SECRET, counter);
                    let out = run(std::process::Command::new(bin("mfactl")).arg("--socket").arg(&socket).args([
                        "verify",
                        "--user",
                        &format!("crash{u}"),
                        "--code",
                        &code,
                    ]));
                    if out.status.success() {
                        acknowledged.lock().unwrap()[u].push(counter);
                    }
                    counter += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    mfad.kill();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    mfad.launch();

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.iter().all(|a| !a.is_empty()), "the load ran before the crash: {acknowledged:?}");
    for (u, counters) in acknowledged.iter().enumerate() {
        let user = format!("crash{u}");
        assert_eq!(mfad.json(&["user", "show", &user])["state"], "enabled", "{user} lost its enrollment");
        for &c in counters.iter().rev().take(3) {
            let out = mfad.mfactl(&["verify", "--user", &user, "--code", &hotp(SECRET, c)]);
            assert!(
                !out.status.success(),
                "{user}: counter {c} was acknowledged before the crash and accepted again after it"
            );
        }
    }
}

/// What strace saw mfad do while one code was checked: the sync of the
/// store's WAL returns before the answer is sent, and it is an fdatasync
/// (the bundled SQLite is built with HAVE_FDATASYNC, .cargo/config.toml:
/// with fsync, a commit on ext4 with a journal also commits the journal
/// whenever the file's time stamps changed).
#[test]
fn a_code_is_acknowledged_only_after_the_store_is_synced() {
    use std::io::BufRead as _;
    let mfad = Mfad::start("");
    let secret = mfad.enroll("synced", "hotp");
    let trace = mfad.dir.path().join("strace.out");
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-s", "64", "-e", "trace=fsync,fdatasync,sendto,sendmsg,write", "-o"])
        .arg(&trace)
        .args(["-p", &mfad.pid().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace (is it installed?)");
    // strace says so on stderr once it has attached to every thread.
    let mut messages = std::io::BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    while messages.read_line(&mut line).unwrap() > 0 && !line.contains("attached") {
        line.clear();
    }
    assert!(line.contains("attached"), "strace did not attach: {line}");
    let out = mfad.mfactl(&["verify", "--user", "synced", "--code", &hotp(&secret, 1)]);
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait().unwrap();
    assert!(out.status.success(), "the code was refused: {}", said(&out));

    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.iter().any(|l| l.contains("fsync(") && l.contains("-wal>")),
        "the WAL was synced with fsync, not fdatasync:\n{text}"
    );
    let sync = lines
        .iter()
        .position(|l| l.contains("fdatasync(") && l.contains("-wal>"))
        .unwrap_or_else(|| panic!("no fdatasync of the WAL:\n{text}"));
    // The call returns on its own line, or later on a "resumed" line of the
    // same thread when another thread's call came in between.
    let tid = lines[sync].split_whitespace().next().unwrap();
    let synced = if lines[sync].ends_with("= 0") {
        sync
    } else {
        sync + lines[sync..]
            .iter()
            .position(|l| l.starts_with(tid) && l.contains("fdatasync resumed>") && l.ends_with("= 0"))
            .unwrap_or_else(|| panic!("the fdatasync did not return 0:\n{text}"))
    };
    let answer = lines
        .iter()
        .position(|l| l.contains("sendto(") && l.contains("response"))
        .unwrap_or_else(|| panic!("no answer sent:\n{text}"));
    assert!(synced < answer, "the answer was sent before the WAL was synced:\n{text}");
}

/// A small tmpfs of the test's own, unmounted on drop (lazily if a process
/// still holds it). Declare it before the Mfad using it, so the daemon is
/// stopped first.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("mfad-tmpfs-").tempdir().unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path()));
        assert!(out.status.success(), "mount tmpfs: {}", stderr(&out));
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mount -o remount,OPTIONS`; its output.
    fn remount(&self, options: &str) -> Output {
        run(Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(self.path()))
    }

    /// A file that takes every free block; deleting it gives the space back.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "filling: {err}");
                    break;
                }
            }
        }
        // The last partial write may have taken a few bytes more.
        while file.write(&chunk[..512]).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path().to_path_buf();
        let _ = run(Command::new("mount").args(["-o", "remount,rw"]).arg(&path));
        if !run(Command::new("umount").arg(&path)).status.success() {
            let _ = run(Command::new("umount").arg("-l").arg(&path));
        }
    }
}

fn pamtester_code(services: &PamServices, service: &str, user: &str, code: &str) -> Output {
    run_with_input(&mut services.pamtester(service, user, &[("rhost", "127.0.0.1")]), &format!("{code}\n"))
}

fn said(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

#[test]
fn a_full_file_system_fails_closed_loses_nothing_and_recovers_by_itself() {
    let fs = Tmpfs::mount("2m");
    let mut mfad = Mfad::start_with_store("default_level = \"always\"\nmax_tries = 1", Some(fs.path()));
    let a = mfad.enroll("full_a", "hotp");
    let b = mfad.enroll("full_b", "hotp");
    let services = PamServices::new();
    services.add("mfafull", &[mfad.module_line("required", "")]);
    let login = |user: &str, code: &str| pamtester_code(&services, "mfafull", user, code);
    let out = login("full_a", &hotp(&a, 1));
    assert!(out.status.success(), "before the fill: {}", said(&out));

    let filler = fs.fill();
    // A code check writes its effect before it is acknowledged: no write,
    // no login.
    let out = login("full_a", &hotp(&a, 2));
    assert!(!out.status.success(), "a login whose code check cannot be written: {}", said(&out));
    mfad.audit_lines_until("the file system holding the store is full");
    let out = mfad.mfactl(&["verify", "--user", "full_b", "--code", &hotp(&b, 1)]);
    assert_eq!(out.status.code(), Some(7), "mfactl: {}", said(&out));
    assert!(stderr(&out).contains("store unavailable"), "mfactl: {}", said(&out));
    assert!(stderr(&out).contains("the file system holding the store is full"), "mfactl: {}", said(&out));
    let out = mfad.mfactl(&["user", "setup", "full_c", "--type", "hotp"]);
    assert!(!out.status.success(), "an enrollment cannot be written either: {}", said(&out));
    // What needs no write still works.
    for user in ["full_a", "full_b"] {
        assert_eq!(mfad.json(&["user", "show", user])["state"], "enabled", "{user}");
    }

    // Space returns: no restart, logins work again, nothing was lost and
    // nothing refused was counted.
    std::fs::remove_file(&filler).unwrap();
    let out = login("full_a", &hotp(&a, 2));
    assert!(out.status.success(), "after the space came back: {}", said(&out));
    assert!(!login("full_a", &hotp(&a, 1)).status.success(), "a code accepted before the fill is still used");
    mfad.ok(&["verify", "--user", "full_b", "--code", &hotp(&b, 1)]);
    mfad.enroll("full_c", "hotp");
    // The fault and its end, each logged once, not at every request.
    let lines = mfad.audit_lines_until("store available again");
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!((count("holding the store is full"), count("store available again")), (1, 1), "{lines:#?}");

    // And all of it is on disk.
    mfad.stop();
    mfad.launch();
    for user in ["full_a", "full_b", "full_c"] {
        assert_eq!(mfad.json(&["user", "show", user])["state"], "enabled", "{user}");
    }
    assert!(!login("full_a", &hotp(&a, 2)).status.success(), "replay after restart");
    assert!(!mfad.mfactl(&["verify", "--user", "full_b", "--code", &hotp(&b, 1)]).status.success());
    assert!(login("full_a", &hotp(&a, 3)).status.success());
}

#[test]
fn a_read_only_file_system_fails_closed_and_recovers() {
    let fs = Tmpfs::mount("4m");
    let mut mfad = Mfad::start_with_store("default_level = \"always\"\nmax_tries = 1", Some(fs.path()));
    let a = mfad.enroll("ro_a", "hotp");
    let services = PamServices::new();
    services.add("mfaro", &[mfad.module_line("required", "")]);
    let login = |code: &str| pamtester_code(&services, "mfaro", "ro_a", code);
    assert!(login(&hotp(&a, 1)).status.success());

    // While mfad holds the store open for writing, Linux refuses to make
    // the file system read-only (EBUSY); should it ever allow it, the
    // daemon must fail closed and recover all the same.
    let remount = fs.remount("ro");
    if remount.status.success() {
        let out = login(&hotp(&a, 2));
        assert!(!out.status.success(), "a login on a read-only store: {}", said(&out));
        mfad.audit_lines_until("the file system holding the store is read-only");
        assert!(fs.remount("rw").status.success());
        assert!(login(&hotp(&a, 2)).status.success(), "after remount rw");
    } else {
        assert!(said(&remount).contains("busy"), "{}", said(&remount));
        assert!(login(&hotp(&a, 2)).status.success(), "the refused remount changed nothing");
    }

    // A store on a read-only file system at start: a clear refusal (the
    // service manager restarts mfad), and a start once it is writable.
    mfad.stop();
    let remount = fs.remount("ro");
    assert!(remount.status.success(), "remount ro with mfad stopped: {}", said(&remount));
    let refusal = mfad.launch_refused();
    assert!(refusal.contains("read-only file system") && refusal.contains("remount it read-write"), "{refusal}");
    assert!(refusal.contains(&mfad.store.display().to_string()), "{refusal}");
    assert!(fs.remount("rw").status.success());
    mfad.launch();
    assert_eq!(mfad.json(&["user", "show", "ro_a"])["state"], "enabled");
    assert!(!login(&hotp(&a, 2)).status.success(), "replay");
    assert!(login(&hotp(&a, 3)).status.success());
}

/// The store's file and SQLite's companions.
fn store_files(mfad: &Mfad) -> Vec<PathBuf> {
    ["", "-wal", "-shm"].iter().map(|s| PathBuf::from(format!("{}{s}", mfad.store.display()))).collect()
}

#[test]
fn a_store_deleted_under_the_daemon_fails_closed_and_is_never_recreated() {
    let mut mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let a = mfad.enroll("del_a", "hotp");
    let services = PamServices::new();
    services.add("mfadel", &[mfad.module_line("required", "")]);
    let login = |code: &str| pamtester_code(&services, "mfadel", "del_a", code);
    assert!(login(&hotp(&a, 1)).status.success());
    for file in store_files(&mfad) {
        std::fs::remove_file(&file).unwrap();
    }
    let out = login(&hotp(&a, 2));
    assert!(!out.status.success(), "a login on a deleted store: {}", said(&out));
    mfad.audit_lines_until("the store file was deleted or replaced while mfad was running");
    // Not answered from an empty store either: the user is not "unknown".
    let out = mfad.mfactl(&["user", "show", "del_a"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(stderr(&out).contains("deleted or replaced"), "{}", said(&out));
    let out = mfad.mfactl(&["user", "setup", "del_b", "--type", "hotp"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(!mfad.store.exists(), "a fresh store appeared");

    // At the next start: a refusal that says what to do, and no new store.
    mfad.stop();
    let refusal = mfad.launch_refused();
    assert!(refusal.contains("is missing, but key file") && refusal.contains("Restore it from backup"), "{refusal}");
    assert!(refusal.contains("mfad --init-store"), "{refusal}");
    assert!(!mfad.store.exists(), "a fresh store appeared");
}

#[test]
fn a_store_overwritten_under_the_daemon_fails_closed_and_is_refused_at_start() {
    let mut mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let a = mfad.enroll("cor_a", "hotp");
    let services = PamServices::new();
    services.add("mfacor", &[mfad.module_line("required", "")]);
    let login = |code: &str| pamtester_code(&services, "mfacor", "cor_a", code);
    assert!(login(&hotp(&a, 1)).status.success());
    let len = std::fs::metadata(&mfad.store).unwrap().len() as usize;
    std::fs::write(&mfad.store, vec![0x5au8; len.max(8192)]).unwrap();
    let out = login(&hotp(&a, 2));
    assert!(!out.status.success(), "a login on a corrupt store: {}", said(&out));
    mfad.audit_lines_until("the store file is corrupt");
    let out = mfad.mfactl(&["user", "show", "cor_a"]);
    assert!(!out.status.success() && stderr(&out).contains("corrupt"), "{}", said(&out));

    mfad.stop();
    let garbage = std::fs::read(&mfad.store).unwrap();
    let refusal = mfad.launch_refused();
    assert!(
        refusal.contains("is not a usable SQLite database") && refusal.contains("Restore it from backup"),
        "{refusal}"
    );
    assert_eq!(std::fs::read(&mfad.store).unwrap(), garbage, "the file was left as it was");
}

#[test]
fn a_store_open_to_others_or_owned_by_another_user_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut mfad = Mfad::start("");
    mfad.enroll("perm_a", "hotp");
    mfad.stop();
    let path = mfad.store.display().to_string();
    std::fs::set_permissions(&mfad.store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refusal = mfad.launch_refused();
    assert!(refusal.contains(&format!("run: chmod 600 {path}")), "{refusal}");
    std::fs::set_permissions(&mfad.store, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&mfad.store, Some(65534), None).unwrap();
    let refusal = mfad.launch_refused();
    assert!(refusal.contains("owned by uid 65534") && refusal.contains(&format!("run: chown 0 {path}")), "{refusal}");
    std::os::unix::fs::chown(&mfad.store, Some(0), None).unwrap();
    mfad.launch();
    assert_eq!(mfad.json(&["user", "show", "perm_a"])["state"], "enabled");
}

/// Sends SIGCONT on drop, so a failing test leaves no stopped daemon.
struct Stopped(i32);

impl Stopped {
    /// SIGSTOP, then wait until every thread of `pid` is stopped: kill()
    /// returns before the threads have stopped, and a thread that has not
    /// yet may still answer a request.
    fn stop(pid: i32) -> Stopped {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let stopped = Stopped(pid);
        let all_stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().all(|task| {
                let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
                // The state follows the command name in parentheses.
                stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        };
        // Bounded by a deadline, not a count: a loaded machine may take a
        // while to schedule every thread into its stop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if all_stopped() {
                return stopped;
            }
            std::thread::yield_now();
        }
        panic!("mfad (pid {pid}) did not stop within 10 s of SIGSTOP");
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_stopped_daemon_denies_the_login_and_resumes_after_sigcont() {
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll("stop_a", "hotp");
    let services = PamServices::new();
    services.add("stopsafe", &[mfad.module_line("required", "failmode=safe timeout=2")]);
    services.add("stopsecure", &[mfad.module_line("required", "timeout=2")]);

    // Stopped while the code prompt is shown: once mfad has prompted, a
    // timeout is a failed login whatever the failmode.
    let mut login = Interactive::start(services.pam_client("stopsafe", "stop_a", &[("rhost", "127.0.0.1")]));
    let prompt = login.expect_prompt();
    assert!(prompt.text.contains("Verification code"), "{prompt:?}");
    let stopped = Stopped::stop(mfad.pid());
    login.answer(&hotp(&secret, 1));
    let (ok, transcript) = login.finish();
    assert!(!ok, "a login whose code mfad never checked went through:\n{transcript}");
    assert!(transcript.contains("Two-factor authentication failed"), "{transcript}");

    // Stopped before the first answer: no answer is an unreachable daemon,
    // which failmode=secure denies.
    let out = run_with_input(&mut services.pamtester("stopsecure", "stop_a", &[]), "");
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("unavailable"), "{}", said(&out));
    drop(stopped);

    // Resumed: what the clients that gave up had sent is dropped, not
    // acted on, so counter 1 was not used up by a login that was denied.
    // Both: the answer of the first login and the start of the second.
    mfad.audit_lines_until_count("request dropped: the client had already gone", 2);
    let out = pamtester_code(&services, "stopsecure", "stop_a", &hotp(&secret, 1));
    assert!(out.status.success(), "after SIGCONT: {}\naudit: {:#?}", said(&out), mfad.audit_lines_until(""));
    assert!(!pamtester_code(&services, "stopsecure", "stop_a", &hotp(&secret, 1)).status.success(), "replay");
}
