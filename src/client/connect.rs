//! `portcullis db connect`: finds the Database, picks the db user and db name the caller's
//! AccessRoles allow, gets or reuses a certificate for exactly that route, finds the way to the
//! proxy ([`super::reach`]) and runs the database's own client with the right TLS flags, or
//! through a local tunnel when the proxy is only reachable by port-forward. `db proxy --tunnel`
//! in cluster mode shares the same preparation ([`prepare`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::DbTarget;
use super::aws_profile::dynamodb_environment;
use super::reach::{Dial, Reach, discover};
use super::tunnel::{self, TunnelArgs};
use crate::authz::{DatabaseRef, Decision, Request, Route, authorize, grant};
use crate::cli::LoginArgs;
use crate::crd::{AccessRole, Database, Protocol};
use crate::pki::ClientFiles;

/// One Database as one db user: what the client is started with.
pub struct Session {
    /// `namespace/name`.
    pub key: String,
    /// The Database's name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its AWS region, when it names one (for the AWS CLI's signature).
    pub region: Option<String>,
    /// The db user.
    pub db_user: String,
    /// The db name (none for DynamoDB).
    pub db_name: Option<String>,
    /// The certificate's directory.
    pub cert_dir: PathBuf,
}

/// A session and the way to its proxy.
pub struct Prepared {
    /// The Database, db user and certificate.
    pub session: Session,
    /// The way to the proxy.
    pub reach: Reach,
}

impl Prepared {
    /// A tunnel on 127.0.0.1:`port` (0: any) for this session, and the session.
    pub fn into_tunnel(self, port: u16) -> (TunnelArgs, Session) {
        let s = self.session;
        let args = TunnelArgs {
            database: s.name.clone(),
            port,
            reach: self.reach,
            cert_dir: s.cert_dir.clone(),
            protocol: s.protocol,
            db_user: Some(s.db_user.clone()),
        };
        (args, s)
    }
}

/// Finds the Database, settles the db user and name, makes sure a fitting certificate is
/// stored and finds the proxy. `client_check` runs once the protocol is known, before a
/// certificate is requested (`db connect` checks that the client program exists).
pub async fn prepare(target: DbTarget, login: &LoginArgs, client_check: impl FnOnce(Protocol) -> anyhow::Result<()>) -> anyhow::Result<Prepared> {
    let client = super::client(&login.kube).await?;
    let namespace = target.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = super::list::whoami(&client).await?;
    let db = fetch(&client, &namespace, &target.database, &identity.user).await?;
    let protocol = db.spec.protocol;
    client_check(protocol)?;
    let roles = Api::<AccessRole>::namespaced(client.clone(), &namespace).list(&ListParams::default()).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "your Kubernetes user {:?} may not list AccessRoles in namespace {namespace}: ask an admin to bind the ClusterRole portcullis-user to you",
            identity.user
        ),
        other => anyhow::Error::new(other).context(format!("listing AccessRoles in namespace {namespace}")),
    })?;
    let labels = db.labels().clone();
    let reference = DatabaseRef { namespace: &namespace, name: &target.database, labels: &labels };
    let key = format!("{namespace}/{}", target.database);
    let Some(allowed) = grant(&identity, &reference, &roles.items) else {
        bail!(
            "no AccessRole in namespace {namespace} lets you ({} in groups {}) reach Database {key}: ask its owners for one, or see `portcullis db ls -n {namespace}`",
            identity.user,
            identity.groups.join(", ")
        );
    };
    let db_user = match target.db_user.clone() {
        Some(user) => user,
        None => only_one(&allowed.db_users)
            .with_context(|| format!("choose a db user with --db-user: your AccessRoles allow {} on {key}", allowed.db_users.join(", ")))?,
    };
    let db_name = match (protocol, target.db_name.clone()) {
        (Protocol::Dynamodb, _) => None,
        (_, Some(name)) => Some(name),
        (_, None) => Some(only_one(&allowed.db_names).with_context(|| {
            let names = if allowed.db_names.is_empty() { "none".to_owned() } else { allowed.db_names.join(", ") };
            format!("choose a db name with --db-name: your AccessRoles allow {names} on {key}")
        })?),
    };
    let request = Request { database: reference, db_user: &db_user, db_name: db_name.as_deref() };
    if let Decision::Deny(reason) = authorize(&identity, &request, &roles.items) {
        bail!("{reason}: `portcullis db ls -n {namespace}` shows the db users and db names you may use");
    }
    let route = Route { database: Some(key.clone()), db_user: Some(db_user.clone()), db_name: db_name.clone() };
    let cert_dir = login.out.clone().unwrap_or_else(|| super::store::root().join(key.replace('/', "-")));
    // The way first: a Database nobody can reach gets no certificate.
    let reach = discover(&client, &db).await?;
    super::certificate(&client, &identity, &route, login, &cert_dir).await?;
    let session = Session { key, name: target.database, protocol, region: db.spec.aws.region.clone(), db_user, db_name, cert_dir };
    Ok(Prepared { session, reach })
}

