#!/usr/bin/env bash
# Start, stop or check the local PostgreSQL cluster (Debian's postgresql package).
#
# PostgreSQL refuses to run as root, so the cluster belongs to the postgres user and is
# driven through Debian's pg_ctlcluster. The role and database named by PG_USER/PG_DB
# (defaults match DATABASE_URL's default in config/settings) are created on first start;
# the role may create databases because pytest-django creates the test database.
set -euo pipefail

PG_VERSION=${PG_VERSION:-15}
PG_CLUSTER=${PG_CLUSTER:-main}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-reservations}
PG_PASSWORD=${PG_PASSWORD:-reservations}
PG_DB=${PG_DB:-reservations}

as_postgres() { runuser -u postgres -- "$@"; }

psql_admin() { as_postgres psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qAt "$@"; }

ensure_cluster() {
  if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$PG_VERSION/$PG_CLUSTER"; then
    echo "postgres: creating cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" -p "$PG_PORT" >/dev/null
  fi
  # Room for the concurrency tests (50 parallel requests) plus relays and consumers.
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set max_connections 200
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set listen_addresses 'localhost'
  # The outbox is write-heavy: with the default 1 GB of WAL a 100,000-event burst forces
  # checkpoints mid-run, and every first touch of a page after one writes the whole
  # page to the WAL again. The default 128 MB of shared buffers is for tiny machines.
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set max_wal_size 8GB
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set checkpoint_timeout 15min
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set shared_buffers 1GB
  # The benchmarks read commit → handler-committed latency off the database's own clock
  # (pg_xact_commit_timestamp); it costs a few bytes per transaction.
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set track_commit_timestamp on
  # The cluster listens on loopback only, where TLS protects nothing; Debian's default
  # (ssl on, snakeoil certificate) made every client negotiate it (libpq's sslmode
  # prefer), which cost about 6 % of a reservation request's CPU (bench/ANALYSIS.md).
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set ssl off
  # The CDC relay (RELAY=cdc: Debezium through Kafka Connect) reads the outbox's inserts
  # from the WAL by logical decoding. Always on, so switching relays needs no restart.
  pg_conftool "$PG_VERSION" "$PG_CLUSTER" set wal_level logical
}

is_running() { pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; }

start() {
  ensure_cluster
  if is_running; then
    echo "postgres: already running on port $PG_PORT"
    # Settings changed above (a cluster made by an older version of this script):
    # reload, then restart if one of them only takes effect at a restart.
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" reload
    sleep 0.5
    if [ "$(psql_admin -c "SELECT count(*) FROM pg_settings WHERE pending_restart")" != 0 ]; then
      echo "postgres: restarting to apply changed settings (open connections are dropped)"
      pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart -m fast
    fi
  else
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 1
  done
  if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
    echo "postgres: not ready on 127.0.0.1:$PG_PORT after 30 s; see /var/log/postgresql/" >&2
    exit 1
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != 1 ]; then
    psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
  fi
  # Debezium's replication connection (a slot, logical decoding) needs the attribute.
  if [ "$(psql_admin -c "SELECT rolreplication FROM pg_roles WHERE rolname='$PG_USER'")" != t ]; then
    psql_admin -c "ALTER ROLE \"$PG_USER\" REPLICATION"
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
  fi
  echo "postgres: ready on 127.0.0.1:$PG_PORT (database $PG_DB, role $PG_USER)"
}

stop() {
  if is_running; then pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m fast; fi
  echo "postgres: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) is_running ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
