//! The command line: every subcommand and option, with help that explains.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Identity-aware, audited access to AWS databases (RDS/Aurora PostgreSQL and MySQL,
/// DocumentDB, DynamoDB) without database passwords or AWS keys.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, propagate_version = true)]
pub struct Cli {
    /// Log filter, e.g. `info`, `debug`, `portcullis=debug` (RUST_LOG overrides it).
    #[arg(long, global = true, env = "PORTCULLIS_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format on standard error.
    #[arg(long, global = true, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the access proxy (standalone: from a YAML configuration file).
    Proxy(ProxyArgs),
    /// Print the CustomResourceDefinitions, or write/check them in a directory.
    Crd(CrdArgs),
    /// Manage the local client CA (standalone mode).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue client certificates (standalone mode).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Check the whole chain: AWS credentials, caller identity, assume-role hops (each db user's
    /// role for DocumentDB and DynamoDB), IMDS, and each database's network path, TLS
    /// certificate and IAM authentication. Exits non-zero
    /// when a check fails.
    Doctor(DoctorArgs),
    /// Print IAM policy documents (the proxy's, the operator's, each assumed role's) and trust policies.
    #[command(subcommand)]
    Iam(IamCommand),
    /// Run the Kubernetes operator: reconciles Databases into proxy Deployments, reports
    /// AccessRole matches, and signs client certificates requested with `portcullis login`.
    Operator(OperatorArgs),
    /// Get a short-lived client certificate from the cluster with your Kubernetes login
    /// (a CertificateSigningRequest signed by the operator when an AccessRole allows you).
    Login(LoginArgs),
    /// Work with databases as a user.
    #[command(subcommand)]
    Db(DbCommand),
    /// Show who the API server says you are, and your stored client certificates: their
    /// routes and when they expire.
    Status {
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print a shell completion script, e.g. `source <(portcullis completion bash)` in
    /// ~/.bashrc, `portcullis completion zsh > "${fpath[1]}/_portcullis"`, or
    /// `portcullis completion fish > ~/.config/fish/completions/portcullis.fish`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Whether the binary runs as the kubectl plugin (`kubectl-portcullis`, e.g. a link or copy of
/// `portcullis` on the PATH, so that `kubectl portcullis …` finds it).
pub fn invoked_as_kubectl_plugin(argv0: Option<std::ffi::OsString>) -> bool {
    argv0.as_deref().map(std::path::Path::new).and_then(|p| p.file_stem()).is_some_and(|name| name == "kubectl-portcullis")
}

/// `portcullis operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// The namespace the operator runs in (its CA Secret and leader Lease live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    pub namespace: String,
    /// The container image of the proxy pods.
    #[arg(long, env = "PORTCULLIS_PROXY_IMAGE", default_value = concat!("ghcr.io/portcullis/portcullis:", env!("CARGO_PKG_VERSION")))]
    pub proxy_image: String,
    /// A host besides *.rds.amazonaws.com / *.docdb.amazonaws.com that proxies may send IAM
    /// tokens to (private DNS names, tunnels). Repeatable.
    #[arg(long = "allowed-endpoint", env = "PORTCULLIS_ALLOWED_ENDPOINTS", value_delimiter = ',')]
    pub allowed_endpoints: Vec<String>,
    /// Check the AWS side (IAM authentication on, endpoint ownership, DocumentDB version and
    /// TLS) with the operator's own AWS identity.
    #[arg(long, env = "PORTCULLIS_AWS_CHECKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub aws_checks: bool,
    /// How often the AWS side is re-checked.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub aws_recheck: std::time::Duration,
    /// Lifetime of proxy server certificates (renewed when a third is left).
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub server_cert_ttl: std::time::Duration,
    /// Client certificate lifetime when no AccessRole sets maxSessionTtl.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub default_client_ttl: std::time::Duration,
    /// The longest client certificate ever issued.
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    pub max_client_ttl: std::time::Duration,
    /// Take part in leader election (only the Lease holder reconciles).
    #[arg(long, env = "PORTCULLIS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// This instance's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "portcullis-operator-local")]
    pub identity: String,
    /// How long the Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: std::time::Duration,
    /// Reconciles running at once, per controller.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PORTCULLIS_ADMIN_ADDRESS", default_value = "0.0.0.0:9090")]
    pub admin_address: std::net::SocketAddr,
    /// Reconcile only the Databases and AccessRoles of this namespace (a namespace-scoped
    /// install whose RBAC is Roles in that namespace). Default: every namespace.
    #[arg(long, env = "PORTCULLIS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Sign client certificates requested with `portcullis login` (needs cluster-wide read
    /// and approve rights on CertificateSigningRequests for the portcullis.io signer).
    #[arg(long, env = "PORTCULLIS_CSR_SIGNER", default_value_t = true, action = clap::ArgAction::Set)]
    pub csr_signer: bool,
    /// YAML file of defaults for every proxy Deployment (replicas, resources, nodeSelector,
    /// tolerations, affinity, priorityClassName, imagePullSecrets, imagePullPolicy, env);
    /// a Database's own `spec.proxy` settings win. The Helm chart mounts it from its values.
    #[arg(long, env = "PORTCULLIS_PROXY_DEFAULTS")]
    pub proxy_defaults: Option<PathBuf>,
}

/// Which cluster and user: kubectl's `--kubeconfig` and `--context` (as a kubectl plugin these
/// are the same flags kubectl takes).
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// ServiceAccount).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current-context).
    #[arg(long)]
    pub context: Option<String>,
}

