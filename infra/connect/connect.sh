#!/usr/bin/env bash
# Local Kafka Connect worker (distributed mode) with Debezium's PostgreSQL connector: the
# CDC relay (OUTBOX_RELAY=cdc). Built from the Apache Kafka and Debezium jars on Maven
# Central (pom.xml next to this script) plus the project's ExplodeJsonHeader
# transformation (headers-smt/, built here with its unit tests).
#
# Usage: infra/connect/connect.sh {install|start|stop|status|run}
#   install  resolve the jars into $CONNECT_HOME/lib (skipped while pom.xml is unchanged)
#            and build headers-smt (skipped while its sources are unchanged)
#   start    install if needed, start the worker in the background, wait until its REST
#            API answers (prints how long that took)
#   run      the same in the foreground (exec java): for honcho (`make run RELAY=cdc`)
#   stop     SIGTERM, wait up to CONNECT_STOP_TIMEOUT (30 s), then SIGKILL and wait up to
#            10 s more until the process is gone (fails, keeping the pid file, if not)
#   status   exit 0 if running and the REST API answers, 1 otherwise
#
# The worker keeps no state on disk: connectors, their offsets (the last LSN sent) and
# statuses live in three Kafka topics, so a restarted worker (or another one with the
# same CONNECT_GROUP_ID) carries on where the last offset flush left it. Offsets are
# flushed every CONNECT_OFFSET_FLUSH_MS (1 s): what a kill -9 sends again is what the
# worker sent since its last flush.
#
# Environment (all optional):
#   CONNECT_HOME                 state dir (lib/, smt/, logs/, configs)  default <repo>/.local/connect
#   KAFKA_BOOTSTRAP_SERVERS      the brokers                              default 127.0.0.1:9092
#   CONNECT_REST_PORT            REST API port                            default 8083
#   CONNECT_REST_HOST            REST API bind address (0.0.0.0 in Docker) default 127.0.0.1
#   CONNECT_ADVERTISED_HOST      how other workers reach this one          default CONNECT_REST_HOST
#   CONNECT_GROUP_ID             the worker group; also names its topics  default outbox-connect
#   CONNECT_REPLICATION_FACTOR   of the config/offset/status topics       default 1
#   CONNECT_OFFSET_FLUSH_MS      offset commit interval                   default 1000
#   CONNECT_HEAP_OPTS            JVM heap flags                           default -Xms128m -Xmx512m
#   CONNECT_START_TIMEOUT        seconds to wait for the REST API         default 120
#   CONNECT_STOP_TIMEOUT         seconds from SIGTERM to SIGKILL          default 30
#   JAVA_HOME                    java to use (else `java` on PATH)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"
SMT_SRC="$SCRIPT_DIR/headers-smt"

CONNECT_HOME="${CONNECT_HOME:-$REPO_ROOT/.local/connect}"
BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
REST_PORT="${CONNECT_REST_PORT:-8083}"
GROUP_ID="${CONNECT_GROUP_ID:-outbox-connect}"
REPLICATION_FACTOR="${CONNECT_REPLICATION_FACTOR:-1}"
OFFSET_FLUSH_MS="${CONNECT_OFFSET_FLUSH_MS:-1000}"
HEAP_OPTS="${CONNECT_HEAP_OPTS:--Xms128m -Xmx512m}"
START_TIMEOUT="${CONNECT_START_TIMEOUT:-120}"
STOP_TIMEOUT="${CONNECT_STOP_TIMEOUT:-30}"
KILL_TIMEOUT=10
HOST=127.0.0.1
BIND_HOST="${CONNECT_REST_HOST:-$HOST}"
ADVERTISED_HOST="${CONNECT_ADVERTISED_HOST:-$BIND_HOST}"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

