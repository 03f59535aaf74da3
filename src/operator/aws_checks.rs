//! The AWS side of a `Database`: finds the RDS instance or Aurora/DocumentDB cluster behind its endpoint and checks that it accepts IAM authentication.

use aws_sdk_rds::Client;
use aws_sdk_rds::config::Region;
use aws_sdk_rds::types::{DbCluster, DbInstance};
use aws_types::SdkConfig;

use crate::aws::{EndpointPolicy, describe_sdk_error, region_from_rds_host};
use crate::crd::{DatabaseSpec, Protocol};
use crate::proxy::upstream::split_endpoint;

/// The oldest DocumentDB engine version with MONGODB-AWS (IAM) authentication.
const DOCDB_MIN_VERSION: &str = "5.0.0";

/// The read permissions the check needs, named in failure messages.
const DESCRIBE_PERMISSIONS: &str = "rds:DescribeDBInstances, rds:DescribeDBClusters and rds:DescribeDBClusterParameters";

/// Outcome of the AWS-side check; becomes the `IamAuthEnabled` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCheck {
    /// The condition's status.
    pub status: CheckStatus,
    /// The condition's reason (PascalCase): Enabled, Disabled, Enabling, EndpointMismatch, NotFound, EngineTooOld,
    /// TlsDisabled, CheckFailed or NotChecked.
    pub reason: &'static str,
    /// What to do, in words a platform engineer acts on; never a secret.
    pub message: String,
    /// The engine version of the database, when found.
    pub engine_version: Option<String>,
    /// The DbiResourceId or DbClusterResourceId, when found.
    pub resource_id: Option<String>,
    /// True after a Modify call was sent: check again in about 30 seconds.
    pub retry_soon: bool,
}

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The database accepts IAM authentication.
    True,
    /// It does not (yet).
    False,
    /// The check was not made or failed.
    Unknown,
}

impl CheckStatus {
    /// The status as a Kubernetes condition writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::True => "True",
            CheckStatus::False => "False",
            CheckStatus::Unknown => "Unknown",
        }
    }
}

impl AwsCheck {
    fn new(status: CheckStatus, reason: &'static str, message: impl Into<String>) -> Self {
        Self { status, reason, message: message.into(), engine_version: None, resource_id: None, retry_soon: false }
    }

    fn not_checked(message: impl Into<String>) -> Self {
        Self::new(CheckStatus::Unknown, "NotChecked", message)
    }

    fn failed(message: impl Into<String>) -> Self {
        Self::new(CheckStatus::Unknown, "CheckFailed", message)
    }

    fn with_db(mut self, db: &Found) -> Self {
        self.engine_version = db.version.clone();
        self.resource_id = db.resource_id.clone();
        self
    }
}

/// Checks the AWS side of `spec` with the credentials in `sdk` (the caller picks them, e.g. after
/// `spec.aws.assumeRoleArn`): finds the database, checks IAM authentication and, when
/// `spec.aws.enableIamAuth` asks for it, turns it on. Never fails: problems become the verdict.
pub async fn check_database(spec: &DatabaseSpec, sdk: &SdkConfig) -> AwsCheck {
    match run(spec, sdk).await {
        Ok(check) | Err(check) => check,
    }
}

