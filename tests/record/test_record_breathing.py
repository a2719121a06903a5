"""The tube check's breathing variation in the case document and the PDF report."""

from __future__ import annotations

from pypdf import PdfReader

from app.analysis.breathing import REASONS, measuring_json, not_measured_json
from app.record import Journal
from app.record import entries as E
from app.record.document import build_document
from app.record.export import write_documents

IMP = {"L_POS": 1800, "L_NEG": 2100, "R_POS": 1900, "R_NEG": 2300, "GROUND": 900, "STIM_RETURN": 1100}


def side(present, wander, mod):
    return {"status": "measured", "present": present, "wander_uV": wander, "modulation_pct": mod,
            "background_uV": 3.0, "rate_per_min": 12.4, "coverage_pct": 100.0, "window_s": 15.0, "reason": None}


def test_a_check_and_its_breathing_window_are_one_row_and_reach_the_report(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path, durable=False) as j:
        cid = j.open_case({"patient_id": "PSN-B", "planned_sides": ["L", "R"]})
        # check 1: impedances, then its window
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, measuring_json("LR", 15.0, 15.0)), t_s=10.0)
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, {"L": side(True, 25.4, 15.4),
                                                                 "R": side(True, 42.4, 24.8)}), t_s=25.2)
        # check 2 (tube rotated): impedances, then the window lost to cautery on both sides
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, measuring_json("LR", 15.0, 15.0)), t_s=80.0)
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, not_measured_json("LR", REASONS["cautery"], 15.0)),
                 t_s=95.1)
        # check 3: left absent
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, measuring_json("LR", 15.0, 15.0)), t_s=120.0)
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, {"L": side(False, 8.8, 4.9),
                                                                 "R": side(True, 42.4, 25.6)}), t_s=135.0)
        # an older record: bare booleans, a single entry
        j.append(cid, "tube_check", E.tube_check(IMP, 5.0, 1.0, {"L": True, "R": False}), t_s=200.0)
        # a failed check overridden while its window ran: override row, then the window
        bad = {**IMP, "L_POS": 9000}
        j.append(cid, "tube_check", E.tube_check(bad, 5.0, 1.0, measuring_json("LR", 15.0, 15.0)), t_s=300.0)
        ov = {"who": "surgeon", "reason": "accepted"}
        j.append(cid, "tube_check", E.tube_check(bad, 5.0, 1.0, measuring_json("LR", 9.0, 15.0), override=ov),
                 t_s=306.0)
        j.append(cid, "tube_check", E.tube_check(bad, 5.0, 1.0, {"L": side(True, 20.0, 14.0),
                                                                 "R": side(True, 30.0, 20.0)}, override=ov), t_s=315.0)
    with Journal(path, readonly=True) as j:
        doc = build_document(j, cid)
        rows = doc["tube_check"]
        assert [r["t_s"] for r in rows] == [10.0, 80.0, 120.0, 200.0, 300.0, 306.0]
        assert rows[0]["breathing_variation"]["L"]["wander_uV"] == 25.4 and rows[0]["breathing_t_s"] == 25.2
        assert rows[1]["breathing_variation"]["R"]["reason"] == "electrocautery"
        assert rows[2]["breathing_variation"]["L"]["present"] is False
        assert rows[3]["breathing_variation"] == {"L": True, "R": False} and "breathing_t_s" not in rows[3]
        assert rows[4]["breathing_variation"]["L"]["status"] == "measuring"  # the override came before the end
        assert rows[5]["override"] == {"who": "surgeon", "reason": "accepted"}
        assert rows[5]["breathing_variation"]["L"]["present"] is True
        texts = [t["text"] for t in doc["timeline"] if t["type"] == "tube_check"]
        assert "Breathing variation of the baseline EMG: left present (wander 25 µV, modulation 15 %); right present" \
               " (wander 42 µV, modulation 25 %)" in texts
        assert any("left not measurable: electrocautery" in t for t in texts)
        r = write_documents(j, cid, {"pdf": tmp_path / "r.pdf"})
        assert r.exit_code == 0, r.messages
    text = "".join(p.extract_text() for p in PdfReader(tmp_path / "r.pdf").pages)
    flat = " ".join(text.split())
    for needle in ("L: present (wander 25 µV, modulation 15 %)", "L: absent (wander 9 µV, modulation 5 %)",
                   "R: not measurable: electrocautery", "L: present", "R: absent"):
        assert needle in flat, needle
    assert "measuring" in flat  # the overridden check's row before its window ended
