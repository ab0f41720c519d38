//! mfad's configuration file (`/etc/mfad/mfad.toml`).
//!
//! Parsing is a pure function of the text ([`Config::parse`]); unknown keys
//! and wrong types are errors that name the key and the line.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::bypass::{BypassRule, RuleOrigin};
use crate::client::DEFAULT_SOCKET;
use crate::protocol::{Algorithm, ChallengeLevel, OtpType};

mod metrics;
pub use metrics::MetricsConfig;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/mfad/mfad.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Off by default: the module is a no-op until an admin turns it on.
    pub enabled: bool,
    pub socket: PathBuf,
    /// Issuer shown in authenticator apps; the host name when unset.
    pub issuer: Option<String>,
    /// The terminal background the inline set-up's QR code is drawn for.
    pub qr_background: QrBackground,
    /// Members may administer every account through mfactl.
    pub admin_group: String,
    pub default_type: OtpType,
    pub default_level: ChallengeLevel,
    /// TOTP steps accepted on either side of the current one.
    pub totp_skew: u32,
    /// HOTP counters looked ahead of the next expected one.
    pub hotp_window: u32,
    pub digits: u32,
    pub period: u64,
    pub algorithm: Algorithm,
    pub trust_window: ConfigDuration,
    pub max_trust: ConfigDuration,
    pub always_challenge_services: Vec<String>,
    /// Wrong codes allowed in one login conversation before PAM_MAXTRIES.
    pub max_tries: u32,
    /// Connections served at once from root, and as many from other users
    /// (at most 8 per user); beyond that a client is told mfad is busy.
    pub max_connections: usize,
    /// Time a person has to answer a prompt of a login conversation.
    pub request_timeout: ConfigDuration,
    /// A set-up not completed within this long lapses.
    pub setup_timeout: ConfigDuration,
    pub lockout: LockoutConfig,
    pub elevation: ElevationConfig,
    pub bypass: BypassConfig,
    #[serde(rename = "role")]
    pub roles: Vec<RoleConfig>,
    pub store: StoreConfig,
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            socket: PathBuf::from(DEFAULT_SOCKET),
            issuer: None,
            qr_background: QrBackground::Dark,
            admin_group: "mfa-admins".into(),
            default_type: OtpType::Totp,
            default_level: ChallengeLevel::Adaptive,
            totp_skew: 1,
            hotp_window: 10,
            digits: 6,
            period: 30,
            algorithm: Algorithm::Sha1,
            trust_window: ConfigDuration(Duration::from_secs(12 * 3600)),
            max_trust: ConfigDuration(Duration::from_secs(7 * 86400)),
            always_challenge_services: Vec::new(),
            max_tries: 3,
            max_connections: 128,
            request_timeout: ConfigDuration(Duration::from_secs(120)),
            setup_timeout: ConfigDuration(Duration::from_secs(600)),
            lockout: LockoutConfig::default(),
            elevation: ElevationConfig::default(),
            bypass: BypassConfig::default(),
            roles: Vec::new(),
            store: StoreConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `qr_background`: the background of the terminals people set up a device
/// from. A code drawn for the other one shows inverted, which many scanners
/// cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QrBackground {
    /// Light text on a dark background (most terminals): light modules drawn.
    Dark,
    /// Dark text on a light background: dark modules drawn.
    Light,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    pub max_failures: u32,
    pub duration: ConfigDuration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig { max_failures: 5, duration: ConfigDuration(Duration::from_secs(15 * 60)) }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElevationConfig {
    pub services: Vec<String>,
    pub require_approval: bool,
}

