#!/bin/bash
# bench/gateway.sh - the device gateway (mod_gateway) under load, side by side
# with Mosquitto, in one run (bench/README.md, "gateway.sh"):
#
#  1. memory per idle connected device: magpied with mod_gateway, DEVICES
#     devices provisioned (bench/devices.py, the record magpiectl writes) and
#     connected by sdk/sim/mgw-sim (authenticated, heartbeating, idle);
#     magpied's VmRSS before and after: KiB per device.
#  2. the same for Mosquitto (Debian) holding DEVICES idle MQTT clients
#     (bench/mqtt-idle): KiB per client, and the ratio.
#  3. trigger-to-ACK latency at each rate in RATES, for each trigger in
#     TRIGGERS: "http" (bench/gw-http POSTs to the HTTP API, with an
#     idempotency key) and "xmpp" (bench/magpie-loadgen --gw-domain: messages
#     to device JIDs); every command durable before it is accepted. Measured:
#     trigger -> acceptance (201 / <accepted/>), trigger -> the device's ACK
#     (by the device: mgw-sim --latency), and for xmpp trigger -> XEP-0184
#     receipt (sent once the command's end is durable too); p50/p99.
#     With the http trigger, the same gw-http at the same rate against nginx
#     (Debian) answering 201 at once ("http-floor"): the machine's own floor
#     for one HTTP round trip in the same run, with nothing stored (FLOOR=0:
#     skip it).
#
#   bench/gateway.sh                                  # 2000 devices, 1000 and 5000 commands/s
#   DEVICES=19000 HOLD=30 bench/gateway.sh            # the most one process may hold here
#   NODES=6 DEVICES=17000 RATES= bench/gateway.sh     # 102,000 devices over 6 magpied nodes
#                                                     # and 6 Mosquitto brokers x 17,000 clients
#   SERVERS=magpie RATES= bench/gateway.sh            # memory only, no Mosquitto
#
# Environment: DEVICES (2000, per node), NODES (1), HOLD (10 s idle before the
# RSS sample), HEARTBEAT (30 s: the devices' PING interval), SERVERS ("magpie
# mosquitto"), RATES ("1000 5000" commands/s; empty: no latency phase; node 1
# only), LAT_DURATION (10 s per rate), LAT_DEVICES (200: devices addressed, on a
# simulator of their own), TRIGGERS ("http xmpp"), SENDERS (50 XMPP sessions
# sending; each stays under the default limits.rate of 64 KiB/s at 5000/s),
# HTTP_CONNS (64 keep-alive connections of the HTTP trigger), MAGPIE_WORKERS
# (1), STORAGE_THREADS (2: storage.threads), SIM_CONCURRENCY (200: device handshakes in flight per simulator), BUILD (the build directory: magpied, magpiectl, modules/.libs,
# sdk/sim/mgw-sim, bench/*; default: the first of ., build-rel, build that has
# a magpied; use a build without --enable-sanitizers: ASan multiplies memory),
# KEEP=1 (keep the /tmp/magpie-gw.* directory), MAX_SECS (1500), PIN (0; 1: the
# servers (magpied, mosquitto) on CPU 0, the simulators, triggers and MQTT
# clients on CPU 1, with taskset, so they do not take the CPU from each other),
# FLOOR (1: the http-floor row when nginx is installed).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3

