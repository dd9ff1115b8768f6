#!/usr/bin/env bash
# bench/run.sh - the same c2s load against Magpie and Prosody, side by side.
#
# For each server: a throwaway config in a temp dir, loopback only, non-default
# ports, K accounts, then bench/magpie-loadgen with identical parameters and
# --server-pid, then a table of both servers and the ratios Magpie/Prosody.
# Everything started here is stopped on exit (trap), whatever happens.
#
# Parameters (environment):
#   SESSIONS=2000      sessions to log in (and accounts to create)
#   PAIRS=SESSIONS/2   sender->receiver pairs for the messaging phase
#   RATE=1000          total messages per second
#   DURATION=10        messaging seconds
#   HOLD=10            seconds all sessions stay idle before RSS is sampled
#   CONCURRENCY=100    logins in flight (total)
#   PROCS=auto         loadgen processes (auto: one per 19,000 sessions)
#   MECH=scram-sha-1   scram-sha-1 | scram-sha-256 | plain (Prosody 0.12 has no SHA-256)
#   ITERATIONS=4096    PBKDF2 iterations stored for both servers' accounts
#   SERVERS="magpie prosody"
#   MAGPIE_WORKERS=1   magpied worker threads (1: a per-core comparison with
#                      single-threaded Prosody; 0: one per core)
#   MAGPIE_ACCOUNTS=auto  magpiectl | bulk (auto: magpiectl up to 5000 sessions)
#   PROSODY_NAGLE=default default | off (network_settings.nagle = false)
#   PROSODY_BACKEND=epoll epoll (0.12 default) | event (libevent via luaevent)
#   MAGPIE_STORAGE=""  extra settings in magpied's storage group, e.g.
#                      'sqlite = { cache_kib = 2000; };'
#   PROSODY_EXTRA=""   extra global Prosody config lines, e.g. 'gc = { mode = "generational" }'
#   MAGPIE_PORT=auto PROSODY_PORT=auto (auto: first free port from 45222 / 45322)
#   DOMAIN=localhost PASSWORD=bench-pass
#   LOADGEN_ARGS=""    extra loadgen options
#   KEEP=0             1: keep the temp dir (configs, logs, loadgen output)
#   SKIP_DEPS=0        1: do not install Prosody (scripts/install-deps.sh bench)
#                      when SERVERS includes prosody and it is missing
#   BUILDDIR=$TOP      where magpied, magpiectl, modules/.libs and
#                      bench/magpie-loadgen are built (an out-of-tree build dir)
#   MODE=c2s           c2s: message pairs; muc: group chat (XEP-0045) rooms
#   ROOMS=1 OCCUPANTS=100  MUC mode: ROOMS rooms of OCCUPANTS occupants each
#                      (SESSIONS = ROOMS x OCCUPANTS); RATE is groupchat
#                      messages/s in total, each delivered to every occupant
#   MUC_MAM=0          MUC mode: 1 archives every message (Magpie default_mam,
#                      Prosody muc_mam); 0: no archive on either side
#   MODE=roster        IM: every user has ROSTER contacts (a ring, subscription
#                      both, written to both servers' storage before the run);
#                      a login = ... bind, roster get, initial presence; the
#                      contacts' presences (broadcasts, probe answers) counted
#   MODE=offline       IM: SESSIONS/2 pairs; receivers bound but unavailable;
#                      OFFLINE_MSGS per pair to the bare JID (stored/s, to a
#                      ping barrier), then receivers' presence (delivered/s)
#   MODE=mam           IM: PAIRS pairs (default 2) exchange MAM_FILL messages
#                      (default 10000: each paired user's archive), then every
#                      paired session queries its archive for DURATION s,
#                      MAM_WINDOW (1) in flight, pages of 50 (queries/s)
#   ROSTER=100 OFFLINE_MSGS=100 MAM_FILL=10000 MAM_WINDOW=1
#   PIN=0              1: taskset the server to CPU 0 and the load generator to
#                      CPU 1 (the rest of the machine still shares both)
#   MODULES=bench      Magpie's module list: bench (disco ping version time,
#                      what Prosody gets too), default (no 'modules' setting:
#                      the server's default list, roster offline carbons ...),
#                      none (the core alone), or a comma-separated list
#                      (MODE=muc adds mod_muc to bench or a list; with
#                      default or none it runs mod_muc alone)
set -euo pipefail
# shellcheck disable=SC2059 # USERFMT is a printf format on purpose

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3

