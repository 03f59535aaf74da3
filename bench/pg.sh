#!/usr/bin/env bash
# PostgreSQL throughput, latency, connection rate and idle-connection memory of Portcullis,
# compared with connecting directly and with PgBouncer, all on this machine.
#
#   sudo bash bench/pg.sh                     # from the repository root, as root
#   DURATION=30 CLIENTS="1 8 32" bash bench/pg.sh
#
# Knobs (environment):
#   DURATION    seconds per pgbench run (default 15, at most 800: IAM tokens for the direct
#               and PgBouncer clients are regenerated before every run, and one run must fit
#               in a token's 15 minutes)
#   CLIENTS     pgbench -S client counts (default "1 32"); targets use the smallest and largest
#   IDLE_CONNS  idle TLS connections opened through the proxy for the memory figure (1000)
#   REPEAT      measure each (run, target) this many times, interleaving the three targets,
#               and report the median of each figure (default 1)
#   RUNS        which measurements to make (default "S C mem": pgbench -S, pgbench -C, memory)
#   PROXY_WORKER_THREADS  diagnostic: TOKIO_WORKER_THREADS for the proxy (default: one per core)
#   SCALE       pgbench -i scale (default 10, ~150 MB)
#   WARMUP      seconds of warm-up per path before measuring (default 3)
#   PORTCULLIS_BIN  the proxy binary (default $HOME/.cache/portcullis/target/release/portcullis)
#   OUT         directory to copy results into (results.jsonl, table.txt, table.md, logs)
#   KEEP=1      keep the scratch directory (printed) instead of deleting it
#   PERF=1      profile the proxy and PgBouncer with `perf record -g` during their measured runs
#               (perf.data and text reports in OUT/perf/; the profiler costs CPU, so those
#               numbers are not clean)
#   AUDIT_QUERIES=false  diagnostic only: do not audit statements (the real default is true)
#   QUIET_MAX   before each measured run, wait until processes outside the benchmark use less
#               than this many cores (default 0.10) ...
#   QUIET_WAIT  ... for at most this many seconds (default 300), then measure anyway. The CPU
#               other processes used during each run is reported ("noise"), measured as the
#               machine's busy time minus the benchmark's own (a cpuacct cgroup).
#
# What runs (everything on 127.0.0.1, free ports, stopped on exit):
#   * PostgreSQL 15 (Debian) with TLS and max_connections=1300; the IAM user `app` logs in
#     with an RDS IAM token checked by PAM (pam_exec + tests/support/rdstokencheck), exactly
#     like the integration tests; database `bench` from `pgbench -i -s $SCALE`.
#   * Portcullis, standalone, mTLS towards clients, verify-full TLS + IAM token upstream,
#     audit (every statement) to a file, log level warn, no upstream connect rate limit.
#   * PgBouncer (Debian), session pooling, TLS on both sides (verify-full upstream), the IAM
#     token as the upstream password.
#   * pgbench -S (select-only) for each client count against direct / portcullis / pgbouncer,
#     then pgbench -C -S -c 1 (a new connection per transaction) against each.
#   * IDLE_CONNS idle TLS sessions through a freshly started proxy (bench/pg_idle.py):
#     (VmRSS after - VmRSS before) / IDLE_CONNS.
# Prints one table (bench/pg_report.py) with the targets marked PASS/MISS.
set -euo pipefail

DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-"1 32"}
IDLE_CONNS=${IDLE_CONNS:-1000}
SCALE=${SCALE:-10}
WARMUP=${WARMUP:-3}
KEEP=${KEEP:-0}
PERF=${PERF:-0}
REPEAT=${REPEAT:-1}
RUNS=${RUNS:-"S C mem"}
PROXY_WORKER_THREADS=${PROXY_WORKER_THREADS:-}
QUIET_MAX=${QUIET_MAX:-0.10}
QUIET_WAIT=${QUIET_WAIT:-300}
AUDIT_QUERIES=${AUDIT_QUERIES:-true}
OUT=${OUT:-}
BIN=${PORTCULLIS_BIN:-$HOME/.cache/portcullis/target/release/portcullis}
PGBIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
REGION=us-east-1
ACCESS_KEY=AKIABENCHPORTCULLIS1
SECRET_KEY=bench-secret-key-0123456789abcdefghijklm

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# ---------------------------------------------------------------------------- prerequisites
[[ $(id -u) == 0 ]] || die "run as root (writes /etc/pam.d, runs PostgreSQL and PgBouncer as postgres)"
[[ -x $BIN ]] || die "no proxy binary at $BIN (build it with cargo build --release)"
[[ -x $PGBIN/postgres ]] || die "PostgreSQL 15 not found in $PGBIN"
[[ -x $PGBOUNCER ]] || die "PgBouncer not found at $PGBOUNCER"
for c in pgbench psql python3 runuser setpriv; do command -v "$c" >/dev/null || die "$c not found"; done
python3 -c 'import boto3' 2>/dev/null || die "python3 needs boto3 (to generate tokens for direct and PgBouncer clients)"
id postgres >/dev/null 2>&1 || die "no postgres OS user"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 800 ]] || die "DURATION must be 1..800 seconds (an IAM token lives 900 s)"
for n in $CLIENTS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive integers, got '$n'"; done
for r in $RUNS; do [[ $r == S || $r == C || $r == mem ]] || die "RUNS may hold S, C and mem, got '$r'"; done
[[ -z $PROXY_WORKER_THREADS || $PROXY_WORKER_THREADS =~ ^[1-9][0-9]*$ ]] || die "PROXY_WORKER_THREADS must be a positive integer"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
[[ $AUDIT_QUERIES == true || $AUDIT_QUERIES == false ]] || die "AUDIT_QUERIES must be true or false"
[[ $PERF != 1 ]] || command -v perf >/dev/null || die "PERF=1 needs perf"


# File descriptors: the proxy holds two sockets per session; PgBouncer and pgbench need some.
need_fds=$((IDLE_CONNS * 2 + 512))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= need_fds)) || die "ulimit -n is $(ulimit -n); need at least $need_fds for $IDLE_CONNS idle connections"

TOKENCHECK=$(bash "$REPO/tests/support/build-rdstokencheck.sh" 2>/dev/null | tail -n1)
[[ -x $TOKENCHECK ]] || die "cannot build tests/support/rdstokencheck (needs go)"

# ---------------------------------------------------------------------------- scratch and cleanup
T=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/runs"
RESULTS=$T/results.jsonl
: >"$RESULTS"
PG_STARTED=0 PAM_SERVICE="" PROXY_PID="" BOUNCER_PID="" IDLE_PID="" CG=""

# Everything this script starts runs in its own cpuacct cgroup, so that the CPU used by other
# processes on the machine (noise) can be told apart from the benchmark's.
CG_ROOT=/sys/fs/cgroup/cpuacct
if [[ -w $CG_ROOT/cgroup.procs ]] && mkdir "$CG_ROOT/portcullis-bench-$$" 2>/dev/null; then
    CG=$CG_ROOT/portcullis-bench-$$
    echo $$ >"$CG/cgroup.procs" || CG=""
fi

