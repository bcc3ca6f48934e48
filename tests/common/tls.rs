//! TLS test material and clients: certificates generated per test run with rcgen (never
//! committed keys), the real server started from a config directory (ws.json + lapps.json
//! with the Lua echo app), and rustls clients wrapped for tungstenite.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::IO_TIMEOUT;

/// A certificate and its key, as DER and PEM.
pub struct Pair {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pair: Pair,
}

fn pair(cert: rcgen::Certificate, key: &KeyPair) -> Pair {
    Pair {
        cert_der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pair = pair(cert, &key);
        Ca { params, key, pair }
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        pair(cert, &key)
    }

    /// A server certificate for `localhost` and 127.0.0.1 / ::1.
    pub fn server(&self, cn: &str) -> Pair {
        self.sign(server_params(cn))
    }

    /// A server certificate whose validity ended in 2001.
    pub fn expired_server(&self, cn: &str) -> Pair {
        let mut p = server_params(cn);
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.sign(p)
    }

    /// A server certificate whose validity ends `days` and a half days from now: "in `days`
    /// days", however long the test takes to look (within half a day).
    pub fn server_ending_in(&self, cn: &str, days: u64) -> Pair {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let mut p = server_params(cn);
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + since_epoch
            + std::time::Duration::from_secs(days * 86_400 + 43_200);
        self.sign(p)
    }

    /// A server certificate whose validity starts `days` and a half days from now, for a
    /// year.
    pub fn server_starting_in(&self, cn: &str, days: u64) -> Pair {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let start = since_epoch + std::time::Duration::from_secs(days * 86_400 + 43_200);
        let mut p = server_params(cn);
        p.not_before = rcgen::date_time_ymd(1970, 1, 1) + start;
        p.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + start + std::time::Duration::from_secs(365 * 86_400);
        self.sign(p)
    }

    pub fn client(&self, cn: &str, expired: bool) -> Pair {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        self.sign(p)
    }
}

fn server_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

/// A self-signed server certificate (its own trust anchor).
pub fn self_signed_server(cn: &str) -> Pair {
    let key = KeyPair::generate().unwrap();
    let cert = server_params(cn).self_signed(&key).unwrap();
    pair(cert, &key)
}

/// A fresh directory under target/ for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `pair` as `NAME.crt` / `NAME.key` in `dir`; returns both paths.
pub fn write_pair(dir: &Path, name: &str, pair: &Pair) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, &pair.cert_pem).unwrap();
    std::fs::write(&k, &pair.key_pem).unwrap();
    (c, k)
}

/// Writes ws.json and lapps.json (the Lua echo at /echo, the built-in echo at /echo_builtin)
/// into `dir`. `ws_extra` is spliced into ws.json's root object.
pub fn write_config(dir: &Path, ws_extra: &str, services_extra: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ws = format!(
        r#"{{ "ip": "127.0.0.1", "port": 0, "workers": {{ "workers": 2 }}, "close_timeout_ms": 2000{ws_extra} }}"#
    );
    std::fs::write(dir.join("ws.json"), ws).unwrap();
    let lapps = format!(
        r#"{{ "directories": {{ "applications": "{}", "lib": "{}" }},
             "services": {{
               "echo": {{ "protocol": "raw", "request_target": "/echo", "instances": 2 }},
               "echo_builtin": {{ "builtin": "echo", "request_target": "/echo_builtin" }}
               {services_extra}
             }} }}"#,
        root.join("lua/apps").display(),
        root.join("lua/lib").display()
    );
    std::fs::write(dir.join("lapps.json"), lapps).unwrap();
}

