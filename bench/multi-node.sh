#!/usr/bin/env bash
# bench/multi-node.sh - many concurrent c2s sessions over several magpied nodes.
#
# One magpied process holds at most ~19,900 connections where RLIMIT_NOFILE is
# capped at 20,000, so 100k+ concurrent sessions on one machine need several
# independent server processes.  This script starts NODES magpied nodes
# (workers = 1, own temp state dir, SQLite, own port on 127.0.0.1), creates
# SESSIONS accounts per node in bulk, runs one bench/magpie-loadgen per node,
# and makes all load generators wait for each other after their login phase
# (--go-file barrier) so that every session is connected at the same time.
# Then, after HOLD idle seconds, it reads `magpiectl status` (sessions,
# connections), VmRSS and CPU time of every node, lets the load generators
# exchange messages between pairs for DURATION seconds, and prints a summary.
# Everything it started is stopped on exit (trap); the run is bounded by
# MAX_SECS.  Only ports it found free are used; no other process is touched.
#
# Parameters (environment):
#   NODES=6            magpied processes (and load generators)
#   SESSIONS=17000     sessions (and accounts) per node; total = NODES * SESSIONS
#   CONCURRENCY=50     logins in flight per load generator
#   HOLD=30            seconds every session stays idle after the last login
#   RATE=300           messages/s per node (pairs within the node)
#   DURATION=30        messaging seconds (RATE*DURATION >= PAIRS: every pair gets one)
#   PAIRS=SESSIONS/2   pairs per node
#   DRAIN=5            seconds to wait for late deliveries
#   MECH=scram-sha-1   scram-sha-1 | scram-sha-256 | plain
#   ITERATIONS=4096    PBKDF2 iterations of the accounts
#   SRC_ADDRS=auto     loadgen --src-addrs: 127.0.0.2.. as source addresses (auto: one per
#                      12,000 sessions of a node; see README "ephemeral ports")
#   BASE_PORT=25222    first port tried (below the ephemeral range); busy ones are skipped
#   LOG_LEVEL=warn     magpied log level
#   ACCOUNT_JOBS=nproc accounts.py processes in parallel
#   MAX_SECS=870       bound on the whole run (everything is stopped after it)
#   DOMAIN=localhost PASSWORD=bench-pass
#   LOADGEN_ARGS=""    extra loadgen options
#   KEEP=0             1: keep the temp dir (configs, node logs, loadgen outputs)

# shellcheck disable=SC2059,SC2004 # USERFMT is a printf format on purpose; a[$i] is clearer
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3

NODES=${NODES:-6}
SESSIONS=${SESSIONS:-17000}
CONCURRENCY=${CONCURRENCY:-50}
HOLD=${HOLD:-30}
RATE=${RATE:-300}
DURATION=${DURATION:-30}
PAIRS=${PAIRS:-$((SESSIONS / 2))}
DRAIN=${DRAIN:-5}
MECH=${MECH:-scram-sha-1}
ITERATIONS=${ITERATIONS:-4096}
SRC_ADDRS=${SRC_ADDRS:-auto}
BASE_PORT=${BASE_PORT:-25222}
LOG_LEVEL=${LOG_LEVEL:-warn}
ACCOUNT_JOBS=${ACCOUNT_JOBS:-$(nproc)}
MAX_SECS=${MAX_SECS:-870}
DOMAIN=${DOMAIN:-localhost}
PASSWORD=${PASSWORD:-bench-pass}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
KEEP=${KEEP:-0}
USERFMT="bench%d"

LOADGEN="$TOP/bench/magpie-loadgen"
T_START=$(date +%s.%N)
DEADLINE=$(($(date +%s) + MAX_SECS))
TMP=$(mktemp -d /tmp/magpie-mn.XXXXXX)
GO="$TMP/go"
PIDS=()                    # every process started here, stopped in this order
declare -a PORT CONF NPID LPID RSS0

LOG_TAG=multi-node
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

# children PID: the direct children of a process we started (loadgen workers)
children() { cat "/proc/$1/task/$1/children" 2>/dev/null || true; }

