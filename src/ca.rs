//! The local certificate authority and the per-host leaf certificates it issues.
//!
//! The CA lives in the state directory as `ca.pem` (public, 0644) and `ca-key.pem`
//! (secret, 0600). Once created it is never overwritten: users trust it in their
//! browsers and system store, so silently replacing it would break every install.
//!
//! A new CA carries a critical NameConstraints extension: it may vouch only for
//! `localhost` and names under it, the loopback addresses, and the suffixes it was made
//! for. Whoever reads `ca-key.pem` still cannot mint a certificate for a real site that a
//! browser accepts. CAs made before that keep working, unconstrained ([`Ca::permitted`]).

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

/// Browsers reject leaves valid for more than 398 days; stay well under.
pub const LEAF_VALIDITY_DAYS: i64 = 390;
const CA_VALIDITY_DAYS: i64 = 3650;
/// Backdating absorbs clock skew between this machine and VMs/containers.
const BACKDATE_DAYS: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "CA file {path} is unusable ({reason}); portok never overwrites an existing CA: \
         fix it, or delete ca.pem and ca-key.pem to create a new one (and re-run trust)"
    )]
    Broken {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

impl CaError {
    fn io(path: &Path, source: io::Error) -> Self {
        CaError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn broken(
        path: &Path,
        reason: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        CaError::Broken {
            path: path.to_path_buf(),
            reason: reason.into(),
            source,
        }
    }
}

/// Path of the CA certificate (what NODE_EXTRA_CA_CERTS / trust stores need).
pub fn ca_pem_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CA_CERT_FILE)
}

/// Path of the CA private key.
pub fn ca_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CA_KEY_FILE)
}

