#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for optuna studies shared by many workers
# (Debian's postgresql package: its binaries under /usr/lib/postgresql/<version>/bin).
#
#   scripts/local_postgres.sh start    # idempotent; prints HYLAB_PG_URL=postgresql+psycopg://...
#   scripts/local_postgres.sh status
#   scripts/local_postgres.sh stop
#   scripts/local_postgres.sh url      # the SQLAlchemy URL for hydra.sweeper.storage=
#
# The cluster lives in $HYLAB_PG_DIR (default /tmp/hylab-postgres) and listens on 127.0.0.1:$HYLAB_PG_PORT
# (default 55432) and a socket in that folder; trust authentication for local connections only, no
# fsync (a test database: fast, not crash-safe). PostgreSQL refuses to run as root: as root the server
# runs as the `postgres` system user (created when missing).
set -euo pipefail

STATE=${HYLAB_PG_DIR:-/tmp/hylab-postgres}
PORT=${HYLAB_PG_PORT:-55432}
DB=${HYLAB_PG_DB:-optuna}
DB_USER=hylab
DATA=$STATE/data
URL="postgresql+psycopg://$DB_USER@127.0.0.1:$PORT/$DB"

die() { echo "local_postgres: $*" >&2; exit 1; }

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || die "PostgreSQL server binaries not found: apt-get install postgresql"

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
  mkdir -p "$STATE"
  [ "$(id -u)" = 0 ] && chown postgres: "$STATE"
  if ! running; then
    if [ ! -f "$DATA/PG_VERSION" ]; then
      as_owner "$BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust --no-sync --encoding=UTF8 >"$STATE/initdb.log" 2>&1 \
        || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 60 start \
      -o "-p $PORT -k $STATE -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      >/dev/null || { tail -n 20 "$STATE/server.log" >&2; die "the server did not start (log above)"; }
  fi
  if ! as_owner "$BIN/psql" -h "$STATE" -p "$PORT" -U "$DB_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
    as_owner "$BIN/createdb" -h "$STATE" -p "$PORT" -U "$DB_USER" "$DB"
  fi
  echo "local_postgres: running in $DATA"
  echo "HYLAB_PG_URL=$URL"
}

stop() {
  if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; fi
  echo "local_postgres: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "local_postgres: running ($URL)"; else echo "local_postgres: not running"; exit 1; fi ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
