#!/usr/bin/env bash
# The standalone path (`scripts/demo.sh --standalone`): an AWS emulator (moto) holding the
# proxy's IAM identity, a PostgreSQL server that only accepts IAM auth tokens over TLS (like
# RDS), a Portcullis proxy on this host from YAML files, a short-lived client certificate, psql
# through the proxy, a refused request, and the audit trail. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. scripts/lib/upstream.sh
portcullis_need_root
portcullis_install_deps

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building portcullis"
cargo build --locked --release --bin portcullis 2>&1 | tail -n 1
export PORTCULLIS_BIN="$CARGO_TARGET_DIR/release/portcullis"
demo=$(mktemp -d /tmp/portcullis-demo.XXXXXX); chmod 755 "$demo"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  upstream_pg_stop "$demo/pg"
  wait 2>/dev/null || true
}
trap cleanup EXIT

step "starting the AWS emulator (moto) and creating the proxy's IAM user"
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" > "$demo/moto.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$moto_port/" >/dev/null 2>&1 && break; sleep 0.1; done
read -r ak sk < <(python3 - "$moto_port" <<'PY'
import sys, boto3
iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="portcullis-proxy")
k = iam.create_access_key(UserName="portcullis-proxy")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
PY
)
export AWS_ACCESS_KEY_ID=$ak AWS_SECRET_ACCESS_KEY=$sk AWS_REGION=us-east-1 AWS_ENDPOINT_URL_STS="http://127.0.0.1:$moto_port" AWS_EC2_METADATA_DISABLED=true
echo "proxy identity: $(aws --endpoint-url "http://127.0.0.1:$moto_port" sts get-caller-identity --query Arn --output text 2>/dev/null || echo "$ak")"

step "starting PostgreSQL: TLS only, IAM users log in with a token checked by PAM (like RDS)"
pg_port=$(free_port)
upstream_pg_start "$demo/pg" "$pg_port" "{\"$ak\": \"$sk\"}" app
upstream_pg_sql "$demo/pg" "$pg_port" postgres "CREATE DATABASE orders OWNER app" >/dev/null
upstream_pg_sql "$demo/pg" "$pg_port" orders "CREATE TABLE items(id int, name text); INSERT INTO items VALUES (1, 'portcullis'); GRANT ALL ON items TO app"
echo "PostgreSQL on 127.0.0.1:$pg_port (user app has no password at all)"

step "creating the proxy's CA and a client certificate for alice (group dev, 1 hour)"
"$PORTCULLIS_BIN" ca init --dir "$demo/ca"
"$PORTCULLIS_BIN" cert issue --ca-dir "$demo/ca" --user alice --group dev --ttl 1h --out "$demo/alice" >/dev/null
"$PORTCULLIS_BIN" cert issue --ca-dir "$demo/ca" --user bob --group sales --ttl 1h --out "$demo/bob" >/dev/null

step "writing the Database and AccessRole (the same YAML kubectl apply takes)"
mkdir -p "$demo/secrets/orders-ca"; cp "$demo/pg/upstream-ca/ca.crt" "$demo/secrets/orders-ca/ca.crt"
cat > "$demo/resources.yaml" <<YAML
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: orders, labels: {env: demo}}
spec:
  protocol: postgres
  endpoint: 127.0.0.1:$pg_port
  aws: {region: us-east-1}
  tls: {mode: verify-full, caSecretRef: {name: orders-ca}}
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databaseSelector: {matchLabels: {env: demo}}, dbUsers: [app], dbNames: [orders]}
  maxSessionTtl: 8h
YAML
proxy_port=$(free_port); admin_port=$(free_port)
cat > "$demo/proxy.yaml" <<YAML
listeners: [{address: '127.0.0.1:$proxy_port', database: orders}]
tls: {certFile: ca/server.crt, keyFile: ca/server.key, clientCaFile: ca/ca.crt}
admin: {address: '127.0.0.1:$admin_port'}
audit: {stdout: false, file: audit.jsonl}
aws: {allowedEndpoints: ['127.0.0.1']}
resources: [resources.yaml]
secretsDir: secrets
YAML
cat "$demo/resources.yaml"

step "starting the proxy"
"$PORTCULLIS_BIN" proxy --config "$demo/proxy.yaml" --check
"$PORTCULLIS_BIN" proxy --config "$demo/proxy.yaml" > "$demo/proxy.out" 2> "$demo/proxy.log" & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

conn() { echo "host=127.0.0.1 port=$proxy_port user=app dbname=orders sslmode=verify-full sslrootcert=$demo/$1/ca.crt sslcert=$demo/$1/client.crt sslkey=$demo/$1/client.key"; }
step "alice (group dev) runs psql through the proxy"
echo "\$ psql \"$(conn alice)\""
psql -X "$(conn alice)" -c "select current_user, current_database(), (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as upstream_tls, name from items"

step "bob (group sales) is refused, with the reason"
psql -X "$(conn bob)" -c "select 1" || true

step "the audit trail (JSON lines)"
sleep 0.3
python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l); print(json.dumps({k:e[k] for k in ("event","code","user","database","db_user","db_name","success","error","statement") if k in e}))' "$demo/audit.jsonl"

step "what PostgreSQL's PAM check decided (it verified the SigV4 signature of each token)"
cat "$demo/pg/pam.log"
step "metrics (excerpt)"
curl -fs "http://127.0.0.1:$admin_port/metrics" | grep -E '^portcullis_(connections|token|auth_failures)' || true
echo; echo "demo finished; everything it started is being stopped."