MODE=${MODE:-c2s}
case $MODE in
mam) SESSIONS=${SESSIONS:-$((2 * ${PAIRS:-2}))} ;;
roster) SESSIONS=${SESSIONS:-1000} ;;
esac
SESSIONS=${SESSIONS:-2000}
PAIRS=${PAIRS:-$((SESSIONS / 2))}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
HOLD=${HOLD:-10}
CONCURRENCY=${CONCURRENCY:-100}
PROCS=${PROCS:-auto}
MECH=${MECH:-scram-sha-1}
ITERATIONS=${ITERATIONS:-4096}
SERVERS=${SERVERS:-magpie prosody}
MAGPIE_WORKERS=${MAGPIE_WORKERS:-1}
MAGPIE_ACCOUNTS=${MAGPIE_ACCOUNTS:-auto}
PROSODY_NAGLE=${PROSODY_NAGLE:-default}
PROSODY_BACKEND=${PROSODY_BACKEND:-epoll}
PROSODY_EXTRA=${PROSODY_EXTRA:-}
MAGPIE_STORAGE=${MAGPIE_STORAGE:-}
MAGPIE_PORT=${MAGPIE_PORT:-auto}
PROSODY_PORT=${PROSODY_PORT:-auto}
DOMAIN=${DOMAIN:-localhost}
PASSWORD=${PASSWORD:-bench-pass}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
KEEP=${KEEP:-0}
BUILDDIR=$(cd "${BUILDDIR:-$TOP}" && pwd)
ROOMS=${ROOMS:-1}
OCCUPANTS=${OCCUPANTS:-100}
MUC_MAM=${MUC_MAM:-0}
MODULES=${MODULES:-bench}
PIN=${PIN:-0}
SRV_PIN=() LG_PIN=()
[ "$PIN" = 1 ] && SRV_PIN=(taskset -c 0) && LG_PIN=(taskset -c 1)
ROSTER=${ROSTER:-100}
OFFLINE_MSGS=${OFFLINE_MSGS:-100}
MAM_FILL=${MAM_FILL:-10000}
MAM_WINDOW=${MAM_WINDOW:-1}
USERFMT="bench%d"

case $MODE in
c2s) ;;
muc)
    # no pairs; PROCS load generator processes share the occupants (1 by
    # default: PROCS=2 spreads the reading of the deliveries over two)
    SESSIONS=$((ROOMS * OCCUPANTS))
    PAIRS=0
    [ "$PROCS" = auto ] && PROCS=1
    LOADGEN_ARGS="--muc-rooms $ROOMS --muc-service conference.$DOMAIN $LOADGEN_ARGS" ;;
roster | offline | mam)
    # IM modes: one load generator process, no pair messaging (RATE=0)
    [ "$MODE" = roster ] && PAIRS=0
    PROCS=1
    RATE=0
    case $MODE in
    roster) LOADGEN_ARGS="--im roster --roster-size $ROSTER $LOADGEN_ARGS" ;;
    offline) LOADGEN_ARGS="--im offline --offline-msgs $OFFLINE_MSGS $LOADGEN_ARGS" ;;
    mam) LOADGEN_ARGS="--im mam --mam-fill $MAM_FILL --mam-window $MAM_WINDOW $LOADGEN_ARGS" ;;
    esac ;;
*) echo "run.sh: MODE is c2s, muc, roster, offline or mam" >&2; exit 2 ;;
esac
[ "$PROCS" = auto ] && PROCS=$(((SESSIONS + 18999) / 19000))

# Prosody is installed only here, for the side-by-side run (not by the
# server's or the tests' set-up); install-deps.sh stops the system service
# the package would start, so that it does not hold port 5222.
case " $SERVERS " in
*" prosody "*)
    if [ "${SKIP_DEPS:-0}" != 1 ] && ! { command -v lua5.4 >/dev/null && [ -f /usr/bin/prosody ]; }; then
        "$TOP/scripts/install-deps.sh" bench
    fi ;;
esac
if [ "$MAGPIE_ACCOUNTS" = auto ]; then
    if [ "$SESSIONS" -le 5000 ]; then MAGPIE_ACCOUNTS=magpiectl; else MAGPIE_ACCOUNTS=bulk; fi
fi

LOADGEN="$BUILDDIR/bench/magpie-loadgen"
TMP=$(mktemp -d /tmp/magpie-bench.XXXXXX)
PIDS=()

