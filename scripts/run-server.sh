#!/bin/sh
# run-server.sh - builds Magpie and runs it in the foreground for localhost.
#
#   ./scripts/run-server.sh            (as root on a fresh Debian 12)
#
# Installs what building and running needs (scripts/install-deps.sh run:
# no Prosody, no MariaDB server, no clang), builds in the source tree (./autogen.sh &&
# ./configure && make), writes var/magpie.conf (unless it exists: edit it
# freely, it is kept), prints how to add an account and connect, and execs
# magpied with that config. Stop it with Ctrl-C (SIGTERM/SIGINT).
#
# Environment: SKIP_DEPS=1 skips the package installation; JOBS=N sets
# make's parallelism (default: number of CPUs).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 1)}

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    ./scripts/install-deps.sh run
fi

[ -x configure ] || ./autogen.sh
[ -f config.status ] || ./configure
make -j"$JOBS"

CONF="$ROOT/var/magpie.conf"
mkdir -p "$ROOT/var/state"
if [ ! -f "$CONF" ]; then
    cat >"$CONF" <<EOF
# Magpie configuration for a local test server, written by
# scripts/run-server.sh. Every key is documented in conf/magpie.conf.
state_dir = "$ROOT/var/state";        # certificates, database, control socket
module_dir = "$ROOT/modules/.libs";   # the build tree's modules
workers = 0;                          # 0: one per CPU
log = { level = "info"; file = "-"; };
hosts = ( { domain = "localhost"; } );
listeners = (
    { type = "c2s";     address = "0.0.0.0"; port = 5222; },   # STARTTLS
    { type = "c2s_tls"; address = "0.0.0.0"; port = 5223; }    # direct TLS (XEP-0368)
);
storage = { driver = "sqlite"; sqlite = { path = "$ROOT/var/state/magpie.db"; }; };
# no "modules" list: the default set (disco, ping, version, time, group chat
# at conference.localhost, rosters, offline messages, carbons, blocking, ...)
EOF
    echo "run-server.sh: wrote $CONF"
else
    echo "run-server.sh: using the existing $CONF"
fi

./magpied --check-config -c "$CONF"

cat <<EOF

------------------------------------------------------------------------
Magpie is starting for the domain "localhost" (config: var/magpie.conf).

Add an account (in another terminal, from $ROOT):
    ./magpiectl -c var/magpie.conf user add alice@localhost
    ./magpiectl -c var/magpie.conf user add bob@localhost --password secret

Connect any XMPP client as alice@localhost:
    server 127.0.0.1 (or this machine's address), port 5222 (STARTTLS)
    or port 5223 (direct TLS). The certificate is self-signed
    (var/state/localhost.crt): accept it in the client.

Status:  ./magpiectl -c var/magpie.conf status
Stop:    Ctrl-C
------------------------------------------------------------------------

EOF
exec ./magpied -c "$CONF"
