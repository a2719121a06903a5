"""What one measurement does on its way through ``RuleEngine.process``, pinned to the exact
values the record and the screens show: the no-current, poor-V1 and non-recurrent events
with their numbers and messages, the first response a site keeps as its "initially good
signal", what a recovery of one site does to the other conditions, the stimulus that
completes a re-baseline, the contralateral vagus of the troubleshooting record and the
RLN stimulus a mapping point takes its values from."""

from __future__ import annotations

import statistics

import pytest
from rules_factory import Stream, aps_baseline, engine, kinds, of_kind, run

from app.model import Priority, Side, Site, Source, Step

PROBE_RLN = dict(site=Site.RLN, source=Source.PROBE)
PROBE_VAGUS = dict(site=Site.VAGUS, source=Source.PROBE)


# -- the events' contents ---------------------------------------------------------------------

def test_no_current_event_reports_the_currents_rounded_and_what_to_check():
    e, s = engine(), Stream()
    m = s.miss(**PROBE_RLN, set_mA=1.23456, delivered=0.61237)
    ev = run(e, [m])
    assert kinds(ev) == ["no_current"]
    nc = ev[0]
    assert (nc.site, nc.side, nc.priority, nc.stimulus_index, nc.t_s) == (
        Site.RLN, Side.L, Priority.MEDIUM, m.stimulus.index, m.t_end_s)
    assert nc.detail == {
        "source": "PROBE", "set_mA": 1.235, "delivered_mA": 0.612,
        "delivered_pct": 49.6,  # 0.61237 / 1.23456 = 49.602 %
        "tolerance_pct": 5.0,
        "message": "Stimulus current not delivered as set: check probe, leads, contact and a dry field.",
    }


def test_no_current_delivered_percentage_is_of_the_set_current():
    e, s = engine(), Stream()
    ev = run(e, [s.miss(**PROBE_RLN, set_mA=2.0, delivered=1.0)])
    assert ev[0].detail["delivered_pct"] == 50.0
    e, s = engine(), Stream()
    ev = run(e, [s.miss(**PROBE_RLN, set_mA=1.5, delivered=0.7)])
    assert (ev[0].detail["set_mA"], ev[0].detail["delivered_mA"], ev[0].detail["delivered_pct"]) == (1.5, 0.7, 46.7)


def test_poor_v1_event_gives_the_amplitude_the_limit_and_the_advice():
    e, s = engine(), Stream()
    m = s.resp(123.4567, 6.0, **PROBE_VAGUS, step=Step.V1)
    ev = run(e, [m])
    assert kinds(ev) == ["baseline_set", "poor_baseline"]  # the probe baseline, then its judgement
    pb = ev[1]
    assert (pb.site, pb.side, pb.priority, pb.stimulus_index, pb.t_s) == (
        Site.VAGUS, Side.L, Priority.LOW, m.stimulus.index, m.t_end_s)
    # measured in the stream: no "recorded by the step button" marks
    assert pb.detail == {
        "basis": "V1", "amplitude_uV": 123.46, "limit_uV": 200.0,
        "message": "Poor V1 baseline: check tube position and electrode contact.",
    }


def test_nonrecurrent_event_gives_latency_limit_amplitude_and_source():
    e, s = engine(), Stream()
    m = s.resp(700.1234, 3.2344, **PROBE_VAGUS, side=Side.R)
    ev = of_kind(run(e, [m]), "nonrecurrent_nerve_suspected")
    assert len(ev) == 1
    assert (ev[0].site, ev[0].side, ev[0].stimulus_index) == (Site.VAGUS, Side.R, m.stimulus.index)
    assert ev[0].detail == {
        "source": "PROBE", "latency_ms": 3.234, "limit_ms": 3.5, "amplitude_uV": 700.12,
        "message": "Short right vagal latency: a non-recurrent laryngeal nerve is suspected.",
    }


# -- the site's first response ----------------------------------------------------------------

def test_a_site_keeps_its_first_response_as_the_initially_good_signal():
    e, s = engine(), Stream()
    first = s.resp(812.5, 6.25, **PROBE_VAGUS)
    run(e, [s.miss(**PROBE_VAGUS), first, s.resp(500.0, 6.5, **PROBE_VAGUS), s.resp(900.0, 6.0)])
    assert e.state()["sites"]["VAGUS-L"]["first_response"] == {
        "amplitude_uV": 812.5, "latency_ms": 6.25, "t_s": first.stimulus.t_s,
        "stimulus_index": first.stimulus.index, "source": "PROBE"}


