"""Consumer lag as the consumers report it, kept in the database for the admin to read.

Entry points: `record_lag` (the consumer loop calls it every few seconds with the lag
it computed from its own watermarks) and `reported_lag` (the admin index reads it).
Reading a table instead of asking the broker means rendering a page opens no Kafka
client, and costs no broker round trip, however many people look at it.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models.functions import Now

from events.core.bulk_insert import bulk_insert
from events.models import ConsumerLag

# A consumer reports every 5 s; a row older than this was not refreshed by six
# reports in a row, so its consumer is gone or stuck and its figure is no longer lag.
FRESH_FOR = timedelta(seconds=30)


def record_lag(group: str, lags: dict[tuple[str, int], int]) -> None:
    """Store `group`'s lag per (topic, partition): one upsert, stamped with now().

    Cheap enough for a consumer loop: one statement of one JSON parameter, built once
    (events.core.bulk_insert), no transaction of its own beyond the statement; an
    empty `lags` does nothing at all. The rows are written in (topic, partition)
    order, so two members of a group reporting overlapping partitions during a
    rebalance lock them in the same order and cannot deadlock. Database errors are
    raised: the loop decides whether a report it could not write matters.
    """
    if not lags:
        return
    bulk_insert(
        ConsumerLag,
        [
            {"group": group, "topic": topic, "partition": partition, "lag": lag}
            for (topic, partition), lag in sorted(lags.items())
        ],
        unique_fields=("group", "topic", "partition"),
        update_fields=("lag", "reported_at"),
    )


def reported_lag(
    *, group: str, topics: list[str], fresh_for: timedelta = FRESH_FOR
) -> dict[tuple[str, int], int]:
    """`group`'s lag per (topic, partition) of `topics`, from reports newer than
    `fresh_for` (by the database's clock, the one that stamped them). Partitions
    nobody reported lately are left out rather than shown with an old figure."""
    rows = ConsumerLag.objects.filter(
        group=group, topic__in=topics, reported_at__gte=Now() - fresh_for
    ).values_list("topic", "partition", "lag")
    return {(topic, partition): lag for topic, partition, lag in rows}
