"""The buffers of one site: bytes in files on local disk, metadata in SQLite.

Semantics (compatible with the Exa-AToW Ephemeral Buffers service):

* A buffer has a unique id, a maximum size, a lifetime (TTL) and the list of
  consumers expected to read it. States::

      initialised -> created -> full -> deleted
                        |         |
                        +-> disabled / error -> deleted

  ``initialised``: metadata recorded, no space allocated yet; ``created``:
  space reserved, writes accepted; ``full``: the maximum size was reached or
  the producer sealed it, reads only; ``disabled``: an administrator froze it;
  ``error``: its bytes failed the end-to-end checksum or its file was damaged;
  ``deleted``: destroyed, the row stays for the audit trail.
* Site-wide quota: the sum of the *maximum* sizes of the live buffers and
  their number are bounded (``QuotaExceeded`` -> HTTP 507). Reserving the
  maximum at creation means a write that fits its buffer never fails for lack
  of space, and a refused creation or append leaves every stored byte intact.
* Writes are append-only: an append names the offset it expects to start at
  (the buffer's size) and may carry a write-once *tag* naming the chunk; a
  second write of a tag is ``TagExists`` (HTTP 409). With the chunk's sha256,
  a corrupted chunk is refused (``ChecksumMismatch``) and nothing is stored.
  An append streams to the file as it arrives, hashed on the way: the
  memory it takes does not grow with its size.
* Sealing (``seal``) hashes the bytes **on disk**, streamed, and compares the
  digest with the one the producer declares (and the one recorded by an
  earlier seal): a byte changed at rest since it was written puts the buffer in
  ``error``. A buffer's ``sha256`` is only ever such a verified digest.
* Reads take ``offset``/``limit``, or a named read session that continues
  where it stopped. A consumer that reaches the end of a sealed buffer with
  its own read session (or says so, ``drained``) has drained it; when every
  declared consumer has drained it, or when its TTL expires, the buffer is
  destroyed (file removed, state ``deleted``). Who the caller is comes from
  its token (the service binds each read token to one consumer).
* A TTL is a finite number of seconds, at most ``max_ttl``.
* Durability: every append is written and ``fsync``-ed before its metadata
  row is committed, so the row never claims bytes the disk lacks; on start,
  bytes beyond the committed size (a crash between the two) are cut off.
  An append is acknowledged after its commit, or, when the writer asks for it
  (``durable=False``, what the transfer engine does), as soon as its bytes are
  verified and written: a syncer thread then fsyncs the file and commits the
  extents written since its last pass in one transaction (a group commit), so
  the writer's next chunks arrive while the disk flushes the last ones. A pass
  records a *resume point*: it runs once a buffer's unsynced appends reach
  ``sync_bytes`` (64 MiB), or ``sync_delay`` seconds (0.1) after the oldest of
  them was acknowledged, or at once when a seal, a durable append or ``close``
  waits for them; so a fast stream pays one fsync per resume point, not one
  per chunk. Such an append counts in the buffer's ``size`` (where the next
  append starts) but is readable only once committed; a crash before the
  commit cuts it off on start (whole appends only), and ``size`` then says
  where to resume. A seal or a durable append first waits for the syncer. Once
  a pass of the syncer is committed, another thread reads its appends back from
  disk into the buffer's running sha256 while the syncer fsyncs the next pass;
  the seal waits for it and finishes the digest. The page cache then drops
  the bytes read back (``drop_behind``): a stream's writes reuse its pages.
* Privacy: the folders are created 0700, the data files and the SQLite
  database 0600.

A private declarative base keeps these tables out of the orchestrator's
``federation.store.Base``: a buffer service owns its own SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from datalogistics.errors import (
    BufferGone,
    BufferNotFound,
    BufferStateError,
    BufferTooLarge,
    ChecksumMismatch,
    OffsetMismatch,
    QuotaExceeded,
    TagExists,
)
from federation.store import make_engine, sqlite_url

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_MAX_TTL = 7 * 86_400.0
"""Longest lifetime a buffer may ask for unless the service is configured otherwise (s)."""
HASH_BLOCK = 1 << 20
"""Bytes read at a time when a seal hashes a buffer's file."""
SYNC_BYTES = 64 * 2**20
"""Unsynced bytes of a buffer at which the syncer records a resume point (fsync + commit)."""
SYNC_DELAY = 0.1
"""Seconds after which an acknowledged, unsynced append is fsynced and committed anyway."""


class BufferState(StrEnum):
    """Life-cycle states of a buffer."""

    INITIALISED = "initialised"
    CREATED = "created"
    FULL = "full"
    DISABLED = "disabled"
    DELETED = "deleted"
    ERROR = "error"


LIVE_STATES = frozenset(s.value for s in BufferState if s is not BufferState.DELETED)
READABLE_STATES = frozenset({BufferState.CREATED.value, BufferState.FULL.value})


class _Base(DeclarativeBase):
    pass


