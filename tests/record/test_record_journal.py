"""The case journal: append, read back, hash chain, append-only, resume, validation."""

from __future__ import annotations

import itertools
import json
import sqlite3
from datetime import datetime, timedelta, UTC

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.model import InvalidReason, Measurement, Priority, RuleEvent, Side, Site, Source, Step, Stimulus, EventKind
from app.record import Journal, JournalError
from app.record import entries as E
from app.record import waveform as W
from app.record.journal import GENESIS, entry_hash


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


class Wall:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 4, 8, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


CASE = {"patient_id": "PSN-0042", "planned_sides": ["L", "R"], "surgeon": "Dr. Example",
        "procedure": "total thyroidectomy", "tube": {"type": "EMG tube", "size_mm": 7.0, "depth_cm": 21}}


def measurement(i: int, t: float, amp: float | None = 600.0, lat: float | None = 7.8, side=Side.L,
                site=Site.VAGUS, source=Source.APS, step=None, valid=True) -> Measurement:
    stim = Stimulus(i, t, site, side, source, 1.0, 0.98, 100, step)
    return Measurement(stim, side.channel, valid, None if valid else InvalidReason.CAUTERY,
                       valid and amp is not None and amp >= 100, amp if valid else None,
                       lat if valid and amp and amp >= 100 else None, None)


def test_open_append_read_back(tmp_path):
    clock, wall = Clock(), Wall()
    j = Journal(tmp_path / "j.db", clock=clock, wall_clock=wall)
    cid = j.open_case(CASE)
    clock.t += 2.5
    wall.t += timedelta(seconds=2.5)
    epoch = np.random.default_rng(1).normal(0, 20, (2, 1200))
    payload, blob = E.stimulus(measurement(0, 2.5), epoch, 20000, 200)
    seq = j.append(cid, "stimulus", payload, blob)
    assert seq == 1
    seq2 = j.append(cid, "note", {"text": "tube repositioned", "who": "anaesthetist"}, t_s=3.0)
    assert seq2 == 2
    got = list(j.entries(cid))
    assert [e.kind for e in got] == ["case_opened", "stimulus", "note"]
    assert got[0].payload["patient_id"] == "PSN-0042"
    assert got[0].payload["software_version"]
    assert got[0].payload["date"] == "2026-03-04"
    assert got[0].t_s == 0.0 and got[0].prev_hash == GENESIS
    assert got[1].t_s == pytest.approx(2.5)  # case clock
    assert got[1].wall == "2026-03-04T08:30:02.500000Z"
    assert got[1].payload["amplitude_uV"] == 600.0
    back = W.decode(got[1].payload["waveform"], got[1].blob)
    assert np.max(np.abs(back - epoch)) <= 0.05 + 1e-9
    assert got[2].t_s == 3.0
    for a, b in itertools.pairwise(got):
        assert b.prev_hash == a.hash
    assert [e.kind for e in j.entries(cid, kinds=["note"])] == ["note"]
    assert j.verify(cid).ok
    j.close()


def test_hash_covers_every_field():
    base = dict(case_id="c", seq=1, kind="note", t_s=1.0, wall="w", payload_sha256="p", blob_sha256=None,
                blob_len=None, prev_hash=GENESIS)
    h = entry_hash(**base)
    for key, other in [("case_id", "d"), ("seq", 2), ("kind", "operator"), ("t_s", 1.0000001), ("wall", "x"),
                       ("payload_sha256", "q"), ("blob_sha256", "b"), ("blob_len", 3), ("prev_hash", "1" * 64)]:
        assert entry_hash(**{**base, key: other}) != h, key


def test_entries_pages_through_long_cases(tmp_path):
    j = Journal(tmp_path / "j.db")
    cid = j.open_case(CASE)
    for i in range(1100):
        j.append(cid, "snapshot", {"label": str(i)}, t_s=float(i))
    labels = [e.payload["label"] for e in j.entries(cid, kinds=["snapshot"], page=100)]
    assert labels == [str(i) for i in range(1100)]
    assert len(list(j.entries(cid, blobs=False))) == 1101


