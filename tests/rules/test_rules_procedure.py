"""The procedure model: steps, laryngoscopy, troubleshooting, mapping, R2 reduction, staging."""

from __future__ import annotations

import json

import pytest
from rules_factory import DEFAULTS, Stream, engine, kinds, of_kind, run

from app.model import Side, Site, Source, Step
from app.rules import Check, Conclusion, Finding, Procedure, ProcedureError, RuleEngine


def P(**kw):
    kw.setdefault("site", Site.RLN)
    kw.setdefault("source", Source.PROBE)
    return kw


def V(**kw):
    kw.setdefault("site", Site.VAGUS)
    kw.setdefault("source", Source.PROBE)
    return kw


def roundtrip(p: Procedure) -> Procedure:
    return Procedure.from_dict(json.loads(json.dumps(p.to_dict())))


# -- steps -------------------------------------------------------------------------------
def test_tagged_measurements_fill_the_steps_with_their_values():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    seq = [s.resp(520.0, 6.1, step=Step.V1, **V()),
           s.resp(640.0, 6.0, step=Step.V1, **V(set_mA=2.0, delivered=1.97)),
           s.resp(580.0, 6.2, step=Step.V1, **V()),
           s.resp(900.0, 3.8, step=Step.R1, **P()),
           s.miss(step=Step.V2, **V(side=Side.R))]
    run(e, seq)
    v1 = e.procedure.step(Side.L, Step.V1)
    assert v1["amplitude_uV"] == 640.0 and v1["latency_ms"] == 6.0 and v1["count"] == 3
    assert (v1["set_mA"], v1["delivered_mA"], v1["pw_us"]) == (2.0, 1.97, 100)
    assert v1["t_s"] == seq[1].stimulus.t_s and v1["stimulus_index"] == 1 and v1["how"] == "tagged"
    assert e.procedure.step(Side.L, "R1")["amplitude_uV"] == 900.0
    v2r = e.procedure.step(Side.R, "V2")
    assert v2r["response"] is False and v2r["latency_ms"] is None
    assert e.procedure.step(Side.R, "V1") is None


def test_a_response_beats_no_response_and_invalid_is_ignored():
    e, s = engine(), Stream()
    run(e, [s.miss(step=Step.V2, **V()), s.invalid(step=Step.V2, **V()), s.resp(300.0, 6.0, step=Step.V2, **V()),
            s.miss(step=Step.V2, **V())])
    v2 = e.procedure.step(Side.L, "V2")
    assert v2["response"] is True and v2["amplitude_uV"] == 300.0 and v2["count"] == 3


def test_operator_capture_sticks_until_cleared():
    e, s = engine(), Stream()
    m = s.resp(500.0, 3.9, **P())
    e.process(m)
    e.tag_step(Step.R2, Side.L, t_s=20.0)
    run(e, [s.resp(900.0, 3.8, step=Step.R2, **P())])
    r2 = e.procedure.step(Side.L, "R2")
    assert r2["amplitude_uV"] == 500.0 and r2["how"] == "operator" and r2["count"] == 1
    e.procedure.clear_step(Side.L, "R2")
    run(e, [s.resp(900.0, 3.8, step=Step.R2, **P())])
    assert e.procedure.step(Side.L, "R2")["amplitude_uV"] == 900.0


def test_laryngoscopy_findings():
    p = Procedure()
    p.set_laryngoscopy("L1", Side.L, Finding.NORMAL, t_s=0.0)
    p.set_laryngoscopy("L2", "R", "paresis", t_s=9000.0, note="reduced abduction")
    p = roundtrip(p)
    assert p.laryngoscopy("L1", "L")["finding"] == "normal"
    assert p.laryngoscopy("L2", Side.R) == {"finding": "paresis", "note": "reduced abduction", "t_s": 9000.0}
    assert p.laryngoscopy("L1", "R") is None
    with pytest.raises(ProcedureError, match="must be one of normal, paresis, palsy, not_examined"):
        p.set_laryngoscopy("L1", "L", "fine", t_s=1.0)
    with pytest.raises(ProcedureError, match="must be L1 or L2"):
        p.set_laryngoscopy("V1", "L", "normal", t_s=1.0)
    with pytest.raises(ProcedureError, match="side 'X'"):
        p.set_laryngoscopy("L1", "X", "normal", t_s=1.0)


