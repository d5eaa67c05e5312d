//! How rattan talks TLS to Marathon: one rustls client config for the REST client and the event stream alike —
//! the system's trust store plus `--marathon-ca`, and a client certificate for mutual TLS (DC/OS strict mode). A
//! certificate that fails verification is reported with its subject and the reason.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// How rattan trusts Marathon's HTTPS certificate and proves itself (both the REST and the event stream client).
#[derive(Debug, Clone, Default)]
pub struct MarathonTls {
    /// Extra CAs beside the system's trust store.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate chain and key, for mutual TLS.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The client config, or why it cannot be made (a file that does not read or parse; named in the error).
pub fn client_config(settings: &MarathonTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system trust store entry was skipped");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &settings.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("--marathon-ca {}: {e}", ca.display()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--marathon-ca {}: bad PEM: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--marathon-ca {}: no certificate in the file",
                ca.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("--marathon-ca {}: {e}", ca.display()))?;
        }
    } else if added == 0 {
        tracing::warn!("no system CA certificates found: Marathon over HTTPS needs --marathon-ca");
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("--marathon-ca: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Named { inner }));
    match &settings.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("--marathon-client-cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "--marathon-client-cert {}: no certificate in the file",
                    cert.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("--marathon-client-key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--marathon-client-cert/--marathon-client-key: {e}"))
        }
    }
}

/// The webpki verifier, with the failing certificate's subject put into its error.
#[derive(Debug)]
struct Named {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

fn subject(cert: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, x)| x.subject().to_string())
        .unwrap_or_else(|_| "an unparsable certificate".into())
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| {
                rustls::Error::General(format!(
                    "TLS verification of {} ({}) failed: {e}",
                    server_name.to_str(),
                    subject(end_entity)
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An error with every cause below it, outermost first, repeats dropped: `error sending request …: client error
/// (Connect): tcp connect error: Connection refused (os error 111)`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}
