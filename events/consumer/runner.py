"""The handler consumer: the consumer loop running the registered handlers.

Entry point: `ConsumerRunner(...).run()`, used by `manage.py run_consumers`. What it
guarantees is `events.consumer.handler_strategy.RunHandlers`'s contract; how it
consumes is `events.consumer.loop.ConsumerLoop`'s.
"""

from __future__ import annotations

from typing import Any

from events.consumer.clock import SYSTEM_CLOCK, Clock
from events.consumer.handler_strategy import RunHandlers
from events.consumer.loop import ConsumerLoop
from events.core.conf import PipelineSettings, pipeline_settings
from events.observability.lag import record_lag


class ConsumerRunner(ConsumerLoop):
    """Consume the streams' main and retry topics in one group and run their handlers."""

    def __init__(
        self,
        *,
        streams: list[str] | None = None,
        group_id: str | None = None,
        batch_size: int | None = None,
        poll_timeout: float = 0.5,
        consumer_overrides: dict[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        conf: PipelineSettings = pipeline_settings()
        self.streams = list(streams or conf.streams)
        unknown = [s for s in self.streams if s not in conf.streams]
        if unknown:
            raise ValueError(
                f"unknown streams {unknown}; known: {sorted(conf.streams)}"
            )
        group = group_id or conf.consumer_group
        strategy = RunHandlers(
            conf=conf, streams=self.streams, group_id=group, clock=clock
        )
        super().__init__(
            topics=strategy.planner.topics,
            group_id=group,
            strategy=strategy,
            batch_size=batch_size or conf.consumer_batch_size,
            poll_timeout=poll_timeout,
            consumer_overrides=consumer_overrides,
            clock=clock,
            heartbeat=True,
            # The admin index reads lag from these reports (events.observability.lag).
            lag_sink=record_lag,
            detail=f" ({conf.group_protocol} protocol)",
        )
