"""The relay's own PostgreSQL connections, and the errors that end a relay session."""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connections

# The connection broke (a restart, a network cut, an administrator terminating it), or
# a statement was cancelled or timed out (QueryCanceled and LockNotAvailable are
# OperationalErrors too): either way the session ends and a new one starts.
DATABASE_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def database_connection() -> psycopg.Connection[Any]:
    """Open a connection of our own to the default database, in autocommit mode.

    The relay needs one connection for a session's whole life: the leader lock is a
    session lock, so losing the connection must mean losing leadership, never a silent
    reconnect (which Django's connection handling would do).
    """
    s = connections["default"].settings_dict
    return psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        autocommit=True,
        application_name="relay_outbox",
        # A database that stops answering (a dropped network, not a restart) must end
        # the session too, not hang it: fail a connect after 10 s, and notice a dead
        # peer within about half a minute (keepalives, and unacknowledged writes).
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
    )


def recorder_connection() -> psycopg.Connection[Any]:
    """Open a connection whose commits do not wait for the WAL flush.

    Safe for the relay's bookkeeping only: if PostgreSQL crashes, the last deletes may
    be lost and those rows are sent again (a duplicate, allowed by at-least-once). The
    events themselves were committed by the application with a full flush.
    """
    conn = database_connection()
    conn.execute("SET synchronous_commit TO off")
    return conn
