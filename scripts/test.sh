#!/usr/bin/env bash
# Configure, build and run all of tether's tests: scripts/test.sh
#
# Environment (all optional):
#   BUILD_DIR                 build tree (default build/test)
#   CC                        C compiler (default cc); CXX follows it if unset
#   TETHER_SANITIZE           '', 'address' (ASan+UBSan) or 'thread'
#   TETHER_WERROR             ON/OFF (default ON)
#   CMAKE_BUILD_TYPE          default RelWithDebInfo
#   TETHER_TEST_TIME_FACTOR   scales the tests' generous upper time bounds
#   JOBS                      parallel build and test jobs (default nproc)
#   EXTRA_CMAKE_ARGS          more configure arguments, split on spaces
#                             (e.g. -DTETHER_FAULT_INJECTION=ON)
#   CTEST_ARGS                more ctest arguments, split on spaces (e.g. -L fault
#                             for the fault-injection suites, -R ^scope_)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

BUILD_DIR=${BUILD_DIR:-build/test}
CC=${CC:-cc}
TETHER_SANITIZE=${TETHER_SANITIZE:-}
TETHER_WERROR=${TETHER_WERROR:-ON}
CMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
read -r -a extra_cmake_args <<<"${EXTRA_CMAKE_ARGS:-}"
read -r -a ctest_args <<<"${CTEST_ARGS:-}"

banner() { printf '\n=== test.sh: %s\n' "$*"; }

# The C++ compiler (for the cxx_header test) must match the C one, or a
# sanitized build would mix two sanitizer runtimes.
if [ -z "${CXX:-}" ]; then
    case "$(basename "${CC%% *}")" in
        gcc*) CXX=${CC/gcc/g++} ;;
        clang*) CXX=${CC/clang/clang++} ;;
        cc) CXX=c++ ;;
    esac
    command -v "${CXX:-}" >/dev/null 2>&1 || CXX=
fi
export CC
[ -n "${CXX:-}" ] && export CXX
[ -n "${TETHER_TEST_TIME_FACTOR:-}" ] && export TETHER_TEST_TIME_FACTOR

# --- dependencies ------------------------------------------------------------
# Required: cmake, make, the compiler, pkg-config and Check (every suite is a
# Check suite). Optional: GLib, for the pool_glib example only; CMake skips
# that example when glib-2.0 is missing. Optional: prometheus, whose promtool
# checks the metrics' text format; test_metrics skips that check without it
# (and fails instead under CI=true).
banner "checking dependencies"
can_install=false
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    can_install=true
fi
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v "${CC%% *}" >/dev/null || missing+=("compiler:$CC")
if command -v pkg-config >/dev/null; then
    pkg-config --exists check || missing+=(check)
else
    missing+=(pkg-config)
fi
# The interposition layer's real-client tests: clients and servers. As root
# they are installed like the rest; otherwise their tests are skipped (CMake
# and test/interpose/servers.sh say which and why).
client_missing=()
if command -v pkg-config >/dev/null; then
    for pc in hiredis:libhiredis-dev libcurl:libcurl4-openssl-dev libpq:libpq-dev; do
        pkg-config --exists "${pc%%:*}" || client_missing+=("${pc#*:}")
    done
fi
command -v redis-server >/dev/null || client_missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || client_missing+=(postgresql)
if [ ${#client_missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        missing+=("${client_missing[@]}")
    else
        echo "not root: the real-client tests will skip what needs: ${client_missing[*]}"
        echo "  (sudo apt-get install -y --no-install-recommends ${client_missing[*]})"
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    packages="cmake gcc g++ make pkg-config check libglib2.0-dev"
    packages="$packages redis-server postgresql libhiredis-dev libcurl4-openssl-dev libpq-dev"
    case "$CC" in clang*) packages="$packages clang libclang-rt-dev" ;; esac
    echo "missing: ${missing[*]}"
    if ! $can_install; then
        echo "install them with:"
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $packages"
        exit 1
    fi
    apt-get update
    # shellcheck disable=SC2086 # a word list
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages </dev/null
fi
if ! pkg-config --exists glib-2.0; then
    if $can_install; then
        echo "glib-2.0 missing: installing libglib2.0-dev (for the pool_glib example)"
        if ! { apt-get update &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                   libglib2.0-dev </dev/null; }; then
            echo "could not install libglib2.0-dev"
        fi
    fi
    if ! pkg-config --exists glib-2.0; then
        echo "glib-2.0 not found: going on without it; only the pool_glib example is skipped"
    fi
fi

# promtool (Debian: prometheus) checks the metrics' text format (test_metrics)
# and, with curl, drives the service example (examples/service_test.sh);
# without them test_metrics skips its promtool check and example_service is
# skipped.
if ! command -v promtool >/dev/null || ! command -v curl >/dev/null; then
    if $can_install; then
        echo "promtool or curl missing: installing prometheus curl (metrics format check, service example)"
        if ! { apt-get update &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                   prometheus curl </dev/null; }; then
            echo "could not install prometheus curl"
        fi
    fi
    if ! command -v promtool >/dev/null || ! command -v curl >/dev/null; then
        echo "promtool or curl not found: going on without them; test_metrics skips its promtool"
        echo "check and the example_service test is skipped"
        echo "  (sudo apt-get install -y --no-install-recommends prometheus curl)"
    fi
fi

# --- configure ---------------------------------------------------------------
# CMake reads CC/CXX only when it first configures a tree: start the tree
# afresh if it was configured with another compiler.
cache=$BUILD_DIR/CMakeCache.txt
if [ -f "$cache" ]; then
    cached=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$cache")
    wanted=$(command -v "${CC%% *}")
    if [ "$(readlink -f "$cached")" != "$(readlink -f "$wanted")" ]; then
        echo "$BUILD_DIR was configured with $cached, not $wanted: reconfiguring from scratch"
        rm -rf "$cache" "$BUILD_DIR/CMakeFiles"
    fi
fi

banner "configuring $BUILD_DIR (CC=$CC, sanitize='${TETHER_SANITIZE}', werror=$TETHER_WERROR, $CMAKE_BUILD_TYPE)"
cmake -S . -B "$BUILD_DIR" \
      -DCMAKE_BUILD_TYPE="$CMAKE_BUILD_TYPE" \
      -DTETHER_BUILD_TESTS=ON -DTETHER_BUILD_EXAMPLES=ON -DTETHER_BUILD_BENCH=ON \
      -DTETHER_WERROR="$TETHER_WERROR" -DTETHER_SANITIZE="$TETHER_SANITIZE" \
      "${extra_cmake_args[@]}"

# --- build and test ------------------------------------------------------------
banner "building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"

banner "running the tests"
ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -j "$JOBS" "${ctest_args[@]}"
