#!/bin/bash
# run.sh - builds the libFuzzer targets and runs each for a fixed time.
#
#   tests/fuzz/run.sh [-b BUILDDIR] [-t TARGET]... [SECONDS_PER_TARGET]
#
# Builds every tests/fuzz/fuzz_*.c (with fuzz_common.c) with clang
# -fsanitize=fuzzer,address,undefined against the core sources (all of
# src/*/*.c but server/main.c and tools/, compiled with the same pkg-config
# flags as the Makefile and put in a static archive, so a target only pulls
# in what it uses), then for each target:
#   1. replays tests/fuzz/crashes/<target>/* (inputs of bugs found before:
#      regression tests), if any;
#   2. fuzzes for SECONDS_PER_TARGET (default 25) starting from the seed
#      corpus tests/fuzz/corpus/<target>/ (fuzz_config also gets the
#      shipped conf/*.conf), with the dictionary tests/fuzz/<target>.dict
#      (for fuzz_a_b: fuzz_a.dict) if present and a -max_len suited to the
#      target. 0 seconds runs the seeds only.
# Prints one line per target, "PASS fuzz <target> (<N> runs, ...)" or
# "FAIL fuzz <target>: <reason> (input saved in <dir>)" - the format
# tests/run-all.sh counts - and exits non-zero if anything failed. Crash,
# leak, timeout and out-of-memory inputs are written into a temporary
# directory named in the FAIL line (reproduce: <BUILDDIR>/<target> <file>).
#
# Options and environment:
#   -b BUILDDIR / MAGPIE_FUZZ_BUILD  where to build (default build-fuzz/ in
#                                    the repository; objects are reused when
#                                    no source or header is newer)
#   -t TARGET                        only this target (repeatable)
#   FUZZ_CORPUS_DIR=DIR              keep the corpora found in DIR/<target>
#                                    (default: a temporary directory, so a
#                                    CI run starts from the seeds only)
#   FUZZ_JOBS=N                      targets fuzzed at once (default 1)
#   FUZZ_EXTRA="..."                 more libFuzzer flags (a long campaign:
#                                    "-fork=1 -ignore_crashes=1" keeps going
#                                    after a crash; inspect the inputs saved)
#   FUZZ_NO_REPLAY=1                 skip step 1
#   CC (default clang), JOBS (compile parallelism, default nproc)
#   MAGPIE_FUZZ_MEM_C/_E/_K          the memory bound (tests/fuzz/fuzz_common.h)
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ=$ROOT/tests/fuzz
BUILD=${MAGPIE_FUZZ_BUILD:-$ROOT/build-fuzz}
TARGETS=""
SECS=25

while [ $# -gt 0 ]; do
    case "$1" in
    -b) BUILD=$2; shift 2 ;;
    -t) TARGETS="$TARGETS $2"; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) SECS=$1; shift ;;
    esac
done
case "$SECS" in ''|*[!0-9]*) echo "run.sh: SECONDS_PER_TARGET must be a number" >&2; exit 2 ;; esac
mkdir -p "$BUILD" && BUILD=$(cd "$BUILD" && pwd) || exit 2
CC=${CC:-clang}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 1)}
FUZZ_JOBS=${FUZZ_JOBS:-1}
[ -n "$TARGETS" ] || TARGETS=$(cd "$FUZZ" && ls fuzz_*.c | grep -v '^fuzz_common\.c$' | sed 's/\.c$//')

# -max_len per target: long enough for what the target parses, short
# enough to keep executions fast
max_len() {
    case "$1" in
    fuzz_xmlstream) echo 4096 ;;          # one feed per byte
    fuzz_xmlstream_chunked) echo 16384 ;;
    fuzz_sasl) echo 2048 ;;
    fuzz_jid) echo 3200 ;;                # past 3 x 1023-byte parts
    fuzz_config) echo 12288 ;;            # conf/magpie.conf is ~9 KB
    *) echo 4096 ;;
    esac
}

fail_all() {
    local t
    for t in $TARGETS; do echo "FAIL fuzz $t: $1"; done
    exit 1
}

