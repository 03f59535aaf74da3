//! The command line: CRD generation and drift detection, local PKI commands, config checks.

use std::process::Command;

use crate::support::machine_shared;

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run portcullis");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn committed_crds_match_the_generated_ones_and_drift_is_detected() {
    let _machine = machine_shared();
    let repo = env!("CARGO_MANIFEST_DIR");
    let (ok, text) = output(portcullis().args(["crd", "--check", "--out-dir"]).arg(format!("{repo}/crds")));
    assert!(ok, "crds/ is stale: {text}");
    let dir = tempfile::tempdir().unwrap();
    let (ok, _) = output(portcullis().args(["crd", "--out-dir"]).arg(dir.path()));
    assert!(ok);
    let db = dir.path().join("databases.portcullis.io.yaml");
    let yaml = std::fs::read_to_string(&db).unwrap();
    assert!(yaml.contains("shortNames:\n    - db"), "{yaml}");
    assert!(yaml.contains("x-kubernetes-validations"), "the endpoint rule is in the schema");
    std::fs::write(&db, yaml.replace("The wire protocol", "A wire protocol")).unwrap();
    let (ok, text) = output(portcullis().args(["crd", "--check", "--out-dir"]).arg(dir.path()));
    assert!(!ok && text.contains("CRDs out of date") && text.contains("databases.portcullis.io.yaml"), "{text}");
}

#[test]
fn deploy_manifests_are_rendered_from_the_chart_and_drift_is_detected() {
    let _machine = machine_shared();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = std::process::Command::new("bash").arg(repo.join("testenv/build.sh")).output().unwrap();
    assert!(build.status.success(), "testenv/build.sh: {}", String::from_utf8_lossy(&build.stderr));
    let helm = format!("{}/helm", String::from_utf8_lossy(&build.stdout).lines().last().unwrap().trim());
    // A copy of what the script reads and writes, so the test can tamper with it.
    let dir = tempfile::tempdir().unwrap();
    for d in ["scripts", "charts", "deploy", "crds"] {
        let ok = std::process::Command::new("cp").arg("-r").arg(repo.join(d)).arg(dir.path()).status().unwrap();
        assert!(ok.success());
    }
    let check = || output(std::process::Command::new("bash").arg(dir.path().join("scripts/render-deploy.sh")).arg("--check").env("HELM", &helm));
    let (ok, text) = check();
    assert!(ok, "deploy/ or the chart's crds/ is stale (run scripts/render-deploy.sh): {text}");
    let path = dir.path().join("deploy/operator.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    assert!(yaml.contains("resourceNames: [\"portcullis.io/client\"]"), "signing is limited to our signer: {yaml}");
    assert!(yaml.contains("apiVersion: v1\n") && yaml.contains("fieldPath: metadata.namespace"), "{yaml}");
    std::fs::write(&path, yaml.replacen("replicas: 2", "replicas: 3", 1)).unwrap();
    let (ok, text) = check();
    assert!(!ok && text.contains("operator.yaml"), "a hand edit of deploy/ went unnoticed: {text}");
    std::fs::write(&path, &yaml).unwrap();
    let crd = dir.path().join("charts/portcullis/crds/databases.portcullis.io.yaml");
    std::fs::write(&crd, std::fs::read_to_string(&crd).unwrap() + "# edited\n").unwrap();
    let (ok, text) = check();
    assert!(!ok && text.contains("databases.portcullis.io.yaml"), "a stale chart CRD went unnoticed: {text}");
}

#[test]
fn ca_init_and_cert_issue_write_files_psql_can_use() {
    let _machine = machine_shared();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, text) = output(portcullis().args(["ca", "init", "--dir"]).arg(&ca));
    assert!(ok, "{text}");
    let (ok, text) = output(portcullis().args(["ca", "init", "--dir"]).arg(&ca));
    assert!(!ok && text.contains("--force"), "an existing CA is not overwritten silently: {text}");
    let out = dir.path().join("alice");
    let (ok, text) = output(
        portcullis()
            .args(["cert", "issue", "--ca-dir"])
            .arg(&ca)
            .args(["--user", "alice", "--group", "dev", "--group", "ops", "--ttl", "2h", "--database", "orders", "--out"])
            .arg(&out),
    );
    assert!(ok, "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("client.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "libpq refuses keys readable by others");
    let der = rustls::pki_types::pem::PemObject::from_pem_file(out.join("client.crt")).map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec()).unwrap();
    let id = portcullis::authz::identity_from_certificate(&der).unwrap();
    assert_eq!((id.user.as_str(), id.groups.len()), ("alice", 2));
    assert_eq!(id.route.unwrap().database.as_deref(), Some("orders"));
    let (ok, text) = output(portcullis().args(["cert", "issue", "--ca-dir"]).arg(dir.path().join("missing")).args(["--user", "x"]));
    assert!(!ok && text.contains("portcullis ca init"), "{text}");
    let (ok, text) = output(portcullis().args(["cert", "issue", "--ca-dir"]).arg(&ca).args(["--user", "x", "--ttl", "1s", "--out"]).arg(dir.path().join("x")));
    assert!(!ok && text.contains("between 1 minute and 1 year"), "{text}");
}

