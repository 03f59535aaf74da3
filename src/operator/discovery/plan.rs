//! From what AWS listed to the Databases a discovery should own (pure): which endpoints its
//! tags match, their stable names, labels from AWS tags, and what to create, update or delete.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::aws::inventory::Endpoint;
use crate::crd::v1alpha1::{AwsSpec, DatabaseDiscovery, RdsRef};
use crate::crd::validate::MAX_OPERATOR_NAME;
use crate::crd::{Database, DatabaseSpec};

/// Names the discovery that owns a Database (with the owner reference).
pub const DISCOVERY_LABEL: &str = "portcullis.io/discovery";
/// The matcher that found it.
pub const MATCHER_LABEL: &str = "portcullis.io/matcher";
/// The endpoint's stable key (account/region/type/id/endpoint), which keeps its name stable.
pub const KEY_ANNOTATION: &str = "portcullis.io/aws-endpoint";
/// The labels the discovery writes itself.
pub mod labels {
    /// The AWS region.
    pub const REGION: &str = "portcullis.io/region";
    /// The 12-digit account.
    pub const ACCOUNT_ID: &str = "portcullis.io/account-id";
    /// The engine, e.g. `aurora-postgresql`.
    pub const ENGINE: &str = "portcullis.io/engine";
    /// The engine version.
    pub const ENGINE_VERSION: &str = "portcullis.io/engine-version";
    /// `instance`, `primary`, `reader`, `custom` or `proxy`.
    pub const ENDPOINT_TYPE: &str = "portcullis.io/endpoint-type";
}

/// Whether `tags` satisfy a matcher's `tags` (every key present with the value, `*` any value;
/// `"*": "*"` or no entries at all: everything).
pub fn tags_match(wanted: &BTreeMap<String, String>, tags: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| (k == "*" && v == "*") || tags.get(k).is_some_and(|have| v == "*" || have == v))
}

/// A label value: at most 63 characters of `[A-Za-z0-9-_.]`, starting and ending alphanumeric
/// (others become `-`); empty when nothing is left.
pub fn label_value(raw: &str) -> String {
    let mapped: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let cut: String = trimmed.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// A label key from a tag key: the name part sanitised like a value (an `aws:` or other
/// `prefix:` becomes part of the name, e.g. `aws-cloudformation-stack-name`); `None` when
/// nothing is left or it would be one of the discovery's own `portcullis.io/` keys.
pub fn label_key(tag: &str) -> Option<String> {
    let key = label_value(&tag.replace(['/', ':'], "-"));
    (!key.is_empty() && !key.starts_with("portcullis.io")).then_some(key)
}

/// The base name of an endpoint's Database: `<id>`, `<cluster>-reader`, `<cluster>-<custom>`.
fn base_name(e: &Endpoint) -> String {
    use crate::aws::inventory::EndpointType::*;
    let raw = match e.endpoint_type {
        Instance | Primary | Proxy => e.id.clone(),
        Reader => format!("{}-reader", e.id),
        Custom => format!("{}-{}", e.id, e.endpoint_id.as_deref().unwrap_or("custom")),
    };
    let mut name: String = raw.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    name = name.trim_matches('-').to_owned();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name = format!("db-{name}");
    }
    if name.len() > MAX_OPERATOR_NAME { with_suffix(&name, &e.key()) } else { name }
}

/// `name` cut to fit, with `-` and six hex digits of `key`'s hash.
fn with_suffix(name: &str, key: &str) -> String {
    let hash = hex::encode(&Sha256::digest(key.as_bytes())[..3]);
    let keep = MAX_OPERATOR_NAME - 7;
    format!("{}-{hash}", name[..name.len().min(keep)].trim_end_matches('-'))
}

/// One Database the discovery wants.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The matcher that found it.
    pub matcher: String,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The Database (name, labels, annotation, spec; no owner yet).
    pub database: Database,
}

/// What one sync does.
#[derive(Debug, Default)]
pub struct Changes {
    /// Databases to create.
    pub create: Vec<Wanted>,
    /// Databases to update (the live one differs).
    pub update: Vec<Wanted>,
    /// Owned Databases whose endpoint is gone (names).
    pub delete: Vec<String>,
    /// Owned Databases that stay as they are.
    pub unchanged: usize,
}

/// The endpoints each matcher found (already filtered by tags, skipped ones removed), and
/// whether the matcher's listing was complete in every region (an incomplete one deletes
/// nothing).
pub struct Found<'a> {
    /// The matcher's name.
    pub matcher: &'a str,
    /// The matcher's identity, copied to each Database.
    pub assume_role_arn: Option<&'a str>,
    /// The external ID of the role.
    pub external_id: Option<&'a str>,
    /// Servable endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Regions whose listing failed: their owned Databases are kept.
    pub failed_regions: BTreeSet<String>,
}

