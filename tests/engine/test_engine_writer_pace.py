"""The writer thread's pace: it begins a write at most every ``pace_s``.

A ticket after a quiet spell is written at once; tickets that come within ``pace_s`` of the
last write wait for the rest of it and go to the disk together, in one transaction with one
sync, in the order handed over; closing the writer does not wait for the pace. (The pace
keeps a fast ticket stream from waking the thread, and taking the engine loop's interpreter
lock, once per ticket; ``bench/engine.py`` measures what that gives.)"""

from __future__ import annotations

from app.engine.writer import DURABLE, PENDING, JournalWriter
from app.record.journal import Journal
from app.record.verify import verify_journal
from test_engine_writer_group import CASE, Spy, _note
from waiting import wait_until

LONG_PACE_S = 30.0  # far longer than any wait below: a paced ticket stays pending


def _started(j: Journal, pace_s: float) -> JournalWriter:
    writer = JournalWriter(j, threaded=True, sync_s=0.0, pace_s=pace_s)
    writer.start()
    return writer


def test_the_first_ticket_is_written_at_once_and_those_right_after_it_wait_together(tmp_path):
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _started(j, LONG_PACE_S)
    opened = writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    assert wait_until(lambda: writer.outcome(opened) == DURABLE)  # not held for the 30 s pace
    burst = [writer.submit("append", "c1", [_note(f"note {i}", 1.0 + i)]) for i in range(8)]
    assert [writer.outcome(t) for t in burst] == [PENDING] * 8  # within the pace of the open
    assert writer.state().queued == 8
    before = len(spy.commits)
    assert writer.close(timeout_s=10.0)  # closing writes them at once, not after the pace
    assert [writer.outcome(t) for t in burst] == [DURABLE] * 8
    assert spy.commits[before:] == [(["note"] * 8, True)]  # one transaction, one sync
    assert [e.payload["text"] for e in j.entries("c1", kinds=["note"])] == [f"note {i}" for i in range(8)]
    assert verify_journal(j).ok


def test_after_the_pace_the_waiting_tickets_are_written_without_being_asked(tmp_path):
    j = Journal(tmp_path / "case.db")
    spy = Spy(j)
    writer = _started(j, 0.2)
    opened = writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    assert wait_until(lambda: writer.outcome(opened) == DURABLE)
    tickets = [writer.submit("append", "c1", [_note(f"note {i}", 1.0 + i)]) for i in range(5)]
    assert wait_until(lambda: all(writer.outcome(t) == DURABLE for t in tickets))
    # written by the thread alone (the writer is still open), in at most two transactions:
    # those handed over within the pace of the open together (a machine that held this test
    # off the CPU for the whole pace may have let the thread write the first on its own)
    notes = [c for c in spy.commits if "note" in c[0]]
    assert 1 <= len(notes) <= 2 and sum(len(k) for k, _ in notes) == 5
    assert writer.close(timeout_s=10.0)
    assert verify_journal(j).ok

