"""Exact contents of what the rules hand out: the tables' checks and their messages, the
probe baseline the operator captures, the state the screen shows, the events after a
neuromuscular blockade, the EBSLN record and the snapshot round trip of pending events
and remembered measurements. Each test pins down a value the record or the nurse sees."""

from __future__ import annotations

import json

import pytest
from rules_factory import Stream, aps_baseline, engine, kinds, run

from app.model import EventKind, Priority, RuleEvent, Side, Site, Source, Step
from app.rules import RuleEngine
from app.rules.machine import ANY, Machine, Row, RuleTableError

PROBE_RLN = dict(site=Site.RLN, source=Source.PROBE)
RV = dict(site=Site.VAGUS, source=Source.PROBE, side=Side.R)  # the right vagus, by the probe


# -- the transition tables' own checks -------------------------------------------------------

GUARDED = (Row("A", "x", "A", "+1", "run<rules.los_consecutive"),
           Row("A", "x", "B", "+1", "run>=rules.los_consecutive", "fire"),
           Row(ANY, "y", ANY, "0"),
           Row("B", "x", "B", "="))


def test_a_complete_guarded_table_with_a_keep_state_row_is_accepted_and_steps():
    mc = Machine("demo", "A", ("A", "B"), ("x", "y"), GUARDED)
    assert mc.name == "demo"
    assert mc.limits() == ("rules.los_consecutive",)
    settings = {"rules.los_consecutive": 2}
    out = mc.step("A", 0, "x", settings)
    assert (out.state, out.run, out.emit) == ("A", 1, "")
    out = mc.step("A", 1, "x", settings)
    assert (out.state, out.run, out.emit) == ("B", 2, "fire")
    out = mc.step("B", 2, "y", settings)
    assert (out.state, out.run, out.emit) == ("B", 0, "")


@pytest.mark.parametrize("initial, rows, message", [
    ("Z", (Row("A", "x", "A"),), "bad: initial state 'Z' unknown"),
    ("A", (Row("Q", "x", "A"), Row("A", "x", "A")), "bad: row state 'Q' unknown"),
    ("A", (Row("A", "x", ANY),), "bad: only a '*' row may keep '*' as next state"),
    ("A", (Row("A", "x", "A"), Row("A", "w", "A")), "bad: row symbol 'w' unknown"),
    ("A", (Row("A", "x", "A", "+1", "run<rules.los_consecutive"),
           Row("A", "x", "A", "+1", "run>=rules.recovery_consecutive")),
     "bad: guarded transitions for A on x do not cover every run"),
    ("A", (Row("A", "x", "A", "+1", "run>=rules.los_consecutive"),
           Row("A", "x", "A", "+1", "run>=rules.los_consecutive")),
     "bad: guarded transitions for A on x do not cover every run"),
    ("A", (Row("A", "x", "A", "+1"),
           Row("A", "x", "A", "+1", "run<rules.los_consecutive"),
           Row("A", "x", "A", "+1", "run>=rules.los_consecutive")),
     "bad: guarded transitions for A on x do not cover every run"),
])
def test_an_inconsistent_table_is_refused_naming_the_table_and_the_fault(initial, rows, message):
    with pytest.raises(RuleTableError) as err:
        Machine("bad", initial, ("A",), ("x",), rows)
    assert str(err.value) == message


def test_limits_lists_each_setting_once_in_table_order():
    rows = (Row("A", "x", "A", "+1", "run<rules.los_consecutive"),
            Row("A", "x", "A", "0", "run>=rules.los_consecutive"),
            Row("A", "y", "A", "+1", "run<rules.recovery_consecutive"),
            Row("A", "y", "A", "0", "run>=rules.recovery_consecutive"))
    mc = Machine("m", "A", ("A",), ("x", "y"), rows)
    assert mc.limits() == ("rules.los_consecutive", "rules.recovery_consecutive")


# -- the probe baseline the operator captures ------------------------------------------------

def test_a_captured_baseline_is_recorded_exactly_and_stamped_with_the_measurement():
    e, s = engine(), Stream()
    m = s.resp(1234.5678, 3.45678, set_mA=2.0, delivered=2.0, **PROBE_RLN)
    ev = e.capture_baseline(Site.RLN, Side.L, m)
    assert ev == [RuleEvent(t_s=m.t_end_s, kind=EventKind.BASELINE_SET, side=Side.L, site=Site.RLN,
                            priority=ev[0].priority, stimulus_index=m.stimulus.index,
                            detail={"source": "PROBE", "how": "captured", "amplitude_uV": 1234.57,
                                    "latency_ms": 3.457, "count": 1, "set_mA": 2.0})]
    assert e.probe_baseline(Site.RLN, Side.L) == {
        "amplitude_uV": 1234.5678, "latency_ms": 3.45678, "how": "captured", "t_s": m.t_end_s,
        "stimulus_index": m.stimulus.index, "set_mA": 2.0}
    # the right RLN and the vagus have none
    assert e.probe_baseline(Site.RLN, Side.R) is None and e.probe_baseline(Site.VAGUS, Side.L) is None
    assert e.state()["sites"]["RLN-L"]["probe_baseline"]["how"] == "captured"


