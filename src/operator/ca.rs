//! The operator's CA: created once and kept in a Secret in the operator's namespace. It signs
//! the proxies' server certificates and users' client certificates (via the CSR API).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::info;

use super::context::MANAGED_BY;
use crate::pki::{Ca, PkiError};

/// The Secret (in the operator's namespace) that holds the CA.
pub const CA_SECRET: &str = "portcullis-ca";

/// Why the CA is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or creating the Secret failed.
    #[error("cannot read or create the CA Secret {namespace}/{CA_SECRET}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but holds no usable CA.
    #[error("the CA Secret {namespace}/{CA_SECRET} is unusable: {reason}; delete it to have a new CA made (every issued certificate stops working)")]
    Unusable { namespace: String, reason: String },
    /// Generating the CA failed.
    #[error("cannot generate the CA")]
    Generate(#[source] PkiError),
}

/// Loads the CA from its Secret, creating both on first start. Two operators starting at once
/// cannot make two CAs: the loser of the create race reads the winner's.
pub async fn ensure(client: &Client, namespace: &str) -> Result<Ca, CaError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| CaError::Api { namespace: namespace.to_owned(), source };
    if let Some(secret) = api.get_opt(CA_SECRET).await.map_err(api_err)? {
        return from_secret(&secret, namespace);
    }
    let (_, issued) = Ca::generate("Portcullis CA").map_err(CaError::Generate)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(issued.cert_pem.clone().into_bytes())),
            ("tls.key".to_owned(), ByteString(issued.key_pem.clone().into_bytes())),
        ])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            info!(secret = %format!("{namespace}/{CA_SECRET}"), "created a new CA");
            from_secret(&created, namespace)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => from_secret(&api.get(CA_SECRET).await.map_err(api_err)?, namespace),
        Err(e) => Err(api_err(e)),
    }
}

fn from_secret(secret: &Secret, namespace: &str) -> Result<Ca, CaError> {
    let unusable = |reason: String| CaError::Unusable { namespace: namespace.to_owned(), reason };
    let data = secret.data.as_ref().ok_or_else(|| unusable("it has no data".into()))?;
    let text = |key: &str| data.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned()).ok_or_else(|| unusable(format!("key {key} is missing")));
    Ca::from_pem(&text("tls.crt")?, &text("tls.key")?, &format!("Secret {namespace}/{CA_SECRET}")).map_err(|e| unusable(e.to_string()))
}
