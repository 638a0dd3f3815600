"""The store: SQLite (WAL) through SQLAlchemy, commit and rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import String, select, text
from sqlalchemy.orm import Mapped, mapped_column

from federation.store import Base, Store


class _Note(Base):
    __tablename__ = "test_store_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(100))


def test_sqlite_file_uses_wal_and_persists(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "state.db"
    store = Store.at(db)
    with store.session() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        s.add(_Note(body="kept"))
    store.close()
    again = Store.at(db)
    with again.session() as s:
        assert s.scalars(select(_Note.body)).all() == ["kept"]
    again.close()


def test_failed_session_rolls_back(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "s.db")
    with store.session() as s:
        s.add(_Note(body="first"))

    def add_then_fail() -> None:
        with store.session() as s:
            s.add(_Note(body="lost"))
            s.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        add_then_fail()
    with store.session() as s:
        assert s.scalars(select(_Note.body)).all() == ["first"]
    store.close()
