"""The leader's loop: read, produce, hand over to the recorder, repeat.

It composes the parts of events.relay (a Reader, a BatchSender, a Recorder) and keeps
what lasts between iterations in a LoopState, whose rules are described there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from events.core.kafka import KafkaError
from events.observability import audit, metrics
from events.relay.loop_state import LoopState
from events.relay.reader import Reader
from events.relay.recorder import Batch, Recorder
from events.relay.sending import BatchSender, audit_published

# One logger for everything the relay says (as before the split, and as relay_outbox
# logs): its lines read and filter the same whichever module wrote them.
logger = logging.getLogger("events.relay")


class Pipeline:
    """One leader session's loop over the outbox.

    Contract: `run()` blocks until `stop` is set, or until `reassess()` (asked at most
    once per poll interval, whenever the pipeline is empty) says the shards to lead
    changed; it raises what the leader's connection raises (the session is over
    then). `close()` always follows, finishes the batches in flight and records their
    outcomes, so a clean stop re-sends nothing and a released shard's next leader
    starts from rows nobody is sending. Batches are handed to the recorder complete
    and oldest first.
    """

    def __init__(
        self,
        *,
        reader: Reader,
        sender: BatchSender,
        recorder: Recorder,
        state: LoopState,
        stop: threading.Event,
        reassess: Callable[[], bool] = lambda: False,
    ) -> None:
        self.reader = reader
        self.sender = sender
        self.recorder = recorder
        self.state = state
        self._stop = stop
        self._reassess = reassess
        self._reassess_at = time.monotonic() + state.poll_interval
        self._shards_changed = False
        self._in_flight: deque[Batch] = deque()

    def run(self) -> None:
        while not self._stop.is_set() and not self._shards_changed:
            self._step()

    def close(self) -> None:
        self.reader.close()
        # Without a producer (dropped after a fatal error) the old batches never
        # complete: their rows stay pending and are sent again.
        if self.sender.has_producer and self._in_flight:
            self.sender.wait_for(self._all_complete)
            self._hand_over_completed()
        self.recorder.drain()
        self.recorder.close()
        self._in_flight.clear()

    def _step(self) -> None:
        metrics.RELAY_HEARTBEAT.set_to_current_time()
        producer = self.sender.producer()
        producer.poll(0)
        failures = self._hand_over_completed()
        if failures:
            self.reader.discard_prefetch()
            self._back_off(failures, self.state.delivery_failed())
            self.state.start_over(time.monotonic())
            return
        found_nothing = False
        if self.state.wants_read(
            in_flight=len(self._in_flight),
            now=time.monotonic(),
            notified=self.reader.notified,
        ):
            rows, snapshot = self.reader.fetch(self.state.window)
            read = self.state.read_done(rows, snapshot)
            if read.full:
                # More is likely waiting: let the database read the next batch while
                # this one is produced.
                self.reader.prefetch(self.state.window)
            if rows:
                self._in_flight.append(self.sender.produce_batch(producer, rows))
            if read.full:
                return
            found_nothing = read.found_nothing
        if self._in_flight:
            producer.poll(0.005)
            return
        self._rest(found_nothing)

    def _rest(self, found_nothing: bool) -> None:
        """The pipeline is empty: everything read is recorded. Pause, then start over."""
        self.reader.discard_prefetch()
        self.recorder.drain()
        pause = self.state.pipeline_empty(
            recording_failed=self.recorder.take_error() is not None,
            found_nothing=found_nothing,
        )
        if pause.backoff is not None:
            self._back_off([], pause.backoff)
        if pause.wait_for_notify:
            # A commit after the empty read's snapshot notified after the notifications
            # that read drained, so this returns at once.
            self.reader.wait_for_notify(self.state.poll_interval, self._stop)
        now = time.monotonic()
        self.state.start_over(now)
        if now >= self._reassess_at:
            # The pipeline is empty and the connection free: the moment to ask.
            self._reassess_at = now + self.state.poll_interval
            self._shards_changed = self._reassess()

    def _back_off(self, failures: list[tuple[int, KafkaError]], delay: float) -> None:
        # Let what is in flight finish and be recorded, then wait before trying again.
        self.sender.wait_for(self._all_complete)
        self._hand_over_completed()
        self.recorder.drain()
        self.recorder.take_error()
        errors = sorted({f"{e.name()}: {e.str()}" for _, e in failures})
        logger.warning(
            "%d events not acknowledged (%s); retrying in %.1f s",
            len(failures),
            "; ".join(errors[:3]) or "database error while recording",
            delay,
        )
        self._stop.wait(delay)

    def _hand_over_completed(self) -> list[tuple[int, KafkaError]]:
        """Give finished batches, oldest first, to the recorder; return their failures."""
        failures: list[tuple[int, KafkaError]] = []
        while self._in_flight and self._in_flight[0].complete:
            batch = self._in_flight.popleft()
            self.sender.isolate_refused(batch)
            batch_failures = batch.failures()
            self.sender.drop_if_fatal(batch_failures)
            failures.extend(batch_failures)
            if audit.enabled():
                audit_published(batch)
            self.recorder.submit(batch)
        return failures

    def _all_complete(self) -> bool:
        return all(batch.complete for batch in self._in_flight)
