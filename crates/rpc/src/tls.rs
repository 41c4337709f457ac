//! Mutual TLS for node RPC (rustls through tonic): every node presents a certificate signed by
//! the cluster CA and accepts only peers that do. The CA is the operator's ([`TlsFiles`];
//! [`generate`] makes one and node certificates for a test cluster, `ironbucket cert generate`),
//! or, when no files are given, derived from the cluster secret ([`TlsSource::FromSecret`]):
//! every node derives the same CA key (Ed25519, from HMAC-SHA256 of the secret) and signs a
//! certificate for itself at start, so traffic is encrypted and only holders of the secret can
//! connect, with nothing to set up.

use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Identity};

/// Paths of this node's certificate, its key and the cluster CA (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Loaded TLS material.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) identity: Identity,
    pub(crate) ca: Certificate,
    /// The name a peer's certificate must carry; `None`: the host of the address dialled.
    pub(crate) server_name: Option<String>,
}

/// Where a node's TLS certificate and CA come from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// The operator's CA and this node's certificate and key.
    Files(TlsFiles),
    /// A CA derived from the cluster secret; this node's certificate made at start.
    FromSecret,
}

/// The name every certificate signed by a derived CA carries (peers are checked against it, not
/// against the host they were dialled by: the CA itself is the cluster's identity).
pub(crate) const DERIVED_NAME: &str = "node.ironbucket.internal";

impl TlsSource {
    /// The TLS material for node `node` of `cluster` whose secret `auth` holds.
    pub(crate) fn load(&self, auth: &crate::Auth, cluster: &str, node: &str) -> Result<Tls, String> {
        match self {
            TlsSource::Files(f) => f.load(),
            TlsSource::FromSecret => derived(auth, cluster, node),
        }
    }
}

fn derive_err(e: rcgen::Error) -> String {
    format!("cannot derive the cluster's TLS certificates: {e}")
}

/// The CA every node of `cluster` derives from the secret `auth` holds: its certificate and key.
fn derived_ca(auth: &crate::Auth, cluster: &str) -> Result<(rcgen::Certificate, rcgen::KeyPair), String> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = derive_err;
    let seed = auth.derive_key(&format!("ironbucket node rpc tls ca v1\0{cluster}"));
    // PKCS#8 v1 wrapping of an Ed25519 private key (RFC 8410): fixed prefix, then the seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    der.extend_from_slice(&seed);
    let ca_key = KeyPair::try_from(der.as_slice()).map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("IronBucket cluster CA derived from the secret ({cluster})"),
    );
    ca_params.distinguished_name = dn;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    Ok((ca, ca_key))
}

/// A new certificate for `node` signed by the CA derived from the secret; peers are trusted
/// when their certificate comes from that CA or from one derived from an accepted secret (a
/// secret rotation).
fn derived(auth: &crate::Auth, cluster: &str, node: &str) -> Result<Tls, String> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let err = derive_err;
    let (ca, ca_key) = derived_ca(auth, cluster)?;
    let mut roots = ca.pem();
    for other in auth.accepted() {
        roots.push_str(&derived_ca(&other, cluster)?.0.pem());
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut p = CertificateParams::new(vec![DERIVED_NAME.to_string()]).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node.to_string());
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca, &ca_key).map_err(err)?;
    Ok(Tls {
        identity: Identity::from_pem(cert.pem(), key.serialize_pem()),
        ca: Certificate::from_pem(roots),
        server_name: Some(DERIVED_NAME.to_string()),
    })
}

/// How often certificate files are checked for a change.
pub(crate) const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl TlsFiles {
    /// The newest modification time of the three files (`None` if none can be read).
    pub(crate) fn stamp(&self) -> Option<std::time::SystemTime> {
        [&self.cert, &self.key, &self.ca]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Reads and checks the files: each must exist and hold PEM data.
    pub fn check(&self) -> Result<(), String> {
        self.load().map(|_| ())
    }

    pub(crate) fn load(&self) -> Result<Tls, String> {
        let read = |p: &Path, what: &str| -> Result<String, String> {
            let s = std::fs::read_to_string(p).map_err(|e| format!("cannot read the {what} {}: {e}", p.display()))?;
            if !s.contains("-----BEGIN") {
                return Err(format!("the {what} {} is not PEM", p.display()));
            }
            Ok(s)
        };
        let cert = read(&self.cert, "node certificate")?;
        let key = read(&self.key, "node key")?;
        let ca = read(&self.ca, "CA certificate")?;
        Ok(Tls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            server_name: None,
        })
    }
}

fn write_private(path: &Path, data: &str) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Makes `ca.pem`/`ca.key` and, for every node, `<node>.pem`/`<node>.key` in `out`, valid for the
/// node name, `localhost`, `127.0.0.1` and `hosts`. Returns the files written.
pub fn generate(out: &Path, cluster: &str, nodes: &[String], hosts: &[String]) -> Result<Vec<PathBuf>, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    if nodes.is_empty() {
        return Err("name at least one node (--nodes)".into());
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("IronBucket cluster CA ({cluster})"));
    ca_params.distinguished_name = dn;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let mut written = Vec::new();
    let ca_pem = out.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).map_err(|e| format!("cannot write {}: {e}", ca_pem.display()))?;
    written.push(ca_pem);
    let ca_key_path = out.join("ca.key");
    write_private(&ca_key_path, &ca_key.serialize_pem())?;
    written.push(ca_key_path);
    for node in nodes {
        if node.is_empty() || node.contains('/') {
            return Err(format!("invalid node name {node:?}"));
        }
        let mut names = vec![node.clone(), "localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(hosts.iter().cloned());
        names.dedup();
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(names).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.clone());
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(err)?;
        let cert_path = out.join(format!("{node}.pem"));
        std::fs::write(&cert_path, cert.pem()).map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
        let key_path = out.join(format!("{node}.key"));
        write_private(&key_path, &key.serialize_pem())?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}
