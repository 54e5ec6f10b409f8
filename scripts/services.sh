#!/usr/bin/env bash
# Private services for libaise's tests and demos, on loopback only, without
# systemd and without touching a system instance.
#
#   scripts/services.sh start postgres    start (idempotent) and print the URL as
#                                          AISE_TEST_POSTGRES_URL=<url> on stdout (and
#                                          AISE_SERVICES_STARTED=postgres if this call started it)
#   scripts/services.sh stop postgres
#   scripts/services.sh status postgres   exit 0 when running
#   scripts/services.sh start|stop|status rabbitmq
#                                          the same for RabbitMQ; start prints
#                                          AISE_TEST_RABBITMQ_URL=<url> (and
#                                          AISE_SERVICES_STARTED=rabbitmq)
#   scripts/services.sh disconnect rabbitmq <name>
#                                          closes the broker's client connections whose
#                                          name (connection_name) starts with <name>
#                                          (tests of reconnection use it)
#   scripts/services.sh consumer-timeout rabbitmq <ms>
#                                          sets the broker's consumer timeout for
#                                          channels opened from now on (tests)
#
# PostgreSQL 15: a throwaway cluster in $AISE_SERVICES_DIR (default
# <tmp>/aise-services.<uid>) on 127.0.0.1:${AISE_PG_PORT:-25433}, user
# postgres with trust authentication on loopback (test clusters only),
# durable defaults kept (fsync and synchronous_commit on). initdb refuses to
# run as root, so as root the server runs as the postgres user.
#
# RabbitMQ 3.10: a node named aise-test-<port>@localhost whose config, data
# (mnesia), logs and Erlang cookie live in $AISE_SERVICES_DIR/rabbitmq; AMQP on
# 127.0.0.1:${AISE_RABBITMQ_PORT:-25682}, Erlang distribution on the next port
# and a private epmd on the one after (a system epmd on 4369 is never used or
# stopped). No plugins; user guest (loopback only). The Erlang schedulers do
# not busy-wait (+sbwt none), so an idle broker leaves the CPUs alone. stop
# ends the node (rabbitmqctl stop) and the epmd this script started, by PID.
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


# --- RabbitMQ ----------------------------------------------------------------
RMQ_BIN=${RMQ_BIN:-/usr/lib/rabbitmq/bin}
RMQ_DIR="$BASE/rabbitmq"
RMQ_PORT=${AISE_RABBITMQ_PORT:-25682}
RMQ_DIST_PORT=$((RMQ_PORT + 1))
RMQ_EPMD_PORT=$((RMQ_PORT + 2))
RMQ_NODE="aise-test-${RMQ_PORT}@localhost"
RMQ_URL="amqp://guest:guest@127.0.0.1:${RMQ_PORT}/%2F"