/// A leaf certificate and its fresh private key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Leaf {
    // Hand-written so the private key never ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The local CA: its certificate and the key that signs leaves.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    /// Owns the CA `KeyPair`.
    issuer: Issuer<'static, KeyPair>,
    fingerprint: String,
    /// The DNS names it may vouch for (each with the names under it); None: any.
    permitted: Option<Vec<String>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `state_dir`, creating it on first use: then it may vouch for
    /// names under `localhost` and under `tlds` (the custom TLDs served now).
    pub fn load_or_create(state_dir: &Path, tlds: &[String]) -> Result<Ca, CaError> {
        let cert_path = ca_pem_path(state_dir);
        let key_path = ca_key_path(state_dir);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => Self::create(state_dir, &cert_path, &key_path, tlds),
            (true, false) => Err(CaError::broken(
                &key_path,
                format!("missing although {} exists", cert_path.display()),
                None,
            )),
            // Maybe another process is between writing the key and the cert.
            (false, true) => Self::load_after_race(&cert_path, &key_path),
        }
    }

    /// A new CA in place of the current one, which is kept beside it as `ca.pem.old-TIME`
    /// and `ca-key.pem.old-TIME`; the leaves it signed (the `certs` cache) are dropped.
    /// Returns the new CA and where the old one went.
    pub fn renew(state_dir: &Path, tlds: &[String]) -> Result<(Ca, Option<PathBuf>), CaError> {
        let cert_path = ca_pem_path(state_dir);
        let key_path = ca_key_path(state_dir);
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut kept = None;
        for path in [&cert_path, &key_path] {
            if exists(path)? {
                let aside = path.with_file_name(format!(
                    "{}.old-{stamp}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                fs::rename(path, &aside).map_err(|e| CaError::io(path, e))?;
                if path == &cert_path {
                    kept = Some(aside);
                }
            }
        }
        let certs = state_dir.join("certs");
        match fs::remove_dir_all(&certs) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(CaError::io(&certs, e)),
            _ => {}
        }
        Ok((Self::create(state_dir, &cert_path, &key_path, tlds)?, kept))
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        let cert_pem = fs::read_to_string(cert_path).map_err(|e| CaError::io(cert_path, e))?;
        let key_pem = fs::read_to_string(key_path).map_err(|e| CaError::io(key_path, e))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            CaError::broken(cert_path, "no valid PEM certificate", Some(Box::new(e)))
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            CaError::broken(key_path, "no valid PEM private key", Some(Box::new(e)))
        })?;
        check_key_matches(&cert_der, &key).map_err(|e| {
            CaError::broken(
                key_path,
                format!("key does not belong to {}", cert_path.display()),
                Some(Box::new(e)),
            )
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| {
            CaError::broken(cert_path, "not a usable CA certificate", Some(Box::new(e)))
        })?;
        let permitted = permitted_dns(&cert_der).map_err(|why| {
            CaError::broken(
                cert_path,
                format!("unreadable name constraints: {why}"),
                None,
            )
        })?;
        Ok(Self::assemble(cert_der, issuer, permitted))
    }

    fn create(
        state_dir: &Path,
        cert_path: &Path,
        key_path: &Path,
        tlds: &[String],
    ) -> Result<Ca, CaError> {
        fs::create_dir_all(state_dir).map_err(|e| CaError::io(state_dir, e))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut permitted = vec!["localhost".to_string()];
        permitted.extend(tlds.iter().cloned());
        let owner = format!("{}@{}", crate::sys::user_name(), crate::sys::host_name());
        let params = ca_params(&owner, &permitted);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();

        // Key first: another process racing us loses on the key and waits for
        // our cert; a crash in between leaves "key without cert", which load
        // reports as Broken instead of silently making a second CA.
        match write_new_file(key_path, key.serialize_pem().as_bytes(), 0o600) {
            Ok(()) => {}
            Err(CaError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                return Self::load_after_race(cert_path, key_path);
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = write_new_file(cert_path, cert_pem.as_bytes(), 0o644) {
            // The key is ours and useless without its cert: don't leave a half CA.
            let _ = fs::remove_file(key_path);
            return Err(e);
        }
        tracing::info!(path = %cert_path.display(), "created local CA");
        let issuer = Issuer::new(params, key);
        Ok(Self::assemble(cert.der().clone(), issuer, Some(permitted)))
    }

    /// The key exists; a concurrent creator links the cert right after it,
    /// so give it a moment before calling the CA half-written.
    fn load_after_race(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        for _ in 0..20 {
            if exists(cert_path)? {
                return Self::load(cert_path, key_path);
            }
            std::thread::sleep(StdDuration::from_millis(50));
        }
        Err(CaError::broken(
            cert_path,
            format!("missing although {} exists", key_path.display()),
            None,
        ))
    }

    fn assemble(
        cert_der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
        permitted: Option<Vec<String>>,
    ) -> Ca {
        let fingerprint = sha256_hex(&cert_der);
        Ca {
            cert_der,
            issuer,
            fingerprint,
            permitted,
        }
    }

    /// The DNS names this CA may vouch for (each with every name under it), or None for
    /// a CA made before portok constrained them, which browsers let vouch for any name.
    pub fn permitted(&self) -> Option<&[String]> {
        self.permitted.as_deref()
    }

    /// Whether a browser accepts a leaf from this CA for `host` (a DNS name).
    pub fn covers(&self, host: &str) -> bool {
        self.permitted.as_ref().is_none_or(|p| {
            p.iter()
                .any(|base| host == base || crate::names::is_under(host, base))
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    #[cfg(test)]
    pub fn key(&self) -> &KeyPair {
        self.issuer.key()
    }

    /// Lowercase hex SHA-256 of the CA certificate DER (same value as
    /// `openssl x509 -noout -fingerprint -sha256`, without colons).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Short stable id of this CA (first 16 hex digits of the fingerprint),
    /// used in file names such as `portok-<id>.crt`.
    pub fn id(&self) -> &str {
        &self.fingerprint[..16]
    }

    /// Issues a server leaf for `names` (DNS names, or IP addresses).
    /// The first name becomes the CN.
    pub fn issue_leaf(&self, names: &[String]) -> Result<Leaf, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();
        let not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
        let params = leaf_params(names, now, not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(key_der),
            not_after,
        })
    }
}

/// `dns`: the names (and the names under them) the CA may vouch for, besides 127.0.0.0/8
/// and ::1.
fn ca_params(owner: &str, dns: &[String]) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.not_before = now - Duration::days(BACKDATE_DAYS);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("portok local CA ({owner})"));
    dn.push(DnType::OrganizationName, "portok");
    params.distinguished_name = dn;
    // Path length 0: the CA can sign leaves but never intermediates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut permitted: Vec<GeneralSubtree> = dns
        .iter()
        .map(|d| GeneralSubtree::DnsName(d.clone()))
        .collect();
    permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
        [127, 0, 0, 0],
        8,
    )));
    permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
        std::net::Ipv6Addr::LOCALHOST.octets(),
        128,
    )));
    // A CA for LAN sharing may also vouch for private network addresses.
    if dns.iter().any(|d| d == crate::names::LAN_TLD) {
        for (net, bits) in [
            ([10, 0, 0, 0], 8),
            ([172, 16, 0, 0], 12),
            ([192, 168, 0, 0], 16),
        ] {
            permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
                net, bits,
            )));
        }
        let mut ula = [0u8; 16];
        ula[0] = 0xfc;
        permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
            ula, 7,
        )));
    }
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: Vec::new(),
    });
    params
}

/// The DNS names a CA certificate's NameConstraints permit; None when it has none.
fn permitted_dns(cert_der: &CertificateDer<'_>) -> Result<Option<Vec<String>>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| e.to_string())?;
    let Some(ext) = cert.name_constraints().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let subtrees = ext.value.permitted_subtrees.iter().flatten();
    let dns = subtrees.filter_map(|s| match &s.base {
        GeneralName::DNSName(d) => Some(d.trim_start_matches('.').to_ascii_lowercase()),
        _ => None,
    });
    Ok(Some(dns.collect()))
}

fn leaf_params(
    names: &[String],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.not_before = now - Duration::days(BACKDATE_DAYS);
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.subject_alt_names = names.iter().map(|n| san_for(n)).collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn san_for(name: &str) -> Result<SanType, CaError> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

/// 127 random bits, positive and of fixed length (RFC 5280 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Checks that `key` is the private half of `cert` by comparing public keys.
fn check_key_matches(cert: &CertificateDer<'static>, key: &KeyPair) -> Result<(), rustls::Error> {
    let provider = rustls::crypto::ring::default_provider();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider.key_provider.load_private_key(key_der)?;
    rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key).keys_match()
}

