"""Batch append: several entries of a case in one transaction (one durable sync), all or nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, UTC

import pytest

from app.record import Journal

CASE = {"patient_id": "PSN-0042", "planned_sides": ["L", "R"]}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


class Wall:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 4, 8, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(milliseconds=1)
        return self.t


def items(n: int, tag: str = "b") -> list[tuple]:
    out: list[tuple] = []
    for i in range(n):
        if i % 3 == 0:
            out.append(("note", {"text": f"{tag}{i}"}))
        elif i % 3 == 1:
            out.append(("note", {"text": f"{tag}{i}"}, None, 5.0 + i))
        else:
            out.append(("operator", {"action": "note.add", "who": "test", "detail": {"i": i}}, None))
    return out


def rows(j: Journal, cid: str) -> list[tuple]:
    return [(e.seq, e.kind, e.t_s, e.wall, e.payload, e.blob, e.prev_hash, e.hash) for e in j.entries(cid)]


def test_a_batch_is_the_same_chain_as_one_append_after_the_other(tmp_path):
    clock_a, clock_b = Clock(), Clock()
    a = Journal(tmp_path / "a.db", clock=clock_a, wall_clock=Wall())
    b = Journal(tmp_path / "b.db", clock=clock_b, wall_clock=Wall())
    ca = a.open_case({**CASE, "case_id": "C1"})
    cb = b.open_case({**CASE, "case_id": "C1"})
    batch = items(7)
    clock_a.t = clock_b.t = 103.5
    seqs_a = [a.append(ca, *item) for item in batch]
    seqs_b = b.append_many(cb, batch)
    assert seqs_a == seqs_b == list(range(1, 8))
    assert rows(a, ca) == rows(b, cb)  # same seqs, times, payloads and hashes
    assert b.append(cb, "note", {"text": "after"}) == 8
    assert b.append_many(cb, []) == []
    assert b.verify(cb).ok
    a.close()
    b.close()


def test_one_transaction_per_batch(tmp_path):
    j = Journal(tmp_path / "j.db")
    cid = j.open_case(CASE)
    statements: list[str] = []
    j.conn.set_trace_callback(statements.append)
    j.append_many(cid, items(5))
    j.conn.set_trace_callback(None)
    assert sum(s.strip().upper() == "COMMIT" for s in statements) == 1
    assert sum(s.strip().upper().startswith("BEGIN") for s in statements) == 1
    j.close()


def test_an_invalid_entry_refuses_the_whole_batch(tmp_path):
    j = Journal(tmp_path / "j.db")
    cid = j.open_case(CASE)
    with pytest.raises(ValueError):
        j.append_many(cid, [("note", {"text": "fine"}), ("stimulus", {"nonsense": 1}), ("note", {"text": "x"})])
    with pytest.raises(ValueError, match="t_s"):
        j.append_many(cid, [("note", {"text": "fine"}), ("note", {"text": "x"}, None, float("nan"))])
    with pytest.raises(ValueError, match="kind, payload"):
        j.append_many(cid, [("note",)])
    assert [e.kind for e in j.entries(cid)] == ["case_opened"]
    assert j.append(cid, "note", {"text": "next"}) == 1  # no hole in the chain
    assert j.verify(cid).ok
    j.close()


def test_a_batch_while_storage_fails_is_queued_whole_and_written_in_order(tmp_path):
    clock, seen = Clock(), []
    j = Journal(tmp_path / "j.db", clock=clock, on_status=seen.append)
    cid = j.open_case(CASE)
    j.append(cid, "note", {"text": "before"})
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: SQLITE_FULL
    big = [("note", {"text": f"q{i}" + "y" * 3000}) for i in range(4)]
    seqs = j.append_many(cid, big)
    assert None not in seqs and seqs == sorted(seqs)
    assert not j.status.ok and j.status.problem == "disk_full" and j.status.queued == 5  # "problem" + the batch
    j.conn.execute("PRAGMA max_page_count=1073741823")
    assert j.flush()
    texts = [e.payload.get("text") or e.payload.get("event") for e in j.entries(cid) if e.kind in ("note", "storage")]
    assert texts == ["before", "problem"] + [f"q{i}" + "y" * 3000 for i in range(4)] + ["recovered"]
    assert j.verify(cid).ok
    j.close()


def test_a_batch_that_does_not_fit_the_queue_is_refused_whole(tmp_path):
    clock = Clock()
    j = Journal(tmp_path / "j.db", clock=clock, max_queue_bytes=20_000)
    cid = j.open_case(CASE)
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")
    assert None not in j.append_many(cid, [("note", {"text": "a" * 4000}) for _ in range(3)])
    queued = j.status.queued
    refused = j.append_many(cid, [("note", {"text": f"r{i}" + "b" * 4000}) for i in range(3)])
    assert refused == [None, None, None]
    assert j.status.queued == queued and j.status.dropped == 3  # nothing of it was queued
    assert j.append(cid, "note", {"text": "small"}) is not None  # what fits still goes in
    j.conn.execute("PRAGMA max_page_count=1073741823")
    assert j.flush()
    texts = [e.payload["text"] for e in j.entries(cid, kinds=["note"])]
    assert texts == ["a" * 4000] * 3 + ["small"]
    rec = [e.payload for e in j.entries(cid, kinds=["storage"])][-1]
    assert rec["event"] == "recovered" and rec["dropped"] == {"note": 3}
    assert j.verify(cid).ok  # refused entries never got a seq
    j.close()


CHILD = r"""
import os, sys
import numpy as np
from app.record import Journal
from app.record import entries as E
path = sys.argv[1]
j = Journal(path)
cid = j.find_open_case()
if cid is None:
    cid = j.open_case({"patient_id": "PSN-BATCH", "planned_sides": ["L"]})