def test_a_baseline_captured_before_any_response_is_not_replaced_by_the_first_one():
    e, s = engine(), Stream()
    e.capture_baseline(Site.RLN, Side.L, s.resp(900.0, 3.8, **PROBE_RLN), t_s=50.0)
    assert run(e, [s.resp(500.0, 3.8, **PROBE_RLN)]) == []
    b = e.probe_baseline(Site.RLN, Side.L)
    assert (b["amplitude_uV"], b["how"], b["t_s"]) == (900.0, "captured", 50.0)


def test_the_returned_baselines_are_copies():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    e.capture_baseline(Site.RLN, Side.L, s.resp(900.0, 3.8, **PROBE_RLN))
    for b in (e.probe_baseline(Site.RLN, Side.L), e.aps_baseline(Side.L)):
        for k in list(b):
            b[k] = "spoilt"
    assert e.probe_baseline(Site.RLN, Side.L)["amplitude_uV"] == 900.0
    assert e.aps_baseline(Side.L)["amplitude_uV"] == 800.0


# -- EBSLN -----------------------------------------------------------------------------------

def test_ebsln_of_a_side_never_stimulated_is_empty():
    assert engine().ebsln(Side.R) == {"stimuli": 0, "responses": 0, "present": False, "first_response": None,
                                      "last": None, "max_amplitude_uV": None}


def test_ebsln_is_handed_out_as_a_copy():
    e, s = engine(), Stream()
    run(e, [s.resp(300.0, 2.5, site=Site.EBSLN, source=Source.PROBE)])
    got = e.ebsln(Side.L)
    got["last"]["amplitude_uV"] = 1.0
    got["first_response"]["latency_ms"] = 1.0
    assert e.ebsln(Side.L)["last"]["amplitude_uV"] == 300.0
    assert e.ebsln(Side.L)["first_response"]["latency_ms"] == 2.5


# -- state() ---------------------------------------------------------------------------------

def test_state_of_a_new_engine():
    st = engine().state()
    empty_side = {"aps_baseline_state": "COLLECTING", "aps_baseline": None, "aps_collected": 0,
                  "aps_amplitude": st["sides"]["L"]["aps_amplitude"],
                  "ebsln": {"stimuli": 0, "responses": 0, "present": False, "first_response": None,
                            "last": None, "max_amplitude_uV": None},
                  "nmb": st["sides"]["L"]["nmb"], "nmb_reference": None}
    assert st["sides"] == {"L": empty_side, "R": empty_side}
    for key in ("VAGUS-L", "RLN-L", "VAGUS-R", "RLN-R"):
        assert set(st["sites"][key]) == {"los", "probe_baseline", "loss", "first_response"}
        assert st["sites"][key]["first_response"] is None
    assert st["blockade"] == {"state": "IDLE", "down": {"L": None, "R": None}, "episode": None,
                              "last_episode": None}
    assert set(st["no_current"]) == {src.value for src in Source}


def test_state_shows_each_sites_first_response_and_the_sides_references():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV), s.resp(700.0, 3.8, side=Side.R, **PROBE_RLN)])
    st = e.state()
    first = st["sites"]["VAGUS-L"]["first_response"]
    assert (first["amplitude_uV"], first["latency_ms"]) == (800.0, 6.0)
    assert st["sites"]["VAGUS-R"]["first_response"]["amplitude_uV"] == 600.0
    assert st["sites"]["RLN-R"]["first_response"]["amplitude_uV"] == 700.0
    assert st["sites"]["RLN-L"]["first_response"] is None
    assert st["sides"]["L"]["aps_baseline"]["amplitude_uV"] == 800.0
    assert st["sides"]["L"]["nmb_reference"]["basis"] == "aps_baseline"
    assert st["sides"]["R"]["nmb_reference"]["basis"] == "V1"
    assert st["sides"]["L"]["ebsln"]["stimuli"] == 0


