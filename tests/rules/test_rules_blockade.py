"""Neuromuscular blockade suspected: both sides below 50 % of their reference (APS
baseline, else V1, else R1) with stable latency, falling within 5 minutes of each other.
It replaces the single-side amplitude-decrease advice and recovers as that does."""

from __future__ import annotations

import json

import pytest
from rules_factory import Stream, aps_baseline, engine, kinds, of_kind, run

from app.model import Priority, Side, Site, Source, Step
from app.rules import RuleEngine
from app.rules.conditions import Blockade, NmbSide
from app.settings import Settings

RV = dict(site=Site.VAGUS, source=Source.PROBE, side=Side.R)  # the right vagus, by the probe


def setup(e: RuleEngine, s: Stream) -> None:
    """Left: APS baseline 800 uV / 6.0 ms. Right: V1 by the probe, 600 uV / 5.5 ms."""
    aps_baseline(e, s)
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV)])
    assert e.nmb_reference(Side.L)["basis"] == "aps_baseline"
    assert e.nmb_reference(Side.R)["basis"] == "V1"


def left_down(e, s, n=3):
    """APS on the left at 37.5 % of baseline, latency 103 %."""
    return run(e, [s.resp(300.0, 6.2) for _ in range(n)])


def right_down(e, s, n=3):
    """Probe on the right vagus at 33 % of V1, latency 102 %."""
    return run(e, [s.resp(200.0, 5.6, **RV) for _ in range(n)])


def test_both_sides_down_with_stable_latency():
    e, s = engine(), Stream()
    setup(e, s)
    ev = left_down(e, s)
    assert kinds(ev) == ["amplitude_decrease"]  # one side only: the tube advice
    ev = right_down(e, s, 2)
    assert ev == []  # the 2nd side's 2nd depressed stimulus: not yet
    last = s.resp(200.0, 5.6, **RV)
    ev = e.process(last)
    assert kinds(ev) == ["neuromuscular_blockade_suspected"]
    x = ev[0]
    assert x.priority is Priority.MEDIUM and x.t_s == last.t_end_s and x.stimulus_index == last.stimulus.index
    assert (x.side, x.site) == (Side.R, Site.VAGUS)
    assert "Systemic cause: check train-of-four and relaxant with the anaesthetist." in x.detail["message"]
    assert x.detail["advice"] == "check train-of-four and relaxant with the anaesthetist"
    assert "tube" not in x.detail["message"]
    left, right = x.detail["sides"]["L"], x.detail["sides"]["R"]
    assert left["reference"] == "aps_baseline" and left["amplitude_pct"] == 37.5 and left["source"] == "APS"
    assert right["reference"] == "V1" and right["amplitude_pct"] == pytest.approx(33.3)
    assert right["latency_pct"] == pytest.approx(101.8)
    assert x.detail["apart_s"] == pytest.approx(3.0)
    json.dumps(x.to_json())
    # once per episode
    assert of_kind(left_down(e, s) + right_down(e, s), "neuromuscular_blockade_suspected") == []
    assert e.state()["blockade"]["state"] == "SUSPECTED"


@pytest.mark.parametrize("apart,suspected", [(299.0, True), (300.0, True), (301.0, False)])
def test_the_two_falls_within_5_minutes(apart, suspected):
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    t_left = s.t - s.dt + 0.05
    # the right goes down 'apart' seconds after the left did (its 3rd stimulus)
    s.t = t_left + apart - 0.05 - 2 * s.dt
    ev = right_down(e, s)
    assert ("neuromuscular_blockade_suspected" in kinds(ev)) is suspected


def test_the_right_first_then_the_left_and_the_window_is_a_setting():
    e, s = engine(rules__nmb_window_s=60.0), Stream()
    setup(e, s)
    right_down(e, s)
    s.t += 61.0
    assert "neuromuscular_blockade_suspected" not in kinds(left_down(e, s))
    e, s = engine(rules__nmb_window_s=60.0), Stream()
    setup(e, s)
    right_down(e, s)
    s.t += 55.0
    ev = left_down(e, s)
    # the stimulus completing both raises the blockade only: no tube advice beside it
    assert kinds(ev) == ["neuromuscular_blockade_suspected"]


