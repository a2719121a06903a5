"""Continuous (APS) monitoring: baseline, combined event, amplitude decrease, recovery."""

from __future__ import annotations

import statistics

import pytest
from rules_factory import Stream, aps_baseline, engine, kinds, of_kind, run

from app.model import Priority, Side, Site, Source


def test_baseline_is_the_mean_of_the_first_20_valid_qualifying_responses():
    e, s = engine(), Stream()
    amps = [600.0 + 10 * i for i in range(20)]
    lats = [6.0 + 0.01 * i for i in range(20)]
    seq = []
    for a, t in zip(amps, lats, strict=True):
        seq.append(s.resp(a, t))
        # skipped in between: invalid, no response, below the plateau current, current short, other side,
        # probe stimuli at the vagus
        seq += [s.invalid(), s.miss(), s.resp(100.0, 9.0, set_mA=0.5, delivered=0.5),
                s.resp(150.0, 9.0, delivered=0.5), s.resp(150.0, 9.0, side=Side.R),
                s.resp(150.0, 9.0, source=Source.PROBE)]
    ev = of_kind(run(e, seq[:-6]), "baseline_set")
    aps_ev = [x for x in ev if x.detail["source"] == "APS" and x.side is Side.L]
    assert len(aps_ev) == 1
    b = aps_ev[0]
    assert b.detail["count"] == 20
    assert b.detail["amplitude_uV"] == pytest.approx(statistics.mean(amps), abs=0.01)
    assert b.detail["latency_ms"] == pytest.approx(statistics.mean(lats), abs=0.001)
    assert b.detail["amplitude_sd_uV"] == pytest.approx(statistics.pstdev(amps), abs=0.01)
    assert b.stimulus_index == seq[-7].stimulus.index  # the 20th response completed it
    assert b.t_s == seq[-7].t_end_s
    assert b.priority is Priority.INFO
    assert e.aps_baseline(Side.L)["amplitude_uV"] == pytest.approx(statistics.mean(amps))
    assert e.aps_baseline(Side.R) is None  # only one right APS response so far


def test_nineteen_responses_are_no_baseline():
    e, s = engine(), Stream()
    assert aps_baseline(e, s, n=19) == []
    assert e.state()["sides"]["L"]["aps_collected"] == 19
    assert kinds(aps_baseline(e, s, n=1)) == ["baseline_set"]


def test_baseline_count_is_a_setting():
    e, s = engine(rules__aps_baseline_count=30), Stream()
    assert aps_baseline(e, s, n=29) == []
    assert kinds(aps_baseline(e, s, n=1)) == ["baseline_set"]


def test_poor_aps_baseline_is_low_priority_check_tube():
    e, s = engine(), Stream()
    ev = aps_baseline(e, s, amp=180.0)
    assert kinds(ev) == ["baseline_set", "poor_baseline"]
    assert ev[1].priority is Priority.LOW and ev[1].detail["basis"] == "APS baseline"
    assert "tube" in ev[1].detail["message"]
    # with the limit lowered to 150 uV the same baseline is fine
    e, s = engine(rules__poor_baseline_uV=150.0), Stream()
    assert kinds(aps_baseline(e, s, amp=180.0)) == ["baseline_set"]


def low_late(s, **kw):
    return s.resp(300.0, 7.0, **kw)  # 37.5 % of 800 uV, 117 % of 6 ms


def low_stable(s, **kw):
    return s.resp(300.0, 6.2, **kw)  # 37.5 %, 103 %


def test_combined_event_on_three_consecutive():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    a, b_, c3 = low_late(s), low_late(s), low_late(s)
    assert e.process(a) == [] and e.process(b_) == []
    ev = e.process(c3)
    assert kinds(ev) == ["combined_event"]
    x = ev[0]
    assert x.priority is Priority.HIGH and x.t_s == c3.t_end_s and x.stimulus_index == c3.stimulus.index
    assert x.detail["amplitude_pct"] == 37.5 and x.detail["latency_pct"] == pytest.approx(116.7)
    assert x.detail["baseline_amplitude_uV"] == 800.0 and x.detail["baseline_latency_ms"] == 6.0
    # once per episode
    assert run(e, [low_late(s) for _ in range(10)]) == []


