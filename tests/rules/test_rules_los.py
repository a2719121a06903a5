"""Loss of signal: the spec's examples and the table, transition by transition."""

from __future__ import annotations

import pytest
from rules_factory import Stream, engine, kinds, of_kind, run

from app.model import InvalidReason, Priority, Side, Site, Source
from app.rules.conditions import LossOfSignal, facts
from app.settings import Settings


def probe(s: Stream, **kw):
    kw.setdefault("site", Site.RLN)
    kw.setdefault("source", Source.PROBE)
    return kw


def test_two_qualifying_misses_raise_one_los_at_the_second():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    run(e, [s.resp(**probe(s))])
    first = s.miss(**probe(s))
    second = s.miss(**probe(s))
    assert e.process(first) == []
    ev = e.process(second)
    assert kinds(ev) == ["loss_of_signal"]
    los = ev[0]
    assert los.t_s == pytest.approx(second.stimulus.t_s + 0.050)
    assert los.t_s == second.t_end_s
    assert los.stimulus_index == second.stimulus.index == 2
    assert (los.site, los.side, los.priority) == (Site.RLN, Side.L, Priority.HIGH)
    assert los.detail["stimulus_indices"] == [1, 2]
    assert los.detail["consecutive"] == 2
    assert los.detail["last_response_amplitude_uV"] == 800.0


def test_no_los_without_an_initially_good_signal():
    e, s = engine(), Stream()
    assert run(e, [s.miss(**probe(s)) for _ in range(10)]) == []
    # the first response arms the site; only then can the signal be lost
    assert run(e, [s.resp(**probe(s)), s.miss(**probe(s)), s.miss(**probe(s))])[-1].kind.value == "loss_of_signal"


@pytest.mark.parametrize("skipped", [
    dict(valid=False, reason=InvalidReason.CAUTERY),
    dict(valid=False, reason=InvalidReason.SATURATED),
    dict(valid=False, reason=InvalidReason.ARTIFACT),
    dict(valid=False, reason=InvalidReason.NO_CHANNEL),
    dict(valid=False, reason=InvalidReason.NO_CURRENT, delivered=0.0),
    dict(set_mA=0.5, delivered=0.5),  # below rules.los_min_current_mA
    dict(set_mA=1.0, delivered=0.9),  # delivered < 95 % of set
    dict(site=Site.UNTAGGED),
])
def test_skipped_stimuli_neither_count_nor_break_a_run(skipped):
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s))])
    kw = probe(s)
    kw.update(skipped)
    amp = None if not skipped.get("valid", True) else 20.0
    seq = [s.miss(**probe(s))] + [s.m(amp, None, **kw) for _ in range(5)]
    assert of_kind(run(e, seq), "loss_of_signal") == []  # the skipped ones do not complete the run
    ev = e.process(s.miss(**probe(s)))  # ... nor break it
    assert kinds(ev) == ["loss_of_signal"]
    assert ev[0].detail["stimulus_indices"] == [1, 7]


def test_untagged_response_does_not_arm_or_end_an_episode():
    e, s = engine(), Stream()
    assert run(e, [s.resp(**probe(s, site=Site.UNTAGGED)), s.miss(**probe(s)), s.miss(**probe(s))]) == []
    run(e, [s.resp(**probe(s))])
    assert kinds(run(e, [s.miss(**probe(s)), s.miss(**probe(s))])) == ["loss_of_signal"]
    # a response of an untagged stimulus does not end the episode ...
    assert run(e, [s.resp(**probe(s, site=Site.UNTAGGED)), s.miss(**probe(s)), s.miss(**probe(s))]) == []


def test_delivered_not_measured_set_current_stands():
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s))])
    assert kinds(run(e, [s.miss(**probe(s, delivered=None)), s.miss(**probe(s, delivered=None))])) == [
        "loss_of_signal"]


