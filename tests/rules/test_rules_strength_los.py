"""Exact contents of a loss-of-signal event: the stimuli it is based on, the values the
record shows (amplitude, current set and delivered, threshold, the last response before
the loss) and the reference amplitude the loss is judged against (which baseline, or
which first response). Each test pins down a value the surgeon or the record sees."""

from __future__ import annotations

import math

from rules_factory import Stream, aps_baseline, engine, kinds, run

from app.model import Side, Site, Source
from app.rules import RuleEngine

PROBE_RLN = dict(site=Site.RLN, source=Source.PROBE)
PROBE_VAGUS = dict(site=Site.VAGUS, source=Source.PROBE)
APS_VAGUS = dict(site=Site.VAGUS, source=Source.APS)


def test_los_detail_lists_every_value_of_the_loss():
    """A probe RLN loss: the two misses, the values of the completing miss, the last
    response before it and the probe baseline it is judged against."""
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    first = s.resp(812.3456, 3.8, **PROBE_RLN)
    assert kinds(run(e, [first])) == ["baseline_set"]
    a = s.m(29.5, None, set_mA=1.2, delivered=1.19, **PROBE_RLN)
    b = s.m(31.456, None, set_mA=1.2, delivered=1.19, **PROBE_RLN)
    ev = run(e, [a, b])
    assert kinds(ev) == ["loss_of_signal"]
    assert (ev[0].site, ev[0].side, ev[0].stimulus_index) == (Site.RLN, Side.L, b.stimulus.index)
    assert ev[0].detail == {
        "source": "PROBE",
        "consecutive": 2,
        "stimulus_indices": [a.stimulus.index, b.stimulus.index],
        "amplitude_uV": 31.46,
        "set_mA": 1.2, "delivered_mA": 1.19,
        "threshold_uV": 100.0,
        "last_response_amplitude_uV": 812.35,
        "last_response_t_s": first.stimulus.t_s,
        "baseline_uV": 812.35, "baseline_basis": "probe_baseline_first_response",
        "pct_of_baseline": 3.9,
        "message": "Loss of signal: no response with current delivered. Start troubleshooting.",
    }


def test_the_threshold_in_the_detail_is_the_one_in_use():
    e, s = engine(analysis__event_threshold_uV=150.0), Stream()
    run(e, [s.resp(**PROBE_RLN)])
    ev = run(e, [s.m(120.0, None, response=True, **PROBE_RLN) for _ in range(2)])
    assert kinds(ev) == ["loss_of_signal"]
    assert ev[0].detail["threshold_uV"] == 150.0
    assert ev[0].detail["amplitude_uV"] == 120.0


def test_a_weak_response_is_the_last_response_before_the_loss():
    """A response at a current below ``rules.los_min_current_mA`` proves conduction: the
    loss that follows names it as the last response and counts its misses from it."""
    e, s = engine(), Stream(t0=50.0, dt=0.5)
    run(e, [s.resp(800.0, 3.8, **PROBE_RLN)])
    m1 = s.miss(**PROBE_RLN)
    weak = s.resp(640.5, 3.9, set_mA=0.5, delivered=0.5, **PROBE_RLN)
    assert run(e, [m1, weak]) == []
    a, b = s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)
    ev = run(e, [a, b])
    assert kinds(ev) == ["loss_of_signal"]
    assert ev[0].detail["last_response_amplitude_uV"] == 640.5
    assert ev[0].detail["last_response_t_s"] == weak.stimulus.t_s
    assert ev[0].detail["stimulus_indices"] == [a.stimulus.index, b.stimulus.index]


def test_aps_loss_before_the_aps_baseline_is_judged_against_the_first_aps_response():
    """APS stimuli before the APS baseline is set (fewer than ``rules.aps_baseline_count``
    responses): the loss is judged against the first APS response of the site."""
    e, s = engine(), Stream()
    run(e, [s.resp(700.123, 6.0, **APS_VAGUS), s.resp(900.0, 6.0, **APS_VAGUS), s.resp(880.0, 6.0, **APS_VAGUS)])
    assert e.aps_baseline(Side.L) is None
    ev = run(e, [s.m(35.0, None, **APS_VAGUS), s.m(35.0, None, **APS_VAGUS)])
    assert kinds(ev) == ["loss_of_signal"]
    d = ev[0].detail
    assert (d["source"], d["baseline_uV"], d["baseline_basis"], d["pct_of_baseline"]) == (
        "APS", 700.12, "first_response_of_source", 5.0)