def test_amplitude_decrease_on_three_consecutive_is_medium_check_tube():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    ev = run(e, [low_stable(s) for _ in range(3)])
    assert kinds(ev) == ["amplitude_decrease"]
    assert ev[0].priority is Priority.MEDIUM
    assert ev[0].detail["advice"] == "check tube position, secretions and relaxant"
    msg = ev[0].detail["message"]
    assert msg.index("tube position") < msg.index("secretions") < msg.index("relaxant")
    assert ev[0].stimulus_index == 22


def test_two_then_a_normal_one_is_nothing():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    seq = [low_late(s), low_late(s), s.resp(), low_late(s), low_late(s), s.resp(),
           low_stable(s), low_stable(s), s.resp(), low_stable(s), low_stable(s), s.resp()]
    assert run(e, seq) == []


def test_mixed_low_late_and_low_stable_break_each_others_run():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    seq = [low_late(s), low_late(s), low_stable(s), low_stable(s), low_late(s), low_stable(s)]
    assert run(e, seq) == []
    assert kinds(run(e, [low_stable(s), low_stable(s)])) == ["amplitude_decrease"]


def test_boundaries_are_strict():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    # exactly 50 % and exactly 110 %: neither condition
    assert run(e, [s.resp(400.0, 6.6) for _ in range(5)]) == []
    # just below 50 % with exactly 110 %: latency counts as stable -> decrease
    assert kinds(run(e, [s.resp(399.9, 6.6) for _ in range(3)])) == ["amplitude_decrease"]


def test_no_response_neither_counts_nor_breaks_the_runs():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    # combined, none, combined, none, combined -> combined at the 5th (LOS never: no two misses in a row)
    seq = [low_late(s), s.miss(), low_late(s), s.miss(), low_late(s)]
    ev = run(e, seq)
    assert kinds(ev) == ["combined_event"] and ev[0].stimulus_index == seq[-1].stimulus.index
    # nor are three misses in a row a combined event or a decrease: they are a LOS
    e, s = engine(), Stream()
    aps_baseline(e, s)
    assert kinds(run(e, [s.miss() for _ in range(3)])) == ["loss_of_signal"]


def test_invalid_and_non_qualifying_are_skipped():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    seq = [low_late(s), s.invalid(), low_late(s, delivered=0.8), low_late(s, set_mA=0.5, delivered=0.5),
           low_late(s, source=Source.PROBE), low_late(s, side=Side.R), low_late(s)]
    ev = run(e, seq)
    assert of_kind(ev, "combined_event") == []
    ev = e.process(low_late(s))
    assert kinds(ev) == ["combined_event"]


def test_decrease_escalates_to_combined_but_combined_is_not_downgraded():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    assert kinds(run(e, [low_stable(s) for _ in range(3)])) == ["amplitude_decrease"]
    assert kinds(run(e, [low_late(s) for _ in range(3)])) == ["combined_event"]
    assert run(e, [low_stable(s) for _ in range(5)]) == []
    assert e.state()["sides"]["L"]["aps_amplitude"] == "COMBINED"


def test_los_coexists_with_an_open_combined_event():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    ev = run(e, [low_late(s) for _ in range(3)] + [s.miss(), s.miss()])
    assert kinds(ev) == ["combined_event", "loss_of_signal"]
    st = e.state()["sites"]["VAGUS-L"]
    assert st["los"] == "LOST" and st["loss"]["conditions"] == ["combined_event", "loss_of_signal"]
    # the loss record keeps the first event's time
    assert st["loss"]["t_s"] == ev[0].t_s