# Everything the rabbitmq scripts read comes from here, never from /etc/rabbitmq.
rmq_env() {
  export HOME="$RMQ_DIR/home" # .erlang.cookie of the server and of the CLI
  export RABBITMQ_NODENAME="$RMQ_NODE"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RMQ_PORT"
  export RABBITMQ_DIST_PORT="$RMQ_DIST_PORT"
  export RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log"
  export RABBITMQ_PID_FILE="$RMQ_DIR/rabbitmq.pid"
  export ERL_EPMD_PORT="$RMQ_EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
  # Distribution on loopback only; schedulers that sleep instead of spinning.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}
ctl() { (rmq_env && "$RMQ_BIN/rabbitmqctl" -n "$RMQ_NODE" "$@"); }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
rmq_pid() { cat "$RMQ_DIR/rabbitmq.pid" 2>/dev/null || true; }
rmq_running() { pid_alive "$(rmq_pid)" && ctl status >/dev/null 2>&1; }

rmq_start() {
  [ -x "$RMQ_BIN/rabbitmq-server" ] || die "RabbitMQ is not installed (scripts/setup.sh installs it)"
  if pid_alive "$(rmq_pid)" && ctl await_startup --timeout 60 >/dev/null 2>&1; then
    log "rabbitmq already running on 127.0.0.1:$RMQ_PORT"
  else
    local p t0 i
    for p in "$RMQ_PORT" "$RMQ_DIST_PORT"; do
      port_taken "$p" && die "127.0.0.1:$p is taken by another process; set AISE_RABBITMQ_PORT"
    done
    t0=$(date +%s.%N)
    mkdir -p "$RMQ_DIR/mnesia" "$RMQ_DIR/log" "$RMQ_DIR/home"
    chmod 700 "$RMQ_DIR/home"
    : >"$RMQ_DIR/rabbitmq-env.conf"
    echo '[].' >"$RMQ_DIR/enabled_plugins"
    cat >"$RMQ_DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
loopback_users.guest = true
log.console = false
log.file.level = warning
CONF
    # A private epmd on loopback, ours to stop later by PID.
    if ! pid_alive "$(cat "$RMQ_DIR/epmd.pid" 2>/dev/null || true)"; then
      setsid epmd -address 127.0.0.1 -port "$RMQ_EPMD_PORT" </dev/null >"$RMQ_DIR/log/epmd.log" 2>&1 &
      echo $! >"$RMQ_DIR/epmd.pid"
    fi
    rm -f "$RMQ_DIR/rabbitmq.pid"
    (
      rmq_env
      cd "$RMQ_DIR"
      setsid "$RMQ_BIN/rabbitmq-server" </dev/null >"$RMQ_DIR/log/startup.log" 2>&1 &
      echo $! >"$RMQ_DIR/launcher.pid"
    )
    for i in $(seq 1 600); do
      [ -s "$RMQ_DIR/rabbitmq.pid" ] && break
      pid_alive "$(cat "$RMQ_DIR/launcher.pid")" || break
      sleep 0.1
    done
    [ -s "$RMQ_DIR/rabbitmq.pid" ] || { tail -30 "$RMQ_DIR/log/startup.log" >&2; die "rabbitmq did not start"; }
    ctl await_startup --timeout 90 >&2 ||
      { tail -30 "$RMQ_DIR/log/startup.log" >&2; die "rabbitmq did not finish starting"; }
    log "rabbitmq started on 127.0.0.1:$RMQ_PORT in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
    echo "AISE_SERVICES_STARTED=rabbitmq"
  fi
  echo "AISE_TEST_RABBITMQ_URL=$RMQ_URL"
}

rmq_disconnect() {
  local prefix=${1:-}
  [ -n "$prefix" ] || die "usage: scripts/services.sh disconnect rabbitmq <connection name prefix>"
  rmq_running || die "rabbitmq is not running"
  local closed=0 pid properties
  # Lines: <pid> TAB [{"product","rabbitmq-c"},...,{"connection_name","<name>"},...]
  while IFS=$'\t' read -r pid properties; do
    [[ $pid == "<"* && $properties == *"{\"connection_name\",\"$prefix"* ]] || continue
    ctl close_connection "$pid" "closed by scripts/services.sh disconnect" </dev/null >/dev/null 2>&1 &&
      closed=$((closed + 1))
  done < <(ctl -s list_connections pid client_properties 2>/dev/null)
  log "rabbitmq: closed $closed connection(s) named $prefix*"
  echo "closed=$closed"
}

# Sets the broker's consumer timeout (ms) for channels opened from now on;
# the distributed tests shorten it to show long tasks outlive it.
rmq_consumer_timeout() {
  local ms=${1:-}
  [[ $ms =~ ^[0-9]+$ ]] || die "usage: scripts/services.sh consumer-timeout rabbitmq <milliseconds>"
  rmq_running || die "rabbitmq is not running"
  # The broker checks the timeout on each channel tick (60 s by default):
  # a short timeout comes with a short tick, as RabbitMQ's own tests do.
  local tick=60000
  ((ms < 60000)) && tick=250
  ctl eval "application:set_env(rabbit, consumer_timeout, $ms), application:set_env(rabbit, channel_tick_interval, $tick)." >/dev/null ||
    die "rabbitmq: consumer_timeout not set"
  log "rabbitmq: consumer_timeout = $ms ms (channel tick $tick ms) for new channels"
}

rmq_stop() {
  local pid epmd_pid
  pid=$(rmq_pid)
  if pid_alive "$pid"; then
    ctl stop "$RMQ_DIR/rabbitmq.pid" >&2 || true # waits for the node's process to exit
    for _ in $(seq 1 100); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then
      log "rabbitmq ($pid) still running; sending TERM"
      kill "$pid" || true
    fi
    log "rabbitmq stopped"
  fi
  epmd_pid=$(cat "$RMQ_DIR/epmd.pid" 2>/dev/null || true)
  if pid_alive "$epmd_pid" && [ "$(cat /proc/"$epmd_pid"/comm 2>/dev/null)" = epmd ]; then
    kill "$epmd_pid" || true
  fi
  rm -f "$RMQ_DIR/epmd.pid"
}

action=${1:-}
service=${2:-postgres}
case $service:$action in
  postgres:start) pg_start ;;
  postgres:stop) pg_stop ;;
  postgres:status) pg_running && echo "postgres running on 127.0.0.1:$PG_PORT" ;;
  rabbitmq:start) rmq_start ;;
  rabbitmq:stop) rmq_stop ;;
  rabbitmq:status) rmq_running && echo "rabbitmq running on 127.0.0.1:$RMQ_PORT (node $RMQ_NODE)" ;;
  rabbitmq:disconnect) rmq_disconnect "${3:-}" ;;
  rabbitmq:consumer-timeout) rmq_consumer_timeout "${3:-}" ;;
  postgres:* | rabbitmq:*) die "usage: scripts/services.sh start|stop|status postgres|rabbitmq" ;;
  *) die "unknown service '$service' (known: postgres, rabbitmq)" ;;
esac
