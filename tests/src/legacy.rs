//! A real single-password daemon (dovecot's IMAP server) run from a
//! scratch config, a real IMAP client (Python's imaplib), and a proxy that
//! keeps every frame the PAM module sends to mfad.
//!
//! dovecot's auth worker runs PAM in-process, from a service file of the
//! test's own (`/etc/pam.d/mfae-PID-TAG`, removed on drop); the package's
//! own service never runs (installed with services kept from starting).
//! Not libpam-wrapper: every process that loads it claims a `/tmp/pam.X`
//! directory, and dovecot starts processes (one per IMAP connection) at
//! times no lock of the tests can order, so one of them could share, and
//! on exit delete, the directory of another test's client or of dovecot's
//! own auth worker, whose next login then failed as "Temporary
//! authentication failure".

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::*;

/// dovecot-imapd, installed through tests/ensure-packages.sh once per run.
pub fn ensure_dovecot() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Installing must not start the package's own IMAP service.
        let policy = Path::new("/usr/sbin/policy-rc.d");
        let own_policy = !policy.exists();
        if own_policy {
            std::fs::write(policy, "#!/bin/sh\nexit 101\n").unwrap();
            std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ensure-packages.sh");
        let out =
            run(Command::new("bash").arg("-c").arg(format!(". {} && ensure_packages dovecot-imapd", script.display())));
        if own_policy {
            let _ = std::fs::remove_file(policy);
        }
        assert!(out.status.success(), "installing dovecot-imapd: {}{}", stdout(&out), stderr(&out));
    });
}

/// dovecot serving IMAP on a loopback port, through a PAM service of the
/// test's own; stopped on drop.
pub struct Dovecot {
    pub port: u16,
    /// The PAM service name, `mfae-PID-TAG`, as mfad's audit lines show it.
    pub service: String,
    dir: tempfile::TempDir,
    child: Child,
    _pam: EtcFile,
}

impl Dovecot {
    /// `tag` tells apart the services of tests running at once; `auth_lines`
    /// are the service's auth stack (account and session permit).
    pub fn start(tag: &str, auth_lines: &[String]) -> Dovecot {
        ensure_dovecot();
        let service = own_service_name(tag);
        let pam = EtcFile::write(PathBuf::from("/etc/pam.d").join(&service), &service_file(auth_lines), 0o644);
        let dir = tempfile::Builder::new().prefix("dovecot-e2e-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::set_permissions(dir.path().join("mail"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let port = free_port();
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\nprotocols = imap\nlisten = 127.0.0.1\nssl = no\n\
             disable_plaintext_auth = no\nauth_mechanisms = plain login\nauth_failure_delay = 0\n\
             auth_verbose = yes\nlog_path = {d}/dovecot.log\n\
             mail_location = maildir:{d}/mail/%u\n\
             passdb {{\n  driver = pam\n  args = {service}\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/mail/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
             \x20 inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("dovecot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("dovecot")
            .arg("-c")
            .arg(&conf_path)
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dovecot: {e}"));
        let dovecot = Dovecot { port, service, dir, child, _pam: pam };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not listen: {}", dovecot.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        dovecot
    }

    /// LOGIN with imaplib; Ok when the server let the user in.
    pub fn login(&self, user: &str, password: &str) -> Result<(), String> {
        let script = "import imaplib, sys\n\
                      m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))\n\
                      try:\n    m.login(sys.argv[2], sys.stdin.read())\n\
                      except imaplib.IMAP4.error as e:\n    print('refused:', e); sys.exit(3)\n\
                      m.logout(); print('logged in')\n";
        let out = run_with_input(Command::new("python3").args(["-c", script, &self.port.to_string(), user]), password);
        match out.status.code() {
            Some(0) => Ok(()),
            Some(3) => Err(stdout(&out)),
            _ => panic!("imaplib failed: {}{}", stdout(&out), stderr(&out)),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // The master stops its children on SIGTERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_within_quietly(&mut self.child, Duration::from_secs(10));
    }
}

fn wait_within_quietly(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().is_ok()
}

/// A socket between the PAM module and mfad that relays everything and
/// keeps every byte the module sent: what mfad received.
pub struct FrameProxy {
    pub socket: PathBuf,
    sent: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl FrameProxy {
    pub fn start(mfad_socket: &Path) -> FrameProxy {
        let dir = tempfile::Builder::new().prefix("frames-e2e-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (kept, target) = (sent.clone(), mfad_socket.to_path_buf());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(daemon) = UnixStream::connect(&target) else { continue };
                relay(client, daemon, kept.clone());
            }
        });
        FrameProxy { socket, sent, _dir: dir }
    }

    /// The request frames mfad received, as JSON text.
    pub fn requests(&self) -> Vec<String> {
        let bytes = self.sent.lock().unwrap().clone();
        let mut frames = Vec::new();
        let mut at = 0;
        // Connections are kept whole: each writes its frames in order, and
        // a frame's bytes arrive in one write (see the relay).
        while at + 4 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            frames.push(String::from_utf8_lossy(&bytes[at + 4..(at + 4 + len).min(bytes.len())]).into_owned());
            at += 4 + len;
        }
        frames
    }
}

/// Relay one connection both ways; what the client sends is kept, one
/// whole frame at a time so that concurrent connections never interleave.
fn relay(mut client: UnixStream, mut daemon: UnixStream, kept: Arc<Mutex<Vec<u8>>>) {
    let (mut client_r, mut daemon_w) = (client.try_clone().unwrap(), daemon.try_clone().unwrap());
    std::thread::spawn(move || {
        loop {
            let mut header = [0u8; 4];
            if client_r.read_exact(&mut header).is_err() {
                break;
            }
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            if client_r.read_exact(&mut body).is_err() {
                break;
            }
            let mut all = kept.lock().unwrap();
            all.extend_from_slice(&header);
            all.extend_from_slice(&body);
            drop(all);
            if daemon_w.write_all(&header).and_then(|_| daemon_w.write_all(&body)).is_err() {
                break;
            }
        }
        let _ = daemon_w.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut daemon, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
    });
}

/// Give `user` this password (a real Unix account made by [`ensure_user`]).
pub fn set_password(user: &str, password: &str) {
    let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
    writeln!(chpasswd.stdin.take().unwrap(), "{user}:{password}").unwrap();
    assert!(chpasswd.wait().unwrap().success());
}
