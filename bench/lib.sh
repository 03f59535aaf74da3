# Helpers shared by the benchmark scripts (bench/pg.sh, bench/mysql.sh, bench/dynamodb.sh):
# logging, free ports, waiting for listeners, stopping processes, and CPU accounting from /proc
# and from the script's cpuacct cgroup ($CG, empty when it made none). Sourced, not run.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() { # pid [seconds]: TERM, wait, then KILL
    local pid=$1 wait_s=${2:-15} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

free_port() {
    local p
    while :; do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        [[ " ${USED_PORTS:-} " == *" $p "* ]] || break
    done
    USED_PORTS="${USED_PORTS:-} $p"
    echo "$p"
}

wait_port() { # port what pid
    local i
    for ((i = 0; i < 300; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        [[ -z ${3:-} ]] || kill -0 "$3" 2>/dev/null || die "$2 exited before listening on $1"
        sleep 0.1
    done
    die "$2 did not listen on 127.0.0.1:$1 within 30 s"
}

proc_cpu() { # CPU seconds (user+system) of a process so far; 0 without a pid
    [[ -n ${1:-} ]] || { echo 0; return; }
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}
proc_switches() { # context switches (voluntary + involuntary) of a process's live threads so far
    [[ -n ${1:-} ]] || { echo 0; return; }
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(nonvoluntary|voluntary)_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
sys_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat; }
sys_steal() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print $9 / hz }' /proc/stat; } # taken by the hypervisor
our_cpu() { if [[ -n ${CG:-} ]]; then awk '{ print $1 / 1e9 }' "$CG/cpuacct.usage"; else echo 0; fi; }
diff_of() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }

# Waits until processes outside the benchmark (its cgroup) use less than QUIET_MAX cores, for at
# most QUIET_WAIT seconds (1 s samples). Without a cgroup it does not wait.
wait_quiet() {
    [[ -n ${CG:-} ]] || return 0
    local start=$SECONDS b0 o0 other said=0
    while :; do
        b0=$(sys_busy) o0=$(our_cpu)
        sleep 1
        other=$(awk -v b="$(diff_of "$b0" "$(sys_busy)")" -v o="$(diff_of "$o0" "$(our_cpu)")" 'BEGIN { x = b - o; printf "%.2f", x < 0 ? 0 : x }')
        awk -v x="$other" -v m="$QUIET_MAX" 'BEGIN { exit !(x < m) }' && return 0
        if ((SECONDS - start >= QUIET_WAIT)); then
            log "WARNING: other processes still use $other cores after ${QUIET_WAIT}s; measuring anyway (see the noise rows)"
            return 0
        fi
        ((said)) || log "other processes use $other cores; waiting up to ${QUIET_WAIT}s for the machine to go quiet"
        said=1
        sleep 2
    done
}
