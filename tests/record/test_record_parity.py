"""Parity: ``lnm analyze`` on the EDF+ export of every shipped scenario reproduces the live record.

The same events (kind, side, site, time within 1 ms) and the same INMSG step table. The
export carries the operator context (docs/recording-format.md) and ``lnm analyze`` applies
it as the engine did; a divergence is a failing test, whichever side moved (the rules,
the engine, the export or the analysis).
"""

from __future__ import annotations

import pytest

from app.analysis.edf import read_edf
from app.commands.analyze import analyze_recording
from app.settings import Settings
from scenario_runs import SCENARIOS, scenario_case

TIME_TOL_S = 0.001
AMP_TOL_UV = 2.0  # the EDF+ holds 1 µV per step; the live epoch the board's counts
LAT_TOL_MS = 0.05


def _live_events(doc):
    return [(t["t_s"], t["kind"], t["side"], t["site"]) for t in doc["timeline"] if t["type"] == "rule_event"]


def _analysed_events(an):
    t0 = an["recording"]["case_t0_s"]
    return [(round(e["t_s"] + t0, 4), e["kind"], e["side"], e["site"]) for e in an["events"]]


def _match(live, analysed):
    """(live events without a partner, analysed events without a partner)."""
    rest = list(analysed)
    missing = []
    for ev in live:
        hit = next((a for a in rest if a[1:] == ev[1:] and abs(a[0] - ev[0]) <= TIME_TOL_S), None)
        if hit is None:
            missing.append(ev)
        else:
            rest.remove(hit)
    return missing, rest