mkdir -p "$CONNECT_HOME"
CONNECT_HOME="$(cd "$CONNECT_HOME" && pwd)"
LIB="$CONNECT_HOME/lib"
SMT_DIR="$CONNECT_HOME/smt"
LOGS="$CONNECT_HOME/logs"
PID_FILE="$CONNECT_HOME/connect.pid"
PROPS="$CONNECT_HOME/worker.properties"
LOG4J="$CONNECT_HOME/log4j2.xml"
STAMP="$LIB/.pom.sha256"
SMT_STAMP="$SMT_DIR/.src.sha256"
CONSOLE_LOG="$LOGS/connect.out"
URL="http://$HOST:$REST_PORT"

say() { printf 'connect: %s\n' "$*"; }
die() { printf 'connect: ERROR: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH"; }

take_lock() {
  exec 9>"$CONNECT_HOME/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 600 9 || die "timed out waiting for $CONNECT_HOME/.lock"
  fi
}

# ---------------------------------------------------------------- install

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }
smt_hash() {
  (cd "$SMT_SRC" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum) \
    | sha256sum | cut -d' ' -f1
}

is_installed() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]] \
    && [[ -f "$SMT_STAMP" && "$(cat "$SMT_STAMP")" == "$(smt_hash)" ]]
}

install_jars() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]] && return 0
  say "resolving Kafka Connect and Debezium jars from Maven Central into $LIB ..."
  local tmp="$CONNECT_HOME/lib.tmp.$$" log="$CONNECT_HOME/install.log"
  rm -rf "$tmp"
  if ! mvn -B -f "$POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >"$log" 2>&1; then
    rm -rf "$tmp"
    tail -n 40 "$log" >&2
    die "mvn dependency:copy-dependencies failed (full output: $log)"
  fi
  ls "$tmp"/connect-runtime-*.jar "$tmp"/debezium-connector-postgres-*.jar >/dev/null 2>&1 \
    || { rm -rf "$tmp"; die "connect-runtime or the Debezium connector was not resolved"; }
  pom_hash >"$tmp/.pom.sha256"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  say "installed $(find "$LIB" -name '*.jar' | wc -l) jars ($(du -sm "$LIB" | cut -f1) MB)"
}

# `mvn package` runs ExplodeJsonHeaderTest: a failing test fails the install.
install_smt() {
  [[ -f "$SMT_STAMP" && "$(cat "$SMT_STAMP")" == "$(smt_hash)" ]] && return 0
  say "building the ExplodeJsonHeader transformation (headers-smt, with its tests) ..."
  local build="$CONNECT_HOME/smt-build" log="$CONNECT_HOME/smt-build.log"
  rm -rf "$build"
  if ! mvn -B -f "$SMT_SRC/pom.xml" package -Dbuild.dir="$build" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "building headers-smt failed (full output: $log)"
  fi
  rm -rf "$SMT_DIR"
  mkdir -p "$SMT_DIR"
  cp "$build"/outbox-headers-smt-*.jar "$SMT_DIR/"
  smt_hash >"$SMT_STAMP"
  say "built $(basename "$build"/outbox-headers-smt-*.jar) ($(grep -h 'Tests run' "$build"/surefire-reports/*.txt | head -1))"
}

do_install() {
  [[ -f "$CONNECT_HOME/.gitignore" ]] || printf '*\n' >"$CONNECT_HOME/.gitignore"
  is_installed && return 0
  is_running && die "the install is stale but the worker is running (pid $(read_pid)); run '$0 stop' first"
  need mvn
  need "$JAVA"
  install_jars
  install_smt
}

# ---------------------------------------------------------------- probes

read_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s' "$pid"
}

is_running() {
  local pid
  pid="$(read_pid)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'ConnectDistributed'
}

# The herder answers /connectors only once it joined its group and read the config topic.
rest_ok() {
  curl -fsS --max-time 5 "$URL/connectors" >/dev/null 2>&1
}

# ---------------------------------------------------------------- config files