LOG_TAG=run.sh
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && stop_pid "$p"
    done
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Servers inherit the file limit: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# wait_port PID PORT: until something accepts on 127.0.0.1:PORT (30 s).
wait_port() {
    local pid=$1 port=$2 i
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- magpie
setup_magpie() {
    local d=$TMP/magpie
    mkdir -p "$d/state"
    [ -x "$BUILDDIR/magpied" ] && [ -x "$BUILDDIR/magpiectl" ] || {
        log "magpied/magpiectl not built: cd $BUILDDIR && make magpied magpiectl modules/mod_disco.la ..."
        return 1
    }
    local mods modline
    case $MODULES in
    bench) mods='"disco", "ping", "version", "time"' ;;
    default | none) mods='' ;;
    *) mods=$(printf '%s' "$MODULES" | sed 's/[^,][^,]*/"&"/g; s/,/, /g') ;;
    esac
    if [ "$MODE" = muc ]; then
        local mam=false
        [ "$MUC_MAM" = 1 ] && mam=true
        # instant rooms (no configuration round trip), no occupant limit
        mods="${mods:+$mods, }{ name = \"muc\"; lock_new_rooms = false; default_max_users = 0; default_mam = $mam; }"
    fi
    # IM modes: what the mode needs on top of bench or a list (with default,
    # the default list; offline's quota must then hold OFFLINE_MSGS)
    if [ "$MODULES" != default ] && [ "$MODULES" != none ]; then
        case $MODE in
        roster) mods="$mods, \"roster\"" ;;
        offline) mods="$mods, \"roster\", \"sm\", { name = \"offline\"; quota = $((OFFLINE_MSGS + 100)); }" ;;
        mam) mods="$mods, \"roster\", \"mam\"" ;;
        esac
    fi
    # MODULES=default leaves 'modules' out: the list built into the server
    modline="modules = ( $mods );"
    [ "$MODULES" = default ] && [ "$MODE" != muc ] && modline=""
    # IM modes: no per-connection byte rate limit (Prosody's config has none)
    local ratelim=""
    case $MODE in roster | offline | mam) ratelim="rate = 1073741824; burst = 1073741824;" ;; esac
    cat >"$d/magpie.conf" <<EOF
state_dir = "$d/state";
module_dir = "$BUILDDIR/modules/.libs";
workers = $MAGPIE_WORKERS;
log = { level = "warn"; file = "-"; };
hosts = ( { domain = "$DOMAIN"; } );
listeners = ( { type = "c2s"; address = "127.0.0.1"; port = $MAGPIE_PORT; } );
storage = { driver = "sqlite"; $MAGPIE_STORAGE };
limits = { max_connections = $((SESSIONS + 1000)); negotiation_timeout = 120;
           max_connections_per_address = $((SESSIONS + 1000)); connection_burst_per_address = $((SESSIONS + 1000)); connection_rate_per_address = 100000; $ratelim };
security = { require_tls = true; scram_iterations = $ITERATIONS; };
$modline
EOF
    local t0 t1 i
    t0=$(date +%s.%N)
    if [ "$MAGPIE_ACCOUNTS" = magpiectl ]; then
        for ((i = 1; i <= SESSIONS; i++)); do
            "$BUILDDIR/magpiectl" -c "$d/magpie.conf" user add "$(printf "$USERFMT" "$i")@$DOMAIN" \
                --password "$PASSWORD" >/dev/null
        done
    else
        # magpiectl creates the database and its schema; the rest in bulk
        "$BUILDDIR/magpiectl" -c "$d/magpie.conf" user add "$(printf "$USERFMT" 1)@$DOMAIN" \
            --password "$PASSWORD" >/dev/null
        if [ "$SESSIONS" -gt 1 ]; then
            $PY "$HERE/accounts.py" magpie "$d/state/magpie.db" "$DOMAIN" "$USERFMT" 2 \
                $((SESSIONS - 1)) "$PASSWORD" "$ITERATIONS"
        fi
    fi
    if [ "$MODE" = roster ]; then
        $PY "$HERE/accounts.py" magpie-roster "$d/state/magpie.db" "$DOMAIN" "$USERFMT" 1 \
            "$SESSIONS" "$ROSTER"
    fi
    t1=$(date +%s.%N)
    ACCT_SECS[magpie]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    log "magpie: $SESSIONS accounts ($MAGPIE_ACCOUNTS) in ${ACCT_SECS[magpie]} s"
}