def test_percentages_and_run_lengths_are_settings():
    # 60 % amplitude limit makes 450 uV (56 %) count
    e, s = engine(rules__combined_amplitude_pct=60.0, rules__combined_latency_pct=105.0), Stream()
    aps_baseline(e, s)
    assert kinds(run(e, [s.resp(450.0, 6.4) for _ in range(3)])) == ["combined_event"]  # 106.7 % > 105 %
    e, s = engine(rules__combined_consecutive=5), Stream()
    aps_baseline(e, s)
    assert run(e, [low_late(s) for _ in range(4)]) == []
    assert kinds(run(e, [low_late(s)])) == ["combined_event"]
    e, s = engine(rules__amplitude_decrease_pct=30.0), Stream()
    aps_baseline(e, s)
    assert run(e, [low_stable(s) for _ in range(5)]) == []  # 37.5 % is not below 30 %
    assert kinds(run(e, [s.resp(200.0, 6.0) for _ in range(3)])) == ["amplitude_decrease"]
    e, s = engine(rules__amplitude_decrease_consecutive=1), Stream()
    aps_baseline(e, s)
    assert kinds(run(e, [low_stable(s)])) == ["amplitude_decrease"]


def test_recovery_after_combined_event_with_time_since_loss():
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    aps_baseline(e, s)
    combined = run(e, [low_late(s) for _ in range(3)])[0]
    run(e, [low_late(s) for _ in range(30)])
    seq = [s.resp(420.0, 6.5), s.resp(300.0, 6.5), s.resp(420.0, 6.5), s.resp(500.0, 6.5), s.resp(600.0, 6.1)]
    ev = run(e, seq)
    assert kinds(ev) == ["signal_recovered"]
    r = ev[0]
    assert r.stimulus_index == seq[-1].stimulus.index and r.t_s == seq[-1].t_end_s
    assert r.priority is Priority.INFO
    assert r.detail["time_since_loss_s"] == pytest.approx(r.t_s - combined.t_s) == pytest.approx(35.0)
    assert r.detail["recovered"] == ["combined_event"]
    assert r.detail["baseline_uV"] == 800.0 and r.detail["pct_of_baseline"] == 75.0
    assert e.state()["sides"]["L"]["aps_amplitude"] == "NORMAL"
    # a new episode after the recovery raises again
    assert kinds(run(e, [low_late(s) for _ in range(3)])) == ["combined_event"]


def test_recovery_run_skips_invalid_and_is_broken_by_a_low_one():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [low_stable(s) for _ in range(3)])
    seq = [s.resp(), s.invalid(), s.resp(), s.miss(), s.resp(), s.resp(set_mA=0.5, delivered=0.5), s.resp()]
    assert run(e, seq) == []
    assert kinds(run(e, [s.resp()])) == ["signal_recovered"]


def test_recovery_settings():
    e, s = engine(rules__recovery_pct=80.0, rules__recovery_consecutive=2), Stream()
    aps_baseline(e, s)
    run(e, [low_stable(s) for _ in range(3)])
    assert run(e, [s.resp(600.0, 6.0) for _ in range(4)]) == []  # 75 % < 80 %
    assert kinds(run(e, [s.resp(650.0, 6.0) for _ in range(2)])) == ["signal_recovered"]


