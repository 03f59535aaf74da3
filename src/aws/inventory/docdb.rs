//! The aws-sdk-docdb side of discovery: DescribeDBClusters filtered to `engine=docdb`, and
//! ListTagsForResource for each cluster (DocumentDB's descriptions carry no tags).

use std::collections::BTreeMap;

use aws_sdk_docdb::Client;
use aws_sdk_docdb::config::Region;
use aws_sdk_docdb::types::{DbCluster, Filter};
use aws_types::SdkConfig;

use super::{Endpoint, EndpointType, ListError, Listing, Query, account_of_arn, failure};
use crate::aws::rds::documentdb_version_blocker;
use crate::crd::v1alpha1::DiscoveryType;

/// A DocumentDB client for `region` (`AWS_ENDPOINT_URL_DOCDB` is honoured).
pub fn client(sdk: &SdkConfig, region: &str) -> Client {
    Client::from_conf(aws_sdk_docdb::config::Builder::from(sdk).region(Region::new(region.to_owned())).build())
}

/// DocumentDB clusters: the cluster endpoint, and the reader endpoint when asked.
pub(super) async fn clusters(sdk: &SdkConfig, query: &Query<'_>, out: &mut Listing) -> Result<(), ListError> {
    let client = client(sdk, query.region);
    let only_docdb = Filter::builder().name("engine").values("docdb").build();
    let mut found: Vec<DbCluster> = Vec::new();
    let mut pages = client.describe_db_clusters().filters(only_docdb).max_records(100).into_paginator().send();
    while let Some(page) = pages.next().await {
        out.calls += 1;
        let page = page.map_err(|e| failure("rds:DescribeDBClusters", query.region, &e))?;
        found.extend(page.db_clusters().iter().filter(|c| c.engine() == Some("docdb")).cloned());
    }
    for c in found {
        let tags = match c.db_cluster_arn() {
            Some(arn) => {
                out.calls += 1;
                let listed =
                    client.list_tags_for_resource().resource_name(arn).send().await.map_err(|e| failure("rds:ListTagsForResource", query.region, &e))?;
                listed.tag_list().iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
            }
            None => BTreeMap::new(),
        };
        let base = Endpoint {
            type_: DiscoveryType::Docdb,
            endpoint_type: EndpointType::Primary,
            id: c.db_cluster_identifier().unwrap_or_default().to_owned(),
            endpoint_id: None,
            host: c.endpoint().unwrap_or_default().to_owned(),
            port: c.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(27017),
            engine: "docdb".into(),
            engine_version: c.engine_version().map(str::to_owned),
            region: query.region.to_owned(),
            account_id: account_of_arn(c.db_cluster_arn()),
            resource_id: c.db_cluster_resource_id().map(str::to_owned),
            tags,
            skip: match c.endpoint() {
                None => Some(format!("no endpoint yet (status {})", c.status().unwrap_or("unknown"))),
                Some(_) => documentdb_version_blocker(c.engine_version()),
            },
        };
        if query.reader_endpoints
            && let Some(reader) = c.reader_endpoint()
            && base.skip.is_none()
        {
            out.endpoints.push(Endpoint { endpoint_type: EndpointType::Reader, host: reader.to_owned(), ..base.clone() });
        }
        out.endpoints.push(base);
    }
    Ok(())
}
