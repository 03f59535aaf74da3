//! `portcullis db ls`: the Databases the caller may reach, each with the db users and db names
//! its AccessRoles allow, for the caller as the API server sees it (`SelfSubjectReview`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::authz::{DatabaseRef, Grant, Identity, grant};
use crate::cli::ListOutput as Output;
use crate::crd::conditions::{status, types};
use crate::crd::{AccessRole, Database};

/// What to list.
#[derive(Debug, Clone)]
pub struct ListArgs {
    /// One namespace (default: the kubeconfig context's).
    pub namespace: Option<String>,
    /// Every namespace.
    pub all_namespaces: bool,
    /// Also Databases the caller cannot reach.
    pub all: bool,
    /// The format.
    pub output: Output,
    /// The kubeconfig and context.
    pub kube: crate::cli::KubeArgs,
}

/// One Database as `db ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its protocol.
    pub protocol: String,
    /// Whether its `Ready` condition is True.
    pub ready: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its endpoint.
    pub endpoint: String,
    /// What the caller may use on it; `None` when it cannot reach it (shown with `--all`).
    pub access: Option<Grant>,
}

/// The rows for `identity`: every Database it may reach (all of them with `all`), sorted.
pub fn rows(identity: &Identity, databases: &[Database], roles: &[AccessRole], all: bool) -> Vec<Row> {
    let mut rows: Vec<Row> = databases
        .iter()
        .map(|db| {
            let namespace = db.namespace().unwrap_or_else(|| "default".into());
            let labels = db.labels().clone();
            let name = db.name_any();
            let access = grant(identity, &DatabaseRef { namespace: &namespace, name: &name, labels: &labels }, roles);
            let ready = db.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == types::READY && c.status == status::TRUE));
            Row { name, namespace, protocol: db.spec.protocol.to_string(), ready, labels, endpoint: db.spec.endpoint.clone().unwrap_or_default(), access }
        })
        .filter(|r| all || r.access.is_some())
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// The caller as the API server sees it.
pub async fn whoami(client: &Client) -> anyhow::Result<Identity> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api.create(&PostParams::default(), &SelfSubjectReview::default()).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => anyhow::anyhow!(
            "the API server does not know who you are ({} {}): check that your kubeconfig's user has credentials (a client certificate, token or exec plugin)",
            s.code,
            s.reason
        ),
        other => anyhow::Error::new(other).context("asking the API server who you are (SelfSubjectReview)"),
    })?;
    let info = review.status.and_then(|s| s.user_info).context("the API server's SelfSubjectReview names no user")?;
    if info.username.as_deref() == Some("system:anonymous") {
        anyhow::bail!(
            "the API server sees you as system:anonymous: your kubeconfig's user has no credentials (add a client certificate, token or exec plugin, e.g. with your cloud's `… update-kubeconfig`)"
        );
    }
    Ok(Identity { user: info.username.unwrap_or_default(), groups: info.groups.unwrap_or_default(), ..Default::default() })
}

/// `portcullis db ls`.
pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.kube).await?;
    let identity = whoami(&client).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let (databases, roles): (Api<Database>, Api<AccessRole>) = if args.all_namespaces {
        (Api::all(client.clone()), Api::all(client))
    } else {
        (Api::namespaced(client.clone(), &namespace), Api::namespaced(client, &namespace))
    };
    let place = if args.all_namespaces { "in any namespace".to_owned() } else { format!("in namespace {namespace}") };
    let forbidden = |what: &str, e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "your Kubernetes user {:?} may not list {what} {place}: ask an admin to bind the ClusterRole portcullis-user to you (the Helm chart binds it to every authenticated user unless login.rbac.create=false)",
            identity.user
        ),
        other => anyhow::Error::new(other).context(format!("listing {what} {place}")),
    };
    let databases = databases.list(&ListParams::default()).await.map_err(|e| forbidden("Databases", e))?.items;
    let roles = roles.list(&ListParams::default()).await.map_err(|e| forbidden("AccessRoles", e))?.items;
    let rows = rows(&identity, &databases, &roles, args.all);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&rows)?),
        Output::Table | Output::Wide => {
            if rows.is_empty() {
                eprintln!(
                    "no Database {place} that {} may reach ({} in all; `--all` lists them, `portcullis db ls -A` looks in every namespace)",
                    identity.user,
                    databases.len()
                );
            } else {
                print!("{}", table(&rows, args.output == Output::Wide, args.all_namespaces));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows as a table, columns padded like kubectl's.
pub fn table(rows: &[Row], wide: bool, namespaces: bool) -> String {
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(",") };
    let mut header = vec!["NAME", "PROTOCOL", "READY", "DB USERS", "DB NAMES"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["ENDPOINT", "LABELS", "ACCESS ROLES", "DENIED"]);
    }
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        let (users, names, roles, denied) = match &r.access {
            Some(g) => (list(&g.db_users), list(&g.db_names), list(&g.roles), list(&g.denied)),
            None => ("(no access)".to_owned(), "-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        let mut line = vec![r.name.clone(), r.protocol.clone(), if r.ready { "True" } else { "False" }.to_owned(), users, names];
        if namespaces {
            line.insert(0, r.namespace.clone());
        }
        if wide {
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.extend([if r.endpoint.is_empty() { "-".to_owned() } else { r.endpoint.clone() }, list(&labels), roles, denied]);
        }
        lines.push(line);
    }
    super::columns(&lines)
}
