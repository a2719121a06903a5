"""Steps recorded afterwards (the step button) and the steps of a side after a loss of
signal: judged and documented as clinical-rules.md says."""

from __future__ import annotations

import json

import pytest
from rules_factory import Stream, engine, kinds, of_kind, run

from app.model import Priority, Side, Site, Source, Step
from app.rules import ProcedureError, RuleEngine


def V(**kw):
    kw.setdefault("site", Site.VAGUS)
    kw.setdefault("source", Source.PROBE)
    return kw


def P(**kw):
    kw.setdefault("site", Site.RLN)
    kw.setdefault("source", Source.PROBE)
    return kw


# -- the step button ---------------------------------------------------------------------
@pytest.mark.parametrize("amp,poor", [(150.0, True), (199.0, True), (200.0, False), (650.0, False)])
def test_a_v1_recorded_by_button_is_judged_as_if_it_had_been_tagged(amp, poor):
    e, s = engine(), Stream()
    m = s.resp(amp, 7.6, **V())
    assert of_kind(e.process(m), "poor_baseline") == []  # untagged when measured
    rec = e.record_step(Step.V1, Side.L, t_s=30.0, measurement=m)
    assert rec.value["how"] == "operator" and rec.value["stimulus_index"] == m.stimulus.index
    assert kinds(rec.events) == (["poor_baseline"] if poor else [])
    if poor:
        x = rec.events[0]
        assert x.priority is Priority.LOW and x.stimulus_index == m.stimulus.index
        assert x.t_s == 30.0  # recognised when the button was pressed
        assert x.detail["basis"] == "V1" and x.detail["amplitude_uV"] == amp
        assert x.detail["recorded"] == "step button" and x.detail["stimulus_t_s"] == pytest.approx(m.t_end_s)
    # the same as a stimulus tagged V1 before it was measured
    e2, s2 = engine(), Stream()
    assert kinds(of_kind(run(e2, [s2.resp(amp, 7.6, **V(step=Step.V1))]), "poor_baseline")) == (
        ["poor_baseline"] if poor else [])


def test_a_v1_without_response_recorded_by_button_is_poor():
    e, s = engine(), Stream()
    m = s.miss(**V())
    e.process(m)
    rec = e.record_step(Step.V1, Side.L, t_s=5.0, measurement=m)
    assert rec.value["response"] is False and kinds(rec.events) == ["poor_baseline"]


def test_only_the_first_v1_of_a_side_is_judged_however_it_was_recorded():
    e, s = engine(), Stream()
    good = s.resp(650.0, 7.6, **V(step=Step.V1))
    run(e, [good])
    weak = s.resp(120.0, 7.6, **V())
    e.process(weak)
    assert e.record_step(Step.V1, Side.L, t_s=9.0, measurement=weak).events == []
    # and the other way round: judged by button, a later tagged V1 is not judged again
    e, s = engine(), Stream()
    weak = s.resp(120.0, 7.6, **V())
    e.process(weak)
    assert kinds(e.record_step(Step.V1, Side.L, t_s=9.0, measurement=weak).events) == ["poor_baseline"]
    assert of_kind(run(e, [s.resp(90.0, 7.6, **V(step=Step.V1))]), "poor_baseline") == []
    # the right side is judged on its own
    m = s.resp(150.0, 6.0, **V(side=Side.R))
    e.process(m)
    assert kinds(e.record_step(Step.V1, Side.R, t_s=12.0, measurement=m).events) == ["poor_baseline"]


def test_a_v1_below_the_plateau_current_is_not_judged():
    e, s = engine(), Stream()
    m = s.resp(150.0, 7.6, **V(set_mA=0.5, delivered=0.5))
    e.process(m)
    assert e.record_step(Step.V1, Side.L, t_s=3.0, measurement=m).events == []
    m = s.resp(150.0, 7.6, **V())
    e.process(m)
    assert kinds(e.record_step(Step.V1, Side.L, t_s=4.0, measurement=m).events) == ["poor_baseline"]


def test_other_steps_raise_no_poor_baseline():
    e, s = engine(), Stream()
    m = s.resp(150.0, 3.8, **P())
    e.process(m)
    assert e.record_step(Step.R1, Side.L, t_s=3.0, measurement=m).events == []
    assert of_kind(run(e, [s.resp(150.0, 7.6, **V(step=Step.V2))]), "poor_baseline") == []