def test_state_shows_the_no_current_state_per_stimulator_output():
    e, s = engine(), Stream()
    run(e, [s.m(None, None, source=Source.PROBE, site=Site.RLN, delivered=0.0) for _ in range(5)])
    st = e.state()["no_current"]
    assert st[Source.PROBE.value] != st[Source.APS.value]


def test_state_shows_the_side_in_a_blockade():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV)])
    run(e, [s.resp(300.0, 6.2) for _ in range(3)])
    st = e.state()
    assert st["sides"]["L"]["nmb"] != st["sides"]["R"]["nmb"]


def test_the_state_is_a_copy():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV)])
    run(e, [s.resp(300.0, 6.2) for _ in range(3)])  # left vagus: amplitude decrease, its side down
    run(e, [s.resp(200.0, 5.6, **RV) for _ in range(3)])  # right too: blockade
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])  # loss on RLN-L
    before = json.dumps(e.state(), sort_keys=True)
    st = e.state()
    assert st["sites"]["RLN-L"]["episode"] is not None
    for site in st["sites"].values():
        for v in site.values():
            if isinstance(v, dict):
                for k in list(v):
                    if isinstance(v[k], (dict, list)):
                        v[k] = "spoilt"
    for v in st["blockade"].values():
        if isinstance(v, dict):
            for k in list(v):
                v[k] = "spoilt"
    st["sites"]["RLN-L"]["loss"]["conditions"].clear() if isinstance(
        st["sites"]["RLN-L"]["loss"]["conditions"], list) else None
    assert json.dumps(e.state(), sort_keys=True) == before


def test_the_loss_in_the_state_is_a_copy():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    st = e.state()
    st["sites"]["RLN-L"]["loss"]["conditions"].append("spoilt")
    assert "spoilt" not in e.state()["sites"]["RLN-L"]["loss"]["conditions"]


# -- the end of a blockade -------------------------------------------------------------------

def _blockade(e: RuleEngine, s: Stream, amp: float = 800.0, lat: float = 6.0) -> None:
    """Left: APS baseline; right: V1 by the probe; both fall: blockade suspected."""
    aps_baseline(e, s, amp=amp, lat=lat)
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV)])
    run(e, [s.resp(300.0, 6.2) for _ in range(3)])
    assert kinds(run(e, [s.resp(200.0, 5.6, **RV) for _ in range(3)])) == ["neuromuscular_blockade_suspected"]


def test_the_left_vagus_still_low_after_the_blockade_gets_the_exact_amplitude_decrease_advice():
    e, s = engine(), Stream()
    _blockade(e, s, amp=800.123, lat=6.4004)
    ev = run(e, [s.resp(300.0, 5.5, **RV) for _ in range(3)])  # the right recovers
    assert kinds(ev) == ["signal_recovered", "amplitude_decrease"]
    d = dict(ev[1].detail)
    assert d.pop("message").startswith("The blockade is over")
    assert d.pop("advice")
    assert d == {"source": "APS", "after_blockade": True, "baseline_amplitude_uV": 800.12,
                 "baseline_latency_ms": 6.4}
    st = e.state()["blockade"]
    assert st["episode"] is None and st["state"] == "IDLE"
    assert st["last_episode"]["ended_t_s"] == ev[0].t_s
    assert set(st) == {"state", "down", "episode", "last_episode"}


def test_the_end_of_a_blockade_clears_it_from_every_loss_after_an_unrelated_one():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    # a loss of signal on the left RLN first, then the blockade
    assert "loss_of_signal" in kinds(run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN),
                                             s.miss(**PROBE_RLN)]))
    run(e, [s.resp(600.0, 5.5, step=Step.V1, **RV)])
    run(e, [s.resp(300.0, 6.2) for _ in range(3)])
    assert kinds(run(e, [s.resp(200.0, 5.6, **RV) for _ in range(3)])) == ["neuromuscular_blockade_suspected"]
    ev = run(e, [s.resp(800.0, 6.0) for _ in range(3)])  # the left recovers: over on both sides
    assert kinds(ev) == ["signal_recovered"]
    st = e.state()["sites"]
    assert st["VAGUS-R"]["loss"] is None and st["VAGUS-L"]["loss"] is None
    assert st["RLN-L"]["loss"]["conditions"] == ["loss_of_signal"]


# -- operator re-baseline --------------------------------------------------------------------

