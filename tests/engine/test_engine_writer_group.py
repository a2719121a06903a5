"""Group commit: the journal writer writes the ``append`` tickets of one case that wait
together in one transaction (one disk sync), in the order handed over.

A writer that falls behind (a slow SD card, the probe at 30 Hz) catches up with one sync for
all that waits instead of one per ticket. Nothing else changes: every ticket is durable or
refused as before, the entries keep their order and chain, and a ticket that cannot be
written is refused on its own while the others of its group are written."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from app.engine import writer as W
from app.engine.seams import LaterEntry
from app.engine.writer import DURABLE, REFUSED, JournalWriter
from app.record import entries as E
from app.record.journal import Journal
from app.record.verify import verify_journal

CASE = {"patient_id": "P-1", "planned_sides": ["L"]}


def _note(text: str, t_s: float) -> tuple:
    return ("note", {"text": text}, None, t_s)


def _raw(t_s: float) -> LaterEntry:
    samples = np.random.default_rng(int(t_s * 10)).normal(0.0, 4.0, (2, 2000))
    return LaterEntry("emg_block", t_s, int(samples.nbytes),
                      lambda: E.emg_block(t_s, int(t_s * 2000), 2000.0, samples))


class Spy:
    """The journal's transactions: (entries, synced) per commit."""

    def __init__(self, journal: Journal) -> None:
        self.commits: list[tuple[list[str], bool]] = []
        real = journal._write

        def write(rows, sync=True):
            real(rows, sync)
            self.commits.append(([r.kind for r in rows], sync))

        journal._write = write


def _waiting_writer(j: Journal) -> JournalWriter:
    """A threaded writer whose thread is not started yet: what is submitted waits together."""
    return JournalWriter(j, threaded=True, sync_s=0.0)


def test_the_tickets_waiting_together_are_one_transaction_in_order(tmp_path):
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _waiting_writer(j)
    opened = writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    tickets = [writer.submit("append", "c1", [_raw(1.0)]),
               writer.submit("append", "c1", [_note("tube checked", 1.2), _note("L1 done", 1.3)]),
               writer.submit("append", "c1", [_raw(2.0)]),
               writer.submit("append", "c1", [_note("V1 done", 2.5)])]
    writer.start()
    assert writer.close(timeout_s=30.0)
    assert writer.outcome(opened) == DURABLE
    assert [writer.outcome(t) for t in tickets] == [DURABLE] * 4
    group = [c for c in spy.commits if "note" in c[0]]
    assert group == [(["emg_block", "note", "note", "emg_block", "note"], True)]  # one synced commit
    kinds = [e.kind for e in j.entries("c1")]
    assert kinds[-5:] == ["emg_block", "note", "note", "emg_block", "note"]
    assert [e.payload["text"] for e in j.entries("c1", kinds=["note"])] == ["tube checked", "L1 done", "V1 done"]
    assert verify_journal(j).ok


def test_raw_emg_alone_is_grouped_without_waiting_for_the_disk_then_synced(tmp_path):
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _waiting_writer(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    tickets = [writer.submit("append", "c1", [_raw(float(s))]) for s in (1, 2, 3)]
    writer.start()
    assert writer.close(timeout_s=30.0)
    assert ([c for c in spy.commits if "emg_block" in c[0]]
            == [(["emg_block", "emg_block", "emg_block"], False)])  # raw EMG alone: no disk sync of its own
    assert [writer.outcome(t) for t in tickets] == [DURABLE] * 3  # the closing sync took it to the disk
    assert j.durable_seq("c1") == j.head_seq("c1")


def test_a_ticket_that_cannot_be_written_is_refused_alone_and_the_rest_of_its_group_written(tmp_path, caplog):
    j = Journal(tmp_path / "case.db")
    writer = _waiting_writer(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    before = writer.submit("append", "c1", [_note("before", 1.0)])
    bad = writer.submit("append", "c1", [LaterEntry("emg_block", 1.5, 4000, lambda: ({"t_s": 1.5}, None))])
    invalid = writer.submit("append", "c1", [("note", {"text": 7}, None, 1.7)])  # not a note's payload
    after = writer.submit("append", "c1", [_note("after", 2.0), _note("and after", 2.1)])
    with caplog.at_level(logging.ERROR, logger="lnm.engine"):
        writer.start()
        assert writer.close(timeout_s=30.0)
    assert writer.outcome(before) == DURABLE and writer.outcome(after) == DURABLE
    assert writer.outcome(bad) == REFUSED and writer.outcome(invalid) == REFUSED
    assert [e.payload["text"] for e in j.entries("c1", kinds=["note"])] == ["before", "after", "and after"]
    assert not list(j.entries("c1", kinds=["emg_block"]))
    assert caplog.text.count("not written") == 2
    not_recorded = writer.state().not_recorded
    assert not_recorded.get("emg_block (error)") == 1 and not_recorded.get("note (error)") == 1


def test_groups_keep_to_one_case_and_to_the_order_handed_over(tmp_path):
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _waiting_writer(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    writer.submit("open", "c2", [("case_opened", {**CASE, "patient_id": "P-2"}, None, 0.0)])
    writer.submit("append", "c1", [_note("c1 a", 1.0)])
    writer.submit("append", "c1", [_note("c1 b", 1.1)])
    writer.submit("append", "c2", [_note("c2 a", 1.2)])
    writer.submit("append", "c1", [_note("c1 c", 1.3)])
    closed = writer.submit("close", "c1", [("case_closed", {}, None, 2.0)])
    writer.submit("append", "c2", [_note("c2 b", 2.5)])
    writer.start()
    assert writer.close(timeout_s=30.0)
    assert writer.outcome(closed) == DURABLE
    notes = [c[0] for c in spy.commits if "note" in c[0]]
    assert notes == [["note", "note"], ["note"], ["note"], ["note"]]
    assert [e.payload["text"] for e in j.entries("c1", kinds=["note"])] == ["c1 a", "c1 b", "c1 c"]
    assert [e.payload["text"] for e in j.entries("c2", kinds=["note"])] == ["c2 a", "c2 b"]


def test_a_group_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "GROUP_MAX_BATCHES", 4)
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _waiting_writer(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    tickets = [writer.submit("append", "c1", [_note(f"n{i}", 1.0 + i / 10)]) for i in range(10)]
    writer.start()
    assert writer.close(timeout_s=30.0)
    assert [len(c[0]) for c in spy.commits if "note" in c[0]] == [4, 4, 2]
    assert all(writer.outcome(t) == DURABLE for t in tickets)
    assert [e.payload["text"] for e in j.entries("c1", kinds=["note"])] == [f"n{i}" for i in range(10)]


@pytest.mark.parametrize("max_bytes", [1, 3 * 1024])
def test_a_group_is_bounded_in_bytes(tmp_path, monkeypatch, max_bytes):
    monkeypatch.setattr(W, "GROUP_MAX_BYTES", max_bytes)
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _waiting_writer(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    for i in range(6):
        writer.submit("append", "c1", [_note(f"n{i}", 1.0 + i / 10)])  # about 440 bytes each (Batch.size)
    writer.start()
    assert writer.close(timeout_s=30.0)
    sizes = [len(c[0]) for c in spy.commits if "note" in c[0]]
    assert sum(sizes) == 6
    assert sizes == ([1] * 6 if max_bytes == 1 else [6])  # the first always goes, however large
