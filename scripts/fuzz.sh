#!/usr/bin/env bash
# Build the libFuzzer harness (test/fuzz/fuzz_api.c, clang, ASan+UBSan) and
# run it over the committed corpus for a fixed time: scripts/fuzz.sh
#
# Environment (all optional):
#   BUILD_DIR      build tree (default build/fuzz)
#   CC             clang to use (default clang; libFuzzer needs clang)
#   FUZZ_SECONDS   total fuzzing time (default 180)
#   FUZZ_TIMEOUT   seconds one input may take before libFuzzer calls it a
#                  hang (default 30; the harness's own watchdog aborts at 5 s
#                  with every thread's stack, so this is only the backstop)
#   FUZZ_RSS_MB    memory limit (default 2048)
#   FUZZ_SCRATCH   where new inputs go (default a fresh temporary directory;
#                  the committed corpus test/fuzz/corpus is only read)
#   FUZZ_ARGS      more libFuzzer arguments (flags, or more corpus
#                  directories to read), split on spaces
#   JOBS           parallel build jobs (default nproc)
# Exits non-zero if the build fails or the fuzzer reports anything (crash,
# sanitizer report, hang, leak, a broken invariant); the reproducer is
# written to $FUZZ_SCRATCH/artifacts/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

BUILD_DIR=${BUILD_DIR:-build/fuzz}
CC=${CC:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-180}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-30}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
read -r -a fuzz_args <<<"${FUZZ_ARGS:-}"

banner() { printf '\n=== fuzz.sh: %s\n' "$*"; }

case "$(basename "${CC%% *}")" in
    clang*) ;;
    *) echo "fuzz.sh: CC must be clang (libFuzzer), not $CC" >&2; exit 2 ;;
esac

banner "configure $BUILD_DIR ($CC)"
cmake -S . -B "$BUILD_DIR" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DTETHER_BUILD_FUZZ=ON -DTETHER_WERROR=ON -DTETHER_SANITIZE= \
      -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_EXAMPLES=OFF -DTETHER_BUILD_BENCH=OFF \
      -DTETHER_INSTALL=OFF -DTETHER_BUILD_SHARED=OFF
banner "build fuzz_api"
cmake --build "$BUILD_DIR" -j "$JOBS" --target fuzz_api

scratch=${FUZZ_SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/tether-fuzz.XXXXXX")}
mkdir -p "$scratch/corpus" "$scratch/artifacts"

# A report stops the run with a stack; leaks are checked at exit of each run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

banner "fuzz for ${FUZZ_SECONDS}s (new inputs in $scratch/corpus)"
# The first corpus directory receives new inputs; the committed one is only
# read. -len_control=0: a program needs its length from the start.
status=0
"$BUILD_DIR/test/fuzz/fuzz_api" \
    -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" \
    -max_len=144 -len_control=0 -print_final_stats=1 \
    -artifact_prefix="$scratch/artifacts/" \
    "$scratch/corpus" test/fuzz/corpus test/fuzz/crashes "${fuzz_args[@]}" || status=$?

if [ "$status" -ne 0 ] || [ -n "$(ls -A "$scratch/artifacts")" ]; then
    banner "FAILED (exit $status); reproducers:"
    ls -l "$scratch/artifacts"
    echo "replay one with: $BUILD_DIR/test/fuzz/fuzz_api <file>  (FUZZ_API_TRACE=1 lists its ops)"
    exit 1
fi
banner "passed; $(ls "$scratch/corpus" | wc -l) new inputs in $scratch/corpus"