start_magpie() {
    local d=$TMP/magpie
    "${SRV_PIN[@]}" "$BUILDDIR/magpied" -c "$d/magpie.conf" >"$d/magpied.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_PORT=$MAGPIE_PORT
}

# ---------------------------------------------------------------- prosody
setup_prosody() {
    local d=$TMP/prosody
    mkdir -p "$d/data" "$d/certs"
    command -v lua5.4 >/dev/null && [ -f /usr/bin/prosody ] || {
        log "prosody (Debian package) not installed"
        return 1
    }
    # EC P-256 like Magpie's generated certificate, so handshakes cost the same
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
        -keyout "$d/certs/$DOMAIN.key" -out "$d/certs/$DOMAIN.crt" 2>/dev/null
    local root="" nagle="" muc="" mods="" disabled='"offline", '
    [ "$(id -u)" = 0 ] && root="run_as_root = true"
    [ "$PROSODY_NAGLE" = off ] && nagle="nagle = false;"
    if [ "$MODE" = muc ]; then
        # Prosody's MUC component; instant rooms like Magpie's bench config
        muc="Component \"conference.$DOMAIN\" \"muc\"
  muc_room_locking = false
  restrict_room_creation = false"
        [ "$MUC_MAM" = 1 ] && muc="$muc
  modules_enabled = { \"muc_mam\" }
  muc_log_by_default = true"
    fi
    # IM modes: offline storage (on by default in Prosody) and the archive
    [ "$MODE" = offline ] && disabled=""
    [ "$MODE" = mam ] && mods=', "mam"'
    cat >"$d/prosody.cfg.lua" <<EOF
-- throwaway config written by bench/run.sh
$root
pidfile = "$d/prosody.pid"
data_path = "$d/data"
certificates = "$d/certs"
log = { { levels = { min = "warn" }, to = "file", filename = "$d/prosody.log" } }
-- only what the benchmark exercises (and what Magpie loads: disco ping version time)
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "version", "time"$mods }
modules_disabled = { "s2s", "s2s_auth_certs", "s2s_bidi", ${disabled}"tombstones" }
interfaces = { "127.0.0.1" }
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { $PROSODY_PORT }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
s2s_ports = { }
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
default_iteration_count = $ITERATIONS
-- epoll is the 0.12 default (no select() 1024 limit); bigger accept backlog
network_backend = "$PROSODY_BACKEND"
network_settings = { tcp_backlog = 4096; $nagle }
$PROSODY_EXTRA
VirtualHost "$DOMAIN"
  ssl = { certificate = "$d/certs/$DOMAIN.crt"; key = "$d/certs/$DOMAIN.key" }
$muc
EOF
    local t0 t1
    t0=$(date +%s.%N)
    $PY "$HERE/accounts.py" prosody "$d/data" "$DOMAIN" "$USERFMT" 1 "$SESSIONS" \
        "$PASSWORD" "$ITERATIONS"
    if [ "$MODE" = roster ]; then
        $PY "$HERE/accounts.py" prosody-roster "$d/data" "$DOMAIN" "$USERFMT" 1 "$SESSIONS" "$ROSTER"
    fi
    t1=$(date +%s.%N)
    ACCT_SECS[prosody]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    log "prosody: $SESSIONS accounts (internal storage files) in ${ACCT_SECS[prosody]} s"
}

start_prosody() {
    local d=$TMP/prosody
    "${SRV_PIN[@]}" lua5.4 /usr/bin/prosody --config "$d/prosody.cfg.lua" -F >"$d/stdout.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_PORT=$PROSODY_PORT
}

server_version() {
    case $1 in
    magpie) echo "magpie $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$TOP" diff --quiet 2>/dev/null || echo '+dirty'), magpied built $(date -r "$BUILDDIR/magpied" '+%F %T' 2>/dev/null) sha256 $(sha256sum "$BUILDDIR/magpied" 2>/dev/null | cut -c1-12)" ;;
    prosody) echo "prosody $(dpkg-query -W -f '${Version}' prosody 2>/dev/null), $(lua5.4 -v 2>&1 | awk '{print $1, $2}')" ;;
    esac
}

