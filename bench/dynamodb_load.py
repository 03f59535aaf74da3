#!/usr/bin/env python3
"""Load generator of bench/dynamodb.sh: boto3 GetItem in a loop against several endpoints.

    python3 bench/dynamodb_load.py --path direct=http://127.0.0.1:A --path proxy=http://127.0.0.1:B \
        --clients "1 8" --duration 10 --warmup 2 --rounds 5 --pid upstream=PID --pid proxy=PID ... \
        --stats-url http://127.0.0.1:A/stats --results OUT/results.jsonl --table OUT/table.md

For each client count N: N boto3 clients per path (one per thread, each with its own
connection pool, all created before anything is timed), WARMUP seconds of unrecorded load per
path (opens the keep-alive connections), then DURATION seconds per path, measured in ROUNDS
slices that alternate between the paths (A B, B A, A B, ...) so that noise from the rest of the
machine hits every path alike. Every request's latency is recorded (time.perf_counter_ns around
`get_item`, so it includes botocore's own work: serializing, signing, parsing, the CRC check).
Per (path, N): requests/s, p50/p95/p99/mean/max latency, errors, CPU per request of the load
generator and of each --pid process, machine CPU busy and the CPU used by processes other than
ours during the slices. Per N: the first path against each other one (requests/s ratio, added
p50/p99 latency).

Before measuring, a sanity check through every path: PutItem then GetItem of the same item must
return it unchanged, and (with --stats-url) the stand-in upstream must have seen the first
path's requests signed with the dummy key and every other path's signed with a different key
and a session token (the proxy's assumed role).

Exit status 1 when any request failed (they are counted, and the first few printed, not retried:
botocore's retries are off).
"""

import argparse
import json
import math
import os
import sys
import threading
import time
import urllib.request

import boto3
import botocore.config

TABLE = "bench"
KEY = {"pk": {"S": "bench-item-1"}}
ITEM = {"pk": {"S": "bench-item-1"}, "status": {"S": "shipped"}, "total": {"N": "129.95"}, "lines": {"L": [{"S": "sku-1"}, {"S": "sku-2"}]}}
DUMMY_KEY = "AKIDBENCHDUMMY000001"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds (user + system, all threads) of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_switches(pid):
    """Context switches (voluntary + involuntary) of all of a process's threads so far."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return float("nan")
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass  # the thread ended
    return total


def machine_cpu():
    """(busy, steal) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK, v[7] / CLK_TCK


def new_client(endpoint, region):
    config = botocore.config.Config(
        retries={"total_max_attempts": 1},  # count failures, do not hide them
        connect_timeout=10,
        read_timeout=30,
        max_pool_connections=2,
    )
    session = boto3.session.Session()
    return session.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key="dummy-secret",
        config=config,
    )


