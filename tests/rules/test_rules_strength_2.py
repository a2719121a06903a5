"""Exact values the rules hand out where a slip would go unseen: the reference a loss of
signal and a recovery are measured against (and its name in the record), the RLN recovered
through its vagus while the side is mapped, the loss record a continued loss or a blockade
opens, the steps documented after a vagal loss, the recovery run an invalid epoch does not
break, the staging recommendation the contralateral vagus completes, and the recovery
watchers a site keeps in the snapshot."""

from __future__ import annotations

import pytest
from rules_factory import Stream, engine, kinds, of_kind, run

from app.model import EventKind, Side, Site, Source, Step

PROBE_RLN = dict(site=Site.RLN, source=Source.PROBE)
PROBE_VAGUS = dict(site=Site.VAGUS, source=Source.PROBE)
RV = dict(site=Site.VAGUS, source=Source.PROBE, side=Side.R)  # the right vagus, by the probe
THROUGH_MESSAGE = "Signal recovered: the vagus responds, so the whole recurrent nerve conducts."


# -- the reference a loss of signal is measured against --------------------------------------

def test_before_the_aps_baseline_a_vagal_loss_is_measured_against_the_first_aps_response():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 6.0), s.resp(900.0, 6.0)])  # too few for an APS baseline
    ev = run(e, [s.miss(), s.miss()])
    assert kinds(ev) == ["loss_of_signal"]
    d = ev[0].detail
    assert (d["baseline_uV"], d["baseline_basis"], d["pct_of_baseline"]) == (700.0, "first_response_of_source", 4.3)


def test_after_the_aps_baseline_a_vagal_loss_is_measured_against_the_baseline_not_the_first_response():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 6.0) for _ in range(10)] + [s.resp(900.0, 6.0) for _ in range(10)])
    assert e.aps_baseline(Side.L)["amplitude_uV"] == 800.0
    ev = of_kind(run(e, [s.miss(), s.miss()]), "loss_of_signal")
    d = ev[0].detail
    assert (d["baseline_uV"], d["baseline_basis"], d["pct_of_baseline"]) == (800.0, "aps_baseline", 3.8)


def test_a_source_without_its_own_reference_compares_with_its_own_first_response_not_the_sites():
    """The right vagus answered the probe at 0.5 mA first (no probe baseline below 1 mA),
    then APS: the APS loss is measured against the first APS response."""
    e, s = engine(), Stream()
    run(e, [s.resp(400.0, 5.5, set_mA=0.5, delivered=0.5, **RV)])
    assert e.probe_baseline(Site.VAGUS, Side.R) is None
    run(e, [s.resp(950.0, 5.5, side=Side.R)])
    ev = of_kind(run(e, [s.miss(side=Side.R), s.miss(side=Side.R)]), "loss_of_signal")
    d = ev[0].detail
    assert (d["baseline_uV"], d["baseline_basis"]) == (950.0, "first_response_of_source")


def test_a_source_that_never_answered_at_the_site_compares_with_the_sites_first_response():
    """APS armed the left vagus (no APS baseline yet); the probe then finds it silent:
    that loss is measured against the site's first response, of APS."""
    e, s = engine(), Stream()
    run(e, [s.resp(750.0, 6.0), s.resp(900.0, 6.0)])
    ev = of_kind(run(e, [s.miss(**PROBE_VAGUS), s.miss(**PROBE_VAGUS)]), "loss_of_signal")
    d = ev[0].detail
    assert (d["source"], d["baseline_uV"], d["baseline_basis"], d["pct_of_baseline"]) == (
        "PROBE", 750.0, "first_response_of_site", 4.0)


# -- recovery --------------------------------------------------------------------------------

