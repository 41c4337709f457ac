//! Mutual TLS for node RPC (rustls through tonic): every node presents a certificate signed by
//! the cluster CA and accepts only peers that do. [`generate`] makes a CA and node certificates
//! for a test cluster (`ironbucket cert generate`).

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
}

impl TlsFiles {
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
