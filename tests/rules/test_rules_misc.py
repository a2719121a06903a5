"""No current, non-recurrent nerve, poor V1, priorities, settings, operator step tags."""

from __future__ import annotations

import json

import pytest
from rules_factory import DEFAULTS, Stream, aps_baseline, engine, kinds, of_kind, run

from app.model import EventKind, InvalidReason, Priority, Side, Site, Source, Step
from app.rules import PRIORITY, SETTINGS_USED, ProcedureError, RuleEngine
from app.settings import SCHEMA


def P(**kw):
    kw.setdefault("site", Site.RLN)
    kw.setdefault("source", Source.PROBE)
    return kw


# -- no current ---------------------------------------------------------------------------
def test_no_current_one_event_per_episode():
    e, s = engine(), Stream()
    run(e, [s.resp(**P())])
    short = [s.miss(**P(delivered=0.2)) for _ in range(6)]
    ev = run(e, short)
    assert kinds(ev) == ["no_current"]
    nc = ev[0]
    assert nc.priority is Priority.MEDIUM
    assert nc.stimulus_index == short[0].stimulus.index and nc.t_s == short[0].t_end_s
    assert nc.detail["delivered_pct"] == 20.0 and nc.detail["source"] == "PROBE"
    # never a LOS, however long
    assert of_kind(ev, "loss_of_signal") == []
    # delivered again ends the episode; the next shortfall is a new one
    run(e, [s.resp(**P())])
    assert kinds(run(e, [s.miss(**P(delivered=0.5))])) == ["no_current"]


def test_no_current_counts_invalid_epochs_and_the_analysis_verdict():
    e, s = engine(), Stream()
    ev = run(e, [s.invalid(reason=InvalidReason.NO_CURRENT, delivered=None, **P())])
    assert kinds(ev) == ["no_current"] and ev[0].detail["delivered_mA"] is None
    e, s = engine(), Stream()
    assert kinds(run(e, [s.invalid(reason=InvalidReason.CAUTERY, delivered=0.0, **P())])) == ["no_current"]


def test_no_current_episodes_are_per_output():
    e, s = engine(), Stream()
    seq = [s.miss(delivered=0.1), s.miss(**P(delivered=0.1)), s.miss(delivered=0.1), s.resp(**P()),
           s.miss(delivered=0.1)]
    ev = run(e, seq)
    assert [(x.kind.value, x.detail["source"]) for x in of_kind(ev, "no_current")] == [
        ("no_current", "APS"), ("no_current", "PROBE")]


def test_untagged_stimuli_do_not_feed_no_current():
    e, s = engine(), Stream()
    assert run(e, [s.miss(**P(site=Site.UNTAGGED, delivered=0.0)) for _ in range(3)]) == []
    # ... and do not break an episode either
    seq = [s.miss(**P(delivered=0.0)), s.resp(**P(site=Site.UNTAGGED)), s.miss(**P(delivered=0.0))]
    assert kinds(run(e, seq)) == ["no_current"]


def test_no_current_tolerance_is_a_setting():
    e, s = engine(), Stream()
    assert kinds(run(e, [s.resp(**P(delivered=0.92))])) == ["no_current"]
    e, s = engine(stim__delivered_tolerance_pct=10.0), Stream()
    assert of_kind(run(e, [s.resp(**P(delivered=0.92))]), "no_current") == []


def test_zero_set_current_is_no_shortfall():
    e, s = engine(), Stream()
    assert of_kind(run(e, [s.miss(**P(set_mA=0.0, delivered=0.0))]), "no_current") == []


# -- non-recurrent nerve --------------------------------------------------------------------
def test_nonrecurrent_on_the_first_short_right_vagal_latency_only():
    e, s = engine(), Stream()
    seq = [s.resp(700.0, 6.0, site=Site.VAGUS, side=Side.R, source=Source.PROBE),
           s.resp(700.0, 3.2, site=Site.VAGUS, side=Side.L, source=Source.PROBE),  # left: never
           s.resp(700.0, 3.2, site=Site.RLN, side=Side.R, source=Source.PROBE),  # RLN: not vagal
           s.invalid(site=Site.VAGUS, side=Side.R),
           s.resp(700.0, 3.3, site=Site.VAGUS, side=Side.R, source=Source.PROBE),
           s.resp(700.0, 3.1, site=Site.VAGUS, side=Side.R, source=Source.PROBE)]
    ev = of_kind(run(e, seq), "nonrecurrent_nerve_suspected")
    assert len(ev) == 1
    assert ev[0].stimulus_index == 4 and ev[0].side is Side.R and ev[0].priority is Priority.INFO
    assert ev[0].detail["latency_ms"] == 3.3 and ev[0].detail["limit_ms"] == 3.5