def test_append_only_triggers_refuse_update_and_delete(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        cid = j.open_case(CASE)
        j.append(cid, "note", {"text": "a"})
    raw = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE entries SET payload = '{}' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM entries WHERE seq = 1")
    raw.close()
    assert not hasattr(Journal, "update") and not hasattr(Journal, "delete")


def test_closed_case_takes_no_more_entries_and_is_not_open(tmp_path):
    j = Journal(tmp_path / "j.db")
    a = j.open_case(CASE)
    b = j.open_case({**CASE, "patient_id": "PSN-0043"})
    assert j.open_cases() == [a, b]
    assert j.find_open_case() == b
    j.close_case(b, {"reason": "end of surgery", "who": "nurse"})
    assert j.open_cases() == [a]
    with pytest.raises(JournalError, match="closed"):
        j.append(b, "note", {"text": "late"})
    with pytest.raises(JournalError, match="closed"):
        j.resume_case(b)
    listing = {c["case_id"]: c for c in j.cases()}
    assert listing[b]["closed"] and listing[a]["closed"] is None
    assert listing[b]["entries"] == 2 and listing[b]["patient_id"] == "PSN-0043"
    assert j.verify(b).closed


def test_resume_continues_chain_and_case_time(tmp_path):
    path = tmp_path / "j.db"
    wall = Wall()
    clock = Clock()
    j = Journal(path, clock=clock, wall_clock=wall)
    cid = j.open_case(CASE)
    j.append(cid, "note", {"text": "before"}, t_s=50.0)
    j.conn.close()  # a crash: no close_case, no orderly close
    j._conn = None

    wall.t += timedelta(seconds=120)  # the restart took a while
    clock2 = Clock()
    clock2.t = 7.0
    j2 = Journal(path, clock=clock2, wall_clock=wall)
    assert j2.find_open_case() == cid
    data = j2.resume_case(cid)
    assert data["patient_id"] == "PSN-0042"
    clock2.t += 1.0
    seq = j2.append(cid, "engine", {"event": "resumed"})
    assert seq == 2
    e = list(j2.entries(cid))[-1]
    assert e.t_s == pytest.approx(121.0)  # wall time elapsed since the case opened, then the clock
    assert j2.verify(cid).ok


def test_unknown_case_and_ambiguous_references(tmp_path):
    j = Journal(tmp_path / "j.db")
    with pytest.raises(JournalError, match="no case"):
        j.append("nope", "note", {"text": "x"})
    a = j.open_case({**CASE, "case_id": "20260304-A1"})
    j.open_case({**CASE, "case_id": "20260304-A2"})
    assert j.resolve_case("20260304-A1") == a
    assert j.resolve_case("last") == "20260304-A2"
    assert j.resolve_case("open") == "20260304-A2"
    with pytest.raises(JournalError, match="ambiguous"):
        j.resolve_case("20260304-A")
    with pytest.raises(JournalError, match="already exists"):
        j.open_case({**CASE, "case_id": "20260304-A1"})


@pytest.mark.parametrize("kind,payload,message", [
    ("nonsense", {}, "unknown journal entry kind"),
    ("note", {}, "required field 'text'"),
    ("note", {"text": 3}, "'text' must be str"),
    ("step", {"side": "X", "step": "V1"}, "'side' is 'X'"),
    ("step", {"side": "L", "step": "L1"}, "'step' is 'L1'"),
    ("los_type", {"side": "L", "los_type": 3}, "'los_type' is 3"),
    ("stimulus", {"index": 1}, "required field"),
    ("laryngoscopy", {"step": "L1", "left": "normal", "right": "wobbly"}, "'right'"),
])
def test_payloads_are_validated(tmp_path, kind, payload, message):
    j = Journal(tmp_path / "j.db")
    cid = j.open_case(CASE)
    with pytest.raises(ValueError, match=message):
        j.append(cid, kind, payload)
    with pytest.raises(ValueError, match="takes no blob"):
        j.append(cid, "note", {"text": "x"}, blob=b"1")
    with pytest.raises(ValueError, match="finite"):
        j.append(cid, "note", {"text": "x"}, t_s=float("nan"))
    assert len(list(j.entries(cid))) == 1


def test_every_kind_from_helpers_is_accepted(tmp_path):
    j = Journal(tmp_path / "j.db")
    cid = j.open_case(CASE)
    from app.settings import Settings

    s = Settings()
    m = measurement(3, 10.0, step=Step.V1, source=Source.PROBE)
    samples = np.zeros((2, 20000))
    items = [
        ("settings", E.settings(s, "config/default.toml"), None),
        ("setting_changed", E.setting_changed("analysis.event_threshold_uV", 100.0, 150.0, "surgeon"), None),
        ("tube_check", E.tube_check({"L_POS": 1200, "L_NEG": 1500, "R_POS": -1, "R_NEG": 1300}, 5.0, 1.0,
                                    {"L": True, "R": False}), None),
        ("stimulus", *E.stimulus(m, np.zeros((2, 1200)), 20000, 200)),
        ("emg_block", *E.emg_block(10.0, 200000, 20000, samples)),
        ("irritation", {"side": "L", "onset_s": 12.0, "duration_s": 0.8, "peak_uV": 450.0, "kind": "burst"}, None),
        ("cautery", {"state": "start", "onset_s": 13.0}, None),
        ("rule_event", E.rule_event(RuleEvent(20.05, EventKind.LOSS_OF_SIGNAL, Side.L, Site.VAGUS,
                                              Priority.HIGH, 7, {"baseline_uV": 600.0})), None),
        ("step", E.step("L", "V1", m, who="surgeon"), None),
        ("laryngoscopy", {"step": "L1", "left": "normal", "right": "normal", "who": "anaesthetist"}, None),
        ("alarm", E.alarm("raise", "loss_of_signal:L:VAGUS", Priority.HIGH, Side.L), None),
        ("operator", {"action": "rebaseline", "who": "surgeon"}, None),
        ("troubleshooting", {"check": "contralateral_vagus", "answer": "response present", "side": "L"}, None),
        ("los_type", {"side": "L", "los_type": 1}, None),
        ("staging", {"recommendation": "consider postponing the second side", "decision": "postpone",
                     "reason": "LOS type 1 not recovered", "who": "surgeon"}, None),
        ("note", {"text": "µ and ü survive"}, None),
        ("snapshot", {"label": "mark"}, None),
        ("link", {"event": "lost", "detail": {"silence_ms": 600}}, None),
        ("engine", {"event": "started", "version": "0.1.0"}, None),
    ]
    for kind, payload, blob in items:
        assert j.append(cid, kind, payload, blob) is not None
    j.close_case(cid, {"reason": "done"})
    got = {e.kind: e for e in j.entries(cid)}
    assert set(got) == {k for k, _, _ in items} | {"case_opened", "case_closed"}
    assert got["tube_check"].payload["passed"] is False
    assert "R_POS" in got["tube_check"].payload["lead_off"]
    assert got["note"].payload["text"] == "µ and ü survive"
    assert got["step"].payload["amplitude_uV"] == 600.0
    assert j.verify(cid).ok


def test_canonical_json_is_stable_and_clean():
    a = E.canonical_json({"b": np.float32(1.5), "a": [1, (2, 3)], "n": float("nan"), "e": Side.L,
                          "i": np.int64(4)})
    assert a == '{"a":[1,[2,3]],"b":1.5,"e":"L","i":4,"n":null}'
    assert E.canonical_json({"x": 1, "y": 2}) == E.canonical_json({"y": 2, "x": 1})
    assert json.loads(E.canonical_json({"t": "µ"})) == {"t": "µ"}


@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(0, 300)),
              elements=st.floats(-150000, 150000, allow_nan=False)),
       st.sampled_from([0.1, 0.5, 1.0, 0.0381]))
