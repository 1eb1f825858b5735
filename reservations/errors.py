"""The reservations app's domain errors: each a `Conflict` of the HTTP kernel.

The base type and the generic cases (`NotFound`, the idempotency errors) are the
kernel's (`http_api.errors`); the payments app's errors are in `payments.errors`.
"""

from __future__ import annotations

from http_api.errors import Conflict


class SeatUnavailable(Conflict):
    code = "seat_unavailable"
    default_message = "The seat is not available."


class AlreadyPaid(Conflict):
    code = "already_paid"
    default_message = "The reservation is already paid."


class HoldExpired(Conflict):
    code = "hold_expired"
    default_message = "The seat hold has expired."


class InvalidState(Conflict):
    code = "invalid_state"
    default_message = "The reservation is not in a state that allows this."
