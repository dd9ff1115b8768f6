#!/bin/sh
# install-deps.sh - installs what one task needs on Debian 12 (bookworm).
#
#   scripts/install-deps.sh run     build and run the server (scripts/run-server.sh)
#   scripts/install-deps.sh test    build twice and run the whole test suite
#                                   (scripts/test.sh): adds cmocka, libstrophe,
#                                   MariaDB, slixmpp, clang for the fuzz stage
#   scripts/install-deps.sh bench   the benchmarks side by side with Prosody
#                                   (bench/run.sh) and Mosquitto
#                                   (bench/gateway.sh): adds both, and nginx
#                                   (gateway.sh's HTTP floor)
#
# Several profiles may be given. Only "bench" installs Prosody,
# Mosquitto and nginx, only "test"
# installs mariadb-server and clang. Idempotent and non-interactive: when
# every package is already installed it does nothing (not even apt-get
# update).
#
# Installing mariadb-server, prosody, mosquitto or nginx would normally start their system
# services. During the installation a policy-rc.d that forbids service
# start-up is put in place (an existing one, which may allow them, is moved
# aside and restored afterwards), and any mariadbd, prosody, mosquitto or nginx
# process that was not running before is stopped again afterwards: through the service
# manager first, then by signalling the processes themselves, and the
# script fails if one is still alive. The tests and benchmarks run their own
# throwaway mariadbd/prosody/mosquitto/nginx on loopback ports.
set -eu

RUN_PACKAGES="build-essential autoconf automake libtool pkg-config
libexpat1-dev libevent-dev libssl-dev libconfig-dev libidn11-dev
libsqlite3-dev libmariadb-dev libhttp-parser-dev libjansson-dev openssl
ca-certificates procps"
TEST_PACKAGES="$RUN_PACKAGES git libcmocka-dev libstrophe-dev
mariadb-server mariadb-client python3 python3-slixmpp python3-aiohttp sqlite3
clang libclang-rt-14-dev"
BENCH_PACKAGES="$RUN_PACKAGES python3 prosody lua5.4 mosquitto nginx-light"

[ $# -ge 1 ] || { echo "usage: $0 run|test|bench..." >&2; exit 2; }
PACKAGES=""
for profile in "$@"; do
    case "$profile" in
    run) PACKAGES="$PACKAGES $RUN_PACKAGES" ;;
    test) PACKAGES="$PACKAGES $TEST_PACKAGES" ;;
    bench) PACKAGES="$PACKAGES $BENCH_PACKAGES" ;;
    *) echo "install-deps.sh: unknown profile '$profile' (run, test or bench)" >&2; exit 2 ;;
    esac
done
# shellcheck disable=SC2086 # split on purpose
PACKAGES=$(echo $PACKAGES | tr ' ' '\n' | sort -u | tr '\n' ' ')

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-deps.sh: run as root (or install sudo)" >&2
        exit 1
    fi
fi

missing=""
for p in $PACKAGES; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
    "install ok installed") ;;
    *) missing="$missing $p" ;;
    esac
done
if [ -z "$missing" ]; then
    echo "install-deps.sh ($*): all packages already installed"
    exit 0
fi
echo "install-deps.sh ($*): installing:$missing"

# The PIDs of the system services' daemons, one per line: mariadbd (or
# mysqld), and Prosody, which runs as "lua5.x /usr/bin/prosody ..." (the
# interpreter may be given with its full path) or as "prosody".
service_pids() {
    case "$1" in
    mariadb)
        pgrep -x mariadbd 2>/dev/null || true
        pgrep -x mysqld 2>/dev/null || true ;;
    prosody)
        for pid in $(pgrep -f 'prosody' 2>/dev/null || true); do
            [ "$pid" = "$$" ] && continue
            comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
            args=$(ps -o args= -p "$pid" 2>/dev/null || true)
            case "$comm" in
            lua*|prosody) ;;
            *) continue ;;
            esac
            case "$args" in
            *prosody*) echo "$pid" ;;
            esac
        done ;;
    mosquitto)
        pgrep -x mosquitto 2>/dev/null || true ;;
    nginx)
        pgrep -x nginx 2>/dev/null || true ;;
    esac
}
MARIADB_BEFORE=$(service_pids mariadb | sort -u | tr '\n' ' ')
PROSODY_BEFORE=$(service_pids prosody | sort -u | tr '\n' ' ')
MOSQUITTO_BEFORE=$(service_pids mosquitto | sort -u | tr '\n' ' ')
NGINX_BEFORE=$(service_pids nginx | sort -u | tr '\n' ' ')

# forbid service start-up during installation (an existing policy-rc.d,
# which may well allow it, is moved aside meanwhile)
policy=/usr/sbin/policy-rc.d
saved_policy=""
if [ -e "$policy" ] || [ -L "$policy" ]; then
    saved_policy="$policy.magpie-install-deps.$$"
    $SUDO mv "$policy" "$saved_policy"
fi
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod 755 "$policy"
cleanup() {
    $SUDO rm -f "$policy"
    if [ -n "$saved_policy" ]; then
        $SUDO mv "$saved_policy" "$policy"
        saved_policy=""
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 1' INT TERM

export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing

# new_pids NAME BEFORE: the service's PIDs that were not in BEFORE
new_pids() {
    for pid in $(service_pids "$1"); do
        case " $2 " in
        *" $pid "*) ;;
        *) echo "$pid" ;;
        esac
    done
}

# stop what this installation started anyway: the service manager first
# (so that it does not restart it), then the processes themselves
stop_new() {
    name=$1 before=$2 unit=$3
    pids=$(new_pids "$name" "$before")
    [ -n "$pids" ] || return 0
    echo "install-deps.sh: the installation started $name (pid $(echo "$pids" | tr "\n" " ")); stopping it"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl stop "$unit" >/dev/null 2>&1 || true
        $SUDO systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        $SUDO service "$unit" stop >/dev/null 2>&1 || true
    fi
    for sig in TERM TERM TERM KILL; do
        pids=$(new_pids "$name" "$before")
        [ -n "$pids" ] || return 0
        # shellcheck disable=SC2086
        $SUDO kill -s "$sig" $pids 2>/dev/null || true
        i=0
        while [ $i -lt 20 ] && [ -n "$(new_pids "$name" "$before")" ]; do
            sleep 0.5
            i=$((i + 1))
        done
    done
    pids=$(new_pids "$name" "$before")
    if [ -n "$pids" ]; then
        echo "install-deps.sh: could not stop $name (pid $(echo "$pids" | tr "\n" " "))" >&2
        return 1
    fi
    echo "install-deps.sh: stopped $name"
}
failed=0
stop_new mariadb "$MARIADB_BEFORE" mariadb || failed=1
stop_new prosody "$PROSODY_BEFORE" prosody || failed=1
stop_new mosquitto "$MOSQUITTO_BEFORE" mosquitto || failed=1
stop_new nginx "$NGINX_BEFORE" nginx || failed=1
[ $failed -eq 0 ] || exit 1
echo "install-deps.sh: done"