def test_an_aps_rebaseline_restarts_the_collection_and_notes_when_it_was_asked():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    e.rebaseline(Side.L, t_s=123.5)
    b = e.aps_baseline(Side.L)
    assert b["collecting"] is True and b["collected"] == 0
    snap = e.snapshot()
    assert snap["aps"]["L"]["requested_t_s"] == 123.5
    assert snap["aps"]["L"]["acc"] == {"n": 0, "sum_uV": 0.0, "sum_ms": 0.0, "sumsq_uV": 0.0, "sumsq_ms": 0.0,
                                       "first_index": None}
    run(e, [s.resp() for _ in range(5)])
    assert e.state()["sides"]["L"]["aps_collected"] == 5
    e.rebaseline(Side.L, t_s=130.0)  # asked again in the middle of the collection: it starts over
    assert e.state()["sides"]["L"]["aps_collected"] == 0 and e.aps_baseline(Side.L)["collected"] == 0
    e2 = engine()
    e2.rebaseline(Side.R)
    assert e2.snapshot()["aps"]["R"]["requested_t_s"] == 0.0
    assert set(e2.snapshot()["aps"]) == {"R"}


def test_an_aps_rebaseline_ends_the_amplitude_decrease_of_the_side():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    assert kinds(run(e, [s.resp(300.0, 6.2) for _ in range(3)])) == ["amplitude_decrease"]
    assert e.state()["sides"]["L"]["aps_amplitude"] == "DECREASED"
    e.rebaseline(Side.L, t_s=200.0)
    st = e.state()
    assert st["sides"]["L"]["aps_amplitude"] != "DECREASED"
    assert st["sites"]["VAGUS-L"]["loss"] is None


# -- operator's mapping points with the engine -----------------------------------------------

def test_engine_mapping_point_passes_everything_on():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    mapping = e.add_mapping_point(Side.L, 12.5, 300.0, response=False, label="at the ligament")
    pts = mapping["points"]
    assert len(pts) == 1
    p = pts[0]
    assert (p["position_mm"], p["response"], p["t_s"], p["label"]) == (12.5, False, 300.0, "at the ligament")
    mapping = e.add_mapping_point(Side.L, 5.0, 310.0, response=True)
    p = next(p for p in mapping["points"] if p["position_mm"] == 5.0)
    assert (p["label"], p["response"], p["t_s"]) == ("", True, 310.0)
    m = s.resp(650.0, 3.9, **PROBE_RLN)
    e.process(m)
    mapping = e.add_mapping_point(Side.L, 2.0, 320.0, response=False, measurement=m)
    p = next(p for p in mapping["points"] if p["position_mm"] == 2.0)
    assert (p["response"], p["t_s"], p["amplitude_uV"], p["label"]) == (False, 320.0, 650.0, "")


def test_the_loss_of_signal_episode_in_the_state_is_a_copy():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    st = e.state()
    st["sites"]["RLN-L"]["episode"]["interruptions"].append({"t_s": 1.0})
    assert e.state()["sites"]["RLN-L"]["episode"]["interruptions"] == []


# -- the step button -------------------------------------------------------------------------

def test_an_unknown_step_is_refused_listing_the_steps():
    from app.rules.procedure import ProcedureError

    with pytest.raises(ProcedureError) as err:
        engine().record_step("V7", Side.L, 1.0)
    assert str(err.value) == "step 'V7': must be one of " + ", ".join(x.value for x in Step)


def test_a_poor_response_recorded_as_another_step_than_v1_raises_no_poor_baseline():
    for step in (Step.V2, Step.R1):
        e, s = engine(), Stream()
        m = s.resp(150.0, 6.0, source=Source.PROBE)
        e.process(m)
        assert e.record_step(step, Side.L, 50.0, m).events == []
    e, s = engine(), Stream()
    m = s.resp(150.0, 6.0, source=Source.PROBE)
    e.process(m)
    assert kinds(e.record_step(Step.V1, Side.L, 50.0, m).events) == ["poor_baseline"]


# -- remembered measurements and waiting events survive a snapshot ---------------------------

def test_the_last_response_is_given_back_exactly_also_after_a_restore():
    from app.model import Measurement, Stimulus

    e = engine()
    stim = Stimulus(index=7, t_s=12.5, site=Site.VAGUS, side=Side.R, source=Source.PROBE, set_mA=1.5,
                    delivered_mA=1.25, pw_us=200, step=Step.V1)
    m = Measurement(stim, Side.R.channel, True, None, True, 812.5, 6.125, 5.25)
    e.process(m)
    assert e.last_response(Side.R) == m
    assert e.last_response(Side.L) is None
    resumed = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    assert resumed.last_response(Side.R) == m
    # an untagged one comes back untagged
    m2 = Measurement(Stimulus(index=8, t_s=13.5, site=Site.VAGUS, side=Side.R, source=Source.PROBE, set_mA=1.0,
                              delivered_mA=1.0), Side.R.channel, True, None, True, 700.0, 6.0, 5.0)
    e.process(m2)
    assert e.last_response(Side.R) == m2


