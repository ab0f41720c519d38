//! Rewrite the metrics textfile every interval, and once more at shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::exposition::write_textfile;
use crate::audit::Severity;
use crate::service::Daemon;

/// Writes the textfile of one daemon; a failure is logged once, and its end.
pub struct Publisher {
    daemon: Arc<Daemon>,
    path: PathBuf,
    failing: AtomicBool,
}

impl Publisher {
    pub fn new(daemon: Arc<Daemon>, path: PathBuf) -> Arc<Publisher> {
        Arc::new(Publisher { daemon, path, failing: AtomicBool::new(false) })
    }

    /// Write the file now (blocking file I/O: call it off the runtime).
    pub fn write(&self) {
        let text = self.daemon.metrics_text();
        match write_textfile(&self.path, &text) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    self.log(Severity::Notice, "written again");
                }
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    self.log(Severity::Warning, &format!("cannot be written: {err}"));
                }
            }
        }
    }

    fn log(&self, severity: Severity, what: &str) {
        self.daemon.audit.event(severity, &format!("metrics textfile {}: {what}", display(&self.path)));
    }

    /// Write every `every` until `stopped` turns true (the caller writes
    /// once more when the last requests are answered).
    pub async fn run(self: Arc<Self>, every: Duration, mut stopped: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.write()).await;
                }
                _ = stopped.changed() => return,
            }
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
