#!/bin/bash
# run-all.sh - runs the whole test suite against one build tree.
#
#   tests/run-all.sh [--quick] [--fuzz] [--only unit|integration|mariadb|conformance|fuzz] BUILDDIR
#
# 1. the cmocka unit tests: every program BUILDDIR/tests/unit/test_*
#    (build them first: make check TESTS=)
# 2. the integration tests tests/integration/test_*.py (real magpied
#    processes; login and routing with workers=1 and workers=2; MariaDB
#    storage)
# 3. the conformance runner tests/conformance/run.py, if present, with
#    workers=1 and workers=2
# 4. with --fuzz (scripts/test.sh passes it for the sanitizer build only):
#    tests/fuzz/run.sh, every libFuzzer target for MAGPIE_FUZZ_SECONDS
#    (default 20) each, built with clang in BUILDDIR/fuzz; one PASS/FAIL
#    line per target
#
# --quick runs a subset of the integration tests and the conformance
# scripts, all with workers=2, for a second build. Every test prints
# PASS/FAIL/SKIP (a test that does not apply, e.g. cross-worker routing with
# one worker, or cmocka's skipped tests); failures are repeated at the end,
# and the last line is "N passed, M failed, K skipped". Exit status 0 only
# if nothing failed (skipped tests do not fail the run).
#
# Environment: PYTHON (default /usr/bin/python3), MAGPIE_TEST_TIMEOUT (per
# script, seconds, default 900), ASAN_OPTIONS/UBSAN_OPTIONS as usual.

set -u

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
SCRIPT_TIMEOUT=${MAGPIE_TEST_TIMEOUT:-900}
QUICK=0
FUZZ=0
ONLY=""

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1; shift ;;
    --fuzz) FUZZ=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "run-all.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--quick] [--fuzz] [--only unit|integration|mariadb|conformance|fuzz] BUILDDIR" >&2; exit 2; }
BUILDDIR=$(cd "$1" && pwd) || exit 2
export MAGPIE_BUILDDIR="$BUILDDIR"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

PASSED=0
FAILED=0
SKIPPED=0
FAILURES=""
LOGDIR=$(mktemp -d /tmp/magpie-run-all.XXXXXX)

note_failure() {
    FAILURES="$FAILURES
  $1"
}

sanitizer_in() {
    grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$1"
}

# A throwaway MariaDB for the unit tests' MySQL storage group (test_storage
# skips it without MAGPIE_TEST_MYSQL); stopped on exit.
MDB_DIR=""
start_mariadb() {
    local port
    [ -n "${MAGPIE_TEST_MYSQL:-}" ] && return 0
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || return 0
    PATH=$PATH:/usr/sbin
    port=$(cd "$SRCDIR/tests/lib" && "$PYTHON" -c 'from magpie_fixture import free_port; print(free_port())')
    MDB_DIR="$LOGDIR/mariadb"
    if MAGPIE_TEST_MYSQL=$(sh "$SRCDIR/tests/mariadb.sh" start "$MDB_DIR" "$port" 2>"$LOGDIR/mariadb-start.log" | tail -n 1) \
        && [ -n "$MAGPIE_TEST_MYSQL" ]; then
        export MAGPIE_TEST_MYSQL
        echo "(MariaDB for the unit tests on 127.0.0.1:$port)"
    else
        unset MAGPIE_TEST_MYSQL
        echo "(could not start MariaDB for the unit tests: $(cat "$LOGDIR/mariadb-start.log"))"
    fi
}
stop_mariadb() {
    if [ -n "$MDB_DIR" ]; then
        sh "$SRCDIR/tests/mariadb.sh" stop "$MDB_DIR" >/dev/null 2>&1
        rm -rf "$MDB_DIR"
        MDB_DIR=""
        unset MAGPIE_TEST_MYSQL
    fi
}
trap stop_mariadb EXIT