def upstream_stats(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def sanity(paths, region, stats_url):
    for i, (name, endpoint) in enumerate(paths):
        before = upstream_stats(stats_url) if stats_url else {}
        c = new_client(endpoint, region)
        c.put_item(TableName=TABLE, Item=ITEM)
        got = c.get_item(TableName=TABLE, Key=KEY).get("Item")
        if got != ITEM:
            sys.exit(f"sanity: GetItem through {name} returned {got!r}, expected {ITEM!r}")
        if stats_url:
            after = upstream_stats(stats_url)
            seen = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            signers = sorted(seen)
            if i == 0:
                if signers != [f"{DUMMY_KEY} no-token"]:
                    sys.exit(f"sanity: the upstream saw {seen} from {name}, expected the client's dummy key")
            elif len(signers) != 1 or signers[0].startswith(DUMMY_KEY) or not signers[0].endswith(" token"):
                sys.exit(f"sanity: the upstream saw {seen} from {name}, expected one re-signed key with a session token")
            print(f"sanity: {name}: PutItem + GetItem round trip ok; upstream saw signer {signers[0]!r}", file=sys.stderr)
        c.close()


class Run:
    """Accumulates one (path, clients) measurement over its slices."""

    def __init__(self, name, clients, pids):
        self.name, self.clients = name, clients
        self.latencies = []  # ns
        self.seconds = 0.0
        self.errors = 0
        self.error_samples = []
        self.cpu = {k: 0.0 for k in ["loadgen", *pids]}
        self.switches = {k: 0 for k in pids}
        self.busy = self.steal = 0.0


def slice_(clients, seconds, run, pids):
    """Runs every client in its own thread for `seconds`; adds to `run` when given."""
    n = len(clients)
    results = [None] * n
    barrier = threading.Barrier(n + 1)
    start_box = {}

    def worker(i, client):
        lat = []
        errors = []
        get = client.get_item
        perf = time.perf_counter_ns
        barrier.wait()
        deadline = start_box["deadline"]
        while True:
            t0 = perf()
            if t0 >= deadline:
                break
            try:
                r = get(TableName=TABLE, Key=KEY)
                if "Item" not in r:
                    raise RuntimeError(f"no Item in {r!r}")
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")
                continue
            lat.append(perf() - t0)
        results[i] = (lat, errors, perf())

    threads = [threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    cpu0 = {k: proc_cpu(p) for k, p in pids.items()}
    sw0 = {k: proc_switches(p) for k, p in pids.items()}
    own0 = time.process_time()
    busy0, steal0 = machine_cpu()
    t0 = time.perf_counter_ns()
    start_box["deadline"] = t0 + int(seconds * 1e9)
    barrier.wait()
    for t in threads:
        t.join()
    end = max(r[2] for r in results)
    own1 = time.process_time()
    busy1, steal1 = machine_cpu()
    cpu1 = {k: proc_cpu(p) for k, p in pids.items()}
    sw1 = {k: proc_switches(p) for k, p in pids.items()}
    if run is None:
        return
    run.seconds += (end - t0) / 1e9
    for lat, errors, _ in results:
        run.latencies.extend(lat)
        run.errors += len(errors)
        run.error_samples.extend(errors[: max(0, 5 - len(run.error_samples))])
    run.cpu["loadgen"] += own1 - own0
    for k in pids:
        run.cpu[k] += cpu1[k] - cpu0[k]
        run.switches[k] += sw1[k] - sw0[k]
    run.busy += busy1 - busy0
    run.steal += steal1 - steal0


def pct(sorted_values, q):
    if not sorted_values:
        return float("nan")
    # nearest rank
    i = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


def summarize(run, pids_all):
    lat = sorted(run.latencies)
    n = len(lat)
    ms = lambda ns: round(ns / 1e6, 3)  # noqa: E731
    ours = sum(v for v in run.cpu.values() if v == v)
    rec = {
        "kind": "run",
        "path": run.name,
        "clients": run.clients,
        "requests": n,
        "seconds": round(run.seconds, 3),
        "rps": round(n / run.seconds, 1) if run.seconds else 0,
        "p50_ms": ms(pct(lat, 50)),
        "p95_ms": ms(pct(lat, 95)),
        "p99_ms": ms(pct(lat, 99)),
        "mean_ms": ms(sum(lat) / n) if n else None,
        "max_ms": ms(lat[-1]) if n else None,
        "errors": run.errors,
        "error_samples": run.error_samples,
        "cpu_us_per_request": {k: (round(v / n * 1e6, 1) if n else None) for k, v in run.cpu.items()},
        "context_switches_per_request": {k: (round(v / n, 2) if n else None) for k, v in run.switches.items()},
        "cpu_cores": {k: round(v / run.seconds, 3) for k, v in run.cpu.items()} if run.seconds else {},
        "machine_busy_cores": round(run.busy / run.seconds, 3) if run.seconds else None,
        "other_processes_cores": round(max(0.0, run.busy - ours) / run.seconds, 3) if run.seconds else None,
        "steal_cores": round(run.steal / run.seconds, 3) if run.seconds else None,
    }
    return rec


def fmt(v, digits=0):
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def table(records, paths, pid_names):
    runs = {(r["path"], r["clients"]): r for r in records if r["kind"] == "run"}
    comps = {(r["path"], r["clients"]): r for r in records if r["kind"] == "compare"}
    base = paths[0]
    others = paths[1:]
    head = ["metric", *paths] + [f"{o}/{base}" for o in others]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def row(label, values, ratios=None):
        ratios = ratios if ratios is not None else ["-"] * len(others)
        lines.append("| " + " | ".join([label, *values, *ratios]) + " |")

    for n in sorted({c for _, c in runs}):
        rs = [runs.get((p, n)) for p in paths]
        if any(r is None for r in rs):
            continue
        cl = f"{n} client{'s' if n != 1 else ''}"
        row(f"{cl}: requests/s", [fmt(r["rps"]) for r in rs], [fmt(comps[(o, n)]["rps_ratio"], 2) for o in others])
        for q in ("p50", "p95", "p99"):
            row(f"{cl}: {q} ms", [fmt(r[f"{q}_ms"], 3) for r in rs], [fmt(r[f"{q}_ms"] / rs[0][f"{q}_ms"], 2) for r in rs[1:]])
        row(f"{cl}: added p50 latency µs", ["-"] + [fmt(comps[(o, n)]["added_p50_ms"] * 1000) for o in others])
        row("&nbsp;&nbsp;requests (errors)", [f"{r['requests']:,} ({r['errors']})" for r in rs])
        for k in ["loadgen", *pid_names]:
            label = "load generator" if k == "loadgen" else k
            row(f"&nbsp;&nbsp;CPU µs/request: {label}", [fmt(r["cpu_us_per_request"].get(k), 1) for r in rs])
        for k in pid_names:
            row(f"&nbsp;&nbsp;context switches/request: {k}", [fmt(r["context_switches_per_request"].get(k), 1) for r in rs])
        row("&nbsp;&nbsp;load generator CPU, cores", [fmt(r["cpu_cores"].get("loadgen"), 2) for r in rs])
        row("&nbsp;&nbsp;machine CPU busy, cores", [fmt(r["machine_busy_cores"], 2) for r in rs])
        row("&nbsp;&nbsp;other processes (noise), cores", [fmt(r["other_processes_cores"], 2) for r in rs])
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", action="append", required=True, help="NAME=ENDPOINT_URL; the first is the baseline")
    ap.add_argument("--clients", default="1 8", help="client (thread) counts, space-separated")
    ap.add_argument("--duration", type=float, default=10, help="measured seconds per (path, clients)")
    ap.add_argument("--warmup", type=float, default=2, help="unrecorded seconds per (path, clients) first")
    ap.add_argument("--rounds", type=int, default=5, help="slices the duration is measured in, alternating paths")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--pid", action="append", default=[], help="NAME=PID of a process whose CPU to report (all paths)")
    ap.add_argument("--stats-url", help="the stand-in upstream's /stats, for the signer check")
    ap.add_argument("--results", required=True, help="JSON lines out")
    ap.add_argument("--table", required=True, help="markdown table out")
    args = ap.parse_args()

    paths = [tuple(p.split("=", 1)) for p in args.path]
    pids = {k: int(v) for k, v in (p.split("=", 1) for p in args.pid)}
    counts = [int(c) for c in args.clients.split()]
    names = [p[0] for p in paths]

    sanity(paths, args.region, args.stats_url)
    records = []
    failed = False
    for n in counts:
        clients = {name: [new_client(ep, args.region) for _ in range(n)] for name, ep in paths}
        if args.warmup > 0:
            for name in names:
                print(f"warm-up: {name}, {n} client(s), {args.warmup:g}s", file=sys.stderr)
                slice_(clients[name], args.warmup, None, pids)
        runs = {name: Run(name, n, pids) for name in names}
        per_slice = args.duration / args.rounds
        print(f"measuring: {n} client(s), {args.rounds} rounds of {per_slice:g}s per path, alternating", file=sys.stderr)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                slice_(clients[name], per_slice, runs[name], pids)
        for cs in clients.values():
            for c in cs:
                c.close()
        summaries = {name: summarize(runs[name], pids) for name in names}
        for name in names:
            s = summaries[name]
            records.append(s)
            print(f"  {name:>8} {n:>3} clients: {s['rps']:>9,.1f} req/s  p50 {s['p50_ms']:.3f} ms  p95 {s['p95_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  errors {s['errors']}", file=sys.stderr)
            if s["errors"]:
                failed = True
                for e in s["error_samples"]:
                    print(f"    error: {e}", file=sys.stderr)
        b = summaries[names[0]]
        for name in names[1:]:
            s = summaries[name]
            records.append({
                "kind": "compare",
                "path": name,
                "baseline": names[0],
                "clients": n,
                "rps_ratio": round(s["rps"] / b["rps"], 3) if b["rps"] else None,
                "added_p50_ms": round(s["p50_ms"] - b["p50_ms"], 3),
                "added_p99_ms": round(s["p99_ms"] - b["p99_ms"], 3),
            })
    with open(args.results, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    with open(args.table, "w") as f:
        f.write(table(records, names, list(pids)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