def test_exactly_95_percent_delivered_qualifies():
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s, set_mA=1.2, delivered=1.2))])
    ev = run(e, [s.miss(**probe(s, set_mA=1.2, delivered=1.14)), s.miss(**probe(s, set_mA=1.2, delivered=1.14))])
    assert kinds(ev) == ["loss_of_signal"]


def test_once_per_episode_and_two_responses_end_it():
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s))])
    ev = run(e, [s.miss(**probe(s)) for _ in range(20)])
    assert kinds(ev) == ["loss_of_signal"]
    # one weak response (above the event threshold, far below baseline) does not end the
    # episode: the misses after it raise nothing
    assert run(e, [s.resp(150.0, 4.0, **probe(s))]) == []
    assert e.state()["sites"]["RLN-L"]["los"] == "ENDING"
    assert run(e, [s.miss(**probe(s)), s.miss(**probe(s))]) == []
    # two in a row do; a loss 100 s later is a new episode
    assert run(e, [s.resp(150.0, 4.0, **probe(s)), s.resp(150.0, 4.0, **probe(s))]) == []
    assert e.state()["sites"]["RLN-L"]["los"] == "ARMED"
    ev = run(e, [s.miss(dt=100.0, **probe(s)), s.miss(**probe(s))])
    assert kinds(ev) == ["loss_of_signal"]


def test_a_response_in_between_breaks_the_run():
    e, s = engine(), Stream()
    seq = [s.resp(**probe(s))] + [s.miss(**probe(s)), s.resp(**probe(s))] * 10
    assert kinds(run(e, seq)) == ["baseline_set"]  # the probe baseline, nothing else


def test_sites_and_sides_are_separate():
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s, site=Site.RLN, side=Side.L)), s.resp(**probe(s, site=Site.VAGUS, side=Side.L)),
            s.resp(**probe(s, site=Site.RLN, side=Side.R))])
    # alternate misses between sites: no site has two in a row of its own ... until it has
    seq = [s.miss(**probe(s, site=Site.RLN, side=Side.L)), s.resp(**probe(s, site=Site.VAGUS, side=Side.L)),
           s.miss(**probe(s, site=Site.RLN, side=Side.R)), s.miss(**probe(s, site=Site.RLN, side=Side.L))]
    ev = run(e, seq)
    assert [(x.kind.value, x.site, x.side) for x in ev] == [("loss_of_signal", Site.RLN, Side.L)]


def test_ebsln_never_raises_a_los():
    e, s = engine(), Stream()
    seq = [s.resp(400, 3.6, **probe(s, site=Site.EBSLN))] + [s.miss(**probe(s, site=Site.EBSLN)) for _ in range(5)]
    assert run(e, seq) == []
    info = e.ebsln(Side.L)
    assert info["present"] and info["responses"] == 1 and info["stimuli"] == 6
    assert info["max_amplitude_uV"] == 400


def test_response_at_low_current_arms_and_breaks_a_run_but_does_not_end_an_episode():
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s, set_mA=0.5, delivered=0.5))])
    assert run(e, [s.miss(**probe(s)), s.resp(**probe(s, set_mA=0.5, delivered=0.5)), s.miss(**probe(s))]) == []
    assert kinds(run(e, [s.miss(**probe(s))])) == ["loss_of_signal"]
    # an episode ends only on qualifying responses: low current, or current short, are skipped
    weak = [s.resp(**probe(s, set_mA=0.5, delivered=0.5)), s.resp(**probe(s, delivered=0.5))] * 3
    assert set(kinds(run(e, weak))) <= {"no_current"}
    assert e.state()["sites"]["RLN-L"]["los"] == "LOST"
    run(e, [s.resp(**probe(s)), s.resp(**probe(s, set_mA=0.5, delivered=0.5)), s.resp(**probe(s))])
    assert e.state()["sites"]["RLN-L"]["los"] == "ARMED"


