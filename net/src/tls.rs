//! Mutual TLS for all cluster traffic: a cluster CA, leaf certificates it signs, and the rustls
//! configurations quinn uses on both sides. A peer must present a certificate signed by the
//! cluster CA, in both directions.
//!
//! Each leaf certificate also names the roles its holder may act in ([`Role`], as URI subject
//! alternative names `urn:quiver:role:<role>`), so that a node's certificate cannot drive Raft or
//! operator commands, and an operator's cannot write to shards.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS server name every cluster certificate carries and every client expects.
pub const CLUSTER_SERVER_NAME: &str = "quiver.internal";
/// ALPN protocol id of Quiver's QUIC RPC.
pub const ALPN: &[u8] = b"quiver/1";

/// What a certificate's holder may do on the cluster ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Raft peer; calls nodes' shard RPCs.
    Coordinator,
    /// Heartbeats to the control plane.
    Node,
    /// Operator commands (`quiver admin`).
    Admin,
}

const ROLE_URI_PREFIX: &str = "urn:quiver:role:";

impl Role {
    pub const ALL: [Role; 3] = [Role::Coordinator, Role::Node, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Node => "node",
            Role::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Role::Coordinator => 1,
            Role::Node => 2,
            Role::Admin => 4,
        }
    }
}

/// The set of roles a connected peer's certificate grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |bits, role| bits | role.bit()))
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The roles named in a DER certificate (none if it cannot be parsed).
    pub fn of_certificate(der: &[u8]) -> Roles {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Roles::default();
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Roles::default();
        };
        let roles: Vec<Role> = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX).and_then(Role::parse),
                _ => None,
            })
            .collect();
        Roles::of(&roles)
    }

    /// The roles of the peer on an established (mutually authenticated) connection.
    pub fn of_peer(connection: &quinn::Connection) -> Roles {
        connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.first().map(|cert| Roles::of_certificate(cert)))
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("quic crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Pem { path: String, message: String },
}

/// A process's identity: the CA it trusts and its own certificate chain and key.
#[derive(Clone)]
pub struct ClusterIdentity {
    pub ca: CertificateDer<'static>,
    pub cert_chain: Vec<CertificateDer<'static>>,
    key_der: Arc<Vec<u8>>,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// A freshly generated CA (certificate and key in PEM).
pub struct GeneratedCa {
    pub cert_pem: String,
    pub key_pem: String,
    params: CertificateParams,
    key: KeyPair,
}

impl GeneratedCa {
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.clone().self_signed(&key)?;
        Ok(GeneratedCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            params,
            key,
        })
    }

    /// Loads a CA written earlier (its certificate and key in PEM) so it can issue more
    /// certificates.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        Ok(GeneratedCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            params,
            key,
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write_private(&dir.join("ca.key"), &self.key_pem)?;
        write_private(&dir.join("ca.pem"), &self.cert_pem)
    }

    /// Issues a leaf certificate for `name` and writes `<name>.pem` and `<name>.key` into `dir`.
    pub fn issue_to(
        &self,
        dir: &Path,
        name: &str,
        sans: &[String],
        roles: &[Role],
    ) -> Result<(), TlsError> {
        let (cert, key) = self.issue(name, sans, roles)?;
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write_private(&dir.join(format!("{name}.key")), &key)?;
        write_private(&dir.join(format!("{name}.pem")), &cert)
    }

    /// Issues a leaf certificate usable as both TLS server and client, for `names` plus the
    /// cluster server name, granting `roles`. Returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        roles: &[Role],
    ) -> Result<(String, String), TlsError> {
        let mut sans: Vec<String> = names.to_vec();
        sans.push(CLUSTER_SERVER_NAME.to_owned());
        let mut params = CertificateParams::new(sans)?;
        for role in roles {
            let uri = format!("{ROLE_URI_PREFIX}{}", role.name());
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.as_str().try_into()?));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let issuer = self.params.clone().self_signed(&self.key)?;
        let cert = params.signed_by(&key, &issuer, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Keep-alive on every cluster connection, well inside [`IDLE_TIMEOUT_MS`].
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);
/// A peer silent this long (killed, partitioned) has its connection closed, so calls to it fail
/// fast instead of waiting for their deadline.
const IDLE_TIMEOUT_MS: u32 = 4_000;

