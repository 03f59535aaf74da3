//! The proxy's configuration file (`portcullis proxy --config FILE`): one typed struct that the
//! proxy loads (strictly: unknown fields are errors naming file and field) and the operator
//! builds and writes into each proxy's ConfigMap. Every field is documented in
//! docs/standalone.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of loading the proxy's configuration (and, in standalone mode, its manifests).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A YAML document is malformed or does not fit the expected shape.
    #[error("{path}: {document}: {field}: {message}")]
    Invalid { path: String, document: String, field: String, message: String },
    /// The configuration is well-formed but inconsistent.
    #[error("{path}: {message}")]
    Inconsistent { path: String, message: String },
}

/// The proxy's configuration file (`portcullis proxy --config FILE`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the proxy listens. One proxy may serve several databases.
    pub listeners: Vec<ListenerConfig>,
    /// The proxy's TLS server certificate and the CA that signs client certificates.
    pub tls: ServerTlsConfig,
    /// The admin HTTP port with `/metrics`, `/healthz` and `/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    /// Where audit events go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// AWS settings shared by all databases.
    #[serde(default, skip_serializing_if = "is_default")]
    pub aws: AwsConfig,
    /// Files or directories of `Database` and `AccessRole` manifests (the same YAML that
    /// `kubectl apply` accepts). Relative paths are relative to this file. Required in
    /// standalone mode; unused in cluster mode (`--database`), where the API is the source.
    #[serde(default)]
    pub resources: Vec<PathBuf>,
    /// A directory laid out like mounted Kubernetes Secrets (`<dir>/<secret>/<key>`), where
    /// `spec.tls.caSecretRef` is looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// Limits of the proxy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: LimitsConfig,
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:6432`.
    pub address: SocketAddr,
    /// The `Database` this listener serves (`name` or `namespace/name`). When absent, the
    /// database is taken from the client certificate's route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The protocol of a listener without `database` (default `postgres`); with `database`,
    /// the database's protocol (a different value here is an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<crate::crd::Protocol>,
}

/// The proxy's own TLS identity and the client CA.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The server private key (PEM).
    pub key_file: PathBuf,
    /// The CA whose client certificates are accepted (PEM).
    pub client_ca_file: PathBuf,
}

/// The admin HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port`, e.g. `127.0.0.1:9090`.
    pub address: SocketAddr,
}

/// Audit sinks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Write events as JSON lines to standard output.
    #[serde(default)]
    pub stdout: bool,
    /// Append events as JSON lines to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Events buffered before `onOverflow` applies.
    #[serde(default = "default_queue", skip_serializing_if = "is_default_queue")]
    pub queue_size: usize,
    /// Refused connections audited one by one per client address and reason kind in each
    /// `refusalWindow`; more are counted into one `db.session.refusals` event.
    #[serde(default = "default_refusal_burst", skip_serializing_if = "is_default_refusal_burst")]
    pub refusal_burst: u32,
    /// What a full queue does: `block` (the session waits; nothing is lost) or `drop` (the
    /// event is dropped and counted; the data path never waits).
    #[serde(default, skip_serializing_if = "is_default_overflow")]
    pub on_overflow: crate::proxy::audit::Overflow,
    /// The window of `refusalBurst`.
    #[serde(default = "default_refusal_window", with = "humantime_serde_secs", skip_serializing_if = "is_default_refusal_window")]
    pub refusal_window: std::time::Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
            queue_size: default_queue(),
            on_overflow: Default::default(),
            refusal_burst: default_refusal_burst(),
            refusal_window: default_refusal_window(),
        }
    }
}

fn is_default_overflow(o: &crate::proxy::audit::Overflow) -> bool {
    *o == crate::proxy::audit::Overflow::default()
}

fn default_refusal_burst() -> u32 {
    10
}

fn is_default_refusal_burst(n: &u32) -> bool {
    *n == default_refusal_burst()
}

fn default_refusal_window() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn is_default_refusal_window(d: &std::time::Duration) -> bool {
    *d == default_refusal_window()
}

fn default_queue() -> usize {
    8192
}

fn is_default_queue(size: &usize) -> bool {
    *size == default_queue()
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// AWS settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsConfig {
    /// Hosts besides `*.rds.amazonaws.com` / `*.docdb.amazonaws.com` that may receive IAM
    /// tokens (private DNS names, tunnels, test servers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_endpoints: Vec<String>,
}

/// Limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// New upstream connections per second per database (RDS allows ~200 IAM logins/s).
    #[serde(default = "default_rate")]
    pub upstream_connects_per_second: u32,
    /// How long a client may take to finish TLS and the startup message.
    #[serde(default = "default_handshake", with = "humantime_serde_secs")]
    pub handshake_timeout: std::time::Duration,
    /// How long to wait for the database's TCP connection.
    #[serde(default = "default_connect", with = "humantime_serde_secs")]
    pub connect_timeout: std::time::Duration,
    /// After SIGTERM: how long running sessions may go on (no new ones are accepted) before the
    /// rest are ended with a message saying why.
    #[serde(default = "default_drain", with = "humantime_serde_secs")]
    pub drain_timeout: std::time::Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            upstream_connects_per_second: default_rate(),
            handshake_timeout: default_handshake(),
            connect_timeout: default_connect(),
            drain_timeout: default_drain(),
        }
    }
}

/// The default drain: what the operator's pods' terminationGracePeriodSeconds covers.
pub fn default_drain() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_rate() -> u32 {
    200
}
fn default_handshake() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_connect() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

/// Durations written as people write them (`10s`, `2m`), both ways.
mod humantime_serde_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like 10s or 2m: {e}")))
    }
    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

impl ProxyConfig {
    /// Reads and validates a configuration file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut config: ProxyConfig = parse_document(&text, path, "the proxy configuration")?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.tls.cert_file);
        rebase(&mut config.tls.key_file);
        rebase(&mut config.tls.client_ca_file);
        config.resources.iter_mut().for_each(rebase);
        if let Some(p) = config.audit.file.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.secrets_dir.as_mut() {
            rebase(p);
        }
        let inconsistent = |message: &str| ConfigError::Inconsistent { path: path.display().to_string(), message: message.to_owned() };
        if config.listeners.is_empty() {
            return Err(inconsistent("listeners: at least one listener is required"));
        }
        if config.audit.queue_size == 0 {
            return Err(inconsistent("audit.queueSize must be at least 1"));
        }
        Ok(config)
    }

    /// The configuration as the YAML [`ProxyConfig::load`] reads. Keys are sorted and defaults
    /// left out, so equal configurations give equal text (the operator hashes it to roll pods).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(&sorted(serde_yaml::to_value(self)?))
    }
}

/// `value` with the keys of every mapping in order.
fn sorted(value: serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            let mut entries: Vec<(Value, Value)> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|(a, _), (b, _)| a.as_str().cmp(&b.as_str()));
            Value::Mapping(entries.into_iter().collect())
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Deserializes one YAML document, reporting the failing field's path.
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(text: &str, path: &Path, document: &str) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Invalid {
            path: path.display().to_string(),
            document: document.to_owned(),
            field: if field == "." { "(top level)".into() } else { field },
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests;