def test_events_waiting_for_the_next_measurement_survive_a_restore():
    e, s = engine(), Stream()
    m = s.resp(150.0, 6.0, source=Source.PROBE, side=Side.R)
    e.process(m)
    e.tag_step(Step.V1, Side.R, 40.0, m)
    resumed = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    nxt = s.resp(600.0, 6.0, side=Side.R, source=Source.PROBE)
    want = e.process(nxt)
    got = resumed.process(nxt)
    assert kinds(want)[0] == "poor_baseline"
    assert got == want
    assert got[0].side is Side.R and got[0].site is Site.VAGUS and got[0].priority is Priority.LOW
    assert got[0].detail and got[0].detail == want[0].detail


def test_an_aps_rebaseline_ends_the_amplitude_decrease_at_the_site_of_its_baseline():
    e, s = engine(), Stream()
    run(e, [s.resp(800.0, 6.0, site=Site.RLN) for _ in range(20)])  # the APS electrode on the RLN
    assert e.aps_baseline(Side.L)["site"] == "RLN" and e.nmb_reference(Side.L)["site"] == "RLN"
    assert kinds(run(e, [s.resp(300.0, 6.1, site=Site.RLN) for _ in range(3)])) == ["amplitude_decrease"]
    assert e.state()["sites"]["RLN-L"]["loss"]["conditions"] == ["amplitude_decrease"]
    e.rebaseline(Side.L, t_s=90.0)
    assert e.state()["sites"]["RLN-L"]["loss"] is None


# -- EBSLN record ----------------------------------------------------------------------------

def test_ebsln_record_after_a_miss_then_a_response():
    e, s = engine(), Stream()
    miss = s.miss(site=Site.EBSLN, source=Source.PROBE)
    run(e, [miss])
    last_miss = {"response": False, "amplitude_uV": 30.0, "latency_ms": None, "t_s": miss.stimulus.t_s,
                 "stimulus_index": miss.stimulus.index, "set_mA": 1.0}
    assert e.ebsln(Side.L) == {"stimuli": 1, "responses": 0, "present": False, "first_response": None,
                               "last": last_miss, "max_amplitude_uV": None}
    resp = s.resp(300.0, 2.5, site=Site.EBSLN, source=Source.PROBE)
    run(e, [resp])
    entry = {"response": True, "amplitude_uV": 300.0, "latency_ms": 2.5, "t_s": resp.stimulus.t_s,
             "stimulus_index": resp.stimulus.index, "set_mA": 1.0}
    assert e.ebsln(Side.L) == {"stimuli": 2, "responses": 1, "present": True, "first_response": entry,
                               "last": entry, "max_amplitude_uV": 300.0}


# -- restore ---------------------------------------------------------------------------------

@pytest.mark.parametrize("snapshot, message", [
    ({"format": "lnm-rules/0"}, "rule engine snapshot: format 'lnm-rules/0' is not 'lnm-rules/1'"),
    ({}, "rule engine snapshot: format None is not 'lnm-rules/1'"),
    ([1, 2], "rule engine snapshot: format 'list' is not 'lnm-rules/1'"),
])
def test_a_snapshot_of_another_format_is_refused_naming_what_it_is(snapshot, message):
    from app.rules.engine import SnapshotError

    with pytest.raises(SnapshotError) as err:
        RuleEngine.restore(engine().settings, snapshot)
    assert str(err.value) == message


def _ended_episode() -> tuple[RuleEngine, Stream]:
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    for _ in range(10):  # up to the response that ends the episode
        run(e, [s.resp(700.0, 3.8, **PROBE_RLN)])
        if e.snapshot()["machines"]["loss_of_signal"]["RLN-L"][0] == "ARMED":
            break
    return e, s


def test_a_restored_engine_is_independent_of_the_snapshot_it_came_from():
    e, s = _ended_episode()
    snap = e.snapshot()
    resumed = RuleEngine.restore(e.settings, snap)
    for key in ("sites", "machines", "episodes", "procedure"):
        for v in snap[key].values():
            if isinstance(v, dict):
                v.clear()
    assert resumed.snapshot() == e.snapshot()


def test_a_current_snapshot_after_an_ended_episode_restores_unchanged():
    e, s = _ended_episode()
    los = e.snapshot()["machines"]["loss_of_signal"]["RLN-L"]
    assert los[0] == "ARMED" and los[1] > 0  # armed again by the responses that ended the episode
    resumed = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    assert resumed.snapshot() == e.snapshot()