impl Default for ElevationConfig {
    fn default() -> Self {
        ElevationConfig {
            services: crate::protocol::DEFAULT_ELEVATION_SERVICES.iter().map(|s| s.to_string()).collect(),
            require_approval: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BypassConfig {
    /// Global switch: nothing is bypassed while it is off.
    pub enabled: bool,
    #[serde(rename = "rule")]
    pub rules: Vec<BypassRuleEntry>,
}

/// A `[[bypass.rule]]` as written in the file. The file gives a timeout, not
/// a time: mfad makes each entry a [`BypassRule`] whose expiry counts from
/// when it first loaded the entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BypassRuleEntry {
    #[serde(with = "crate::bypass::network_text")]
    pub cidr: IpNet,
    #[serde(default)]
    pub bypass_2fa: bool,
    /// The rule lapses this long after the entry was first loaded.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
}

impl BypassRuleEntry {
    /// The rule, for an entry first loaded at `first_loaded`.
    pub fn rule(&self, first_loaded: u64) -> BypassRule {
        BypassRule {
            network: self.cidr,
            bypass_2fa: self.bypass_2fa,
            expires_at: self.timeout.map(|t| first_loaded.saturating_add(t.as_secs())),
            origin: RuleOrigin::Config,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolePolicy {
    /// Offered inline set-up, may skip it.
    Encourage,
    /// Must set up before the login proceeds.
    Force,
    /// As force, and a code at every login whatever the user's level.
    Require,
}

impl RolePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RolePolicy::Encourage => "encourage",
            RolePolicy::Force => "force",
            RolePolicy::Require => "require",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub group: String,
    pub policy: RolePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A file on this host.
    Sqlite,
    /// One PostgreSQL database shared by a fleet of hosts.
    Postgres,
}

/// How the connection to PostgreSQL is protected (libpq's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS (a Unix socket, or a network the operator trusts).
    Disable,
    /// TLS without checking the server's certificate: protects against
    /// listening, not against an impostor.
    Require,
    /// TLS, the server's certificate checked against `ca_file` and its name
    /// against the host connected to.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// SQLite database file.
    pub path: PathBuf,
    /// Key that encrypts secrets at rest; created 0600 on first start.
    pub key_file: PathBuf,
    /// Further keys whose sealed records this host can open, during a key
    /// rotation (see `mfad rekey`).
    pub accepted_key_files: Vec<PathBuf>,
    /// PostgreSQL: a libpq connection string (`host=... dbname=...` or a
    /// `postgresql://` URI) without a password.
    pub url: Option<String>,
    /// PostgreSQL: a file (mode 0600) holding the password.
    pub password_file: Option<PathBuf>,
    pub sslmode: SslMode,
    /// PostgreSQL: the CA certificates (PEM) that sign the server's.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: a client certificate and its key (PEM), when the server
    /// authenticates hosts by certificate.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// PostgreSQL: connections held open to the database.
    pub pool_size: usize,
    /// PostgreSQL: how long one request to the database (connecting
    /// included) may take before the client is answered `unavailable`;
    /// below the PAM module's timeout, so a slow database is never silence.
    pub connect_timeout: ConfigDuration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("/var/lib/mfad/mfad.db"),
            key_file: PathBuf::from("/etc/mfad/secret.key"),
            accepted_key_files: Vec::new(),
            url: None,
            password_file: None,
            sslmode: SslMode::VerifyFull,
            ca_file: None,
            client_cert: None,
            client_key: None,
            pool_size: 16,
            connect_timeout: ConfigDuration(Duration::from_secs(5)),
        }
    }
}

impl StoreConfig {
    /// What is wrong with the store settings, as (key, message).
    fn problem(&self) -> Option<(&'static str, String)> {
        let postgres_only = [
            ("url", self.url.is_some()),
            ("password_file", self.password_file.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
        ];
        if self.backend == StoreBackend::Sqlite {
            let (key, _) = postgres_only.iter().find(|(_, set)| *set)?;
            return Some((
                key,
                "applies only to backend = \"postgres\"; this store is backend = \"sqlite\"".to_string(),
            ));
        }
        let Some(url) = &self.url else {
            return Some((
                "backend",
                "backend = \"postgres\" needs [store] url, the fleet database's connection string, e.g. \
                 url = \"host=db.example.org port=5432 user=mfad dbname=mfa\""
                    .to_string(),
            ));
        };
        if url_has_password(url) {
            return Some((
                "url",
                "holds a password; put the password in a file of mode 0600 and name it in password_file".to_string(),
            ));
        }
        if self.sslmode == SslMode::VerifyFull && self.ca_file.is_none() && !url_is_unix_socket(url) {
            return Some((
                "sslmode",
                "verify-full needs ca_file, the CA certificate (PEM) that signed the database server's certificate"
                    .to_string(),
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Some(("client_cert", "client_cert and client_key go together".to_string()));
        }
        if !(1..=1024).contains(&self.pool_size) {
            return Some(("pool_size", "must be between 1 and 1024".to_string()));
        }
        if !(1..=30).contains(&self.connect_timeout.as_secs()) {
            return Some((
                "connect_timeout",
                "must be between 1s and 30s (and below the PAM module's timeout)".to_string(),
            ));
        }
        None
    }
}

/// Whether a connection string carries a password (`password=...` or
/// `user:password@` in a URI).
pub fn url_has_password(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("postgresql://").or_else(|| lower.strip_prefix("postgres://")) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let userinfo = authority.rsplit_once('@').map(|(u, _)| u).unwrap_or("");
        return userinfo.contains(':') || lower.contains("password=");
    }
    lower.split_whitespace().any(|pair| pair.trim_start().starts_with("password"))
}

/// Whether the connection string names a Unix socket directory as its host
/// (no TLS there: the kernel carries the bytes).
pub fn url_is_unix_socket(url: &str) -> bool {
    url.split_whitespace().any(|pair| pair.strip_prefix("host=").is_some_and(|h| h.starts_with('/')))
}

/// A duration written as "90s", "15m", "12h" or "7d".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(ConfigDuration).map_err(serde::de::Error::custom)
    }
}

/// Parse "90s", "15m", "12h", "7d" (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("invalid duration {text:?} (expected e.g. \"90s\", \"15m\", \"12h\", \"7d\")");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    match number.checked_mul(scale) {
        Some(secs) if secs <= MAX_DURATION_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!("duration {text:?} is too long (at most 3650d)")),
    }
}

