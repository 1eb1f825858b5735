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
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from django.utils import timezone
from uuid_utils.compat import uuid7

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
    if TYPE_CHECKING:
        # Every subclass is a dataclass: typed as one (typeshed's DataclassInstance),
        # `self` is what dataclasses.asdict() takes. Not declared at run time.
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

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
        return dataclasses.asdict(self)

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


@dataclasses.dataclass(frozen=True, slots=True)
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


def new_event_id() -> uuid.UUID:
    """A time-ordered UUIDv7 (RFC 9562) for a new event.

    Random (v4) ids land on random pages of every index that holds them (the outbox's,
    each handler's inbox rows, effects keyed by event): at consumer rates those pages
    no longer fit in memory and each insert waits for a read. v7 ids grow with time, so
    the inserts go to the right edge of the indexes. uuid_utils keeps ids made in the
    same millisecond in order with a counter (uuid6's uuid7 instead adds a millisecond
    per id, so under load its timestamps run ahead of the clock) and returns a plain
    uuid.UUID, which orjson and equality treat like any other id.
    """
    return uuid7()


def new_envelope(event: Event) -> tuple[uuid.UUID, dict[str, Any]]:
    event_id = new_event_id()
    return event_id, event.envelope(event_id=event_id, occurred_at=timezone.now())


class _WireEnvelope(msgspec.Struct):
    """The envelope as it travels; `data` is decoded once its event class is known."""

    id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    aggregate_type: str
    aggregate_id: str | int
    data: msgspec.Raw


_ENVELOPE_DECODER = msgspec.json.Decoder(_WireEnvelope)


def decode(value: bytes | None) -> Envelope:
    """Turn message bytes into an Envelope, or raise PoisonMessage saying why not.

    msgspec parses and checks the envelope and the event's fields against their type
    hints in C, far faster than checks written in Python, and a consumer decodes every
    message it reads. Fields a producer adds that the class does not
    know are ignored, so producers can add fields before consumers know them.
    """
    if value is None:
        raise PoisonMessage("message has no value (tombstone)")
    try:
        wire = _ENVELOPE_DECODER.decode(value)
    except msgspec.ValidationError as exc:
        raise PoisonMessage(f"bad envelope: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise PoisonMessage(f"value is not JSON: {exc}") from exc
    except UnicodeDecodeError as exc:  # msgspec decodes strings as strict UTF-8
        raise PoisonMessage(f"value is not UTF-8: {exc}") from exc
    cls = _REGISTRY.get((wire.type, wire.version))
    if cls is None:
        raise PoisonMessage(
            f"unknown event type or version: {wire.type!r} v{wire.version!r}"
        )
    try:
        # mypy takes no `type[X]` for Hashable (python/mypy#11470); classes are hashable.
        event = _data_decoder(cls).decode(wire.data)  # type: ignore[arg-type]
    except (msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise PoisonMessage(f"{cls.event_type} data is invalid: {exc}") from exc
    # Positional: a consumer builds one per message, and keywords cost more.
    return Envelope(
        wire.id,
        cls.event_type,
        wire.version,
        wire.occurred_at,
        wire.aggregate_type,
        str(wire.aggregate_id),
        event,
    )


@functools.cache
def _data_decoder(cls: type[Event]) -> msgspec.json.Decoder[Event]:
    # Built on first use: when an Event subclass registers itself, @dataclass has not
    # yet made it a dataclass.
    return msgspec.json.Decoder(cls)