# ---- 1. unit tests
run_unit() {
    local t name out p f sk rc found=0
    echo "=== unit tests ($BUILDDIR/tests/unit)"
    [ -f "$SRCDIR/tests/mariadb.sh" ] && start_mariadb
    for t in "$BUILDDIR"/tests/unit/test_*; do
        case "$t" in *.o|*.c|*.lo|*.log|*.trs|*.la) continue ;; esac
        [ -f "$t" ] && [ -x "$t" ] || continue
        found=1
        name=$(basename "$t")
        out="$LOGDIR/unit-$name.log"
        (cd "$BUILDDIR" && timeout "$SCRIPT_TIMEOUT" "$t") >"$out" 2>&1
        rc=$?
        p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
        f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
        PASSED=$((PASSED + p))
        FAILED=$((FAILED + f))
        if [ "$f" -gt 0 ]; then
            # the names cmocka lists after "[  FAILED  ] N test(s), listed below:"
            grep '^\[  FAILED  \] ' "$out" | grep -v 'test(s)' | sort -u | while read -r _ _ _ tn; do
                echo "FAIL unit $name: $tn"
            done
            while read -r tn; do [ -n "$tn" ] && note_failure "unit $name: $tn"; done <<EOF
$(grep '^\[  FAILED  \] ' "$out" | grep -v 'test(s)' | sed 's/^\[  FAILED  \] //' | sort -u)
EOF
        fi
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ] || sanitizer_in "$out"; then
            FAILED=$((FAILED + 1))
            echo "FAIL unit $name: exit status $rc$(sanitizer_in "$out" && echo ', sanitizer report'); output tail:"
            tail -n 30 "$out" | sed 's/^/    /'
            note_failure "unit $name: exit status $rc (see $out)"
        fi
        sk=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
        SKIPPED=$((SKIPPED + sk))
        echo "unit $name: $p passed, $f failed, $sk skipped (exit $rc)"
    done
    stop_mariadb
    if [ $found -eq 0 ]; then
        FAILED=$((FAILED + 1))
        echo "FAIL unit: no unit test programs in $BUILDDIR/tests/unit (run: make check TESTS=)"
        note_failure "unit: no unit test programs built"
    fi
}

# run_script NAME CMD... : runs a PASS/FAIL-printing script, counts its lines
run_script() {
    local name=$1 out rc p f s
    shift
    out="$LOGDIR/$(echo "$name" | tr ' /=' '___').log"
    echo "=== $name"
    (cd "$SRCDIR" && timeout "$SCRIPT_TIMEOUT" "$@") 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    p=$(grep -c '^PASS ' "$out")
    f=$(grep -c '^FAIL ' "$out")
    s=$(grep -c '^SKIP ' "$out")
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    SKIPPED=$((SKIPPED + s))
    while read -r line; do
        [ -n "$line" ] && note_failure "$name: ${line#FAIL }"
    done <<EOF
$(grep '^FAIL ' "$out" | cut -c1-300)
EOF
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        FAILED=$((FAILED + 1))
        if [ $rc -eq 124 ]; then
            echo "FAIL $name: timed out after ${SCRIPT_TIMEOUT}s"
        else
            echo "FAIL $name: exit status $rc without a FAIL line; output tail:"
            tail -n 30 "$out" | sed 's/^/    /'
        fi
        note_failure "$name: exit status $rc (see $out)"
    fi
}

