//! A test certificate authority made at test time, and a cluster that
//! takes TCP connections over TLS only.

use super::{Cluster, Setup};

/// A test CA, and a server certificate for `localhost` signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "transaction-manager test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    Pki { ca_pem: ca_cert.pem(), server_cert_pem: server_cert.pem(), server_key_pem: server_key.serialize_pem() }
}

/// A cluster with TLS on, its certificate from `pki`, that takes TCP
/// connections on 127.0.0.1 over TLS only (`hostssl`) or, with
/// `tls_only` false, over TLS or plain (`host`: the bench compares them).
pub fn tls_cluster(name: &str, pki: &Pki, tls_only: bool) -> Option<Cluster> {
    let hba = if tls_only { "hostssl" } else { "host" };
    Cluster::start_with(
        name,
        Setup {
            tcp: true,
            conf: vec!["ssl = on".into(), "ssl_cert_file = 'server.crt'".into(), "ssl_key_file = 'server.key'".into()],
            hba: Some(format!("local all all trust\n{hba} all all 127.0.0.1/32 trust\n")),
            files: vec![
                ("server.crt", pki.server_cert_pem.clone().into_bytes()),
                ("server.key", pki.server_key_pem.clone().into_bytes()),
            ],
            ..Setup::default()
        },
    )
}

impl Pki {
    /// The connection string of `cluster`'s `postgres` database over TCP,
    /// `verify-full` against this CA (written next to the cluster's data).
    pub fn verify_full_url(&self, cluster: &Cluster) -> String {
        let ca_file = cluster.dir().join("ca.pem");
        std::fs::write(&ca_file, &self.ca_pem).unwrap();
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            cluster.port(),
            ca_file.display()
        )
    }
}
