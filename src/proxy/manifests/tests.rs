//! Start-up validation of the standalone manifests (and the configuration that names them).

use std::path::PathBuf;

use super::*;
use crate::proxy::config::ProxyConfig;

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

const DB: &str = "
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: orders}
spec:
  protocol: postgres
  endpoint: orders.abc.us-east-1.rds.amazonaws.com:5432
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: devs, namespace: default}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders], dbUsers: [app], dbNames: ['*']}
";

#[test]
fn a_valid_config_loads_with_paths_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "proxy.yaml", CONFIG);
    let config = ProxyConfig::load(&path).unwrap();
    assert_eq!(config.tls.cert_file, dir.path().join("server.crt"));
    assert_eq!(config.resources, vec![dir.path().join("db.yaml")]);
    assert!(config.audit.stdout);
    write(&dir, "db.yaml", DB);
    let m = load_manifests(&config.resources).unwrap();
    assert_eq!((m.databases.len(), m.roles.len()), (1, 1));
    assert_eq!(m.databases[0].metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn missing_file_is_named() {
    let err = ProxyConfig::load(std::path::Path::new("/nonexistent/proxy.yaml")).unwrap_err().to_string();
    assert_eq!(err, "cannot read /nonexistent/proxy.yaml");
    let err = load_manifests(&[PathBuf::from("/nonexistent/db.yaml")]).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/db.yaml"), "{err}");
}

#[test]
fn database_without_endpoint_names_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "db.yaml", &DB.replace("  endpoint: orders.abc.us-east-1.rds.amazonaws.com:5432\n", ""));
    let err = load_manifests(&[p]).unwrap_err().to_string();
    assert!(err.contains("db.yaml: document 1 (Database \"orders\"): spec.endpoint: required for protocol postgres"), "{err}");
}

#[test]
fn unknown_field_in_a_manifest_names_document_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "db.yaml", &DB.replace("allow: {databases", "allow: {databse: x, databases"));
    let err = load_manifests(&[p]).unwrap_err().to_string();
    assert!(err.contains("document 2 (AccessRole \"devs\")"), "{err}");
    assert!(err.contains("spec.allow"), "{err}");
    assert!(err.contains("unknown field `databse`"), "{err}");
    let p = write(&dir, "db2.yaml", &DB.replace("kind: Database\n", "kind: Database\nspce: {}\n"));
    let err = load_manifests(&[p]).unwrap_err().to_string();
    assert!(err.contains("spce"), "{err}");
}

#[test]
fn bad_enum_value_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "db.yaml", &DB.replace("protocol: postgres", "protocol: oracle"));
    let err = load_manifests(&[p]).unwrap_err().to_string();
    assert!(err.contains("spec.protocol"), "{err}");
    assert!(err.contains("oracle"), "{err}");
}

#[test]
fn other_kinds_are_skipped_and_directories_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "a.yaml", DB);
    write(&dir, "b.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n");
    write(&dir, "notes.txt", "ignored");
    let m = load_manifests(&[dir.path().to_owned()]).unwrap();
    assert_eq!(m.databases.len(), 1);
    assert_eq!(m.skipped.len(), 1);
}

#[test]
fn region_is_required_when_the_endpoint_names_none() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "db.yaml", &DB.replace("orders.abc.us-east-1.rds.amazonaws.com:5432", "127.0.0.1:5432"));
    let err = load_manifests(&[p]).unwrap_err().to_string();
    assert!(err.contains("spec.aws.region"), "{err}");
}
