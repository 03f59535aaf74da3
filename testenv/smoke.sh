#!/usr/bin/env bash
# Smoke test of the testenv binaries: start etcd, kube-apiserver and
# kube-controller-manager on 127.0.0.1 free ports as plain processes, wait for
# /readyz, exercise the controllers and helm a little, then stop everything.
#
#   testenv/smoke.sh [BIN_DIR]     # default: the directory build.sh prints
#   SMOKE_LOG_DIR=/tmp/logs testenv/smoke.sh   # keep the component logs
#
# The flags used here are the ones documented in testenv/README.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$("$here/build.sh" | tail -n1)}
for b in etcd kube-apiserver kube-controller-manager helm; do
  [[ -x $bin/$b ]] || { echo "smoke: $bin/$b missing" >&2; exit 1; }
done
command -v openssl >/dev/null && command -v curl >/dev/null ||
  { echo "smoke: needs openssl and curl" >&2; exit 1; }

now_ms() { date +%s%3N; }
work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-testenv.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  # Stop in reverse start order, each one fully, so none logs errors about
  # the one below it vanishing first.
  local t=$(now_ms)
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  (( ${#pids[@]} == 0 )) || echo "smoke: stopped everything in $(( $(now_ms) - t )) ms" >&2
  if [[ -n ${SMOKE_LOG_DIR-} ]]; then mkdir -p "$SMOKE_LOG_DIR" && cp "$work"/*.log "$SMOKE_LOG_DIR"/ 2>/dev/null || true; fi
  if (( rc != 0 )); then
    for f in "$work"/*.log; do [[ -f $f ]] && { echo "--- tail $f" >&2; tail -n 25 "$f" >&2; }; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# Ask the kernel for free ports (bind to :0 and release).
read -r etcd_port peer_port api_port kcm_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()
EOF
)


# ---- PKI: client CA + admin cert (O=system:masters), service-account key pair.
pki=$work/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 \
    -subj "/CN=portcullis-testenv-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
    -subj "/O=system:masters/CN=portcullis-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt \
    -days 1 -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

t0=$(now_ms)
"$bin/etcd" \
  --name=testenv \
  --data-dir="$work/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="testenv=http://127.0.0.1:$peer_port" \
  --unsafe-no-fsync \
  --log-level=warn \
  >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "smoke: etcd died" >&2; exit 1; }
  sleep 0.05
done
echo "smoke: etcd healthy in $(( $(now_ms) - t0 )) ms" >&2

"$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --cert-dir="$work/apiserver-certs" \
  --client-ca-file="$pki/ca.crt" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  >"$work/kube-apiserver.log" 2>&1 &
pids+=($!)

api=https://127.0.0.1:$api_port
kcurl() { curl -sS --max-time 10 --cacert "$work/apiserver-certs/apiserver.crt" \
  --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"; }

ready=0
for _ in $(seq 1 600); do
  if [[ -f $work/apiserver-certs/apiserver.crt ]] && [[ $(kcurl -o /dev/null -w '%{http_code}' "$api/readyz" 2>/dev/null) == 200 ]]; then
    ready=1; break
  fi
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "smoke: process $p died" >&2; exit 1; }; done
  sleep 0.1
done
(( ready )) || { echo "smoke: kube-apiserver not ready after 60 s" >&2; kcurl "$api/readyz?verbose" >&2 || true; exit 1; }
t_ready=$(now_ms)
echo "smoke: etcd + kube-apiserver ready in $(( t_ready - t0 )) ms" >&2
kcurl "$api/version" >&2; echo >&2

# ---- kubeconfig for the admin (used by kube-controller-manager and helm).
kubeconfig=$work/admin.kubeconfig
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: $api
    certificate-authority: $work/apiserver-certs/apiserver.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: testenv
  context: {cluster: testenv, user: admin}
current-context: testenv
EOF

t1=$(now_ms)
"$bin/kube-controller-manager" \
  --kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$kcm_port" \
  --cert-dir="$work/kcm-certs" \
  --leader-elect=false \
  --controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,root-ca-certificate-publisher-controller \
  --use-service-account-credentials=false \
  --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$work/apiserver-certs/apiserver.crt" \
  >"$work/kube-controller-manager.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  [[ $(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$kcm_port/healthz" 2>/dev/null) == 200 ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "smoke: kube-controller-manager died" >&2; exit 1; }
  sleep 0.1
done
echo "smoke: kube-controller-manager healthy in $(( $(now_ms) - t1 )) ms" >&2

# ---- Controllers work: a new namespace gets its default ServiceAccount and
# kube-root-ca.crt; deleting it is finalized by the namespace controller.
ns=smoke-$$
kcurl -o /dev/null -X POST -H 'Content-Type: application/json' "$api/api/v1/namespaces" \
  -d "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}"
waitfor() { # URL, what
  for _ in $(seq 1 300); do
    [[ $(kcurl -o /dev/null -w '%{http_code}' "$1") == "${3:-200}" ]] && return 0
    sleep 0.1
  done
  echo "smoke: timed out waiting for $2" >&2; return 1
}
waitfor "$api/api/v1/namespaces/$ns/serviceaccounts/default" "default ServiceAccount"
waitfor "$api/api/v1/namespaces/$ns/configmaps/kube-root-ca.crt" "kube-root-ca.crt ConfigMap"

# Garbage collector: a ConfigMap owned by another goes when its owner goes.
owner_uid=$(kcurl -X POST -H 'Content-Type: application/json' "$api/api/v1/namespaces/$ns/configmaps" \
  -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"owner"}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["uid"])')
kcurl -o /dev/null -X POST -H 'Content-Type: application/json' "$api/api/v1/namespaces/$ns/configmaps" \
  -d "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"owned\",\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"owner\",\"uid\":\"$owner_uid\"}]}}"
waitfor "$api/api/v1/namespaces/$ns/configmaps/owned" "owned ConfigMap"
kcurl -o /dev/null -X DELETE "$api/api/v1/namespaces/$ns/configmaps/owner"
waitfor "$api/api/v1/namespaces/$ns/configmaps/owned" "garbage collection of the owned ConfigMap" 404

# ---- helm talks to the cluster: install and uninstall a ConfigMap-only chart.
chart=$work/chart
mkdir -p "$chart/templates"
printf 'apiVersion: v2\nname: smoke\nversion: 0.1.0\n' >"$chart/Chart.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  k: v\n' \
  >"$chart/templates/cm.yaml"
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data
"$bin/helm" --kubeconfig "$kubeconfig" install smoke "$chart" -n "$ns" >/dev/null
waitfor "$api/api/v1/namespaces/$ns/configmaps/smoke-cm" "helm-installed ConfigMap"
"$bin/helm" --kubeconfig "$kubeconfig" list -n "$ns" >&2

kcurl -o /dev/null -X DELETE "$api/api/v1/namespaces/$ns"
waitfor "$api/api/v1/namespaces/$ns" "namespace deletion" 404
echo "smoke: OK (namespace, serviceaccount, root-ca publisher and garbage collector controllers; helm install)" >&2