def test_v2_by_button_shows_the_v2_of_v1_ratio():
    e, s = engine(), Stream()
    v1 = s.resp(800.0, 7.6, **V())
    v2 = s.resp(300.0, 7.7, **V())
    run(e, [v1, v2])
    assert e.record_step(Step.V1, Side.L, 10.0, v1).findings == {}
    rec = e.record_step(Step.V2, Side.L, 20.0, v2)
    assert rec.findings == {"v2_of_v1_pct": 37.5} and rec.events == []
    assert e.procedure.summary(e.settings)["sides"]["L"]["v2_of_v1_pct"] == 37.5
    # V2 without a response: 0 %
    miss = s.miss(**V())
    e.process(miss)
    assert e.record_step(Step.V2, Side.L, 30.0, miss).findings == {"v2_of_v1_pct": 0.0}


def test_r2_proximal_and_distal_by_button_give_the_mapping_advice():
    e, s = engine(), Stream()
    d = s.resp(900.0, 3.8, **P())
    p = s.resp(300.0, 3.9, **P())
    run(e, [d, p])
    assert e.record_step(Step.R2D, Side.L, 5.0, d).findings == {}
    rec = e.record_step(Step.R2P, Side.L, 6.0, p)
    red = rec.findings["r2_reduction"]
    assert red["reduction_pct"] == pytest.approx(66.7) and red["advice"] == "palsy_likely"
    assert "map the nerve" in red["message"]


def test_tag_step_keeps_its_signature_and_hands_the_events_out_with_the_next_stimulus():
    e, s = engine(), Stream()
    m = s.resp(150.0, 7.6, **V())
    e.process(m)
    value = e.tag_step(Step.V1, Side.L, t_s=30.0, measurement=m)
    assert isinstance(value, dict) and value["stimulus_index"] == m.stimulus.index
    # waiting, also across a snapshot
    e = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    nxt = s.resp(800.0, 6.0)
    ev = e.process(nxt)
    assert kinds(ev) == ["poor_baseline"] and ev[0].t_s == 30.0 and ev[0].stimulus_index == m.stimulus.index
    assert e.process(s.resp(800.0, 6.0)) == []


def test_record_step_refuses_nonsense():
    e, s = engine(), Stream()
    with pytest.raises(ProcedureError, match="no response on side L"):
        e.record_step(Step.V1, Side.L, 1.0)
    with pytest.raises(ProcedureError, match="must be one of"):
        e.record_step("V9", Side.L, 1.0, s.resp(**V()))
    with pytest.raises(ProcedureError, match="invalid"):
        e.record_step(Step.V1, Side.L, 1.0, s.invalid(**V()))
    with pytest.raises(ProcedureError, match="from side R"):
        e.record_step(Step.V1, Side.L, 1.0, s.resp(**V(side=Side.R)))


# -- after a loss of signal: R2 and V2 are the stimuli given at those steps ------------------
def lose_left_rln(e, s):
    run(e, [s.resp(850.0, 3.8, **P(step=Step.R1)), s.resp(600.0, 7.6, **V(step=Step.V1))])
    misses = [s.miss(**P()), s.m(14.0, None, **P())]
    ev = run(e, misses)
    assert kinds(ev) == ["loss_of_signal"]
    return misses[-1]


def test_after_a_loss_r2_and_v2_are_documented_with_no_response_never_not_recorded():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    r2 = lose_left_rln(e, s)
    value = e.procedure.step(Side.L, Step.R2)
    assert value["how"] == "after_loss" and value["response"] is False
    assert value["stimulus_index"] == r2.stimulus.index and value["amplitude_uV"] == 14.0
    assert value["set_mA"] == 1.0 and value["delivered_mA"] == 1.0
    assert e.procedure.step(Side.L, Step.V2) is None  # the vagus was not stimulated yet
    # the vagus stimulated after the loss: no response; that is V2
    v2 = s.m(12.0, None, **V(delivered=0.98))
    run(e, [v2, s.miss(**V())])
    value = e.procedure.step(Side.L, Step.V2)
    assert value["how"] == "after_loss" and value["response"] is False
    assert value["stimulus_index"] == v2.stimulus.index and value["amplitude_uV"] == 12.0
    summary = e.procedure.summary(e.settings)["sides"]["L"]
    assert summary["v2_of_v1_pct"] == 0.0
    documented = e.take_documented_steps()
    assert [(d["side"], d["step"], d["value"]["stimulus_index"]) for d in documented] == [
        ("L", "R2", r2.stimulus.index), ("L", "V2", v2.stimulus.index)]
    assert documented[1]["measurement"] == v2
    assert e.take_documented_steps() == []
    # the troubleshooting record offers both, in the surgeon's words
    offers = {o["step"]: o for o in e.procedure.troubleshooting(Side.L)["offers"]}
    assert offers["V2"]["message"] == (
        f"V2 can be recorded from stimulus #{v2.stimulus.index} (no response, 12 µV at 1.0 mA, 0.98 mA delivered).")
    assert offers["R2"]["message"].startswith(f"R2 can be recorded from stimulus #{r2.stimulus.index} (no response")
    assert offers["V2"]["documented"] and offers["V2"]["step_how"] == "after_loss"
    assert "measurement" not in offers["V2"]
    json.dumps(e.procedure.troubleshooting(Side.L))


