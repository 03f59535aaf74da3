//! The aws-sdk-rds side of discovery: DescribeDBInstances, DescribeDBClusters, DescribeDBProxies
//! (and ListTagsForResource for each proxy, whose description carries no tags).

use std::collections::BTreeMap;

use aws_sdk_rds::types::{DbCluster, DbInstance, DbProxy, IamAuthMode, Tag};
use aws_types::SdkConfig;

use super::{Endpoint, EndpointType, ListError, Listing, Query, account_of_arn, engine_blocker, failure};
use crate::aws::rds::client;
use crate::crd::v1alpha1::DiscoveryType;

fn tags(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

/// DB instances outside clusters (type `rds`) and clusters (Aurora as `aurora`, Multi-AZ DB
/// clusters as `rds`), every page.
pub(super) async fn instances_and_clusters(sdk: &SdkConfig, query: &Query<'_>, out: &mut Listing) -> Result<(), ListError> {
    let client = client(sdk, query.region);
    let wants = |t| query.types.contains(&t);
    if wants(DiscoveryType::Rds) {
        let mut pages = client.describe_db_instances().max_records(100).into_paginator().send();
        while let Some(page) = pages.next().await {
            out.calls += 1;
            let page = page.map_err(|e| failure("rds:DescribeDBInstances", query.region, &e))?;
            out.endpoints.extend(page.db_instances().iter().filter_map(|i| instance(i, query.region)));
        }
    }
    let mut pages = client.describe_db_clusters().max_records(100).into_paginator().send();
    while let Some(page) = pages.next().await {
        out.calls += 1;
        let page = page.map_err(|e| failure("rds:DescribeDBClusters", query.region, &e))?;
        for c in page.db_clusters() {
            let engine = c.engine().unwrap_or_default();
            let type_ = if engine.starts_with("aurora") {
                DiscoveryType::Aurora
            } else if engine == "docdb" || engine == "neptune" {
                continue; // DocumentDB is listed with aws-sdk-docdb; Neptune is not served.
            } else {
                DiscoveryType::Rds
            };
            if wants(type_) {
                out.endpoints.extend(cluster(c, type_, query));
            }
        }
    }
    Ok(())
}

/// A stand-alone DB instance (members of clusters are reached through the cluster's endpoints).
fn instance(i: &DbInstance, region: &str) -> Option<Endpoint> {
    if i.db_cluster_identifier().is_some() {
        return None;
    }
    let engine = i.engine().unwrap_or_default().to_owned();
    let address = i.endpoint().and_then(|e| e.address());
    let skip = match address {
        None => Some(format!("no endpoint yet (status {})", i.db_instance_status().unwrap_or("unknown"))),
        Some(_) => engine_blocker(&engine, i.engine_version(), None),
    };
    Some(Endpoint {
        type_: DiscoveryType::Rds,
        endpoint_type: EndpointType::Instance,
        id: i.db_instance_identifier().unwrap_or_default().to_owned(),
        endpoint_id: None,
        host: address.unwrap_or_default().to_owned(),
        port: i.endpoint().and_then(|e| e.port()).and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        engine,
        engine_version: i.engine_version().map(str::to_owned),
        region: region.to_owned(),
        account_id: account_of_arn(i.db_instance_arn()),
        resource_id: i.dbi_resource_id().map(str::to_owned),
        tags: tags(i.tag_list()),
        skip,
    })
}

/// A cluster's writer endpoint, and its reader and custom endpoints when asked.
fn cluster(c: &DbCluster, type_: DiscoveryType, query: &Query<'_>) -> Vec<Endpoint> {
    let engine = c.engine().unwrap_or_default().to_owned();
    let id = c.db_cluster_identifier().unwrap_or_default().to_owned();
    let base = Endpoint {
        type_,
        endpoint_type: EndpointType::Primary,
        id: id.clone(),
        endpoint_id: None,
        host: String::new(),
        port: c.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        engine: engine.clone(),
        engine_version: c.engine_version().map(str::to_owned),
        region: query.region.to_owned(),
        account_id: account_of_arn(c.db_cluster_arn()),
        resource_id: c.db_cluster_resource_id().map(str::to_owned),
        tags: tags(c.tag_list()),
        skip: engine_blocker(&engine, c.engine_version(), c.engine_mode()),
    };
    let mut out = Vec::new();
    let Some(writer) = c.endpoint() else {
        let skip = Some(format!("no endpoint yet (status {})", c.status().unwrap_or("unknown")));
        return vec![Endpoint { skip, ..base }];
    };
    out.push(Endpoint { host: writer.to_owned(), ..base.clone() });
    if query.reader_endpoints
        && let Some(reader) = c.reader_endpoint()
    {
        out.push(Endpoint { endpoint_type: EndpointType::Reader, host: reader.to_owned(), ..base.clone() });
    }
    if query.custom_endpoints {
        for host in c.custom_endpoints() {
            let name = host.split('.').next().unwrap_or_default().to_owned();
            out.push(Endpoint { endpoint_type: EndpointType::Custom, endpoint_id: Some(name), host: host.clone(), ..base.clone() });
        }
    }
    out
}

/// RDS Proxies (their default endpoints), each with its tags.
pub(super) async fn proxies(sdk: &SdkConfig, region: &str, out: &mut Listing) -> Result<(), ListError> {
    let client = client(sdk, region);
    let mut found = Vec::new();
    let mut pages = client.describe_db_proxies().max_records(100).into_paginator().send();
    while let Some(page) = pages.next().await {
        out.calls += 1;
        let page = page.map_err(|e| failure("rds:DescribeDBProxies", region, &e))?;
        found.extend(page.db_proxies().iter().cloned());
    }
    for p in found {
        let tags = match p.db_proxy_arn() {
            Some(arn) => {
                out.calls += 1;
                let listed = client.list_tags_for_resource().resource_name(arn).send().await.map_err(|e| failure("rds:ListTagsForResource", region, &e))?;
                tags(listed.tag_list())
            }
            None => BTreeMap::new(),
        };
        out.endpoints.push(proxy(&p, region, tags));
    }
    Ok(())
}

fn proxy(p: &DbProxy, region: &str, tags: BTreeMap<String, String>) -> Endpoint {
    let family = p.engine_family().unwrap_or_default();
    let engine = match family {
        "POSTGRESQL" => "postgres",
        "MYSQL" => "mysql",
        other => other,
    }
    .to_owned();
    let iam =
        p.default_auth_scheme() == Some("IAM_AUTH") || p.auth().iter().any(|a| matches!(a.iam_auth(), Some(IamAuthMode::Required | IamAuthMode::Enabled)));
    let skip = if !iam {
        Some("the proxy does not accept IAM authentication: set IAMAuth to REQUIRED in its authentication settings".to_owned())
    } else if p.endpoint().is_none() {
        Some("no endpoint yet".to_owned())
    } else {
        engine_blocker(&engine, None, None)
    };
    let port = if engine == "postgres" { 5432 } else { 3306 };
    Endpoint {
        type_: DiscoveryType::RdsProxy,
        endpoint_type: EndpointType::Proxy,
        id: p.db_proxy_name().unwrap_or_default().to_owned(),
        endpoint_id: None,
        host: p.endpoint().unwrap_or_default().to_owned(),
        port,
        engine,
        engine_version: None,
        region: region.to_owned(),
        account_id: account_of_arn(p.db_proxy_arn()),
        resource_id: None,
        tags,
        skip,
    }
}
