"""Raw EMG committed without waiting for the disk (``sync=False``), and synced later.

The journal commits such an entry (it is there for every reader at once) but says it is on the
disk (``durable_seq``) only once the write-ahead log was synced: by the next synced commit, or
``sync()``. The engine's writer decides what goes without a sync (raw EMG alone) and syncs it
within ``sync_s``; events and command replies never wait for that sync."""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading

import numpy as np
import pytest

from app.engine.ledger import Ledger
from app.engine.timebase import TimeBase
from app.engine.writer import JournalWriter
from app.record import entries as E
from app.record.journal import Journal
from firmware_bridge.clock import ManualClock

NOTE = {"text": "tube checked"}


def _emg(seconds: float) -> tuple[dict, bytes]:
    samples = np.random.default_rng(int(seconds)).normal(0.0, 4.0, (2, 2000))
    return E.emg_block(seconds, int(seconds * 2000), 2000.0, samples)


def _journal(tmp_path, durable: bool = True) -> Journal:
    j = Journal(tmp_path / "case.db", durable=durable)
    j.open_case({"case_id": "c1", "patient_id": "P-1", "planned_sides": ["L"]})
    return j


def _synchronous(j: Journal) -> int:
    return int(j.conn.execute("PRAGMA synchronous").fetchone()[0])  # 1 NORMAL, 2 FULL


def test_an_entry_written_without_waiting_is_committed_at_once_and_durable_after_sync(tmp_path):
    j = _journal(tmp_path)
    opened = j.durable_seq("c1")
    payload, blob = _emg(0.0)
    seq = j.append("c1", "emg_block", payload, blob, t_s=0.0, sync=False)
    assert seq == opened + 1
    assert j.unsynced and j.durable_seq("c1") == opened  # committed, not yet said to be on the disk
    assert _synchronous(j) == 1
    other = sqlite3.connect(str(j.path))  # another reader sees it committed
    assert other.execute("SELECT kind FROM entries WHERE case_id='c1' AND seq=?", (seq,)).fetchone() == ("emg_block",)
    other.close()
    assert j.sync() is True
    assert not j.unsynced and j.durable_seq("c1") == seq
    assert j.sync() is True  # nothing left: nothing to do


def test_the_next_synced_commit_takes_the_unsynced_entries_along(tmp_path):
    j = _journal(tmp_path)
    seqs = [j.append_many("c1", [("emg_block", *_emg(float(i)))], sync=False)[0] for i in range(3)]
    assert j.durable_seq("c1") < seqs[0]
    note = j.append("c1", "note", NOTE)
    assert _synchronous(j) == 2  # back to synchronous=FULL for it
    assert not j.unsynced and j.durable_seq("c1") == note > seqs[-1]


def test_closing_the_journal_syncs_what_waits(tmp_path):
    j = _journal(tmp_path)
    seq = j.append("c1", "emg_block", *_emg(0.0), t_s=0.0, sync=False)
    j.close()
    assert j.durable_seq("c1") == seq and not j.unsynced


def test_a_journal_for_synthetic_records_counts_every_commit_as_durable(tmp_path):
    j = _journal(tmp_path, durable=False)  # synchronous=NORMAL throughout: no promise to keep
    seq = j.append("c1", "emg_block", *_emg(0.0), t_s=0.0, sync=False)
    assert j.durable_seq("c1") == seq and not j.unsynced


