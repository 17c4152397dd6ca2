#!/usr/bin/env bash
# examples/service_test.sh SERVICE — drive examples/service.c with a real
# HTTP client under load and check what it promises (CTest: example_service).
#
#   1. 2,000 requests, 50 at a time (curl --parallel), half to /a (fail-fast)
#      and half to /b (supervisor); 20% of them stall the stock backend (10%
#      of all backend calls), 5% make it fail, 10% carry a tighter
#      grpc-timeout (80 ms) than the 250 ms SLO budget.
#   2. Every response has the status and partial marker its request calls
#      for, and arrives by its deadline plus a generous bound.
#   3. /metrics passes `promtool check metrics`, and its counters moved by
#      exactly the requests sent.
#   4. The service's thread count (/proc/PID/status) is back at its baseline.
#   5. SIGUSR2 writes the scope dump; SIGTERM under load exits 0 in time.
# Prints p50/p99/max latency. Bounds scale with TETHER_TEST_TIME_FACTOR.
set -euo pipefail

service=${1:?usage: service_test.sh path/to/service}
factor=${TETHER_TEST_TIME_FACTOR:-1}
total=${SERVICE_TEST_REQUESTS:-2000}
parallel=50
slo_ms=250
bound_ms=$(awk -v f="$factor" 'BEGIN { printf "%d", 200 * (f > 1 ? f : 1) }')

for tool in curl promtool; do
    if ! command -v "$tool" >/dev/null; then
        echo "service_test: $tool is missing (Debian: curl, prometheus)"
        [ "${CI:-}" = true ] && exit 1
        exit 77 # skipped
    fi
done

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "UNEXPECTED: $*"
    echo "--- service stderr (tail)"
    tail -n 40 "$work/stderr" || true
    exit 1
}
ms_now() { echo $(($(date +%s%N) / 1000000)); }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$pid/status"; }

# Wait until the thread count has not changed for 1.5 s (parked reusable
# threads leave after 1 s idle); prints it. Fails after 20 s x factor.
settled_threads() {
    local last now stable=0 limit=$(($(ms_now) + 20000 * ${factor%.*}))
    last=$(threads)
    while [ "$stable" -lt 15 ]; do
        sleep 0.1
        now=$(threads)
        if [ "$now" = "$last" ]; then stable=$((stable + 1)); else stable=0; last=$now; fi
        [ "$(ms_now)" -lt "$limit" ] || fail "the thread count never settled (last $now)"
    done
    echo "$last"
}

start_service() {
    "$service" --port 0 --slo-ms "$slo_ms" >"$work/stdout" 2>"$work/stderr" &
    pid=$!
    local i
    for i in $(seq 1 $((100 * ${factor%.*}))); do
        port=$(sed -n 's/^service: listening on 127.0.0.1:\([0-9]*\) .*/\1/p' "$work/stdout")
        [ -n "$port" ] && return 0
        kill -0 "$pid" 2>/dev/null || fail "the service exited at start"
        sleep 0.05
    done
    fail "the service never said where it listens"
}

# metric FILE NAME [LABEL=VALUE...]: the sum of a family's samples in a
# saved /metrics file whose labels include every one given.
metric() {
    local file=$1 name=$2
    shift 2
    awk -v n="$name" -v want="$*" '
        BEGIN { k = split(want, w, " ") }
        index($0, n "{") == 1 || index($0, n " ") == 1 {
            for (i = 1; i <= k; i++) {
                split(w[i], kv, "=")
                if (!index($0, kv[1] "=\"" kv[2] "\"")) next
            }
            sum += $NF
        }
        END { printf "%d\n", sum }' "$file"
}
# moved NAME [LABEL=VALUE...]: how much it moved during the load.
moved() {
    echo $(($(metric "$work/metrics.after" "$@") - $(metric "$work/metrics.before" "$@")))
}

start_service
base="http://127.0.0.1:$port"
echo "service: pid $pid, port $port; $total requests, $parallel at a time, bound +${bound_ms} ms"

