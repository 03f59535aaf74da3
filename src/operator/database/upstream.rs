//! Upstream: whether a proxy could log in upstream as the Database is written, as far as the
//! operator can tell without connecting: the endpoint is one the admin's allow-list lets IAM
//! tokens (or signed requests) go to, and the upstream CA Secret exists and holds a CA.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::aws::EndpointPolicy;
use crate::crd::endpoint::{split_endpoint, split_url};
use crate::crd::{Database, Protocol};

/// What is wrong, for the `UpstreamConfigured` condition; `None` when nothing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The condition's reason.
    pub reason: &'static str,
    /// What to do, naming the host or Secret and the setting to change.
    pub message: String,
}

/// The endpoint host against the operator's allow-list (`--allowed-endpoint`), the same
/// policy the proxies enforce.
pub fn endpoint_problem(db: &Database, allowed: &[String]) -> Option<Problem> {
    let endpoint = db.spec.endpoint.as_deref()?;
    let policy = EndpointPolicy::new(allowed.to_vec());
    let (host, refused) = match db.spec.protocol {
        Protocol::Dynamodb => {
            let (_, host, _) = split_url(endpoint).ok()?;
            let refused = policy.check_signed_request(&host).is_err();
            (host, refused.then_some("it is not an AWS DynamoDB endpoint (dynamodb.REGION.amazonaws.com, a *.vpce.amazonaws.com VPC endpoint)"))
        }
        protocol => {
            let (host, _) = split_endpoint(endpoint, protocol).ok()?;
            let refused = policy.check(&host).is_err();
            (host, refused.then_some("it is not an AWS database endpoint (*.rds.amazonaws.com, *.docdb.amazonaws.com)"))
        }
    };
    refused.map(|why| Problem {
        reason: "EndpointNotAllowed",
        message: format!(
            "the proxy will refuse every session: it sends no IAM credentials to {host:?}, because {why}. If this host really is your database (a private DNS name, a CNAME, a tunnel), a cluster admin allows it with the operator flag --allowed-endpoint {host} (Helm value operator.allowedEndpoints)"
        ),
    })
}

/// The Secret `spec.tls.caSecretRef` names, read from the API server.
pub async fn ca_problem(db: &Database, client: &Client) -> Result<Option<Problem>, kube::Error> {
    let Some(reference) = &db.spec.tls.ca_secret_ref else { return Ok(None) };
    let ns = db.namespace().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&reference.name).await?;
    Ok(secret_problem(secret.as_ref(), &ns, &reference.name, &reference.key))
}

/// What is wrong with the CA Secret as read (pure).
pub fn secret_problem(secret: Option<&Secret>, ns: &str, name: &str, key: &str) -> Option<Problem> {
    let Some(secret) = secret else {
        return Some(Problem {
            reason: "CaSecretMissing",
            message: format!(
                "Secret {name:?} (spec.tls.caSecretRef) does not exist in namespace {ns}, so the proxy pods cannot start: create it from your CA bundle, e.g. `kubectl -n {ns} create secret generic {name} --from-file={key}=global-bundle.pem`"
            ),
        });
    };
    let data = secret.data.as_ref();
    let Some(value) = data.and_then(|d| d.get(key)) else {
        let keys: Vec<&str> = data.map(|d| d.keys().map(String::as_str).collect()).unwrap_or_default();
        return Some(Problem {
            reason: "CaSecretKeyMissing",
            message: format!(
                "Secret {name:?} in namespace {ns} has no key {key:?} (it has: {}): set spec.tls.caSecretRef.key or add the CA under {key:?}",
                if keys.is_empty() { "none".to_owned() } else { keys.join(", ") }
            ),
        });
    };
    if !String::from_utf8_lossy(&value.0).contains("-----BEGIN CERTIFICATE-----") {
        return Some(Problem {
            reason: "CaSecretNotPem",
            message: format!(
                "key {key:?} of Secret {name:?} in namespace {ns} holds no PEM certificate: put the CA bundle there (-----BEGIN CERTIFICATE----- …)"
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(spec: &str) -> Database {
        serde_yaml::from_str(&format!("apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {{name: orders, namespace: shop}}\nspec: {spec}\n"))
            .unwrap()
    }

    #[test]
    fn hosts_outside_aws_need_the_admins_allow_list() {
        let rds = db("{protocol: postgres, endpoint: 'orders.abc.eu-west-1.rds.amazonaws.com'}");
        assert_eq!(endpoint_problem(&rds, &[]), None);
        let private = db("{protocol: postgres, endpoint: 'db.internal:5432', aws: {region: eu-west-1}}");
        let problem = endpoint_problem(&private, &[]).unwrap();
        assert_eq!(problem.reason, "EndpointNotAllowed");
        assert!(problem.message.contains("\"db.internal\"") && problem.message.contains("--allowed-endpoint db.internal"), "{}", problem.message);
        assert!(problem.message.contains("operator.allowedEndpoints"));
        assert_eq!(endpoint_problem(&private, &["db.internal".into()]), None);
        let ddb = db("{protocol: dynamodb, endpoint: 'http://127.0.0.1:8000', aws: {region: eu-west-1}}");
        assert!(endpoint_problem(&ddb, &[]).unwrap().message.contains("DynamoDB"));
        assert_eq!(endpoint_problem(&ddb, &["127.0.0.1".into()]), None);
        assert_eq!(endpoint_problem(&db("{protocol: dynamodb, aws: {region: eu-west-1}}"), &[]), None, "the regional AWS endpoint");
    }

    #[test]
    fn the_ca_secret_must_exist_have_the_key_and_hold_a_certificate() {
        let secret = |data: &[(&str, &str)]| -> Secret {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "rds-ca"}, "data": data.iter().map(|(k, v)| (k.to_string(), base64_of(v))).collect::<std::collections::BTreeMap<_, _>>()})).unwrap()
        };
        assert_eq!(secret_problem(None, "shop", "rds-ca", "ca.crt").unwrap().reason, "CaSecretMissing");
        let p = secret_problem(Some(&secret(&[("bundle.pem", "x")])), "shop", "rds-ca", "ca.crt").unwrap();
        assert_eq!(p.reason, "CaSecretKeyMissing");
        assert!(p.message.contains("bundle.pem"), "{}", p.message);
        assert_eq!(secret_problem(Some(&secret(&[("ca.crt", "not a certificate")])), "shop", "rds-ca", "ca.crt").unwrap().reason, "CaSecretNotPem");
        assert_eq!(
            secret_problem(Some(&secret(&[("ca.crt", "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n")])), "shop", "rds-ca", "ca.crt"),
            None
        );
    }

    fn base64_of(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
