//! TLS server configuration: on-demand leaf certificates from the local CA
//! (cached in memory and on disk), or a user-supplied certificate and key.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration as StdDuration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use time::{Duration, OffsetDateTime};

use crate::ca::{self, Ca, CaError};

/// Reissue leaves this long before they expire.
const RENEW_BEFORE: Duration = Duration::days(30);
/// Leaves loaded from disk are re-verified this often (we don't parse their
/// notAfter; verifying "still valid in RENEW_BEFORE" is the expiry check).
const DISK_RECHECK: Duration = Duration::days(1);
/// The hostname SANs of the certificate served without SNI (or for `localhost`).
const LOCALHOST_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("the local CA cannot vouch for {name} (its name constraints leave it out); `sudo portok trust --renew` makes a CA for the names portok serves now")]
    NotCovered { name: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{path} contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} contains no PEM private key (expected -----BEGIN PRIVATE KEY-----)")]
    NoKey { path: PathBuf },
    #[error("unsupported private key in {path}: {source}")]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("private key {key} does not match the certificate in {cert}: {source}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot trust the local CA certificate: {0}")]
    CaRoot(#[source] rustls::Error),
    #[error("cannot build certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config that issues certificates for names under `localhost` and `tlds` from the
/// CA in `state_dir`.
/// `lan_ips`: the addresses the daemon listens on besides loopback (`--lan`): the
/// certificate for no SNI (a client that connects by address) and `.local` names cover the
/// private ones among them.
pub fn server_config(
    state_dir: &Path,
    tlds: &[String],
    lan_ips: &[std::net::IpAddr],
) -> Result<Arc<ServerConfig>, TlsError> {
    let ca = Arc::new(Ca::load_or_create(state_dir, tlds)?);
    let mut resolver = LeafResolver::new(ca, state_dir, tlds)?;
    resolver.lan_ips = lan_ips
        .iter()
        .filter(|ip| private(ip))
        .map(|ip| ip.to_string())
        .collect();
    server_config_with_resolver(Arc::new(resolver))
}

/// The addresses a LAN CA may vouch for (see `ca::ca_params`).
fn private(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_private(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Like [`server_config`], for callers that keep a handle on the resolver.
pub fn server_config_with_resolver(
    resolver: Arc<LeafResolver>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(resolver.provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    finish(config)
}

/// Server config serving a user-supplied PEM certificate chain and key.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = read_cert_chain(cert)?;
    let key_der = read_private_key(key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::UnsupportedKey {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    check_keys_match(&certified).map_err(|source| TlsError::KeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    finish(config)
}

/// Settings shared by both configs.
fn finish(mut config: ServerConfig) -> Result<Arc<ServerConfig>, TlsError> {
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Stateless resumption; 0-RTT stays off (replayable requests).
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// `keys_match` can't tell for some key types; only a definite mismatch is an error.
fn check_keys_match(certified: &CertifiedKey) -> Result<(), rustls::Error> {
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        other => other,
    }
}

/// Hands out a leaf for every `*.localhost` name, issuing it on first use.
pub struct LeafResolver {
    ca: Arc<Ca>,
    certs_dir: PathBuf,
    provider: Arc<CryptoProvider>,
    /// Trusts only our CA: decides whether a leaf found on disk is still good.
    verifier: Arc<WebPkiServerVerifier>,
    cache: RwLock<HashMap<String, CachedLeaf>>,
    /// Serialises issuance so concurrent handshakes for a new name make one leaf.
    issue_lock: Mutex<()>,
    issued: AtomicUsize,
    /// Suffixes served besides localhost.
    tlds: Vec<String>,
    /// Private LAN addresses (`--lan`): also in the no-SNI and `.local` leaves.
    lan_ips: Vec<String>,
}

#[derive(Clone)]
struct CachedLeaf {
    key: Arc<CertifiedKey>,
    renew_after: OffsetDateTime,
}

impl std::fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafResolver")
            .field("ca", &self.ca.id())
            .field("certs_dir", &self.certs_dir)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolve_name(client_hello.server_name())
    }
}

impl LeafResolver {
    /// Leaves are cached in `<state_dir>/certs`.
    pub fn new(ca: Arc<Ca>, state_dir: &Path, tlds: &[String]) -> Result<Self, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).map_err(TlsError::CaRoot)?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        Ok(LeafResolver {
            ca,
            certs_dir: state_dir.join("certs"),
            provider,
            verifier,
            cache: RwLock::new(HashMap::new()),
            issue_lock: Mutex::new(()),
            issued: AtomicUsize::new(0),
            tlds: tlds.to_vec(),
            lan_ips: Vec::new(),
        })
    }

    /// How many leaves this resolver has issued (not loaded from disk).
    #[cfg(test)]
    pub fn issued_count(&self) -> usize {
        self.issued.load(Ordering::Relaxed)
    }

    /// The certificate for an SNI name (`None` = no SNI), or `None` to refuse
    /// the handshake: the CA must never sign a real-world name.
    pub fn resolve_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = cache_key(sni, &self.tlds)?;
        if let Some(key) = self.cached(&name) {
            return Some(key);
        }
        match self.load_or_issue(&name) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!(%name, error = %err, "no certificate for TLS handshake");
                None
            }
        }
    }

    /// Fast path: a read lock and a map lookup.
    fn cached(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(name)?;
        (OffsetDateTime::now_utc() < entry.renew_after).then(|| entry.key.clone())
    }

    fn load_or_issue(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let _guard = self
            .issue_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another handshake may have done the work while we waited.
        if let Some(key) = self.cached(name) {
            return Ok(key);
        }
        if !self.ca.covers(name) {
            return Err(TlsError::NotCovered { name: name.into() });
        }
        // A leaf that carries this run's LAN addresses is made afresh: they may have changed.
        let leaf = match self
            .load_from_disk(name)
            .filter(|_| !self.with_lan_ips(name))
        {
            Some(leaf) => leaf,
            None => self.issue(name)?,
        };
        let key = leaf.key.clone();
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), leaf);
        Ok(key)
    }

    fn cert_path(&self, name: &str) -> PathBuf {
        cert_path(&self.certs_dir, name)
    }

    fn key_path(&self, name: &str) -> PathBuf {
        key_path(&self.certs_dir, name)
    }

    /// A leaf from an earlier run, if it is intact, chains to the current CA,
    /// covers `name`, and is not about to expire.
    fn load_from_disk(&self, name: &str) -> Option<CachedLeaf> {
        let (cert_path, key_path) = (self.cert_path(name), self.key_path(name));
        if !cert_path.exists() || !key_path.exists() {
            return None;
        }
        let loaded = read_cert_chain(&cert_path).and_then(|chain| {
            let key = read_private_key(&key_path)?;
            Ok(CertifiedKey::from_der(chain, key, &self.provider)?)
        });
        let key = match loaded {
            Ok(key) => key,
            Err(err) => {
                tracing::info!(%name, error = %err, "cached leaf unusable; reissuing");
                return None;
            }
        };
        if let Err(err) = self.verify_fresh(&key, name) {
            tracing::info!(%name, error = %err, "cached leaf stale or from another CA; reissuing");
            return None;
        }
        Some(CachedLeaf {
            key: Arc::new(key),
            renew_after: OffsetDateTime::now_utc() + DISK_RECHECK,
        })
    }

    /// Verifies as a browser would, now and RENEW_BEFORE from now.
    fn verify_fresh(&self, key: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
        let server_name = server_name_for(name)?;
        let (end_entity, intermediates) = key
            .cert
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let now = SystemTime::now();
        let later = now + StdDuration::from_secs(RENEW_BEFORE.whole_seconds().unsigned_abs());
        for at in [now, later] {
            self.verifier.verify_server_cert(
                end_entity,
                intermediates,
                &server_name,
                &[],
                UnixTime::since_unix_epoch(
                    at.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                ),
            )?;
        }
        Ok(())
    }

    /// The leaves that also name the LAN addresses: no SNI, and `.local` names; only from a
    /// CA made for the LAN, whose constraints permit private addresses (an older CA's leaf
    /// with them would fail even on loopback).
    fn with_lan_ips(&self, name: &str) -> bool {
        !self.lan_ips.is_empty()
            && (name == "localhost" || crate::names::is_under(name, crate::names::LAN_TLD))
            && self.ca.covers("x.local")
    }

    fn issue(&self, name: &str) -> Result<CachedLeaf, TlsError> {
        let mut sans = sans_for(name, &self.tlds);
        if self.with_lan_ips(name) {
            sans.extend(self.lan_ips.iter().cloned());
        }
        let leaf = self.ca.issue_leaf(&sans)?;
        self.issued.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%name, "issued leaf certificate");
        let key = CertifiedKey::from_der(
            vec![leaf.cert_der.clone()],
            leaf.key_der.clone_key(),
            &self.provider,
        )?;
        // The disk copy only saves work on the next start; serve anyway. It is written
        // (and fsynced) off the async workers, so a handshake for a new name does not stall
        // every other connection on the same thread.
        let save = {
            let (dir, name) = (self.certs_dir.clone(), name.to_string());
            let (key_pem, cert_pem) = (leaf.key_pem.clone(), leaf.cert_pem.clone());
            move || {
                if let Err(err) = save_leaf(&dir, &name, &key_pem, &cert_pem) {
                    tracing::warn!(%name, error = %err, "cannot cache leaf certificate on disk");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(save)),
            Err(_) => save(),
        }
        Ok(CachedLeaf {
            key: Arc::new(key),
            renew_after: leaf.not_after - RENEW_BEFORE,
        })
    }
}