# ---- build
command -v "$CC" >/dev/null 2>&1 || fail_all "$CC not found (scripts/install-deps.sh test installs clang and libclang-rt-14-dev)"
PKGS="expat libevent libevent_openssl libevent_pthreads openssl libconfig libidn sqlite3"
if pkg-config --exists libmariadb; then PKGS="$PKGS libmariadb"; else PKGS="$PKGS mysqlclient"; fi
PKG_CFLAGS=$(pkg-config --cflags $PKGS) || fail_all "pkg-config $PKGS failed"
PKG_LIBS=$(pkg-config --libs $PKGS) || fail_all "pkg-config $PKGS failed"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS_ALL="-g -O1 $SAN -std=c11 -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
 -Wmissing-prototypes -D_GNU_SOURCE -I$ROOT/include -I$ROOT/src
 -DMAGPIE_MODULE_DIR=\"/usr/local/lib/magpie\" -DMAGPIE_SYSCONF_DIR=\"/usr/local/etc/magpie\"
 -DMAGPIE_STATE_DIR=\"/usr/local/var/lib/magpie\" $PKG_CFLAGS ${EXTRA_CFLAGS:-}"
LIBS="$PKG_LIBS -lpthread -ldl -lm"
OBJ=$BUILD/obj
mkdir -p "$OBJ"
BUILDLOG=$BUILD/build.log
: >"$BUILDLOG"

echo "=== fuzz: building in $BUILD ($($CC --version | head -n 1))"
T0=$(date +%s)
# newest header: any change rebuilds everything (no dependency tracking)
newest_h=$(ls -t "$ROOT"/src/*/*.h "$ROOT"/include/magpie/*.h "$FUZZ"/*.h "$0" 2>/dev/null | head -n 1)
CORE_SRCS=$(ls "$ROOT"/src/*/*.c | grep -v -e '/server/main\.c$' -e '/tools/')
# objects are named core_<layer>_<file>.o; drop those of vanished sources
objname() { local d; d=$(dirname "$1"); echo "$OBJ/core_$(basename "$d")_$(basename "$1" .c).o"; }
for o in "$OBJ"/core_*.o; do
    [ -e "$o" ] || continue
    keep=0
    for s in $CORE_SRCS; do [ "$(objname "$s")" = "$o" ] && keep=1; done
    [ $keep = 1 ] || rm -f "$o"
done
compile() { # SRC OBJ [fuzzer]
    local extra=-fsanitize=fuzzer-no-link
    if [ "$2" -nt "$1" ] && [ "$2" -nt "$newest_h" ]; then return 0; fi
    # shellcheck disable=SC2086
    if ! $CC $CFLAGS_ALL $extra -c "$1" -o "$2.tmp" >"$2.log" 2>&1; then
        cat "$2.log"
        rm -f "$2.tmp"
        return 1
    fi
    mv "$2.tmp" "$2"
    cat "$2.log"
}
export -f compile
export CC CFLAGS_ALL newest_h
ok=1
for s in $CORE_SRCS; do echo "$s $(objname "$s")"; done |
    xargs -P "$JOBS" -n 2 bash -c 'compile "$0" "$1"' >>"$BUILDLOG" 2>&1 || ok=0
for t in fuzz_common $TARGETS; do
    [ -f "$FUZZ/$t.c" ] || continue
    compile "$FUZZ/$t.c" "$OBJ/$t.o" >>"$BUILDLOG" 2>&1 || ok=0
done
if [ $ok = 1 ]; then
    rm -f "$OBJ/libcore.a"
    ar rcs "$OBJ/libcore.a" "$OBJ"/core_*.o >>"$BUILDLOG" 2>&1 || ok=0
fi
if [ $ok = 0 ]; then
    tail -n 40 "$BUILDLOG"
    fail_all "build failed (log: $BUILDLOG)"
fi
BUILT=""
for t in $TARGETS; do
    if [ ! -f "$FUZZ/$t.c" ]; then
        echo "FAIL fuzz $t: no such target ($FUZZ/$t.c)"
        continue
    fi
    # shellcheck disable=SC2086
    if $CC -g $SAN -fsanitize=fuzzer "$OBJ/$t.o" "$OBJ/fuzz_common.o" "$OBJ/libcore.a" $LIBS \
        -o "$BUILD/$t" >>"$BUILDLOG" 2>&1; then
        BUILT="$BUILT $t"
    else
        tail -n 20 "$BUILDLOG"
        echo "FAIL fuzz $t: link failed (log: $BUILDLOG)"
    fi
done
if grep -q 'warning:' "$BUILDLOG"; then
    echo "(compiler warnings, see $BUILDLOG:)"
    grep 'warning:' "$BUILDLOG" | sort -u | head -n 20
fi
echo "=== fuzz: built in $(( $(date +%s) - T0 ))s; ${SECS}s per target"

