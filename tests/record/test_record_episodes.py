"""Adverse-event episodes in the case document: what each rule event opens, continues and closes.

- A neuromuscular blockade is one episode of both sides, closed by a recovery on either
  side; it never closes another side's own amplitude decrease.
- ``loss_of_signal_continued`` is an interruption of its site's episode (re-opened when a
  recovery had closed it), never a second episode.
- A recovery closes what it says recovered, of its site: the right RLN's recovery leaves
  the right vagus's loss open.
- Mapping points and the loss type belong to the side's RLN loss of signal, also when the
  vagus was lost later.
"""

from __future__ import annotations

from app.model import EventKind, Priority, RuleEvent, Side, Site
from app.record import Journal
from app.record import entries as E
from app.record.document import build_document

L, R = Side.L, Side.R


def _ev(j, cid, t, kind, side, site, prio=Priority.HIGH, **detail):
    j.append(cid, "rule_event", E.rule_event(RuleEvent(t, kind, side, site, prio, int(t * 10), detail)), t_s=t)


def _doc(tmp_path, fill):
    with Journal(tmp_path / "j.db", durable=False) as j:
        cid = j.open_case({"patient_id": "PSN-EP", "planned_sides": ["L", "R"]})
        fill(j, cid)
        j.close_case(cid, {"reason": "done"})
        return build_document(j, cid)


def test_a_blockade_is_both_sides_episode_and_its_recovery_closes_only_it(tmp_path):
    def fill(j, cid):
        _ev(j, cid, 100.0, EventKind.AMPLITUDE_DECREASE, L, Site.VAGUS, Priority.MEDIUM)
        _ev(j, cid, 200.0, EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED, R, Site.VAGUS, Priority.MEDIUM,
            sides={"L": {"site": "VAGUS", "amplitude_pct": 30.0}, "R": {"site": "VAGUS", "amplitude_pct": 35.0}})
        j.append(cid, "alarm", {"transition": "acknowledged", "alarm_id": "neuromuscular_blockade_suspected:BOTH",
                                "kind": "neuromuscular_blockade_suspected", "who": "ui"}, t_s=205.0)
        _ev(j, cid, 400.0, EventKind.SIGNAL_RECOVERED, R, Site.VAGUS, Priority.INFO,
            recovered=["neuromuscular_blockade_suspected"], time_since_loss_s=200.0)

    doc = _doc(tmp_path, fill)
    eps = {ep["kind"]: ep for ep in doc["adverse_events"]}
    nmb, dec = eps["neuromuscular_blockade_suspected"], eps["amplitude_decrease"]
    assert nmb["sides"] == ["L", "R"] and nmb["recovered_t_s"] == 400.0 and nmb["recovery_s"] == 200.0
    assert dec["side"] == "L" and dec["recovered_t_s"] is None  # the left's own decrease goes on
    assert doc["sides"]["L"]["episodes"] == 2 and doc["sides"]["R"]["episodes"] == 1
    assert doc["sides"]["L"]["conclusion"]["status"] == "decreased"
    assert doc["sides"]["R"]["conclusion"]["status"] == "recovered"
    text = next(t["text"] for t in doc["timeline"] if t.get("kind") == "neuromuscular_blockade_suspected")
    assert "train-of-four" in text and "left 30 %" in text


