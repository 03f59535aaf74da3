//! Benchmark (`cargo bench --bench operator`, run by `bench/operator.sh`; not part of the test
//! suite): 1,000 Databases created at once
//! against the real API server. Prints time until all have their children and status, the
//! operator's peak RSS, API writes per object, and what a restart with nothing changed costs.

// The integration tests' harness. This uses only its control plane and operator parts; the
// rest (the other servers, the re-exports for the test modules) is unused here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, PostParams};
use portcullis::crd::Database;
use support::control_plane::{ControlPlane, namespace};
use support::operator_harness::*;
use support::*;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(thousand_databases());
}

async fn thousand_databases() {
    let count: usize = std::env::var("BENCH_DATABASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let cp = ControlPlane::start();
    let admin = install(&cp).await;
    let dir = scratch();
    let ns = namespace(&admin, "bench").await;
    let dbs: Api<Database> = Api::namespaced(admin.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let mut op = Operator::start(&cp, dir.path(), NO_AWS, "op-bench-1");
    let pid = op.proc.as_ref().unwrap().child.id();
    let rss_idle = peak_rss_kib(pid);

    let started = Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let dbs = dbs.clone();
            let ns = ns.clone();
            async move {
                let db: Database = serde_json::from_value(serde_json::json!({
                    "apiVersion": "portcullis.io/v1alpha1", "kind": "Database",
                    "metadata": {"name": format!("db{i}"), "namespace": ns},
                    "spec": {"protocol": "postgres", "endpoint": format!("db{i}.internal:5432"), "aws": {"region": "us-east-1"}},
                }))
                .unwrap();
                dbs.create(&PostParams::default(), &db).await.unwrap();
            }
        })
        .await;
    let created = started.elapsed();
    let mut done_at = None;
    while done_at.is_none() {
        let with_status =
            dbs.list(&ListParams::default()).await.unwrap().items.iter().filter(|d| d.status.as_ref().is_some_and(|s| !s.conditions.is_empty())).count();
        let children = deps.list(&ListParams::default()).await.unwrap().items.len();
        if with_status == count && children == count {
            done_at = Some(started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(600), "not done after 10 min: {with_status} statuses, {children} Deployments\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_done = done_at.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = op.metric_sum("portcullis_operator_api_writes_total");
    let rss_peak = peak_rss_kib(pid);
    let by_kind: Vec<String> = http_get(op.admin_port, "/metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("portcullis_operator_api_writes_total{"))
        .map(|l| l.replace("kind=\"", "").replace("\",verb=\"", " ").replace("\"} ", ": "))
        .collect();
    op.stop();

    let restart_started = Instant::now();
    let op2 = Operator::start(&cp, dir.path(), NO_AWS, "op-bench-2");
    let pid2 = op2.proc.as_ref().unwrap().child.id();
    while op2.metric_sum("portcullis_operator_reconciles_total{controller=\"database\"") < count as f64 {
        assert!(restart_started.elapsed() < Duration::from_secs(600), "restart did not reconcile everything\n{}", op2.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let restart_all = restart_started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart_writes = op2.metric_sum("portcullis_operator_api_writes_total");
    let restart_rss = peak_rss_kib(pid2);

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("\n| metric ({count} Databases, {cpus} CPUs, API server on the same machine) | value | target |");
    println!("|---|---:|---:|");
    println!("| time to create them (64 at a time) | {:.1} s | |", created.as_secs_f64());
    println!("| time until every one has its children and status | {:.1} s | ≤ 30 s |", all_done.as_secs_f64());
    println!("| operator peak RSS | {:.1} MiB (idle at start {:.1} MiB) | ≤ 128 MiB |", rss_peak as f64 / 1024.0, rss_idle as f64 / 1024.0);
    println!("| API writes | {} ({:.2} per Database) | |", writes as u64, writes / count as f64);
    println!("| API writes by kind and verb | {} | |", by_kind.join(", "));
    println!("| restart: time to reconcile all again | {:.1} s | |", restart_all.as_secs_f64());
    println!("| restart: API writes | {} | 0 |", restart_writes as u64);
    println!("| restart: peak RSS | {:.1} MiB | ≤ 128 MiB |", restart_rss as f64 / 1024.0);
}
