#!/usr/bin/env bash
# Reproduces EC2's "IMDSv2 hop limit 1" failure for real, with one routing hop between a
# client and the IMDS test double (see netns.sh for the topology):
#
#   * server A: imds_server.py --put-ttl 1 (EC2's HttpPutResponseHopLimit=1)
#       from the client, one hop away: the token PUT times out, an IMDSv1 GET answers 200;
#       from the server's own namespace (no hop): the PUT answers 200.
#   * server B: imds_server.py --put-ttl 2: from the client, PUT and token GET answer 200.
#   * the router's own counters show the TTL-expired drops (IpInHdrErrors, IcmpOutTimeExcds).
#   * if botocore is importable: its IMDS client, v2 with TTL 1, falls back to IMDSv1 after its
#     1 s timeout; against a v2-required server with TTL 1 it gets no credentials at all.
#   * if tcpdump is already installed: a capture on the router's server-side veth.
#
#   bash imds_hop_limit_check.sh [PREFIX]      # PREFIX default: ih<pid>
#
# Needs root, iproute2, python3 and curl (installed with apt-get only if missing). Everything
# it starts is stopped and the namespaces are removed on exit. Exits 0 when every
# expectation held; its last line is "hop-limit: N passed, N failed".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
netns="$here/netns.sh"
server_py="$here/imds_server.py"
prefix=${1:-ih$$}
work=$(mktemp -d /tmp/imds-hop.XXXXXX)
pids=()
tcpdump_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "$tcpdump_pid" ] && kill -INT "$tcpdump_pid" 2>/dev/null && wait "$tcpdump_pid" 2>/dev/null
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
    bash "$netns" down "$prefix"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v curl >/dev/null 2>&1; then
    echo "# curl missing: installing it with apt-get"
    apt-get install -y -q curl >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q curl >/dev/null; }
fi

passed=0
failed=0
check() { # check DESCRIPTION CONDITION...
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok: $what"
    else
        failed=$((failed + 1))
        echo "FAIL: $what"
    fi
}

now_ms() { date +%s%3N; }

t0=$(now_ms)
srv=$(bash "$netns" up "$prefix" | tail -n 1)
t1=$(now_ms)
echo "# topology $prefix up in $((t1 - t0)) ms; server address $srv"

start_server() { # start_server NAME PORT ARGS...
    local name=$1 port=$2
    shift 2
    bash "$netns" exec "$prefix" server python3 "$server_py" --host "$srv" --port "$port" \
        --log "$work/$name.log" "$@" >"$work/$name.out" 2>&1 &
    pids+=($!)
    local i
    for i in $(seq 1 100); do
        grep -q "listening on" "$work/$name.out" 2>/dev/null && { cat "$work/$name.out"; return 0; }
        sleep 0.05
    done
    echo "server $name did not start:" >&2
    cat "$work/$name.out" >&2
    return 1
}

start_server ttl1 80 --put-ttl 1
start_server ttl2 8080 --put-ttl 2
start_server req1 81 --put-ttl 1 --mode v2-required

# curl_in WHERE OUTFILE CURL-ARGS...: runs curl in the client or server namespace, prints
# what it printed (body, then "[http=CODE time=Ts]" or curl's error) and "exit=N".
curl_in() {
    local where=$1 out=$2 rc=0
    shift 2
    bash "$netns" exec "$prefix" "$where" curl -sS -m 2 -w '\n[http=%{http_code} time=%{time_total}s]\n' "$@" \
        >"$out" 2>&1 || rc=$?
    echo "exit=$rc" >>"$out"
    sed 's/^/    /' "$out"
}
exit_of() { tail -n 1 "$1" | sed 's/^exit=//'; }
http_of() { sed -n 's/.*\[http=\([0-9]*\) .*/\1/p' "$1" | tail -n 1; }

if command -v tcpdump >/dev/null 2>&1; then
    bash "$netns" exec "$prefix" router tcpdump -l -nn -v -i rtr1 'tcp port 80 or icmp' \
        >"$work/tcpdump.txt" 2>"$work/tcpdump.err" &
    tcpdump_pid=$!
    sleep 1
else
    echo "# tcpdump not installed: no capture (the router's counters below show the drops)"
fi

router_counters() {
    bash "$netns" exec "$prefix" router nstat -az IpForwDatagrams IpInHdrErrors IcmpOutTimeExcds |
        awk 'NR > 1 {printf "%s=%s ", $1, $2} END {print ""}'
}
echo "# router counters before: $(router_counters)"

