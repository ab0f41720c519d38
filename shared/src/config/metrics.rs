//! `[metrics]`: counters for node_exporter's textfile collector. mfad opens
//! no port; it rewrites one file in Prometheus text format.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigDuration;

/// `interval` bounds: often enough to graph, rarely enough to cost nothing.
pub const MIN_METRICS_INTERVAL_SECS: u64 = 1;
pub const MAX_METRICS_INTERVAL_SECS: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The file to rewrite (absent: no metrics), e.g.
    /// `/var/lib/prometheus/node-exporter/mfad.prom`.
    pub textfile: Option<PathBuf>,
    /// How often the file is rewritten (and once more at shutdown).
    pub interval: ConfigDuration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { textfile: None, interval: ConfigDuration(Duration::from_secs(15)) }
    }
}

impl MetricsConfig {
    /// What is wrong with the settings, as (key, message).
    pub(super) fn problem(&self) -> Option<(&'static str, String)> {
        let secs = self.interval.as_secs();
        if !(MIN_METRICS_INTERVAL_SECS..=MAX_METRICS_INTERVAL_SECS).contains(&secs) {
            return Some(("interval", "must be between 1s and 1h".to_string()));
        }
        let path = self.textfile.as_ref()?;
        if !path.is_absolute() {
            return Some(("textfile", "must be an absolute path".to_string()));
        }
        // node_exporter reads only *.prom files of its directory.
        if path.extension().is_none_or(|ext| ext != "prom") || path.file_stem().is_none() {
            return Some(("textfile", "must end in .prom (node_exporter reads only those)".to_string()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn metrics_are_off_unless_a_textfile_is_named() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.metrics.textfile, None);
        assert_eq!(config.metrics.interval.as_secs(), 15);
        let config = Config::parse("[metrics]\ntextfile = \"/var/lib/node/mfad.prom\"\ninterval = \"1m\"\n").unwrap();
        assert_eq!(config.metrics.textfile.unwrap().to_str(), Some("/var/lib/node/mfad.prom"));
        assert_eq!(config.metrics.interval.as_secs(), 60);
    }

    #[test]
    fn metrics_settings_are_validated() {
        let key = |text: &str| Config::parse(text).unwrap_err().key;
        assert_eq!(key("[metrics]\ninterval = \"0s\"\n").as_deref(), Some("interval"));
        assert_eq!(key("[metrics]\ninterval = \"2h\"\n").as_deref(), Some("interval"));
        assert_eq!(key("[metrics]\ntextfile = \"mfad.prom\"\n").as_deref(), Some("textfile"));
        let err = Config::parse("[metrics]\ntextfile = \"/var/lib/node/mfad.txt\"\n").unwrap_err();
        assert!(err.to_string().contains(".prom") && err.line == Some(2), "{err}");
        assert_eq!(key("[metrics]\nport = 9100\n").as_deref(), Some("port"));
    }
}
