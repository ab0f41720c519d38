//! The ideal daemon, for `bench/run.sh`: what a login through pam_mfa
//! costs on this machine when the daemon does nothing but its I/O. It speaks
//! mfad's protocol to the module with answers encoded once at start: the
//! first request of a connection gets a code prompt (with `--no-code`: "no
//! code needed"), the next one "verified", after one durable write, and the
//! connection is closed after the decision, as mfad closes it. It reads
//! each request in one read and does not decode it: no account lookup, no
//! record, no code check, no decision (and, unless asked for below, no
//! store and no audit line). It is not a daemon to run anywhere else: it
//! accepts every code.
//!
//! ```text
//! bench_ideal SOCKET STATE_FILE [--no-code] [--threads N] [--sqlite] [--syslog PATH [--one-line]]
//! ```
//! - Connections are served as mfad serves them: N (64) threads wait in
//!   accept(2) on the socket, each serves the connection it accepts to its
//!   end and waits again.
//! - The durable write is the floor's: a pwrite of 100 bytes over the same
//!   offset of STATE_FILE, then fdatasync. Logins that write while another's
//!   fdatasync runs share the next one (group commit, as mfad's store
//!   writer), and each is answered once an fdatasync that began after its
//!   write has returned.
//! - `--sqlite`: the durable write is instead what the product's own store
//!   needs at the least, a SQLite commit (STATE_FILE a database in WAL
//!   mode, `synchronous=FULL`, as mfad's): the leader of a group commit
//!   updates one row per login in one transaction and commits, once.
//! - `--syslog PATH`: an audit line per decision, as mfad sends them: a
//!   datagram to PATH before the prompt and before the decision. With
//!   `--one-line`, only the one before the decision: a login's one line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};

use mfa_shared::frame;
use mfa_shared::protocol::{AuthStep, Outcome, Response, ResponseFrame};
use rusqlite::Connection;

/// One write on the disk per login, shared by the logins of one sync.
struct Durable {
    target: Target,
    state: Mutex<Synced>,
    synced: Condvar,
}

/// Where a login's write goes.
enum Target {
    /// 100 bytes over the same offset, then fdatasync: the floor's write.
    File(File),
    /// One row's update in a SQLite transaction, committed (used by the
    /// leader of a group commit only).
    Sqlite(Mutex<Connection>),
}

/// Rows of the SQLite table, updated in turn (about one per client).
const ROWS: u64 = 32;

/// A row's content, about the size of the floor's SQLite row.
fn row_record(n: u64) -> String {
    format!("{{\"type\":\"hotp\",\"secret\":\"{}\",\"counter\":{n},\"failures\":0}}", "A".repeat(300))
}

#[derive(Default)]
struct Synced {
    /// Writes made so far, and how many of them a sync has covered.
    written: u64,
    covered: u64,
    syncing: bool,
}

impl Durable {
    fn open(path: &str) -> Durable {
        let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path).unwrap();
        // The block exists and is on the disk before the first login.
        file.write_all_at(&[0_u8; 4096], 0).unwrap();
        file.sync_all().unwrap();
        Durable { target: Target::File(file), state: Mutex::default(), synced: Condvar::new() }
    }

    fn open_sqlite(path: &str) -> Durable {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE users (name TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL)").unwrap();
        for row in 0..ROWS {
            conn.execute("INSERT INTO users VALUES (?1, ?2)", (format!("u{row}"), row_record(0))).unwrap();
        }
        let durable =
            Durable { target: Target::Sqlite(Mutex::new(conn)), state: Mutex::default(), synced: Condvar::new() };
        // Past the WAL's first checkpoint, as bench/run.sh warms mfad's.
        for n in 0..1_100 {
            durable.sync(n, 1);
        }
        durable
    }

    /// Make the writes `from..from + count` durable (the leader only).
    fn sync(&self, from: u64, count: u64) {
        match &self.target {
            Target::File(file) => file.sync_data().unwrap(),
            Target::Sqlite(conn) => {
                let mut conn = conn.lock().unwrap();
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
                for n in from..from + count {
                    let mut update = tx.prepare_cached("UPDATE users SET record = ?1 WHERE name = ?2").unwrap();
                    update.execute((row_record(n), format!("u{}", n % ROWS))).unwrap();
                }
                tx.commit().unwrap();
            }
        }
    }

    /// Write a login's record and return once it is on the disk.
    fn write(&self, record: &[u8]) {
        let mut state = self.state.lock().unwrap();
        if let Target::File(file) = &self.target {
            file.write_all_at(record, 0).unwrap();
        }
        state.written += 1;
        let mine = state.written;
        while state.covered < mine {
            if state.syncing {
                state = self.synced.wait(state).unwrap();
                continue;
            }
            // Lead: this sync covers every write made before it began.
            state.syncing = true;
            let (from, covers) = (state.covered, state.written);
            drop(state);
            self.sync(from, covers - from);
            state = self.state.lock().unwrap();
            state.syncing = false;
            state.covered = covers;
            self.synced.notify_all();
        }
    }
}

