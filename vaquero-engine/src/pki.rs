//! A certificate authority of one's own, for a lab or a first deployment
//! (`vaquero certs init`): a CA and a server certificate signed by it
//! (rcgen, ECDSA P-256), and the CA's fingerprint that clients pin.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// Certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiFailure {
    /// Making a key or a certificate failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A CA is there already: a new one would orphan every certificate it
    /// signed.
    #[error(
        "{0} exists already: a new CA would invalidate every certificate the old one signed (remove it first to start over)"
    )]
    Exists(PathBuf),
}

/// A CA and a server certificate, PEM.
#[derive(Debug, Clone)]
pub struct LabCa {
    /// The CA's certificate.
    pub ca_cert: String,
    /// The CA's private key.
    pub ca_key: String,
    /// The server's certificate (its SANs: the names given).
    pub server_cert: String,
    /// The server's private key.
    pub server_key: String,
    /// `sha256:` and the hex SHA-256 of the CA certificate (DER): what an
    /// agent's join token pins.
    pub fingerprint: String,
}

/// The fingerprint of a certificate (DER): `sha256:HEX`.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

fn ymd(t: jiff::Timestamp) -> (i32, u8, u8) {
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    (i32::from(d.year()), d.month() as u8, d.day() as u8)
}

fn validity(p: &mut CertificateParams, now: jiff::Timestamp, days: i64) {
    // From a day back: a client whose clock is behind still accepts it.
    let from = ymd(now - jiff::SignedDuration::from_hours(24));
    let to = ymd(now + jiff::SignedDuration::from_hours(24 * days));
    p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
}

/// A new CA (valid 10 years) and a certificate for `hosts` (DNS names or
/// IP addresses; valid 1 year) signed by it.
pub fn lab_ca(hosts: &[String], now: jiff::Timestamp) -> Result<LabCa, PkiFailure> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "Vaquero CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, now, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let fp = fingerprint(ca_cert.der());
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(hosts.to_vec())?;
    server.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("vaquero", String::as_str),
    );
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server, now, 365);
    let cert = server.signed_by(&key, &issuer)?;
    Ok(LabCa {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        fingerprint: fp,
    })
}

/// Files `vaquero certs init` writes under its `--out` directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's key (mode 0600).
pub const CA_KEY: &str = "ca.key";
/// The server's certificate.
pub const SERVER_CERT: &str = "server.pem";
/// The server's key (mode 0600).
pub const SERVER_KEY: &str = "server.key";

/// Makes a CA and a server certificate for `hosts` and writes them under
/// `out` (keys readable by the owner only); refuses when a CA is there.
pub fn init(out: &Path, hosts: &[String], now: jiff::Timestamp) -> Result<LabCa, PkiFailure> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiFailure::Io { path, source }
    };
    if out.join(CA_KEY).exists() {
        return Err(PkiFailure::Exists(out.join(CA_KEY)));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let ca = lab_ca(hosts, now)?;
    for (name, text, mode) in [
        (CA_KEY, &ca.ca_key, 0o600),
        (SERVER_KEY, &ca.server_key, 0o600),
        (CA_CERT, &ca.ca_cert, 0o644),
        (SERVER_CERT, &ca.server_cert, 0o644),
    ] {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = out.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&path))?;
    }
    Ok(ca)
}

/// The URI SAN that names an agent in its certificate:
/// `vaquero://agent/<site>/<agent>`.
pub fn agent_uri(site: &str, agent: &str) -> String {
    format!("vaquero://agent/{site}/{agent}")
}

/// How long an agent's certificate is valid; it renews past two thirds.
pub const AGENT_DAYS: i64 = 90;

/// Signs `csr` (PEM) as the certificate of `agent` of `site`, valid
/// [`AGENT_DAYS`]: its only SAN is [`agent_uri`], its only use client
/// authentication. Nothing the CSR asks for but its key is kept.
pub fn sign_agent(
    ca_cert: &str,
    ca_key: &str,
    csr: &str,
    site: &str,
    agent: &str,
    now: jiff::Timestamp,
) -> Result<String, PkiFailure> {
    let key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, key)?;
    let mut req = rcgen::CertificateSigningRequestParams::from_pem(csr)?;
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, format!("{agent}.{site}"));
    p.subject_alt_names = vec![rcgen::SanType::URI(agent_uri(site, agent).try_into()?)];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, now, AGENT_DAYS);
    req.params = p;
    Ok(req.signed_by(&issuer)?.pem())
}

/// A new key for an agent and a CSR for it: (key PEM, CSR PEM).
pub fn agent_csr() -> Result<(String, String), PkiFailure> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// What a client certificate (DER) says of its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentId {
    /// The site.
    pub site: String,
    /// The agent.
    pub agent: String,
    /// When the certificate expires.
    pub not_after: jiff::Timestamp,
    /// [`fingerprint`] of the certificate.
    pub fingerprint: String,
}

/// The agent a certificate names (its [`agent_uri`] SAN), when it names
/// one. The chain is verified by the TLS layer, not here.
pub fn agent_of(der: &[u8]) -> Option<AgentId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let not_after = jiff::Timestamp::from_second(cert.validity().not_after.timestamp()).ok()?;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => {
            let rest = u.strip_prefix("vaquero://agent/")?;
            let (site, agent) = rest.split_once('/')?;
            Some(AgentId {
                site: site.to_owned(),
                agent: agent.to_owned(),
                not_after,
                fingerprint: fingerprint(der),
            })
        }
        _ => None,
    })
}

/// The DER of the first certificate of a PEM text.
pub fn first_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_certificate_names_its_site_and_agent_only() {
        let now = jiff::Timestamp::now();
        let ca = lab_ca(&["localhost".into()], now).unwrap();
        let (_key, csr) = agent_csr().unwrap();
        let pem = sign_agent(&ca.ca_cert, &ca.ca_key, &csr, "dc1", "a1", now).unwrap();
        let der = first_der(&pem).unwrap();
        let id = agent_of(&der).unwrap();
        assert_eq!((id.site.as_str(), id.agent.as_str()), ("dc1", "a1"));
        assert!(id.not_after > now + jiff::SignedDuration::from_hours(24 * 80));
        // A server certificate names no agent.
        assert_eq!(agent_of(&first_der(&ca.server_cert).unwrap()), None);
        // A CSR that is not one is refused.
        assert!(sign_agent(&ca.ca_cert, &ca.ca_key, "junk", "dc1", "a1", now).is_err());
    }
}
