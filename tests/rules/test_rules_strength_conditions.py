"""The input classifiers of the INMSG conditions at the edges of their vocabulary: which
stimuli may count towards a combined event, an amplitude decrease, a side depressed by a
neuromuscular blockade or a no-current episode, and which must be skipped. Each case is a
stimulus a real case produces (a response whose latency could not be measured, a response
below the event threshold, a stimulus below the plateau current, a probe touch while the
continuous vagal electrode is baselined, the stimulator switched to 0 mA)."""

from __future__ import annotations

import math

import pytest
from rules_factory import DEFAULTS, Stream, aps_baseline, engine, kinds, of_kind, run

from app.model import Measurement, Side, Site, Source, Step
from app.rules.conditions import ApsAmplitude, LossOfSignal, NmbSide, NoCurrent, facts
from app.rules.machine import RuleTableError

ST = DEFAULTS
A0, T0 = 800.0, 6.0  # the APS baseline used throughout


def _nan_latency(m: Measurement) -> Measurement:
    """``m`` (a response) with a latency the analysis could not put a number on."""
    return Measurement(m.stimulus, m.channel, True, None, True, m.amplitude_uV, math.nan, math.nan)


def _aps(m: Measurement, baseline_uV: float | None = A0, baseline_ms: float | None = T0) -> str:
    return ApsAmplitude.classify(m, facts(m, ST), baseline_uV, baseline_ms, ST)


# -- combined event / amplitude decrease ------------------------------------------------------

def test_aps_amplitude_judges_only_valid_aps_stimuli_against_a_whole_baseline():
    s = Stream()
    low = s.resp(300.0, T0)
    assert _aps(low) == "LOW_STABLE"
    # a probe touch of the same vagus is not comparable with the continuous electrode
    assert _aps(s.resp(300.0, T0, source=Source.PROBE)) == "SKIP"
    assert _aps(s.resp(300.0, 7.0, source=Source.PROBE)) == "SKIP"
    # an epoch the analysis could not measure (cautery) is skipped, not "no response"
    assert _aps(s.invalid()) == "SKIP"
    assert _aps(s.miss()) == "ABSENT"
    # a baseline is an amplitude and a latency: half of one is none
    assert _aps(low, A0, None) == "SKIP"
    assert _aps(low, None, T0) == "SKIP"
    assert _aps(low, None, None) == "SKIP"


def test_aps_response_without_a_measurable_latency_is_skipped():
    s = Stream()
    m = _nan_latency(s.resp(300.0, T0))
    assert facts(m, ST).response and facts(m, ST).latency_ms is None
    assert _aps(m) == "SKIP"
    assert _aps(_nan_latency(s.resp(800.0, T0))) == "SKIP"


def test_responses_without_a_latency_neither_count_nor_break_an_amplitude_decrease():
    e, s = engine(), Stream()
    aps_baseline(e, s, amp=A0, lat=T0)
    ev = run(e, [s.resp(300.0, T0), s.resp(300.0, T0), _nan_latency(s.resp(300.0, T0)),
                 _nan_latency(s.resp(800.0, T0))])
    assert kinds(ev) == []
    assert e.state()["sides"]["L"]["aps_amplitude"] == "NORMAL_D"
    ev = run(e, [s.resp(300.0, T0)])
    assert kinds(ev) == ["amplitude_decrease"]
    assert ev[0].stimulus_index == s.index - 1


# -- neuromuscular blockade: one side ---------------------------------------------------------

def _nmb_reference() -> dict:
    e, s = engine(), Stream()
    aps_baseline(e, s, amp=A0, lat=T0)
    ref = e.nmb_reference(Side.L)
    assert ref is not None
    assert (ref["site"], ref["source"], ref["amplitude_uV"], ref["latency_ms"]) == ("VAGUS", "APS", A0, T0)
    return ref


def _nmb(m: Measurement, ref: dict) -> str:
    return NmbSide.classify(m, facts(m, ST), ref, ST)


def test_nmb_side_counts_only_valid_qualifying_responses_with_a_latency():
    ref = _nmb_reference()
    s = Stream()
    assert _nmb(s.resp(300.0, T0), ref) == "LOW_STABLE"
    assert _nmb(s.resp(300.0, 7.0), ref) == "OTHER"  # low and late: traction, not a relaxant
    assert _nmb(s.resp(800.0, T0), ref) == "OTHER"
    # no latency measured: blockade cannot be told from an injury
    assert _nmb(_nan_latency(s.resp(300.0, T0)), ref) == "SKIP"
    # the analysis saw a response but it is below the event threshold (100 uV): no response
    below = s.m(50.0, T0, response=True)
    assert below.latency_ms == T0 and not facts(below, ST).response
    assert _nmb(below, ref) == "SKIP"
    # below the plateau current, or a current shortfall: not comparable with the reference
    assert _nmb(s.resp(300.0, T0, set_mA=0.5), ref) == "SKIP"
    assert _nmb(s.resp(300.0, T0, delivered=0.5), ref) == "SKIP"
    assert _nmb(s.invalid(), ref) == "SKIP"
    assert _nmb(s.miss(), ref) == "SKIP"
    assert _nmb(s.resp(300.0, T0, source=Source.PROBE), ref) == "SKIP"
    assert _nmb(s.resp(300.0, T0, site=Site.RLN), ref) == "SKIP"
    assert NmbSide.classify(s.resp(300.0, T0), facts(s.resp(300.0, T0), ST), None, ST) == "SKIP"


