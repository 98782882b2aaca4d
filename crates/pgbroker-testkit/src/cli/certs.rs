//! Test certificates: a CA and a server certificate for 127.0.0.1 signed
//! by it.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Writes a CA and a server certificate for 127.0.0.1 signed by it; returns
/// the paths of the CA certificate, the server chain and the server key.
pub fn make_certs(dir: &Path) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgbroker test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
    let write = |name: &str, body: String| {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write PEM");
        path.to_string_lossy().into_owned()
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
    )
}