def test_recovery_compares_with_the_first_response_of_the_same_source():
    """The vagus first answered the probe (400 uV), then the APS electrode (1000 uV): before
    any APS baseline, APS stimuli recover against the APS electrode's own first response."""
    e, s = engine(), Stream()
    run(e, [s.resp(400.0, 6.0, **PROBE_VAGUS), s.resp(1000.0, 6.0)])
    ev = run(e, [s.miss(), s.miss()])
    assert kinds(ev) == ["loss_of_signal"]
    # 450 uV is above half of the probe's 400 but below half of the electrode's 1000
    ev = run(e, [s.resp(450.0, 6.0) for _ in range(4)])
    assert of_kind(ev, "signal_recovered") == []
    ev = run(e, [s.resp(520.0, 6.0) for _ in range(3)])
    rec = of_kind(ev, "signal_recovered")
    assert len(rec) == 1
    assert (rec[0].detail["baseline_uV"], rec[0].detail["baseline_basis"]) == (1000.0, "first_response_of_source")


# -- recovery of one site, re-baseline ---------------------------------------------------------

def test_an_rln_recovery_leaves_the_vagal_amplitude_decrease_open():
    e, s = engine(), Stream()
    aps_baseline(e, s, amp=800.0, lat=6.0)
    ev = run(e, [s.resp(300.0, 6.0) for _ in range(3)])
    assert kinds(ev) == ["amplitude_decrease"]
    # the RLN of that side is lost and recovers (probe)
    ev = run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    assert kinds(ev) == ["baseline_set", "loss_of_signal"]  # the RLN's probe baseline, then its loss
    ev = run(e, [s.resp(700.0, 3.8, **PROBE_RLN) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in of_kind(ev, "signal_recovered")] == [("signal_recovered", Site.RLN)]
    # the vagus is still low: its decrease goes on, it is not raised again
    assert e.state()["sides"]["L"]["aps_amplitude"] == "DECREASED"
    assert kinds(run(e, [s.resp(300.0, 6.0) for _ in range(4)])) == []
    assert e.state()["sides"]["L"]["aps_amplitude"] == "DECREASED"


def test_the_stimulus_completing_a_new_baseline_is_not_judged_against_the_old_one():
    e, s = engine(), Stream()
    aps_baseline(e, s, amp=800.0, lat=6.0)
    e.rebaseline(Side.L, t_s=s.t)
    ev = aps_baseline(e, s, amp=300.0, lat=6.0)
    assert kinds(ev) == ["baseline_set"]
    assert e.state()["sides"]["L"]["aps_amplitude"] == "NORMAL"
    # a decrease against the new baseline (300 uV) needs its own three low stimuli
    assert kinds(run(e, [s.resp(140.0, 6.0) for _ in range(2)])) == []
    assert kinds(run(e, [s.resp(140.0, 6.0)])) == ["amplitude_decrease"]


# -- troubleshooting and mapping ---------------------------------------------------------------

def _left_rln_lost():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS), s.resp(850.0, 3.8, **PROBE_RLN)])
    ev = run(e, [s.miss(**PROBE_RLN) for _ in range(2)])
    assert kinds(ev) == ["loss_of_signal"]
    return e, s


def test_only_a_vagal_response_answers_the_contralateral_vagus_check():
    e, s = _left_rln_lost()
    assert "contralateral_vagus" not in e.procedure.troubleshooting(Side.L)["answers"]
    # the right RLN answering, or the right vagus silent, is no answer
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN, side=Side.R), s.miss(**PROBE_VAGUS, side=Side.R)])
    assert "contralateral_vagus" not in e.procedure.troubleshooting(Side.L)["answers"]
    m = s.resp(654.3, 7.0, **PROBE_VAGUS, side=Side.R)
    run(e, [m])
    assert e.procedure.troubleshooting(Side.L)["answers"]["contralateral_vagus"] == {
        "answer": "yes", "by": "monitor", "t_s": m.t_end_s, "note": "response measured (654 uV)"}


