//! The Prometheus text exposition format (version 0.0.4), and the file
//! node_exporter's textfile collector reads, replaced atomically.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{LATENCY_BUCKETS_MICROS, LoginCounter, Metrics, OTHER, ServiceCounters};

/// Gauges read from the daemon at the time of writing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Login conversations waiting for an answer.
    pub open_conversations: usize,
}

impl Metrics {
    /// Every metric, in the text exposition format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let used = self.used.load(Ordering::Acquire).min(self.services.len());
        let named = self.services[..used].iter().filter_map(|s| Some((s.name.get()?.as_str(), s)));
        let rows: Vec<(&str, &ServiceCounters)> = named.chain([(OTHER, &self.other)]).collect();
        for counter in LoginCounter::ALL {
            let (name, help) = counter.metric();
            header(&mut out, name, help, "counter");
            for (service, counters) in &rows {
                let value = counters.counts[counter.index()].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{service=\"{}\"}} {value}", escape_label(service));
            }
        }
        let plain = [
            ("mfad_store_errors_total", "Store calls that failed (out of reach, busy, or broken).", "counter", {
                self.store_errors.load(Ordering::Relaxed)
            }),
            ("mfad_unavailable_answers_total", "Requests answered unavailable (store out of reach).", "counter", {
                self.unavailable_answers.load(Ordering::Relaxed)
            }),
            ("mfad_open_conversations", "Login conversations waiting for an answer.", "gauge", {
                gauges.open_conversations as u64
            }),
            ("mfad_connected_clients", "Clients connected to the socket.", "gauge", {
                self.connected_clients.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, kind, value) in plain {
            header(&mut out, name, help, kind);
            let _ = writeln!(out, "{name} {value}");
        }
        self.render_latency(&mut out);
        out
    }

    fn render_latency(&self, out: &mut String) {
        let name = "mfad_store_commit_seconds";
        header(out, name, "Time to write an account's record to the store (failed writes included).", "histogram");
        let histogram = &self.commit_latency;
        let counts: Vec<u64> = histogram.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let mut cumulative = 0u64;
        for (bound, count) in LATENCY_BUCKETS_MICROS.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", seconds(*bound));
        }
        cumulative += counts.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = histogram.sum_micros.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_sum {}", seconds(sum));
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Microseconds as decimal seconds, exactly ("0.0025", "1", "12.000001").
pub fn seconds(micros: u64) -> String {
    let (whole, fraction) = (micros / 1_000_000, micros % 1_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A label value as the format requires: backslash, double quote and line
/// feed escaped (the service name is a client's text).
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Replace `path` with `text`, atomically: readers see the old file or the
/// new one, never half of one. The text is written to a hidden file in the
/// same directory (node_exporter reads only `*.prom`), made 0644, then
/// renamed over `path`. No fsync: after a crash the file is rewritten at
/// the next interval, and an fsync would only add disk writes.
pub fn write_textfile(path: &Path, text: &str) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| io::Error::other("the metrics textfile has no file name"))?;
    let temporary = temporary_path(path, &file_name.to_string_lossy());
    // A leftover from a write cut short; never followed if it is a link.
    match std::fs::remove_file(&temporary) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)?;
        // The mode given at creation is reduced by the umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn temporary_path(path: &Path, file_name: &str) -> PathBuf {
    path.with_file_name(format!(".{file_name}.tmp"))
}
