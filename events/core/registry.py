"""Handlers: plain functions of one delivery, registered per stream with `@handler`.

    @handler("seat-reserved", events=[SeatReserved])
    def complete_reservation(delivery: Delivery[SeatReserved]) -> None:
        reservation_complete(reservation_id=delivery.event.reservation_id)

`run_consumers` reads this registry. The runner owns everything around the call: the
inbox row in the handler's transaction, retries, dead letters, metrics. A handler only
does the business thing, and raises `PoisonMessage` for input no retry can fix (or an
exception it declared `not_retryable`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from events.core.conf import RetryPolicy
from events.core.types import Event

F = TypeVar("F", bound=Callable[..., Any])


class RetryMode(enum.StrEnum):
    # Failed events move to retry topics and wait there; the partition keeps flowing.
    TOPIC = "topic"
    # Failed events are retried in place; the partition waits (strict per-key order).
    BLOCKING = "blocking"


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    stream: str
    event_types: frozenset[str] | None
    func: Callable[[Any], None]
    retry: RetryMode
    retry_policy: RetryPolicy | None
    batch: bool = False
    # Exceptions (and their subclasses) that skip the retries, and ones that are
    # retried even though a default says otherwise; see events.consumer.failures.
    not_retryable: tuple[type[BaseException], ...] = ()
    retryable: tuple[type[BaseException], ...] = ()

    def accepts(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types


_HANDLERS: dict[str, HandlerSpec] = {}
# Caches of the lookups the consumer makes per message; emptied on every (un)register.
_BY_STREAM: dict[str, list[HandlerSpec]] = {}
_ACCEPTING: dict[tuple[str, str], list[HandlerSpec]] = {}


def handler(
    stream: str,
    *,
    events: Iterable[type[Event]] | None = None,
    retry: RetryMode | str = RetryMode.TOPIC,
    retry_policy: RetryPolicy | None = None,
    name: str | None = None,
    batch: bool = False,
    not_retryable: Iterable[type[BaseException]] = (),
    retryable: Iterable[type[BaseException]] = (),
) -> Callable[[F], F]:
    """Register the decorated function as a handler of `stream`.

    `events` limits it to some event types (default: every type on the stream);
    `retry_policy` overrides the settings' policy for this handler. The handler's
    name (module.function unless given) keys its inbox rows: renaming a handler makes
    it see old events as new.

    The function takes one `events.core.delivery.Delivery` (the typed event as
    `.event`, with its id, trace id, key and coordinates). With `batch=True` it takes
    a list of them (the new events of a consumed batch, in order) and does its work for
    all at once, e.g. one bulk insert. If it raises, the runner calls it again with one
    delivery at a time to find the event that fails, so each event still gets its own
    retry or dead letter.

    `not_retryable` exceptions go to the dead-letter topic at once, as `PoisonMessage`
    and `ValidationError` do; `retryable` ones are retried even if they subclass one of
    those. Both are matched along the exception's `__cause__` chain.
    """
    if not isinstance(stream, str) or not stream:
        raise TypeError(
            "@handler needs the stream it consumes, e.g. @handler('seat-reserved')"
        )
    mode = RetryMode(retry)
    types = frozenset(cls.event_type for cls in events) if events is not None else None

    def register(func: F) -> F:
        spec_name = name or f"{func.__module__}.{func.__qualname__}"
        existing = _HANDLERS.get(spec_name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"a handler named {spec_name!r} is already registered")
        _HANDLERS[spec_name] = HandlerSpec(
            name=spec_name,
            stream=stream,
            event_types=types,
            func=func,
            retry=mode,
            retry_policy=retry_policy,
            batch=batch,
            not_retryable=tuple(not_retryable),
            retryable=tuple(retryable),
        )
        _clear_caches()  # after the insert, so no reader caches the old list
        return func

    return register


def registered_handlers() -> dict[str, HandlerSpec]:
    return dict(_HANDLERS)


def handlers_for(stream: str) -> list[HandlerSpec]:
    # Asked once per consumed message: kept per stream until a handler is (un)registered.
    specs = _BY_STREAM.get(stream)
    if specs is None:
        specs = [spec for spec in _HANDLERS.values() if spec.stream == stream]
        _BY_STREAM[stream] = specs
    return specs


def handlers_accepting(stream: str, event_type: str) -> list[HandlerSpec]:
    """The handlers of `stream` that take events of `event_type`, in registration order."""
    key = (stream, event_type)
    specs = _ACCEPTING.get(key)
    if specs is None:
        specs = [spec for spec in handlers_for(stream) if spec.accepts(event_type)]
        _ACCEPTING[key] = specs
    return specs


def unregister(name: str) -> None:
    """Remove a handler (tests register throw-away handlers)."""
    _HANDLERS.pop(name, None)
    _clear_caches()


def _clear_caches() -> None:
    _BY_STREAM.clear()
    _ACCEPTING.clear()
