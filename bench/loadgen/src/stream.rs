//! The client's transport: plain TCP or TLS (rustls, ring), behind one Read/Write type so the
//! handshake, driver and idle modes do not care. Owns the client TLS configuration; never
//! decides what to send.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

#[derive(Debug, Clone)]
pub enum TlsTrust {
    Ca(PathBuf),
    Insecure,
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

pub fn client_config(trust: &TlsTrust) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = match trust {
        TlsTrust::Ca(file) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(file).map_err(|e| format!("{file:?}: {e:?}"))? {
                let c = c.map_err(|e| format!("{file:?}: {e:?}"))?;
                roots.add(c).map_err(|e| format!("{file:?}: {e}"))?;
            }
            b.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Insecure => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Accepts any certificate but still checks the handshake signatures (so the key exchange is
/// the real one and costs what it costs).
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Stream {
    /// Wraps a connected socket; TLS completes its handshake here (blocking, with the
    /// socket's timeouts).
    pub fn new(tcp: TcpStream, tls: Option<&Arc<ClientConfig>>) -> io::Result<Stream> {
        let Some(cfg) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = ServerName::try_from("localhost").expect("literal");
        let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(Stream::Tls(Box::new(s)))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(t) => t,
            Stream::Tls(s) => &s.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// TLS records encrypted but not yet written (the socket was full).
    pub fn wants_write(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.conn.wants_write())
    }

    /// Writes pending TLS records; WouldBlock when the socket is full.
    pub fn write_pending(&mut self) -> io::Result<()> {
        if let Stream::Tls(s) = self {
            while s.conn.wants_write() {
                s.conn.write_tls(&mut s.sock)?;
            }
        }
        Ok(())
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nonblocking(on)
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.write(buf),
            Stream::Tls(s) => {
                // Encrypt, then write what the socket takes; the rest is `wants_write`.
                let n = s.conn.writer().write(buf)?;
                match s.conn.write_tls(&mut s.sock) {
                    Ok(_) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(t) => t.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