/// The check; `Err` carries an early verdict.
async fn run(spec: &DatabaseSpec, sdk: &SdkConfig) -> Result<AwsCheck, AwsCheck> {
    if spec.protocol == Protocol::Dynamodb {
        return Ok(AwsCheck::not_checked("DynamoDB has no IAM database authentication setting; access is by IAM role"));
    }
    let host = endpoint_host(spec)?;
    let ids = Ids::from_spec(spec);
    let aws_host = EndpointPolicy::default().check(&host).is_ok();
    if ids.is_empty() && !aws_host {
        return Ok(AwsCheck::not_checked(format!(
            "{host} is not an RDS or DocumentDB endpoint (*.rds.amazonaws.com, *.docdb.amazonaws.com), so the operator cannot tell which \
             database it is and did not check IAM authentication. To enable the check, set spec.aws.rds.instanceId (RDS instance) or \
             spec.aws.rds.clusterId (Aurora or DocumentDB cluster)"
        )));
    }
    let region = pick_region(spec, &host, sdk)?;
    let client = Client::from_conf(aws_sdk_rds::config::Builder::from(sdk).region(Region::new(region.clone())).build());
    let rds = Rds { client, region, host, aws_host, enable_iam_auth: spec.aws.enable_iam_auth };
    let db = rds.locate(&ids).await?;
    match spec.protocol {
        Protocol::Mongodb => rds.check_documentdb(db).await,
        _ => rds.check_iam(db).await,
    }
}

/// The host of `spec.endpoint`.
fn endpoint_host(spec: &DatabaseSpec) -> Result<String, AwsCheck> {
    let endpoint = spec
        .endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| AwsCheck::not_checked("spec.endpoint is not set, so there is no database to check"))?;
    split_endpoint(endpoint, spec.protocol)
        .map(|(host, _)| host)
        .map_err(|e| AwsCheck::not_checked(format!("spec.endpoint is not usable ({e}); fix it and the operator will check IAM authentication")))
}

/// spec.aws.region, else the region in an RDS host name, else the operator's own region.
fn pick_region(spec: &DatabaseSpec, host: &str, sdk: &SdkConfig) -> Result<String, AwsCheck> {
    spec.aws
        .region
        .clone()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| region_from_rds_host(host))
        .or_else(|| sdk.region().map(|r| r.to_string()))
        .ok_or_else(|| AwsCheck::failed("no AWS region is known for this database: set spec.aws.region (or AWS_REGION for the operator)"))
}

/// The identifiers in spec.aws.rds (blank ones ignored).
struct Ids<'a> {
    instance: Option<&'a str>,
    cluster: Option<&'a str>,
}

impl<'a> Ids<'a> {
    fn from_spec(spec: &'a DatabaseSpec) -> Self {
        let rds = spec.aws.rds.as_ref();
        let pick = |id: Option<&'a String>| id.map(|s| s.trim()).filter(|s| !s.is_empty());
        Self { instance: pick(rds.and_then(|r| r.instance_id.as_ref())), cluster: pick(rds.and_then(|r| r.cluster_id.as_ref())) }
    }

    fn is_empty(&self) -> bool {
        self.instance.is_none() && self.cluster.is_none()
    }
}

/// Instance or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    Cluster,
}

/// What the check needs of a DB instance or cluster.
#[derive(Debug, Clone, Default)]
struct Found {
    kind: Option<Kind>,
    id: String,
    engine: String,
    version: Option<String>,
    resource_id: Option<String>,
    iam_enabled: bool,
    /// A pending modification turns IAM authentication on.
    iam_pending: bool,
    endpoints: Vec<String>,
    /// The cluster an instance belongs to (Aurora, DocumentDB); IAM authentication is set there.
    cluster_id: Option<String>,
    /// A cluster's parameter group.
    parameter_group: Option<String>,
}

impl Found {
    fn from_instance(i: &DbInstance) -> Self {
        Self {
            kind: Some(Kind::Instance),
            id: i.db_instance_identifier().unwrap_or_default().to_owned(),
            engine: i.engine().unwrap_or_default().to_owned(),
            version: i.engine_version().map(str::to_owned),
            resource_id: i.dbi_resource_id().map(str::to_owned),
            iam_enabled: i.iam_database_authentication_enabled().unwrap_or(false),
            iam_pending: i.pending_modified_values().and_then(|p| p.iam_database_authentication_enabled()).unwrap_or(false),
            endpoints: instance_endpoints(i).into_iter().map(str::to_owned).collect(),
            cluster_id: i.db_cluster_identifier().map(str::to_owned),
            parameter_group: None,
        }
    }