/// Decides creates, updates and deletes. `existing` is every Database of the namespace:
/// owned ones (by `owner_uid`) keep their names; other names are never reused.
pub fn changes(discovery: &DatabaseDiscovery, found: &[Found<'_>], existing: &[Database], owner_uid: &str) -> Changes {
    let owned = |db: &Database| db.owner_references().iter().any(|o| o.uid == owner_uid);
    let by_key: BTreeMap<String, &Database> =
        existing.iter().filter(|d| owned(d)).filter_map(|d| Some((d.annotations().get(KEY_ANNOTATION)?.clone(), d))).collect();
    let mut taken: BTreeSet<String> = existing.iter().filter(|d| !owned(d)).map(|d| d.name_any()).collect();
    let mut named: Vec<(String, &Found<'_>, &Endpoint)> = Vec::new();
    let mut fresh: Vec<(&Found<'_>, &Endpoint)> = Vec::new();
    let mut seen = BTreeSet::new();
    for f in found {
        for e in &f.endpoints {
            if !seen.insert(e.key()) {
                continue; // two matchers found the same endpoint: the first keeps it.
            }
            match by_key.get(&e.key()) {
                Some(live) => {
                    taken.insert(live.name_any());
                    named.push((live.name_any(), f, e));
                }
                None => fresh.push((f, e)),
            }
        }
    }
    fresh.sort_by_key(|(_, e)| e.key());
    for (f, e) in fresh {
        let base = base_name(e);
        let name = if taken.contains(&base) { with_suffix(&base, &e.key()) } else { base };
        taken.insert(name.clone());
        named.push((name, f, e));
    }
    let mut out = Changes::default();
    for (name, f, e) in named {
        let wanted = Wanted { matcher: f.matcher.to_owned(), endpoint: e.clone(), database: database(discovery, f, e, &name) };
        match existing.iter().find(|d| d.name_any() == name && owned(d)) {
            None => out.create.push(wanted),
            Some(live) if differs(&wanted.database, live) => out.update.push(wanted),
            Some(_) => out.unchanged += 1,
        }
    }
    let failed = |d: &Database| {
        let matcher = d.labels().get(MATCHER_LABEL).map(String::as_str);
        let region = d.labels().get(labels::REGION).map(String::as_str).unwrap_or_default();
        found.iter().any(|f| Some(f.matcher) == matcher && f.failed_regions.contains(region))
    };
    let kept: BTreeSet<String> = seen;
    for d in existing.iter().filter(|d| owned(d)) {
        let key = d.annotations().get(KEY_ANNOTATION).cloned().unwrap_or_default();
        if !kept.contains(&key) && !failed(d) && d.metadata.deletion_timestamp.is_none() {
            out.delete.push(d.name_any());
        }
    }
    out
}

/// The matcher names of a discovery (`matcher-<i>` for unnamed ones).
pub fn discovery_matchers(discovery: &DatabaseDiscovery) -> Vec<String> {
    discovery.spec.aws.iter().enumerate().map(|(i, m)| m.name.clone().unwrap_or_else(|| format!("matcher-{i}"))).collect()
}

/// Whether the live Database lacks something the wanted one sets (spec, labels, annotation).
fn differs(wanted: &Database, live: &Database) -> bool {
    wanted.spec != live.spec
        || wanted.labels().iter().any(|(k, v)| live.labels().get(k) != Some(v))
        || live.labels().keys().any(|k| ours(live, k) && !wanted.labels().contains_key(k))
        || wanted.annotations().get(KEY_ANNOTATION) != live.annotations().get(KEY_ANNOTATION)
}

/// Labels this discovery wrote (from tags, the template, its own) — recorded in an annotation
/// so a removed AWS tag removes its label while labels others added stay.
fn ours(db: &Database, key: &str) -> bool {
    db.annotations().get(LABELS_ANNOTATION).is_some_and(|list| list.split(',').any(|k| k == key))
}

/// The label keys the discovery wrote, comma-separated.
pub const LABELS_ANNOTATION: &str = "portcullis.io/discovered-labels";

/// The Database for an endpoint.
fn database(discovery: &DatabaseDiscovery, found: &Found<'_>, e: &Endpoint, name: &str) -> Database {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &e.tags {
        if let Some(key) = label_key(k) {
            labels.insert(key, label_value(v));
        }
    }
    labels.extend(discovery.spec.template.labels.iter().filter(|(k, _)| !k.starts_with("portcullis.io/")).map(|(k, v)| (k.clone(), v.clone())));
    labels.insert(DISCOVERY_LABEL.into(), label_value(&discovery.name_any()));
    labels.insert(MATCHER_LABEL.into(), found.matcher.to_owned());
    labels.insert(labels::REGION.into(), e.region.clone());
    if let Some(account) = &e.account_id {
        labels.insert(labels::ACCOUNT_ID.into(), account.clone());
    }
    labels.insert(labels::ENGINE.into(), label_value(&e.engine));
    if let Some(v) = e.engine_version.as_deref().map(label_value).filter(|v| !v.is_empty()) {
        labels.insert(labels::ENGINE_VERSION.into(), v);
    }
    labels.insert(labels::ENDPOINT_TYPE.into(), e.endpoint_type.as_str().into());
    let mut annotations = BTreeMap::new();
    annotations.insert(KEY_ANNOTATION.to_owned(), e.key());
    annotations.insert(LABELS_ANNOTATION.to_owned(), labels.keys().cloned().collect::<Vec<_>>().join(","));
    use crate::aws::inventory::EndpointType;
    let (instance_id, cluster_id) = match e.endpoint_type {
        EndpointType::Instance => (Some(e.id.clone()), None),
        EndpointType::Primary | EndpointType::Reader | EndpointType::Custom => (None, Some(e.id.clone())),
        EndpointType::Proxy => (None, None),
    };
    let rds = (instance_id.is_some() || cluster_id.is_some()).then(|| RdsRef { instance_id, cluster_id, resource_id: e.resource_id.clone() });
    let spec = DatabaseSpec {
        protocol: e.protocol().unwrap_or(crate::crd::Protocol::Postgres),
        endpoint: Some(crate::crd::endpoint::join_host_port(&e.host, e.port)),
        aws: AwsSpec {
            region: Some(e.region.clone()),
            account_id: e.account_id.clone(),
            assume_role_arn: found.assume_role_arn.map(str::to_owned),
            external_id: found.external_id.map(str::to_owned),
            rds,
            enable_iam_auth: false,
        },
        tls: discovery.spec.template.tls.clone().unwrap_or_default(),
        proxy: discovery.spec.template.proxy.clone().unwrap_or_default(),
    };
    let metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: discovery.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    Database { metadata, spec, status: None }
}
