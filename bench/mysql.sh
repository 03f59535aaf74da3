#!/usr/bin/env bash
# MySQL (MariaDB) throughput and latency through Portcullis compared with connecting directly,
# with sysbench oltp_point_select, all on this machine.
#
#   sudo bash bench/mysql.sh                  # from the repository root, as root
#   DURATION=30 CLIENTS="1 4 16" bash bench/mysql.sh
#
# Knobs (environment):
#   DURATION    seconds per measured sysbench run (default 15, at most 800: the direct path's IAM
#               token is regenerated before every run and only has to last until it logs in)
#   CLIENTS     sysbench --threads counts (default "1 16"); the target uses the smallest
#   WARMUP      seconds of unrecorded sysbench per path before measuring (default 3; 0 = none)
#   TABLES, TABLE_SIZE  sysbench prepare (default 4 tables of 10000 rows)
#   AUDIT_QUERIES=false  diagnostic only: do not audit statements (the real default is true)
#   QUIET_MAX   before each measured run, wait until processes outside the benchmark use less
#               than this many cores (default 0.10) ...
#   QUIET_WAIT  ... for at most this many seconds (default 300), then measure anyway. The CPU
#               other processes used during each run is reported ("noise"), as in bench/pg.sh.
#   PORTCULLIS_BIN  the proxy binary (default $HOME/.cache/portcullis/target/release/portcullis)
#   OUT         directory for results.jsonl, table.txt, table.md, info.txt and the logs
#               (default: a new directory under /tmp, printed at the end)
#   KEEP=1      keep the scratch directory (printed) instead of deleting it
#
# What runs (everything on 127.0.0.1, free ports, stopped on exit):
#   * MariaDB (Debian's mariadbd) set up like tests/it/support/mariadb.rs: TLS with a server
#     certificate from `portcullis ca init`, require_secure_transport, the IAM user `app`
#     IDENTIFIED VIA pam (cleartext plugin) REQUIRE SSL, its RDS IAM token checked by
#     pam_exec + tests/support/rdstokencheck (the tests' second, botocore, check is left out:
#     it is slow). Database `sbtest` from `sysbench oltp_point_select prepare` over the socket.
#   * Portcullis, standalone: mTLS towards clients, verify-full TLS + IAM token upstream, audit
#     of every statement to a file, log level warn.
#   * sysbench oltp_point_select (one primary-key SELECT per transaction, server-side prepared
#     statement) for each client count, directly and through the proxy, both over TLS. The
#     direct path logs in as `app` with a botocore token as its password, which libmariadb
#     sends with mysql_clear_password when the server asks for it.
#     sysbench 1.0 has only --mysql-ssl=on|off: it then loads cacert.pem, client-cert.pem and
#     client-key.pem from its working directory, so each path runs in a directory holding its
#     files (through the proxy: the client certificate from `portcullis cert issue`; direct: one
#     from the upstream CA, which MariaDB checks against its --ssl-ca but does not require).
# Prints a table (bench/mysql_report.py) and whether portcullis reaches 0.85x direct
# queries/s at the smallest client count.
set -euo pipefail

DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-"1 16"}
WARMUP=${WARMUP:-3}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
AUDIT_QUERIES=${AUDIT_QUERIES:-true}
QUIET_MAX=${QUIET_MAX:-0.10}
QUIET_WAIT=${QUIET_WAIT:-300}
KEEP=${KEEP:-0}
OUT=${OUT:-}
BIN=${PORTCULLIS_BIN:-$HOME/.cache/portcullis/target/release/portcullis}
MARIADBD=/usr/sbin/mariadbd
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
REGION=us-east-1
ACCESS_KEY=AKIAPORTCULLISTEST01
SECRET_KEY=portcullis-test-secret-key-0123456789abcd

# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# ---------------------------------------------------------------------------- prerequisites
[[ $(id -u) == 0 ]] || die "run as root (writes /etc/pam.d; MariaDB's PAM helper runs as root)"
[[ -x $BIN ]] || die "no proxy binary at $BIN (build it with cargo build --release)"
[[ -x $MARIADBD ]] || die "MariaDB not found at $MARIADBD"
for c in mariadb mariadb-install-db sysbench python3; do command -v "$c" >/dev/null || die "$c not found"; done
python3 -c 'import boto3' 2>/dev/null || die "python3 needs boto3 (to generate tokens for the direct path)"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 800 ]] || die "DURATION must be 1..800 seconds"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a number of seconds"
for n in $CLIENTS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive integers, got '$n'"; done
[[ $AUDIT_QUERIES == true || $AUDIT_QUERIES == false ]] || die "AUDIT_QUERIES must be true or false"
TOKENCHECK=$(bash "$REPO/tests/support/build-rdstokencheck.sh" 2>/dev/null | tail -n1)
[[ -x $TOKENCHECK ]] || die "cannot build tests/support/rdstokencheck (needs go)"

# ---------------------------------------------------------------------------- scratch and cleanup
T=$(mktemp -d /tmp/portcullis-mysqlbench.XXXXXX)
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/portcullis-mysqlbench-results.XXXXXX)
mkdir -p "$T/runs" "$OUT"
RESULTS=$T/results.jsonl
: >"$RESULTS"
MARIADB_PID="" PROXY_PID="" PAM_SERVICE="" CG=""

# Everything this script starts runs in its own cpuacct cgroup, so that the CPU used by other
# processes on the machine (noise) can be told apart from the benchmark's.
CG_ROOT=/sys/fs/cgroup/cpuacct
if [[ -w $CG_ROOT/cgroup.procs ]] && mkdir "$CG_ROOT/portcullis-mysqlbench-$$" 2>/dev/null; then
    CG=$CG_ROOT/portcullis-mysqlbench-$$
    echo $$ >"$CG/cgroup.procs" || CG=""
fi