DEVICES=${DEVICES:-2000}
NODES=${NODES:-1}
HOLD=${HOLD:-10}
HEARTBEAT=${HEARTBEAT:-30}
SERVERS=${SERVERS:-magpie mosquitto}
RATES=${RATES-1000 5000}
LAT_DURATION=${LAT_DURATION:-10}
LAT_DEVICES=${LAT_DEVICES:-200}
SENDERS=${SENDERS:-50}
TRIGGERS=${TRIGGERS-http xmpp}
HTTP_CONNS=${HTTP_CONNS:-64}
TOKEN=bench-token-0123456789
MAGPIE_WORKERS=${MAGPIE_WORKERS:-1}
SIM_CONCURRENCY=${SIM_CONCURRENCY:-200}
STORAGE_THREADS=${STORAGE_THREADS:-2}
KEEP=${KEEP:-0}
PIN=${PIN:-0}
SRV_PIN=() LG_PIN=()
[ "$PIN" = 1 ] && SRV_PIN=(taskset -c 0) && LG_PIN=(taskset -c 1)
MAX_SECS=${MAX_SECS:-1500}
FLOOR=${FLOOR:-1}
GWDOMAIN=devices.localhost
PASSWORD=bench-pass
if [ -z "${BUILD:-}" ]; then
    for b in "$TOP" "$TOP/build-rel" "$TOP/build"; do
        if [ -x "$b/magpied" ]; then BUILD=$b; break; fi
    done
fi
BUILD=$(cd "${BUILD:?no build directory with a magpied: set BUILD}" && pwd)

LOG_TAG=gateway
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

TMP=$(mktemp -d /tmp/magpie-gw.XXXXXX)
DEADLINE=$(($(date +%s) + MAX_SECS))
PIDS=() # every process started here, stopped in reverse order
declare -a NPID SPID GPORT CPORT HPORT CONF RSS0 RSS1 READY

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}"
    done
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"

check_deadline() {
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        log "MAX_SECS=$MAX_SECS reached: stopping"
        exit 124
    fi
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo -1; }
cpu_s() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null |
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }'
}
free_port() {
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # pid port
    local i
    for i in $(seq 1 150); do
        kill -0 "$1" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
# sched_ms PID: "<cpu ms> <run-queue wait ms>" summed over its threads
sched_ms() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null |
        awk '{ c += $1; w += $2 } END { printf "%d %d\n", c / 1e6, w / 1e6 }'
}
# count_lines FILE REGEX
count_lines() { local n; n=$(grep -c "$2" "$1" 2>/dev/null || true); echo "${n:-0}"; }

for f in magpied magpiectl sdk/sim/mgw-sim bench/magpie-loadgen bench/mqtt-idle bench/gw-http \
    modules/.libs/mod_gateway.so; do
    [ -e "$BUILD/$f" ] || {
        log "missing $BUILD/$f: make magpied magpiectl modules/mod_gateway.la modules/mod_ping.la" \
            "sdk/sim/mgw-sim bench/magpie-loadgen bench/mqtt-idle bench/gw-http"
        exit 1
    }
done
if grep -q -- '-fsanitize' "$BUILD/Makefile" 2>/dev/null && grep -q '^SAN_CFLAGS = -f' "$BUILD/Makefile"; then
    log "warning: $BUILD is a sanitizer build; its memory figures mean little"
fi
NOFILE=$(ulimit -n)
if [ $((DEVICES + 100)) -gt "$NOFILE" ]; then
    log "DEVICES=$DEVICES per node does not fit RLIMIT_NOFILE $NOFILE: use NODES"
    exit 1
fi

echo "# bench/gateway.sh $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n): $(nproc) cores," \
    "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), RLIMIT_NOFILE $NOFILE"
echo "# NODES=$NODES DEVICES=$DEVICES HOLD=$HOLD HEARTBEAT=$HEARTBEAT SERVERS=\"$SERVERS\"" \
    "RATES=\"$RATES\" TRIGGERS=\"$TRIGGERS\" LAT_DURATION=$LAT_DURATION LAT_DEVICES=$LAT_DEVICES" \
    "SENDERS=$SENDERS HTTP_CONNS=$HTTP_CONNS" \
    "MAGPIE_WORKERS=$MAGPIE_WORKERS STORAGE_THREADS=$STORAGE_THREADS PIN=$PIN"
echo "# magpie $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$TOP" diff --quiet HEAD 2>/dev/null || echo '+dirty')," \
    "build $BUILD; $( (mosquitto -h 2>/dev/null || true) | head -n 1);" \
    "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

