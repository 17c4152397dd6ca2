#!/usr/bin/env python3
"""Regenerate docs/contract-matrix.md from a run of the contract suites.

    rm -f /tmp/rows; for t in build/dev/test/test_contract_*; do
        TETHER_CONTRACT_LIST=/tmp/rows "$t" >/dev/null 2>&1; done
    scripts/contract_matrix.py /tmp/rows > docs/contract-matrix.md

Each line of the listing is "row|expected|test"; a row is named
"function/condition[/token state]". Rows are listed whether they pass or
fail; a test that crashes lists only the rows before the crash (add those
by hand, see the note at the end of the generated file).
"""
import sys

HEADER = """# Contract matrix

One line per row of the contract suites (test/test_contract_*.c): the public
function, the condition, the expected result, and the Check test that holds
the row. Token states: `no-token` (no current token: the raw call),
`live` (a live token without deadline), `bounded` (a live token whose
deadline ends a wait that should not happen), `canceled` / `expired` (an
already-canceled token / a token past its deadline). "as the raw call (r/e)"
means tether must return what the raw call returned in the same test, side
by side (shown: the raw result on the machine that generated this file).

A public function (`grep TETHER_API include/tether.h`) without rows here is
incomplete. Regenerate with scripts/contract_matrix.py (see its header).

The concurrency suite (test/test_shared_objects.c) is listed at the end.

| function | condition | expected | test |
|---|---|---|---|
"""

def main():
    seen = set()
    rows = []
    for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        parts = line.split("|")
        if len(parts) != 3:
            continue
        name, exp, test = parts
        if name in seen:
            continue
        seen.add(name)
        fn, _, cond = name.partition("/")
        rows.append((fn, cond or "-", exp, test))
    out = [HEADER]
    for fn, cond, exp, test in rows:
        esc = lambda s: s.replace("|", "\\|")
        out.append(f"| {esc(fn)} | {esc(cond)} | {esc(exp)} | {test} |\n")
    sys.stdout.write("".join(out))

if __name__ == "__main__":
    main()