# ---- run
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS="suppressions=$FUZZ/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
WORK=$(mktemp -d /tmp/magpie-fuzz.XXXXXX)

# the first line worth quoting from a libFuzzer log
reason_of() {
    local r
    r=$(grep -m 1 -E 'MEMORY BOUND VIOLATED|ROUND TRIP FAILED|EVENTS DIFFER|ERROR DIFFERS|check failed|not idempotent|does not parse|makes no progress|JIDs differ|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY:' "$1" |
        sed -e 's/^==[0-9]*==//' -e 's/^ *//' | cut -c1-220)
    echo "${r:-exit status $2, see $1}"
}

run_target() {
    local t=$1 art log corpus rc runs stats seeds
    art=$WORK/$t
    log=$WORK/$t.log
    mkdir -p "$art"
    # 1. known bugs' inputs
    if [ "${FUZZ_NO_REPLAY:-0}" != 1 ] && ls "$FUZZ/crashes/$t"/* >/dev/null 2>&1; then
        "$BUILD/$t" -runs=1 "$FUZZ/crashes/$t"/* >"$WORK/$t.replay.log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            cp "$FUZZ/crashes/$t"/* "$art/" 2>/dev/null
            echo "FAIL fuzz $t: a saved input in tests/fuzz/crashes/$t fails again: $(reason_of "$WORK/$t.replay.log" $rc) (inputs in $art, log $WORK/$t.replay.log)"
            return
        fi
    fi
    # 2. fuzzing
    if [ -n "${FUZZ_CORPUS_DIR:-}" ]; then
        corpus=$FUZZ_CORPUS_DIR/$t
    else
        corpus=$WORK/corpus-$t
    fi
    mkdir -p "$corpus"
    seeds=$FUZZ/corpus/$t
    local extra_seeds=""
    if [ "$t" = fuzz_config ]; then
        extra_seeds=$WORK/conf-seeds
        mkdir -p "$extra_seeds"
        cp "$ROOT"/conf/*.conf "$ROOT"/conf/examples/*.conf "$extra_seeds/" 2>/dev/null
    fi
    local dict="" time_flag=-max_total_time=$SECS
    [ "$SECS" = 0 ] && time_flag=-runs=0 # the seeds only
    if [ -f "$FUZZ/$t.dict" ]; then
        dict="-dict=$FUZZ/$t.dict"
    elif [ -f "$FUZZ/${t%_*}.dict" ]; then
        dict="-dict=$FUZZ/${t%_*}.dict" # fuzz_xmlstream_chunked: fuzz_xmlstream.dict
    fi
    # shellcheck disable=SC2086
    "$BUILD/$t" $time_flag -max_len="$(max_len "$t")" -timeout=20 \
        -rss_limit_mb=2560 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" \
        $dict ${FUZZ_EXTRA:-} "$corpus" "$seeds" $extra_seeds >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    # -fork mode prints no final stats: its last "#N: cov: .. ft: .. corp: .." line
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+: cov:' "$log" | tail -n 1 | tr -dc '0-9')
    stats=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|: cov:)' "$log" | tail -n 1 |
        grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' | sed 's/corp:/corpus/')
    if [ $rc -eq 0 ] && [ -n "$runs" ] && ! ls "$art"/* >/dev/null 2>&1; then
        echo "PASS fuzz $t ($runs runs, $stats)"
        rm -rf "$art"
        [ -n "${FUZZ_CORPUS_DIR:-}" ] || rm -rf "$corpus"
    else
        local a
        a=$(ls "$art"/* 2>/dev/null | head -n 1)
        echo "FAIL fuzz $t: $(reason_of "$log" $rc) (input: ${a:-none saved}; log: $log; reproduce: $BUILD/$t ${a:-<input>})"
    fi
}

export -f run_target reason_of max_len
export BUILD FUZZ ROOT WORK SECS
FAILED=0
for t in $BUILT; do echo "$t"; done |
    xargs -r -P "$FUZZ_JOBS" -n 1 bash -c 'run_target "$0"' | tee "$WORK/results"
grep -q '^FAIL ' "$WORK/results" && FAILED=1
if [ $FAILED -eq 0 ] && [ "$(echo $BUILT | wc -w)" -eq "$(echo $TARGETS | wc -w)" ]; then
    rm -rf "$WORK"
    exit 0
fi
echo "(fuzz logs and inputs kept in $WORK)"
exit 1
