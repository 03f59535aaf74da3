//! Which endpoints may receive IAM tokens (the region an RDS host name implies is a model
//! rule: [`crate::crd::region_from_rds_host`]).

/// AWS database endpoint suffixes a token may go to without further configuration.
const AWS_DATABASE_SUFFIXES: &[&str] = &[".rds.amazonaws.com", ".rds.amazonaws.com.cn", ".docdb.amazonaws.com", ".docdb.amazonaws.com.cn"];

/// The endpoint a token was about to be sent to is not allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to send an IAM token to {host:?}: it is not an AWS database endpoint (*.rds.amazonaws.com, *.docdb.amazonaws.com). \
     If this host really is your database (a private DNS name or a tunnel), add it to aws.allowedEndpoints in the proxy configuration"
)]
pub struct EndpointError {
    /// The refused host.
    pub host: String,
}

/// The set of hosts IAM tokens may be sent to.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    extra_hosts: Vec<String>,
}

impl EndpointPolicy {
    /// AWS database domains plus `extra_hosts` (exact host names or IP addresses).
    pub fn new(extra_hosts: Vec<String>) -> Self {
        Self { extra_hosts: extra_hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect() }
    }

    /// Ok when `host` may receive a token.
    pub fn check(&self, host: &str) -> Result<(), EndpointError> {
        let host_lc = host.to_ascii_lowercase();
        let aws = AWS_DATABASE_SUFFIXES.iter().any(|s| host_lc.ends_with(s) && host_lc.len() > s.len());
        if aws || self.extra_hosts.contains(&host_lc) { Ok(()) } else { Err(EndpointError { host: host.to_owned() }) }
    }
}

/// A signed DynamoDB request was about to go to a host that is not an AWS DynamoDB endpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to send a signed request to {host:?}: it is not an AWS DynamoDB endpoint (dynamodb.*.amazonaws.com or a *.vpce.amazonaws.com VPC endpoint). \
     If this host really serves DynamoDB for you, add it to aws.allowedEndpoints in the proxy configuration"
)]
pub struct SignedRequestEndpointError {
    /// The refused host.
    pub host: String,
}

impl EndpointPolicy {
    /// Ok when a signed DynamoDB request may go to `host` (an endpoint override).
    pub fn check_signed_request(&self, host: &str) -> Result<(), SignedRequestEndpointError> {
        let h = host.to_ascii_lowercase();
        let labels: Vec<&str> = h.split('.').collect();
        let aws_domain = h.ends_with(".amazonaws.com") || h.ends_with(".amazonaws.com.cn");
        let service = labels.iter().any(|l| *l == "dynamodb" || *l == "dax");
        if (aws_domain && service) || self.extra_hosts.contains(&h) { Ok(()) } else { Err(SignedRequestEndpointError { host: host.to_owned() }) }
    }
}

/// A DocumentDB server named an STS host that is not AWS STS.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to sign a GetCallerIdentity request for STS host {host:?}: the database named a host that is not AWS STS (sts.amazonaws.com, sts.<region>.amazonaws.com). \
     If this is your STS endpoint (a VPC endpoint, a test server), add it to aws.allowedEndpoints in the proxy configuration"
)]
pub struct StsHostError {
    /// The refused host.
    pub host: String,
}

impl EndpointPolicy {
    /// Ok when MONGODB-AWS may sign for the STS `host` a DocumentDB server named.
    pub fn check_sts_host(&self, host: &str) -> Result<(), StsHostError> {
        let h = host.to_ascii_lowercase();
        let labels: Vec<&str> = h.split('.').collect();
        let sts = h == "sts.amazonaws.com"
            || matches!(labels.as_slice(), ["sts" | "sts-fips", region, "amazonaws", "com"] | ["sts" | "sts-fips", region, "amazonaws", "com", "cn"] if !region.is_empty())
            || (h.ends_with(".vpce.amazonaws.com") && labels.contains(&"sts"));
        if sts || self.extra_hosts.contains(&h) { Ok(()) } else { Err(StsHostError { host: host.to_owned() }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aws_database_domains_and_listed_hosts_receive_tokens() {
        let policy = EndpointPolicy::new(vec!["127.0.0.1".into(), "DB.internal".into()]);
        for ok in ["orders.cluster-abc.us-east-1.rds.amazonaws.com", "x.y.cn-north-1.rds.amazonaws.com.cn", "127.0.0.1", "db.internal"] {
            assert!(policy.check(ok).is_ok(), "{ok}");
        }
        for bad in ["evil.example.com", "rds.amazonaws.com.evil.com", ".rds.amazonaws.com", "amazonaws.com", "localhost"] {
            let err = policy.check(bad).unwrap_err();
            assert!(err.to_string().contains("aws.allowedEndpoints"), "{err}");
        }
    }
}
