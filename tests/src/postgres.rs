//! Scratch PostgreSQL clusters for the store tests (TESTING.md, "PostgreSQL
//! for tests"): `initdb` in a temp dir under /tmp, run as the `postgres` user
//! (initdb refuses root), reached over a Unix socket in that dir, or for TLS
//! tests also on 127.0.0.1 with certificates from a throwaway CA.
//!
//! Most tests share one cluster per test process ([`PgCluster::shared`]) and
//! get isolation from [`PgCluster::new_database`]; outage tests that stop the
//! server start a cluster of their own ([`PgCluster::start`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

use crate::{free_port, run, stderr, stdout};

/// Role that may log in over TLS only with the client certificate of
/// [`TlsFiles`] (`cert` authentication: its CN is this name).
pub const CERT_USER: &str = "mfad_cert";

/// The superuser `initdb -U` creates; every connection string uses it.
pub const SUPERUSER: &str = "mfad";

/// Prefix of the clusters' temp dirs in /tmp (also how orphans are found).
const DIR_PREFIX: &str = "pg-e2e-";

/// A scratch cluster; dropping it stops the server and removes its dir.
pub struct PgCluster {
    /// Holds the Unix socket (`.s.PGSQL.<port>`), the data dir and the log.
    pub socket_dir: PathBuf,
    /// The server's port: names the Unix socket, and is the TCP port of a
    /// TLS cluster.
    pub port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    _guard: tempfile::TempDir,
}

