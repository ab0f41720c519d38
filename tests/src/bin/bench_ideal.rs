//! The ideal daemon, for `bench/run.sh`: what a login through pam_mfa
//! costs on this machine when the daemon does nothing but its I/O. It speaks
//! mfad's protocol to the module with answers encoded once at start: the
//! first request of a connection gets a code prompt (with `--no-code`: "no
//! code needed"), the next one "verified", after one durable write, and the
//! connection is closed after the decision, as mfad closes it. It reads
//! each request in one read and does not decode it: no account lookup, no
//! store, no code check, no audit line. It is not a daemon to run anywhere
//! else: it accepts every code.
//!
//! ```text
//! bench_ideal SOCKET STATE_FILE [--no-code] [--threads N]
//! ```
//! - Connections are served as mfad serves them: N (64) threads wait in
//!   accept(2) on the socket, each serves the connection it accepts to its
//!   end and waits again.
//! - The durable write is the floor's: a pwrite of 100 bytes over the same
//!   offset of STATE_FILE, then fdatasync. Logins that write while another's
//!   fdatasync runs share the next one (group commit, as mfad's store
//!   writer), and each is answered once an fdatasync that began after its
//!   write has returned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};

use mfa_shared::frame;
use mfa_shared::protocol::{AuthStep, Outcome, Response, ResponseFrame};

/// One write on the disk per login, shared by the logins of one fdatasync.
struct Durable {
    file: File,
    state: Mutex<Synced>,
    synced: Condvar,
}

#[derive(Default)]
struct Synced {
    /// Writes made so far, and how many of them an fdatasync has covered.
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
        Durable { file, state: Mutex::default(), synced: Condvar::new() }
    }

    /// Write a login's record and return once it is on the disk.
    fn write(&self, record: &[u8]) {
        let mut state = self.state.lock().unwrap();
        self.file.write_all_at(record, 0).unwrap();
        state.written += 1;
        let mine = state.written;
        while state.covered < mine {
            if state.syncing {
                state = self.synced.wait(state).unwrap();
                continue;
            }
            // Lead: this fdatasync covers every write made before it began.
            state.syncing = true;
            let covers = state.written;
            drop(state);
            self.file.sync_data().unwrap();
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

fn serve(mut stream: UnixStream, answers: &Answers, durable: &Durable) {
    let mut buf = vec![0_u8; frame::READ_SIZE];
    if !request(&mut stream, &mut buf) {
        return;
    }
    if let Some(prompt) = &answers.prompt {
        if stream.write_all(prompt).is_err() || !request(&mut stream, &mut buf) {
            return;
        }
        durable.write(&[0x5a_u8; 100]);
    }
    let _ = stream.write_all(&answers.decision);
}

fn encoded(response: Response) -> Vec<u8> {
    frame::encode(&ResponseFrame::new(response)).unwrap()
}

fn main() -> ExitCode {
    let usage = "usage: bench_ideal SOCKET STATE_FILE [--no-code] [--threads N]";
    let mut args = std::env::args().skip(1);
    let (mut paths, mut no_code, mut threads) = (Vec::new(), false, 64_usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-code" => no_code = true,
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
    let durable = Arc::new(Durable::open(state));
    let _ = std::fs::remove_file(socket);
    let listener = Arc::new(UnixListener::bind(socket).unwrap());
    let servers: Vec<_> = (0..threads)
        .map(|_| {
            let (listener, answers, durable) = (listener.clone(), answers.clone(), durable.clone());
            std::thread::spawn(move || {
                loop {
                    if let Ok((stream, _)) = listener.accept() {
                        serve(stream, &answers, &durable);
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
