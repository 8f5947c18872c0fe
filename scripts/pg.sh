#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a directory of its own,
# on a free port of 127.0.0.1, trust authentication, run as the `postgres` user when started as root.
#   scripts/pg.sh start [DIR]   installs Debian's postgresql if missing, starts the server, writes DIR/env.sh
#                               (KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres) and prints it
#   scripts/pg.sh stop [DIR]    stops the server started in DIR and removes DIR
# DIR defaults to /tmp/kiln-pg.
set -euo pipefail
cmd=${1:-start}
dir=${2:-/tmp/kiln-pg}

bin=""
for v in 17 16 15 14 13; do
  [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] && { bin=/usr/lib/postgresql/$v/bin; break; }
done

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    if [ -z "$bin" ]; then
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
      for v in 17 16 15 14 13; do
        [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] && { bin=/usr/lib/postgresql/$v/bin; break; }
      done
      [ -n "$bin" ] || { echo "pg.sh: PostgreSQL did not install" >&2; exit 1; }
    fi
    if [ -f "$dir/env.sh" ] && [ -f "$dir/data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      cat "$dir/env.sh"
      exit 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Settings for a test server: many connections (several replicas, the suite's servers), no fsync
    # wait beyond what a commit needs, sockets only on loopback.
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
shared_buffers = 128MB
EOF
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "export KILN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres" >"$dir/env.sh"
    cat "$dir/env.sh"
    ;;
  stop)
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
      as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop [DIR]" >&2
    exit 2
    ;;
esac
