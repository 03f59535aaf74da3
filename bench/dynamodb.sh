#!/usr/bin/env bash
# DynamoDB requests per second and added latency through `portcullis db proxy --tunnel` +
# Portcullis, compared with the same boto3 client calling the upstream directly, all on this
# machine.
#
#   bash bench/dynamodb.sh                    # from the repository root
#   DURATION=30 CLIENTS="1 4 16" OUT=/tmp/ddb-bench bash bench/dynamodb.sh
#
# Knobs (environment):
#   DURATION    measured seconds per (path, client count) (default 10)
#   WARMUP      unrecorded seconds per (path, client count) before measuring (default 2; 0 = none)
#   CLIENTS     boto3 client threads (default "1 8"); one client (own connection pool) per thread
#   ROUNDS      each DURATION is measured in this many slices, alternating direct and proxy
#               (direct, proxy, proxy, direct, ...), so noise from the machine hits both (default 5)
#   QUIET_MAX   before measuring, wait until the machine (everything but this benchmark, which
#               is idle then) uses less than this many cores (default 0.10) ...
#   QUIET_WAIT  ... for at most this many seconds (default 300), then measure anyway. The CPU
#               other processes used during the measurement is reported ("noise").
#   PORTCULLIS_BIN  the proxy binary (default $HOME/.cache/portcullis/target/release/portcullis)
#   OUT         directory for results.jsonl, table.md, info.txt and the logs
#               (default: a new directory under /tmp, printed at the end)
#   KEEP=1      keep the scratch directory (printed) instead of deleting it
#
# What runs (everything on 127.0.0.1, free ports, stopped on exit, also on Ctrl-C):
#   * The upstream: bench/dynamodb_upstream.py, a fast stand-in for DynamoDB (Python
#     ThreadingHTTPServer, HTTP/1.1 keep-alive, GetItem/PutItem with valid DynamoDB JSON and
#     x-amz-crc32). It does NOT check signatures; moto does (the integration tests use it), but
#     moto costs milliseconds per request and closes every connection, so it would measure moto.
#     The stand-in counts who signed each request, which the sanity check uses: direct requests
#     carry the client's dummy key, proxied ones the assumed role's key and session token.
#   * moto_server, for STS only (auth off): the proxy assumes the role bench-role in account
#     123456789012 once, then uses the cached credentials (never per request).
#   * Portcullis, standalone: a Database `orders` (protocol dynamodb, endpoint the stand-in,
#     aws.allowedEndpoints 127.0.0.1), an AccessRole letting group dev use role bench-role,
#     mTLS towards clients, every request audited to a file, log level warn.
#   * The tunnel: `portcullis db proxy orders --tunnel --protocol dynamodb` with a certificate
#     from `portcullis cert issue --database orders --db-user bench-role`.
#   * The load: bench/dynamodb_load.py, boto3 GetItem in a loop (dummy keys), endpoint_url the
#     stand-in (direct) or the tunnel (proxy); per-request latency, requests/s, p50/p95/p99,
#     the CPU each process spent per request, and how busy the machine was.
# Prints a markdown table (also OUT/table.md; raw figures in OUT/results.jsonl).
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-"1 8"}
ROUNDS=${ROUNDS:-5}
QUIET_MAX=${QUIET_MAX:-0.10}
QUIET_WAIT=${QUIET_WAIT:-300}
KEEP=${KEEP:-0}
OUT=${OUT:-}
BIN=${PORTCULLIS_BIN:-$HOME/.cache/portcullis/target/release/portcullis}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
REGION=us-east-1
ACCOUNT=123456789012
ROLE=bench-role
ACCESS_KEY=AKIAPORTCULLISTEST01
SECRET_KEY=portcullis-test-secret-key-0123456789abcd

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# ---------------------------------------------------------------------------- prerequisites
[[ -x $BIN ]] || die "no proxy binary at $BIN (build it with cargo build --release)"
for c in python3 moto_server setsid curl; do command -v "$c" >/dev/null || die "$c not found"; done
python3 -c 'import boto3' 2>/dev/null || die "python3 needs boto3"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "DURATION must be a positive number of seconds"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a number of seconds"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "QUIET_WAIT must be a number of seconds"
[[ $QUIET_MAX =~ ^[0-9]*\.?[0-9]+$ ]] || die "QUIET_MAX must be a number of cores"
for n in $CLIENTS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive integers, got '$n'"; done

