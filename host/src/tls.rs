//! TLS material and rustls configurations for the sync protocol.
//!
//! Owns: generating a private CA and a server certificate signed by it
//! (`hubsync init master`), and turning PEM files into rustls server and
//! client configurations. Every configuration is built with the *ring*
//! provider passed explicitly, so the process-wide default provider is never
//! consulted and aws-lc-rs is never needed.
//!
//! Must never: trust system roots (a client trusts exactly the CA file it is
//! given), log or print private key material, or overwrite existing key files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// File names written by [`generate_ca_and_server`].
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (kept so that later tooling can sign client certificates).
pub const CA_KEY_FILE: &str = "ca.key";
/// The server certificate, signed by the CA.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The server's private key.
pub const SERVER_KEY_FILE: &str = "server.key";

/// How long generated certificates stay valid.
const CA_VALID_DAYS: i64 = 3650;
const SERVER_VALID_DAYS: i64 = 825;

/// A date `days` away from today (UTC, midnight), in rcgen's date type
/// (a macro because rcgen does not re-export that type's name).
macro_rules! days_from_now {
    ($days:expr) => {{
        use chrono::Datelike;
        let date = chrono::Utc::now().date_naive() + chrono::Duration::days($days);
        // Month and day always fit in u8 (1..=12, 1..=31).
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    }};
}

/// Where [`generate_ca_and_server`] wrote its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedTls {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Errors from generating or loading TLS material. Messages name the file and
/// say what to do; they never contain key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "refusing to overwrite {path}: the file already exists; \
         remove the old TLS files or generate into another directory"
    )]
    AlreadyExists { path: PathBuf },

    #[error(
        "cannot create directory {path}: {source}; check that the parent exists and is writable"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}; check permissions and free space")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "`{host}` cannot be put in a certificate: {reason}; \
         give an IP address or a DNS name (letters, digits, '-', '.')"
    )]
    InvalidHost { host: String, reason: String },

    #[error("cannot generate the {what}: {reason}")]
    Generate { what: &'static str, reason: String },

    #[error(
        "cannot read certificates from {path}: {reason}; the file must contain PEM `CERTIFICATE` blocks"
    )]
    ReadCertificates { path: PathBuf, reason: String },

    #[error(
        "no certificate found in {path}; the file must contain at least one PEM `CERTIFICATE` block"
    )]
    NoCertificates { path: PathBuf },

    #[error(
        "cannot read a private key from {path}: {reason}; the file must contain a PEM \
         `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block"
    )]
    ReadPrivateKey { path: PathBuf, reason: String },

    #[error(
        "{path} is not a usable CA certificate: {reason}; point the setting at the CA's PEM file (ca.pem)"
    )]
    BadCaCertificate { path: PathBuf, reason: String },

    #[error(
        "cannot build the TLS configuration from {cert} and {key}: {reason}; check that the key belongs to the certificate"
    )]
    ServerConfig {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },

    #[error("cannot build the TLS client configuration: {reason}")]
    ClientConfig { reason: String },

    #[error(
        "cannot read the CA key {path}: {reason}; client certificates are issued on the master, with the tls/ directory `hubsync init master` created"
    )]
    CaKey { path: PathBuf, reason: String },

    #[error(
        "the client certificate just issued does not verify against {ca}: {reason}; the CA files in that directory do not belong together (was the CA replaced?)"
    )]
    IssuedCertDoesNotVerify { ca: PathBuf, reason: String },
}

/// Files written by [`issue_client_cert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long issued client certificates stay valid.
const CLIENT_VALID_DAYS: i64 = 825;

/// The DNS name a node's client certificate carries as its SAN: it names
/// the node, and [`cert_names_node`] checks it.
pub fn node_san(node_id: uuid::Uuid) -> String {
    format!("n{}.node.hubsync", node_id.simple())
}

