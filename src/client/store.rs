//! The certificates `portcullis login` and `db login` keep under `~/.portcullis/certs/`:
//! `portcullis status` lists them (who, which route, until when), `db logout` removes them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::authz::{Identity, identity_from_certificate};

/// The files of one stored certificate.
const FILES: [&str; 3] = ["client.crt", "client.key", "ca.crt"];

/// `~/.portcullis`: the client's own files.
pub fn portcullis_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".portcullis")
}

/// Where certificates are kept.
pub fn root() -> PathBuf {
    portcullis_dir().join("certs")
}

/// One stored certificate.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its directory.
    pub dir: PathBuf,
    /// What it says: user, groups, route, expiry.
    pub identity: Identity,
}

impl Stored {
    /// The Database its route names (`namespace/name`), if any.
    pub fn database(&self) -> Option<&str> {
        self.identity.route.as_ref().and_then(|r| r.database.as_deref())
    }
}

/// Every stored certificate, by directory name; unreadable ones are skipped with a note.
pub fn stored() -> Vec<Stored> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root()) else { return found };
    for dir in entries.flatten().map(|e| e.path()).filter(|p| p.join("client.crt").is_file()) {
        match read(&dir) {
            Ok(identity) => found.push(Stored { dir, identity }),
            Err(e) => eprintln!("note: skipping {}: {e:#}", dir.display()),
        }
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    found
}

/// What the certificate stored in `dir` says.
pub fn read(dir: &Path) -> anyhow::Result<Identity> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let path = dir.join("client.crt");
    let der = CertificateDer::from_pem_file(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(identity_from_certificate(&der)?)
}

/// "in 1h 59m" or "expired 3m ago", from `now` (Unix seconds) to `not_after`.
pub fn remaining(not_after: i64, now: i64) -> String {
    let left = not_after - now;
    let words = |secs: i64| {
        let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
        match (d, h) {
            (0, 0) => format!("{}m", m.max(if secs > 0 { 1 } else { 0 })),
            (0, _) => format!("{h}h {m}m"),
            _ => format!("{d}d {h}h"),
        }
    };
    if left > 0 { format!("in {}", words(left)) } else { format!("expired {} ago", words(-left)) }
}

/// `unix` seconds as a readable UTC time (`2026-12-07 15:04 UTC`).
pub fn utc_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    let utc = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    utc.format(&format).unwrap_or_else(|_| utc.to_string())
}

/// `portcullis db logout [DATABASE | --all]`.
pub fn logout(database: Option<String>, namespace: Option<String>, all: bool) -> anyhow::Result<ExitCode> {
    let stored = stored();
    let chosen: Vec<&Stored> = match (&database, all) {
        (None, true) => stored.iter().collect(),
        (Some(db), false) => {
            let wanted = |s: &&Stored| match (&namespace, s.database()) {
                (Some(ns), Some(d)) => d == format!("{ns}/{db}"),
                (None, Some(d)) => d.rsplit('/').next() == Some(db.as_str()),
                _ => false,
            };
            let matching: Vec<&Stored> = stored.iter().filter(wanted).collect();
            if matching.is_empty() {
                let have: Vec<&str> = stored.iter().filter_map(Stored::database).collect();
                bail!(
                    "no stored certificate for Database {db:?}{} (stored: {})",
                    namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default(),
                    if have.is_empty() { "none".to_owned() } else { have.join(", ") }
                );
            }
            if matching.len() > 1 && namespace.is_none() {
                let names: Vec<&str> = matching.iter().filter_map(|s| s.database()).collect();
                bail!("certificates for {db:?} are stored for several namespaces ({}): name one with -n", names.join(", "));
            }
            matching
        }
        (None, false) => bail!("name the Database to log out of, or pass --all"),
        (Some(_), true) => bail!("give a Database or --all, not both"),
    };
    for s in &chosen {
        for file in FILES {
            let path = s.dir.join(file);
            if path.exists() {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        // The directory goes too when nothing else is in it.
        let _ = std::fs::remove_dir(&s.dir);
        println!("removed the certificate for {} ({})", s.database().unwrap_or("any database"), s.dir.display());
    }
    if chosen.is_empty() {
        println!("no stored certificates in {}", root().display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `portcullis status`: who the API server says you are, and the stored certificates.
pub async fn status(kube: crate::cli::KubeArgs) -> anyhow::Result<ExitCode> {
    let who = match super::client(&kube).await {
        Ok(client) => super::list::whoami(&client).await.map(|id| format!("{} (groups: {})", id.user, id.groups.join(", "))),
        Err(e) => Err(e),
    };
    match who {
        Ok(who) => println!("Kubernetes user: {who}"),
        Err(e) => println!("Kubernetes user: unknown ({e:#})"),
    }
    let stored = stored();
    if stored.is_empty() {
        println!("no stored certificates in {} (get one with `portcullis db login DATABASE`)", root().display());
        return Ok(ExitCode::SUCCESS);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut lines = vec![["DATABASE", "USER", "DB USER", "DB NAME", "EXPIRES", "", "DIRECTORY"].map(str::to_owned).to_vec()];
    for s in &stored {
        let route = s.identity.route.as_ref();
        let pick = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(any)".to_owned());
        lines.push(vec![
            pick(route.and_then(|r| r.database.as_ref())),
            s.identity.user.clone(),
            pick(route.and_then(|r| r.db_user.as_ref())),
            pick(route.and_then(|r| r.db_name.as_ref())),
            utc_time(s.identity.not_after),
            format!("({})", remaining(s.identity.not_after, now)),
            s.dir.display().to_string(),
        ]);
    }
    print!("{}", super::columns(&lines));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::remaining;

    #[test]
    fn remaining_time_reads_well_both_ways() {
        assert_eq!(remaining(1_000 + 7_140, 1_000), "in 1h 59m");
        assert_eq!(remaining(1_000 + 30, 1_000), "in 1m");
        assert_eq!(remaining(1_000 + 3 * 86_400 + 3_600, 1_000), "in 3d 1h");
        assert_eq!(remaining(1_000 - 180, 1_000), "expired 3m ago");
    }
}
