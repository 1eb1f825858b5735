"""Typed events and the envelope every message carries.

An event type is a frozen dataclass that subclasses `Event` and names its type, schema
version, stream and aggregate. Defining the class registers it, so a consumer can turn
bytes back into the right class; bytes that cannot be turned into a known, valid event
raise `PoisonMessage`, which the consumer dead-letters without retrying.

Envelope (JSON): {"id", "type", "version", "occurred_at", "aggregate_type",
"aggregate_id", "data"}. Headers repeat id and type and carry a trace id.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import orjson
from django.utils import timezone

ENVELOPE_FIELDS = (
    "id",
    "type",
    "version",
    "occurred_at",
    "aggregate_type",
    "aggregate_id",
    "data",
)

_REGISTRY: dict[tuple[str, int], type[Event]] = {}


class PoisonMessage(Exception):
    """A message that no retry can fix: undecodable, unknown type or version, invalid data."""


class Event:
    """Base of every event type.

    Subclasses are `@dataclass(frozen=True, kw_only=True)` classes whose fields are the
    event's data (JSON types only: str, int, float, bool, None, lists and dicts of those).
    They set the class variables below and implement `aggregate_id`; the aggregate id is
    also the Kafka key, so every event of one aggregate lands on one partition, in order.
    """

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    stream: ClassVar[str]
    aggregate_type: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("event_type", "stream", "aggregate_type"):
            if not isinstance(cls.__dict__.get(attr, getattr(cls, attr, None)), str):
                raise TypeError(f"{cls.__name__} must set the class variable {attr!r}")
        key = (cls.event_type, cls.version)
        known = _REGISTRY.get(key)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"event type {key} is already defined by {known!r}")
        _REGISTRY[key] = cls

    @property
    def aggregate_id(self) -> str:
        raise NotImplementedError

    @property
    def key(self) -> str:
        return self.aggregate_id

    def data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def envelope(self, *, event_id: uuid.UUID, occurred_at: datetime) -> dict[str, Any]:
        return {
            "id": str(event_id),
            "type": self.event_type,
            "version": self.version,
            "occurred_at": occurred_at.isoformat(),
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "data": self.data(),
        }


@dataclasses.dataclass(frozen=True)
class Envelope:
    """A decoded, validated message: the metadata plus the typed event."""

    event_id: uuid.UUID
    event_type: str
    version: int
    occurred_at: datetime
    aggregate_type: str
    aggregate_id: str
    event: Event


def event_class(event_type: str, version: int) -> type[Event] | None:
    return _REGISTRY.get((event_type, version))


def registered_event_types() -> dict[tuple[str, int], type[Event]]:
    return dict(_REGISTRY)


def new_envelope(event: Event) -> tuple[uuid.UUID, dict[str, Any]]:
    event_id = uuid.uuid4()
    return event_id, event.envelope(event_id=event_id, occurred_at=timezone.now())


def decode(value: bytes | None) -> Envelope:
    """Turn message bytes into an Envelope, or raise PoisonMessage saying why not."""
    if value is None:
        raise PoisonMessage("message has no value (tombstone)")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:  # also raised for invalid UTF-8
        raise PoisonMessage(f"value is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise PoisonMessage("envelope is not a JSON object")
    missing = [name for name in ENVELOPE_FIELDS if name not in raw]
    if missing:
        raise PoisonMessage(f"envelope lacks {', '.join(missing)}")
    try:
        event_id = uuid.UUID(str(raw["id"]))
        occurred_at = datetime.fromisoformat(str(raw["occurred_at"]))
    except ValueError as exc:
        raise PoisonMessage(f"bad envelope id or occurred_at: {exc}") from exc
    version = raw["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise PoisonMessage(f"schema version must be an integer, got {version!r}")
    cls = event_class(str(raw["type"]), version)
    if cls is None:
        raise PoisonMessage(
            f"unknown event type or version: {raw['type']!r} v{version!r}"
        )
    event = _build(cls, raw["data"])
    return Envelope(
        event_id=event_id,
        event_type=cls.event_type,
        version=version,
        occurred_at=occurred_at,
        aggregate_type=str(raw["aggregate_type"]),
        aggregate_id=str(raw["aggregate_id"]),
        event=event,
    )


@functools.cache
def _fields_of(
    cls: type[Event],
) -> tuple[tuple[dataclasses.Field[Any], Any, Callable[[Any], bool]], ...]:
    # get_type_hints is slow (it evaluates annotations) and so is taking a hint apart
    # for every value; a consumer decodes thousands of events a second, so each class
    # is introspected once and each field gets a ready-made check.
    hints = typing.get_type_hints(cls)
    return tuple(
        (f, hints[f.name], _checker(hints[f.name]))
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    )


def _checker(hint: Any) -> Callable[[Any], bool]:
    """Return a function that says whether a decoded JSON value matches `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        checks = [_checker(arg) for arg in typing.get_args(hint)]
        return lambda value: any(check(value) for check in checks)
    if hint is type(None):
        return lambda value: value is None
    if hint is Any:
        return lambda value: True
    if origin is not None:
        return lambda value: isinstance(value, origin)
    if hint is float:
        return lambda value: type(value) in (int, float)
    if hint is int:
        return lambda value: type(value) is int
    return lambda value: isinstance(value, hint)


def _build(cls: type[Event], data: Any) -> Event:
    if not isinstance(data, dict):
        raise PoisonMessage(f"{cls.event_type} data is not a JSON object")
    kwargs: dict[str, Any] = {}
    for f, hint, check in _fields_of(cls):
        if f.name not in data:
            has_default = (
                f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise PoisonMessage(f"{cls.event_type} data lacks field {f.name!r}")
        value = data[f.name]
        if not check(value):
            raise PoisonMessage(
                f"{cls.event_type}.{f.name} must be {hint}, got {value!r}"
            )
        kwargs[f.name] = value
    return cls(**kwargs)