case " $SERVERS " in *" magpie "*) DO_MAGPIE=1 ;; *) DO_MAGPIE=0 ;; esac
case " $SERVERS " in *" mosquitto "*) DO_MOSQ=1 ;; *) DO_MOSQ=0 ;; esac

# ---------------------------------------------------------------- magpied nodes
# the load generator logs in 2 x SENDERS sessions (pairs); every one is an admin
ADMINS=""
for ((s = 1; s <= 2 * SENDERS; s++)); do ADMINS="$ADMINS gwbench$s@localhost"; done
# every connection counts against limits.max_connections, the devices'
# (module listener) included: room for all of them, the latency devices
# and the load generator's sessions; all come from 127.0.0.1, so the
# per-address limits (count, and new connections per second: 64/s by
# default, which made 2,000 devices take 33 s to connect) are lifted too
MAXCONN=$((DEVICES + LAT_DEVICES + 2 * SENDERS + HTTP_CONNS + 100))
if [ $DO_MAGPIE = 1 ]; then
    for ((i = 1; i <= NODES; i++)); do
        d=$TMP/n$i
        mkdir -p "$d/state"
        GPORT[$i]=$(free_port)
        CPORT[$i]=$(free_port)
        HPORT[$i]=$(free_port)
        CONF[$i]=$d/magpie.conf
        cat >"${CONF[$i]}" <<EOF
state_dir = "$d/state";
module_dir = "$BUILD/modules/.libs";
workers = $MAGPIE_WORKERS;
log = { level = "warn"; file = "-"; };
hosts = ( { domain = "localhost"; } );
listeners = ( { type = "c2s"; address = "127.0.0.1"; port = ${CPORT[$i]}; },
              { type = "http"; address = "127.0.0.1"; port = ${HPORT[$i]}; } );
storage = { driver = "sqlite"; threads = $STORAGE_THREADS; };
limits = { max_connections = $MAXCONN; max_connections_per_address = $MAXCONN;
           connection_rate_per_address = 1000000; connection_burst_per_address = $MAXCONN; };
security = { scram_iterations = 4096; };
modules = ( "ping",
            { name = "gateway"; domain = "$GWDOMAIN"; address = "127.0.0.1";
              port = ${GPORT[$i]}; heartbeat = $HEARTBEAT; handshake_timeout = 300;
              admins = "${ADMINS# }"; api_tokens = "$TOKEN"; } );
