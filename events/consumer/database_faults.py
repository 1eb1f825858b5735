"""Whether a handler's failure is the database's trouble rather than the event's.

Such a failure (a broken connection, a deadlock or serialization conflict with another
consumer's batch) goes up to the loop, which reads the batch again: retrying the event
on a retry topic would put it behind later events of its key, and a restart longer
than the backoffs would dead-letter good events.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import InterfaceError, OperationalError, connection
from psycopg import errors as pg_errors

logger = logging.getLogger("events.consumer")

# PostgreSQL's answers to two transactions getting in each other's way: one is rolled
# back and may simply run again.
CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

# A handler whose work breaks the database connection or deadlocks this many times on
# one event is the cause, not the victim: its next such failure is treated as its own
# (retry topic or in place, then the DLQ), so it cannot stall its partitions forever.
DATABASE_FAULT_LIMIT = 5


_database_faults: dict[tuple[Any, str], int] = {}
_database_faults_lock = threading.Lock()


def blame_the_database(exc: BaseException, key: tuple[Any, str]) -> bool:
    """Whether to re-run the batch for `exc` (see database_fault), counting per event
    and handler so a handler that causes it gives up after DATABASE_FAULT_LIMIT."""
    if not database_fault(exc):
        return False
    with _database_faults_lock:
        if len(_database_faults) > 10_000:  # only recent faults matter
            _database_faults.clear()
        _database_faults[key] = _database_faults.get(key, 0) + 1
        if _database_faults[key] <= DATABASE_FAULT_LIMIT:
            return True
        del _database_faults[key]
    logger.error(
        "%s broke the database session %d times on %s: treating it as the handler's "
        "failure",
        key[1],
        DATABASE_FAULT_LIMIT + 1,
        key[0],
    )
    return False


def database_fault(exc: BaseException) -> bool:
    """Whether `exc` is the database's trouble rather than the event's.

    Two kinds: the connection broke under the handler (a restart, a cut), or
    PostgreSQL rolled the transaction back to break a deadlock or a serialization
    conflict with another consumer's batch. Neither is the event's failure: retrying
    it on a retry topic would put it behind later events of its key, and a restart
    longer than the backoffs would dead-letter good events. The error goes up instead;
    the loop consumes the batch again (see events.consumer.loop).
    """
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if isinstance(exc.__cause__, CONFLICTS):
        return True
    raw = connection.connection
    return raw is None or raw.closed or bool(getattr(raw, "broken", False))
