"""The event store's PostgreSQL recorder: saves of more than two events sent by binary COPY.

`eventsourcing` 9.5 writes every save in psycopg pipeline mode (lock, notify
and INSERT sent without waiting for each other), as one `INSERT ... SELECT
FROM unnest(%s::stored_event[])` whose array of composites psycopg dumps as
*text*. Two costs follow:

- With a message of about 5 MB (one scheduled fire over thousands of
  instances, ~1 KB per event), psycopg 3.3's pipeline sync never returns:
  the client waits for results, the server sits in `ClientRead` waiting for
  the rest of the message (psycopg/psycopg#685), and the transaction holds the
  events table's EXCLUSIVE lock, so every writer of the ledger stalls with it.
- Dumping the composite array as text escapes every byte of every state with
  regular expressions: ~50 us of client CPU per event, 0.75 s of a
  10,000-instance fire, and in a busy worker or API most of the group
  committer's time (profiled, docs/performance.md).

Saves of at least `COPY_MIN_EVENTS` events, or above `PIPELINE_MAX_BYTES`, go
in an ordinary transaction instead: the library's table lock and NOTIFY (one
simple query with the log's current end), then `COPY ... FROM STDIN (FORMAT
BINARY)`. The notification ids are read back under the same lock (every id
above the maximum seen after taking it is ours: no other writer can insert
meanwhile, and ids follow the COPY's row order). A
version conflict still raises the library's `IntegrityError` (through
`get_connection`'s error mapping), and the save stays one transaction, so a
fire is still recorded exactly once. Saves of one or two events keep the
library's pipeline (decision 18).

Selected through the library's own `APPLICATION_RECORDER_TOPIC` setting
(adapters/store.py `ledger_env`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError, StoredEvent
from eventsourcing.postgres import ConnectionPool, PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from .store import RECONNECT_TIMEOUT_S, QuietPing

# Measured on PostgreSQL 15 / psycopg 3.3.9: 3.5 MB committed in the pipeline,
# 5 MB hung. A tenth of the smallest hanging size leaves a wide margin.
PIPELINE_MAX_BYTES = 512 * 1024
# From this many events COPY is the faster path (measured, one save, idle
# PostgreSQL 15: 1 event 1.43 ms pipelined vs 1.53 ms COPY; 4: 1.69 vs 1.56;
# 16: 2.77 vs 1.56; 64: 6.93 vs 3.11). Group commit makes most saves of a
# busy process larger than that; under load the text dump's CPU also holds
# the GIL that every other thread of the process is waiting for.
COPY_MIN_EVENTS = 3


class LedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        self.copy_statement = SQL(
            "COPY {0} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(table)
        self.ids_after_statement = SQL(
            "SELECT notification_id FROM {0} WHERE notification_id > %s ORDER BY notification_id"
        ).format(table)
        # The library's lock and NOTIFY and the log's current end, as ONE simple
        # query (one round trip: parameters would need the extended protocol,
        # which takes one statement per message).
        self.copy_prelude = SQL("; ").join([
            *self.lock_table_statements,
            SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
            SQL("SELECT COALESCE(MAX(notification_id), 0) AS last FROM {0}").format(table),
        ])

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if self.datastore.enable_db_functions or not _by_copy(stored_events):
            pipelined: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return pipelined
        copied: Sequence[int] = self._insert_by_copy(stored_events)  # `retry` hides its type
        return copied

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_by_copy(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(self.copy_prelude)
            while curs.nextset():
                pass  # to the last statement's result: the log's end under the lock
            end = curs.fetchone()
            assert end is not None  # an aggregate always returns its row
            before = end["last"]
            with curs.copy(self.copy_statement) as copy:
                copy.set_types([self.datastore.originator_id_type, "int8", "text", "bytea"])
                for event in stored_events:
                    copy.write_row((event.originator_id, event.originator_version, event.topic, event.state))
            curs.execute(self.ids_after_statement, (before,))
            ids = [r["notification_id"] for r in curs.fetchall()]
            if len(ids) != len(stored_events):  # cannot happen under the table lock; never guess
                raise ProgrammingError(f"COPY inserted {len(stored_events)} events but {len(ids)} ids were read back")
            return ids


def _by_copy(stored_events: Sequence[StoredEvent]) -> bool:
    if len(stored_events) >= COPY_MIN_EVENTS:
        return True
    return sum(len(event.state) + len(event.topic) for event in stored_events) > PIPELINE_MAX_BYTES


# libpq options of the database URL for the event store's own pool -----------

LIBPQ_OPTIONS_ENV = "SNAPLEDGER_LIBPQ_OPTIONS"  # JSON object, set by adapters/store.py `ledger_env`


class LedgerFactory(PostgresFactory):
    """The library's PostgreSQL factory, plus the URL's libpq options
    (`sslmode`, `sslrootcert`, `application_name`, ...) on every connection
    of the event store's pool. The library builds its pool from dbname, host,
    port, user and password only, so `?sslmode=verify-full` reached the views'
    connections but not the event store's. The pool is not open yet when the
    factory is built, so it is replaced before any connection is made."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.datastore.pool = ledger_pool(self.datastore, json.loads(self.env.get(LIBPQ_OPTIONS_ENV) or "{}"))


def ledger_pool(datastore: PostgresDatastore, options: dict[str, str]) -> ConnectionPool[Any]:
    """The pool the library's datastore built (not opened yet), built again with
    what the datastore has no setting for: the URL's libpq options, a short
    reconnect time-out (RECONNECT_TIMEOUT_S) and the lazy pre-ping (QuietPing).
    Everything else is taken from the library's pool as it made it."""
    built = datastore.pool
    assert isinstance(built.kwargs, dict)  # the datastore passes its connection arguments as a dict
    return ConnectionPool(
        get_password_func=built.get_password_func, connection_class=built.connection_class,
        kwargs={**built.kwargs, **options}, min_size=built.min_size, max_size=built.max_size,
        open=False, configure=datastore.after_connect_func(), timeout=built.timeout,
        max_waiting=built.max_waiting, max_lifetime=built.max_lifetime,
        check=QuietPing() if datastore.pre_ping else None, reconnect_timeout=RECONNECT_TIMEOUT_S,
    )