    fn from_cluster(c: &DbCluster) -> Self {
        Self {
            kind: Some(Kind::Cluster),
            id: c.db_cluster_identifier().unwrap_or_default().to_owned(),
            engine: c.engine().unwrap_or_default().to_owned(),
            version: c.engine_version().map(str::to_owned),
            resource_id: c.db_cluster_resource_id().map(str::to_owned),
            iam_enabled: c.iam_database_authentication_enabled().unwrap_or(false),
            iam_pending: c.pending_modified_values().and_then(|p| p.iam_database_authentication_enabled()).unwrap_or(false),
            endpoints: cluster_endpoints(c).into_iter().map(str::to_owned).collect(),
            cluster_id: None,
            parameter_group: c.db_cluster_parameter_group().map(str::to_owned),
        }
    }

    fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Instance)
    }

    fn serves(&self, host: &str) -> bool {
        serves(host, self.endpoints.iter().map(String::as_str))
    }

    /// E.g. `RDS instance orders`, `Aurora cluster orders`, `DocumentDB cluster docs`.
    fn name(&self) -> String {
        format!("{} {}", noun(self.kind(), &self.engine), self.id)
    }

    /// E.g. `postgres 16.3`.
    fn engine_text(&self) -> String {
        match &self.version {
            Some(v) => format!("{} {v}", self.engine),
            None => self.engine.clone(),
        }
    }

    /// Where IAM authentication is switched: an instance's cluster, else the database itself.
    fn iam_owner(&self) -> (Kind, &str) {
        match (self.kind(), &self.cluster_id) {
            (Kind::Instance, Some(cluster)) => (Kind::Cluster, cluster.as_str()),
            (kind, _) => (kind, self.id.as_str()),
        }
    }
}

fn noun(kind: Kind, engine: &str) -> &'static str {
    match kind {
        Kind::Instance => "RDS instance",
        Kind::Cluster if engine == "docdb" => "DocumentDB cluster",
        Kind::Cluster if engine.starts_with("aurora") => "Aurora cluster",
        Kind::Cluster => "RDS cluster",
    }
}

fn instance_endpoints(i: &DbInstance) -> Vec<&str> {
    i.endpoint().and_then(|e| e.address()).into_iter().collect()
}

fn cluster_endpoints(c: &DbCluster) -> Vec<&str> {
    c.endpoint().into_iter().chain(c.reader_endpoint()).chain(c.custom_endpoints().iter().map(String::as_str)).collect()
}

/// True when `host` is one of `endpoints`.
fn serves<'a>(host: &str, endpoints: impl IntoIterator<Item = &'a str>) -> bool {
    endpoints.into_iter().any(|e| same_host(host, e))
}

/// Host names compared without case and without a trailing dot.
fn same_host(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
    let a = norm(a);
    !a.is_empty() && a == norm(b)
}

/// True when the dotted version `version` is below `min` ("4.0.0" < "5.0.0"). Each part is read
/// by its leading digits (`3.05` of `8.0.mysql_aurora.3.05` counts, `mysql_aurora` is 0); missing parts are 0.
fn version_below(version: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.trim().split('.').map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u64>().unwrap_or(0)).collect()
    };
    let (v, m) = (parse(version), parse(min));
    let len = v.len().max(m.len());
    (0..len)
        .map(|i| (v.get(i).copied().unwrap_or(0), m.get(i).copied().unwrap_or(0)))
        .find(|(a, b)| a != b)
        .is_some_and(|(a, b)| a < b)
}

/// The command that turns IAM authentication on.
fn enable_command(kind: Kind, id: &str, region: &str) -> String {
    match kind {
        Kind::Instance => {
            format!("aws rds modify-db-instance --db-instance-identifier {id} --enable-iam-database-authentication --apply-immediately --region {region}")
        }
        Kind::Cluster => {
            format!("aws rds modify-db-cluster --db-cluster-identifier {id} --enable-iam-database-authentication --apply-immediately --region {region}")
        }
    }
}

