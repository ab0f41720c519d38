//! SPEC 13 fault tests: mfad killed in the middle of a load loses no
//! enrollment and, after a restart, never accepts a code it acknowledged
//! before the crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::fmt::Write as _;
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
