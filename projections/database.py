"""What the read side needs of a database (adapters.store.Database on PostgreSQL or SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

# A row by column name, as the query returns it: psycopg's `dict_row` factory
# (and our sqlite3 equivalent) gives `dict[str, Any]`; the column types are the
# query's, which no type here can follow. Every read model's row is this alias.
Row = dict[str, Any]


class Database(Protocol):
    dialect: str  # "postgres" or "sqlite"

    # The cursor is the driver's (psycopg or sqlite3): no common type to name.
    def transaction(self) -> AbstractContextManager[Any]: ...

    def snapshot(self) -> AbstractContextManager[Any]: ...

    def query(self, statement: str, params: Sequence[object] = ...) -> list[Row]: ...
