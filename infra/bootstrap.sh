#!/usr/bin/env bash
# Install what the project needs on a fresh machine; fast when everything is there.
#
#   Debian packages: postgresql, redis-server, java, maven, chromium (apt, as root)
#   Python venv:     .venv with requirements-dev.txt (re-installed when it changes)
#   Kafka:           the Apache Kafka jars from Maven Central (infra/kafka/pom.xml)
#   Kafka Connect:   Connect + Debezium jars (infra/connect/pom.xml) and the project's
#                    header transformation (infra/connect/headers-smt), for the CDC relay
#   Spring check:    spring-kafka and its jars into ~/.m2 (ops/spring-dlt-check/pom.xml)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 && [ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# Headless browser for the admin's browser test.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${need_apt[*]}; run as root or install them with apt" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian starts the services it installs; the project starts its own.
  systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# WhiteNoise serves STATIC_ROOT as well as the finders; it warns when it is missing.
mkdir -p .local/static

bash infra/kafka/kafka.sh install
bash infra/connect/connect.sh install

# Spring Kafka's jars for ops/spring-dlt-check, which the suite builds offline (mvn -o,
# tests/events/test_spring_dead_letter_headers.py); fetched again when its pom changes.
spring_stamp=.local/spring-dlt-check.pom.sha256
spring_want=$(sha256sum ops/spring-dlt-check/pom.xml | cut -d' ' -f1)
if [ "$(cat "$spring_stamp" 2>/dev/null)" != "$spring_want" ]; then
  echo "bootstrap: fetching ops/spring-dlt-check's Maven dependencies"
  # A real build, thrown away: dependency:go-offline misses what Maven resolves only
  # when a plugin runs (e.g. plexus-utils 1.1), and then `mvn -o` fails.
  spring_build=$(mktemp -d)
  mvn -q -B -f ops/spring-dlt-check/pom.xml package -Dbuild.dir="$spring_build"
  rm -rf "$spring_build"
  echo "$spring_want" > "$spring_stamp"
fi
