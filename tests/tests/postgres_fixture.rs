//! The scratch PostgreSQL fixture itself: isolated databases on the shared
//! cluster, an own cluster stopped and started again with its data kept,
//! and a TLS cluster that verifies against its CA and refuses plain TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use e2e::postgres::{CERT_USER, PgCluster};

#[test]
fn shared_cluster_gives_isolated_databases() {
    let pg = PgCluster::shared();
    assert!(std::ptr::eq(pg, PgCluster::shared()), "one shared cluster per process");
    let (a, b) = (pg.new_database(), pg.new_database());
    assert_ne!(a, b);
    pg.psql(&a, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)");
    assert_eq!(pg.psql(&a, "SELECT x FROM t").trim(), "7");
    assert_eq!(pg.psql(&b, "SELECT to_regclass('t') IS NULL").trim(), "t", "table leaked into {b}");
    // Durability tests rely on a server that really syncs.
    assert_eq!(pg.psql(&a, "SHOW fsync").trim(), "on");
}

#[test]
fn own_cluster_stops_and_starts_again_with_its_data() {
    let pg = PgCluster::start();
    let db = pg.new_database();
    pg.psql(&db, "CREATE TABLE t (x text); INSERT INTO t VALUES ('kept')");
    pg.stop();
    let err = pg.try_psql(&db, "SELECT 1").expect_err("psql must fail while the server is stopped");
    assert!(err.contains("No such file") || err.contains("connect"), "{err}");
    pg.start_again();
    assert_eq!(pg.psql(&db, "SELECT x FROM t").trim(), "kept");
    pg.restart_server();
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM t").trim(), "1");
}

#[test]
fn tls_cluster_verifies_its_certificate_and_refuses_plain_tcp() {
    let (pg, tls) = PgCluster::start_tls();
    let verified = tls.conninfo("postgres");
    assert_eq!(pg.psql(&verified, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").trim(), "t");
    // Also by DNS name (the certificate names both).
    let by_name = verified.replace("host=127.0.0.1", "host=localhost hostaddr=127.0.0.1");
    assert_eq!(pg.psql(&by_name, "SELECT 1").trim(), "1");

    let plain = format!("host=127.0.0.1 port={} user=mfad dbname=postgres sslmode=disable", tls.tcp_port);
    let err = pg.try_psql(&plain, "SELECT 1").expect_err("plain TCP must be refused");
    assert!(err.contains("rejects connection"), "{err}");

    let wrong_ca = verified.replace(&*tls.ca_file.to_string_lossy(), &tls.other_ca_file.to_string_lossy());
    let err = pg.try_psql(&wrong_ca, "SELECT 1").expect_err("a server certificate from another CA must be refused");
    assert!(err.contains("certificate verify failed"), "{err}");

    // The certificate-only role: refused without the client certificate, accepted with it.
    let cert_user = verified.replace("user=mfad", &format!("user={CERT_USER}"));
    let err = pg.try_psql(&cert_user, "SELECT 1").expect_err("cert auth without a certificate");
    assert!(err.contains("certificate"), "{err}");
    let with_cert = format!("{cert_user} sslcert={} sslkey={}", tls.client_cert.display(), tls.client_key.display());
    assert_eq!(pg.psql(&with_cert, "SELECT current_user").trim(), CERT_USER);
}