def test_a_continued_loss_is_an_interruption_of_its_episode(tmp_path):
    def fill(j, cid):
        _ev(j, cid, 50.0, EventKind.LOSS_OF_SIGNAL, L, Site.RLN, amplitude_uV=20.0, set_mA=1.0, delivered_mA=1.0)
        _ev(j, cid, 60.0, EventKind.LOSS_OF_SIGNAL, L, Site.VAGUS, amplitude_uV=20.0, set_mA=1.0, delivered_mA=1.0)
        _ev(j, cid, 80.0, EventKind.SIGNAL_RECOVERED, L, Site.RLN, Priority.INFO, recovered=["loss_of_signal"])
        _ev(j, cid, 110.0, EventKind.LOSS_OF_SIGNAL_CONTINUED, L, Site.RLN, amplitude_uV=30.0, set_mA=1.0,
            delivered_mA=1.0, episode_t_s=50.0, interrupted_t_s=80.0, interruption_s=30.0)

    doc = _doc(tmp_path, fill)
    eps = [(ep["site"], ep["kind"]) for ep in doc["adverse_events"]]
    assert eps == [("RLN", "loss_of_signal"), ("VAGUS", "loss_of_signal")]  # no second RLN episode
    rln, vagus = doc["adverse_events"]
    assert rln["interruptions"] == [{"ended_t_s": 80.0, "resumed_t_s": 110.0, "interruption_s": 30.0,
                                     "stimulus_index": 1100}]
    assert rln["recovered_t_s"] is None and vagus["recovered_t_s"] is None  # the RLN's recovery: not the vagus's
    assert doc["events"]["by_kind"]["loss_of_signal_continued"] == 1
    line = next(t["text"] for t in doc["timeline"] if t.get("kind") == "loss_of_signal_continued")
    assert line.startswith("Loss of signal again (same episode), left RLN") and "0:00:50" in line


def test_mapping_and_type_go_to_the_rln_episode_though_the_vagus_was_lost_after_it(tmp_path):
    def fill(j, cid):
        _ev(j, cid, 50.0, EventKind.LOSS_OF_SIGNAL, L, Site.RLN)
        _ev(j, cid, 70.0, EventKind.LOSS_OF_SIGNAL, L, Site.VAGUS)
        j.append(cid, "operator", {"action": "mapping.result", "who": "ui", "detail": {
            "side": "L", "position_mm": 10.0, "response": True,
            "point": {"amplitude_uV": 829.4, "latency_ms": 3.671, "set_mA": 1.0, "delivered_mA": 0.99,
                      "stimulus_index": 87}}}, t_s=88.0)
        j.append(cid, "los_type", {"side": "L", "los_type": 1, "who": "ui",
                                   "detail": {"site": "RLN", "lesion_proximal_to_mm": 10.0}}, t_s=88.0)

    doc = _doc(tmp_path, fill)
    rln, vagus = doc["adverse_events"]
    assert rln["mapping"] == [{"t_s": 88.0, "position_mm": 10.0, "response": True, "amplitude_uV": 829,
                               "latency_ms": 3.67, "set_mA": 1.0, "delivered_mA": 0.99}]
    assert rln["los_type"]["type"] == 1 and vagus["los_type"] is None and vagus["mapping"] == []
    pt = doc["sides"]["L"]["mapping"]["points"][0]
    assert pt["amplitude_uV"] == 829 and pt["stimulus_index"] == 87
    assert any(t["text"] == "Mapping left RLN at 10 mm: response, 829 µV, 3.67 ms at 1.00 mA (delivered 0.99 mA)"
               for t in doc["timeline"])
    assert any(t["text"] == "Loss of signal, left RLN: type 1 (segmental), lesion proximal to 10 mm from the "
                            "laryngeal entry" for t in doc["timeline"])


def test_a_step_from_a_response_only_the_lowered_threshold_made_says_so(tmp_path):
    import numpy as np

    from app.model import Measurement, Source, Step, Stimulus

    def fill(j, cid):
        stim = Stimulus(7, 40.0, Site.RLN, L, Source.PROBE, 1.0, 1.0, 100, None)
        m = Measurement(stim, "EMG L", True, None, True, 64.4, 3.9, 3.3)
        j.append(cid, "stimulus", *E.stimulus(m, np.zeros((2, 1200)), 20000, 200, threshold_uV=40.0), t_s=40.0)
        j.append(cid, "step", E.step("L", Step.R1.value, m, who="ui", comment="recorded by operator"), t_s=41.0)

    doc = _doc(tmp_path, fill)
    r1 = doc["sides"]["L"]["steps"]["R1"]
    assert r1["lowered_threshold_uV"] == 40.0
    line = next(t["text"] for t in doc["timeline"] if t["type"] == "step")
    assert "64 µV, 3.90 ms (response at the lowered threshold of 40 µV)" in line