async fn fetch(client: &Client, namespace: &str, name: &str, user: &str) -> anyhow::Result<Database> {
    let api: Api<Database> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(db)) => Ok(db),
        Ok(None) => bail!("no Database {name:?} in namespace {namespace}: `portcullis db ls -A` lists the ones you may reach"),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            bail!("your Kubernetes user {user:?} may not read Databases in namespace {namespace}: ask an admin to bind the ClusterRole portcullis-user to you")
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading Database {namespace}/{name}"))),
    }
}

/// The single allowed value, when exactly one (not `*`) is allowed.
fn only_one(values: &[String]) -> Option<String> {
    match values {
        [one] if one != "*" => Some(one.clone()),
        _ => None,
    }
}

/// A client program and where to get it.
struct Program {
    name: &'static str,
    package: &'static str,
}

/// The client programs for a protocol, in order of preference.
fn programs(protocol: Protocol) -> &'static [Program] {
    match protocol {
        Protocol::Postgres => {
            &[Program { name: "psql", package: "the PostgreSQL client: apt install postgresql-client, dnf install postgresql, brew install libpq" }]
        }
        Protocol::Mysql => &[
            Program { name: "mariadb", package: "the MariaDB or MySQL client: apt install mariadb-client, dnf install mariadb, brew install mysql-client" },
            Program { name: "mysql", package: "" },
        ],
        Protocol::Mongodb => {
            &[Program { name: "mongosh", package: "mongosh: https://www.mongodb.com/try/download/shell, brew install mongosh, npm install -g mongosh" }]
        }
        Protocol::Dynamodb => &[Program { name: "aws", package: "the AWS CLI: pip install awscli, brew install awscli" }],
    }
}

