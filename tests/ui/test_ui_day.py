"""A day of three cases at the touchscreen on the virtual board (issue: the touchscreen
through a day of cases): open, tube check, steps, an alarm, troubleshooting, close with
a reason for every missing step, report, export, next case; every case starts empty.

Only touches (``app.ui.day``); the test fails on any error the app caught (conftest) and
on anything the drive waited for and did not see. The record is checked at the engine.
"""

from __future__ import annotations

import pytest

from app.ui.day import CASES, Day

pytestmark = pytest.mark.ui


def test_a_day_of_three_cases_through_the_touchscreen(ui, engine, usb_dir, tmp_path):
    ui.home(engine)
    ui.shots_dir = tmp_path / "day"
    before = {c["case_id"] for c in engine.call("cases.list", limit=50)["cases"]}
    closed = Day(ui).play(3)
    assert len(closed) == 3 and len(set(closed)) == 3 and not set(closed) & before
    for plan, case_id in zip(CASES, closed, strict=True):
        doc = engine.call("report.get", case_id=case_id, pdf=False)["document"]
        assert doc["case"]["patient_id"] == plan.patient
        assert doc["case"]["planned_sides"] == list(plan.sides)
        side = plan.loss_side
        # the alarm, its troubleshooting and the V2 recorded from the stimulus after the loss
        los = [e for e in doc["adverse_events"] if e["kind"] == "loss_of_signal" and e["side"] == side]
        assert los and {a["check"] for e in los for a in e.get("troubleshooting") or []} >= {"leads_ok"}
        assert doc["sides"][side]["steps"]["V2"], doc["sides"][side]["steps"]
        # only this case's steps: nothing carried over from the case before
        assert set(doc["sides"]) >= set(plan.sides)
        for other in {"L", "R"} - set(plan.sides):
            steps = (doc["sides"].get(other) or {}).get("steps") or {}
            assert not any(steps.get(k) for k in ("V1", "R1", "R2", "V2")), (case_id, other, steps)
        # the close-out: every missing step recorded, with the reason picked for it
        missing = [m for s in ("L", "R") for m in doc["sides"][s].get("missing_steps") or []]
        assert bool(missing) == bool(plan.reasons), missing  # the second case has every step
        for key, reason in plan.reasons.items():
            s, step = key.split(".")
            assert any(m["side"] == s and m["step"] == step and m["reason"] == reason for m in missing), \
                (key, missing)
    exported = {str(p.relative_to(usb_dir)) for p in usb_dir.rglob("report.pdf")}
    for case_id in closed:  # each case in its own folder on the stick
        assert any(case_id in path for path in exported), (case_id, sorted(exported))
    assert len(ui.shots) >= 3 * 15
