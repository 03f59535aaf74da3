//! What the operator checks in a `Database` beyond the CRD schema, before it builds anything.

use kube::ResourceExt;

use crate::crd::Database;
use crate::proxy::{FieldError, validate_database};

/// The longest Database name whose children's names (`portcullis-NAME-tls`) stay valid.
const MAX_NAME: usize = 48;

/// Checks the spec; the error names the field and says what to do.
pub fn validate(db: &Database) -> Result<(), FieldError> {
    let name = db.name_any();
    if name.len() > MAX_NAME || !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.contains('.') {
        return Err(FieldError {
            field: "metadata.name",
            message: format!(
                "{name:?} cannot name the proxy's Service: use at most {MAX_NAME} characters, lower-case letters, digits and '-', starting with a letter"
            ),
        });
    }
    validate_database(db)?;
    if let Some(type_) = db.spec.proxy.service.as_ref().and_then(|s| s.type_.as_deref())
        && !matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        return Err(FieldError { field: "spec.proxy.service.type", message: format!("{type_:?} is not ClusterIP, NodePort or LoadBalancer") });
    }
    if let Some(arn) = db.spec.proxy.iam_role_arn.as_deref()
        && (!arn.starts_with("arn:") || !arn.contains(":role/"))
    {
        return Err(FieldError { field: "spec.proxy.iamRoleArn", message: format!("{arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)") });
    }
    Ok(())
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
        assert!(validate(&db("orders", "")).is_ok());
        assert_eq!(validate(&db("Orders", "")).unwrap_err().field, "metadata.name");
        assert_eq!(validate(&db(&"a".repeat(49), "")).unwrap_err().field, "metadata.name");
        assert_eq!(validate(&db("o", "proxy: {service: {type: Headless}}")).unwrap_err().field, "spec.proxy.service.type");
        assert_eq!(validate(&db("o", "proxy: {iamRoleArn: nope}")).unwrap_err().field, "spec.proxy.iamRoleArn");
        assert_eq!(validate(&db("o", "aws: {externalId: x}")).unwrap_err().field, "spec.aws.externalId");
    }
}