base1="http://$srv:80"
base2="http://$srv:8080"
base3="http://$srv:81"
ttl_hdr='X-aws-ec2-metadata-token-ttl-seconds: 21600'

echo
echo "## put-ttl 1, from the client (one routing hop)"
echo "\$ curl -m 2 -X PUT -H '$ttl_hdr' $base1/latest/api/token"
curl_in client "$work/a_put" -X PUT -H "$ttl_hdr" "$base1/latest/api/token"
echo "\$ curl -m 2 $base1/latest/meta-data/placement/region"
curl_in client "$work/a_get" "$base1/latest/meta-data/placement/region"
check "TTL 1: token PUT from one hop away times out (curl exit 28)" [ "$(exit_of "$work/a_put")" = 28 ]
check "TTL 1: IMDSv1 GET from one hop away answers 200" [ "$(http_of "$work/a_get")" = 200 ]
echo "# router counters after the TTL-1 PUT: $(router_counters)"

echo
echo "## put-ttl 1, from the server's own namespace (no hop)"
echo "\$ curl -m 2 -X PUT -H '$ttl_hdr' $base1/latest/api/token"
curl_in server "$work/a_put_local" -X PUT -H "$ttl_hdr" "$base1/latest/api/token"
check "TTL 1: token PUT without a hop answers 200" [ "$(http_of "$work/a_put_local")" = 200 ]

echo
echo "## put-ttl 2, from the client (one routing hop)"
echo "\$ curl -m 2 -X PUT -H '$ttl_hdr' $base2/latest/api/token"
curl_in client "$work/b_put" -X PUT -H "$ttl_hdr" "$base2/latest/api/token"
token=$(head -n 1 "$work/b_put")
echo "\$ curl -m 2 -H 'X-aws-ec2-metadata-token: <token>' $base2/latest/meta-data/placement/region"
curl_in client "$work/b_get" -H "X-aws-ec2-metadata-token: $token" "$base2/latest/meta-data/placement/region"
check "TTL 2: token PUT from one hop away answers 200" [ "$(http_of "$work/b_put")" = 200 ]
check "TTL 2: GET with that token answers 200" [ "$(http_of "$work/b_get")" = 200 ]

echo
echo "## v2-required, put-ttl 1, from the client"
echo "\$ curl -m 2 $base3/latest/meta-data/iam/security-credentials/"
curl_in client "$work/c_get" "$base3/latest/meta-data/iam/security-credentials/"
check "v2-required: GET without a token answers 401" [ "$(http_of "$work/c_get")" = 401 ]

if python3 -c 'import botocore' 2>/dev/null; then
    echo
    echo "## botocore's IMDS client from the client namespace (timeout=1, num_attempts=1)"
    for base in "$base1" "$base2" "$base3"; do
        rc=0
        bash "$netns" exec "$prefix" client python3 - "$base" >"$work/boto.out" 2>&1 <<'EOF' || rc=$?
import sys, time
import botocore.utils
t = time.monotonic()
creds = botocore.utils.InstanceMetadataFetcher(
    timeout=1, num_attempts=1, base_url=sys.argv[1]).retrieve_iam_role_credentials()
print(f"{sys.argv[1]}: credentials={'yes' if creds.get('access_key') else 'no'} "
      f"role={creds.get('role_name')} in {time.monotonic() - t:.2f}s")
sys.exit(0 if creds else 1)
EOF
        sed 's/^/    /' "$work/boto.out"
        case $base in
            "$base1") check "botocore, v2 + TTL 1: credentials via IMDSv1 fallback" [ $rc = 0 ] ;;
            "$base2") check "botocore, v2 + TTL 2: credentials" [ $rc = 0 ] ;;
            "$base3") check "botocore, v2-required + TTL 1: no credentials" [ $rc = 1 ] ;;
        esac
    done
fi

echo
echo "# router counters after: $(router_counters)"
for name in ttl1 ttl2 req1; do
    echo "# server log $name:"
    sed 's/^/    /' "$work/$name.log"
done

if [ -n "$tcpdump_pid" ]; then
    sleep 0.5
    kill -INT "$tcpdump_pid" 2>/dev/null || true
    wait "$tcpdump_pid" 2>/dev/null || true
    tcpdump_pid=
    echo "# tcpdump -v on the router's server-side veth rtr1 (port 80 and ICMP):"
    sed 's/^/    /' "$work/tcpdump.txt"
    tail -n 3 "$work/tcpdump.err" | sed 's/^/    /'
fi

echo
echo "hop-limit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