/// Client-side files of a TLS cluster; they live in the cluster's dir.
pub struct TlsFiles {
    /// CA that signed the server (and client) certificates.
    pub ca_file: PathBuf,
    /// TCP port on 127.0.0.1 (same as the cluster's `port`).
    pub tcp_port: u16,
    /// An unrelated CA: verifying the server with it must fail.
    pub other_ca_file: PathBuf,
    /// Client certificate (CN = [`CERT_USER`]) signed by `ca_file`.
    pub client_cert: PathBuf,
    /// Its key, mode 0600 owned by root (libpq refuses a laxer key).
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// libpq connection string to `dbname` over TLS as [`SUPERUSER`],
    /// verifying the server's certificate and name against `ca_file`.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={} sslmode=verify-full sslrootcert={}",
            self.tcp_port,
            quote(dbname),
            quote(&self.ca_file.to_string_lossy())
        )
    }
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PgCluster {
    /// A cluster of the caller's own on a Unix socket only (no TCP port to
    /// collide with); stopped and removed on drop.
    pub fn start() -> PgCluster {
        let cluster = Self::init();
        cluster.write_settings(&format!("listen_addresses = ''\nport = {}\n", cluster.port));
        cluster.start_again();
        cluster
    }

    /// One cluster per test process, started on first use and stopped at
    /// process exit. Tests isolate themselves with [`Self::new_database`];
    /// never stop this one (use [`Self::start`] for outage tests).
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let cluster = Self::start();
            // A static is never dropped: stop the server when the test
            // binary exits (libtest ends with `exit`, which runs these).
            // SAFETY: registers a plain `extern "C" fn` that never unwinds.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// A cluster that also listens on 127.0.0.1 (a free port) with `ssl=on`.
    /// pg_hba: Unix socket trusted; TCP only over TLS (plain TCP rejected);
    /// [`CERT_USER`] must present the client certificate.
    pub fn start_tls() -> (PgCluster, TlsFiles) {
        let mut cluster = Self::init();
        let tls = cluster.socket_dir.join("tls");
        std::fs::create_dir(&tls).unwrap();
        let files = make_certificates(&tls);
        chown_postgres(&tls.join("server.key"));
        let q = |name: &str| quote_conf(&tls.join(name));
        let ssl = format!(
            "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = {}\nssl_key_file = {}\nssl_ca_file = {}\n",
            q("server.crt"),
            q("server.key"),
            q("ca.crt")
        );
        std::fs::write(
            cluster.data_dir.join("pg_hba.conf"),
            format!(
                "# Written by tests/src/postgres.rs.\n\
                 local   all all                 trust\n\
                 hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                 hostssl all all       127.0.0.1/32 trust\n\
                 host    all all       127.0.0.1/32 reject\n"
            ),
        )
        .unwrap();
        // A port found free may be taken again before the server binds it:
        // retry with another.
        for attempt in 1.. {
            cluster.port = free_port();
            cluster.write_settings(&format!("{ssl}port = {}\n", cluster.port));
            let out = cluster.start_server();
            if out.status.success() {
                break;
            }
            let log = cluster.log_tail();
            if attempt >= 5 || !log.contains("could not bind") {
                cluster.fail("pg_ctl start", &out);
            }
        }
        cluster.psql("postgres", &format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"));
        let files = TlsFiles { tcp_port: cluster.port, ..files };
        (cluster, files)
    }

    /// Stop the server (`pg_ctl -m fast`: clients are disconnected) and wait
    /// until it is gone. The data stays; [`Self::start_again`] brings it back.
    pub fn stop(&self) {
        let out = run(self.pg_ctl().args(["stop", "-w", "-t", "60", "-m", "fast"]));
        if !out.status.success() {
            self.fail("pg_ctl stop", &out);
        }
    }

    /// Start the (stopped) server again: same dir, port and settings.
    pub fn start_again(&self) {
        let out = self.start_server();
        if !out.status.success() {
            self.fail("pg_ctl start", &out);
        }
    }

    /// [`Self::stop`] then [`Self::start_again`].
    pub fn restart_server(&self) {
        self.stop();
        self.start_again();
    }

    /// Create a database with a unique name; returns its libpq connection
    /// string (`host=DIR port=PORT user=mfad dbname=NAME`, Unix socket).
    pub fn new_database(&self) -> String {
        let name = format!("mfa_{}_{}", std::process::id(), DB_COUNTER.fetch_add(1, Ordering::Relaxed));
        // From template0 (pristine, frozen): a third of the time of the
        // default template1 copy with fsync on (0.13 s against 0.4 s here).
        self.psql("postgres", &format!("CREATE DATABASE {name} TEMPLATE template0"));
        self.conninfo(&name)
    }

    /// libpq connection string to `dbname` over the Unix socket.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={}",
            quote(&self.socket_dir.to_string_lossy()),
            self.port,
            quote(dbname)
        )
    }

    /// Run `sql` (one `psql -c` string: one implicit transaction) and return
    /// stdout, unaligned and tuples only (`-At`: `a|b` per row). `db` is a
    /// database name on this cluster's socket, or a whole connection string
    /// (anything with `=`), e.g. from [`Self::new_database`]. Panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|err| panic!("psql on {db:?} failed: {sql}\n{err}\n--- server log:\n{}", self.log_tail()))
    }

    /// [`Self::psql`] returning psql's stderr on failure instead of panicking
    /// (e.g. while the server is stopped, or a connection must be refused).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let conninfo = if db.contains('=') { db.to_string() } else { self.conninfo(db) };
        let out = run(Command::new(pg_bin("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", &conninfo, "-c", sql])
            // Keep the caller's PG* settings out of the tests.
            .env_remove("PGSSLMODE")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS"));
        if out.status.success() { Ok(stdout(&out)) } else { Err(stderr(&out)) }
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Temp dir owned by postgres plus `initdb`; the server is not started.
    fn init() -> PgCluster {
        static REAP: Once = Once::new();
        REAP.call_once(reap_orphans);
        // Under /tmp (not $TMPDIR): postgres must traverse the parents, and
        // the socket path must stay short (sun_path is 108 bytes).
        let guard = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir_in("/tmp").unwrap();
        let dir = guard.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).unwrap();
        chown_postgres(&dir);
        let cluster =
            PgCluster { data_dir: dir.join("data"), log: dir.join("log"), socket_dir: dir, port: 5432, _guard: guard };
        // --no-sync: initdb's own fsyncs are what makes it slow; the server
        // still runs with fsync = on (see write_settings).
        let out = run(postgres_cmd("initdb", &cluster.socket_dir)
            .arg("-D")
            .arg(&cluster.data_dir)
            .args(["-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]));
        if !out.status.success() {
            cluster.fail("initdb", &out);
        }
        let conf = cluster.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\ninclude_if_exists = 'e2e.conf'\n");
        std::fs::write(&conf, text).unwrap();
        cluster
    }

    /// Settings in a file of their own (rewritten on a port retry) rather
    /// than `pg_ctl -o`, which goes through a shell and must be repeated
    /// on every start.
    fn write_settings(&self, extra: &str) {
        let text = format!(
            "# Written by tests/src/postgres.rs.\n\
             unix_socket_directories = {}\n\
             fsync = on  # durability tests depend on it\n\
             shared_buffers = 16MB\n\
             max_connections = 200\n\
             {extra}",
            quote_conf(&self.socket_dir)
        );
        std::fs::write(self.data_dir.join("e2e.conf"), text).unwrap();
    }

    /// `pg_ctl -D DATA`, run as postgres.
    fn pg_ctl(&self) -> Command {
        let mut cmd = postgres_cmd("pg_ctl", &self.socket_dir);
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    fn start_server(&self) -> Output {
        run(self.pg_ctl().arg("-l").arg(&self.log).args(["start", "-w", "-t", "60"]))
    }

    fn fail(&self, what: &str, out: &Output) -> ! {
        panic!(
            "{what} failed ({}) in {}\n--- stdout:\n{}--- stderr:\n{}--- server log:\n{}",
            out.status,
            self.socket_dir.display(),
            stdout(out),
            stderr(out),
            self.log_tail()
        )
    }

    /// Stop at once and remove the dir; never panics (Drop, atexit).
    fn teardown(&self) {
        // Fails harmlessly when already stopped.
        let _ = self.pg_ctl().args(["stop", "-w", "-m", "immediate"]).output();
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.teardown();
    }
}

/// A test process killed outright (SIGKILL, timeout) never runs its atexit
/// handler: stop and remove the clusters whose owner process is gone.
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        // No owner.pid yet: a cluster being created; leave it.
        let Some(pid) = std::fs::read_to_string(dir.join("owner.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 0 {
            continue; // kill() would address a process group
        }
        // SAFETY: signal 0 only checks that the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let _ = postgres_cmd("pg_ctl", Path::new("/tmp"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["stop", "-w", "-m", "immediate"])
            .output();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A PostgreSQL program: `$PG_BINDIR`, else Debian's newest
/// /usr/lib/postgresql/<major>/bin (server tools are not on PATH there).
fn pg_bin(tool: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max();
        match newest {
            Some(major) => PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
            None => panic!("no /usr/lib/postgresql/<major>/bin: install the `postgresql` package (tests/run.sh does)"),
        }
    })
    .join(tool)
}

/// `tool` run as the postgres user, from `cwd` (a dir postgres can enter,
/// so the tools do not warn about the caller's working directory).
fn postgres_cmd(tool: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(pg_bin(tool)).current_dir(cwd);
    cmd
}

fn chown_postgres(path: &Path) {
    let out = run(Command::new("chown").arg("postgres:postgres").arg(path));
    assert!(out.status.success(), "chown postgres {}: {}", path.display(), stderr(&out));
}

/// A value in a libpq key=value string, quoted when it needs to be.
fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A path as a postgresql.conf string literal.
fn quote_conf(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

/// Throwaway CA, server certificate (SAN IP:127.0.0.1, DNS:localhost),
/// client certificate for [`CERT_USER`], and an unrelated second CA, all in
/// `dir`. EC P-256 keys: generated instantly, unlike RSA.
fn make_certificates(dir: &Path) -> TlsFiles {
    let openssl = |args: &[&str]| {
        let out = run(Command::new("openssl").args(args).current_dir(dir));
        assert!(out.status.success(), "openssl {args:?} failed in {}: {}", dir.display(), stderr(&out));
    };
    let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, cn) in [("ca", "mfad e2e CA"), ("other-ca", "mfad e2e unrelated CA")] {
        let (key, crt, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={cn}"));
        let mut args = vec!["req", "-x509", "-new", "-days", "7", "-subj", &subj, "-keyout", &key, "-out", &crt];
        args.extend(new_key);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args);
    }
    // (file name, CN, extensions beyond the common ones, serial)
    let leaves = [
        (
            "server",
            "localhost",
            "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
            "1001",
        ),
        ("client", CERT_USER, "extendedKeyUsage = clientAuth\n", "1002"),
    ];
    for (name, cn, extensions, serial) in leaves {
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-new", "-subj", &subj, "-keyout", &key, "-out", &csr];
        args.extend(new_key);
        openssl(&args);
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n{extensions}"),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "7",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
        // Both libpq and the server refuse a key readable by others.
        std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    TlsFiles {
        ca_file: dir.join("ca.crt"),
        tcp_port: 0,
        other_ca_file: dir.join("other-ca.crt"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}
