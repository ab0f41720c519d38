//! TLS to the database with rustls (the `ring` provider): `verify-full`
//! checks the server's certificate against `ca_file` and its name against
//! the host connected to; `require` encrypts without checking who answers,
//! as libpq's `require` does.

use std::path::Path;
use std::sync::Arc;

use mfa_shared::config::{SslMode, StoreConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::settings::{SettingsError, setting};

/// A checked TLS configuration.
pub struct Connector(ClientConfig);

impl Connector {
    /// None for `sslmode = "disable"`.
    pub fn from_config(store: &StoreConfig) -> Result<Option<Connector>, SettingsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| setting("sslmode", format!("TLS set-up failed: {err}")))?;
        let builder = match store.sslmode {
            SslMode::Disable => return Ok(None),
            SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.signature_verification_algorithms))),
            SslMode::VerifyFull => {
                let ca_file = store
                    .ca_file
                    .as_deref()
                    .ok_or_else(|| setting("ca_file", "is needed for sslmode = \"verify-full\""))?;
                builder.with_root_certificates(roots(ca_file)?)
            }
        };
        let config = match (&store.client_cert, &store.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("client_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| setting("client_key", format!("{}: {err}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| setting("client_cert", format!("does not go with client_key: {err}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Connector(config)))
    }

    pub fn into_make(self) -> MakeRustlsConnect {
        MakeRustlsConnect::new(self.0)
    }
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| setting(key, format!("{shown}: {err}")))?;
    if certs.is_empty() {
        return Err(setting(key, format!("{shown} holds no PEM certificate")));
    }
    Ok(certs)
}

fn roots(ca_file: &Path) -> Result<RootCertStore, SettingsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("ca_file", ca_file)? {
        roots.add(cert).map_err(|err| setting("ca_file", format!("{}: {err}", ca_file.display())))?;
    }
    Ok(roots)
}

/// `require`: any certificate is taken, but the handshake's signatures are
/// still checked against it (the session key is bound to that certificate).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
