//! What a user runs: `portcullis login` and `portcullis db login` get a short-lived client
//! certificate through the Kubernetes CSR API with the user's own kubeconfig;
//! `portcullis db proxy --tunnel` carries local clients to the proxy ([`tunnel`]); `portcullis
//! db ls` lists what the caller may reach ([`list`]); `status` and `db logout` look after the
//! stored certificates ([`store`]).

pub mod list;
pub mod store;
pub mod tunnel;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::authz::Route;
use crate::cli::LoginArgs;
use crate::pki::{CSR_SIGNER_NAME as SIGNER_NAME, new_client_request, write_private};

/// `db login`'s target.
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

/// Creates a CertificateSigningRequest, waits for the operator's decision, and stores the
/// certificate, key and CA.
pub async fn login(target: Option<DbTarget>, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let route = target.as_ref().map(|t| Route {
        database: Some(format!("{}/{}", t.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned()), t.database)),
        db_user: t.db_user.clone(),
        db_name: t.db_name.clone(),
    });
    let (csr_pem, key_pem) = new_client_request(route.as_ref()).context("creating a key and certificate request")?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
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
        other => anyhow::Error::new(other).context("creating the CertificateSigningRequest"),
    })?;
    eprintln!("requested certificate {name} from signer {SIGNER_NAME}; waiting for the operator…");
    let chain = wait_for_certificate(&api, &name, args.timeout).await?;
    let (leaf, ca) = split_chain(&chain)?;
    let dir = args.out.unwrap_or_else(|| default_dir(target.as_ref().zip(route.as_ref())));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("client.crt"), &leaf).with_context(|| format!("writing {}", dir.join("client.crt").display()))?;
    write_private(&dir.join("client.key"), &key_pem)?;
    std::fs::write(dir.join("ca.crt"), &ca).with_context(|| format!("writing {}", dir.join("ca.crt").display()))?;
    let identity = crate::authz::identity_from_certificate(&pem_to_der(&leaf)?)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires = format!("{} ({})", store::utc_time(identity.not_after), store::remaining(identity.not_after, now));
    println!("certificate for user {:?} (groups {:?}) valid until {expires}", identity.user, identity.groups);
    println!("files: {}/{{client.crt,client.key,ca.crt}}", dir.display());
    if let Some(route) = &identity.route {
        println!("limited to {}", route.to_uri());
    }
    println!(
        "psql \"host=<proxy service> sslmode=verify-full sslrootcert={0}/ca.crt sslcert={0}/client.crt sslkey={0}/client.key user=<db user> dbname=<db name>\"",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.context("using the kubeconfig")?
        }
        None => kube::Config::infer().await.context("finding a kubeconfig (set KUBECONFIG or --kubeconfig)")?,
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

fn default_dir(target: Option<(&DbTarget, &Route)>) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let leaf = match target {
        Some((_, route)) => route.database.clone().unwrap_or_default().replace('/', "-"),
        None => "login".into(),
    };
    home.join(".portcullis").join("certs").join(leaf)
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
