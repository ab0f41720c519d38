//! The physical floor under a login, measured by `bench/run.sh` on the
//! machine and the scratch file system of the run (the SQLite commit is
//! measured by `bench/floor_sqlite.py`). Prints one JSON line per floor:
//! `{"kind": "floor", "floor": NAME, "what": ..., "iterations": N,
//! "median_us": ..., "p99_us": ...}`.
//!
//! ```text
//! bench_floor DIR [--sync-iterations N] [--rtt-iterations N] [--size BYTES]
//! ```
//! - `fdatasync`: pwrite of BYTES (100) at offset 0 of a file in DIR, then
//!   fdatasync, N (2,000) times; the latency of each pair. The file keeps its
//!   size, as SQLite's write-ahead log does once it has reached it, so only
//!   the data block goes to the disk (no metadata).
//! - `fsync`: the same with fsync, which SQLite (as built into mfad) calls
//!   at every commit: the inode goes to the disk too when its times changed.
//! - `unix_rtt`: a client writes BYTES to a Unix stream socket in DIR and
//!   reads the BYTES an echo server (another process) sends back, N
//!   (20,000) times on one connection; the latency of each round trip.
//! - `unix_connect_rtt`: socket, connect, one such round trip, close (a
//!   PAM login connects to mfad anew), N / 10 times.
//! - `unix_rtt_1cpu`, `unix_connect_rtt_1cpu`: the same two with client and
//!   server pinned to one CPU. Unpinned, the scheduler may wake the other side on
//!   another CPU; in a virtual machine an idle virtual CPU takes tens of
//!   microseconds to wake, so the two differ by what each cross-CPU wakeup
//!   costs here.
//!
//! Timing is `Instant` (CLOCK_MONOTONIC through the vDSO). Each measurement
//! is preceded by a warm-up of a tenth of its iterations, not counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Nearest-rank percentile of sorted nanoseconds, in microseconds (as
/// pam_bench computes its own).
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    (sorted[rank.min(sorted.len()) - 1] as f64 / 100.0).round() / 10.0
}

fn line(floor: &str, what: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let doc = serde_json::json!({
        "kind": "floor",
        "floor": floor,
        "what": what,
        "iterations": ns.len(),
        "median_us": percentile_us(&ns, 50.0),
        "p99_us": percentile_us(&ns, 99.0),
    });
    println!("{doc}");
}

fn timed(iterations: usize, mut op: impl FnMut()) -> Vec<u64> {
    for _ in 0..iterations.div_ceil(10) {
        op();
    }
    (0..iterations)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed().as_nanos() as u64
        })
        .collect()
}

fn sync(dir: &Path, iterations: usize, size: usize) {
    let path = dir.join("floor-fdatasync");
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    let buf = vec![0x5a_u8; size];
    // The block exists and is on disk before the first timed write.
    file.write_all_at(&vec![0_u8; 4096], 0).unwrap();
    file.sync_all().unwrap();
    let ns = timed(iterations, || {
        file.write_all_at(&buf, 0).unwrap();
        file.sync_data().unwrap();
    });
    line("fdatasync", &format!("pwrite {size} B over the same offset + fdatasync"), ns);

    // What SQLite (as built into mfad) calls at a commit: fsync, which also
    // writes the inode when the write changed its times.
    let ns = timed(iterations, || {
        file.write_all_at(&buf, 0).unwrap();
        file.sync_all().unwrap();
    });
    line("fsync", &format!("pwrite {size} B over the same offset + fsync"), ns);
    drop(file);
    fs::remove_file(&path).unwrap();
}

fn round_trip(stream: &mut UnixStream, out: &[u8], back: &mut [u8]) {
    stream.write_all(out).unwrap();
    stream.read_exact(back).unwrap();
}

fn echo(mut stream: UnixStream) {
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The CPUs this process may run on, to be restored.
fn affinity() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        set
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

/// The round trips; with `one_cpu`, client and server both pinned to the
/// CPU this process is on (no cross-CPU wakeup: the lowest a round trip
/// between two processes costs here).
fn unix_socket(dir: &Path, iterations: usize, size: usize, one_cpu: bool) {
    let before = affinity();
    if one_cpu {
        // SAFETY: plain data, filled below.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: sched_getcpu has no preconditions; CPU_SET on a zeroed set.
        unsafe { libc::CPU_SET(libc::sched_getcpu().max(0) as usize, &mut set) };
        set_affinity(&set);
    }
    let path = dir.join("floor.sock");
    let _ = fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    // The server is another process, as mfad is to the PAM client. This
    // process has one thread, so fork is safe.
    // SAFETY: fork in a single-threaded process; the child only uses the
    // listener and exits without returning.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => echo(stream),
                Err(_) => break,
            }
        }
        // SAFETY: leaves the child without running the parent's exit path.
        unsafe { libc::_exit(0) };
    }
    drop(listener);

    let out = vec![0x5a_u8; size];
    let mut back = vec![0_u8; size];
    let mut stream = UnixStream::connect(&path).unwrap();
    let ns = timed(iterations, || round_trip(&mut stream, &out, &mut back));
    if one_cpu {
        line("unix_rtt_1cpu", "the same round trip, client and server pinned to one CPU (no cross-CPU wakeup)", ns);
    } else {
        line("unix_rtt", &format!("{size} B request and {size} B reply on a connected Unix stream socket"), ns);
    }
    drop(stream);

    let ns = timed(iterations.div_ceil(10), || {
        let mut stream = UnixStream::connect(&path).unwrap();
        round_trip(&mut stream, &out, &mut back);
    });
    if one_cpu {
        line("unix_connect_rtt_1cpu", "connect, one round trip, close, both pinned to one CPU", ns);
    } else {
        line("unix_connect_rtt", &format!("connect, one {size} B round trip, close"), ns);
    }

    // SAFETY: plain syscalls on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let _ = fs::remove_file(&path);
    set_affinity(&before);
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let (mut sync_iterations, mut rtt_iterations, mut size) = (2000_usize, 20_000_usize, 100_usize);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or_else(|| {
                eprintln!("bench_floor: {name} takes a positive number");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--sync-iterations" => sync_iterations = value("--sync-iterations"),
            "--rtt-iterations" => rtt_iterations = value("--rtt-iterations"),
            "--size" => size = value("--size"),
            _ if dir.is_none() && !arg.starts_with('-') => dir = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("usage: bench_floor DIR [--sync-iterations N] [--rtt-iterations N] [--size BYTES]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: bench_floor DIR [--sync-iterations N] [--rtt-iterations N] [--size BYTES]");
        return ExitCode::from(2);
    };
    sync(&dir, sync_iterations, size);
    unix_socket(&dir, rtt_iterations, size, false);
    unix_socket(&dir, rtt_iterations, size, true);
    ExitCode::SUCCESS
}
