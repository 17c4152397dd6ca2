#!/usr/bin/env bash
# Uses tether the ways a downstream project would and checks each works:
#   (a) add_subdirectory() of the source tree;
#   (b) an install, moved elsewhere to prove it is relocatable, used through
#       find_package() and through pkg-config, as a shared and as a
#       static-only install;
#   (c) the shared library exports nothing but tether_* names.
#
# usage: run.sh TETHER_SOURCE_DIR SCRATCH_DIR C_COMPILER
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 TETHER_SOURCE_DIR SCRATCH_DIR C_COMPILER" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
scratch=$2
cc=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jobs=$(nproc 2>/dev/null || echo 2)

rm -rf "$scratch"
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)

# Keep the caller's environment from pointing us at some other tether.
unset CMAKE_PREFIX_PATH PKG_CONFIG_PATH tether_DIR CFLAGS LDFLAGS

step() { printf '\n== consumer: %s\n' "$*"; }
fail() { printf 'consumer: FAIL: %s\n' "$*" >&2; exit 1; }

# --- (a) add_subdirectory ----------------------------------------------------
step "add_subdirectory"
cmake -S "$here/subdir" -B "$scratch/subdir" \
      -DCMAKE_C_COMPILER="$cc" -DTETHER_SOURCE_DIR="$src"
cmake --build "$scratch/subdir" -j "$jobs"
"$scratch/subdir/consumer"

# --- (b) install, move, consume ----------------------------------------------
# $1 = shared|static. Builds and installs tether into a prefix, moves the
# prefix, then builds the consumer against the moved copy three ways.
installed() {
    local kind=$1 shared=ON
    [ "$kind" = static ] && shared=OFF
    local build=$scratch/build-$kind prefix=$scratch/prefix-$kind
    local moved=$scratch/moved/prefix-$kind

    step "install ($kind)"
    # CMAKE_INSTALL_LIBDIR=lib: the same layout on every distribution.
    cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
          -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_EXAMPLES=OFF -DTETHER_BUILD_BENCH=OFF \
          -DTETHER_INSTALL=ON -DTETHER_BUILD_SHARED=$shared \
          -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib
    cmake --build "$build" -j "$jobs"
    cmake --install "$build"

    mkdir -p "$(dirname "$moved")"
    mv "$prefix" "$moved"
    if grep -rlF "$prefix" "$moved/lib/cmake" "$moved/lib/pkgconfig"; then
        fail "installed package files still name the original prefix $prefix"
    fi
    [ -f "$moved/include/tether.h" ] || fail "tether.h not installed"
    [ -f "$moved/include/tether_version.h" ] || fail "tether_version.h not installed"
    for part in "$src"/include/tether/*.h; do
        [ -f "$moved/include/tether/${part##*/}" ] || fail "tether/${part##*/} not installed"
    done

    step "find_package ($kind, moved prefix)"
    cmake -S "$here/installed" -B "$scratch/installed-$kind" \
          -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$moved"
    grep -qF "tether_DIR:PATH=$moved/" "$scratch/installed-$kind/CMakeCache.txt" \
        || fail "find_package did not pick the moved prefix"
    cmake --build "$scratch/installed-$kind" -j "$jobs"
    "$scratch/installed-$kind/consumer"
    if [ "$kind" = shared ]; then
        [ -x "$scratch/installed-$kind/consumer_interpose" ] \
            || fail "find_package gave no tether::interpose"
        "$scratch/installed-$kind/consumer_interpose"
    fi

    step "pkg-config ($kind, moved prefix)"
    export PKG_CONFIG_PATH=$moved/lib/pkgconfig
    local header_version
    header_version=$(sed -n 's/^#define TETHER_VERSION_STRING "\(.*\)"$/\1/p' \
                     "$moved/include/tether_version.h")
    [ "$(pkg-config --modversion tether)" = "$header_version" ] \
        || fail "tether.pc version $(pkg-config --modversion tether) != $header_version"
    local out=$scratch/pkgconfig-$kind
    if [ "$kind" = shared ]; then
        # shellcheck disable=SC2046 # pkg-config output is meant to split
        "$cc" $(pkg-config --cflags tether) "$here/main.c" $(pkg-config --libs tether) \
              -Wl,-rpath,"$moved/lib" -o "$out"
        readelf -d "$out" | grep -q 'NEEDED.*libtether\.so\.0' \
            || fail "pkg-config build is not linked to libtether.so.0"
        # The interposition layer, linked ahead of libc through its .pc file.
        # shellcheck disable=SC2046
        "$cc" $(pkg-config --cflags tether-interpose) "$here/interpose_main.c" \
              $(pkg-config --libs tether-interpose) -Wl,-rpath,"$moved/lib" -o "$out-interpose"
        readelf -d "$out-interpose" | grep -q 'NEEDED.*libtether_interpose\.so\.0' \
            || fail "pkg-config build is not linked to libtether_interpose.so.0"
        "$out-interpose"
    else
        # Only libtether.a is in this prefix, so -ltether can only mean it.
        # shellcheck disable=SC2046
        "$cc" $(pkg-config --cflags tether) "$here/main.c" $(pkg-config --static --libs tether) \
              -o "$out"
        if readelf -d "$out" | grep -q 'NEEDED.*libtether'; then
            fail "static pkg-config build depends on a shared libtether"
        fi
    fi
    "$out"
    unset PKG_CONFIG_PATH
}

installed shared
installed static

# --- (c) exported symbols -------------------------------------------------------
step "exported symbols"
so=$scratch/moved/prefix-shared/lib/libtether.so
readelf -d "$so" | grep -q 'SONAME.*\[libtether\.so\.0\]' || fail "SONAME is not libtether.so.0"
# Every exported name starts with tether_ and is declared in the public
# headers (that admits tether__* helpers a public macro needs, and nothing
# internal). The linker's own markers may appear and are fine.
headers=("$scratch/moved/prefix-shared/include/tether.h" "$scratch/moved/prefix-shared/include/tether/"*.h)
bad=
for sym in $(nm -D --defined-only "$so" | awk '{print $NF}' \
             | grep -Ev '^(_init|_fini|__bss_start|_edata|_end)$'); do
    case "$sym" in
        # The one internal name exported on purpose: the current token's
        # thread-local, read by libtether_interpose.so (src/current.h).
        tether__current) ;;
        tether_*) grep -qw -- "$sym" "${headers[@]}" || bad="$bad $sym" ;;
        *) bad="$bad $sym" ;;
    esac
done
[ -z "$bad" ] || fail "libtether.so exports names that are not declared in the installed headers:$bad"
# A static archive cannot hide names, but every global must still be ours.
bad=$(nm -g --defined-only "$scratch/moved/prefix-static/lib/libtether.a" \
      | awk 'NF == 3 {print $3}' | grep -Ev '^tether_' | tr '\n' ' ' || true)
[ -z "$bad" ] || fail "libtether.a defines unprefixed globals: $bad"

echo "consumer: ok"