write_configs() {
  mkdir -p "$LOGS"
  cat >"$PROPS" <<EOF
# Generated by infra/connect/connect.sh on every start; edits here are overwritten.
bootstrap.servers=$BOOTSTRAP
group.id=$GROUP_ID
listeners=http://$BIND_HOST:$REST_PORT
rest.advertised.host.name=$ADVERTISED_HOST
rest.advertised.port=$REST_PORT

config.storage.topic=$GROUP_ID-configs
offset.storage.topic=$GROUP_ID-offsets
status.storage.topic=$GROUP_ID-status
config.storage.replication.factor=$REPLICATION_FACTOR
offset.storage.replication.factor=$REPLICATION_FACTOR
status.storage.replication.factor=$REPLICATION_FACTOR
offset.storage.partitions=5
status.storage.partitions=1

# Source offsets (Debezium's last LSN sent) are committed this often, and only then does
# Debezium confirm that LSN to PostgreSQL's slot: a crash re-sends at most this window.
offset.flush.interval.ms=$OFFSET_FLUSH_MS

# The outbox's key and payload are text: sent as their UTF-8 bytes, exactly what the
# polling relay sends (connectors may override these, the outbox connector sets them too).
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
header.converter=org.apache.kafka.connect.storage.StringConverter

# Every jar on the classpath (ours too) has ServiceLoader manifests: no reflection scan.
plugin.discovery=service_load

# The outbox connector sets producer.override.max.request.size from OUTBOX_MAX_MESSAGE_BYTES.
connector.client.config.override.policy=All
# Connect's source producers default to acks=all, idempotence and one request in flight
# per connection. With idempotence up to five keep each partition's order (the broker
# refuses a batch out of sequence), and lz4 as the polling relay's. batch.size stays at
# its 16 KB: when the broker refuses a batch as too large, the Java producer splits it
# into batches of up to batch.size and sends them again, so with batch.size above a
# topic's max.message.bytes it split and resent the same batch forever (KAFKA-8350)
# instead of failing the task (tests/events/test_delivery_modes.py, a 16 KB topic).
producer.acks=all
producer.enable.idempotence=true
producer.max.in.flight.requests.per.connection=5
producer.linger.ms=5
producer.compression.type=lz4
# A worker that dies hands its task to the others of its group after this long (Connect's
# default: 5 minutes, to spare a quick restart a rebalance). A worker restarted at the
# same address got its task back without that wait (bench: running again 9 s after a
# kill -9, the JVM's start included).
scheduled.rebalance.max.delay.ms=10000
EOF

  cat >"$LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by infra/connect/connect.sh. Worker logs go to ${sys:connect.logs.dir}/connect.log. -->
<Configuration status="WARN" name="kafka-connect">
  <Appenders>
    <RollingFile name="file" fileName="${sys:connect.logs.dir}/connect.log"
                 filePattern="${sys:connect.logs.dir}/connect.log.%i">
      <PatternLayout pattern="[%d] %p %X{connector.context}%m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="5"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.reflections" level="ERROR"/>
  </Loggers>
</Configuration>
EOF
}

java_command() {
  # Word splitting of $HEAP_OPTS is intended.
  # shellcheck disable=SC2206
  CMD=("$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    -Dlog4j2.shutdownHookEnabled=false
    -Dconnect.logs.dir="$LOGS" -Dlog4j2.configurationFile="$LOG4J"
    -cp "$LIB/*:$SMT_DIR/*" org.apache.kafka.connect.cli.ConnectDistributed "$PROPS")
}

show_logs() {
  local f
  for f in "$LOGS/connect.log" "$CONSOLE_LOG"; do
    if [[ -s "$f" ]]; then
      printf -- '---- last 30 lines of %s ----\n' "$f" >&2
      tail -n 30 "$f" >&2
    fi
  done
}

