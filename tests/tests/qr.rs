//! The set-up QR code scans as terminals show it: painted cell by cell in a
//! dark and a light terminal's colours and read with the real `zbarimg`,
//! which does not try inverted images. Drawn for a dark background by
//! default (`qr_background`), and black on white in colours by mfactl on a
//! terminal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::*;
use mfa_shared::otp::{OtpParams, otpauth_uri};
use mfa_shared::qr::{Background, render_black_on_white, render_terminal};

const LOGIN: &str = "mfaqrlogin";

fn sample_uri() -> String {
    otpauth_uri("ACME Corp", "alice@host", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", &OtpParams::default(), 0)
}

#[test]
fn each_setting_scans_on_its_terminal_and_not_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let uri = sample_uri();
    for (background, matching, other) in
        [(Background::Dark, DARK_TERMINAL, LIGHT_TERMINAL), (Background::Light, LIGHT_TERMINAL, DARK_TERMINAL)]
    {
        let text = render_terminal(&uri, background).unwrap();
        assert_eq!(scan_as_shown(&text, matching, dir.path()).as_deref(), Some(uri.as_str()), "{background:?}");
        // Shown inverted: zbar does not read it (so the check above can fail).
        assert_eq!(scan_as_shown(&text, other, dir.path()), None, "{background:?} on a {}", other.name);
    }
    // Black on white set with colours scans whatever the theme.
    let coloured = render_black_on_white(&uri).unwrap();
    for theme in [DARK_TERMINAL, LIGHT_TERMINAL] {
        assert_eq!(scan_as_shown(&coloured, theme, dir.path()).as_deref(), Some(uri.as_str()), "{}", theme.name);
    }
}

/// The URI a set-up text shows under the QR code.
fn shown_uri(shown: &str) -> String {
    shown.split_whitespace().find(|w| w.starts_with("otpauth://")).expect("a URI shown").to_string()
}

/// The QR code an inline set-up shows in a real PAM conversation (a `force`
/// role, pam_client under libpam-wrapper) scans on the terminal the
/// setting is for, and on no other; the code it carries completes the set-up.
#[test]
fn inline_set_up_at_login_scans_on_the_terminal_of_the_setting() {
    let user = "mfae_qr_inline";
    ensure_user(user, &["mfae_g_qr"]);
    let force = "[[role]]\ngroup = \"mfae_g_qr\"\npolicy = \"force\"\n";
    let cases = [
        ("", DARK_TERMINAL, LIGHT_TERMINAL),
        ("qr_background = \"dark\"\n", DARK_TERMINAL, LIGHT_TERMINAL),
        ("qr_background = \"light\"\n", LIGHT_TERMINAL, DARK_TERMINAL),
    ];
    for (setting, matching, other) in cases {
        let mfad = Mfad::start(&format!("{setting}{force}"));
        let services = PamServices::new();
        services.add(LOGIN, &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
        let mut conv = Interactive::start(services.pam_client(LOGIN, user, &[("rhost", "127.0.0.5")]));
        assert_eq!(conv.expect_prompt().text, "Does your device support scanning a barcode? [y/n] ");
        conv.answer("y");
        assert_eq!(conv.expect_prompt().text, "Time-based or counter-based? [t/c] ");
        conv.answer("t");
        let q = conv.expect_prompt();
        assert_eq!(q.text, "Enter the code from your device to complete setup: ");
        let drawing = qr_drawing(&q.shown);
        assert!(!drawing.contains('\u{1b}'), "no escape sequence in a login conversation: {drawing:?}");
        let scanned = scan_as_shown(&drawing, matching, mfad.dir.path());
        assert_eq!(scanned, Some(shown_uri(&q.shown)), "{setting:?} on a {}:\n{}", matching.name, q.shown);
        assert_eq!(scan_as_shown(&drawing, other, mfad.dir.path()), None, "{setting:?} on a {}", other.name);
        let uri = scanned.unwrap();
        conv.answer(&totp_now(&secret_from_setup_text(&uri)));
        let (ok, transcript) = conv.finish();
        assert!(ok, "the scanned code completes the set-up:\n{transcript}");
    }
}

/// A pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: two valid out-pointers; no name buffer, default settings.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded: both are open descriptors nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// `mfactl user setup` with its standard output on a terminal (stdin a pipe):
/// the QR code comes in black on white, whatever the terminal's theme, and
/// completes the set-up. With --qr-background, plain text for that one.
#[test]
fn mfactl_on_a_terminal_draws_black_on_white() {
    let mfad = Mfad::start("");
    for (user, flag, themes) in [
        ("qr_tty", None, vec![DARK_TERMINAL, LIGHT_TERMINAL]),
        ("qr_tty_light", Some("light"), vec![LIGHT_TERMINAL]),
        ("qr_tty_dark", Some("dark"), vec![DARK_TERMINAL]),
    ] {
        let (master, slave) = openpty();
        let mut cmd = Command::new(bin("mfactl"));
        cmd.arg("--socket").arg(&mfad.socket).args(["user", "setup", user, "--type", "totp"]);
        if let Some(background) = flag {
            cmd.args(["--qr-background", background]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::from(slave)).stderr(Stdio::piped()).spawn().unwrap();
        // Our copy of the slave went into the command and is closed: the
        // master reads EIO once mfactl has exited.
        drop(cmd);
        let (tx, rx) = mpsc::channel();
        let mut master = std::fs::File::from(master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "y").unwrap();
        let mut shown = Vec::new();
        while !String::from_utf8_lossy(&shown).contains("Enter the code") {
            let chunk = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|e| {
                panic!("mfactl did not ask for the code ({e}): {}", String::from_utf8_lossy(&shown))
            });
            shown.extend(chunk);
        }
        let shown = String::from_utf8(shown).unwrap();
        let drawing = qr_drawing(&shown);
        assert_eq!(drawing.contains("\u{1b}[30;47m"), flag.is_none(), "{user}: {drawing:?}");
        let uri = shown_uri(&shown);
        for theme in themes {
            assert_eq!(scan_as_shown(&drawing, theme, mfad.dir.path()), Some(uri.clone()), "{user} {}", theme.name);
        }
        if flag == Some("light") {
            assert_eq!(scan_as_shown(&drawing, DARK_TERMINAL, mfad.dir.path()), None, "{user}");
        }
        writeln!(stdin, "{}", totp_now(&secret_from_setup_text(&uri))).unwrap();
        drop(stdin);
        let mut rest = Vec::new();
        while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(30)) {
            rest.extend(chunk);
        }
        let status = child.wait().unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(status.success(), "{user}: {rest}");
        assert!(rest.contains("Two-factor authentication is enabled."), "{user}: {rest}");
    }
}

