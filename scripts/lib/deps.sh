# Installs what the demo and the tests need on a fresh Debian machine (run as root):
# PostgreSQL server and client, PgBouncer, the PAM headers and a C compiler, MariaDB server and client, sysbench, containerd, runc,
# the CNI plugins and nftables (the test node), the Python AWS emulator and SDK, the AWS CLI,
# PyMySQL, pymongo, mongosh, and checks for Rust and Go.
# Sourced by scripts/demo.sh and scripts/test.sh; idempotent and quick when everything is present.

portcullis_need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root: the tests start PostgreSQL as the 'postgres' user and install a PAM service in /etc/pam.d" >&2
    exit 1
  fi
}

portcullis_install_deps() {
  local missing=()
  [ -x /usr/lib/postgresql/15/bin/postgres ] || [ -x /usr/lib/postgresql/16/bin/postgres ] || [ -x /usr/lib/postgresql/17/bin/postgres ] || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v pgbench >/dev/null || missing+=(postgresql-contrib)
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  [ -x /usr/sbin/mariadbd ] && [ -e /usr/lib/mysql/plugin/auth_pam.so ] || missing+=(mariadb-server)
  command -v mariadb >/dev/null && command -v mariadb-slap >/dev/null || missing+=(mariadb-client)
  command -v sysbench >/dev/null || missing+=(sysbench)
  [ -e /usr/lib/x86_64-linux-gnu/security/pam_exec.so ] || [ -e /lib/x86_64-linux-gnu/security/pam_exec.so ] || missing+=(libpam-modules)
  # pam_tokenexec (tests/support/pam_tokenexec): a PAM module built with the C compiler.
  [ -e /usr/include/security/pam_modules.h ] || missing+=(libpam0g-dev)
  command -v cc >/dev/null || missing+=(gcc)
  command -v runuser >/dev/null || missing+=(util-linux)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v ss >/dev/null && command -v ip >/dev/null || missing+=(iproute2)
  # The test node (scripts/cluster.sh): containerd with runc, the CNI bridge, nftables.
  command -v containerd >/dev/null || missing+=(containerd)
  [ -x /usr/sbin/runc ] || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v nft >/dev/null || missing+=(nftables)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  # scripts/pack-image.sh strips debug information from the packed binary.
  command -v objcopy >/dev/null || missing+=(binutils)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    # Do not let the package start a cluster of its own.
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
    # Nor start services (MariaDB's, PgBouncer's): the tests start their own servers.
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || { echo "error: apt-get install ${missing[*]} failed" >&2; exit "$rc"; }
  fi
  id postgres >/dev/null 2>&1 || { echo "error: no 'postgres' user after installing PostgreSQL" >&2; exit 1; }
  if ! python3 -c 'import moto, boto3, botocore, requests, flask, pymysql, pymongo, yaml' 2>/dev/null || ! command -v moto_server >/dev/null || ! command -v aws >/dev/null; then
    echo "installing Python packages: moto[server] boto3 pymysql pymongo awscli pyyaml" >&2
    python3 -m pip install -q 'moto[server]>=5.1' boto3 requests pymysql pymongo awscli pyyaml
    # pyenv puts new commands (moto_server, aws) on PATH only after a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash || true; fi
  fi
  if ! command -v mongosh >/dev/null; then
    echo "installing mongosh (npm, ~1 minute)" >&2
    npm install -g --silent mongosh >/dev/null || { echo "error: npm install -g mongosh failed" >&2; exit 1; }
  fi
  command -v cargo >/dev/null || { echo "error: Rust (cargo) is required" >&2; exit 1; }
  command -v go >/dev/null || { echo "error: Go is required (it builds the test-only token checker)" >&2; exit 1; }
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}"
  export GOFLAGS="${GOFLAGS:--mod=readonly}"
  export GOTOOLCHAIN=local
}
