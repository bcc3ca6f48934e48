//! wss://: the rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN http/1.1,
//! optional client-certificate verification), its reload on SIGHUP, and one connection's TLS
//! session as an IOWorker drives it.
//!
//! Owns the PEM files' loading and checking (file + reason on every error), the reloadable
//! holder (read once per accepted connection; a failed reload keeps the old configuration) and
//! the encrypt-and-write step of a TLS connection. Must never block or read a socket itself:
//! the worker feeds it ciphertext it has read (see `worker/tls_io.rs`) and gives it the socket
//! only to write to, non-blocking.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::cert_expiry::{Reminders, EXPIRY_NOTICE_SECS};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection};

use super::outq::{BufPool, Flushed, OutQueue, MAX_IOV};
use super::sys;

/// Where the PEM files are (ws.json `tls_certificates`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by one of these CAs when set.
    pub ca: Option<PathBuf>,
    /// Serve TLS 1.3 only (ws.json `tls_server_version` 13); otherwise 1.2 and 1.3.
    pub tls13_only: bool,
    /// Records a TLS 1.2 session with a limited cipher suite may send before the server ends
    /// it; `None`: the suite's limit less [`TLS12_RECORD_RESERVE`].
    pub tls12_record_budget: Option<u64>,
}

/// Records kept back from a TLS 1.2 cipher suite's confidentiality limit (AES-GCM: 2^24,
/// RFC 8446 section 5.5, which rustls enforces by ending the session with close_notify and
/// dropping what is written after it, without a word to the writer): a session that has
/// sent the rest is closed by the server with 1001 while its replies, the Close and what its
/// outbound queue holds (bounded by `outbound_high_water`) still fit.
pub const TLS12_RECORD_RESERVE: u64 = 1 << 20;

/// The plaintext of one TLS record as rustls cuts it (no `max_fragment_size` is set): a
/// write of n bytes, vectored or not, is ceil(n / this) records.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// A certificate or key that cannot be used: which file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: PathBuf,
    pub reason: String,
    /// The `tls_certificates` keys that name `file` (`cert`, `key`, `ca`), joined by " and ".
    pub setting: Option<String>,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.setting {
            Some(s) => write!(f, "{} ({s}): {}", self.file.display(), self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl TlsError {
    /// Names the setting(s) of `files` the failing file came from.
    fn named(mut self, files: &TlsFiles) -> TlsError {
        let names: Vec<&str> = [
            ("cert", Some(&files.cert)),
            ("key", Some(&files.key)),
            ("ca", files.ca.as_ref()),
        ]
        .into_iter()
        .filter(|(_, p)| p.is_some_and(|p| *p == self.file))
        .map(|(n, _)| n)
        .collect();
        if !names.is_empty() {
            self.setting = Some(format!("tls_certificates.{}", names.join(" and ")));
        }
        self
    }
}

impl std::error::Error for TlsError {}

fn err(file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError {
        file: file.to_path_buf(),
        reason: reason.into(),
        setting: None,
    }
}

/// What an operator wants to see of the served certificate in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name, if it has one.
    pub subject: Option<String>,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// Validity end, `YYYY-MM-DD HH:MM:SS UTC`.
    pub not_after: Option<String>,
    /// Validity end as seconds since the epoch (for the "expired" warning).
    pub not_after_unix: Option<i64>,
    /// Validity start, as `not_after`.
    pub not_before: Option<String>,
    /// Validity start as seconds since the epoch (for the "not valid yet" warning).
    pub not_before_unix: Option<i64>,
}

impl CertInfo {
    pub fn of(der: &[u8]) -> CertInfo {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let ((start, end), subject) =
            der::validity_and_subject(der).unwrap_or(((None, None), None));
        CertInfo {
            subject,
            fingerprint,
            not_after_unix: end.as_ref().map(|v| v.0),
            not_after: end.map(|(_, text)| text),
            not_before_unix: start.as_ref().map(|v| v.0),
            not_before: start.map(|(_, text)| text),
        }
    }

    /// True when the certificate's validity ended before `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.not_after_unix.is_some_and(|t| t < now)
    }

    /// What an operator must hear of the certificate at `now` (seconds since the epoch): that
    /// it is not valid yet (a certificate put in place early, or a host clock that is
    /// behind), that it expired, or that it expires within [`EXPIRY_NOTICE_SECS`]; None
    /// otherwise.
    pub fn expiry_notice(&self, now: i64) -> Option<String> {
        if let Some(start) = self.not_before_unix.filter(|&start| now < start) {
            let at = self.not_before.as_deref().unwrap_or("?");
            let left = in_words(start.saturating_sub(now));
            return Some(format!(
                "is not valid before {at}, in {left}: clients refuse it until then (is this \
                 host's clock right?)"
            ));
        }
        let end = self.not_after_unix?;
        let at = self.not_after.as_deref().unwrap_or("?");
        let left = end.saturating_sub(now);
        if end < now {
            return Some(format!("expired at {at}; clients will refuse it"));
        }
        if left >= EXPIRY_NOTICE_SECS {
            return None;
        }
        let left = in_words(left);
        Some(format!(
            "expires at {at}, in {left}: renew it (a reload reads the renewed files)"
        ))
    }
}

