#!/usr/bin/env python3
"""Collect pgbench results for bench/pg.sh and print the comparison table.

  pg_report.py record --results R.jsonl --kind S|C --clients N --target T --output OUT \
      [--log-prefix PFX] [--middle-cpu SECONDS] [--busy CORE_SECONDS] [--wall SECONDS]
      Parses pgbench's summary (OUT), computes latency percentiles from the per-transaction
      logs PFX.* (`pgbench -l`, third column = latency in microseconds), appends one JSON line.

  pg_report.py record-mem --results R.jsonl --target T --before KIB --after KIB --count N
  pg_report.py table --results R.jsonl [--markdown]

Standard library only.
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys

TARGETS = ("direct", "portcullis", "pgbouncer")


def maybe_int(text):
    """perf stat prints `<not counted>` when it could not count."""
    return int(text) if text.strip().isdigit() else None


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_pgbench(text):
    out = {}
    m = re.search(r"^tps = ([0-9.]+)", text, re.M)
    out["tps"] = float(m.group(1)) if m else None
    m = re.search(r"^latency average = ([0-9.]+) ms", text, re.M)
    out["avg_ms"] = float(m.group(1)) if m else None
    m = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
    out["transactions"] = int(m.group(1)) if m else None
    m = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    out["failed"] = int(m.group(1)) if m else 0
    m = re.search(r"^average connection time = ([0-9.]+) ms", text, re.M)
    out["conn_ms"] = float(m.group(1)) if m else None
    m = re.search(r"^initial connection time = ([0-9.]+) ms", text, re.M)
    out["initial_conn_ms"] = float(m.group(1)) if m else None
    return out


def record(args):
    with open(args.output) as f:
        text = f.read()
    row = {"kind": args.kind, "clients": args.clients, "target": args.target}
    row.update(parse_pgbench(text))
    if row["tps"] is None:
        sys.exit(f"pg_report: no tps line in {args.output}:\n{text}")
    if args.log_prefix:
        lat = []
        for path in glob.glob(glob.escape(args.log_prefix) + ".*"):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lat.append(int(parts[2]))
            os.remove(path)
        lat.sort()
        row["logged"] = len(lat)
        if lat:
            row["p50_ms"] = percentile(lat, 50) / 1000.0
            row["p99_ms"] = percentile(lat, 99) / 1000.0
            row["max_ms"] = lat[-1] / 1000.0
    for key in ("middle_cpu", "middle_switches", "busy", "ours", "steal", "wall"):
        value = getattr(args, key)
        if value is not None:
            row[key] = value
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    shown = {k: row.get(k) for k in ("tps", "avg_ms", "p99_ms", "conn_ms", "failed")}
    print(f"  {args.target:<10} {args.kind} c={args.clients}: " + ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None))


def record_mem(args):
    per = (args.after - args.before) / args.count
    row = {"kind": "mem", "target": args.target, "before_kib": args.before, "after_kib": args.after, "count": args.count, "kib_per_conn": per}
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"  {args.target}: RSS {args.before} KiB -> {args.after} KiB over {args.count} idle connections = {per:.1f} KiB each")


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def fmt(value, digits):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(args):
    rows = load(args.results)
    # With REPEAT > 1 there are several rows per (kind, clients, target): take each figure's
    # median.
    groups = {}
    for r in rows:
        groups.setdefault((r["kind"], r.get("clients"), r["target"]), []).append(r)
    get = {}
    for key, group in groups.items():
        merged = dict(group[0])
        for field in group[0]:
            values = [g[field] for g in group if isinstance(g.get(field), (int, float)) and not isinstance(g.get(field), bool)]
            if values and len(values) == len(group):
                merged[field] = statistics.median(values)
        merged["runs"] = len(group)
        get[key] = merged
    clients = sorted({r["clients"] for r in rows if r["kind"] == "S"})
    lines = []  # (metric, direct, portcullis, pgbouncer, p/d, p/b)

    def add(metric, key, kind, n, digits, scale=1.0):
        vals = []
        for t in TARGETS:
            r = get.get((kind, n, t))
            v = r.get(key) if r else None
            vals.append(v * scale if v is not None else None)
        d, p, b = vals
        lines.append((metric, fmt(d, digits), fmt(p, digits), fmt(b, digits), fmt(ratio(p, d), 2), fmt(ratio(p, b), 2)))
        return vals

    noisy = []

    def add_noise(metric, kind, n):
        vals = []
        for t in TARGETS:
            r = get.get((kind, n, t))
            if r and r.get("ours") is not None and r.get("wall"):
                pct = 100.0 * max(0.0, r["busy"] - r["ours"]) / r["wall"] / (os.cpu_count() or 1)
                steal = 100.0 * r.get("steal", 0.0) / r["wall"] / (os.cpu_count() or 1)
                vals.append(f"{pct:.0f}/{steal:.0f}")
                if pct + steal > 5:
                    noisy.append(f"{kind} {n}c {t} ({pct:.0f}% other, {steal:.0f}% steal)")
            else:
                vals.append("-")
        lines.append((metric, vals[0], vals[1], vals[2], "-", "-"))

    for n in clients:
        label = f"pgbench -S {n} client{'s' if n != 1 else ''}"
        add(f"{label} TPS", "tps", "S", n, 0)
        add(f"{label} avg ms", "avg_ms", "S", n, 3)
        add(f"{label} p99 ms", "p99_ms", "S", n, 3)
        # CPU of the middle tier (proxy or pgbouncer process) per transaction, and how busy
        # the whole 2-core machine was.
        cpu = []
        for t in TARGETS:
            r = get.get(("S", n, t))
            if r and r.get("middle_cpu") is not None and r.get("transactions") and t != "direct":
                cpu.append(r["middle_cpu"] * 1e6 / r["transactions"])
            else:
                cpu.append(None)
        lines.append((f"  middle-tier CPU us/txn ({n}c)", fmt(cpu[0], 1), fmt(cpu[1], 1), fmt(cpu[2], 1), "-", fmt(ratio(cpu[1], cpu[2]), 2)))
        for field, what in (("middle_switches", "context switches"),):
            per = []
            for t in TARGETS:
                r = get.get(("S", n, t))
                if r and r.get(field) is not None and r.get("transactions") and t != "direct":
                    per.append(r[field] / r["transactions"])
                else:
                    per.append(None)
            lines.append((f"  middle-tier {what}/txn ({n}c)", fmt(per[0], 1), fmt(per[1], 1), fmt(per[2], 1), "-", fmt(ratio(per[1], per[2]), 2)))
        busy = []
        for t in TARGETS:
            r = get.get(("S", n, t))
            busy.append(100.0 * r["busy"] / r["wall"] / (os.cpu_count() or 1) if r and r.get("busy") is not None and r.get("wall") else None)
        lines.append((f"  machine CPU busy % ({n}c)", fmt(busy[0], 0), fmt(busy[1], 0), fmt(busy[2], 0), "-", "-"))
        add_noise(f"  noise: other procs/steal % ({n}c)", "S", n)
    add("new connections/s (pgbench -C)", "tps", "C", 1, 1)
    add("  avg connection time ms (-C)", "conn_ms", "C", 1, 3)
    add_noise("  noise: other procs/steal % (-C)", "C", 1)
    mem = next((r for r in rows if r["kind"] == "mem" and r["target"] == "portcullis"), None)
    lines.append(("RSS per idle connection (KiB)", "-", fmt(mem["kib_per_conn"], 1) if mem else "-", "-", "-", "-"))

    header = ("metric", "direct", "portcullis", "pgbouncer", "portcullis/direct", "portcullis/pgbouncer")

    # Targets.
    verdicts = []

    def verdict(name, value, op, limit, unit=""):
        if value is None:
            verdicts.append((name, "-", "NOT MEASURED"))
            return
        ok = value >= limit if op == ">=" else value <= limit
        verdicts.append((name, f"{value:.2f}{unit} (target {op} {limit}{unit})", "PASS" if ok else "MISS"))

    if clients:
        low, high = min(clients), max(clients)
        d, p = get.get(("S", low, "direct")), get.get(("S", low, "portcullis"))
        verdict(f"TPS at {low} client(s): portcullis/direct", ratio(p and p["tps"], d and d["tps"]), ">=", 0.85, "x")
        b, p = get.get(("S", high, "pgbouncer")), get.get(("S", high, "portcullis"))
        verdict(f"TPS at {high} clients: portcullis/pgbouncer", ratio(p and p["tps"], b and b["tps"]), ">=", 1.0, "x")
    d, p = get.get(("C", 1, "direct")), get.get(("C", 1, "portcullis"))
    verdict("connection rate: portcullis/direct", ratio(p and p["tps"], d and d["tps"]), ">=", 0.8, "x")
    verdict("RSS per idle connection", mem["kib_per_conn"] if mem else None, "<=", 64, " KiB")

    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
        print()
        print("| target | measured | result |")
        print("|---|---|---|")
        for v in verdicts:
            print("| " + " | ".join(v) + " |")
    else:
        print_columns([header] + lines)
        print()
        w = max(len(v[0]) for v in verdicts)
        for name, value, result in verdicts:
            print(f"{name.ljust(w)}  {result:<12} {value}")
    if noisy:
        print()
        print("WARNING: other processes or the hypervisor took more than 5% of the machine during: " + ", ".join(noisy) + "; those figures are not clean.")


def print_columns(rows):
    """Prints rows as plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for cols in rows:
        print("  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cols)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--results", required=True)
    r.add_argument("--kind", choices=["S", "C"], required=True)
    r.add_argument("--clients", type=int, required=True)
    r.add_argument("--target", choices=TARGETS, required=True)
    r.add_argument("--output", required=True)
    r.add_argument("--log-prefix")
    r.add_argument("--middle-cpu", type=float, help="CPU seconds used by the proxy/pgbouncer process during the run")
    r.add_argument("--busy", type=float, help="CPU seconds used by the whole machine during the run")
    r.add_argument("--wall", type=float, help="wall seconds of the run")
    r.add_argument("--steal", type=float, help="CPU seconds the hypervisor stole from this machine during the run")
    r.add_argument("--ours", type=float, help="CPU seconds used by the benchmark's own processes during the run")
    r.add_argument("--middle-switches", type=maybe_int, help="context switches of the proxy/pgbouncer threads during the run (/proc/PID/task/*/status)")
    m = sub.add_parser("record-mem")
    m.add_argument("--results", required=True)
    m.add_argument("--target", default="portcullis")
    m.add_argument("--before", type=int, required=True)
    m.add_argument("--after", type=int, required=True)
    m.add_argument("--count", type=int, required=True)
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    t.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    {"record": record, "record-mem": record_mem, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
