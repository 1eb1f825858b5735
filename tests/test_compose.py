"""docker-compose.yml cannot run here (no Docker engine); check it against the settings."""

import re
from pathlib import Path

import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = {"web", "relay", "consumers", "worker", "beat", "migrate"}
OBSERVABILITY = {"prometheus", "grafana"}
LONG_RUNNING_WITH_HEALTH = {
    "kafka",
    "postgres",
    "redis",
    "web",
    "relay",
    "consumers",
    *OBSERVABILITY,
}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_variables() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "config/settings").glob("*.py"):
        names |= set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', path.read_text()))
    return names


def services_of_profile(profile: str | None) -> set[str]:
    """Services `docker compose up` starts: without a profile, or with `profile` only."""
    return {
        name
        for name, service in compose()["services"].items()
        if (
            profile in service.get("profiles", [])
            if profile
            else "profiles" not in service
        )
    }


def test_compose_has_every_service_of_the_system() -> None:
    services = services_of_profile(None)
    assert services == APP_SERVICES | {"kafka", "postgres", "redis"} | OBSERVABILITY


def test_cluster_profile_runs_three_durable_kraft_nodes() -> None:
    services = compose()["services"]
    nodes = ["kafka-1", "kafka-2", "kafka-3"]
    assert services_of_profile("cluster") == set(nodes)
    voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    host_ports = set()
    for number, name in enumerate(nodes, start=1):
        node = services[name]
        env = node["environment"]
        assert node["image"] == services["kafka"]["image"]
        assert env["KAFKA_NODE_ID"] == str(number)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert env["CLUSTER_ID"] == services["kafka-1"]["environment"]["CLUSTER_ID"]
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        for key in (
            "KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
            "KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS",
        ):
            assert env[key] == services["kafka"]["environment"][key]
        assert "healthcheck" in node
        assert node["volumes"][0].split(":")[0] in compose()["volumes"]
        host_ports |= {port.split(":")[0] for port in node["ports"]}
    assert host_ports == {"29092", "29094", "29096"}
    # The app services stay on the single broker unless pointed at the cluster.
    assert compose()["x-app-env"]["KAFKA_REPLICATION_FACTOR"] == "1"


def test_every_setting_variable_is_set_for_every_app_service() -> None:
    needed = settings_variables()
    assert "DATABASE_URL" in needed and "KAFKA_BOOTSTRAP_SERVERS" in needed
    for name in APP_SERVICES:
        env = compose()["services"][name]["environment"]
        assert needed <= set(env), f"{name} lacks {sorted(needed - set(env))}"
        assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.prod"


def test_every_setting_variable_is_documented_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert settings_variables() <= documented


def test_compose_topic_names_are_the_settings_defaults() -> None:
    env = compose()["x-app-env"]
    for stream, topic in settings.EVENT_TOPICS.items():
        name = "TOPIC_" + stream.upper().replace("-", "_")
        assert env[name] == topic
        assert env[name + "_DLQ"] == settings.EVENT_DLQ_TOPICS[stream]
    assert env["TOPIC_SEAT_RESERVED"] == "seat-reserved-topic"
    assert env["TOPIC_PAYMENT_COMPLETE_DLQ"] == "payment-complete-dlq"


def test_compose_kafka_runs_kraft_from_the_official_image() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert compose()["x-app-env"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_services_wait_for_healthy_dependencies_and_keep_data_in_volumes() -> None:
    doc = compose()
    services = doc["services"]
    for name in LONG_RUNNING_WITH_HEALTH:
        assert "healthcheck" in services[name], name
    for name in APP_SERVICES - {"migrate"}:
        conditions = {d["condition"] for d in services[name]["depends_on"].values()}
        assert "service_completed_successfully" in conditions, name
    assert services["migrate"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("kafka", "postgres", "redis"):
        volume = services[name]["volumes"][0].split(":")[0]
        assert volume in doc["volumes"], name
    assert "--concurrency" in services["consumers"]["command"]


def test_cdc_profile_runs_connect_and_registers_the_connector() -> None:
    services = compose()["services"]
    assert services_of_profile("cdc") == {"connect", "cdc-connector"}
    connect = services["connect"]
    assert connect["build"]["dockerfile"] == "infra/connect/Dockerfile"
    assert (ROOT / connect["build"]["dockerfile"]).exists()
    assert connect["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "healthcheck" in connect
    register = services["cdc-connector"]
    assert "cdc_connector watch" in register["command"]
    assert register["environment"]["OUTBOX_RELAY"] == "cdc"
    assert settings_variables() <= set(register["environment"])
    assert register["depends_on"]["connect"]["condition"] == "service_healthy"
    # The connector reaches Connect by its service name; Debezium reads the WAL.
    assert compose()["x-app-env"]["CDC_CONNECT_URL"] == "http://connect:8083"
    assert "wal_level=logical" in services["postgres"]["command"]