cleanup() {
    local rc=$? p c kids=()
    trap - EXIT INT TERM
    for p in "${LPID[@]:-}"; do
        [ -n "$p" ] && for c in $(children "$p"); do kids+=("$c"); done
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && stop_pid "$p"
    done
    for c in "${kids[@]:-}"; do      # loadgen workers exit with their parent; just in case
        [ -n "$c" ] && kill -0 "$c" 2>/dev/null && { kill -KILL "$c" 2>/dev/null || true; }
    done
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)"   # the nodes and load generators inherit it

left() { echo $((DEADLINE - $(date +%s))); }
check_deadline() {
    if [ "$(left)" -le 0 ]; then
        log "MAX_SECS=$MAX_SECS reached: stopping everything"
        exit 124
    fi
}
port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# /proc figures of a node: VmRSS kB, CPU s (utime+stime of all threads)
rss_kb() {
    local r
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
    echo "${r:--1}"
}
cpu_s() {
    local hz
    hz=$(getconf CLK_TCK)
    # fields after the ")" of comm: utime is the 12th, stime the 13th
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk -v hz="$hz" '{ printf "%.2f", ($12 + $13) / hz }' ||
        echo -1
}
# status of node i as "connections sessions" (-1 -1 when it does not answer)
node_status() {
    "$TOP/magpiectl" -c "${CONF[$1]}" status 2>/dev/null |
        awk '$1 == "connections" { c = $2 } $1 == "sessions" { s = $2 }
             END { print (c == "" ? -1 : c), (s == "" ? -1 : s) }' || true
}
# snapshot LABEL: status, RSS and CPU of every node into $TMP/snap.LABEL
# (lines "i connections sessions rss_kb cpu_s") and the timeline
snapshot() {
    local label=$1 i
    : >"$TMP/snap.$label"
    for ((i = 1; i <= NODES; i++)); do
        echo "$i $(node_status "$i") $(rss_kb "${NPID[$i]}") $(cpu_s "${NPID[$i]}")" >>"$TMP/snap.$label"
    done
    awk -v t="$(secs "$T_START" "$(now)")" -v l="$label" \
        '{ c += $2; s += $3; r += $4 } END { printf "%s %s connections=%d sessions=%d rss_kb=%d\n", t, l, c, s, r }' \
        "$TMP/snap.$label" >>"$TMP/timeline"
}
sum_col() { awk -v k="$2" '{ s += $k } END { print s + 0 }' "$TMP/snap.$1"; }
nodes_alive() {
    local i ok=0
    for ((i = 1; i <= NODES; i++)); do
        if ! kill -0 "${NPID[$i]}" 2>/dev/null; then
            log "node $i (pid ${NPID[$i]}) is gone; its log:"
            tail -n 20 "$TMP/n$i/magpied.log" >&2 || true
            ok=1
        fi
    done
    return $ok
}

# ---------------------------------------------------------------- checks
if ! [ -x "$TOP/magpied" ] || ! [ -x "$TOP/magpiectl" ] || ! [ -f "$TOP/modules/.libs/mod_ping.so" ]; then
    log "build first: cd $TOP && make magpied magpiectl modules/mod_disco.la modules/mod_ping.la" \
        "modules/mod_version.la modules/mod_time.la"
    exit 1
fi
[ -x "$LOADGEN" ] || (cd "$TOP" && make bench/magpie-loadgen >/dev/null) || { log "cannot build $LOADGEN"; exit 1; }
"$LOADGEN" --help 2>&1 | grep -- --go-file >/dev/null || { log "$LOADGEN has no --go-file: make bench/magpie-loadgen"; exit 1; }
NOFILE=$(ulimit -n)
if [ $((SESSIONS + 100)) -gt "$NOFILE" ]; then
    log "SESSIONS=$SESSIONS per node does not fit RLIMIT_NOFILE $NOFILE: use more NODES"
    exit 1
fi
if awk -v r="$RATE" -v d="$DURATION" -v p="$PAIRS" 'BEGIN { exit !(r * d < p) }'; then
    log "note: RATE*DURATION < PAIRS: not every pair gets a message"
fi

