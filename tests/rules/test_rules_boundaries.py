"""Every rule at its boundaries: the first and the last qualifying stimulus, each limit
just inside and just outside (0.9x / 1.1x, 49.9 / 50 %, 3.49 / 3.51 ms, 59.9 / 60.1 s),
with the defaults and with other settings, so that changing a constant or a comparison in
the rules makes one of these fail."""

from __future__ import annotations

import pytest
from rules_factory import Stream, aps_baseline, engine, kinds, of_kind, run

from app.model import Side, Site, Source, Step
from app.rules.conditions import facts
from app.settings import Settings


def P(**kw):
    kw.setdefault("site", Site.RLN)
    kw.setdefault("source", Source.PROBE)
    return kw


def V(**kw):
    kw.setdefault("site", Site.VAGUS)
    kw.setdefault("source", Source.PROBE)
    return kw


def answer(s: Stream, amp: float, **kw):
    """A stimulus the analysis calls a response (the rules apply the threshold again)."""
    return s.m(amp, 3.8, response=True, **P(**kw))


# -- the event threshold: a response reaches it, whatever the analysis said --------------
@pytest.mark.parametrize("threshold", [100.0, 150.0, 60.0, 400.0])
@pytest.mark.parametrize("factor,is_response", [(0.9, False), (0.999, False), (1.0, True), (1.1, True)])
def test_threshold_compare(threshold, factor, is_response):
    st = Settings().with_changes({"analysis.event_threshold_uV": threshold})
    s = Stream()
    assert facts(answer(s, threshold * factor), st).response is is_response
    # the rules see it the same way: 0.9x never arms a site, 1.1x does
    e = engine(analysis__event_threshold_uV=threshold)
    run(e, [answer(s, threshold * factor)])
    assert e.state()["sites"]["RLN-L"]["los"] == ("ARMED" if is_response else "NO_SIGNAL")


@pytest.mark.parametrize("threshold", [100.0, 150.0])
def test_a_response_between_the_default_and_a_raised_threshold(threshold):
    """125 uV: a response at 100 uV, none at 150 uV (a raised threshold in the code
    would turn these into losses of signal)."""
    e, s = engine(analysis__event_threshold_uV=threshold), Stream()
    run(e, [answer(s, 800.0)])
    ev = run(e, [answer(s, 125.0), answer(s, 135.0)])
    assert kinds(ev) == ([] if threshold == 100.0 else ["loss_of_signal"])
    for amp in (0.9 * threshold, 1.1 * threshold):
        e, s = engine(analysis__event_threshold_uV=threshold), Stream()
        run(e, [answer(s, 800.0)])
        ev = run(e, [answer(s, amp), answer(s, amp)])
        assert kinds(ev) == ([] if amp > threshold else ["loss_of_signal"]), amp


# -- loss of signal: the 2nd consecutive qualifying miss, not the 1st --------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_los_at_exactly_the_nth_consecutive_miss(n):
    e, s = engine(rules__los_consecutive=n), Stream()
    run(e, [s.resp(**P())])
    for _ in range(n - 1):
        assert e.process(s.miss(**P())) == []
    assert kinds(e.process(s.miss(**P()))) == ["loss_of_signal"]


@pytest.mark.parametrize("set_mA,delivered,counts", [
    (1.0, 1.0, True), (0.99, 0.99, False),       # rules.los_min_current_mA = 1.0
    (1.0, 0.95, True), (1.0, 0.949, False),      # 95 % of set delivered
    (2.0, 1.90, True), (2.0, 1.898, False),
    (1.0, None, True),                           # not measured: the set current stands
])
def test_qualifying_current(set_mA, delivered, counts):
    e, s = engine(), Stream()
    run(e, [s.resp(**P())])
    ev = run(e, [s.miss(**P(set_mA=set_mA, delivered=delivered)) for _ in range(2)])
    assert ("loss_of_signal" in kinds(ev)) is counts


def test_qualifying_current_follows_its_settings():
    e, s = engine(rules__los_min_current_mA=2.0), Stream()
    run(e, [s.resp(**P())])
    assert of_kind(run(e, [s.miss(**P(set_mA=1.99, delivered=1.99)) for _ in range(2)]), "loss_of_signal") == []
    assert kinds(run(e, [s.miss(**P(set_mA=2.0, delivered=2.0)) for _ in range(2)])) == ["loss_of_signal"]
    e, s = engine(stim__delivered_tolerance_pct=10.0), Stream()
    run(e, [s.resp(**P())])
    assert of_kind(run(e, [s.miss(**P(delivered=0.899)) for _ in range(2)]), "loss_of_signal") == []
    assert kinds(run(e, [s.miss(**P(delivered=0.90)) for _ in range(2)])) == ["loss_of_signal"]