/// Engine and version checks of a DocumentDB cluster: a verdict when they fail.
fn documentdb_blocker(cluster: &Found, region: &str) -> Option<AwsCheck> {
    if !cluster.engine.is_empty() && cluster.engine != "docdb" {
        let msg = format!(
            "spec.protocol is mongodb (DocumentDB) but {} runs {}: fix spec.protocol, or point spec.endpoint at a DocumentDB cluster",
            cluster.name(),
            cluster.engine_text()
        );
        return Some(AwsCheck::new(CheckStatus::False, "EndpointMismatch", msg).with_db(cluster));
    }
    let version = cluster.version.as_deref().filter(|v| version_below(v, DOCDB_MIN_VERSION))?;
    let msg = format!(
        "{} runs DocumentDB {version}; IAM authentication (MONGODB-AWS) needs DocumentDB 5.0 or later. Upgrade it: \
         `aws docdb modify-db-cluster --db-cluster-identifier {} --engine-version 5.0.0 --allow-major-version-upgrade --apply-immediately --region {region}`",
        cluster.name(),
        cluster.id
    );
    Some(AwsCheck::new(CheckStatus::False, "EngineTooOld", msg).with_db(cluster))
}

/// The verdict on a DocumentDB cluster that passed [`documentdb_blocker`], given its `tls` parameter
/// (`None` when the group does not set it: DocumentDB's default is enabled).
fn documentdb_verdict(cluster: &Found, tls: Option<&str>, region: &str) -> AwsCheck {
    if tls.is_some_and(|t| t.trim().eq_ignore_ascii_case("disabled")) {
        let group = cluster.parameter_group.as_deref().unwrap_or("?");
        let msg = format!(
            "TLS is disabled on {} (parameter tls=disabled in cluster parameter group {group}); MONGODB-AWS needs TLS. Enable it: \
             `aws docdb modify-db-cluster-parameter-group --db-cluster-parameter-group-name {group} --parameters \
             ParameterName=tls,ParameterValue=enabled,ApplyMethod=pending-reboot --region {region}`, then reboot the cluster's instances",
            cluster.name()
        );
        return AwsCheck::new(CheckStatus::False, "TlsDisabled", msg).with_db(cluster);
    }
    let msg = format!("DocumentDB 5.0+ with TLS: MONGODB-AWS available ({}, {}, {region})", cluster.name(), cluster.engine_text());
    AwsCheck::new(CheckStatus::True, "Enabled", msg).with_db(cluster)
}

/// An RDS API client for one database's region and host.
struct Rds {
    client: Client,
    region: String,
    host: String,
    /// The host is an RDS/DocumentDB name, so it can be compared with the database's endpoints
    /// (a private alias such as `orders.db.internal` cannot).
    aws_host: bool,
    enable_iam_auth: bool,
}

impl Rds {
    /// A failed API call.
    fn failure(&self, action: &str, detail: &str) -> AwsCheck {
        AwsCheck::failed(format!(
            "{action} in {} failed: {detail}. Check that the operator has AWS credentials (IRSA or EKS Pod Identity) and that its IAM \
             policy allows {DESCRIBE_PERMISSIONS}",
            self.region
        ))
    }

    /// The database named in spec.aws.rds (the one whose endpoints include an RDS host; the first
    /// named for a private alias), or discovered by its host.
    async fn locate(&self, ids: &Ids<'_>) -> Result<Found, AwsCheck> {
        if ids.is_empty() {
            return self.discover().await;
        }
        let mut mismatched = Vec::new();
        if let Some(id) = ids.instance {
            let db = self.instance(id).await?;
            if db.serves(&self.host) || !self.aws_host {
                return Ok(db);
            }
            mismatched.push(db);
        }
        if let Some(id) = ids.cluster {
            let db = self.cluster(id).await?;
            if db.serves(&self.host) || !self.aws_host {
                return Ok(db);
            }
            mismatched.push(db);
        }
        Err(self.mismatch(&mismatched))
    }