def test_aps_loss_without_any_aps_response_is_judged_against_the_first_response_of_the_site():
    """The vagus answered only the probe so far; APS misses then lose it: the APS source
    has no response and no baseline of its own, so the site's first response stands."""
    e, s = engine(), Stream()
    assert kinds(run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS)])) == ["baseline_set"]
    ev = run(e, [s.m(30.0, None, **APS_VAGUS), s.m(30.0, None, **APS_VAGUS)])
    assert kinds(ev) == ["loss_of_signal"]
    d = ev[0].detail
    assert (d["source"], d["baseline_uV"], d["baseline_basis"], d["pct_of_baseline"]) == (
        "APS", 600.0, "first_response_of_site", 5.0)
    assert d["last_response_amplitude_uV"] == 600.0


def test_an_rln_recovered_through_its_vagus_counts_a_new_loss_from_its_own_new_misses():
    """The left RLN is lost (four probe misses) and mapped; the vagus recovers it. A loss
    of the RLN after that names only the misses since, not those of the first loss."""
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    run(e, [s.resp(600.0, 7.5, **PROBE_VAGUS), s.resp(850.0, 3.8, **PROBE_RLN)])
    first = run(e, [s.miss(**PROBE_RLN) for _ in range(4)] + [s.miss(**PROBE_VAGUS) for _ in range(2)])
    assert [(x.kind.value, x.site) for x in first] == [("loss_of_signal", Site.RLN), ("loss_of_signal", Site.VAGUS)]
    e.procedure.answer(Side.L, "current_delivered", "yes", t_s=120.0)
    e.procedure.answer(Side.L, "laryngeal_twitch", "no", t_s=121.0)
    e.procedure.answer(Side.L, "contralateral_vagus", "yes", t_s=122.0)
    assert e.procedure.mapping_active(Side.L)
    rec = run(e, [s.resp(610.0, 7.5, **PROBE_VAGUS) for _ in range(3)])
    assert sorted((x.kind.value, x.site.value) for x in rec) == [("signal_recovered", "RLN"),
                                                                  ("signal_recovered", "VAGUS")]
    assert not e.procedure.mapping_active(Side.L)
    a, b = s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)
    ev = run(e, [a, b])
    # within rules.los_reentry_s of the recovery: the same episode goes on
    assert [(x.kind.value, x.site) for x in ev] == [("loss_of_signal_continued", Site.RLN)]
    assert ev[0].detail["episode_stimulus_index"] == first[0].stimulus_index
    assert ev[0].detail["stimulus_indices"] == [a.stimulus.index, b.stimulus.index]


def test_a_flat_miss_is_zero_percent_of_the_baseline():
    """A miss measured at 0 uV (a flat trace, still a valid epoch) is 0 % of the baseline."""
    e, s = engine(), Stream()
    run(e, [s.resp(800.0, 3.8, **PROBE_RLN)])
    ev = run(e, [s.m(0.0, None, **PROBE_RLN) for _ in range(2)])
    assert kinds(ev) == ["loss_of_signal"]
    assert (ev[0].detail["amplitude_uV"], ev[0].detail["pct_of_baseline"]) == (0.0, 0.0)