impl ClusterIdentity {
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let pem_err = |what: &str, e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: what.to_owned(),
            message: e.to_string(),
        };
        let ca = CertificateDer::from_pem_slice(ca_pem).map_err(|e| pem_err("ca", e))?;
        let cert_chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("certificate", e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_err("key", e))?;
        Ok(ClusterIdentity {
            ca,
            cert_chain,
            key_der: Arc::new(key.secret_der().to_vec()),
        })
    }

    /// Loads `ca.pem`, `<name>.pem` and `<name>.key` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, TlsError> {
        Self::from_pem(
            &read(&dir.join("ca.pem"))?,
            &read(&dir.join(format!("{name}.pem")))?,
            &read(&dir.join(format!("{name}.key")))?,
        )
    }

    /// The dev-mode identity: a CA and one leaf certificate kept in `dir`, created on first use.
    pub fn load_or_create_dev(dir: &Path) -> Result<Self, TlsError> {
        let io = |source| TlsError::Io {
            path: dir.display().to_string(),
            source,
        };
        // The dev process holds every role (it is coordinator and node at once).
        if !dir.join("ca.pem").exists() || !dir.join("dev-all-roles.key").exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            let ca = GeneratedCa::generate("Quiver dev cluster CA")?;
            let (cert, key) = ca.issue("quiver-dev", &["localhost".to_owned()], &Role::ALL)?;
            write_private(&dir.join("ca.key"), &ca.key_pem)?;
            write_private(&dir.join("dev-all-roles.pem"), &cert)?;
            write_private(&dir.join("dev-all-roles.key"), &key)?;
            // ca.pem last: its presence marks a complete set.
            write_private(&dir.join("ca.pem"), &ca.cert_pem)?;
        }
        Self::load(dir, "dev-all-roles")
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key_der.as_slice().to_vec()).unwrap_or_else(|_| {
            PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
                self.key_der.as_slice().to_vec(),
            ))
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// QUIC server configuration that requires a client certificate from the cluster CA.
    pub fn quic_server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(1024u32.into())
            .max_concurrent_uni_streams(0u32.into())
            .keep_alive_interval(Some(KEEP_ALIVE))
            .max_idle_timeout(Some(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS).into()));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// QUIC client configuration presenting this identity and trusting only the cluster CA.
    pub fn quic_client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.cert_chain.clone(), self.key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(0u32.into())
            .keep_alive_interval(Some(KEEP_ALIVE))
            .max_idle_timeout(Some(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS).into()));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = GeneratedCa::generate("test CA").expect("ca");
        ca.write(dir.path()).expect("write");
        let reloaded = GeneratedCa::from_pem(
            &std::fs::read_to_string(dir.path().join("ca.pem")).expect("pem"),
            &std::fs::read_to_string(dir.path().join("ca.key")).expect("key"),
        )
        .expect("reload");
        reloaded
            .issue_to(dir.path(), "node-1", &["127.0.0.1".into()], &[Role::Node])
            .expect("issue");
        let identity = ClusterIdentity::load(dir.path(), "node-1").expect("identity");
        // The issued chain verifies against the CA with webpki (what quinn's TLS does).
        let roots = identity.roots().expect("roots");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots,
            ClusterIdentity::provider(),
        )
        .build()
        .expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&identity.cert_chain[0], &[], now)
            .expect("chains to the CA");
        // The roles travel in the certificate.
        let roles = Roles::of_certificate(&identity.cert_chain[0]);
        assert!(roles.contains(Role::Node));
        assert!(!roles.contains(Role::Coordinator) && !roles.contains(Role::Admin));
        // A certificate from another CA does not.
        let other = GeneratedCa::generate("other CA").expect("ca");
        let (cert, _) = other.issue("intruder", &[], &Role::ALL).expect("issue");
        let intruder = CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
        assert!(verifier.verify_client_cert(&intruder, &[], now).is_err());
    }
}
