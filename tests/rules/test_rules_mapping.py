"""Mapping after a confirmed loss of signal: each point keeps what was measured there; the
type 1 lesion lies between the most proximal responding point and the most distal silent
point proximal to it and moves with every point; type 2 when none responds; both belong to
the side's RLN."""

from __future__ import annotations

import json

import pytest
from rules_factory import Stream, engine, run

from app.model import Side, Site, Source
from app.rules import Procedure, ProcedureError, RuleEngine


def P(**kw):
    kw.setdefault("site", Site.RLN)
    kw.setdefault("source", Source.PROBE)
    return kw


def V(**kw):
    kw.setdefault("site", Site.VAGUS)
    kw.setdefault("source", Source.PROBE)
    return kw


def confirmed(side: Side = Side.L):
    """The left RLN and vagus lost, the loss confirmed: mapping is on."""
    e, s = engine(), Stream(t0=100.0, dt=0.25)
    run(e, [s.resp(600.0, 7.5, **V(side=side)), s.resp(850.0, 3.8, **P(side=side))])
    run(e, [s.miss(**P(side=side)) for _ in range(2)] + [s.miss(**V(side=side)) for _ in range(2)])
    e.procedure.answer(side, "current_delivered", "yes", t_s=120.0)
    e.procedure.answer(side, "laryngeal_twitch", "no", t_s=121.0)
    e.procedure.answer(side, "contralateral_vagus", "yes", t_s=122.0)
    assert e.procedure.mapping_active(side)
    return e, s


def point(e, s, pos, amp, lat=3.7, side=Side.L, **kw):
    """Stimulate the RLN at a point, then enter the point by hand (as the engine does)."""
    run(e, [s.m(amp, lat if amp >= 100 else None, **P(side=side, delivered=0.99))])
    return e.procedure.add_mapping_point(side, pos, kw.pop("response", amp >= 100), s.t, **kw)


def test_the_issues_case_2_10_32_mm():
    """2 mm and 10 mm respond (~850 uV), 32 mm is silent: the lesion lies between 10 and
    32 mm, and the amplitudes are those measured."""
    e, s = confirmed()
    m = point(e, s, 2.0, 862.0, 3.6, label="distal")
    assert m["changed"] and m["type"] == 1 and m["lesion_proximal_to_mm"] == 2.0 and m["lesion_between_mm"] is None
    assert m["message"] == ("Type 1 (segmental) injury of the left RLN: the nerve responds up to 2 mm from the "
                            "laryngeal entry, the most proximal point mapped, so the lesion lies proximal to 2 mm.")
    m = point(e, s, 10.0, 848.0, 3.7, label="mid")
    assert m["changed"] and m["lesion_proximal_to_mm"] == 10.0
    m = point(e, s, 32.0, 16.0, label="proximal")
    assert m["changed"] and m["type"] == 1 and m["classification"] == "type_1"
    assert m["lesion_between_mm"] == [10.0, 32.0] and m["lesion_proximal_to_mm"] is None
    assert m["message"] == ("Type 1 (segmental) injury of the left RLN: the nerve responds up to 10 mm from the "
                            "laryngeal entry and is silent at 32 mm, so the lesion lies between 10 and 32 mm.")
    assert (m["side"], m["site"]) == ("L", "RLN")
    got = [(p["position_mm"], p["response"], p["amplitude_uV"], p["latency_ms"], p["set_mA"], p["delivered_mA"])
           for p in m["points"]]
    assert got == [(2.0, True, 862.0, 3.6, 1.0, 0.99), (10.0, True, 848.0, 3.7, 1.0, 0.99),
                   (32.0, False, 16.0, None, 1.0, 0.99)]
    assert all(p["measured"] and p["stimulus_index"] is not None for p in m["points"])
    assert e.procedure.summary(e.settings)["sides"]["L"]["mapping"]["lesion_between_mm"] == [10.0, 32.0]
    json.dumps(m)


def test_the_lesion_moves_with_every_point_and_a_distal_silent_point_is_a_contact_problem():
    p = Procedure()
    seq = [(0.0, True, "proximal_to", 0.0), (20.0, False, "between", [0.0, 20.0]),
           (10.0, False, "between", [0.0, 10.0]), (15.0, True, "between", [15.0, 20.0]),
           (25.0, True, "proximal_to", 25.0), (40.0, False, "between", [25.0, 40.0]),
           (30.0, False, "between", [25.0, 30.0])]
    for pos, resp, how, where in seq:
        m = p.add_mapping_point("L", pos, resp, t_s=pos)
        assert m["changed"]
        key = "lesion_between_mm" if how == "between" else "lesion_proximal_to_mm"
        assert m[key] == where, (pos, m)
    assert m["silent_distal_mm"] == [10.0, 20.0]
    assert "Silent at 10, 20 mm, distal to a responding point: a contact problem; re-test." in m["message"]
    # a point that changes nothing says so
    assert p.add_mapping_point("L", 5.0, True, t_s=50.0)["changed"] is False


