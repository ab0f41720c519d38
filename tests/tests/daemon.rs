//! Issue #2 acceptance: a real mfad in a temp dir, driven with mfactl,
//! oathtool and raw frames.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::process::{Command, Stdio};

use e2e::*;

fn status_field(mfad: &Mfad, user: &str, field: &str) -> serde_json::Value {
    mfad.json(&["user", "show", user])[field].clone()
}

#[test]
fn totp_setup_check_value_confirm_and_replay() {
    ensure_user("mfae_alice", &[]);
    let mfad = Mfad::start("");
    let setup = mfad.json(&["user", "setup", "mfae_alice", "--type", "totp"]);
    let secret = setup["secret"].as_str().unwrap().to_string();
    let uri = setup["uri"].as_str().unwrap();
    assert_eq!(setup["type"], "totp");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");

    // The check value is HOTP at counter 0, as oathtool computes it.
    let check = mfad.ok(&["user", "verify", "mfae_alice"]);
    assert_eq!(check.trim(), hotp(&secret, 0));

    // A wrong confirmation keeps it pending.
    let code = totp_now(&secret);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let out = mfad.mfactl(&["user", "setup", "mfae_alice", "--confirm", wrong]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pending"), "{}", stderr(&out));
    assert_eq!(status_field(&mfad, "mfae_alice", "state"), "pending");

    // oathtool's current code completes it.
    mfad.ok(&["user", "setup", "mfae_alice", "--confirm", &code]);
    assert_eq!(status_field(&mfad, "mfae_alice", "state"), "enabled");

    // The same code is a replay everywhere: disable by the user, verify.
    let out = mfad.mfactl_as("mfae_alice", &["disable", "--code", &code]);
    assert_eq!(out.status.code(), Some(5), "{}{}", stdout(&out), stderr(&out));
    let out = mfad.mfactl(&["verify", "--user", "mfae_alice", "--code", &code]);
    assert!(!out.status.success());
    assert_eq!(status_field(&mfad, "mfae_alice", "state"), "enabled");
    mfad.audit_lines_until("set-up completed");
}

#[test]
fn hotp_setup_counter_never_moves_backwards() {
    let mfad = Mfad::start("");
    let setup = mfad.json(&["user", "setup", "carol", "--type", "hotp"]);
    let secret = setup["secret"].as_str().unwrap().to_string();
    assert!(setup["uri"].as_str().unwrap().starts_with("otpauth://hotp/"));
    assert!(setup["uri"].as_str().unwrap().contains("counter=0"));
    assert_eq!(mfad.ok(&["user", "verify", "carol"]).trim(), hotp(&secret, 0));
    let out = mfad.mfactl(&["user", "setup", "carol", "--confirm", &hotp(&secret, 50)]);
    assert!(!out.status.success(), "a code beyond the window must not confirm");
    mfad.ok(&["user", "setup", "carol", "--confirm", &hotp(&secret, 0)]);

    let verify =
        |counter: u64| mfad.mfactl(&["verify", "--user", "carol", "--code", &hotp(&secret, counter)]).status.success();
    assert!(!verify(0), "counter 0 was used by the confirmation");
    assert!(verify(1));
    assert!(verify(4), "look-ahead within hotp_window");
    assert!(!verify(2), "behind the last accepted counter");
    assert!(!verify(4), "replay");
    assert!(verify(5));
}

#[test]
fn database_holds_no_clear_secret_and_survives_restart() {
    let mut mfad = Mfad::start("");
    let mut secrets = Vec::new();
    for (user, kind) in [("dave", "totp"), ("erin", "hotp"), ("frank", "totp")] {
        secrets.push((user, kind, mfad.enroll(user, kind)));
    }
    mfad.stop();
    let mut bytes = Vec::new();
    for name in ["mfad.db", "mfad.db-wal"] {
        if let Ok(b) = std::fs::read(mfad.dir.path().join(name)) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 1000, "database files are missing");
    let haystack = String::from_utf8_lossy(&bytes).to_lowercase();
    for (_, _, secret) in &secrets {
        assert!(!haystack.contains(&secret.to_lowercase()), "base32 secret found in the database");
        let raw = mfa_shared::otp::base32_decode(secret).unwrap();
        assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()), "raw secret found in the database");
        let hex = raw.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert!(!haystack.contains(&hex), "hex secret found in the database");
    }
    mfad.launch();
    for (user, kind, secret) in &secrets {
        assert_eq!(status_field(&mfad, user, "state"), "enabled", "{user}");
        let code = if *kind == "hotp" { hotp(secret, 1) } else { totp_now(secret) };
        let out = mfad.mfactl(&["verify", "--user", user, "--code", &code]);
        // TOTP: the confirmation used the current step, so it may be a replay
        // within the same 30 s; what matters is that the device still checks.
        if *kind == "hotp" {
            assert!(out.status.success(), "{}", stderr(&out));
        }
        assert_eq!(mfad.ok(&["user", "verify", user]).trim(), hotp(secret, 0));
    }
}

