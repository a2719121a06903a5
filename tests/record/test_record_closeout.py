"""Close-out: the INMSG steps missing at close, the reasons given for them, in the document and
the report; the case data (anaesthesia, tube) that case.start and case.update give."""

from __future__ import annotations

import numpy as np
import pytest
from pypdf import PdfReader

from app import format as F
from app.model import Measurement, Side, Site, Source, Step, Stimulus
from app.record import Journal
from app.record import entries as E
from app.record.closeout import NOT_DONE, closeout_entries, missing_from_procedure, missing_steps
from app.record.document import build_document
from app.record.export import write_documents
from app.rules.procedure import Procedure


def test_missing_steps_per_planned_side_in_operating_order():
    recorded = {"R": {"L1": {"finding": "normal"}, "V1": {"amplitude_uV": 600}, "R1": {"amplitude_uV": 800},
                      "R2P": {"amplitude_uV": 700}, "V2": {"amplitude_uV": 580}, "L2": {"finding": "not_assessed"}},
                "L": {"L1": "normal"}}
    got = missing_steps(["R", "L"], recorded)
    assert [(m["side"], m["step"]) for m in got] == [("R", "L2"), ("L", "V1"), ("L", "R1"), ("L", "R2"),
                                                     ("L", "V2"), ("L", "L2")]
    assert got[0]["what"] == "laryngoscopy after surgery"
    assert missing_steps([], recorded) == []


def test_missing_from_the_procedure_state_and_its_summary():
    proc = Procedure()
    proc.set_plan(["L"], 0.0)
    stim = Stimulus(0, 5.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 0.99, 100, Step.V1)
    proc.capture_step(Step.V1, Measurement(stim, "EMG L", True, None, True, 600.0, 7.8, 7.0), True, 6.0)
    proc.set_laryngoscopy("L1", "L", "normal", 1.0)
    want = [("L", "R1"), ("L", "R2"), ("L", "V2"), ("L", "L2")]
    assert [(m["side"], m["step"]) for m in missing_from_procedure(proc.to_dict())] == want
    from app.settings import Settings

    assert [(m["side"], m["step"]) for m in missing_from_procedure(proc.summary(Settings()))] == want


def test_reasons_are_checked_and_every_missing_step_is_journaled():
    missing = missing_steps(["L"], {"L": {"L1": "normal", "V1": 1, "R1": 1, "R2": 1}})
    got = closeout_entries(missing, {"L": {"V2": "vagus not exposed again", "L2": NOT_DONE}}, who="ui")
    assert got == [{"side": "L", "step": "V2", "reason": "vagus not exposed again", "who": "ui"},
                   {"side": "L", "step": "L2", "reason": "not done", "who": "ui"}]
    assert [m["reason"] for m in closeout_entries(missing, None)] == [None, None]  # never refused
    for bad, problem in [({"L": {"V2": ""}}, "reason for V2 L"), ({"L": {"V2": 3}}, "reason for V2 L"),
                         ({"L": {"R1": "x"}}, "R1 L: that step is not missing"), ({"L": "x"}, "side 'L'"),
                         ("x", "reasons must be"), ({"L": {"V2": "x" * 201}}, "at most 200")]:
        with pytest.raises(ValueError, match=problem):
            closeout_entries(missing, bad)


def _case(path, closed_with=None, **opened):
    with Journal(path, durable=False) as j:
        cid = j.open_case({"patient_id": "PSN-CO", "planned_sides": ["L", "R"], **opened})
        j.append(cid, "operator", {"action": "case.start", "who": "ui", "detail": {
            "patient_id": "PSN-CO", "planned_sides": ["L", "R"], "relaxant": "rocuronium 0.3 mg/kg",
            "relaxant_time": "08:05", "tof_count": 4}}, t_s=0.0)
        j.append(cid, "operator", {"action": "case.update", "who": "ui", "detail": {
            "tube_type": "NIM EMG tube", "tube_size_mm": 7.0, "tube_depth_cm": 21.0, "tof_ratio_pct": 93.0}},
                 t_s=10.0)
        j.append(cid, "laryngoscopy", {"step": "L1", "left": "normal", "right": "normal"}, t_s=20.0)
        stim = Stimulus(0, 30.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 0.98, 100, None)
        m = Measurement(stim, "EMG L", True, None, True, 423.46, 7.804, 6.9)
        j.append(cid, "stimulus", *E.stimulus(m, np.zeros((2, 1200)), 20000, 200), t_s=30.0)
        j.append(cid, "step", E.step("L", "V1", m, who="ui", comment="recorded by operator"), t_s=31.0)
        j.close_case(cid, {"reason": "end of surgery", **({"missing_steps": closed_with} if closed_with else {})})
    return cid


