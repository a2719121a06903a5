"""Every shipped scenario, end to end through the real wire protocol (stepped, deterministic):
the right alarms at the right time, none where there must be none.

Each scenario's own ``[expect]`` table is checked (``run_scenario``), and on top of it the
timing promises of the product are checked against the virtual patient's ground truth:
a loss of signal within ``rules.los_consecutive`` (2) qualifying stimuli of its true onset,
a combined event within ``rules.combined_consecutive`` (3); cautery-heavy and no-current
cases never raise a loss of signal (no-current raises the technical no-current alarm);
tube displacement is reported as "check tube position", never as nerve injury.
"""

from __future__ import annotations

import pytest

from app.alarms import AlarmKind
from app.alarms.catalog import definition
from app.engine.simulate import format_summary, run_scenario
from app.record.journal import Journal
from app.settings import Settings
from firmware_bridge.sim.scenario import list_scenarios, load_scenario

SCENARIOS = list_scenarios()
NERVE_INJURY = ("loss_of_signal", "combined_event")


def _expecting(kind):
    return [n for n in SCENARIOS if any(e.kind == kind and e.min_count > 0 for e in load_scenario(n).expect.events)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run each scenario once per test session (they are the expensive part)."""
    cache = {}

    def get(name):
        if name not in cache:
            d = tmp_path_factory.mktemp(name)
            journal = Journal(d / "journal.db")
            res = run_scenario(load_scenario(name), Settings(), journal=journal, out_dir=d,
                               write_documents=False, keep_system=True)
            res.journal = journal
            cache[name] = res
        return cache[name]

    return get


def _kinds(res, category="rule"):
    return [(e["kind"], e.get("side"), e.get("site")) for e in res.events if e.get("category") == category]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_runs_to_a_closed_case_and_meets_its_expectations(name, results):
    res = results(name)
    assert res.closed, format_summary(res)
    assert not res.problems, format_summary(res)
    assert res.journal.verify(res.case_id).ok


def _stimuli(res, side, site, source=None):
    """Journaled stimuli of a site and side with the virtual patient's truth beside them."""
    system = res.system
    truth = list(system.board.truth)
    out = []
    entries = [e.payload for e in res.journal.entries(res.case_id, kinds=["stimulus"], blobs=False)]
    # board time (since power-on = scenario start) -> case time: minus the case's start
    case_start = next(e["scenario_t_s"] - e["t_s"] for e in res.events
                      if e.get("category") == "case" and e["kind"] == "opened")
    offset = -case_start
    by_t = sorted(((t.t + offset, t) for t in truth), key=lambda x: x[0])
    j = 0
    for p in entries:
        if p["side"] != side or p["site"] != site or (source and p["source"] != source):
            continue
        while j + 1 < len(by_t) and by_t[j + 1][0] <= p["t_s"] + 0.003:
            j += 1
        tr = by_t[j][1] if by_t and abs(by_t[j][0] - p["t_s"]) < 0.003 else None
        out.append((p, tr))
    return out


def _onset_to_event(stims, event_index, is_lost):
    """Qualifying valid stimuli from the true onset (first lost stimulus of the final
    unbroken lost run before the event) up to and including the event's stimulus."""
    upto = [(p, tr) for p, tr in stims if p["index"] <= event_index]
    run = 0
    for p, tr in reversed(upto):
        if tr is None or not p["valid"]:
            continue
        if is_lost(p, tr):
            run += 1
        else:
            break
    return run


@pytest.mark.parametrize("name", _expecting("loss_of_signal"))
def test_loss_of_signal_comes_within_two_stimuli_of_its_onset(name, results):
    res = results(name)
    los = [e for e in res.events if e.get("category") == "rule" and e["kind"] == "loss_of_signal"]
    assert los, format_summary(res)
    th = float(Settings()["analysis.event_threshold_uV"])
    limit = int(Settings()["rules.los_consecutive"])
    for ev in los:
        stims = _stimuli(res, ev["side"], ev["site"])
        n = _onset_to_event(stims, ev["detail"]["stimulus_index"],
                            lambda p, tr: tr.amplitude_uV < th and p["set_mA"] >= 1.0)
        assert 1 <= n <= limit, f"LOS {ev['side']} {ev['site']} came {n} stimuli after its onset"


@pytest.mark.parametrize("name", _expecting("combined_event"))
def test_combined_event_comes_within_three_stimuli_of_its_onset(name, results):
    res = results(name)
    ces = [e for e in res.events if e.get("category") == "rule" and e["kind"] == "combined_event"]
    assert ces, format_summary(res)
    st = Settings()
    limit = int(st["rules.combined_consecutive"])
    for ev in ces:
        d = ev["detail"]
        b_amp, b_lat = d["baseline_amplitude_uV"], d["baseline_latency_ms"]
        stims = _stimuli(res, ev["side"], "VAGUS", source="APS")
        n = _onset_to_event(stims, d["stimulus_index"], lambda p, tr, b_amp=b_amp, b_lat=b_lat: (
            tr.amplitude_uV < b_amp * st["rules.combined_amplitude_pct"] / 100.0
            and (tr.latency_ms or 0.0) > b_lat * st["rules.combined_latency_pct"] / 100.0))
        assert 1 <= n <= limit, f"combined event {ev['side']} came {n} stimuli after its onset"


def _named(fragment):
    return [n for n in SCENARIOS if fragment in n]


@pytest.mark.parametrize("name", _named("cautery") + _named("no_current") or ["(none shipped)"])
def test_cautery_and_no_current_never_make_a_loss_of_signal(name, results):
    assert name in SCENARIOS, "no shipped scenario has cautery or no_current in its name (renamed?)"
    res = results(name)
    injury = [k for k in _kinds(res) if k[0] in NERVE_INJURY]
    assert not injury, format_summary(res)
    if "no_current" in name:
        raised = [a for a in res.alarms if a["kind"] == "no_current"]
        assert raised, "the technical no-current alarm was not raised"


@pytest.mark.parametrize("name", _named("tube") or ["(none shipped)"])
def test_tube_displacement_is_reported_as_check_tube_not_nerve_injury(name, results):
    assert name in SCENARIOS, "no shipped scenario has tube in its name (renamed?)"
    res = results(name)
    kinds = [k[0] for k in _kinds(res)]
    assert "amplitude_decrease" in kinds, format_summary(res)
    assert not [k for k in kinds if k in NERVE_INJURY], format_summary(res)
    alarm = [a for a in res.alarms if a["kind"] == "amplitude_decrease"]
    assert alarm
    # the alarm as it was raised (the case is closed: its alarms have ended) speaks of the tube
    raised = [e["message"] for e in res.events if e.get("category") == "alarm" and e["kind"] in ("raised", "re_raised")
              and (e.get("detail") or {}).get("kind") == "amplitude_decrease"]
    assert raised and all("tube" in m.lower() for m in raised), raised
    assert definition(AlarmKind.AMPLITUDE_DECREASE).title == "Check tube position"