#[test]
fn the_drawn_qr_code_decodes_to_the_uri() {
    use std::io::{BufRead, BufReader, Write};
    let mfad = Mfad::start("");
    let mut child = Command::new(bin("mfactl"))
        .arg("--socket")
        .arg(&mfad.socket)
        .args(["user", "setup", "grace", "--type", "totp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "y").unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut shown = String::new();
    // Read until the question for the code, which follows the QR and URI.
    loop {
        let mut chunk = Vec::new();
        let n = reader.read_until(b':', &mut chunk).unwrap();
        assert!(n > 0, "mfactl ended before asking for the code: {shown}");
        shown.push_str(&String::from_utf8_lossy(&chunk));
        if shown.contains("Enter the code") && shown.trim_end().ends_with(':') {
            break;
        }
    }
    let uri = shown.split_whitespace().find(|w| w.starts_with("otpauth://")).expect("URI shown").to_string();
    let qr_text: String = shown
        .lines()
        .filter(|l| {
            l.chars().any(|c| matches!(c, '█' | '▀' | '▄')) && l.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' '))
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!qr_text.is_empty(), "no QR code drawn: {shown}");
    // Not a terminal: drawn for a dark background (the default); the modules
    // painted black on white with a margin around.
    let matrix = mfa_shared::qr::parse_terminal(&qr_text, mfa_shared::qr::Background::Dark);
    let png = mfad.dir.path().join("qr.png");
    write_png(&matrix, &png);
    let out = run(Command::new("zbarimg").args(["--nodbus", "-q", "--raw"]).arg(&png));
    assert!(out.status.success(), "zbarimg failed (is zbar-tools installed?): {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), uri);

    // Finish the set-up with the code of the secret the URI carries.
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    writeln!(stdin, "{}", totp_now(secret)).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("enabled"), "{rest}");
    assert_eq!(status_field(&mfad, "grace", "state"), "enabled");
}

fn write_png(matrix: &[Vec<bool>], path: &std::path::Path) {
    const SCALE: usize = 4;
    const MARGIN: usize = 4;
    let h = matrix.len();
    let w = matrix.iter().map(Vec::len).max().unwrap();
    let (pw, ph) = ((w + 2 * MARGIN) * SCALE, (h + 2 * MARGIN) * SCALE);
    let mut pixels = vec![255u8; pw * ph];
    for (y, row) in matrix.iter().enumerate() {
        for (x, &dark) in row.iter().enumerate() {
            if dark {
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        pixels[((y + MARGIN) * SCALE + dy) * pw + (x + MARGIN) * SCALE + dx] = 0;
                    }
                }
            }
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, pw as u32, ph as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header().unwrap().write_image_data(&pixels).unwrap();
}

#[test]
fn users_manage_only_themselves_admins_everyone() {
    ensure_user("mfae_alice", &[]);
    ensure_user("mfae_bob", &[]);
    ensure_user("mfae_admin", &["mfae2eadm"]);
    let mfad = Mfad::start("");
    mfad.enroll("mfae_alice", "totp");

    let out = mfad.mfactl_as("mfae_bob", &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("mfae_bob"));
    let out = mfad.mfactl_as("mfae_bob", &["--json", "setup", "--type", "hotp"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let setup: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(setup["user"], "mfae_bob");
    assert_eq!(status_field(&mfad, "mfae_bob", "state"), "pending");

    for args in [
        vec!["user", "show", "mfae_alice"],
        vec!["status", "--user", "mfae_alice"],
        vec!["user", "list"],
        vec!["user", "unlock", "mfae_alice"],
        vec!["setup", "--user", "mfae_alice", "--json"],
    ] {
        let out = mfad.mfactl_as("mfae_bob", &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("permission denied"), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim().lines().count(), 1, "one-line error");
    }
    let out = mfad.mfactl_as("mfae_admin", &["--json", "user", "show", "mfae_alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["state"], "enabled");
    let out = mfad.mfactl_as("mfae_admin", &["user", "level", "mfae_alice", "always"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_field(&mfad, "mfae_alice", "level"), "always");
}

#[test]
fn malformed_frames_do_not_take_the_daemon_down() {
    let mfad = Mfad::start("");
    // Malformed JSON in a well-formed frame: an error reply.
    let mut frame = 9u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{not json");
    let reply: serde_json::Value = serde_json::from_slice(&mfad.raw(&frame, false)).unwrap();
    assert_eq!(reply["response"]["type"], "error");
    assert_eq!(reply["response"]["kind"], "bad_request");
    // An unknown request: an error reply.
    let body = br#"{"version":1,"request":{"type":"format_disk"}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let reply: serde_json::Value = serde_json::from_slice(&mfad.raw(&frame, false)).unwrap();
    assert_eq!(reply["response"]["kind"], "bad_request");
    // An oversized length header: refused before reading the body.
    let reply = mfad.raw(&u32::MAX.to_be_bytes(), false);
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["response"]["kind"], "bad_request");
    // A truncated frame: the connection is closed.
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{\"vers");
    assert!(mfad.raw(&frame, true).is_empty());
    // A wrong protocol version.
    let body = br#"{"version":99,"request":{"type":"list_users"}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let reply: serde_json::Value = serde_json::from_slice(&mfad.raw(&frame, false)).unwrap();
    assert_eq!(reply["response"]["kind"], "version");
    // Still serving.
    assert!(mfad.json(&["user", "list"])["users"].is_array());
}

#[test]
fn bad_config_is_refused_by_check_and_by_reload() {
    let mfad = Mfad::start("");
    let secret = mfad.enroll("henry", "hotp");
    let good = std::fs::read_to_string(&mfad.config_path).unwrap();

    let bad = good.replacen("enabled = true", "enabled = true\nfrobnicate = 1", 1);
    std::fs::write(&mfad.config_path, &bad).unwrap();
    let out = run(Command::new(bin("mfad")).arg("--check-config").arg("--config").arg(&mfad.config_path));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("frobnicate") && stderr(&out).contains("line 2"), "{}", stderr(&out));
    let typed = good.replacen("enabled = true", "enabled = \"yes\"", 1);
    std::fs::write(&mfad.config_path, &typed).unwrap();
    let out = run(Command::new(bin("mfad")).arg("--check-config").arg("--config").arg(&mfad.config_path));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("enabled") && stderr(&out).contains("line 1"), "{}", stderr(&out));

    // SIGHUP with the bad file: refused, logged, the old config kept.
    mfad.signal(libc::SIGHUP);
    mfad.audit_lines_until("config reload refused");
    let out = mfad.mfactl(&["reload"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("enabled"), "{}", stderr(&out));
    // Still enabled: a login of an enrolled user is asked for a code.
    let out = mfad.mfactl(&["verify", "--user", "henry", "--code", &hotp(&secret, 1)]);
    assert!(out.status.success());

    // A good file that changes something is taken.
    std::fs::write(&mfad.config_path, good.replacen("admin_group = \"mfae2eadm\"", "admin_group = \"other\"", 1))
        .unwrap();
    mfad.signal(libc::SIGHUP);
    mfad.audit_lines_until("config reloaded");
    let out = run(Command::new(bin("mfad")).arg("--check-config").arg("--config").arg(&mfad.config_path));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn five_wrong_codes_lock_until_unlocked() {
    let mfad = Mfad::start("[lockout]\nmax_failures = 5\nduration = \"15m\"\n");
    let secret = mfad.enroll("ivan", "hotp");
    let right = hotp(&secret, 1);
    let wrong = if right == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let out = mfad.mfactl(&["verify", "--user", "ivan", "--code", wrong]);
        assert!(!out.status.success());
    }
    assert!(status_field(&mfad, "ivan", "locked_until").is_u64());
    let out = mfad.mfactl(&["verify", "--user", "ivan", "--code", &right]);
    assert!(!out.status.success(), "a right code is refused while locked");
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    mfad.ok(&["user", "unlock", "ivan"]);
    assert_eq!(status_field(&mfad, "ivan", "failures"), 0);
    mfad.ok(&["verify", "--user", "ivan", "--code", &right]);
    mfad.audit_lines_until("unlocked");
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut mfad = Mfad::start("");
    mfad.enroll("judy", "hotp");
    mfad.stop();
    assert!(!mfad.socket.exists());
}

/// One `list_users` request as a frame.
fn list_users_frame() -> Vec<u8> {
    let body = br#"{"version":1,"request":{"type":"list_users"}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Send `frame` on `stream` and read the one reply.
fn ask(stream: &mut std::os::unix::net::UnixStream, frame: &[u8]) -> serde_json::Value {
    use std::io::Write;
    stream.write_all(frame).unwrap();
    reply_to(stream)
}

/// Read one reply from `stream`.
fn reply_to(stream: &mut std::os::unix::net::UnixStream) -> serde_json::Value {
    use std::io::Read;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Whether mfad closed `stream` within 15 s (an end of stream; a reset
/// when it closed with a request unread).
fn closed_by_mfad(stream: &mut std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
    loop {
        match stream.read(&mut [0u8; 16]) {
            Ok(n) => return n == 0,
            // A signal meant for another test's child, not an answer.
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return err.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn connections_beyond_the_limit_are_told_busy_and_held_ones_stall_no_one() {
    use std::os::unix::net::UnixStream;
    // More connections than mfad has threads at its start (one; it starts
    // another whenever the last waiting one takes a connection), each held
    // open after its first answer, as a person at a prompt holds one.
    let mfad = Mfad::start("max_connections = 12");
    let frame = list_users_frame();
    let mut held: Vec<UnixStream> = (0..12).map(|_| UnixStream::connect(&mfad.socket).unwrap()).collect();
    for stream in held.iter_mut().rev() {
        assert_eq!(ask(stream, &frame)["response"]["type"], "users");
    }
    // Root's pool is full: the next is told so at once, and closed.
    let mut over = UnixStream::connect(&mfad.socket).unwrap();
    let reply = reply_to(&mut over);
    assert_eq!(reply["response"]["kind"], "busy", "{reply}");
    assert!(reply["response"]["message"].as_str().unwrap().contains("too many connections"), "{reply}");
    assert!(closed_by_mfad(&mut over));
    // Every held connection still answers.
    for stream in &mut held {
        assert_eq!(ask(stream, &frame)["response"]["type"], "users");
    }
    // A slot comes back when its connection ends.
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        use std::io::Write;
        let mut stream = UnixStream::connect(&mfad.socket).unwrap();
        // A busy reply may come, and the connection close, before this write.
        let _ = stream.write_all(&frame);
        let reply = reply_to(&mut stream);
        if reply["response"]["type"] == "users" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slot came back: {reply}");
    }
}

#[test]
fn requests_sent_together_are_answered_one_after_the_other() {
    use std::io::Write;
    let mfad = Mfad::start("");
    let mut stream = std::os::unix::net::UnixStream::connect(&mfad.socket).unwrap();
    // Three frames in one write: mfad's first read brings all of them, and
    // one cut in two, so the rest comes with a later write.
    let frame = list_users_frame();
    let mut bytes = [frame.clone(), frame.clone(), frame.clone()].concat();
    let rest = bytes.split_off(bytes.len() - 5);
    stream.write_all(&bytes).unwrap();
    assert_eq!(reply_to(&mut stream)["response"]["type"], "users");
    assert_eq!(reply_to(&mut stream)["response"]["type"], "users");
    stream.write_all(&rest).unwrap();
    assert_eq!(reply_to(&mut stream)["response"]["type"], "users");
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_mfad(&mut stream));
}

#[test]
fn a_login_decision_ends_its_connection() {
    let mfad = Mfad::start("");
    let mut stream = std::os::unix::net::UnixStream::connect(&mfad.socket).unwrap();
    // nobody has no device: no code needed, decided at once.
    let body = br#"{"version":1,"request":{"type":"auth_begin","service":"sshd","user":"nobody","rhost":"192.0.2.7"}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let reply = ask(&mut stream, &frame);
    assert_eq!(reply["response"]["step"], "decision", "{reply}");
    let answered = std::time::Instant::now();
    assert!(closed_by_mfad(&mut stream), "the connection is closed after the decision");
    assert!(answered.elapsed() < std::time::Duration::from_secs(5), "closed at once, not at the idle limit (10 s)");
    // Any other request keeps its connection open for the next.
    let mut stream = std::os::unix::net::UnixStream::connect(&mfad.socket).unwrap();
    assert_eq!(ask(&mut stream, &list_users_frame())["response"]["type"], "users");
    assert_eq!(ask(&mut stream, &list_users_frame())["response"]["type"], "users");
}

#[test]
fn a_client_trickling_a_request_is_dropped_at_the_idle_limit() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    let mfad = Mfad::start("");
    let mut slow = UnixStream::connect(&mfad.socket).unwrap();
    let started = Instant::now();
    // A frame announced, then a byte every second: each read is quick,
    // the frame never completes.
    slow.write_all(&200u32.to_be_bytes()).unwrap();
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // Others are served meanwhile.
    assert!(mfad.json(&["user", "list"])["users"].is_array());
    assert!(closed_by_mfad(&mut slow), "mfad kept a trickling client");
    let took = started.elapsed();
    // The limit to send a request is 10 s from its first byte (some
    // slack for a loaded machine).
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(12), "closed after {took:?}");
    trickle.join().unwrap();
}

#[test]
fn sigterm_closes_connections_waiting_for_a_request_at_once() {
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    let mut mfad = Mfad::start("");
    let frame = list_users_frame();
    let mut waiting: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&mfad.socket).unwrap()).collect();
    for stream in &mut waiting {
        assert_eq!(ask(stream, &frame)["response"]["type"], "users");
    }
    let started = Instant::now();
    mfad.stop();
    // Not the 10 s they could wait for their next request.
    assert!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
    for stream in &mut waiting {
        assert!(closed_by_mfad(stream));
    }
    assert!(UnixStream::connect(&mfad.socket).is_err(), "still accepting");
}
