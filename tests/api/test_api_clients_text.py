"""The plain-text status of ``lnm status`` and the headless ``lnm run`` view."""

from __future__ import annotations

from app.api.clients import format_status


def _status(tube):
    return {"engine": {"version": "lnm 0.1", "uptime_s": 12}, "board": {"connected": True},
            "case": {"case_id": "C1", "patient_id": "P", "planned_sides": ["L", "R"], "t_s": 30.0},
            "tube": tube}


def test_tube_check_shows_the_breathing_variation_per_side():
    text = format_status(_status({
        "pass": True, "message": "all electrodes within limits",
        "breathing_variation": {
            "L": {"status": "done", "present": True, "wander_uV": 35.2, "modulation_pct": 27.4},
            "R": {"status": "done", "present": False, "wander_uV": 1.0, "modulation_pct": 2.0},
        }}))
    line = next(x for x in text.splitlines() if x.startswith("breathing variation:"))
    assert "left present (wander 35 uV, modulation 27 %)" in line
    assert "right ABSENT: check the tube (wander 1 uV, modulation 2 %)" in line


def test_breathing_variation_while_measuring_and_when_not_measurable():
    text = format_status(_status({
        "pass": True, "message": "ok",
        "breathing_variation": {
            "L": {"status": "measuring", "present": None, "remaining_s": 8.4, "window_s": 15.0},
            "R": {"status": "not_measured", "present": None, "reason": "no EMG stream"},
        }}))
    assert "left measuring (8 s left)   right not measurable (no EMG stream)" in text


def test_no_breathing_line_without_a_tube_check_result():
    assert "breathing" not in format_status(_status({"pass": False, "message": "L+ high impedance"}))
    assert "tube check" not in format_status(_status(None))