/// `secs` (not negative) as a notice says it: "N days", "N hours" or "less than an hour".
fn in_words(secs: i64) -> String {
    let plural = |n: i64, unit: &str| match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    };
    match (secs / 86_400, secs / 3600) {
        (0, 0) => "less than an hour".to_string(),
        (0, hours) => plural(hours, "hour"),
        (days, _) => plural(days, "day"),
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CN={} sha256={} not_after={}",
            self.subject.as_deref().unwrap_or("-"),
            self.fingerprint,
            self.not_after.as_deref().unwrap_or("?")
        )
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A loaded configuration and what it serves.
struct Loaded {
    config: Arc<ServerConfig>,
    info: CertInfo,
    /// The fingerprints of the client CA's certificates (`ca`), when clients must present one.
    client_ca: Option<Vec<String>>,
}

const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12_AND_13: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Session ticket keys: in memory, rotated every 6 hours, kept across a reload that leaves
/// the certificate and the client CA as they were (every reload reloads them, a service
/// redeploy's too), new when either changed or the process restarts.
fn new_ticketer(files: &TlsFiles) -> Result<Arc<dyn ProducesTickets>, TlsError> {
    rustls::crypto::ring::Ticketer::new()
        .map_err(|e| err(&files.cert, format!("cannot make session tickets: {e}")))
}

/// Reads and checks the PEM files and builds the server configuration. Checks: the files
/// exist and parse, the key matches the certificate, the CA file holds usable certificates.
fn load(files: &TlsFiles, ticketer: Arc<dyn ProducesTickets>) -> Result<Loaded, TlsError> {
    build(files, ticketer).map_err(|e| e.named(files))
}

