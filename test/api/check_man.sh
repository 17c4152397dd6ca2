#!/bin/sh
# check_man.sh INCLUDE_DIR MAN_DIR — the generated man pages cover the API.
#
# Every function declared TETHER_API, and every static inline helper, under
# INCLUDE_DIR must have MAN_DIR/<name>.3 with the sections NAME, SYNOPSIS,
# DESCRIPTION, RETURN VALUE, ERRORS, BLOCKING, THREAD SAFETY and SEE ALSO;
# that page and MAN_DIR/tether.7 must render with `man --warnings -l` without
# printing anything on stderr. Exits 77 (skipped) without man(1).
set -u

include=$1
mandir=$2
status=0

fail() {
    printf 'man_pages: FAIL: %s\n' "$*" >&2
    status=1
}

if ! command -v man >/dev/null 2>&1; then
    echo "man_pages: no man(1) here, skipped"
    exit 77
fi
[ -f "$mandir/tether.7" ] || { fail "$mandir/tether.7 is missing (was tether_man built?)"; exit 1; }

# The name before the first "(" of each declaration line.
names=$(grep -h -E '^(TETHER_API|static inline) ' "$include"/tether.h "$include"/tether/*.h \
        | sed 's/(.*//' | awk '{ n = $NF; sub(/^\*+/, "", n); print n }' | sort -u)
[ -n "$names" ] || { fail "no TETHER_API declarations found under $include"; exit 1; }

count=0
for name in $names; do
    count=$((count + 1))
    page=$mandir/$name.3
    if [ ! -f "$page" ]; then
        fail "$name has no man page ($page)"
        continue
    fi
    for section in NAME SYNOPSIS DESCRIPTION '"RETURN VALUE"' ERRORS BLOCKING '"THREAD SAFETY"' '"SEE ALSO"'; do
        section=$(printf '%s' "$section" | tr -d '"')
        grep -q -e "^\.SH $section\$" -e "^\.SH \"$section\"\$" "$page" \
            || fail "$page has no $section section"
    done
done

for page in "$mandir"/*.3 "$mandir/tether.7"; do
    out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [ -z "$out" ] || fail "man --warnings -l $page: $out"
done

[ $status -eq 0 ] && echo "man_pages: $count functions, every page present and clean"
exit $status