def test_an_old_snapshot_has_only_its_armed_sites_with_counted_misses_moved_to_missing():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.resp(700.0, 3.8, site=Site.RLN, source=Source.PROBE, side=Side.R),
            s.miss(site=Site.RLN, source=Source.PROBE, side=Side.R), s.miss(site=Site.RLN, source=Source.PROBE,
                                                                          side=Side.R)])
    snap = json.loads(json.dumps(e.snapshot()))
    del snap["episodes"]
    los = snap["machines"]["loss_of_signal"]
    assert los["RLN-L"] == ["ARMED", 0] and los["RLN-R"][0] == "LOST" and los["RLN-R"][1] > 0
    los["VAGUS-L"] = ["ARMED", 1]  # the old table counted misses in ARMED
    resumed = RuleEngine.restore(e.settings, snap)
    got = resumed.snapshot()["machines"]["loss_of_signal"]
    assert got["RLN-L"] == ["ARMED", 0]
    assert got["RLN-R"] == los["RLN-R"]
    assert got["VAGUS-L"] == ["MISSING", 1]


def test_the_falls_of_the_two_sides_may_be_the_window_and_its_microsecond_apart():
    from app.rules.conditions import Blockade

    st = engine().settings
    w = float(st["rules.nmb_window_s"])
    assert Blockade.classify({"L": 0.0, "R": w + 1e-6}, st) == "BOTH_DOWN"
    assert Blockade.classify({"L": 0.0, "R": w + 2e-6}, st) == "NOT_BOTH"


def test_a_probe_rebaseline_of_one_site_keeps_the_others_and_refuses_an_unwatched_site():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.resp(600.0, 5.5, site=Site.VAGUS, source=Source.PROBE)])
    e.rebaseline(Side.L, Source.PROBE, 50.0, site=Site.RLN)
    assert e.probe_baseline(Site.RLN, Side.L) is None
    assert e.probe_baseline(Site.VAGUS, Side.L)["amplitude_uV"] == 600.0
    with pytest.raises(ValueError) as err:
        e.rebaseline(Side.L, Source.PROBE, 50.0, site=Site.EBSLN)
    assert str(err.value) == "probe baseline for site EBSLN: only VAGUS and RLN have one"


# -- recovery --------------------------------------------------------------------------------