def test_response_below_the_event_threshold_is_no_response():
    # the analysis says "response" but the amplitude is below the threshold in use
    e, s = engine(), Stream()
    run(e, [s.resp(**probe(s))])
    ev = run(e, [s.m(90.0, 4.0, response=True, **probe(s)), s.m(95.0, 4.0, response=True, **probe(s))])
    assert kinds(ev) == ["loss_of_signal"]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_los_consecutive_setting_changes_behaviour(n):
    e, s = engine(rules__los_consecutive=n), Stream()
    run(e, [s.resp(**probe(s))])
    for i in range(1, n):
        assert e.process(s.miss(**probe(s))) == [], i
    ev = e.process(s.miss(**probe(s)))
    assert kinds(ev) == ["loss_of_signal"] and ev[0].detail["consecutive"] == n


def test_min_current_and_threshold_settings_change_behaviour():
    # 0.8 mA does not qualify by default, does with rules.los_min_current_mA = 0.5
    for min_mA, expected in ((1.0, []), (0.5, ["loss_of_signal"])):
        e, s = engine(rules__los_min_current_mA=min_mA), Stream()
        run(e, [s.resp(**probe(s))])
        assert kinds(run(e, [s.miss(**probe(s, set_mA=0.8, delivered=0.8)) for _ in range(2)])) == expected
    # a 150 uV response is a response at 100 uV, none at 200 uV
    for thr, expected in ((100.0, []), (200.0, ["loss_of_signal"])):
        e, s = engine(analysis__event_threshold_uV=thr), Stream()
        run(e, [s.resp(**probe(s))])
        assert kinds(run(e, [s.resp(150.0, 4.0, **probe(s)) for _ in range(2)])) == expected
    # tolerance 10 %: 0.91 of 1.0 mA delivered qualifies
    e, s = engine(stim__delivered_tolerance_pct=10.0), Stream()
    run(e, [s.resp(**probe(s))])
    assert "loss_of_signal" in kinds(run(e, [s.miss(**probe(s, delivered=0.91)) for _ in range(2)]))


# -- the table, transition by transition --------------------------------------------------
LOS_TABLE = [
    # state, run, symbol, los_consecutive, next, run', emit (los_end_consecutive 2)
    ("NO_SIGNAL", 0, "RESPONSE", 2, "ARMED", 0, ""),
    ("NO_SIGNAL", 0, "WEAK", 2, "ARMED", 0, ""),
    ("NO_SIGNAL", 0, "MISS", 2, "NO_SIGNAL", 0, ""),
    ("NO_SIGNAL", 0, "SKIP", 2, "NO_SIGNAL", 0, ""),
    ("NO_SIGNAL", 0, "END", 2, "NO_SIGNAL", 0, ""),
    ("ARMED", 0, "RESPONSE", 2, "ARMED", 0, ""),
    ("ARMED", 5, "WEAK", 2, "ARMED", 0, ""),
    ("ARMED", 0, "MISS", 2, "MISSING", 1, ""),
    ("ARMED", 7, "MISS", 2, "MISSING", 1, ""),  # whatever ARMED inherited: the first miss is the first
    ("ARMED", 0, "MISS", 1, "LOST", 1, "loss_of_signal"),
    ("ARMED", 3, "SKIP", 2, "ARMED", 3, ""),
    ("ARMED", 3, "END", 2, "ARMED", 3, ""),
    ("MISSING", 1, "MISS", 2, "LOST", 2, "loss_of_signal"),
    ("MISSING", 1, "MISS", 3, "MISSING", 2, ""),
    ("MISSING", 2, "MISS", 3, "LOST", 3, "loss_of_signal"),
    ("MISSING", 1, "RESPONSE", 2, "ARMED", 0, ""),
    ("MISSING", 1, "WEAK", 2, "ARMED", 0, ""),
    ("MISSING", 1, "SKIP", 2, "MISSING", 1, ""),
    ("MISSING", 1, "END", 2, "MISSING", 1, ""),
    ("LOST", 2, "MISS", 2, "LOST", 3, ""),
    ("LOST", 2, "SKIP", 2, "LOST", 2, ""),
    ("LOST", 2, "WEAK", 2, "LOST", 2, ""),
    ("LOST", 5, "RESPONSE", 2, "ENDING", 1, ""),
    ("LOST", 5, "END", 2, "ARMED", 0, "episode_ended"),
    ("ENDING", 1, "RESPONSE", 2, "ARMED", 2, "episode_ended"),
    ("ENDING", 1, "WEAK", 2, "ENDING", 1, ""),
    ("ENDING", 1, "SKIP", 2, "ENDING", 1, ""),
    ("ENDING", 1, "MISS", 2, "LOST", 1, ""),
    ("ENDING", 1, "END", 2, "ARMED", 0, "episode_ended"),
]