/// Read one whole frame (mfad's requests come in one write), undecoded;
/// false at the end of the connection.
fn request(stream: &mut UnixStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    loop {
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
        if have >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if 4 + len > buf.len() {
                return false;
            }
            if have >= 4 + len {
                return true;
            }
        }
    }
}

/// The answers, encoded once: a code prompt (none with `--no-code`) and
/// the decision that ends the connection, as mfad's does.
struct Answers {
    prompt: Option<Vec<u8>>,
    decision: Vec<u8>,
}

/// With `--syslog`: the audit lines, about the length of mfad's, and the
/// socket they go to.
struct Audit {
    socket: UnixDatagram,
    /// None with `--one-line`.
    challenge: Option<Vec<u8>>,
    decision: Vec<u8>,
}

impl Audit {
    fn connect(path: &str, no_code: bool, one_line: bool) -> Audit {
        let socket = UnixDatagram::unbound().unwrap();
        socket.connect(path).unwrap();
        let pid = std::process::id();
        let line = |event: &str, reason: &str| {
            format!("<86>bench_ideal[{pid}]: event={event} user=seq1 service=ideal outcome={event} reason=\"{reason}\"")
                .into_bytes()
        };
        let decision = if no_code { line("not_required", "not enrolled") } else { line("success", "challenge passed") };
        let challenge = (!one_line).then(|| line("challenge", "level always"));
        Audit { socket, challenge, decision }
    }

    fn send_challenge(&self) {
        if let Some(line) = &self.challenge {
            self.send(line);
        }
    }

    fn send_decision(&self) {
        self.send(&self.decision);
    }

    /// A lost line is the sink's business: the login goes on, as mfad's.
    fn send(&self, line: &[u8]) {
        let _ = self.socket.send(line);
    }
}

fn serve(mut stream: UnixStream, answers: &Answers, durable: &Durable, audit: Option<&Audit>) {
    let mut buf = vec![0_u8; frame::READ_SIZE];
    if !request(&mut stream, &mut buf) {
        return;
    }
    if let Some(prompt) = &answers.prompt {
        if let Some(audit) = audit {
            audit.send_challenge();
        }
        if stream.write_all(prompt).is_err() || !request(&mut stream, &mut buf) {
            return;
        }
        durable.write(&[0x5a_u8; 100]);
    }
    if let Some(audit) = audit {
        audit.send_decision();
    }
    let _ = stream.write_all(&answers.decision);
}

fn encoded(response: Response) -> Vec<u8> {
    frame::encode(&ResponseFrame::new(response)).unwrap()
}

fn main() -> ExitCode {
    let usage =
        "usage: bench_ideal SOCKET STATE_FILE [--no-code] [--threads N] [--sqlite] [--syslog PATH [--one-line]]";
    let mut args = std::env::args().skip(1);
    let (mut paths, mut no_code, mut threads) = (Vec::new(), false, 64_usize);
    let (mut sqlite, mut syslog, mut one_line) = (false, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-code" => no_code = true,
            "--sqlite" => sqlite = true,
            "--one-line" => one_line = true,
            "--syslog" => match args.next() {
                Some(path) => syslog = Some(path),
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            "--threads" => match args.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0) {
                Some(n) => threads = n,
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            _ if !arg.starts_with('-') => paths.push(arg),
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let [socket, state] = paths.as_slice() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let answers = Arc::new(if no_code {
        Answers {
            prompt: None,
            decision: encoded(Response::Auth(AuthStep::Decision {
                outcome: Outcome::NotRequired,
                messages: Vec::new(),
            })),
        }
    } else {
        Answers {
            prompt: Some(encoded(Response::Auth(AuthStep::Prompt {
                session_id: "0123456789abcdef0123456789abcdef".to_string(),
                messages: Vec::new(),
                prompt: "Verification code: ".to_string(),
                echo: false,
            }))),
            decision: encoded(Response::Auth(AuthStep::Decision { outcome: Outcome::Verified, messages: Vec::new() })),
        }
    });
    let durable = Arc::new(if sqlite { Durable::open_sqlite(state) } else { Durable::open(state) });
    let audit = Arc::new(syslog.map(|path| Audit::connect(&path, no_code, one_line)));
    let _ = std::fs::remove_file(socket);
    let listener = Arc::new(UnixListener::bind(socket).unwrap());
    let servers: Vec<_> = (0..threads)
        .map(|_| {
            let (listener, answers, durable) = (listener.clone(), answers.clone(), durable.clone());
            let audit = audit.clone();
            std::thread::spawn(move || {
                loop {
                    if let Ok((stream, _)) = listener.accept() {
                        serve(stream, &answers, &durable, audit.as_ref().as_ref());
                    }
                }
            })
        })
        .collect();
    for server in servers {
        let _ = server.join();
    }
    ExitCode::SUCCESS
}
