"""The event store's PostgreSQL recorder, with large saves kept out of pipeline mode.

`eventsourcing` 9.5 writes every save in psycopg pipeline mode (lock, notify
and INSERT sent without waiting for each other). With a large message (about
5 MB: one scheduled fire over 5,000 instances, ~1 KB per event) psycopg 3.3's
pipeline sync never returns: the client waits for results, the server sits in
`ClientRead` waiting for the rest of the message (psycopg/psycopg#685), and
the transaction holds the events table's EXCLUSIVE lock, so every writer of
the ledger stalls with it. Saves above `PIPELINE_MAX_BYTES` go through the
same statements in an ordinary transaction instead: a few more round trips,
which a save that large does not notice. Small saves, the common case, keep
the pipeline.

Selected through the library's own `APPLICATION_RECORDER_TOPIC` setting
(adapters/store.py `ledger_env`).
"""

from __future__ import annotations

from typing import Any, Sequence

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry

# Measured on PostgreSQL 15 / psycopg 3.3.9: 3.5 MB committed, 5 MB hung.
# A tenth of the smallest hanging size leaves a wide margin.
PIPELINE_MAX_BYTES = 512 * 1024


class LedgerRecorder(PostgresApplicationRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        size = sum(len(event.state) + len(event.topic) for event in stored_events)
        if size <= PIPELINE_MAX_BYTES or self.datastore.enable_db_functions:
            return super().insert_events(stored_events, **kwargs)
        return self._insert_without_pipeline(stored_events, **kwargs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_without_pipeline(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        # The library's statements in its order (table lock, NOTIFY, INSERT ...
        # RETURNING), in one transaction; errors map to the library's exceptions
        # (IntegrityError on a version conflict) through get_connection().
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
