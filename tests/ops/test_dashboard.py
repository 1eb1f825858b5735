"""The Grafana dashboard and the Prometheus config agree with what the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client.metrics import MetricWrapperBase

from events.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "ops/grafana/dashboards").glob("*.json"))
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_WORDS |= {"bool", "and", "or", "unless", "offset", "inf", "nan"}


def exported_series() -> set[str]:
    """Every sample name the events.observability.metrics module can expose."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name = value._name
        if isinstance(value, Counter):
            names |= {f"{name}_total", f"{name}_created"}
        elif isinstance(value, Histogram):
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif isinstance(value, Summary):
            names |= {f"{name}_count", f"{name}_sum"}
        elif isinstance(value, Gauge):
            names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r'"[^"]*"', " ", expr)  # strings
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        following = expr[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function or aggregation
        if match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def dashboard_exprs(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    return [
        target["expr"]
        for panel in doc["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_metric_name_extraction_skips_functions_labels_and_ranges() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, handler) (rate(a_bucket{x="y"}[5m])))'
        " / on (job) b_total offset 5m - time()"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}


def test_every_dashboard_query_names_a_metric_the_code_exports() -> None:
    assert DASHBOARDS, "no dashboard in ops/grafana/dashboards"
    exported = exported_series()
    for path in DASHBOARDS:
        exprs = dashboard_exprs(path)
        assert exprs, path
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{path.name}: no metric in {expr!r}"
            assert names <= exported, f"{path.name}: {sorted(names - exported)}"


def test_the_dashboard_covers_the_issue_metrics() -> None:
    used = {
        n for path in DASHBOARDS for e in dashboard_exprs(path) for n in metric_names(e)
    }
    assert {
        "outbox_events_published_total",
        "consumer_events_processed_total",
        "consumer_events_retried_total",
        "consumer_events_dead_lettered_total",
        "consumer_handler_seconds_bucket",
        "outbox_backlog_events",
        "outbox_oldest_unsent_age_seconds",
        "consumer_lag_messages",
        "dead_letters",
    } <= used


def test_compose_provisions_prometheus_and_grafana_from_ops() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    scrape = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in scrape["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    assert targets == {
        "web:8000",
        "relay:9101",
        "consumers:9102",
        "consumers:9103",
        "worker:9110",
    }
    assert "--metrics-port 9101" in services["relay"]["command"]
    assert "--metrics-port 9102" in services["consumers"]["command"]
    assert services["consumers"]["environment"]["CONSUMER_CONCURRENCY"] == "2"
    assert compose["x-app-env"]["CELERY_METRICS_PORT"] == "9110"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("relay", "consumers"):
        assert "config.healthcheck" in " ".join(services[name]["healthcheck"]["test"])
