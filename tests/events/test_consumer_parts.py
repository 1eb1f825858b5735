"""The consumer's parts on their own: execution (batch splitting), progress, planning,
classification, routing, the storm guard and the loop's pause schedule.

Pure logic with stand-ins for Kafka messages; what these parts add up to (delivery,
retries, dead letters) is tested against the real broker and database in
test_consumer.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pytest
from django.core.exceptions import ValidationError

from events.consumer.clock import ManualClock
from events.consumer.execution import Failure, execute
from events.consumer.failures.classifier import ExceptionClassifier, classifier_for
from events.consumer.failures.router import RouteKind, route
from events.consumer.failures.storm_guard import DeadLetterRateGuard
from events.consumer.loop import ConsumerLoop
from events.consumer.planning import Planner
from events.consumer.progress import BatchProgress
from events.consumer.units import Coordinates, Unit
from events.core.conf import RetryPolicy, pipeline_settings
from events.core.headers import RETRY_ATTEMPT, RETRY_DUE_AT_MS, RETRY_HANDLER
from events.core.registry import HandlerSpec, RetryMode
from events.core.types import PoisonMessage, new_envelope
from tests.effects.event_types import TestPinged


@dataclass
class FakeMessage:
    """The parts of confluent_kafka.Message the consumer's parts read."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None = b"{}"
    _headers: list[tuple[str, bytes]] = field(default_factory=list)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def error(self) -> None:
        return None


def spec(name: str, *, batch: bool = False, **extra: object) -> HandlerSpec:
    return HandlerSpec(
        name=name,
        stream="reservation",
        event_types=None,
        func=lambda _: None,
        retry=RetryMode.TOPIC,
        retry_policy=None,
        batch=batch,
        **extra,  # type: ignore[arg-type]
    )


def unit(message: FakeMessage, handler: HandlerSpec, seq: int) -> Unit:
    where = Coordinates(message.topic(), message.partition(), message.offset(), 1, None)
    return Unit(message, "reservation", {}, where, spec=handler, seq=seq)  # type: ignore[arg-type]


class FakeTransaction:
    """Stands in for run_optimistically: fails where told, remembers every run.

    Like the real one, single handlers run in order and batch handlers' calls come
    after them, and a failed batch call does not say which unit failed.
    """

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing  # ids of units whose handler raises
        self.runs: list[tuple[list[int], bool]] = []

    def __call__(self, units: list[Unit], *, batches: bool = True) -> Failure | None:
        self.runs.append(([id(u) for u in units], batches))
        for index, u in enumerate(units):
            assert u.spec is not None
            if id(u) in self.failing and not (batches and u.spec.batch):
                return Failure(index, RuntimeError(f"unit {index}"))
        if batches and any(
            id(u) in self.failing and u.spec is not None and u.spec.batch for u in units
        ):
            return Failure(None, RuntimeError("a batch call failed"))
        return None


def run_execute(
    units: list[Unit],
    failing: set[int],
    on_failure: Callable[[Unit, BaseException], bool] = lambda u, e: True,
) -> tuple[int | None, list[Unit], list[Unit], FakeTransaction]:
    done: list[Unit] = []
    failed: list[Unit] = []

    def handle(u: Unit, error: BaseException) -> bool:
        failed.append(u)
        return on_failure(u, error)

    transaction = FakeTransaction(failing)
    stopped_at = execute(
        units,
        run=transaction,
        on_failure=handle,
        mark_done=done.extend,
        stopping=lambda: False,
    )
    return stopped_at, done, failed, transaction


# -- execution: splitting a batch at its failures -----------------------------------------


def test_a_batch_without_failures_runs_in_one_transaction() -> None:
    messages = [FakeMessage("t", 0, n) for n in range(5)]
    units = [unit(m, spec("single"), n) for n, m in enumerate(messages)]
    stopped_at, done, failed, transaction = run_execute(units, failing=set())
    assert stopped_at is None and failed == []
    assert done == units
    assert transaction.runs == [([id(u) for u in units], True)]


def test_a_failing_batch_handler_is_run_again_one_event_at_a_time() -> None:
    batch = spec("batch", batch=True)
    messages = [FakeMessage("t", 0, n) for n in range(6)]
    units = [unit(m, batch, n) for n, m in enumerate(messages)]
    culprit = units[3]
    stopped_at, done, failed, transaction = run_execute(units, failing={id(culprit)})
    assert stopped_at is None
    assert failed == [culprit], "only the failing event gets a failure"
    assert sorted(map(id, done)) == sorted(map(id, units)), "each unit done once"
    assert len(done) == len(units)
    ids = [id(u) for u in units]
    assert (
        transaction.runs
        == [
            (ids, True),  # the batch call fails: culprit unknown
            (ids, False),  # one at a time: unit 3 fails
            (
                ids[:3],
                False,
            ),  # those before it, singly (their batch call already failed)
            (ids[4:], False),  # the rest, singly
        ]
    )


