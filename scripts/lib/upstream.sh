# A local stand-in for RDS for PostgreSQL: a real PostgreSQL server on 127.0.0.1 with TLS
# only, whose IAM users log in with an RDS IAM auth token that PAM verifies (pam_tokenexec runs
# tests/support/rdstokencheck, which re-computes the SigV4 signature with the known keys).
# Sourced by scripts/demo.sh and bench/pg.sh.
#
#   upstream_pg_start DIR PORT KEYS_JSON USERS...   # start; USERS become IAM login roles
#     UPSTREAM_PG_ADDR=IP     listen there instead of 127.0.0.1 (the test node's bridge)
#     UPSTREAM_PG_MOTO=URL    also accept the temporary keys that moto's STS handed out
#   upstream_pg_sql DIR PORT DB SQL                 # run SQL as the superuser (unix socket)
#   upstream_pg_stop DIR                            # stop and remove the PAM service

upstream_pg_bin() {
  local v
  for v in 17 16 15; do
    [ -x "/usr/lib/postgresql/$v/bin/$1" ] && { echo "/usr/lib/postgresql/$v/bin/$1"; return; }
  done
  echo "$1"
}

upstream_pg_start() {
  local dir=$1 port=$2 keys=$3; shift 3
  local addr=${UPSTREAM_PG_ADDR:-127.0.0.1} moto=""
  [ -z "${UPSTREAM_PG_MOTO:-}" ] || moto="-moto $UPSTREAM_PG_MOTO"
  local repo; repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$dir/data" "$dir/sock" "$dir/upstream-ca"
  chmod 755 "$dir"; chmod 700 "$dir/data"
  chown postgres:postgres "$dir/data" "$dir/sock"
  runuser -u postgres -- "$(upstream_pg_bin initdb)" -A trust -U postgres --no-sync -D "$dir/data" >/dev/null
  # The server certificate comes from a CA of its own, as RDS has its regional CA.
  "$PORTCULLIS_BIN" ca init --dir "$dir/upstream-ca" --server-name localhost --server-name "$addr" >/dev/null
  cp "$dir/upstream-ca/server.crt" "$dir/upstream-ca/server.key" "$dir/data/"
  chown postgres:postgres "$dir/data/server.crt" "$dir/data/server.key"; chmod 600 "$dir/data/server.key"
  local checker; checker=$(bash "$repo/tests/support/build-rdstokencheck.sh" | tail -n 1)
  cp "$checker" "$dir/rdstokencheck"; chmod 755 "$dir/rdstokencheck"
  # pam_tokenexec, not pam_exec: a token signed with temporary credentials (IRSA,
  # assume-role) is longer than the 511 bytes pam_exec passes on.
  cp "$checker-pam_tokenexec.so" "$dir/pam_tokenexec.so"; chmod 644 "$dir/pam_tokenexec.so"
  echo "$keys" > "$dir/keys.json"; chmod 644 "$dir/keys.json"
  : > "$dir/pam.log"; chown postgres:postgres "$dir/pam.log"
  local service="portcullis-upstream-$port"
  printf 'auth required %s %s -keys %s %s -endpoint %s:%s -region us-east-1 -log %s\naccount required pam_permit.so\n' \
    "$dir/pam_tokenexec.so" "$dir/rdstokencheck" "$dir/keys.json" "$moto" "$addr" "$port" "$dir/pam.log" > "/etc/pam.d/$service"
  echo "$service" > "$dir/pam-service"
  local net=127.0.0.1/32
  [ "$addr" = 127.0.0.1 ] || net=${addr%.*}.0/24
  printf 'local all all trust\nhostssl all postgres %s reject\nhostssl all all %s pam pamservice=%s\nhost all all %s reject\n' "$net" "$net" "$service" "$net" > "$dir/data/pg_hba.conf"
  : > "$dir/postgres.log"; chown postgres:postgres "$dir/postgres.log"
  runuser -u postgres -- "$(upstream_pg_bin pg_ctl)" -w -t 30 -D "$dir/data" -l "$dir/postgres.log" \
    -o "-p $port -k $dir/sock -c listen_addresses=$addr -c ssl=on -c fsync=off -c max_connections=${PG_MAX_CONNECTIONS:-200}" start >/dev/null
  local u
  for u in "$@"; do upstream_pg_sql "$dir" "$port" postgres "CREATE ROLE \"$u\" LOGIN"; done
}

upstream_pg_sql() {
  psql -X -A -t -q -v ON_ERROR_STOP=1 -U postgres -h "$1/sock" -p "$2" -d "$3" -c "$4"
}

upstream_pg_stop() {
  local dir=$1
  [ -d "$dir/data" ] && runuser -u postgres -- "$(upstream_pg_bin pg_ctl)" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$dir/pam-service" ] && rm -f "/etc/pam.d/$(cat "$dir/pam-service")"
  return 0
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
