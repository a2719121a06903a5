"""Storage problems: disk full, read-only, corrupt, deleted or replaced journal file.

Each problem is reported (status callback, clear message naming the file), appends keep
returning, entries are queued in memory and written once storage works again, and
nothing written before is lost. Disk full and read-only are produced for real where the
machine allows it (tmpfs mount, ``chattr +i``; both need root); otherwise those tests
skip and the SQLite ``max_page_count`` simulation below still covers disk full.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from app.record import Journal, StorageError

CASE = {"patient_id": "PSN-9", "planned_sides": ["L", "R"]}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def notes(j, cid):
    return [e.payload["text"] for e in j.entries(cid, kinds=["note"])]


@pytest.fixture()
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (disk full is simulated in another test)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", f"lnm-test-{uuid.uuid4().hex[:6]}", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); disk full is simulated in another test")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory):
    filler = directory / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    return filler


def test_real_disk_full_queues_reports_and_recovers(small_tmpfs):
    clock, seen = Clock(), []
    path = small_tmpfs / "journal.db"
    j = Journal(path, clock=clock, on_status=seen.append, retry_interval_s=1.0)
    cid = j.open_case(CASE)
    for i in range(10):
        j.append(cid, "note", {"text": f"before {i}"})
    filler = fill(small_tmpfs)
    seqs = [j.append(cid, "note", {"text": f"during {i}" + "x" * 2000}) for i in range(40)]
    assert all(s is not None for s in seqs) and seqs == sorted(seqs)
    assert not j.status.ok and j.status.problem == "disk_full"
    assert seen and not seen[0].ok and "disk is full" in seen[0].message and str(path) in seen[0].message
    assert j.status.queued > 0
    filler.unlink()
    clock.t += 1.5  # retry is due
    j.append(cid, "note", {"text": "after"})
    assert j.status.ok and j.status.queued == 0 and seen[-1].ok
    texts = notes(j, cid)
    assert texts[:10] == [f"before {i}" for i in range(10)]
    assert texts[10:50] == [f"during {i}" + "x" * 2000 for i in range(40)]
    assert texts[-1] == "after"
    storage = [e.payload["event"] for e in j.entries(cid, kinds=["storage"])]
    assert storage == ["low_space", "problem", "recovered"]  # a case opened on a nearly full disk says so
    assert j.verify(cid).ok
    j.close()


def test_simulated_disk_full_with_max_page_count(tmp_path):
    clock, seen = Clock(), []
    j = Journal(tmp_path / "j.db", clock=clock, on_status=seen.append)
    cid = j.open_case(CASE)
    j.append(cid, "note", {"text": "before"})
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: SQLITE_FULL
    for i in range(20):
        assert j.append(cid, "note", {"text": f"q{i}" + "y" * 3000}) is not None
    assert j.status.problem == "disk_full" and j.status.queued >= 2  # the "problem" entry and what followed
    clock.t += 0.5
    j.append(cid, "note", {"text": "not yet due"})
    assert not j.status.ok  # retry not due before retry_interval_s
    j.conn.execute("PRAGMA max_page_count=1073741823")
    assert j.flush() is True
    assert j.status.ok and [s.ok for s in seen] == [False, True]
    assert notes(j, cid) == ["before"] + [f"q{i}" + "y" * 3000 for i in range(20)] + ["not yet due"]
    assert j.verify(cid).ok


def test_bounded_queue_refuses_stream_first_and_records_the_loss(tmp_path):
    import numpy as np

    from app.record import entries as E

    clock, seen = Clock(), []
    j = Journal(tmp_path / "j.db", clock=clock, on_status=seen.append, max_queue_bytes=60_000)
    cid = j.open_case(CASE)
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")
    rng = np.random.default_rng(0)
    block = E.emg_block(0.0, 0, 20000, rng.normal(0, 5, (2, 4000)))  # ~15 kB compressed
    results = [j.append(cid, "emg_block", *block) for _ in range(4)]
    assert None in results  # the stream is refused once the queue is half full
    kept_notes = [j.append(cid, "note", {"text": f"n{i}" + "z" * 1000}) for i in range(20)]
    assert all(s is not None for s in kept_notes)  # clinical entries still have room
    refused = [j.append(cid, "note", {"text": "r" * 5000}) for _ in range(10)]
    assert None in refused and j.status.dropped > 0
    j.conn.execute("PRAGMA max_page_count=1073741823")
    assert j.flush()
    rec = [e.payload for e in j.entries(cid, kinds=["storage"])][-1]
    assert rec["event"] == "recovered" and rec["dropped"]["emg_block"] >= 1 and rec["dropped"]["note"] >= 1
    assert j.verify(cid).ok  # refused entries never got a seq: the chain has no hole


def test_read_only_storage_mid_case(tmp_path):
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("making an open file read-only needs root and chattr")
    clock, seen = Clock(), []
    path = tmp_path / "j.db"
    j = Journal(path, clock=clock, on_status=seen.append)
    cid = j.open_case(CASE)
    j.append(cid, "note", {"text": "before"})
    files = [str(path), str(path) + "-wal"]
    r = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"this file system cannot make files immutable ({r.stderr.strip()})")
    try:
        for i in range(5):
            assert j.append(cid, "note", {"text": f"ro{i}"}) is not None
        assert not j.status.ok and j.status.problem == "read_only"
        assert str(path) in seen[0].message
    finally:
        subprocess.run(["chattr", "-i", *files], capture_output=True)
    clock.t += 2
    assert j.flush()
    assert notes(j, cid) == ["before"] + [f"ro{i}" for i in range(5)]
    assert j.verify(cid).ok
    j.close()


def test_read_only_at_start_is_a_clear_error(tmp_path):
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr")
    path = tmp_path / "j.db"
    with Journal(path) as j:
        j.open_case(CASE)
    r = subprocess.run(["chattr", "+i", str(tmp_path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make the folder immutable ({r.stderr.strip()})")
    try:
        with pytest.raises(StorageError) as err:
            Journal(tmp_path / "new" / "j.db")
        assert "new" in str(err.value) and err.value.problem == "read_only"
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path)], capture_output=True)


def test_corrupt_file_is_refused_at_open_naming_the_file(tmp_path):
    path = tmp_path / "journal.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StorageError) as err:
        Journal(path)
    assert str(path) in str(err.value) and "corrupt" in str(err.value) and err.value.problem == "corrupt"
    assert path.stat().st_size == 8192  # left as it was for investigation


def test_sqlite_file_that_is_not_a_journal_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE journal_meta (key TEXT PRIMARY KEY, value TEXT)")
    c.execute("INSERT INTO journal_meta VALUES ('format', 'something-else/9')")
    c.commit()
    c.close()
    with pytest.raises(StorageError, match="unknown journal format"):
        Journal(path)


def test_journal_deleted_while_open_is_rescued(tmp_path):
    seen = []
    path = tmp_path / "j.db"
    j = Journal(path, on_status=seen.append)
    cid = j.open_case(CASE)
    for i in range(30):
        j.append(cid, "note", {"text": f"n{i}"})
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"j.db{suffix}").unlink(missing_ok=True)
    assert j.append(cid, "note", {"text": "after delete"}) is not None
    assert path.exists()
    assert any(s.problem == "missing" and "rescued" in s.message for s in seen)
    j.close()
    with Journal(path, readonly=True) as r:
        assert notes(r, cid) == [f"n{i}" for i in range(30)] + ["after delete"]
        assert [e.payload["event"] for e in r.entries(cid, kinds=["storage"])] == ["rescued"]
        assert r.verify(cid).ok


def test_journal_replaced_while_open_is_rescued_beside_it(tmp_path):
    seen = []
    path = tmp_path / "j.db"
    j = Journal(path, on_status=seen.append)
    cid = j.open_case(CASE)
    for i in range(5):
        j.append(cid, "note", {"text": f"n{i}"})
    intruder = tmp_path / "intruder"
    intruder.write_bytes(b"not ours")
    os.replace(intruder, path)
    assert j.append(cid, "note", {"text": "after replace"}) is not None
    assert j.path != path and j.path.name.startswith("j.db.rescued-")
    assert path.read_bytes() == b"not ours"  # the other file is left alone
    assert any(s.problem == "replaced" and str(j.path) in s.message for s in seen)
    assert notes(j, cid) == [f"n{i}" for i in range(5)] + ["after replace"]
    assert j.verify(cid).ok
    j.close()