def test_a_continued_loss_records_its_interruption_for_the_screen_and_the_recovery():
    """A loss, its end (two responses), a new loss 2.123 s later: the episode goes on and
    records when it was interrupted and resumed; the screen shows it open again, and the
    recovery hands the interruptions on."""
    e, s = engine(), Stream(t0=10.0, dt=0.25)
    run(e, [s.resp(800.0, 3.8, **PROBE_RLN)])
    onset = s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)
    assert kinds(run(e, onset)) == ["loss_of_signal"]
    assert e.state()["sites"]["RLN-L"]["episode"] == {
        "t_s": onset[1].t_end_s, "stimulus_index": onset[1].stimulus.index,
        "ended_t_s": None, "ended_stimulus_index": None, "interruptions": []}
    back = s.resp(150.0, 3.8, **PROBE_RLN), s.resp(150.0, 3.8, **PROBE_RLN)
    assert run(e, back) == []
    episode = e.state()["sites"]["RLN-L"]["episode"]
    assert (episode["ended_t_s"], episode["ended_stimulus_index"]) == (back[1].t_end_s, back[1].stimulus.index)
    s.t = back[1].t_end_s + 2.12345 - 0.05 - 0.25
    again = s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)
    ev = run(e, again)
    assert kinds(ev) == ["loss_of_signal_continued"]
    interruption = {"ended_t_s": back[1].t_end_s, "ended_stimulus_index": back[1].stimulus.index,
                    "resumed_t_s": again[1].t_end_s, "resumed_stimulus_index": again[1].stimulus.index,
                    "interruption_s": 2.123}
    assert ev[0].detail == {
        "source": "PROBE", "consecutive": 2,
        "stimulus_indices": [again[0].stimulus.index, again[1].stimulus.index],
        "amplitude_uV": 30.0, "set_mA": 1.0, "delivered_mA": 1.0, "threshold_uV": 100.0,
        "last_response_amplitude_uV": 150.0, "last_response_t_s": back[1].stimulus.t_s,
        "baseline_uV": 800.0, "baseline_basis": "probe_baseline_first_response", "pct_of_baseline": 3.8,
        "episode_t_s": onset[1].t_end_s, "episode_stimulus_index": onset[1].stimulus.index,
        "interrupted_t_s": back[1].t_end_s, "interruption_s": 2.123, "interruptions": 1, "reentry_s": 60.0,
        "message": ("Loss of signal again 2 s after the responses returned: "
                    "the same loss-of-signal episode continues."),
    }
    assert e.state()["sites"]["RLN-L"]["episode"] == {
        "t_s": onset[1].t_end_s, "stimulus_index": onset[1].stimulus.index,
        "ended_t_s": None, "ended_stimulus_index": None, "interruptions": [interruption]}
    rec = run(e, [s.resp(800.0, 3.8, **PROBE_RLN) for _ in range(3)])
    assert kinds(rec) == ["signal_recovered"]
    assert rec[0].detail["interruptions"] == [interruption]


def test_a_loss_exactly_the_reentry_time_and_its_microsecond_after_the_end_continues():
    """Times are sums of floats, so the limit ``rules.los_reentry_s`` allows a
    microsecond: a loss recognised exactly 60.000001 s after the episode ended is still
    the same episode; one a float step later is a new one."""
    for t_second_miss, kind in ((159.950001, "loss_of_signal_continued"),
                                (math.nextafter(159.950001, math.inf), "loss_of_signal")):
        e, s = engine(), Stream(t0=10.0, dt=0.25)
        run(e, [s.resp(800.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN),
                s.resp(150.0, 3.8, **PROBE_RLN)])
        s.t = 99.95
        run(e, [s.resp(150.0, 3.8, **PROBE_RLN)])
        assert e.state()["sites"]["RLN-L"]["episode"]["ended_t_s"] == 100.0
        run(e, [s.miss(**PROBE_RLN)])
        s.t = t_second_miss
        last = s.miss(**PROBE_RLN)
        assert last.t_end_s - 100.0 >= 60.0 + 1e-6
        assert kinds(e.process(last)) == [kind]