    fn mismatch(&self, dbs: &[Found]) -> AwsCheck {
        let named: Vec<String> = dbs.iter().map(|db| format!("{} (endpoints: {})", db.name(), db.endpoints.join(", "))).collect();
        let msg = format!(
            "spec.endpoint's host {} is not an endpoint of {}. Fix spec.endpoint or spec.aws.rds (an Aurora or DocumentDB cluster \
             endpoint goes with clusterId, an instance endpoint with instanceId)",
            self.host,
            named.join(" or ")
        );
        let check = AwsCheck::new(CheckStatus::False, "EndpointMismatch", msg);
        match dbs.first() {
            Some(db) => check.with_db(db),
            None => check,
        }
    }

    fn id_not_found(&self, kind: Kind, id: &str) -> AwsCheck {
        let (field, action) = match kind {
            Kind::Instance => ("instanceId", "rds:DescribeDBInstances"),
            Kind::Cluster => ("clusterId", "rds:DescribeDBClusters"),
        };
        let what = match kind {
            Kind::Instance => "RDS instance",
            Kind::Cluster => "DB cluster",
        };
        AwsCheck::new(
            CheckStatus::False,
            "NotFound",
            format!(
                "{what} {id:?} was not found in {}. Check spec.aws.rds.{field} and spec.aws.region; the operator's IAM identity needs {action} to see it",
                self.region
            ),
        )
    }

    async fn instance(&self, id: &str) -> Result<Found, AwsCheck> {
        match self.client.describe_db_instances().db_instance_identifier(id).send().await {
            Ok(out) => out.db_instances().first().map(Found::from_instance).ok_or_else(|| self.id_not_found(Kind::Instance, id)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_instance_not_found_fault()) => Err(self.id_not_found(Kind::Instance, id)),
            Err(e) => Err(self.failure("DescribeDBInstances", &describe_sdk_error(&e))),
        }
    }

    async fn cluster(&self, id: &str) -> Result<Found, AwsCheck> {
        match self.client.describe_db_clusters().db_cluster_identifier(id).send().await {
            Ok(out) => out.db_clusters().first().map(Found::from_cluster).ok_or_else(|| self.id_not_found(Kind::Cluster, id)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_db_cluster_not_found_fault()) => Err(self.id_not_found(Kind::Cluster, id)),
            Err(e) => Err(self.failure("DescribeDBClusters", &describe_sdk_error(&e))),
        }
    }

    /// The instance or cluster with the host among its endpoints (all pages of both lists).
    async fn discover(&self) -> Result<Found, AwsCheck> {
        let mut instances = self.client.describe_db_instances().into_paginator().items().send();
        while let Some(item) = instances.next().await {
            let instance = item.map_err(|e| self.failure("DescribeDBInstances", &describe_sdk_error(&e)))?;
            if serves(&self.host, instance_endpoints(&instance)) {
                return Ok(Found::from_instance(&instance));
            }
        }
        let mut clusters = self.client.describe_db_clusters().into_paginator().items().send();
        while let Some(item) = clusters.next().await {
            let cluster = item.map_err(|e| self.failure("DescribeDBClusters", &describe_sdk_error(&e)))?;
            if serves(&self.host, cluster_endpoints(&cluster)) {
                return Ok(Found::from_cluster(&cluster));
            }
        }
        Err(AwsCheck::new(
            CheckStatus::False,
            "NotFound",
            format!(
                "no RDS instance, Aurora or DocumentDB cluster in {} has the endpoint {}. Check spec.endpoint and spec.aws.region, or name \
                 the database in spec.aws.rds.instanceId or clusterId. The operator's IAM identity needs rds:DescribeDBInstances and \
                 rds:DescribeDBClusters to find it",
                self.region, self.host
            ),
        ))
    }