/// True when `cert` carries the SAN of `node_id` ([`node_san`]).
pub fn cert_names_node(cert: &CertificateDer<'_>, node_id: uuid::Uuid) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(node_san(node_id)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// Issues a client certificate for node `node_id` (`code`) from the CA in
/// `tls_dir` (ca.pem, ca.key, as `hubsync init master` wrote them, the CA
/// named after `master_code`), and writes `<code>.pem` and `<code>.key`
/// (0600) into `out_dir`. The certificate's SAN names the node
/// ([`node_san`]); it is checked against the CA before anything is written.
pub fn issue_client_cert(
    tls_dir: &Path,
    master_code: &str,
    node_id: uuid::Uuid,
    code: &str,
    out_dir: &Path,
) -> Result<ClientCertFiles, TlsError> {
    let file_stem: String = code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let out = ClientCertFiles {
        cert: out_dir.join(format!("{file_stem}.pem")),
        key: out_dir.join(format!("{file_stem}.key")),
    };
    for path in [&out.cert, &out.key] {
        if path.exists() {
            return Err(TlsError::AlreadyExists { path: path.clone() });
        }
    }
    let ca_key_path = tls_dir.join(CA_KEY_FILE);
    let ca_cert_path = tls_dir.join(CA_CERT_FILE);
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(|e| TlsError::CaKey {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::CaKey {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    // The CA's parameters as `generate_ca_and_server` set them: signing
    // needs the issuer's name and key; the result is verified below.
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name(&format!("hubsync CA {master_code}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let key = KeyPair::generate().map_err(|e| TlsError::Generate {
        what: "client key pair",
        reason: e.to_string(),
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("hubsync node {code}"));
    params.subject_alt_names = vec![SanType::DnsName(node_san(node_id).try_into().map_err(
        |e: rcgen::Error| TlsError::Generate {
            what: "client certificate name",
            reason: e.to_string(),
        },
    )?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = days_from_now!(-1);
    params.not_after = days_from_now!(CLIENT_VALID_DAYS);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| TlsError::Generate {
            what: "client certificate",
            reason: e.to_string(),
        })?;

    // Check the chain before handing anything out.
    let verifier = client_verifier(&ca_cert_path)?;
    verifier
        .verify_client_cert(cert.der(), &[], rustls_pki_types::UnixTime::now())
        .map_err(|e| TlsError::IssuedCertDoesNotVerify {
            ca: ca_cert_path.clone(),
            reason: e.to_string(),
        })?;

    fs::create_dir_all(out_dir).map_err(|source| TlsError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    write_new(&out.key, key.serialize_pem().as_bytes(), true)?;
    write_new(&out.cert, cert.pem().as_bytes(), false)?;
    tracing::info!(node = %code, cert = %out.cert.display(), "issued a client certificate");
    Ok(out)
}

/// A verifier of client certificates issued by the CA in `ca_cert`; a
/// client without a certificate is let through the handshake (the sync
/// endpoint then refuses it with 401 and a security event, which a failed
/// handshake could not give).
fn client_verifier(
    ca_cert: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(ca_cert)? {
        roots.add(cert).map_err(|e| TlsError::BadCaCertificate {
            path: ca_cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::BadCaCertificate {
            path: ca_cert.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The one crypto provider every configuration here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Creates a self-signed CA ("hubsync CA <name>") and a server certificate
/// signed by it, with SANs for every host in `hosts` (IP addresses as IP SANs,
/// names as DNS SANs; "localhost", "127.0.0.1" and "::1" are always included),
/// and writes ca.pem, ca.key, server.pem, server.key into `dir` (created if
/// missing; private keys with mode 0600 on unix).
///
/// Refuses to overwrite any existing file; nothing is written in that case.
pub fn generate_ca_and_server(
    dir: &Path,
    name: &str,
    hosts: &[String],
) -> Result<GeneratedTls, TlsError> {
    let out = GeneratedTls {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        server_cert: dir.join(SERVER_CERT_FILE),
        server_key: dir.join(SERVER_KEY_FILE),
    };
    // Check everything first so a refusal leaves the directory untouched.
    for path in [&out.ca_cert, &out.ca_key, &out.server_cert, &out.server_key] {
        if path.exists() {
            return Err(TlsError::AlreadyExists { path: path.clone() });
        }
    }
    let sans = subject_alt_names(hosts)?;

    let not_before = days_from_now!(-1);

    let ca_key = KeyPair::generate().map_err(|e| TlsError::Generate {
        what: "CA key pair",
        reason: e.to_string(),
    })?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name(&format!("hubsync CA {name}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = days_from_now!(CA_VALID_DAYS);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| TlsError::Generate {
            what: "CA certificate",
            reason: e.to_string(),
        })?;

    let server_key = KeyPair::generate().map_err(|e| TlsError::Generate {
        what: "server key pair",
        reason: e.to_string(),
    })?;
    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = distinguished_name(&format!("hubsync server {name}"));
    server_params.subject_alt_names = sans;
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.not_before = not_before;
    server_params.not_after = days_from_now!(SERVER_VALID_DAYS);
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_cert =
        server_params
            .signed_by(&server_key, &issuer)
            .map_err(|e| TlsError::Generate {
                what: "server certificate",
                reason: e.to_string(),
            })?;

    fs::create_dir_all(dir).map_err(|source| TlsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    write_new(&out.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    write_new(&out.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_new(&out.server_key, server_key.serialize_pem().as_bytes(), true)?;
    write_new(&out.server_cert, server_cert.pem().as_bytes(), false)?;
    tracing::info!(
        dir = %dir.display(),
        ca = %out.ca_cert.display(),
        server_cert = %out.server_cert.display(),
        "generated TLS CA and server certificate"
    );
    Ok(out)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "hubsync");
    dn
}

fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for host in hosts {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            names.push(host.to_string());
        }
    }
    names
        .into_iter()
        .map(|host| match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => {
                if !is_dns_name(&host) {
                    return Err(TlsError::InvalidHost {
                        host,
                        reason: "not an IP address and not a valid DNS name".into(),
                    });
                }
                host.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e: rcgen::Error| TlsError::InvalidHost {
                        host,
                        reason: e.to_string(),
                    })
            }
        })
        .collect()
}

fn is_dns_name(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Creates `path` (never overwriting) and writes `contents`; `private`
/// files get mode 0600 on unix from the moment they exist.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads every certificate in a PEM file; at least one is required.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |e: rustls_pki_types::pem::Error| TlsError::ReadCertificates {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::ReadPrivateKey {
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in the file".into(),
            other => other.to_string(),
        },
    })
}

/// A rustls server configuration from PEM files: TLS 1.2 and 1.3 only, the
/// ring provider, ALPN "http/1.1", no client authentication.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with(cert, key, None)
}

/// The sync endpoint's server configuration for `[listen]`: with
/// `require_client_cert`, client certificates issued by `client_ca` are
/// requested and verified (one that does not verify fails the handshake;
/// none at all reaches the endpoint, which refuses it with 401).
pub fn server_config_for(
    listen: &crate::config::ListenConfig,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let client_ca = listen
        .require_client_cert
        .then_some(listen.client_ca.as_path());
    server_config_with(&listen.cert, &listen.key, client_ca)
}

fn server_config_with(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certificates(cert)?;
    let private_key = load_private_key(key)?;
    let config_err = |e: rustls::Error| TlsError::ServerConfig {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(config_err)?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, private_key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client configuration trusting ONLY the CA certificate(s) in
/// `ca_cert` (no system roots): TLS 1.2 and 1.3, the ring provider, no ALPN
/// (the HTTPS connector sets it).
pub fn client_config(ca_cert: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with_identity(ca_cert, None)
}

/// The client configuration for a `[master]` link: its CA, and its client
/// certificate and key when both are set (mutual TLS).
pub fn client_config_for_link(
    link: &crate::config::MasterLink,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    match (&link.client_cert, &link.client_key) {
        (Some(cert), Some(key)) => client_config_with_identity(&link.ca_cert, Some((cert, key))),
        _ => client_config(&link.ca_cert),
    }
}

/// [`client_config`] that also presents the client certificate chain and
/// key in `identity` (PEM files) when the server asks for one.
pub fn client_config_with_identity(
    ca_cert: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(ca_cert)? {
        roots.add(cert).map_err(|e| TlsError::BadCaCertificate {
            path: ca_cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::ClientConfig {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = load_certificates(cert)?;
            let private_key = load_private_key(key)?;
            config
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| TlsError::ClientConfig {
                    reason: format!(
                        "the client certificate {} and key {} do not go together: {e}",
                        cert.display(),
                        key.display()
                    ),
                })?
        }
        None => config.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load_as_server_and_client_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = generate_ca_and_server(dir.path(), "test", &["sync.example.org".into()])
            .expect("generate");
        server_config(&tls.server_cert, &tls.server_key).expect("server config");
        client_config(&tls.ca_cert).expect("client config");
        let ca = load_certificates(&tls.ca_cert).expect("ca");
        assert_eq!(ca.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_only_readable_by_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = generate_ca_and_server(dir.path(), "test", &[]).expect("generate");
        for key in [&tls.ca_key, &tls.server_key] {
            let mode = fs::metadata(key).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_ca_and_server(dir.path(), "first", &[]).expect("generate");
        let before = fs::read(dir.path().join(CA_KEY_FILE)).expect("read");
        let err = generate_ca_and_server(dir.path(), "second", &[]).expect_err("must refuse");
        assert!(matches!(err, TlsError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(
            before,
            fs::read(dir.path().join(CA_KEY_FILE)).expect("read")
        );
    }

    #[test]
    fn invalid_host_names_are_refused_with_the_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = generate_ca_and_server(dir.path(), "x", &["bad host!".into()])
            .expect_err("must refuse");
        assert!(err.to_string().contains("bad host!"), "{err}");
        assert!(!dir.path().join(CA_CERT_FILE).exists());
    }

    #[test]
    fn an_issued_client_cert_names_its_node_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = generate_ca_and_server(dir.path(), "MASTER", &[]).expect("generate");
        let node = uuid::Uuid::from_u128(0xABC);
        let files = issue_client_cert(
            dir.path(),
            "MASTER",
            node,
            "DESKTOP/1",
            &dir.path().join("clients"),
        )
        .expect("issue");
        assert!(files.cert.ends_with("clients/DESKTOP_1.pem"));
        let cert = load_certificates(&files.cert).expect("cert").remove(0);
        assert!(cert_names_node(&cert, node));
        assert!(!cert_names_node(&cert, uuid::Uuid::from_u128(0xDEF)));
        client_config_with_identity(&tls.ca_cert, Some((&files.cert, &files.key)))
            .expect("client identity");
        // A CA of another name (another master) does not verify it.
        let err = issue_client_cert(dir.path(), "OTHER", node, "X", &dir.path().join("c2"))
            .expect_err("wrong CA name");
        assert!(
            matches!(err, TlsError::IssuedCertDoesNotVerify { .. }),
            "{err}"
        );
        assert!(!dir.path().join("c2/X.pem").exists());
        // Never overwritten.
        let err = issue_client_cert(
            dir.path(),
            "MASTER",
            node,
            "DESKTOP/1",
            &dir.path().join("clients"),
        )
        .expect_err("exists");
        assert!(matches!(err, TlsError::AlreadyExists { .. }), "{err}");
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let err = client_config(Path::new("/nonexistent/ca.pem")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = generate_ca_and_server(dir.path(), "t", &[]).expect("generate");
        // A certificate file is not a key file.
        let err = server_config(&tls.server_cert, &tls.server_cert).expect_err("no key");
        assert!(matches!(err, TlsError::ReadPrivateKey { .. }), "{err}");
    }
}