EOF
        # magpiectl creates the database; the senders are admins of the gateway
        for ((s = 1; s <= 2 * SENDERS; s++)); do
            "$BUILD/magpiectl" -c "${CONF[$i]}" user add "gwbench$s@localhost" \
                --password "$PASSWORD" >/dev/null
        done
        "${SRV_PIN[@]}" "$BUILD/magpied" -c "${CONF[$i]}" >"$d/magpied.log" 2>&1 &
        NPID[$i]=$!
        PIDS+=("$!")
    done
    for ((i = 1; i <= NODES; i++)); do
        if ! wait_port "${NPID[$i]}" "${GPORT[$i]}" || ! wait_port "${NPID[$i]}" "${CPORT[$i]}"; then
            log "node $i did not start; its log:"
            tail -n 20 "$TMP/n$i/magpied.log" >&2
            exit 1
        fi
    done
    sleep 2 # start-up allocations settle
    for ((i = 1; i <= NODES; i++)); do
        RSS0[$i]=$(rss_kb "${NPID[$i]}")
    done
    log "$NODES node(s) up (pids ${NPID[*]}), RSS ${RSS0[*]} kB; provisioning $DEVICES devices each"
    # provisioned while magpied runs: a device's record is read at its first
    # HELLO, so the RSS difference includes the per-device record too
    t0=$(date +%s.%N)
    DPIDS=()
    for ((i = 1; i <= NODES; i++)); do
        $PY "$HERE/devices.py" "$TMP/n$i/state/magpie.db" "$GWDOMAIN" "d%d" 1 "$DEVICES" \
            "$TMP/n$i/devices" &
        DPIDS+=("$!")
    done
    for p in "${DPIDS[@]}"; do wait "$p" || { log "devices.py failed"; exit 1; }; done
    log "provisioned in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s;" \
        "connecting"
    t0=$(date +%s.%N)
    for ((i = 1; i <= NODES; i++)); do
        "${LG_PIN[@]}" "$BUILD/sdk/sim/mgw-sim" --port "${GPORT[$i]}" --devices "$TMP/n$i/devices" \
            --concurrency "$SIM_CONCURRENCY" >"$TMP/n$i/sim.out" 2>&1 &
        SPID[$i]=$!
        PIDS+=("$!")
    done
    # every device READY (or the deadline)
    while :; do
        check_deadline
        total=0
        for ((i = 1; i <= NODES; i++)); do
            READY[$i]=$(count_lines "$TMP/n$i/sim.out" '^READY')
            total=$((total + READY[i]))
            kill -0 "${SPID[$i]}" 2>/dev/null || { log "mgw-sim $i exited"; tail -n 5 "$TMP/n$i/sim.out" >&2; exit 1; }
        done
        [ "$total" -ge $((NODES * DEVICES)) ] && break
        sleep 1
    done
    CONNECT_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    log "$total devices READY after $CONNECT_S s; holding $HOLD s"
    sleep "$HOLD"
    DISC=0
    for ((i = 1; i <= NODES; i++)); do
        RSS1[$i]=$(rss_kb "${NPID[$i]}")
        n=$(count_lines "$TMP/n$i/sim.out" '^DISCONNECTED')
        DISC=$((DISC + n))
        READY[$i]=$(count_lines "$TMP/n$i/sim.out" '^READY')
    done
    STATUS=$("$BUILD/magpiectl" -c "${CONF[1]}" status 2>/dev/null | tr '\n' ' ' | tr -s ' ' || true)
fi

# ---------------------------------------------------------------- mosquitto
# one broker per node (a broker is one process with the same file limit),
# each with DEVICES idle clients from a client process of its own
if [ $DO_MOSQ = 1 ]; then
    command -v mosquitto >/dev/null || { log "no mosquitto: scripts/install-deps.sh bench"; exit 1; }
    declare -a MQ_PID MQ_PORT MQ_RSS0 MQ_RSS1
    MQ_CL=()
    for ((i = 1; i <= NODES; i++)); do
        d=$TMP/mosquitto$i
        mkdir -p "$d"
        MQ_PORT[$i]=$(free_port)
        cat >"$d/mosquitto.conf" <<EOF