    /// RDS and Aurora: is IAM authentication on; turn it on when asked.
    async fn check_iam(&self, db: Found) -> Result<AwsCheck, AwsCheck> {
        if db.iam_enabled {
            let msg = format!("IAM database authentication is enabled on {} ({}, {})", db.name(), db.engine_text(), self.region);
            return Ok(AwsCheck::new(CheckStatus::True, "Enabled", msg).with_db(&db));
        }
        let (kind, owner) = db.iam_owner();
        let owner_name = format!("{} {owner}", noun(kind, &db.engine));
        if db.iam_pending {
            let msg = format!("IAM database authentication is being turned on for {owner_name} (pending modification); checking again shortly");
            return Ok(AwsCheck { retry_soon: true, ..AwsCheck::new(CheckStatus::False, "Enabling", msg).with_db(&db) });
        }
        if !self.enable_iam_auth {
            let msg = format!(
                "IAM database authentication is off on {owner_name} ({}), so the proxy cannot log in with IAM. Turn it on with `{}`, \
                 or set spec.aws.enableIamAuth: true to let the operator do it",
                db.engine_text(),
                enable_command(kind, owner, &self.region)
            );
            return Ok(AwsCheck::new(CheckStatus::False, "Disabled", msg).with_db(&db));
        }
        self.enable_iam(kind, owner).await?;
        let action = if kind == Kind::Instance { "ModifyDBInstance" } else { "ModifyDBCluster" };
        let msg = format!(
            "IAM database authentication was off on {owner_name}; the operator called {action} to turn it on (apply immediately). \
             This takes a few minutes; checking again shortly"
        );
        Ok(AwsCheck { retry_soon: true, ..AwsCheck::new(CheckStatus::False, "Enabling", msg).with_db(&db) })
    }

    /// ModifyDBInstance or ModifyDBCluster with IAM authentication on, applied immediately.
    async fn enable_iam(&self, kind: Kind, id: &str) -> Result<(), AwsCheck> {
        let (action, result) = match kind {
            Kind::Instance => {
                let call = self.client.modify_db_instance().db_instance_identifier(id).enable_iam_database_authentication(true).apply_immediately(true);
                ("ModifyDBInstance", call.send().await.map(drop).map_err(|e| describe_sdk_error(&e)))
            }
            Kind::Cluster => {
                let call = self.client.modify_db_cluster().db_cluster_identifier(id).enable_iam_database_authentication(true).apply_immediately(true);
                ("ModifyDBCluster", call.send().await.map(drop).map_err(|e| describe_sdk_error(&e)))
            }
        };
        result.map_err(|detail| {
            AwsCheck::failed(format!(
                "{action} on {id} in {} failed: {detail}. The operator's IAM identity needs rds:{action} on it; or turn IAM authentication on \
                 yourself: `{}`",
                self.region,
                enable_command(kind, id, &self.region)
            ))
        })
    }

