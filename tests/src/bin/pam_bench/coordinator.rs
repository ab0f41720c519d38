//! The coordinator: starts the workers, releases them together, adds up what they report.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use crate::options::*;
use crate::worker::*;

pub(crate) struct Worker {
    pub(crate) child: Child,
    /// Start times go down this pipe, one line each.
    pub(crate) go: ChildStdin,
    pub(crate) lines: BufReader<ChildStdout>,
    /// See `repeated_codes`.
    pub(crate) repeated_codes: usize,
    /// Index of its service in `Options::services`.
    pub(crate) service: usize,
}

impl Worker {
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.lines.read_line(&mut line).unwrap();
        assert!(n > 0, "a worker exited early (pid {})", self.child.id());
        line.trim_end().to_string()
    }
}

/// Starts the workers one at a time, each once the previous one is ready:
/// libpam-wrapper picks each process's private copy of the service dir
/// (`/tmp/pam.X`) with an lstat-then-mkdir that races between processes
/// starting at once.
pub(crate) fn spawn_workers(o: &Options) -> Vec<Worker> {
    let exe = std::env::current_exe().unwrap();
    (0..o.procs)
        .map(|i| {
            let user = match o.mode {
                Mode::Contested => &o.users[0],
                _ => &o.users[i % o.users.len()],
            };
            let (secret, first) = o.secrets.get(user).cloned().unwrap_or_default();
            let service = i % o.services.len();
            let mut child = Command::new(&exe)
                .arg("__worker")
                .args([&o.services[service], user, &secret, &first.to_string(), &o.iterations.to_string()])
                .args([o.mode.name(), o.rhost.as_deref().unwrap_or("")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("cannot spawn a worker");
            let go = child.stdin.take().unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap());
            let mut worker = Worker { child, go, lines, repeated_codes: 0, service };
            let line = worker.line();
            let repeats = line.strip_prefix("ready ").unwrap_or_else(|| panic!("worker said {line:?}"));
            worker.repeated_codes = repeats.parse().unwrap();
            worker
        })
        .collect()
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
pub(crate) fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Every worker is told the same start instant, far enough ahead for all of
/// them to be asleep waiting for it.
pub(crate) fn release(workers: &mut [Worker]) {
    let lead_ns = 1_000_000 + 100_000 * workers.len() as u64;
    let at = monotonic_ns() + lead_ns;
    for w in workers.iter_mut() {
        writeln!(w.go, "{at}").unwrap();
        w.go.flush().unwrap();
    }
}

/// The numbers of a worker's line `PREFIX N N ...`.
pub(crate) fn numbers(line: &str, prefix: &str) -> Vec<u64> {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("worker said {line:?}"))
        .split(' ')
        .map(|f| f.parse().unwrap())
        .collect()
}

/// What the workers reported, over all of them.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: usize,
    pub(crate) failed: usize,
    /// Of every pam_authenticate call, in nanoseconds.
    pub(crate) latencies: Vec<u64>,
    /// Successes by service index (acceptances, in a contested run).
    pub(crate) ok_by_service: Vec<usize>,
}

impl Tally {
    pub(crate) fn new(services: usize) -> Tally {
        Tally { ok_by_service: vec![0; services], ..Tally::default() }
    }
}

/// Clock ticks of CPU time: the machine's busy time (user, nice, system,
/// irq, softirq, steal), its idle time (idle, iowait) and one process's
/// (user + system).
#[derive(Clone, Copy)]
pub(crate) struct CpuTicks {
    busy: u64,
    idle: u64,
    process: u64,
}

impl CpuTicks {
    pub(crate) fn now(pid: u32) -> CpuTicks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu: Vec<u64> =
            stat.lines().next().unwrap().split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
        let own =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("--cpu-of {pid}: {e}"));
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = own.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let (utime, stime): (u64, u64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
        CpuTicks {
            busy: cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7],
            idle: cpu[3] + cpu[4],
            process: utime + stime,
        }
    }

    /// The JSON of the time from `self` to `end`.
    pub(crate) fn until(self, end: CpuTicks) -> serde_json::Value {
        // SAFETY: sysconf has no preconditions.
        let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        serde_json::json!({
            "busy_ticks": end.busy - self.busy,
            "idle_ticks": end.idle - self.idle,
            "process_ticks": end.process - self.process,
            "ticks_per_s": per_s,
        })
    }
}

/// Loop and no-code modes: one start for all, then each worker's `done`
/// line. Returns the wall time, from the first worker's start to the last
/// one's end, in seconds, and with `cpu_of`, the CPU time from just before
/// the start to the last `done`.
pub(crate) fn collect_loop(
    workers: &mut [Worker],
    tally: &mut Tally,
    cpu_of: Option<u32>,
) -> (f64, Option<serde_json::Value>) {
    let before = cpu_of.map(CpuTicks::now);
    release(workers);
    let (mut first_start, mut last_end) = (u64::MAX, 0u64);
    for w in workers {
        let fields = numbers(&w.line(), "done ");
        tally.ok += fields[0] as usize;
        tally.ok_by_service[w.service] += fields[0] as usize;
        tally.failed += fields[1] as usize;
        first_start = first_start.min(fields[2]);
        last_end = last_end.max(fields[3]);
        tally.latencies.extend_from_slice(&fields[4..]);
    }
    let cpu = before.zip(cpu_of).map(|(before, pid)| before.until(CpuTicks::now(pid)));
    ((last_end - first_start) as f64 / 1e9, cpu)
}