# ---------------------------------------------------------------- main
[ -x "$LOADGEN" ] || (cd "$BUILDDIR" && make bench/magpie-loadgen >/dev/null) || {
    log "cannot build $LOADGEN"
    exit 1
}
# first_free_port BASE: BASE or the next free port above it (other people's
# servers may share this machine)
first_free_port() {
    local p=$1
    while ! port_free "$p" || ! port_free $((p + 1)); do p=$((p + 7)); done
    echo "$p"
}
[ "$MAGPIE_PORT" = auto ] && MAGPIE_PORT=$(first_free_port 45222)
[ "$PROSODY_PORT" = auto ] && PROSODY_PORT=$(first_free_port 45322)
for p in $MAGPIE_PORT $PROSODY_PORT; do
    port_free "$p" || { log "port $p is in use; set MAGPIE_PORT/PROSODY_PORT"; exit 1; }
done

declare -A ACCT_SECS RES
echo "# bench/run.sh $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n): $(nproc) cores," \
     "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "# SESSIONS=$SESSIONS PAIRS=$PAIRS RATE=$RATE DURATION=$DURATION HOLD=$HOLD" \
     "CONCURRENCY=$CONCURRENCY PROCS=$PROCS MECH=$MECH ITERATIONS=$ITERATIONS" \
     "MAGPIE_WORKERS=$MAGPIE_WORKERS PIN=$PIN PROSODY_NAGLE=$PROSODY_NAGLE PROSODY_BACKEND=$PROSODY_BACKEND" \
     "MODE=$MODE$([ "$MODE" = muc ] && echo " ROOMS=$ROOMS OCCUPANTS=$OCCUPANTS MUC_MAM=$MUC_MAM")" \
     "$(case $MODE in roster) echo "ROSTER=$ROSTER" ;; offline) echo "OFFLINE_MSGS=$OFFLINE_MSGS" ;;
        mam) echo "MAM_FILL=$MAM_FILL MAM_WINDOW=$MAM_WINDOW" ;; esac) MODULES=$MODULES"