def test_sub_threshold_or_low_current_responses_never_make_a_side_down():
    e, s = engine(), Stream()
    aps_baseline(e, s, amp=A0, lat=T0)
    aps_baseline(e, s, amp=A0, lat=T0, side=Side.R)
    ms = []
    for side in (Side.L, Side.R):
        ms += [s.m(50.0, T0, response=True, side=side) for _ in range(4)]
        ms += [s.resp(300.0, T0, set_mA=0.5, side=side) for _ in range(4)]
    ev = run(e, ms)
    assert "neuromuscular_blockade_suspected" not in kinds(ev)
    assert e.state()["sides"]["L"]["nmb"] == "NORMAL" and e.state()["sides"]["R"]["nmb"] == "NORMAL"


def test_a_v1_recorded_from_an_untagged_stimulus_does_not_make_untagged_stimuli_count():
    e, s = engine(), Stream()
    untagged = dict(site=Site.UNTAGGED, source=Source.PROBE)
    e.process(s.resp(A0, T0, **untagged))
    e.record_step(Step.V1, Side.L, s.t)
    ref = e.nmb_reference(Side.L)
    assert ref is not None and ref["site"] == "VAGUS" and ref["basis"] == "V1"  # the step names the nerve
    low = s.resp(300.0, T0, **untagged)
    assert facts(low, ST).untagged and facts(low, ST).response
    assert _nmb(low, ref) == "SKIP"
    run(e, [s.resp(300.0, T0, **untagged) for _ in range(4)])
    assert e.state()["sides"]["L"]["nmb"] == "NORMAL"


# -- no current -------------------------------------------------------------------------------

def test_a_stimulator_at_zero_ma_neither_ends_nor_starts_a_no_current_episode():
    s = Stream()
    off = s.m(None, None, site=Site.RLN, source=Source.PROBE, set_mA=0.0, delivered=0.0)
    assert NoCurrent.classify(off, facts(off, ST)) == "SKIP"
    short = s.miss(site=Site.RLN, source=Source.PROBE, delivered=0.5)
    assert NoCurrent.classify(short, facts(short, ST)) == "SHORT"

    e, s = engine(), Stream()
    probe = dict(site=Site.RLN, source=Source.PROBE)
    ev = run(e, [s.miss(**probe, delivered=0.5)])
    assert kinds(ev) == ["no_current"]
    # the surgeon turns the probe current to 0 and back up: still the same episode
    ev = run(e, [s.m(None, None, **probe, set_mA=0.0, delivered=0.0), s.miss(**probe, delivered=0.5)])
    assert of_kind(ev, "no_current") == []
    assert e.state()["no_current"]["PROBE"] == "NOT_DELIVERED"


# -- the facts at the edges of the current limits ---------------------------------------------

def test_a_current_exactly_at_the_tolerance_edge_is_delivered():
    """The limit is (100 - tolerance) % of the set current, widened by a relative 1e-9 for
    binary rounding; a measured current exactly at the widened limit is still delivered."""
    s = Stream()
    for set_mA, tol in ((1.0, 5.0), (2.0, 5.0), (1.0, 20.0)):
        st = DEFAULTS.with_changes({"stim.delivered_tolerance_pct": tol})
        edge = set_mA * (100.0 - tol) * (1.0 - 1e-9) / 100.0
        m = s.miss(site=Site.RLN, source=Source.PROBE, set_mA=set_mA, delivered=edge)
        f = facts(m, st)
        assert f.delivered and f.qualifying and not f.short
        assert NoCurrent.classify(m, f) == "DELIVERED"
        assert LossOfSignal.classify(m, f) == "MISS"


def test_a_set_current_exactly_at_the_plateau_edge_qualifies():
    s = Stream()
    for plateau in (0.5, 1.0, 2.0):
        st = DEFAULTS.with_changes({"rules.los_min_current_mA": plateau})
        m = s.miss(site=Site.RLN, source=Source.PROBE, set_mA=plateau * (1.0 - 1e-9), delivered=None)
        f = facts(m, st)
        assert f.qualifying
        assert LossOfSignal.classify(m, f) == "MISS"


# -- the tables' refusals name the table, the state and the input ----------------------------

def test_an_unknown_input_or_a_limit_that_is_no_number_is_refused_by_name():
    with pytest.raises(RuleTableError) as err:
        LossOfSignal.MACHINE.step("ARMED", 0, "BOGUS", DEFAULTS)
    assert str(err.value) == "loss_of_signal: no transition for ARMED on BOGUS"
    with pytest.raises(RuleTableError) as err:
        LossOfSignal.MACHINE.step("ARMED", 0, "MISS", {"rules.los_consecutive": math.nan})
    assert str(err.value) == "loss_of_signal: no guarded transition holds for ARMED on MISS"
