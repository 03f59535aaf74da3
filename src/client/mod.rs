//! What a user runs: `portcullis login` and `portcullis db login` get a short-lived client
//! certificate through the Kubernetes CSR API with the user's own kubeconfig;
//! `portcullis db connect` runs the database's own client ([`connect`]) on the way to the proxy
//! [`reach`] finds; `portcullis db proxy --tunnel` carries local clients to the proxy
//! ([`tunnel`]); `portcullis db ls` lists what the caller may reach ([`list`]); `status` and
//! `db logout` look after the stored certificates ([`store`]).

pub mod aws_profile;
pub mod connect;
pub mod list;
pub mod reach;
pub mod store;
pub mod tunnel;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::authz::{Identity, Route};
use crate::cli::{KubeArgs, LoginArgs};
use crate::pki::{CSR_SIGNER_NAME as SIGNER_NAME, new_client_request, write_private};

/// The Database a user names to `db login`, `db connect` and `db proxy`, with the db user and db
/// name they ask for.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// The Database's name.
    pub database: String,
    /// Its namespace, when given.
    pub namespace: Option<String>,
    /// The db user to limit the certificate to.
    pub db_user: Option<String>,
    /// The db name to limit the certificate to.
    pub db_name: Option<String>,
}

/// Rows of cells as kubectl prints tables: each column padded to its widest cell, three spaces
/// apart, no trailing blanks.
pub fn columns(lines: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..lines.first().map_or(0, Vec::len)).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `portcullis login` and `db login`: creates a CertificateSigningRequest, waits for the
/// operator's decision, stores the certificate, key and CA, and says how to use them.
pub async fn login(target: Option<DbTarget>, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.kube).await?;
    let namespace = target.as_ref().map(|t| t.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned()));
    let route = target.as_ref().zip(namespace.as_ref()).map(|(t, ns)| Route {
        database: Some(format!("{ns}/{}", t.database)),
        db_user: t.db_user.clone(),
        db_name: t.db_name.clone(),
    });
    let dir = args.out.clone().unwrap_or_else(|| default_dir(route.as_ref()));
    let identity = request_certificate(&client, route.as_ref(), &args, &dir).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires = format!("{} ({})", store::utc_time(identity.not_after), store::remaining(identity.not_after, now));
    println!("certificate for user {:?} (groups {:?}) valid until {expires}", identity.user, identity.groups);
    println!("files: {}/{{client.crt,client.key,ca.crt}}", dir.display());
    if let Some(route) = &identity.route {
        println!("limited to {}", route.to_uri());
    }
    if let (Some(t), Some(ns)) = (&target, &namespace) {
        let endpoint = proxy_endpoint(&client, ns, &t.database).await;
        let (host, port) = endpoint.as_deref().and_then(|e| e.rsplit_once(':')).unwrap_or(("PROXY_HOST", "PORT"));
        println!("connect: portcullis db connect {} -n {ns}   (finds the proxy, renews the certificate, runs the client)", t.database);
        println!(
            "or by hand: psql \"host={host} port={port} sslmode=verify-full sslrootcert={0}/ca.crt sslcert={0}/client.crt sslkey={0}/client.key user={1} dbname={2}\"",
            dir.display(),
            t.db_user.as_deref().unwrap_or("DB_USER"),
            t.db_name.as_deref().unwrap_or("DB_NAME"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the Database's status says its proxy is: the external endpoint when it has one.
async fn proxy_endpoint(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let db = Api::<crate::crd::Database>::namespaced(client.clone(), namespace).get_opt(name).await.ok()??;
    let status = db.status?;
    status.external_endpoint.or(status.proxy_endpoint)
}

/// Makes sure `dir` holds a certificate for `route` and for the caller as the API server sees
/// it now, valid for at least another minute: reuses the stored one, else requests one.
pub async fn certificate(client: &Client, caller: &Identity, route: &Route, args: &LoginArgs, dir: &Path) -> anyhow::Result<Identity> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let stale = match store::read(dir) {
        Err(_) => None,
        Ok(stored) => {
            let groups = (crate::authz::certificate_groups(&stored.groups), crate::authz::certificate_groups(&caller.groups));
            if stored.not_after <= now + RENEW_MARGIN_SECONDS {
                Some(format!("the stored certificate {}", store::remaining(stored.not_after, now).replace("in ", "expires in ")))
            } else if stored.route.as_ref() != Some(route) {
                Some(format!("the stored certificate is for {}", stored.route.as_ref().map_or("any database".to_owned(), Route::to_uri)))
            } else if stored.user != caller.user || groups.0 != groups.1 {
                Some(format!("the stored certificate is for {:?} in groups {:?}, you are {:?} in {:?}", stored.user, groups.0, caller.user, groups.1))
            } else {
                eprintln!("using the stored certificate (valid until {}, {})", store::utc_time(stored.not_after), store::remaining(stored.not_after, now));
                return Ok(stored);
            }
        }
    };
    if let Some(why) = stale {
        eprintln!("{why}: getting a new one");
    }
    let identity = request_certificate(client, Some(route), args, dir).await?;
    eprintln!("certificate valid until {} ({})", store::utc_time(identity.not_after), store::remaining(identity.not_after, now));
    Ok(identity)
}

/// A stored certificate this close to its end is renewed rather than used.
const RENEW_MARGIN_SECONDS: i64 = 60;

/// The CSR flow: a new key, a CertificateSigningRequest for the operator's signer, its
/// decision, and the certificate, key and CA written to `dir`.
async fn request_certificate(client: &Client, route: Option<&Route>, args: &LoginArgs, dir: &Path) -> anyhow::Result<Identity> {
    let (csr_pem, key_pem) = new_client_request(route).context("creating a key and certificate request")?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = format!("portcullis-{}", hex::encode(rand::random::<[u8; 6]>()));
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: SIGNER_NAME.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            expiration_seconds: args.ttl.map(|t| i32::try_from(t.as_secs().max(600)).unwrap_or(i32::MAX)),
            ..Default::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &csr).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "your Kubernetes user may not create CertificateSigningRequests ({}); ask an admin to grant `create` on certificatesigningrequests (certificates.k8s.io)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "the API server does not know who you are (401 {}): check that your kubeconfig's user has credentials (a client certificate, token or exec plugin)",
            s.reason
        ),
        other => anyhow::Error::new(other).context("creating the CertificateSigningRequest"),
    })?;
    eprintln!("requested certificate {name} from signer {SIGNER_NAME}; waiting for the operator…");
    let chain = wait_for_certificate(&api, &name, args.timeout).await?;
    let (leaf, ca) = split_chain(&chain)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("client.crt"), &leaf).with_context(|| format!("writing {}", dir.join("client.crt").display()))?;
    write_private(&dir.join("client.key"), &key_pem)?;
    std::fs::write(dir.join("ca.crt"), &ca).with_context(|| format!("writing {}", dir.join("ca.crt").display()))?;
    Ok(crate::authz::identity_from_certificate(&pem_to_der(&leaf)?)?)
}