#[test]
fn proxy_check_names_the_file_document_and_field_of_bad_config() {
    let _machine = machine_shared();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("proxy.yaml"), "listeners: [{address: '127.0.0.1:6432'}]\ntls: {certFile: a, keyFile: b, clientCaFile: c}\nresources: [db.yaml]\n")
        .unwrap();
    std::fs::write(p.join("db.yaml"), "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {name: orders}\nspec: {protocol: postgres, endpoint: db.x.us-east-1.rds.amazonaws.com, tls: {mode: verify-all}}\n").unwrap();
    let (ok, text) = output(portcullis().args(["proxy", "--check", "--config"]).arg(p.join("proxy.yaml")));
    assert!(!ok);
    assert!(text.contains("db.yaml: document 1 (Database \"orders\"): spec.tls.mode"), "{text}");
    assert!(text.contains("verify-all"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    std::fs::write(p.join("db.yaml"), "apiVersion: portcullis.io/v1alpha1\nkind: Database\nmetadata: {name: orders}\nspec: {protocol: postgres, endpoint: db.x.us-east-1.rds.amazonaws.com}\n").unwrap();
    let (ok, text) = output(portcullis().args(["proxy", "--check", "--config"]).arg(p.join("proxy.yaml")));
    assert!(ok, "{text}");
    assert!(text.contains("1 Database(s)"), "{text}");
    // Serving needs the TLS files: a missing one is named.
    let (ok, text) = output(portcullis().args(["proxy", "--config"]).arg(p.join("proxy.yaml")).env("AWS_EC2_METADATA_DISABLED", "true"));
    assert!(!ok && text.contains("cannot read the server certificate") && text.contains(&p.join("a").display().to_string()), "{text}");
}

#[test]
fn help_explains_every_subcommand() {
    let _machine = machine_shared();
    let (ok, text) = output(portcullis().arg("--help"));
    assert!(ok);
    for sub in ["proxy", "crd", "ca", "cert", "operator", "login", "db", "completion"] {
        assert!(text.contains(sub), "{text}");
    }
    let (_, text) = output(portcullis().args(["cert", "issue", "--help"]));
    assert!(text.contains("--db-user") && text.contains("Common Name"), "{text}");
    let (_, text) = output(portcullis().args(["db", "login", "--help"]));
    assert!(text.contains("--db-user") && text.contains("maxSessionTtl") && text.contains("KUBECONFIG"), "{text}");
    let (_, text) = output(portcullis().args(["proxy", "--help"]));
    assert!(text.contains("NAMESPACE/NAME"), "{text}");
}

#[test]
fn completion_scripts_load_in_their_shells_and_know_the_subcommands() {
    let _machine = machine_shared();
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script) = output(portcullis().args(["completion", shell]));
        assert!(ok && script.contains("portcullis") && script.contains("login"), "{shell}: {script}");
    }
    let (_, bash) = output(portcullis().args(["completion", "bash"]));
    assert!(bash.contains("portcullis__db__ls") || bash.contains("portcullis__subcmd__db__subcmd__ls"), "bash knows `db ls`");
    let file = dir.path().join("portcullis.bash");
    std::fs::write(&file, &bash).unwrap();
    let out = Command::new("bash").arg("-c").arg(format!("source {} && complete -p portcullis", file.display())).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("portcullis"), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, err) = output(portcullis().args(["completion", "tcsh"]));
    assert!(!ok && err.contains("bash") && err.contains("zsh"), "an unknown shell lists the known ones: {err}");
}

