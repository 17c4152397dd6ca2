#!/usr/bin/env bash
# Static analysis of tether's library sources: scripts/analyze.sh
#
# Configures a library-only build tree that exports compile_commands.json
# (CMAKE_EXPORT_COMPILE_COMMANDS on the command line, not in CMakeLists.txt),
# then runs cppcheck and clang-tidy over every src/*.c and src/interpose/*.c
# (the interposition layer) with exactly the flags
# the build uses. Exits non-zero if either reports anything.
#
# The tree is configured with TETHER_FAULT_INJECTION=ON: the analyzers then
# see the real branch behind every resource acquisition (the NULL / EAGAIN /
# EMFILE paths) and the injection code itself.
#
# Checks:
#   clang-tidy  the set in .clang-tidy (clang-analyzer-*, bugprone-*, cert-*,
#               concurrency-*, misc-*, portability-*, with the exclusions and
#               the reason for each written there).
#   cppcheck    severities error, warning and portability, with the POSIX
#               library model (--library=posix: fds, pthreads, signals).
#               Style and performance are left out: subjective, or aimed at
#               C++. One id is suppressed everywhere:
#                 incorrectStringBooleanError  TETHER_ASSERT(cond && "why")
#                 is the intended assert-with-a-message idiom.
#               A confirmed false positive elsewhere is silenced at its line
#               with a `// cppcheck-suppress <id>` comment saying why
#               (--inline-suppr), or NOLINT(<check>) for clang-tidy.
#
# Environment (all optional):
#   BUILD_DIR   build tree for the compile commands (default build/analyze)
#   CLANG_TIDY  clang-tidy binary (default clang-tidy)
#   CPPCHECK    cppcheck binary (default cppcheck)
#   JOBS        parallel jobs (default nproc)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

BUILD_DIR=${BUILD_DIR:-build/analyze}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy}
CPPCHECK=${CPPCHECK:-cppcheck}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

banner() { printf '\n=== analyze.sh: %s\n' "$*"; }

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v "$CLANG_TIDY" >/dev/null || missing+=(clang-tidy)
command -v "$CPPCHECK" >/dev/null || missing+=(cppcheck)
if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]} (apt-get install -y --no-install-recommends ${missing[*]})"
    exit 1
fi

banner "configuring $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_BUILD_TYPE=Debug \
      -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_EXAMPLES=OFF -DTETHER_BUILD_BENCH=OFF \
      -DTETHER_INSTALL=OFF -DTETHER_FAULT_INJECTION=ON -DTETHER_SANITIZE= >/dev/null
db=$BUILD_DIR/compile_commands.json
# The version header is generated at configure time; nothing else needs a build.

# Every source must be one the build compiles (else it has no flags).
sources=()
for f in src/*.c src/interpose/*.c; do
    if ! grep -q "\"file\": \"$root/$f\"" "$db"; then
        echo "analyze.sh: $f is not compiled by the build (add it to TETHER_SOURCES)"
        exit 1
    fi
    sources+=("$f")
done

failed=()

banner "cppcheck $("$CPPCHECK" --version | sed 's/^Cppcheck //') on ${#sources[@]} files"
if "$CPPCHECK" --project="$db" --library=posix --enable=warning,portability \
        --inline-suppr --suppress=missingIncludeSystem \
        --suppress=incorrectStringBooleanError \
        --error-exitcode=1 --quiet -j "$JOBS" \
        --template='{file}:{line}:{column}: {severity}: {message} [{id}]'; then
    echo "cppcheck: clean"
else
    failed+=(cppcheck)
fi

banner "clang-tidy $("$CLANG_TIDY" --version | sed -n 's/.*version \([0-9.]*\).*/\1/p') on ${#sources[@]} files (checks: .clang-tidy)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# One process per file, JOBS at a time; any warning is an error (.clang-tidy).
if printf '%s\n' "${sources[@]}" |
        xargs -P "$JOBS" -n 1 "$CLANG_TIDY" -p "$BUILD_DIR" --quiet >"$log" 2>&1; then
    echo "clang-tidy: clean"
else
    grep -E '(warning|error):' "$log" || cat "$log"
    failed+=(clang-tidy)
fi

# The layout is .clang-format's (clang-format 14, the version CI installs
# with clang-tidy): every tracked C file must already be in it.
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
banner "$("$CLANG_FORMAT" --version | sed -n 's/.*version \([0-9.]*\).*/clang-format \1/p') --dry-run on the tracked C files"
mapfile -t formatted < <(git ls-files '*.c' '*.h' '*.cpp')
if "$CLANG_FORMAT" --dry-run --Werror "${formatted[@]}"; then
    echo "clang-format: clean"
else
    failed+=(clang-format)
fi

if [ ${#failed[@]} -gt 0 ]; then
    banner "findings from: ${failed[*]}"
    exit 1
fi
banner "no findings"