/// Write a leaf's key and certificate under `dir` (created 0700).
fn save_leaf(dir: &Path, name: &str, key_pem: &str, cert_pem: &str) -> Result<(), CaError> {
    let io_err = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    // Key first: a crash in between leaves a mismatched pair, which load_from_disk
    // rejects, rather than a new cert with a stale key.
    ca::write_replace_file(&key_path(dir, name), key_pem.as_bytes(), 0o600)?;
    ca::write_replace_file(&cert_path(dir, name), cert_pem.as_bytes(), 0o644)
}

fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-key.pem"))
}

fn server_name_for(name: &str) -> Result<ServerName<'static>, rustls::Error> {
    ServerName::try_from(name.to_string())
        .map_err(|_| rustls::Error::General(format!("invalid server name {name}")))
}

/// The cache key (and file stem) for an SNI value, or `None` for names we
/// refuse: anything outside `.localhost` or not a plain hostname.
fn cache_key(sni: Option<&str>, tlds: &[String]) -> Option<String> {
    let Some(sni) = sni else {
        return Some("localhost".to_string());
    };
    let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
    let local = name == "localhost" || name.ends_with(".localhost") || under_tld(&name, tlds);
    (local && is_hostname(&name)).then_some(name)
}

/// `[a-z0-9-]` labels separated by single dots. This is also what makes the
/// name safe as a file name (no `/`, no `..`, no leading `-` or `.`).
fn is_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A name under one of the custom TLDs (not the TLD itself).
fn under_tld(name: &str, tlds: &[String]) -> bool {
    tlds.iter().any(|t| crate::names::is_under(name, t))
}