@pytest.mark.parametrize("state,run_,symbol,limit,nxt,run2,emit", LOS_TABLE)
def test_los_transitions(state, run_, symbol, limit, nxt, run2, emit):
    st = Settings().with_changes({"rules.los_consecutive": limit})
    out = LossOfSignal.MACHINE.step(state, run_, symbol, st)
    assert (out.state, out.run, out.emit) == (nxt, run2, emit)


@pytest.mark.parametrize("state,run_,end,nxt,run2,emit", [
    ("LOST", 3, 1, "ARMED", 1, "episode_ended"),
    ("LOST", 3, 3, "ENDING", 1, ""),
    ("ENDING", 1, 3, "ENDING", 2, ""),
    ("ENDING", 2, 3, "ARMED", 3, "episode_ended"),
])
def test_los_end_transitions_follow_the_setting(state, run_, end, nxt, run2, emit):
    st = Settings().with_changes({"rules.los_end_consecutive": end})
    out = LossOfSignal.MACHINE.step(state, run_, "RESPONSE", st)
    assert (out.state, out.run, out.emit) == (nxt, run2, emit)


@pytest.mark.parametrize("kw,symbol", [
    (dict(), "RESPONSE"),
    (dict(amp=20.0, lat=None), "MISS"),
    (dict(amp=None, valid=False), "SKIP"),
    (dict(amp=20.0, lat=None, set_mA=0.9, delivered=0.9), "SKIP"),
    (dict(amp=800.0, set_mA=0.9, delivered=0.9), "WEAK"),
    (dict(amp=800.0, delivered=0.9), "WEAK"),
    (dict(amp=20.0, lat=None, delivered=0.5), "SKIP"),
    (dict(amp=20.0, lat=None, site=Site.UNTAGGED), "SKIP"),
    (dict(site=Site.UNTAGGED), "SKIP"),
    (dict(amp=20.0, lat=None, site=Site.EBSLN), "SKIP"),
])
def test_los_classifier(kw, symbol):
    kw = dict(kw)  # the parameter is shared by every run of the test: never change it
    s = Stream()
    amp = kw.pop("amp", 800.0)
    lat = kw.pop("lat", 4.0)
    m = s.m(amp, lat, source=Source.PROBE, site=kw.pop("site", Site.RLN), **kw)
    assert LossOfSignal.classify(m, facts(m, Settings())) == symbol


# --------------------------------------------------------------------- mapping after a confirmed loss


def _confirm(e, side: Side = Side.L, t: float = 200.0) -> None:
    e.procedure.answer(side, "current_delivered", "yes", t_s=t)
    e.procedure.answer(side, "laryngeal_twitch", "no", t_s=t)
    e.procedure.answer(side, "contralateral_vagus", "yes", t_s=t)


def _lost_left_rln_and_vagus(e, s: Stream) -> list:
    """Probe: left vagus and RLN respond, then both are lost (2 misses each)."""
    ev = run(e, [s.resp(600.0, 7.5, **probe(s, site=Site.VAGUS)), s.resp(850.0, 3.8, **probe(s))])
    ev += run(e, [s.miss(**probe(s)) for _ in range(2)])
    ev += run(e, [s.miss(**probe(s, site=Site.VAGUS)) for _ in range(2)])
    return ev