/// [`load`]'s work; its errors name the file, `load` adds the setting.
fn build(files: &TlsFiles, ticketer: Arc<dyn ProducesTickets>) -> Result<Loaded, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let info = CertInfo::of(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A key ring cannot use (RSA under 2048 bits, P-521, a damaged body) would otherwise
    // fail below as "the certificate and key", naming the certificate.
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            err(
                &files.key,
                format!(
                    "unusable private key: {e} (usable: RSA of 2048 to 4096 bits, not \
                     RSA-PSS; ECDSA on P-256 or P-384; Ed25519)"
                ),
            )
        })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(if files.tls13_only {
            TLS13_ONLY
        } else {
            TLS12_AND_13
        })
        .map_err(|e| err(&files.cert, e.to_string()))?;
    let mut client_ca = None;
    let builder = match &files.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let ca_certs = read_certs(ca)?;
            client_ca = Some(
                ca_certs
                    .iter()
                    .map(|c| CertInfo::of(c).fingerprint)
                    .collect(),
            );
            for c in ca_certs {
                roots
                    .add(c)
                    .map_err(|e| err(ca, format!("unusable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let version = der::version(&certs[0]);
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        // The key, or the certificate file's order: its first certificate must be the
        // server's own (a chain-only file, or one with the intermediate first, fails here).
        rustls::Error::InconsistentKeys(why) => err(
            &files.key,
            format!(
                "does not match the first certificate of {} (which must be the server's own, \
                 before its chain){}",
                files.cert.display(),
                match why {
                    rustls::InconsistentKeys::KeyMismatch => "",
                    _ => ": their public keys could not be compared",
                }
            ),
        ),
        // `openssl x509 -req` without `-extfile` makes one: rustls's words for it speak of
        // a "peer".
        _ if version.is_some_and(|v| v < 3) => err(
            &files.cert,
            format!(
                "an X.509 v{} certificate, which TLS cannot use: it must be v3 (the version \
                 with extensions, such as subjectAltName); issue it again, e.g. with \
                 openssl x509 -req ... -extfile holding subjectAltName=DNS:<host>",
                version.unwrap_or(1)
            ),
        ),
        _ => err(
            &files.cert,
            format!("cannot use the certificate and key: {e}"),
        ),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Resumption state travels in tickets the server encrypts ([`new_ticketer`]), not in
    // rustls's default cache of 256 sessions, which a few hundred clients coming back at
    // once overturn: each miss's full handshake evicts two more entries.
    config.ticketer = ticketer;
    Ok(Loaded {
        config: Arc::new(config),
        info,
        client_ca,
    })
}

/// The bytes of a PEM file, without the UTF-8 byte order marks that begin its lines (editors
/// on some systems add one to a file, and `cat` of such files puts one before each block),
/// which would hide their BEGIN lines.
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = crate::file_read::read_regular(path, crate::file_read::CONFIG_MAX)
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    Ok(without_line_boms(&bytes))
}

/// `bytes` without a byte order mark at the start of any line.
pub(crate) fn without_line_boms(bytes: &[u8]) -> Vec<u8> {
    const BOM: &[u8] = b"\xef\xbb\xbf";
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(BOM).unwrap_or(line));
    }
    out
}

/// What to add when a file holds no PEM block: DER (binary) begins with a SEQUENCE whose
/// length takes 1 to 4 more bytes.
fn der_hint(bytes: &[u8], convert: &str) -> String {
    if bytes.first() == Some(&0x30) && bytes.get(1).is_some_and(|b| (0x81..=0x84).contains(b)) {
        format!(
            "; it looks like DER (binary): convert it with openssl {convert} -inform der -in \
             FILE -out FILE.pem"
        )
    } else {
        String::new()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(err(
            path,
            format!(
                "no CERTIFICATE block in the PEM file{}",
                der_hint(&bytes, "x509")
            ),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        // PKCS#8's encrypted block, or the legacy OpenSSL one (a key block with headers).
        let encrypted = [
            &b"-----BEGIN ENCRYPTED PRIVATE KEY-----"[..],
            b"Proc-Type: 4,ENCRYPTED",
        ]
        .iter()
        .any(|m| memchr::memmem::find(&bytes, m).is_some());
        if encrypted {
            err(
                path,
                "the private key is encrypted, which LAppS cannot use: decrypt it \
                 (openssl pkey -in KEY -out PLAIN_KEY) and keep it readable by lapps only",
            )
        } else if matches!(e, rustls::pki_types::pem::Error::NoItemsFound) {
            err(
                path,
                format!(
                    "no usable PEM block (expected a private key){}",
                    der_hint(&bytes, "pkey")
                ),
            )
        } else {
            err(path, pem_reason(e))
        }
    })
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => "no usable PEM block (expected a private key)".to_string(),
        E::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: its {} block has no END line (is the file cut short?)",
            crate::log::shown(String::from_utf8_lossy(&end_marker).trim())
        ),
        E::IllegalSectionStart { line } => format!(
            "not valid PEM: malformed BEGIN line {}",
            crate::log::shown(String::from_utf8_lossy(&line).trim())
        ),
        E::Base64Decode(why) => format!("not valid PEM: a block's base64 is damaged ({why})"),
        other => format!("not valid PEM: {other}"),
    }
}