def test_type_2_when_no_point_responds_names_the_rln():
    e, s = confirmed(Side.R)
    for pos in (2.0, 10.0, 30.0):
        m = point(e, s, pos, 20.0, side=Side.R)
    assert m["type"] == 2 and m["classification"] == "type_2" and m["site"] == "RLN"
    assert m["message"] == ("Type 2 (global) injury of the right RLN: no response at any mapped point; "
                            "the contralateral vagus responds.")
    assert [p["amplitude_uV"] for p in m["points"]] == [20.0, 20.0, 20.0]


def test_a_point_takes_a_stimulus_only_once_and_only_since_the_loss():
    e, s = confirmed()
    point(e, s, 2.0, 850.0)
    # a second point without a new stimulus: no measurement (never the previous one's)
    m = e.procedure.add_mapping_point(Side.L, 5.0, True, s.t)
    last = m["points"][-1]
    assert last["measured"] is False and last["amplitude_uV"] is None and last["stimulus_index"] is None
    # without a stimulus since the loss and without a stated response: refused
    e2, s2 = engine(), Stream()
    run(e2, [s2.resp(850.0, 3.8, **P())])
    with pytest.raises(ProcedureError, match="no RLN stimulus measured since the loss"):
        e2.procedure.add_mapping_point(Side.L, 3.0, None, 1.0)
    # a stimulus before the loss is no mapping point
    assert e2.procedure.add_mapping_point(Side.L, 3.0, True, 1.0)["points"][0]["measured"] is False


def test_response_from_the_measurement_and_a_disagreement_is_noted():
    e, s = confirmed()
    run(e, [s.resp(640.0, 3.7, **P())])
    m = e.procedure.add_mapping_point(Side.L, 4.0, None, s.t)
    assert m["points"][0]["response"] is True and m["points"][0]["measured_response"] is True
    run(e, [s.m(45.0, None, **P())])
    m = e.procedure.add_mapping_point(Side.L, 12.0, True, s.t)
    pt = [p for p in m["points"] if p["position_mm"] == 12.0][0]
    assert pt["response"] is True and pt["measured_response"] is False
    assert pt["note"] == "entered as a response; the monitor measured no response, 45 µV at 1.0 mA, 1.00 mA delivered"


def test_the_rule_engine_entry_point_with_a_measurement():
    e, s = confirmed()
    m1 = s.resp(880.0, 3.6, **P())
    e.process(m1)
    out = e.add_mapping_point(Side.L, 2.0, s.t, label="distal", measurement=m1)
    assert out["points"][0]["amplitude_uV"] == 880.0 and out["points"][0]["label"] == "distal"
    out = e.add_mapping_point(Side.L, 30.0, s.t, measurement=s.m(15.0, None, **P()))
    assert out["lesion_between_mm"] == [2.0, 30.0] and out["points"][1]["response"] is False
    with pytest.raises(ProcedureError, match="not of that side's RLN"):
        e.add_mapping_point(Side.L, 3.0, s.t, measurement=s.resp(**V()))
    with pytest.raises(ProcedureError, match="not of that side's RLN"):
        e.add_mapping_point(Side.L, 3.0, s.t, measurement=s.resp(**P(side=Side.R)))
    with pytest.raises(ProcedureError, match="invalid"):
        e.add_mapping_point(Side.L, 3.0, s.t, measurement=s.invalid(**P()))


def test_mapping_state_survives_a_snapshot_and_old_states_still_load():
    e, s = confirmed()
    run(e, [s.resp(870.0, 3.6, **P())])
    again = RuleEngine.restore(e.settings, json.loads(json.dumps(e.snapshot())))
    assert again.procedure.add_mapping_point(Side.L, 2.0, True, s.t)["points"][0]["amplitude_uV"] == 870.0
    old = e.procedure.to_dict()
    del old["rln_last"]
    assert Procedure.from_dict(old).add_mapping_point("L", 1.0, True, 1.0)["points"][0]["measured"] is False
