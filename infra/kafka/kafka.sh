#!/usr/bin/env bash
# Local Apache Kafka 4.x for development and tests: one node (the default) or a cluster.
#
# KRaft combined mode (process.roles=broker,controller), built from the official Apache
# Kafka jars on Maven Central (see pom.xml next to this script).
#
# Usage: infra/kafka/kafka.sh {install|start|stop|restart|status}
#   install  resolve the jars into $KAFKA_HOME/lib (skipped if pom.xml is unchanged)
#   start    install if needed, format storage on first start only, start the broker
#            in the background and wait until it answers metadata requests
#   stop     SIGTERM, wait up to 30 s, then SIGKILL
#   status   exit 0 if running and answering, 1 otherwise
#
# Environment (all optional):
#   KAFKA_NODES            1 = one node, node.id=1 (below); 3 or more = a cluster (further down)
#   KAFKA_HOME             state dir (lib/, data/, logs/, configs)  default <repo>/.local/kafka
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1           default 9092
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener on 127.0.0.1          default 9093
#   KAFKA_HEAP_OPTS        JVM heap flags (per node)                 default -Xmx512m -Xms256m
#   KAFKA_OPTS             extra JVM flags for the broker
#   KAFKA_START_TIMEOUT    seconds to wait for readiness             default 90
#   KAFKA_CLUSTER_ID       cluster id used when formatting storage   default fixed dev id
#   JAVA_HOME              java to use (else `java` on PATH)
#
# A local cluster: KAFKA_NODES=3 (KAFKA_HOME, KAFKA_PORT, KAFKA_CONTROLLER_PORT are ignored)
#   KAFKA_NODES=3 infra/kafka/kafka.sh {install|start|stop|restart|status|bootstrap}
#   KAFKA_NODES=3 infra/kafka/kafka.sh {node-start|node-stop|node-kill} N [N...]
#   start       format every node on its first start, start the nodes that are not
#               running, wait until the controller quorum has a leader and all N
#               brokers are registered and unfenced, print the bootstrap servers
#   stop        SIGTERM every node at once, wait up to 30 s, then SIGKILL
#   status      one line per node plus the quorum leader and the unfenced brokers;
#               exit 0 only if every node runs and the cluster is complete
#   bootstrap   print the bootstrap servers (nothing is started)
#   node-start N...  start those nodes and wait until they are unfenced brokers again
#               (needs a quorum: a majority of the nodes running). After a crash the
#               controller refuses the new incarnation (DUPLICATE_BROKER_REGISTRATION)
#               until the old one's session expires: up to KAFKA_BROKER_SESSION_TIMEOUT_MS
#   node-stop N...   SIGTERM those nodes (controlled shutdown), wait, SIGKILL after 30 s
#   node-kill N...   SIGKILL those nodes at once: a crash, for chaos tests
# Every node is a combined controller+broker, node.id N, home $KAFKA_CLUSTER_HOME/node-N
# (data/, logs/, server.properties, kafka.pid); the jars are in $KAFKA_CLUSTER_HOME/lib.
# Ports: broker of node N = KAFKA_CLUSTER_BASE_PORT + 2(N-1), its controller that + 1, so
# 29092/29093, 29094/29095, 29096/29097 by default. Static controller.quorum.voters list
# every node; one shared cluster id. Durability: default.replication.factor=3,
# min.insync.replicas=2, unclean.leader.election.enable=false, offsets and transaction
# topics RF 3 / min ISR 2. A killed node is fenced (its partitions led elsewhere, it
# leaves the ISRs) KAFKA_BROKER_SESSION_TIMEOUT_MS after its last heartbeat.
#   KAFKA_CLUSTER_HOME               default <repo>/.local/kafka-cluster
#   KAFKA_CLUSTER_BASE_PORT          default 29092
#   KAFKA_CLUSTER_ID                 default a fixed id of its own (not the single node's)
#   KAFKA_HEAP_OPTS                  default -Xmx384m -Xms128m per node
#   KAFKA_BROKER_SESSION_TIMEOUT_MS  default 6000 (Kafka's: 9000), heartbeats every 1000
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_NODES="${KAFKA_NODES:-1}"
if [[ ! "$KAFKA_NODES" =~ ^[1-9]$ || "$KAFKA_NODES" == 2 ]]; then
  printf 'kafka: ERROR: KAFKA_NODES=%s: use 1 (one node) or 3-9 (a cluster)\n' "$KAFKA_NODES" >&2
  exit 2