def test_anaesthesia_and_tube_from_case_start_and_update(tmp_path):
    cid = _case(tmp_path / "j.db")
    with Journal(tmp_path / "j.db", readonly=True) as j:
        doc = build_document(j, cid)
        assert doc["case"]["anaesthesia"] == {"relaxant": "rocuronium 0.3 mg/kg", "relaxant_time": "08:05",
                                              "tof_count": 4, "tof_ratio_pct": 93.0}
        assert doc["case"]["tube"] == {"type": "NIM EMG tube", "size_mm": 7.0, "depth_cm": 21.0}
        write_documents(j, cid, {"pdf": tmp_path / "r.pdf"})
    first = " ".join(PdfReader(tmp_path / "r.pdf").pages[0].extract_text().split())
    for needle in ("relaxant rocuronium 0.3 mg/kg", "given at 08:05", "train-of-four count 4/4, ratio 93 %",
                   "NIM EMG tube, size 7 mm, depth 21 cm"):
        assert needle in first, needle


def test_one_number_for_one_measurement_everywhere(tmp_path):
    """423.46 µV: 423 in the JSON, the report's table, its caption, page 1, the timeline and on
    the screen (``app.format``); the report once printed 424 (rounded twice)."""
    cid = _case(tmp_path / "j.db")
    with Journal(tmp_path / "j.db", readonly=True) as j:
        doc = build_document(j, cid)
        write_documents(j, cid, {"pdf": tmp_path / "r.pdf"})
    assert doc["sides"]["L"]["steps"]["V1"]["amplitude_uV"] == 423
    assert doc["sides"]["L"]["steps"]["V1"]["latency_ms"] == 7.8
    assert any("423 µV, 7.80 ms" in t["text"] for t in doc["timeline"])
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(tmp_path / "r.pdf").pages)
    assert "424" not in text and text.count("423 µV") >= 3
    assert F.amp_text(423.46) == "423 µV"  # what the screen shows through app.format


def test_the_close_out_in_the_document_and_the_report(tmp_path):
    reasons = [{"side": "L", "step": "R1", "reason": "RLN not identified (intracapsular)", "who": "ui"},
               {"side": "L", "step": "R2", "reason": "not done", "who": "ui"},
               {"side": "L", "step": "V2", "reason": None, "who": "ui"}]
    cid = _case(tmp_path / "j.db", closed_with=reasons)
    with Journal(tmp_path / "j.db", readonly=True) as j:
        doc = build_document(j, cid)
        write_documents(j, cid, {"pdf": tmp_path / "r.pdf", "json": tmp_path / "c.json"})
    co = doc["closeout"]
    assert co["asked"] is True
    by = {(m["side"], m["step"]): m["reason"] for m in co["missing"]}
    assert by[("L", "R1")] == "RLN not identified (intracapsular)" and by[("L", "V2")] is None
    assert ("R", "V1") in by and by[("R", "V1")] is None  # a step the close-out did not cover
    assert doc["sides"]["L"]["missing_steps"][0]["step"] == "R1"
    pages = [" ".join(p.extract_text().split()) for p in PdfReader(tmp_path / "r.pdf").pages]
    assert "R1: RLN not identified (intracapsular)" in pages[0] and "R2: not done" in pages[0]
    text = " ".join(pages)
    assert "Close-out: INMSG steps still missing" in text and "no reason given" in text


def test_a_case_closed_without_the_close_out_says_so(tmp_path):
    cid = _case(tmp_path / "j.db")
    with Journal(tmp_path / "j.db", readonly=True) as j:
        doc = build_document(j, cid)
    assert doc["closeout"]["asked"] is False
    assert all(m["reason"] is None for m in doc["closeout"]["missing"])


def test_engine_journals_the_reasons_given_at_close(tmp_path):
    from app.engine.stepped import SteppedSystem
    from app.settings import Settings

    journal = Journal(tmp_path / "j.db", durable=False)
    system = SteppedSystem(Settings(), seed=1, journal=journal)
    assert system.command("case.start", client="ui", patient_id="PSN-CE", planned_sides=["L"])["ok"]
    reply = system.command("case.close", client="ui", reasons={"L": {"V1": "not done"}})
    assert reply["ok"], reply
    closed = list(journal.entries(reply["result"]["case_id"], kinds=["case_closed"]))[0]
    assert {"side": "L", "step": "V1", "reason": "not done", "who": "ui"} in closed.payload["missing_steps"]
