//! The `[store]` settings of a PostgreSQL store, read and checked: the
//! connection string, the password file, TLS.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use mfa_shared::config::{StoreConfig, url_is_unix_socket};
use tokio_postgres::config::Host;

use super::tls;

/// Why the settings cannot be used; each message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("[store] {key}: {message}")]
pub struct SettingsError {
    key: &'static str,
    message: String,
}

pub(super) fn setting(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError { key, message: message.into() }
}

/// The connection settings of a `[store]` section, read and checked
/// (`mfad --check-config` stops here; starting goes on to connect).
pub struct Settings {
    pub(super) pg: tokio_postgres::Config,
    pub(super) tls: Option<tls::Connector>,
    pub(super) pool_size: usize,
    pub(super) connect_timeout: Duration,
    pub(super) location: String,
}

impl Settings {
    pub fn from_config(store: &StoreConfig) -> Result<Settings, SettingsError> {
        let url = store.url.as_deref().ok_or_else(|| setting("url", "is needed for backend = \"postgres\""))?;
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|err| setting("url", format!("is not a PostgreSQL connection string: {err}")))?;
        if pg.get_password().is_some() {
            return Err(setting("url", "holds a password; put it in password_file (mode 0600)"));
        }
        if let Some(path) = &store.password_file {
            pg.password(read_password(path)?);
        }
        // Acknowledged means on the database's disk, whatever the server's
        // default; and a write that re-checks a row changed meanwhile (see
        // `PostgresStore::update_user`) needs READ COMMITTED, whatever the
        // role's or database's default.
        pg.options(r"-c synchronous_commit=on -c default_transaction_isolation=read\ committed");
        pg.connect_timeout(store.connect_timeout.0);
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        pg.application_name("mfad");
        let tls = if url_is_unix_socket(url) || pg.get_hosts().iter().all(|h| matches!(h, Host::Unix(_))) {
            None
        } else {
            tls::Connector::from_config(store)?
        };
        pg.ssl_mode(if tls.is_some() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        let location = describe(&pg);
        Ok(Settings { pg, tls, pool_size: store.pool_size, connect_timeout: store.connect_timeout.0, location })
    }
}

/// "database DB on HOST:PORT".
fn describe(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("database {} on {host}:{port}", pg.get_dbname().unwrap_or("(the user's)"))
}

/// The password in `path`, which must be a regular file owned by the
/// effective uid with no access for group or others (the same rule as the
/// key file's).
fn read_password(path: &Path) -> Result<String, SettingsError> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|err| setting("password_file", format!("{shown}: {err}")))?;
    if !meta.file_type().is_file() {
        return Err(setting("password_file", format!("{shown} is not a regular file")));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(setting(
            "password_file",
            format!("{shown} is owned by uid {}, not {euid}; run: chown {euid} {shown}", meta.uid()),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(setting(
            "password_file",
            format!("{shown} is readable by group or others; run: chmod 600 {shown}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|err| setting("password_file", format!("{shown}: {err}")))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(setting("password_file", format!("{shown} is empty")));
    }
    Ok(password.to_string())
}
