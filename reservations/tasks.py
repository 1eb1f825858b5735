"""Celery tasks of the reservations app: thin wrappers around services."""

from celery import shared_task

from reservations.services import seat_hold_expire_due


@shared_task
def expire_seat_holds() -> int:
    """Expire every hold past its time; beat runs it every SEAT_HOLD_SWEEP_SECONDS.

    Safe to run concurrently or twice (SKIP LOCKED): each hold expires exactly once.
    """
    return seat_hold_expire_due()