# throwaway broker for bench/gateway.sh: loopback only, nothing on disk
listener ${MQ_PORT[$i]} 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest stderr
log_type error
log_type warning
user $(id -un)
EOF
        "${SRV_PIN[@]}" mosquitto -c "$d/mosquitto.conf" >"$d/mosquitto.log" 2>&1 &
        MQ_PID[$i]=$!
        PIDS+=("$!")
    done
    for ((i = 1; i <= NODES; i++)); do
        wait_port "${MQ_PID[$i]}" "${MQ_PORT[$i]}" || {
            log "mosquitto $i did not start"; cat "$TMP/mosquitto$i/mosquitto.log" >&2; exit 1; }
    done
    sleep 2
    for ((i = 1; i <= NODES; i++)); do
        MQ_RSS0[$i]=$(rss_kb "${MQ_PID[$i]}")
        "${LG_PIN[@]}" "$BUILD/bench/mqtt-idle" --port "${MQ_PORT[$i]}" --clients "$DEVICES" \
            --keepalive "$((HEARTBEAT * 2))" --id-prefix "n${i}c" >"$TMP/mosquitto$i/idle.out" 2>&1 &
        MQ_CL+=("$!")
        PIDS+=("$!")
    done
    t0=$(date +%s.%N)
    while :; do
        check_deadline
        n=0
        for ((i = 1; i <= NODES; i++)); do
            grep -q '^ALL' "$TMP/mosquitto$i/idle.out" && n=$((n + 1))
        done
        [ "$n" -eq "$NODES" ] && break
        sleep 1
    done
    MQ_CONNECT_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    MQ_OK=$(cat "$TMP"/mosquitto*/idle.out | awk -F'[ =]' '/^ALL/ { s += $3 } END { print s + 0 }')
    log "mosquitto: $MQ_OK clients connected after $MQ_CONNECT_S s; holding $HOLD s"
    sleep "$HOLD"
    # clients still connected (the client processes print their state every 2 s)
    declare -a MQ_N
    MQ_OK=0
    for ((i = 1; i <= NODES; i++)); do
        MQ_RSS1[$i]=$(rss_kb "${MQ_PID[$i]}")
        MQ_N[$i]=$(awk -F'[ =]' '/^(ALL|state)/ { n = $3 } END { print n + 0 }' "$TMP/mosquitto$i/idle.out")
        MQ_OK=$((MQ_OK + MQ_N[i]))
    done
    for p in "${MQ_CL[@]}"; do stop_pid "$p"; done
    for ((i = 1; i <= NODES; i++)); do stop_pid "${MQ_PID[$i]}"; done
    MQ_DROPPED=$(cat "$TMP"/mosquitto*/idle.out | awk -F'[ =]' '/^END/ { s += $7 } END { print s + 0 }')
fi

# ---------------------------------------------------------------- report: memory
echo
echo "## memory per idle connection (VmRSS after - before) / connections"
printf '%-10s %5s %8s %10s %10s %12s %10s %10s\n' server node conns rss0_kB rss1_kB "KiB/conn" connect_s dropped
if [ $DO_MAGPIE = 1 ]; then
    sum0=0 sum1=0 sumr=0
    for ((i = 1; i <= NODES; i++)); do
        printf '%-10s %5s %8s %10s %10s %12.3f %10s %10s\n' magpied "$i" "${READY[$i]}" "${RSS0[$i]}" \
            "${RSS1[$i]}" "$(awk -v a="${RSS0[$i]}" -v b="${RSS1[$i]}" -v n="${READY[$i]}" 'BEGIN { print n ? (b - a) / n : 0 }')" \
            "$CONNECT_S" "$(count_lines "$TMP/n$i/sim.out" '^DISCONNECTED')"
        sum0=$((sum0 + RSS0[i])); sum1=$((sum1 + RSS1[i])); sumr=$((sumr + READY[i]))
    done
    MG_PER=$(awk -v a="$sum0" -v b="$sum1" -v n="$sumr" 'BEGIN { printf "%.3f", n ? (b - a) / n : 0 }')
fi
if [ $DO_MOSQ = 1 ]; then
    m0=0 m1=0
    for ((i = 1; i <= NODES; i++)); do
        n=${MQ_N[$i]}
        printf '%-10s %5s %8s %10s %10s %12.3f %10s %10s\n' mosquitto "$i" "$n" "${MQ_RSS0[$i]}" \
            "${MQ_RSS1[$i]}" "$(awk -v a="${MQ_RSS0[$i]}" -v b="${MQ_RSS1[$i]}" -v n="$n" 'BEGIN { print n ? (b - a) / n : 0 }')" \
            "$MQ_CONNECT_S" "$(awk -F'[ =]' '/^END/ { print $7 }' "$TMP/mosquitto$i/idle.out")"
        m0=$((m0 + MQ_RSS0[i])); m1=$((m1 + MQ_RSS1[i]))
    done
    MQ_PER=$(awk -v a="$m0" -v b="$m1" -v n="$MQ_OK" 'BEGIN { printf "%.3f", n ? (b - a) / n : 0 }')
