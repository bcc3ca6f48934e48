//! TLS client settings for `wss://`: which certificates are trusted.
//!
//! Owns building a rustls `ClientConfig` (ring provider) from the options a Lua app gives:
//! a PEM bundle (`ca_file`), the system bundle when none is given (the file `SSL_CERT_FILE`
//! names, as OpenSSL reads it, else the distribution's), or `insecure`, which skips
//! certificate verification entirely and exists for tests only (signatures are still checked,
//! so the handshake itself stays sound, but anyone can impersonate the server).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where distributions keep their CA bundle (first existing one is used).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// What to trust.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsOptions {
    pub ca_file: Option<String>,
    pub insecure: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The file of certificates `opts` trusts (none for `insecure`).
fn trust_file(opts: &TlsOptions) -> Option<Result<String, String>> {
    if opts.insecure {
        return None;
    }
    Some(match &opts.ca_file {
        Some(p) => Ok(p.clone()),
        None => system_bundle(std::env::var_os("SSL_CERT_FILE"), |p| Path::new(p).exists())
            .ok_or_else(|| "tls: no CA bundle found on this system; give ca_file".to_string()),
    })
}

/// The system's bundle: `SSL_CERT_FILE` when set (not empty), else the first of
/// [`SYSTEM_BUNDLES`] that `exists`.
fn system_bundle(env: Option<OsString>, exists: impl Fn(&str) -> bool) -> Option<String> {
    match env.filter(|v| !v.is_empty()) {
        Some(v) => Some(v.to_string_lossy().into_owned()),
        None => SYSTEM_BUNDLES
            .iter()
            .find(|p| exists(p))
            .map(|p| p.to_string()),
    }
}

/// What tells whether a file of certificates changed: which file it is (device, inode: a
/// new file renamed over it is another) and its change time (ctime: every write moves it,
/// and unlike the modification time no copy that keeps times, `cp -p` or `rsync -t`, can
/// set it back), with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustStamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    len: u64,
}

/// The stamp of the file `opts` trusts, to tell whether it changed since a config was built
/// from it (None: no file, or it cannot be read; a config is then built again each time, and
/// fails as the file does).
pub fn trust_stamp(opts: &TlsOptions) -> Option<TrustStamp> {
    use std::os::unix::fs::MetadataExt;
    let path = trust_file(opts)?.ok()?;
    let meta = std::fs::metadata(path).ok()?;
    Some(TrustStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        len: meta.len(),
    })
}

pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let config = match trust_file(opts) {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Some(path) => builder
            .with_root_certificates(roots(&path?)?)
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn roots(path: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let bytes = crate::file_read::read_regular(path.as_ref(), crate::file_read::CONFIG_MAX)
        .map_err(|e| format!("tls: {path}: {e}"))?;
    let bytes = crate::net::tls::without_line_boms(&bytes);
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("tls: {path}: {e}"))?;
        // A bundle may hold certificates webpki cannot use as anchors; skip those.
        let _ = store.add(cert);
    }
    if store.is_empty() {
        return Err(format!("tls: {path}: no usable CA certificate"));
    }
    Ok(store)
}

/// `onerror`'s text for a TLS session that failed: rustls's, except for a server whose own
/// certificate is a CA certificate, which rustls names only by webpki's variant
/// (`CaUsedAsEndEntity`, reachable solely through its Debug text). A self-signed certificate
/// made with `openssl req -x509` is one (a CA is its default), so this is what a first try
/// with `ca_file` meets. A certificate no trusted CA signed (a private CA's, a self-signed
/// one: the first try without `ca_file`) gets a hint at `ca_file` too.
pub fn error_text(e: &rustls::Error) -> String {
    let text = e.to_string();
    if matches!(
        e,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(_))
    ) && text.contains("CaUsedAsEndEntity")
    {
        return "tls: invalid peer certificate: the server's certificate is a CA certificate, \
                which a server may not use as its own (a self-signed one made with `openssl req \
                -x509` is a CA unless made with `-addext basicConstraints=critical,CA:FALSE`; \
                see ca_file in docs/lua-api.md)"
            .to_string();
    }
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) = e {
        return format!(
            "tls: {text} (no certificate this client trusts signed the server's: for a private \
             CA or a self-signed certificate, give it as ca_file; see docs/lua-api.md)"
        );
    }
    format!("tls: {text}")
}

/// `insecure = true`: accepts any certificate chain for any name.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_cert_file_names_the_system_bundle_before_the_distributions_paths() {
        let only_pki = |p: &str| p == "/etc/pki/tls/certs/ca-bundle.crt";
        assert_eq!(
            system_bundle(Some("/opt/roots.pem".into()), only_pki).as_deref(),
            Some("/opt/roots.pem")
        );
        assert_eq!(
            system_bundle(Some("".into()), only_pki).as_deref(),
            Some("/etc/pki/tls/certs/ca-bundle.crt"),
            "an empty SSL_CERT_FILE is not set"
        );
        assert_eq!(system_bundle(None, |_| false), None);
    }
}