# connect() tries the even half of the ephemeral range first for each (source,
# destination) pair: above ~14,000 connections per pair every connect scans it all
[ "$SRC_ADDRS" = auto ] && SRC_ADDRS=$(((SESSIONS + 11999) / 12000))
TOTAL=$((NODES * SESSIONS))
echo "# bench/multi-node.sh $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n): $(nproc) cores," \
     "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), RLIMIT_NOFILE $NOFILE"
echo "# NODES=$NODES SESSIONS=$SESSIONS (total $TOTAL) CONCURRENCY=$CONCURRENCY HOLD=$HOLD" \
     "RATE=$RATE DURATION=$DURATION PAIRS=$PAIRS MECH=$MECH ITERATIONS=$ITERATIONS SRC_ADDRS=$SRC_ADDRS"
echo "# magpie $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$TOP" diff --quiet 2>/dev/null || echo '+dirty')," \
     "magpied built $(date -r "$TOP/magpied" '+%F %T'), workers = 1, SQLite; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- nodes: config + accounts
p=$BASE_PORT
for ((i = 1; i <= NODES; i++)); do
    while ! port_free "$p"; do p=$((p + 1)); done
    PORT[$i]=$p
    p=$((p + 1))
    d=$TMP/n$i
    mkdir -p "$d/state"
    CONF[$i]=$d/magpie.conf
    cat >"${CONF[$i]}" <<EOF
state_dir = "$d/state";
module_dir = "$TOP/modules/.libs";
workers = 1;
log = { level = "$LOG_LEVEL"; file = "-"; };
hosts = ( { domain = "$DOMAIN"; } );
listeners = ( { type = "c2s"; address = "127.0.0.1"; port = ${PORT[$i]}; } );
storage = { driver = "sqlite"; };
limits = { max_connections = $((SESSIONS + 500)); negotiation_timeout = 300;
           max_connections_per_address = $((SESSIONS + 500)); connection_burst_per_address = $((SESSIONS + 500)); connection_rate_per_address = 100000; };
security = { require_tls = true; scram_iterations = $ITERATIONS; };
modules = ( "disco", "ping", "version", "time" );
EOF
done
log "ports: ${PORT[*]}"

t_acc0=$(now)
for ((i = 1; i <= NODES; i++)); do
    # magpiectl creates the database and its schema, accounts.py the rest (bulk)
    "$TOP/magpiectl" -c "${CONF[$i]}" user add "$(printf "$USERFMT" 1)@$DOMAIN" \
        --password "$PASSWORD" >/dev/null
done
acc_pids=()
for ((i = 1; i <= NODES; i++)); do
    while [ "$(jobs -rp | wc -l)" -ge "$ACCOUNT_JOBS" ]; do sleep 0.5; check_deadline; done
    if [ "$SESSIONS" -gt 1 ]; then
        $PY "$HERE/accounts.py" magpie "$TMP/n$i/state/magpie.db" "$DOMAIN" "$USERFMT" 2 \
            $((SESSIONS - 1)) "$PASSWORD" "$ITERATIONS" &
        acc_pids+=("$!")
        PIDS+=("$!")
    fi
done
for p in "${acc_pids[@]:-}"; do
    [ -z "$p" ] && continue
    while kill -0 "$p" 2>/dev/null; do sleep 0.5; check_deadline; done
    wait "$p" || { log "accounts.py failed"; exit 1; }
done
PIDS=()   # all reaped: never signal a PID that may have been reused
t_acc1=$(now)
ACC_SECS=$(secs "$t_acc0" "$t_acc1")
log "$TOTAL accounts in $ACC_SECS s"

# ---------------------------------------------------------------- start nodes
for ((i = 1; i <= NODES; i++)); do
    "$TOP/magpied" -c "${CONF[$i]}" >"$TMP/n$i/magpied.log" 2>&1 &
    NPID[$i]=$!
    PIDS+=("$!")