# -- hysteresis: the episode ends at the 2nd consecutive qualifying response -------------
def lost(e, s, **kw):
    run(e, [s.resp(**P(**kw))])
    ev = run(e, [s.miss(**P(**kw)), s.miss(**P(**kw))])
    assert kinds(ev) == ["loss_of_signal"]
    return ev[0]


@pytest.mark.parametrize("end", [1, 2, 3])
def test_episode_ends_at_exactly_the_nth_consecutive_response(end):
    e, s = engine(rules__los_end_consecutive=end), Stream()
    lost(e, s)
    for _ in range(end - 1):
        run(e, [s.resp(150.0, 3.8, **P())])
        assert e.state()["sites"]["RLN-L"]["los"] == "ENDING"
    run(e, [s.resp(150.0, 3.8, **P())])
    assert e.state()["sites"]["RLN-L"]["los"] == "ARMED"
    assert e.state()["sites"]["RLN-L"]["episode"]["ended_stimulus_index"] == s.index - 1


def test_a_miss_between_the_responses_keeps_the_episode():
    e, s = engine(), Stream()
    lost(e, s)
    # hovering at the threshold: response, miss, response, miss ... never two in a row
    seq = [s.resp(105.0, 3.8, **P()), s.miss(**P()), s.m(99.0, 3.8, response=True, **P())] * 20
    assert run(e, seq) == []
    assert e.state()["sites"]["RLN-L"]["los"] in ("LOST", "ENDING")


def _ended_at(e, s, t_end_of_second_response):
    """Loses the RLN, then ends the episode so that the 2nd response's window ends at
    the given time."""
    s.t = 10.0
    lost(e, s)
    s.t = t_end_of_second_response - 0.05 - s.dt
    run(e, [s.resp(150.0, 3.8, **P()), s.resp(150.0, 3.8, **P())])
    assert e.state()["sites"]["RLN-L"]["episode"]["ended_t_s"] == pytest.approx(t_end_of_second_response)


@pytest.mark.parametrize("after,kind", [(59.9, "loss_of_signal_continued"), (60.0, "loss_of_signal_continued"),
                                        (60.1, "loss_of_signal")])
def test_reentry_within_60_s_continues_the_episode(after, kind):
    e, s = engine(), Stream(dt=1.0)
    _ended_at(e, s, 100.05)
    # the new loss is recognised at the end of the 2nd miss: 'after' seconds after the end
    s.t = 100.05 + after - 0.05 - 1.0
    ev = run(e, [s.miss(**P()), s.miss(**P())])
    assert kinds(ev) == [kind]
    if kind == "loss_of_signal_continued":
        x = ev[0]
        assert x.detail["interruption_s"] == pytest.approx(after)
        assert x.detail["episode_t_s"] == pytest.approx(12.05) and x.detail["interruptions"] == 1


@pytest.mark.parametrize("reentry,after,kind", [(10.0, 9.9, "loss_of_signal_continued"),
                                                (10.0, 10.1, "loss_of_signal"),
                                                (0.0, 0.5, "loss_of_signal")])
def test_reentry_is_a_setting(reentry, after, kind):
    e, s = engine(rules__los_reentry_s=reentry), Stream(dt=0.25)
    _ended_at(e, s, 100.05)
    s.t = 100.05 + after - 0.05 - 0.25
    assert kinds(run(e, [s.miss(**P()), s.miss(**P())])) == [kind]


# -- combined event and amplitude decrease at the 3rd, limits at 50 % / 110 % ------------
@pytest.mark.parametrize("n", [1, 3, 5])
def test_combined_event_at_exactly_the_nth(n):
    e, s = engine(rules__combined_consecutive=n), Stream()
    aps_baseline(e, s)  # 800 uV, 6.0 ms
    for _ in range(n - 1):
        assert e.process(s.resp(300.0, 7.0)) == []
    assert kinds(e.process(s.resp(300.0, 7.0))) == ["combined_event"]


@pytest.mark.parametrize("amp,lat,expected", [
    (399.0, 6.61, "combined_event"),      # 49.9 %, 110.2 %
    (399.0, 6.603, "combined_event"),     # 110.05 %: late
    (400.0, 6.61, None),                  # 50 %: not below
    (399.0, 6.60, "amplitude_decrease"),  # 110 % exactly is stable
    (399.0, 6.59, "amplitude_decrease"),
    (400.0, 6.0, None),
])
def test_aps_amplitude_limits(amp, lat, expected):
    e, s = engine(), Stream()
    aps_baseline(e, s)
    ev = run(e, [s.resp(amp, lat) for _ in range(3)])
    assert kinds(ev) == ([expected] if expected else [])


