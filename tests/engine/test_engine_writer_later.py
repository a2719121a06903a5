"""Raw EMG encoded by the journal writer, not on the engine loop (``LaterEntry``).

The engine hands a full chunk of free-running EMG to the writer as samples; the writer makes
the entry (lossless encoding, about a millisecond per second of signal) when it writes it,
on its own thread in the live engine. What is written is the same entry as before; one the
writer leaves out for space is never encoded; one that cannot be made is refused and said
so, and the tickets after it are written."""

from __future__ import annotations

import functools
import logging
import threading

import numpy as np

from app.engine.core import EngineOptions
from app.engine.seams import LaterEntry
from app.engine.stepped import SteppedSystem
from app.engine.writer import DURABLE, REFUSED, JournalWriter
from app.record import entries as E
from app.record import waveform as W
from app.record.journal import Journal
from app.settings import Settings
from firmware_bridge.clock import ManualClock

CASE = {"patient_id": "P-1", "planned_sides": ["L"]}


def _samples(seed: int, n: int = 2000) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 4.0, (2, n))


def _later(t_s: float, samples: np.ndarray, made_on: list[str] | None = None) -> LaterEntry:
    def make():
        if made_on is not None:
            made_on.append(threading.current_thread().name)
        return E.emg_block(t_s, int(t_s * 2000), 2000.0, samples)

    return LaterEntry("emg_block", t_s, int(samples.nbytes), make)


def test_the_threaded_writer_encodes_the_raw_emg_on_its_own_thread(tmp_path):
    j = Journal(tmp_path / "case.db")
    writer = JournalWriter(j, threaded=True, sync_s=0.0)
    writer.start()
    try:
        writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
        made_on: list[str] = []
        samples = _samples(1)
        ticket = writer.submit("append", "c1", [_later(1.0, samples, made_on)])
        note = writer.submit("append", "c1", [("note", {"text": "tube checked"}, None, 1.5)])
    finally:
        assert writer.close(timeout_s=30.0)  # everything handed over is written first
    assert writer.outcome(ticket) == DURABLE and writer.outcome(note) == DURABLE
    assert made_on == ["lnm-journal-writer"]
    (entry,) = j.entries("c1", kinds=["emg_block"])
    assert entry.payload["t_s"] == 1.0 and entry.payload["first_sample"] == 2000
    assert entry.payload["waveform"]["encoding"] == W.encode(samples)[0]["encoding"]
    np.testing.assert_allclose(W.decode(entry.payload["waveform"], entry.blob), samples, atol=0.05 + 1e-9)
    assert [e.kind for e in j.entries("c1")][-2:] == ["emg_block", "note"]  # in the order handed over


def test_an_entry_that_cannot_be_made_is_refused_and_the_next_one_is_written(tmp_path, caplog):
    j = Journal(tmp_path / "case.db")
    writer = JournalWriter(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])

    def wrong():
        return {"t_s": 1.0}, None  # not an emg_block payload: a bug, caught when made

    with caplog.at_level(logging.ERROR, logger="lnm.engine"):
        bad = writer.submit("append", "c1", [LaterEntry("emg_block", 1.0, 4000, wrong)])
    good = writer.submit("append", "c1", [_later(2.0, _samples(2))])
    assert writer.outcome(bad) == REFUSED
    assert "emg_block" in caplog.text and "not written" in caplog.text
    assert writer.state().not_recorded.get("emg_block (error)") == 1
    writer.close()
    assert writer.outcome(good) == DURABLE
    assert [e.payload["t_s"] for e in j.entries("c1", kinds=["emg_block"])] == [2.0]


def test_a_library_error_while_encoding_refuses_the_entry_not_the_writer(tmp_path, caplog):
    j = Journal(tmp_path / "case.db")
    writer = JournalWriter(j)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])

    def broken():
        raise RuntimeError("libsndfile: internal error")

    with caplog.at_level(logging.ERROR, logger="lnm.engine"):
        bad = writer.submit("append", "c1", [LaterEntry("emg_block", 1.0, 4000, broken)])
    assert writer.outcome(bad) == REFUSED and "libsndfile: internal error" in caplog.text
    good = writer.submit("append", "c1", [_later(2.0, _samples(2))])
    writer.close()
    assert writer.outcome(good) == DURABLE


