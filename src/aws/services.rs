//! The AWS services a DynamoDB client talks to: their SigV4 signing names and regional
//! endpoint hosts.

use super::partition_of;

/// The AWS services a DynamoDB client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// DynamoDB itself (`DynamoDB_20120810.*`).
    DynamoDb,
    /// DynamoDB Streams (`DynamoDBStreams_20120810.*`).
    Streams,
    /// The DAX control plane (`AmazonDAXV3.*`).
    Dax,
}

impl Service {
    /// The SigV4 signing name.
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::DynamoDb | Service::Streams => "dynamodb",
            Service::Dax => "dax",
        }
    }

    /// The regional endpoint host.
    pub fn host(self, region: &str) -> String {
        let domain = if partition_of(region) == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
        match self {
            Service::DynamoDb => format!("dynamodb.{region}.{domain}"),
            Service::Streams => format!("streams.dynamodb.{region}.{domain}"),
            Service::Dax => format!("dax.{region}.{domain}"),
        }
    }
}