def test_plan():
    p = Procedure()
    assert p.plan_kind is None
    p.set_plan([Side.R, Side.L], t_s=0.0)
    assert p.plan_kind == "bilateral" and p.planned_sides == [Side.R, Side.L]
    p.set_plan(["L"], t_s=0.0)
    assert p.plan_kind == "left"
    for bad in ([], ["L", "L"], ["L", "R", "L"]):
        with pytest.raises(ProcedureError, match="planned sides"):
            p.set_plan(bad, t_s=0.0)


# -- R2 reduction ------------------------------------------------------------------------
@pytest.mark.parametrize("r2p,r2d,pct,advice", [
    (900.0, 1000.0, 10.0, None),
    (800.0, 1000.0, 20.0, None),  # "above" 20 %: not at 20 %
    (750.0, 1000.0, 25.0, "map"),
    (370.0, 1000.0, 63.0, "map"),
    (300.0, 1000.0, 70.0, "palsy_likely"),
    (1100.0, 1000.0, -10.0, None),
])
def test_r2_reduction(r2p, r2d, pct, advice):
    e, s = engine(), Stream()
    run(e, [s.resp(r2p, 3.8, step=Step.R2P, **P()), s.resp(r2d, 3.7, step=Step.R2D, **P())])
    r = e.procedure.r2_reduction(Side.L, DEFAULTS)
    assert r["reduction_pct"] == pytest.approx(pct) and r["advice"] == advice


def test_r2_reduction_thresholds_are_settings_and_need_both_steps():
    e, s = engine(), Stream()
    run(e, [s.resp(850.0, 3.8, step=Step.R2P, **P())])
    assert e.procedure.r2_reduction(Side.L, DEFAULTS) is None
    run(e, [s.resp(1000.0, 3.8, step=Step.R2D, **P())])
    assert e.procedure.r2_reduction(Side.L, DEFAULTS)["advice"] is None
    assert e.procedure.r2_reduction(Side.L, DEFAULTS.with_changes({"rules.r2_reduction_map_pct": 10.0}))[
        "advice"] == "map"
    assert e.procedure.r2_reduction(Side.L, DEFAULTS.with_changes(
        {"rules.r2_reduction_map_pct": 5.0, "rules.r2_reduction_palsy_pct": 30.0}))["advice"] == "map"
    # R2P without response: 100 % reduction
    e, s = engine(), Stream()
    run(e, [s.miss(step=Step.R2P, **P()), s.resp(1000.0, 3.8, step=Step.R2D, **P())])
    assert e.procedure.r2_reduction(Side.L, DEFAULTS)["advice"] == "palsy_likely"


# -- troubleshooting -----------------------------------------------------------------------
def lose(e: RuleEngine, s: Stream, side=Side.L, site=Site.RLN, delivered=1.0):
    run(e, [s.resp(900.0, 3.8, **P(side=side, site=site))])
    ev = run(e, [s.miss(**P(side=side, site=site, delivered=delivered)) for _ in range(2)])
    assert "loss_of_signal" in kinds(ev)
    return ev[-1]


def test_a_los_opens_a_troubleshooting_record_with_the_monitors_answers():
    e, s = engine(), Stream()
    los = lose(e, s)
    t = e.procedure.troubleshooting(Side.L)
    assert t["open"] and t["t_s"] == los.t_s and t["stimulus_index"] == los.stimulus_index
    assert t["sites"] == {"RLN": {"t_s": los.t_s, "stimulus_index": los.stimulus_index, "recovered_t_s": None}}
    assert t["answers"]["current_delivered"]["answer"] == "yes"
    assert t["answers"]["current_delivered"]["by"] == "monitor"
    assert t["conclusion"] == "open" and t["next_check"] == "leads_ok"
    # a right vagal response answers the contralateral-vagus check
    run(e, [s.resp(600.0, 6.0, **V(side=Side.R))])
    t = e.procedure.troubleshooting(Side.L)
    assert t["answers"]["contralateral_vagus"]["answer"] == "yes"
    assert t["answers"]["contralateral_vagus"]["by"] == "monitor"


def test_current_not_measured_is_not_answered_by_the_monitor():
    e, s = engine(), Stream()
    lose(e, s, delivered=None)
    assert "current_delivered" not in e.procedure.troubleshooting(Side.L)["answers"]
    assert e.procedure.troubleshooting(Side.L)["next_check"] == "current_delivered"