def test_the_recovery_event_reports_its_values_rounded_for_the_record():
    e, s = engine(), Stream(dt=1.00037)
    run(e, [s.resp(700.123, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    ev = run(e, [s.resp(650.4567, 3.8004, **PROBE_RLN) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    assert ev[0].detail == {
        "source": "PROBE", "time_since_loss_s": 3.001, "loss_t_s": ev[0].detail["loss_t_s"],
        "loss_stimulus_index": 2, "recovered": ["loss_of_signal"], "amplitude_uV": 650.46, "latency_ms": 3.8,
        "baseline_uV": 700.12, "baseline_basis": "probe_baseline_first_response", "pct_of_baseline": 92.9,
        "consecutive": 3, "message": "Signal recovered."}
    # the site's other recovery watchers stop too
    assert e.snapshot()["machines"]["recovery"] == {"RLN-L-APS": ["IDLE", 0], "RLN-L-PROBE": ["IDLE", 3],
                                                    "RLN-L-VAGUS": ["IDLE", 0]}


def test_a_recovery_before_the_responses_end_the_episode_ends_it_at_the_recovering_stimulus():
    e, s = engine(rules__los_end_consecutive=5), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    ev = run(e, [s.resp(700.0, 3.8, **PROBE_RLN) for _ in range(3)])
    assert kinds(ev) == ["signal_recovered"]
    episode = e.state()["sites"]["RLN-L"]["episode"]
    assert (episode["ended_t_s"], episode["ended_stimulus_index"]) == (ev[0].t_s, ev[0].stimulus_index)


def test_an_old_snapshot_without_episodes_still_recovers():
    e, s = engine(), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    snap = json.loads(json.dumps(e.snapshot()))
    del snap["episodes"]
    resumed = RuleEngine.restore(e.settings, snap)
    assert kinds(run(resumed, [s.resp(700.0, 3.8, **PROBE_RLN) for _ in range(3)])) == ["signal_recovered"]


def test_a_later_recovery_keeps_the_record_of_the_last_blockade():
    e, s = engine(), Stream()
    _blockade(e, s)
    run(e, [s.resp(800.0, 6.0) for _ in range(3)])  # the left recovers: the blockade is over
    last = e.state()["blockade"]["last_episode"]
    assert last is not None and last["ended_t_s"] is not None
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    assert kinds(run(e, [s.resp(700.0, 3.8, **PROBE_RLN) for _ in range(3)])) == ["signal_recovered"]
    assert e.state()["blockade"]["last_episode"] == last


def test_the_interruptions_of_a_recovered_episode_are_reported_as_a_copy():
    e, s = engine(rules__los_end_consecutive=2, rules__recovery_consecutive=4), Stream()
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])
    run(e, [s.resp(700.0, 3.8, **PROBE_RLN) for _ in range(2)])  # the episode ends, no recovery yet
    ev = run(e, [s.miss(**PROBE_RLN), s.miss(**PROBE_RLN)])  # lost again at once: it continues
    assert e.state()["sites"]["RLN-L"]["episode"]["interruptions"]
    ev = run(e, [s.resp(700.0, 3.8, **PROBE_RLN) for _ in range(4)])
    rec = [x for x in ev if x.kind.value == "signal_recovered"]
    assert rec and rec[0].detail["interruptions"]
    rec[0].detail["interruptions"][0]["spoilt"] = True
    assert "spoilt" not in e.state()["sites"]["RLN-L"]["episode"]["interruptions"][0]


def test_ebsln_counts_every_response_and_keeps_the_largest():
    e, s = engine(), Stream()
    eb = dict(site=Site.EBSLN, source=Source.PROBE)
    run(e, [s.resp(300.0, 2.5, **eb), s.resp(450.0, 2.4, **eb), s.resp(350.0, 2.6, **eb)])
    got = e.ebsln(Side.L)
    assert (got["stimuli"], got["responses"], got["max_amplitude_uV"]) == (3, 3, 450.0)
    assert got["first_response"]["amplitude_uV"] == 300.0 and got["last"]["amplitude_uV"] == 350.0


def test_ebsln_below_a_raised_threshold_is_recorded_as_no_response_without_latency():
    e, s = engine(analysis__event_threshold_uV=400.0), Stream()
    run(e, [s.m(300.0, 2.5, site=Site.EBSLN, source=Source.PROBE, response=True)])
    got = e.ebsln(Side.L)
    assert got["last"]["response"] is False and got["last"]["latency_ms"] is None
    assert got["present"] is False and got["responses"] == 0


# -- the neuromuscular blockade event --------------------------------------------------------

def test_the_blockade_event_and_state_carry_each_sides_fall_exactly():
    from app.rules.engine import NMB_ADVICE, NMB_MESSAGE

    e, s = engine(), Stream(dt=1.00037)
    aps_baseline(e, s, amp=800.123, lat=6.4004)
    v1 = s.resp(600.0, 5.5, step=Step.V1, **RV)
    run(e, [v1])
    assert e.nmb_reference(Side.R) == {"basis": "V1", "site": "VAGUS", "source": "PROBE", "amplitude_uV": 600.0,
                                       "latency_ms": 5.5, "stimulus_index": v1.stimulus.index}
    ref_l = e.nmb_reference(Side.L)
    assert ref_l == {"basis": "aps_baseline", "site": "VAGUS", "source": "APS",
                     "amplitude_uV": ref_l["amplitude_uV"], "latency_ms": ref_l["latency_ms"]}
    assert round(ref_l["amplitude_uV"], 3) == 800.123 and round(ref_l["latency_ms"], 4) == 6.4004
    left = [s.resp(300.123, 6.2004) for _ in range(3)]
    run(e, left)
    right = [s.resp(200.0, 5.6, **RV) for _ in range(3)]
    ev = run(e, right)
    assert kinds(ev) == ["neuromuscular_blockade_suspected"]
    down = {
        "L": {"t_s": left[-1].t_end_s, "stimulus_index": left[-1].stimulus.index, "site": "VAGUS", "source": "APS",
              "amplitude_uV": 300.12, "latency_ms": 6.2, "reference": "aps_baseline", "reference_uV": 800.12,
              "reference_latency_ms": 6.4, "amplitude_pct": 37.5, "latency_pct": 96.9},
        "R": {"t_s": right[-1].t_end_s, "stimulus_index": right[-1].stimulus.index, "site": "VAGUS",
              "source": "PROBE", "amplitude_uV": 200.0, "latency_ms": 5.6, "reference": "V1", "reference_uV": 600.0,
              "reference_latency_ms": 5.5, "amplitude_pct": 33.3, "latency_pct": 101.8},
    }
    assert ev[0].detail == {"sides": down, "apart_s": 3.001, "window_s": 300.0, "amplitude_pct_limit": 50.0,
                            "latency_pct_limit": 110.0, "message": NMB_MESSAGE, "advice": NMB_ADVICE}
    assert (ev[0].side, ev[0].site, ev[0].t_s) == (Side.R, Site.VAGUS, right[-1].t_end_s)
    assert e.state()["blockade"] == {
        "state": "SUSPECTED", "down": down, "last_episode": None,
        "episode": {"t_s": right[-1].t_end_s, "stimulus_index": right[-1].stimulus.index, "sides": down}}
    ev[0].detail["sides"]["L"]["amplitude_uV"] = 1.0
    assert e.state()["blockade"]["down"]["L"]["amplitude_uV"] == 300.12
    assert e.state()["blockade"]["episode"]["sides"]["L"]["amplitude_uV"] == 300.12


def test_while_the_aps_baseline_is_collected_again_the_blockade_reference_is_the_v1():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    assert e.nmb_reference(Side.L)["basis"] == "aps_baseline"
    e.rebaseline(Side.L, t_s=60.0)
    assert e.nmb_reference(Side.L) is None
    v1 = s.resp(650.0, 6.0, step=Step.V1, source=Source.PROBE)
    run(e, [v1])
    assert e.nmb_reference(Side.L)["basis"] == "V1"
    aps_baseline(e, s)
    assert e.nmb_reference(Side.L)["basis"] == "aps_baseline"


# -- a loss of signal opens its records ------------------------------------------------------

@pytest.mark.parametrize("delivered, answers", [
    (1.0, {"current_delivered": {"answer": "yes", "by": "monitor", "t_s": 12.05,
                                 "note": "delivered current measured within tolerance on the stimuli that lost the "
                                         "signal"}}),
    (None, {}),
])
def test_a_loss_of_signal_opens_its_record_and_documents_the_r2_it_was(delivered, answers):
    e, s = engine(), Stream()
    ms = [s.resp(700.0, 3.8, **PROBE_RLN), s.miss(delivered=delivered, **PROBE_RLN),
          s.miss(delivered=delivered, **PROBE_RLN)]
    assert kinds(run(e, ms)) == ["baseline_set", "loss_of_signal"]
    lost = ms[-1]
    assert e.state()["sites"]["RLN-L"]["loss"] == {"t_s": lost.t_end_s, "stimulus_index": lost.stimulus.index,
                                                  "conditions": ["loss_of_signal"]}
    assert e.procedure.troubleshooting("L")["answers"] == answers
    docs = e.take_documented_steps()
    assert [(d["side"], d["step"], d["measurement"]) for d in docs] == [("L", "R2", lost)]
    assert (docs[0]["value"]["how"], docs[0]["value"]["stimulus_index"]) == ("after_loss", lost.stimulus.index)
    assert e.take_documented_steps() == []


def test_an_aps_baseline_saved_without_its_site_is_taken_as_the_vagus():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    snap = json.loads(json.dumps(e.snapshot()))
    del snap["aps"]["L"]["baseline"]["site"]
    resumed = RuleEngine.restore(e.settings, snap)
    assert resumed.nmb_reference(Side.L)["site"] == "VAGUS"


# -- the APS amplitude events ----------------------------------------------------------------

@pytest.mark.parametrize("lat, kind, latency_ms, latency_pct", [
    (7.2104, "combined_event", 7.21, 112.7),
    (6.2004, "amplitude_decrease", 6.2, 96.9),
])
def test_the_aps_amplitude_events_report_their_values_rounded(lat, kind, latency_ms, latency_pct):
    from app.rules.engine import AMPLITUDE_DECREASE_ADVICE, AMPLITUDE_DECREASE_MESSAGE

    e, s = engine(), Stream()
    aps_baseline(e, s, amp=800.123, lat=6.4004)
    ev = run(e, [s.resp(300.123, lat) for _ in range(3)])
    assert kinds(ev) == [kind]
    want = {"source": "APS", "consecutive": 3, "amplitude_uV": 300.12, "latency_ms": latency_ms,
            "amplitude_pct": 37.5, "latency_pct": latency_pct, "baseline_amplitude_uV": 800.12,
            "baseline_latency_ms": 6.4}
    if kind == "combined_event":
        want["message"] = "Combined event: amplitude down and latency up (traction injury pattern). Release traction."
    else:
        want.update(message=AMPLITUDE_DECREASE_MESSAGE, advice=AMPLITUDE_DECREASE_ADVICE)
    assert ev[0].detail == want


def test_a_side_back_up_is_no_longer_down():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [s.resp(300.0, 6.2) for _ in range(3)])
    assert e.state()["blockade"]["down"]["L"] is not None
    run(e, [s.resp(800.0, 6.0)])
    assert e.state()["blockade"]["down"] == {"L": None, "R": None}
