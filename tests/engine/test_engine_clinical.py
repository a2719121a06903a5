"""The clinical corners end to end: the API on the virtual board, the real analysis and rules.

- A poor V1 recorded with the step button raises "poor baseline" at once (the step's
  rules run on the stimulus it records), dated at the button and naming the stimulus.
- After a loss of signal, the injured side's R2 and V2 are the stimuli given at those
  steps (no response, the measured amplitude and current); the troubleshooting offers
  them, and ``step.tag which=offer`` records them as the operator's.
- Mapping: each point keeps what was measured at it; the type 1 lesion moves with every
  point, is journaled each time and belongs to the RLN's episode in the case document.
"""

from __future__ import annotations

import pytest

from app.analysis.edf import read_edf
from app.commands.analyze import analyze_recording
from app.record.document import build_document
from app.record.edf_export import write_case_edf
from app.settings import Settings
from engine_testkit import rule_events, stepped


def _probe(s, site, side, seconds, **where):
    s.board.control("probe", contact="nerve", site=site, side=side, **where)
    s.must("probe.site", site=site, side=side)
    s.must("stim.output", output="probe", on=True)
    s.run_for(seconds)
    s.must("stim.output", output="probe", on=False)
    s.board.control("probe", contact="none")
    s.run_for(0.3)


def test_a_poor_v1_recorded_with_the_button_raises_poor_baseline_at_once(tmp_path):
    s = stepped(tmp_path, seed=11)
    s.run_for(0.3)
    case_id = s.must("case.start", client="ui", patient_id="PSN-POOR", planned_sides=["L"])["case_id"]
    s.board.control("tube", left=0.2, over_s=0.1)  # displaced: every left response small
    s.run_for(0.5)
    _probe(s, "VAGUS", "L", 1.0)
    last = s.must("state.get")["last"]["L"]
    assert last["response"] and 100.0 <= last["amplitude_uV"] < 200.0, last
    before = len(s.events)
    t_button = s.monitor.now_t()
    s.must("step.tag", client="ui", step="V1", side="L")
    new = s.events[before:]  # everything the button caused, before any further stimulus
    poor = rule_events(new, "poor_baseline")
    assert len(poor) == 1, [e["kind"] for e in new]
    d = poor[0]["detail"]
    assert d["recorded"] == "step button" and d["basis"] == "V1"
    assert d["stimulus_index"] == last["index"] and abs(poor[0]["t_s"] - t_button) < 0.01
    assert "poor_baseline" in {a["kind"] for a in s.must("state.get")["alarms"]["active"]}
    step = next(e for e in new if e["kind"] == "step_recorded")
    assert step["message"].startswith("V1 left: ") and "µV" in step["message"]
    # journaled in one go: the step entry, then the event it raised, naming the stimulus
    kinds = [(e.kind, e.payload.get("kind")) for e in s.monitor.journal.entries(case_id, blobs=False)
             if e.kind in ("step", "rule_event")]
    assert kinds[-2:] == [("step", None), ("rule_event", "poor_baseline")]
    # recorded again: judged once per side (the first V1 only)
    s.must("step.tag", client="ui", step="V1", side="L")
    assert len(rule_events(s.events, "poor_baseline")) == 1
    # re-analysis of the export dates it at the button too (STEP ... by=button dt=)
    s.must("case.close")
    write_case_edf(s.monitor.journal, case_id, tmp_path / "case.edf")
    an = analyze_recording(read_edf(tmp_path / "case.edf", lazy=True), Settings())
    again = [e for e in an["events"] if e["kind"] == "poor_baseline"]
    assert len(again) == 1 and abs(again[0]["t_s"] + an["recording"]["case_t0_s"] - poor[0]["t_s"]) <= 0.001
    assert an["steps"]["L"]["V1"]["how"] == "operator"


def test_a_good_v1_by_button_shows_v2_of_v1_when_v2_is_recorded(tmp_path):
    s = stepped(tmp_path, seed=12)
    s.run_for(0.3)
    s.must("case.start", patient_id="PSN-RATIO", planned_sides=["L"])
    _probe(s, "VAGUS", "L", 1.0)
    s.must("step.tag", step="V1", side="L")
    assert not rule_events(s.events, "poor_baseline")
    _probe(s, "VAGUS", "L", 1.0)
    before = len(s.events)
    s.must("step.tag", step="V2", side="L")
    ev = next(e for e in s.events[before:] if e["kind"] == "step_recorded")
    ratio = ev["detail"]["findings"]["v2_of_v1_pct"]
    assert 70.0 < ratio < 130.0 and "of V1" in ev["message"]


