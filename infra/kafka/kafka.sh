#!/usr/bin/env bash
# Local single-node Apache Kafka 4.x for development and tests.
#
# KRaft combined mode (process.roles=broker,controller, node.id=1), built from the
# official Apache Kafka jars on Maven Central (see pom.xml next to this script).
#
# Usage: infra/kafka/kafka.sh {install|start|stop|restart|status}
#   install  resolve the jars into $KAFKA_HOME/lib (skipped if pom.xml is unchanged)
#   start    install if needed, format storage on first start only, start the broker
#            in the background and wait until it answers metadata requests
#   stop     SIGTERM, wait up to 30 s, then SIGKILL
#   status   exit 0 if running and answering, 1 otherwise
#
# Environment (all optional):
#   KAFKA_HOME             state dir (lib/, data/, logs/, configs)  default <repo>/.local/kafka
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1           default 9092
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener on 127.0.0.1          default 9093
#   KAFKA_HEAP_OPTS        JVM heap flags                            default -Xmx512m -Xms256m
#   KAFKA_OPTS             extra JVM flags for the broker
#   KAFKA_START_TIMEOUT    seconds to wait for readiness             default 90
#   KAFKA_CLUSTER_ID       cluster id used when formatting storage   default fixed dev id
#   JAVA_HOME              java to use (else `java` on PATH)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_HOME="${KAFKA_HOME:-$REPO_ROOT/.local/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
KAFKA_OPTS="${KAFKA_OPTS:-}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
# Any 16-byte base64url UUID works (`java -cp "$lib/*" kafka.tools.StorageTool random-uuid`).
KAFKA_CLUSTER_ID="${KAFKA_CLUSTER_ID:-irr06cxmRbahiyB4iohXZQ}"
KAFKA_STOP_TIMEOUT=30
HOST=127.0.0.1

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

mkdir -p "$KAFKA_HOME"
KAFKA_HOME="$(cd "$KAFKA_HOME" && pwd)"
LIB="$KAFKA_HOME/lib"
DATA="$KAFKA_HOME/data"
LOGS="$KAFKA_HOME/logs"
PID_FILE="$KAFKA_HOME/kafka.pid"
PROPS="$KAFKA_HOME/server.properties"
LOG4J="$KAFKA_HOME/log4j2.xml"
TOOLS_LOG4J="$KAFKA_HOME/tools-log4j2.xml"
CLIENT_PROPS="$KAFKA_HOME/readiness-client.properties"
STAMP="$LIB/.pom.sha256"
SERVER_LOG="$LOGS/server.log"
CONSOLE_LOG="$LOGS/kafka.out"

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: ERROR: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH"; }

# Serialise start/stop/install between concurrent callers (e.g. parallel test runs).
take_lock() {
  exec 9>"$KAFKA_HOME/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 600 9 || die "timed out waiting for $KAFKA_HOME/.lock"
  fi
}

# ---------------------------------------------------------------- install

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

is_installed() {
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(pom_hash)" ]]
}

do_install() {
  # Keep all of $KAFKA_HOME (jars, data, logs) out of git without touching the repo's .gitignore.
  [[ -f "$KAFKA_HOME/.gitignore" ]] || printf '*\n' >"$KAFKA_HOME/.gitignore"
  if is_installed; then
    return 0
  fi
  if is_running; then
    die "pom.xml changed but the broker is running (pid $(cat "$PID_FILE")); run '$0 stop' first"
  fi
  need mvn
  need "$JAVA"
  say "resolving Kafka jars from Maven Central into $LIB ..."
  local tmp="$KAFKA_HOME/lib.tmp.$$"
  rm -rf "$tmp"
  local mvn_log="$KAFKA_HOME/install.log"
  if ! mvn -B -f "$POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >"$mvn_log" 2>&1; then
    rm -rf "$tmp"
    tail -n 40 "$mvn_log" >&2
    die "mvn dependency:copy-dependencies failed (full output: $mvn_log)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "no kafka_2.13 jar was resolved"; }
  pom_hash >"$tmp/.pom.sha256"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  say "installed $(find "$LIB" -name '*.jar' | wc -l) jars ($(du -sm "$LIB" | cut -f1) MB)"
}

# ---------------------------------------------------------------- probes

read_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s' "$pid"
}

# The pid file names a live process that is really our broker (guards against pid reuse).
is_running() {
  local pid
  pid="$(read_pid)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka'
}