# Whether process $1 is gone: no such process, or a zombie (dead; its parent, honcho or
# a container's init, has not reaped it yet, and kill -0 still reaches it).
is_gone() {
  kill -0 "$1" 2>/dev/null || return 0
  [[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" == Z ]]
}

# Wait up to $2 seconds for process $1 to be gone.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    is_gone "$1" && return 0
    sleep 0.1
  done
  is_gone "$1"
}

kill_and_wait() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || return 0
  wait_gone "$pid" "$STOP_TIMEOUT" && return 0
  say "pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  # SIGKILL is delivered asynchronously: until the kernel has torn the JVM down it
  # holds its REST port, and a start right behind this stop would race it.
  wait_gone "$pid" "$KILL_TIMEOUT" && return 0
  printf 'connect: ERROR: pid %s still alive %ss after SIGKILL\n' "$pid" "$KILL_TIMEOUT" >&2
  return 1
}

# ---------------------------------------------------------------- commands

prepare() {
  if curl -fsS --max-time 2 "$URL/" >/dev/null 2>&1 && ! is_running; then
    die "$URL already answers, but not this CONNECT_HOME's worker"
  fi
  do_install
  write_configs
}

cmd_start() {
  take_lock
  if is_running; then
    say "already running (pid $(read_pid)) on $URL"
    return 0
  fi
  rm -f "$PID_FILE"
  prepare
  say "starting the worker on $URL (Kafka $BOOTSTRAP), logs in $LOGS"
  local started=$SECONDS
  java_command
  printf '\n==== %s starting ConnectDistributed ====\n' "$(date '+%F %T')" >>"$CONSOLE_LOG"
  # setsid: its own session, so the caller's Ctrl-C does not reach it; fd 9 is the lock.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' connect-launcher "$PID_FILE" "${CMD[@]}" \
    </dev/null >>"$CONSOLE_LOG" 2>&1 9>&- &
  local deadline=$((SECONDS + START_TIMEOUT)) pid=""
  while ((SECONDS < deadline)); do
    pid="$(read_pid || true)"
    if [[ -n "$pid" ]] && ! is_running; then
      printf 'connect: ERROR: worker process %s exited during startup\n' "$pid" >&2
      show_logs
      rm -f "$PID_FILE"
      exit 1
    fi
    if [[ -n "$pid" ]] && rest_ok; then
      say "ready (pid $pid) on $URL after $((SECONDS - started))s"
      return 0
    fi
    sleep 0.5
  done
  printf 'connect: ERROR: worker not ready on %s within %ss; stopping it\n' "$URL" "$START_TIMEOUT" >&2
  show_logs
  [[ -n "$pid" ]] && kill_and_wait "$pid"
  rm -f "$PID_FILE"
  exit 1
}

cmd_run() {
  take_lock
  is_running && die "already running in the background (pid $(read_pid)); '$0 stop' first"
  prepare
  say "running the worker in the foreground on $URL (Kafka $BOOTSTRAP), logs in $LOGS"
  java_command
  echo $$ >"$PID_FILE"
  exec 9>&-
  exec "${CMD[@]}"
}

cmd_stop() {
  take_lock
  if ! is_running; then
    rm -f "$PID_FILE"
    say "not running"
    return 0
  fi
  local pid
  pid="$(read_pid)"
  say "stopping the worker (pid $pid)"
  kill_and_wait "$pid"
  rm -f "$PID_FILE"
  say "stopped"
}

cmd_status() {
  if ! is_running; then
    say "not running"
    return 1
  fi
  if rest_ok; then
    say "running (pid $(read_pid)) on $URL; connectors: $(curl -fsS --max-time 5 "$URL/connectors")"
    return 0
  fi
  say "process $(read_pid) is alive but $URL does not answer"
  return 1
}

case "${1:-}" in
  install) take_lock; do_install; say "installed in $CONNECT_HOME" ;;
  start) cmd_start ;;
  run) cmd_run ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|start|stop|status|run}" ;;
esac