/// SANs for a cache key. `x.y.localhost` also gets `*.y.localhost`, but never
/// `*.localhost` (or `*.TLD`), which browsers reject as too broad.
fn sans_for(name: &str, tlds: &[String]) -> Vec<String> {
    if name == "localhost" {
        return LOCALHOST_NAMES.iter().map(|n| n.to_string()).collect();
    }
    match name.split_once('.') {
        Some((_, parent)) if parent != "localhost" && !tlds.iter().any(|t| t == parent) => {
            vec![name.to_string(), format!("*.{parent}")]
        }
        _ => vec![name.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn setup() -> (tempfile::TempDir, LeafResolver) {
        let dir = tempfile::tempdir().unwrap();
        let resolver = fresh_resolver(dir.path());
        (dir, resolver)
    }

    fn fresh_resolver(state: &Path) -> LeafResolver {
        let ca = Arc::new(Ca::load_or_create(state, &[]).unwrap());
        LeafResolver::new(ca, state, &[]).unwrap()
    }

    /// Verifies `key` against a trust store holding only ca.pem, like a client would.
    fn verify(state: &Path, key: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
        let ca_der = CertificateDer::from_pem_file(ca::ca_pem_path(state)).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&key.cert[0], &[], &server_name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn names_and_sans() {
        assert_eq!(cache_key(None, &[]).as_deref(), Some("localhost"));
        assert_eq!(
            cache_key(Some("MyApp.LocalHost."), &[]).as_deref(),
            Some("myapp.localhost")
        );
        for bad in [
            "example.com",
            "localhost.com",
            "evillocalhost",
            "a/b.localhost",
            "..localhost",
            "a..localhost",
            ".localhost",
            "-x.localhost",
            "a_b.localhost",
            "*.x.localhost",
        ] {
            assert_eq!(cache_key(Some(bad), &[]), None, "{bad}");
        }
        assert_eq!(sans_for("myapp.localhost", &[]), ["myapp.localhost"]);
        assert_eq!(
            sans_for("a.b.localhost", &[]),
            ["a.b.localhost", "*.b.localhost"]
        );
        assert_eq!(
            sans_for("localhost", &[]),
            ["localhost", "127.0.0.1", "::1"]
        );
        let test = ["test".to_string()];
        assert_eq!(
            cache_key(Some("Api.Test"), &test).as_deref(),
            Some("api.test")
        );
        assert_eq!(cache_key(Some("test"), &test), None, "the TLD itself");
        assert_eq!(cache_key(Some("api.test"), &[]), None, "not served");
        assert_eq!(cache_key(Some("example.com"), &test), None);
        assert_eq!(sans_for("api.test", &test), ["api.test"], "never *.test");
        assert_eq!(sans_for("a.b.test", &test), ["a.b.test", "*.b.test"]);
    }

    #[test]
    fn leaves_verify_against_ca() {
        let (dir, resolver) = setup();
        let key = resolver.resolve_name(Some("myapp.localhost")).unwrap();
        verify(dir.path(), &key, "myapp.localhost").unwrap();
        assert!(verify(dir.path(), &key, "other.localhost").is_err());

        let key = resolver.resolve_name(Some("a.b.myapp.localhost")).unwrap();
        verify(dir.path(), &key, "a.b.myapp.localhost").unwrap();
        // The wildcard covers siblings.
        verify(dir.path(), &key, "c.b.myapp.localhost").unwrap();
        assert!(verify(dir.path(), &key, "b.myapp.localhost").is_err());
    }

    #[test]
    fn foreign_names_get_nothing() {
        let (dir, resolver) = setup();
        assert!(resolver.resolve_name(Some("example.com")).is_none());
        assert!(resolver.resolve_name(Some("../../etc.localhost")).is_none());
        assert_eq!(resolver.issued_count(), 0);
        assert!(!dir.path().join("certs").exists());
    }

    #[test]
    fn no_sni_gets_localhost_and_ips() {
        let (dir, resolver) = setup();
        let key = resolver.resolve_name(None).unwrap();
        for name in ["localhost", "127.0.0.1", "::1"] {
            verify(dir.path(), &key, name).unwrap();
        }
        // SNI "localhost" shares that certificate.
        let same = resolver.resolve_name(Some("localhost")).unwrap();
        assert!(Arc::ptr_eq(&key, &same));
        assert_eq!(resolver.issued_count(), 1);
    }

    #[test]
    fn leaf_is_cached_on_disk_and_reused() {
        let (dir, resolver) = setup();
        let first = resolver.resolve_name(Some("myapp.localhost")).unwrap();
        let certs = dir.path().join("certs");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&certs), 0o700);
        assert_eq!(mode(&certs.join("myapp.localhost-key.pem")), 0o600);
        assert!(certs.join("myapp.localhost.pem").exists());

        let again = fresh_resolver(dir.path());
        let second = again.resolve_name(Some("myapp.localhost")).unwrap();
        assert_eq!(first.cert, second.cert);
        assert_eq!(again.issued_count(), 0);
    }

    #[test]
    fn leaf_from_another_ca_is_reissued() {
        let (dir, resolver) = setup();
        resolver.resolve_name(Some("myapp.localhost")).unwrap();
        // Same certs dir, new CA (the user deleted and recreated it).
        fs::remove_file(ca::ca_pem_path(dir.path())).unwrap();
        fs::remove_file(ca::ca_key_path(dir.path())).unwrap();
        let again = fresh_resolver(dir.path());
        let key = again.resolve_name(Some("myapp.localhost")).unwrap();
        assert_eq!(again.issued_count(), 1);
        verify(dir.path(), &key, "myapp.localhost").unwrap();
    }

    #[test]
    fn corrupt_disk_leaf_is_reissued() {
        let (dir, resolver) = setup();
        resolver.resolve_name(Some("myapp.localhost")).unwrap();
        fs::write(dir.path().join("certs/myapp.localhost.pem"), "junk").unwrap();
        let again = fresh_resolver(dir.path());
        assert!(again.resolve_name(Some("myapp.localhost")).is_some());
        assert_eq!(again.issued_count(), 1);
    }

    #[test]
    fn concurrent_handshakes_issue_one_leaf() {
        let (_dir, resolver) = setup();
        let resolver = Arc::new(resolver);
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (resolver, barrier) = (resolver.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    resolver.resolve_name(Some("new.localhost")).unwrap()
                })
            })
            .collect();
        let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(resolver.issued_count(), 1);
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
    }

    #[test]
    fn issuance_is_fast() {
        let (_dir, resolver) = setup();
        resolver.resolve_name(Some("warmup.localhost")).unwrap();
        let n = 20;
        let start = Instant::now();
        for i in 0..n {
            resolver
                .resolve_name(Some(&format!("app{i}.localhost")))
                .unwrap();
        }
        let per_leaf = start.elapsed() / n;
        eprintln!("new leaf (issue + write to disk): {per_leaf:?}");
        let start = Instant::now();
        for _ in 0..1000 {
            resolver.resolve_name(Some("app0.localhost")).unwrap();
        }
        eprintln!("cached lookup: {:?}", start.elapsed() / 1000);
        // Generous bound: debug builds of this crate, busy CI machines.
        assert!(per_leaf < StdDuration::from_millis(200), "{per_leaf:?}");
    }

    fn client_config(state: &Path) -> Arc<rustls::ClientConfig> {
        let ca_der = CertificateDer::from_pem_file(ca::ca_pem_path(state)).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Full TLS handshake over an in-memory pipe.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(client);
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let (client_res, _server_res) = tokio::join!(
            connector.connect(server_name, client_io),
            acceptor.accept(server_io)
        );
        let stream = client_res?;
        Ok(stream.get_ref().1.alpn_protocol().map(|p| p.to_vec()))
    }

    #[tokio::test]
    async fn real_handshakes() {
        let dir = tempfile::tempdir().unwrap();
        let server = server_config(dir.path(), &[], &[]).unwrap();
        let client = client_config(dir.path());
        for name in ["myapp.localhost", "a.b.myapp.localhost", "127.0.0.1", "::1"] {
            let alpn = handshake(server.clone(), client.clone(), name)
                .await
                .unwrap();
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "{name}");
        }
        assert!(handshake(server, client, "example.com").await.is_err());
    }

    #[tokio::test]
    async fn config_from_user_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), &[]).unwrap();
        let leaf = ca.issue_leaf(&["custom.localhost".to_string()]).unwrap();
        let other = ca.issue_leaf(&["other.localhost".to_string()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let other_key = dir.path().join("other-key.pem");
        fs::write(&cert, &leaf.cert_pem).unwrap();
        fs::write(&key, &leaf.key_pem).unwrap();
        fs::write(&other_key, &other.key_pem).unwrap();

        let server = server_config_from_files(&cert, &key).unwrap();
        let alpn = handshake(server, client_config(dir.path()), "custom.localhost")
            .await
            .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        let missing = dir.path().join("nope.pem");
        let err = server_config_from_files(&missing, &key).unwrap_err();
        assert!(
            matches!(&err, TlsError::Read { path, .. } if *path == missing),
            "{err}"
        );
        let err = server_config_from_files(&key, &key).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoCertificate { path } if *path == key),
            "{err}"
        );
        let err = server_config_from_files(&cert, &cert).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoKey { path } if *path == cert),
            "{err}"
        );
        let err = server_config_from_files(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("other-key.pem"), "{err}");
    }
}