port_open() {
  (: <"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Readiness: the broker answers a Metadata request (AdminClient listTopics via TopicCommand).
metadata_ok() {
  timeout 20 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    -cp "$LIB/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --command-config "$CLIENT_PROPS" --list \
    >/dev/null 2>&1
}

is_ready() {
  is_running && port_open "$KAFKA_PORT" && metadata_ok
}

# ---------------------------------------------------------------- config files

write_configs() {
  mkdir -p "$DATA" "$LOGS"

  cat >"$PROPS" <<EOF
# Generated by infra/kafka/kafka.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA

# Dev/test broker: topics are created explicitly, single replica everywhere.
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
# KIP-848 consumer group protocol: group.coordinator.rebalance.protocols is left at its
# 4.x default, which includes "consumer" (and "classic"). Members learn of partitions
# to give up or to take on their next heartbeat: at the default 5 s interval a joining
# consumer waited about 5 s for its partitions; at 500 ms the moved partitions resume
# within about a second.
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
EOF

  cat >"$LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by infra/kafka/kafka.sh. Broker logs go to ${sys:kafka.logs.dir}/server.log. -->
<Configuration status="WARN" name="kafka-broker">
  <Appenders>
    <RollingFile name="server" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="5"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
  </Loggers>
</Configuration>
EOF

  cat >"$TOOLS_LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by infra/kafka/kafka.sh. Used by the CLI tools it runs (format, readiness). -->
<Configuration status="WARN" name="kafka-tools">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF

  cat >"$CLIENT_PROPS" <<'EOF'
# Used by kafka.sh's readiness check only: fail fast instead of retrying for 60 s.
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

format_storage_if_needed() {
  if [[ -f "$DATA/meta.properties" ]]; then
    return 0
  fi
  say "first start: formatting storage in $DATA (cluster id $KAFKA_CLUSTER_ID)"
  "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIB/*" \
    kafka.tools.StorageTool format --config "$PROPS" --cluster-id "$KAFKA_CLUSTER_ID" \
    || die "storage format failed"
}

show_logs() {
  if [[ -s "$SERVER_LOG" ]]; then
    printf -- '---- last 30 lines of %s ----\n' "$SERVER_LOG" >&2
    tail -n 30 "$SERVER_LOG" >&2
  fi
  if [[ -s "$CONSOLE_LOG" ]]; then
    printf -- '---- last 30 lines of %s ----\n' "$CONSOLE_LOG" >&2
    tail -n 30 "$CONSOLE_LOG" >&2
  fi
}

# ---------------------------------------------------------------- commands

kill_and_wait() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < KAFKA_STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "pid $pid still alive after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

cmd_install() {
  take_lock
  if is_installed; then
    say "already installed in $LIB"
  else
    do_install
  fi
}

cmd_start() {
  take_lock
  local pid
  if is_running; then
    pid="$(read_pid)"
    if port_open "$KAFKA_PORT"; then
      say "already running (pid $pid) on $HOST:$KAFKA_PORT"
      return 0
    fi
    say "pid $pid is alive but not listening yet; waiting for it"
  else
    rm -f "$PID_FILE"
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      if port_open "$p"; then
        die "port $HOST:$p is already in use by another process (not this KAFKA_HOME's broker)"
      fi
    done
    do_install
    write_configs
    format_storage_if_needed

    say "starting broker on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT), logs in $LOGS"
    local jvm_opts
    # log4j2.shutdownHookEnabled=false: otherwise log4j stops logging as soon as SIGTERM arrives
    # and Kafka's shutdown messages end up as "Unable to register Log4j shutdown hook" noise.
    # The file appender flushes every line, so nothing is lost.
    jvm_opts="$KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35"
    jvm_opts+=" -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true -Dlog4j2.shutdownHookEnabled=false"
    jvm_opts+=" $KAFKA_OPTS"
    {
      printf '\n==== %s starting kafka.Kafka ====\n' "$(date '+%F %T')"
    } >>"$CONSOLE_LOG"
    # setsid: own session, so the caller's Ctrl-C / terminal hangup doesn't reach the broker.
    # The inner shell records its own pid and then execs java, so the pid file is java's pid.
    # Word splitting of $jvm_opts (heap + KAFKA_OPTS) is intended; fd 9 (the lock) is not inherited.
    # shellcheck disable=SC2016,SC2086
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launcher "$PID_FILE" \
      "$JAVA" $jvm_opts \
      -Dkafka.logs.dir="$LOGS" -Dlog4j2.configurationFile="$LOG4J" \
      -cp "$LIB/*" kafka.Kafka "$PROPS" \
      </dev/null >>"$CONSOLE_LOG" 2>&1 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do
      [[ -s "$PID_FILE" ]] && break
      sleep 0.1
    done
  fi

  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  pid="$(read_pid || true)"
  while ((SECONDS < deadline)); do
    if ! is_running; then
      printf 'kafka: ERROR: broker process %s exited during startup\n' "${pid:-?}" >&2
      show_logs
      rm -f "$PID_FILE"
      exit 1
    fi
    if port_open "$KAFKA_PORT" && metadata_ok; then
      say "ready (pid $pid) on $HOST:$KAFKA_PORT after ${SECONDS}s"
      return 0
    fi
    sleep 0.5
  done
  printf 'kafka: ERROR: broker (pid %s) not ready on %s:%s within %ss; stopping it\n' \
    "${pid:-?}" "$HOST" "$KAFKA_PORT" "$KAFKA_START_TIMEOUT" >&2
  show_logs
  [[ -n "$pid" ]] && kill_and_wait "$pid"
  rm -f "$PID_FILE"
  exit 1
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
  say "stopping broker (pid $pid)"
  kill_and_wait "$pid"
  rm -f "$PID_FILE"
  say "stopped"
}

cmd_status() {
  if ! is_running; then
    say "not running"
    return 1
  fi
  if port_open "$KAFKA_PORT" && metadata_ok; then
    say "running (pid $(read_pid)) on $HOST:$KAFKA_PORT"
    return 0
  fi
  say "process $(read_pid) is alive but not answering on $HOST:$KAFKA_PORT"
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  *)
    printf 'usage: %s {install|start|stop|restart|status}\n' "$0" >&2
    exit 2
    ;;
esac