fi
if ((KAFKA_NODES == 1)); then
  KAFKA_HOME="${KAFKA_HOME:-$REPO_ROOT/.local/kafka}"
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
  # Any 16-byte base64url UUID works (`java -cp "$lib/*" kafka.tools.StorageTool random-uuid`).
  KAFKA_CLUSTER_ID="${KAFKA_CLUSTER_ID:-irr06cxmRbahiyB4iohXZQ}"
else
  # The cluster's shared state (lib/, tool configs, lock) lives in KAFKA_HOME's variables;
  # select_node points the per-node ones (data, logs, pid, ports) at node-N.
  KAFKA_CLUSTER_HOME="${KAFKA_CLUSTER_HOME:-$REPO_ROOT/.local/kafka-cluster}"
  KAFKA_HOME="$KAFKA_CLUSTER_HOME"
  KAFKA_CLUSTER_BASE_PORT="${KAFKA_CLUSTER_BASE_PORT:-29092}"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx384m -Xms128m}"
  KAFKA_CLUSTER_ID="${KAFKA_CLUSTER_ID:-aNG6VFEITpm_PkpdstCheA}"
  KAFKA_BROKER_SESSION_TIMEOUT_MS="${KAFKA_BROKER_SESSION_TIMEOUT_MS:-6000}"
  KAFKA_PORT="$KAFKA_CLUSTER_BASE_PORT"
  KAFKA_CONTROLLER_PORT=$((KAFKA_CLUSTER_BASE_PORT + 1))
fi
KAFKA_OPTS="${KAFKA_OPTS:-}"
# How long a consumer that stopped heartbeating keeps its partitions (see below).
KAFKA_GROUP_SESSION_TIMEOUT_MS="${KAFKA_GROUP_SESSION_TIMEOUT_MS:-5000}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
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
# A member that stops heartbeating (kill -9, a lost machine) keeps its partitions until
# its session times out, and under KIP-848 a restarted consumer cannot take them over
# before that, not even with the same group.instance.id (UNRELEASED_INSTANCE_ID): so the
# timeout is how long a crashed consumer's partitions sit idle. Kafka's 45 s default,
# also its minimum, left them idle 35-52 s; 5 s is ten missed heartbeats.
group.consumer.min.session.timeout.ms=2000
group.consumer.session.timeout.ms=$KAFKA_GROUP_SESSION_TIMEOUT_MS
EOF

  write_support_configs
}

# log4j configs of the broker and of the tools, and the readiness client's properties.
write_support_configs() {
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

# Start java kafka.Kafka $PROPS in the background; $PID_FILE gets its pid.
launch_broker() {
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
    launch_broker
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

# ---------------------------------------------------------------- cluster (KAFKA_NODES >= 3)

node_port() { printf '%s' $((KAFKA_CLUSTER_BASE_PORT + 2 * ($1 - 1))); }
node_controller_port() { printf '%s' $((KAFKA_CLUSTER_BASE_PORT + 2 * ($1 - 1) + 1)); }

# Point the per-node variables (the single node's names) at node $1.
select_node() {
  NODE_ID="$1"
  local home="$KAFKA_CLUSTER_HOME/node-$1"
  DATA="$home/data"
  LOGS="$home/logs"
  PID_FILE="$home/kafka.pid"
  PROPS="$home/server.properties"
  SERVER_LOG="$LOGS/server.log"
  CONSOLE_LOG="$LOGS/kafka.out"
  KAFKA_PORT="$(node_port "$1")"
  KAFKA_CONTROLLER_PORT="$(node_controller_port "$1")"
}

check_node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= KAFKA_NODES)) \
    || die "give a node number from 1 to $KAFKA_NODES (got '${1:-}')"
}

# Comma-separated lists over the nodes: "all" or only those whose port answers ("live").
broker_servers() {
  local i out=()
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    if [[ "${1:-all}" == all ]] || port_open "$(node_port "$i")"; then
      out+=("$HOST:$(node_port "$i")")
    fi
  done
  (IFS=,; printf '%s' "${out[*]}")
}

controller_servers() {
  local i out=()
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    if [[ "${1:-all}" == all ]] || port_open "$(node_controller_port "$i")"; then
      out+=("$HOST:$(node_controller_port "$i")")
    fi
  done
  (IFS=,; printf '%s' "${out[*]}")
}

quorum_voters() {
  local i out=()
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    out+=("$i@$HOST:$(node_controller_port "$i")")
  done
  (IFS=,; printf '%s' "${out[*]}")
}