    /// DocumentDB: version 5.0+ and TLS on (it has no IAM authentication flag).
    async fn check_documentdb(&self, db: Found) -> Result<AwsCheck, AwsCheck> {
        let cluster = match (db.kind(), db.cluster_id.clone()) {
            (Kind::Cluster, _) => db,
            (Kind::Instance, Some(id)) => self.cluster(&id).await?,
            (Kind::Instance, None) => {
                let msg = format!(
                    "{} is not part of a cluster; DocumentDB databases are clusters. Point spec.endpoint at the DocumentDB cluster \
                     endpoint or set spec.aws.rds.clusterId",
                    db.name()
                );
                return Ok(AwsCheck::new(CheckStatus::False, "EndpointMismatch", msg).with_db(&db));
            }
        };
        if let Some(blocker) = documentdb_blocker(&cluster, &self.region) {
            return Ok(blocker);
        }
        let tls = match cluster.parameter_group.as_deref() {
            Some(group) => self.tls_parameter(group).await?,
            None => None,
        };
        Ok(documentdb_verdict(&cluster, tls.as_deref(), &self.region))
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
                Err(e) => return Err(self.failure("DescribeDBClusterParameters", &describe_sdk_error(&e))),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::v1alpha1::{AwsSpec, RdsRef};
    use aws_sdk_rds::types::Endpoint;

    fn spec(protocol: Protocol, endpoint: &str, aws: AwsSpec) -> DatabaseSpec {
        DatabaseSpec { protocol, endpoint: Some(endpoint.to_owned()), aws, tls: Default::default(), proxy: Default::default() }
    }

    fn docdb(version: &str) -> Found {
        Found {
            kind: Some(Kind::Cluster),
            id: "docs".into(),
            engine: "docdb".into(),
            version: Some(version.into()),
            resource_id: Some("cluster-ABC".into()),
            parameter_group: Some("docs-params".into()),
            ..Found::default()
        }
    }

    #[test]
    fn versions_compare_part_by_part() {
        assert!(version_below("4.0.0", "5.0.0"));
        assert!(version_below("3.6", "5.0.0"));
        assert!(!version_below("5.0.0", "5.0.0"));
        assert!(!version_below("5.0", "5.0.0"));
        assert!(!version_below("10.0.0", "5.0.0"));
        assert!(!version_below("8.0.mysql_aurora.3.05.2", "5.0.0"));
        assert!(version_below("4.9.99", "5.0.0"));
        assert!(version_below("", "5.0.0"));
    }

    #[test]
    fn hosts_match_exactly_without_case_or_trailing_dot() {
        assert!(same_host("Orders.abc.us-east-1.RDS.amazonaws.com", "orders.abc.us-east-1.rds.amazonaws.com"));
        assert!(same_host("orders.abc.us-east-1.rds.amazonaws.com.", "orders.abc.us-east-1.rds.amazonaws.com"));
        assert!(!same_host("evil-orders.abc.us-east-1.rds.amazonaws.com", "orders.abc.us-east-1.rds.amazonaws.com"));
        assert!(!same_host("orders.abc.us-east-1.rds.amazonaws.com", "abc.us-east-1.rds.amazonaws.com"));
        assert!(!same_host("", ""));
    }

    #[test]
    fn cluster_endpoints_include_reader_and_custom_endpoints() {
        let cluster = DbCluster::builder()
            .db_cluster_identifier("orders")
            .engine("aurora-postgresql")
            .endpoint("orders.cluster-abc.us-east-1.rds.amazonaws.com")
            .reader_endpoint("orders.cluster-ro-abc.us-east-1.rds.amazonaws.com")
            .custom_endpoints("reports.cluster-custom-abc.us-east-1.rds.amazonaws.com")
            .build();
        let found = Found::from_cluster(&cluster);
        for host in ["orders.cluster-abc.us-east-1.rds.amazonaws.com", "ORDERS.cluster-ro-abc.us-east-1.rds.amazonaws.com", "reports.cluster-custom-abc.us-east-1.rds.amazonaws.com"] {
            assert!(found.serves(host), "{host}");
        }
        assert!(!found.serves("orders.abc.us-east-1.rds.amazonaws.com"));
        assert_eq!(found.name(), "Aurora cluster orders");
    }

    #[test]
    fn aurora_members_have_iam_switched_on_their_cluster() {
        let instance = DbInstance::builder()
            .db_instance_identifier("orders-1")
            .db_cluster_identifier("orders")
            .engine("aurora-postgresql")
            .endpoint(Endpoint::builder().address("orders-1.abc.us-east-1.rds.amazonaws.com").port(5432).build())
            .build();
        let found = Found::from_instance(&instance);
        assert!(found.serves("orders-1.abc.us-east-1.rds.amazonaws.com"));
        assert_eq!(found.iam_owner(), (Kind::Cluster, "orders"));
        let standalone = Found::from_instance(&DbInstance::builder().db_instance_identifier("solo").build());
        assert_eq!(standalone.iam_owner(), (Kind::Instance, "solo"));
        assert_eq!(
            enable_command(Kind::Instance, "solo", "us-east-1"),
            "aws rds modify-db-instance --db-instance-identifier solo --enable-iam-database-authentication --apply-immediately --region us-east-1"
        );
    }

    #[test]
    fn documentdb_needs_5_0_and_tls() {
        let old = documentdb_blocker(&docdb("4.0.0"), "us-east-1").expect("too old");
        assert_eq!((old.status, old.reason, old.engine_version.as_deref()), (CheckStatus::False, "EngineTooOld", Some("4.0.0")));
        assert!(old.message.contains("5.0"), "{}", old.message);

        let current = docdb("5.0.0");
        assert!(documentdb_blocker(&current, "us-east-1").is_none());
        let off = documentdb_verdict(&current, Some("disabled"), "us-east-1");
        assert_eq!((off.status, off.reason), (CheckStatus::False, "TlsDisabled"));
        assert!(off.message.contains("docs-params") && off.message.contains("ParameterValue=enabled"), "{}", off.message);

        for tls in [None, Some("enabled"), Some("tls1.2+")] {
            let ok = documentdb_verdict(&current, tls, "us-east-1");
            assert_eq!((ok.status, ok.reason, ok.resource_id.as_deref()), (CheckStatus::True, "Enabled", Some("cluster-ABC")), "{tls:?}");
            assert!(ok.message.contains("MONGODB-AWS available"));
        }

        let aurora = Found { engine: "aurora-postgresql".into(), version: Some("16.1".into()), ..docdb("16.1") };
        assert_eq!(documentdb_blocker(&aurora, "us-east-1").map(|c| c.reason), Some("EndpointMismatch"));
    }

    #[test]
    fn region_comes_from_spec_then_host_then_sdk() {
        let sdk = SdkConfig::builder().region(Region::new("eu-west-1")).build();
        let host = "orders.abc.us-east-2.rds.amazonaws.com";
        let with_region = spec(Protocol::Postgres, host, AwsSpec { region: Some("ap-south-1".into()), ..Default::default() });
        assert_eq!(pick_region(&with_region, host, &sdk).unwrap(), "ap-south-1");
        let plain = spec(Protocol::Postgres, host, AwsSpec::default());
        assert_eq!(pick_region(&plain, host, &sdk).unwrap(), "us-east-2");
        assert_eq!(pick_region(&plain, "db.internal", &sdk).unwrap(), "eu-west-1");
        let none = pick_region(&plain, "db.internal", &SdkConfig::builder().build()).unwrap_err();
        assert_eq!(none.reason, "CheckFailed");
    }

    #[tokio::test]
    async fn dynamodb_and_unknown_hosts_are_not_checked() {
        let sdk = SdkConfig::builder().build();
        let dynamo = DatabaseSpec { endpoint: None, ..spec(Protocol::Dynamodb, "", AwsSpec::default()) };
        let check = check_database(&dynamo, &sdk).await;
        assert_eq!((check.status, check.reason), (CheckStatus::Unknown, "NotChecked"));
        assert!(check.message.contains("DynamoDB"));

        let private = spec(Protocol::Postgres, "db.internal:5432", AwsSpec::default());
        let check = check_database(&private, &sdk).await;
        assert_eq!((check.status.as_str(), check.reason), ("Unknown", "NotChecked"));
        assert!(check.message.contains("spec.aws.rds.instanceId"), "{}", check.message);
        assert!(!check.retry_soon);
    }

    #[test]
    fn blank_identifiers_are_ignored() {
        let rds = RdsRef { instance_id: Some(" ".into()), cluster_id: Some("orders".into()), resource_id: None };
        let s = spec(Protocol::Postgres, "x:1", AwsSpec { rds: Some(rds), ..Default::default() });
        let ids = Ids::from_spec(&s);
        assert_eq!((ids.instance, ids.cluster), (None, Some("orders")));
    }
}