def test_recovery_after_los_by_probe_uses_the_probe_baseline():
    e, s = engine(), Stream(t0=0.0, dt=0.5)
    p = dict(site=Site.RLN, source=Source.PROBE)
    run(e, [s.resp(1000.0, 3.8, **p)])  # first good response at 1 mA: the baseline
    los = of_kind(run(e, [s.miss(**p), s.miss(**p)]), "loss_of_signal")[0]
    # 400 uV responses end the LOS episode but are 40 % of baseline: no recovery
    assert run(e, [s.resp(400.0, 3.8, **p) for _ in range(5)]) == []
    assert e.state()["sites"]["RLN-L"]["los"] == "ARMED"
    ev = run(e, [s.resp(520.0, 3.8, **p) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert ev[0].detail["baseline_basis"] == "probe_baseline_first_response"
    assert ev[0].detail["time_since_loss_s"] == pytest.approx(ev[0].t_s - los.t_s)
    assert ev[0].detail["recovered"] == ["loss_of_signal"]


def test_a_second_los_before_recovery_keeps_the_time_of_the_first_loss():
    e, s = engine(), Stream(t0=0.0, dt=1.0)
    p = dict(site=Site.RLN, source=Source.PROBE)
    run(e, [s.resp(1000.0, 3.8, **p)])
    first = run(e, [s.miss(**p), s.miss(**p)])[-1]
    # weak responses end the episode without a recovery; 90 s later the signal is lost again
    run(e, [s.resp(200.0, 3.8, **p), s.resp(200.0, 3.8, **p)])
    second = run(e, [s.miss(dt=90.0, **p), s.miss(**p)])
    assert kinds(second) == ["loss_of_signal"]
    ev = run(e, [s.resp(1000.0, 3.8, **p) for _ in range(3)])
    assert ev[0].detail["loss_t_s"] == first.t_s
    assert ev[0].detail["time_since_loss_s"] == pytest.approx(ev[0].t_s - first.t_s)


def test_recovery_needs_the_same_source():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [s.resp(1000.0, 6.0, source=Source.PROBE)])  # probe baseline at the vagus
    run(e, [low_stable(s) for _ in range(3)])
    seq = [s.resp(), s.resp(900.0, 6.0, source=Source.PROBE), s.resp(), s.resp(200.0, 6.0, source=Source.PROBE)]
    assert run(e, seq) == []  # APS: 2 OK so far; probe: OK then LOW
    ev = run(e, [s.resp()])
    assert kinds(ev) == ["signal_recovered"] and ev[0].detail["source"] == "APS"


def test_captured_probe_baseline_is_the_recovery_reference():
    e, s = engine(), Stream()
    p = dict(site=Site.RLN, source=Source.PROBE)
    first = s.resp(500.0, 3.8, **p)
    assert kinds(e.process(first)) == ["baseline_set"]
    big = s.resp(1200.0, 3.7, **p)
    assert e.process(big) == []  # the first good response stays the baseline ...
    ev = e.capture_baseline(Site.RLN, Side.L, big, t_s=99.0)
    assert kinds(ev) == ["baseline_set"] and ev[0].t_s == 99.0 and ev[0].detail["how"] == "captured"
    assert e.probe_baseline(Site.RLN, Side.L)["amplitude_uV"] == 1200.0
    run(e, [s.resp(1300.0, 3.7, **p)])
    assert e.probe_baseline(Site.RLN, Side.L)["amplitude_uV"] == 1200.0  # ... a captured one is kept
    run(e, [s.miss(**p), s.miss(**p)])
    assert run(e, [s.resp(550.0, 3.8, **p) for _ in range(3)]) == []  # 46 % of the captured baseline
    assert kinds(run(e, [s.resp(650.0, 3.8, **p) for _ in range(3)])) == ["signal_recovered"]


def test_probe_baseline_needs_one_milliamp():
    e, s = engine(), Stream()
    p = dict(site=Site.RLN, source=Source.PROBE)
    assert run(e, [s.resp(900.0, 3.8, set_mA=0.5, delivered=0.5, **p)]) == []
    ev = run(e, [s.resp(700.0, 3.8, **p)])
    assert kinds(ev) == ["baseline_set"] and ev[0].detail["amplitude_uV"] == 700.0


def test_capture_baseline_refuses_nonsense():
    e, s = engine(), Stream()
    with pytest.raises(ValueError, match="not a valid response"):
        e.capture_baseline(Site.RLN, Side.L, s.miss(site=Site.RLN, source=Source.PROBE))
    with pytest.raises(ValueError, match="not a valid response"):
        e.capture_baseline(Site.RLN, Side.L, s.invalid(site=Site.RLN, source=Source.PROBE))
    with pytest.raises(ValueError, match="from side R"):
        e.capture_baseline(Site.RLN, Side.L, s.resp(site=Site.RLN, side=Side.R, source=Source.PROBE))
    with pytest.raises(ValueError, match="only VAGUS and RLN"):
        e.capture_baseline(Site.EBSLN, Side.L, s.resp(site=Site.EBSLN, source=Source.PROBE))


def test_probe_rebaseline_takes_the_next_good_response():
    e, s = engine(), Stream()
    p = dict(site=Site.RLN, source=Source.PROBE)
    run(e, [s.resp(500.0, 3.8, **p)])
    e.rebaseline(Side.L, Source.PROBE, t_s=5.0, site=Site.RLN)
    assert e.probe_baseline(Site.RLN, Side.L) is None
    ev = run(e, [s.resp(900.0, 3.8, **p)])
    assert kinds(ev) == ["baseline_set"] and e.probe_baseline(Site.RLN, Side.L)["amplitude_uV"] == 900.0


def test_rebaseline_takes_20_new_stimuli_and_ends_the_amplitude_episode():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [low_stable(s) for _ in range(3)])  # tube displaced: decrease
    assert e.rebaseline(Side.L, Source.APS, t_s=s.t) == []
    # during collection nothing is compared
    ev = run(e, [low_stable(s) for _ in range(19)])
    assert ev == []
    assert e.state()["sites"]["VAGUS-L"]["loss"] is None
    ev = run(e, [low_stable(s)])
    assert kinds(ev) == ["baseline_set"]
    assert ev[0].detail["amplitude_uV"] == 300.0 and ev[0].detail["number"] == 2
    # compared with the new baseline now: 300 uV is fine, 100 uV late is a combined event
    assert run(e, [low_stable(s) for _ in range(5)]) == []
    assert kinds(run(e, [s.resp(100.0, 7.0) for _ in range(3)])) == ["combined_event"]