def _live_how(v):
    """How the live record documented a step, in the re-analysis's words: recorded with the
    step button ("operator"), a stimulus tagged with the step ("tagged"), or the stimulation
    done at the step after a loss of signal ("after_loss", ``Procedure.document_after_loss``)."""
    if v["how"] == "step":
        return "operator" if "operator" in str(v.get("comment") or "") else "tagged"
    if v["how"].startswith("procedure:"):
        return v["how"].split(":", 1)[1]
    return v["how"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_analyze_reproduces_the_live_events(name, tmp_path_factory):
    case = scenario_case(name, tmp_path_factory)
    live, analysed = _live_events(case.doc), _analysed_events(case.analysis)
    assert case.analysis["recording"]["conventions"] == 2 and case.analysis["context"]["used"]
    assert case.analysis["context"]["problems"] == []
    only_live, only_analysed = _match(live, analysed)
    assert not only_live and not only_analysed, (
        f"{name}: live only {only_live}; re-analysis only {only_analysed}\n{case.summary}")


@pytest.mark.parametrize("name", SCENARIOS)
def test_analyze_reproduces_the_step_table(name, tmp_path_factory):
    case = scenario_case(name, tmp_path_factory)
    t0 = case.analysis["recording"]["case_t0_s"]
    for side in "LR":
        live = {k: v for k, v in case.doc["sides"][side]["steps"].items() if v is not None and k not in ("L1", "L2")}
        analysed = {k: v for k, v in case.analysis["steps"][side].items() if k not in ("L1", "L2")}
        assert set(live) == set(analysed), f"{name} {side}: live steps {sorted(live)}, re-analysis {sorted(analysed)}"
        for step, v in live.items():
            a = analysed[step]
            where = f"{name} {step} {side}"
            assert abs(v["t_s"] - (a["t_s"] + t0)) <= TIME_TOL_S, f"{where}: another stimulus"
            assert bool(v["response"]) == bool(a["response"]), where
            assert v["amplitude_uV"] == pytest.approx(a["amplitude_uV"], abs=AMP_TOL_UV), where
            if v["latency_ms"] is not None:
                assert v["latency_ms"] == pytest.approx(a["latency_ms"], abs=LAT_TOL_MS), where
            assert (v["set_mA"], v["delivered_mA"]) == (a["set_mA"], a["delivered_mA"]), where
            assert a["how"] == _live_how(v), f"{where}: documented as {v['how']} {v.get('comment')}"
        for phase in ("L1", "L2"):
            finding = (case.doc["sides"][side]["steps"].get(phase) or {}).get("finding")
            got = (case.analysis["steps"][side].get(phase) or {}).get("finding")
            if finding in ("normal", "paresis", "palsy"):
                assert got == finding, f"{name} {phase} {side}"
            elif finding in ("reduced", "immobile"):
                assert got == {"reduced": "paresis", "immobile": "palsy"}[finding], f"{name} {phase} {side}"


def test_the_cut_nerve_is_not_reported_recovered(tmp_path_factory):
    """The transection case: the distal mapping responses of the cut left RLN are mapping, not a
    recovery, and the silent proximal point no second loss; without the context they were."""
    case = scenario_case("transection", tmp_path_factory)
    kinds = [(e["kind"], e["side"], e["site"]) for e in case.analysis["events"]]
    assert ("signal_recovered", "L", "RLN") not in kinds
    assert kinds.count(("loss_of_signal", "L", "RLN")) == 1
    mapping = case.analysis["mapping"]["L"]
    assert mapping["type"] == 1 and mapping["lesion_between_mm"] == [10.0, 32.0]
    assert any(r["conclusion"] == "true_los" for r in case.analysis["troubleshooting"])
    # what version 1 (stimuli only) makes of the same file: the misreading the context prevents
    bare = analyze_recording(read_edf(case.edf, lazy=True), Settings(), context=False)
    bare_kinds = [(e["kind"], e["side"], e["site"]) for e in bare["events"]]
    assert ("signal_recovered", "L", "RLN") in bare_kinds


def test_export_carries_the_operator_context(tmp_path_factory):
    case = scenario_case("transection", tmp_path_factory)
    rec = read_edf(case.edf, lazy=True)
    assert rec.conventions == 2
    by_kw = {}
    for c in rec.context:
        by_kw.setdefault(c.keyword, []).append(c)
    onsets = [s.t_s for s in rec.stimuli]
    # steps at the stimulus that documents them, recorded by the button: step= in its STIM too
    for c in by_kw["STEP"]:
        if c.args[0] in ("V1", "R1"):
            assert c.get("by") == "button" and c.order is not None
            i = onsets.index(c.onset_s)
            assert rec.recorded_steps[i].value == c.args[0] and rec.stimuli[i].step is None
    larynx = {(c.args[0], c.args[1]): c.get("finding") for c in by_kw["STEP"] if c.args[0] in ("L1", "L2")}
    assert larynx == {("L1", "L"): "normal", ("L1", "R"): "normal", ("L2", "L"): "palsy"}
    answers = [(c.args[0], next(k for k in c.fields if k not in ("s", "by")), c.get("by")) for c in by_kw["TS"]]
    assert ("L", "current_delivered", None) in answers and ("L", "laryngeal_twitch", None) in answers
    assert ("L", "contralateral_vagus", "monitor") in answers
    assert [(c.get("pos_mm"), c.get("resp")) for c in by_kw["MAP"]] == [("2", "yes"), ("10", "yes"), ("32", "no")]
    assert [c.args for c in by_kw["PLAN"]] == [("L", "R")]
    assert any(c.get("decision") == "postpone_second_side" and c.text for c in by_kw["STAGING"])
    assert {c.get("site") for c in by_kw["PROBE"]} == {"VAGUS", "RLN"}
    # the edflib limit: the context annotations a viewer shows whole
    for c in rec.context:
        if c.keyword in ("STEP", "TS", "MAP", "PLAN", "REBASELINE", "CAPTURE", "CAUTERY", "PROBE", "OUTPUT") \
                and not c.text:
            assert len(c.raw) <= 40, c.raw


def test_cautery_stretches_are_applied_as_the_monitor_applied_them(tmp_path_factory):
    case = scenario_case("cautery_heavy", tmp_path_factory)
    rec = read_edf(case.edf, lazy=True)
    stretches = [c for c in rec.context if c.keyword == "CAUTERY"]
    assert stretches and all(c.duration_s and c.duration_s > 0 for c in stretches)
    live_cautery = [s for s in case.journal.entries(case.case_id, kinds=["stimulus"], blobs=False)
                    if s.payload.get("invalid_reason") == "cautery"]
    analysed = [s for s in case.analysis["stimuli"] if s["invalid_reason"] == "cautery"]
    assert len(analysed) == len(live_cautery) > 0
