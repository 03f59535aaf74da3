//! Benchmark (`cargo bench --bench discovery`, run by `bench/discovery.sh`; not part of the test
//! suite): a DatabaseDiscovery over 500 RDS instances in moto (auth on) across two regions,
//! against the real API server. Prints the first sync's time, AWS calls and Kubernetes writes per
//! sync (a sync with nothing changed included), and the operator's peak RSS.

// The integration tests' harness; only its control plane, moto and operator parts are used.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ListParams, PostParams};
use portcullis::crd::{Database, DatabaseDiscovery};
use support::control_plane::{ControlPlane, namespace};
use support::moto::Moto;
use support::operator_harness::*;
use support::*;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let count: usize = std::env::var("BENCH_INSTANCES").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let cp = ControlPlane::start();
    let admin = install(&cp).await;
    let dir = scratch();
    let moto = Moto::start();
    let made = Instant::now();
    let out = run_ok(Command::new("python3").arg(repo().join("tests/support/moto_discovery_setup.py")).args([
        "--endpoint",
        &moto.url(),
        "--external-id",
        "x",
        "--bulk",
        &count.to_string(),
    ]));
    let setup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("moto: {count} instances in {:?}", made.elapsed());
    let env = static_key_env(setup["access_key"].as_str().unwrap(), setup["secret_key"].as_str().unwrap());
    let op = Operator::start_with_env(&cp, dir.path(), &moto.url(), "op-bench-discovery", env);
    let pid = op.proc.as_ref().unwrap().child.id();
    let rss_idle = peak_rss_kib(pid);
    let ns = namespace(&admin, "bench").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let discoveries: Api<DatabaseDiscovery> = Api::namespaced(admin.clone(), &ns);
    let d: DatabaseDiscovery = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.io/v1alpha1", "kind": "DatabaseDiscovery",
        "metadata": {"name": "bulk", "namespace": ns},
        "spec": {"interval": "20s", "aws": [{"name": "all", "types": ["rds", "aurora"], "regions": ["us-east-1", "eu-west-1"], "tags": {"env": "prod"}}]},
    }))
    .unwrap();
    let calls = || op.metric_sum("portcullis_operator_aws_calls_total{caller=\"discovery\"}");
    let db_writes = || op.metric_sum("portcullis_operator_api_writes_total{kind=\"Database\"");
    let disc_writes = || op.metric_sum("portcullis_operator_api_writes_total{kind=\"DatabaseDiscovery");
    let started = Instant::now();
    discoveries.create(&PostParams::default(), &d).await.unwrap();
    let sync_time = |d: &DatabaseDiscovery| d.status.as_ref().and_then(|s| s.last_sync_time.clone());
    let first = loop {
        let now = discoveries.get("bulk").await.unwrap();
        if now.status.as_ref().and_then(|s| s.databases) == Some(count as i32) {
            break now;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "first sync not done after 10 min:\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first_sync = started.elapsed();
    let listed = dbs.list(&ListParams::default().labels("portcullis.io/discovery=bulk")).await.unwrap().items.len();
    assert_eq!(listed, count, "every instance has its Database");
    let (calls_1, db_writes_1, disc_writes_1) = (calls(), db_writes(), disc_writes());
    // The next sync, nothing changed in AWS.
    let before = sync_time(&first);
    let waited = Instant::now();
    while sync_time(&discoveries.get("bulk").await.unwrap()) == before {
        assert!(waited.elapsed() < Duration::from_secs(120), "no second sync:\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (calls_2, db_writes_2, disc_writes_2) = (calls() - calls_1, db_writes() - db_writes_1, disc_writes() - disc_writes_1);
    let rss_peak = peak_rss_kib(pid);
    println!("| DatabaseDiscovery, {count} RDS instances in moto, 2 regions | value |");
    println!("|---|---|");
    println!("| first sync (create to status.databases = {count}) | {:.1} s |", first_sync.as_secs_f64());
    println!("| AWS API calls, first sync | {calls_1} |");
    println!("| Kubernetes writes, first sync: Databases / discovery status | {db_writes_1} / {disc_writes_1} |");
    println!("| AWS API calls, sync with nothing changed | {calls_2} |");
    println!("| Kubernetes writes, sync with nothing changed: Databases / discovery status | {db_writes_2} / {disc_writes_2} |");
    println!("| operator peak RSS (idle at start) | {:.1} MiB ({:.1} MiB) |", rss_peak as f64 / 1024.0, rss_idle as f64 / 1024.0);
}