for srv in $SERVERS; do
    log "=== $srv: $(server_version "$srv")"
    if ! "setup_$srv"; then
        RES[$srv]="error=setup"
        continue
    fi
    "start_$srv"
    if ! wait_port "$SERVER_PID" "$SERVER_PORT"; then
        log "$srv did not start; its log:"
        tail -n 20 "$TMP/$srv"/*.log >&2 || true
        RES[$srv]="error=start"
        continue
    fi
    sleep 1   # let start-up allocations settle before the RSS baseline
    port=$SERVER_PORT
    # In the background so that a signal to this script is handled at once
    # (bash runs traps only after a foreground command ends).
    : >"$TMP/$srv.out"
    # shellcheck disable=SC2086
    "${LG_PIN[@]}" "$LOADGEN" --host 127.0.0.1 --port "$port" --domain "$DOMAIN" --users "$USERFMT" \
        --password "$PASSWORD" --first-index 1 --sessions "$SESSIONS" --pairs "$PAIRS" \
        --concurrency "$CONCURRENCY" --hold "$HOLD" --rate "$RATE" --duration "$DURATION" \
        --procs "$PROCS" --mech "$MECH" --server-pid "$SERVER_PID" $LOADGEN_ARGS \
        >"$TMP/$srv.out" 2>&1 &
    LG_PID=$!
    PIDS=("$LG_PID" "${PIDS[@]}")    # stopped first on exit
    tail -n +1 -f --pid="$LG_PID" "$TMP/$srv.out" | sed -u "s/^/  $srv | /" >&2 &
    wait "$LG_PID" || true
    wait $! 2>/dev/null || true
    line=$(grep '^RESULT ' "$TMP/$srv.out" | tail -n 1 || true)
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "$srv died during the run; its log:"
        tail -n 20 "$TMP/$srv"/*.log >&2 || true
        line="$line server_died=1"
    fi
    RES[$srv]="${line#RESULT } accounts_secs=${ACCT_SECS[$srv]:-na}"
    stop_pid "$SERVER_PID"
done

# ---------------------------------------------------------------- table
echo
for srv in $SERVERS; do echo "RESULT server=$srv ${RES[$srv]}"; done
echo
awk -v m="${RES[magpie]:-}" -v p="${RES[prosody]:-}" '
function parse(s, a,   n, i, kv, f) {
    n = split(s, f, " ")
    for (i = 1; i <= n; i++) { split(f[i], kv, "="); a[kv[1]] = kv[2] }
}
function row(label, key, fmt,   a, b, r) {
    a = (key in M) ? M[key] : "na"; b = (key in P) ? P[key] : "na"
    r = (a != "na" && b != "na" && b + 0 != 0) ? sprintf("%.2f", a / b) : "-"
    printf "%-34s %14s %14s %10s\n", label, \
        (a == "na" ? a : sprintf(fmt, a)), (b == "na" ? b : sprintf(fmt, b)), r
}
BEGIN {
    parse(m, M); parse(p, P)
    printf "%-34s %14s %14s %10s\n", "metric", "magpie", "prosody", "M/P"
    printf "%-34s %14s %14s %10s\n", "------", "------", "-------", "---"
    row("logins ok", "logins_ok", "%d")
    row("login failures", "login_failures", "%d")
    row("logins/s (higher is better)", "logins_per_sec", "%.1f")
    row("login time p50 ms", "login_p50_ms", "%.1f")
    row("login time p99 ms", "login_p99_ms", "%.1f")
    row("server CPU ms per login", "server_cpu_per_login_ms", "%.3f")
    row("server RSS idle kB", "rss_idle_kb", "%d")
    row("server RSS kB per session", "rss_per_session_kb", "%.2f")
    row("server CPU s while idle (HOLD)", "server_cpu_idle_s", "%.2f")
    if ("roster_size" in M || "roster_size" in P) {
        row("roster items received", "roster_items", "%d")
        row("contact presences received", "presences_received", "%d")
        row("contact presences expected", "presences_expected", "%d")
        row("s to the last presence", "presence_secs", "%.2f")
    }
    if ("offline_sent" in M || "offline_sent" in P) {
        row("offline messages sent", "offline_sent", "%d")
        row("offline store errors", "offline_errors", "%d")
        row("offline stored/s", "offline_stored_per_sec", "%.1f")
        row("server CPU us per stored", "server_cpu_per_stored_us", "%.1f")
        row("offline delivered", "offline_delivered", "%d")
        row("offline delivered with delay", "offline_delayed", "%d")
        row("offline delivered/s", "offline_delivered_per_sec", "%.1f")
        row("server CPU us per delivered", "server_cpu_per_delivered_us", "%.1f")
    }
    if ("mam_fill" in M || "mam_fill" in P) {
        row("archive fill messages", "mam_filled", "%d")
        row("archive fill s", "mam_fill_secs", "%.2f")
        row("MAM queries ok", "mam_queries", "%d")
        row("MAM query errors", "mam_query_errors", "%d")
        row("MAM queries/s", "mam_queries_per_sec", "%.1f")
        row("MAM results per query", "mam_results_per_query", "%.1f")
        row("MAM query p50 ms", "mam_query_p50_ms", "%.2f")
        row("MAM query p99 ms", "mam_query_p99_ms", "%.2f")
        row("server CPU ms per query", "server_cpu_per_query_ms", "%.3f")
    }
    if ("muc_rooms" in M || "muc_rooms" in P) {
        row("rooms", "muc_rooms", "%d")
        row("occupants per room", "muc_occupants", "%d")
        row("joins ok", "joins_ok", "%d")
        row("join failures", "join_failures", "%d")
        row("join phase s", "join_secs", "%.2f")
        row("server CPU s for the joins", "server_cpu_join_s", "%.2f")
        row("groupchat messages sent/s", "msgs_sent_per_sec", "%.1f")
        row("deliveries/s", "msgs_recv_per_sec", "%.1f")
        row("deliveries expected", "msgs_expected", "%d")
        row("deliveries lost", "msgs_lost", "%d")
        row("deliveries per server CPU s", "deliveries_per_cpu_sec", "%.0f")
    } else {
        row("messages sent/s", "msgs_sent_per_sec", "%.1f")
        row("messages received/s", "msgs_recv_per_sec", "%.1f")
        row("messages lost", "msgs_lost", "%d")
    }
    row("latency p50 ms", "lat_p50_ms", "%.3f")
    row("latency p90 ms", "lat_p90_ms", "%.3f")
    row("latency p99 ms", "lat_p99_ms", "%.3f")
    row("latency max ms", "lat_max_ms", "%.3f")
    row("server CPU us per message/delivery", "server_cpu_per_msg_us", "%.1f")
    row("sessions dropped", "sessions_dropped", "%d")
    row("loadgen CPU s", "loadgen_cpu_s", "%.2f")
    row("account creation s", "accounts_secs", "%.1f")
}'