# ---------------------------------------------------------------------------- scratch and cleanup
T=$(mktemp -d /tmp/portcullis-ddbbench.XXXXXX)
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/portcullis-ddbbench-results.XXXXXX)
mkdir -p "$OUT"
RESULTS=$T/results.jsonl
: >"$RESULTS"
UPSTREAM_PID="" MOTO_PID="" PROXY_PID="" TUNNEL_PID="" LOAD_PID=""

# Every process is started with setsid, so it leads its own process group and is stopped with
# everything it may have started (moto_server and Python go through pyenv shims).
stop_group() { # pid [seconds]: TERM the process group, wait, then KILL it
    local pid=$1 wait_s=${2:-10} i
    [[ -n $pid ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop_group "$LOAD_PID" 5
    stop_group "$TUNNEL_PID" 10
    stop_group "$PROXY_PID" 15
    stop_group "$UPSTREAM_PID" 10
    stop_group "$MOTO_PID" 10
    cp -f "$T"/results.jsonl "$T"/table.md "$T"/info.txt "$OUT"/ 2>/dev/null
    cp -f "$T"/proxy/proxy.log "$T"/tunnel.log "$T"/upstream.log "$T"/moto.log "$T"/load.log "$OUT"/ 2>/dev/null
    log "results in $OUT"
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "scratch directory kept: $T"
    else
        rm -rf "$T"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until the machine uses less than QUIET_MAX cores (1 s samples; unlike wait_quiet in
# lib.sh, without a cgroup: it is called while the benchmark's own processes are idle, so
# what it sees is other work). Sets QUIET_RESULT for the report.
wait_idle() {
    local start=$SECONDS b0 used said=0
    while :; do
        b0=$(sys_busy)
        sleep 1
        used=$(awk -v a="$b0" -v b="$(sys_busy)" 'BEGIN { printf "%.2f", b - a }')
        QUIET_RESULT="other processes used $used cores just before measuring (waited $((SECONDS - start)) s)"
        awk -v x="$used" -v m="$QUIET_MAX" 'BEGIN { exit !(x < m) }' && return 0
        if ((SECONDS - start >= QUIET_WAIT)); then
            QUIET_RESULT="$QUIET_RESULT; NOT QUIET, measured anyway"
            log "WARNING: other processes still use $used cores after ${QUIET_WAIT}s; measuring anyway (see the noise rows)"
            return 0
        fi
        ((said)) || log "other processes use $used cores; waiting up to ${QUIET_WAIT}s for the machine to go quiet"
        said=1
        sleep 2
    done
}

MOTO_PORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)

# ---------------------------------------------------------------------------- upstream and STS
log "scratch: $T"
setsid python3 "$BENCH/dynamodb_upstream.py" --port-file "$T/upstream.port" </dev/null >"$T/upstream.log" 2>&1 &
UPSTREAM_PID=$!
for ((i = 0; i < 300; i++)); do
    [[ -s $T/upstream.port ]] && break
    kill -0 "$UPSTREAM_PID" 2>/dev/null || { cat "$T/upstream.log" >&2; die "the stand-in upstream exited"; }
    sleep 0.1
done
[[ -s $T/upstream.port ]] || die "the stand-in upstream did not start within 30 s"
UPSTREAM_PORT=$(<"$T/upstream.port")
wait_port "$UPSTREAM_PORT" "the stand-in upstream" "$UPSTREAM_PID"

INITIAL_NO_AUTH_ACTION_COUNT=inf setsid moto_server -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$T/moto.log" 2>&1 &
MOTO_PID=$!
wait_port "$MOTO_PORT" moto_server "$MOTO_PID"
log "ports: upstream $UPSTREAM_PORT, moto (STS) $MOTO_PORT, portcullis $PROXY_PORT (admin $ADMIN_PORT)"

# ---------------------------------------------------------------------------- certificates
"$BIN" ca init --dir "$T/proxy-ca" >/dev/null # the proxy's client CA + server certificate (localhost, 127.0.0.1)
"$BIN" cert issue --ca-dir "$T/proxy-ca" --user bench --group dev --database orders --db-user "$ROLE" --ttl 4h \
    --out "$T/client" >/dev/null

# ---------------------------------------------------------------------------- Portcullis
mkdir -p "$T/proxy"
cat >"$T/proxy/manifests.yaml" <<EOF
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: orders, labels: {env: bench}}
spec:
  protocol: dynamodb
  endpoint: http://127.0.0.1:$UPSTREAM_PORT
  aws:
    region: $REGION
    accountId: '$ACCOUNT'
  tls: {mode: verify-full}
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: bench}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databases: [orders], dbUsers: [$ROLE]}
EOF
cat >"$T/proxy/proxy.yaml" <<EOF
listeners: [{address: '127.0.0.1:$PROXY_PORT', database: orders}]
tls: {certFile: $T/proxy-ca/server.crt, keyFile: $T/proxy-ca/server.key, clientCaFile: $T/proxy-ca/ca.crt}
admin: {address: '127.0.0.1:$ADMIN_PORT'}
audit: {stdout: false, file: $T/proxy/audit.jsonl}
aws: {allowedEndpoints: ['127.0.0.1']}
resources: [manifests.yaml]
EOF
proxy_env=(env -i PATH="$PATH" AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_REGION="$REGION"
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    AWS_ENDPOINT_URL_STS="http://127.0.0.1:$MOTO_PORT")
"${proxy_env[@]}" "$BIN" proxy --check --config "$T/proxy/proxy.yaml" >/dev/null || die "the proxy configuration does not check"
log "starting Portcullis ($("$BIN" --version))"
"${proxy_env[@]}" setsid "$BIN" --log-level warn proxy --config "$T/proxy/proxy.yaml" \
    </dev/null >>"$T/proxy/proxy.stdout" 2>>"$T/proxy/proxy.log" &
