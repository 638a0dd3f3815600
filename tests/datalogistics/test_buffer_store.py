"""The buffer store in-process (real SQLite, real files): every state, quota, offset, tag,
seal, read and drain rule of ``BufferStore`` with the exact error it raises.

``test_buffer_service.py`` runs the same rules over HTTP; these pin each one alone and are
the tests ``make mutation`` runs against the store (docs/development.md).
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from datalogistics.buffers import BufferInfo, BufferStore, Quota, TagInfo
from datalogistics.buffers.store import HASH_BLOCK, check_name
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
from tests.datalogistics.conftest import Clock


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_store(
    root: Path, clock: Clock | None = None, quota: Quota | None = None, **kw: Any
) -> BufferStore:
    return BufferStore(root, "alpha", quota or Quota(1000, 3), clock=clock or Clock(), **kw)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


# -- creating ---------------------------------------------------------------------------------


def test_a_created_buffer_reports_what_was_asked(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock)
    info = store.create(100, ttl=60, consumers=["b", "a", "b"], item="x", buffer_id="buf-1")
    assert info.id == "buf-1"
    assert (info.site, info.item, info.state, info.max_size, info.size) == (
        "alpha",
        "x",
        "created",
        100,
        0,
    )
    assert (info.created_at, info.expires_at) == (clock.now, clock.now + 60)
    assert (info.consumers, info.drained, info.sha256, info.reason) == (("a", "b"), (), None, None)
    assert store.info("buf-1") == info
    assert store.path("buf-1") == tmp_path / "data" / "buf-1.buf"
    assert store.path("buf-1").read_bytes() == b""
    generated = store.create(1, ttl=1)
    assert len(generated.id) == 32
    assert int(generated.id, 16) >= 0
    assert (generated.item, generated.consumers) == (None, ())
    store.close()


def test_the_store_and_its_files_are_private(tmp_path: Path) -> None:
    deep = new_store(tmp_path / "a" / "b" / "site")  # missing parents are made
    assert mode(tmp_path / "a" / "b" / "site" / "data") == 0o700
    deep.close()
    store = new_store(tmp_path / "site")
    store.create(10, ttl=60, buffer_id="b")
    assert mode(tmp_path / "site") == 0o700
    assert mode(tmp_path / "site" / "data") == 0o700
    assert mode(tmp_path / "site" / "buffers.db") == 0o600
    assert mode(store.path("b")) == 0o600
    store.close()


def test_bad_limits_are_refused_with_their_value(tmp_path: Path) -> None:
    refused = r"^a buffer quota needs positive max_bytes and max_count$"
    for bad in (0, -1):
        with pytest.raises(ValueError, match=refused):
            Quota(bad, 1)
        with pytest.raises(ValueError, match=refused):
            Quota(1, bad)
    assert Quota(1, 1) == Quota(max_bytes=1, max_count=1)
    for ttl in (math.inf, math.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match=f"^max_ttl must be .* got {ttl}$"):
            new_store(tmp_path, max_ttl=ttl)
    assert new_store(tmp_path / "short", max_ttl=0.5).create(1, ttl=0.5).size == 0
    store = new_store(tmp_path, max_ttl=100)
    assert store.max_ttl == 100.0
    for size in (0, -5):
        with pytest.raises(ValueError, match=f"^max_size must be a positive .*, got {size}$"):
            store.create(size, ttl=10)
    for ttl in (math.inf, math.nan, 0.0, -1.0, 100.5):
        with pytest.raises(ValueError, match=f"at most 100 .*, got {ttl}$"):
            store.create(10, ttl=ttl)
    assert store.create(10, ttl=100).expires_at == store.create(10, ttl=100).created_at + 100
    assert new_store(tmp_path / "d").max_ttl == 7 * 86_400.0
    store.close()


def test_names_are_checked_and_ids_are_unique(tmp_path: Path) -> None:
    assert check_name("a" * 256, "tag") == "a" * 256
    assert check_name("A0_.:-z", "tag") == "A0_.:-z"
    for bad in ("", "a" * 257, "_a", "-a", "a b", "a/b", "é"):
        with pytest.raises(ValueError, match="must be 1-256 characters") as e:
            check_name(bad, "tag")
        assert str(e.value) == (
            f"tag {bad!r} must be 1-256 characters of letters, digits, '_', '.', ':' or '-'"
            " and start with a letter or digit"
        )
    store = new_store(tmp_path)
    with pytest.raises(ValueError, match=r"^consumer 'a b' must be"):
        store.create(10, ttl=10, consumers=["ok", "a b"])
    with pytest.raises(ValueError, match=r"^buffer id '\.x' must be"):
        store.create(10, ttl=10, buffer_id=".x")
    store.create(10, ttl=10, buffer_id="b")
    with pytest.raises(BufferStateError, match=r"^buffer id 'b' already exists; pick another$"):
        store.create(10, ttl=10, buffer_id="b")
    store.delete("b")
    with pytest.raises(BufferStateError, match="already exists"):
        store.create(10, ttl=10, buffer_id="b")  # the destroyed row stays for the audit
    assert store.usage()["buffers"] == 0
    store.close()


def test_the_quota_counts_live_buffers_and_their_maximum_sizes(tmp_path: Path) -> None:
    whole = new_store(tmp_path / "whole")
    assert whole.create(1000, ttl=60).max_size == 1000  # an empty site has all of its quota
    whole.close()
    store = new_store(tmp_path)  # 1000 bytes, 3 buffers
    store.create(600, ttl=60, buffer_id="a")
    with pytest.raises(QuotaExceeded) as info:
        store.create(401, ttl=60)
    assert str(info.value) == (
        "site 'alpha' has 400 of 1000 bytes free, buffer asks 401; "
        "ask for less or wait for buffers to drain"
    )
    store.create(400, ttl=60, buffer_id="b")  # exactly the rest
    with pytest.raises(QuotaExceeded, match="has 0 of 1000 bytes free, buffer asks 1;"):
        store.create(1, ttl=60)
    store.delete("a")
    store.create(300, ttl=60, buffer_id="c")
    store.create(300, ttl=60, buffer_id="d")
    with pytest.raises(QuotaExceeded) as info:
        store.create(1, ttl=60)
    assert str(info.value) == (
        "site 'alpha' already holds 3 buffers (quota 3); "
        "wait for buffers to drain or raise the quota"
    )
    store.append("c", b"12345")
    assert store.usage() == {
        "site": "alpha",
        "buffers": 3,
        "reserved_bytes": 1000,
        "stored_bytes": 5,
        "quota_bytes": 1000,
        "quota_count": 3,
    }
    store.close()


# -- life cycle -------------------------------------------------------------------------------


def test_unknown_destroyed_and_expired_buffers_are_named(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock)
    with pytest.raises(BufferNotFound) as nf:
        store.info("nope")
    assert str(nf.value) == "no buffer 'nope' at site 'alpha'"
    store.create(10, ttl=60, buffer_id="d")
    gone = store.delete("d", "no longer needed")
    assert (gone.state, gone.reason) == ("deleted", "no longer needed")
    assert not store.path("d").exists()
    with pytest.raises(BufferGone) as g:
        store.info("d")
    assert str(g.value) == "buffer 'd' was destroyed (no longer needed)"
    assert store.delete(store.create(1, ttl=9).id).reason == "deleted by an administrator"
    store.create(10, ttl=60, buffer_id="t")
    store.append("t", b"abc")
    clock.advance(59.5)
    assert store.info("t").size == 3
    clock.advance(0.5)  # exactly at expires_at: gone
    with pytest.raises(BufferGone) as g:
        store.info("t")
    assert str(g.value) == "buffer 't' was destroyed (TTL expired)"
    assert not store.path("t").exists()
    # the destruction was kept although the call failed
    row = next(b for b in store.list_buffers(include_deleted=True) if b.id == "t")
    assert (row.state, row.reason) == ("deleted", "TTL expired")
    store.close()


def test_expire_destroys_exactly_the_buffers_past_their_ttl(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock)
    store.create(10, ttl=10, buffer_id="short")
    clock.advance(1)
    store.create(10, ttl=20, buffer_id="long")
    clock.advance(9)
    assert store.expire() == ["short"]
    assert store.expire() == []
    gone = store.list_buffers(include_deleted=True)[0]
    assert (gone.id, gone.state, gone.reason) == ("short", "deleted", "TTL expired")
    assert [b.id for b in store.list_buffers()] == ["long"]
    assert [(b.id, b.state) for b in store.list_buffers(include_deleted=True)] == [
        ("short", "deleted"),
        ("long", "created"),
    ]
    clock.advance(11)
    assert store.list_buffers() == []  # listing expires first
    assert store.usage() == {
        "site": "alpha",
        "buffers": 0,
        "reserved_bytes": 0,
        "stored_bytes": 0,
        "quota_bytes": 1000,
        "quota_count": 3,
    }
    store.close()


def test_buffers_are_listed_by_creation_time(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock)
    store.create(10, ttl=60, buffer_id="late")
    clock.advance(-5)  # the service's clock stepped back: "early" was created before "late"
    store.create(10, ttl=60, buffer_id="early")
    clock.advance(1)
    store.create(10, ttl=60, buffer_id="middle")
    assert [b.id for b in store.list_buffers()] == ["early", "middle", "late"]
    store.close()


def test_a_disabled_buffer_takes_no_writes_nor_reads(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(10, ttl=60, buffer_id="b")
    store.append("b", b"abc")
    info = store.disable("b")
    assert (info.state, info.reason, info.size) == ("disabled", "disabled by an administrator", 3)
    with pytest.raises(BufferStateError) as e:
        store.append("b", b"d")
    assert str(e.value) == "buffer 'b' is disabled; only a 'created' buffer takes writes"
    with pytest.raises(BufferStateError, match=r"^buffer 'b' is disabled; it cannot be read$"):
        store.read("b")
    with pytest.raises(BufferStateError, match=r"^buffer 'b' is disabled; it cannot be read$"):
        store.read_session("b", "s")
    with pytest.raises(BufferStateError, match=r"^buffer 'b' is disabled; it cannot be sealed$"):
        store.seal("b")
    assert store.path("b").read_bytes() == b"abc"
    store.close()


# -- writing ----------------------------------------------------------------------------------


def test_appends_go_at_the_end_and_fill_the_buffer(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(10, ttl=60, buffer_id="b")
    assert store.append("b", b"0123", offset=0).size == 4
    with pytest.raises(OffsetMismatch) as e:
        store.append("b", b"x", offset=3)
    assert str(e.value) == (
        "append at offset 3 but buffer 'b' ends at 4; resume from its current size"
    )
    with pytest.raises(OffsetMismatch, match="at offset 5 but"):
        store.append("b", b"x", offset=5)
    with pytest.raises(BufferTooLarge) as big:
        store.append("b", b"0123456")
    assert str(big.value) == (
        "append would bring buffer 'b' to at least 11 bytes, above its maximum of 10"
    )
    assert store.path("b").read_bytes() == b"0123"  # nothing of the refused append stays
    assert store.append("b", b"45678").state == "created"
    full = store.append("b", b"9", offset=9)
    assert (full.state, full.size, full.sha256) == ("full", 10, None)
    with pytest.raises(BufferStateError, match="is full; only a 'created' buffer takes writes"):
        store.append("b", b"")
    assert store.path("b").read_bytes() == b"0123456789"
    store.close()


def test_a_chunk_with_a_wrong_digest_leaves_nothing(tmp_path: Path) -> None:
    store = new_store(tmp_path, fsync=False)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"first", sha256=sha(b"first").upper())
    with pytest.raises(ChecksumMismatch) as e:
        store.append("b", b"second", sha256=sha(b"other"), tag="t")
    assert str(e.value) == (
        f"chunk at offset 5 of buffer 'b' has sha256 {sha(b'second')}, sender declared "
        f"{sha(b'other')}: corrupted in transit, send it again"
    )
    assert store.path("b").read_bytes() == b"first"
    assert store.info("b").size == 5
    with pytest.raises(BufferNotFound, match=r"^buffer 'b' has no tag 't'$"):
        store.tag("b", "t")
    assert store.append("b", b"second", tag="t").size == 11  # the tag was not spent
    store.close()


def test_tags_are_written_once_and_remember_their_chunk(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abc", tag="one")
    store.append("b", b"defgh", tag="two")
    assert store.tag("b", "two") == TagInfo("b", "two", 3, 5, sha(b"defgh"))
    assert store.tag("b", "one") == TagInfo("b", "one", 0, 3, sha(b"abc"))
    with pytest.raises(TagExists) as e:
        store.append("b", b"zz", tag="one")
    assert str(e.value) == "tag 'one' of buffer 'b' was already written"
    with pytest.raises(ValueError, match=r"^tag 'a b' must be"):
        store.append("b", b"zz", tag="a b")
    assert store.path("b").read_bytes() == b"abcdefgh"
    store.close()


def test_one_append_or_seal_at_a_time_and_a_lease_ends_cleanly(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abc")
    lease = store.begin_append("b", offset=3, tag="t")
    assert (lease.buffer_id, lease.start, lease.max_size, lease.tag) == ("b", 3, 100, "t")
    lease.write(b"de")
    lease.write(b"f")
    assert lease.written == 3
    with pytest.raises(BufferTooLarge, match="to at least 101 bytes, above its maximum of 100"):
        lease.write(b"x" * 95)  # 3 + 3 + 95: counted from the buffer's end plus this lease
    assert lease.written == 3
    with pytest.raises(OffsetMismatch) as e:
        store.begin_append("b")
    assert str(e.value) == "another append to buffer 'b' is in progress; retry after it"
    with pytest.raises(OffsetMismatch) as e:
        store.seal("b")
    assert str(e.value) == "an append to buffer 'b' is in progress; seal it after the append"
    store.abort_append(lease)
    assert lease.file.closed
    assert store.path("b").read_bytes() == b"abc"
    store.abort_append(lease)  # twice: nothing more to do
    lease = store.begin_append("b")
    lease.write(b"xyz")
    info = store.finish_append(lease, sha(b"xyz"))
    assert (info.size, lease.file.closed) == (6, True)
    assert store.read("b", 3)[0] == b"xyz"
    store.begin_append("b")  # the last lease was released
    store.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_a_full_disk_at_the_flush_commits_nothing_and_ends_the_lease(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    lease = store.begin_append("b")
    own = lease.file
    lease.file = open("/dev/full", "wb")  # noqa: SIM115 - the lease closes it
    lease.write(b"abc")  # buffered: the disk refuses it at the flush
    with pytest.raises(OSError, match="No space left on device"):
        store.finish_append(lease)
    own.close()
    assert store.info("b").size == 0
    assert store.append("b", b"xyz").size == 3  # the lease was released
    store.close()


def test_an_append_to_a_buffer_changed_meanwhile_is_cut_off(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abc")
    lease = store.begin_append("b")
    lease.write(b"def")
    store.disable("b")
    with pytest.raises(BufferStateError) as e:
        store.finish_append(lease)
    assert str(e.value) == "buffer 'b' changed during the append (disabled)"
    assert store.path("b").read_bytes() == b"abc"
    assert store.info("b").size == 3
    assert "b" not in store._writing
    store.close()


# -- sealing ----------------------------------------------------------------------------------


def test_a_seal_records_the_digest_of_the_bytes_on_disk(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    data = b"hello, buffer"
    store.append("b", data)
    with pytest.raises(ValueError, match=r"^sha256 must be 64 hexadecimal digits$"):
        store.seal("b", "abc")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        store.seal("b", sha(data)[:-1] + "g")
    sealed = store.seal("b", sha(data).upper())
    assert (sealed.state, sealed.sha256, sealed.size) == ("full", sha(data), len(data))
    assert store.seal("b").sha256 == sha(data)  # sealed again: checked again, same digest
    assert "b" not in store._writing
    store.create(10, ttl=60, buffer_id="empty")
    assert store.seal("empty").sha256 == sha(b"")
    store.close()


def test_a_seal_against_another_digest_puts_the_buffer_in_error(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abc")
    with pytest.raises(ChecksumMismatch) as e:
        store.seal("b", sha(b"abd"))
    reason = f"sha256 {sha(b'abc')} of the 3 bytes on disk != expected {sha(b'abd')}"
    assert str(e.value) == f"buffer 'b': {reason}"
    info = store.list_buffers()[0]
    assert (info.state, info.reason, info.sha256) == ("error", reason, None)
    assert "b" not in store._writing
    store.close()


def test_a_sealed_buffer_that_rotted_fails_its_next_seal(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abcdef")
    store.seal("b")
    flip(store.path("b"), 2)
    with pytest.raises(ChecksumMismatch, match="!= expected " + sha(b"abcdef")):
        store.seal("b")
    assert store.list_buffers()[0].state == "error"
    store.close()


def test_a_seal_of_a_file_that_lost_bytes_says_how_many(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abcdef")
    os.truncate(store.path("b"), 4)
    with pytest.raises(ChecksumMismatch) as e:
        store.seal("b", sha(b"abcdef"))
    assert str(e.value) == "buffer 'b': the data file holds 4 of the 6 bytes committed"
    store.close()


def test_the_seal_hashes_large_files_in_blocks(tmp_path: Path) -> None:
    store = new_store(tmp_path, quota=Quota(2**30, 3))
    data = os.urandom(2 * HASH_BLOCK + 123)
    store.create(len(data) + 10, ttl=60, buffer_id="b")
    store.append("b", data)
    with open(store.path("b"), "ab") as f:
        f.write(b"uncommitted tail")
    assert store.disk_sha256("b", len(data)) == (sha(data), len(data))
    assert store.disk_sha256("b", 10) == (sha(data[:10]), 10)
    assert store.seal("b", sha(data)).sha256 == sha(data)
    store.delete("b")
    with pytest.raises(BufferGone) as e:
        store.disk_sha256("b", 10)
    assert str(e.value) == "buffer 'b' was destroyed while being sealed"
    store.close()


# -- reading ----------------------------------------------------------------------------------


def test_reads_take_an_offset_and_a_limit_within_the_committed_bytes(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"0123456789")
    data, info, digest = store.read("b")
    assert (data, info.size, digest) == (b"0123456789", 10, sha(b"0123456789"))
    assert store.read("b", 3, 4)[0::2] == (b"3456", sha(b"3456"))
    assert store.read("b", 8, 50)[0] == b"89"
    assert store.read("b", 10) == (b"", store.info("b"), sha(b""))
    assert store.read("b", 4, 0)[0] == b""
    with pytest.raises(ValueError, match=r"^offset 11 is past the end of buffer 'b' \(10\)$"):
        store.read("b", 11)
    for offset, limit in ((-1, None), (0, -1)):
        with pytest.raises(ValueError, match=r"^offset and limit must be >= 0$"):
            store.read("b", offset, limit)
    os.unlink(store.path("b"))
    with pytest.raises(BufferGone, match=r"^buffer 'b' was destroyed while being read$"):
        store.read("b")
    store.close()


def test_a_read_of_one_whole_append_carries_the_digest_recorded_when_written(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, buffer_id="b")
    store.append("b", b"abcd")
    store.append("b", b"efgh")
    flip(store.path("b"), 5)  # rot at rest inside the second append
    data, _, digest = store.read("b", 4, 4)
    assert data != b"efgh"
    assert digest == sha(b"efgh")  # the receiver's check catches the rot
    data, _, digest = store.read("b", 4)  # to the end: also exactly that append
    assert digest == sha(b"efgh")
    data, _, digest = store.read("b", 4, 3)  # part of an append: hashed as read
    assert digest == sha(data)
    data, _, digest = store.read("b", 0)  # two appends: hashed as read
    assert digest == sha(data)
    assert store.read("b", 0, 4)[2] == sha(b"abcd")
    store.close()


def test_read_sessions_continue_and_a_consumer_drains_at_the_end(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(100, ttl=60, consumers=["c1", "c2"], buffer_id="b")
    store.append("b", b"0123456789")
    with pytest.raises(ValueError, match=r"^read session 'a b' must be"):
        store.read_session("b", "a b")
    data, start, info = store.read_session("b", "c1", limit=4, consumer="c1")
    assert (data, start, info.size) == (b"0123", 0, 10)
    assert store.read_session("b", "c1", limit=4, consumer="c1")[:2] == (b"4567", 4)
    assert store.read_session("b", "other", consumer="other")[:2] == (b"0123456789", 0)
    # the end of an unsealed buffer drains nothing
    assert store.read_session("b", "c1", consumer="c1")[:2] == (b"89", 8)
    assert store.read_session("b", "c1", consumer="c1")[:2] == (b"", 10)
    assert store.info("b").drained == ()
    store.seal("b")
    # a session not named after its caller reads, drains nothing
    assert store.read_session("b", "c2", consumer="c1")[:2] == (b"0123456789", 0)
    assert store.info("b").drained == ()
    # c1 reaches the end of the sealed buffer: drained for c1 only
    info = store.read_session("b", "c1", consumer="c1")[2]
    assert (info.drained, info.state) == (("c1",), "full")
    # session c2 (read above) is at the end: its consumer drains the buffer, the last one
    data, start, info = store.read_session("b", "c2", consumer="c2")
    assert (data, start, info.state) == (b"", 10, "deleted")
    assert (info.drained, info.reason) == (("c1", "c2"), "drained by every declared consumer")
    assert not store.path("b").exists()
    # a sealed buffer read in part is not drained
    store.create(10, ttl=60, consumers=["c1"], buffer_id="b2")
    store.append("b2", b"abcdef")
    store.seal("b2")
    assert store.read_session("b2", "c1", limit=5, consumer="c1")[2].drained == ()
    assert store.read_session("b2", "c1", consumer="c1")[2].state == "deleted"
    store.close()


def test_drained_needs_a_sealed_buffer_and_a_declared_consumer(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(4, ttl=60, consumers=["c2", "c1"], buffer_id="b")
    with pytest.raises(BufferStateError) as e:
        store.drained("b", "c1")
    assert str(e.value) == "buffer 'b' is created and not sealed: it cannot be drained yet"
    store.append("b", b"abcd")  # full, not sealed
    with pytest.raises(BufferStateError, match="is full and not sealed"):
        store.drained("b", "c1")
    store.seal("b")
    assert store.drained("b", "stranger").drained == ()
    assert store.drained("b", "c2").drained == ("c2",)
    assert store.drained("b", "c2").drained == ("c2",)
    last = store.drained("b", "c1")
    assert (last.drained, last.state) == (("c1", "c2"), "deleted")
    with pytest.raises(BufferGone, match="drained by every declared consumer"):
        store.info("b")
    store.close()


def test_a_buffer_info_round_trips_through_json(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(10, ttl=60, consumers=["x"], item="i", buffer_id="b")
    info = store.append("b", b"abc")
    as_json = info.to_json()
    assert as_json["consumers"] == ["x"]
    assert as_json["drained"] == []
    assert BufferInfo.from_json(as_json) == info
    store.close()


# -- restarts ---------------------------------------------------------------------------------


def test_a_restart_cuts_uncommitted_bytes_and_flags_lost_ones(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock, quota=Quota(1000, 10))
    for name in ("long", "short", "lost", "exact"):
        store.create(100, ttl=60, buffer_id=name)
    for name in ("long", "short", "lost", "exact"):
        store.append(name, b"abcdef")
    store.create(10, ttl=60, buffer_id="empty")
    store.create(10, ttl=60, buffer_id="gone")
    store.delete("gone")
    store.close()
    with open(tmp_path / "data" / "long.buf", "ab") as f:
        f.write(b"crash tail")  # written, never committed
    os.truncate(tmp_path / "data" / "short.buf", 2)
    os.unlink(tmp_path / "data" / "lost.buf")
    again = new_store(tmp_path, clock, quota=Quota(1000, 10))
    assert again.path("long").read_bytes() == b"abcdef"
    assert again.info("long").state == "created"
    assert again.info("exact").state == "created"
    assert again.path("exact").read_bytes() == b"abcdef"
    short = again.list_buffers()
    states = {b.id: (b.state, b.reason) for b in short}
    assert states["short"] == ("error", "data file holds 2 of 6 bytes")
    assert states["lost"] == ("error", "data file holds 0 of 6 bytes")
    assert states["empty"] == ("created", None)
    assert "gone" not in states
    again.close()


def test_an_append_tried_while_a_seal_hashes_is_refused(tmp_path: Path) -> None:
    tried: list[str] = []

    class Watched(BufferStore):
        """The real store; an append is tried at the moment the seal reads the disk."""

        def disk_sha256(self, buffer_id: str, size: int) -> tuple[str, int]:
            with pytest.raises(OffsetMismatch) as e:
                self.begin_append(buffer_id)
            tried.append(str(e.value))
            return super().disk_sha256(buffer_id, size)

    store = Watched(tmp_path, "alpha", Quota(1000, 3), clock=Clock())
    store.create(10, ttl=60, buffer_id="b")
    store.append("b", b"abc")
    assert store.seal("b").sha256 == sha(b"abc")
    assert tried == ["another append to buffer 'b' is in progress; retry after it"]
    store.close()


def test_a_buffer_whose_file_vanished_is_still_destroyed(tmp_path: Path) -> None:
    clock = Clock()
    store = new_store(tmp_path, clock)
    for name in ("d", "t"):
        store.create(10, ttl=60, buffer_id=name)
        store.append(name, b"abc")
        os.unlink(store.path(name))
    assert store.read("d", 3)[0] == b""  # reading nothing opens nothing
    assert store.delete("d").state == "deleted"
    clock.advance(60)
    assert store.expire() == ["t"]
    store.close()


def test_a_buffer_info_without_consumer_lists_has_none() -> None:
    data = {
        "id": "b",
        "site": "alpha",
        "item": None,
        "state": "created",
        "max_size": 10,
        "size": 0,
        "created_at": 1.0,
        "expires_at": 2.0,
        "sha256": None,
        "reason": None,
    }
    info = BufferInfo.from_json(data)
    assert (info.consumers, info.drained) == ((), ())


def test_a_restart_leaves_a_half_made_buffer_alone(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.create(10, ttl=60, buffer_id="a")
    store.create(10, ttl=60, buffer_id="b")
    store.append("b", b"abc")
    store.close()
    with sqlite3.connect(tmp_path / "buffers.db") as db:  # as if "a" had stopped half-made
        db.execute("UPDATE buffers SET state = 'initialised' WHERE id = 'a'")
    os.unlink(tmp_path / "data" / "a.buf")
    with open(tmp_path / "data" / "b.buf", "ab") as f:
        f.write(b"tail")
    again = new_store(tmp_path)
    assert (again.info("a").state, again.info("a").reason) == ("initialised", None)
    assert again.path("b").read_bytes() == b"abc"
    again.close()
