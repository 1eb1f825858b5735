"""The payments app's domain errors: each a `Conflict` of the HTTP kernel."""

from __future__ import annotations

from http_api.errors import Conflict


class InsufficientBalance(Conflict):
    code = "insufficient_balance"
    default_message = "The wallet balance is too low."
