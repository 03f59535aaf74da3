//! Loading the proxy's configuration strictly, and writing it back unchanged.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const CONFIG: &str = "
listeners: [{address: '127.0.0.1:6432', database: orders}]
tls: {certFile: server.crt, keyFile: server.key, clientCaFile: ca.crt}
resources: [db.yaml]
";

#[test]
fn unknown_field_in_the_config_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "proxy.yaml", &CONFIG.replace("clientCaFile", "clientCA"));
    let err = ProxyConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("proxy.yaml"), "{err}");
    assert!(err.contains("tls"), "{err}");
    assert!(err.contains("unknown field `clientCA`"), "{err}");
}

#[test]
fn wrong_type_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "proxy.yaml", &CONFIG.replace("'127.0.0.1:6432'", "[1, 2]"));
    let err = ProxyConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("listeners[0].address"), "{err}");
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "proxy.yaml", &format!("{CONFIG}limits: {{connectTimeout: soon}}\n"));
    let err = ProxyConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("limits.connectTimeout") && err.contains("is not a duration like 10s or 2m"), "{err}");
}

#[test]
fn omitted_sections_get_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig::load(&write(&dir, "proxy.yaml", CONFIG)).unwrap();
    assert_eq!(config.audit, AuditConfig { stdout: true, file: None, queue_size: 8192, ..AuditConfig::default() });
    assert_eq!(
        config.limits,
        LimitsConfig {
            upstream_connects_per_second: 200,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30)
        }
    );
    assert_eq!((config.admin, config.secrets_dir, config.aws), (None, None, AwsConfig::default()));
}

#[test]
fn every_field_survives_a_round_trip_through_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        listeners: vec![
            ListenerConfig { address: "127.0.0.1:6432".parse().unwrap(), database: Some("shop/orders".into()), protocol: None },
            ListenerConfig { address: "[::1]:3306".parse().unwrap(), database: None, protocol: Some(crate::crd::Protocol::Mysql) },
        ],
        tls: ServerTlsConfig { cert_file: dir.path().join("s.crt"), key_file: dir.path().join("s.key"), client_ca_file: dir.path().join("ca.crt") },
        admin: Some(AdminConfig { address: "0.0.0.0:9090".parse().unwrap() }),
        audit: AuditConfig { stdout: false, file: Some(dir.path().join("audit.jsonl")), queue_size: 16, ..AuditConfig::default() },
        aws: AwsConfig { allowed_endpoints: vec!["db.internal".into()] },
        resources: vec![dir.path().join("dbs")],
        secrets_dir: Some(dir.path().join("secrets")),
        limits: LimitsConfig {
            upstream_connects_per_second: 7,
            handshake_timeout: Duration::from_millis(1500),
            connect_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
        },
    };
    let text = config.to_yaml().unwrap();
    assert!(text.contains("handshakeTimeout: 1s 500ms") && text.contains("connectTimeout: 2m"), "{text}");
    let loaded = ProxyConfig::load(&write(&dir, "proxy.yaml", &text)).unwrap();
    assert_eq!(loaded, config);
}

#[test]
fn defaults_are_left_out_and_keys_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig::load(&write(&dir, "proxy.yaml", CONFIG)).unwrap();
    let text = config.to_yaml().unwrap();
    let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with([' ', '-'])).map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(keys, ["audit", "listeners", "resources", "tls"], "{text}");
    assert!(text.contains("audit:\n  stdout: true\n"), "{text}");
}