def test_an_invalid_epoch_does_not_break_the_run_of_recovering_responses():
    e, s = engine(), Stream()
    run(e, [s.resp(800.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    ev = run(e, [s.resp(800.0, 3.8, **PROBE_RLN), s.resp(800.0, 3.8, **PROBE_RLN), s.invalid(**PROBE_RLN)])
    assert ev == []
    last = s.resp(800.0, 3.8, **PROBE_RLN)
    ev = e.process(last)
    assert kinds(ev) == ["signal_recovered"]
    assert ev[0].stimulus_index == last.stimulus.index and ev[0].detail["consecutive"] == 3


def test_a_vagal_loss_keeps_only_the_recovery_watchers_of_its_sources():
    e, s = engine(), Stream()
    run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS), s.miss(**PROBE_VAGUS), s.miss(**PROBE_VAGUS)])
    assert e.snapshot()["machines"]["recovery"] == {"VAGUS-L-APS": ["WATCHING", 0],
                                                    "VAGUS-L-PROBE": ["WATCHING", 0]}
    ev = run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert e.snapshot()["machines"]["recovery"] == {"VAGUS-L-APS": ["IDLE", 0], "VAGUS-L-PROBE": ["IDLE", 3]}


# -- the RLN recovered through its vagus while the side is mapped ---------------------------

def _mapped_left_rln_with_aps_on_the_vagus(e, s):
    """Left vagus on APS (baseline 800 uV: ten at 700, ten at 900), the left RLN lost by
    the probe and the loss confirmed: the side is mapped."""
    run(e, [s.resp(700.0, 6.0) for _ in range(10)] + [s.resp(900.0, 6.0) for _ in range(10)])
    run(e, [s.resp(850.0, 3.8, **PROBE_RLN)])
    los = of_kind(run(e, [s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)]), "loss_of_signal")[0]
    e.procedure.answer(Side.L, "current_delivered", "yes", t_s=los.t_s)
    e.procedure.answer(Side.L, "laryngeal_twitch", "no", t_s=los.t_s)
    e.procedure.answer(Side.L, "contralateral_vagus", "yes", t_s=los.t_s)
    assert e.procedure.mapping_active(Side.L)
    return los


def test_the_rln_recovers_through_the_vagus_against_the_vagal_aps_baseline():
    e, s = engine(), Stream()
    los = _mapped_left_rln_with_aps_on_the_vagus(e, s)
    ev = run(e, [s.resp(800.0, 6.0) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in ev] == [("signal_recovered", Site.RLN)]
    x = ev[0]
    assert x.detail == {
        "source": "APS", "through": "VAGUS", "time_since_loss_s": round(x.t_s - los.t_s, 3),
        "loss_t_s": los.t_s, "loss_stimulus_index": los.stimulus_index, "recovered": ["loss_of_signal"],
        "amplitude_uV": 800.0, "latency_ms": 6.0, "baseline_uV": 800.0, "baseline_basis": "vagus aps_baseline",
        "pct_of_baseline": 100.0, "consecutive": 3, "message": THROUGH_MESSAGE}
    assert e.state()["sites"]["RLN-L"]["loss"] is None


def test_vagal_responses_below_the_recovery_share_of_the_vagal_reference_do_not_recover_the_rln():
    e, s = engine(), Stream()
    _mapped_left_rln_with_aps_on_the_vagus(e, s)
    ev = run(e, [s.resp(380.0, 6.0) for _ in range(4)])  # 47.5 % of the 800 uV baseline
    assert [x for x in of_kind(ev, "signal_recovered") if x.site is Site.RLN] == []
    assert e.procedure.mapping_active(Side.L)
    assert e.state()["sites"]["RLN-L"]["loss"]["conditions"] == ["loss_of_signal"]


# -- the loss record a continued loss and a blockade open -----------------------------------

def test_a_loss_continued_after_a_recovery_reopens_the_loss_record_at_the_episodes_onset():
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    run(e, [s.resp(800.0, 3.8, **PROBE_RLN)])
    first = of_kind(run(e, [s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)]), "loss_of_signal")[0]
    assert kinds(run(e, [s.resp(800.0, 3.8, **PROBE_RLN) for _ in range(3)])) == ["signal_recovered"]
    assert kinds(run(e, [s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])) == ["loss_of_signal_continued"]
    assert e.state()["sites"]["RLN-L"]["loss"] == {"t_s": first.t_s, "stimulus_index": first.stimulus_index,
                                                   "conditions": ["loss_of_signal"]}
    ev = run(e, [s.resp(800.0, 3.8, **PROBE_RLN) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert (ev[0].detail["loss_t_s"], ev[0].detail["loss_stimulus_index"]) == (first.t_s, first.stimulus_index)


def test_a_blockade_opens_the_loss_record_of_the_side_that_had_none_at_the_blockade():
    e, s = engine(), Stream()
    run(e, [s.resp(800.0, 6.0) for _ in range(20)])  # left: APS baseline
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV)])  # right: V1
    run(e, [s.resp(300.0, 6.2) for _ in range(3)])  # left down: amplitude decrease
    x = of_kind(run(e, [s.resp(200.0, 5.6, **RV) for _ in range(3)]), "neuromuscular_blockade_suspected")[0]
    assert e.state()["sites"]["VAGUS-R"]["loss"] == {
        "t_s": x.t_s, "stimulus_index": x.stimulus_index,
        "conditions": [EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED.value]}
    ev = run(e, [s.resp(300.0, 5.5, **RV) for _ in range(3)])
    assert ev[0].kind is EventKind.SIGNAL_RECOVERED and ev[0].side is Side.R
    assert (ev[0].detail["loss_t_s"], ev[0].detail["loss_stimulus_index"]) == (x.t_s, x.stimulus_index)