def test_nonrecurrent_limit_is_a_setting():
    e, s = engine(rules__nonrecurrent_latency_ms=4.0), Stream()
    ev = run(e, [s.resp(700.0, 3.8, site=Site.VAGUS, side=Side.R)])
    assert "nonrecurrent_nerve_suspected" in kinds(ev)
    e, s = engine(), Stream()
    assert "nonrecurrent_nerve_suspected" not in kinds(run(e, [s.resp(700.0, 3.8, site=Site.VAGUS, side=Side.R)]))


# -- poor V1 ------------------------------------------------------------------------------
def test_poor_v1_judges_only_the_first_valid_qualifying_v1_of_each_side():
    e, s = engine(), Stream()
    v = dict(site=Site.VAGUS, source=Source.PROBE, step=Step.V1)
    seq = [s.invalid(**v), s.resp(100.0, 6.0, set_mA=0.5, delivered=0.5, **v),  # skipped
           s.resp(150.0, 6.0, **v), s.resp(90.0, 6.0, **v)]
    ev = of_kind(run(e, seq), "poor_baseline")
    assert len(ev) == 1 and ev[0].stimulus_index == 2 and ev[0].detail["basis"] == "V1"
    assert ev[0].priority is Priority.LOW and ev[0].detail["amplitude_uV"] == 150.0
    # the right side's first V1 is fine: nothing, and a later poor one is not judged
    ev = run(e, [s.resp(600.0, 6.0, side=Side.R, **v), s.resp(100.0, 6.0, side=Side.R, **v)])
    assert of_kind(ev, "poor_baseline") == []


def test_v1_without_response_is_poor():
    e, s = engine(), Stream()
    ev = run(e, [s.miss(site=Site.VAGUS, source=Source.PROBE, step=Step.V1)])
    assert kinds(ev) == ["poor_baseline"] and ev[0].detail["amplitude_uV"] == 30.0


# -- priorities, JSON, settings ----------------------------------------------------------
def test_every_kind_has_its_priority():
    assert PRIORITY == {
        EventKind.LOSS_OF_SIGNAL: Priority.HIGH,
        EventKind.COMBINED_EVENT: Priority.HIGH,
        EventKind.AMPLITUDE_DECREASE: Priority.MEDIUM,
        EventKind.NO_CURRENT: Priority.MEDIUM,
        EventKind.SIGNAL_RECOVERED: Priority.INFO,
        EventKind.NONRECURRENT_NERVE_SUSPECTED: Priority.INFO,
        EventKind.POOR_BASELINE: Priority.LOW,
        EventKind.BASELINE_SET: Priority.INFO,
        EventKind.LOSS_OF_SIGNAL_CONTINUED: Priority.HIGH,
        EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED: Priority.MEDIUM,
    }


def test_settings_used_are_all_in_the_schema_and_cover_every_rule_setting():
    assert set(SETTINGS_USED) <= set(SCHEMA)
    assert {k for k in SCHEMA if k.startswith("rules.")} <= set(SETTINGS_USED)
    e = RuleEngine(DEFAULTS)
    assert e.settings_used()["rules.los_consecutive"] == 2


def test_settings_change_mid_case_takes_effect_on_the_next_stimulus():
    e, s = engine(), Stream()
    run(e, [s.resp(**P())])
    e.set_settings(DEFAULTS.with_changes({"rules.los_consecutive": 3}))
    assert of_kind(run(e, [s.miss(**P()), s.miss(**P())]), "loss_of_signal") == []
    assert kinds(run(e, [s.miss(**P())])) == ["loss_of_signal"]


def test_all_events_are_json_serialisable():
    e, s = engine(), Stream()
    ev = aps_baseline(e, s, amp=150.0)
    ev += run(e, [s.resp(50.0, 7.0) for _ in range(3)] + [s.miss(delivered=0.1)] +
              [s.resp(700.0, 3.0, side=Side.R)] + [s.resp() for _ in range(3)])
    assert set(kinds(ev)) >= {"baseline_set", "poor_baseline", "no_current", "nonrecurrent_nerve_suspected",
                              "signal_recovered"}
    for x in ev:
        json.dumps(x.to_json())


# -- operator step tags ------------------------------------------------------------------
def test_tag_step_records_the_last_response_of_the_side():
    e, s = engine(), Stream()
    run(e, [s.resp(650.0, 6.1, site=Site.VAGUS, source=Source.PROBE, side=Side.R),
            s.resp(640.0, 6.2, site=Site.VAGUS, source=Source.PROBE),
            s.miss(site=Site.VAGUS, source=Source.PROBE)])
    value = e.tag_step(Step.V1, Side.L, t_s=50.0)
    assert value["amplitude_uV"] == 640.0 and value["stimulus_index"] == 1 and value["how"] == "operator"
    assert e.procedure.step(Side.L, "V1")["captured_t_s"] == 50.0
    with pytest.raises(ProcedureError, match="no response on side"):
        RuleEngine(DEFAULTS).tag_step(Step.R1, Side.L, t_s=1.0)


