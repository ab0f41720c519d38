//! A real OpenSSH sshd of the test's own: started under a symlinked name
//! (sshd names its PAM service after it), with a PAM service file of that
//! name holding the module, on 127.0.0.1, keyboard-interactive only; and the
//! `ssh` client answering its prompts through an askpass program.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::*;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The running sshd; stopped, and its PAM service file removed, on drop.
pub struct Sshd {
    pub port: u16,
    /// Its PAM service name (and the name it runs under).
    pub service: String,
    pam_file: PathBuf,
    server: Child,
}

impl Sshd {
    /// An sshd whose PAM stack is `mfad`'s module (`required`), then
    /// pam_permit for account and session; `tag` keeps suites' names apart.
    pub fn start(mfad: &Mfad, tag: &str) -> Sshd {
        let dir = mfad.dir.path();
        let service = format!("sshd-{tag}-{}", std::process::id());
        let sshd = dir.join(&service);
        std::os::unix::fs::symlink("/usr/sbin/sshd", &sshd).unwrap();
        let pam_file = PathBuf::from("/etc/pam.d").join(&service);
        std::fs::write(&pam_file, service_file(&[mfad.module_line("required", "")])).unwrap();
        let key = dir.join("host_key");
        let keygen = run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
        assert!(keygen.status.success(), "ssh-keygen: {}", stderr(&keygen));
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\nUsePAM yes\n\
                 KbdInteractiveAuthentication yes\nPasswordAuthentication no\nPubkeyAuthentication no\n\
                 AuthenticationMethods keyboard-interactive\nStrictModes no\n",
                key.display(),
                dir.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let server = Command::new(&sshd).args(["-D", "-e", "-f"]).arg(&config).spawn().unwrap();
        let sshd = Sshd { port, service, pam_file, server };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// `ssh USER@127.0.0.1 COMMAND...` to this sshd, every prompt answered
    /// by `askpass` (an executable given the prompt as `$1`).
    pub fn ssh(&self, askpass: &Path, user: &str, command: &[&str]) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.env("SSH_ASKPASS", askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .args(["-p", &self.port.to_string(), "-F", "/dev/null"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1"])
            .args(["-o", "BatchMode=no", "-o", "ConnectTimeout=20"])
            .arg(format!("{user}@127.0.0.1"))
            .args(command)
            .stdin(Stdio::null());
        ssh
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_file(&self.pam_file);
    }
}