def test_waveform_roundtrip_within_half_resolution(x, res):
    meta, blob = W.encode(x, res)
    y = W.decode(meta, blob)
    assert y.shape == x.shape
    if x.size:
        assert np.max(np.abs(y - x)) <= res / 2 * (1 + 1e-9) + 1e-9


def test_waveform_rejects_bad_input_and_bad_blob():
    with pytest.raises(ValueError, match="NaN"):
        W.encode(np.array([1.0, np.nan]))
    meta, blob = W.encode(np.arange(100.0))
    with pytest.raises(W.WaveformError, match="metadata says"):
        W.decode({**meta, "n": 99}, blob)
    with pytest.raises(W.WaveformError, match="decompressed"):
        W.decode(meta, b"garbage")
    huge = W.decode(*W.encode(np.array([1e12, -1e12]), 0.1))
    assert huge[0, 0] > 2e8 and huge[0, 1] < -2e8  # clipped, and said so
    assert W.encode(np.array([1e12]), 0.1)[0]["clipped"] is True


def test_readonly_journal_refuses_writes_and_reads(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        cid = j.open_case(CASE)
    r = Journal(path, readonly=True)
    assert r.cases()[0]["case_id"] == cid
    with pytest.raises(JournalError, match="read-only"):
        r.append(cid, "note", {"text": "x"})
    r.close()
