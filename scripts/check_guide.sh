#!/bin/sh
# The guide's code is real: scripts/check_guide.sh [repository root]
#
# docs/guide.md shows each file of docs/guide/*.c verbatim, in a ```c block
# right after a marker line <!-- file: docs/guide/NAME.c -->. This check fails
# when a block and its file differ, when a ```c block has no marker, when a
# marker names a file that is missing, or when a file of docs/guide/ is not
# shown. (The files themselves are built, and the "after" ones run, by
# examples/CMakeLists.txt.)
set -eu
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
guide=$root/docs/guide.md
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Split the guide's marked blocks into $out/<name>; report unmarked ones.
awk -v out="$out" '
    /^<!-- file: docs\/guide\/[A-Za-z0-9_]+\.c -->$/ {
        name = $3; sub(/^docs\/guide\//, "", name); marked = NR; next
    }
    /^```c$/ {
        if (marked != NR - 1) { printf "%s:%d: a ```c block without a file marker\n", FILENAME, NR; bad = 1 }
        else { file = out "/" name; printf "" > file; inblock = 1 }
        next
    }
    inblock && /^```$/ { inblock = 0; close(file); next }
    inblock { print > file }
    END { if (inblock) { print FILENAME ": an unterminated code block"; bad = 1 } exit bad }
' "$guide"

status=0
for shown in "$out"/*; do
    [ -e "$shown" ] || break
    name=$(basename "$shown")
    if [ ! -f "$root/docs/guide/$name" ]; then
        echo "docs/guide.md shows docs/guide/$name, which does not exist"
        status=1
    elif ! diff -u "$root/docs/guide/$name" "$shown" >"$out/diff" 2>&1; then
        echo "docs/guide.md and docs/guide/$name differ (- file, + guide):"
        cat "$out/diff"
        status=1
    fi
done
n=0
for file in "$root"/docs/guide/*.c; do
    n=$((n + 1))
    name=$(basename "$file")
    if [ ! -f "$out/$name" ]; then
        echo "docs/guide/$name is not shown in docs/guide.md"
        status=1
    fi
done
[ "$status" -eq 0 ] && echo "docs/guide.md: $n code blocks, each the same as its file"
exit "$status"
