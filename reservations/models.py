"""Catalog, seats, reservations and what a confirmed reservation produces.

The invariants that must hold under concurrency live here as database constraints:
one active reservation per seat, states limited to their choices, a confirmed
reservation is a paid one. Services (`reservations.services`) are the only writers.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Concert(models.Model):
    title = models.CharField(max_length=200)
    artist = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title", "id"]

    def __str__(self) -> str:
        return self.title


class Performance(models.Model):
    concert = models.ForeignKey(
        Concert, on_delete=models.CASCADE, related_name="performances"
    )
    starts_at = models.DateTimeField()
    venue = models.CharField(max_length=200)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["concert", "venue", "starts_at"], name="performance_unique_slot"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.concert} @ {self.venue} {self.starts_at:%Y-%m-%d %H:%M}"


class SeatGrade(models.TextChoices):
    VIP = "VIP", "VIP"
    R = "R", "R"
    S = "S", "S"


class SeatStatus(models.TextChoices):
    AVAILABLE = "AVAILABLE", "Available"
    HELD = "HELD", "Held"
    SOLD = "SOLD", "Sold"


class Seat(models.Model):
    """A seat of one performance; `price` is in wallet points."""

    performance = models.ForeignKey(
        Performance, on_delete=models.CASCADE, related_name="seats"
    )
    number = models.CharField(max_length=20)
    grade = models.CharField(max_length=10, choices=SeatGrade.choices)
    price = models.PositiveIntegerField()
    status = models.CharField(
        max_length=10, choices=SeatStatus.choices, default=SeatStatus.AVAILABLE
    )

    class Meta:
        ordering = ["performance_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["performance", "number"], name="seat_unique_number"
            ),
            models.CheckConstraint(
                condition=Q(status__in=SeatStatus.values), name="seat_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(grade__in=SeatGrade.values), name="seat_grade_valid"
            ),
            models.CheckConstraint(
                condition=Q(price__gt=0), name="seat_price_positive"
            ),
        ]
        indexes = [
            models.Index(
                fields=["performance", "grade", "price"],
                name="seat_available_idx",
                condition=Q(status="AVAILABLE"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.number} ({self.grade})"


class ReservationStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RESERVED = "RESERVED", "Reserved"
    CONFIRMED = "CONFIRMED", "Confirmed"
    EXPIRED = "EXPIRED", "Expired"
    CANCELLED = "CANCELLED", "Cancelled"


# A reservation in one of these states owns its seat.
ACTIVE_STATUSES = (
    ReservationStatus.PENDING,
    ReservationStatus.RESERVED,
    ReservationStatus.CONFIRMED,
)
# States in which the hold can still expire, be cancelled or be paid.
HOLDING_STATUSES = (ReservationStatus.PENDING, ReservationStatus.RESERVED)


class Reservation(models.Model):
    """A user's claim on a seat.

    `paid_at` is the payment service's mark; `status` becomes CONFIRMED only through
    `reservation_confirm`, which the PaymentCompleted handler calls. `price` is copied
    from the seat when the hold is taken, so a later price change does not alter it.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reservations"
    )
    seat = models.ForeignKey(
        Seat, on_delete=models.PROTECT, related_name="reservations"
    )
    status = models.CharField(
        max_length=10,
        choices=ReservationStatus.choices,
        default=ReservationStatus.PENDING,
    )
    price = models.PositiveIntegerField()
    hold_expires_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # With the seat row lock in reservation_create this makes double booking
            # impossible even for a writer that forgets the lock.
            models.UniqueConstraint(
                fields=["seat"],
                condition=Q(status__in=ACTIVE_STATUSES),
                name="reservation_one_active_per_seat",
            ),
            models.CheckConstraint(
                condition=Q(status__in=ReservationStatus.values),
                name="reservation_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status=ReservationStatus.CONFIRMED)
                | Q(paid_at__isnull=False),
                name="reservation_confirmed_is_paid",
            ),
            models.CheckConstraint(
                condition=Q(paid_at__isnull=True) | Q(status__in=ACTIVE_STATUSES),
                name="reservation_paid_stays_active",
            ),
        ]
        indexes = [
            models.Index(
                fields=["hold_expires_at"],
                name="reservation_hold_due_idx",
                condition=Q(status__in=HOLDING_STATUSES, paid_at__isnull=True),
            ),
            models.Index(fields=["user", "-created_at"], name="reservation_user_idx"),
        ]

    def __str__(self) -> str:
        return f"Reservation {self.pk} {self.status} seat {self.seat_id}"


class Ticket(models.Model):
    """Issued once per confirmed reservation; the one-to-one forbids a second."""

    reservation = models.OneToOneField(
        Reservation, on_delete=models.PROTECT, related_name="ticket"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tickets"
    )
    code = models.CharField(max_length=32, unique=True)
    issued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-issued_at", "-id"]

    def __str__(self) -> str:
        return f"Ticket {self.code}"


class NotificationKind(models.TextChoices):
    """What a notification tells: exactly the kinds the event handlers write.

    The API's `kind` enum is generated from these, so a kind a handler writes but that
    is missing here would be data the schema does not allow; the check constraint
    below refuses such rows, including those of the batch handlers' bulk insert
    (events.core.bulk_insert).
    """

    RESERVATION_CREATED = "reservation_created", "Reservation created"
    RESERVATION_CANCELLED = "reservation_cancelled", "Reservation cancelled"
    HOLD_EXPIRED = "hold_expired", "Hold expired"
    TICKET_ISSUED = "ticket_issued", "Ticket issued"


class Notification(models.Model):
    """One user-facing notification; `event_id` makes a redelivered event a no-op."""

    # No index of its own: the unique constraint below starts with user, so it serves
    # lookups by user, and every event's notification would pay for a second index.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,
    )
    kind = models.CharField(max_length=50, choices=NotificationKind.choices)
    message = models.TextField()
    event_id = models.UUIDField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # NULL event ids never conflict (NULLs are distinct), so only notifications
            # caused by an event are limited to one; being non-partial, the constraint
            # can back INSERT ... ON CONFLICT.
            models.UniqueConstraint(
                fields=["user", "kind", "event_id"],
                name="notification_once_per_event",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=NotificationKind.values),
                name="notification_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for user {self.user_id}"