run_tool() {
  timeout 20 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIB/*" "$@" 2>/dev/null
}

# Ids of the registered, unfenced brokers, sorted, space-separated ("" if none answers).
unfenced_brokers() {
  local servers
  servers="$(broker_servers live)"
  [[ -n "$servers" ]] || return 0
  run_tool org.apache.kafka.tools.ClusterTool list-endpoints \
    --bootstrap-server "$servers" --config "$CLIENT_PROPS" \
    | awk 'NR > 1 && $1 ~ /^[0-9]+$/ && /unfenced/ { print $1 }' | sort -n | tr '\n' ' ' \
    | sed 's/ $//' || true
}

# "<leader id> <voter ids...>" of the controller quorum ("" if no controller answers);
# the leader is -1 while there is none (no majority of the voters running).
quorum_state() {
  local servers
  servers="$(controller_servers live)"
  [[ -n "$servers" ]] || return 0
  run_tool org.apache.kafka.tools.MetadataQuorumCommand \
    --bootstrap-controller "$servers" --command-config "$CLIENT_PROPS" describe --status \
    | awk '
        $1 == "LeaderId:" { leader = $2 }
        $1 == "CurrentVoters:" { voters = $0 }
        END {
          if (leader == "") exit
          ids = ""
          while (match(voters, /"id": *[0-9]+/)) {
            id = substr(voters, RSTART, RLENGTH); sub(/.*: */, "", id)
            ids = ids " " id; voters = substr(voters, RSTART + RLENGTH)
          }
          print leader ids
        }' || true
}

all_ids() { seq -s ' ' 1 "$KAFKA_NODES"; }

# The cluster is complete: a quorum leader among all N voters, N unfenced brokers.
cluster_complete() {
  local quorum
  quorum="$(quorum_state)"
  [[ -n "$quorum" && "${quorum%% *}" != -1 && "${quorum#* }" == "$(all_ids)" ]] || return 1
  [[ "$(unfenced_brokers)" == "$(all_ids)" ]]
}

any_node_running() {
  local i
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    select_node "$i"
    is_running && return 0
  done
  return 1
}

write_node_config() {
  mkdir -p "$DATA" "$LOGS"
  cat >"$PROPS" <<EOF
# Generated by infra/kafka/kafka.sh (KAFKA_NODES=$KAFKA_NODES) on every start; edits here
# are overwritten.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$(quorum_voters)
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA

# Durability: three replicas, a write is acknowledged (acks=all) once two have it, and a
# replica that is not in sync never becomes leader (no acknowledged write is dropped).
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
log.retention.hours=168
# The single node's KIP-848 heartbeat and session timeout (see kafka.sh's single-node
# server.properties).
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
group.consumer.min.session.timeout.ms=2000
group.consumer.session.timeout.ms=$KAFKA_GROUP_SESSION_TIMEOUT_MS
# Failure detection: the active controller fences a broker that sent no heartbeat for
# the session timeout, moves its leaderships to in-sync replicas and drops it from ISRs.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=$KAFKA_BROKER_SESSION_TIMEOUT_MS
EOF
}

# Install, write configs and format node $NODE_ID (first start only), then launch it.
start_selected_node() {
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "port $HOST:$p of node $NODE_ID is already in use by another process"
    fi
  done
  rm -f "$PID_FILE"
  write_node_config
  format_storage_if_needed
  say "starting node $NODE_ID: broker $HOST:$KAFKA_PORT, controller $HOST:$KAFKA_CONTROLLER_PORT, logs in $LOGS"
  launch_broker
}

prepare_cluster() {
  if ! is_installed; then
    if any_node_running; then
      die "pom.xml changed but node $NODE_ID is running; run 'KAFKA_NODES=$KAFKA_NODES $0 stop' first"
    fi
    do_install
  fi
  [[ -f "$KAFKA_HOME/.gitignore" ]] || printf '*\n' >"$KAFKA_HOME/.gitignore"
  write_support_configs
}

# Wait until every node in $@ runs and answers, and then (first argument "cluster") the
# cluster is complete or ("nodes") those nodes are unfenced brokers. Returns 1 with the
# logs shown if a node died or time ran out.
wait_for_nodes() {
  local what="$1" i
  shift
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    local waiting=0
    for i in "$@"; do
      select_node "$i"
      if ! is_running; then
        printf 'kafka: ERROR: node %s exited during startup\n' "$i" >&2
        show_logs
        rm -f "$PID_FILE"
        return 1
      fi
      port_open "$KAFKA_PORT" || waiting=1
    done
    if ((waiting == 0)); then
      if [[ "$what" == cluster ]]; then
        cluster_complete && return 0
      else
        local unfenced missing=0
        unfenced=" $(unfenced_brokers) "
        for i in "$@"; do
          [[ "$unfenced" == *" $i "* ]] || missing=1
        done
        ((missing == 0)) && return 0
      fi
    fi
    sleep 1
  done
  printf 'kafka: ERROR: nodes %s not ready within %ss\n' "$*" "$KAFKA_START_TIMEOUT" >&2
  printf 'kafka: quorum (leader voters...): %s; unfenced brokers: %s\n' \
    "$(quorum_state)" "$(unfenced_brokers)" >&2
  for i in "$@"; do
    select_node "$i"
    show_logs
  done
  return 1
}