@pytest.mark.parametrize("amp,lat,down", [
    (299.0, 6.05, True),   # 49.8 % of 600 uV, 110 % of 5.5 ms: stable
    (300.0, 5.5, False),   # 50 %: not below
    (200.0, 6.06, False),  # latency 110.2 %: traction pattern, not a blockade
    (200.0, 6.053, False),  # latency 110.05 %
])
def test_limits_on_the_second_side(amp, lat, down):
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    ev = run(e, [s.resp(amp, lat, **RV) for _ in range(3)])
    assert ("neuromuscular_blockade_suspected" in kinds(ev)) is down


def test_consecutive_count_is_the_amplitude_decrease_count():
    e, s = engine(rules__amplitude_decrease_consecutive=5), Stream()
    setup(e, s)
    left_down(e, s, 5)
    assert right_down(e, s, 4) == []
    assert kinds(right_down(e, s, 1)) == ["neuromuscular_blockade_suspected"]


def test_a_normal_response_breaks_a_side_and_no_response_does_not():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    seq = [s.resp(200.0, 5.6, **RV), s.miss(**RV), s.resp(200.0, 5.6, **RV), s.resp(590.0, 5.5, **RV),
           s.resp(200.0, 5.6, **RV), s.resp(200.0, 5.6, **RV)]
    assert of_kind(run(e, seq), "neuromuscular_blockade_suspected") == []
    assert kinds(run(e, [s.resp(200.0, 5.6, **RV)])) == ["neuromuscular_blockade_suspected"]


def test_the_left_going_back_up_takes_it_out_of_the_pair():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    run(e, [s.resp(800.0, 6.0)])
    assert e.state()["sides"]["L"]["nmb"] == "NORMAL"
    assert of_kind(right_down(e, s), "neuromuscular_blockade_suspected") == []


def test_only_stimuli_of_the_references_site_and_source_are_compared():
    e, s = engine(), Stream()
    setup(e, s)
    # left: probe stimuli of the left vagus and RLN are not compared with the APS baseline
    run(e, [s.resp(100.0, 6.0, site=Site.VAGUS, source=Source.PROBE) for _ in range(4)])
    run(e, [s.resp(150.0, 3.8, site=Site.RLN, source=Source.PROBE) for _ in range(4)])
    assert e.state()["sides"]["L"]["nmb"] == "NORMAL"
    # right: the RLN is not compared with the right V1
    run(e, [s.resp(150.0, 3.8, site=Site.RLN, source=Source.PROBE, side=Side.R) for _ in range(4)])
    assert e.state()["sides"]["R"]["nmb"] == "NORMAL"
    left_down(e, s)
    assert kinds(right_down(e, s)) == ["neuromuscular_blockade_suspected"]


def test_reference_is_the_aps_baseline_else_v1_else_r1():
    e, s = engine(), Stream()
    assert e.nmb_reference(Side.L) is None
    run(e, [s.resp(900.0, 3.8, step=Step.R1, site=Site.RLN, source=Source.PROBE)])
    assert e.nmb_reference(Side.L)["basis"] == "R1" and e.nmb_reference(Side.L)["site"] == "RLN"
    run(e, [s.resp(700.0, 7.5, step=Step.V1, site=Site.VAGUS, source=Source.PROBE)])
    ref = e.nmb_reference(Side.L)
    assert (ref["basis"], ref["site"], ref["amplitude_uV"], ref["latency_ms"]) == ("V1", "VAGUS", 700.0, 7.5)
    aps_baseline(e, s)
    assert e.nmb_reference(Side.L)["basis"] == "aps_baseline"
    # a V1 without a response is no reference
    e, s = engine(), Stream()
    run(e, [s.miss(step=Step.V1, site=Site.VAGUS, source=Source.PROBE)])
    assert e.nmb_reference(Side.L) is None


def test_r1_references_on_both_sides():
    e, s = engine(), Stream()
    p = dict(site=Site.RLN, source=Source.PROBE)
    run(e, [s.resp(900.0, 3.8, step=Step.R1, **p), s.resp(800.0, 3.6, step=Step.R1, side=Side.R, **p)])
    run(e, [s.resp(400.0, 3.9, **p) for _ in range(3)])
    ev = run(e, [s.resp(300.0, 3.7, side=Side.R, **p) for _ in range(3)])
    assert kinds(ev) == ["neuromuscular_blockade_suspected"]
    assert ev[0].detail["sides"]["L"]["reference"] == "R1"


