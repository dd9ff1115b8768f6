#!/bin/sh
# install-deps.sh - installs everything needed to build, run and test Magpie
# on Debian 12 (bookworm). Idempotent and non-interactive: when every package
# is already installed it does nothing (not even apt-get update).
#
# Installing mariadb-server and prosody would normally start their system
# services; a temporary policy-rc.d forbids that, and if one was started
# anyway by this installation it is stopped again. The tests run their own
# throwaway mariadbd/prosody on loopback ports.
set -eu

PACKAGES="build-essential autoconf automake libtool pkg-config git
libexpat1-dev libevent-dev libssl-dev libconfig-dev libidn11-dev
libsqlite3-dev libmariadb-dev libcmocka-dev libstrophe-dev
mariadb-server mariadb-client python3 python3-slixmpp prosody sqlite3
openssl ca-certificates procps
clang libclang-rt-14-dev"

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
    echo "install-deps.sh: all packages already installed"
    exit 0
fi
echo "install-deps.sh: installing:$missing"

running_before() {
    pidof "$1" >/dev/null 2>&1
}
mariadb_was_running=no
prosody_was_running=no
running_before mariadbd && mariadb_was_running=yes
pgrep -f '^lua[0-9.]* /usr/bin/prosody' >/dev/null 2>&1 && prosody_was_running=yes

# forbid service start-up during installation
policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=yes
fi
cleanup() {
    if [ "$created_policy" = yes ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT INT TERM

export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing

# stop what this installation may have started anyway
stop_service() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl stop "$1" >/dev/null 2>&1 || true
        $SUDO systemctl disable "$1" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        $SUDO service "$1" stop >/dev/null 2>&1 || true
    fi
}
if [ "$mariadb_was_running" = no ] && running_before mariadbd; then
    stop_service mariadb
fi
if [ "$prosody_was_running" = no ] && pgrep -f '^lua[0-9.]* /usr/bin/prosody' >/dev/null 2>&1; then
    stop_service prosody
fi
echo "install-deps.sh: done"
