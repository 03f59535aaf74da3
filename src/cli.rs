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