def test_no_reference_no_blockade():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    left_down(e, s)
    # the right vagus was never recorded before: its first responses are its baseline, not a fall
    assert of_kind(right_down(e, s, 6), "neuromuscular_blockade_suspected") == []


def test_the_blockade_does_not_hide_a_loss_of_signal_or_a_combined_event():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    right_down(e, s)
    assert kinds(run(e, [s.resp(300.0, 7.0) for _ in range(3)])) == ["combined_event"]
    assert kinds(run(e, [s.miss(**RV), s.miss(**RV)])) == ["loss_of_signal"]


def test_recovery_on_the_continuous_side_ends_it_on_both_sides():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    right_down(e, s)
    st = e.state()
    assert st["sites"]["VAGUS-L"]["loss"]["conditions"] == ["amplitude_decrease", "neuromuscular_blockade_suspected"]
    assert st["sites"]["VAGUS-R"]["loss"]["conditions"] == ["neuromuscular_blockade_suspected"]
    ev = run(e, [s.resp(400.0, 6.0) for _ in range(2)])
    assert ev == []
    ev = run(e, [s.resp(400.0, 6.0)])
    assert kinds(ev) == ["signal_recovered"]
    assert ev[0].detail["recovered"] == ["amplitude_decrease", "neuromuscular_blockade_suspected"]
    st = e.state()
    assert st["blockade"]["state"] == "IDLE" and st["blockade"]["down"] == {"L": None, "R": None}
    assert st["blockade"]["last_episode"]["ended_t_s"] == ev[0].t_s
    assert st["sites"]["VAGUS-R"]["loss"] is None
    # the right vagus recovering later raises nothing: the blockade is over
    assert run(e, [s.resp(600.0, 5.5, **RV) for _ in range(3)]) == []