def test_before_confirmation_an_rln_response_recovers_as_usual():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    ev = _lost_left_rln_and_vagus(e, s)
    assert kinds(of_kind(ev, "loss_of_signal")) == ["loss_of_signal", "loss_of_signal"]
    assert not e.procedure.mapping_active(Side.L)
    ev = run(e, [s.resp(850.0, 3.8, **probe(s)) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in ev] == [("signal_recovered", Site.RLN)]


def test_mapping_responses_distal_to_a_confirmed_loss_are_no_recovery_and_silent_points_no_new_loss():
    """Type 1 injury: after the loss is confirmed, distal RLN points respond and proximal
    ones do not; neither is a recovery or a new loss of signal."""
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    _lost_left_rln_and_vagus(e, s)
    _confirm(e)
    assert e.procedure.mapping_active(Side.L) and not e.procedure.mapping_active(Side.R)
    assert "mapping now" in e.procedure.troubleshooting(Side.L)["message"]
    distal = run(e, [s.resp(850.0, 3.8, **probe(s)) for _ in range(8)])
    proximal = run(e, [s.miss(**probe(s)) for _ in range(4)])
    distal += run(e, [s.resp(850.0, 3.8, **probe(s)) for _ in range(8)])
    assert distal == [] and proximal == []
    # the other side's RLN is monitored as usual
    ev = run(e, [s.resp(800.0, 3.9, **probe(s, side=Side.R))] + [s.miss(**probe(s, side=Side.R)) for _ in range(2)])
    assert [(x.kind.value, x.side) for x in of_kind(ev, "loss_of_signal")] == [("loss_of_signal", Side.R)]


def test_the_vagus_recovers_a_mapped_side_and_with_it_the_rln():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    _lost_left_rln_and_vagus(e, s)
    _confirm(e)
    run(e, [s.resp(850.0, 3.8, **probe(s)) for _ in range(5)])  # mapping
    ev = run(e, [s.resp(600.0, 7.5, **probe(s, site=Site.VAGUS)) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in ev] == [("signal_recovered", Site.VAGUS), ("signal_recovered", Site.RLN)]
    rln = ev[1]
    assert rln.detail["through"] == "VAGUS" and rln.detail["recovered"] == ["loss_of_signal"]
    assert rln.stimulus_index == ev[0].stimulus_index
    assert not e.procedure.mapping_active(Side.L)
    assert e.procedure.troubleshooting(Side.L)["open"] is False
    # the RLN is monitored again: two misses soon after continue its episode (the record
    # opens again), two misses over a minute after its end are a new loss of signal
    ev = run(e, [s.miss(**probe(s)) for _ in range(2)])
    assert [(x.kind.value, x.site) for x in ev] == [("loss_of_signal_continued", Site.RLN)]
    assert e.procedure.troubleshooting(Side.L)["open"] is True
    ev = run(e, [s.resp(600.0, 7.5, **probe(s, site=Site.VAGUS)) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in ev] == [("signal_recovered", Site.RLN)]
    ev = run(e, [s.miss(dt=61.0, **probe(s)), s.miss(**probe(s))])
    assert [(x.kind.value, x.site) for x in ev] == [("loss_of_signal", Site.RLN)]


def test_mapping_ends_with_the_surgeons_verdict_not_true_los():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    _lost_left_rln_and_vagus(e, s)
    _confirm(e)
    assert run(e, [s.resp(850.0, 3.8, **probe(s)) for _ in range(3)]) == []
    e.procedure.set_verdict(Side.L, "not_true_los", "tube rotated, corrected", t_s=230.0)
    assert not e.procedure.mapping_active(Side.L)
    ev = run(e, [s.resp(850.0, 3.8, **probe(s)) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in ev] == [("signal_recovered", Site.RLN)]


def test_the_vagus_recovers_a_mapped_rln_even_when_the_vagus_itself_was_not_lost():
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    run(e, [s.resp(850.0, 3.8, **probe(s))] + [s.miss(**probe(s)) for _ in range(2)])
    _confirm(e)
    ev = run(e, [s.resp(600.0, 7.5, **probe(s, site=Site.VAGUS)) for _ in range(2)])
    ev += run(e, [s.miss(**probe(s, site=Site.VAGUS))])  # a miss breaks the run
    ev += run(e, [s.resp(600.0, 7.5, **probe(s, site=Site.VAGUS)) for _ in range(2)])
    assert of_kind(ev, "signal_recovered") == []
    ev = run(e, [s.resp(600.0, 7.5, **probe(s, site=Site.VAGUS))])
    assert [(x.kind.value, x.site) for x in ev] == [("signal_recovered", Site.RLN)]


def test_mapping_survives_a_snapshot():
    from app.rules import RuleEngine

    e, s = engine(), Stream(t0=100.0, dt=0.25)
    _lost_left_rln_and_vagus(e, s)
    _confirm(e)
    again = RuleEngine.restore(e.settings, e.snapshot())
    assert again.procedure.mapping_active(Side.L)
    assert run(again, [s.resp(850.0, 3.8, **probe(s)) for _ in range(4)]) == []


# --------------------------------------------------------------------- hysteresis and re-entry
def test_a_response_hovering_at_the_threshold_raises_one_loss_of_signal():
    """Continuous vagal stimulation at 1 Hz, the response hovering at 100 uV for five
    minutes: one loss-of-signal onset; each return is one interruption of that episode."""
    import random

    rng = random.Random(7)
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    run(e, [s.resp(800.0, 6.0) for _ in range(25)])
    ev = run(e, [s.m(rng.uniform(80.0, 120.0), 6.0) for _ in range(300)])
    assert kinds(ev).count("loss_of_signal") == 1
    continued = of_kind(ev, "loss_of_signal_continued")
    assert continued and all(x.detail["episode_t_s"] == of_kind(ev, "loss_of_signal")[0].t_s for x in continued)
    assert [x.detail["interruptions"] for x in continued] == list(range(1, len(continued) + 1))
    assert "signal_recovered" not in kinds(ev)  # ~100 uV is far below 50 % of 800 uV
    # the loss record keeps the first onset; the episode lists its interruptions
    st = e.state()["sites"]["VAGUS-L"]
    assert st["loss"]["t_s"] == of_kind(ev, "loss_of_signal")[0].t_s
    assert len(st["episode"]["interruptions"]) == len(continued)


def test_a_continued_loss_after_a_recovery_reopens_the_loss_and_its_record():
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    run(e, [s.resp(**probe(s))])
    first = run(e, [s.miss(**probe(s)), s.miss(**probe(s))])[0]
    ev = run(e, [s.resp(**probe(s)) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert e.state()["sites"]["RLN-L"]["loss"] is None
    ev = run(e, [s.miss(**probe(s)), s.miss(**probe(s))])
    assert kinds(ev) == ["loss_of_signal_continued"]
    x = ev[0]
    # the episode ended at the 2nd response (the 3rd recovered it), lost again 3 s later
    assert x.detail["episode_t_s"] == first.t_s and x.detail["interruption_s"] == pytest.approx(3.0)
    assert x.priority is Priority.HIGH
    assert "the same loss-of-signal episode continues" in x.detail["message"]
    loss = e.state()["sites"]["RLN-L"]["loss"]
    assert loss["t_s"] == first.t_s and loss["conditions"] == ["loss_of_signal"]
    rec = e.procedure.troubleshooting(Side.L)
    assert rec["open"] and rec["id"] == 1
    # its recovery tells the time since the first onset and the interruptions
    ev = run(e, [s.resp(**probe(s)) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert ev[0].detail["time_since_loss_s"] == pytest.approx(ev[0].t_s - first.t_s)
    assert len(ev[0].detail["interruptions"]) == 1
