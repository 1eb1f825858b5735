"""A consumed batch as units of work, in offset order.

Each message becomes one unit per handler that accepts its event type (or one unit
carrying its decoding error). A message on a retry topic that is not due yet is not
planned: it and the rest of its partition wait, paused, until their due time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from events.consumer.units import Coordinates, Unit
from events.core.conf import PipelineSettings
from events.core.headers import (
    RETRY_ATTEMPT,
    RETRY_DUE_AT_MS,
    RETRY_HANDLER,
    TRACE_ID,
    header_map,
)
from events.core.kafka import Record
from events.core.registry import handlers_accepting
from events.core.types import PoisonMessage, decode
from events.observability import metrics

logger = logging.getLogger("events.consumer")

TP = tuple[str, int]


@dataclass
class Plan:
    planned: list[Record] = field(default_factory=list)  # messages with units
    units: list[Unit] = field(default_factory=list)
    # The first not-yet-due message of each retry partition, with its due time.
    not_due: list[tuple[Record, int]] = field(default_factory=list)


class Planner:
    """Turns batches of the given streams' main and retry topics into plans."""

    def __init__(self, conf: PipelineSettings, streams: list[str]) -> None:
        self._conf = conf
        self._streams_by_topic: dict[str, str] = {}
        for stream in streams:
            for topic in [conf.topic(stream), *conf.retry_topics(stream)]:
                self._streams_by_topic[topic] = stream
        self._retry_topics = {t for s in streams for t in conf.retry_topics(s)}

    @property
    def topics(self) -> list[str]:
        return list(self._streams_by_topic)

    def plan(self, messages: list[Record], now_ms: int) -> Plan:
        plan = Plan()
        waiting: set[TP] = set()
        consumed: dict[str, int] = {}
        retry_topics = self._retry_topics
        for message in messages:
            topic, partition = message.topic(), message.partition()
            if waiting and (topic, partition) in waiting:
                continue
            consumed[topic] = consumed.get(topic, 0) + 1
            headers = header_map(message.headers())
            if topic in retry_topics:
                due = _int(headers.get(RETRY_DUE_AT_MS))
                if due is not None and due > now_ms:
                    waiting.add((topic, partition))
                    plan.not_due.append((message, due))
                    continue
            seq = len(plan.planned)
            plan.planned.append(message)
            plan.units.extend(self._units_of(message, topic, partition, headers, seq))
        for topic, count in consumed.items():
            metrics.CONSUMED.labels(topic).inc(count)
        return plan

    def _units_of(
        self,
        message: Record,
        topic: str,
        partition: int,
        headers: dict[str, str],
        seq: int,
    ) -> list[Unit]:
        # Runs once per consumed message: what only a retry or a dead letter needs
        # (the message's origin) is worked out when it is needed, not here.
        stream = self._streams_by_topic[topic]
        attempt = 1
        if RETRY_ATTEMPT in headers:
            attempt = _int(headers[RETRY_ATTEMPT]) or 1
        # Shared by the units of this message: replaced (next_attempt), never changed.
        where = Coordinates(
            topic, partition, message.offset(), attempt, headers.get(TRACE_ID)
        )
        try:
            envelope = decode(message.value())
        except PoisonMessage as exc:
            return [Unit(message, stream, headers, where, error=exc, seq=seq)]
        specs = handlers_accepting(stream, envelope.event_type)
        target = headers.get(RETRY_HANDLER)
        if target is not None:
            specs = [s for s in specs if s.name == target]
            if not specs:
                logger.warning("retry for unknown handler %s dropped", target)
        return [
            Unit(message, stream, headers, where, envelope=envelope, spec=spec, seq=seq)
            for spec in specs
        ]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
