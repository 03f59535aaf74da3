#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for the demo and the tests that need pods.
#
#   scripts/cluster.sh up DIR        start it; DIR/env has what a client needs (see below)
#   scripts/cluster.sh down DIR      stop it and remove everything it made; fails if anything is left
#   scripts/cluster.sh user DIR NAME [GROUP...]   print a kubeconfig path for that user
#   scripts/cluster.sh leftovers     exit 1 (and say what) if any cluster part is still here
#
# The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and the
# node (kubelet, kube-proxy) are built from the Go modules pinned in testenv/; containerd and
# runc are Debian's. Network: a bridge pcbr0 with the node address 10.247.0.1/24; pods get
# 10.247.0.10-250 on it, Services 10.97.0.0/24 (routed onto the bridge, never out of another
# interface). The API server listens on the bridge address; test servers that pods must reach
# listen there too. Nothing is forwarded or NATed outwards (ip_forward stays 0, no masquerade),
# an nftables table drops anything for the pod and Service ranges on any other interface, and
# pods get an empty resolv.conf. State lives in DIR; `down` removes processes, mounts, cgroups,
# the bridge, rules and sysctl changes, then checks that nothing is left.
#
# DIR/env (sourceable): API_URL KUBECONFIG NODE_IP BRIDGE POD_CIDR SERVICE_CIDR BIN CONTAINERD_SOCK
# Needs root and the Debian packages containerd, runc, containernetworking-plugins, nftables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

BRIDGE=pcbr0 NODE=portcullis-node NODE_IP=10.247.0.1 POD_CIDR=10.247.0.0/24 SERVICE_CIDR=10.97.0.0/24
NFT_TABLE=portcullis_node
# Paths the kubelet and containerd use whatever they are told.
HARDCODED=(/run/containerd /var/lib/cni /var/log/containers /var/log/pods /var/lib/kubelet)