done
for ((i = 1; i <= NODES; i++)); do
    ok=0
    for _ in $(seq 1 150); do
        kill -0 "${NPID[$i]}" 2>/dev/null || break
        if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$i]}") 2>/dev/null; then ok=1; break; fi
        sleep 0.2
    done
    if [ $ok = 0 ] || [ "$(node_status "$i")" = "-1 -1" ]; then
        log "node $i did not start (or its control socket does not answer); its log:"
        tail -n 20 "$TMP/n$i/magpied.log" >&2 || true
        exit 1
    fi
done
sleep 1   # let start-up allocations settle before the RSS baseline
snapshot start
for ((i = 1; i <= NODES; i++)); do
    RSS0[$i]=$(awk -v i="$i" '$1 == i { print $4 }' "$TMP/snap.start")
done
log "$NODES nodes up: pids ${NPID[*]}, RSS $(sum_col start 4) kB in all"

# ---------------------------------------------------------------- load generators
# budget: what is left minus hold, messaging, drain, and a margin for the quit
LPM=$(($(left) - HOLD - DURATION - DRAIN - 90))
[ "$LPM" -ge 30 ] || { log "MAX_SECS=$MAX_SECS leaves no time for the login phase"; exit 1; }
t_lg0=$(now)
for ((i = 1; i <= NODES; i++)); do
    # shellcheck disable=SC2086
    "$LOADGEN" --host 127.0.0.1 --port "${PORT[$i]}" --domain "$DOMAIN" --users "$USERFMT" \
        --password "$PASSWORD" --first-index 1 --sessions "$SESSIONS" --pairs "$PAIRS" \
        --concurrency "$CONCURRENCY" --hold 0 --go-file "$GO" --rate "$RATE" \
        --duration "$DURATION" --drain "$DRAIN" --procs 1 --src-addrs "$SRC_ADDRS" \
        --mech "$MECH" --server-pid "${NPID[$i]}" --login-phase-max "$LPM" \
        --login-timeout 120 $LOADGEN_ARGS >"$TMP/lg$i.out" 2>&1 &
    LPID[$i]=$!
    PIDS=("$!" "${PIDS[@]}")   # stopped before the nodes
done
log "$NODES load generators started (${SESSIONS} sessions each, login phase at most $LPM s)"

# wait until every load generator has finished its login phase (or exited)
declare -A DONE_AT
last_print=0
while :; do
    n_done=0
    for ((i = 1; i <= NODES; i++)); do
        if [ -z "${DONE_AT[$i]:-}" ] && { grep -q '^logins:' "$TMP/lg$i.out" || ! kill -0 "${LPID[$i]}" 2>/dev/null; }; then
            DONE_AT[$i]=$(now)
            log "loadgen $i: $(grep '^logins:' "$TMP/lg$i.out" || echo 'exited before the end of its login phase')"
        fi
        [ -n "${DONE_AT[$i]:-}" ] && n_done=$((n_done + 1))
    done
    [ "$n_done" -eq "$NODES" ] && break
    nodes_alive || true
    check_deadline
    if [ $(($(date +%s) - last_print)) -ge 15 ]; then
        snapshot login
        log "logging in: $(tail -n 1 "$TMP/timeline" | cut -d' ' -f3-)"
        last_print=$(date +%s)
    fi
    sleep 1
done
t_login1=$(now)
snapshot logged_in
LOGIN_WALL=$(secs "$t_lg0" "$t_login1")
log "all login phases over after $LOGIN_WALL s: $(tail -n 1 "$TMP/timeline" | cut -d' ' -f3-)"

# ---------------------------------------------------------------- hold (all sessions at once)
t_hold_end=$(($(date +%s) + HOLD))
while [ "$(date +%s)" -lt "$t_hold_end" ]; do
    nodes_alive || true
    check_deadline
    sleep 1
done
snapshot hold_end
LG_RSS=0
for ((i = 1; i <= NODES; i++)); do
    for c in ${LPID[$i]} $(children "${LPID[$i]}"); do
        r=$(rss_kb "$c")
        [ "$r" -gt 0 ] && LG_RSS=$((LG_RSS + r))
    done
done
log "end of the ${HOLD} s hold: $(tail -n 1 "$TMP/timeline" | cut -d' ' -f3-)"