CONCLUSIONS = [
    ({}, "open", "current_delivered"),
    ({"current_delivered": "yes"}, "open", "leads_ok"),
    ({"current_delivered": "no"}, "stimulation_problem", None),
    ({"current_delivered": "yes", "leads_ok": "no"}, "stimulation_problem", None),
    ({"current_delivered": "yes", "field_dry": "no", "laryngeal_twitch": "no", "contralateral_vagus": "yes"},
     "stimulation_problem", None),
    ({"nmb_ok": "no", "contralateral_vagus": "no"}, "neuromuscular_blockade", None),
    ({"current_delivered": "yes", "contralateral_vagus": "no"}, "system_fault_likely", None),
    ({"current_delivered": "yes", "laryngeal_twitch": "yes"}, "recording_problem_likely", None),
    ({"current_delivered": "yes", "laryngeal_twitch": "no", "contralateral_vagus": "yes",
      "tube_position_ok": "no"}, "recording_problem_likely", None),
    ({"current_delivered": "yes", "laryngeal_twitch": "no", "contralateral_vagus": "yes",
      "secretions_ok": "no"}, "recording_problem_likely", None),
    ({"current_delivered": "yes", "laryngeal_twitch": "no", "contralateral_vagus": "yes"}, "true_los", None),
    ({"current_delivered": "yes", "leads_ok": "yes", "field_dry": "yes", "laryngeal_twitch": "no"}, "open",
     "contralateral_vagus"),
    ({"current_delivered": "yes", "leads_ok": "yes", "field_dry": "yes", "laryngeal_twitch": "no",
      "contralateral_vagus": "yes", "tube_position_ok": "yes", "secretions_ok": "yes", "nmb_ok": "yes"},
     "true_los", None),
]


@pytest.mark.parametrize("answers,conclusion,nxt", CONCLUSIONS)
def test_troubleshooting_conclusions(answers, conclusion, nxt):
    p = Procedure()
    p.on_loss(Side.L, Site.RLN, t_s=10.0, stimulus_index=5)
    for i, (check, ans) in enumerate(answers.items()):
        p.answer(Side.L, check, ans, t_s=11.0 + i)
    t = roundtrip(p).troubleshooting(Side.L)
    assert t["conclusion"] == conclusion and t["next_check"] == nxt
    assert t["confirmed"] is (conclusion == "true_los")
    if nxt:
        assert t["next_question"] in t["message"]


def test_right_side_asks_about_a_nonrecurrent_nerve_and_flags_v1_absent_on_the_right_only():
    e, s = engine(), Stream()
    run(e, [s.resp(600.0, 8.0, step=Step.V1, **V()), s.miss(step=Step.V1, **V(side=Side.R))])
    lose(e, s, side=Side.R)
    p = e.procedure
    for c in ("current_delivered", "leads_ok", "field_dry", "laryngeal_twitch", "tube_position_ok",
              "secretions_ok", "nmb_ok"):
        p.answer(Side.R, c, "yes" if c != "laryngeal_twitch" else "no", t_s=1.0)
    t = p.troubleshooting(Side.R)
    assert t["nonrecurrent_suspected"] is True
    # contralateral vagus answered by the monitor from the left V1? no: V1 came before the loss
    assert t["next_check"] == "contralateral_vagus"
    p.answer(Side.R, Check.CONTRALATERAL_VAGUS, True, t_s=2.0)
    assert p.troubleshooting(Side.R)["conclusion"] == "true_los"
    p.answer(Side.R, Check.NONRECURRENT, False, t_s=3.0, note="vagus traced")
    assert p.troubleshooting(Side.R)["nonrecurrent_suspected"] is False


def test_answers_are_checked():
    p = Procedure()
    with pytest.raises(ProcedureError, match="no loss of signal on side L"):
        p.answer("L", "leads_ok", "yes", t_s=1.0)
    p.on_loss("L", "RLN", 1.0, 3)
    with pytest.raises(ProcedureError, match="must be yes or no"):
        p.answer("L", "leads_ok", "maybe", t_s=1.0)
    with pytest.raises(ProcedureError, match="troubleshooting check 'x'"):
        p.answer("L", "x", "yes", t_s=1.0)
    with pytest.raises(ProcedureError, match="reason is required"):
        p.set_verdict("L", "true_los", " ", t_s=1.0)
    with pytest.raises(ProcedureError, match="must be true_los or not_true_los"):
        p.set_verdict("L", "open", "because", t_s=1.0)


def test_surgeons_verdict_wins():
    p = Procedure()
    p.on_loss("L", "RLN", 1.0, 3)
    p.answer("L", "laryngeal_twitch", "yes", t_s=2.0)
    assert p.troubleshooting("L")["conclusion"] == "recording_problem_likely"
    p.set_verdict("L", Conclusion.TRUE_LOS, "visible traction injury", t_s=3.0)
    t = p.troubleshooting("L")
    assert t["conclusion"] == "true_los" and t["concluded_by"] == "surgeon" and t["verdict"]["t_s"] == 3.0


