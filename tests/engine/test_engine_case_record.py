"""The case record's corners through the API: the close-out, the anaesthesia, the event texts.

Closing a case: the steps still missing, asked before and journaled at close.

The state snapshot lists the INMSG steps each planned side still lacks (``missing_steps``),
so that the touchscreen can ask for a reason per step before it sends ``case.close``;
the engine journals each one with its reason in the ``case_closed`` entry. A reason that
cannot be one is refused before anything closes (the case stays open, stimulation goes on).
"""

from __future__ import annotations

from app.record.document import build_document
from engine_testkit import stepped


def _open(tmp_path, sides=("L",)):
    s = stepped(tmp_path, seed=5, fake_analysis=True)
    s.run_for(0.3)
    s.must("case.start", client="ui", patient_id="PSN-CLOSE", planned_sides=list(sides))
    return s


def test_the_state_lists_what_is_missing_and_it_shrinks_as_steps_are_recorded(tmp_path):
    s = _open(tmp_path, ("L", "R"))
    missing = s.must("state.get")["missing_steps"]
    assert [(x["side"], x["step"]) for x in missing] == [
        (side, step) for side in "LR" for step in ("L1", "V1", "R1", "R2", "V2", "L2")]
    assert all(x["what"] for x in missing)  # in words for the close-out dialog
    s.must("laryngoscopy", phase="L1", side="L", finding="normal")
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("probe.site", site="VAGUS", side="L")
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    s.must("step.tag", step="V1", side="L")
    left = [x["step"] for x in s.must("state.get")["missing_steps"] if x["side"] == "L"]
    assert left == ["R1", "R2", "V2", "L2"]


def test_close_journals_each_missing_step_with_its_reason(tmp_path):
    s = _open(tmp_path)
    s.must("laryngoscopy", phase="L1", side="L", finding="normal")
    reply = s.must("case.close", client="ui", note="done",
                   reasons={"L": {"V1": "not done", "R1": "  RLN not   identified  ", "V2": "second side only"}})
    got = {(x["side"], x["step"]): x["reason"] for x in reply["missing_steps"]}
    assert got == {("L", "V1"): "not done", ("L", "R1"): "RLN not identified", ("L", "R2"): None,
                   ("L", "V2"): "second side only", ("L", "L2"): None}
    j = s.monitor.journal
    closed = [e.payload for e in j.entries(reply["case_id"], kinds=["case_closed"], blobs=False)][0]
    assert closed["missing_steps"] == reply["missing_steps"]
    assert all(x["who"] == "ui" for x in closed["missing_steps"])
    doc = build_document(j, reply["case_id"])
    assert doc["closeout"]["asked"] is True
    assert {(m["side"], m["step"]): m["reason"] for m in doc["closeout"]["missing"]}[("L", "R1")] == \
        "RLN not identified"
    assert s.must("state.get")["missing_steps"] == []  # no case open: nothing is missing


def test_a_reason_that_cannot_be_one_is_refused_and_the_case_stays_open(tmp_path):
    s = _open(tmp_path)
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("stim.output", output="probe", on=True)
    for reasons, words in (({"L": {"L1": "not examined"}, "X": 3}, "reasons for side 'X'"),
                           ({"L": {"V1": ""}}, "reason for V1 L"),
                           ({"L": {"V1": "x" * 201}}, "at most 200"),
                           ({"R": {"V1": "not done"}}, "not missing")):
        reply = s.command("case.close", client="ui", reasons=reasons)
        assert not reply["ok"] and reply["error"]["code"] == "invalid_argument", reply
        assert reply["error"]["argument"] == "reasons" and words in reply["error"]["message"], reply
    st = s.must("state.get")
    assert st["case"] is not None and st["stim"]["probe"]["on"] is True
    assert not [e for e in s.monitor.journal.entries(st["case"]["case_id"], kinds=["operator"], blobs=False)
                if e.payload["action"] == "case.close"]
    assert s.must("case.close", client="ui")["missing_steps"][0]["reason"] is None


def test_the_anaesthesia_is_in_the_opening_entry_and_updates_reach_the_document(tmp_path):
    s = stepped(tmp_path, seed=6, fake_analysis=True)
    s.run_for(0.3)
    cid = s.must("case.start", client="ui", patient_id="PSN-ANA", planned_sides=["R"], relaxant="rocuronium 0.3 mg/kg",
                 relaxant_time="08:05", tof_count=4, tube_type="EMG tube", tube_size_mm=7.0)["case_id"]
    opened = [e.payload for e in s.monitor.journal.entries(cid, kinds=["case_opened"], blobs=False)][0]
    assert opened["anaesthesia"] == {"relaxant": "rocuronium 0.3 mg/kg", "relaxant_time": "08:05", "tof_count": 4,
                                     "tof_ratio_pct": None}
    s.must("case.update", client="ui", tof_ratio_pct=95.0)
    assert s.must("state.get")["case"]["anaesthesia"]["tof_ratio_pct"] == 95.0
    s.must("case.close", client="ui")
    doc = build_document(s.monitor.journal, cid)
    assert doc["case"]["anaesthesia"] == {"relaxant": "rocuronium 0.3 mg/kg", "relaxant_time": "08:05",
                                          "tof_count": 4, "tof_ratio_pct": 95.0}
    assert doc["case"]["tube"]["type"] == "EMG tube"


def test_the_engine_s_event_texts_round_as_the_record_does(tmp_path):
    """One rounding (``app.format``) for the screen's events and the record: amplitudes whole
    µV, latencies 0.01 ms, currents with the delivered one beside them."""
    s = stepped(tmp_path, seed=7)
    s.run_for(0.3)
    cid = s.must("case.start", client="ui", patient_id="PSN-TXT", planned_sides=["L"])["case_id"]
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("probe.site", site="VAGUS", side="L")
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    s.must("step.tag", client="ui", step="V1", side="L")
    ev = next(e for e in reversed(s.events) if e["kind"] == "step_recorded")
    v = ev["detail"]
    from app import format as F
    assert ev["message"] == (f"V1 left: {F.amp_text(v['amplitude_uV'])}, {F.lat_text(v['latency_ms'])} at "
                             f"{F.current_text(v['set_mA'], v['delivered_mA'])}")
    base = next(e for e in s.events if e["kind"] == "baseline_set")
    assert base["message"].endswith("(left vagus)") and "uV" not in base["message"]
    doc = build_document(s.monitor.journal, cid)
    step_line = next(t["text"] for t in doc["timeline"] if t["type"] == "step")
    assert f"{F.amp_text(v['amplitude_uV'])}, {F.lat_text(v['latency_ms'])}" in step_line