/// Checks the files as `--check-config` does: the result names the served certificate.
/// An expired certificate is reported in the returned warning, not as an error (a server may
/// be started to serve it anyway, e.g. while the renewal is on its way).
pub fn check(files: &TlsFiles) -> Result<(CertInfo, Option<String>), TlsError> {
    let info = load(files, new_ticketer(files)?)?.info;
    let warning = info
        .expiry_notice(now_unix())
        .map(|notice| format!("{}: the certificate {notice}", files.cert.display()));
    Ok((info, warning))
}

/// Logs a warning when the certificate about to be served has expired or expires soon: at
/// start-up and at every reload, so a renewal that put an old file in place is seen at once.
/// The reminders count it as told.
fn warn_if_expired(files: &TlsFiles, info: &CertInfo, reminders: &Mutex<Reminders>) {
    let unix = now_unix();
    if let Some(notice) = info.expiry_notice(unix) {
        crate::warn!("tls: {} {notice}", files.cert.display());
    }
    lock(reminders).told(info, unix, Instant::now());
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server's TLS configuration, replaceable while running (SIGHUP). Each accepted
/// connection takes the configuration current at that moment and keeps it for its life, so a
/// reload never touches existing connections.
pub struct TlsContext {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// Held by a reload from reading the files to the swap: two reloads at once (a SIGHUP's
    /// beside a stuck reload's) must not install the older files last.
    reloading: Mutex<()>,
    /// What was told of the certificate's end (`crate::cert_expiry`).
    reminders: Mutex<Reminders>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.files)
            .finish()
    }
}

impl TlsContext {
    pub fn load(files: TlsFiles) -> Result<TlsContext, TlsError> {
        let ticketer = new_ticketer(&files)?;
        let loaded = load(&files, Arc::clone(&ticketer))?;
        let reminders = Mutex::new(Reminders::default());
        warn_if_expired(&files, &loaded.info, &reminders);
        Ok(TlsContext {
            files,
            current: RwLock::new(loaded),
            reloading: Mutex::new(()),
            reminders,
        })
    }

    /// A session for a connection accepted now, with the configuration current now.
    pub fn session(&self) -> Result<TlsSession, rustls::Error> {
        let mut s = TlsSession::new(self.config())?;
        s.tls12_budget = self.files.tls12_record_budget;
        Ok(s)
    }

    /// The configuration for a connection accepted now.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(l) => l.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }

    pub fn info(&self) -> CertInfo {
        match self.current.read() {
            Ok(l) => l.info.clone(),
            Err(poisoned) => poisoned.into_inner().info.clone(),
        }
    }

    /// The hourly look at the served certificate (`crate::cert_expiry`): the warning to log,
    /// when one is due.
    pub fn expiry_reminder(&self) -> Option<String> {
        let info = self.info();
        let notice = lock(&self.reminders).due(&info, now_unix(), Instant::now())?;
        Some(format!("tls: {} {notice}", self.files.cert.display()))
    }

