#!/usr/bin/env bash
# Private services for libaise's tests and demos, on loopback only, without
# systemd and without touching a system instance.
#
#   scripts/services.sh start postgres    start (idempotent) and print the URL as
#                                          AISE_TEST_POSTGRES_URL=<url> on stdout (and
#                                          AISE_SERVICES_STARTED=postgres if this call started it)
#   scripts/services.sh stop postgres
#   scripts/services.sh status postgres   exit 0 when running
#
# PostgreSQL 15: a throwaway cluster in $AISE_SERVICES_DIR (default
# <tmp>/aise-services.<uid>) on 127.0.0.1:${AISE_PG_PORT:-25433}, user
# postgres with trust authentication on loopback (test clusters only),
# durable defaults kept (fsync and synchronous_commit on). initdb refuses to
# run as root, so as root the server runs as the postgres user.
# (RabbitMQ joins with the distribution issue.)
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BASE=${AISE_SERVICES_DIR:-${TMPDIR:-/tmp}/aise-services.$(id -u)}
PG_DIR="$BASE/pg"
PG_PORT=${AISE_PG_PORT:-25433}
PG_URL="postgresql://postgres@127.0.0.1:${PG_PORT}/postgres"

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pg_running() {
  [ -f "$PG_DIR/data/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

pg_start() {
  [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed (scripts/setup.sh installs it)"
  if pg_running; then
    log "postgres already running on 127.0.0.1:$PG_PORT"
  else
    port_taken "$PG_PORT" && die "127.0.0.1:$PG_PORT is taken by another process; set AISE_PG_PORT"
    local t0 i
    t0=$(date +%s.%N)
    mkdir -p "$PG_DIR/run"
    chmod 755 "$BASE" "$PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$PG_DIR"
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
      as_pg "$PGBIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=trust >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; die "initdb failed (is $BASE reachable by user postgres?)"; }
      cat >>"$PG_DIR/data/postgresql.conf" <<CONF

# libaise test cluster: loopback only, durable defaults kept
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR/run'
max_connections = 200
CONF
    fi
    as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgresql.log" -w -t 60 \
      -o "-p $PG_PORT" start >&2 || { tail -20 "$PG_DIR/postgresql.log" >&2; die "postgres did not start"; }
    for i in $(seq 1 100); do
      "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
      sleep 0.1
    done
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || die "pg_isready failed"
    log "postgres started on 127.0.0.1:$PG_PORT in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
    echo "AISE_SERVICES_STARTED=postgres"
  fi
  echo "AISE_TEST_POSTGRES_URL=$PG_URL"
}

pg_stop() {
  if pg_running; then
    as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >&2
    log "postgres stopped"
  fi
}

action=${1:-}
service=${2:-postgres}
[ "$service" = postgres ] || die "unknown service '$service' (known: postgres)"
case $action in
  start) pg_start ;;
  stop) pg_stop ;;
  status) pg_running && echo "postgres running on 127.0.0.1:$PG_PORT" ;;
  *) die "usage: scripts/services.sh start|stop|status postgres" ;;
esac
