"""Stimulus epochs stored once: while the free-running EMG is journaled in full, a stimulus
entry says where its epoch lies in the stream (``waveform_in_stream``) instead of storing the
same samples again; the report's loader gives back exactly the board's epoch. When the stream
does not keep them (storage nearly full, a gap) the epoch gets its own entry, never lost."""

from __future__ import annotations

import numpy as np

from app.record.export import waveform_loader
from app.record.journal import Journal
from engine_testkit import stepped


def _recording(tmp_path, **options):
    """A stepped system with its journal, and the epochs the engine received by stimulus index."""
    journal = Journal(tmp_path / "journal.db")
    s = stepped(journal=journal, **options)
    mon = s.monitor
    sent: dict[int, np.ndarray] = {}
    epoch = mon.pipeline.epoch

    def keep(e):
        epoch(e)
        if mon.case is not None:
            sent[mon.case.stim_index - 1] = e.microvolts()

    mon.pipeline.epoch = keep
    return s, journal, sent


def _case(tmp_path):
    s, journal, sent = _recording(tmp_path)
    s.run_for(0.5)
    case_id = s.must("case.start", patient_id="P1", planned_sides=["L"])["case_id"]
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=10.0)
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("stim.output", output="probe", on=True)
    return s, journal, case_id, sent


def _loaded_equal(journal, case_id, sent) -> int:
    load = waveform_loader(journal, case_id)
    n = 0
    for e in journal.entries(case_id, kinds=["stimulus"], blobs=False):
        got = load(e.seq)
        assert got is not None, e.payload
        samples, rate, pre, labels = got
        want = sent[e.payload["index"]]
        assert samples.shape == want.shape and rate == 20000.0 and pre == 200 and labels == ["EMG L", "EMG R"]
        assert np.max(np.abs(samples - want)) <= 0.05 + 1e-9  # lossless to the stored 0.1 uV
        n += 1
    return n


def test_epochs_are_samples_of_the_journaled_stream_and_load_exactly(tmp_path):
    s, journal, case_id, sent = _case(tmp_path)
    s.run_for(4.0)
    s.must("case.close")
    stims = list(journal.entries(case_id, kinds=["stimulus"], blobs=True))
    assert len(stims) >= 30
    assert all("waveform_in_stream" in e.payload and e.blob is None and "waveform" not in e.payload for e in stims)
    assert not list(journal.entries(case_id, kinds=["stimulus_waveform"], blobs=False))
    assert _loaded_equal(journal, case_id, sent) == len(stims)
    assert journal.verify(case_id).ok


def test_an_epoch_whose_stream_is_left_out_for_space_gets_its_own_entry(tmp_path):
    s, journal, case_id, sent = _case(tmp_path)
    s.run_for(2.3)  # epochs referred to in the chunk being filled ...
    writer = s.monitor.ledger.writer
    with writer._lock:
        writer._level = 1  # ... when the storage turns nearly full: the raw EMG is left out from now
    s.run_for(2.0)
    s.must("case.close")
    own = list(journal.entries(case_id, kinds=["stimulus_waveform"], blobs=True))
    assert own and all(e.blob is not None for e in own)  # the writer wrote the epochs instead of the EMG
    stims = list(journal.entries(case_id, kinds=["stimulus"], blobs=True))
    later = [e for e in stims if e.blob is not None]
    assert later  # after the change, epochs keep their own waveform at once
    assert _loaded_equal(journal, case_id, sent) == len(stims)  # every epoch loads, none lost
    assert journal.verify(case_id).ok


def test_no_stream_journaled_keeps_every_waveform_in_its_entry(tmp_path):
    from app.engine.context import EngineOptions

    journal = Journal(tmp_path / "journal.db")
    s = stepped(journal=journal, options=EngineOptions(journal_emg=False))
    s.run_for(0.5)
    case_id = s.must("case.start", patient_id="P1", planned_sides=["L"])["case_id"]
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=10.0)
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("stim.output", output="probe", on=True)
    s.run_for(2.0)
    s.must("case.close")
    stims = list(journal.entries(case_id, kinds=["stimulus"], blobs=True))
    assert stims and all(e.blob is not None and "waveform_in_stream" not in e.payload for e in stims)


def test_a_stimulus_rate_locked_to_the_chunk_length_still_stores_each_epoch_once(tmp_path):
    # vagal stimulation at 1 Hz against one-second EMG entries: each epoch arrives after its
    # samples, at the same place of every chunk; the chunk keeps its newest samples for it
    s, journal, sent = _recording(tmp_path, step_s=0.1, tick_s=0.1)  # the EMG of an epoch comes before it
    s.run_for(1.0)
    case_id = s.must("case.start", patient_id="P1", planned_sides=["L"])["case_id"]
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(12.0)
    s.must("case.close")
    stims = list(journal.entries(case_id, kinds=["stimulus"], blobs=True))
    assert len(stims) >= 10
    inside = [e for e in stims if "waveform_in_stream" in e.payload and e.blob is None]
    assert len(inside) >= len(stims) - 1, [e.payload.get("index") for e in stims if e not in inside]
    assert not list(journal.entries(case_id, kinds=["stimulus_waveform"], blobs=False))
    blocks = list(journal.entries(case_id, kinds=["emg_block"], blobs=False))
    seconds = [b.payload["waveform"]["n"] / b.payload["sample_rate_hz"] for b in blocks]
    assert all(0.9 <= x <= 1.5 for x in seconds[:-1]), seconds  # entries of about emg_chunk_s
    firsts = [b.payload["first_sample"] for b in blocks]
    ns = [b.payload["waveform"]["n"] for b in blocks]
    assert all(a + n == b for a, n, b in zip(firsts, ns, firsts[1:], strict=False))  # contiguous, no overlap
    assert _loaded_equal(journal, case_id, sent) == len(stims)
    assert journal.verify(case_id).ok
