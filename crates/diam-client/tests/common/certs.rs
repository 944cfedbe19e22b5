//! Test certificates made with rcgen: a CA, and leaves signed by it whose
//! DNS subjectAltNames are Diameter identities (plus IP 127.0.0.1).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub(crate) ca_pem: String,
}

/// A leaf certificate and its key, PEM.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).expect("CA certificate");
        Pki { ca_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf naming `dns` (and 127.0.0.1), valid from 2020 to 2090.
    pub(crate) fn leaf(&self, dns: &[&str]) -> Leaf {
        self.leaf_valid(dns, false)
    }

    /// A leaf that expired in 2021.
    pub(crate) fn expired_leaf(&self, dns: &[&str]) -> Leaf {
        self.leaf_valid(dns, true)
    }

    fn leaf_valid(&self, dns: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, dns.first().copied().unwrap_or("leaf"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = if expired { rcgen::date_time_ymd(2021, 1, 1) } else { rcgen::date_time_ymd(2090, 1, 1) };
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("writing a certificate");
        std::fs::write(&key, &self.key_pem).expect("writing a key");
        (cert, key)
    }
}
