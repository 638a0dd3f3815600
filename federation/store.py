"""The durable store: one SQLAlchemy engine, sessions, and the declarative base.

Every package declares its own tables on ``Base`` (``class RunRow(Base): ...``)
and talks to the store through ``Store.session()``. SQLite is the embedded
default (WAL journal, foreign keys on, a busy timeout so several processes can
share a file); PostgreSQL works with the same code through its URL
(``postgresql+psycopg://...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """Declarative base shared by every package's tables."""


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file (``:memory:`` for an in-memory database)."""
    return "sqlite://" if str(path) == ":memory:" else f"sqlite:///{Path(path).resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite files get WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


class Store:
    """An engine, its session factory, and the tables created on first use."""

    def __init__(self, url: str = "sqlite://", echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        Base.metadata.create_all(self.engine)

    @classmethod
    def at(cls, path: str | Path) -> Store:
        """A store in the SQLite file ``path`` (created if missing)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(sqlite_url(path))

    def create_tables(self) -> None:
        """Create tables declared after this store was opened."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()
