#!/usr/bin/env bash
# A three-namespace topology with exactly one routing hop between a client and a server,
# for reproducing IMDSv2's "hop limit 1" failure (the token PUT reply, sent with IP TTL 1,
# dies at the router while ordinary replies get through).
#
#   netns.sh up PREFIX                        # prints the server address on its last stdout line
#   netns.sh down PREFIX                      # removes everything; safe to call twice
#   netns.sh exec PREFIX client|server|router CMD...
#   netns.sh addr PREFIX                      # prints the server address of a topology that is up
#
#   PREFIX-cli  cli0 ====veth==== rtr0  PREFIX-rtr  rtr1 ====veth==== srv0  PREFIX-srv
#               127.100.1.2/24    127.100.1.1/24    127.100.2.1/24    127.100.2.2/24
#                                 (ip_forward=1)
#
# Addressing is loopback-only by default (127.100.x.y, never leaves the namespaces). The
# kernel treats 127/8 specially; each of these is needed and was checked one by one:
#   * net.ipv4.conf.{all,default,DEV}.route_localnet=1 in every namespace. Without it the
#     client's connect() fails with EINVAL (no output route with a 127/8 source on a
#     non-loopback device), the router answers no ARP for a 127/8 target and, given a
#     static ARP entry, drops the packet as "martian destination", and the server likewise.
#   * addresses added with "scope global": iproute2 gives 127/8 addresses scope host by
#     default, and a host-scope address is never chosen as the source of a routed packet.
#   * lo reduced from 127.0.0.1/8 to 127.0.0.1/32: the /8 puts "local 127.0.0.0/8" in the
#     local table; it only loses to the /24 routes while the kernel keeps the local and
#     main tables merged (no ip rules), and captures everything once any rule is added.
# NETNS_ADDRS=linklocal uses 169.254.1.0/24 and 169.254.169.0/24 instead (server at
# 169.254.169.254, as on EC2); also confined to these namespaces.
#
# Veth names (cli0, rtr0, rtr1, srv0) live only inside the namespaces: both ends are created
# directly there, so nothing appears in the root namespace and several PREFIXes can coexist.
# down first ends (TERM, then KILL) any process still running inside PREFIX's namespaces, so
# that deleting them really frees the veths. Needs root and iproute2.
set -euo pipefail

usage() {
    sed -n '6,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
prefix=$2
shift 2
# "PREFIX-srv" must stay a short, safe name.
if ! [[ $prefix =~ ^[a-z][a-z0-9]{0,11}$ ]]; then
    echo "netns.sh: PREFIX must match [a-z][a-z0-9]{0,11}, got '$prefix'" >&2
    exit 2
fi
cli=$prefix-cli
rtr=$prefix-rtr
srv=$prefix-srv

case ${NETNS_ADDRS:-loopback} in
    loopback)
        cli_ip=127.100.1.2 rtr_cli_ip=127.100.1.1 rtr_srv_ip=127.100.2.1 srv_ip=127.100.2.2
        cli_net=127.100.1.0/24 srv_net=127.100.2.0/24 plen=24
        ;;
    linklocal)
        cli_ip=169.254.1.2 rtr_cli_ip=169.254.1.1 rtr_srv_ip=169.254.169.1 srv_ip=169.254.169.254
        cli_net=169.254.1.0/24 srv_net=169.254.169.0/24 plen=24
        ;;
    *)
        echo "netns.sh: NETNS_ADDRS must be loopback or linklocal" >&2
        exit 2
        ;;
esac

ns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# sysctls that must hold for every current and future interface of a namespace
ns_sysctls() {
    local ns=$1
    in_ns "$ns" sysctl -q -w \
        net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.default.route_localnet=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.all.log_martians=0 net.ipv4.conf.default.log_martians=0 >/dev/null
    # no IPv6 chatter (router solicitations, DAD) on the veths; optional
    in_ns "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
        >/dev/null 2>&1 || true
}

dev_sysctls() {
    local ns=$1 dev=$2
    in_ns "$ns" sysctl -q -w "net.ipv4.conf.$dev.route_localnet=1" "net.ipv4.conf.$dev.rp_filter=0" >/dev/null
}

lo_up() {
    local ns=$1
    in_ns "$ns" ip link set lo up
    if [ "${NETNS_ADDRS:-loopback}" = loopback ]; then
        # the kernel gives lo 127.0.0.1/8 on up; keep 127.0.0.1 but drop the /8 local route
        in_ns "$ns" ip addr del 127.0.0.1/8 dev lo
        in_ns "$ns" ip addr add 127.0.0.1/32 dev lo
    fi
}

