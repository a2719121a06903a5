"""The tube check's breathing variation, end to end: virtual patient -> board -> wire -> engine.

The virtual patient's baseline swings by ``2 x wander_uV x tube`` peak-to-peak at its
breathing rate and its background EMG is modulated by ``resp_modulation x tube`` (the tube
factor: 1 well placed, lower when displaced or rotated). Tolerances as in the analysis
tests: wander within 10 % (+0.5 µV), modulation within 2.5 percentage points.
"""

from __future__ import annotations

import pytest

from app.analysis.breathing import REASONS
from app.record.document import build_document
from engine_testkit import stepped


def start_case(s):
    s.run_for(0.5)
    assert s.monitor.link_up
    return s.must("case.start", patient_id="P1", planned_sides=["L", "R"])["case_id"]


def breathing(s):
    return s.monitor.state_snapshot()["tube"]["breathing_variation"]


def check(s, run_s=16.5):
    s.must("tube.check")
    s.run_for(run_s)
    return breathing(s)


def truth(s, side, tube=1.0):
    sp = getattr(s.board.patient.params, "left" if side == "L" else "right")
    return 2 * sp.wander_uV * tube, 100 * sp.resp_modulation * tube


def near(got, want, rel=0.10, abs_=0.5):
    return abs(got - want) <= rel * want + abs_


def test_present_with_the_tube_in_place_absent_after_displacement_back_after_repositioning(tmp_path):
    s = stepped(tmp_path, seed=1)
    case_id = start_case(s)
    s.must("tube.check")
    s.run_for(0.5)
    bv = breathing(s)  # the impedances are back; the breathing window runs
    assert s.monitor.state_snapshot()["tube"]["pass"] is True
    assert bv["L"]["status"] == "measuring" and bv["L"]["present"] is None and 13.0 < bv["L"]["remaining_s"] <= 15.0
    s.run_for(16.0)
    bv = breathing(s)
    for side in "LR":
        wander, mod = truth(s, side)
        assert bv[side]["status"] == "measured" and bv[side]["present"] is True, bv
        assert near(bv[side]["wander_uV"], wander) and abs(bv[side]["modulation_pct"] - mod) <= 2.5, (side, bv)
        assert abs(bv[side]["rate_per_min"] - s.board.patient.params.resp_rate_per_min) <= 0.5
    first = bv

    # neck extension rotates the tube away from the left fold (the recording factor drops to 0.35)
    s.board.control("tube", left=0.35, over_s=1.0)
    s.run_for(2.0)
    bv = check(s)
    wander, mod = truth(s, "L", 0.35)
    assert bv["L"]["present"] is False and near(bv["L"]["wander_uV"], wander)
    assert abs(bv["L"]["modulation_pct"] - mod) <= 2.5
    assert 0.25 <= bv["L"]["wander_uV"] / first["L"]["wander_uV"] <= 0.45
    assert bv["R"]["present"] is True and near(bv["R"]["wander_uV"], first["R"]["wander_uV"])
    msgs = [e["message"] for e in s.events if e["kind"] == "breathing_variation"]
    assert len(msgs) == 2 and "left absent" in msgs[-1] and "check the tube position" in msgs[-1]

    # repositioned under laryngoscopy
    s.board.control("tube", left=1.0, over_s=1.0)
    s.run_for(2.0)
    bv = check(s)
    assert bv["L"]["present"] is True and near(bv["L"]["wander_uV"], first["L"]["wander_uV"])

    # journal: each check as measured (impedances at once, breathing when its window ends)
    entries = [e for e in s.monitor.journal.entries(case_id, blobs=False) if e.kind == "tube_check"]
    states = [(e.payload["breathing_variation"]["L"]["status"], e.payload["breathing_variation"]["L"]["present"])
              for e in entries]
    assert states == [("measuring", None), ("measured", True), ("measuring", None), ("measured", False),
                      ("measuring", None), ("measured", True)]
    # the case document: one row per check, carrying the breathing variation
    doc = build_document(s.monitor.journal, case_id)
    rows = doc["tube_check"]
    assert [r["breathing_variation"]["L"]["present"] for r in rows] == [True, False, True]
    assert rows[1]["breathing_variation"] == entries[3].payload["breathing_variation"]
    assert rows[1]["t_s"] == pytest.approx(entries[2].t_s, abs=1e-3)
    assert rows[1]["breathing_t_s"] == pytest.approx(entries[3].t_s, abs=1e-3)
    assert any(t["text"].startswith("Breathing variation of the baseline EMG: left absent") for t in doc["timeline"])


