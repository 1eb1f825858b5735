"""The kernel's 409 description names every Conflict code of both apps.

http_api imports neither app (tests/test_architecture.py), so the description lists
their codes as text; this keeps that text in step with the errors the apps raise.
"""

from __future__ import annotations

import payments.errors
import reservations.errors
from http_api.api_schema import error_responses
from http_api.errors import Conflict

APP_ERROR_MODULES = {reservations.errors.__name__, payments.errors.__name__}


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


def test_the_409_description_names_every_conflict_code_of_both_apps():
    conflicts = [
        cls for cls in all_subclasses(Conflict) if cls.__module__ in APP_ERROR_MODULES
    ]
    description = error_responses(409)[409].description

    assert {cls.__module__ for cls in conflicts} == APP_ERROR_MODULES
    assert [cls.code for cls in conflicts if cls.code not in description] == []