def test_rebaseline_keeps_an_open_los():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [low_stable(s) for _ in range(3)] + [s.miss(), s.miss()])
    e.rebaseline(Side.L, t_s=s.t)
    loss = e.state()["sites"]["VAGUS-L"]["loss"]
    assert loss["conditions"] == ["loss_of_signal"]
    # recovery against the previous baseline (the new one is not yet collected)
    ev = run(e, [s.resp() for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"] and ev[0].detail["recovered"] == ["loss_of_signal"]


def test_right_and_left_baselines_are_independent():
    e, s = engine(), Stream()
    aps_baseline(e, s, side=Side.L, amp=800.0, lat=8.0)
    aps_baseline(e, s, side=Side.R, amp=400.0, lat=6.0)
    # 300 uV at 7 ms: left: 37.5 % at 87.5 % latency -> decrease; right: 75 % -> fine
    ev = run(e, [x for _ in range(3) for x in (s.resp(300.0, 7.0, side=Side.L), s.resp(300.0, 6.5, side=Side.R))])
    assert [(x.kind.value, x.side) for x in ev] == [("amplitude_decrease", Side.L)]


def test_aps_baseline_during_a_rebaseline_says_it_is_collecting():
    e, s = engine(), Stream()
    assert e.aps_baseline(Side.L) is None
    aps_baseline(e, s)
    b = e.aps_baseline(Side.L)
    assert b["collecting"] is False and b["count"] == 20
    e.rebaseline(Side.L, t_s=s.t)
    run(e, [s.resp(500.0, 6.0) for _ in range(5)])
    b = e.aps_baseline(Side.L)
    assert b["collecting"] is True and b["collected"] == 5 and b["amplitude_uV"] == 800.0
