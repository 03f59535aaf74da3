//! DynamoDB through a local tunnel with unchanged AWS tools: `db proxy --tunnel
//! --write-aws-profile NAME` writes a profile whose `endpoint_url` is the tunnel, the tunnel
//! records its port under `~/.portcullis/tunnels/` while it runs, and `db env` prints the
//! environment for it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// Where running tunnels record their local address, one file per `namespace-name`.
pub fn tunnels_dir() -> PathBuf {
    super::store::portcullis_dir().join("tunnels")
}

/// Records a running tunnel; the file goes when the value is dropped.
pub struct Record(PathBuf);

impl Record {
    /// Writes `~/.portcullis/tunnels/<key with / as ->` with `addr`.
    pub fn write(key: &str, addr: std::net::SocketAddr) -> anyhow::Result<Record> {
        let dir = tunnels_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(key.replace('/', "-"));
        std::fs::write(&path, format!("{addr}\n")).with_context(|| format!("writing {}", path.display()))?;
        Ok(Record(path))
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The AWS config file: `$AWS_CONFIG_FILE`, else `~/.aws/config`.
pub fn config_file() -> PathBuf {
    match std::env::var_os("AWS_CONFIG_FILE") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".aws").join("config"),
    }
}

/// The profile's section: the tunnel as endpoint, dummy keys (the proxy signs as the
/// certificate's role), the Database's region.
pub fn profile_section(name: &str, port: u16, region: &str, database: &str) -> String {
    format!(
        "[profile {name}]\n# written by portcullis db proxy {database} --tunnel --port {port}: valid while that tunnel runs\nendpoint_url = http://127.0.0.1:{port}\nregion = {region}\naws_access_key_id = {DUMMY_KEY_ID}\naws_secret_access_key = {DUMMY_SECRET}\n"
    )
}

/// `text` with the section `[profile name]` replaced by (or, when absent, followed by)
/// `section`; every other line is kept as it was.
pub fn with_profile(text: &str, name: &str, section: &str) -> String {
    let header = |line: &str| {
        let t = line.trim();
        (t.starts_with('[') && t.ends_with(']')).then(|| t[1..t.len() - 1].split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let wanted = if name == "default" { vec!["default".to_owned(), "profile default".to_owned()] } else { vec![format!("profile {name}")] };
    let mut out = String::new();
    let mut skipping = false;
    let mut replaced = false;
    for line in text.lines() {
        if let Some(h) = header(line) {
            skipping = wanted.contains(&h);
            if skipping && !replaced {
                out.push_str(section);
                replaced = true;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(section);
    }
    out
}

/// Writes the profile into the AWS config file.
pub fn write_profile(name: &str, port: u16, region: &str, database: &str) -> anyhow::Result<PathBuf> {
    if name.is_empty() || name.contains(['[', ']', '\n']) {
        bail!("{name:?} cannot name an AWS profile");
    }
    let path = config_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, with_profile(&text, name, &profile_section(name, port, region, database))).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `portcullis db env DATABASE`: the environment for a running (or given) tunnel's port. A
/// tunnel of a standalone proxy records itself under the name it was given, a cluster one under
/// `namespace-name`.
pub async fn env(database: String, namespace: Option<String>, port: Option<u16>, kube: crate::cli::KubeArgs) -> anyhow::Result<ExitCode> {
    let port = match port {
        Some(p) => p,
        None => {
            let mut keys = Vec::new();
            match namespace {
                Some(ns) => keys.push(format!("{ns}/{database}")),
                None => {
                    keys.push(database.clone());
                    if let Ok(client) = super::client(&kube).await {
                        keys.push(format!("{}/{database}", client.default_namespace()));
                    }
                }
            }
            let found = keys.iter().find_map(|k| std::fs::read_to_string(tunnels_dir().join(k.replace('/', "-"))).ok().map(|addr| (k, addr)));
            let Some((key, addr)) = found else {
                bail!("no tunnel for {} is running: start `portcullis db proxy {database} --tunnel` first, or give its --port", keys.join(" or "));
            };
            let addr: std::net::SocketAddr = addr.trim().parse().with_context(|| format!("the record of the tunnel for {key} is not an address"))?;
            if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err() {
                bail!("the tunnel for {key} does not answer at {addr} any more: start it again");
            }
            addr.port()
        }
    };
    for (k, v) in dynamodb_environment(&port.to_string(), None) {
        println!("export {k}={v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Dummy keys (the proxy re-signs every request as the certificate's role), the tunnel as the
/// DynamoDB endpoint, and a region when none is set.
pub fn dynamodb_environment(port: &str, region: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID".to_owned(), DUMMY_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), DUMMY_SECRET.to_owned()),
    ];
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        env.push(("AWS_DEFAULT_REGION".to_owned(), region.unwrap_or("us-east-1").to_owned()));
    }
    env
}

/// The access key id clients sign with through a tunnel: never a real key.
pub const DUMMY_KEY_ID: &str = "portcullis";
/// Its secret.
pub const DUMMY_SECRET: &str = "portcullis-signs-for-you";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_added_or_replaced_and_nothing_else_changes() {
        let section = profile_section("orders", 8000, "eu-west-1", "shop/orders");
        let existing = "[default]\nregion = us-east-1\n\n[profile orders]\nendpoint_url = http://127.0.0.1:1\n\n[profile other]\noutput = json\n";
        let out = with_profile(existing, "orders", &section);
        assert!(out.starts_with("[default]\nregion = us-east-1\n\n[profile orders]\n"), "{out}");
        assert!(out.contains("endpoint_url = http://127.0.0.1:8000") && !out.contains("127.0.0.1:1\n"), "{out}");
        assert!(out.ends_with("[profile other]\noutput = json\n"), "{out}");
        let fresh = with_profile("[default]\nregion = us-east-1\n", "orders", &section);
        assert_eq!(fresh, format!("[default]\nregion = us-east-1\n\n{section}"));
        assert_eq!(with_profile("", "orders", &section), section);
    }
}
