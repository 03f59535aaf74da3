#!/usr/bin/env bash
# The main job, end to end on this machine: a Kubernetes cluster with a real node
# (scripts/cluster.sh), the Portcullis image packed from the release binary, `helm install`
# of charts/portcullis, a Database and an AccessRole applied with kubectl, the proxy pod
# running with IRSA (its AWS identity from a projected token through moto's STS), a client
# certificate from `portcullis db login`, psql through the proxy's Service to a PostgreSQL
# that only takes IAM tokens over TLS (like RDS), the status conditions and the audit trail.
# Installs what it needs; leaves nothing running. Each step prints its duration.
#
#   bash scripts/demo.sh               # the Kubernetes path (needs root)
#   bash scripts/demo.sh --standalone  # the proxy alone on this host, from YAML files
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1-} in
  --standalone) exec bash scripts/demo-standalone.sh ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--standalone]" >&2; exit 2 ;;
esac
. scripts/lib/deps.sh
. scripts/lib/upstream.sh
portcullis_need_root

T_ALL=$SECONDS
t_step=$SECONDS
step_name=""
step() {
  [ -z "$step_name" ] || printf '\033[2m   (%s: %d s)\033[0m\n' "$step_name" $((SECONDS - t_step))
  step_name=$1; t_step=$SECONDS
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

step "installing what is missing (PostgreSQL, containerd, runc, CNI plugins, nftables, moto, …)"
portcullis_install_deps

step "building portcullis (release) and the cluster's binaries from their Go modules"
cargo build --locked --release --bin portcullis 2>&1 | tail -n 1
export PORTCULLIS_BIN="$CARGO_TARGET_DIR/release/portcullis"
bin=$(bash testenv/build.sh | tail -n1)
K() { "$bin/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }

demo=$(mktemp -d /tmp/portcullis-demo.XXXXXX); chmod 755 "$demo"
moto_pid=""
cleanup() {
  local rc=$?
  step "cleaning up"
  [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true
  upstream_pg_stop "$demo/pg" 2>/dev/null || true
  bash scripts/cluster.sh down "$demo/cluster" || rc=1
  rm -rf "$demo"
  printf '\ndemo %s in %d s\n' "$([ $rc = 0 ] && echo finished || echo FAILED)" $((SECONDS - T_ALL))
  exit $rc
}
trap cleanup EXIT

step "starting a one-node cluster (etcd, API server, scheduler, controllers, containerd, kubelet, kube-proxy)"
bash scripts/cluster.sh up "$demo/cluster"
. "$demo/cluster/env"
export KUBECONFIG
K get nodes -o wide

step "packing the image from the release binary and importing it into the node's containerd"
tar=$(bash scripts/pack-image.sh localhost/portcullis:demo 2>/dev/null | tail -n1)
ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$tar" >/dev/null
ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep portcullis

step "AWS (moto) and an RDS-like PostgreSQL on the node's bridge address $NODE_IP"
moto_port=$(free_port)
moto_server -H "$NODE_IP" -p "$moto_port" > "$demo/moto.log" 2>&1 & moto_pid=$!
for _ in $(seq 100); do curl -fs "http://$NODE_IP:$moto_port/" >/dev/null 2>&1 && break; sleep 0.1; done
pg_port=$(free_port)
UPSTREAM_PG_ADDR=$NODE_IP UPSTREAM_PG_MOTO="http://$NODE_IP:$moto_port" upstream_pg_start "$demo/pg" "$pg_port" '{}' app
upstream_pg_sql "$demo/pg" "$pg_port" postgres "CREATE DATABASE orders OWNER app" >/dev/null
upstream_pg_sql "$demo/pg" "$pg_port" orders "CREATE TABLE items(id int, name text); INSERT INTO items VALUES (1, 'portcullis'); GRANT ALL ON items TO app"
echo "PostgreSQL on $NODE_IP:$pg_port: user app has no password; it logs in only with an IAM token over TLS"

step "helm install portcullis charts/portcullis"
set -x
"$bin/helm" --kubeconfig "$KUBECONFIG" install portcullis charts/portcullis -n portcullis-system --create-namespace --wait --timeout 180s \
  --set image.repository=localhost/portcullis --set image.tag=demo --set image.pullPolicy=Never \
  --set proxy.imagePullPolicy=Never --set operator.replicas=1 --set operator.awsChecks=false \
  --set "operator.allowedEndpoints={$NODE_IP}" \
  --set "proxy.env[0].name=AWS_ENDPOINT_URL_STS,proxy.env[0].value=http://$NODE_IP:$moto_port" \
  --set "proxy.env[1].name=AWS_EC2_METADATA_DISABLED,proxy.env[1].value=true"
{ set +x; } 2>/dev/null
K -n portcullis-system get pods

step "kubectl apply: a Database (proxy with an IAM role, IRSA) and an AccessRole"
K create namespace shop >/dev/null
K -n shop create secret generic orders-ca --from-file=ca.crt="$demo/pg/upstream-ca/ca.crt" >/dev/null
cat > "$demo/orders.yaml" <<YAML
apiVersion: portcullis.io/v1alpha1
kind: Database
metadata: {name: orders, namespace: shop, labels: {env: demo}}
spec:
  protocol: postgres
  endpoint: '$NODE_IP:$pg_port'
  aws: {region: us-east-1}
  tls: {mode: verify-full, caSecretRef: {name: orders-ca}}
  proxy: {iamRoleArn: 'arn:aws:iam::123456789012:role/orders-proxy'}
---
apiVersion: portcullis.io/v1alpha1
kind: AccessRole
metadata: {name: developers, namespace: shop}
spec:
  subjects: [{kind: Group, name: dev}]
  allow: {databaseSelector: {matchLabels: {env: demo}}, dbUsers: [app], dbNames: [orders]}
  maxSessionTtl: 8h
YAML
cat "$demo/orders.yaml"
K apply -f "$demo/orders.yaml"

step "waiting for the proxy pod"
K -n shop rollout status deployment/portcullis-orders --timeout=180s
K -n shop get pods -o wide

step "alice (group dev) gets a certificate with her Kubernetes login"
alice=$(bash scripts/cluster.sh user "$demo/cluster" alice dev)
KUBECONFIG=$alice "$PORTCULLIS_BIN" db login orders -n shop --db-user app --db-name orders --ttl 1h --out "$demo/alice"

step "psql through the proxy's Service (ClusterIP, kube-proxy)"
ip=$(K -n shop get svc portcullis-orders -o jsonpath='{.spec.clusterIP}')
port=$(K -n shop get svc portcullis-orders -o jsonpath='{.spec.ports[0].port}')
conn="host=portcullis-orders.shop.svc hostaddr=$ip port=$port user=app dbname=orders sslmode=verify-full sslrootcert=$demo/alice/ca.crt sslcert=$demo/alice/client.crt sslkey=$demo/alice/client.key"
echo "\$ psql \"$conn\""
psql -X "$conn" -c "select current_user, current_database(), name from items"

step "the Database's status (kubectl describe)"
K -n shop get database orders
K -n shop get database orders -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.message}{"\n"}{end}'
echo "credentialSource: $(K -n shop get database orders -o jsonpath='{.status.credentialSource}')"

step "the audit trail (kubectl logs of the proxy pod)"
K -n shop logs deployment/portcullis-orders | grep '"db.session' | python3 -c 'import json,sys
for l in sys.stdin:
    try: e=json.loads(l)
    except ValueError: continue
    e=e.get("fields", e); print(json.dumps({k:e[k] for k in ("event","user","groups","database","db_user","db_name","success","statement") if k in e}))'
echo; echo "what PostgreSQL's PAM check decided (it re-computed each token's SigV4 signature):"
cat "$demo/pg/pam.log"
