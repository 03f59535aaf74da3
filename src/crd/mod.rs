//! Custom resource types (`portcullis.io`), one module per API version, and CRD generation.

pub mod conditions;
pub mod v1alpha1;

use kube::CustomResourceExt;

pub use v1alpha1::{AccessRole, AccessRoleSpec, Database, DatabaseSpec, Protocol};

/// The API group of every Portcullis resource.
pub const GROUP: &str = "portcullis.io";

/// The file name under `crds/` for each CRD, with its YAML.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    [Database::crd(), AccessRole::crd()]
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            Ok((name, serde_yaml::to_string(&crd)?))
        })
        .collect()
}