    /// Reads the files again. On success new connections get the new configuration and the
    /// answer says what changed; on error the old configuration stays in use. An expired
    /// certificate is served, with the same warning as at start-up.
    pub fn reload(&self) -> Result<String, TlsError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let ticketer = Arc::clone(&self.config().ticketer);
        let mut new = load(&self.files, ticketer)?;
        // Only reloads write `current`, one at a time: what it holds now stays until the swap,
        // and readers (new connections, the hourly look) wait for no file read.
        let changed = {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            cur.info != new.info || cur.client_ca != new.client_ca
        };
        if changed {
            // A session resumed from a ticket keeps the certificate and the client check it
            // began with: new keys, so that every new connection meets the new ones.
            new = load(&self.files, new_ticketer(&self.files)?)?;
        }
        warn_if_expired(&self.files, &new.info, &self.reminders);
        let mut cur = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let info = &new.info;
        let mut change = if cur.info == *info {
            format!("certificate unchanged ({info})")
        } else {
            format!("certificate was {}, now {info}", cur.info)
        };
        if cur.client_ca != new.client_ca {
            change.push_str("; client CA changed");
        }
        *cur = new;
        Ok(change)
    }
}

/// Writes to a non-blocking socket with MSG_NOSIGNAL; rustls hands it all its queued records
/// at once (a vectored write), so one batch of frames leaves in one `sendmsg`.
struct FdWriter(RawFd);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // rustls passes at most 64 chunks per call; more would be written by the next call.
        sys::sendv(self.0, &bufs[..bufs.len().min(64)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection's TLS state, owned by its IOWorker.
pub struct TlsSession {
    pub conn: ServerConnection,
    /// Ciphertext read from the socket but not yet given to rustls (the service paused us
    /// mid-read); empty, without heap, otherwise.
    pub stash: Vec<u8>,
    /// The session failed (bad record, handshake failure, a plaintext client): only the alert
    /// rustls queued may still go out; input is discarded.
    pub failed: bool,
    /// Handshake reads after which the server had something to send (its flights; counted
    /// by `Worker::tls_feed_timed`).
    pub flights: u8,
    /// rustls has taken bytes of this session: a first record that fails is the first bytes
    /// of the connection (a plain HTTP request shows there, for the log line).
    pub started: bool,
    close_sent: bool,
    /// Application-data records written so far (handshake records and alerts are not
    /// counted: the reserve covers them).
    records: u64,
    /// Records this session may send before the server must end it, once its handshake is
    /// over: set for TLS 1.2 with a cipher suite that has a confidentiality limit.
    record_budget: Option<u64>,
    budget_known: bool,
    /// [`TlsFiles::tls12_record_budget`].
    tls12_budget: Option<u64>,
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        Ok(TlsSession {
            conn: ServerConnection::new(config)?,
            stash: Vec::new(),
            failed: false,
            flights: 0,
            started: false,
            close_sent: false,
            records: 0,
            record_budget: None,
            budget_known: false,
            tls12_budget: None,
        })
    }

    /// Whether the session has written as many records as its cipher suite allows less the
    /// reserve (TLS 1.2 with AES-GCM only): the server is to close the connection (1001) now,
    /// so that what it still sends fits in what is left.
    pub fn records_running_out(&self) -> bool {
        self.record_budget.is_some_and(|b| self.records >= b)
    }

    /// The records written so far and the budget, for the log line of the close.
    pub fn records(&self) -> (u64, Option<u64>) {
        (self.records, self.record_budget)
    }

    /// Sets the record budget once the handshake has chosen the version and cipher suite.
    fn learn_budget(&mut self) {
        self.budget_known = true;
        if self.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_2) {
            return; // TLS 1.3 renews its keys before their limit
        }
        let limit = match self.conn.negotiated_cipher_suite() {
            Some(rustls::SupportedCipherSuite::Tls12(s)) => s.common.confidentiality_limit,
            _ => return,
        };
        if limit != u64::MAX {
            self.record_budget = Some(
                self.tls12_budget
                    .unwrap_or(limit.saturating_sub(TLS12_RECORD_RESERVE)),
            );
        }
    }

    /// Whether the server has answered the ClientHello: its flight is queued (the second one
    /// after a HelloRetryRequest, whose ClientHello is the one that costs a key exchange and a
    /// signature), or the handshake is over. What is left of a handshake then is cheap, so it
    /// no longer waits in the worker's handshake queue.
    pub fn hello_answered(&self) -> bool {
        let retried = self.conn.handshake_kind() == Some(HandshakeKind::FullWithHelloRetryRequest);
        !self.conn.is_handshaking() || self.flights > u8::from(retried)
    }

    /// Encrypts what `out` holds (as much as rustls buffers: its limit is our back-pressure,
    /// the rest stays in `out`) and writes the records until the socket is full. With
    /// `finishing`, a close_notify follows the last byte.
    pub fn flush(
        &mut self,
        out: &mut OutQueue,
        fd: RawFd,
        pool: &mut BufPool,
        finishing: bool,
    ) -> io::Result<Flushed> {
        loop {
            if self.failed {
                out.clear(pool);
            } else if !self.conn.is_handshaking() {
                if !self.budget_known {
                    self.learn_budget();
                }
                while !out.is_empty() {
                    // All queued chunks at once: rustls cuts records from their concatenation,
                    // so a burst of small frames (shared broadcast frames are chunks of their
                    // own) is a few full records, not one record each.
                    let n = {
                        let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
                        let k = out.slices(&mut iov);
                        self.conn.writer().write_vectored(&iov[..k])?
                    };
                    if n == 0 {
                        break;
                    }
                    self.records += n.div_ceil(MAX_RECORD_PLAINTEXT) as u64;
                    out.consume_front(n, pool);
                }
                if finishing && out.is_empty() && !self.close_sent {
                    self.conn.send_close_notify();
                    self.close_sent = true;
                }
            }
            if !self.conn.wants_write() {
                if out.is_empty() {
                    return Ok(Flushed::All);
                }
                // Plaintext waits for the handshake to finish; reading will bring us back.
                return Ok(Flushed::Waiting);
            }
            match self.conn.write_tls(&mut FdWriter(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Just enough DER to read a certificate's validity end and subject CN for the log.
mod der {
    /// Splits one TLV off `b`: (tag, contents, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (bytes, rest) = (b.get(..n)?, b.get(n..)?);
            b = rest;
            bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        };
        Some((tag, b.get(..len)?, b.get(len..)?))
    }

    type Validity = Option<(i64, String)>;

    /// The certificate's X.509 version (1, 2 or 3): a v1 one has no version field.
    pub fn version(cert: &[u8]) -> Option<u8> {
        let (_, cert, _) = tlv(cert)?;
        let (_, tbs, _) = tlv(cert)?;
        let (tag, explicit, _) = tlv(tbs)?;
        if tag != 0xa0 {
            return Some(1);
        }
        match tlv(explicit)? {
            (0x02, [n @ 0..=2], _) => Some(n + 1),
            _ => None,
        }
    }

    /// The validity's start and end, and the subject's common name.
    pub fn validity_and_subject(cert: &[u8]) -> Option<((Validity, Validity), Option<String>)> {
        let (_, cert, _) = tlv(cert)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        let (tag, _, r) = tlv(rest)?;
        if tag == 0xa0 {
            rest = r; // explicit version
        }
        let (_, _, r) = tlv(rest)?; // serial
        let (_, _, r) = tlv(r)?; // signature algorithm
        let (_, _, r) = tlv(r)?; // issuer
        let (_, validity, r) = tlv(r)?;
        let (_, subject, _) = tlv(r)?;
        let (start_tag, not_before, v) = tlv(validity)?;
        let (tag, not_after, _) = tlv(v)?;
        Some((
            (time(start_tag, not_before), time(tag, not_after)),
            common_name(subject),
        ))
    }

    fn common_name(mut name: &[u8]) -> Option<String> {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        while let Some((_, set, rest)) = tlv(name) {
            name = rest;
            let (_, atv, _) = tlv(set)?;
            let (_, oid, value) = tlv(atv)?;
            if oid == CN {
                let (_, text, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
        None
    }

    /// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ).
    fn time(tag: u8, b: &[u8]) -> Option<(i64, String)> {
        let s = std::str::from_utf8(b).ok()?;
        let s = s.strip_suffix('Z')?;
        let (year, s) = match tag {
            0x17 => {
                let yy: i64 = s.get(..2)?.parse().ok()?;
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
            }
            0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
            _ => return None,
        };
        let field = |i: usize| -> Option<i64> { s.get(i..i + 2)?.parse().ok() };
        let (mo, d, h, mi, se) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
        let unix = days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + se;
        Some((
            unix,
            format!("{year:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{se:02} UTC"),
        ))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn civil_days() {
            assert_eq!(super::days_from_civil(1970, 1, 1), 0);
            assert_eq!(super::days_from_civil(2000, 3, 1), 11017);
            assert_eq!(
                super::time(0x17, b"491231235959Z").map(|t| t.0),
                Some(2524607999)
            );
        }

        #[test]
        fn truncated_input_is_none() {
            assert!(super::validity_and_subject(&[0x30, 0x82, 0xff]).is_none());
            assert!(super::validity_and_subject(&[]).is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::ring::{cipher_suite, default_provider};
    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, SupportedCipherSuite};

    #[test]
    fn byte_order_marks_hide_no_block_of_a_concatenated_chain() {
        let (_, one) = self_signed();
        let (_, two) = self_signed();
        let chain = format!("\u{feff}{}\u{feff}{}", one.pem(), two.pem());
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&without_line_boms(chain.as_bytes()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs, [one.der().clone(), two.der().clone()]);
        // A mark inside a line is left alone.
        assert_eq!(
            without_line_boms("a\u{feff}b\n".as_bytes()),
            "a\u{feff}b\n".as_bytes()
        );
    }

    /// A key and a self-signed certificate for `localhost`.
    fn self_signed() -> (rcgen::KeyPair, rcgen::Certificate) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (key, cert)
    }

    /// A TLS 1.2 and 1.3 server configuration with this key and certificate.
    fn server_config(key: &rcgen::KeyPair, cert: &rcgen::Certificate) -> ServerConfig {
        ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(TLS12_AND_13)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap()
    }

    /// A client of `localhost` that trusts `cert`, with `provider`'s cipher suites.
    fn client_of(
        cert: &rcgen::Certificate,
        provider: rustls::crypto::CryptoProvider,
    ) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(TLS12_AND_13)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        ClientConnection::new(Arc::new(config), name).unwrap()
    }

    /// `s` and `client` after their handshake, run in memory.
    fn handshake(s: &mut TlsSession, client: &mut ClientConnection) {
        while client.is_handshaking() || s.conn.is_handshaking() {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut at = &wire[..];
            while !at.is_empty() {
                s.conn.read_tls(&mut at).unwrap();
            }
            s.conn.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while s.conn.wants_write() {
                s.conn.write_tls(&mut wire).unwrap();
            }
            let mut at = &wire[..];
            while !at.is_empty() {
                client.read_tls(&mut at).unwrap();
            }
            client.process_new_packets().unwrap();
        }
    }

    /// Every reload (SIGHUP, `systemctl reload`, for a service redeploy too) reloads the
    /// certificate: with the same certificate the ticket keys stay, so that the clients'
    /// tickets still resume; with a new one they change (a resumed session would go on with
    /// the old certificate).
    #[test]
    fn a_reload_keeps_the_session_ticket_keys_while_the_certificate_stays() {
        let ((key, cert), (key2, cert2)) = (self_signed(), self_signed());
        let dir = std::env::temp_dir().join(format!("lapps-tls-tickets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let ctx = TlsContext::load(TlsFiles {
            cert: cert_file,
            key: key_file,
            ca: None,
            tls13_only: false,
            tls12_record_budget: None,
        })
        .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        roots.add(cert2.der().clone()).unwrap();
        let client = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(default_provider()))
                .with_protocol_versions(TLS12_AND_13)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let connect = || {
            let name = ServerName::try_from("localhost").unwrap();
            let mut c = ClientConnection::new(Arc::clone(&client), name).unwrap();
            handshake(&mut ctx.session().unwrap(), &mut c);
            c.handshake_kind()
        };
        assert_eq!(connect(), Some(HandshakeKind::Full));
        assert_eq!(connect(), Some(HandshakeKind::Resumed));
        ctx.reload().unwrap();
        assert_eq!(connect(), Some(HandshakeKind::Resumed), "after a reload");
        std::fs::write(dir.join("cert.pem"), cert2.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key2.serialize_pem()).unwrap();
        ctx.reload().unwrap();
        assert_eq!(connect(), Some(HandshakeKind::Full), "a new certificate");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A burst of small frames, each a chunk of its own (as shared broadcast frames are),
    /// leaves in full records (one per vectored write of up to 64 chunks), not one record per
    /// frame (22 more bytes and an encryption each); the session's count is what went out.
    #[test]
    fn queued_chunks_are_coalesced_into_full_records() {
        use crate::net::hub::Chunk;
        use std::io::Read;
        use std::os::fd::AsRawFd;

        let (key, cert) = self_signed();
        let server = server_config(&key, &cert);
        let mut client = client_of(&cert, default_provider());
        let mut s = TlsSession::new(Arc::new(server)).unwrap();
        handshake(&mut s, &mut client);

        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut pool = BufPool::new(4);
        let mut out = OutQueue::default();
        let mut sent = Vec::new();
        for i in 0..100u8 {
            let frame = vec![i; 100 + usize::from(i)];
            sent.extend_from_slice(&frame);
            if i % 10 == 0 {
                out.push_chunk(&mut pool, Chunk::Owned(frame));
            } else {
                out.push_shared(&mut pool, Arc::from(frame));
            }
        }
        // Past 64 chunks the rest goes in a second vectored write, so a second record.
        assert_eq!(
            s.flush(&mut out, ours.as_raw_fd(), &mut pool, false)
                .unwrap(),
            Flushed::All
        );
        assert_eq!(s.records().0, 2, "{} bytes in 100 chunks", sent.len());
        drop(ours);
        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).unwrap();
        // TLS 1.3 sends everything as application_data (23) records: count their headers.
        let (mut records, mut rest) = (0, &wire[..]);
        while let [kind, _, _, hi, lo, ..] = *rest {
            assert_eq!(kind, 23);
            records += 1;
            rest = &rest[5 + usize::from(u16::from_be_bytes([hi, lo]))..];
        }
        assert_eq!(records, 2, "records on the wire");
        let mut at = &wire[..];
        while !at.is_empty() {
            client.read_tls(&mut at).unwrap();
            client.process_new_packets().unwrap();
        }
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert_eq!(got, sent);
    }

    #[test]
    fn a_tls12_aes_gcm_session_may_send_its_limit_less_the_reserve() {
        let (key, cert) = self_signed();
        let server = server_config(&key, &cert);
        let server = Arc::new(server);
        let cases: [(SupportedCipherSuite, Option<u64>); 3] = [
            (
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                Some((1 << 24) - (1 << 20)),
            ),
            (
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                None,
            ),
            (cipher_suite::TLS13_AES_128_GCM_SHA256, None),
        ];
        for (suite, budget) in cases {
            let mut provider = default_provider();
            provider.cipher_suites = vec![suite];
            let mut client = client_of(&cert, provider);
            let mut s = TlsSession::new(server.clone()).unwrap();
            handshake(&mut s, &mut client);
            assert_eq!(s.conn.negotiated_cipher_suite(), Some(suite));
            s.learn_budget();
            assert_eq!(s.record_budget, budget, "{suite:?}");
        }
    }
}