/// The rounds of a contested run.
pub(crate) struct Contest {
    pub(crate) wall_s: f64,
    /// distribution[k] = rounds in which exactly k workers were accepted.
    pub(crate) distribution: Vec<usize>,
    /// How far apart the workers' pam_authenticate calls began, per round.
    pub(crate) spreads: Vec<u64>,
}

/// Contested mode: `rounds` starts, each answered by one `round` line per
/// worker.
pub(crate) fn collect_contested(workers: &mut [Worker], rounds: usize, tally: &mut Tally) -> Contest {
    let mut distribution = vec![0usize; workers.len() + 1];
    let mut spreads = Vec::new();
    let started = Instant::now();
    for _ in 0..rounds {
        release(workers);
        let (mut accepted, mut first, mut last) = (0, u64::MAX, 0);
        for w in workers.iter_mut() {
            let f = numbers(&w.line(), "round ");
            let won = f[0] == 1;
            tally.latencies.push(f[1]);
            (first, last) = (first.min(f[2]), last.max(f[2]));
            accepted += usize::from(won);
            if won {
                tally.ok += 1;
                tally.ok_by_service[w.service] += 1;
            } else {
                tally.failed += 1;
            }
        }
        distribution[accepted] += 1;
        spreads.push(last - first);
    }
    Contest { wall_s: started.elapsed().as_secs_f64(), distribution, spreads }
}

/// The contested run's own fields of the JSON line.
pub(crate) fn add_contest_fields(doc: &mut serde_json::Value, contest: Contest, rounds: usize) {
    let Contest { distribution, mut spreads, .. } = contest;
    spreads.sort_unstable();
    doc["start_spread_median_us"] = round1(percentile_us(&spreads, 50.0)).into();
    doc["start_spread_max_us"] = round1(percentile_us(&spreads, 100.0)).into();
    let dist: serde_json::Map<String, serde_json::Value> =
        distribution.iter().enumerate().filter(|(_, n)| **n > 0).map(|(k, n)| (k.to_string(), (*n).into())).collect();
    doc["rounds"] = rounds.into();
    doc["rounds_exactly_one"] = distribution[1].into();
    doc["accepted_per_round"] = dist.into();
    doc["max_accepted_in_a_round"] = distribution.iter().rposition(|n| *n > 0).unwrap_or(0).into();
}

/// Closes the workers' start pipes and waits for each to exit successfully.
pub(crate) fn reap(workers: Vec<Worker>) {
    for Worker { mut child, go, .. } in workers {
        drop(go);
        let status = child.wait().unwrap();
        assert!(status.success(), "worker {} exited with {status}", child.id());
    }
}

/// The counts, latency percentiles and throughput of the JSON line.
pub(crate) fn add_tally_fields(doc: &mut serde_json::Value, mut tally: Tally, wall_s: f64) {
    tally.latencies.sort_unstable();
    doc["successes"] = tally.ok.into();
    doc["failures"] = tally.failed.into();
    doc["median_us"] = round1(percentile_us(&tally.latencies, 50.0)).into();
    doc["p99_us"] = round1(percentile_us(&tally.latencies, 99.0)).into();
    doc["wall_s"] = ((wall_s * 1000.0).round() / 1000.0).into();
    doc["throughput_per_s"] = round1(if wall_s > 0.0 { tally.ok as f64 / wall_s } else { 0.0 }).into();
}

/// Runs the workers and returns the JSON line.
pub(crate) fn coordinate(o: &Options) -> serde_json::Value {
    let mut workers = spawn_workers(o);
    let mut doc = serde_json::json!({
        "scenario": o.scenario,
        "module": o.module,
        "service": o.services.join(","),
        "mode": o.mode.name(),
        "procs": o.procs,
        "iterations": o.iterations,
        // Contested workers all offer the same codes: count them once.
        "repeated_codes": match o.mode {
            Mode::Contested => workers[0].repeated_codes,
            _ => workers.iter().map(|w| w.repeated_codes).sum(),
        },
    });
    let mut tally = Tally::new(o.services.len());
    let wall_s = match o.mode {
        Mode::Loop | Mode::NoCode => {
            let (wall_s, cpu) = collect_loop(&mut workers, &mut tally, o.cpu_of);
            if let Some(cpu) = cpu {
                doc["cpu"] = cpu;
            }
            wall_s
        }
        Mode::Contested => {
            let contest = collect_contested(&mut workers, o.iterations, &mut tally);
            let wall_s = contest.wall_s;
            add_contest_fields(&mut doc, contest, o.iterations);
            wall_s
        }
    };
    reap(workers);
    if o.services.len() > 1 {
        // Which daemon each success (each round's acceptance) went through.
        let by: serde_json::Map<String, serde_json::Value> =
            o.services.iter().zip(&tally.ok_by_service).map(|(s, n)| (s.clone(), (*n).into())).collect();
        doc["successes_by_service"] = by.into();
    }
    add_tally_fields(&mut doc, tally, wall_s);
    doc
}