def test_recovery_closes_the_record_when_every_lost_site_recovered():
    e, s = engine(), Stream()
    lose(e, s, site=Site.RLN)
    lose(e, s, site=Site.VAGUS)
    recs = e.procedure.records()
    assert len(recs) == 1 and set(recs[0]["sites"]) == {"RLN", "VAGUS"}
    ev = run(e, [s.resp(900.0, 3.8, **P()) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert e.procedure.troubleshooting(Side.L)["open"] is True
    run(e, [s.resp(900.0, 6.0, **V()) for _ in range(3)])
    t = e.procedure.troubleshooting(Side.L)
    assert t["open"] is False and t["recovered_t_s"] is not None
    # the RLN lost again within a minute of its episode's end: the same record opens again
    run(e, [s.miss(**P()), s.miss(**P())])
    recs = e.procedure.records()
    assert [r["id"] for r in recs] == [1] and recs[0]["open"] and len(recs[0]["reopened_t_s"]) == 1
    assert recs[0]["sites"]["RLN"]["continued"][0]["stimulus_index"] == s.index - 1
    run(e, [s.resp(900.0, 3.8, **P()) for _ in range(3)])
    assert e.procedure.troubleshooting(Side.L)["open"] is False
    # a new loss later opens a new record
    run(e, [s.miss(dt=61.0, **P()), s.miss(**P())])
    assert [r["id"] for r in e.procedure.records()] == [1, 2]


# -- mapping -----------------------------------------------------------------------------
def test_mapping_type_1_finds_the_segment():
    p = Procedure()
    for pos, resp in ((0.0, True), (10.0, True), (20.0, False), (30.0, False), (15.0, True)):
        p.add_mapping_point("L", pos, resp, t_s=pos)
    m = roundtrip(p).mapping("L")
    assert m["type"] == 1 and m["classification"] == "type_1"
    assert m["lesion_between_mm"] == [15.0, 20.0]
    assert [x["position_mm"] for x in m["points"]] == [0.0, 10.0, 15.0, 20.0, 30.0]


def test_mapping_all_responding_is_type_1_proximal():
    p = Procedure()
    p.add_mapping_point("L", 0.0, True, t_s=1.0)
    p.add_mapping_point("L", 25.0, True, t_s=1.0)
    m = p.mapping("L")
    assert m["type"] == 1 and m["lesion_between_mm"] is None and "proximal to 25 mm" in m["message"]


def test_mapping_type_2_needs_the_contralateral_vagus():
    p = Procedure()
    p.on_loss("R", "VAGUS", 1.0, 3)
    for pos in (0.0, 10.0, 20.0):
        p.add_mapping_point("R", pos, False, t_s=2.0)
    assert p.mapping("R")["classification"] == "undetermined" and p.mapping("R")["type"] is None
    p.answer("R", "contralateral_vagus", "no", t_s=3.0)
    assert p.mapping("R")["classification"] == "system_fault_suspected"
    p.answer("R", "contralateral_vagus", "yes", t_s=4.0)
    assert p.mapping("R")["type"] == 2 and p.mapping("R")["classification"] == "type_2"
    assert p.mapping("L")["classification"] == "not_mapped"


def test_mapping_points_are_checked():
    p = Procedure()
    for bad in (-1.0, "x", float("nan"), float("inf")):
        with pytest.raises(ProcedureError, match="mapping position"):
            p.add_mapping_point("L", bad, True, t_s=1.0)
    p.add_mapping_point("L", 3, True, t_s=1.0)
    p.clear_mapping("L")
    assert p.mapping("L")["points"] == []


# -- staging -----------------------------------------------------------------------------
def confirm(p: Procedure, side: str, t: float) -> None:
    p.answer(side, "current_delivered", "yes", t_s=t)
    p.answer(side, "laryngeal_twitch", "no", t_s=t)
    p.answer(side, "contralateral_vagus", "yes", t_s=t)


def test_staging_after_a_confirmed_unrecovered_los_on_the_first_side_of_a_bilateral_operation():
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    p = e.procedure
    p.set_plan([Side.L, Side.R], t_s=0.0)
    lose(e, s, side=Side.L)
    assert p.staging_recommendation() is None  # not confirmed yet
    confirm(p, "L", t=50.0)
    rec = p.staging_recommendation()
    assert rec is not None and rec["side"] == "L" and rec["second_side"] == "R" and rec["since_t_s"] == 50.0
    assert "postponing the second side" in rec["message"]
    d = p.decide_staging("postpone_second_side", "bilateral palsy risk; patient informed", t_s=60.0)
    assert d["decision"] == {"decision": "postpone_second_side", "reason": "bilateral palsy risk; patient informed",
                             "t_s": 60.0}
    # survives a crash
    p2 = RuleEngine.restore(DEFAULTS, json.loads(json.dumps(e.snapshot()))).procedure
    assert p2.staging_recommendation() == p.staging_recommendation()
    # RLN probe responses are mapping now (maybe distal to the injury): no recovery
    assert run(e, [s.resp(900.0, 3.8, **P()) for _ in range(3)]) == []
    assert p.staging_recommendation() is not None
    # the vagus recovers the side: the basis ends, the record keeps the recommendation
    # and the decision
    ev = of_kind(run(e, [s.resp(700.0, 7.8, **V()) for _ in range(3)]), "signal_recovered")
    assert len(ev) == 1 and ev[0].site is Site.RLN and ev[0].detail["through"] == "VAGUS"
    assert p.staging_recommendation() is None
    hist = p.staging_history()
    assert len(hist) == 1 and hist[0]["basis_end_reason"] == "recovered"
    assert hist[0]["basis_ended_t_s"] == ev[0].t_s and hist[0]["decision"]["decision"] == "postpone_second_side"


@pytest.mark.parametrize("plan,side", [(["L"], "L"), (["R", "L"], "L"), (None, "L")])
def test_no_staging_on_a_unilateral_operation_or_on_the_second_side(plan, side):
    p = Procedure()
    if plan:
        p.set_plan(plan, t_s=0.0)
    p.on_loss(side, "RLN", 10.0, 4)
    confirm(p, side, 11.0)
    assert p.troubleshooting(side)["confirmed"]
    assert p.staging_recommendation() is None and p.staging_history() == []


def test_staging_follows_the_verdict_and_the_plan():
    p = Procedure()
    p.set_plan(["R", "L"], t_s=0.0)
    p.on_loss("R", "VAGUS", 10.0, 4)
    p.set_verdict("R", "true_los", "no twitch, contralateral fine", t_s=20.0)
    assert p.staging_recommendation()["since_t_s"] == 20.0
    p.set_verdict("R", "not_true_los", "tube was rotated", t_s=30.0)
    assert p.staging_recommendation() is None
    assert p.staging_history()[0]["basis_end_reason"] == "verdict changed"
    p.set_verdict("R", "true_los", "still silent after tube correction", t_s=40.0)
    assert p.staging_recommendation()["since_t_s"] == 40.0
    p.set_plan(["R"], t_s=50.0)  # the second side is dropped from the plan
    assert p.staging_recommendation() is None
    assert [h["basis_end_reason"] for h in p.staging_history()] == ["verdict changed", "plan changed"]


def test_staging_decision_is_checked():
    p = Procedure()
    with pytest.raises(ProcedureError, match="no staging recommendation"):
        p.decide_staging("proceed_second_side", "fine", t_s=1.0)
    p.set_plan(["L", "R"], t_s=0.0)
    p.on_loss("L", "RLN", 1.0, 2)
    confirm(p, "L", 2.0)
    with pytest.raises(ProcedureError, match="must be one of"):
        p.decide_staging("later", "x", t_s=1.0)
    with pytest.raises(ProcedureError, match="reason is required"):
        p.decide_staging("proceed_second_side", "", t_s=1.0)
    assert p.decide_staging("proceed_second_side", "V2 contralateral normal, patient wishes", t_s=3.0)["decision"]


# -- serialisation ------------------------------------------------------------------------
def test_to_dict_from_dict_roundtrip_and_errors():
    e, s = engine(), Stream()
    e.procedure.set_plan(["L", "R"], t_s=0.0)
    run(e, [s.resp(600.0, 6.0, step=Step.V1, **V())])
    lose(e, s)
    e.procedure.add_mapping_point("L", 5.0, True, t_s=3.0)
    d = e.procedure.to_dict()
    json.dumps(d)
    assert Procedure.from_dict(d).to_dict() == d
    with pytest.raises(ProcedureError, match="format"):
        Procedure.from_dict({"format": "other"})
    with pytest.raises(ProcedureError, match="missing 'steps'"):
        Procedure.from_dict({k: v for k, v in d.items() if k != "steps"})
    summary = e.procedure.summary(DEFAULTS)
    json.dumps(summary)
    assert summary["plan_kind"] == "bilateral" and summary["sides"]["L"]["steps"]["V1"]["amplitude_uV"] == 600.0
