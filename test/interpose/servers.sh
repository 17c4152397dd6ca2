#!/usr/bin/env bash
# Start and stop the servers of the real-client tests, on 127.0.0.1 only.
#
#   servers.sh start DIR SILENT_SERVER [HTTP_SERVER]
#                                        start them; DIR/env gets their ports
#   servers.sh stop DIR                  stop them by pid, remove their files
#
# Servers: redis-server (random free port, no persistence), a throwaway
# PostgreSQL cluster (initdb into a temporary directory, run as the
# `postgres` user when we are root, unix socket in that directory, listening
# on 127.0.0.1), silent_server (accepts, never answers) and, when given,
# http_server (a small HTTP/1.1 server with a path that stalls).
#
# A server whose package is missing is recorded in DIR/env as skipped, with
# the reason, when we are not root; as root (CI, where .ci/run installs the
# packages) a missing server is an error.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?directory}

log() { printf 'servers.sh: %s\n' "$*"; }

wait_tcp() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

missing() { # name reason
    if [ "$(id -u)" -eq 0 ]; then
        log "$1 is not available: $2 (as root the packages must be installed: .ci/run installs them)"
        exit 1
    fi
    log "SKIPPING $1 tests: $2 (not root, so not installing anything)"
    echo "SKIP_$1=\"$2\"" >>"$dir/env"
}

stop_pid() { # pidfile signal
    [ -f "$1" ] || return 0
    local pid i
    pid=$(cat "$1")
    kill "-$2" "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
        sleep 0.1
    done
    log "pid $pid did not stop on SIG$2: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

start() {
    local silent=${1:?silent_server path}
    mkdir -p "$dir"
    : >"$dir/env"

    # The silent HTTP server.
    rm -f "$dir/http.port"
    "$silent" "$dir/http.port" </dev/null >"$dir/http.log" 2>&1 &
    echo $! >"$dir/http.pid"
    local i
    for ((i = 0; i < 100; i++)); do [ -s "$dir/http.port" ] && break; sleep 0.05; done
    [ -s "$dir/http.port" ] || { log "silent_server did not start"; cat "$dir/http.log"; exit 1; }
    echo "HTTP_PORT=$(cat "$dir/http.port")" >>"$dir/env"

    # The HTTP/1.1 server of the libcurl example.
    if [ -n "${2:-}" ]; then
        rm -f "$dir/http11.port"
        "$2" "$dir/http11.port" </dev/null >"$dir/http11.log" 2>&1 &
        echo $! >"$dir/http11.pid"
        for ((i = 0; i < 100; i++)); do [ -s "$dir/http11.port" ] && break; sleep 0.05; done
        [ -s "$dir/http11.port" ] || { log "http_server did not start"; cat "$dir/http11.log"; exit 1; }
        echo "HTTP11_PORT=$(cat "$dir/http11.port")" >>"$dir/env"
    fi

    # redis-server.
    if command -v redis-server >/dev/null; then
        local port
        port=$("$silent" --free-port)
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --daemonize no --dir "$dir" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
        echo $! >"$dir/redis.pid"
        wait_tcp "$port" 20 || { log "redis-server did not start"; cat "$dir/redis.log"; exit 1; }
        echo "REDIS_PORT=$port" >>"$dir/env"
    else
        missing REDIS "redis-server not found (Debian package redis-server)"
    fi

    # PostgreSQL: a throwaway cluster.
    local pgbin
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ]; then
        local pgdir port as=() user
        pgdir=$(mktemp -d /tmp/tether-pg.XXXXXX)
        echo "$pgdir" >"$dir/pg.dir"
        user=$(id -un)
        if [ "$(id -u)" -eq 0 ]; then
            id postgres >/dev/null 2>&1 || { log "no postgres user"; exit 1; }
            chown postgres: "$pgdir"
            as=(runuser -u postgres --)
            user=postgres
        fi
        "${as[@]}" "$pgbin/initdb" -D "$pgdir/data" -A trust -U "$user" --no-sync \
            -E UTF8 >"$dir/initdb.log" 2>&1 || { log "initdb failed"; cat "$dir/initdb.log"; exit 1; }
        port=$("$silent" --free-port)
        "${as[@]}" "$pgbin/postgres" -D "$pgdir/data" -k "$pgdir" -h 127.0.0.1 -p "$port" \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            </dev/null >"$dir/postgres.log" 2>&1 &
        echo $! >"$dir/pg.pid"
        for ((i = 0; i < 300; i++)); do
            "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
            sleep 0.1
        done
        "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" ||
            { log "postgres did not start"; cat "$dir/postgres.log"; exit 1; }
        # Stop it by the postmaster's own pid (runuser stays in between and
        # does not pass signals on).
        head -n1 "$pgdir/data/postmaster.pid" >"$dir/pg.pid"
        echo "PG_PORT=$port" >>"$dir/env"
        echo "PG_USER=$user" >>"$dir/env"
    else
        missing PG "no PostgreSQL server under /usr/lib/postgresql (Debian package postgresql)"
    fi
    log "started:"
    cat "$dir/env"
}

stop() {
    [ -d "$dir" ] || return 0
    stop_pid "$dir/http.pid" TERM
    stop_pid "$dir/http11.pid" TERM
    stop_pid "$dir/redis.pid" TERM
    stop_pid "$dir/pg.pid" INT # fast shutdown: ends the backends still in pg_sleep
    if [ -f "$dir/pg.dir" ]; then
        rm -rf "$(cat "$dir/pg.dir")"
    fi
    rm -rf "$dir"
    log "stopped"
}

case "$cmd" in
    start) shift 2; start "$@" ;;
    stop) stop ;;
    *) echo "usage: servers.sh start DIR SILENT_SERVER [HTTP_SERVER] | stop DIR" >&2; exit 2 ;;
esac
