"""The catalog's tables (SQLAlchemy 2 declarative models).

The catalog is an index over the manifest objects: everything in it can be
rebuilt from the objects alone.  Its schema is owned by the Alembic revisions
in ``migrations/``; these models must match the newest revision (a test
compares them).

Times are integer microseconds since the Unix epoch (UTC) so that SQLite and
PostgreSQL store and order them identically.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(64)


class Base(DeclarativeBase):
    pass


class StoreMeta(Base):
    """Store-wide settings fixed at creation (chunk size, default codec)."""

    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ObjectRow(Base):
    """One stored object: a chunk (full or delta) or a manifest."""

    __tablename__ = "objects"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[int] = mapped_column(Integer)  # codecs.Kind
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    # The chunk a delta decodes against: gc keeps it while this object is kept.
    base_id: Mapped[str | None] = mapped_column(ID, index=True)
    # Decodes needed before this one: 0 for a full object, base's depth + 1 for a delta.
    depth: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(ID, ForeignKey("checkpoints.id"), index=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    message: Mapped[str] = mapped_column(Text)
    step: Mapped[int | None] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    branch: Mapped[str | None] = mapped_column(String(255))
    entry_count: Mapped[int] = mapped_column(Integer)
    logical_bytes: Mapped[int] = mapped_column(BigInteger)
    # Bytes of objects this save added to the store (its manifest included).
    stored_bytes: Mapped[int] = mapped_column(BigInteger)


class EntryRow(Base):
    __tablename__ = "entries"
    checkpoint_id: Mapped[str] = mapped_column(ID, ForeignKey("checkpoints.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    dtype: Mapped[str] = mapped_column(String(32))
    shape: Mapped[list[int]] = mapped_column(JSON)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(ID)
    chunk_count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_entries_checkpoint_key", "checkpoint_id", "key_path", unique=True),)


class EntryChunkRow(Base):
    __tablename__ = "entry_chunks"
    checkpoint_id: Mapped[str] = mapped_column(ID, primary_key=True)
    entry_idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_id: Mapped[str] = mapped_column(ID, ForeignKey("objects.id"), index=True)


class RefRow(Base):
    __tablename__ = "refs"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "branch" or "tag"
    checkpoint_id: Mapped[str] = mapped_column(ID, ForeignKey("checkpoints.id"))
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
