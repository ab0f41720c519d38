//! Fixtures for the end-to-end suites: a real mfad in a temp dir, mfactl run
//! as root or as a real Unix user, oathtool for codes, PAM clients under
//! libpam-wrapper, sudo and su with stacks of the tests' own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod clients;
mod daemon;
pub mod legacy;
mod pam_stack;
pub mod postgres;
mod sshd;
mod system;
mod terminal;

pub use clients::*;
pub use daemon::*;
pub use pam_stack::*;
pub use sshd::*;
pub use system::*;
pub use terminal::*;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// oathtool's TOTP code for the current time.
pub fn totp_now(secret: &str) -> String {
    let out = run(Command::new("oathtool").args(["-b", "--totp", secret]));
    assert!(out.status.success(), "oathtool failed (is it installed?): {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// oathtool's HOTP code at `counter`.
pub fn hotp(secret: &str, counter: u64) -> String {
    let out = run(Command::new("oathtool").args(["-b", "--hotp", "-c", &counter.to_string(), secret]));
    assert!(out.status.success(), "oathtool failed (is it installed?): {}", stderr(&out));
    stdout(&out).trim().to_string()
}

static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Create a Unix group if it does not exist.
pub fn ensure_group(group: &str) {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    if run(Command::new("getent").args(["group", group])).status.success() {
        return;
    }
    let out = run(Command::new("groupadd").arg(group));
    assert!(out.status.success(), "groupadd {group}: {}", stderr(&out));
}

/// Create a Unix user (no home) with a known password, if it does not exist,
/// and add it to `groups`.
pub fn ensure_user(user: &str, groups: &[&str]) {
    for g in groups {
        ensure_group(g);
    }
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    if !run(Command::new("id").arg(user)).status.success() {
        let out = run(Command::new("useradd").args(["-M", "-s", "/bin/sh", user]));
        assert!(out.status.success(), "useradd {user}: {}", stderr(&out));
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
        writeln!(chpasswd.stdin.take().unwrap(), "{user}:{}", password(user)).unwrap();
        assert!(chpasswd.wait().unwrap().success());
    }
    for g in groups {
        let out = run(Command::new("usermod").args(["-aG", g, user]));
        assert!(out.status.success(), "usermod -aG {g} {user}: {}", stderr(&out));
    }
}

/// The password the suites give their users.
pub fn password(user: &str) -> String {
    format!("pw-{user}-Secret1")
}

/// Run `cmd` with `input` on stdin; returns its output.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = spawn_one_at_a_time(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Write from a thread: a client that stops reading must not block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("Failed to create pam_wrapper config dir"), "libpam-wrapper collided: {cmd:?}\n{said}");
    out
}

/// Clients of this process under libpam-wrapper, started one at a time.
static PAM_WRAPPER_START: Mutex<()> = Mutex::new(());

/// Spawn `cmd`; under libpam-wrapper, only once the client started last has
/// its directory. libpam-wrapper picks `/tmp/pam.X` by looking for a free
/// name and then creating it: two clients starting at once can pick the
/// same one, and the loser only logs "Failed to create pam_wrapper config
/// dir" and shares it (reading the other's service files; the first to
/// end deletes it under the other). Such a run may still have logged in,
/// used a code: it cannot be made again, so collisions are prevented.
pub fn spawn_one_at_a_time(cmd: &mut Command) -> std::process::Child {
    let wrapped = cmd.get_envs().any(|(key, value)| key == "PAM_WRAPPER" && value == Some("1".as_ref()));
    let _turn = wrapped.then(|| PAM_WRAPPER_START.lock().unwrap_or_else(|p| p.into_inner()));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if wrapped {
        let pid = child.id().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !has_pam_wrapper_dir(&pid) && matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    child
}

/// Whether libpam-wrapper has made its directory for process `pid`.
fn has_pam_wrapper_dir(pid: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return false };
    entries.flatten().any(|entry| {
        entry.file_name().to_string_lossy().starts_with("pam.")
            && std::fs::read_to_string(entry.path().join("pid")).is_ok_and(|owner| owner.trim() == pid)
    })
}

/// `socket.recv`, again after an interruption: Linux may fail a blocking
/// receive with EINTR once the process was stopped and continued, even
/// without a signal handler.
pub fn recv_retrying(socket: &std::os::unix::net::UnixDatagram, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match socket.recv(buf) {
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
