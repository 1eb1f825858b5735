"""Whether a handler's failure is worth retrying.

Spring Kafka's DefaultErrorHandler classifies with a BinaryExceptionClassifier that
traverses causes: the first exception along the cause chain whose class (or a
superclass) is configured decides; nothing configured means retryable. The same here,
with defaults every handler shares and additions per handler (`@handler(...,
not_retryable=..., retryable=...)`).
"""

from __future__ import annotations

import functools

from django.core.exceptions import ValidationError

from events.core.registry import HandlerSpec
from events.core.types import PoisonMessage

# No retry can fix these: the input itself is wrong.
DEFAULT_NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    PoisonMessage,
    ValidationError,
)
MAX_CAUSE_DEPTH = 16


class ExceptionClassifier:
    """Retryable or not, by the most specific configured class along the cause chain."""

    def __init__(
        self,
        *,
        not_retryable: tuple[type[BaseException], ...] = DEFAULT_NOT_RETRYABLE,
        retryable: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._verdicts: dict[type[BaseException], bool] = dict.fromkeys(
            not_retryable, False
        )
        # A class named in both lists is retryable: the per-handler `retryable` list
        # exists to override a default.
        self._verdicts.update(dict.fromkeys(retryable, True))

    def is_retryable(self, error: BaseException) -> bool:
        for exc in causes(error):
            verdict = self._verdict(type(exc))
            if verdict is not None:
                return verdict
        return True

    def _verdict(self, cls: type[BaseException]) -> bool | None:
        for klass in cls.__mro__:
            verdict = self._verdicts.get(klass)
            if verdict is not None:
                return verdict
        return None


def causes(error: BaseException) -> list[BaseException]:
    """`error`, then its `__cause__` chain (`raise ... from ...`), as Spring's getCause().

    Implicit context (an exception raised while handling another) is not followed: a
    handler that turns one failure into another without `from` means a new failure.
    """
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < MAX_CAUSE_DEPTH:
        if any(current is seen for seen in chain):
            break
        chain.append(current)
        current = current.__cause__
    return chain


@functools.cache
def _classifier(
    not_retryable: tuple[type[BaseException], ...],
    retryable: tuple[type[BaseException], ...],
) -> ExceptionClassifier:
    return ExceptionClassifier(
        not_retryable=DEFAULT_NOT_RETRYABLE + not_retryable, retryable=retryable
    )


def classifier_for(spec: HandlerSpec | None) -> ExceptionClassifier:
    """The defaults plus what `spec` declared (one classifier per distinct declaration)."""
    if spec is None:
        return _classifier((), ())
    return _classifier(spec.not_retryable, spec.retryable)
