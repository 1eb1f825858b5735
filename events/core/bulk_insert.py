"""Bulk inserts in one statement, skipping rows already present only when there are any.

Entry points: `bulk_insert(model, rows, ...)`, which derives the statement from the
model, and `insert_skipping_present(sql, ...)`, for a hand-written statement.

Both send the rows as ONE JSON parameter read by `json_to_recordset`: Django binds
parameters on the client, quoting every element of an array in Python, and building
a model per row for `bulk_create` costs as much again; together they dominated a
consumer's time (bench/HISTORY.md).

`INSERT ... ON CONFLICT DO NOTHING` probes the arbiter index for every row before
inserting it, and the insert then descends the same index again. In the consumer's
inserts (inbox rows, a handler's effects) a row is already there only after a
redelivery, so the plain INSERT, whose uniqueness check is part of its own descent, is
tried first in a savepoint, and the ON CONFLICT form runs only when it hit a duplicate.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from django.db.models.fields import NOT_PROVIDED, AutoFieldMixin
from psycopg import errors as pg_errors


@dataclass(frozen=True)
class BulkInsertResult:
    """What `bulk_insert` wrote: `written` rows (inserted, or updated on conflict with
    `update_fields`) of the `given` ones, and the `returning` columns of those rows as
    the database returned them (no field conversion), in no particular order."""

    given: int
    written: int
    returned: list[tuple[Any, ...]]

    @property
    def skipped(self) -> int:
        """Rows left out because they conflicted with a row already present."""
        return self.given - self.written


def bulk_insert(
    model: type[Model],
    rows: Sequence[Mapping[str, Any]] | Sequence[Model],
    *,
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] = (),
    returning: Sequence[str] = (),
    expect_conflicts: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> BulkInsertResult:
    """Insert `rows` into `model`'s table in one statement built from its `_meta`.

    `rows` are model instances or mappings, all with the same keys (field names or
    attnames: "user" or "user_id"). A field the rows do not give is left to the
    database when it is the auto primary key, has a `db_default` or is nullable; is
    set to `now()` when it is `auto_now` or `auto_now_add`; gets the field's Python
    default otherwise (ValueError if it has none). Of an instance, every field is
    given but those three kinds. Values travel as JSON (orjson, plus Decimal, bytes
    for bytea, a model instance as its pk), so a custom field whose database value is
    not that (events.fields.JSONTextField) must be given as its database value.

    With `unique_fields` (the fields of a unique constraint), a row conflicting with
    one already present is skipped (ON CONFLICT DO NOTHING), or, with `update_fields`,
    updates those fields of the present row (DO UPDATE SET field = EXCLUDED.field).
    When skipping, the plain INSERT is tried first in a savepoint, and the ON CONFLICT
    form runs only if it hit a duplicate (see the module docstring). One row, or
    `expect_conflicts`, goes straight to the ON CONFLICT form: one pre-check costs less
    than a savepoint, and a transaction handling events one at a time would otherwise
    open one subtransaction per event (past 64, PostgreSQL's snapshots slow down for
    every session). A conflicting row held by a concurrent transaction makes the
    insert wait for it, as ON CONFLICT alone would.

    The statement is built once per (model, keys, options) and cached.
    """
    if not rows:
        return BulkInsertResult(given=0, written=0, returned=[])
    first = rows[0]
    statement = _statement(
        model,
        None if isinstance(first, Model) else tuple(first),
        tuple(unique_fields),
        tuple(update_fields),
        tuple(returning),
        using,
    )
    payload = orjson.dumps(
        statement.prepare(rows), default=_json_default, option=orjson.OPT_NAIVE_UTC
    ).decode()
    if statement.skipping is None:
        first_sql, fallback = statement.plain, None
    elif len(rows) > 1 and not expect_conflicts:
        first_sql, fallback = statement.plain, statement.skipping
    else:
        first_sql, fallback = statement.skipping, None
    _, written, returned = _insert_then_skip(
        first_sql, fallback, [payload], using=using
    )
    return BulkInsertResult(given=len(rows), written=written, returned=returned)


def insert_skipping_present(
    insert_sql: str,
    conflict_clause: str,
    params: Sequence[Any],
    *,
    many: bool = True,
) -> list[tuple[Any, ...]] | None:
    """Run `insert_sql`; if a row violates a unique constraint, insert the others.

    `conflict_clause` is appended to `insert_sql` for the second try, e.g.
    "ON CONFLICT (event_id, handler) DO NOTHING RETURNING event_id, handler".
    Returns None when the plain insert inserted every row, else the rows the second
    statement returned (those it inserted, if the clause has RETURNING).
    If a concurrent transaction holds a conflicting row, both statements wait for it,
    as ON CONFLICT alone would.

    With `many=False` (one row) the ON CONFLICT form runs at once, for the reasons
    `bulk_insert` gives.
    """
    skipping = f"{insert_sql} {conflict_clause}"
    if not many:
        _, _, returned = _insert_then_skip(skipping, None, params)
        return returned
    plain_done, _, returned = _insert_then_skip(insert_sql, skipping, params)
    return None if plain_done else returned


def _insert_then_skip(
    first_sql: str,
    skipping_sql: str | None,
    params: Sequence[Any],
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> tuple[bool, int, list[tuple[Any, ...]]]:
    """Run `first_sql` (in a savepoint when `skipping_sql` is the fallback); on a
    unique violation run `skipping_sql`. Return (first statement succeeded, rows
    written, rows returned)."""
    connection = connections[using]
    if skipping_sql is not None:
        try:
            with transaction.atomic(using=using), connection.cursor() as cursor:
                cursor.execute(first_sql, params)
                return True, *_outcome(cursor)
        except IntegrityError as exc:
            if not isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise
        first_sql = skipping_sql
        first_done = False
    else:
        first_done = True
    with connection.cursor() as cursor:
        cursor.execute(first_sql, params)
        return first_done, *_outcome(cursor)


def _outcome(cursor: CursorWrapper) -> tuple[int, list[tuple[Any, ...]]]:
    return cursor.rowcount, cursor.fetchall() if cursor.description else []


# -- building the statement from the model --------------------------------------------


@dataclass(frozen=True)
class _Statement:
    """The SQL for one (model, keys, options), and how to turn rows into its JSON."""

    plain: str  # the INSERT (with update_fields, the upsert), RETURNING if asked
    skipping: str | None  # the ON CONFLICT DO NOTHING form, when skipping conflicts
    from_instances: bool
    given: frozenset[str]  # the keys every mapping gives (empty for instances)
    attnames: tuple[str, ...]  # the recordset's keys: what is read from an instance
    defaults: tuple[Field[Any, Any], ...]  # added to each mapping: Python defaults

    def prepare(
        self, rows: Sequence[Mapping[str, Any]] | Sequence[Model]
    ) -> Sequence[Mapping[str, Any]]:
        """The rows as mappings of the recordset's keys."""
        if self.from_instances:
            if not all(isinstance(row, Model) for row in rows):
                raise ValueError("rows mix model instances and mappings")
            return [{k: getattr(row, k) for k in self.attnames} for row in rows]
        mappings = [row for row in rows if isinstance(row, Mapping)]
        if len(mappings) != len(rows) or any(
            row.keys() != self.given for row in mappings
        ):
            raise ValueError(f"every row must be a mapping of {sorted(self.given)}")
        if not self.defaults:
            return mappings
        return [
            {**row, **{f.attname: f.get_default() for f in self.defaults}}
            for row in mappings
        ]