class BufferRow(_Base):
    __tablename__ = "buffers"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    site: Mapped[str] = mapped_column(String(128))
    item: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    max_size: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    consumers: Mapped[str] = mapped_column(Text, default="[]")
    drained: Mapped[str] = mapped_column(Text, default="[]")
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class TagRow(_Base):
    __tablename__ = "buffer_tags"

    buffer_id: Mapped[str] = mapped_column(ForeignKey("buffers.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(256), primary_key=True)
    offset: Mapped[int] = mapped_column(Integer)
    length: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class ExtentRow(_Base):
    """The sha256 of every append, computed from the bytes as they arrived.

    A read that covers exactly one extent is served with this digest instead
    of hashing the bytes read back: if the disk returned other bytes, the
    receiver's check against the original digest catches it.
    """

    __tablename__ = "buffer_extents"

    buffer_id: Mapped[str] = mapped_column(ForeignKey("buffers.id"), primary_key=True)
    offset: Mapped[int] = mapped_column(Integer, primary_key=True)
    length: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class SessionRow(_Base):
    __tablename__ = "buffer_read_sessions"

    buffer_id: Mapped[str] = mapped_column(ForeignKey("buffers.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True, slots=True)
class Quota:
    """Site-wide limits: total bytes reserved by live buffers, and their number."""

    max_bytes: int
    max_count: int

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_count <= 0:
            raise ValueError("a buffer quota needs positive max_bytes and max_count")


@dataclass(frozen=True, slots=True)
class BufferInfo:
    """What a client may know about a buffer."""

    id: str
    site: str
    item: str | None
    state: str
    max_size: int
    size: int
    created_at: float
    expires_at: float
    consumers: tuple[str, ...]
    drained: tuple[str, ...]
    sha256: str | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["consumers"] = list(self.consumers)
        out["drained"] = list(self.drained)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BufferInfo:
        return cls(
            **{
                **data,
                "consumers": tuple(data.get("consumers", ())),
                "drained": tuple(data.get("drained", ())),
            }
        )


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A write-once named chunk of a buffer."""

    buffer: str
    tag: str
    offset: int
    length: int
    sha256: str


class AppendLease:
    """An append in progress: bytes go to the end of the file as they come.

    Each piece is hashed and written as it arrives, then dropped: memory does
    not grow with the size of the append. Nothing counts until
    ``BufferStore.finish_append`` checks the digest, fsyncs and commits; the
    bytes past the committed size are cut off on abort (and on restart).
    """

    def __init__(
        self, buffer_id: str, start: int, max_size: int, tag: str | None, file: BinaryIO
    ) -> None:
        self.buffer_id = buffer_id
        self.start = start
        self.max_size = max_size
        self.tag = tag
        self.file = file
        self.digest = hashlib.sha256()
        self.written = 0

    def write(self, piece: bytes) -> None:
        """Add ``piece``; ``BufferTooLarge`` (and nothing more written) past the maximum size."""
        self.write_pieces((piece,))

    def write_pieces(self, pieces: Sequence[bytes | memoryview], hashed: bool = True) -> None:
        """Add ``pieces`` in order (written and hashed one by one, never joined);
        ``BufferTooLarge`` (and nothing of them written) past the maximum size.

        ``hashed=False``: written only; the caller feeds ``self.digest`` the same pieces in
        the same order (in another thread, say) before ``BufferStore.finish_append``."""
        end = self.start + self.written + sum(len(p) for p in pieces)
        if end > self.max_size:
            raise BufferTooLarge(
                f"append would bring buffer {self.buffer_id!r} to at least {end} bytes, "
                f"above its maximum of {self.max_size}"
            )
        for piece in pieces:
            self.file.write(piece)
            if hashed:
                self.digest.update(piece)
            self.written += len(piece)


@dataclass(frozen=True, slots=True)
class _Unsynced:
    """An append acknowledged before its fsync: committed by the syncer."""

    start: int
    length: int
    sha256: str
    tag: str | None
    at: float
    """When it was acknowledged (``time.monotonic``)."""


def _hash_file_range(path: Path, h: Any, start: int, end: int, drop: bool = False) -> int:
    """Feed the bytes ``[start, end)`` of the file at ``path``, as read from disk in blocks
    of ``HASH_BLOCK`` into one reused buffer, to the hash ``h``; the offset reached (less
    than ``end`` when the file is shorter). ``drop``: then ask the kernel to drop those
    bytes from the page cache (they must be fsynced: a dirty page is not dropped)."""
    block = bytearray(min(HASH_BLOCK, max(end - start, 0)))
    view = memoryview(block)
    at = start
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        while at < end:
            n = f.readinto(view[: min(end - at, len(block))])
            if not n:
                break
            h.update(view[:n])
            at += n
        if drop and at > start:
            os.posix_fadvise(f.fileno(), start, at - start, os.POSIX_FADV_DONTNEED)
    return at


def _private_dir(path: Path) -> None:
    """``path`` (and missing parents) as a folder only its owner may enter (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    """Create ``path`` empty (or keep it) and make it owner-only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _info(row: BufferRow) -> BufferInfo:
    return BufferInfo(
        id=row.id,
        site=row.site,
        item=row.item,
        state=row.state,
        max_size=row.max_size,
        size=row.size,
        created_at=row.created_at,
        expires_at=row.expires_at,
        consumers=tuple(json.loads(row.consumers)),
        drained=tuple(json.loads(row.drained)),
        sha256=row.sha256,
        reason=row.reason,
    )


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid buffer id, tag or session name; ``ValueError`` otherwise."""
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-256 characters of letters, digits, '_', '.', ':' or '-'"
            " and start with a letter or digit"
        )
    return value


class BufferStore:
    """The buffers of ``site`` under ``root`` (``root/buffers.db`` and ``root/data/``).

    Thread-safe: mutations hold one lock; reads of committed bytes do not
    (appends never change bytes below the committed size). ``max_ttl`` is the
    longest lifetime a buffer may ask for (seconds). ``sync_bytes`` and ``sync_delay``:
    when the syncer records a resume point for appends acknowledged before their fsync
    (see the module docstring). ``drop_behind``: once the read-back has hashed a pass's
    fsynced bytes, the page cache drops them (``POSIX_FADV_DONTNEED``), so a long stream
    of appends writes into pages the kernel has just freed instead of taking fresh ones
    for every byte (on a VM that hands free memory back to its host, a fresh page can cost a
    fault in the host on its first write); readers then read those bytes from disk.
    """

    def __init__(
        self,
        root: str | Path,
        site: str,
        quota: Quota,
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
        max_ttl: float = DEFAULT_MAX_TTL,
        sync_bytes: int = SYNC_BYTES,
        sync_delay: float = SYNC_DELAY,
        drop_behind: bool = True,
    ) -> None:
        if not (math.isfinite(max_ttl) and max_ttl > 0):
            raise ValueError(f"max_ttl must be a finite, positive number of seconds, got {max_ttl}")
        if sync_bytes <= 0 or not (math.isfinite(sync_delay) and sync_delay >= 0):
            raise ValueError(
                f"sync_bytes must be positive and sync_delay a finite number of seconds >= 0, "
                f"got {sync_bytes} and {sync_delay}"
            )
        self.sync_bytes = sync_bytes
        self.sync_delay = float(sync_delay)
        self.root = Path(root)
        self.site = site
        self.quota = quota
        self.clock = clock
        self.fsync = fsync
        # the page cache drops what the read-back hashed (fsynced bytes only)
        self.drop_behind = drop_behind and fsync
        self.max_ttl = float(max_ttl)
        _private_dir(self.root)
        _private_dir(self.root / "data")
        _private_file(self.root / "buffers.db")  # SQLite gives its -wal and -shm the same mode
        self._engine = make_engine(sqlite_url(self.root / "buffers.db"))
        _Base.metadata.create_all(self._engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._lock = threading.RLock()
        # Buffers with an append or a seal in progress (one at a time per buffer).
        self._writing: set[str] = set()
        # Appends acknowledged but not yet fsynced and committed, oldest first, per buffer.
        self._unsynced: dict[str, list[_Unsynced]] = {}
        self._synced = threading.Condition(self._lock)
        self._syncer: threading.Thread | None = None
        # Buffers someone waits to see synced (a seal, a durable append): synced at once.
        self._awaited: dict[str, int] = {}
        # Reads back what the syncer committed, pass after pass, while it fsyncs the next.
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix=f"buffer-read-back-{site}")
        self._closing = False
        # Running sha256 of a buffer's committed bytes as read back from disk by the syncer
        # (buffers written from offset 0 with unsynced appends): a seal finishes it.
        self._read_back: dict[str, tuple[Any, int]] = {}
        self._recover()

    def close(self) -> None:
        with self._synced:
            self._closing = True
            self._synced.notify_all()
        if self._syncer is not None:
            self._syncer.join(timeout=60)
        self._hasher.shutdown(wait=True)
        self._engine.dispose()

    # -- the syncer: fsync and commit of appends acknowledged before their fsync ----
    def _end(self, buffer_id: str, committed: int) -> int:
        """Where the next append to ``buffer_id`` starts (its acknowledged end)."""
        pending = self._unsynced.get(buffer_id)
        return pending[-1].start + pending[-1].length if pending else committed

    def _start_syncer(self) -> None:
        if self._syncer is None or not self._syncer.is_alive():
            self._syncer = threading.Thread(
                target=self._sync_loop, name=f"buffer-syncer-{self.site}", daemon=True
            )
            self._syncer.start()

    def _due(self, now: float) -> tuple[list[str], float | None]:
        """The buffers whose unsynced appends make a resume point now (enough bytes, old
        enough, awaited, or the store closing); else how long until the next one is due."""
        due: list[str] = []
        soonest: float | None = None
        for buffer_id, pending in self._unsynced.items():
            if not pending:
                continue
            end = pending[-1].start + pending[-1].length
            wait = pending[0].at + self.sync_delay - now
            if (
                self._closing
                or buffer_id in self._awaited
                or end - pending[0].start >= self.sync_bytes
                or wait <= 0
            ):
                due.append(buffer_id)
            else:
                soonest = wait if soonest is None else min(soonest, wait)
        return due, soonest

    def _sync_loop(self) -> None:
        while True:
            with self._synced:
                while True:
                    if self._closing and not any(self._unsynced.values()):
                        return
                    due, wait = self._due(time.monotonic())
                    if due:
                        break
                    self._synced.wait(wait)
                batch = {bid: list(self._unsynced[bid]) for bid in due}
            for buffer_id, extents in batch.items():
                self._sync_buffer(buffer_id, extents)

    def _sync_buffer(self, buffer_id: str, extents: list[_Unsynced]) -> None:
        """fsync the file once, then commit ``extents`` (the oldest unsynced) in one go;
        then another thread reads them back from disk into the running digest."""
        failure: str | None = None
        try:
            if self.fsync:
                fd = os.open(self.path(buffer_id), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            failure = "gone"
        except OSError as exc:
            failure = f"fsync of the data file failed: {exc}"
        committed = False
        with self._synced:
            try:
                with self._session() as s:
                    row = s.get(BufferRow, buffer_id)
                    live = row is not None and row.state == BufferState.CREATED
                    if row is not None and live and failure not in (None, "gone"):
                        row.state = BufferState.ERROR
                        row.reason = failure
                    elif row is not None and live and failure is None:
                        for e in extents:
                            if e.start != row.size:
                                raise RuntimeError(f"unsynced extent at {e.start} != {row.size}")
                            if e.tag is not None:
                                s.add(
                                    TagRow(
                                        buffer_id=buffer_id,
                                        tag=e.tag,
                                        offset=e.start,
                                        length=e.length,
                                        sha256=e.sha256,
                                    )
                                )
                            s.add(
                                ExtentRow(
                                    buffer_id=buffer_id,
                                    offset=e.start,
                                    length=e.length,
                                    sha256=e.sha256,
                                )
                            )
                            row.size += e.length
                        if row.size == row.max_size:
                            row.state = BufferState.FULL
                        committed = True
            except Exception as exc:  # the store failed: the buffer cannot be trusted
                committed = False
                with suppress(Exception), self._session() as s:
                    row = s.get(BufferRow, buffer_id)
                    if row is not None and row.state == BufferState.CREATED:
                        row.state = BufferState.ERROR
                        row.reason = f"committing appended bytes failed: {exc}"
        if committed:  # read back while the next pass fsyncs; a seal waits for it
            self._hasher.submit(self._read_back_extents, buffer_id, extents)
        with self._synced:
            pending = self._unsynced.get(buffer_id, [])
            del pending[: len(extents)]
            if not pending:
                self._unsynced.pop(buffer_id, None)
            self._synced.notify_all()

    def _read_back_extents(self, buffer_id: str, extents: list[_Unsynced]) -> None:
        """Hash the committed ``extents`` as read back from disk, continuing the buffer's
        running digest (started when its first extent is at offset 0). Runs in the read-back
        thread, pass after pass in commit order, while the syncer fsyncs the next pass."""
        with self._lock:
            h, upto = self._read_back.get(buffer_id, (None, 0))
        start = extents[0].start
        if h is None and start == 0:
            h = hashlib.sha256()
        if h is None or upto != start:
            return
        end = extents[-1].start + extents[-1].length
        try:
            upto = _hash_file_range(self.path(buffer_id), h, start, end, self.drop_behind)
        except OSError:  # gone, or unreadable: the seal hashes the whole file itself
            with self._lock:
                self._read_back.pop(buffer_id, None)
            return
        with self._lock:
            self._read_back[buffer_id] = (h, upto)

    def _read_backs_done(self) -> None:
        """Wait until every read-back handed to the read-back thread so far is done."""
        self._hasher.submit(lambda: None).result()

    def sync(self, buffer_id: str) -> None:
        """Wait until every append acknowledged to ``buffer_id`` is fsynced and committed
        (the syncer records the resume point at once for a buffer someone waits for)."""
        with self._synced:
            if not self._unsynced.get(buffer_id):
                return
            self._awaited[buffer_id] = self._awaited.get(buffer_id, 0) + 1
            self._synced.notify_all()
            try:
                while self._unsynced.get(buffer_id):
                    self._start_syncer()
                    self._synced.wait()
            finally:
                self._awaited[buffer_id] -= 1
                if not self._awaited[buffer_id]:
                    del self._awaited[buffer_id]

    # -- plumbing --------------------------------------------------------------
    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def path(self, buffer_id: str) -> Path:
        return self.root / "data" / f"{buffer_id}.buf"

    def _recover(self) -> None:
        """Cut bytes past the committed size; flag buffers whose file lost bytes."""
        with self._lock, self._session() as s:
            for row in s.scalars(select(BufferRow).where(BufferRow.state.in_(LIVE_STATES))):
                if row.state == BufferState.INITIALISED:
                    continue
                path = self.path(row.id)
                on_disk = path.stat().st_size if path.exists() else -1
                if on_disk > row.size:
                    with open(path, "r+b") as f:
                        f.truncate(row.size)
                        os.fsync(f.fileno())
                elif on_disk < row.size:
                    row.state = BufferState.ERROR
                    row.reason = f"data file holds {max(on_disk, 0)} of {row.size} bytes"

    def _row(self, s: Session, buffer_id: str) -> BufferRow:
        """The live row of ``buffer_id``, destroying it first if its TTL has passed."""
        row = s.get(BufferRow, buffer_id)
        if row is None:
            raise BufferNotFound(f"no buffer {buffer_id!r} at site {self.site!r}")
        if row.state == BufferState.DELETED:
            raise BufferGone(f"buffer {buffer_id!r} was destroyed ({row.reason})")
        if row.expires_at <= self.clock():
            self._destroy(row, "TTL expired")
            s.commit()  # keep the destruction although the caller's operation fails
            raise BufferGone(f"buffer {buffer_id!r} was destroyed (TTL expired)")
        return row

    def _destroy(self, row: BufferRow, reason: str) -> None:
        self._unsynced.pop(row.id, None)
        self._read_back.pop(row.id, None)
        row.state = BufferState.DELETED
        row.reason = reason
        self.path(row.id).unlink(missing_ok=True)

    def disk_sha256(self, buffer_id: str, size: int) -> tuple[str, int]:
        """The sha256 of the first ``size`` bytes of the buffer's file as they are on disk,
        read in blocks of ``HASH_BLOCK``, and how many bytes the file really gave.

        Continues the syncer's read-back digest of the buffer when there is one (its
        committed bytes, each hashed as read back from disk right after its fsync).
        """
        with self._lock:
            h, got = self._read_back.pop(buffer_id, (None, 0))
        if h is None or got > size:
            h, got = hashlib.sha256(), 0
        try:
            got = _hash_file_range(self.path(buffer_id), h, got, size)
        except FileNotFoundError:
            raise BufferGone(f"buffer {buffer_id!r} was destroyed while being sealed") from None
        return h.hexdigest(), got

    # -- life cycle ------------------------------------------------------------
    def create(
        self,
        max_size: int,
        ttl: float,
        consumers: tuple[str, ...] | list[str] = (),
        item: str | None = None,
        buffer_id: str | None = None,
    ) -> BufferInfo:
        """Reserve a buffer of ``max_size`` bytes living ``ttl`` seconds; ``QuotaExceeded``."""
        if max_size <= 0:
            raise ValueError(f"max_size must be a positive number of bytes, got {max_size}")
        if not (math.isfinite(ttl) and 0 < ttl <= self.max_ttl):
            raise ValueError(
                f"ttl must be a finite number of seconds, above 0 and at most {self.max_ttl:g} "
                f"(this service's maximum), got {ttl}"
            )
        for c in consumers:
            check_name(c, "consumer")
        buffer_id = check_name(buffer_id, "buffer id") if buffer_id else uuid.uuid4().hex
        now = self.clock()
        with self._lock, self._session() as s:
            if s.get(BufferRow, buffer_id) is not None:
                raise BufferStateError(f"buffer id {buffer_id!r} already exists; pick another")
            live = BufferRow.state.in_(LIVE_STATES)
            count, reserved = s.execute(
                select(
                    func.count(BufferRow.id), func.coalesce(func.sum(BufferRow.max_size), 0)
                ).where(live)
            ).one()
            if count + 1 > self.quota.max_count:
                raise QuotaExceeded(
                    f"site {self.site!r} already holds {count} buffers (quota "
                    f"{self.quota.max_count}); wait for buffers to drain or raise the quota"
                )
            if reserved + max_size > self.quota.max_bytes:
                raise QuotaExceeded(
                    f"site {self.site!r} has {self.quota.max_bytes - reserved} of "
                    f"{self.quota.max_bytes} bytes free, buffer asks {max_size}; "
                    "ask for less or wait for buffers to drain"
                )
            row = BufferRow(
                id=buffer_id,
                site=self.site,
                item=item,
                state=BufferState.INITIALISED,
                max_size=max_size,
                size=0,
                created_at=now,
                expires_at=now + ttl,
                consumers=json.dumps(sorted(set(consumers))),
                drained="[]",
            )
            s.add(row)
            s.flush()
            _private_file(self.path(buffer_id))
            row.state = BufferState.CREATED
            return _info(row)

    def info(self, buffer_id: str) -> BufferInfo:
        """The buffer's info; ``size`` counts appends acknowledged but not yet committed."""
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            info = _info(row)
            end = self._end(buffer_id, row.size)
            return info if end == row.size else replace(info, size=end)

    def list_buffers(self, include_deleted: bool = False) -> list[BufferInfo]:
        self.expire()
        with self._session() as s:
            q = select(BufferRow).order_by(BufferRow.created_at)
            if not include_deleted:
                q = q.where(BufferRow.state.in_(LIVE_STATES))
            return [_info(r) for r in s.scalars(q)]

    def usage(self) -> dict[str, Any]:
        """Site-wide occupancy: live buffers, bytes reserved and stored, and the quota."""
        with self._session() as s:
            count, reserved, stored = s.execute(
                select(
                    func.count(BufferRow.id),
                    func.coalesce(func.sum(BufferRow.max_size), 0),
                    func.coalesce(func.sum(BufferRow.size), 0),
                ).where(BufferRow.state.in_(LIVE_STATES))
            ).one()
        return {
            "site": self.site,
            "buffers": count,
            "reserved_bytes": reserved,
            "stored_bytes": stored,
            "quota_bytes": self.quota.max_bytes,
            "quota_count": self.quota.max_count,
        }

    def expire(self) -> list[str]:
        """Destroy every buffer whose TTL has passed; the ids destroyed."""
        now = self.clock()
        with self._lock, self._session() as s:
            rows = s.scalars(
                select(BufferRow).where(
                    BufferRow.state.in_(LIVE_STATES), BufferRow.expires_at <= now
                )
            ).all()
            for row in rows:
                self._destroy(row, "TTL expired")
            return [r.id for r in rows]

    def disable(self, buffer_id: str) -> BufferInfo:
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            row.state = BufferState.DISABLED
            row.reason = "disabled by an administrator"
            return _info(row)

    def delete(self, buffer_id: str, reason: str = "deleted by an administrator") -> BufferInfo:
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            self._destroy(row, reason)
            return _info(row)

    # -- writing ---------------------------------------------------------------
    def begin_append(
        self, buffer_id: str, offset: int | None = None, tag: str | None = None
    ) -> AppendLease:
        """Open an append at the end of the buffer (at ``offset`` if given, which must be it).

        Refused when the buffer is not writable, the tag exists, ``offset`` is
        not the end, or another append to the buffer is in progress. The
        bytes then go through ``AppendLease.write`` and the append ends with
        ``finish_append`` (verify, fsync, commit) or ``abort_append``.
        """
        if tag is not None:
            check_name(tag, "tag")
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            if row.state != BufferState.CREATED:
                raise BufferStateError(
                    f"buffer {buffer_id!r} is {row.state}; only a 'created' buffer takes writes"
                )
            pending = self._unsynced.get(buffer_id, [])
            if tag is not None and (
                s.get(TagRow, (buffer_id, tag)) is not None or any(e.tag == tag for e in pending)
            ):
                raise TagExists(f"tag {tag!r} of buffer {buffer_id!r} was already written")
            end = self._end(buffer_id, row.size)
            if offset is not None and offset != end:
                raise OffsetMismatch(
                    f"append at offset {offset} but buffer {buffer_id!r} ends at {end}; "
                    "resume from its current size"
                )
            if buffer_id in self._writing:
                raise OffsetMismatch(
                    f"another append to buffer {buffer_id!r} is in progress; retry after it"
                )
            # The lease owns the file: finish_append or abort_append closes it.
            file = open(self.path(buffer_id), "ab")  # noqa: SIM115
            lease = AppendLease(buffer_id, end, row.max_size, tag, file)
            self._writing.add(buffer_id)
            return lease

    def finish_append(
        self, lease: AppendLease, sha256: str | None = None, durable: bool = True
    ) -> BufferInfo:
        """Verify the bytes of ``lease`` against ``sha256``, fsync them and commit the new size.

        On a mismatch the bytes are cut off again (nothing stored) and
        ``ChecksumMismatch`` is raised. A buffer that reaches its maximum size
        turns ``full`` (no more writes); its ``sha256`` comes with the seal.
        ``durable=False``: return once the bytes are verified and written; the
        syncer fsyncs and commits them (see the module docstring).
        """
        digest = lease.digest.hexdigest()
        try:
            lease.file.flush()
            if durable:
                self.sync(lease.buffer_id)  # earlier unsynced appends commit first
                if self.fsync:
                    os.fsync(lease.file.fileno())
        except BaseException:
            self.abort_append(lease)
            raise
        if sha256 is not None and sha256.lower() != digest:
            self.abort_append(lease)
            raise ChecksumMismatch(
                f"chunk at offset {lease.start} of buffer {lease.buffer_id!r} has sha256 "
                f"{digest}, sender declared {sha256}: corrupted in transit, send it again"
            )
        if not durable:
            return self._acknowledge(lease, digest)
        try:
            with self._lock, self._session() as s:
                row = self._row(s, lease.buffer_id)
                if row.state != BufferState.CREATED or row.size != lease.start:
                    raise BufferStateError(
                        f"buffer {lease.buffer_id!r} changed during the append ({row.state})"
                    )
                if lease.tag is not None:
                    s.add(
                        TagRow(
                            buffer_id=lease.buffer_id,
                            tag=lease.tag,
                            offset=lease.start,
                            length=lease.written,
                            sha256=digest,
                        )
                    )
                s.add(
                    ExtentRow(
                        buffer_id=lease.buffer_id,
                        offset=lease.start,
                        length=lease.written,
                        sha256=digest,
                    )
                )
                row.size += lease.written
                if row.size == row.max_size:
                    row.state = BufferState.FULL
                info = _info(row)
        except BaseException:
            self.abort_append(lease)
            raise
        lease.file.close()
        self._writing.discard(lease.buffer_id)
        return info

    def _acknowledge(self, lease: AppendLease, digest: str) -> BufferInfo:
        """Record a verified, written append for the syncer; the info with it counted."""
        try:
            with self._synced, self._session() as s:
                row = self._row(s, lease.buffer_id)
                if row.state != BufferState.CREATED or self._end(row.id, row.size) != lease.start:
                    raise BufferStateError(
                        f"buffer {lease.buffer_id!r} changed during the append ({row.state})"
                    )
                pending = self._unsynced.setdefault(row.id, [])
                pending.append(
                    _Unsynced(lease.start, lease.written, digest, lease.tag, time.monotonic())
                )
                info = replace(_info(row), size=lease.start + lease.written)
                self._start_syncer()
                self._synced.notify_all()
        except BaseException:
            self.abort_append(lease)
            raise
        lease.file.close()
        self._writing.discard(lease.buffer_id)
        return info

    def chain_append(self, lease: AppendLease, sha256: str) -> AppendLease:
        """Finish ``lease`` as ``finish_append(lease, sha256, durable=False)`` does, and open
        the next append right where it ends, on the same open file and without a database
        session: for a writer that sends several appends in a row (the data port).

        The bytes of ``lease`` are verified here (``ChecksumMismatch``: they are cut off, the
        appends before them stay). The buffer stays claimed by the chain (no other append,
        no seal) until its last lease goes through ``finish_append`` or ``abort_append``,
        which checks the buffer's state as any append does; the syncer checks it again
        before it commits anything.
        """
        if lease.tag is not None:
            self.abort_append(lease)
            raise ValueError("an append with a tag cannot be chained: finish it on its own")
        digest = lease.digest.hexdigest()
        try:
            lease.file.flush()
        except BaseException:
            self.abort_append(lease)
            raise
        if sha256.lower() != digest:
            self.abort_append(lease)
            raise ChecksumMismatch(
                f"chunk at offset {lease.start} of buffer {lease.buffer_id!r} has sha256 "
                f"{digest}, sender declared {sha256}: corrupted in transit, send it again"
            )
        end = lease.start + lease.written
        with self._synced:
            pending = self._unsynced.setdefault(lease.buffer_id, [])
            if pending and pending[-1].start + pending[-1].length != lease.start:
                self.abort_append(lease)
                raise BufferStateError(f"buffer {lease.buffer_id!r} changed during the append")
            pending.append(_Unsynced(lease.start, lease.written, digest, None, time.monotonic()))
            self._start_syncer()
            self._synced.notify_all()
        return AppendLease(lease.buffer_id, end, lease.max_size, None, lease.file)

    def abort_append(self, lease: AppendLease) -> None:
        """Cut the buffer's file back to where ``lease`` started; nothing of it stays."""
        try:
            if not lease.file.closed:
                lease.file.flush()
                lease.file.truncate(lease.start)
                lease.file.close()
        except OSError:
            pass  # the file was removed (buffer destroyed): nothing to cut
        finally:
            self._writing.discard(lease.buffer_id)

    def append(
        self,
        buffer_id: str,
        data: bytes,
        offset: int | None = None,
        tag: str | None = None,
        sha256: str | None = None,
        durable: bool = True,
    ) -> BufferInfo:
        """Append ``data`` in one call (``begin_append``, ``write``, ``finish_append``)."""
        lease = self.begin_append(buffer_id, offset, tag)
        try:
            lease.write(data)
        except BaseException:
            self.abort_append(lease)
            raise
        return self.finish_append(lease, sha256, durable)

    def seal(self, buffer_id: str, sha256: str | None = None) -> BufferInfo:
        """Close the buffer to writes (state ``full``) and record the sha256 of its bytes.

        The digest is computed from the file **as it is on disk** (streamed, no
        lock held while hashing, no append admitted meanwhile). With ``sha256``
        given (the producer's or the source buffer's digest), or a digest
        recorded by an earlier seal, a mismatch puts the buffer in ``error``
        and raises ``ChecksumMismatch``. Sealing a sealed buffer again checks
        its bytes again.
        """
        if sha256 is not None and not _SHA_RE.match(sha256.lower()):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        self.sync(buffer_id)
        self._read_backs_done()
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            if self._unsynced.get(buffer_id):
                raise OffsetMismatch(
                    f"an append to buffer {buffer_id!r} arrived during the seal; seal it again"
                )
            if row.state not in (BufferState.CREATED, BufferState.FULL):
                raise BufferStateError(f"buffer {buffer_id!r} is {row.state}; it cannot be sealed")
            if buffer_id in self._writing:
                raise OffsetMismatch(
                    f"an append to buffer {buffer_id!r} is in progress; seal it after the append"
                )
            self._writing.add(buffer_id)
            size = row.size
        try:
            digest, got = self.disk_sha256(buffer_id, size)
            with self._lock, self._session() as s:
                row = self._row(s, buffer_id)
                expected = [d for d in (sha256 and sha256.lower(), row.sha256) if d]
                wrong = [d for d in expected if d != digest]
                if got != size or wrong:
                    row.state = BufferState.ERROR
                    row.reason = (
                        f"the data file holds {got} of the {size} bytes committed"
                        if got != size
                        else f"sha256 {digest} of the {size} bytes on disk != expected {wrong[0]}"
                    )
                    s.commit()
                    raise ChecksumMismatch(f"buffer {buffer_id!r}: {row.reason}")
                row.state = BufferState.FULL
                row.sha256 = digest
                return _info(row)
        finally:
            self._writing.discard(buffer_id)

    # -- reading ---------------------------------------------------------------
    def _read_bytes(self, buffer_id: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            with open(self.path(buffer_id), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise BufferGone(f"buffer {buffer_id!r} was destroyed while being read") from None

    def range_sha256(self, buffer_id: str, offset: int, length: int) -> str:
        """The sha256 of the committed bytes ``[offset, offset + length)``: the one recorded
        when they arrived if the range is exactly one append's extent, else hashed from disk."""
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            if offset < 0 or length < 0 or offset + length > row.size:
                raise ValueError(
                    f"range [{offset}, {offset + length}) is not within the {row.size} committed "
                    f"bytes of buffer {buffer_id!r}"
                )
            extent = s.get(ExtentRow, (buffer_id, offset))
            if extent is not None and extent.length == length:
                return extent.sha256
        h = hashlib.sha256()
        try:
            _hash_file_range(self.path(buffer_id), h, offset, offset + length)
        except FileNotFoundError:
            raise BufferGone(f"buffer {buffer_id!r} was destroyed while being read") from None
        return h.hexdigest()

    def extents_from(
        self, buffer_id: str, offset: int, max_bytes: int, max_count: int, min_length: int = 1
    ) -> list[tuple[int, int, str]]:
        """The appends recorded back to back from ``offset`` on: ``(offset, length, sha256)``
        each (the digest computed when the bytes arrived), as many as fit in ``max_bytes``
        and ``max_count``, stopping before the first shorter than ``min_length``."""
        with self._lock, self._session() as s:
            self._row(s, buffer_id)
            rows = s.execute(
                select(ExtentRow.offset, ExtentRow.length, ExtentRow.sha256)
                .where(ExtentRow.buffer_id == buffer_id, ExtentRow.offset >= offset)
                .order_by(ExtentRow.offset)
                .limit(max_count)
            ).all()
        out: list[tuple[int, int, str]] = []
        at, total = offset, 0
        for start, length, digest in rows:
            if start != at or length < min_length or total + length > max_bytes:
                break
            out.append((start, length, digest))
            at += length
            total += length
        return out

    def iter_range(
        self, buffer_id: str, offset: int, length: int, piece: int = HASH_BLOCK
    ) -> Iterator[bytes]:
        """The bytes ``[offset, offset + length)`` of the buffer's file, ``piece`` bytes at a
        time (the caller checks the range is committed; ``BufferGone`` if the file is gone)."""
        try:
            f = open(self.path(buffer_id), "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            raise BufferGone(f"buffer {buffer_id!r} was destroyed while being read") from None
        with f:
            at, end = offset, offset + length
            while at < end:
                data = os.pread(f.fileno(), min(piece, end - at), at)
                if not data:
                    raise BufferGone(f"buffer {buffer_id!r} lost bytes at offset {at}")
                yield data
                at += len(data)

    def read(
        self, buffer_id: str, offset: int = 0, limit: int | None = None
    ) -> tuple[bytes, BufferInfo, str]:
        """Up to ``limit`` bytes from ``offset`` (to the committed end), the buffer's info,
        and the sha256 of those bytes (recorded at write time when the range is one
        append's extent, computed otherwise)."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must be >= 0")
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            if row.state not in READABLE_STATES:
                raise BufferStateError(f"buffer {buffer_id!r} is {row.state}; it cannot be read")
            if offset > row.size:
                raise ValueError(
                    f"offset {offset} is past the end of buffer {buffer_id!r} ({row.size})"
                )
            info = _info(row)
            end = info.size if limit is None else min(info.size, offset + limit)
            extent = s.get(ExtentRow, (buffer_id, offset))
            known = extent.sha256 if extent is not None and extent.length == end - offset else None
        data = self._read_bytes(buffer_id, offset, end - offset)
        return data, info, known or hashlib.sha256(data).hexdigest()

    def read_session(
        self, buffer_id: str, name: str, limit: int | None = None, consumer: str | None = None
    ) -> tuple[bytes, int, BufferInfo]:
        """Continue the read session ``name``: (bytes, offset they start at, info after reading).

        When the caller is the declared consumer ``consumer`` and its session
        carries its name, reaching the end of a sealed buffer drains it for
        that consumer; anyone else's session only reads.
        """
        check_name(name, "read session")
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            if row.state not in READABLE_STATES:
                raise BufferStateError(f"buffer {buffer_id!r} is {row.state}; it cannot be read")
            sess = s.get(SessionRow, (buffer_id, name))
            if sess is None:
                sess = SessionRow(buffer_id=buffer_id, name=name, position=0)
                s.add(sess)
            start = sess.position
            end = row.size if limit is None else min(row.size, start + limit)
            data = self._read_bytes(buffer_id, start, end - start)
            sess.position = start + len(data)
            sealed = row.state == BufferState.FULL and row.sha256 is not None
            if sealed and consumer == name and sess.position == row.size:
                self._mark_drained(row, name)
            return data, start, _info(row)

    def drained(self, buffer_id: str, consumer: str) -> BufferInfo:
        """Record that ``consumer`` has everything it needs from the buffer.

        Only a sealed buffer can be drained (``BufferStateError`` otherwise):
        a buffer still being written has not given anyone everything.
        """
        with self._lock, self._session() as s:
            row = self._row(s, buffer_id)
            if row.state != BufferState.FULL or row.sha256 is None:
                raise BufferStateError(
                    f"buffer {buffer_id!r} is {row.state} and not sealed: it cannot be drained yet"
                )
            self._mark_drained(row, consumer)
            return _info(row)

    def _mark_drained(self, row: BufferRow, consumer: str) -> None:
        consumers = json.loads(row.consumers)
        if consumer not in consumers:
            return
        done = set(json.loads(row.drained)) | {consumer}
        row.drained = json.dumps(sorted(done))
        if done >= set(consumers):
            self._destroy(row, "drained by every declared consumer")

    def tag(self, buffer_id: str, tag: str) -> TagInfo:
        with self._lock, self._session() as s:
            self._row(s, buffer_id)
            t = s.get(TagRow, (buffer_id, tag))
            if t is None:
                raise BufferNotFound(f"buffer {buffer_id!r} has no tag {tag!r}")
            return TagInfo(buffer_id, t.tag, t.offset, t.length, t.sha256)