/// `name` in the directories of `path` (a PATH value), if it is an executable file there.
fn on_path_in(name: &str, path: &str) -> Option<PathBuf> {
    std::env::split_paths(path).filter(|d| !d.as_os_str().is_empty()).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Which program to run: `--exec`'s, or the protocol's client, looked up in `path`.
fn find_program_in(protocol: Protocol, exec: Option<&str>, path: &str) -> anyhow::Result<PathBuf> {
    if let Some(exec) = exec {
        if exec.contains('/') {
            let file = PathBuf::from(exec);
            return if is_executable(&file) { Ok(file) } else { bail!("--exec {exec}: no such executable file") };
        }
        return on_path_in(exec, path).with_context(|| format!("--exec {exec}: not found on PATH"));
    }
    let choices = programs(protocol);
    choices
        .iter()
        .find_map(|p| on_path_in(p.name, path))
        .with_context(|| format!("{} is not installed (not on PATH): install {}", choices[0].name, choices[0].package))
}

fn find_program(protocol: Protocol, exec: Option<&str>) -> anyhow::Result<PathBuf> {
    find_program_in(protocol, exec, &std::env::var("PATH").unwrap_or_default())
}

/// `portcullis db connect`.
pub async fn run(target: DbTarget, login: LoginArgs, exec: Option<String>, args: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut program = None;
    let prepared = prepare(target, &login, |protocol| {
        // DynamoDB without a command: the tunnel alone, for whatever the user runs next.
        if !(protocol == Protocol::Dynamodb && exec.is_none() && args.is_empty()) {
            program = Some(find_program(protocol, exec.as_deref())?);
        }
        Ok(())
    })
    .await?;
    let Some(program) = program else {
        let (args, session) = prepared.into_tunnel(0);
        eprintln!("no command given: running the tunnel until Ctrl-C (or: portcullis db connect NAME --exec aws -- dynamodb list-tables)");
        tunnel::run(args, &session.key, None).await?;
        return Ok(ExitCode::SUCCESS);
    };
    let (session, reach) = (&prepared.session, &prepared.reach);
    let direct = match &reach.dial {
        Dial::Direct(addr) if exec.is_none() && session.protocol != Protocol::Dynamodb => Some(addr.clone()),
        _ => None,
    };
    if let Some(addr) = direct {
        let (_, port) = addr.rsplit_once(':').context("the proxy endpoint has no port")?;
        let files = ClientFiles::new(&session.cert_dir);
        let mut command = std::process::Command::new(&program);
        client_args(&mut command, session, &program, Local::Tls { host: &reach.server_name, port, files: &files })?;
        command.args(&args);
        eprintln!("connecting to {} as {} through {addr}", session.key, session.db_user);
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        bail!("cannot run {}: {error}", program.display());
    }
    // Through a local tunnel: the client speaks in the clear to 127.0.0.1 only.
    let (tunnel_args, session) = prepared.into_tunnel(0);
    let bound = tunnel::bind(tunnel_args).await?;
    let port = bound.local.port().to_string();
    let mut command = tokio::process::Command::new(&program);
    if exec.is_some() {
        command.envs(environment(&session, &port));
    } else {
        client_args(command.as_std_mut(), &session, &program, Local::Plain { port: &port })?;
    }
    command.args(&args);
    if session.protocol == Protocol::Dynamodb {
        // The dummy keys must be the ones signing: no session token or profile of the user's.
        command.env_remove("AWS_SESSION_TOKEN").env_remove("AWS_PROFILE");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async move {
        let _ = stop_rx.await;
    }));
    // Ctrl-C belongs to the client (psql cancels a query with it); the tunnel stays up until
    // the client exits.
    let ignore_interrupts = tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let status = command.status().await.with_context(|| format!("cannot run {}", program.display()));
    let _ = stop_tx.send(());
    let _ = serving.await;
    ignore_interrupts.abort();
    let status = status?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

/// How the client reaches the proxy.
enum Local<'a> {
    /// Straight to the proxy with TLS and the certificate.
    Tls { host: &'a str, port: &'a str, files: &'a ClientFiles },
    /// To the local tunnel, in the clear.
    Plain { port: &'a str },
}

/// The client's connection arguments.
fn client_args(command: &mut std::process::Command, p: &Session, program: &Path, local: Local<'_>) -> anyhow::Result<()> {
    let db_name = p.db_name.clone().unwrap_or_default();
    let mariadb = program.file_name().is_some_and(|n| n == "mariadb");
    match (p.protocol, local) {
        (Protocol::Postgres, Local::Tls { host, port, files }) => {
            command.arg(format!(
                "host={host} port={port} user={} dbname={db_name} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
                p.db_user,
                files.ca().display(),
                files.cert().display(),
                files.key().display()
            ));
        }
        (Protocol::Postgres, Local::Plain { port }) => {
            command.arg(format!("host=127.0.0.1 port={port} user={} dbname={db_name} sslmode=disable gssencmode=disable", p.db_user));
        }
        (Protocol::Mysql, Local::Tls { host, port, files }) => {
            command.args(["-h", host, "-P", port, "-u", &p.db_user]);
            command.arg(format!("--ssl-ca={}", files.ca().display()));
            command.arg(format!("--ssl-cert={}", files.cert().display()));
            command.arg(format!("--ssl-key={}", files.key().display()));
            command.arg(if mariadb { "--ssl-verify-server-cert" } else { "--ssl-mode=VERIFY_IDENTITY" });
            command.arg(format!("--database={db_name}"));
        }
        (Protocol::Mysql, Local::Plain { port }) => {
            command.args(["-h", "127.0.0.1", "-P", port, "-u", &p.db_user]);
            command.arg(if mariadb { "--skip-ssl" } else { "--ssl-mode=DISABLED" });
            command.arg(format!("--database={db_name}"));
        }
        (Protocol::Mongodb, Local::Tls { host, port, files }) => {
            let combined = p.cert_dir.join("client.pem");
            let pem = format!(
                "{}{}",
                std::fs::read_to_string(files.cert()).context("reading the certificate")?,
                std::fs::read_to_string(files.key()).context("reading the key")?
            );
            crate::pki::write_private(&combined, &pem)?;
            command.arg(format!("mongodb://{host}:{port}/{db_name}?tls=true&directConnection=true"));
            command.arg(format!("--tlsCAFile={}", files.ca().display()));
            command.arg(format!("--tlsCertificateKeyFile={}", combined.display()));
        }
        (Protocol::Mongodb, Local::Plain { port }) => {
            command.arg(format!("mongodb://127.0.0.1:{port}/{db_name}?directConnection=true"));
        }
        (Protocol::Dynamodb, local) => {
            let port = match local {
                Local::Plain { port } => port,
                Local::Tls { port, .. } => port,
            };
            command.envs(environment(p, port));
        }
    }
    Ok(())
}

/// The environment that points tools at a local tunnel on `port`.
pub fn environment(p: &Session, port: &str) -> Vec<(String, String)> {
    let mut env = vec![("PORTCULLIS_HOST".to_owned(), "127.0.0.1".to_owned()), ("PORTCULLIS_PORT".to_owned(), port.to_owned())];
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    match p.protocol {
        Protocol::Postgres => {
            env.extend([pair("PGHOST", "127.0.0.1"), pair("PGPORT", port), pair("PGUSER", &p.db_user), pair("PGSSLMODE", "disable")]);
            env.extend(p.db_name.as_deref().map(|n| pair("PGDATABASE", n)));
        }
        Protocol::Mysql => env.extend([pair("MYSQL_HOST", "127.0.0.1"), pair("MYSQL_TCP_PORT", port)]),
        Protocol::Mongodb => {}
        Protocol::Dynamodb => env.extend(dynamodb_environment(port, p.region.as_deref())),
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(protocol: Protocol, dir: &Path) -> Session {
        Session {
            key: "shop/orders".into(),
            name: "orders".into(),
            protocol,
            region: Some("eu-west-1".into()),
            db_user: "app".into(),
            db_name: (protocol != Protocol::Dynamodb).then(|| "orders".to_owned()),
            cert_dir: dir.to_owned(),
        }
    }

    fn args(protocol: Protocol, program: &str, local: Local<'_>, dir: &Path) -> Vec<String> {
        let mut command = std::process::Command::new(program);
        client_args(&mut command, &session(protocol, dir), Path::new(program), local).unwrap();
        command.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn each_client_gets_verified_tls_direct_and_plain_through_the_tunnel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.crt"), "CERT\n").unwrap();
        std::fs::write(dir.path().join("client.key"), "KEY\n").unwrap();
        let files = ClientFiles::new(dir.path());
        let tls = || Local::Tls { host: "db.example.com", port: "5432", files: &files };
        let d = dir.path().display();
        let pg = args(Protocol::Postgres, "psql", tls(), dir.path());
        assert_eq!(
            pg,
            [format!(
                "host=db.example.com port=5432 user=app dbname=orders sslmode=verify-full sslrootcert={d}/ca.crt sslcert={d}/client.crt sslkey={d}/client.key"
            )]
        );
        let pg = args(Protocol::Postgres, "psql", Local::Plain { port: "4000" }, dir.path());
        assert_eq!(pg, ["host=127.0.0.1 port=4000 user=app dbname=orders sslmode=disable gssencmode=disable"]);
        let maria = args(Protocol::Mysql, "mariadb", tls(), dir.path());
        assert!(maria.contains(&"--ssl-verify-server-cert".to_owned()) && maria.contains(&format!("--ssl-cert={d}/client.crt")), "{maria:?}");
        let mysql = args(Protocol::Mysql, "mysql", tls(), dir.path());
        assert!(mysql.contains(&"--ssl-mode=VERIFY_IDENTITY".to_owned()), "{mysql:?}");
        assert!(args(Protocol::Mysql, "mariadb", Local::Plain { port: "4000" }, dir.path()).contains(&"--skip-ssl".to_owned()));
        let mongo = args(Protocol::Mongodb, "mongosh", tls(), dir.path());
        assert_eq!(mongo[0], "mongodb://db.example.com:5432/orders?tls=true&directConnection=true");
        assert_eq!(mongo[2], format!("--tlsCertificateKeyFile={d}/client.pem"));
        assert_eq!(std::fs::read_to_string(dir.path().join("client.pem")).unwrap(), "CERT\nKEY\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("client.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_environment_points_tools_at_the_tunnel_with_dummy_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(&session(Protocol::Postgres, dir.path()), "4000");
        for pair in [("PGHOST", "127.0.0.1"), ("PGPORT", "4000"), ("PGUSER", "app"), ("PGDATABASE", "orders"), ("PGSSLMODE", "disable")] {
            assert!(env.contains(&(pair.0.to_owned(), pair.1.to_owned())), "{env:?}");
        }
        let env = environment(&session(Protocol::Dynamodb, dir.path()), "4000");
        assert!(env.contains(&("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), "http://127.0.0.1:4000".to_owned())), "{env:?}");
        assert!(env.contains(&("AWS_ACCESS_KEY_ID".to_owned(), crate::client::aws_profile::DUMMY_KEY_ID.to_owned())), "{env:?}");
    }

    #[test]
    fn a_missing_client_names_its_package() {
        // An empty PATH for this lookup only.
        assert!(programs(Protocol::Postgres).iter().find_map(|p| on_path_in(p.name, "")).is_none());
        let message = format!("{:#}", find_program_in(Protocol::Mongodb, None, "").unwrap_err());
        assert!(message.contains("mongosh is not installed") && message.contains("npm install -g mongosh"), "{message}");
        let message = format!("{:#}", find_program_in(Protocol::Mysql, Some("nope-client"), "").unwrap_err());
        assert!(message.contains("--exec nope-client: not found on PATH"), "{message}");
    }
}