def test_a_sync_the_file_system_refuses_keeps_the_entries_unsynced_and_says_so(tmp_path, monkeypatch, caplog):
    j = _journal(tmp_path)
    seq = j.append("c1", "emg_block", *_emg(0.0), t_s=0.0, sync=False)

    def refuse(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", refuse)
    with caplog.at_level(logging.ERROR, logger="app.record.journal"):
        assert j.sync() is False
    assert "cannot sync" in caplog.text and str(j.path) in caplog.text
    assert j.unsynced and j.durable_seq("c1") == seq - 1
    monkeypatch.undo()
    assert j.sync() is True and j.durable_seq("c1") == seq


def test_sync_falls_back_to_the_journal_file_when_the_write_ahead_log_is_gone(tmp_path, monkeypatch):
    j = _journal(tmp_path)
    seq = j.append("c1", "emg_block", *_emg(0.0), t_s=0.0, sync=False)
    opened: list[str] = []
    real_open = os.open

    def fake_open(path, flags, *args):
        if str(path).endswith("-wal"):
            raise FileNotFoundError(path)
        opened.append(str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", fake_open)
    assert j.sync() is True
    assert opened == [str(j.path)] and j.durable_seq("c1") == seq


# ----------------------------------------------------------------------------- the writer's policy


def _ledger(journal, clock):
    published: list[tuple[str, dict]] = []
    writer = JournalWriter(journal, now=clock.now)
    led = Ledger(journal, lambda stream, msg, sticky: published.append((stream, msg)), lambda s: True,
                 TimeBase(clock), collections.Counter(), events_kept=5, writer=writer)
    led.attach("c1", collections.deque(maxlen=5))
    return led, writer, published


def test_raw_emg_alone_goes_without_a_sync_and_is_synced_within_a_second(tmp_path):
    clock = ManualClock()
    j = _journal(tmp_path)
    led, writer, _ = _ledger(j, clock)
    ticket = led.write("emg_block", *_emg(0.0), t_s=0.0)
    assert j.unsynced and led.outcome(ticket) == "pending"
    clock.advance(writer.sync_s - 0.01)
    led.pump()
    assert led.outcome(ticket) == "pending" and led.recording().state == "recording"
    clock.advance(0.02)
    led.pump()
    assert not j.unsynced and led.outcome(ticket) == "durable"


def test_a_stimulus_or_an_event_is_synced_at_once_and_takes_the_emg_along(tmp_path):
    clock = ManualClock()
    j = _journal(tmp_path)
    led, _writer, _ = _ledger(j, clock)
    emg = led.write("emg_block", *_emg(0.0), t_s=0.0)
    note = led.write("note", NOTE)
    assert not j.unsynced
    assert led.outcome(note) == "durable" and led.outcome(emg) == "durable"


def test_an_event_after_raw_emg_is_published_at_once(tmp_path):
    """An event waits for the entries before it that carry something, never for the sync of the
    raw EMG written just before it."""
    clock = ManualClock()
    j = _journal(tmp_path)
    led, _writer, published = _ledger(j, clock)
    led.write("note", NOTE)
    led.write("emg_block", *_emg(0.0), t_s=0.0)
    led.event("operator", "note", "tube checked")
    assert j.unsynced
    assert [m.get("message") for s, m in published if s == "events"] == ["tube checked"]
    assert led.outcome(led.last_ticket) == "durable"  # the note: what a command's reply would wait for


def test_closing_the_writer_syncs_the_emg_that_waits(tmp_path):
    clock = ManualClock()
    j = _journal(tmp_path)
    led, writer, _ = _ledger(j, clock)
    ticket = led.write("emg_block", *_emg(0.0), t_s=0.0)
    assert writer.close() is True
    assert not j.unsynced and led.outcome(ticket) == "durable"


def test_a_threaded_writer_syncs_the_emg_by_itself_and_wakes_the_engine(tmp_path):
    j = _journal(tmp_path)
    woken: list[str] = []
    durable = threading.Event()

    def progress() -> None:  # what the live engine's loop is woken with
        if writer.outcome(ticket) == "durable":
            woken.append("durable")
            durable.set()

    writer = JournalWriter(j, threaded=True, sync_s=0.05, on_progress=progress)
    ticket = writer.submit("append", "c1", [("emg_block", *_emg(0.0), 0.0)])
    writer.start()
    try:
        assert durable.wait(10.0)
        assert woken and not j.unsynced
    finally:
        writer.close()


@pytest.mark.parametrize("kinds", [["emg_block", "note"], ["note"]])
def test_anything_but_raw_emg_in_a_ticket_is_synced_with_it(tmp_path, kinds):
    clock = ManualClock()
    j = _journal(tmp_path)
    writer = JournalWriter(j, now=clock.now)
    items = [("emg_block", *_emg(0.0), 0.0) if k == "emg_block" else (k, NOTE, None, 0.0) for k in kinds]
    ticket = writer.submit("append", "c1", items)
    assert writer.outcome(ticket) == "durable" and not j.unsynced
    assert writer.last_announced_ticket == ticket


def test_raw_emg_written_without_waiting_into_a_full_disk_is_queued_then_synced_with_the_rest(tmp_path):
    """A disk that fills between unsynced commits: nothing is lost, nothing is called durable
    before it is on the disk, and the queued entries are written synced once there is room."""
    j = _journal(tmp_path)
    first = j.append("c1", "emg_block", *_emg(0.0), t_s=0.0, sync=False)
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: SQLITE_FULL
    later = [j.append("c1", "emg_block", *_emg(float(i)), t_s=float(i), sync=False) for i in range(1, 4)]
    assert all(s is not None for s in later)
    assert j.status.problem == "disk_full"
    assert j.durable_seq("c1") < first  # the first was committed, not yet synced; the rest only queued
    j.conn.execute("PRAGMA max_page_count=1073741823")
    assert j.flush() is True
    assert j.status.ok and not j.unsynced
    assert j.durable_seq("c1") == j.head_seq("c1") >= later[-1]
    assert j.verify("c1").ok
