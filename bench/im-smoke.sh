#!/usr/bin/env bash
# bench/im-smoke.sh - the IM modes of bench/run.sh at tiny sizes (a few
# seconds each): checks that every mode runs and that its counts add up.
#   SERVERS="magpie" (default; "magpie prosody" when Prosody is installed)
#   BUILDDIR, MAGPIE_PORT, PROSODY_PORT: passed to run.sh
# Exit status 0 if every check passed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export SERVERS=${SERVERS:-magpie} SKIP_DEPS=1 HOLD=1 CONCURRENCY=20
fails=0

# field LINE KEY: the value of KEY=... in a RESULT line
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# check MODE CONDITION...: runs the mode, evaluates each "KEY OP VALUE|KEY"
check() {
    local mode=$1 out line srv k op v a b
    shift
    out=$(env MODE="$mode" "$HERE/run.sh" 2>&1)
    for srv in $SERVERS; do
        line=$(printf '%s\n' "$out" | grep "^RESULT server=$srv " | tail -n 1)
        if [ -z "$line" ] || printf '%s' "$line" | grep -q 'error='; then
            echo "FAIL $mode $srv: no result"; printf '%s\n' "$out" | tail -n 15; fails=$((fails + 1)); continue
        fi
        for c in "$@"; do
            read -r k op v <<<"$c"
            a=$(field "$line" "$k")
            b=$v; [[ $v =~ ^[a-z_]+$ ]] && b=$(field "$line" "$v")
            if [ -z "$a" ] || [ "$a" = na ] || ! awk -v a="$a" -v b="$b" "BEGIN { exit !(a $op b) }"; then
                echo "FAIL $mode $srv: $k=$a, expected $op $v ($b)"; fails=$((fails + 1))
            else
                echo "ok   $mode $srv: $k=$a $op $v"
            fi
        done
    done
}

SESSIONS=20 ROSTER=4 check roster "logins_ok == 20" "roster_items == 80" \
    "presences_received >= presences_expected"
SESSIONS=20 OFFLINE_MSGS=10 DURATION=1 check offline "offline_sent == 100" \
    "offline_errors == 0" "offline_delivered == 100" "offline_delayed == 100"
PAIRS=1 MAM_FILL=100 DURATION=1 check mam "mam_filled == 100" "mam_queries > 0" \
    "mam_query_errors == 0" "mam_results_per_query == 50"
[ "$fails" = 0 ] && echo "im-smoke: all passed" || echo "im-smoke: $fails failed"
[ "$fails" = 0 ]
