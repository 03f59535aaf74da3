#!/usr/bin/env python3
"""Collect sysbench results for bench/mysql.sh and print the comparison table.

  mysql_report.py record --results R.jsonl --clients N --target direct|portcullis --output OUT \
      [--proxy-cpu SECONDS] [--busy CORE_SECONDS] [--ours CORE_SECONDS] [--steal CORE_SECONDS] [--wall SECONDS]
      Parses sysbench's report (OUT, run with --histogram=on) and appends one JSON line.
      sysbench prints latencies in ms with two decimals, too coarse here, so the average is
      `sum / events` and the p95 comes from the histogram (three decimals, nearest rank).

  mysql_report.py table --results R.jsonl [--markdown]

Standard library only; shares its helpers with pg_report.py.
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_report import fmt, load, print_columns, ratio  # noqa: E402

TARGETS = ("direct", "portcullis")
TARGET_RATIO = 0.85  # portcullis/direct queries per second at the smallest client count


def number(pattern, text, cast=float):
    m = re.search(pattern, text, re.M)
    return cast(m.group(1)) if m else None


def parse_sysbench(text):
    out = {
        "transactions": number(r"^\s+transactions:\s+(\d+)", text, int),
        "tps": number(r"^\s+transactions:\s+\d+\s+\(([0-9.]+) per sec", text),
        "queries": number(r"^\s+queries:\s+(\d+)", text, int),
        "qps": number(r"^\s+queries:\s+\d+\s+\(([0-9.]+) per sec", text),
        "errors": number(r"^\s+ignored errors:\s+(\d+)", text, int),
        "reconnects": number(r"^\s+reconnects:\s+(\d+)", text, int),
        "seconds": number(r"^\s+total time:\s+([0-9.]+)s", text),
        "events": number(r"^\s+total number of events:\s+(\d+)", text, int),
        "sysbench_avg_ms": number(r"^\s+avg:\s+([0-9.]+)", text),
        "sysbench_p95_ms": number(r"^\s+95th percentile:\s+([0-9.]+)", text),
        "max_ms": number(r"^\s+max:\s+([0-9.]+)", text),
    }
    latency_sum = number(r"^\s+sum:\s+([0-9.]+)", text)
    if latency_sum is not None and out["events"]:
        out["avg_ms"] = latency_sum / out["events"]
    # Histogram lines: "       0.023 |*****        523"
    buckets = [(float(v), int(c)) for v, c in re.findall(r"^\s+([0-9.]+) \|\**\s+(\d+)$", text, re.M)]
    total = sum(c for _, c in buckets)
    if total:
        need, seen = 0.95 * total, 0
        for value, count in buckets:
            seen += count
            if seen >= need:
                out["p95_ms"] = value
                break
    return out


def record(args):
    with open(args.output) as f:
        text = f.read()
    row = {"clients": args.clients, "target": args.target}
    row.update(parse_sysbench(text))
    if row["qps"] is None:
        sys.exit(f"mysql_report: no queries line in {args.output}:\n{text}")
    for key in ("proxy_cpu", "busy", "ours", "steal", "wall"):
        value = getattr(args, key)
        if value is not None:
            row[key] = value
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    shown = {k: row.get(k) for k in ("qps", "avg_ms", "p95_ms", "errors")}
    print(f"  {args.target:<10} c={args.clients}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items() if v is not None))


def table(args):
    rows = load(args.results)
    get = {(r["clients"], r["target"]): r for r in rows}  # one run per (clients, target)
    clients = sorted({r["clients"] for r in rows})
    cores = os.cpu_count() or 1
    lines, noisy = [], []

    def add(metric, key, n, digits, ratio_digits=2):
        d, p = ((get.get((n, t)) or {}).get(key) for t in TARGETS)
        lines.append((metric, fmt(d, digits), fmt(p, digits), fmt(ratio(p, d), ratio_digits)))

    for n in clients:
        label = f"{n} client{'s' if n != 1 else ''}"
        add(f"point_select {label} queries/s", "qps", n, 0)
        add(f"point_select {label} avg ms", "avg_ms", n, 3)
        add(f"point_select {label} p95 ms", "p95_ms", n, 3)
        p = get.get((n, "portcullis"))
        cpu = p["proxy_cpu"] * 1e6 / p["queries"] if p and p.get("proxy_cpu") is not None and p.get("queries") else None
        lines.append((f"  proxy CPU us/query ({n}c)", "-", fmt(cpu, 1), "-"))
        noise = []
        for t in TARGETS:
            r = get.get((n, t))
            if r and r.get("ours") is not None and r.get("wall"):
                other = 100.0 * max(0.0, r["busy"] - r["ours"]) / r["wall"] / cores
                steal = 100.0 * r.get("steal", 0.0) / r["wall"] / cores
                noise.append(f"{other:.0f}/{steal:.0f}")
                if other + steal > 5:
                    noisy.append(f"{n}c {t} ({other:.0f}% other, {steal:.0f}% steal)")
            else:
                noise.append("-")
        lines.append((f"  noise: other procs/steal % ({n}c)", noise[0], noise[1], "-"))

    verdict = None
    if clients:
        low = min(clients)
        d, p = get.get((low, "direct")), get.get((low, "portcullis"))
        value = ratio(p and p.get("qps"), d and d.get("qps"))
        name = f"queries/s at {low} client{'s' if low != 1 else ''}: portcullis/direct"
        if value is None:
            verdict = (name, "-", "NOT MEASURED")
        else:
            verdict = (name, f"{value:.2f}x (target >= {TARGET_RATIO}x)", "MET" if value >= TARGET_RATIO else "NOT MET")

    header = ("metric", "direct", "portcullis", "portcullis/direct")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for line in lines:
            metric = line[0].lstrip(" ")
            metric = "&nbsp;&nbsp;" * ((len(line[0]) - len(metric)) // 2) + metric
            print("| " + " | ".join((metric,) + tuple(line[1:])) + " |")
        if verdict:
            print()
            print(f"Target: {verdict[0]} = {verdict[1]}: **{verdict[2]}**")
    else:
        print_columns([header] + lines)
        if verdict:
            print()
            print(f"target: {verdict[0]} = {verdict[1]}: {verdict[2]}")
    if noisy:
        print()
        print("WARNING: other processes or the hypervisor took more than 5% of the machine during: " + ", ".join(noisy) + "; those figures are not clean.")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--results", required=True)
    r.add_argument("--clients", type=int, required=True)
    r.add_argument("--target", choices=TARGETS, required=True)
    r.add_argument("--output", required=True)
    r.add_argument("--proxy-cpu", type=float, help="CPU seconds used by the proxy process during the run")
    r.add_argument("--busy", type=float, help="CPU seconds used by the whole machine during the run")
    r.add_argument("--ours", type=float, help="CPU seconds used by the benchmark's own processes during the run")
    r.add_argument("--steal", type=float, help="CPU seconds the hypervisor stole during the run")
    r.add_argument("--wall", type=float, help="wall seconds of the run")
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    t.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    {"record": record, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
