#!/bin/sh
# mariadb.sh - a throwaway MariaDB server for the storage tests.
#
#   tests/mariadb.sh start DIR PORT   initialise DIR (if new), start mariadbd on
#                                     127.0.0.1:PORT with its socket in DIR, create
#                                     database magpie_test and user magpie, wait
#                                     until ready, and print the MAGPIE_TEST_MYSQL
#                                     value ("127.0.0.1:PORT:magpie:magpie:magpie_test")
#   tests/mariadb.sh stop DIR         stop that server (DIR is kept; rm -rf it)
#
# Example:
#   export MAGPIE_TEST_MYSQL=$(tests/mariadb.sh start /tmp/mdb 13306)
#   ./tests/unit/test_storage
#   tests/mariadb.sh stop /tmp/mdb
#
# Never touches the system service: --no-defaults everywhere, so
# /etc/mysql is ignored, and everything (data, socket, pid, log) is in DIR.
# Works as root (mariadbd is told --user=root) and as an ordinary user.
set -eu

usage() {
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
me=$(id -un)

case "$cmd" in
start)
    [ $# -eq 3 ] || usage
    port=$3
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    sock="$dir/mysqld.sock"
    if [ -f "$dir/mysqld.pid" ] && kill -0 "$(cat "$dir/mysqld.pid")" 2>/dev/null; then
        echo "mariadb.sh: a server is already running in $dir" >&2
        exit 1
    fi
    if [ ! -d "$dir/data/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$dir/data" --user="$me" \
            --skip-test-db --auth-root-authentication-method=socket \
            >"$dir/install.log" 2>&1 || {
            echo "mariadb.sh: mariadb-install-db failed, see $dir/install.log" >&2
            exit 1
        }
    fi
    # setsid + nohup: the server outlives this script and its terminal
    setsid nohup mariadbd --no-defaults --user="$me" --datadir="$dir/data" \
        --socket="$sock" --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
        --port="$port" --bind-address=127.0.0.1 --skip-networking=0 \
        --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=64M \
        --max-connections=200 --character-set-server=utf8mb4 \
        >/dev/null 2>&1 </dev/null &
    i=0
    until mariadb-admin --no-defaults --socket="$sock" -u "$me" ping >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 300 ]; then
            echo "mariadb.sh: mariadbd did not start, see $dir/error.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    mariadb --no-defaults --socket="$sock" -u "$me" <<'EOF'
CREATE DATABASE IF NOT EXISTS magpie_test CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'magpie'@'127.0.0.1' IDENTIFIED BY 'magpie';
CREATE USER IF NOT EXISTS 'magpie'@'localhost' IDENTIFIED BY 'magpie';
GRANT ALL PRIVILEGES ON magpie_test.* TO 'magpie'@'127.0.0.1';
GRANT ALL PRIVILEGES ON magpie_test.* TO 'magpie'@'localhost';
GRANT ALL PRIVILEGES ON `magpie\_t%`.* TO 'magpie'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `magpie\_t%`.* TO 'magpie'@'localhost';
FLUSH PRIVILEGES;
EOF
    echo "127.0.0.1:$port:magpie:magpie:magpie_test"
    ;;
stop)
    [ -d "$dir" ] || { echo "mariadb.sh: no such directory $dir" >&2; exit 1; }
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/mysqld.pid" ] || { echo "mariadb.sh: no server in $dir" >&2; exit 0; }
    pid=$(cat "$dir/mysqld.pid")
    mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -u "$me" shutdown \
        >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 300 ]; then
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$dir/mysqld.pid"
    ;;
*)
    usage
    ;;
esac