def test_recovery_on_the_probed_side_ends_it_and_the_left_gets_its_own_advice_back():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    right_down(e, s)
    ev = run(e, [s.resp(300.0, 5.5, **RV) for _ in range(3)])  # 50 % of V1
    assert kinds(ev) == ["signal_recovered", "amplitude_decrease"]
    assert ev[0].detail["recovered"] == ["neuromuscular_blockade_suspected"] and ev[0].side is Side.R
    # the left vagus is still low although the relaxant wore off: the tube advice again
    ad = ev[1]
    assert (ad.side, ad.site, ad.t_s, ad.stimulus_index) == (Side.L, Site.VAGUS, ev[0].t_s, ev[0].stimulus_index)
    assert ad.detail["after_blockade"] and ad.detail["advice"] == "check tube position, secretions and relaxant"
    assert ad.detail["message"].startswith("The blockade is over but this vagus is still low with stable latency: "
                                           "amplitude decrease")
    assert e.state()["sites"]["VAGUS-L"]["loss"]["conditions"] == ["amplitude_decrease"]
    ev = run(e, [s.resp(400.0, 6.0) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"] and ev[0].detail["recovered"] == ["amplitude_decrease"]


def test_while_it_lasts_the_amplitude_decrease_is_not_raised_and_after_it_can_be_again():
    e, s = engine(), Stream()
    setup(e, s)
    right_down(e, s)
    ev = left_down(e, s)
    assert kinds(ev) == ["neuromuscular_blockade_suspected"]
    assert e.state()["sides"]["L"]["aps_amplitude"] == "DECREASED"  # the rule ran, its advice is replaced
    ev = run(e, [s.resp(800.0, 6.0) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    # a tube problem after the blockade wore off: the tube advice again
    assert kinds(left_down(e, s)) == ["amplitude_decrease"]


def test_a_new_episode_after_the_end():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    right_down(e, s)
    run(e, [s.resp(800.0, 6.0) for _ in range(3)])
    assert of_kind(right_down(e, s), "neuromuscular_blockade_suspected") == []  # the right alone
    assert kinds(left_down(e, s)) == ["neuromuscular_blockade_suspected"]


def test_snapshot_in_the_middle_gives_the_same_events():
    e, s = engine(), Stream()
    setup(e, s)
    left_down(e, s)
    resumed = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    tail = [s.resp(200.0, 5.6, **RV) for _ in range(3)] + [s.resp(800.0, 6.0) for _ in range(3)]
    assert run(resumed, tail) == run(e, tail)
    assert resumed.snapshot() == e.snapshot()


NMB_SIDE_CASES = [
    ("NORMAL", 0, "LOW_STABLE", "NORMAL", 1, ""),
    ("NORMAL", 1, "LOW_STABLE", "NORMAL", 2, ""),
    ("NORMAL", 2, "LOW_STABLE", "DOWN", 3, "side_down"),
    ("NORMAL", 2, "OTHER", "NORMAL", 0, ""),
    ("NORMAL", 2, "SKIP", "NORMAL", 2, ""),
    ("DOWN", 3, "LOW_STABLE", "DOWN", 3, ""),
    ("DOWN", 3, "OTHER", "NORMAL", 0, "side_up"),
    ("DOWN", 3, "SKIP", "DOWN", 3, ""),
    ("DOWN", 3, "RESET", "NORMAL", 0, ""),
]


@pytest.mark.parametrize("state,run_,symbol,nxt,run2,emit", NMB_SIDE_CASES)
def test_nmb_side_transitions(state, run_, symbol, nxt, run2, emit):
    out = NmbSide.MACHINE.step(state, run_, symbol, Settings())
    assert (out.state, out.run, out.emit) == (nxt, run2, emit)


@pytest.mark.parametrize("state,symbol,nxt,emit", [
    ("IDLE", "BOTH_DOWN", "SUSPECTED", "neuromuscular_blockade_suspected"),
    ("IDLE", "NOT_BOTH", "IDLE", ""),
    ("SUSPECTED", "BOTH_DOWN", "SUSPECTED", ""),
    ("SUSPECTED", "NOT_BOTH", "SUSPECTED", ""),
    ("SUSPECTED", "ENDED", "IDLE", ""),
    ("IDLE", "ENDED", "IDLE", ""),
])
def test_blockade_transitions(state, symbol, nxt, emit):
    out = Blockade.MACHINE.step(state, 0, symbol, Settings())
    assert (out.state, out.emit) == (nxt, emit)


@pytest.mark.parametrize("times,symbol", [
    ({"L": None, "R": None}, "NOT_BOTH"),
    ({"L": 10.0, "R": None}, "NOT_BOTH"),
    ({"L": 10.0, "R": 309.9}, "BOTH_DOWN"),
    ({"L": 310.1, "R": 10.0}, "NOT_BOTH"),
])
def test_blockade_classifier(times, symbol):
    assert Blockade.classify(times, Settings()) == symbol


def test_a_v1_recorded_by_button_from_an_untagged_stimulus_is_the_vagus_reference():
    """The surgeon touched the vagus with the probe untagged and pressed V1: the side's
    blockade reference is the vagus (by the probe), so later tagged vagal stimuli are
    compared with it and a blockade is still recognised."""
    e, s = engine(), Stream()
    aps_baseline(e, s)
    untagged = s.resp(600.0, 5.5, site=Site.UNTAGGED, source=Source.PROBE, side=Side.R)
    run(e, [untagged])
    e.record_step(Step.V1, Side.R, untagged.t_end_s, untagged)
    ref = e.nmb_reference(Side.R)
    assert (ref["basis"], ref["site"], ref["source"], ref["amplitude_uV"]) == ("V1", "VAGUS", "PROBE", 600.0)
    left_down(e, s)
    ev = of_kind(right_down(e, s), "neuromuscular_blockade_suspected")  # (beside the site's first baseline)
    assert len(ev) == 1 and ev[0].detail["sides"]["R"]["reference"] == "V1"


def test_a_step_recorded_from_a_tagged_stimulus_keeps_the_stimulus_site():
    """Only an untagged stimulus takes its nerve from the step; a tagged one is compared with
    stimuli of the site it was tagged with."""
    e, s = engine(), Stream()
    tagged = s.resp(600.0, 5.5, site=Site.RLN, source=Source.PROBE, side=Side.R)
    run(e, [tagged])
    e.record_step(Step.V1, Side.R, tagged.t_end_s, tagged)
    ref = e.nmb_reference(Side.R)
    assert (ref["basis"], ref["site"]) == ("V1", "RLN")