def test_several_handlers_on_one_message_each_keep_their_outcome() -> None:
    first, second = spec("first"), spec("second")
    messages = [FakeMessage("t", 0, n) for n in range(3)]
    units = [unit(m, h, n) for n, m in enumerate(messages) for h in (first, second)]
    culprit = units[3]  # message 1, handler "second"
    stopped_at, done, failed, _ = run_execute(units, failing={id(culprit)})
    assert stopped_at is None
    assert failed == [culprit]
    assert units[2] in done, "the same message's other handler still ran"
    progress = BatchProgress(messages, units)  # type: ignore[arg-type]
    progress.mark_done([u for u in units if u is not culprit])
    assert progress.committable() == {("t", 0): 1}, "message 1 is not finished"
    progress.mark_done([culprit])
    assert progress.committable() == {("t", 0): 3}


def test_interleaved_partitions_commit_only_finished_prefixes() -> None:
    messages = [
        FakeMessage("t", n % 2, n // 2) for n in range(8)
    ]  # p0 and p1 alternate
    handler = spec("h")
    units = [unit(m, handler, n) for n, m in enumerate(messages)]
    culprit = units[4]  # partition 0, offset 2
    # The failure handler refuses (a storm): the batch stops at the culprit.
    stopped_at, done, failed, _ = run_execute(
        units, failing={id(culprit)}, on_failure=lambda u, e: False
    )
    assert stopped_at == 4 and failed == [culprit]
    assert done == units[:4]
    progress = BatchProgress(messages, units)  # type: ignore[arg-type]
    progress.mark_done(done)
    assert progress.committable() == {("t", 0): 2, ("t", 1): 2}
    assert [(m.partition(), m.offset()) for m in progress.unfinished()] == [
        (0, 2),
        (0, 3),
        (1, 2),
        (1, 3),
    ]


def test_execution_stops_before_the_next_unit_when_asked() -> None:
    units = [unit(FakeMessage("t", 0, n), spec("h"), n) for n in range(3)]
    transaction = FakeTransaction(set())
    assert (
        execute(
            units,
            run=transaction,
            on_failure=lambda u, e: True,
            mark_done=lambda done: None,
            stopping=lambda: True,
        )
        == 0
    )
    assert transaction.runs == []


# -- planning -------------------------------------------------------------------------------


@pytest.fixture
def conf():
    return pipeline_settings()


def envelope_bytes(ping_id: str) -> bytes:
    _, envelope = new_envelope(TestPinged(ping_id=ping_id))
    return orjson.dumps(envelope)


def test_planning_makes_a_unit_per_accepting_handler_and_one_for_poison(conf) -> None:
    planner = Planner(conf, ["reservation"])
    topic = conf.topic("reservation")
    good = FakeMessage(topic, 0, 0, envelope_bytes("a"))
    poison = FakeMessage(topic, 0, 1, b"not json")
    plan = planner.plan([good, poison], now_ms=0)  # type: ignore[list-item]
    assert plan.planned == [good, poison]
    assert [u.handler_name for u in plan.units if u.seq == 0] == [
        "tests.effects.handlers.record_ping"
    ]
    [bad] = [u for u in plan.units if u.seq == 1]
    assert bad.spec is None and isinstance(bad.error, PoisonMessage)


def test_a_retry_not_yet_due_waits_with_the_rest_of_its_partition(conf) -> None:
    planner = Planner(conf, ["reservation"])
    retry_topic = conf.retry_topics("reservation")[0]
    handler = "tests.effects.handlers.record_ping"

    def retry(offset: int, due_ms: int) -> FakeMessage:
        return FakeMessage(
            retry_topic,
            0,
            offset,
            envelope_bytes(f"r{offset}"),
            [
                (RETRY_HANDLER, handler.encode()),
                (RETRY_ATTEMPT, b"2"),
                (RETRY_DUE_AT_MS, str(due_ms).encode()),
            ],
        )

    due, later, after = retry(0, 900), retry(1, 2000), retry(2, 900)
    plan = planner.plan([due, later, after], now_ms=1000)  # type: ignore[list-item]
    assert plan.planned == [due]
    assert plan.units[0].where.attempt == 2
    assert plan.not_due == [(later, 2000)], "the partition waits from `later` on"


# -- classification and routing ---------------------------------------------------------------


class Transient(Exception):
    pass


class BadInput(Transient):
    pass


def test_the_classifier_follows_causes_and_prefers_the_most_specific_class() -> None:
    classifier = ExceptionClassifier(not_retryable=(BadInput,), retryable=())
    assert classifier.is_retryable(Transient("db busy"))
    assert not classifier.is_retryable(BadInput("no such seat"))
    try:
        try:
            raise BadInput("no such seat")
        except BadInput as exc:
            raise RuntimeError("handler failed") from exc
    except RuntimeError as wrapped:
        assert not classifier.is_retryable(wrapped), "the cause decides"
    try:
        try:
            raise BadInput("no such seat")
        except BadInput:
            raise RuntimeError("a new failure") from None
    except RuntimeError as replaced:
        assert classifier.is_retryable(replaced), "no cause: not followed"
    overriding = ExceptionClassifier(not_retryable=(Transient,), retryable=(BadInput,))
    assert overriding.is_retryable(BadInput("retry this one"))
    assert not overriding.is_retryable(Transient("but not this"))


def test_handlers_add_to_the_defaults() -> None:
    plain = classifier_for(spec("plain"))
    assert not plain.is_retryable(PoisonMessage("x"))
    assert not plain.is_retryable(ValidationError("x"))
    assert plain.is_retryable(KeyError("x"))
    strict = classifier_for(spec("strict", not_retryable=(KeyError,)))
    assert not strict.is_retryable(KeyError("x"))
    lenient = classifier_for(spec("lenient", retryable=(ValidationError,)))
    assert lenient.is_retryable(ValidationError("x"))
    assert classifier_for(spec("again", not_retryable=(KeyError,))) is strict


POLICY = RetryPolicy(attempts=3, initial_backoff_ms=100, multiplier=2.0)


@pytest.mark.parametrize(
    ("retryable", "mode", "attempt", "topics", "kind", "topic", "delay_ms"),
    [
        (False, RetryMode.TOPIC, 1, ["r1", "r2"], RouteKind.DEAD_LETTER, None, 0),
        (True, RetryMode.TOPIC, 1, ["r1", "r2"], RouteKind.RETRY_TOPIC, "r1", 100),
        (True, RetryMode.TOPIC, 2, ["r1", "r2"], RouteKind.RETRY_TOPIC, "r2", 200),
        (True, RetryMode.TOPIC, 2, ["r1"], RouteKind.RETRY_TOPIC, "r1", 200),
        (True, RetryMode.TOPIC, 3, ["r1", "r2"], RouteKind.DEAD_LETTER, None, 0),
        (True, RetryMode.TOPIC, 1, [], RouteKind.DEAD_LETTER, None, 0),
        (True, RetryMode.BLOCKING, 1, [], RouteKind.RETRY_IN_PLACE, None, 100),
        (True, RetryMode.BLOCKING, 3, ["r1"], RouteKind.DEAD_LETTER, None, 0),
        (False, RetryMode.BLOCKING, 1, ["r1"], RouteKind.DEAD_LETTER, None, 0),
    ],
)
def test_routes(retryable, mode, attempt, topics, kind, topic, delay_ms) -> None:
    step = route(
        retryable=retryable,
        mode=mode,
        attempt=attempt,
        policy=POLICY,
        retry_topics=topics,
    )
    assert (step.kind, step.topic, step.delay_ms) == (kind, topic, delay_ms)


def test_the_storm_guard_counts_a_sliding_window_on_its_clock() -> None:
    clock = ManualClock()
    guard = DeadLetterRateGuard(
        max_dead_letters=2, window_seconds=10, clock=clock.monotonic
    )
    assert guard.try_acquire() and guard.try_acquire()
    assert not guard.try_acquire()
    clock.advance(9.9)
    assert not guard.try_acquire()
    clock.advance(0.1)
    assert guard.try_acquire()


# -- the loop's pause schedule ------------------------------------------------------------------


class RecordingConsumer:
    """Records pause/resume/seek calls (the schedule is the loop's, not Kafka's)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def pause(self, partitions: list) -> None:
        self.calls.append(("pause", [(p.topic, p.partition) for p in partitions]))

    def resume(self, partitions: list) -> None:
        self.calls.append(("resume", [(p.topic, p.partition) for p in partitions]))

    def seek(self, partition: object) -> None:
        pass


class NoStrategy:
    def start(self) -> None: ...

    def process(self, messages: list, loop: object) -> None: ...

    def close(self) -> None: ...


def test_paused_partitions_resume_at_their_due_time_and_bound_the_poll() -> None:
    clock = ManualClock()
    loop = ConsumerLoop(
        topics=["t"],
        group_id="g",
        strategy=NoStrategy(),
        batch_size=10,
        poll_timeout=0.5,
        clock=clock,
    )
    consumer = RecordingConsumer()
    loop._consumer = consumer
    loop.assigned = {("t", 0), ("t", 1)}
    loop.pause_until(FakeMessage("t", 0, 7), clock.now_ms() + 200)  # type: ignore[arg-type]
    assert loop._poll_timeout() == pytest.approx(0.2)
    loop._resume_due_partitions()
    assert consumer.calls == [("pause", [("t", 0)])]
    clock.advance(0.2)
    assert loop._poll_timeout() == 0
    loop._resume_due_partitions()
    assert consumer.calls[-1] == ("resume", [("t", 0)])
    assert loop._poll_timeout() == 0.5
    loop.pause_all_until(clock.now_ms() + 1000)
    clock.advance(0.5)
    loop._resume_due_partitions()
    assert consumer.calls[-1][0] == "pause", "not due yet"
    clock.advance(0.5)
    loop._resume_due_partitions()
    assert sorted(consumer.calls[-1][1]) == [("t", 0), ("t", 1)]


def test_the_manual_clock_waits_without_sleeping_and_sees_a_stop() -> None:
    clock = ManualClock()
    stop = threading.Event()
    start = clock.now_ms()
    assert clock.wait(stop, 30) is False
    assert clock.now_ms() - start == 30_000
    stop.set()
    assert clock.wait(stop, 30) is True
