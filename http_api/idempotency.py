"""Idempotency-Key support for POST views that move seats or money.

A view method decorated with `@idempotent("scope")` runs once per (user, scope, key):

* The first request inserts an `IdempotencyRecord` and keeps it locked for the whole
  request, in the same transaction as the work it guards; the response (success or a
  4xx error) is rendered and stored there before commit: status, Content-Type and
  the exact body bytes.
* A repeat, or a concurrent duplicate whose insert waited on the unique index until
  the first committed, gets exactly those stored bytes and status back (with
  `Idempotent-Replayed: true`): no second effect. Other headers a view sets are not
  stored; today's views set none.
* A repeat with a different method, path or body is refused (422).
* A 400 (the input never reached the service) or an unexpected error (5xx) rolls the
  record back with the work, so a corrected or later retry runs.

A key is 1 to 255 visible ASCII characters or spaces (KEY_PATTERN); any other is a 400
invalid_idempotency_key. Requests without the header are not deduplicated.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeAlias, TypeVar

from django.db import transaction
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from http_api.errors import IdempotencyKeyReused, InvalidIdempotencyKey
from http_api.models import IdempotencyRecord

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# The one rule for a key, which `_validate_key` applies and the OpenAPI parameter
# publishes: 1 to 255 visible ASCII characters or spaces. HTTP header values are in
# effect ASCII (RFC 9110 makes other bytes obsolete; WSGI hands them over as Latin-1),
# so a key with any other character, a control character included, is refused rather
# than stored in a form the client did not send. ECMA-262 syntax, which JSON Schema
# uses, and Python's agree on it.
KEY_PATTERN = rf"^[\x20-\x7E]{{1,{MAX_KEY_LENGTH}}}$"
_KEY_RE = re.compile(KEY_PATTERN)
# Invalid input never started the work: the client may fix it and reuse the key.
UNSTORED_STATUSES = frozenset({400})

View = TypeVar("View", bound=APIView)
# The method's request type: DRF's, or http_api.authenticated.AuthenticatedRequest.
Req = TypeVar("Req", bound=Request)
Params = ParamSpec("Params")
# A view method as written (returns a DRF Response), and as decorated: a replay is a
# plain HttpResponse carrying the stored bytes.
ViewMethod: TypeAlias = Callable[Concatenate[View, Req, Params], Response]
IdempotentViewMethod: TypeAlias = Callable[
    Concatenate[View, Req, Params], HttpResponseBase
]


def idempotent(
    scope: str,
) -> Callable[[ViewMethod[View, Req, Params]], IdempotentViewMethod[View, Req, Params]]:
    """Make an APIView method honour the Idempotency-Key header under `scope`.

    `scope` names the operation, so one key sent to two different endpoints is two
    keys; it is stored with the record and must not change once clients use it.
    """

    def decorate(
        method: ViewMethod[View, Req, Params],
    ) -> IdempotentViewMethod[View, Req, Params]:
        @functools.wraps(method)
        def wrapper(
            view: View, request: Req, /, *args: Params.args, **kwargs: Params.kwargs
        ) -> HttpResponseBase:
            key = request.headers.get(IDEMPOTENCY_HEADER)
            if key is None:
                return method(view, request, *args, **kwargs)
            _validate_key(key)
            return _run_once(
                view=view,
                request=request,
                scope=scope,
                key=key,
                call=lambda: method(view, request, *args, **kwargs),
            )

        return wrapper

    return decorate


def _run_once(
    *,
    view: APIView,
    request: Request,
    scope: str,
    key: str,
    call: Callable[[], Response],
) -> HttpResponseBase:
    user_id = request.user.pk
    if user_id is None:
        # A key belongs to a user; the views that take one require authentication,
        # so this is only reached by a view that forgot to.
        raise NotAuthenticated()
    fingerprint = request_fingerprint(request)
    with transaction.atomic():
        record = idempotency_record_claim(
            user_id=user_id, scope=scope, key=key, fingerprint=fingerprint
        )
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(extra={"idempotency_key": key})
        if record.response_status is not None:
            return idempotency_record_replay(record=record)
        try:
            with transaction.atomic():
                response = call()
        except Exception as exc:  # noqa: BLE001 - DRF decides; unknown errors re-raise
            response = view.handle_exception(exc)
        if response.status_code in UNSTORED_STATUSES or response.status_code >= 500:
            transaction.set_rollback(True)
            return response
        # Render now, as dispatch would after we return (initial() has negotiated the
        # renderer), so the bytes stored are the bytes sent. dispatch finalizes the
        # response again: that only sets the same renderer and Allow once more (Vary
        # was added, and taken off the view's headers, the first time), and Django does
        # not render a rendered response twice.
        response = view.finalize_response(request, response)
        response.render()
        idempotency_record_complete(record=record, response=response)
        return response


def idempotency_record_claim(
    *, user_id: int, scope: str, key: str, fingerprint: str
) -> IdempotencyRecord:
    """Insert the key's record unless it exists, then lock and return it.

    Must run inside a transaction. `ON CONFLICT DO NOTHING` blocks while another
    transaction holds an uncommitted row with the same key, so the lock that follows
    always sees that request's final outcome.
    """
    IdempotencyRecord.objects.bulk_create(
        [
            IdempotencyRecord(
                user_id=user_id, scope=scope, key=key, fingerprint=fingerprint
            )
        ],
        ignore_conflicts=True,
    )
    return IdempotencyRecord.objects.select_for_update().get(
        user_id=user_id, scope=scope, key=key
    )


def idempotency_record_complete(
    *, record: IdempotencyRecord, response: HttpResponse
) -> None:
    """Store the rendered response that repeats of this key will get."""
    record.response_status = response.status_code
    record.response_content = response.content
    record.response_content_type = response.get("Content-Type", "")
    record.completed_at = timezone.now()
    record.save(
        update_fields=[
            "response_status",
            "response_content",
            "response_content_type",
            "completed_at",
        ]
    )


def idempotency_record_replay(*, record: IdempotencyRecord) -> HttpResponse:
    """The stored response again: the same status, Content-Type and bytes.

    A plain HttpResponse, so nothing renders it anew; it is the first response's
    representation whatever the repeat's Accept header says.
    """
    response = HttpResponse(
        bytes(record.response_content or b""),
        status=record.response_status,
        content_type=record.response_content_type or None,
    )
    if not record.response_content_type:
        del response["Content-Type"]  # the first response had no body, so no type
    response[REPLAYED_HEADER] = "true"
    return response


def request_fingerprint(request: Request) -> str:
    """Hash what makes two requests "the same": method, path and JSON body."""
    data = request.data
    if hasattr(data, "dict"):
        data = data.dict()
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    raw = f"{request.method}\n{request.path}\n{body}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _validate_key(key: str) -> None:
    """Refuse a key that does not match KEY_PATTERN (400 invalid_idempotency_key)."""
    # fullmatch: `$` alone would also accept a key followed by a newline.
    if _KEY_RE.fullmatch(key) is None:
        raise InvalidIdempotencyKey(
            extra={"max_length": MAX_KEY_LENGTH, "pattern": KEY_PATTERN}
        )