# ---- 2. integration tests
run_integration() {
    local w
    if [ ! -x "$BUILDDIR/magpied" ]; then
        FAILED=$((FAILED + 1))
        echo "FAIL integration: no magpied in $BUILDDIR"
        note_failure "integration: no magpied in $BUILDDIR"
        return
    fi
    if [ $QUICK -eq 1 ]; then
        for t in 01_login 02_routing 03_server_iq 04_hostile 07_strophe; do
            run_script "integration $t [workers=2]" "$PYTHON" "tests/integration/test_$t.py" "$BUILDDIR" --workers 2
        done
        return
    fi
    for t in "$SRCDIR"/tests/integration/test_*.py; do
        t=$(basename "$t" .py)
        t=${t#test_}
        case "$t" in
        02_routing|01_login|15_domains|20_roster|21_offline|22_carbons|23_blocking|24_vcard|25_private|26_last|27_csi|60_sm_acks|61_sm_resume|62_sm_expiry|63_sm_durable_workers|64_sm_slixmpp|55_mam_archive|56_mam_paging|57_mam_prefs)
            for w in 1 2; do
                run_script "integration $t [workers=$w]" "$PYTHON" "tests/integration/test_$t.py" "$BUILDDIR" --workers $w
            done ;;
        14_fanout)
            run_script "integration $t [workers=2]" "$PYTHON" "tests/integration/test_$t.py" "$BUILDDIR" --workers 2 ;;
        *)
            run_script "integration $t" "$PYTHON" "tests/integration/test_$t.py" "$BUILDDIR" --workers 1 ;;
        esac
    done
}

# ---- 3. conformance scripts (xep/*)
run_conformance() {
    local w ws="1 2"
    [ $QUICK -eq 1 ] && ws=2
    if [ -f "$SRCDIR/tests/conformance/run.py" ]; then
        for w in $ws; do
            run_script "conformance [workers=$w]" "$PYTHON" tests/conformance/run.py --builddir "$BUILDDIR" --workers $w
        done
    else
        echo "=== conformance: tests/conformance/run.py not present, skipped"
    fi
}

# ---- 4. fuzzing (libFuzzer, clang; ASan/UBSan)
run_fuzz() {
    run_script "fuzz" tests/fuzz/run.sh -b "$BUILDDIR/fuzz" "${MAGPIE_FUZZ_SECONDS:-20}"
}

# ---- 2b. the IM and group chat tests again with MariaDB as the store (a
# throwaway mariadbd; each server in them gets a fresh database of its own)
MARIADB_TESTS="18_account_deleted 20_roster 21_offline 22_carbons 23_blocking 24_vcard 25_private 26_last 27_csi 30_muc_basic 33_muc_persist 48_gateway_retention 50_pep 51_pep_caps 52_pep_bookmarks 53_pep_avatar_omemo 55_mam_archive 56_mam_paging 57_mam_prefs 58_mam_slixmpp 60_sm_acks 61_sm_resume 62_sm_expiry 64_sm_slixmpp 65_adhoc 66_admin_adhoc 68_register 69_push 76_upload"
run_mariadb() {
    local t
    [ -f "$SRCDIR/tests/mariadb.sh" ] || return 0
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        echo "SKIP integration on MariaDB: mariadbd is not installed"
        SKIPPED=$((SKIPPED + 1))
        return 0
    fi
    start_mariadb
    if [ -z "${MAGPIE_TEST_MYSQL:-}" ]; then
        FAILED=$((FAILED + 1))
        echo "FAIL integration on MariaDB: the server did not start"
        note_failure "integration on MariaDB: mariadbd did not start"
        return
    fi
    for t in $MARIADB_TESTS; do
        [ -f "$SRCDIR/tests/integration/test_$t.py" ] || continue
        MAGPIE_TEST_STORAGE=mysql run_script "integration $t [mariadb]" "$PYTHON" \
            "tests/integration/test_$t.py" "$BUILDDIR" --workers 1
    done
    stop_mariadb
}

case "$ONLY" in
"") run_unit; run_integration; [ $QUICK -eq 0 ] && run_mariadb; run_conformance; [ $FUZZ -eq 1 ] && run_fuzz ;;
unit) run_unit ;;
integration) run_integration ;;
mariadb) run_mariadb ;;
conformance) run_conformance ;;
fuzz) run_fuzz ;;
*) echo "run-all.sh: --only unit|integration|mariadb|conformance|fuzz" >&2; exit 2 ;;
esac

echo
if [ $FAILED -gt 0 ]; then
    echo "=== summary for $BUILDDIR (logs kept in $LOGDIR)"
    echo "failures:$FAILURES"
else
    echo "=== summary for $BUILDDIR"
    rm -rf "$LOGDIR"
fi
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ $FAILED -eq 0 ]