/// Ten years: longer makes no sense for any setting, and a bound keeps
/// `now + duration` far from overflowing.
pub const MAX_DURATION_SECS: u64 = 3650 * 86400;

/// A configuration error that names the key and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(line) = self.line {
            out.push_str(&format!("line {line}: "));
        }
        if let Some(key) = &self.key {
            out.push_str(&format!("key `{key}`: "));
        }
        out.push_str(&self.message);
        out
    }

    fn semantic(key: &str, message: impl Into<String>, text: &str) -> Self {
        ConfigError { line: find_key_line(text, key), key: Some(key.into()), message: message.into() }
    }
}

impl Config {
    /// Parse and validate the text of a config file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| {
            let (line, key) = match err.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    (Some(line), key_on_line(text, line))
                }
                None => (None, None),
            };
            ConfigError { line, key, message: err.message().trim().to_string() }
        })?;
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: &str| Err(ConfigError::semantic(key, msg, text));
        if !(6..=8).contains(&self.digits) {
            return err("digits", "must be 6, 7 or 8");
        }
        if self.period == 0 || self.period > 3600 {
            return err("period", "must be between 1 and 3600 seconds");
        }
        if self.totp_skew > 10 {
            return err("totp_skew", "must be at most 10 steps");
        }
        if self.hotp_window == 0 || self.hotp_window > 1000 {
            return err("hotp_window", "must be between 1 and 1000");
        }
        if !(1..=10).contains(&self.max_tries) {
            return err("max_tries", "must be between 1 and 10");
        }
        if self.max_connections == 0 {
            return err("max_connections", "must be at least 1");
        }
        if self.request_timeout.as_secs() == 0 {
            return err("request_timeout", "must be at least 1s");
        }
        if self.setup_timeout.as_secs() == 0 {
            return err("setup_timeout", "must be at least 1s");
        }
        if self.lockout.max_failures == 0 {
            return err("max_failures", "must be at least 1");
        }
        if self.lockout.duration.as_secs() == 0 {
            return err("duration", "must be at least 1s (0 would make the lockout void)");
        }
        if self.admin_group.is_empty() {
            return err("admin_group", "must not be empty");
        }
        for role in &self.roles {
            if role.group.is_empty() {
                return err("group", "must name a group");
            }
        }
        if let Some((key, message)) = self.store.problem() {
            return err(key, &message);
        }
        if let Some((key, message)) = self.metrics.problem() {
            return err(key, &message);
        }
        Ok(())
    }

    /// The issuer shown in authenticator apps.
    pub fn issuer_or(&self, host_name: &str) -> String {
        self.issuer.clone().unwrap_or_else(|| host_name.to_string())
    }

    pub fn is_elevation(&self, service: &str) -> bool {
        self.elevation.services.iter().any(|s| s == service)
    }
}

