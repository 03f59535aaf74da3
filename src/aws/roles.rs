//! IAM role names and ARNs for assume-role hops, and role session names.

use sha2::{Digest, Sha256};

/// A role reference that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// Not a role ARN and not a valid role name.
    #[error("{0:?} is neither an IAM role ARN (arn:aws:iam::123456789012:role/NAME) nor a role name")]
    Malformed(String),
    /// The ARN is in another account.
    #[error("role {arn} is in account {found}, but the database is in account {expected}")]
    OtherAccount { arn: String, found: String, expected: String },
    /// The ARN is in another partition.
    #[error("role {arn} is in partition {found}, but the database is in partition {expected}")]
    OtherPartition { arn: String, found: String, expected: String },
    /// More than two assume-role hops were configured.
    #[error("at most two assume-role hops are supported (spec.aws.assumeRoleArn, then the db user's role); {0} were requested")]
    TooManyHops(usize),
}

/// The partition of a region: `aws`, `aws-cn` or `aws-us-gov`.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Turns a db user that names an IAM role (name or ARN) into the role's ARN in `partition` and
/// `account`; an ARN from another account or partition is refused.
pub fn role_arn(db_user: &str, partition: &str, account: &str) -> Result<String, RoleError> {
    if let Some(rest) = db_user.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [found_partition, service, region, found_account, resource] = parts[..] else {
            return Err(RoleError::Malformed(db_user.to_owned()));
        };
        if service != "iam" || !region.is_empty() || !resource.starts_with("role/") || resource.len() <= 5 {
            return Err(RoleError::Malformed(db_user.to_owned()));
        }
        if found_partition != partition {
            return Err(RoleError::OtherPartition { arn: db_user.into(), found: found_partition.into(), expected: partition.into() });
        }
        if found_account != account {
            return Err(RoleError::OtherAccount { arn: db_user.into(), found: found_account.into(), expected: account.into() });
        }
        return Ok(db_user.to_owned());
    }
    let valid = !db_user.is_empty() && db_user.len() <= 64 && db_user.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if !valid {
        return Err(RoleError::Malformed(db_user.to_owned()));
    }
    Ok(format!("arn:{partition}:iam::{account}:role/{db_user}"))
}

/// A role session name for `user`: characters outside `[\w+=,.@-]` become `-`, and names
/// longer than 64 characters keep a prefix plus a short hash of the whole name.
pub fn session_name(user: &str) -> String {
    let clean: String = user.chars().map(|c| if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) { c } else { '-' }).collect();
    let clean = if clean.len() < 2 { format!("portcullis-{clean}") } else { clean };
    if clean.len() <= 64 {
        return clean;
    }
    let hash = hex::encode(&Sha256::digest(user.as_bytes())[..4]);
    format!("{}-{hash}", &clean[..64 - 9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_and_arns_resolve_in_the_database_account_only() {
        assert_eq!(role_arn("reader", "aws", "123456789012").unwrap(), "arn:aws:iam::123456789012:role/reader");
        assert_eq!(role_arn("arn:aws:iam::123456789012:role/team/reader", "aws", "123456789012").unwrap(), "arn:aws:iam::123456789012:role/team/reader");
        assert!(matches!(role_arn("arn:aws:iam::999999999999:role/reader", "aws", "123456789012"), Err(RoleError::OtherAccount { .. })));
        assert!(matches!(role_arn("arn:aws-cn:iam::123456789012:role/reader", "aws", "123456789012"), Err(RoleError::OtherPartition { .. })));
        for bad in ["", "a b", "arn:aws:iam::123456789012:user/bob", "arn:aws:s3:::bucket", "arn:aws:iam:us-east-1:123456789012:role/x"] {
            assert!(matches!(role_arn(bad, "aws", "123456789012"), Err(RoleError::Malformed(_))), "{bad}");
        }
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_of("eu-west-1"), "aws");
    }

    #[test]
    fn session_names_are_sanitised_and_bounded() {
        assert_eq!(session_name("alice@example.com"), "alice@example.com");
        assert_eq!(session_name("system:serviceaccount:ns:sa"), "system-serviceaccount-ns-sa");
        assert_eq!(session_name("Jürgen Müller"), "J-rgen-M-ller");
        let long = "x".repeat(100);
        let name = session_name(&long);
        assert_eq!(name.len(), 64);
        assert_ne!(session_name(&"x".repeat(101)), name, "different long names stay distinct");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
    }
}