def test_a_mapping_point_takes_the_last_rln_probe_stimulus_not_a_vagal_one():
    e, s = _left_rln_lost()
    e.procedure.answer(Side.L, "current_delivered", "yes", t_s=120.0)
    e.procedure.answer(Side.L, "laryngeal_twitch", "no", t_s=121.0)
    e.procedure.answer(Side.L, "contralateral_vagus", "yes", t_s=122.0)
    assert e.procedure.mapping_active(Side.L)
    rln = s.m(842.0, 3.7, **PROBE_RLN, delivered=0.99)
    run(e, [rln, s.resp(610.0, 7.4, **PROBE_VAGUS)])
    mapping = e.procedure.add_mapping_point(Side.L, 4.0, None, s.t)
    p = mapping["points"][-1]
    assert (p["amplitude_uV"], p["latency_ms"], p["stimulus_index"]) == (842.0, 3.7, rln.stimulus.index)


# -- the APS baseline's first stimulus, the step button's stimulus time ------------------------

def test_an_aps_baseline_names_the_first_stimulus_it_averages():
    e, s = engine(), Stream()
    # not part of the baseline: an invalid epoch, a stimulus below the plateau current
    run(e, [s.invalid(), s.resp(800.0, 6.0, set_mA=0.5)])
    first = s.index
    ev = aps_baseline(e, s, amp=800.0, lat=6.0)
    assert kinds(ev) == ["baseline_set"]
    assert ev[0].detail["first_index"] == first == 2 and ev[0].detail["count"] == 20
    assert e.aps_baseline(Side.L)["first_index"] == first
    # a re-baseline names the first stimulus of the new collection
    run(e, [s.resp(800.0, 6.0) for _ in range(3)])
    e.rebaseline(Side.L, t_s=s.t)
    first = s.index
    ev = aps_baseline(e, s, amp=700.0, lat=6.0)
    assert ev[0].detail["first_index"] == first and e.aps_baseline(Side.L)["first_index"] == first


def test_a_poor_v1_recorded_by_the_step_button_keeps_the_stimulus_time_to_the_microsecond():
    e, s = engine(), Stream(t0=10.1234567)
    m = s.resp(150.0, 7.6, **PROBE_VAGUS)
    e.process(m)
    rec = e.record_step(Step.V1, Side.L, t_s=30.0, measurement=m)
    assert kinds(rec.events) == ["poor_baseline"]
    assert rec.events[0].t_s == 30.0
    assert rec.events[0].detail == {
        "basis": "V1", "amplitude_uV": 150.0, "limit_uV": 200.0,
        "message": "Poor V1 baseline: check tube position and electrode contact.",
        "recorded": "step button", "stimulus_t_s": 10.173457,
    }


def test_an_aps_baseline_reports_its_mean_spread_and_number():
    """Mean, population SD and coefficient of variation of the 20 responses, rounded as
    the record shows them (uV to 0.01, ms to 0.001, % to 0.1); the baseline keeps them
    unrounded with the stimulus that completed it and its number in the case."""
    e, s = engine(), Stream()
    amps = [700.0] * 9 + [650.0] + [900.0] * 9 + [900.1234]
    lats = [5.9] * 10 + [6.1] * 9 + [6.1234]
    ms = [s.resp(a, t) for a, t in zip(amps, lats, strict=True)]
    ev = run(e, ms)
    assert kinds(ev) == ["baseline_set"]
    assert ev[0].detail == {
        "source": "APS", "how": "aps_mean", "number": 1,
        "amplitude_uV": 797.51, "latency_ms": 6.001, "count": 20,
        "amplitude_sd_uV": 103.05, "latency_sd_ms": 0.101, "amplitude_cv_pct": 12.9,
        "first_index": 0,
    }
    assert ev[0].detail["amplitude_sd_uV"] == round(statistics.pstdev(amps), 2)
    assert ev[0].detail["latency_sd_ms"] == round(statistics.pstdev(lats), 3)
    b = e.aps_baseline(Side.L)
    assert b is not None
    assert b["amplitude_uV"] == pytest.approx(statistics.fmean(amps), abs=1e-9)
    assert b["latency_ms"] == pytest.approx(statistics.fmean(lats), abs=1e-9)
    assert b["amplitude_sd_uV"] == pytest.approx(statistics.pstdev(amps), abs=1e-6)
    assert b["latency_sd_ms"] == pytest.approx(statistics.pstdev(lats), abs=1e-6)
    assert {k: b[k] for k in ("count", "t_s", "stimulus_index", "first_index", "site", "number", "collecting",
                              "collected")} == {
        "count": 20, "t_s": ms[-1].t_end_s, "stimulus_index": ms[-1].stimulus.index, "first_index": 0,
        "site": "VAGUS", "number": 1, "collecting": False, "collected": 0}
    assert e.state()["sides"]["L"]["aps_collected"] == 0
    # a second baseline of identical responses: no spread at all, and it is the case's second
    e.rebaseline(Side.L, t_s=s.t)
    ev = aps_baseline(e, s, amp=600.0, lat=6.2)
    assert (ev[0].detail["number"], ev[0].detail["amplitude_sd_uV"], ev[0].detail["latency_sd_ms"],
            ev[0].detail["amplitude_cv_pct"]) == (2, 0.0, 0.0, 0.0)
    b = e.aps_baseline(Side.L)
    assert (b["number"], b["amplitude_sd_uV"], b["latency_sd_ms"], b["collected"]) == (2, 0.0, 0.0, 0)