/// SHA-256 through rustls' ring provider, so no extra hashing crate is needed.
pub fn sha256_hex(data: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = match suite.tls13() {
        Some(tls13) => tls13.common.hash_provider.hash(data),
        // TLS13_AES_128_GCM_SHA256 is by definition a TLS 1.3 suite.
        None => unreachable!("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite"),
    };
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(|e| CaError::io(path, e))
}

/// Creates `path` whole, failing with AlreadyExists rather than replacing a file.
fn write_new_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    crate::fsutil::write_new(path, data, mode).map_err(|e| CaError::io(path, e))
}

/// Replaces `path` whole (readers never see a half-written file). Used for files that may
/// legitimately be replaced.
pub(crate) fn write_replace_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    crate::fsutil::write_atomic(path, data, mode).map_err(|e| CaError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_ca_with_modes_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(mode(&ca_pem_path(dir.path())), 0o644);
        assert_eq!(mode(&ca_key_path(dir.path())), 0o600);
        assert_eq!(ca.fingerprint().len(), 64);
        assert_eq!(ca.id().len(), 16);
        let pem = fs::read_to_string(ca_pem_path(dir.path())).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

        let again = Ca::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(ca.cert_der(), again.cert_der());
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!(ca.key().public_key_raw(), again.key().public_key_raw());
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn broken_ca_is_reported_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path(), &[]).unwrap();
        let cert_path = ca_pem_path(dir.path());
        fs::write(&cert_path, "garbage").unwrap();

        let err = Ca::load_or_create(dir.path(), &[]).unwrap_err();
        assert!(matches!(&err, CaError::Broken { path, .. } if *path == cert_path));
        assert_eq!(fs::read_to_string(&cert_path).unwrap(), "garbage");
    }

    #[test]
    fn half_a_ca_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(ca_key_path(dir.path()), "x").unwrap();
        let err = Ca::load_or_create(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, CaError::Broken { .. }), "{err}");
        assert!(!ca_pem_path(dir.path()).exists());
    }

    #[test]
    fn mismatched_key_is_broken() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        Ca::load_or_create(a.path(), &[]).unwrap();
        Ca::load_or_create(b.path(), &[]).unwrap();
        fs::copy(ca_key_path(b.path()), ca_key_path(a.path())).unwrap();
        let err = Ca::load_or_create(a.path(), &[]).unwrap_err();
        assert!(
            matches!(
                &err,
                CaError::Broken {
                    source: Some(_),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn leaf_has_requested_validity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), &[]).unwrap();
        let leaf = ca
            .issue_leaf(&["a.localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let days = (leaf.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((389..=390).contains(&days), "{days}");
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{leaf:?}").contains("PRIVATE"));
    }

    #[test]
    fn concurrent_creation_yields_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Ca::load_or_create(&path, &[]).unwrap())
            })
            .collect();
        let cas: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(cas.iter().all(|ca| ca.cert_der() == cas[0].cert_der()));
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn verify(ca: &Ca, leaf: &Leaf, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let server = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&leaf.cert_der, &[], &server, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_new_ca_vouches_only_for_loopback_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(ca.permitted(), Some(&["localhost".to_string()][..]));
        let again = Ca::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(again.permitted(), ca.permitted(), "read back from ca.pem");
        assert!(ca.covers("localhost") && ca.covers("app.localhost"));
        assert!(!ca.covers("example.com") && !ca.covers("evillocalhost"));

        // Even signed with the CA's own key, a leaf for a real site is refused.
        let forged = ca.issue_leaf(&["example.com".into()]).unwrap();
        let err = verify(&ca, &forged, "example.com").unwrap_err();
        assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
        let good = ca.issue_leaf(&["app.localhost".into()]).unwrap();
        verify(&ca, &good, "app.localhost").unwrap();

        // OpenSSL agrees.
        let pem = |name: &str, leaf: &Leaf| {
            let p = dir.path().join(name);
            fs::write(&p, &leaf.cert_pem).unwrap();
            p
        };
        let openssl = |leaf: &Path| {
            std::process::Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca_pem_path(dir.path()))
                .arg(leaf)
                .output()
                .expect("openssl is needed for this test")
        };
        let out = openssl(&pem("forged.pem", &forged));
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("subtree violation"), "{said}");
        assert!(openssl(&pem("good.pem", &good)).status.success());
    }

    #[test]
    fn a_ca_made_before_constraints_still_loads_and_vouches_for_anything() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = ca_params("old", &[]);
        params.name_constraints = None;
        let cert = params.self_signed(&key).unwrap();
        fs::write(ca_key_path(dir.path()), key.serialize_pem()).unwrap();
        fs::write(ca_pem_path(dir.path()), cert.pem()).unwrap();
        let ca = Ca::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(ca.permitted(), None);
        assert!(ca.covers("example.com"));
    }
}