cleanup() {
    local rc=$?
    set +e
    stop_pid "$PROXY_PID" 15
    # The data is scratch: no clean shutdown needed (like the test harness).
    if [[ -n $MARIADB_PID ]]; then kill -KILL "$MARIADB_PID" 2>/dev/null; wait "$MARIADB_PID" 2>/dev/null; fi
    [[ -n $PAM_SERVICE ]] && rm -f "/etc/pam.d/$PAM_SERVICE"
    if [[ -n $CG ]]; then
        echo $$ >"$CG_ROOT/cgroup.procs"
        rmdir "$CG" 2>/dev/null || log "cgroup $CG still has processes: $(tr '\n' ' ' <"$CG/cgroup.procs")"
    fi
    cp -f "$T"/results.jsonl "$T"/table.txt "$T"/table.md "$T"/info.txt "$OUT"/ 2>/dev/null
    cp -f "$T"/proxy/proxy.log "$T"/mariadb.log "$T"/pam.log "$OUT"/ 2>/dev/null
    cp -f "$T"/runs/*.out "$T"/runs/*.err "$OUT"/ 2>/dev/null
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


DBPORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)

# ---------------------------------------------------------------------------- certificates
log "scratch: $T; ports: mariadb $DBPORT, portcullis $PROXY_PORT (admin $ADMIN_PORT)"
"$BIN" ca init --dir "$T/upstream-ca" >/dev/null # MariaDB's server certificate (EC P-256, localhost + 127.0.0.1)
"$BIN" ca init --dir "$T/proxy-ca" >/dev/null    # the proxy's client CA + server certificate
"$BIN" cert issue --ca-dir "$T/proxy-ca" --user bench --group dev --ttl 4h --out "$T/client" >/dev/null
"$BIN" cert issue --ca-dir "$T/upstream-ca" --user sysbench-direct --ttl 4h --out "$T/direct-client" >/dev/null
mkdir -p "$T/secrets/upstream-ca"
cp "$T/upstream-ca/ca.crt" "$T/secrets/upstream-ca/ca.crt"
# sysbench's working directories (it reads these three names when --mysql-ssl=on).
mkdir -p "$T/sb-direct" "$T/sb-portcullis"
cp "$T/upstream-ca/ca.crt" "$T/sb-direct/cacert.pem"
cp "$T/direct-client/client.crt" "$T/sb-direct/client-cert.pem"
cp "$T/direct-client/client.key" "$T/sb-direct/client-key.pem"
cp "$T/client/ca.crt" "$T/sb-portcullis/cacert.pem"
cp "$T/client/client.crt" "$T/sb-portcullis/client-cert.pem"
cp "$T/client/client.key" "$T/sb-portcullis/client-key.pem"

# ---------------------------------------------------------------------------- MariaDB
log "starting MariaDB (TLS, PAM token check for IAM users)"
tuning=(--innodb-log-file-size=8M --innodb-buffer-pool-size=64M --innodb-use-native-aio=0)
mariadb-install-db --no-defaults --datadir="$T/data" --user=root --auth-root-authentication-method=socket \
    --skip-test-db --skip-name-resolve "${tuning[@]}" </dev/null >"$T/install.log" 2>&1 ||
    { cat "$T/install.log" >&2; die "mariadb-install-db failed"; }
install -m 755 "$TOKENCHECK" "$T/rdstokencheck"
printf '{"%s": "%s"}\n' "$ACCESS_KEY" "$SECRET_KEY" >"$T/keys.json"
: >"$T/pam.log"
PAM_SERVICE="portcullis-bench-$DBPORT"
printf 'auth required pam_exec.so expose_authtok quiet %s -keys %s -endpoint 127.0.0.1:%s -region %s -log %s\naccount required pam_permit.so\n' \
    "$T/rdstokencheck" "$T/keys.json" "$DBPORT" "$REGION" "$T/pam.log" >"/etc/pam.d/$PAM_SERVICE"
"$MARIADBD" --no-defaults --datadir="$T/data" --socket="$T/mariadb.sock" --port="$DBPORT" \
    --bind-address=127.0.0.1 --skip-networking=0 --user=root --pid-file="$T/mariadb.pid" --log-error="$T/mariadb.log" \
    --ssl-cert="$T/upstream-ca/server.crt" --ssl-key="$T/upstream-ca/server.key" --ssl-ca="$T/secrets/upstream-ca/ca.crt" \
    --require-secure-transport=ON --plugin-load-add=auth_pam --pam-use-cleartext-plugin=ON --max-allowed-packet=64M \
    --max-connections=1200 --skip-log-bin --skip-name-resolve --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_general_ci --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 "${tuning[@]}" \
    </dev/null >/dev/null 2>&1 &
MARIADB_PID=$!
as_root_sql() { mariadb --no-defaults -S "$T/mariadb.sock" -u root --batch --skip-column-names "$@" </dev/null; }
for ((i = 0; ; i++)); do
    as_root_sql -e 'select 1' >/dev/null 2>&1 && break
    kill -0 "$MARIADB_PID" 2>/dev/null || { cat "$T/mariadb.log" >&2; die "mariadbd exited during start-up"; }
    ((i < 300)) || { cat "$T/mariadb.log" >&2; die "mariadbd did not start within 30 s"; }
    sleep 0.1
done
as_root_sql -e "CREATE DATABASE sbtest;
    CREATE USER 'app'@'%' IDENTIFIED VIA pam USING '$PAM_SERVICE' REQUIRE SSL;
    GRANT ALL ON sbtest.* TO 'app'@'%';"
SB=(sysbench oltp_point_select --db-driver=mysql --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE")
log "sysbench prepare: $TABLES tables of $TABLE_SIZE rows"
"${SB[@]}" --mysql-socket="$T/mariadb.sock" --mysql-user=root --threads=2 prepare >"$T/runs/prepare.out" 2>&1 ||
    { cat "$T/runs/prepare.out" >&2; die "sysbench prepare failed"; }

# The direct path's IAM token, made by botocore (as `aws rds generate-db-auth-token` would).
TOKEN=""
refresh_token() {
    TOKEN=$(env -i PATH="$PATH" HOME="$HOME" AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
        python3 -c 'import sys, boto3
print(boto3.client("rds", region_name=sys.argv[2]).generate_db_auth_token(DBHostname="127.0.0.1", Port=int(sys.argv[1]), DBUsername="app", Region=sys.argv[2]))' \
        "$DBPORT" "$REGION")
    [[ -n $TOKEN ]] || die "cannot generate a token"
}

# ---------------------------------------------------------------------------- Portcullis
mkdir -p "$T/proxy"
cat >"$T/proxy/manifests.yaml" <<EOF
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: bench, labels: {env: bench}}
spec:
  protocol: mysql
  endpoint: 127.0.0.1:$DBPORT
  aws:
    region: $REGION
  tls: {mode: verify-full, caSecretRef: {name: upstream-ca}}
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: bench}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databaseSelector: {matchLabels: {env: bench}}, dbUsers: [app], dbNames: [sbtest]}
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
EOF
proxy_env=(env -i PATH="$PATH" AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_REGION="$REGION"
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null)
"${proxy_env[@]}" "$BIN" proxy --check --config "$T/proxy/proxy.yaml" >/dev/null || die "the proxy configuration does not check"
log "starting Portcullis ($("$BIN" --version))"
"${proxy_env[@]}" "$BIN" --log-level warn proxy --config "$T/proxy/proxy.yaml" >>"$T/proxy/proxy.stdout" 2>>"$T/proxy/proxy.log" &
PROXY_PID=$!
wait_port "$ADMIN_PORT" portcullis "$PROXY_PID"
wait_port "$PROXY_PORT" portcullis "$PROXY_PID"

# ---------------------------------------------------------------------------- sanity
# Both paths must answer as app, and the session MariaDB sees must be TLS.
check_path() { # target
    local got
    local args=(--no-defaults -h 127.0.0.1 -u app --batch --skip-column-names --connect-timeout=10 --ssl-verify-server-cert)
    if [[ $1 == direct ]]; then
        refresh_token
        args+=(-P "$DBPORT" --ssl-ca="$T/upstream-ca/ca.crt" "--password=$TOKEN")
    else
        args+=(-P "$PROXY_PORT" --ssl-ca="$T/client/ca.crt" --ssl-cert="$T/client/client.crt" --ssl-key="$T/client/client.key")
    fi
    got=$(mariadb "${args[@]}" -e "select current_user(), variable_value from information_schema.session_status where variable_name = 'Ssl_version'" sbtest 2>&1 </dev/null) ||
        die "cannot query through $1: $got$([[ $1 == portcullis ]] && printf '\nproxy log:\n%s' "$(tail -n 20 "$T/proxy/proxy.log")")"
    [[ $got == "app@%"$'\t'TLSv1.* ]] || die "through $1: expected 'app@%<TAB>TLSv1.x', got '$got'"
}
check_path direct
check_path portcullis
log "both paths answer as app over TLS"

{
    echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine:     $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "portcullis:  $("$BIN" --version) ($BIN, built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ))"
    echo "mariadb:     $(as_root_sql -e 'select version()')"
    echo "sysbench:    $(sysbench --version) ($(ldd "$(command -v sysbench)" | awk '/libmariadb|libmysqlclient/ { print $1 }'))"
    echo "settings:    DURATION=$DURATION CLIENTS=\"$CLIENTS\" WARMUP=$WARMUP TABLES=$TABLES TABLE_SIZE=$TABLE_SIZE AUDIT_QUERIES=$AUDIT_QUERIES"
    echo "direct:      user app, IAM token (botocore) as the password, sent by libmariadb with mysql_clear_password; TLS"
    echo "portcullis:  user app, client certificate (group dev), no password; the proxy signs the token upstream"
} >"$T/info.txt"

# ---------------------------------------------------------------------------- sysbench runs
run_sysbench() { # clients target seconds [record|warmup]
    local n=$1 target=$2 secs=$3 record=${4:-record} name="$2-$1" extra=() cpu0 busy0 steal0 ours0 t0 cpu1 busy1 steal1 ours1 t1
    [[ $record == record ]] || name="warmup-$name"
    if [[ $target == direct ]]; then
        refresh_token
        extra=(--mysql-port="$DBPORT" "--mysql-password=$TOKEN")
    else
        extra=(--mysql-port="$PROXY_PORT")
    fi
    [[ $record != record ]] || wait_quiet
    cpu0=$(proc_cpu "$PROXY_PID") busy0=$(sys_busy) steal0=$(sys_steal) ours0=$(our_cpu) t0=$(date +%s.%N)
    if ! (cd "$T/sb-$target" && "${SB[@]}" --mysql-host=127.0.0.1 --mysql-user=app --mysql-ssl=on "${extra[@]}" \
        --threads="$n" --time="$secs" --report-interval=0 --histogram=on run >"$T/runs/$name.out" 2>"$T/runs/$name.err"); then
        cat "$T/runs/$name.out" "$T/runs/$name.err" >&2
        [[ $target == direct ]] || { log "proxy log:"; tail -n 20 "$T/proxy/proxy.log" >&2; }
        die "sysbench with $n clients against $target failed"
    fi
    cpu1=$(proc_cpu "$PROXY_PID") busy1=$(sys_busy) steal1=$(sys_steal) ours1=$(our_cpu) t1=$(date +%s.%N)
    [[ $record == record ]] || return 0
    local measured=(--busy "$(diff_of "$busy0" "$busy1")" --steal "$(diff_of "$steal0" "$steal1")" --wall "$(diff_of "$t0" "$t1")")
    [[ -z $CG ]] || measured+=(--ours "$(diff_of "$ours0" "$ours1")")
    [[ $target != portcullis ]] || measured+=(--proxy-cpu "$(diff_of "$cpu0" "$cpu1")")
    python3 "$BENCH/mysql_report.py" record --results "$RESULTS" --clients "$n" --target "$target" --output "$T/runs/$name.out" "${measured[@]}" >&2
}

max_clients=0
for n in $CLIENTS; do if ((n > max_clients)); then max_clients=$n; fi; done
if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s per path"
    for target in direct portcullis; do run_sysbench "$max_clients" "$target" "$WARMUP" warmup; done
fi
for n in $CLIENTS; do
    log "sysbench oltp_point_select --threads=$n --time=$DURATION"
    for target in direct portcullis; do run_sysbench "$n" "$target" "$DURATION"; done
done

# ---------------------------------------------------------------------------- report
metrics=$(curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || true)
audit_dropped=$(awk '/^portcullis_audit_dropped_events_total/ { print $2 }' <<<"$metrics")
audit_blocked=$(awk '/^portcullis_audit_blocked_seconds_total/ { print $2 }' <<<"$metrics")
audit_queries=$(grep -c '"event":"db.session.query"' "$T/proxy/audit.jsonl" || true)
audit_starts=$(grep -c '"event":"db.session.start"' "$T/proxy/audit.jsonl" || true)
proxy_queries=$(python3 -c 'import json, sys
print(sum(r.get("queries") or 0 for r in map(json.loads, open(sys.argv[1])) if r["target"] == "portcullis"))' "$RESULTS")
{
    echo "proxy audit: $audit_starts session starts, $audit_queries statements recorded for $proxy_queries measured queries (plus warm-up, prepares and checks), ${audit_dropped:-?} events dropped, ${audit_blocked:-?} s waited for the audit queue, file $(du -h "$T/proxy/audit.jsonl" | cut -f1)"
    echo "proxy log lines (level warn): $(wc -l <"$T/proxy/proxy.log")"
} >>"$T/info.txt"
python3 "$BENCH/mysql_report.py" table --results "$RESULTS" >"$T/table.txt"
python3 "$BENCH/mysql_report.py" table --results "$RESULTS" --markdown >"$T/table.md"
echo
cat "$T/info.txt"
echo
cat "$T/table.txt"