PROXY_PID=$!
wait_port "$ADMIN_PORT" portcullis "$PROXY_PID"
wait_port "$PROXY_PORT" portcullis "$PROXY_PID"

# ---------------------------------------------------------------------------- tunnel
: >"$T/tunnel.stdout"
setsid "$BIN" --log-level warn db proxy orders --tunnel --port 0 --proxy "127.0.0.1:$PROXY_PORT" --cert-dir "$T/client" \
    --protocol dynamodb --db-user "$ROLE" --server-name localhost </dev/null >"$T/tunnel.stdout" 2>"$T/tunnel.log" &
TUNNEL_PID=$!
TUNNEL_PORT=""
for ((i = 0; i < 300; i++)); do
    if (($(wc -l <"$T/tunnel.stdout") >= 1)); then # its first line, once complete
        line=$(head -n1 "$T/tunnel.stdout")
        [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || die "the tunnel printed '$line': $(cat "$T/tunnel.log")"
        TUNNEL_PORT=${BASH_REMATCH[1]}
        break
    fi
    kill -0 "$TUNNEL_PID" 2>/dev/null || die "the tunnel exited: $(cat "$T/tunnel.log")"
    sleep 0.1
done
[[ -n $TUNNEL_PORT ]] || die "the tunnel did not start within 30 s: $(cat "$T/tunnel.log")"
log "tunnel on 127.0.0.1:$TUNNEL_PORT"

{
    echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine:     $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "portcullis:  $("$BIN" --version) ($BIN, built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ))"
    echo "python:      $(python3 -c 'import sys, boto3, botocore; print(sys.version.split()[0], "boto3", boto3.__version__, "botocore", botocore.__version__)')"
    echo "moto:        $(python3 -c 'import moto; print(moto.__version__)') (STS only)"
    echo "settings:    DURATION=$DURATION WARMUP=$WARMUP CLIENTS=\"$CLIENTS\" ROUNDS=$ROUNDS QUIET_MAX=$QUIET_MAX QUIET_WAIT=$QUIET_WAIT"
    echo "direct:      boto3 -> stand-in upstream (plain HTTP keep-alive)"
    echo "proxy:       boto3 -> tunnel (plain HTTP) -> mTLS -> Portcullis (authorize, audit, re-sign as $ROLE) -> stand-in upstream (plain HTTP keep-alive)"
} >"$T/info.txt"

# ---------------------------------------------------------------------------- load
QUIET_RESULT=""
wait_idle
echo "quiet:       $QUIET_RESULT" >>"$T/info.txt"
log "load: CLIENTS=\"$CLIENTS\", ${DURATION}s per path in $ROUNDS alternating slices, ${WARMUP}s warm-up"
# In the background and waited for, so that a TERM to this script stops it at once.
setsid python3 "$BENCH/dynamodb_load.py" --path "direct=http://127.0.0.1:$UPSTREAM_PORT" --path "proxy=http://127.0.0.1:$TUNNEL_PORT" \
    --clients "$CLIENTS" --duration "$DURATION" --warmup "$WARMUP" --rounds "$ROUNDS" --region "$REGION" \
    --pid "upstream=$UPSTREAM_PID" --pid "tunnel=$TUNNEL_PID" --pid "proxy=$PROXY_PID" \
    --stats-url "http://127.0.0.1:$UPSTREAM_PORT/stats" --results "$RESULTS" --table "$T/table.md" \
    </dev/null 2> >(tee "$T/load.log" >&2) &
LOAD_PID=$!
load_rc=0
wait "$LOAD_PID" || load_rc=$?
LOAD_PID=""
if ((load_rc != 0)); then
    log "proxy log:"
    tail -n 20 "$T/proxy/proxy.log" >&2
    log "tunnel log:"
    tail -n 20 "$T/tunnel.log" >&2
    die "the load generator failed"
fi

# ---------------------------------------------------------------------------- report
sleep 0.2 # the audit writer batches for a few ms
metrics=$(curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || true)
audit_dropped=$(awk '/^portcullis_audit_dropped_events_total/ { print $2 }' <<<"$metrics")
audit_blocked=$(awk '/^portcullis_audit_blocked_seconds_total/ { print $2 }' <<<"$metrics")
audit_requests=$(grep -c '"event":"db.session.request"' "$T/proxy/audit.jsonl" || true)
audit_starts=$(grep -c '"event":"db.session.start"' "$T/proxy/audit.jsonl" || true)
proxy_requests=$(python3 -c 'import json, sys
print(sum(r["requests"] + r["errors"] for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "run" and r["path"] == "proxy"))' "$RESULTS")
sts_calls=$(grep -c '"POST / HTTP' "$T/moto.log" || true) # moto serves only STS here
{
    echo "proxy audit: $audit_starts session starts, $audit_requests requests recorded for $proxy_requests measured proxy requests (plus warm-up and the sanity check), ${audit_dropped:-?} events dropped, ${audit_blocked:-?} s waited for the audit queue, file $(du -h "$T/proxy/audit.jsonl" | cut -f1)"
    echo "STS requests moto served (the proxy caches the role's credentials): $sts_calls"
    echo "upstream signers: $(curl -fsS --max-time 5 "http://127.0.0.1:$UPSTREAM_PORT/stats" 2>/dev/null)"
    echo "proxy log lines (level warn): $(wc -l <"$T/proxy/proxy.log"); tunnel log lines: $(wc -l <"$T/tunnel.log")"
} >>"$T/info.txt"
echo
cat "$T/info.txt"
echo
cat "$T/table.md"