log() { printf '[cluster %5.1fs] %s\n' "$(awk "BEGIN {print $(date +%s.%N) - ${T0:-$(date +%s.%N)}}")" "$*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------------------------------------
up() {
  local d=$1
  [ "$(id -u)" = 0 ] || die "run as root (it creates a bridge, cgroups and mounts)"
  for c in containerd runc nft ip openssl; do command -v $c >/dev/null || die "$c is missing (apt-get install containerd runc containernetworking-plugins nftables iproute2 openssl)"; done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || die "CNI plugins missing (apt-get install containernetworking-plugins)"
  ip link show $BRIDGE >/dev/null 2>&1 && die "bridge $BRIDGE exists: another cluster is running (scripts/cluster.sh down DIR), one at a time"
  [ -e "$d/run" ] && die "$d/run exists: run 'scripts/cluster.sh down $d' first"
  T0=$(date +%s.%N)
  local bin; bin=$(bash "$repo/testenv/build.sh" | tail -n1)
  local r=$d/run
  mkdir -p "$r"/{pids,logs,pki,etcd,cni/net.d,cni/ipam,containerd,kubelet,pod-logs,images}
  chmod 755 "$d" "$r"
  # What the kubelet changes and what we create, to restore and remove on the way down.
  for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward; do
    echo "$s=$(sysctl -n $s)"; done > "$r/sysctl.before"
  : > "$r/dirs.before"; for p in "${HARDCODED[@]}"; do [ -e "$p" ] && echo "$p" >> "$r/dirs.before"; done
  local etcd_c etcd_p api kcm sched kubelet khealth kp_h kp_m
  etcd_c=$(free_port) etcd_p=$(free_port) api=$(free_port) kcm=$(free_port) sched=$(free_port)
  kubelet=$(free_port) khealth=$(free_port) kp_h=$(free_port) kp_m=$(free_port)
  pki "$r/pki" "$api"
  log "certificates made"

  # Network first: the API server binds to the bridge address.
  ip link add $BRIDGE type bridge
  ip addr add $NODE_IP/24 dev $BRIDGE
  ip link set $BRIDGE up
  ip route add $SERVICE_CIDR dev $BRIDGE src $NODE_IP
  nft -f - <<NFT
table inet $NFT_TABLE {
  chain output { type filter hook output priority 0; policy accept;
    ip daddr { $POD_CIDR, $SERVICE_CIDR } oifname != { "$BRIDGE", "lo" } drop
  }
  chain forward { type filter hook forward priority 0; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" drop
    ip daddr { $POD_CIDR, $SERVICE_CIDR } oifname != "$BRIDGE" drop
  }
}
NFT
  : > "$r/resolv.conf"
  sed "s|__DIR__|$r|g; s|__BRIDGE__|$BRIDGE|g" > "$r/cni/net.d/10-portcullis.conflist" <<'JSON'
{"cniVersion": "1.0.0", "name": "portcullis-node", "plugins": [{
  "type": "bridge", "bridge": "__BRIDGE__", "isGateway": false, "isDefaultGateway": false,
  "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "__DIR__/cni/ipam",
           "ranges": [[{"subnet": "10.247.0.0/24", "rangeStart": "10.247.0.10", "rangeEnd": "10.247.0.250", "gateway": "10.247.0.1"}]],
           "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON

  start etcd "$r" "$bin/etcd" --name=node --data-dir="$r/etcd" \
    --listen-client-urls=http://127.0.0.1:$etcd_c --advertise-client-urls=http://127.0.0.1:$etcd_c \
    --listen-peer-urls=http://127.0.0.1:$etcd_p --initial-advertise-peer-urls=http://127.0.0.1:$etcd_p \
    --initial-cluster=node=http://127.0.0.1:$etcd_p --unsafe-no-fsync --log-level=warn --listen-metrics-urls=
  # IRSA as on EKS: projected service-account tokens for audience sts.amazonaws.com are signed
  # by the cluster's issuer; moto's STS takes them in AssumeRoleWithWebIdentity.
  start kube-apiserver "$r" "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:$etcd_c \
    --bind-address=$NODE_IP --advertise-address=$NODE_IP --secure-port=$api \
    --tls-cert-file="$r/pki/apiserver.crt" --tls-private-key-file="$r/pki/apiserver.key" \
    --client-ca-file="$r/pki/ca.crt" --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$r/pki/sa.pub" \
    --service-account-signing-key-file="$r/pki/sa.key" --service-cluster-ip-range=$SERVICE_CIDR \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$r/pki/apiserver-kubelet.crt" --kubelet-client-key="$r/pki/apiserver-kubelet.key"
  sed "s|__DIR__|$r|g" > "$r/containerd/config.toml" <<'TOML'
version = 2
root = "__DIR__/containerd/root"
state = "__DIR__/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "__DIR__/containerd/containerd.sock"
[ttrpc]
  address = "__DIR__/containerd/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "__DIR__/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "localhost/portcullis-test/pause:1"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    # No CAP_SYS_RESOURCE here: clamp the sandbox's oom_score_adj (-998) to containerd's own.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
          Root = "__DIR__/containerd/runc-root"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "__DIR__/cni/net.d"
TOML
  start containerd "$r" containerd --config "$r/containerd/config.toml" --log-level warn
  local K=("$bin/kubectl" --kubeconfig="$r/pki/admin.kubeconfig")
  wait_for "the API server" 90 "$r" kube-apiserver \
    curl -sf --max-time 2 --cacert "$r/pki/ca.crt" --cert "$r/pki/admin.crt" --key "$r/pki/admin.key" "https://$NODE_IP:$api/readyz"
  log "API server ready on https://$NODE_IP:$api"
  start kube-controller-manager "$r" "$bin/kube-controller-manager" --kubeconfig="$r/pki/admin.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=$kcm --cert-dir="$r/pki/kcm" --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=false --service-account-private-key-file="$r/pki/sa.key" \
    --root-ca-file="$r/pki/ca.crt" --cluster-cidr=$POD_CIDR --allocate-node-cidrs=false
  start kube-scheduler "$r" "$bin/kube-scheduler" --kubeconfig="$r/pki/scheduler.kubeconfig" \
    --authentication-kubeconfig="$r/pki/scheduler.kubeconfig" --authorization-kubeconfig="$r/pki/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=$sched --leader-elect=false
  wait_for containerd 30 "$r" containerd ctr -a "$r/containerd/containerd.sock" version
  pause_image "$r"
  log "containerd ready, pause image imported"
  cat > "$r/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $khealth
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: $r/pki/ca.crt}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$r/containerd/containerd.sock
podLogsDir: $r/pod-logs
resolvConf: $r/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
makeIPTablesUtilChains: false
YAML
  start kubelet "$r" "$bin/kubelet" --config="$r/kubelet/config.yaml" --kubeconfig="$r/pki/kubelet.kubeconfig" \
    --hostname-override=$NODE --node-ip=$NODE_IP --root-dir="$r/kubelet" --cert-dir="$r/kubelet/pki" --v=1
  cat > "$r/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $r/pki/kube-proxy.kubeconfig}
hostnameOverride: $NODE
mode: nftables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$kp_h
metricsBindAddress: 127.0.0.1:$kp_m
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
YAML
  start kube-proxy "$r" "$bin/kube-proxy" --config="$r/kube-proxy.yaml" --v=1
  wait_for "the node to be Ready" 180 "$r" kubelet \
    sh -c "'$bin/kubectl' --kubeconfig='$r/pki/admin.kubeconfig' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' 2>/dev/null | grep -q True"
  # The default ServiceAccount must exist before pods can be created in a namespace.
  wait_for "the default ServiceAccount" 60 "$r" kube-controller-manager "${K[@]}" -n default get serviceaccount default
  cat > "$d/env" <<ENV
API_URL=https://$NODE_IP:$api
KUBECONFIG=$r/pki/admin.kubeconfig
NODE_IP=$NODE_IP
NODE_NAME=$NODE
BRIDGE=$BRIDGE
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
BIN=$bin
CONTAINERD_SOCK=$r/containerd/containerd.sock
ENV
  log "node $NODE Ready"
}

start() { # NAME RUNDIR CMD...
  local n=$1 r=$2; shift 2
  setsid "$@" > "$r/logs/$n.log" 2>&1 < /dev/null &
  echo $! > "$r/pids/$n.pid"
}

wait_for() { # WHAT SECONDS RUNDIR PROCESS CMD...
  local what=$1 secs=$2 r=$3 proc=$4; shift 4
  local until=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$(cat "$r/pids/$proc.pid")" 2>/dev/null || { tail -n 30 "$r/logs/$proc.log" >&2; die "$proc exited while waiting for $what (log above, $r/logs/$proc.log)"; }
    [ $SECONDS -lt $until ] || { tail -n 30 "$r/logs/$proc.log" >&2; die "timed out after ${secs}s waiting for $what"; }
    sleep 0.2
  done
}

pki() { # DIR API_PORT: a client CA, the API server's serving cert, one client cert per component
  local p=$1 api=$2
  mkdir -p "$p"; cd "$p"
  o() { openssl "$@" >/dev/null 2>&1 || { echo "openssl $*" >&2; return 1; }; }
  o req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -subj /CN=portcullis-test-cluster-ca -days 2
  o genrsa -out sa.key 2048; o rsa -in sa.key -pubout -out sa.pub
  o req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
  printf 'subjectAltName=IP:%s,IP:10.97.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' "$NODE_IP" > apiserver.ext
  o x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile apiserver.ext
  client_cert "$p" "$api" admin /O=system:masters/CN=admin
  client_cert "$p" "$api" kubelet "/O=system:nodes/CN=system:node:$NODE"
  client_cert "$p" "$api" kube-proxy /CN=system:kube-proxy
  client_cert "$p" "$api" scheduler /CN=system:kube-scheduler
  client_cert "$p" "$api" apiserver-kubelet /O=system:masters/CN=kube-apiserver-kubelet-client
  cd - >/dev/null
}

client_cert() { # PKI_DIR API_PORT NAME SUBJECT -> NAME.crt NAME.key NAME.kubeconfig
  local p=$1 api=$2 n=$3 subj=$4
  ( cd "$p"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$n.key" -out "$n.csr" -subj "$subj" >/dev/null 2>&1
    echo extendedKeyUsage=clientAuth > "$n.ext"
    openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$n.crt" -days 2 -extfile "$n.ext" >/dev/null 2>&1
    chmod 644 "$n.key"
    cat > "$n.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: portcullis-test, cluster: {server: 'https://$NODE_IP:$api', certificate-authority: '$p/ca.crt'}}]
users: [{name: '$n', user: {client-certificate: '$p/$n.crt', client-key: '$p/$n.key'}}]
contexts: [{name: portcullis-test, context: {cluster: portcullis-test, user: '$n'}}]
current-context: portcullis-test
YAML
  )
}

pause_image() { # RUNDIR: the sandbox image, a static Go program that reaps children and exits on TERM
  local r=$1 cache=${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/images
  mkdir -p "$cache"
  local src=$repo/testenv/pause/main.go key
  key=$(cat "$src" "$repo/scripts/lib/ociimage.py" | sha256sum | cut -c1-12)
  if [ ! -s "$cache/pause-$key.tar" ]; then
    (cd "$repo/testenv" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' -o "$cache/pause" ./pause)
    python3 "$repo/scripts/lib/ociimage.py" "$cache/pause-$key.tar" localhost/portcullis-test/pause:1 "$cache/pause" --user 65535:65535 >/dev/null
  fi
  ctr -a "$r/containerd/containerd.sock" -n k8s.io images import "$cache/pause-$key.tar" > "$r/logs/import-pause.log" 2>&1
}

# ---------------------------------------------------------------------------------------------
down() {
  local d=$1 r=$1/run
  [ -d "$r" ] || { echo "cluster: nothing to tear down in $d" >&2; leftovers; return; }
  T0=$(date +%s.%N)
  local bin; bin=$(sed -n 's/^BIN=//p' "$d/env" 2>/dev/null || true)
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager; do stop "$r" $n; done
  local A=(ctr -a "$r/containerd/containerd.sock" -n k8s.io)
  if alive "$r" containerd; then
    for c in $("${A[@]}" tasks ls -q 2>/dev/null); do "${A[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 0.3
    for c in $("${A[@]}" tasks ls -q 2>/dev/null); do "${A[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true; done
  fi
  stop "$r" containerd
  # Shims re-parent to init and outlive containerd: find ours by the socket in their argv.
  local p cmd
  for p in $(pgrep -f "containerd-shim.*$r/containerd" || true); do kill -9 "$p" 2>/dev/null || true; done
  local f
  for f in $(find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/unified/kubepods -name cgroup.procs 2>/dev/null); do
    for p in $(cat "$f"); do kill -9 "$p" 2>/dev/null || true; done
  done
  stop "$r" kube-apiserver; stop "$r" etcd
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  nft delete table inet $NFT_TABLE 2>/dev/null || true
  # Mounts under our tree (kubelet's bind mount of its root, tmpfs volumes, shm, rootfs, netns).
  local m
  grep -o " $r[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for i in 1 2 3 4 5 6 7 8 9 10; do
    local left=0 c
    for c in /sys/fs/cgroup/*/kubepods; do
      [ -d "$c" ] || continue
      find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$c" ] && left=1
    done
    [ $left = 0 ] && break; sleep 0.5
  done
  ip link delete $BRIDGE 2>/dev/null || true
  for p in "${HARDCODED[@]}"; do
    [ -e "$p" ] && ! grep -qx "$p" "$r/dirs.before" 2>/dev/null && rm -rf "$p"
  done
  local k v
  while IFS== read -r k v; do [ "$(sysctl -n "$k")" = "$v" ] || sysctl -qw "$k=$v"; done < "$r/sysctl.before"
  rm -rf "$d/logs"; mv "$r/logs" "$d/logs" 2>/dev/null || true
  rm -rf "$r" "$d/env"
  log "torn down"
  leftovers
}

gone() { [ ! -e "/proc/$1" ] || grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
alive() { [ -f "$1/pids/$2.pid" ] && ! gone "$(cat "$1/pids/$2.pid")"; }
stop() { # RUNDIR NAME: TERM, then KILL after 10 s
  local r=$1 n=$2 p i
  alive "$r" "$n" || return 0
  p=$(cat "$r/pids/$n.pid"); kill "$p" 2>/dev/null || true
  for i in $(seq 100); do gone "$p" && return 0; sleep 0.1; done
  echo "cluster: $n ($p) ignored TERM for 10 s: killing it" >&2; kill -9 "$p" 2>/dev/null || true
}

leftovers() { # anything of a cluster still here?
  local found=()
  pgrep -f '/bin/(kubelet|kube-proxy|kube-scheduler) ' >/dev/null && found+=("processes: $(pgrep -af '/bin/(kubelet|kube-proxy|kube-scheduler) ' | cut -c1-100 | tr '\n' ';')")
  pgrep -f 'containerd-shim.*/run/containerd/containerd.sock' >/dev/null && found+=("containerd shims")
  pgrep -f 'containerd --config .*/run/containerd/config.toml' >/dev/null && found+=("containerd")
  ip link show $BRIDGE >/dev/null 2>&1 && found+=("bridge $BRIDGE")
  ip -br link 2>/dev/null | grep -q '^veth' && found+=("veth links")
  nft list tables 2>/dev/null | grep -qE "kube-proxy|$NFT_TABLE" && found+=("nftables: $(nft list tables | grep -E "kube-proxy|$NFT_TABLE" | tr '\n' ' ')")
  ls -d /sys/fs/cgroup/*/kubepods >/dev/null 2>&1 && found+=("cgroups: $(ls -d /sys/fs/cgroup/*/kubepods | tr '\n' ' ')")
  grep -qE ' [^ ]*/run/(kubelet|containerd)' /proc/self/mounts && found+=("mounts: $(grep -cE ' [^ ]*/run/(kubelet|containerd)' /proc/self/mounts)")
  [ "$(sysctl -n net.ipv4.ip_forward)" = 0 ] || found+=("net.ipv4.ip_forward is not 0")
  if [ ${#found[@]} -gt 0 ]; then
    printf 'cluster leftovers: %s\n' "${found[@]}" >&2
    return 1
  fi
}

user() { # DIR NAME [GROUP...]: a kubeconfig for that user, signed by the cluster's client CA
  local d=$1 n=$2; shift 2
  local r=$d/run api subj=""
  api=$(sed -n 's/^API_URL=.*:\([0-9]*\)$/\1/p' "$d/env")
  local g; for g in "$@"; do subj+="/O=$g"; done
  client_cert "$r/pki" "$api" "user-$n" "$subj/CN=$n"
  echo "$r/pki/user-$n.kubeconfig"
}

case ${1-} in
  up) [ $# = 2 ] || die "usage: $0 up DIR"; mkdir -p "$2"; dir=$(cd "$2" && pwd)
      # A start that fails half-way leaves nothing behind either.
      trap 'rc=$?; if [ $rc != 0 ] && [ -d "$dir/run" ]; then echo "cluster: start failed; tearing down" >&2; (down "$dir") || true; fi' EXIT
      up "$dir" ;;
  down) [ $# = 2 ] || die "usage: $0 down DIR"; down "$(cd "$2" 2>/dev/null && pwd || echo "$2")" ;;
  user) [ $# -ge 3 ] || die "usage: $0 user DIR NAME [GROUP...]"; user "$(cd "$2" && pwd)" "${@:3}" ;;
  leftovers) leftovers ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