def test_a_poor_aps_baseline_is_raised_when_it_is_set_with_its_mean_and_the_limit():
    e, s = engine(), Stream()
    ms = [s.resp(a, 6.0) for a in [150.0] * 19 + [150.1234]]
    ev = run(e, ms)
    assert kinds(ev) == ["baseline_set", "poor_baseline"]
    pb = ev[1]
    assert (pb.site, pb.side, pb.priority, pb.stimulus_index, pb.t_s) == (
        Site.VAGUS, Side.L, Priority.LOW, ms[-1].stimulus.index, ms[-1].t_end_s)
    assert pb.detail == {
        "basis": "APS baseline", "amplitude_uV": 150.01, "limit_uV": 200.0,  # mean 150.00617 uV
        "message": "Poor APS baseline: check tube position and electrode contact.",
    }


def test_the_first_good_probe_response_becomes_the_site_baseline_with_what_was_measured():
    e, s = engine(), Stream()
    run(e, [s.resp(900.0, 3.9, **PROBE_RLN, set_mA=0.5)])  # below the plateau current: no baseline
    m = s.resp(812.3456, 3.81234, **PROBE_RLN, set_mA=1.5, delivered=1.48)
    ev = run(e, [m])
    assert kinds(ev) == ["baseline_set"]
    assert (ev[0].site, ev[0].side, ev[0].stimulus_index, ev[0].t_s) == (
        Site.RLN, Side.L, m.stimulus.index, m.t_end_s)
    assert ev[0].detail == {
        "source": "PROBE", "how": "first_response", "amplitude_uV": 812.35, "latency_ms": 3.812,
        "count": 1, "set_mA": 1.5,
    }
    assert e.probe_baseline(Site.RLN, Side.L) == {
        "amplitude_uV": 812.3456, "latency_ms": 3.81234, "how": "first_response", "t_s": m.t_end_s,
        "stimulus_index": m.stimulus.index, "set_mA": 1.5,
    }


def test_with_both_sides_lost_each_side_keeps_its_own_open_record():
    """Both RLNs lost (left first): the left's record is still the open one of its side, so
    its answers confirm the loss and its mapping starts."""
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    for side in (Side.L, Side.R):
        run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS, side=side), s.resp(850.0, 3.8, **PROBE_RLN, side=side)])
    for side in (Side.L, Side.R):
        assert kinds(run(e, [s.miss(**PROBE_RLN, side=side) for _ in range(2)])) == ["loss_of_signal"]
    for side in (Side.L, Side.R):
        e.procedure.answer(side, "current_delivered", "yes", t_s=120.0)
        e.procedure.answer(side, "laryngeal_twitch", "no", t_s=121.0)
        e.procedure.answer(side, "contralateral_vagus", "yes", t_s=122.0)
    assert e.procedure.mapping_active(Side.L) and e.procedure.mapping_active(Side.R)