/// Over a real `ssh` login (OpenSSH's client, keyboard-interactive, a
/// `force` role), the QR code the set-up prompt carries scans on a dark
/// terminal with the default settings, and not on a light one.
#[test]
fn inline_set_up_over_ssh_scans_on_a_dark_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let user = "mfae_qr_ssh";
    ensure_user(user, &["mfae_g_qrssh"]);
    let mfad = Mfad::start("max_tries = 1\n[[role]]\ngroup = \"mfae_g_qrssh\"\npolicy = \"force\"\n");
    let sshd = Sshd::start(&mfad, "mfaqr");
    let dir = mfad.dir.path();
    // The askpass program gets each prompt as ssh shows it and answers as a
    // person would; the set-up prompt (sshd sends the PAM messages before a
    // prompt as part of it) is kept, and a wrong code given.
    let askpass = dir.join("askpass");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n*barcode*) echo y ;;\n*Time-based*) echo t ;;\n\
         *) printf '%s' \"$1\" >> {}/setup-prompt; echo 000000 ;;\nesac\n",
        dir.display()
    );
    std::fs::write(&askpass, script).unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A UTF-8 locale, as an administrator's terminal has.
    let out = run(sshd.ssh(&askpass, user, &["true"]).env("LC_ALL", "C.UTF-8"));
    assert!(!out.status.success(), "a wrong code completes no set-up");
    let shown = std::fs::read_to_string(dir.join("setup-prompt"))
        .unwrap_or_else(|e| panic!("no set-up prompt ({e}): {}{}", stdout(&out), stderr(&out)));
    assert!(shown.contains("Enter the code from your device to complete setup"), "{shown}");
    let drawing = qr_drawing(&shown);
    assert_eq!(scan_as_shown(&drawing, DARK_TERMINAL, dir).as_deref(), Some(shown_uri(&shown).as_str()), "{shown}");
    assert_eq!(scan_as_shown(&drawing, LIGHT_TERMINAL, dir), None);
}