def test_cautery_during_the_window_is_not_measurable(tmp_path):
    s = stepped(tmp_path, seed=2)
    start_case(s)
    s.must("tube.check")
    s.run_for(0.5)
    s.board.control("cautery", duration_s=6.0)
    s.run_for(16.5)
    bv = breathing(s)
    for side in "LR":
        assert bv[side]["status"] == "not_measurable" and bv[side]["present"] is None
        assert bv[side]["reason"] == REASONS["cautery"]
    assert any("not measurable: electrocautery" in e["message"] for e in s.events if e["kind"] == "breathing_variation")


def test_stimulation_during_the_window_is_left_out(tmp_path):
    s = stepped(tmp_path, seed=1)
    start_case(s)
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)  # continuous vagal stimulation at 1 Hz
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("probe.site", site="VAGUS", side="L")
    s.must("stim.output", output="probe", on=True)  # and the probe on the vagus at 4 Hz
    s.run_for(2.0)
    assert s.monitor.last["L"]["amplitude_uV"] > 300  # evoked responses in the free-running stream
    bv = check(s)
    wander, mod = truth(s, "L")
    assert bv["L"]["present"] is True and near(bv["L"]["wander_uV"], wander)
    assert abs(bv["L"]["modulation_pct"] - mod) <= 2.5
    assert bv["L"]["coverage_pct"] >= 95.0  # the stimulus windows are left out, the frames between them kept


def test_an_engine_restart_mid_window_leaves_it_not_measured(tmp_path):
    s = stepped(tmp_path, seed=1)
    start_case(s)
    s.must("tube.check")
    s.run_for(3.0)
    state = s.monitor.engine_state()
    assert state["case"]["tube"]["breathing_variation"]["L"]["status"] == "measuring"
    other = stepped(tmp_path / "other", seed=1)
    start_case(other)  # the state is a case's: it is restored into an open case, as a resume does
    other.monitor.restore_engine_state(state)
    bv = other.monitor.state_snapshot()["tube"]["breathing_variation"]
    assert bv["L"]["status"] == "not_measurable" and bv["L"]["reason"] == REASONS["interrupted_restart"]


def test_a_silent_stream_ends_the_window_as_not_measurable(tmp_path):
    s = stepped(tmp_path, seed=1)
    start_case(s)
    s.must("tube.check")
    s.run_for(0.5)
    s.board.control("mute", duration_s=30.0)
    s.run_for(20.0)
    bv = breathing(s)
    assert bv["L"]["status"] == "not_measurable" and bv["L"]["reason"] in (REASONS["interrupted"], REASONS["no_stream"])


def test_a_settings_change_restarts_the_window(tmp_path):
    s = stepped(tmp_path, seed=1)
    start_case(s)
    s.must("tube.check")
    s.run_for(10.0)
    s.must("settings.set", changes={"tube.breathing_min_modulation_pct": 30.0})
    s.run_for(1.0)
    bv = breathing(s)
    assert bv["L"]["status"] == "measuring" and bv["L"]["remaining_s"] > 12.0
    s.run_for(15.5)
    bv = breathing(s)
    assert bv["L"]["present"] is False and bv["R"]["present"] is False  # under the stricter limit (15 % / 25 %)
