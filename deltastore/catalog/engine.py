"""Connect to a catalog: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or any SQLAlchemy URL.

SQLite's default deferred transactions let two writers both read, then fail
to upgrade their locks (SQLITE_BUSY, no retry).  Write transactions here
begin with ``BEGIN IMMEDIATE`` instead: the second writer waits on the busy
timeout for the first to commit, so two processes can save to one store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

#: How long a writer waits for another process's transaction (SQLite).
BUSY_TIMEOUT_S = 60.0
_IMMEDIATE = "deltastore_immediate"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets the pragmas and transaction handling above."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        # Keep the WAL small: checkpoint every 256 pages (1 MiB) and truncate it back
        # to 1 MiB after; SQLite's defaults let it sit at 4 MiB for the store's life.
        cursor.execute("PRAGMA wal_autocheckpoint=256")
        cursor.execute(f"PRAGMA journal_size_limit={1 << 20}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the write lock from its first statement; commits on exit."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A consistent snapshot for reads."""
    with engine.connect() as conn, conn.begin():
        yield conn