fi
if [ $DO_MAGPIE = 1 ]; then
    echo "magpied: $sumr devices on $NODES node(s), $MG_PER KiB per idle device (record + connection);" \
        "devices disconnected during the run: $DISC"
    [ -n "${STATUS:-}" ] && echo "magpiectl status (node 1): $STATUS"
fi
[ $DO_MOSQ = 1 ] && echo "mosquitto: $MQ_OK idle MQTT clients on $NODES broker(s), $MQ_PER KiB per client;" \
    "clients dropped: $MQ_DROPPED"
if [ $DO_MAGPIE = 1 ] && [ $DO_MOSQ = 1 ]; then
    echo "ratio magpied/mosquitto per connection: $(awk -v a="$MG_PER" -v b="$MQ_PER" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
fi
echo "RESULT-GWMEM nodes=$NODES devices=${sumr:-0} magpie_kib_per_device=${MG_PER:-na}" \
    "mosquitto_clients=${MQ_OK:-0} mosquitto_kib_per_client=${MQ_PER:-na} disconnected=${DISC:-0}"

# ---------------------------------------------------------------- latency (node 1)
# sim_latency: asks the latency simulator for its histogram since the last
# call (SIGUSR1) and prints "p50 p99" of trigger -> the device's ACK
sim_latency() {
    local before after i line
    before=$(count_lines "$TMP/n1/lat-sim.out" '^LATENCY')
    kill -USR1 "$LSIM"
    for i in $(seq 1 50); do
        after=$(count_lines "$TMP/n1/lat-sim.out" '^LATENCY')
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    line=$(grep '^LATENCY' "$TMP/n1/lat-sim.out" | tail -n 1)
    echo "$line" | awk '{ for (k = 2; k <= NF; k++) { split($k, kv, "="); a[kv[1]] = kv[2] } }
        END { printf "%s %s %s %s\n", a["n"], a["p50_ms"] == "" ? "na" : a["p50_ms"],
              a["p99_ms"] == "" ? "na" : a["p99_ms"], a["max_ms"] == "" ? "na" : a["max_ms"] }'
}
# counters_line RATE TRIGGER SCHED0: magpied's CPU and run-queue wait during
# the run, the machine's load and the gateway counters (cumulative)
counters_line() {
    local c0 w0 c1 w1
    read -r c0 w0 <<<"$3"
    read -r c1 w1 <<<"$(sched_ms "${NPID[1]}")"
    echo "COUNTERS-GWLAT trigger=$2 rate=$1 load=$(cut -d' ' -f1 /proc/loadavg) cpu_ms=$((c1 - c0)) runq_wait_ms=$((w1 - w0)) $("$BUILD/magpiectl" -c "${CONF[1]}" status 2>/dev/null |
        awk '/gateway_(commands_accepted|commands_acked|ack_latency_ms_total|accept_latency_us_total|end_latency_us_total|commands_retried)/ { printf "%s=%s ", $1, $2 }')"
}
if [ $DO_MAGPIE = 1 ] && [ -n "$RATES" ]; then
    echo
    echo "## trigger-to-ACK latency (node 1; triggers: $TRIGGERS)"
    $PY "$HERE/devices.py" "$TMP/n1/state/magpie.db" "$GWDOMAIN" "l%d" 1 "$LAT_DEVICES" "$TMP/n1/lat-devices"
    "${LG_PIN[@]}" "$BUILD/sdk/sim/mgw-sim" --latency --port "${GPORT[1]}" --devices "$TMP/n1/lat-devices" >"$TMP/n1/lat-sim.out" 2>&1 &
    PIDS+=("$!")
    LSIM=$!
    while [ "$(count_lines "$TMP/n1/lat-sim.out" '^READY')" -lt "$LAT_DEVICES" ]; do
        check_deadline
        kill -0 "$LSIM" 2>/dev/null || { log "latency mgw-sim exited"; exit 1; }
        sleep 0.5
    done
    # the floor: nginx answering every POST with a 201 and a body like the
    # gateway's, nothing stored, one worker (magpied runs one loop here)
    FLOOR_PORT=""
    case " $TRIGGERS " in *" http "*) ;; *) FLOOR=0 ;; esac
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    if [ "$FLOOR" = 1 ] && [ ! -x "$NGINX" ]; then
        log "no nginx (scripts/install-deps.sh bench): no http-floor row"
        FLOOR=0
    fi
    if [ "$FLOOR" = 1 ]; then
        FLOOR_PORT=$(free_port)
        mkdir -p "$TMP/nginx"
        cat >"$TMP/nginx/nginx.conf" <<EOF
