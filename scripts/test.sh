#!/bin/bash
# test.sh - builds Magpie twice and runs the whole test suite.
#
#   ./scripts/test.sh              (as root on a fresh Debian 12; .ci/run calls it)
#
# 1. installs what the tests need (scripts/install-deps.sh test: MariaDB,
#    slixmpp, libstrophe, cmocka, clang for the fuzz stage; no Prosody)
# 2. builds out of tree, twice: build/ (normal) and build-asan/
#    (./configure --enable-sanitizers: AddressSanitizer + UBSan)
# 3. runs tests/run-all.sh: everything against build-asan/ (unit tests,
#    all integration tests, conformance, and the libFuzzer targets for a
#    short fixed time each: tests/fuzz/run.sh, built with clang in
#    build-asan/fuzz/), then unit tests, a quick integration subset and
#    conformance against build/
# 4. ends with ONE line "N passed, M failed, K skipped" summing both
#    (skipped: tests that do not apply to a run, which fail nothing); exits
#    non-zero if anything failed (a build failure counts as a failure).
#
# Out-of-tree builds need an unconfigured source tree; if the tree was
# configured in place (e.g. by scripts/run-server.sh), a clean copy of the
# sources (git ls-files) in build/.src is configured instead.
#
# Environment: SKIP_DEPS=1 skips the package installation; JOBS=N make
# parallelism (default: number of CPUs); ONLY=asan|normal runs one build;
# MAGPIE_FUZZ_SECONDS=N fuzzes each target N seconds (default 20; 0 skips
# the fuzz stage).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 1)}
ONLY=${ONLY:-}
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
SUMMARY=""
T0=$(date +%s)

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    ./scripts/install-deps.sh test || { echo "test.sh: dependency installation failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
fi

# the source tree to configure from
SRC="$ROOT"
if [ -f "$ROOT/config.status" ] || [ -f "$ROOT/Makefile" ]; then
    SRC="$ROOT/build/.src"
    echo "=== source tree is configured in place: using a clean copy in $SRC"
    rm -rf "$SRC"
    mkdir -p "$SRC"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | grep -zv -e '^build/' -e '^build-asan/' \
        | xargs -0 -r cp -p --parents -t "$SRC" 2>/dev/null) || {
        echo "test.sh: cannot copy the sources (is this a git checkout?)"
        echo "0 passed, 1 failed, 0 skipped"
        exit 1
    }
fi
if [ ! -x "$SRC/configure" ]; then
    echo "=== ./autogen.sh"
    (cd "$SRC" && ./autogen.sh) || { echo "test.sh: autogen.sh failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
fi

# build DIR CONFIGURE-ARGS... : configure and build one tree, with the unit
# test programs and the libstrophe client
build() {
    local dir=$1
    shift
    echo "=== build $dir ($*)"
    mkdir -p "$ROOT/$dir"
    (cd "$ROOT/$dir" &&
        { [ -f config.status ] && [ config.status -nt "$SRC/configure" ] ||
            "$SRC/configure" "$@"; } &&
        make -j"$JOBS" &&
        make -j"$JOBS" check TESTS=)      # builds check_PROGRAMS: unit tests, strophe_client
}

# suite NAME DIR RUN-ALL-ARGS... : build results + run-all.sh, add up counts
suite() {
    local name=$1 dir=$2 log line p f s
    shift 2
    log="$ROOT/$dir/run-all.log"
    "$ROOT/tests/run-all.sh" "$@" "$ROOT/$dir" 2>&1 | tee "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" | tail -n 1)
    s=0
    if [ -z "$line" ]; then
        p=0
        f=1
        echo "FAIL $name: run-all.sh printed no summary"
    else
        p=${line%% passed*}
        f=${line#*, }
        f=${f%% failed*}
        case "$line" in
        *skipped) s=${line##*failed, }; s=${s%% skipped*} ;;
        esac
    fi
    TOTAL_PASSED=$((TOTAL_PASSED + p))
    TOTAL_FAILED=$((TOTAL_FAILED + f))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + s))
    SUMMARY="$SUMMARY
  $name: $p passed, $f failed, $s skipped"
}

FUZZ_ARG=--fuzz
[ "${MAGPIE_FUZZ_SECONDS:-20}" = 0 ] && FUZZ_ARG=""
if [ "$ONLY" != normal ]; then
    if build build-asan --enable-sanitizers; then
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            suite "sanitizer build (build-asan)" build-asan $FUZZ_ARG
    else
        echo "FAIL build: sanitizer build failed"
        TOTAL_FAILED=$((TOTAL_FAILED + 1))
        SUMMARY="$SUMMARY
  sanitizer build (build-asan): BUILD FAILED"
    fi
fi
if [ "$ONLY" != asan ]; then
    if build build; then
        suite "normal build (build)" build --quick
    else
        echo "FAIL build: normal build failed"
        TOTAL_FAILED=$((TOTAL_FAILED + 1))
        SUMMARY="$SUMMARY
  normal build (build): BUILD FAILED"
    fi
fi

echo
echo "=== test.sh finished in $(( $(date +%s) - T0 ))s:$SUMMARY"
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
[ "$TOTAL_FAILED" -eq 0 ]