# ---------------------------------------------------------------- messaging, quit
touch "$GO"
sleep "$(awk -v d="$DURATION" 'BEGIN { printf "%.1f", d * 0.9 }')"
snapshot messaging
log "90 % into messaging: $(tail -n 1 "$TMP/timeline" | cut -d' ' -f3-)"
for ((i = 1; i <= NODES; i++)); do
    while kill -0 "${LPID[$i]}" 2>/dev/null; do check_deadline; sleep 0.5; done
    wait "${LPID[$i]}" || log "loadgen $i exited with status $?"
done
PIDS=("${NPID[@]}")   # load generators reaped; only the nodes are left
LPID=()
# after the load generators quit: every connection should be gone
for _ in $(seq 1 20); do
    snapshot after_quit
    [ "$(sum_col after_quit 2)" -le 0 ] && break
    sleep 1
done
log "after the load generators quit: $(tail -n 1 "$TMP/timeline" | cut -d' ' -f3-)"
nodes_alive || true
WALL=$(secs "$T_START" "$(now)")

# ---------------------------------------------------------------- report
echo
echo "## per node"
printf '%-4s %6s %6s %8s %10s %10s %8s %9s %8s %9s %9s %10s %10s\n' node port logins fail \
    "sess_hold" "conn_hold" "rss0_MB" "rss_hold_MB" "kB/sess" "cpu_ms/lg" "sent" "recv" "lat_p99"
for ((i = 1; i <= NODES; i++)); do
    line=$(grep '^RESULT ' "$TMP/lg$i.out" | tail -n 1 || true)
    echo "RESULT node=$i port=${PORT[$i]} ${line#RESULT }" >>"$TMP/results"
    read -r _ conn sess rss _ < <(awk -v i="$i" '$1 == i' "$TMP/snap.hold_end")
    echo "$line" | awk -v i="$i" -v port="${PORT[$i]}" -v conn="$conn" -v sess="$sess" \
        -v rss="$rss" -v rss0="${RSS0[$i]}" '
        { for (k = 2; k <= NF; k++) { split($k, kv, "="); a[kv[1]] = kv[2] } }
        END {
            printf "%-4s %6s %6s %8s %10s %10s %8.1f %11.1f %8.2f %9s %9s %10s %10s\n", i, port,
                a["logins_ok"], a["login_failures"], sess, conn, rss0 / 1024, rss / 1024,
                (sess > 0 ? (rss - rss0) / sess : 0), a["server_cpu_per_login_ms"],
                a["msgs_sent"], a["msgs_received"], a["lat_p99_ms"]
        }'
done
echo
echo "## timeline (s since start, phase, sums over the nodes)"
cat "$TMP/timeline"
echo
echo "## node logs (level $LOG_LEVEL)"
for ((i = 1; i <= NODES; i++)); do
    n=$(wc -l <"$TMP/n$i/magpied.log")
    echo "node $i: $n lines"
    if [ "$n" -gt 0 ]; then
        cut -c1-300 "$TMP/n$i/magpied.log" | sed 's/^[0-9T:. -]*//' | sort | uniq -c | sort -rn | head -n 8
    fi
