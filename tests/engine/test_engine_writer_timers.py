"""The inline journal writer's timers: the engine pumps it on every input, and it does nothing
between tickets until something is due. What is due must still happen on time: the disk
check every ``check_s``, the retry of a failing journal every ``retry_s``, a new journal
every ``reopen_s`` when there is none."""

from __future__ import annotations

import collections

from app.engine.writer import JournalWriter, Reserve
from app.record.journal import Journal
from firmware_bridge.clock import ManualClock


class _Reserve(Reserve):
    """A reserve whose free space the test sets (and counts how often it is asked)."""

    def __init__(self, path, size: int, free: int) -> None:
        super().__init__(path, size)
        self.free = free
        self.asked = 0

    @property
    def present(self) -> bool:
        return True

    def free_bytes(self) -> int:
        self.asked += 1
        return self.free

    def ensure(self, margin: int = 0) -> bool:
        return True


def test_the_disk_is_checked_every_check_s_between_tickets(tmp_path):
    clock = ManualClock()
    reserve = _Reserve(tmp_path / "reserve", size=1000, free=10**9)
    writer = JournalWriter(Journal(tmp_path / "case.db"), now=clock.now, reserve=reserve,
                           low_free_bytes=10**6, check_s=10.0)
    writer.pump()
    assert reserve.asked == 1 and writer.state().level == 0
    reserve.free = 10  # the disk fills while nothing is written
    for _ in range(99):  # inputs within the next check_s: nothing to do
        clock.advance(0.1)
        writer.pump()
    assert reserve.asked == 1 and writer.state().level == 0
    clock.advance(0.11)
    writer.pump()
    assert reserve.asked == 2 and writer.state().level == 1
    reserve.free = 10**9
    clock.advance(10.0)
    writer.pump()
    assert reserve.asked == 3 and writer.state().level == 0


class _Failing(Journal):
    """A journal whose writes fail until ``healed``; counts the retries (``flush``)."""

    healed = False
    flushes = 0

    def flush(self) -> bool:
        self.flushes += 1
        return self.healed


def test_a_failing_journal_is_retried_every_retry_s_without_new_tickets(tmp_path, monkeypatch):
    clock = ManualClock()
    j = _Failing(tmp_path / "case.db")
    writer = JournalWriter(j, now=clock.now, retry_s=1.0)
    writer.submit("open", "c1", [("case_opened", {"patient_id": "P"}, None, 0.0)])
    status = collections.namedtuple("S", "ok problem message")(False, "io", "the disk is not answering")
    writer._begin_failure(status)  # as a failed write starts it
    assert writer.state().state != "recording"
    clock.advance(0.5)
    writer.pump()
    assert j.flushes == 0
    clock.advance(0.6)
    writer.pump()
    assert j.flushes == 1 and writer.state().state != "recording"
    j.healed = True
    monkeypatch.setattr(type(j), "status", property(lambda self: collections.namedtuple("S", "ok message")(True, "")))
    clock.advance(1.0)
    writer.pump()
    assert j.flushes == 2 and writer.state().state == "recording"


def test_without_a_journal_a_new_one_is_tried_every_reopen_s(tmp_path):
    clock = ManualClock()
    tries = []

    def opener():
        tries.append(clock.now())
        return Journal(tmp_path / "case.db") if len(tries) >= 2 else None

    writer = JournalWriter(None, now=clock.now, opener=opener, reopen_s=30.0)
    writer.pump()
    assert len(tries) == 1 and writer.journal is None
    clock.advance(29.0)
    writer.pump()
    assert len(tries) == 1
    clock.advance(1.5)
    writer.pump()
    assert len(tries) == 2 and writer.journal is not None
