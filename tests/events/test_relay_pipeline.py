"""The relay's loop (events.relay.pipeline) stepped with fakes: no broker, no database.

The fakes stand in for the parts that talk to PostgreSQL and Kafka; what is checked is
the loop's own behaviour: which window it reads after what, when it backs off, when it
sleeps.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from events.core.kafka import KafkaError
from events.relay.loop_state import LoopState
from events.relay.pipeline import Pipeline
from events.relay.recorder import Batch
from events.relay.sending import BatchSender
from events.relay.window import Row, Window


def rows(*ids: int) -> list[Row]:
    return [(i, "topic", f"k{i}", "{}", '{"event_id": "e"}') for i in ids]


class Delivered:
    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


class FakeProducer:
    """Answers every produced row at the next poll or flush; fails the rows in `fail`."""

    def __init__(self, fail: set[int]) -> None:
        self.fail = fail
        self.produced: list[int] = []
        self._waiting: list[Any] = []

    def produce(self, topic: str, *, on_delivery: Any, **_: Any) -> None:
        row_id = on_delivery.args[-1]  # partial(record_delivery, outcomes, row_id)
        self.produced.append(row_id)
        self._waiting.append((row_id, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        waiting, self._waiting = self._waiting, []
        for row_id, on_delivery in waiting:
            if row_id in self.fail:
                self.fail.discard(row_id)  # it fails once, then goes through
                on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                on_delivery(None, Delivered())
        return len(waiting)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class ScriptedReader:
    """Returns the scripted reads in turn (then nothing) and notes the windows asked."""

    def __init__(self, *reads: list[Row]) -> None:
        self.reads = list(reads)
        self.windows: list[Window] = []
        self.sleeps = 0

    def fetch(self, window: Window) -> tuple[list[Row], str]:
        self.windows.append(window)
        return (self.reads.pop(0) if self.reads else []), f"{len(self.windows)}:9:"

    def prefetch(self, window: Window) -> None:
        pass

    def discard_prefetch(self) -> None:
        pass

    def notified(self) -> bool:
        return False

    def wait_for_notify(self, timeout: float, stop: threading.Event) -> None:
        self.sleeps += 1

    def close(self) -> None:
        pass


class FakeRecorder:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def submit(self, batch: Batch) -> None:
        self.batches.append(batch)

    def drain(self) -> None:
        pass

    def take_error(self) -> BaseException | None:
        return None

    def close(self) -> None:
        pass


class NoSleep(threading.Event):
    """A stop flag whose waits return at once and are noted."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(timeout)
        return self.is_set()


def pipeline(reader: ScriptedReader, *, fail: frozenset[int] = frozenset()) -> Pipeline:
    producer = FakeProducer(set(fail))
    return Pipeline(
        reader=reader,
        sender=BatchSender(lambda: producer),
        recorder=FakeRecorder(),
        state=LoopState(
            batch_size=3, poll_interval=60.0, max_backoff=2.0, now=time.monotonic()
        ),
        stop=NoSleep(),
    )


def test_a_failed_delivery_backs_off_then_reads_everything_pending_again() -> None:
    reader = ScriptedReader(rows(1, 2), rows(2))
    loop = pipeline(reader, fail=frozenset({2}))
    for _ in range(4):
        loop._step()
    (first, retry) = loop.recorder.batches[:2]
    assert first.outcomes[1][0] is None and first.outcomes[2][0] is not None
    assert loop._stop.waited == [0.5]
    # The next read is of everything pending, not of the window after rows 1 and 2.
    assert reader.windows == [Window(), Window()]
    assert retry.outcomes[2][0] is None


def test_an_empty_read_of_everything_pending_sleeps_until_notified() -> None:
    reader = ScriptedReader([])
    loop = pipeline(reader)
    loop._step()
    assert reader.sleeps == 1
    assert loop.state.window == Window()


def test_an_emptied_pipeline_reads_everything_pending_again_without_sleeping() -> None:
    reader = ScriptedReader(rows(1))
    loop = pipeline(reader)
    loop._step()  # reads row 1 (a short read: caught up) and produces it
    loop._step()  # no notification: no read; the batch is recorded; start over
    assert reader.sleeps == 0
    assert loop.state.window == Window()
    loop._step()
    assert reader.windows == [Window(), Window()]


def test_a_full_batch_is_followed_at_once_by_the_next_page() -> None:
    reader = ScriptedReader(rows(1, 2, 3), rows(4))
    loop = pipeline(reader)
    loop._step()
    loop._step()
    assert reader.windows == [Window(), Window(upper="1:9:", after=3)]