def test_an_rln_recovery_leaves_the_vagal_amplitude_decrease_open():
    """The left vagus (APS) is in an amplitude decrease when the left RLN is lost and
    recovers by the probe: the RLN's recovery says nothing about the vagus, so its
    decrease stays open and is not raised again by the next low vagal responses."""
    e, s = engine(), Stream()
    aps_baseline(e, s)  # 800 uV, 6.0 ms
    ev = run(e, [s.resp(300.0, 6.0, **APS_VAGUS) for _ in range(3)])
    assert kinds(ev) == ["amplitude_decrease"]
    run(e, [s.resp(850.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    rec = run(e, [s.resp(850.0, 3.8, **PROBE_RLN) for _ in range(3)])
    assert [(x.kind.value, x.site) for x in rec] == [("signal_recovered", Site.RLN)]
    assert e.state()["sides"]["L"]["aps_amplitude"] == "DECREASED"
    assert run(e, [s.resp(300.0, 6.0, **APS_VAGUS) for _ in range(5)]) == []


# -- what the stream does besides the loss itself ---------------------------------------------

def test_non_recurrent_nerve_event_detail():
    e, s = engine(), Stream()
    m = s.resp(712.345, 3.1234, site=Site.VAGUS, side=Side.R, source=Source.PROBE)
    ev = [x for x in e.process(m) if x.kind.value == "nonrecurrent_nerve_suspected"]
    assert len(ev) == 1
    assert (ev[0].site, ev[0].side, ev[0].stimulus_index, ev[0].t_s) == (
        Site.VAGUS, Side.R, m.stimulus.index, m.t_end_s)
    assert ev[0].detail == {
        "source": "PROBE", "latency_ms": 3.123, "limit_ms": 3.5, "amplitude_uV": 712.35,
        "message": "Short right vagal latency: a non-recurrent laryngeal nerve is suspected.",
    }


def test_a_miss_before_the_first_response_is_no_reference():
    """An APS miss before the vagus ever responded neither arms the site nor becomes its
    first response: the loss after the first response is judged against that response."""
    e, s = engine(), Stream()
    assert run(e, [s.m(30.0, None, **APS_VAGUS)]) == []
    assert e.state()["sites"]["VAGUS-L"]["first_response"] is None
    run(e, [s.resp(700.0, 6.0, **APS_VAGUS)])
    ev = run(e, [s.m(35.0, None, **APS_VAGUS), s.m(35.0, None, **APS_VAGUS)])
    assert kinds(ev) == ["loss_of_signal"]
    assert (ev[0].detail["baseline_uV"], ev[0].detail["baseline_basis"], ev[0].detail["pct_of_baseline"]) == (
        700.0, "first_response_of_source", 5.0)


def test_the_stimulus_completing_a_new_aps_baseline_is_not_judged_against_the_old_one():
    """During an operator's re-baseline the old baseline is not used: the 20th response
    (far below the old baseline) completes the new one and starts no decrease run, so
    a decrease against the new baseline takes its full three stimuli."""
    e, s = engine(), Stream()
    aps_baseline(e, s)  # 800 uV, 6.0 ms
    e.rebaseline(Side.L, Source.APS, t_s=s.t)
    ev = run(e, [s.resp(1000.0, 6.0, **APS_VAGUS) for _ in range(19)] + [s.resp(300.0, 6.0, **APS_VAGUS)])
    assert kinds(ev) == ["baseline_set"] and ev[0].detail["amplitude_uV"] == 965.0
    assert e.state()["sides"]["L"]["aps_amplitude"] == "NORMAL"
    assert run(e, [s.resp(400.0, 6.0, **APS_VAGUS) for _ in range(2)]) == []
    assert kinds(run(e, [s.resp(400.0, 6.0, **APS_VAGUS)])) == ["amplitude_decrease"]


def test_the_snapshot_counts_the_measurements_and_a_resumed_case_goes_on_counting():
    e, s = engine(), Stream()
    run(e, [s.resp(**PROBE_RLN), s.miss(**PROBE_RLN), s.invalid(**PROBE_RLN)])
    snap = e.snapshot()
    assert snap["count"] == 3
    resumed = RuleEngine.restore(e.settings, snap)
    run(resumed, [s.resp(**PROBE_RLN)])
    assert resumed.snapshot()["count"] == 4


def test_a_response_without_a_finite_latency_is_skipped_by_the_vagal_amplitude_rules():
    """A low APS response whose latency is not finite cannot tell traction from
    displacement: neither the combined event / amplitude decrease nor the blockade
    count it (and nothing fails on it)."""
    e, s = engine(), Stream()
    aps_baseline(e, s)  # 800 uV, 6.0 ms
    before = e.state()["sides"]["L"]
    assert run(e, [s.resp(300.0, math.nan, **APS_VAGUS) for _ in range(5)]) == []
    after = e.state()["sides"]["L"]
    assert (after["aps_amplitude"], after["nmb"]) == (before["aps_amplitude"], before["nmb"]) == ("NORMAL", "NORMAL")
    # the run of low responses was not started: three measurable ones are needed
    assert run(e, [s.resp(300.0, 6.0, **APS_VAGUS) for _ in range(2)]) == []
    assert kinds(run(e, [s.resp(300.0, 6.0, **APS_VAGUS)])) == ["amplitude_decrease"]


def test_low_current_responses_do_not_put_a_side_down_for_a_blockade():
    """A response to a stimulus below ``rules.los_min_current_mA`` is small because of
    the current: it does not count towards a neuromuscular blockade."""
    e, s = engine(), Stream()
    aps_baseline(e, s)  # 800 uV, 6.0 ms
    run(e, [s.resp(300.0, 6.0, set_mA=0.5, delivered=0.5, **APS_VAGUS) for _ in range(5)])
    assert e.state()["sides"]["L"]["nmb"] == "NORMAL"


def test_a_stimulus_set_to_zero_neither_ends_nor_restarts_a_no_current_episode():
    """Set current 0 is no stimulus of the output: between two stimuli whose current was
    not delivered it does not end the episode, so no second event is raised."""
    e, s = engine(), Stream()
    seq = [s.resp(**PROBE_RLN), s.m(30.0, None, delivered=0.2, **PROBE_RLN),
           s.m(30.0, None, set_mA=0.0, delivered=0.0, **PROBE_RLN),
           s.m(30.0, None, delivered=0.2, **PROBE_RLN)]
    assert kinds(run(e, seq)) == ["baseline_set", "no_current"]
    assert e.state()["no_current"]["PROBE"] == "NOT_DELIVERED"


def test_no_current_event_detail():
    e, s = engine(), Stream()
    m = s.m(30.0, None, set_mA=1.87654, delivered=0.91357, **PROBE_RLN)
    ev = e.process(m)
    assert kinds(ev) == ["no_current"]
    assert (ev[0].site, ev[0].side, ev[0].stimulus_index, ev[0].t_s) == (Site.RLN, Side.L, m.stimulus.index, m.t_end_s)
    assert ev[0].detail == {
        "source": "PROBE", "set_mA": 1.877, "delivered_mA": 0.914, "delivered_pct": 48.7, "tolerance_pct": 5.0,
        "message": "Stimulus current not delivered as set: check probe, leads, contact and a dry field.",
    }


def test_the_screen_shows_the_first_response_of_a_site():
    e, s = engine(), Stream()
    run(e, [s.m(30.0, None, **PROBE_RLN)])
    first = s.resp(812.5, 3.75, **PROBE_RLN)
    run(e, [first, s.resp(900.0, 3.9, **PROBE_RLN), s.resp(700.0, 6.0, site=Site.RLN, source=Source.APS)])
    assert e.state()["sites"]["RLN-L"]["first_response"] == {
        "amplitude_uV": 812.5, "latency_ms": 3.75, "t_s": first.stimulus.t_s,
        "stimulus_index": first.stimulus.index, "source": "PROBE"}


def test_only_a_vagal_response_answers_the_contralateral_vagus_check():
    """The left RLN is lost; a right RLN response or a right vagal miss says nothing of
    the contralateral vagus; a right vagal response answers the check "yes", with its
    time and amplitude."""
    e, s = engine(), Stream()
    run(e, [s.resp(850.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    assert e.procedure.troubleshooting(Side.L)["answers"].get("contralateral_vagus") is None
    run(e, [s.resp(800.0, 3.8, site=Site.RLN, side=Side.R, source=Source.PROBE),
            s.m(40.0, None, site=Site.VAGUS, side=Side.R, source=Source.PROBE)])
    assert e.procedure.troubleshooting(Side.L)["answers"].get("contralateral_vagus") is None
    v = s.resp(612.4, 7.2, site=Site.VAGUS, side=Side.R, source=Source.PROBE)
    run(e, [v])
    assert e.procedure.troubleshooting(Side.L)["answers"]["contralateral_vagus"] == {
        "answer": "yes", "by": "monitor", "t_s": v.t_end_s, "note": "response measured (612 uV)"}


def test_the_continued_loss_message_says_how_long_the_responses_were_back_in_a_persons_words():
    """The message reads the interruption as the screen writes a duration: half a second is
    "1 s" (not "0 s", which would say the loss never ended), 59.5 s is "1 min 00 s"."""
    for gap_s, words in ((0.5, "1 s"), (2.4, "2 s"), (59.5, "1 min 00 s")):
        e, s = engine(), Stream(t0=10.0, dt=0.25)
        run(e, [s.resp(800.0, 3.8, **PROBE_RLN)])
        assert kinds(run(e, [s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])) == ["loss_of_signal"]
        back = s.resp(150.0, 3.8, **PROBE_RLN), s.resp(150.0, 3.8, **PROBE_RLN)
        assert run(e, back) == []
        s.t = back[1].t_end_s + gap_s - 0.05 - 0.25  # the second miss ends gap_s after the responses
        ev = run(e, [s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
        assert kinds(ev) == ["loss_of_signal_continued"], gap_s
        assert ev[0].detail["interruption_s"] == gap_s
        assert ev[0].detail["message"] == (f"Loss of signal again {words} after the responses returned: "
                                           "the same loss-of-signal episode continues.")