def test_r2_proximal_and_distal_by_button_ask_for_mapping_at_once(tmp_path):
    s = stepped(tmp_path, seed=14)
    s.run_for(0.3)
    s.must("case.start", patient_id="PSN-R2", planned_sides=["L"])
    s.board.control("traction", side="L", site="RLN", severity=0.6, onset_s=0.2, position=0.5)
    s.run_for(1.0)
    _probe(s, "RLN", "L", 1.0, position=0.1)  # distal to the stretched segment: full
    s.must("step.tag", step="R2D", side="L")
    _probe(s, "RLN", "L", 1.0, position=0.9)  # proximal to it: reduced
    before = len(s.events)
    s.must("step.tag", step="R2P", side="L")
    ev = next(e for e in s.events[before:] if e["kind"] == "step_recorded")
    red = ev["detail"]["findings"]["r2_reduction"]
    assert red["reduction_pct"] > 20.0 and red["advice"] in ("map", "palsy_likely")
    assert "map the nerve" in ev["message"]


@pytest.fixture(scope="module")
def transected(tmp_path_factory):
    """The left RLN cut at 16 mm; R2 at the proximal nerve, V2, then mapping at 2, 10, 32 mm."""
    s = stepped(tmp_path_factory.mktemp("transected"), seed=32)
    s.run_for(0.3)
    case_id = s.must("case.start", client="ui", patient_id="PSN-CUT", planned_sides=["L", "R"])["case_id"]
    _probe(s, "VAGUS", "L", 1.0)
    s.must("step.tag", client="ui", step="V1", side="L")
    _probe(s, "RLN", "L", 1.0, position=0.1)
    s.must("step.tag", client="ui", step="R1", side="L")
    s.board.control("transect", side="L", site="RLN", position=0.4)
    _probe(s, "RLN", "L", 1.5, position=0.85)  # R2, proximal to the cut: no response
    after_r2 = s.must("state.get")
    _probe(s, "VAGUS", "L", 1.5)  # V2: lost as well
    after_v2 = s.must("state.get")
    events_v2 = list(s.events)
    s.must("ts.answer", client="ui", side="L", check="current_delivered", answer="yes")
    s.must("ts.answer", client="ui", side="L", check="laryngeal_twitch", answer="no")
    _probe(s, "VAGUS", "R", 1.0)  # the contralateral vagus responds (answered by the monitor)
    s.must("ts.answer", client="ui", side="L", check="tube_position_ok", answer="yes")
    points = []
    for mm in (2.0, 10.0, 32.0):
        _probe(s, "RLN", "L", 1.0, position_mm=mm)
        points.append(s.must("mapping.result", client="ui", side="L", position_mm=mm,
                             response=mm < 16.0, label=f"{mm:g} mm"))
    offered = s.must("state.get")
    tagged = s.must("step.tag", client="ui", step="V2", side="L", which="offer")
    closed = s.must("case.close", client="ui", reasons={"L": {"L1": "not done", "L2": "not done"},
                                                        "R": {"L1": "not done", "V1": "second side postponed",
                                                              "R1": "second side postponed",
                                                              "R2": "second side postponed",
                                                              "V2": "second side postponed", "L2": "not done"}})
    doc = build_document(s.monitor.journal, case_id)
    return {"s": s, "case_id": case_id, "after_r2": after_r2, "after_v2": after_v2, "events_v2": events_v2,
            "points": points, "offered": offered, "tagged": tagged, "closed": closed, "doc": doc}


def test_after_the_loss_r2_and_v2_are_the_stimulation_done_never_not_recorded(transected):
    r2 = transected["after_r2"]["steps"]["L"]["R2"]
    assert r2["how"] == "after_loss" and r2["response"] is False and r2["site"] == "RLN"
    assert r2["amplitude_uV"] is not None and r2["amplitude_uV"] < 100.0
    assert r2["set_mA"] == 1.0 and r2["delivered_mA"] is not None
    v2 = transected["after_v2"]["steps"]["L"]["V2"]
    assert v2["how"] == "after_loss" and v2["response"] is False and v2["site"] == "VAGUS"
    documented = [e for e in transected["events_v2"] if e["kind"] == "step_documented"]
    assert [e["detail"]["step"] for e in documented] == ["R2", "V2"]
    assert all("no response" in e["message"] and "after the loss of signal" in e["message"] for e in documented)
    assert documented[1]["detail"]["offer"].startswith("V2 can be recorded from stimulus #")


