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
    /// Check the whole chain: AWS credentials, caller identity, assume-role hops, IMDS, and
    /// each database's network path, TLS certificate and IAM authentication. Exits non-zero
    /// when a check fails.
    Doctor(DoctorArgs),
    /// Print IAM policy documents for the proxy's identity.
    #[command(subcommand)]
    Iam(IamCommand),
}

/// `portcullis doctor`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["config", "manifests"]))]
pub struct DoctorArgs {
    /// A standalone proxy configuration: its Database manifests and secretsDir are checked.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Database manifests (files or directories) to check, instead of --config.
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
    /// The least-privilege policy for the proxy's identity, for a set of Database and
    /// AccessRole manifests: rds-db:connect per db user, RDS describe actions, rds:ModifyDB*
    /// only where enableIamAuth is set, sts:AssumeRole on the roles it needs. Split into
    /// several documents when it would pass the size limit.
    Policy {
        /// Database and AccessRole manifests (files or directories).
        #[arg(long, required = true, num_args = 1..)]
        manifests: Vec<PathBuf>,
        /// Where the policy will be attached (decides the size limit).
        #[arg(long, value_enum, default_value_t = crate::aws::iam::PolicyKind::Managed)]
        kind: crate::aws::iam::PolicyKind,
        /// Grant sts:AssumeRole on roles with this tag (`key=value`) instead of listing them.
        #[arg(long)]
        role_tag: Option<String>,
    },
    /// The IRSA trust policy letting one Kubernetes ServiceAccount assume the proxy's role.
    TrustPolicy {
        /// The cluster's IAM OIDC provider ARN
        /// (arn:aws:iam::ACCOUNT:oidc-provider/oidc.eks.REGION.amazonaws.com/id/ID).
        #[arg(long)]
        oidc_provider_arn: String,
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