@functools.lru_cache(maxsize=256)
def _statement(
    model: type[Model],
    keys: tuple[str, ...] | None,
    unique_fields: tuple[str, ...],
    update_fields: tuple[str, ...],
    returning: tuple[str, ...],
    using: str,
) -> _Statement:
    """Build the statement for mappings giving `keys`, or for instances (None)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    fields, record_keys, defaults, now = _layout(model, keys)
    record = ", ".join(
        f"{quote(k)} {f.db_type(connection)}"
        for k, f in zip(record_keys, fields, strict=True)
    )
    selected = [*(f"r.{quote(k)}" for k in record_keys), *("now()" for _ in now)]
    insert = (
        f"INSERT INTO {quote(model._meta.db_table)} "
        f"({', '.join(quote(_column(f)) for f in [*fields, *now])}) "
        f"SELECT {', '.join(selected)} "
        f"FROM json_to_recordset(%s::json) AS r({record})"
    )

    def columns(names: tuple[str, ...]) -> list[str]:
        return [quote(_column(_concrete_field(model, name))) for name in names]

    tail = f" RETURNING {', '.join(columns(returning))}" if returning else ""

    def statement(plain: str, skipping: str | None = None) -> _Statement:
        return _Statement(
            plain=plain,
            skipping=skipping,
            from_instances=keys is None,
            given=frozenset(keys or ()),
            attnames=tuple(record_keys),
            defaults=tuple(defaults),
        )

    if not unique_fields:
        if update_fields:
            raise ValueError("update_fields needs unique_fields (the conflict target)")
        return statement(insert + tail)
    conflict = f" ON CONFLICT ({', '.join(columns(unique_fields))})"
    if update_fields:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns(update_fields))
        upsert = f"{insert}{conflict} DO UPDATE SET {updates}{tail}"
        return statement(upsert)
    skipping = f"{insert}{conflict} DO NOTHING{tail}"
    return statement(insert + tail, skipping)


def _layout(
    model: type[Model], keys: tuple[str, ...] | None
) -> tuple[
    list[Field[Any, Any]], list[str], list[Field[Any, Any]], list[Field[Any, Any]]
]:
    """(fields the recordset carries, their keys in the JSON, those of them filled from
    Python defaults, fields set to now()) for rows giving `keys` (None: instances)."""
    concrete: list[Field[Any, Any]] = list(model._meta.concrete_fields)
    defaults: list[Field[Any, Any]] = []
    if keys is None:
        fields = [f for f in concrete if _filled_by(f, instance=True) == "value"]
        record_keys = [f.attname for f in fields]
    else:
        fields = [_concrete_field(model, key) for key in keys]
        defaults = [
            f
            for f in concrete
            if f not in fields and _filled_by(f, instance=False) == "default"
        ]
        fields += defaults
        record_keys = [*keys, *(f.attname for f in defaults)]
    now = [
        f
        for f in concrete
        if f not in fields and _filled_by(f, instance=False) == "now"
    ]
    return fields, record_keys, defaults, now


def _concrete_field(model: type[Model], name: str) -> Field[Any, Any]:
    """The column-backed field `name` (or attname) of `model`; ValueError otherwise."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or not field.concrete or not field.column:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field


def _column(field: Field[Any, Any]) -> str:
    if field.column is None:
        raise ValueError(f"{field.name} has no column")
    return field.column


def _filled_by(field: Field[Any, Any], *, instance: bool) -> str:
    """Who fills `field` when the rows leave it out: "database" (auto primary key,
    db_default, NULL), "now" (auto_now, auto_now_add) or "default" (its Python
    default); of an instance, "value" (what the instance holds) for the others."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return "now"
    if field.primary_key and isinstance(field, AutoFieldMixin):
        return "database"
    if field.db_default is not NOT_PROVIDED:
        return "database"
    if instance:
        return "value"
    if field.has_default():
        return "default"
    if field.null:
        return "database"
    raise ValueError(
        f"{field.model.__name__}.{field.name} has no default: every row must give it"
    )


def _json_default(value: object) -> object:
    """Encode what orjson does not: Decimal (as text), bytes (bytea's hex input),
    model instances (their pk)."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Model):
        return value.pk
    raise TypeError(f"cannot send {type(value).__name__} through json_to_recordset")