def test_a_responding_vagal_stimulus_replaces_a_silent_one_once():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    lose_left_rln(e, s)
    first = s.m(20.0, None, **V())
    run(e, [first, s.m(40.0, None, **V())])
    assert e.procedure.step(Side.L, Step.V2)["stimulus_index"] == first.stimulus.index  # the first silent one stays
    resp = s.resp(300.0, 7.7, **V())
    run(e, [resp, s.resp(500.0, 7.6, **V())])
    value = e.procedure.step(Side.L, Step.V2)
    assert value["stimulus_index"] == resp.stimulus.index and value["response"] is True


def test_other_sources_sites_and_sides_are_not_v2():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    lose_left_rln(e, s)
    run(e, [s.miss(**V(side=Side.R)), s.miss(**V(set_mA=0.5, delivered=0.5)), s.invalid(**V()),
            s.miss(**V(delivered=0.5)), s.miss(site=Site.EBSLN, source=Source.PROBE)])
    assert e.procedure.step(Side.L, Step.V2) is None
    assert e.procedure.step(Side.R, Step.V2) is None
    # the continuous vagal electrode stimulates the vagus too
    aps = s.miss(source=Source.APS, site=Site.VAGUS)
    run(e, [aps])
    assert e.procedure.step(Side.L, Step.V2)["source"] == "APS"


def test_tagged_and_operator_values_are_never_replaced_but_replace_the_documented_ones():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    run(e, [s.resp(850.0, 3.8, **P(step=Step.R2))])  # R2 tagged before the loss
    run(e, [s.miss(**P()), s.miss(**P())])
    assert e.procedure.step(Side.L, Step.R2)["how"] == "tagged"
    assert e.procedure.troubleshooting(Side.L)["offers"][0]["documented"] is False
    run(e, [s.miss(**V())])
    assert e.procedure.step(Side.L, Step.V2)["how"] == "after_loss"
    tagged = s.m(25.0, None, **V(step=Step.V2))
    run(e, [tagged])
    assert e.procedure.step(Side.L, Step.V2)["stimulus_index"] == tagged.stimulus.index
    assert e.procedure.step(Side.L, Step.V2)["how"] == "tagged"


def test_the_operator_tags_what_is_offered():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    lose_left_rln(e, s)
    v2 = s.m(12.0, None, **V())
    run(e, [v2])
    rec = e.tag_offer(Side.L, Step.V2, t_s=130.0)
    assert rec.value["how"] == "operator" and rec.value["stimulus_index"] == v2.stimulus.index
    assert rec.value["captured_t_s"] == 130.0
    offers = {o["step"]: o for o in e.procedure.troubleshooting(Side.L)["offers"]}
    assert offers["V2"]["documented"] and offers["V2"]["step_how"] == "operator"
    with pytest.raises(ProcedureError, match="no stimulus on side R is offered"):
        e.tag_offer(Side.R, Step.V2, t_s=131.0)


def test_a_recovery_withdraws_what_the_loss_documented():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    lose_left_rln(e, s)
    run(e, [s.miss(**V())])
    operator_r2 = s.m(10.0, None, **P())
    run(e, [operator_r2])
    e.record_step(Step.R2, Side.L, 110.0, operator_r2)
    ev = run(e, [s.resp(850.0, 3.8, **P()) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert e.procedure.step(Side.L, Step.V2) is None  # documented from the loss: withdrawn
    assert e.procedure.step(Side.L, Step.R2)["how"] == "operator"  # the operator's stays
    # after the recovery the vagus is no longer V2 by itself
    run(e, [s.resp(600.0, 7.6, **V())])
    assert e.procedure.step(Side.L, Step.V2) is None


def test_after_loss_documentation_survives_a_snapshot():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    lose_left_rln(e, s)
    again = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    v2 = s.m(12.0, None, **V())
    run(again, [v2])
    assert again.procedure.step(Side.L, Step.V2)["stimulus_index"] == v2.stimulus.index
    assert again.tag_offer(Side.L, Step.R2, 120.0).value["how"] == "operator"