#[test]
fn status_lists_stored_certificates_and_db_logout_removes_them() {
    let _machine = machine_shared();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let ca = dir.path().join("ca");
    assert!(output(portcullis().args(["ca", "init", "--dir"]).arg(&ca)).0);
    // Certificates where `db login` keeps them: ~/.portcullis/certs/NAMESPACE-DATABASE.
    let certs = home.join(".portcullis/certs");
    for (leaf, database, db_user) in
        [("shop-orders", "shop/orders", "app"), ("team-orders", "team/orders", "report"), ("shop-ledger", "shop/ledger", "readonly")]
    {
        let (ok, text) = output(
            portcullis()
                .args(["cert", "issue", "--ca-dir"])
                .arg(&ca)
                .args(["--user", "alice", "--group", "dev", "--ttl", "2h", "--database", database, "--db-user", db_user, "--out"])
                .arg(certs.join(leaf)),
        );
        assert!(ok, "{text}");
    }
    std::fs::write(certs.join("shop-ledger/notes.txt"), "mine").unwrap();
    let run = |args: &[&str]| output(portcullis().args(args).env("HOME", &home).env("KUBECONFIG", dir.path().join("no-kubeconfig")));

    let (ok, text) = run(&["status"]);
    assert!(ok, "{text}");
    assert!(text.lines().next().unwrap().starts_with("Kubernetes user: unknown ("), "no cluster is not a failure: {text}");
    let rows: Vec<Vec<&str>> = text.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{text}");
    for (row, (database, db_user)) in rows.iter().zip([("shop/ledger", "readonly"), ("shop/orders", "app"), ("team/orders", "report")]) {
        assert_eq!((row[0], row[1], row[2], row[3]), (database, "alice", db_user, "(any)"), "{text}");
        assert!(row.contains(&"(in") && row.iter().any(|c| *c == "1h" || *c == "2h"), "expiry in about two hours: {text}");
    }

    // Two stored for "orders": the namespace decides; an unknown one names what is stored.
    let (ok, text) = run(&["db", "logout", "orders"]);
    assert!(!ok && text.contains("several namespaces") && text.contains("-n"), "{text}");
    let (ok, text) = run(&["db", "logout", "orders", "-n", "team"]);
    assert!(ok && text.contains("team/orders"), "{text}");
    assert!(!certs.join("team-orders").exists() && certs.join("shop-orders/client.key").exists());
    let (ok, text) = run(&["db", "logout", "payroll"]);
    assert!(!ok && text.contains("no stored certificate for Database \"payroll\"") && text.contains("shop/orders"), "{text}");
    let (ok, text) = run(&["db", "logout"]);
    assert!(!ok && text.contains("--all"), "{text}");
    // --all removes every certificate and key, and leaves the user's own files.
    let (ok, text) = run(&["db", "logout", "--all"]);
    assert!(ok, "{text}");
    assert!(!certs.join("shop-orders").exists(), "{text}");
    assert!(!certs.join("shop-ledger/client.key").exists() && certs.join("shop-ledger/notes.txt").exists(), "{text}");
    let (ok, text) = run(&["status"]);
    assert!(ok && text.contains("no stored certificates"), "{text}");
}

/// The Krew manifest names archives that exist, with their real checksums, and each archive
/// holds the binary under the name kubectl runs as the plugin.
#[test]
fn the_krew_manifest_matches_the_archives_it_packs() {
    use sha2::Digest;
    let _machine = machine_shared();
    let repo = env!("CARGO_MANIFEST_DIR");
    let dir = crate::support::scratch();
    // A release binary carries no debug information: the test binary without it packs fast.
    let binary = dir.path().join("portcullis");
    assert!(Command::new("objcopy").arg("--strip-debug").arg(env!("CARGO_BIN_EXE_portcullis")).arg(&binary).status().unwrap().success());
    let out = Command::new("bash")
        .arg(format!("{repo}/scripts/krew-manifest.sh"))
        .arg(dir.path().join("dist"))
        .arg("https://example.invalid/releases/v1/")
        .arg(format!("linux/amd64={}", binary.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "portcullis");
    assert_eq!(manifest["spec"]["version"].as_str(), Some(format!("v{}", env!("CARGO_PKG_VERSION")).as_str()));
    let platforms = manifest["spec"]["platforms"].as_sequence().unwrap();
    assert_eq!(platforms.len(), 1);
    let p = &platforms[0];
    assert_eq!((p["selector"]["matchLabels"]["os"].as_str(), p["selector"]["matchLabels"]["arch"].as_str()), (Some("linux"), Some("amd64")));
    assert_eq!(p["uri"], "https://example.invalid/releases/v1/kubectl-portcullis_linux_amd64.tar.gz");
    let archive = dir.path().join("dist/kubectl-portcullis_linux_amd64.tar.gz");
    let sum = hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()));
    assert_eq!(p["sha256"].as_str(), Some(sum.as_str()));
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    assert!(Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&unpacked).status().unwrap().success());
    let bin = unpacked.join(p["bin"].as_str().unwrap());
    let (ok, help) = output(Command::new(&bin).arg("--help"));
    assert!(ok && help.contains("kubectl portcullis"), "{help}");
    // Bad input: a platform without a binary.
    let out =
        Command::new("bash").arg(format!("{repo}/scripts/krew-manifest.sh")).arg(dir.path().join("x")).arg("u").arg("linux-amd64=/nope").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not OS/ARCH=EXECUTABLE"));
}
