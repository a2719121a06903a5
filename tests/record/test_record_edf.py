"""EDF+ export: what goes into the recording, and the file in an independent reader."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from app.model import Measurement, Side, Site, Source, Step, Stimulus
from app.record import Journal
from app.record import entries as E
from app.record.edf_export import case_recording
from app.record.synthetic import response


def test_stream_recording_places_stimuli_on_their_responses(synthetic_journal):
    path, cid = synthetic_journal
    with Journal(path, readonly=True) as j:
        rec = case_recording(j, cid)
    assert rec["mode"] == "stream" and rec["sample_rate_hz"] == 20000.0
    assert set(rec["signals"]) == {"EMG L", "EMG R"}
    n = len(rec["signals"]["EMG L"])
    assert n == 60 * 20000  # 60 s of stream stored
    assert rec["patient_code"] == "PSN-2026-0042"
    assert rec["stimuli"], "stimuli inside the stored stream"
    fs = rec["sample_rate_hz"]
    for s in rec["stimuli"][:40]:
        assert 0 <= s.t_s < n / fs
        if s.source is Source.APS:
            i = int(round(s.t_s * fs))
            seg = rec["signals"][s.side.channel][i + 40:i + 400]  # 2-20 ms after the stimulus
            assert np.ptp(seg) > 200, "a response is in the stream where the STIM annotation says"
    texts = [a[2] for a in rec["annotations"]]
    assert texts[0].startswith("LNM start case_t_s=700.0000")
    assert any(t.startswith("LNM ") and "outside the stored EMG stream" in t for t in texts)


def test_epochs_only_recording_when_no_stream_was_stored(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path, durable=False) as j:
        cid = j.open_case({"patient_id": "PSN-EP", "planned_sides": ["L"]})
        for i, amp in enumerate((600.0, 0.0, 550.0)):
            stim = Stimulus(i, 10.0 + 7 * i, Site.VAGUS, Side.L, Source.PROBE, 1.0, 0.99, 100, Step.V1)
            m = Measurement(stim, "EMG L", True, None, amp > 100, amp, 7.9 if amp else None, None)
            epoch = np.zeros((2, 1200))
            epoch[0] += response(amp, 7.9) if amp else 0.0
            j.append(cid, "stimulus", *E.stimulus(m, epoch, 20000, 200), t_s=stim.t_s)
    with Journal(path, readonly=True) as j:
        rec = case_recording(j, cid)
    assert rec["mode"] == "epochs"
    assert len(rec["signals"]["EMG L"]) == 3 * 1200
    assert [round(s.t_s, 4) for s in rec["stimuli"]] == [0.01, 0.07, 0.13]
    assert np.ptp(rec["signals"]["EMG L"][1200:2400]) < 1.0  # the silent epoch stays silent
    assert np.ptp(rec["signals"]["EMG L"][:1200]) == pytest.approx(600, rel=0.05)
    assert any("epochs-only" in a[2] for a in rec["annotations"])
    assert any(a[2] == "LNM epoch case_t_s=24.0000" for a in rec["annotations"])


EDF_WRITER = importlib.util.find_spec("app.analysis.edf") is not None


@pytest.mark.skipif(not EDF_WRITER, reason="the EDF+ writer app.analysis.edf is not in this build yet")
def test_edf_opens_in_pyedflib_with_labels_and_annotations(synthetic_journal, tmp_path):
    import pyedflib

    from app.cli import main

    path, cid = synthetic_journal
    out = tmp_path / "case.edf"
    assert main(["report", cid, "--journal", str(path), "--edf", str(out)]) == 0
    with Journal(path, readonly=True) as j:
        rec = case_recording(j, cid)
    f = pyedflib.EdfReader(str(out))
    try:
        labels = f.getSignalLabels()
        assert set(labels) >= {"EMG L", "EMG R"}
        i = labels.index("EMG L")
        assert f.getSampleFrequency(i) == 20000
        assert f.getPhysicalDimension(i) == "uV"
        onsets, _durations, texts = f.readAnnotations()
        stims = [(o, t) for o, t in zip(onsets, texts, strict=True) if t.startswith("STIM ")]
        assert len(stims) == len(rec["stimuli"])
        first = rec["stimuli"][0]
        assert stims[0][0] == pytest.approx(first.t_s, abs=1e-4)
        assert f"site={first.site.value}" in stims[0][1] and f"side={first.side.value}" in stims[0][1]
        sig = f.readSignal(i, 0, 20000)
        assert np.max(np.abs(sig - rec["signals"]["EMG L"][:20000])) < 5.0
    finally:
        f.close()
