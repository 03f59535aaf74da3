//! The configuration the operator writes into each proxy's ConfigMap (`proxy.yaml`): the
//! proxy's own typed [`ProxyConfig`], so what the operator writes is what the proxy loads.
//! Cluster mode adds `--database NS/NAME` on the command line; see docs/standalone.md.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use kube::ResourceExt;

use super::children::{ADMIN_PORT, TLS_DIR, UPSTREAM_CA_DIR, container_port};
use crate::crd::Database;
use crate::operator::context::Settings;
use crate::proxy::config::{AdminConfig, AuditConfig, AwsConfig, LimitsConfig, ListenerConfig, ProxyConfig, ServerTlsConfig};

/// The proxy's configuration for `db`: one listener on all addresses, the mounted TLS files,
/// the admin port, audit to stdout, the operator's allowed endpoints, and the mounted upstream
/// CA Secrets when the Database names one.
pub fn proxy_config(db: &Database, settings: &Settings) -> ProxyConfig {
    let any = |port: u16| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    ProxyConfig {
        listeners: vec![ListenerConfig { address: any(container_port(db.spec.protocol)), database: None, protocol: None }],
        tls: ServerTlsConfig {
            cert_file: PathBuf::from(format!("{TLS_DIR}/tls.crt")),
            key_file: PathBuf::from(format!("{TLS_DIR}/tls.key")),
            client_ca_file: PathBuf::from(format!("{TLS_DIR}/ca.crt")),
        },
        admin: Some(AdminConfig { address: any(ADMIN_PORT) }),
        audit: AuditConfig { stdout: true, ..AuditConfig::default() },
        aws: AwsConfig { allowed_endpoints: settings.allowed_endpoints.clone() },
        resources: vec![],
        secrets_dir: db.spec.tls.ca_secret_ref.as_ref().map(|_| PathBuf::from(UPSTREAM_CA_DIR)),
        limits: LimitsConfig::default(),
    }
}

/// The ConfigMap's `proxy.yaml`: a line saying who wrote it, then the configuration.
pub fn config_text(db: &Database, config: &ProxyConfig) -> Result<String, serde_yaml::Error> {
    Ok(format!("# Written by the Portcullis operator for Database {}; edits are overwritten.\n{}", db.name_any(), config.to_yaml()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::database::children::tests::{ORDERS, db, settings};

    /// What operators before the typed configuration wrote; the same text keeps the pods'
    /// config hash, so an upgrade of the operator alone restarts no proxy.
    const ORDERS_WITH_CA: &str = "# Written by the Portcullis operator for Database orders; edits are overwritten.
admin:
  address: 0.0.0.0:9090
audit:
  stdout: true
listeners:
- address: 0.0.0.0:5432
resources: []
secretsDir: /etc/portcullis/upstream-ca
tls:
  certFile: /etc/portcullis/tls/tls.crt
  clientCaFile: /etc/portcullis/tls/ca.crt
  keyFile: /etc/portcullis/tls/tls.key
";

    const DYNAMODB_WITH_ENDPOINTS: &str = "# Written by the Portcullis operator for Database orders; edits are overwritten.
admin:
  address: 0.0.0.0:9090
audit:
  stdout: true
aws:
  allowedEndpoints:
  - localhost
  - db.internal
listeners:
- address: 0.0.0.0:8443
resources: []
tls:
  certFile: /etc/portcullis/tls/tls.crt
  clientCaFile: /etc/portcullis/tls/ca.crt
  keyFile: /etc/portcullis/tls/tls.key
";

    #[test]
    fn the_written_text_is_what_earlier_operators_wrote() {
        let mut d = db(&ORDERS.replace("proxy: {", "tls: {caSecretRef: {name: rds-ca}}, proxy: {"));
        assert_eq!(config_text(&d, &proxy_config(&d, &settings())).unwrap(), ORDERS_WITH_CA);
        let mut s = settings();
        s.allowed_endpoints = vec!["localhost".into(), "db.internal".into()];
        d.spec.tls.ca_secret_ref = None;
        d.spec.protocol = crate::crd::Protocol::Dynamodb;
        assert_eq!(config_text(&d, &proxy_config(&d, &s)).unwrap(), DYNAMODB_WITH_ENDPOINTS);
    }

    #[test]
    fn the_generated_config_is_accepted_by_the_proxy() {
        let d = db(ORDERS);
        let mut s = settings();
        s.allowed_endpoints = vec!["localhost".into()];
        let text = config_text(&d, &proxy_config(&d, &s)).unwrap();
        let parsed: ProxyConfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed.listeners[0].address.port(), 5432);
        assert_eq!(parsed.aws.allowed_endpoints, vec!["localhost".to_string()]);
    }

    #[test]
    fn what_the_operator_writes_the_proxy_loads_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings();
        s.allowed_endpoints = vec!["localhost".into(), "127.0.0.1".into()];
        for yaml in [ORDERS.to_owned(), ORDERS.replace("proxy: {", "tls: {caSecretRef: {name: rds-ca, key: bundle.pem}}, proxy: {")] {
            for settings in [settings(), s.clone()] {
                let d = db(&yaml);
                let written = proxy_config(&d, &settings);
                let path = dir.path().join("proxy.yaml");
                std::fs::write(&path, config_text(&d, &written).unwrap()).unwrap();
                let loaded = ProxyConfig::load(&path).unwrap();
                assert_eq!(loaded, written, "as loaded by `portcullis proxy --config`");
            }
        }
    }
}
