//! The DocumentDB side of the check, through aws-sdk-docdb: locating the cluster behind a
//! `mongodb` Database's endpoint (DescribeDBClusters, DescribeDBInstances), then its engine
//! version and its `tls` parameter (DescribeDBClusterParameters).

use aws_sdk_docdb::Client;
use aws_sdk_docdb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_docdb::types::{DbCluster, DbInstance, Filter};

use super::found::{DbKind, Found, documentdb_blocker, documentdb_verdict, serves};
use super::{AwsCheck, CheckStatus, Ids};
use crate::aws::{describe_sdk_error, is_throttling};

/// The read permissions the DocumentDB check needs (DocumentDB's API uses `rds:` actions).
const DESCRIBE_PERMISSIONS: &str = "rds:DescribeDBClusters, rds:DescribeDBInstances and rds:DescribeDBClusterParameters";

/// A DocumentDB API client for one database's region and host.
pub(super) struct DocDb<'a> {
    pub(super) client: Client,
    pub(super) rds: &'a super::api::Rds,
}

fn from_cluster(c: &DbCluster) -> Found {
    Found {
        kind: Some(DbKind::Cluster),
        id: c.db_cluster_identifier().unwrap_or_default().to_owned(),
        engine: c.engine().unwrap_or_default().to_owned(),
        version: c.engine_version().map(str::to_owned),
        resource_id: c.db_cluster_resource_id().map(str::to_owned),
        iam_enabled: false,
        iam_pending: false,
        endpoints: c.endpoint().into_iter().chain(c.reader_endpoint()).map(str::to_owned).collect(),
        cluster_id: None,
        parameter_group: c.db_cluster_parameter_group().map(str::to_owned),
    }
}

fn instance_host(i: &DbInstance) -> Option<&str> {
    i.endpoint().and_then(|e| e.address())
}

impl DocDb<'_> {
    fn failure<E, R>(&self, action: &str, e: &SdkError<E, R>) -> AwsCheck
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let check = AwsCheck::failed(format!(
            "DocumentDB {action} in {} failed: {}. {}",
            self.rds.region,
            describe_sdk_error(e),
            self.rds.whose_policy(DESCRIBE_PERMISSIONS)
        ));
        AwsCheck { throttled: is_throttling(e), ..check }
    }

    fn not_found(&self, what: &str) -> AwsCheck {
        AwsCheck::new(
            CheckStatus::False,
            "NotFound",
            format!(
                "{what} in {}. Check spec.endpoint, spec.aws.region and spec.aws.rds.clusterId; {} needs {DESCRIBE_PERMISSIONS} to see it",
                self.rds.region,
                self.rds.identity_name()
            ),
        )
    }

    async fn cluster(&self, id: &str) -> Result<Found, AwsCheck> {
        match self.client.describe_db_clusters().db_cluster_identifier(id).send().await {
            Ok(out) => out.db_clusters().first().map(from_cluster).ok_or_else(|| self.not_found(&format!("DocumentDB cluster {id:?} was not found"))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => {
                Err(self.not_found(&format!("DocumentDB cluster {id:?} was not found")))
            }
            Err(e) => Err(self.failure("DescribeDBClusters", &e)),
        }
    }

    /// The cluster named in spec.aws.rds.clusterId, or the one whose cluster, reader or
    /// instance endpoint is the host.
    async fn locate(&self, ids: &Ids<'_>) -> Result<Found, AwsCheck> {
        if let Some(id) = ids.cluster {
            let db = self.cluster(id).await?;
            if db.serves(&self.rds.host) || !self.rds.aws_host {
                return Ok(db);
            }
            let msg = format!(
                "spec.endpoint's host {} is not an endpoint of {} (endpoints: {}). Fix spec.endpoint or spec.aws.rds.clusterId",
                self.rds.host,
                db.name(),
                db.endpoints.join(", ")
            );
            return Err(AwsCheck::new(CheckStatus::False, "EndpointMismatch", msg).with_db(&db));
        }
        let only_docdb = Filter::builder().name("engine").values("docdb").build();
        let mut pages = self.client.describe_db_clusters().filters(only_docdb).into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let c = item.map_err(|e| self.failure("DescribeDBClusters", &e))?;
            if serves(&self.rds.host, c.endpoint().into_iter().chain(c.reader_endpoint())) {
                return Ok(from_cluster(&c));
            }
        }
        let mut pages = self.client.describe_db_instances().into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let i = item.map_err(|e| self.failure("DescribeDBInstances", &e))?;
            if serves(&self.rds.host, instance_host(&i)) {
                return match i.db_cluster_identifier() {
                    Some(cluster) => self.cluster(cluster).await,
                    None => Err(self.not_found(&format!("instance {} belongs to no DocumentDB cluster", i.db_instance_identifier().unwrap_or("?")))),
                };
            }
        }
        Err(self.not_found(&format!("no DocumentDB cluster or instance has the endpoint {}", self.rds.host)))
    }

    /// The `tls` parameter of a cluster parameter group; `None` when the group does not list it
    /// or cannot be found (DocumentDB's default is enabled).
    async fn tls_parameter(&self, group: &str) -> Result<Option<String>, AwsCheck> {
        let mut params = self.client.describe_db_cluster_parameters().db_cluster_parameter_group_name(group).into_paginator().items().send();
        while let Some(item) = params.next().await {
            match item {
                Ok(p) if p.parameter_name() == Some("tls") => return Ok(p.parameter_value().map(str::to_owned)),
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|s| s.is_db_parameter_group_not_found_fault()) => return Ok(None),
                Err(e) => return Err(self.failure("DescribeDBClusterParameters", &e)),
            }
        }
        Ok(None)
    }

    /// DocumentDB: version 5.0+ and TLS on (it has no IAM authentication flag).
    pub(super) async fn check(&self, ids: &Ids<'_>) -> Result<AwsCheck, AwsCheck> {
        let cluster = self.locate(ids).await?;
        if let Some(blocker) = documentdb_blocker(&cluster, &self.rds.region) {
            return Ok(blocker);
        }
        let tls = match cluster.parameter_group.as_deref() {
            Some(group) => self.tls_parameter(group).await?,
            None => None,
        };
        Ok(documentdb_verdict(&cluster, tls.as_deref(), &self.rds.region))
    }
}