# throwaway nginx for bench/gateway.sh's http-floor: loopback only
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/nginx;
    server {
        listen 127.0.0.1:$FLOOR_PORT;
        location / {
            default_type application/json;
            return 201 '{"id": "1", "device": "l1@$GWDOMAIN", "duplicate": false}';
        }
    }
}
EOF
        "${SRV_PIN[@]}" "$NGINX" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx/out.log" 2>&1 &
        FLOOR_PID=$!
        PIDS+=("$!")
        wait_port "$FLOOR_PID" "$FLOOR_PORT" || {
            log "nginx did not start: no http-floor row"; cat "$TMP/nginx/out.log" >&2; FLOOR=0; }
    fi
    printf '%-10s %-6s %8s %8s %8s %6s %8s %8s %8s %8s %8s %8s %9s %8s\n' trigger rate sent \
        accepted acked errors acc_p50 acc_p99 ack_p50 ack_p99 ack_max rcpt_p99 cpu_us/cmd runq_ms
    for r in $RATES; do
        for trig in $TRIGGERS; do
            check_deadline
            out=$TMP/n1/lat-$trig-$r.out
            sim_latency >/dev/null # a new histogram for this run
            sched0=$(sched_ms "${NPID[1]}")
            cpu0=$(cpu_s "${NPID[1]}")
            case $trig in
            http)
                "${LG_PIN[@]}" "$BUILD/bench/gw-http" --port "${HPORT[1]}" --token "$TOKEN" --devices "$LAT_DEVICES" \
                    --fmt "l%d" --rate "$r" --duration "$LAT_DURATION" --conns "$HTTP_CONNS" \
                    --drain 10 >"$out" 2>"$out.err" || true
                line=$(grep '^RESULT-HTTP ' "$out" || true)
                ;;
            xmpp)
                "${LG_PIN[@]}" "$BUILD/bench/magpie-loadgen" --port "${CPORT[1]}" --domain localhost --users "gwbench%d" \
                    --password "$PASSWORD" --sessions $((2 * SENDERS)) --pairs "$SENDERS" \
                    --concurrency "$SENDERS" --hold 1 --rate "$r" --duration "$LAT_DURATION" --drain 10 \
                    --gw-domain "$GWDOMAIN" --gw-devices "$LAT_DEVICES" --gw-fmt "l%d" \
                    --server-pid "${NPID[1]}" >"$out" 2>"$out.err" || true
                line=$(grep '^RESULT ' "$out" || true)
                ;;
            *) log "unknown trigger $trig"; exit 1 ;;
            esac
            sleep 1 # the last ACKs
            cpu1=$(cpu_s "${NPID[1]}")
            read -r dn dp50 dp99 dmax <<<"$(sim_latency)"
            if [ -z "$line" ]; then
                log "$trig trigger at rate $r failed:"; tail -n 5 "$out" "$out.err" >&2; continue
            fi
            counters=$(counters_line "$r" "$trig" "$sched0")
            runq=$(echo "$counters" | sed -n 's/.*runq_wait_ms=\([0-9]*\).*/\1/p')
            echo "$line" | awk -v r="$r" -v t="$trig" -v dn="$dn" -v dp50="$dp50" -v dp99="$dp99" \
                -v dmax="$dmax" -v c0="$cpu0" -v c1="$cpu1" -v runq="$runq" '
                { for (k = 2; k <= NF; k++) { split($k, kv, "="); a[kv[1]] = kv[2] } }
                END {
                    if (t == "http") { sent = a["sent"]; acc = a["ok"]; err = a["errors"] + a["unanswered"];
                                       ap50 = a["acc_p50_ms"]; ap99 = a["acc_p99_ms"]; rc = "-" }
                    else { sent = a["msgs_sent"]; acc = a["gw_accepted"]; err = a["gw_errors"];
                           ap50 = a["acc_p50_ms"]; ap99 = a["acc_p99_ms"]; rc = a["lat_p99_ms"] }
                    printf "%-10s %-6s %8s %8s %8s %6s %8s %8s %8s %8s %8s %8s %9.1f %8s\n", t, r, sent,
                           acc, dn, err, ap50, ap99, dp50, dp99, dmax, rc,
                           (sent > 0 ? (c1 - c0) * 1e6 / sent : 0), runq }'
            echo "RESULT-GWLAT trigger=$trig rate=$r device_acked=$dn ack_p50_ms=$dp50 ack_p99_ms=$dp99 ack_max_ms=$dmax ${line#RESULT* }" >>"$TMP/lat-results"
            echo "$counters" >>"$TMP/lat-results"
            sleep 2
            if [ "$trig" = http ] && [ "$FLOOR" = 1 ]; then
                out=$TMP/n1/lat-floor-$r.out
                "${LG_PIN[@]}" "$BUILD/bench/gw-http" --port "$FLOOR_PORT" --token "$TOKEN" --devices "$LAT_DEVICES" \
                    --fmt "l%d" --rate "$r" --duration "$LAT_DURATION" --conns "$HTTP_CONNS" \
                    --drain 10 >"$out" 2>"$out.err" || true
                line=$(grep '^RESULT-HTTP ' "$out" || true)
                if [ -z "$line" ]; then
                    log "http-floor at rate $r failed:"; tail -n 5 "$out" "$out.err" >&2
                else
                    echo "$line" | awk -v r="$r" '
                        { for (k = 2; k <= NF; k++) { split($k, kv, "="); a[kv[1]] = kv[2] } }
                        END { printf "%-10s %-6s %8s %8s %8s %6s %8s %8s %8s %8s %8s %8s %9s %8s\n",
                              "http-floor", r, a["sent"], a["ok"], "-", a["errors"] + a["unanswered"],
                              a["acc_p50_ms"], a["acc_p99_ms"], "-", "-", "-", "-", "-", "-" }'
                    echo "RESULT-GWLAT trigger=http-floor rate=$r ${line#RESULT* }" >>"$TMP/lat-results"
                fi
                sleep 2
            fi
        done
    done
    echo "(milliseconds; acc = trigger -> 201 / <accepted/> (the command is durable); ack = trigger ->"
    echo " the device's ACK, measured by the device; rcpt = trigger -> XEP-0184 receipt (the end is"
    echo " durable too; xmpp only); cpu_us/cmd: magpied's CPU over the run incl. drain / commands sent;"
    echo " runq_ms: time magpied's threads were runnable but had no CPU; http-floor: the same HTTP"
    echo " trigger against nginx answering 201 at once, nothing stored: this machine's floor)"
    cat "$TMP/lat-results" 2>/dev/null || true
fi
if [ $DO_MAGPIE = 1 ]; then
    for ((i = 1; i <= NODES; i++)); do
        n=$(wc -l <"$TMP/n$i/magpied.log")
        [ "$n" -gt 0 ] && { echo "node $i log ($n lines):"; sort "$TMP/n$i/magpied.log" | cut -c1-200 | uniq -c | sort -rn | head -n 5; }
    done
fi
exit 0