else:
    j.resume_case(cid)
print("CASE", cid, flush=True)
rng = np.random.default_rng(os.getpid())
pid = os.getpid()
n = 0
while True:
    n += 1
    k = int(rng.integers(2, 7))
    batch = []
    for i in range(k):
        if i == 0 and n % 4 == 0:
            payload, blob = E.emg_block(float(n), n * 20000, 20000, rng.normal(0, 5, (2, 4000)))
            payload["marker"] = f"{pid}-{n}-{i}-{k}"
            batch.append(("emg_block", payload, blob))
        else:
            batch.append(("note", {"text": f"{pid}-{n}-{i}-{k}"}))
    seqs = j.append_many(cid, batch)
    print("OK", ",".join(str(s) for s in seqs), flush=True)
"""


def _run_and_kill(path, rng: random.Random) -> tuple[str, set[int]]:
    err = open(path.parent / "child-stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, stderr=err, text=True)
    committed: set[int] = set()
    case_id = ""
    target = rng.randint(5, 60)
    deadline = time.monotonic() + 60
    try:
        batches = 0
        while time.monotonic() < deadline and batches < target:
            line = proc.stdout.readline()
            if not line:
                break
            parts = line.split()
            if parts[0] == "CASE":
                case_id = parts[1]
            elif parts[0] == "OK":
                committed.update(int(s) for s in parts[1].split(","))
                batches += 1
        # a real wait on purpose: a random 0-10 ms lands the kill somewhere inside the
        # child's next batch (the assertions hold wherever it lands)
        time.sleep(rng.uniform(0, 0.01))
        os.kill(proc.pid, signal.SIGKILL)
        # (the kill can cut the last line short: only whole lines are reports)
        for line in proc.stdout:
            parts = line.split()
            if line.endswith("\n") and len(parts) == 2 and parts[0] == "OK":
                committed.update(int(s) for s in parts[1].split(","))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        err.close()
    assert proc.returncode == -signal.SIGKILL, (path.parent / "child-stderr.txt").read_text()
    return case_id, committed


def test_kill_9_leaves_each_batch_whole_or_absent(tmp_path):
    path = tmp_path / "journal.db"
    rng = random.Random(20260305)
    committed: set[int] = set()
    for _round in range(4):
        case_id, got = _run_and_kill(path, rng)
        assert got, "the child committed nothing before it was killed"
        committed |= got
        with Journal(path, readonly=True) as j:
            assert j.find_open_case() == case_id
            groups: dict[str, list[tuple[int, int, int]]] = {}
            seqs = set()
            for e in j.entries(case_id, kinds=["note", "emg_block"], blobs=False):
                marker = e.payload.get("text") or e.payload.get("marker")
                pid, n, i, k = marker.split("-")
                groups.setdefault(f"{pid}-{n}", []).append((e.seq, int(i), int(k)))
                seqs.add(e.seq)
            assert committed <= seqs, f"committed entries lost after kill -9: {sorted(committed - seqs)[:5]}"
            for name, members in groups.items():
                k = members[0][2]
                assert sorted(i for _s, i, _k in members) == list(range(k)), f"batch {name} is not whole: {members}"
                first = min(s for s, _i, _k in members)
                assert sorted(s for s, _i, _k in members) == list(range(first, first + k)), name
            result = j.verify(case_id)
            assert result.ok, result.describe()