def test_the_troubleshooting_offers_them_and_the_offer_is_tagged_as_the_operators(transected):
    offers = {o["step"]: o for o in transected["offered"]["troubleshooting"]["L"]["offers"]}
    assert set(offers) == {"R2", "V2"} and all(o["documented"] for o in offers.values())
    assert "no response" in offers["V2"]["message"]
    tagged = transected["tagged"]
    assert tagged["value"]["how"] == "operator" and tagged["value"]["response"] is False
    assert tagged["measurement"]["index"] == offers["V2"]["stimulus_index"]
    j, cid = transected["s"].monitor.journal, transected["case_id"]
    steps = [e.payload for e in j.entries(cid, kinds=["step"], blobs=False)]
    assert steps[-1]["step"] == "V2" and steps[-1]["response"] is False
    assert steps[-1]["stimulus_index"] == offers["V2"]["stimulus_index"]
    doc_v2 = transected["doc"]["sides"]["L"]["steps"]["V2"]
    assert doc_v2["response"] is False and doc_v2["amplitude_uV"] is not None and doc_v2["how"] == "step"
    assert transected["doc"]["sides"]["L"]["steps"]["R2"]["how"] == "procedure:after_loss"
    # nothing is asked at close for a step documented after the loss
    assert {(m["side"], m["step"]) for m in transected["closed"]["missing_steps"]} == {
        ("L", "L1"), ("L", "L2"), ("R", "L1"), ("R", "V1"), ("R", "R1"), ("R", "R2"), ("R", "V2"), ("R", "L2")}


def test_an_offer_that_does_not_exist_is_refused(tmp_path):
    s = stepped(tmp_path, seed=13, fake_analysis=True)
    s.run_for(0.3)
    s.must("case.start", patient_id="PSN-NOOFFER", planned_sides=["L"])
    reply = s.command("step.tag", step="V2", side="L", which="offer")
    assert reply["error"]["code"] == "bad_state" and "offers no stimulus for V2" in reply["error"]["message"]


def test_each_mapping_point_keeps_its_measurement_and_the_lesion_moves_with_every_point(transected):
    pts = [r["point"] for r in transected["points"]]
    assert [p["position_mm"] for p in pts] == [2.0, 10.0, 32.0]
    for p, responds in zip(pts, (True, True, False), strict=True):
        assert p["measured"] is True and p["measured_response"] is responds and p["stimulus_index"] is not None
        assert p["set_mA"] == 1.0 and p["delivered_mA"] is not None
        assert (p["amplitude_uV"] > 300.0) if responds else (p["amplitude_uV"] < 100.0)
        assert (p["latency_ms"] is not None) is responds
    lesions = [(r["mapping"]["lesion_between_mm"], r["mapping"]["lesion_proximal_to_mm"]) for r in transected["points"]]
    assert lesions == [(None, 2.0), (None, 10.0), ([10.0, 32.0], None)]
    assert [r["changed"] for r in transected["points"]] == [True, True, True]
    j, cid = transected["s"].monitor.journal, transected["case_id"]
    types = [e.payload for e in j.entries(cid, kinds=["los_type"], blobs=False)]
    assert [t["detail"]["lesion_proximal_to_mm"] or t["detail"]["lesion_between_mm"] for t in types] == \
        [2.0, 10.0, [10.0, 32.0]]
    assert all(t["los_type"] == 1 and t["detail"]["site"] == "RLN" for t in types)


def test_the_document_puts_mapping_and_type_on_the_rln_episode_with_measured_values(transected):
    doc = transected["doc"]
    eps = {(ep["site"], ep["kind"]): ep for ep in doc["adverse_events"] if ep["side"] == "L"}
    rln, vagus = eps[("RLN", "loss_of_signal")], eps[("VAGUS", "loss_of_signal")]
    assert rln["los_type"]["type"] == 1 and rln["los_type"]["detail"]["lesion_between_mm"] == [10.0, 32.0]
    assert [p["position_mm"] for p in rln["mapping"]] == [2.0, 10.0, 32.0]
    assert all(p["amplitude_uV"] is not None and p["set_mA"] == 1.0 for p in rln["mapping"])
    assert vagus["los_type"] is None and vagus["mapping"] == []
    m = doc["sides"]["L"]["mapping"]
    assert m["site"] == "RLN" and m["type"] == 1 and m["lesion_between_mm"] == [10.0, 32.0]
    assert m["points"][0]["latency_ms"] is not None and m["points"][2]["latency_ms"] is None
    texts = [t["text"] for t in doc["timeline"] if t["type"] == "los_type"]
    assert texts[-1] == ("Loss of signal, left RLN: type 1 (segmental), lesion between 10 mm and 32 mm from the "
                         "laryngeal entry")
