//! What the check needs of a DB instance or cluster, read from the RDS API's answers, and the
//! pure verdicts on it (no API calls here).

use aws_sdk_rds::types::{DbCluster, DbInstance};

use super::{AwsCheck, CheckStatus, DOCDB_MIN_VERSION};

/// Instance or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// A DB instance (RDS for PostgreSQL/MySQL/MariaDB, or a member of a cluster).
    Instance,
    /// A DB cluster (Aurora, DocumentDB).
    Cluster,
}

/// An instance or cluster by identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRef {
    /// Instance or cluster.
    pub kind: DbKind,
    /// The DB instance or cluster identifier.
    pub id: String,
}

impl std::fmt::Display for DbRef {
    /// E.g. `instance orders` or `cluster orders`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DbKind::Instance => write!(f, "instance {}", self.id),
            DbKind::Cluster => write!(f, "cluster {}", self.id),
        }
    }
}

/// What the check needs of a DB instance or cluster.
#[derive(Debug, Clone, Default)]
pub(super) struct Found {
    pub(super) kind: Option<DbKind>,
    pub(super) id: String,
    pub(super) engine: String,
    pub(super) version: Option<String>,
    pub(super) resource_id: Option<String>,
    pub(super) iam_enabled: bool,
    /// A pending modification turns IAM authentication on.
    pub(super) iam_pending: bool,
    pub(super) endpoints: Vec<String>,
    /// The cluster an instance belongs to (Aurora, DocumentDB); IAM authentication is set there.
    pub(super) cluster_id: Option<String>,
    /// A cluster's parameter group.
    pub(super) parameter_group: Option<String>,
}

impl Found {
    pub(super) fn from_instance(i: &DbInstance) -> Self {
        Self {
            kind: Some(DbKind::Instance),
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

    pub(super) fn from_cluster(c: &DbCluster) -> Self {
        Self {
            kind: Some(DbKind::Cluster),
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

    pub(super) fn kind(&self) -> DbKind {
        self.kind.unwrap_or(DbKind::Instance)
    }

    pub(super) fn reference(&self) -> DbRef {
        DbRef { kind: self.kind(), id: self.id.clone() }
    }

    pub(super) fn serves(&self, host: &str) -> bool {
        serves(host, self.endpoints.iter().map(String::as_str))
    }

    /// E.g. `RDS instance orders`, `Aurora cluster orders`, `DocumentDB cluster docs`.
    pub(super) fn name(&self) -> String {
        format!("{} {}", noun(self.kind(), &self.engine), self.id)
    }

    /// E.g. `postgres 16.3`.
    pub(super) fn engine_text(&self) -> String {
        match &self.version {
            Some(v) => format!("{} {v}", self.engine),
            None => self.engine.clone(),
        }
    }

    /// Where IAM authentication is switched: an instance's cluster, else the database itself.
    pub(super) fn iam_owner(&self) -> (DbKind, &str) {
        match (self.kind(), &self.cluster_id) {
            (DbKind::Instance, Some(cluster)) => (DbKind::Cluster, cluster.as_str()),
            (kind, _) => (kind, self.id.as_str()),
        }
    }
}

pub(super) fn noun(kind: DbKind, engine: &str) -> &'static str {
    match kind {
        DbKind::Instance => "RDS instance",
        DbKind::Cluster if engine == "docdb" => "DocumentDB cluster",
        DbKind::Cluster if engine.starts_with("aurora") => "Aurora cluster",
        DbKind::Cluster => "RDS cluster",
    }
}

pub(super) fn instance_endpoints(i: &DbInstance) -> Vec<&str> {
    i.endpoint().and_then(|e| e.address()).into_iter().collect()
}

pub(super) fn cluster_endpoints(c: &DbCluster) -> Vec<&str> {
    c.endpoint().into_iter().chain(c.reader_endpoint()).chain(c.custom_endpoints().iter().map(String::as_str)).collect()
}

/// True when `host` is one of `endpoints`.
pub(super) fn serves<'a>(host: &str, endpoints: impl IntoIterator<Item = &'a str>) -> bool {
    endpoints.into_iter().any(|e| same_host(host, e))
}

/// Host names compared without case and without a trailing dot.
pub(super) fn same_host(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
    let a = norm(a);
    !a.is_empty() && a == norm(b)
}

/// True when the dotted version `version` is below `min` ("4.0.0" < "5.0.0"). Each part is read
/// by its leading digits (`3.05` of `8.0.mysql_aurora.3.05` counts, `mysql_aurora` is 0); missing parts are 0.
pub fn version_below(version: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.trim().split('.').map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u64>().unwrap_or(0)).collect()
    };
    let (v, m) = (parse(version), parse(min));
    let len = v.len().max(m.len());
    (0..len).map(|i| (v.get(i).copied().unwrap_or(0), m.get(i).copied().unwrap_or(0))).find(|(a, b)| a != b).is_some_and(|(a, b)| a < b)
}

/// The command that turns IAM authentication on.
pub(super) fn enable_command(kind: DbKind, id: &str, region: &str) -> String {
    match kind {
        DbKind::Instance => {
            format!("aws rds modify-db-instance --db-instance-identifier {id} --enable-iam-database-authentication --apply-immediately --region {region}")
        }
        DbKind::Cluster => {
            format!("aws rds modify-db-cluster --db-cluster-identifier {id} --enable-iam-database-authentication --apply-immediately --region {region}")
        }
    }
}

/// Engine and version checks of a DocumentDB cluster: a verdict when they fail.
pub(super) fn documentdb_blocker(cluster: &Found, region: &str) -> Option<AwsCheck> {
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
pub(super) fn documentdb_verdict(cluster: &Found, tls: Option<&str>, region: &str) -> AwsCheck {
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