def test_while_entries_wait_raw_emg_is_kept_encoded(tmp_path):
    """A backlog (a slow or stalled disk) holds raw EMG as its compact encoding, not as samples
    ten times larger: past ``COMPACT_BACKLOG_BYTES`` waiting, it is encoded when handed over."""
    from app.engine.writer import COMPACT_BACKLOG_BYTES

    j = Journal(tmp_path / "case.db")
    writer = JournalWriter(j, threaded=True)  # (not started: what is handed over waits)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    made_on: list[str] = []
    writer.submit("append", "c1", [_later(1.0, _samples(1), made_on)])
    assert made_on == []  # little waits: left to the writer
    waiting = []
    t = 2.0
    while writer.state().queued_bytes <= COMPACT_BACKLOG_BYTES:
        waiting.append(_samples(int(t), 20000))
        writer.submit("append", "c1", [_later(t, waiting[-1], made_on)])
        t += 1.0
    assert made_on == []
    writer.submit("append", "c1", [_later(t, _samples(9), made_on)])
    assert made_on == [threading.current_thread().name]  # encoded at once, on the caller's thread
    writer.start()
    assert writer.close(timeout_s=30.0)
    assert len(made_on) == len(waiting) + 2  # each made once: the last one already
    assert len(list(j.entries("c1", kinds=["emg_block"]))) == len(waiting) + 2


def test_raw_emg_left_out_for_space_is_never_encoded_and_its_epochs_are_kept(tmp_path):
    clock = ManualClock()
    j = Journal(tmp_path / "case.db")
    # a threaded writer not yet started: what is handed over waits in the backlog
    writer = JournalWriter(j, threaded=True, now=clock.now, max_backlog_bytes=10_000)
    writer.submit("open", "c1", [("case_opened", CASE, None, 0.0)])
    for i in range(12):  # essentials beyond half the backlog: raw EMG is left out from now on
        writer.submit("append", "c1", [("note", {"text": f"note {i}"}, None, 0.1 * i)])
    calls: list[float] = []

    def never(t):
        calls.append(t)
        return E.emg_block(t, 0, 2000.0, _samples(3))

    payload, blob = E.stimulus_waveform(0, 1.2, _samples(4, 200), 2000.0, 20, ["L", "R"])
    fallback = [("stimulus_waveform", payload, blob, 1.2)]  # an epoch that lived in that EMG
    writer.submit("append", "c1", [LaterEntry("emg_block", 1.5, 4000, functools.partial(never, 1.5))],
                  fallback=fallback)
    writer.start()
    assert writer.close(timeout_s=30.0)
    assert calls == []
    assert writer.state().not_recorded.get("emg_block") == 1
    kinds = [e.kind for e in j.entries("c1")]
    assert kinds == ["case_opened", *["note"] * 12, "stimulus_waveform"]


def test_the_engine_loop_hands_raw_emg_to_a_threaded_writer_unencoded(tmp_path, monkeypatch):
    """The stepped engine with the live engine's threaded writer (as ``bench/engine.py`` runs
    it): every raw EMG chunk of the case is encoded on the writer's thread, and written."""
    threads: list[str] = []
    real = E.emg_block

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(E, "emg_block", spy)
    clock = ManualClock()
    j = Journal(tmp_path / "case.db")
    writer = JournalWriter(j, threaded=True, now=clock.now)
    writer.start()
    s = SteppedSystem(Settings(), seed=3, journal=j, options=EngineOptions(), step_s=0.05, tick_s=0.05,
                      clock=clock, monitor_kwargs={"writer": writer})
    s.run_for(0.5)
    s.must("case.start", patient_id="P-3", planned_sides=["L"])
    s.run_for(5.0)
    s.must("case.close")
    assert writer.close(timeout_s=30.0)
    (case,) = j.cases()
    chunks = list(j.entries(case["case_id"], kinds=["emg_block"]))
    assert len(chunks) >= 3 and len(threads) == len(chunks)
    assert set(threads) == {"lnm-journal-writer"}
    assert not writer.state().not_recorded