/// Where and how a user logs in.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Requested certificate lifetime; the operator caps it at the AccessRoles' maxSessionTtl.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// Directory for client.crt, client.key (mode 0600) and ca.crt
    /// (default: ~/.portcullis/certs/<namespace>-<database> or ~/.portcullis/certs/login).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long to wait for the operator's decision.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// How `db ls` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListOutput {
    /// A table.
    Table,
    /// A table with labels, endpoint, the allowing AccessRoles and what deny rules exclude.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `portcullis db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Remove a stored client certificate and its key (~/.portcullis/certs/NAMESPACE-DATABASE),
    /// or all of them.
    Logout {
        /// The Database whose certificate goes.
        #[arg(conflicts_with = "all")]
        database: Option<String>,
        /// Its namespace, when certificates for that name are stored for several.
        #[arg(long, short)]
        namespace: Option<String>,
        /// Remove every stored certificate.
        #[arg(long)]
        all: bool,
    },
    /// List the Databases you may reach, with the db users and db names your AccessRoles allow
    /// (for you as the API server sees you). Databases you cannot reach are hidden unless --all.
    #[command(visible_alias = "list")]
    Ls {
        /// The namespace (default: the kubeconfig context's).
        #[arg(long, short, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Look in every namespace.
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        /// Also list the Databases you cannot reach (shown as "(no access)").
        #[arg(long)]
        all: bool,
        /// The format: table, wide (adds endpoint, labels, the allowing AccessRoles and what
        /// deny rules exclude), json or yaml.
        #[arg(long, short, value_enum, default_value = "table")]
        output: ListOutput,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Get a client certificate limited to one database (and optionally db user and name).
    Login {
        /// The Database's name.
        database: String,
        /// The Database's namespace (default: the kubeconfig context's namespace).
        #[arg(long, short)]
        namespace: Option<String>,
        /// The database user to log in as.
        #[arg(long)]
        db_user: Option<String>,
        /// The database name.
        #[arg(long)]
        db_name: Option<String>,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// Open a local tunnel: clients connect in the clear to 127.0.0.1:PORT, the tunnel carries
    /// each connection to the proxy over mTLS with your certificate. For tools that cannot
    /// present a client certificate (the AWS CLI and SDKs for DynamoDB, GUI tools). In a
    /// cluster it finds the proxy itself (status.externalEndpoint, status.proxyEndpoint, else a
    /// port-forward to a ready proxy pod) and gets or renews the certificate like `db connect`;
    /// --proxy, --cert-dir and --protocol are for a standalone proxy.
    Proxy {
        /// The Database's name (checked against your certificate's route).
        database: String,
        /// The Database's namespace (default: the kubeconfig context's namespace).
        #[arg(long, short)]
        namespace: Option<String>,
        /// Run as a local tunnel (the only mode so far).
        #[arg(long)]
        tunnel: bool,
        /// The local port on 127.0.0.1 (0: a free one, printed on start).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Standalone: the proxy's listener for this database, host:port.
        #[arg(long, requires_all = ["cert_dir", "protocol"])]
        proxy: Option<String>,
        /// Standalone: the directory with client.crt, client.key and ca.crt
        /// (`portcullis cert issue --out DIR`).
        #[arg(long, requires = "proxy")]
        cert_dir: Option<PathBuf>,
        /// Standalone: the database's protocol, which decides how the tunnel opens TLS.
        #[arg(long, value_parser = parse_protocol, requires = "proxy")]
        protocol: Option<crate::crd::Protocol>,
        /// The db user (DynamoDB: the IAM role) you mean to use; must be your certificate's.
        #[arg(long)]
        db_user: Option<String>,
        /// The database name (cluster mode: the certificate is limited to it).
        #[arg(long)]
        db_name: Option<String>,
        /// Standalone: the name to verify in the proxy's certificate (default: the host of --proxy).
        #[arg(long, requires = "proxy")]
        server_name: Option<String>,
        /// DynamoDB: write an AWS CLI/SDK profile NAME (in $AWS_CONFIG_FILE or ~/.aws/config)
        /// whose endpoint_url is this tunnel, so `aws --profile NAME dynamodb …` and boto3 with
        /// profile_name=NAME go through it unchanged. Use a fixed --port to keep it valid.
        #[arg(long, value_name = "NAME")]
        write_aws_profile: Option<String>,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// Connect with the database's own client: psql, mariadb (or mysql), mongosh; for DynamoDB
    /// a local tunnel and the AWS CLI (`-- dynamodb list-tables` runs `aws` with those
    /// arguments; with none, the tunnel runs until Ctrl-C and prints how to use it). Gets a certificate through the CSR flow when none is
    /// stored or the stored one has expired or is for another db user or db name, finds the
    /// proxy (status.externalEndpoint, status.proxyEndpoint, else a port-forward through the
    /// API server to a ready proxy pod), and runs the client with the right TLS flags.
    /// Arguments after `--` go to the client.
    Connect {
        /// The Database's name.
        database: String,
        /// The Database's namespace (default: the kubeconfig context's namespace).
        #[arg(long, short)]
        namespace: Option<String>,
        /// The database user (default: the one your AccessRoles allow, when they allow one).
        #[arg(long)]
        db_user: Option<String>,
        /// The database name (default: the one your AccessRoles allow, when they allow one).
        #[arg(long)]
        db_name: Option<String>,
        /// Run this program instead of the usual client, through a local tunnel, with the
        /// tunnel in its environment (PGHOST, PGPORT, PGUSER, PGDATABASE; MYSQL_HOST,
        /// MYSQL_TCP_PORT; AWS_ENDPOINT_URL_DYNAMODB and dummy AWS keys; PORTCULLIS_HOST,
        /// PORTCULLIS_PORT), e.g. `--exec aws -- dynamodb list-tables`.
        #[arg(long, value_name = "PROGRAM")]
        exec: Option<String>,
        /// Arguments for the client (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// DynamoDB: print the environment for the tunnel of `db proxy DATABASE --tunnel`
    /// (AWS_ENDPOINT_URL_DYNAMODB and dummy keys), e.g. `eval "$(portcullis db env orders)"`.
    Env {
        /// The Database's name.
        database: String,
        /// The Database's namespace (default: the kubeconfig context's namespace).
        #[arg(long, short)]
        namespace: Option<String>,
        /// The tunnel's port (default: the running tunnel's, as it recorded it).
        #[arg(long)]
        port: Option<u16>,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

fn parse_protocol(s: &str) -> Result<crate::crd::Protocol, String> {
    use crate::crd::Protocol;
    match s {
        "postgres" => Ok(Protocol::Postgres),
        "mysql" => Ok(Protocol::Mysql),
        "mongodb" => Ok(Protocol::Mongodb),
        "dynamodb" => Ok(Protocol::Dynamodb),
        other => Err(format!("{other:?} is not one of postgres, mysql, mongodb, dynamodb")),
    }
}

/// `portcullis doctor`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["config", "manifests"]))]
pub struct DoctorArgs {
    /// A standalone proxy configuration: its Database manifests and secretsDir are checked.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Database manifests (files or directories) to check, instead of --config. AccessRoles
    /// among them name the db users whose IAM roles are tried (DocumentDB, DynamoDB).
    #[arg(long, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// Where `spec.tls.caSecretRef` is looked up with --manifests (`<dir>/<secret>/<key>`).
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// Time allowed for each network check.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How reports are printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table with remedies.
    Table,
    /// JSON.
    Json,
}

/// `portcullis iam …`.
#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// The least-privilege policies, one per identity, for a set of Database, AccessRole and
    /// DatabaseDiscovery manifests: the proxy's (rds-db:connect per db user, sts:AssumeRole on
    /// the roles it needs), the operator's (RDS describe actions, rds:ModifyDB* only where
    /// enableIamAuth is set, discovery's list actions, sts:AssumeRole on assumed roles) and
    /// each role named by spec.aws.assumeRoleArn or a matcher (what is done through it).
    /// Printed as a JSON list of {role, purpose, documents}; --role prints one identity's
    /// document alone. Split into several documents when one would pass the size limit.
    Policy {
        /// Database, AccessRole and DatabaseDiscovery manifests (files or directories). A
        /// Database read from the cluster (`kubectl get db -o yaml`) carries status.aws.resourceId,
        /// which names rds-db:connect ARNs exactly.
        #[arg(long, required = true, num_args = 1..)]
        manifests: Vec<PathBuf>,
        /// Print only this identity's policy: `proxy`, `operator`, or an assumed role's ARN.
        /// `proxy+operator` prints one policy for a single identity doing both (a standalone proxy).
        #[arg(long)]
        role: Option<String>,
        /// Where the policy will be attached (decides the size limit).
        #[arg(long, value_enum, default_value_t = crate::aws::iam::PolicyKind::Managed)]
        kind: crate::aws::iam::PolicyKind,
        /// Grant sts:AssumeRole on roles with this tag (`key=value`) instead of listing them.
        #[arg(long)]
        role_tag: Option<String>,
    },
    /// The trust policy letting one Kubernetes ServiceAccount assume a role (the operator's or a
    /// proxy's): IRSA with --oidc-provider-arn, EKS Pod Identity with --pod-identity.
    #[command(group = clap::ArgGroup::new("mechanism").required(true).args(["oidc_provider_arn", "pod_identity"]))]
    TrustPolicy {
        /// IRSA: the cluster's IAM OIDC provider ARN
        /// (arn:aws:iam::ACCOUNT:oidc-provider/oidc.eks.REGION.amazonaws.com/id/ID).
        #[arg(long)]
        oidc_provider_arn: Option<String>,
        /// EKS Pod Identity: trust pods.eks.amazonaws.com (sts:AssumeRole and sts:TagSession),
        /// for this ServiceAccount only (its session tags), then run `aws eks
        /// create-pod-identity-association`.
        #[arg(long)]
        pod_identity: bool,
        /// With --pod-identity: only this cluster's associations (its ARN,
        /// arn:aws:eks:REGION:ACCOUNT:cluster/NAME).
        #[arg(long, conflicts_with = "oidc_provider_arn")]
        cluster_arn: Option<String>,
        /// The ServiceAccount's namespace.
        #[arg(long)]
        namespace: String,
        /// The ServiceAccount's name.
        #[arg(long)]
        service_account: String,
    },
}

/// `portcullis proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The proxy configuration file (listeners, TLS, audit, AWS settings, manifests to load).
    /// See docs/standalone.md for every field.
    #[arg(long, short, env = "PORTCULLIS_CONFIG")]
    pub config: PathBuf,
    /// Cluster mode: serve this Database (`NAMESPACE/NAME`) read from the Kubernetes API,
    /// watch the namespace's AccessRoles live, and report CredentialsResolved and
    /// UpstreamReachable into its status. The config's `resources` are then not used.
    #[arg(long, env = "PORTCULLIS_DATABASE", value_name = "NAMESPACE/NAME")]
    pub database: Option<String>,
    /// Check the configuration and manifests, print a summary, and exit without serving.
    #[arg(long)]
    pub check: bool,
}

/// `portcullis crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// With --out-dir: do not write; fail if the files there differ from the generated ones.
    #[arg(long, requires = "out_dir")]
    pub check: bool,
}

/// `portcullis ca …`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a client CA and a server certificate for the proxy.
    Init {
        /// Directory for ca.crt, ca.key, server.crt and server.key.
        #[arg(long, default_value = "portcullis-ca")]
        dir: PathBuf,
        /// DNS names or IP addresses clients use to reach the proxy (repeatable).
        #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
        /// Lifetime of the server certificate.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        server_ttl: std::time::Duration,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
}

/// `portcullis cert …`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a short-lived client certificate carrying a user, groups and an optional route.
    Issue(IssueArgs),
}

/// `portcullis cert issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA directory made by `portcullis ca init`.
    #[arg(long, default_value = "portcullis-ca")]
    pub ca_dir: PathBuf,
    /// The user name (the certificate's Common Name), matched by AccessRole subjects of kind User.
    #[arg(long)]
    pub user: String,
    /// A group (repeatable), matched by AccessRole subjects of kind Group.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// How long the certificate is valid, e.g. 8h, 30m.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Limit the certificate to this Database (`name` or `namespace/name`); needed when a
    /// listener serves several databases.
    #[arg(long)]
    pub database: Option<String>,
    /// Limit the certificate to this database user.
    #[arg(long)]
    pub db_user: Option<String>,
    /// Limit the certificate to this database name.
    #[arg(long)]
    pub db_name: Option<String>,
    /// Directory for client.crt, client.key (mode 0600) and ca.crt.
    #[arg(long, default_value = "portcullis-client")]
    pub out: PathBuf,
}
