"""The tube check's breathing variation in words (pure: no display)."""

from __future__ import annotations

from app.ui import present as P


def measured(present, wander, mod, rate=12.4):
    return {"status": "measured", "present": present, "wander_uV": wander, "modulation_pct": mod,
            "background_uV": 3.0, "rate_per_min": rate, "coverage_pct": 100.0, "window_s": 15.0, "reason": None}


def test_each_state_of_a_side_in_words():
    words = P.breathing_side_words({"status": "measuring", "present": None, "remaining_s": 9.2})
    assert words == "measuring ... 10 s left"
    assert P.breathing_side_words(measured(True, 25.4, 15.4)) == "PRESENT: wander 25 µV, modulation 15 %"
    assert P.breathing_side_words(measured(False, 8.8, 4.9)) == "ABSENT: wander 9 µV, modulation 5 %"
    nm = {"status": "not_measurable", "present": None, "reason": "electrocautery"}
    assert P.breathing_side_words(nm) == "NOT MEASURABLE (electrocautery)"
    assert P.breathing_side_words(True) == "PRESENT" and P.breathing_side_words(False) == "ABSENT"
    assert P.breathing_side_words(None) == "not measured"


def test_tube_screen_lines():
    assert P.breathing_words(None) == ["Breathing variation: not measured"]
    lines = P.breathing_words({"L": measured(False, 8.8, 4.9), "R": measured(True, 42.4, 25.6)})
    assert lines[0] == "Breathing variation (vocal-fold contact):"
    assert lines[1] == "  Left: ABSENT: wander 9 µV, modulation 5 %"
    assert lines[2] == "  Right: PRESENT: wander 42 µV, modulation 26 %"
    assert "breathing 12 per minute" in lines[3]
    assert "check the tube position" in lines[4]
    lines = P.breathing_words({"L": {"status": "measuring", "present": None, "remaining_s": 3.0},
                               "R": {"status": "measuring", "present": None, "remaining_s": 3.0}})
    assert len(lines) == 3 and "per minute" not in " ".join(lines) and "check the tube" not in " ".join(lines)


def test_document_summary_carries_the_breathing_variation():
    doc = {"case": {"case_id": "C1", "patient_id": "P-1", "planned_sides": ["L"]}, "sides": {},
           "tube_check": [{"passed": True, "message": "all electrodes within limits",
                           "breathing_variation": {"L": measured(True, 25.4, 15.4)}}],
           "journal": {"entries": 3, "verified": True}}
    text = P.document_summary(doc)
    assert "breathing variation: left PRESENT: wander 25 µV, modulation 15 %" in text