addr_up() {
    local ns=$1 dev=$2 ip=$3
    in_ns "$ns" ip addr add "$ip/$plen" dev "$dev" scope global
    in_ns "$ns" ip link set "$dev" up
}

do_down() {
    local ns pids i
    for ns in "$cli" "$rtr" "$srv"; do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for i in 1 2 3 4 5 6 7 8 9 10; do
                pids=$(ip netns pids "$ns" 2>/dev/null || true)
                [ -z "$pids" ] && break
                sleep 0.1
            done
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns" 2>/dev/null || true
    done
    for ns in "$cli" "$rtr" "$srv"; do
        if ns_exists "$ns"; then
            echo "netns.sh: could not delete namespace $ns" >&2
            return 1
        fi
    done
}

do_up() {
    local ns
    for ns in "$cli" "$rtr" "$srv"; do
        if ns_exists "$ns"; then
            echo "netns.sh: namespace $ns already exists (run: netns.sh down $prefix)" >&2
            exit 1
        fi
    done
    trap 'rc=$?; if [ $rc -ne 0 ]; then echo "netns.sh: up failed, removing $prefix" >&2; do_down || true; fi' EXIT

    for ns in "$cli" "$rtr" "$srv"; do
        ip netns add "$ns"
        ns_sysctls "$ns"
        lo_up "$ns"
    done
    in_ns "$rtr" sysctl -q -w net.ipv4.ip_forward=1 >/dev/null

    # both ends created directly inside the namespaces: nothing in the root namespace;
    # distinct ifindexes per pair (see the operstate wait below)
    ip link add cli0 index 10 netns "$cli" type veth peer name rtr0 index 20 netns "$rtr"
    ip link add srv0 index 40 netns "$srv" type veth peer name rtr1 index 30 netns "$rtr"
    dev_sysctls "$cli" cli0
    dev_sysctls "$rtr" rtr0
    dev_sysctls "$rtr" rtr1
    dev_sysctls "$srv" srv0

    addr_up "$cli" cli0 "$cli_ip"
    addr_up "$rtr" rtr0 "$rtr_cli_ip"
    addr_up "$rtr" rtr1 "$rtr_srv_ip"
    addr_up "$srv" srv0 "$srv_ip"
    in_ns "$cli" ip route add "$srv_net" via "$rtr_cli_ip" dev cli0
    in_ns "$srv" ip route add "$cli_net" via "$rtr_srv_ip" dev srv0

    # Packets flow at once, but linkwatch reports operstate "up" up to ~1 s late for a veth
    # whose ifindex equals its peer's (default: both 2, in their own namespaces), which it does
    # not count as urgent; the distinct indexes given above avoid that. Wait for it anyway,
    # so that nothing sees a half-settled topology (routes flagged linkdown).
    local i settled
    for i in $(seq 1 60); do
        settled=yes
        for pair in "$cli:cli0" "$rtr:rtr0" "$rtr:rtr1" "$srv:srv0"; do
            [ "$(in_ns "${pair%%:*}" cat "/sys/class/net/${pair#*:}/operstate")" = up ] || settled=no
        done
        [ $settled = yes ] && break
        sleep 0.05
    done
    if [ $settled != yes ]; then
        echo "netns.sh: veths not up after 3 s" >&2
        exit 1
    fi

    # the route the client will use must go through the router, from the client's address
    local route
    route=$(in_ns "$cli" ip -4 route get "$srv_ip")
    case $route in
        *"via $rtr_cli_ip dev cli0 src $cli_ip"*) ;;
        *)
            echo "netns.sh: unexpected client route to $srv_ip: $route" >&2
            exit 1
            ;;
    esac
    trap - EXIT

    echo "client $cli $cli_ip"
    echo "router $rtr $rtr_cli_ip $rtr_srv_ip"
    echo "$srv_ip"
}

case $cmd in
    up)
        [ $# -eq 0 ] || usage
        do_up
        ;;
    down)
        [ $# -eq 0 ] || usage
        do_down
        ;;
    addr)
        [ $# -eq 0 ] || usage
        in_ns "$srv" ip -4 -o addr show dev srv0 | awk '{split($4, a, "/"); print a[1]}'
        ;;
    exec)
        [ $# -ge 2 ] || usage
        role=$1
        shift
        case $role in
            client) ns=$cli ;;
            server) ns=$srv ;;
            router) ns=$rtr ;;
            *) usage ;;
        esac
        exec ip netns exec "$ns" "$@"
        ;;
    *)
        usage
        ;;
esac
