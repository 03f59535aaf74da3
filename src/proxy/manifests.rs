//! Standalone mode's resources: the `Database` and `AccessRole` manifests a proxy without a
//! cluster loads from files and directories, validated at start-up with errors that name file,
//! document and field.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::crd::{AccessRole, Database, DatabaseDiscovery, GROUP, validate_database};
use crate::proxy::config::ConfigError;

/// The resources a standalone proxy serves.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// Every `Database`, with its namespace filled in (`default` when absent).
    pub databases: Vec<Database>,
    /// Every `AccessRole`, with its namespace filled in.
    pub roles: Vec<AccessRole>,
    /// Every `DatabaseDiscovery` (the operator's; the standalone proxy does not discover, but
    /// `portcullis iam policy` reads their matchers' roles).
    pub discoveries: Vec<DatabaseDiscovery>,
    /// Documents of other kinds that were skipped (`file: kind name`).
    pub skipped: Vec<String>,
}

const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Loads every `*.yaml`/`*.yml` file under `paths` (files, or directories read in name order).
pub fn load_manifests(paths: &[PathBuf]) -> Result<Manifests, ConfigError> {
    let mut out = Manifests::default();
    for path in paths {
        for file in yaml_files(path)? {
            load_file(&file, &mut out)?;
        }
    }
    check_unique(&out)?;
    Ok(out)
}

fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_err = |source| ConfigError::Read { path: path.display().to_string(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn load_file(file: &Path, out: &mut Manifests) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read { path: file.display().to_string(), source })?;
    let invalid =
        |document: String, field: &str, message: String| ConfigError::Invalid { path: file.display().to_string(), document, field: field.to_owned(), message };
    for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let number = index + 1;
        let value: Value = serde::Deserialize::deserialize(de).map_err(|e| invalid(format!("document {number}"), "(yaml)", e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
        let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_owned();
        let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_owned();
        let document = format!("document {number} ({kind} {name:?})");
        if !api_version.starts_with(&format!("{GROUP}/")) {
            out.skipped.push(format!("{}: {kind} {name}", file.display()));
            continue;
        }
        if api_version != format!("{GROUP}/v1alpha1") {
            return Err(invalid(document, "apiVersion", format!("{api_version:?} is not served; use {GROUP}/v1alpha1")));
        }
        if let Some(map) = value.as_mapping() {
            for key in map.keys() {
                let key = key.as_str().unwrap_or("?");
                if !TOP_LEVEL_FIELDS.contains(&key) {
                    return Err(invalid(document, key, format!("unknown field `{key}`, expected one of {TOP_LEVEL_FIELDS:?}")));
                }
            }
        }
        if name.is_empty() {
            return Err(invalid(document, "metadata.name", "missing field `name`".into()));
        }
        let convert = |e: serde_path_to_error::Error<serde_yaml::Error>| invalid(document.clone(), &e.path().to_string(), e.into_inner().to_string());
        match kind.as_str() {
            "Database" => {
                let mut db: Database = serde_path_to_error::deserialize(value.clone()).map_err(convert)?;
                db.metadata.namespace.get_or_insert_with(|| "default".into());
                validate_database(&db).map_err(|e| invalid(document.clone(), e.field, e.message))?;
                out.databases.push(db);
            }
            "AccessRole" => {
                let mut role: AccessRole = serde_path_to_error::deserialize(value.clone()).map_err(convert)?;
                role.metadata.namespace.get_or_insert_with(|| "default".into());
                if let Err(e) = role.spec.max_session_ttl() {
                    return Err(invalid(document, "spec.maxSessionTtl", e.to_string()));
                }
                out.roles.push(role);
            }
            "DatabaseDiscovery" => {
                let mut discovery: DatabaseDiscovery = serde_path_to_error::deserialize(value.clone()).map_err(convert)?;
                discovery.metadata.namespace.get_or_insert_with(|| "default".into());
                out.discoveries.push(discovery);
            }
            other => return Err(invalid(document, "kind", format!("unknown kind {other:?}; expected Database, AccessRole or DatabaseDiscovery"))),
        }
    }
    Ok(())
}

fn check_unique(m: &Manifests) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for db in &m.databases {
        let key = format!("{}/{}", db.metadata.namespace.as_deref().unwrap_or("default"), db.metadata.name.as_deref().unwrap_or(""));
        if !seen.insert(key.clone()) {
            return Err(ConfigError::Inconsistent { path: "resources".into(), message: format!("Database {key} is defined twice") });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