/// ws.json fragment for wss:// on the main endpoint with these files.
pub fn tls_json(cert: &Path, key: &Path, ca: Option<&Path>) -> String {
    let ca = ca.map_or(String::new(), |c| format!(r#", "ca": "{}""#, c.display()));
    format!(
        r#", "tls": true, "tls_certificates": {{ "cert": "{}", "key": "{}"{ca} }}"#,
        cert.display(),
        key.display()
    )
}

pub fn start_app(dir: &Path) -> lapps::app::App {
    start_app_with(dir, |_| {})
}

/// [`start_app`] with the configuration read from `dir` changed by `change` first.
pub fn start_app_with(
    dir: &Path,
    change: impl FnOnce(&mut lapps::config::Config),
) -> lapps::app::App {
    let mut cfg =
        lapps::config::Config::load(&lapps::config::locate(Some(dir))).expect("valid config");
    change(&mut cfg);
    lapps::app::App::start(&cfg).expect("server starts")
}

/// A client configuration trusting `root`, optionally presenting `client`.
pub fn client_config(root: &CertificateDer<'static>, client: Option<&Pair>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some(p) => b
            .with_client_auth_cert(
                vec![p.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key_der.clone())),
            )
            .unwrap(),
    };
    Arc::new(cfg)
}

/// [`client_config`] speaking only `version`, without a certificate.
pub fn client_config_for(
    root: &CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    client_config_with(root, version, rustls::crypto::ring::default_provider())
}

/// [`client_config_for`] offering only the cipher suites of `provider`.
pub fn client_config_with(
    root: &CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
    provider: rustls::crypto::CryptoProvider,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A TLS 1.3 client whose ClientHello offers its key share only for a group no server knows
/// (`NamedGroup::Unknown(0xfe0a)`), with X25519 listed second: the server must answer with a
/// HelloRetryRequest for X25519, and the client's second ClientHello carries that share.
pub fn hello_retry_client_config(root: &CertificateDer<'static>) -> Arc<ClientConfig> {
    use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
    use rustls::NamedGroup;

    const UNKNOWN: NamedGroup = NamedGroup::Unknown(0xfe0a);
    #[derive(Debug)]
    struct UnknownGroup;
    struct UnknownShare;
    impl SupportedKxGroup for UnknownGroup {
        fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
            Ok(Box::new(UnknownShare))
        }
        fn name(&self) -> NamedGroup {
            UNKNOWN
        }
    }
    impl ActiveKeyExchange for UnknownShare {
        fn complete(self: Box<Self>, _peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
            Err(rustls::Error::General(
                "the unknown group is never chosen".into(),
            ))
        }
        fn pub_key(&self) -> &[u8] {
            &[0x5a; 32]
        }
        fn group(&self) -> NamedGroup {
            UNKNOWN
        }
    }

    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![&UnknownGroup, rustls::crypto::ring::kx_group::X25519];
    let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;
pub type WssClient = tungstenite::WebSocket<TlsStream>;

/// TCP + TLS handshake (completed before returning, so handshake errors show here).
pub fn tls_connect(addr: SocketAddr, cfg: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    tls_over(TcpStream::connect(addr)?, cfg)
}

/// The TLS handshake over a connected `tcp`.
pub fn tls_over(tcp: TcpStream, cfg: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// `tcp` once it has sent its ClientHello, having read nothing yet: finish it with
/// `complete_io` (what [`tls_over`] does). For bursts of handshakes.
pub fn tls_hello(tcp: TcpStream, cfg: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    while conn.wants_write() {
        conn.write_tls(&mut &tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// A wss:// client for `path`; errors from TLS or the upgrade come back as text.
pub fn wss_connect(
    addr: SocketAddr,
    path: &str,
    cfg: Arc<ClientConfig>,
) -> Result<WssClient, String> {
    let s = tls_connect(addr, cfg).map_err(|e| format!("tls: {e}"))?;
    wss_over(s, path)
}

/// The WebSocket upgrade for `path` over an established TLS stream.
pub fn wss_over(s: TlsStream, path: &str) -> Result<WssClient, String> {
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    tungstenite::client::client_with_config(format!("wss://localhost{path}"), s, Some(config))
        .map(|(ws, _)| ws)
        .map_err(|e| format!("websocket: {e}"))
}
