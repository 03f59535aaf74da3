//! Server-side apply that skips the request when the live object already holds every field
//! the operator wants, so a restart with nothing changed writes nothing; and the one way the
//! operator writes a status (Database and AccessRole alike).

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::context::{DATABASE_LABEL, FIELD_MANAGER};
use super::metrics::OperatorMetrics;

/// Whether every field set in `desired` has the same value in `live` (objects: each key of
/// `desired` recursively; arrays: same length, element by element; `null` means "not set").
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) || v.as_array().is_some_and(|a| a.is_empty()),
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b)),
        (a, b) => a == b,
    }
}

/// Applies `desired` with the operator's field manager unless the cached `live` copy already
/// matches. Returns whether a write happened.
pub async fn apply_if_changed<K>(api: &Api<K>, desired: &K, live: Option<&K>, metrics: &OperatorMetrics) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let want = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
    if let Some(live) = live {
        let have = serde_json::to_value(live).map_err(kube::Error::SerdeError)?;
        if is_subset(&want, &have) {
            return Ok(false);
        }
    }
    let name = desired.name_any();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&want)).await?;
    metrics.write(&K::kind(&()), "apply");
    Ok(true)
}

/// What a status write sends: the object's type and the status fields the operator owns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a, S> {
    api_version: &'a str,
    kind: &'a str,
    status: &'a S,
}

/// Applies `status` as the operator's part of the status of the `K` named `namespace/name`
/// (server-side apply under the operator's field manager: fields it leaves out, it gives up;
/// fields other managers own, such as the proxy's conditions, stay).
pub async fn apply_status<K, S>(client: &kube::Client, namespace: &str, name: &str, status: &S, metrics: &OperatorMetrics) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
    S: Serialize + Debug,
{
    let (api_version, kind) = (K::api_version(&()), K::kind(&()));
    let patch = StatusPatch { api_version: &api_version, kind: &kind, status };
    Api::<K>::namespaced(client.clone(), namespace).patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    metrics.write(&format!("{kind}/status"), "apply");
    Ok(())
}

/// The cached object `namespace/name`.
pub fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Deletes objects of one kind that belong to the Database `namespace/database` (by label and
/// owner uid) but are no longer wanted.
pub async fn prune<K>(
    api: &Api<K>,
    store: &Store<K>,
    namespace: &str,
    database: &str,
    owner_uid: &str,
    keep: &[String],
    metrics: &OperatorMetrics,
) -> Result<usize, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut removed = 0;
    for obj in store.state() {
        let ours = obj.namespace().as_deref() == Some(namespace)
            && obj.labels().get(DATABASE_LABEL).map(String::as_str) == Some(database)
            && obj.owner_references().iter().any(|o| o.uid == owner_uid);
        if ours && !keep.contains(&obj.name_any()) && obj.meta().deletion_timestamp.is_none() {
            match api.delete(&obj.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(e) => return Err(e),
            }
            metrics.write(&K::kind(&()), "delete");
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_fields_the_server_added() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 5432}]}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}}, "spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_sees_changed_values_and_list_lengths() {
        let live = json!({"spec": {"replicas": 1, "args": ["a", "b"]}});
        assert!(!is_subset(&json!({"spec": {"replicas": 2}}), &live));
        assert!(!is_subset(&json!({"spec": {"args": ["a"]}}), &live));
        assert!(!is_subset(&json!({"spec": {"missing": "x"}}), &live));
        assert!(is_subset(&json!({"spec": {"missing": null, "empty": {}}}), &live));
    }
}