def test_tag_step_with_an_explicit_measurement():
    e, s = engine(), Stream()
    m = s.miss(site=Site.RLN, source=Source.PROBE)
    e.process(m)
    value = e.tag_step(Step.R2, Side.L, t_s=3.0, measurement=m)
    assert value["response"] is False and value["latency_ms"] is None
    with pytest.raises(ProcedureError, match="invalid"):
        e.tag_step(Step.R2, Side.L, t_s=3.0, measurement=s.invalid(site=Site.RLN))
    with pytest.raises(ProcedureError, match="from side R"):
        e.tag_step(Step.R2, Side.L, t_s=3.0, measurement=s.resp(side=Side.R))


# -- snapshot errors, state, imports -------------------------------------------------------
def test_restore_refuses_a_foreign_or_damaged_snapshot():
    from app.rules import SnapshotError

    e, s = engine(), Stream()
    aps_baseline(e, s)
    snap = e.snapshot()
    with pytest.raises(SnapshotError, match="format"):
        RuleEngine.restore(DEFAULTS, {"format": "lnm-rules/0"})
    with pytest.raises(SnapshotError, match="format"):
        RuleEngine.restore(DEFAULTS, [])
    broken = json.loads(json.dumps(snap))
    del broken["aps"]
    with pytest.raises(SnapshotError, match="KeyError"):
        RuleEngine.restore(DEFAULTS, broken)
    broken = json.loads(json.dumps(snap))
    broken["machines"]["aps_baseline"]["L"] = ["NOWHERE", 0]
    with pytest.raises(SnapshotError, match="bad state 'NOWHERE'"):
        RuleEngine.restore(DEFAULTS, broken)
    broken = json.loads(json.dumps(snap))
    broken["procedure"]["format"] = "x"
    with pytest.raises(SnapshotError, match="procedure"):
        RuleEngine.restore(DEFAULTS, broken)


def test_snapshot_is_a_copy():
    e, s = engine(), Stream()
    snap = e.snapshot()
    aps_baseline(e, s)
    assert snap["aps"] == {} and e.snapshot()["aps"]["L"]["baseline"]["count"] == 20


def test_state_is_json_and_says_what_the_rules_see():
    e, s = engine(), Stream()
    aps_baseline(e, s)
    run(e, [s.resp(**P()), s.miss(**P()), s.miss(**P())])
    st = json.loads(json.dumps(e.state()))
    assert st["sites"]["RLN-L"]["los"] == "LOST"
    assert st["sites"]["RLN-L"]["probe_baseline"]["how"] == "first_response"
    assert st["sides"]["L"]["aps_baseline_state"] == "SET" and st["sides"]["L"]["aps_amplitude"] == "NORMAL"
    assert st["no_current"] == {"PROBE": "DELIVERING", "APS": "DELIVERING"}


def test_the_package_imports_only_what_its_docstring_allows():
    import ast
    import sys
    from pathlib import Path

    import app.rules

    root = Path(app.rules.__file__).parent
    allowed_app = ("app.model", "app.settings", "app.format", "app.rules")
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top == "app":
                    assert name.startswith(allowed_app), (path.name, name)
                else:
                    assert top in sys.stdlib_module_names or top == "__future__", (path.name, name)


def test_nonsense_numbers_are_skipped_not_counted():
    nan, inf = float("nan"), float("inf")
    e, s = engine(), Stream()
    run(e, [s.resp(**P())])
    seq = [s.m(nan, 4.0, response=True, **P()), s.m(nan, None, response=False, **P()),
           s.m(inf, 4.0, response=True, **P()), s.m(-inf, None, response=False, **P())]
    assert of_kind(run(e, seq), "loss_of_signal") == []
    ev = run(e, [s.miss(**P(delivered=nan))])
    assert kinds(ev) == ["no_current"] and ev[0].detail["delivered_mA"] is None
    json.dumps([x.to_json() for x in ev], allow_nan=False)
    run(e, [s.m(600.0, nan, response=True, step=Step.R1, **P())])
    json.dumps(e.snapshot(), allow_nan=False)


def test_a_snapshot_from_before_the_hysteresis_still_resumes():
    """Snapshots written before the episode hysteresis counted misses in ARMED and had no
    episodes, blockade or waiting events: they resume, a started run of misses intact."""
    e, s = engine(), Stream()
    run(e, [s.resp(**P()), s.miss(**P())])
    snap = json.loads(json.dumps(e.snapshot()))
    for key in ("episodes", "nmb", "pending"):
        del snap[key]
    del snap["procedure"]["rln_last"]
    snap["machines"]["loss_of_signal"]["RLN-L"] = ["ARMED", 1]
    for name in ("nmb_side", "blockade"):
        snap["machines"].pop(name, None)
    again = RuleEngine.restore(DEFAULTS, snap)
    assert again.state()["sites"]["RLN-L"]["los"] == "MISSING"
    assert kinds(run(again, [s.miss(**P())])) == ["loss_of_signal"]