def test_aps_amplitude_limits_are_settings():
    e, s = engine(rules__combined_amplitude_pct=60.0, rules__combined_latency_pct=120.0), Stream()
    aps_baseline(e, s)
    assert kinds(run(e, [s.resp(479.0, 7.21) for _ in range(3)])) == ["combined_event"]
    e, s = engine(rules__combined_amplitude_pct=60.0, rules__combined_latency_pct=120.0), Stream()
    aps_baseline(e, s)
    assert run(e, [s.resp(479.0, 7.20) for _ in range(3)]) == []  # latency 120 %: not late; 59.9 % >= 50 %
    e, s = engine(rules__amplitude_decrease_pct=70.0, rules__amplitude_decrease_consecutive=2), Stream()
    aps_baseline(e, s)
    assert run(e, [s.resp(560.0, 6.0) for _ in range(3)]) == []
    assert kinds(run(e, [s.resp(559.0, 6.0) for _ in range(2)])) == ["amplitude_decrease"]


# -- recovery: the 3rd consecutive at >= 50 % -------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 4])
def test_recovery_at_exactly_the_nth(n):
    e, s = engine(rules__recovery_consecutive=n), Stream()
    lost(e, s)
    for _ in range(n - 1):
        assert e.process(s.resp(400.0, 3.8, **P())) == []
    assert kinds(e.process(s.resp(400.0, 3.8, **P()))) == ["signal_recovered"]


@pytest.mark.parametrize("amp,recovers", [(399.0, False), (400.0, True)])
def test_recovery_limit_is_50_percent_of_the_reference(amp, recovers):
    e, s = engine(), Stream()
    lost(e, s)  # reference: the probe baseline, 800 uV
    ev = run(e, [s.resp(amp, 3.8, **P()) for _ in range(3)])
    assert ("signal_recovered" in kinds(ev)) is recovers


def test_recovery_limit_is_a_setting():
    e, s = engine(rules__recovery_pct=80.0), Stream()
    lost(e, s)
    assert run(e, [s.resp(639.0, 3.8, **P()) for _ in range(3)]) == []
    assert kinds(run(e, [s.resp(640.0, 3.8, **P()) for _ in range(3)])) == ["signal_recovered"]


# -- poor baseline at 199 / 200 uV -------------------------------------------------------
@pytest.mark.parametrize("amp,poor", [(199.0, True), (199.9, True), (200.0, False), (201.0, False)])
def test_poor_v1_limit(amp, poor):
    e, s = engine(), Stream()
    ev = run(e, [s.resp(amp, 6.0, **V(step=Step.V1))])
    assert ("poor_baseline" in kinds(ev)) is poor


@pytest.mark.parametrize("amp,poor", [(199.0, True), (200.0, False)])
def test_poor_aps_baseline_limit(amp, poor):
    e, s = engine(), Stream()
    assert ("poor_baseline" in kinds(aps_baseline(e, s, amp=amp))) is poor


def test_poor_baseline_limit_is_a_setting():
    e, s = engine(rules__poor_baseline_uV=300.0), Stream()
    assert kinds(run(e, [s.resp(299.0, 6.0, **V(step=Step.V1))])) == ["baseline_set", "poor_baseline"]
    e, s = engine(rules__poor_baseline_uV=300.0), Stream()
    assert kinds(run(e, [s.resp(300.0, 6.0, **V(step=Step.V1))])) == ["baseline_set"]


# -- non-recurrent nerve below 3.5 ms ----------------------------------------------------
@pytest.mark.parametrize("lat,suspected", [(3.49, True), (3.5, False), (3.51, False)])
def test_nonrecurrent_limit(lat, suspected):
    e, s = engine(), Stream()
    ev = run(e, [s.resp(600.0, lat, **V(side=Side.R))])
    assert ("nonrecurrent_nerve_suspected" in kinds(ev)) is suspected
    # never on the left
    assert "nonrecurrent_nerve_suspected" not in kinds(run(e, [s.resp(600.0, lat, **V(side=Side.L))]))


def test_nonrecurrent_limit_is_a_setting():
    e, s = engine(rules__nonrecurrent_latency_ms=4.0), Stream()
    assert "nonrecurrent_nerve_suspected" not in kinds(run(e, [s.resp(600.0, 4.0, **V(side=Side.R))]))
    assert "nonrecurrent_nerve_suspected" in kinds(run(e, [s.resp(600.0, 3.99, **V(side=Side.R))]))


# -- no current below 95 % ---------------------------------------------------------------
@pytest.mark.parametrize("delivered,short", [(0.949, True), (0.9499, True), (0.95, False), (1.0, False)])
def test_no_current_limit(delivered, short):
    e, s = engine(), Stream()
    ev = run(e, [s.resp(**P(delivered=delivered))])
    assert ("no_current" in kinds(ev)) is short


def test_no_current_limit_is_a_setting():
    e, s = engine(stim__delivered_tolerance_pct=20.0), Stream()
    assert "no_current" not in kinds(run(e, [s.resp(**P(delivered=0.80))]))
    assert "no_current" in kinds(run(e, [s.resp(**P(delivered=0.799))]))