done
echo
alive=0
for ((i = 1; i <= NODES; i++)); do kill -0 "${NPID[$i]}" 2>/dev/null && alive=$((alive + 1)); done
awk -v nodes="$NODES" -v per="$SESSIONS" -v acc="$ACC_SECS" -v lw="$LOGIN_WALL" -v wall="$WALL" \
    -v alive="$alive" -v hold="$HOLD" -v lgrss="$LG_RSS" \
    -v hs="$(sum_col hold_end 3)" -v hc="$(sum_col hold_end 2)" \
    -v ms="$(sum_col messaging 3)" -v mc="$(sum_col messaging 2)" \
    -v qs="$(sum_col after_quit 3)" -v qc="$(sum_col after_quit 2)" \
    -v r0="$(sum_col start 4)" -v rh="$(sum_col hold_end 4)" -v rm="$(sum_col messaging 4)" \
    -v rq="$(sum_col after_quit 4)" \
    -v c0="$(sum_col start 5)" -v cl="$(sum_col logged_in 5)" -v ch="$(sum_col hold_end 5)" \
    -v cm="$(sum_col after_quit 5)" '
    { for (k = 2; k <= NF; k++) { split($k, kv, "="); a[kv[1]] = kv[2] }
      ok += a["logins_ok"]; fail += a["login_failures"]; sent += a["msgs_sent"]
      recv += a["msgs_received"]; lost += a["msgs_lost"]; drop += a["sessions_dropped"]
      cpul += a["server_cpu_login_s"]; lgcpu += a["loadgen_cpu_s"]; cpum += a["server_cpu_msg_s"]
      if (a["login_secs"] + 0 > lsec) lsec = a["login_secs"]
      if (a["lat_p99_ms"] != "na" && a["lat_p99_ms"] + 0 > p99) p99 = a["lat_p99_ms"]
      if (a["lat_max_ms"] != "na" && a["lat_max_ms"] + 0 > lmax) lmax = a["lat_max_ms"]
      n++ }
    END {
        printf "## summary\n"
        printf "nodes (magpied, workers = 1) / load generators     %d / %d (%d nodes alive at the end)\n", nodes, n, alive
        printf "sessions attempted                                  %d (%d per node)\n", nodes * per, per
        printf "logins ok / failed                                  %d / %d\n", ok, fail
        printf "login phase wall s (loadgens started -> all done)   %.1f (%.0f logins/s overall; longest loadgen %.1f s)\n", lw, (lw > 0 ? ok / lw : 0), lsec
        printf "sessions / connections at the end of the %d s hold  %d / %d\n", hold, hs, hc
        printf "sessions / connections 90 %% into messaging          %d / %d\n", ms, mc
        printf "sessions / connections after the loadgens quit      %d / %d\n", qs, qc
        printf "node RSS at start / hold / messaging / after quit MB %.1f / %.1f / %.1f / %.1f\n", r0/1024, rh/1024, rm/1024, rq/1024
        printf "node RSS per bound session kB (hold - start)       %.2f (gross %.2f)\n", hs ? (rh - r0) / hs : 0, hs ? rh / hs : 0
        printf "server CPU s for logins (loadgen samples) / per login ms  %.2f / %.3f\n", cpul, ok ? cpul * 1000 / ok : 0
        printf "server CPU s start->all logged in / per login ms   %.2f / %.3f\n", cl - c0, ok ? (cl - c0) * 1000 / ok : 0
        printf "server CPU s during the hold                        %.2f\n", ch - cl
        printf "server CPU s for messaging (loadgen samples)        %.2f (%.1f us per message received)\n", cpum, recv ? cpum * 1e6 / recv : 0
        printf "server CPU s hold end -> after quit (incl. closing) %.2f\n", cm - ch
        printf "messages sent / received / lost                     %d / %d / %d\n", sent, recv, lost
        printf "sessions dropped (seen by the loadgens)             %d\n", drop
        printf "delivery latency worst node p99 / max ms            %.3f / %.3f\n", p99, lmax
        printf "load generator CPU s / RSS at the end of the hold MB %.1f / %.1f\n", lgcpu, lgrss / 1024
        printf "account creation s (bulk)                           %.1f\n", acc
        printf "wall time s (whole script)                          %.1f\n", wall
        printf "\nRESULT-MULTI nodes=%d sessions=%d logins_ok=%d login_failures=%d hold_sessions=%d hold_connections=%d", nodes, nodes * per, ok, fail, hs, hc
        printf " msg_sessions=%d rss_start_kb=%d rss_hold_kb=%d rss_per_session_kb=%.2f server_cpu_login_s=%.2f", ms, r0, rh, hs ? (rh - r0) / hs : 0, cpul
        printf " server_cpu_per_login_ms=%.3f msgs_sent=%d msgs_received=%d msgs_lost=%d sessions_dropped=%d", ok ? cpul * 1000 / ok : 0, sent, recv, lost, drop
        printf " login_wall_s=%.1f wall_s=%.1f nodes_alive=%d\n", lw, wall, alive
    }' "$TMP/results"
[ "$alive" -eq "$NODES" ]
