//! What a `Database` must satisfy beyond its schema, checked the same way by every mode: the
//! standalone proxy at start-up, the cluster-mode proxy, `portcullis doctor`, and the operator
//! before it builds anything. Errors name the field and say what to do.

use super::endpoint::{region_from_rds_host, split_endpoint, split_url};
use super::{Database, Protocol};

/// A validation failure of one `Database`: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.endpoint`.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The longest Database name whose proxy objects' names (`portcullis-NAME-tls`) stay valid.
pub const MAX_OPERATOR_NAME: usize = 48;

/// Checks a `Database` the way any proxy needs it.
pub fn validate_database(db: &Database) -> Result<(), FieldError> {
    let spec = &db.spec;
    if spec.protocol == Protocol::Dynamodb {
        if spec.aws.region.is_none() {
            return Err(FieldError { field: "spec.aws.region", message: "required for protocol dynamodb, e.g. us-east-1".into() });
        }
        if spec.aws.account_id.is_none() && spec.aws.assume_role_arn.is_none() {
            return Err(FieldError {
                field: "spec.aws.accountId",
                message: "required for protocol dynamodb (unless spec.aws.assumeRoleArn names the account): users' roles must be in this account".into(),
            });
        }
        if let Some(endpoint) = spec.endpoint.as_deref() {
            split_url(endpoint).map_err(|message| FieldError { field: "spec.endpoint", message })?;
        }
    } else {
        if spec.protocol == Protocol::Mongodb && spec.aws.account_id.is_none() && spec.aws.assume_role_arn.is_none() {
            return Err(FieldError {
                field: "spec.aws.accountId",
                message: "required for protocol mongodb (unless spec.aws.assumeRoleArn names the account): users' roles must be in this account".into(),
            });
        }
        let endpoint = spec.endpoint.as_deref().ok_or(FieldError {
            field: "spec.endpoint",
            message: format!("required for protocol {}: the database's host:port, e.g. orders.abc.us-east-1.rds.amazonaws.com:5432", spec.protocol),
        })?;
        let (host, _) = split_endpoint(endpoint, spec.protocol).map_err(|message| FieldError { field: "spec.endpoint", message })?;
        if spec.aws.region.is_none() && region_from_rds_host(&host).is_none() {
            return Err(FieldError { field: "spec.aws.region", message: format!("required: the endpoint host {host:?} names no AWS region") });
        }
    }
    if let Some(arn) = spec.aws.assume_role_arn.as_deref()
        && !is_role_arn(arn)
    {
        return Err(FieldError { field: "spec.aws.assumeRoleArn", message: format!("{arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)") });
    }
    if spec.aws.external_id.is_some() && spec.aws.assume_role_arn.is_none() {
        return Err(FieldError { field: "spec.aws.externalId", message: "only used with spec.aws.assumeRoleArn, which is not set".into() });
    }
    if spec.proxy.iam_role_arn.is_some() && spec.proxy.service_account_name.is_some() {
        return Err(FieldError {
            field: "spec.proxy.iamRoleArn",
            message: "set either iamRoleArn (the operator creates the ServiceAccount) or serviceAccountName, not both".into(),
        });
    }
    Ok(())
}

/// Checks a `Database` the operator is to run a proxy for: everything [`validate_database`]
/// checks, a name its proxy objects can carry, and `spec.proxy`.
pub fn validate_for_operator(db: &Database) -> Result<(), FieldError> {
    let name = db.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_OPERATOR_NAME || !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.contains('.') {
        return Err(FieldError {
            field: "metadata.name",
            message: format!(
                "{name:?} cannot name the proxy's Service: use at most {MAX_OPERATOR_NAME} characters, lower-case letters, digits and '-', starting with a letter"
            ),
        });
    }
    validate_database(db)?;
    if let Some(type_) = db.spec.proxy.service.as_ref().and_then(|s| s.type_.as_deref())
        && !matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        return Err(FieldError { field: "spec.proxy.service.type", message: format!("{type_:?} is not ClusterIP, NodePort or LoadBalancer") });
    }
    if let Some(endpoint) = db.spec.proxy.external_endpoint.as_deref() {
        split_endpoint(endpoint, db.spec.protocol).map_err(|message| FieldError { field: "spec.proxy.externalEndpoint", message })?;
    }
    if let Some(arn) = db.spec.proxy.iam_role_arn.as_deref()
        && !is_role_arn(arn)
    {
        return Err(FieldError { field: "spec.proxy.iamRoleArn", message: format!("{arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)") });
    }
    Ok(())
}

fn is_role_arn(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.contains(":role/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str, extra: &str) -> Database {
        serde_yaml::from_str(&format!(
            "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: {name}, namespace: n}}\nspec: {{protocol: postgres, endpoint: 'a.b.us-east-1.rds.amazonaws.com', {extra}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn names_fields_that_are_wrong() {
        assert!(validate_for_operator(&db("orders", "")).is_ok());
        assert_eq!(validate_for_operator(&db("Orders", "")).unwrap_err().field, "metadata.name");
        assert_eq!(validate_for_operator(&db(&"a".repeat(49), "")).unwrap_err().field, "metadata.name");
        assert_eq!(validate_for_operator(&db("o", "proxy: {service: {type: Headless}}")).unwrap_err().field, "spec.proxy.service.type");
        assert_eq!(validate_for_operator(&db("o", "proxy: {externalEndpoint: 'lb.example.com:0'}")).unwrap_err().field, "spec.proxy.externalEndpoint");
        assert!(validate_for_operator(&db("o", "proxy: {externalEndpoint: 'lb.example.com'}")).is_ok());
        assert_eq!(validate_for_operator(&db("o", "proxy: {iamRoleArn: nope}")).unwrap_err().field, "spec.proxy.iamRoleArn");
        assert_eq!(validate_for_operator(&db("o", "aws: {externalId: x}")).unwrap_err().field, "spec.aws.externalId");
    }

    #[test]
    fn the_proxy_does_not_care_about_names_it_never_uses() {
        assert!(validate_database(&db("Orders.v2", "")).is_ok());
        assert_eq!(validate_database(&db("o", "aws: {assumeRoleArn: 'arn:aws:iam::1:user/x'}")).unwrap_err().field, "spec.aws.assumeRoleArn");
    }

    #[test]
    fn a_region_is_needed_when_the_endpoint_names_none() {
        let mut private = db("o", "");
        private.spec.endpoint = Some("10.0.0.5:5432".into());
        assert_eq!(validate_database(&private).unwrap_err().field, "spec.aws.region");
        private.spec.aws.region = Some("eu-west-1".into());
        assert!(validate_database(&private).is_ok());
    }
}
