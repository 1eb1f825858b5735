"""Model fields of the pipeline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    # Django's fields are generic only in the stubs.
    _TextField = models.TextField[Any, Any]
else:
    _TextField = models.TextField


class JSONTextField(_TextField):
    """A JSON document stored as the text that was serialized, read back as Python.

    For the outbox payload: the relay sends the column's text as it is, so there is
    no jsonb -> text conversion on the hot path, and the bytes on the topic are the
    bytes `publish` wrote (keys in their order, not jsonb's). It cannot be queried
    inside the document, which nothing does on a table whose rows live milliseconds.
    """

    description = "JSON document stored as text"
    if TYPE_CHECKING:
        # What django-stubs' plugin types the model attribute as: any JSON value.
        _pyi_private_set_type: Any
        _pyi_private_get_type: Any

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        # No lenient encoder: a value JSON cannot carry (a Decimal, NaN) must fail at
        # publish, inside the business transaction, not reach a consumer as a string.
        return json.dumps(value, allow_nan=False)

    def value_to_string(self, obj: models.Model) -> str:
        return self.get_prep_value(self.value_from_object(obj)) or ""
