//! Where a DynamoDB request goes: the service named by the `X-Amz-Target` prefix, its SigV4
//! signing name and its regional endpoint.

pub use crate::aws::Service;

/// A parsed `X-Amz-Target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service.
    pub service: Service,
    /// The whole header value, e.g. `DynamoDB_20120810.GetItem`.
    pub name: String,
    /// The operation, e.g. `GetItem`.
    pub operation: String,
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No header.
    #[error("the request has no X-Amz-Target header: only the DynamoDB JSON API (POST with X-Amz-Target) is proxied")]
    Missing,
    /// A prefix of another service.
    #[error("X-Amz-Target {0:?} is not a DynamoDB, DynamoDB Streams or DAX operation")]
    Unknown(String),
}

impl Target {
    /// Parses the header value.
    pub fn parse(header: Option<&str>) -> Result<Target, TargetError> {
        let name = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(TargetError::Missing)?;
        let (prefix, operation) = name.split_once('.').ok_or_else(|| TargetError::Unknown(name.to_owned()))?;
        let service = if prefix.starts_with("DynamoDBStreams_") {
            Service::Streams
        } else if prefix.starts_with("DynamoDB_") {
            Service::DynamoDb
        } else if prefix.starts_with("AmazonDAX") {
            Service::Dax
        } else {
            return Err(TargetError::Unknown(name.to_owned()));
        };
        let valid = !operation.is_empty() && operation.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(TargetError::Unknown(name.to_owned()));
        }
        Ok(Target { service, name: name.to_owned(), operation: operation.to_owned() })
    }

    /// Whether this is an operation AWS defines (so it may name a metric series; invented ones
    /// are counted as `other`, keeping the label set bounded).
    pub fn is_known(&self) -> bool {
        match self.service {
            Service::DynamoDb => DYNAMODB_OPERATIONS.contains(&self.operation.as_str()),
            Service::Streams => STREAMS_OPERATIONS.contains(&self.operation.as_str()),
            _ => false,
        }
    }
}

/// The DynamoDB API's operations (2012-08-10).
const DYNAMODB_OPERATIONS: &[&str] = &[
    "BatchExecuteStatement",
    "BatchGetItem",
    "BatchWriteItem",
    "CreateBackup",
    "CreateGlobalTable",
    "CreateTable",
    "DeleteBackup",
    "DeleteItem",
    "DeleteResourcePolicy",
    "DeleteTable",
    "DescribeBackup",
    "DescribeContinuousBackups",
    "DescribeContributorInsights",
    "DescribeEndpoints",
    "DescribeExport",
    "DescribeGlobalTable",
    "DescribeGlobalTableSettings",
    "DescribeImport",
    "DescribeKinesisStreamingDestination",
    "DescribeLimits",
    "DescribeTable",
    "DescribeTableReplicaAutoScaling",
    "DescribeTimeToLive",
    "DisableKinesisStreamingDestination",
    "EnableKinesisStreamingDestination",
    "ExecuteStatement",
    "ExecuteTransaction",
    "ExportTableToPointInTime",
    "GetItem",
    "GetResourcePolicy",
    "ImportTable",
    "ListBackups",
    "ListContributorInsights",
    "ListExports",
    "ListGlobalTables",
    "ListImports",
    "ListTables",
    "ListTagsOfResource",
    "PutItem",
    "PutResourcePolicy",
    "Query",
    "RestoreTableFromBackup",
    "RestoreTableToPointInTime",
    "Scan",
    "TagResource",
    "TransactGetItems",
    "TransactWriteItems",
    "UntagResource",
    "UpdateContinuousBackups",
    "UpdateContributorInsights",
    "UpdateGlobalTable",
    "UpdateGlobalTableSettings",
    "UpdateItem",
    "UpdateKinesisStreamingDestination",
    "UpdateTable",
    "UpdateTableReplicaAutoScaling",
    "UpdateTimeToLive",
];

/// The DynamoDB Streams API's operations.
const STREAMS_OPERATIONS: &[&str] = &["DescribeStream", "GetRecords", "GetShardIterator", "ListStreams"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operations_aws_defines_are_known() {
        let known = |t: &str| Target::parse(Some(t)).unwrap().is_known();
        assert!(known("DynamoDB_20120810.PutItem") && known("DynamoDBStreams_20120810.GetRecords"));
        assert!(!known("DynamoDB_20120810.MadeUpOperation1") && !known("DynamoDBStreams_20120810.PutItem"));
    }

    #[test]
    fn targets_pick_service_signing_name_and_host() {
        let t = Target::parse(Some("DynamoDB_20120810.PutItem")).unwrap();
        assert_eq!((t.service, t.operation.as_str(), t.service.signing_name()), (Service::DynamoDb, "PutItem", "dynamodb"));
        assert_eq!(t.service.host("eu-west-1"), "dynamodb.eu-west-1.amazonaws.com");
        let s = Target::parse(Some("DynamoDBStreams_20120810.GetRecords")).unwrap();
        assert_eq!((s.service.signing_name(), s.service.host("cn-north-1")), ("dynamodb", "streams.dynamodb.cn-north-1.amazonaws.com.cn".to_owned()));
        let d = Target::parse(Some("AmazonDAXV3.DescribeClusters")).unwrap();
        assert_eq!((d.service.signing_name(), d.service.host("us-east-1")), ("dax", "dax.us-east-1.amazonaws.com".to_owned()));
    }

    #[test]
    fn other_targets_are_refused() {
        assert_eq!(Target::parse(None), Err(TargetError::Missing));
        assert_eq!(Target::parse(Some("  ")), Err(TargetError::Missing));
        for bad in [
            "AWSSecurityTokenServiceV20110615.GetCallerIdentity",
            "DynamoDB_20120810",
            "DynamoDB_20120810.",
            "DynamoDB_20120810.Get Item",
            "Kinesis_20131202.PutRecord",
        ] {
            assert!(matches!(Target::parse(Some(bad)), Err(TargetError::Unknown(_))), "{bad}");
        }
    }
}
