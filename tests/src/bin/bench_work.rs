//! mfad's own work per login, for `bench/work.sh`: a code login (the
//! module's two requests, begin and answer) handled by mfad's library in
//! this one process, with no socket, no other process and no thread
//! hand-off, so what is left is what mfad does for a login in user space
//! (frames, account lookup, record read and decode, policy, code check,
//! record encode and write, audit lines) plus the system calls it makes on
//! the way. Under `valgrind --tool=callgrind` the instructions counted are
//! the same from run to run, so two builds compare exactly on a machine
//! whose timings are noisy.
//!
//! ```text
//! bench_work DIR [--logins N] [--user NAME]
//! ```
//! - The daemon is put together as `mfad` puts it (the system's account
//!   lookups through the files cache, the system clock) on a new SQLite
//!   store in DIR (on tmpfs its sync costs next to nothing), with the
//!   benchmark's settings (level always, HOTP, one try); audit lines go to
//!   a datagram socket in DIR that this process drains.
//! - NAME (default `nobody`, an account every Debian system has) gets a
//!   HOTP device with ten recovery codes, as `mfactl user setup` gives.
//! - 1,100 logins first (past the WAL's first checkpoint, as bench/run.sh
//!   warms mfad), then N (default 10,000) timed with getrusage(2).
//! - Each request is encoded and decoded as a frame, and each reply, as on
//!   the wire; the client's half of that (encoding two requests, decoding
//!   two replies) is counted too, a few per cent of the whole.
//!
//! Prints one JSON line: logins, and user and system CPU µs per login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use mfa_shared::config::Config;
use mfa_shared::frame;
use mfa_shared::otp;
use mfa_shared::protocol::{
    Algorithm, AuthStep, ChallengeLevel, Code, OtpType, Outcome, Request, RequestFrame, Response, ResponseFrame,
};
use mfad::audit::Audit;
use mfad::clock::SystemClock;
use mfad::crypto::Vault;
use mfad::nss::{DeadlineDirectory, FilesCache, LOOKUP_DEADLINE, SystemDirectory};
use mfad::service::{Daemon, Peer};
use mfad::store::SqliteStore;

const WARM_UP: u64 = 1_100;

/// A request through a frame and back, handled, and its reply the same way.
fn exchange(daemon: &Daemon, request: Request) -> Response {
    let root = Peer { uid: 0, name: Some("root".to_string()) };
    let bytes = frame::encode(&RequestFrame::new(request)).unwrap();
    let received: RequestFrame = frame::decode(&bytes[4..]).unwrap();
    let reply = frame::encode(&ResponseFrame::new(daemon.handle(&root, received.request))).unwrap();
    let reply: ResponseFrame = frame::decode(&reply[4..]).unwrap();
    reply.response
}

fn cpu_micros() -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (micros(usage.ru_utime), micros(usage.ru_stime))
}

fn main() -> ExitCode {
    let usage = "usage: bench_work DIR [--logins N] [--user NAME]";
    let mut args = std::env::args().skip(1);
    let (mut dir, mut logins, mut user) = (None, 10_000_u64, "nobody".to_string());
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--logins" | "--user" => args.next(),
            _ => None,
        };
        match (arg.as_str(), value) {
            ("--logins", Some(n)) if n.parse::<u64>().is_ok_and(|n| n > 0) => logins = n.parse().unwrap(),
            ("--user", Some(name)) => user = name,
            (path, None) if dir.is_none() && !path.starts_with('-') => dir = Some(path.to_string()),
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    let sink_path = dir.join("log");
    let sink = UnixDatagram::bind(&sink_path).unwrap();
    sink.set_nonblocking(true).unwrap();
    let config = Config {
        enabled: true,
        default_level: ChallengeLevel::Always,
        default_type: OtpType::Hotp,
        max_tries: 1,
        ..Config::default()
    };
    let directory = FilesCache::system(Arc::new(SystemDirectory), Arc::new(SystemClock));
    let daemon = Daemon::new(
        config,
        None,
        Arc::new(SqliteStore::create(&dir.join("mfad.db")).unwrap()),
        Arc::new(Vault::from_key(&[7_u8; 32])),
        Arc::new(SystemClock),
        Arc::new(DeadlineDirectory::new(Arc::new(directory), LOOKUP_DEADLINE, Arc::new(SystemClock))),
        Audit::new(sink_path),
    );

    let setup = Request::SetupBegin {
        user: Some(user.clone()),
        otp_type: Some(OtpType::Hotp),
        level: Some(ChallengeLevel::Always),
        current_code: None,
    };
    let secret = match exchange(&daemon, setup) {
        Response::SetupStarted { setup } => otp::base32_decode(&setup.secret).unwrap(),
        other => panic!("set-up refused: {other:?}"),
    };
    let code = |counter: u64| Code::new(otp::hotp(&secret, counter, Algorithm::Sha1, 6));
    match exchange(&daemon, Request::SetupConfirm { user: Some(user.clone()), code: code(0) }) {
        Response::SetupCompleted { .. } => {}
        other => panic!("set-up not confirmed: {other:?}"),
    }

    let login = |counter: u64| {
        let begin = Request::AuthBegin {
            service: "sshd".into(),
            user: user.clone(),
            ruser: None,
            rhost: Some("192.0.2.10".into()),
            tty: None,
            forward_pass: false,
        };
        let Response::Auth(AuthStep::Prompt { session_id, .. }) = exchange(&daemon, begin) else {
            panic!("no code prompt for {user}");
        };
        let decision = exchange(&daemon, Request::AuthAnswer { session_id, answer: code(counter) });
        assert!(
            matches!(decision, Response::Auth(AuthStep::Decision { outcome: Outcome::Verified, .. })),
            "login {counter} not verified: {decision:?}"
        );
        let mut line = [0_u8; 1024];
        while sink.recv(&mut line).is_ok() {}
    };
    for counter in 1..=WARM_UP {
        login(counter);
    }
    let (user_before, system_before) = cpu_micros();
    for counter in WARM_UP + 1..=WARM_UP + logins {
        login(counter);
    }
    let (user_after, system_after) = cpu_micros();
    let per_login = |before: f64, after: f64| (after - before) / logins as f64;
    println!(
        "{}",
        serde_json::json!({
            "logins": logins,
            "user_us": (per_login(user_before, user_after) * 10.0).round() / 10.0,
            "system_us": (per_login(system_before, system_after) * 10.0).round() / 10.0,
        })
    );
    ExitCode::SUCCESS
}
