"""Kafka's own performance tools, run first on the same broker: what ours is measured against.

`ProducerPerformance`, `ConsumerPerformance` and `EndToEndLatency` come from the
project's Kafka jars (infra/kafka fetches them from Maven Central), and run with the
relay's record size, acks, idempotence, compression and linger. Every figure of ours is
also reported as a ratio to one of these, because absolute figures differ about 2x
between machines of the same kind while the ratios travel.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
from pathlib import Path

from bench.harness import ROOT, scaled

KAFKA_HOME = Path(os.environ.get("KAFKA_HOME", ROOT / ".local" / "kafka"))
RECORD_BYTES = 1000
# The relay's producer (events.core.kafka.build_producer): the same on both sides.
PRODUCER_PROPS = {
    "acks": "all",
    "enable.idempotence": "true",
    "compression.type": "lz4",
    "linger.ms": "0",
}


def _bootstrap() -> str:
    from django.conf import settings

    return settings.KAFKA_BOOTSTRAP_SERVERS


def _tool(main_class: str, *args: str, timeout: float = 300) -> str:
    """Run one of Kafka's tools from the project's jars; return what it printed."""
    java = os.environ.get("JAVA_HOME")
    command = [
        f"{java}/bin/java" if java else "java",
        "-Xmx512m",
        "-cp",
        f"{KAFKA_HOME / 'lib'}/*",
        f"-Dlog4j2.configurationFile={KAFKA_HOME / 'tools-log4j2.xml'}",
        main_class,
        *args,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{main_class} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def _topic(partitions: int) -> str:
    from events.core.kafka import NewTopic, build_admin

    name = f"{os.environ['KAFKA_TOPIC_PREFIX']}anchor-{uuid.uuid4().hex[:6]}"
    admin = build_admin()
    for future in admin.create_topics(
        [NewTopic(name, num_partitions=partitions)]
    ).values():
        future.result(timeout=30)
    return name


def producer_perf(records: int, topic: str) -> dict[str, float]:
    """ProducerPerformance at full speed: records/s and its own send latencies."""
    out = _tool(
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(RECORD_BYTES),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={_bootstrap()}",
        *[f"{k}={v}" for k, v in PRODUCER_PROPS.items()],
    )
    # The last summary line: "N records sent, X records/sec (Y MB/sec), A ms avg latency,
    # M ms max latency, p50 ms 50th, p95 ms 95th, p99 ms 99th, p999 ms 99.9th."
    last = [line for line in out.splitlines() if "records sent" in line][-1]
    numbers = [float(x) for x in re.findall(r"([0-9]+(?:\.[0-9]+)?)", last)]
    return {
        "records": numbers[0],
        "records_per_s": numbers[1],
        "mb_per_s": numbers[2],
        "avg_latency_ms": numbers[3],
        "p50_latency_ms": numbers[5],
        "p99_latency_ms": numbers[7],
    }


def consumer_perf(records: int, topic: str) -> dict[str, float]:
    """ConsumerPerformance over what producer_perf wrote: records/s fetched."""
    out = _tool(
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        _bootstrap(),
        "--topic",
        topic,
        "--messages",
        str(records),
        "--group",
        f"anchor-{uuid.uuid4().hex[:6]}",
        "--timeout",
        "60000",
        "--hide-header",
    )
    # start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
    # nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    row = out.strip().splitlines()[-1].split(",")
    return {
        "records": float(row[4]),
        "records_per_s": float(row[5]),
        "fetch_records_per_s": float(row[9]),
        "rebalance_ms": float(row[6]),
    }


def end_to_end(messages: int) -> dict[str, float]:
    """EndToEndLatency: one message at a time, produce → consumed, acks=all, 1 KB."""
    topic = _topic(partitions=1)
    with tempfile.NamedTemporaryFile("w", suffix=".properties", delete=False) as f:
        f.write("\n".join(f"{k}={v}" for k, v in PRODUCER_PROPS.items() if k != "acks"))
    try:
        out = _tool(
            "org.apache.kafka.tools.EndToEndLatency",
            _bootstrap(),
            topic,
            str(messages),
            "all",
            str(RECORD_BYTES),
            f.name,
        )
    finally:
        os.unlink(f.name)
    avg = float(re.search(r"Avg latency: ([0-9.]+)", out).group(1))
    p50, p99, p999 = (
        float(x)
        for x in re.search(
            r"50th = ([0-9.]+), 99th = ([0-9.]+), 99.9th = ([0-9.]+)", out
        ).groups()
    )
    return {"messages": messages, "avg": avg, "p50": p50, "p99": p99, "p999": p999}


def run() -> dict[str, object]:
    """The three anchors, on topics of this run's own (3 partitions, like ours)."""
    records = scaled(1_000_000, minimum=20_000)
    topic = _topic(partitions=3)
    producer = producer_perf(records, topic)
    consumer = consumer_perf(records, topic)
    latency = end_to_end(scaled(10_000, minimum=500))
    return {
        "kafka_producer_perf_records_per_s": round(producer["records_per_s"]),
        # fetch.nMsg.sec: without the group join, as our consumer figures are timed.
        "kafka_consumer_perf_records_per_s": round(consumer["fetch_records_per_s"]),
        "kafka_e2e_latency_ms": latency,
        "anchors": {
            "record_bytes": RECORD_BYTES,
            "producer_props": PRODUCER_PROPS,
            "producer_perf": producer,
            "consumer_perf": consumer,
        },
    }