/// A Kubernetes client for the user's kubeconfig and context.
pub async fn client(kube: &KubeArgs) -> anyhow::Result<Client> {
    let options = kube::config::KubeConfigOptions { context: kube.context.clone(), ..Default::default() };
    let config = match (&kube.kubeconfig, &kube.context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await.with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        (None, Some(context)) => kube::Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("using context {context:?} of the kubeconfig (KUBECONFIG or ~/.kube/config)"))?,
        (None, None) => kube::Config::infer().await.context("finding a kubeconfig (set KUBECONFIG or --kubeconfig)")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// Polls until the request is issued or denied.
async fn wait_for_certificate(api: &Api<CertificateSigningRequest>, name: &str, timeout: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let csr = api.get(name).await.with_context(|| format!("reading CertificateSigningRequest {name}"))?;
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.as_deref().unwrap_or(&[]) {
            if c.type_ == "Denied" || c.type_ == "Failed" {
                bail!("the operator refused: {} ({})", c.message.as_deref().unwrap_or("no message"), c.reason.as_deref().unwrap_or(&c.type_));
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(String::from_utf8_lossy(&cert.0).into_owned());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no decision on CertificateSigningRequest {name} after {}: is the Portcullis operator running? (`kubectl get csr {name}`, `kubectl -n portcullis-system logs deploy/portcullis-operator`)",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Splits the issued chain into the leaf and the rest (the CA).
fn split_chain(chain: &str) -> anyhow::Result<(String, String)> {
    const END: &str = "-----END CERTIFICATE-----";
    let first_end = chain.find(END).context("the issued certificate is not PEM")? + END.len();
    let (leaf, rest) = chain.split_at(first_end);
    let ca = rest.trim_start();
    if ca.is_empty() {
        bail!("the issued chain carries no CA certificate; is the signer a Portcullis operator?");
    }
    Ok((format!("{}\n", leaf.trim()), ca.to_owned()))
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    Ok(CertificateDer::from_pem_slice(pem.as_bytes()).context("parsing the issued certificate")?.to_vec())
}

fn default_dir(route: Option<&Route>) -> PathBuf {
    let leaf = match route {
        Some(route) => route.database.clone().unwrap_or_default().replace('/', "-"),
        None => "login".into(),
    };
    store::root().join(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_split_into_leaf_and_ca() {
        let chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let (leaf, ca) = split_chain(chain).unwrap();
        assert!(leaf.contains("AAA") && !leaf.contains("BBB"));
        assert!(ca.contains("BBB") && !ca.contains("AAA"));
        assert!(split_chain("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