# -- steps documented after a loss ------------------------------------------------------------

def test_a_vagal_loss_documents_its_silent_stimulus_as_v2_only():
    e, s = engine(), Stream()
    run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS), s.miss(**PROBE_VAGUS)])
    last = s.miss(**PROBE_VAGUS)
    assert kinds(e.process(last)) == ["loss_of_signal"]
    docs = e.take_documented_steps()
    assert [(d["side"], d["step"], d["value"]["stimulus_index"]) for d in docs] == [
        ("L", "V2", last.stimulus.index)]
    assert e.procedure.step(Side.L, Step.R2) is None
    assert [o["step"] for o in e.procedure.troubleshooting(Side.L)["offers"]] == ["V2"]


# -- staging ------------------------------------------------------------------------------------

def test_the_contralateral_vagus_completing_a_true_loss_starts_the_staging_recommendation_then():
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    p = e.procedure
    p.set_plan([Side.L, Side.R], t_s=0.0)
    run(e, [s.resp(900.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    p.answer(Side.L, "current_delivered", "yes", t_s=20.0)
    p.answer(Side.L, "laryngeal_twitch", "no", t_s=21.0)
    assert p.staging_recommendation() is None
    right = s.resp(640.0, 5.5, **RV)
    run(e, [right])
    assert p.troubleshooting(Side.L)["answers"]["contralateral_vagus"] == {
        "answer": "yes", "by": "monitor", "t_s": right.t_end_s, "note": "response measured (640 uV)"}
    rec = p.staging_recommendation()
    assert rec is not None and (rec["side"], rec["second_side"]) == ("L", "R")
    assert rec["since_t_s"] == pytest.approx(right.t_end_s) and rec["basis_ended_t_s"] is None


# -- the time an operator's capture is stamped with -----------------------------------------

def test_a_baseline_captured_at_time_zero_is_stamped_zero():
    e, s = engine(), Stream()
    m = s.resp(900.0, 3.8, **PROBE_RLN)
    ev = e.capture_baseline(Site.RLN, Side.L, m, t_s=0.0)
    assert ev[0].t_s == 0.0 and e.probe_baseline(Site.RLN, Side.L)["t_s"] == 0.0
