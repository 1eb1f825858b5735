"""Reads of the reservations app that the API (and other callers) share.

Anything that belongs to a user is looked up through that user, so another user's
reservation is simply "not found" rather than "forbidden": ids leak nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from http_api.errors import NotFound
from reservations.models import (
    Concert,
    Notification,
    Performance,
    Reservation,
    Seat,
    SeatStatus,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def concert_list() -> QuerySet[Concert]:
    return Concert.objects.all()


def concert_get(*, concert_id: int) -> Concert:
    try:
        return Concert.objects.get(pk=concert_id)
    except Concert.DoesNotExist:
        raise NotFound("Concert not found.", extra={"concert_id": concert_id}) from None


def performance_list(*, concert_id: int | None = None) -> QuerySet[Performance]:
    queryset = Performance.objects.select_related("concert")
    if concert_id is not None:
        queryset = queryset.filter(concert_id=concert_id)
    return queryset


def performance_get(*, performance_id: int) -> Performance:
    try:
        return Performance.objects.select_related("concert").get(pk=performance_id)
    except Performance.DoesNotExist:
        raise NotFound(
            "Performance not found.", extra={"performance_id": performance_id}
        ) from None


def seat_list_available(
    *,
    performance_id: int,
    grade: str | None = None,
    min_price: int | None = None,
    max_price: int | None = None,
) -> QuerySet[Seat]:
    """Return the performance's AVAILABLE seats, optionally by grade and price range.

    Raises NotFound for an unknown performance, so an empty page means "sold out".
    """
    performance = performance_get(performance_id=performance_id)
    queryset = Seat.objects.filter(performance=performance, status=SeatStatus.AVAILABLE)
    if grade is not None:
        queryset = queryset.filter(grade=grade)
    if min_price is not None:
        queryset = queryset.filter(price__gte=min_price)
    if max_price is not None:
        queryset = queryset.filter(price__lte=max_price)
    return queryset.order_by("id")


def reservation_list(*, user: User) -> QuerySet[Reservation]:
    return Reservation.objects.filter(user=user).select_related("seat", "ticket")


def reservation_get(*, user: User, reservation_id: int) -> Reservation:
    try:
        return reservation_list(user=user).get(pk=reservation_id)
    except Reservation.DoesNotExist:
        raise NotFound(
            "Reservation not found.", extra={"reservation_id": reservation_id}
        ) from None


def notification_list(*, user: User) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user)