# --- warm-up and baseline ------------------------------------------------------
for u in /a /b '/a?stock=stall' '/b?stock=fail'; do
    curl -s -o /dev/null "$base$u" || fail "warm-up request $u"
done
# Bad input: an answer that says what is wrong, and the service goes on.
check_status() {
    local want=$1 got
    shift
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@") || true
    [ "$got" = "$want" ] || fail "curl $*: status $got, wanted $want"
}
check_status 400 -H 'grpc-timeout: 12x' "$base/a"
check_status 400 -H 'grpc-timeout: 123456789m' "$base/a"
check_status 400 "$base/b?stock=sometimes"
check_status 400 -d 'a body' -X GET "$base/a"
check_status 405 -X DELETE "$base/a"
check_status 404 "$base/nothing-here"
check_status 431 -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' x)" "$base/a"
bad_line=$(printf 'NONSENSE\r\n\r\n' | timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; cat >&3; head -n 1 <&3")
[ "${bad_line%$'\r'}" = "HTTP/1.1 400 Bad Request" ] || fail "a malformed request line: '$bad_line'"
check_status 200 -H 'grpc-timeout: 1S' "$base/a"
echo "bad input: 400, 405, 404 and 431 answered; the service goes on"
baseline=$(settled_threads)
curl -s "$base/metrics" >"$work/metrics.before" || fail "GET /metrics"

# --- the load --------------------------------------------------------------------
# One curl config: a group per request (url, header, write-out), split by
# "next"; the expected status and marker ride along in the query (ignored
# by the service: unknown keys are).
RANDOM=14
fmt='%{url} %{http_code} %{time_total} %header{x-deadline-ms} [%header{x-partial}] %header{x-outcome}\n'
: >"$work/load.cfg"
for i in $(seq 1 "$total"); do
    ep=$([ $((RANDOM % 2)) -eq 0 ] && echo a || echo b)
    r=$((RANDOM % 100))
    mode=ok
    [ "$r" -lt 20 ] && mode=stall
    [ "$r" -ge 20 ] && [ "$r" -lt 25 ] && mode=fail
    budget=$slo_ms
    [ $((RANDOM % 10)) -eq 0 ] && budget=80
    {
        echo "url = \"$base/$ep?stock=$mode&budget=$budget&n=$i\""
        [ "$budget" != "$slo_ms" ] && echo "header = \"grpc-timeout: ${budget}m\""
        echo "output = \"/dev/null\""
        echo "write-out = \"$fmt\""
        [ "$i" -lt "$total" ] && echo next
    } >>"$work/load.cfg"
done
t0=$(ms_now)
curl -s --parallel --parallel-max "$parallel" -K "$work/load.cfg" >"$work/load.out" 2>>"$work/curl.err" ||
    fail "curl reported an error: $(head -c 300 "$work/curl.err")"
t1=$(ms_now)
[ "$(wc -l <"$work/load.out")" -eq "$total" ] || fail "$(wc -l <"$work/load.out") responses for $total requests"

# --- every response: status, marker, deadline ------------------------------------
awk -v bound="$bound_ms" -v slo="$slo_ms" -v out="$work/lat" '
    {
        url = $1; code = $2; ms = $3 * 1000; deadline = $4; marker = $5
        ep = url ~ /\/a\?/ ? "a" : "b"
        match(url, /stock=[a-z]+/); mode = substr(url, RSTART + 6, RLENGTH - 6)
        match(url, /budget=[0-9]+/); budget = substr(url, RSTART + 7, RLENGTH - 7) + 0
        want = ep == "a" ? (mode == "ok" ? 200 : mode == "stall" ? 504 : 502) : 200
        wmark = ep == "b" && mode != "ok" ? "[stock]" : "[]"
        # On a slow machine (a sanitizer) a call can run out of its own time
        # (at most 120 ms, 20 ms below the budget) whatever its backend was
        # told: once the client has waited that long, a 504 or (on /b) a
        # partial answer missing either backend is the right answer too.
        child = budget - (budget / 4 < 20 ? budget / 4 : 20); if (child > 120) child = 120
        if (ms >= child && code != want && (code == 504 || (ep == "b" && code == 200 && marker != "[]"))) {
            slow++; want = code; wmark = code == 504 ? "[]" : marker
        }
        if (code != want || marker != wmark) {
            printf "%s: status %s %s, wanted %d %s\n", url, code, marker, want, wmark; bad++
        }
        if (deadline + 0 != budget) { printf "%s: deadline %s ms, sent %d\n", url, deadline, budget; bad++ }
        if (ms > budget + bound) { printf "%s: %.1f ms, deadline %d ms + %d\n", url, ms, budget, bound; bad++ }
        n[ep " " code " " marker]++
        print ms > out
    }
    END {
        for (k in n) printf "  %-22s %5d\n", k, n[k]
        if (slow) printf "  (%d of them out of time for lack of CPU, not because of a stall)\n", slow
        exit bad > 0
    }' "$work/load.out" | sort || fail "responses that break the contract (above)"
sort -n "$work/lat" | awk -v wall=$((t1 - t0)) '
    { v[NR] = $1 }
    END {
        p50 = v[int(NR * 0.50 + 0.5)]; p99 = v[int(NR * 0.99 + 0.5)]
        printf "latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d requests in %d ms (%.0f req/s)\n",
               p50, p99, v[NR], NR, wall, NR * 1000 / wall
    }'

# --- /metrics ------------------------------------------------------------------------
curl -s "$base/metrics" >"$work/metrics.after" || fail "GET /metrics"
promtool check metrics <"$work/metrics.after" || fail "promtool check metrics"
echo "promtool check metrics: ok ($(grep -vc '^#' "$work/metrics.after") samples)"
# The service's counters (by status) and tether's (by scope name, which is
# the endpoint): each moved by exactly what the answers say happened.
for ep in a b; do
    sent=$(grep -c "/$ep?" "$work/load.out" || true)
    for code in 200 502 504; do
        n=$(awk -v ep="/$ep?" -v c="$code" 'index($1, ep) && $2 == c' "$work/load.out" | wc -l)
        m=$(moved service_http_requests_total endpoint="/$ep" code="$code")
        [ "$n" -eq "$m" ] || fail "/$ep $code: $n answered, the counter moved by $m"
    done
    m=$(moved service_http_requests_total endpoint="/$ep")
    [ "$sent" -eq "$m" ] || fail "/$ep: $sent requests sent, service_http_requests_total moved by $m"
    m=$(moved tether_scopes_opened_total scope="/$ep")
    [ "$sent" -eq "$m" ] || fail "/$ep: $sent requests sent, tether_scopes_opened_total moved by $m"
    for outcome in ok partial failed deadline_exceeded canceled; do
        n=$(awk -v ep="/$ep?" -v o="$outcome" 'index($1, ep) && $NF == o' "$work/load.out" | wc -l)
        m=$(moved tether_scope_outcomes_total scope="/$ep" outcome="$outcome")
        [ "$n" -eq "$m" ] || fail "/$ep: $n answers say $outcome, tether_scope_outcomes_total moved by $m"
    done
    for gauge in tether_scopes_live tether_children_live; do
        m=$(metric "$work/metrics.after" $gauge scope="/$ep")
        [ "$m" -eq 0 ] || fail "/$ep: $gauge is $m after the load"
    done
done
m=$(metric "$work/metrics.after" tether_children_left_running_total)
[ "$m" -eq 0 ] || fail "tether_children_left_running_total is $m"
partial=$(grep -c '\[stock\] partial$' "$work/load.out" || true)
m=$(moved service_http_partial_responses_total endpoint=/b)
[ "$partial" -eq "$m" ] || fail "$partial partial answers, the counter moved by $m"
conv_n=$(moved tether_scope_convergence_seconds_count scope=/a)
conv_s=$(awk '/^tether_scope_convergence_seconds_sum\{scope="\/a"\}/ { print $NF }' "$work/metrics.after")
echo "metrics: the counters moved by exactly the requests sent ($partial partial); /a canceled" \
    "$conv_n times, $(awk -v s="$conv_s" -v n="$(metric "$work/metrics.after" \
        tether_scope_convergence_seconds_count scope=/a)" 'BEGIN { printf "%.3f", n ? s / n * 1e3 : 0 }')" \
    "ms from cancel to the last child's exit on average"

# --- threads back at the baseline -------------------------------------------------
after=$(settled_threads)
[ "$after" -eq "$baseline" ] || fail "$after threads after the load, $baseline before"
echo "threads: $after after the load, $baseline before"

# stalled_load N FILE URL: N requests to URL, 50 at a time, in the
# background ($load); their status codes go to FILE. Returns once at least
# 20 threads more than the baseline run in the service: requests in flight.
stalled_load() {
    local i
    for i in $(seq 1 "$1"); do
        printf 'url = "%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$3"
        [ "$i" -lt "$1" ] && echo next
    done >"$work/stalled.cfg"
    curl -s --parallel --parallel-max "$parallel" -K "$work/stalled.cfg" >"$2" 2>>"$work/curl.err" &
    load=$!
    for i in $(seq 1 $((200 * ${factor%.*}))); do
        [ "$(threads)" -ge $((baseline + 20)) ] && return 0
        sleep 0.01
    done
    fail "no requests in flight: $(threads) threads, $baseline at rest"
}

# --- SIGUSR2: the dump, with requests in flight -----------------------------------
stalled_load 100 "$work/usr2.out" "$base/a?stock=stall"
kill -USR2 "$pid"
wait "$load" || true
for i in $(seq 1 $((50 * ${factor%.*}))); do
    grep -q 'connections' "$work/stderr" && break
    sleep 0.05
done
grep -q 'connections' "$work/stderr" || fail "no dump on stderr after SIGUSR2"
grep -q "scope '/a'.*left" "$work/stderr" || fail "the dump shows no request's scope and deadline"
grep -q "context 'req-[0-9]*'" "$work/stderr" || fail "the dump shows no request's id (context)"
echo "SIGUSR2: a dump of $(grep -c . "$work/stderr") lines, $(grep -c "context 'req-" "$work/stderr" || true) showing a request's id"

# --- SIGTERM under load ------------------------------------------------------------
stalled_load 400 "$work/term.out" "$base/b?stock=stall&users=stall"
term=$(ms_now)
kill -TERM "$pid"
limit=$((term + 2000 * ${factor%.*}))
while kill -0 "$pid" 2>/dev/null && [ "$(ms_now)" -lt "$limit" ]; do sleep 0.01; done
kill -0 "$pid" 2>/dev/null && fail "still running $((limit - term)) ms after SIGTERM"
status=0
wait "$pid" || status=$?
stopped=$(($(ms_now) - term))
pid=
wait "$load" || true
[ "$status" -eq 0 ] || fail "exit status $status after SIGTERM"
grep -q 'stopped (canceled, cause signal)' "$work/stderr" || fail "no clean stop reported"
# Before the signal: 504 (both backends stalled); in flight: 503; after: no
# connection (000). Nothing else.
codes=$(sort "$work/term.out" | uniq -c | awk '{ printf "%s%d x %s", (NR > 1 ? ", " : ""), $1, $2 }')
grep -qv -e '^503$' -e '^504$' -e '^000$' "$work/term.out" && fail "answers under SIGTERM: $codes"
canceled=$(sed -n 's/.*; \([0-9]*\) requests canceled in flight$/\1/p' "$work/stderr")
if [ "${canceled:-0}" -lt 1 ] || ! grep -q '^503$' "$work/term.out"; then
    fail "no request was canceled in flight (answers: $codes)"
fi
echo "SIGTERM: exit 0 in $stopped ms; $canceled requests canceled in flight; answers: $codes"
echo "service_test: all checks passed"