stop_nodes() {
  local signal="$1" i pid
  shift
  local pids=()
  for i in "$@"; do
    select_node "$i"
    if is_running; then
      pid="$(read_pid)"
      if [[ "$signal" == KILL ]]; then
        say "killing node $i (pid $pid) with SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      else
        say "stopping node $i (pid $pid)"
      fi
      kill_and_wait "$pid" &
      pids+=("$!")
    else
      say "node $i is not running"
    fi
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || true
  done
  for i in "$@"; do
    select_node "$i"
    is_running || rm -f "$PID_FILE"
  done
}

cmd_cluster_start() {
  take_lock
  local i started=()
  prepare_cluster
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    select_node "$i"
    if is_running; then
      say "node $i already running (pid $(read_pid))"
    else
      start_selected_node
      started+=("$i")
    fi
  done
  # shellcheck disable=SC2046
  if ! wait_for_nodes cluster $(all_ids); then
    ((${#started[@]} == 0)) || { say "stopping the nodes this start launched: ${started[*]}"; stop_nodes TERM "${started[@]}"; }
    exit 1
  fi
  say "ready: $KAFKA_NODES nodes, quorum and brokers $(all_ids) after ${SECONDS}s"
  say "bootstrap servers: $(broker_servers)"
}

cmd_cluster_stop() {
  take_lock
  # shellcheck disable=SC2046
  stop_nodes TERM $(all_ids)
  say "stopped"
}

cmd_node_start() {
  local i
  (($# > 0)) || check_node_arg ""
  for i in "$@"; do check_node_arg "$i"; done
  take_lock
  prepare_cluster
  for i in "$@"; do
    select_node "$i"
    if is_running; then
      say "node $i already running (pid $(read_pid))"
    else
      start_selected_node
    fi
  done
  wait_for_nodes nodes "$@" || exit 1
  say "nodes $* ready (unfenced brokers) after ${SECONDS}s"
}

# $1 = TERM or KILL, then the node numbers.
cmd_node_stop() {
  local signal="$1" i
  shift
  (($# > 0)) || check_node_arg ""
  for i in "$@"; do check_node_arg "$i"; done
  take_lock
  stop_nodes "$signal" "$@"
}

cmd_cluster_status() {
  local i ok=0
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    select_node "$i"
    if is_running; then
      say "node $i: running (pid $(read_pid)), broker $HOST:$KAFKA_PORT, controller $HOST:$KAFKA_CONTROLLER_PORT"
    else
      say "node $i: not running"
      ok=1
    fi
  done
  is_installed || { say "not installed"; return 1; }
  local quorum brokers
  quorum="$(quorum_state)"
  brokers="$(unfenced_brokers)"
  if [[ -n "$quorum" ]]; then
    say "quorum leader: ${quorum%% *} (-1: none), voters: ${quorum#* }"
  else
    say "quorum: no controller answers"
  fi
  say "unfenced brokers: ${brokers:-none}"
  [[ -n "$quorum" && "${quorum%% *}" != -1 && "$brokers" == "$(all_ids)" ]] || ok=1
  ((ok == 0)) && say "bootstrap servers: $(broker_servers)"
  return "$ok"
}

if ((KAFKA_NODES > 1)); then
  case "${1:-}" in
    install) cmd_install ;;
    start) cmd_cluster_start ;;
    stop) cmd_cluster_stop ;;
    restart) cmd_cluster_stop; cmd_cluster_start ;;
    status) cmd_cluster_status ;;
    bootstrap) broker_servers; echo ;;
    node-start) shift; cmd_node_start "$@" ;;
    node-stop) shift; cmd_node_stop TERM "$@" ;;
    node-kill) shift; cmd_node_stop KILL "$@" ;;
    *)
      printf 'usage: KAFKA_NODES=%s %s {install|start|stop|restart|status|bootstrap|node-start N...|node-stop N...|node-kill N...}\n' \
        "$KAFKA_NODES" "$0" >&2
      exit 2
      ;;
  esac
  exit
fi

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  node-start | node-stop | node-kill)
    printf 'kafka: ERROR: %s is for a cluster: run it with KAFKA_NODES=3\n' "$1" >&2
    exit 2
    ;;
  *)
    printf 'usage: %s {install|start|stop|restart|status}\n' "$0" >&2
    exit 2
    ;;
esac
