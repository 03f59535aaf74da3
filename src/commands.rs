//! Implementations of the subcommands that are not long-running services.

use std::process::ExitCode;

use anyhow::Context;

use crate::authz::Route;
use crate::cli::{CaCommand, CertCommand, Command, CrdArgs, DbCommand, DoctorArgs, IamCommand, IssueArgs, OperatorArgs, OutputFormat, ProxyArgs};
use crate::pki::{CaFiles, ClientFiles};

/// Runs a subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Proxy(args) => proxy(args).await,
        Command::Crd(args) => crd(args),
        Command::Ca(CaCommand::Init { dir, server_names, server_ttl, force }) => {
            let files = CaFiles::new(&dir);
            files.init(&server_names, server_ttl, force).context("portcullis ca init")?;
            println!("client CA:          {}", files.ca_cert().display());
            println!("CA key (keep safe): {}", files.ca_key().display());
            println!("server certificate: {} (for {})", files.server_cert().display(), server_names.join(", "));
            println!("server key:         {}", files.server_key().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cert(CertCommand::Issue(args)) => issue(args),
        Command::Doctor(args) => doctor(args).await,
        Command::Iam(cmd) => iam(cmd),
        Command::Operator(args) => operator(args).await,
        Command::Login(args) => crate::client::login(None, args).await,
        Command::Status { kube } => crate::client::store::status(kube).await,
        Command::Db(DbCommand::Logout { database, namespace, all }) => crate::client::store::logout(database, namespace, all),
        Command::Completion { shell } => {
            let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "portcullis", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Ls { namespace, all_namespaces, all, output, kube }) => {
            crate::client::list::run(crate::client::list::ListArgs { namespace, all_namespaces, all, output, kube }).await
        }
        Command::Db(DbCommand::Login { database, namespace, db_user, db_name, login }) => {
            crate::client::login(Some(crate::client::DbTarget { database, namespace, db_user, db_name }), login).await
        }
        Command::Db(DbCommand::Connect { database, namespace, db_user, db_name, exec, args, login }) => {
            crate::client::connect::run(crate::client::DbTarget { database, namespace, db_user, db_name }, login, exec, args).await
        }
        Command::Db(DbCommand::Env { database, namespace, port, kube }) => crate::client::aws_profile::env(database, namespace, port, kube).await,
        Command::Db(DbCommand::Proxy {
            database,
            namespace,
            tunnel,
            port,
            proxy,
            cert_dir,
            protocol,
            db_user,
            db_name,
            server_name,
            write_aws_profile,
            login,
        }) => {
            use crate::client::reach::{Dial, Reach};
            use crate::client::tunnel::{TunnelArgs, run};
            if !tunnel {
                anyhow::bail!("only the local tunnel exists so far: add --tunnel");
            }
            if let (Some(proxy), Some(cert_dir), Some(protocol)) = (proxy, cert_dir, protocol) {
                // Standalone: everything is given.
                let reach = Reach { server_name: server_name.unwrap_or_else(|| crate::client::reach::host_of(&proxy)), dial: Dial::Direct(proxy) };
                let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
                let key = database.clone();
                run(TunnelArgs { database, port, reach, cert_dir, protocol, db_user }, &key, write_aws_profile.map(|n| (n, region))).await?;
            } else {
                let target = crate::client::DbTarget { database, namespace, db_user, db_name };
                let (args, session) = crate::client::connect::prepare(target, &login, |_| Ok(())).await?.into_tunnel(port);
                let region = session.region.clone().unwrap_or_else(|| "us-east-1".into());
                run(args, &session.key, write_aws_profile.map(|n| (n, region))).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let (paths, secrets) = match &args.config {
        Some(path) => {
            let config = crate::proxy::config::ProxyConfig::load(path)?;
            (config.resources, config.secrets_dir.or(args.secrets_dir))
        }
        None => (args.manifests.clone(), args.secrets_dir),
    };
    let manifests = crate::proxy::manifests::load_manifests(&paths)?;
    let checks = crate::doctor::run(&manifests.databases, &manifests.roles, secrets.as_deref(), args.timeout).await;
    match args.output {
        OutputFormat::Table => print!("{}", crate::doctor::render_table(&checks)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
    }
    let failed = checks.iter().any(|c| c.status == crate::doctor::Status::Fail);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn iam(cmd: IamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IamCommand::Policy { manifests, role, kind, role_tag } => {
            let role_tag = match role_tag {
                Some(t) => Some(t.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).context("--role-tag takes key=value")?),
                None => None,
            };
            let m = crate::proxy::manifests::load_manifests(&manifests)?;
            let options = crate::aws::iam::PolicyOptions { kind, role_tag };
            let (documents, warnings) = if role.as_deref() == Some("proxy+operator") {
                let set = crate::aws::iam::proxy_policy(&m.databases, &m.roles, &options);
                (Some(set.documents), set.warnings)
            } else {
                let (policies, warnings) = crate::aws::iam::role_policies(&m.databases, &m.roles, &m.discoveries, &options);
                match &role {
                    None => {
                        let list: Vec<_> =
                            policies.iter().map(|p| serde_json::json!({"role": p.role, "purpose": p.purpose, "documents": p.documents})).collect();
                        println!("{}", serde_json::to_string_pretty(&list)?);
                        (None, warnings)
                    }
                    Some(wanted) => {
                        let found = policies.into_iter().find(|p| &p.role == wanted).with_context(|| {
                            format!(
                                "no identity {wanted:?} needs a policy for these manifests: use proxy, operator, proxy+operator or an assumeRoleArn they name"
                            )
                        })?;
                        (Some(found.documents), warnings)
                    }
                }
            };
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            match documents.as_deref() {
                Some([one]) => println!("{}", serde_json::to_string_pretty(one)?),
                Some(many) => println!("{}", serde_json::to_string_pretty(many)?),
                None => {}
            }
        }
        IamCommand::TrustPolicy { oidc_provider_arn, pod_identity: _, cluster_arn, namespace, service_account } => {
            let doc = match oidc_provider_arn {
                Some(arn) => crate::aws::iam::irsa_trust_policy(&arn, &namespace, &service_account),
                None => crate::aws::iam::pod_identity_trust_policy(cluster_arn.as_deref(), &namespace, &service_account),
            }
            .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        let config = crate::proxy::config::ProxyConfig::load(&args.config)?;
        let manifests = crate::proxy::manifests::load_manifests(&config.resources)?;
        for db in &manifests.databases {
            crate::proxy::Upstream::resolve(db, config.secrets_dir.as_deref(), config.limits.upstream_connects_per_second)?;
        }
        println!(
            "{}: OK ({} listener(s), {} Database(s), {} AccessRole(s))",
            args.config.display(),
            config.listeners.len(),
            manifests.databases.len(),
            manifests.roles.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    match args.database {
        Some(reference) => crate::proxy::run_cluster(args.config, &reference).await?,
        None => crate::proxy::run_standalone(args.config).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn operator(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let proxy_defaults = match &args.proxy_defaults {
        Some(path) => crate::operator::proxy_defaults::ProxyDefaults::load(path)?,
        None => Default::default(),
    };
    let options = crate::operator::RunOptions {
        settings: crate::operator::context::Settings {
            namespace: args.namespace,
            proxy_image: args.proxy_image,
            allowed_endpoints: args.allowed_endpoints,
            server_cert_ttl: args.server_cert_ttl,
            max_client_cert_ttl: args.max_client_ttl,
            default_client_cert_ttl: args.default_client_ttl,
            aws_checks: args.aws_checks,
            aws_recheck: args.aws_recheck,
            watch_namespace: args.watch_namespace.filter(|ns| !ns.is_empty()),
            proxy_defaults,
        },
        csr_signer: args.csr_signer,
        identity: args.identity,
        leader_election: args.leader_election,
        lease_duration: args.lease_duration,
        concurrency: args.concurrency.max(1),
        admin_address: args.admin_address,
    };
    crate::operator::run(options).await?;
    Ok(ExitCode::SUCCESS)
}

fn crd(args: CrdArgs) -> anyhow::Result<ExitCode> {
    write_or_check(args.out_dir, args.check, crate::crd::crd_files()?, "CRDs", "portcullis crd --out-dir")
}

/// Prints generated files, writes them into `out_dir`, or (with `check`) reports drift.
fn write_or_check(out_dir: Option<std::path::PathBuf>, check: bool, files: Vec<(String, String)>, what: &str, command: &str) -> anyhow::Result<ExitCode> {
    let Some(dir) = out_dir else {
        for (_, yaml) in &files {
            if !yaml.starts_with("---") {
                println!("---");
            }
            print!("{yaml}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut drift = Vec::new();
    for (name, yaml) in files {
        let path = dir.join(&name);
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != yaml {
                drift.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !drift.is_empty() {
        eprintln!("{what} out of date: {}\nrun `{command} {}` and commit the result", drift.join(", "), dir.display());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
    let ca_files = CaFiles::new(&args.ca_dir);
    let ca = ca_files.load().with_context(|| format!("loading the CA from {} (create it with `portcullis ca init`)", args.ca_dir.display()))?;
    let route = (args.database.is_some() || args.db_user.is_some() || args.db_name.is_some()).then(|| Route {
        database: args.database.clone(),
        db_user: args.db_user.clone(),
        db_name: args.db_name.clone(),
    });
    let issued = ca.issue_client(&args.user, &args.groups, route.as_ref(), args.ttl)?;
    let out = ClientFiles::new(&args.out);
    out.write(&issued, ca.cert_pem())?;
    println!("issued a certificate for user {:?} groups {:?}, valid for {}", args.user, args.groups, humantime::format_duration(args.ttl));
    println!(
        "psql \"host=127.0.0.1 port=6432 user=<db user> dbname=<db name> sslmode=verify-full sslrootcert={} sslcert={} sslkey={}\"",
        out.ca().display(),
        out.cert().display(),
        out.key().display()
    );
    Ok(ExitCode::SUCCESS)
}