cleanup() {
    local rc=$?
    set +e
    stop_pid "$IDLE_PID" 5
    stop_pid "$PROXY_PID" 15
    stop_pid "$BOUNCER_PID" 10
    if ((PG_STARTED)); then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m fast -t 30 stop >/dev/null 2>&1 ||
            runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m immediate stop >/dev/null 2>&1
    fi
    [[ -n $PAM_SERVICE ]] && rm -f "/etc/pam.d/$PAM_SERVICE"
    if [[ -n $CG ]]; then
        echo $$ >"$CG_ROOT/cgroup.procs"
        rmdir "$CG" 2>/dev/null || log "cgroup $CG still has processes: $(cat "$CG/cgroup.procs" | tr '\n' ' ')"
    fi
    if [[ -n $OUT ]]; then
        mkdir -p "$OUT"
        cp -f "$T"/results.jsonl "$T"/table.txt "$T"/table.md "$T"/info.txt "$OUT"/ 2>/dev/null
        cp -f "$T"/proxy/proxy.log "$OUT"/proxy.log 2>/dev/null
        cp -f "$T"/pgbouncer/pgbouncer.log "$OUT"/pgbouncer.log 2>/dev/null
        cp -f "$T"/pg/postgres.log "$OUT"/postgres.log 2>/dev/null
        cp -f "$T"/runs/*.out "$T"/runs/*.err "$OUT"/ 2>/dev/null
        [[ -d $T/perf ]] && cp -rf "$T/perf" "$OUT"/
    fi
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "scratch directory kept: $T"
    else
        rm -rf "$T"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() { runuser -u postgres -- "$@"; }
vm_rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
http_get() { curl -fsS --max-time 5 "http://127.0.0.1:$1$2"; }

PGPORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
BOUNCER_PORT=$(free_port)

# ---------------------------------------------------------------------------- certificates
log "scratch: $T; ports: postgres $PGPORT, portcullis $PROXY_PORT (admin $ADMIN_PORT), pgbouncer $BOUNCER_PORT"
"$BIN" ca init --dir "$T/upstream-ca" >/dev/null          # PostgreSQL's server certificate
"$BIN" ca init --dir "$T/proxy-ca" >/dev/null             # the proxy's client CA + server cert
"$BIN" ca init --dir "$T/pgbouncer-ca" >/dev/null         # PgBouncer's server certificate
"$BIN" cert issue --ca-dir "$T/proxy-ca" --user bench --group dev --ttl 4h --out "$T/client" >/dev/null
mkdir -p "$T/secrets/upstream-ca"
cp "$T/upstream-ca/ca.crt" "$T/secrets/upstream-ca/ca.crt"
chmod 755 "$T/secrets" "$T/secrets/upstream-ca"
chmod 644 "$T/secrets/upstream-ca/ca.crt"

# ---------------------------------------------------------------------------- PostgreSQL
log "starting PostgreSQL 15 (TLS, PAM token check for IAM users)"
mkdir -p "$T/pg/data" "$T/pg/sock"
chmod 700 "$T/pg/data"
chown postgres:postgres "$T/pg" "$T/pg/data" "$T/pg/sock"
as_pg "$PGBIN/initdb" -A trust -U postgres --no-sync -D "$T/pg/data" >/dev/null
install -o postgres -g postgres -m 644 "$T/upstream-ca/server.crt" "$T/pg/data/server.crt"
install -o postgres -g postgres -m 600 "$T/upstream-ca/server.key" "$T/pg/data/server.key"
install -m 755 "$TOKENCHECK" "$T/rdstokencheck"
printf '{"%s": "%s"}\n' "$ACCESS_KEY" "$SECRET_KEY" >"$T/keys.json"
chmod 644 "$T/keys.json"
install -o postgres -g postgres -m 644 /dev/null "$T/pam.log"
PAM_SERVICE="portcullis-bench-$PGPORT-$$"
printf 'auth required pam_exec.so expose_authtok quiet %s -keys %s -endpoint 127.0.0.1:%s -region %s -log %s\naccount required pam_permit.so\n' \
    "$T/rdstokencheck" "$T/keys.json" "$PGPORT" "$REGION" "$T/pam.log" >"/etc/pam.d/$PAM_SERVICE"
cat >"$T/pg/data/pg_hba.conf" <<EOF
local all all trust
hostssl all postgres 127.0.0.1/32 reject
hostssl all all 127.0.0.1/32 pam pamservice=$PAM_SERVICE
host all all 127.0.0.1/32 reject
EOF
install -o postgres -g postgres -m 644 /dev/null "$T/pg/postgres.log"
PG_STARTED=1
as_pg "$PGBIN/pg_ctl" -w -t 60 -D "$T/pg/data" -l "$T/pg/postgres.log" -o \
    "-p $PGPORT -k $T/pg/sock -c listen_addresses=127.0.0.1 -c ssl=on -c max_connections=1300 -c shared_buffers=256MB -c fsync=off" \
    start >/dev/null
psql_su() { psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -h "$T/pg/sock" -p "$PGPORT" "$@"; }
psql_su -d postgres -c "CREATE ROLE app LOGIN" -c "CREATE DATABASE bench OWNER app"
log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" -U app -h "$T/pg/sock" -p "$PGPORT" bench >"$T/runs/init.out" 2>&1 || { cat "$T/runs/init.out"; die "pgbench -i failed"; }

# ---------------------------------------------------------------------------- IAM tokens
# Direct and PgBouncer clients use a token made by botocore (as `aws rds generate-db-auth-token`
# would); regenerated before every run so that none expires (15 min) during one.
TOKEN=""
refresh_token() {
    TOKEN=$(env -i PATH="$PATH" HOME="$HOME" AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
        python3 -c 'import sys, boto3
print(boto3.client("rds", region_name=sys.argv[2]).generate_db_auth_token(DBHostname="127.0.0.1", Port=int(sys.argv[1]), DBUsername="app", Region=sys.argv[2]))' \
        "$PGPORT" "$REGION")
    [[ -n $TOKEN ]] || die "cannot generate a token"
    if [[ -d $T/pgbouncer ]]; then
        printf '"app" "%s"\n' "$TOKEN" >"$T/pgbouncer/userlist.txt.new"
        chown postgres:postgres "$T/pgbouncer/userlist.txt.new"
        chmod 600 "$T/pgbouncer/userlist.txt.new"
        mv -f "$T/pgbouncer/userlist.txt.new" "$T/pgbouncer/userlist.txt"
        [[ -z $BOUNCER_PID ]] || kill -HUP "$BOUNCER_PID"
    fi
}
refresh_token

# ---------------------------------------------------------------------------- Portcullis
mkdir -p "$T/proxy"
cat >"$T/proxy/manifests.yaml" <<EOF
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: bench, labels: {env: bench}}
spec:
  protocol: postgres
  endpoint: 127.0.0.1:$PGPORT
  aws:
    region: $REGION
  tls: {mode: verify-full, caSecretRef: {name: upstream-ca}}
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: bench}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databaseSelector: {matchLabels: {env: bench}}, dbUsers: [app], dbNames: [bench]}
  audit: {queries: $AUDIT_QUERIES}
EOF
cat >"$T/proxy/proxy.yaml" <<EOF
listeners: [{address: '127.0.0.1:$PROXY_PORT', database: bench}]
tls: {certFile: $T/proxy-ca/server.crt, keyFile: $T/proxy-ca/server.key, clientCaFile: $T/proxy-ca/ca.crt}
admin: {address: '127.0.0.1:$ADMIN_PORT'}
audit: {stdout: false, file: $T/proxy/audit.jsonl}
aws: {allowedEndpoints: ['127.0.0.1']}
resources: [manifests.yaml]
secretsDir: $T/secrets
limits: {upstreamConnectsPerSecond: 0}
EOF
proxy_env=(env -i PATH="$PATH" AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_REGION="$REGION"
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    ${PROXY_WORKER_THREADS:+TOKIO_WORKER_THREADS=$PROXY_WORKER_THREADS})
"${proxy_env[@]}" "$BIN" proxy --check --config "$T/proxy/proxy.yaml" >/dev/null || die "the proxy configuration does not check"
start_proxy() {
    "${proxy_env[@]}" "$BIN" --log-level warn proxy --config "$T/proxy/proxy.yaml" >>"$T/proxy/proxy.stdout" 2>>"$T/proxy/proxy.log" &
    PROXY_PID=$!
    wait_port "$ADMIN_PORT" portcullis "$PROXY_PID"
    wait_port "$PROXY_PORT" portcullis "$PROXY_PID"
}
log "starting Portcullis ($("$BIN" --version))"
start_proxy

# ---------------------------------------------------------------------------- PgBouncer
log "starting PgBouncer ($("$PGBOUNCER" --version | head -n1))"
mkdir -p "$T/pgbouncer"
install -m 644 "$T/pgbouncer-ca/server.crt" "$T/pgbouncer/server.crt"
install -m 600 "$T/pgbouncer-ca/server.key" "$T/pgbouncer/server.key"
max_clients=0
for n in $CLIENTS; do if ((n > max_clients)); then max_clients=$n; fi; done
cat >"$T/pgbouncer/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
pidfile = $T/pgbouncer/pgbouncer.pid
logfile = $T/pgbouncer/pgbouncer.log
auth_type = plain
auth_file = $T/pgbouncer/userlist.txt
pool_mode = session
default_pool_size = $((max_clients + 8))
max_client_conn = $((max_clients * 2 + 100))
client_tls_sslmode = require
client_tls_cert_file = $T/pgbouncer/server.crt
client_tls_key_file = $T/pgbouncer/server.key
server_tls_sslmode = verify-full
server_tls_ca_file = $T/secrets/upstream-ca/ca.crt
EOF
chown -R postgres:postgres "$T/pgbouncer"
refresh_token # writes userlist.txt
setpriv --reuid=postgres --regid=postgres --init-groups "$PGBOUNCER" "$T/pgbouncer/pgbouncer.ini" \
    >>"$T/pgbouncer/stdout" 2>&1 &
BOUNCER_PID=$!
wait_port "$BOUNCER_PORT" pgbouncer "$BOUNCER_PID"

# ---------------------------------------------------------------------------- connection strings
DIRECT="host=127.0.0.1 port=$PGPORT user=app dbname=bench sslmode=require gssencmode=disable"
PROXY="host=127.0.0.1 port=$PROXY_PORT user=app dbname=bench sslmode=verify-full sslrootcert=$T/client/ca.crt sslcert=$T/client/client.crt sslkey=$T/client/client.key gssencmode=disable"
BOUNCER="host=127.0.0.1 port=$BOUNCER_PORT user=app dbname=bench sslmode=require gssencmode=disable"
conninfo_of() { case $1 in direct) echo "$DIRECT" ;; portcullis) echo "$PROXY" ;; pgbouncer) echo "$BOUNCER" ;; esac; }
middle_pid() { case $1 in portcullis) echo "$PROXY_PID" ;; pgbouncer) echo "$BOUNCER_PID" ;; *) echo "" ;; esac; }
with_password() { # target cmd...: direct and PgBouncer clients send the token; proxy clients send nothing
    if [[ $1 == portcullis ]]; then shift; env -u PGPASSWORD "$@"; else shift; PGPASSWORD=$TOKEN "$@"; fi
}

# Every path must work, and be TLS on the PostgreSQL side.
sanity_sql="select current_user || ' ' || ssl::int from pg_stat_ssl where pid = pg_backend_pid()"
for target in direct portcullis pgbouncer; do
    got=$(with_password "$target" psql -X -A -t -c "$sanity_sql" "$(conninfo_of "$target")" 2>&1) ||
        die "cannot query through $target: $got"
    [[ $got == "app 1" ]] || die "through $target: expected 'app 1', got '$got'"
done
log "all three paths answer as app over TLS"

{
    echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine:     $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "portcullis:  $("$BIN" --version) ($BIN)"
    echo "postgres:    $("$PGBIN/postgres" --version)"
    echo "pgbouncer:   $("$PGBOUNCER" --version | head -n1)"
    echo "pgbench:     $(pgbench --version)"
    echo "settings:    DURATION=$DURATION CLIENTS=\"$CLIENTS\" SCALE=$SCALE REPEAT=$REPEAT RUNS=\"$RUNS\" IDLE_CONNS=$IDLE_CONNS AUDIT_QUERIES=$AUDIT_QUERIES PERF=$PERF${PROXY_WORKER_THREADS:+ PROXY_WORKER_THREADS=$PROXY_WORKER_THREADS}"
} >"$T/info.txt"

# ---------------------------------------------------------------------------- pgbench runs
run_pgbench() { # kind(S|C) clients target seconds [record] [repetition]
    local kind=$1 n=$2 target=$3 secs=$4 record=${5:-record} rep=${6:-1}
    local jobs=$((n < 2 ? n : 2)) name="$kind-$n-$target-$rep" pid cpu0 busy0 t0 cpu1 busy1 t1 ours0 ours1 cs0 cs1 steal0 steal1
    local flags=(-n -S -T "$secs" -c "$n" -j "$jobs")
    [[ $kind == C ]] && flags+=(-C)
    [[ $kind == S && $record == record ]] && flags+=(-l "--log-prefix=$T/runs/$name.log")
    [[ $record == record ]] || name="warmup-$name"
    [[ $target == portcullis ]] || refresh_token
    pid=$(middle_pid "$target")
    [[ $record != record ]] || wait_quiet
    local perf_pid=""
    if [[ $PERF == 1 && $record == record && -n $pid ]]; then
        perf record -q -F 1999 -g -p "$pid" -o "$T/runs/$name.perf" -- sleep "$secs" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    cpu0=$(proc_cpu "$pid") cs0=$(proc_switches "$pid") busy0=$(sys_busy) steal0=$(sys_steal) ours0=$(our_cpu) t0=$(date +%s.%N)
    if ! (cd "$T/runs" && with_password "$target" pgbench "${flags[@]}" "$(conninfo_of "$target")" >"$T/runs/$name.out" 2>"$T/runs/$name.err"); then
        cat "$T/runs/$name.out" "$T/runs/$name.err" >&2
        die "pgbench $kind -c $n against $target failed"
    fi
    cpu1=$(proc_cpu "$pid") cs1=$(proc_switches "$pid") busy1=$(sys_busy) steal1=$(sys_steal) ours1=$(our_cpu) t1=$(date +%s.%N)
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        mkdir -p "$T/perf"
        perf report -i "$T/runs/$name.perf" --stdio --no-children --sort comm,dso,sym --percent-limit 0.7 -g none \
            >"$T/perf/$name.txt" 2>/dev/null || true
        perf report -i "$T/runs/$name.perf" --stdio --children --sort sym --percent-limit 3 -g caller,0.5,callee,function,percent \
            >"$T/perf/$name.callers.txt" 2>/dev/null || true
        mv -f "$T/runs/$name.perf" "$T/perf/$name.perf.data"
    fi
    [[ $record == record ]] || return 0
    python3 "$BENCH/pg_report.py" record --results "$RESULTS" --kind "$kind" --clients "$n" --target "$target" \
        --output "$T/runs/$name.out" --log-prefix "$T/runs/$name.log" \
        --middle-cpu "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" \
        --busy "$(awk -v a="$busy0" -v b="$busy1" 'BEGIN { print b - a }')" \
        --steal "$(awk -v a="$steal0" -v b="$steal1" 'BEGIN { print b - a }')" \
        --wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" --middle-switches "$((cs1 - cs0))" \
        ${CG:+--ours "$(awk -v a="$ours0" -v b="$ours1" 'BEGIN { print b - a }')"} >&2
}

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s per path"
    for target in direct portcullis pgbouncer; do run_pgbench S "$max_clients" "$target" "$WARMUP" warmup; done
fi
want() { [[ " $RUNS " == *" $1 "* ]]; }
want S && for n in $CLIENTS; do
    for ((rep = 1; rep <= REPEAT; rep++)); do
        log "pgbench -S -c $n -T $DURATION ($rep/$REPEAT)"
        for target in direct portcullis pgbouncer; do run_pgbench S "$n" "$target" "$DURATION" record "$rep"; done
    done
done
want C && for ((rep = 1; rep <= REPEAT; rep++)); do
    log "pgbench -C -S -c 1 -T $DURATION, a new connection per transaction ($rep/$REPEAT)"
    for target in direct portcullis pgbouncer; do run_pgbench C 1 "$target" "$DURATION" record "$rep"; done
done

metrics=$(http_get "$ADMIN_PORT" /metrics)
audit_dropped=$(awk '/^portcullis_audit_dropped_events_total/ { print $2 }' <<<"$metrics")
audit_blocked=$(awk '/^portcullis_audit_blocked_seconds_total/ { print $2 }' <<<"$metrics")
audit_queries=$(grep -c '"event":"db.session.query"' "$T/proxy/audit.jsonl" || true)
audit_starts=$(grep -c '"event":"db.session.start"' "$T/proxy/audit.jsonl" || true)
proxy_txns=$(python3 -c 'import json, sys
print(sum(r.get("transactions") or 0 for r in map(json.loads, open(sys.argv[1])) if r["target"] == "portcullis"))' "$RESULTS")
{
    echo "proxy audit: $audit_starts session starts, $audit_queries statements recorded for $proxy_txns measured transactions (plus warm-up and checks), ${audit_dropped:-?} events dropped, ${audit_blocked:-?} s waited for the audit queue, file $(du -h "$T/proxy/audit.jsonl" | cut -f1)"
    echo "proxy log lines (level warn) after the pgbench runs: $(wc -l <"$T/proxy/proxy.log")"
} | tee -a "$T/info.txt" >&2
stop_pid "$BOUNCER_PID" 10
BOUNCER_PID=""

# ---------------------------------------------------------------------------- idle memory
if want mem; then
log "memory: $IDLE_CONNS idle TLS sessions through a freshly started proxy"
stop_pid "$PROXY_PID" 15
PROXY_PID=""
echo "--- proxy restarted for the memory test ---" >>"$T/proxy/proxy.log"
log_lines0=$(wc -l <"$T/proxy/proxy.log")
start_proxy
idle() { # count status [release]
    python3 "$BENCH/pg_idle.py" --port "$PROXY_PORT" --ca "$T/client/ca.crt" --cert "$T/client/client.crt" \
        --key "$T/client/client.key" --user app --dbname bench -n "$1" --status "$2" ${3:+--release "$3"} --hold 900
}
# Warm-up so that one-time allocations (runtime threads, TLS and AWS state) are in the baseline.
idle 20 "$T/idle-warm.json" "$T/idle-warm.json" 2>>"$T/idle.log" || die "warm-up connections failed: $(cat "$T/idle.log")"
sleep 1
wait_quiet
rss_before=$(vm_rss "$PROXY_PID")
idle "$IDLE_CONNS" "$T/idle.json" "$T/idle.release" 2>>"$T/idle.log" &
IDLE_PID=$!
for ((i = 0; i < 6000; i++)); do
    [[ -s $T/idle.json ]] && break
    kill -0 "$IDLE_PID" 2>/dev/null || die "the idle-connection client exited early: $(cat "$T/idle.log")"
    sleep 0.1
done
[[ -s $T/idle.json ]] || die "opening $IDLE_CONNS connections took more than 10 minutes"
sleep 2
rss_after=$(vm_rss "$PROXY_PID")
active=$(http_get "$ADMIN_PORT" /metrics | awk '/^portcullis_active_sessions / { print $2 }')
touch "$T/idle.release"
idle_rc=0
wait "$IDLE_PID" || idle_rc=$?
IDLE_PID=""
ok=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ok"])' "$T/idle.json")
python3 "$BENCH/pg_report.py" record-mem --results "$RESULTS" --before "$rss_before" --after "$rss_after" --count "$IDLE_CONNS" >&2
log_lines1=$(wc -l <"$T/proxy/proxy.log")
{
    echo "idle connections: $ok/$IDLE_CONNS ready ($(cat "$T/idle.json")); proxy active_sessions while held: ${active:-?}; client exit $idle_rc"
    echo "proxy RSS: ${rss_before} KiB before, ${rss_after} KiB with $IDLE_CONNS idle sessions"
    echo "proxy log lines (level warn) during the memory test: $((log_lines1 - log_lines0))"
} | tee -a "$T/info.txt" >&2
((ok == IDLE_CONNS)) || log "WARNING: only $ok of $IDLE_CONNS idle connections succeeded"
((idle_rc == 0)) || log "WARNING: the idle-connection client failed (exit $idle_rc): $(tail -n 3 "$T/idle.log")"
((log_lines1 == log_lines0)) || { log "WARNING: the proxy logged during the memory test:"; tail -n +"$((log_lines0 + 1))" "$T/proxy/proxy.log" | head -20 >&2; }
fi

# ---------------------------------------------------------------------------- report
python3 "$BENCH/pg_report.py" table --results "$RESULTS" >"$T/table.txt"
python3 "$BENCH/pg_report.py" table --results "$RESULTS" --markdown >"$T/table.md"
echo
cat "$T/info.txt"
echo
cat "$T/table.txt"