/// The key assigned on a line (`key = value`), or the table name of a header.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?.trim();
    let key = match content.split_once('=') {
        Some((key, _)) => key.trim(),
        None => content.trim_matches(|c| c == '[' || c == ']').trim(),
    };
    (!key.is_empty()).then(|| key.trim_matches('"').to_string())
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        assert!(!config.enabled);
        assert!(config.is_elevation("sudo"));
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
enabled = true
issuer = "Example"
trust_window = "2s"
always_challenge_services = ["login"]
[lockout]
max_failures = 3
duration = "90s"
[elevation]
services = ["sudo"]
require_approval = false
[bypass]
enabled = true
[[bypass.rule]]
cidr = "10.0.0.0/8"
bypass_2fa = true
timeout = "8h"
[[role]]
group = "wheel"
policy = "require"
[store]
path = "/tmp/x.db"
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.trust_window.as_secs(), 2);
        assert_eq!(c.lockout.duration.as_secs(), 90);
        assert_eq!(c.bypass.rules[0].timeout.unwrap().as_secs(), 8 * 3600);
        assert_eq!(c.roles[0].policy, RolePolicy::Require);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse("enabled = true\nfrobnicate = 1\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.key.as_deref(), Some("frobnicate"));
        assert!(err.to_string().contains("frobnicate"), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::parse("\n\ndigits = \"six\"\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key.as_deref(), Some("digits"));
    }

    #[test]
    fn nested_unknown_key() {
        let err = Config::parse("[lockout]\nmax_failures = 2\nforever = true\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key.as_deref(), Some("forever"));
    }

    #[test]
    fn out_of_range_value_names_key() {
        let err = Config::parse("digits = 9\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("digits"));
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn lockout_cannot_be_voided() {
        let err = Config::parse("[lockout]\nduration = \"0s\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("duration"));
        assert_eq!(Config::parse("max_tries = 11\n").unwrap_err().key.as_deref(), Some("max_tries"));
    }

    #[test]
    fn postgres_needs_a_url_without_a_password_and_a_ca_to_verify() {
        let err = Config::parse("[store]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(err.to_string().contains("needs [store] url"), "{err}");
        let pg = |rest: &str| Config::parse(&format!("[store]\nbackend = \"postgres\"\n{rest}"));
        let err = pg("url = \"host=db user=mfad password=hunter2\"\nca_file = \"/ca\"").unwrap_err();
        assert!(err.to_string().contains("password_file") && !err.to_string().contains("hunter2"), "{err}");
        assert!(pg("url = \"postgresql://mfad:hunter2@db/mfa\"\nca_file = \"/ca\"").is_err());
        let err = pg("url = \"host=db.example.org user=mfad\"").unwrap_err();
        assert!(err.to_string().contains("ca_file"), "{err}");
        assert!(pg("url = \"host=db user=mfad\"\nca_file = \"/ca\"").is_ok());
        assert!(pg("url = \"postgresql://mfad@db/mfa\"\nsslmode = \"require\"").is_ok());
        // A Unix socket carries no TLS.
        assert!(pg("url = \"host=/run/postgresql user=mfad\"").is_ok());
        assert!(pg("url = \"host=/run/postgresql\"\nclient_cert = \"/c\"").is_err());
        let err = Config::parse("[store]\nurl = \"host=db\"\n").unwrap_err();
        assert!(err.to_string().contains("only to backend = \"postgres\""), "{err}");
        assert!(Config::parse("[store]\nbackend = \"mysql\"\n").is_err());
    }

    #[test]
    fn qr_background_is_dark_unless_set_light() {
        assert_eq!(Config::parse("").unwrap().qr_background, QrBackground::Dark);
        assert_eq!(Config::parse("qr_background = \"light\"\n").unwrap().qr_background, QrBackground::Light);
        assert_eq!(Config::parse("qr_background = \"dark\"\n").unwrap().qr_background, QrBackground::Dark);
        let err = Config::parse("enabled = true\nqr_background = \"white\"\n").unwrap_err();
        assert_eq!((err.line, err.key.as_deref()), (Some(2), Some("qr_background")), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("12h").unwrap().as_secs(), 43200);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604800);
        assert_eq!(parse_duration("5").unwrap().as_secs(), 5);
        assert!(parse_duration("5w").is_err());
        assert_eq!(parse_duration("3650d").unwrap().as_secs(), MAX_DURATION_SECS);
        assert!(parse_duration("3651d").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
    }
}
